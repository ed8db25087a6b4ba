"""Benchmark: what input hardening costs (not a test; prints three tables).

1. The JSON rule per body.
Parses the same bodies with DRF's ``JSONParser`` (the baseline: no depth limit, no
string checks) and the portal's ``PortalJSONParser`` (berrys_portal/json_input.py),
in one process, interleaved, and prints the median time per parse and the ratio:

* a registration (~0.5 KB, shallow: only the bracket count is looked at),
* 2,000 objects in a list (~200 KB: more brackets than the limit, so the depth is
  read from the text),
* the same with a valid surrogate pair escape in it (strings are walked too),
* 60 levels deep (just under the limit).

2. A pathological adapter pattern, ``/(a+)+b``, under Python's ``re`` and RE2, once each.

3. With ``--adapters`` (needs a migrated ``DATABASE_URL``): ``adapt_request`` per call with
   0, 1 and 20 matching rules (sharing one glob), patterns compiled by Python's ``re`` (the
   baseline: ``fnmatch.translate``, as before) and by RE2 (registry/patterns.py), interleaved.

    .venv/bin/python bench/input_hardening.py [--repeats 5] [--loops 200] [--adapters]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")


def bodies() -> dict[str, bytes]:
    registration = {"name": "planning-system-1", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:8102",
                    "health_url": "http://127.0.0.1:8102/health", "metadata": {"version": "1.0.0"},
                    "capabilities": ["strategic-planning", "tactical-planning"], "tags": ["eu-west"],
                    "endpoints": [{"method": "POST", "path": "/plans/strategic"},
                                  {"method": "POST", "path": "/plans/tactical"}]}
    items = [{"id": i, "name": f"item-{i}", "tags": ["a", "b"], "meta": {"n": i}} for i in range(2000)]
    return {
        "registration (0.5 KB)": json.dumps(registration).encode(),
        "2,000 objects (200 KB)": json.dumps({"items": items}).encode(),
        "2,000 objects + \\ud83d\\ude00": json.dumps({"items": items, "emoji": "\U0001f600"}).encode(),
        "60 levels deep": ("[" * 60 + "1" + "]" * 60).encode(),
    }


def per_parse(parser, body: bytes, loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        parser.parse(io.BytesIO(body), "application/json", {"encoding": "utf-8"})
    return (time.perf_counter() - start) / loops


def adapter_table(repeats: int) -> None:
    import fnmatch
    import re

    import registry.adapters as adapters
    from bench.gateway import _adapter_cost
    from registry.models import RequestAdapterRule
    from registry.patterns import pattern_compile

    def python_re(pattern: str, *, glob: bool):
        return re.compile(fnmatch.translate(pattern) if glob else pattern)

    counts = (0, 1, 20)
    runs = []
    try:
        for _ in range(repeats):
            adapters.pattern_compile = python_re
            base = {n: _adapter_cost(n, calls=5000) for n in counts}
            adapters.pattern_compile = pattern_compile
            ours = {n: _adapter_cost(n, calls=5000) for n in counts}
            runs.append((base, ours))
    finally:
        adapters.pattern_compile = pattern_compile
        RequestAdapterRule.objects.filter(service_type="BENCH_TARGET").delete()
    print(f"\n{'adapt_request, matching rules':32} {'re':>10} {'RE2':>10} {'ratio':>7}")
    for n in counts:
        base = statistics.median(r[0][n] for r in runs)
        ours = statistics.median(r[1][n] for r in runs)
        print(f"{n:<32} {base:7.1f} µs {ours:7.1f} µs {ours / base:6.2f}×")


def pathological_table() -> None:
    import re

    from registry.patterns import pattern_compile

    slow, linear = re.compile(r"/(a+)+b"), pattern_compile(r"/(a+)+b", glob=False)
    print(f"\n{'/(a+)+b against /a…a!':32} {'re':>12} {'RE2':>10}")
    for n in (20, 22, 24, 10_000):
        path = "/" + "a" * n + "!"
        timings = []
        for pattern in (slow, linear) if n < 100 else (linear,):
            started = time.perf_counter()
            pattern.fullmatch(path)
            timings.append(time.perf_counter() - started)
        base = f"{timings[0] * 1e3:9.1f} ms" if n < 100 else f"{'(skipped)':>12}"
        print(f"{n:<32} {base} {timings[-1] * 1e6:7.1f} µs")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--repeats", type=int, default=5)
    args.add_argument("--loops", type=int, default=200)
    args.add_argument("--adapters", action="store_true")
    opts = args.parse_args()

    import django

    django.setup()
    from rest_framework.parsers import JSONParser

    from berrys_portal.json_input import PortalJSONParser

    drf, portal = JSONParser(), PortalJSONParser()
    print(f"{'body':32} {'DRF JSONParser':>16} {'PortalJSONParser':>18} {'ratio':>7}")
    for name, body in bodies().items():
        # Interleaved, so both see the same machine load; medians of the repeats.
        runs = [(per_parse(drf, body, opts.loops), per_parse(portal, body, opts.loops))
                for _ in range(opts.repeats)]
        base = statistics.median(r[0] for r in runs)
        ours = statistics.median(r[1] for r in runs)
        print(f"{name:32} {base * 1e6:13.1f} µs {ours * 1e6:15.1f} µs {ours / base:6.2f}×")
    pathological_table()
    if opts.adapters:
        adapter_table(opts.repeats)


if __name__ == "__main__":
    main()
