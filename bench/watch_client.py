"""The watch bench's lean client (``bench/watch.py --client raw``): HTTP/1.1 on asyncio protocols.

Why not aiohttp here: the watchers run on the same two cores as the server they
measure. Receiving 1,000 answers and re-opening 1,000 watches cost the aiohttp client
0.13-0.15 s of CPU per change with ``--reopen-at-once`` (docs/benchmarks.md, Watches,
third pass), about as much as the watch server's own share, and its arrival times lag
by its queue. Here each watch is one keep-alive connection whose protocol parses the
answer in ``data_received`` (status line, ``Content-Length`` or chunked body, the
index header), stamps the arrival there, and (``at_once``) writes the re-open in the
same callback. What is measured is the same: from the commit to the answer's last
byte arriving in the client.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable


class _Watch(asyncio.Protocol):
    """One keep-alive connection: sends a watch, parses its answer, calls ``done(self, arrived, status, index)``."""

    def __init__(self, request: Callable[[int], bytes], done: Callable) -> None:
        self.request, self.done = request, done
        self.buffer = b""
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connected.set_result(None)

    def watch(self, index: int) -> None:
        self.transport.write(self.request(index))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            parsed = _parse(self.buffer)
            if parsed is None:
                return
            arrived = time.time()
            status, index, used = parsed
            self.buffer = self.buffer[used:]
            self.done(self, arrived, status, index)


def _parse(buffer: bytes) -> tuple[int, int, int] | None:
    """(status, index header, bytes used) of the first whole answer in ``buffer``; None if incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buffer[:end].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    index = int(headers.get(b"x-consul-index") or headers.get(b"x-registry-index") or 0)
    pos = end + 4
    if b"content-length" in headers:
        used = pos + int(headers[b"content-length"])
        return (status, index, used) if len(buffer) >= used else None
    while True:  # chunked
        size_end = buffer.find(b"\r\n", pos)
        if size_end < 0:
            return None
        size = int(buffer[pos:size_end].split(b";")[0], 16)
        pos = size_end + 2 + size + 2
        if len(buffer) < pos:
            return None
        if size == 0:
            return status, index, pos


async def one_round(to_main, from_main, *, opened: int, arrived, early: Callable[[], int]) -> list:
    """One change, as the watcher process sees it: tell the main process that ``opened`` watches
    are open, wait until it has committed its change, await ``arrived()`` (the round's answers),
    then report them with how many watchers of other types answered (``early()``) and this
    process's CPU meanwhile. Returns the answers."""
    await asyncio.sleep(2.0)
    to_main.put(("open", opened))
    await asyncio.to_thread(from_main.get)  # the main process committed a change
    cpu_before = time.process_time()  # idle until now: the watches were all open
    results = await arrived()
    cpu = time.process_time() - cpu_before  # answers received (and, re-opening at once, most re-opens sent)
    to_main.put(("arrived", [a for a, _, _ in results], sorted({s for _, s, _ in results}), early(), cpu))
    return results


def run(port: int, key: str, types: list[str], watched: str, rounds: int, at_once: bool, to_main, from_main) -> None:
    """The same rounds and reports as ``bench.watch._watchers``, on ``_Watch`` connections."""

    def request_for(i: int, service_type: str) -> Callable[[int], bytes]:
        if i % 2:
            target = f"/v1/health/service/{service_type}?"
        else:
            target = f"/discovery/{service_type}?all=1&"
        head = (f"GET {target}wait=10m&index=").encode()
        tail = (f" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Consul-Token: {key}\r\n"
                f"Authorization: Token {key}\r\nAccept: */*\r\n\r\n").encode()
        return lambda index: head + str(index).encode() + tail

    def first_index(service_type: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/health/service/{service_type}",
                                     headers={"X-Consul-Token": key})
        with urllib.request.urlopen(req, timeout=30) as response:
            json.load(response)
            return int(response.headers["X-Consul-Index"])

    indexes = {t: first_index(t) for t in sorted(set(types))}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        mine = [i for i, t in enumerate(types) if t == watched]
        answers: list[list[tuple[float, int, int]]] = [[] for _ in range(rounds + 1)]
        complete = [asyncio.Event() for _ in range(rounds + 1)]
        rounds_of: dict[_Watch, int] = {}
        early = 0

        def done(watch: _Watch, arrived: float, status: int, index: int) -> None:
            nonlocal early
            r = rounds_of.get(watch)
            if r is None:  # a watcher of another type: nothing of theirs changes
                early += 1
                return
            answers[r].append((arrived, status, index))
            rounds_of[watch] = r + 1
            if len(answers[r]) == len(mine):
                complete[r].set()
            if at_once and r < rounds:
                watch.watch(index)

        watches = []
        for i, service_type in enumerate(types):
            _, watch = await loop.create_connection(lambda i=i, t=service_type: _Watch(request_for(i, t), done),
                                                    "127.0.0.1", port)
            await watch.connected
            if service_type == watched:
                rounds_of[watch] = 0
            watches.append(watch)
        for watch, service_type in zip(watches, types, strict=True):
            watch.watch(indexes[service_type])
        index = indexes[watched]
        for r in range(rounds + 1):
            async def arrived(r: int = r) -> list:
                await complete[r].wait()
                return answers[r]

            results = await one_round(to_main, from_main, opened=len(mine), arrived=arrived, early=lambda: early)
            index = max(i for _, _, i in results)
            if not at_once and r < rounds:
                for watch in watches:
                    if watch in rounds_of:
                        watch.watch(index)
        for watch in watches:
            watch.transport.close()

    asyncio.run(main())
