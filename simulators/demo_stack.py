"""``make demo``'s process manager: the Procfile under honcho's Manager, as a clean foreground job.

honcho's own ``start`` answers Ctrl-C with exit code 130, sends SIGTERM to each
process *group* (so Celery's pool children die under the worker, which then
waits for them until honcho's 5 s SIGKILL), and stops everything at once (so
the simulators cannot deregister from a web server that is already gone).
This keeps honcho's process handling and printer and changes only that:

- Ctrl-C, SIGTERM and SIGHUP stop the stack in two stages: first the clients
  (``driver``, ``simulators``), then the rest; each process gets SIGTERM on its
  own pid and ``--grace`` seconds in all before its group is SIGKILLed.
- A stop that was asked for and finished within the grace period exits 0; a
  process that died on its own, or had to be killed, exits 1.
- On a terminal, the stack takes the terminal's foreground process group, so
  Ctrl-C reaches this process alone (not ``make``, which would otherwise die
  of the SIGINT and report an error), and gives it back on exit.
- The demo driver's banner (``var/demo/banner.txt``) is printed again once the
  start-up noise after it has settled, so the URLs and login end up last on screen.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import sys
import time
from pathlib import Path

from honcho.environ import expand_processes, parse_procfile
from honcho.manager import Manager
from honcho.printer import Printer

FIRST_TO_STOP = ("driver", "simulators", "webdashboard")  # they talk to the web process while stopping
BANNER_END = "=" * 72


class DemoManager(Manager):
    def __init__(self, printer: Printer, *, grace: float, banner_file: Path | None, quiet_after: float):
        super().__init__(printer)
        self.grace = grace
        self.banner_file = banner_file
        self.quiet_after = quiet_after
        self._stop_reason = ""
        self._stop_started: float | None = None
        self._stage = 0
        self._killed: list[str] = []

    # --- stopping -------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if self._stop_started is None:
            self._stop_reason = reason
            self._stop_started = time.monotonic()
            self._system_print(f"{reason}: stopping every process (grace {self.grace:.0f} s)\n")

    def _running(self, names=None) -> list[str]:
        return [n for n, p in self._processes.items()
                if "returncode" not in p and p.get("pid") and (names is None or n.split(".")[0] in names)]

    def _signal(self, names: list[str], sig: int) -> None:
        for name in names:
            pid = self._processes[name]["pid"]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if sig == signal.SIGKILL:
                    os.killpg(pid, sig)  # the process and anything it left behind
                else:
                    os.kill(pid, sig)  # the process alone: it stops its own children

    def _advance_stop(self) -> None:
        if self._stop_started is None:
            return
        waited = time.monotonic() - self._stop_started
        if self._stage == 0:
            self._stage = 1
            self._signal(self._running(FIRST_TO_STOP), signal.SIGTERM)
        if self._stage == 1 and (not self._running(FIRST_TO_STOP) or waited > self.grace / 2):
            self._stage = 2
            self._signal(self._running(), signal.SIGTERM)
        if self._stage == 2 and waited > self.grace:
            self._stage = 3
            self._killed = self._running()
            for name in self._killed:
                self._system_print(f"{name} did not stop within {self.grace:.0f} s: SIGKILL\n")
            self._signal(self._killed, signal.SIGKILL)

    # --- the loop -------------------------------------------------------------------
    def loop(self) -> None:
        names = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
        for sig, label in names.items():
            signal.signal(sig, lambda *_, label=label: self.request_stop(label))
        self._start()
        # "waiting" → "opened" → "shown" (the driver printed it) → "noisy" (more lines) → "reprinted"
        banner_state = "waiting"
        last_line = time.monotonic()
        while True:
            try:
                msg = self.events.get(timeout=0.1)
            except queue.Empty:
                msg = None
            if msg is not None:
                if msg.type == "line":
                    self._printer.write(msg)
                    last_line = time.monotonic()
                    text = msg.data.decode(errors="replace") if isinstance(msg.data, bytes) else msg.data
                    if banner_state == "waiting" and text.strip() == BANNER_END:
                        banner_state = "opened"
                    elif banner_state == "opened" and text.strip() == BANNER_END:
                        banner_state = "shown"  # its closing rule: the banner is complete
                    elif banner_state == "shown":
                        banner_state = "noisy"
                elif msg.type == "start":
                    self._processes[msg.name]["pid"] = msg.data["pid"]
                elif msg.type == "stop":
                    rc = msg.data["returncode"]
                    self._processes[msg.name]["returncode"] = rc
                    if self._stop_started is None:
                        self._system_print(f"{msg.name} exited on its own (rc={rc})\n")
                        self.returncode = 1
                        self.request_stop(f"{msg.name} exited")
                    else:
                        self._system_print(f"{msg.name} stopped\n")
            self._advance_stop()
            if (banner_state == "noisy" and self._stop_started is None
                    and time.monotonic() - last_line > self.quiet_after):
                banner_state = "reprinted"
                self._reprint_banner()
            if self._all_started() and self._all_stopped():
                break
        if self.returncode is None:
            self.returncode = 1 if self._killed else 0

    def _banner(self) -> str:
        if self.banner_file is None:
            return ""
        try:
            return self.banner_file.read_text()
        except OSError:
            return ""

    def _reprint_banner(self) -> None:
        banner = self._banner()
        if banner:
            sys.stdout.write("\n" + banner.rstrip("\n") + "\n  (`make demo-status` prints this again.)\n")
            sys.stdout.flush()


@contextlib.contextmanager
def foreground_job():
    """On a terminal: run as our own process group and take the terminal's foreground,
    so Ctrl-C signals this job only; give the terminal back on exit."""
    try:
        tty_fd = sys.stdin.fileno()
        ours = os.isatty(tty_fd) and os.tcgetpgrp(tty_fd) == os.getpgrp()
    except (OSError, ValueError):
        ours = False
    if not ours:
        yield
        return
    previous = os.getpgrp()
    old_ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may not set it otherwise
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(tty_fd, os.getpgrp())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(tty_fd, previous)
        signal.signal(signal.SIGTTOU, old_ttou)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.demo_stack", description=__doc__.split("\n")[0])
    parser.add_argument("-f", "--procfile", type=Path, default=Path("Procfile"))
    parser.add_argument("--grace", type=float, default=float(os.environ.get("DEMO_STOP_GRACE", 20)),
                        help="Seconds every process gets to stop before SIGKILL.")
    parser.add_argument("--banner-file", type=Path, default=Path("var/demo/banner.txt"))
    parser.add_argument("--quiet-after", type=float, default=3.0,
                        help="Reprint the banner once output after it has paused this long.")
    parser.add_argument("--pid-file", type=Path, default=Path("var/demo/stack.pid"))
    args = parser.parse_args(argv)

    processes = parse_procfile(args.procfile.read_text()).processes
    with foreground_job():
        args.pid_file.parent.mkdir(parents=True, exist_ok=True)
        args.pid_file.write_text(f"{os.getpid()}\n")
        with contextlib.suppress(OSError):
            args.banner_file.unlink()  # the banner of an earlier start is stale until the driver writes it
        manager = DemoManager(Printer(sys.stdout, colour=sys.stdout.isatty()), grace=args.grace,
                              banner_file=args.banner_file, quiet_after=args.quiet_after)
        for p in expand_processes(processes):
            manager.add_process(p.name, p.cmd, env={**os.environ, **p.env})
        try:
            manager.loop()
        finally:
            with contextlib.suppress(OSError):
                args.pid_file.unlink()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
