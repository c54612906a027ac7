#!/usr/bin/env python3
"""Start-up: what a short perfbp command costs, against the interpreter's own
start and against perf.

Each command is run whole, as a user runs it, and timed wall clock from the
spawn to the exit (median of ``--rounds``, rounds interleaved so that a change
in the machine's load hits every command alike; one untimed run of each
first, which also writes the bytecode caches):

* ``python3 -c pass``                             (the interpreter's own start)
* ``python3 -m perfbp stat -w ADDR -- true``      (the goal's figure)
* ``python3 -m perfbp slots -w ADDR -- true``     (plans, opens nothing)
* ``python3 -m perfbp report -i SMALL``           (a 1,009-sample recording)
* ``python3 -m perfbp --help``
* ``perf stat -e mem:ADDR/8:w -- true`` and ``perf report -i SMALL --stdio``
  (the peer, for context)

``python3`` is this interpreter (``sys.executable``), with PYTHONPATH set to
the perfbp checkout being measured, run in a scratch directory;
PYTHONDONTWRITEBYTECODE is removed from the children's environment (with it
set, every run compiles perfbp from source).  The small recording is written
by perfbp itself (``record -w ADDR -- PROG``, a C program writing a global
1,009 times).

Goal: ``perfbp stat`` within 5x ``python3 -c pass``.

Then where an interpreter's time goes in ``perfbp stat``, from one run under
``-X importtime``: the import time of each top-level package (typer, pydantic,
cffi, perfbp, ...), which should show no pydantic and no pycparser.

This is a benchmark: it reports PASS/MISS, never asserts, and exits 0 once it
has measured (2 when it cannot run: no gcc or no perf).

Usage::

    python3 benchmarks/bench_startup.py [--rounds R] [--json] [--perfbp DIR]
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import _harness as harness

GOAL = 5.0
HITS = 1009

PROG = r"""
volatile long counter;
int main(void) { for (int i = 0; i < %d; i++) counter = i; return 0; }
""" % HITS


def timed(argv: "list[str]", env: dict, cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def import_breakdown(argv: "list[str]", env: dict, cwd: str) -> "dict[str, float]":
    """Milliseconds of import time by top-level package, from -X importtime."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=cwd,
                          capture_output=True, text=True)
    totals: "dict[str, float]" = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
        if m:
            top = m.group(3).split(".")[0]
            totals[top] = totals.get(top, 0.0) + int(m.group(1)) / 1000
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    harness.rounds_option(ap, 21, "runs of each command; the median is kept")
    args = harness.parse_args(ap, argv)
    try:
        perf, perf_version = harness.find_perf()
    except RuntimeError as exc:
        print(f"bench_startup: {exc}", file=sys.stderr)
        return 2
    load_before = harness.load_average()
    env = harness.child_env(args.perfbp)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="perfbp-bench-startup-") as work:
        try:
            prog = harness.compile_c(work, "writer", PROG, "-O2", "-no-pie")
            addr = harness.symbol_address(prog)
        except RuntimeError as exc:
            print(f"bench_startup: {exc}", file=sys.stderr)
            return 2
        small = os.path.join(work, "small.data")
        made = subprocess.run([py, "-m", "perfbp", "record", "-o", small, "-w", f"{addr:#x}",
                               "--", prog], env=env, cwd=work, capture_output=True, text=True)
        if made.returncode != 0:
            print(f"bench_startup: cannot record: {made.stderr.strip()}", file=sys.stderr)
            return 2
        watch = f"{addr:#x}"
        commands = {
            "python3 -c pass": [py, "-c", "pass"],
            "perfbp stat -w ADDR -- true": [py, "-m", "perfbp", "stat", "-w", watch, "--", "true"],
            "perfbp slots -w ADDR -- true": [py, "-m", "perfbp", "slots", "-w", watch, "--", "true"],
            "perfbp report -i SMALL": [py, "-m", "perfbp", "report", "-i", small],
            "perfbp --help": [py, "-m", "perfbp", "--help"],
            "perf stat -e mem:ADDR/8:w -- true": [perf, "stat", "-e", f"mem:{watch}/8:w", "--",
                                                  "true"],
            "perf report -i SMALL --stdio": [perf, "report", "-i", small, "--stdio"],
        }
        for cmd in commands.values():  # warm: caches, bytecode
            timed(cmd, env, work)
        times: "dict[str, list[float]]" = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                times[name].append(timed(cmd, env, work))
        imports = import_breakdown(commands["perfbp stat -w ADDR -- true"], env, work)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["python3 -c pass"]
    rows = [{"command": name, "median_s": med, "vs_python": med / base}
            for name, med in medians.items()]
    ratio = medians["perfbp stat -w ADDR -- true"] / base
    result = {
        **harness.machine(), "perf": perf_version, "rounds": args.rounds,
        "loadavg_before": load_before, "loadavg_after": harness.load_average(),
        "rows": rows, "import_ms_by_package": imports,
        "stat_vs_python": ratio, "goal": GOAL, "status": "PASS" if ratio <= GOAL else "MISS",
    }
    return harness.finish(result, args.json, print_table,
                          [harness.busy_warning(load_before)])


def print_table(result: dict) -> None:
    harness.print_warning(result)
    print(f"start-up, wall clock, median of {result['rounds']} "
          f"({result['machine']}, Linux {result['kernel']}, Python {result['python']}, "
          f"{result['perf']})")
    print()
    harness.print_header(f"{'command':36} {'median':>9} {'vs python -c pass':>18}")
    for row in result["rows"]:
        print(f"{row['command']:36} {row['median_s'] * 1e3:7.1f}ms {row['vs_python']:17.2f}x")
    harness.print_ratios("goal", [{"label": "perfbp stat / python3 -c pass",
                                   "ratio": result["stat_vs_python"], "goal": result["goal"],
                                   "status": result["status"]}], 36, 2)
    print()
    harness.print_header(f"{'import time in perfbp stat, by package':40} {'ms':>7}")
    for package, ms in list(result["import_ms_by_package"].items())[:12]:
        print(f"{package:40} {ms:7.1f}")
    for absent in ("pydantic", "pycparser", "numpy"):
        if absent not in result["import_ms_by_package"]:
            print(f"{absent:40} {'-':>7}  (not imported)")


if __name__ == "__main__":
    sys.exit(main())
