#!/usr/bin/env python3
"""What following a launched command costs: names resolved and armed through
ld.so's loading, against an address watch and against perf.

For each case the command (``true``, ``xz --version``, ``python3 -c pass``
by default) runs under

- ``perf stat -e mem:ADDR/8:w:u -- CMD`` (perf arms inside execve, follows
  nothing),
- ``perfbp stat -w ADDR -- CMD`` (traced, but no name: no syscall stops),
- ``perfbp stat -w NAME@libc.so.6 -- CMD`` (a library name: syscall stops
  from the exec to the entry point, armed at libc's mmap),
- ``perfbp stat -w optind@libc.so.6 -- CMD`` (a copy relocation where the
  program has one),

and the benchmark prints the median over ``--runs`` of two figures:
``wall`` (the whole command line, perfbp's Python start-up included) and
``inside`` (perfbp's own elapsed seconds from its JSON: exec to exit, where
the tracing cost shows).  It never asserts; it exits 2 when it cannot run
(no perfbp, no perf).

Usage::

    python3 benchmarks/bench_follow.py [--runs N] [--json] [--perfbp DIR]

``--perfbp DIR`` and ``--json``: the common options (benchmarks/README.md).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time

import _harness as harness

PERFBP = [sys.executable, "-m", "perfbp"]
COMMANDS = {"true": ["true"], "xz --version": ["xz", "--version"],
            "python3 -c pass": [sys.executable, "-S", "-c", "pass"]}


def timed(argv: "list[str]", pdir: str) -> "tuple[float, dict | None]":
    """Run once in ``pdir``: ``python -m perfbp`` imports the perfbp there (its
    cwd comes first on sys.path), and nothing else in the environment changes."""
    start = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, cwd=pdir,
                       stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    doc = None
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
    return wall, doc


def measure(argv: "list[str]", runs: int, pdir: str) -> dict:
    walls, inside = [], []
    for _ in range(runs):
        wall, doc = timed(argv, pdir)
        walls.append(wall)
        if doc is not None:
            inside.append(doc["elapsed_seconds"])
    out = {"wall": statistics.median(walls)}
    if inside:
        out["inside"] = statistics.median(inside)
    return out


def main() -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--runs", type=int, default=9)
    args = harness.parse_args(ap)
    pdir = args.perfbp
    if shutil.which("perf") is None:
        print("bench_follow: needs perf (Debian: linux-perf)", file=sys.stderr)
        return 2
    busy = harness.busy_warning(harness.load_average())
    if busy:  # on stderr: the output's rows and JSON keys are the commands
        print(f"WARNING: {busy}", file=sys.stderr)
    results = {}
    for name, cmd in COMMANDS.items():
        if shutil.which(cmd[0]) is None:
            continue
        cases = {
            "perf, address": ["perf", "stat", "-x,", "-e", "mem:0x10000/8:w:u", "--", *cmd],
            "perfbp, address": [*PERFBP, "stat", "--json", "-w", "0x10000", "--", *cmd],
            "perfbp, environ@libc.so.6": [*PERFBP, "stat", "--json", "-w",
                                          "environ@libc.so.6", "--", *cmd],
            "perfbp, optind@libc.so.6": [*PERFBP, "stat", "--json", "-w",
                                         "optind@libc.so.6", "--", *cmd],
        }
        results[name] = {case: measure(argv, args.runs, pdir) for case, argv in cases.items()}
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'command':18} {'case':28} {'wall':>9} {'inside':>9}")
    for name, cases in results.items():
        for case, m in cases.items():
            inside = f"{m['inside'] * 1000:7.1f}ms" if "inside" in m else f"{'-':>9}"
            print(f"{name:18} {case:28} {m['wall'] * 1000:7.1f}ms {inside}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
