"""CLI: ``python -m simulators --portal URL --api-key KEY [--base-port N]``.

Starts the five Berrys core services (or those named with ``--only``), each on
its own port, registers them with the portal (retrying until it answers),
heartbeats, and deregisters them on SIGINT / SIGTERM. Prints one line
``SIMULATORS READY {json}`` once every port is open, so scripts and tests can
read the ports and the control URL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from simulators.runner import SimulatorStack
from simulators.services import BY_TYPE


def _types(value: str) -> list[str]:
    names = [v.strip().upper() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in BY_TYPE]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown service type(s) {', '.join(unknown)}; choose from {', '.join(BY_TYPE)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__.split("\n")[0])
    parser.add_argument("--portal", default=os.environ.get("PORTAL_URL"),
                        help="Portal base URL, e.g. http://127.0.0.1:8090 (env PORTAL_URL).")
    parser.add_argument("--api-key", default=os.environ.get("SIMULATORS_API_KEY"),
                        help="API key with the 'registry:write' scope (env SIMULATORS_API_KEY).")
    parser.add_argument("--api-key-file", type=Path,
                        help="Read the API key from this file (e.g. written by `make demo`).")
    parser.add_argument("--base-port", type=int, default=int(os.environ.get("SIMULATORS_BASE_PORT", 0)),
                        help="PC on N, PS N+1, AO N+2, MO N+3, TI N+4, control N+5. 0: ephemeral ports.")
    parser.add_argument("--only", type=_types, default=None,
                        help="Comma-separated service types to run (default: all five).")
    parser.add_argument("--heartbeat", type=float, default=10.0, help="Seconds between heartbeats.")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The client package's HTTP library logs every request at INFO: a line per heartbeat is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    api_key = args.api_key
    if args.api_key_file:
        try:
            api_key = args.api_key_file.read_text().strip()
        except OSError as exc:
            parser.error(f"--api-key-file {args.api_key_file}: {exc}")
    if args.portal and not api_key:
        parser.error("--portal needs --api-key or --api-key-file (scope 'registry:write')")

    stack = SimulatorStack(portal_url=args.portal, api_key=api_key, base_port=args.base_port,
                           types=args.only, heartbeat_seconds=args.heartbeat)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack.start()
    # One write with its newline (print writes the newline separately, and a log line from
    # another thread could land between the two).
    sys.stdout.write("SIMULATORS READY " + json.dumps(stack.describe()) + "\n")
    sys.stdout.flush()
    stop.wait()
    logging.getLogger("simulators").info("stopping: deregistering and closing ports")
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
