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
the tracing cost shows).

Then a member of a large library by name, against gdb (issue 13):
``perfbp stat -w _PyRuntime.ceval.gil.switch_number@libpython3.11.so.1.0
-- PY -c pass``, where PY is a python3.11 linked against a libpython that
carries DWARF (a pyenv build; ``--python`` names another, ``--member``
another member), run

- with a cold cache (``XDG_CACHE_HOME`` a new empty directory each run:
  the DWARF is indexed, and the member resolved, from scratch),
- with a warm cache (the same directory every run, filled once before),
- with the member's address (no name: the floor of a run),

and gdb resolving the same name after running to ``main`` (``gdb -batch
-ex 'break main' -ex run -ex 'p &NAME' --args PY -c pass``).  The four
alternate within each round; the medians of wall time and of peak RSS
are printed, with the ratios to gdb and their goals (warm <= 1.0x,
cold <= 2.0x).  The page cache is warm for all of them.

It never asserts; it exits 2 when it cannot run (no perfbp, no perf); the
member's part is left out, with a note, without gdb or such a python.

Usage::

    python3 benchmarks/bench_follow.py [--runs N] [--python PY] [--member NAME@OBJ]
                                       [--json] [--perfbp DIR]

``--perfbp DIR`` and ``--json``: the common options (benchmarks/README.md).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
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


MEMBER = "_PyRuntime.ceval.gil.switch_number@libpython3.11.so.1.0"
GOALS = {"warm cache": 1.0, "cold cache": 2.0}


def find_python(lib: str) -> "str | None":
    """A python linked against a shared ``lib`` (the member's object) that
    carries DWARF: pyenv's builds first, then python3.11 on PATH."""
    version = re.match(r"libpython(\d+\.\d+)", lib)
    if version is None or shutil.which("ldd") is None or shutil.which("readelf") is None:
        return None
    v = version[1]
    for python in [*sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{v}*/bin/python{v}"))),
                   shutil.which(f"python{v}")]:
        if not python:
            continue
        linked = subprocess.run(["ldd", python], capture_output=True, text=True).stdout
        m = re.search(rf"{re.escape(lib)} => (\S+)", linked)
        if m and ".debug_info" in subprocess.run(["readelf", "-SW", m[1]], capture_output=True,
                                                 text=True).stdout:
            return os.path.realpath(python)
    return None


def run_rss(argv: "list[str]", pdir: str, env: dict) -> "tuple[float, float, str]":
    """``(wall seconds, peak RSS in MB, stdout)`` of one run (RSS from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=pdir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, out


def measure_member(python: str, member: str, runs: int, pdir: str) -> dict:
    """The member's four cases, alternating within each round (see the module doc)."""
    expr = member.rsplit("@", 1)[0]
    gdb = ["gdb", "-nx", "-batch", "-ex", "set startup-with-shell off", "-ex", "break main",
           "-ex", "run", "-ex", f"p/x (unsigned long)&({expr})", "--args", python, "-c", "pass"]
    named = [*PERFBP, "stat", "--json", "-w", member, "--", python, "-c", "pass"]
    env = harness.child_env(pdir)
    with tempfile.TemporaryDirectory(prefix="bench-follow-") as scratch:
        warm = dict(env, XDG_CACHE_HOME=os.path.join(scratch, "warm"))
        _wall, _rss, out = run_rss(named, pdir, warm)  # fills the warm cache
        m = re.search(r'"address":\s*(\d+)', out)
        address = f"{int(m[1]):#x}" if m else None
        cases = {"gdb": (gdb, env), "perfbp, cold cache": (named, None),
                 "perfbp, warm cache": (named, warm)}
        if address:  # at the address perfbp found (ASLR moves it: only the cost counts)
            cases["perfbp, address"] = ([*PERFBP, "stat", "--json", "-w", address, "--",
                                         python, "-c", "pass"], env)
        samples: "dict[str, list]" = {c: [] for c in cases}
        for r in range(runs):
            for case, (argv, case_env) in cases.items():
                if case_env is None:  # a new, empty cache directory every run
                    case_env = dict(env, XDG_CACHE_HOME=os.path.join(scratch, f"cold{r}"))
                samples[case].append(run_rss(argv, pdir, case_env)[:2])
    out = {case: {"wall": statistics.median(w for w, _m in got),
                  "rss_mb": statistics.median(m for _w, m in got)}
           for case, got in samples.items()}
    for case in ("warm cache", "cold cache"):
        out[f"perfbp, {case}"]["vs_gdb"] = out[f"perfbp, {case}"]["wall"] / out["gdb"]["wall"]
    return {"python": python, "member": member, "cases": out}


def print_member(result: dict) -> None:
    print()
    print(f"{result['member']} in {result['python']} -c pass")
    harness.print_header(f"{'case':28} {'wall':>9} {'peak RSS':>9}")
    for case, m in result["cases"].items():
        print(f"{case:28} {m['wall'] * 1000:7.1f}ms {m['rss_mb']:7.1f}MB")
    rows = [{"label": f"perfbp, {case} / gdb", "ratio": result["cases"][f"perfbp, {case}"]["vs_gdb"],
             "goal": goal} for case, goal in GOALS.items()]
    for row in rows:
        row["status"] = "PASS" if row["ratio"] <= row["goal"] else "MISS"
    harness.print_ratios("wall time", rows, 28, 2)


def main() -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--python", help="a python linked against the member's library, "
                                     "which carries DWARF (default: found)")
    ap.add_argument("--member", default=MEMBER, help=f"NAME@OBJECT (default {MEMBER})")
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
    python = args.python or find_python(args.member.rsplit("@", 1)[-1])
    member, why = None, None
    if shutil.which("gdb") is None:
        why = "no gdb"
    elif python is None:
        why = f"no python linked against a {args.member.rsplit('@', 1)[-1]} with DWARF"
    else:
        member = measure_member(python, args.member, args.runs, pdir)
    if args.json:
        print(json.dumps({**results, "member": member or {"skipped": why}}))
        return 0
    print(f"{'command':18} {'case':28} {'wall':>9} {'inside':>9}")
    for name, cases in results.items():
        for case, m in cases.items():
            inside = f"{m['inside'] * 1000:7.1f}ms" if "inside" in m else f"{'-':>9}"
            print(f"{name:18} {case:28} {m['wall'] * 1000:7.1f}ms {inside}")
    if member is not None:
        print_member(member)
    else:
        print(f"\n(member by name against gdb left out: {why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
