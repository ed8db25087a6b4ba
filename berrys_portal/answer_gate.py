"""Answers first: while the watches a change woke are being answered, new requests wait.

When one change wakes a thousand watches of the watch server, each watcher's client
re-opens its watch as soon as it has its answer. Without a gate those re-opens
(request parsing, Django's request path, authentication: about 0.2 ms of event-loop
CPU each) run between the answers still to be sent, so the last answer waits for the
re-opens of the first ones. Measured with ``bench/watch.py --all-on-one-type
--reopen-at-once --client raw`` (1,000 watches, 8 alternating pairs at load 1-5;
docs/benchmarks.md, Watches, third pass): the watch server's CPU from the commit to
the last answer 0.10-0.19 s -> 0.09-0.11 s, the median change's last answer
158-366 ms -> 90-209 ms after the commit (earlier in 6 of 8 pairs).

How: the index feed counts the futures it resolves in an event loop (``owe``); each
woken request's handler settles its count once its answer is sent, or when it ends
any other way (its client went away, an error). A request that arrives meanwhile
waits at the gate (``passage``) before Django sees it; the last settlement opens it.
The gate never holds a request longer than ``HOLD_MAX_SECONDS``: if a count were ever
lost, requests would be slowed by that much once, not blocked (the count is reset).

A woken request outside the watch server's handler (the test client, WSGI) settles at
once: nothing there would open the gate.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref

logger = logging.getLogger(__name__)

HOLD_MAX_SECONDS = 1.0

# The woken-watch counts of the request being handled (set by the watch server's handler;
# the view's task inherits the same list).
_owed: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("berrys_owed_answers", default=None)


class AnswerGate:
    """The woken watches of one event loop not yet answered; new requests wait for them."""

    def __init__(self) -> None:
        self.pending = 0
        self._open = asyncio.Event()
        self._open.set()

    def owe(self, count: int) -> None:
        """``count`` watches were woken: hold new requests until they are answered."""
        if count > 0:
            self.pending += count
            self._open.clear()

    def settle(self, count: int = 1) -> None:
        """``count`` woken watches are answered (or gone); the last one opens the gate."""
        if count > 0:
            self.pending = max(0, self.pending - count)
            if not self.pending:
                self._open.set()

    async def passage(self) -> None:
        """Return once no woken watch waits for its answer (at most ``HOLD_MAX_SECONDS``)."""
        if not self.pending:
            return
        try:
            await asyncio.wait_for(self._open.wait(), HOLD_MAX_SECONDS)
        except TimeoutError:
            logger.warning("answer gate: %d woken watches unanswered after %.1f s; opening anyway",
                           self.pending, HOLD_MAX_SECONDS)
            self.pending = 0
            self._open.set()


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AnswerGate] = weakref.WeakKeyDictionary()


def answer_gate(loop: asyncio.AbstractEventLoop | None = None) -> AnswerGate:
    """The gate of ``loop`` (default: the running loop). Call it in that loop's thread."""
    loop = loop or asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = AnswerGate()
    return gate


def answers_owed() -> list[int]:
    """Start counting the woken watches of the request handled in this context (the handler calls it)."""
    owed: list[int] = []
    _owed.set(owed)
    return owed


def answer_owed(loop: asyncio.AbstractEventLoop) -> None:
    """A watch woken by the feed returns to its view: its handler settles it once the answer is out."""
    owed = _owed.get()
    if owed is None:
        answer_gate(loop).settle(1)
    else:
        owed.append(1)
