"""``make demo-status``: the running demo's banner again, and its services' health now.

Reads the banner the demo driver wrote (``var/demo/banner.txt``) and asks the
portal's API (with the demo key) for every registered service's status.
Exit code 0 when the portal answers, 1 when the demo is not running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.demo_status", description=__doc__.split("\n")[0])
    parser.add_argument("--portal", default="http://127.0.0.1:8090")
    parser.add_argument("--api-key-file", type=Path, default=Path("var/demo/api.key"))
    parser.add_argument("--banner-file", type=Path, default=Path("var/demo/banner.txt"))
    args = parser.parse_args(argv)
    portal = args.portal.rstrip("/")
    try:
        key = args.api_key_file.read_text().strip()
    except OSError:
        print(f"No demo API key at {args.api_key_file}: start the demo with `make demo`.")
        return 1
    try:
        response = requests.get(f"{portal}/registry/services", params={"page_size": 500},
                                headers={"Authorization": f"Token {key}"}, timeout=5)
    except requests.RequestException:
        print(f"The demo is not running: nothing answers at {portal} (start it with `make demo`).")
        return 1
    if response.status_code != 200:
        print(f"{portal} answered HTTP {response.status_code} to the demo key: {response.text[:200]}")
        return 1
    try:
        print(args.banner_file.read_text().rstrip("\n"))
    except OSError:
        print(f"The portal answers at {portal}; the sample runs are still starting (no banner yet).")
    body = response.json()
    services = body.get("results", body) if isinstance(body, dict) else body
    print("\nServices now:")
    for svc in sorted(services, key=lambda s: s["name"]):
        reason = f"  ({svc['status_reason']})" if svc.get("status_reason") else ""
        print(f"  {svc['name']:<22} {svc['status']:<12}{reason}")
    if not services:
        print("  none registered yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
