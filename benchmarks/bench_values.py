#!/usr/bin/env python3
"""Conditional watchpoints: what a hit costs the watched program when a
condition on the written value is tested at each hit (``perfbp stat --if``,
``perfbp record --if``, gdb's ``watch ... if``, a bpftrace predicate), and
whether each tool counts the matches exactly.

The target is a C program (gcc -O1 -g -no-pie) with a global ``volatile
uint64_t value`` that its loop sets to 1, 2, ..., N (N a prime: 200,003 by
default, 2,003 under gdb, which stops the program at every hit).  It times
its own loop with clock_gettime(CLOCK_MONOTONIC) and prints nanoseconds per
write, so start-up, the tool's own start and its report at the end are not
in the figure: only what the program feels while it runs.  It also counts
the SIGTRAPs it receives (it ignores them with a handler): a hit this
machine's hypervisor delivers without its status (DR6 empty) is not counted
by the kernel and reaches the program as a SIGTRAP, which would kill it under
bpftrace.  perfbp's tracer drops those signals (and counts the hits apart,
``recovered``); under gdb such a stop shows as ``Program received signal
SIGTRAP`` and the script continues the program.

Two conditions, with K = (N + 1) // 2:

* ``new == K``      (1 match expected)
* ``new > N - 10``  (10 matches expected)

Run under, each R times (3 by default; the modes alternate within a round,
the median ns/write is kept):

* nothing                                               (the loop's own cost)
* ``python3 -m perfbp stat -w value -- ./prog N``        (count every hit)
* ``python3 -m perfbp stat -w value --if 'new == K' -- ./prog N``
  (a BPF program in the kernel tests each hit: hits and matched)
* ``python3 -m perfbp record -w value -o F -- ./prog N`` (sample every hit)
* ``python3 -m perfbp record -w value --if 'new > N-10' -o F -- ./prog N``
* ``gdb -batch -x SCRIPT --args ./prog 2003``, SCRIPT being ``watch value if
  value == K`` (and, on a second row, ``> N-10``), ``commands`` /
  ``continue`` / ``end``, ``run``: a hardware watchpoint; gdb stops the
  program at each hit, evaluates the condition and resumes it.  Matched is
  gdb's own count (``breakpoint already hit M times``), checked against the
  ``New value =`` reports it printed.
* ``bpftrace -e 'watchpoint:ADDR:8:w /reg("ip") < USER_TOP/ { @hits =
  count(); if (*(uint64*)uptr(ADDR) == K) { @matched = count(); } }' -c
  './prog N'`` (and ``> N-10``), when bpftrace is installed.  The ``reg("ip")``
  predicate keeps user-mode hits only, like perfbp's default (without it the
  kernel's clearing of .bss at exec is one more hit); the value is read at
  the hit, after the write (x86 data breakpoints trap after the access).

Per hit: (ns/write under the tool - ns/write unwatched), in microseconds, and
its ratio to ``perfbp stat`` and to ``perfbp record``.  Goal (the ``--if``
issue): ``perfbp record --if`` per hit within 10% of plain ``perfbp record``
(ratio <= 1.10); the same ratio on each mode's fastest run is printed too.
Counts: hits should be N (perfbp stat counts the hits without status in its
total; for record and bpftrace they are added from ``recovered`` and the
program's SIGTRAP count), matched exactly 1 or 10: OK or WRONG.

The run takes about R x 9 x N x (the per-hit cost) plus start-ups: about a
minute at 10 us a hit with the defaults.  Modes a tool lacks are skipped with
a line saying so (bpftrace absent; a perfbp without ``--if``; ``--no-gdb``,
``--no-bpftrace``).

This is a benchmark: it reports PASS/MISS, it never asserts, and it exits 0
whenever it could measure (2 if gcc or hardware breakpoints are missing).

Usage::

    python3 benchmarks/bench_values.py [--writes N] [--gdb-writes N] [--rounds R]
                                       [--no-gdb] [--no-bpftrace] [--json]
                                       [--perfbp DIR]

``--perfbp DIR`` and ``--json``: the common options (benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import _harness as harness

GOAL_IF_VS_RECORD = 1.10
DEFAULT_WRITES = 200_003
DEFAULT_GDB_WRITES = 2_003
#: the top of user space on x86-64: an ip below it is a user-mode hit
USER_TOP = 0x800000000000
#: runs of one mode that may end in SIGTRAP before the benchmark gives up
TRAP_RETRIES = 10

C_SOURCE = r"""
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile uint64_t value;        /* the watched global */
static volatile sig_atomic_t stray_traps;

/* a hit delivered without its status (DR6 empty) comes as a SIGTRAP */
static void on_trap(int sig) { (void)sig; stray_traps++; }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 200003;
    signal(SIGTRAP, on_trap);
    uint64_t t0 = now_ns();
    for (uint64_t i = 1; i <= n; i++)
        value = i;
    uint64_t t1 = now_ns();
    printf("BENCH_LOOP writes=%llu ns_per_write=%.3f stray_traps=%d\n",
           (unsigned long long)n, (double)(t1 - t0) / (double)n, (int)stray_traps);
    fflush(stdout);
    return 0;
}
"""


def build(workdir: str) -> "tuple[str, int]":
    exe = harness.compile_c(workdir, "values_loop", C_SOURCE, "-O1", "-g", "-no-pie")
    return exe, harness.symbol_address(exe, "value")


# ----------------------------------------------------------------------------------
# The conditions and the modes
# ----------------------------------------------------------------------------------

def condition(kind: str, n: int) -> "tuple[int, int]":
    """(operand, matches expected) for ``eq`` (new == K, K = (n + 1) // 2)
    or ``gt`` (new > n - 10) on a loop writing 1..n."""
    if kind == "eq":
        return (n + 1) // 2, 1
    return n - 10, 10


def cond_text(kind: str, n: int, var: str = "new") -> str:
    operand = condition(kind, n)[0]
    return f"{var} {'==' if kind == 'eq' else '>'} {operand}"


#: key -> (tool, condition or None, label template)
MODES = {
    "none": ("target", None, "target alone (no watch)"),
    "perfbp_stat": ("perfbp", None, "perfbp stat -w value"),
    "perfbp_stat_if": ("perfbp", "eq", "perfbp stat -w value --if '{c}'"),
    "perfbp_record": ("perfbp", None, "perfbp record -w value"),
    "perfbp_record_if": ("perfbp", "gt", "perfbp record -w value --if '{c}'"),
    "gdb_eq": ("gdb", "eq", "gdb watch value if {c}"),
    "gdb_gt": ("gdb", "gt", "gdb watch value if {c}"),
    "bpftrace_eq": ("bpftrace", "eq", "bpftrace watchpoint /{c}/"),
    "bpftrace_gt": ("bpftrace", "gt", "bpftrace watchpoint /{c}/"),
}


def label(mode: str, n: int) -> str:
    tool, kind, tmpl = MODES[mode]
    if kind is None:
        return tmpl
    var = "value" if tool in ("gdb", "bpftrace") else "new"
    return tmpl.format(c=cond_text(kind, n, var))


def gdb_script(workdir: str, kind: str, n: int) -> str:
    """A gdb command file: the conditional hardware watchpoint, continued at
    every stop, then gdb's own hit count; a stop that is no watchpoint's (a
    hit delivered without its status: SIGTRAP) is continued too."""
    path = os.path.join(workdir, f"watch_{kind}.gdb")
    with open(path, "w") as f:
        f.write("set pagination off\nset confirm off\n"
                f"watch value if {cond_text(kind, n, 'value')}\n"
                "commands 1\ncontinue\nend\n"
                "run\n"
                "while $_isvoid($_exitcode)\n  continue\nend\n"
                "info watchpoints\n")
    return path


def bpftrace_program(addr: int, kind: str | None, n: int) -> str:
    """The probe: user-mode hits counted in @hits, the value read at the hit
    (after the write) tested into @matched (``kind`` None: hits only)."""
    read = f"*(uint64*)uptr({addr:#x})"
    body = "@hits = count();"
    if kind is not None:
        body += f" if ({cond_text(kind, n, read)}) {{ @matched = count(); }}"
    return f'watchpoint:{addr:#x}:8:w /reg("ip") < {USER_TOP:#x}/ {{ {body} }}'


def command(mode: str, exe: str, addr: int, n: int, workdir: str,
            bpf_kind_override: "str | None" = "same") -> "list[str]":
    tool, kind, _ = MODES[mode]
    prog = [exe, str(n)]
    py = sys.executable
    out = os.path.join(workdir, f"{mode}.data")
    if mode == "none":
        return prog
    if mode == "perfbp_stat":
        return [py, "-m", "perfbp", "stat", "--json", "-w", "value", "--"] + prog
    if mode == "perfbp_stat_if":
        return [py, "-m", "perfbp", "stat", "--json", "-w", "value",
                "--if", cond_text(kind, n), "--"] + prog
    if mode == "perfbp_record":
        return [py, "-m", "perfbp", "record", "--json", "-w", "value", "-o", out, "--"] + prog
    if mode == "perfbp_record_if":
        return [py, "-m", "perfbp", "record", "--json", "-w", "value",
                "--if", cond_text(kind, n), "-o", out, "--"] + prog
    if tool == "gdb":
        return ["gdb", "-batch", "-nx", "-x", gdb_script(workdir, kind, n), "--args"] + prog
    if tool == "bpftrace":
        k = kind if bpf_kind_override == "same" else bpf_kind_override
        return ["bpftrace", "-e", bpftrace_program(addr, k, n), "-c", " ".join(prog)]
    raise ValueError(mode)


# ----------------------------------------------------------------------------------
# One run of a mode
# ----------------------------------------------------------------------------------

class Unavailable(Exception):
    """The tool cannot run this mode (e.g. a perfbp without --if)."""


def _loop(stdout: str) -> "tuple[float, int] | None":
    m = re.search(r"BENCH_LOOP writes=\d+ ns_per_write=([\d.]+) stray_traps=(\d+)", stdout)
    return (float(m.group(1)), int(m.group(2))) if m else None


def _json_line(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON summary in the output")


def _killed_by_trap(proc: subprocess.CompletedProcess) -> bool:
    return (proc.returncode == -signal.SIGTRAP or "Trace/breakpoint trap" in proc.stderr
            or "terminated with signal SIGTRAP" in proc.stdout)


def parse(mode: str, proc: subprocess.CompletedProcess, stray: int) -> dict:
    """Hits, matched, and the hits delivered without their status, from a
    tool's output (None where the tool does not say)."""
    tool = MODES[mode][0]
    hits = matched = None
    unstatused = stray
    if tool == "perfbp":
        j = _json_line(proc.stdout)
        (w,) = j["watches"]
        recovered = w.get("recovered", 0)
        unstatused += recovered
        if mode.startswith("perfbp_stat"):
            hits = w["hits"]  # the hits without status are in it
        else:  # record: its "hits" are samples; the kernel's count, and those it missed
            kernel = w.get("kernel_hits")
            hits = (w["hits"] + (w.get("lost") or 0) if kernel is None else kernel) + recovered
        if "matched" in w:
            matched = w["matched"]
        elif mode == "perfbp_record_if":  # a record --if samples the matching hits only
            matched = w["hits"] + (w.get("lost") or 0)
    elif tool == "gdb":
        out = proc.stdout + proc.stderr
        m = re.search(r"breakpoint already hit (\d+) times?", out)
        matched = int(m.group(1)) if m else 0
        reported = len(re.findall(r"^New value = ", out, re.M))
        if reported != matched:  # gdb's count and its reports disagree: say so
            matched = f"{matched}/{reported} reported"
        unstatused += len(re.findall(r"Program received signal SIGTRAP", out))
    elif tool == "bpftrace":
        m = re.search(r"^@hits: (\d+)", proc.stdout, re.M)
        hits = int(m.group(1)) if m else 0
        if MODES[mode][1] is not None:
            m = re.search(r"^@matched: (\d+)", proc.stdout, re.M)
            matched = int(m.group(1)) if m else 0  # bpftrace prints no map never set
        hits += stray  # the kernel did not count those; the program did
    return {"hits": hits, "matched": matched, "unstatused": unstatused}


def run_once(mode: str, cmd: "list[str]", env: dict, cwd: str, n: int,
             retried: dict) -> dict:
    """Run once; the loop's ns per write and the tool's counts.

    A run whose program a SIGTRAP killed is run again (up to TRAP_RETRIES
    times, counted in ``retried``).  Raises Unavailable when the tool
    refuses the command line (a perfbp without ``--if``)."""
    timeout = 120 + n * 2e-3  # 2 ms a hit: far above gdb's worst
    for _attempt in range(TRAP_RETRIES):
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        wall = time.monotonic() - t0
        loop = _loop(proc.stdout)
        if loop is not None or not _killed_by_trap(proc):
            break
        retried[mode] = retried.get(mode, 0) + 1
    if loop is None:
        err = (proc.stderr.strip() or proc.stdout.strip())[-400:]
        if MODES[mode][0] == "perfbp" and "--if" in cmd and proc.returncode == 2 \
                and "--if" in proc.stderr:
            raise Unavailable("this perfbp has no --if option")
        if MODES[mode][0] == "bpftrace" and proc.returncode != 0:
            raise Unavailable(f"bpftrace failed: {err}")
        raise RuntimeError(f"{' '.join(cmd[:6])}... exited {proc.returncode} without the "
                           f"target's timing line: {err}")
    ns, stray = loop
    # kept for a run whose counts are off (the rest is dropped by measure)
    raw = {"stdout": proc.stdout[-3000:], "stderr": proc.stderr[-1500:]}
    return {"ns_per_write": ns, "wall": wall, "raw": raw, **parse(mode, proc, stray)}


# ----------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------

def measure(modes: "list[str]", exe: str, addr: int, writes: int, gdb_writes: int,
            rounds: int, workdir: str, env: dict, skipped: dict, retried: dict,
            notes: list, anomalies: list) -> dict:
    runs: dict = {m: [] for m in modes}
    bpf_no_value = False
    for _ in range(rounds):
        for mode in modes:
            if mode in skipped:
                continue
            tool = MODES[mode][0]
            n = gdb_writes if tool == "gdb" else writes
            cmd = command(mode, exe, addr, n, workdir)
            try:
                runs[mode].append(run_once(mode, cmd, env if tool == "perfbp" else None,
                                           workdir, n, retried))
            except Unavailable as exc:
                if tool == "bpftrace" and not bpf_no_value:
                    # the value predicate would not compile: count every hit instead
                    try:
                        cmd = command(mode, exe, addr, n, workdir, bpf_kind_override=None)
                        runs[mode].append(run_once(mode, cmd, None, workdir, n, retried))
                        bpf_no_value = True
                        notes.append(f"bpftrace could not read the value in its probe "
                                     f"({exc}): its rows count every hit, matched not "
                                     f"counted")
                        continue
                    except Unavailable:
                        pass
                skipped[mode] = str(exc)
            for f in os.listdir(workdir):  # recordings: keep the disk quiet
                if f.endswith(".data") or f.endswith(".data.old"):
                    os.unlink(os.path.join(workdir, f))
    out = {}
    for mode in modes:
        if not runs[mode]:
            continue
        tool, kind, _ = MODES[mode]
        n = gdb_writes if tool == "gdb" else writes
        rs = runs[mode]
        expected_matched = condition(kind, n)[1] if kind else None
        for i, r in enumerate(rs):  # a run whose counts are off: its output, to look at
            raw = r.pop("raw")
            if (r["hits"] is not None and r["hits"] != n) or \
                    (r["matched"] is not None and r["matched"] != expected_matched):
                anomalies.append({"mode": mode, "run": i + 1, "hits": r["hits"],
                                  "matched": r["matched"], "expected_hits": n,
                                  "expected_matched": expected_matched,
                                  "ns_per_write": r["ns_per_write"], **raw})
        ns = [r["ns_per_write"] for r in rs]
        hits = [r["hits"] for r in rs]
        matched = [r["matched"] for r in rs]
        unstatused = [r["unstatused"] for r in rs]
        if mode == "none":
            hits_ok = None
        elif any(h is None for h in hits):
            hits_ok = None
        else:
            hits_ok = all(h == n for h in hits)
        if expected_matched is None or all(m is None for m in matched):
            matched_ok = None
        else:
            matched_ok = all(m == expected_matched for m in matched)
        out[mode] = {
            "label": label(mode, n), "n": n,
            "ns_per_write_median": statistics.median(ns), "ns_per_write_min": min(ns),
            "ns_per_write_runs": [round(x, 1) for x in ns],
            "hits": hits, "matched": matched, "matched_expected": expected_matched,
            "unstatused": unstatused, "hits_ok": hits_ok, "matched_ok": matched_ok,
            "wall_median": statistics.median(r["wall"] for r in rs),
        }
    if "none" in out:
        base, base_min = out["none"]["ns_per_write_median"], out["none"]["ns_per_write_min"]
        for o in out.values():
            o["us_per_hit"] = (o["ns_per_write_median"] - base) / 1000.0
            o["us_per_hit_best"] = (o["ns_per_write_min"] - base_min) / 1000.0
        for ref in ("perfbp_stat", "perfbp_record"):
            r = out.get(ref)
            for mode, o in out.items():
                o[f"vs_{ref}"] = (o["us_per_hit"] / r["us_per_hit"]
                                  if r and r["us_per_hit"] > 0 and mode != "none" else None)
    return out


def goal_rows(res: dict) -> "list[dict]":
    rows = []
    rec, rif = res.get("perfbp_record"), res.get("perfbp_record_if")
    if rec and rif and rec["us_per_hit"] > 0:
        r = rif["us_per_hit"] / rec["us_per_hit"]
        rows.append({"label": "perfbp record --if / perfbp record, per hit", "ratio": r,
                     "goal": GOAL_IF_VS_RECORD,
                     "status": "PASS" if r <= GOAL_IF_VS_RECORD else "MISS"})
        if rec["us_per_hit_best"] > 0:
            rows.append({"label": "perfbp record --if / record, best runs",
                         "ratio": rif["us_per_hit_best"] / rec["us_per_hit_best"],
                         "goal": None, "status": "-"})
    st, sif = res.get("perfbp_stat"), res.get("perfbp_stat_if")
    if st and sif and st["us_per_hit"] > 0:
        rows.append({"label": "perfbp stat --if / perfbp stat, per hit",
                     "ratio": sif["us_per_hit"] / st["us_per_hit"], "goal": None,
                     "status": "-"})
    return rows


# ----------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------

def _count(values: list) -> str:
    last = values[-1]
    if last is None:
        return "-"
    return format(last, ",") if isinstance(last, int) else str(last)


def _ok(flag) -> str:
    return {None: "-", True: "OK", False: "WRONG"}[flag]


def print_table(r: dict) -> None:
    print(f"perfbp conditional-watch benchmark  ({r['machine']}, kernel {r['kernel']}, "
          f"{r['cpus']} CPUs, Python {r['python']}, perfbp from {r['perfbp_dir']})")
    print(f"target: a loop setting a global to 1..N, timed by itself; median of "
          f"{r['rounds']} runs per mode; {r['gdb_version'] or 'no gdb'}; "
          f"{r['bpftrace_version'] or 'no bpftrace'}")
    harness.print_warning(r)
    print()
    hdr = (f"{'tool':46} {'N':>8} {'hits':>8} {'matched':>8} {'exp':>4} "
           f"{'ns/write':>10} {'us/hit':>8} {'vs stat':>8} {'vs rec':>7}  counts")
    harness.print_header(hdr)
    for mode, o in r["modes"].items():
        ratio = {k: "-" if o.get(k) is None else f"{o[k]:.2f}x"
                 for k in ("vs_perfbp_stat", "vs_perfbp_record")}
        checks = []
        if o["hits_ok"] is not None:
            checks.append(f"hits {_ok(o['hits_ok'])}")
        if o["matched_ok"] is not None:
            checks.append(f"matched {_ok(o['matched_ok'])}")
        if any(o["unstatused"]):
            checks.append(f"({max(o['unstatused'])} hit(s) without status)")
        exp = "-" if o["matched_expected"] is None else str(o["matched_expected"])
        us = "-" if mode == "none" else f"{o['us_per_hit']:.2f}"
        print(f"{o['label']:46} {o['n']:>8,} {_count(o['hits']):>8} "
              f"{_count(o['matched']):>8} {exp:>4} {o['ns_per_write_median']:>10.1f} "
              f"{us:>8} {ratio['vs_perfbp_stat']:>8} {ratio['vs_perfbp_record']:>7}  "
              f"{' '.join(checks) or '-'}")
    print("(hits, matched: the last run's; any run whose counts are off is shown below)")
    for mode, why in r["skipped"].items():
        n = r["gdb_writes"] if MODES[mode][0] == "gdb" else r["writes"]
        print(f"{label(mode, n)}: skipped: {why}")
    for note in r["notes"]:
        print(f"note: {note}")
    if r["rows"]:
        harness.print_ratios("per-hit cost ratio", r["rows"], 46, 3)
    else:
        print()
        print(f"goal (record --if per hit <= {GOAL_IF_VS_RECORD:g}x record): not measured")
    for a in r["anomalies"]:
        print()
        print(f"counts off: {label(a['mode'], a['expected_hits'])}, run {a['run']}: hits "
              f"{a['hits']} (expected {a['expected_hits']}), matched {a['matched']} (expected "
              f"{a['expected_matched']}), {a['ns_per_write']:.1f} ns/write; its output:")
        for line in (a["stdout"] + "\n" + a["stderr"]).splitlines()[-12:]:
            print(f"  | {line[:300]}")
    exact = [o for o in r["modes"].values() if o["matched_ok"] is not None]
    if exact:
        print()
        print("matched counts exact (1 for == K, 10 for > N-10, in every run):")
        for o in exact:
            print(f"  {o['label']:46} {_ok(o['matched_ok'])}")


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--writes", type=int, default=DEFAULT_WRITES,
                    help=f"writes of the target under perfbp and bpftrace "
                         f"(default {DEFAULT_WRITES:,})")
    ap.add_argument("--gdb-writes", type=int, default=DEFAULT_GDB_WRITES,
                    help=f"writes of the target under gdb (default {DEFAULT_GDB_WRITES:,})")
    harness.rounds_option(ap, 3, "runs per mode; the median is reported")
    ap.add_argument("--no-gdb", action="store_true", help="skip the gdb rows")
    ap.add_argument("--no-bpftrace", action="store_true", help="skip the bpftrace rows")
    args = harness.parse_args(ap, argv)
    if args.writes < 20 or args.gdb_writes < 20:
        ap.error("--writes and --gdb-writes must be at least 20")
    env = harness.child_env(args.perfbp)
    skipped: dict = {}
    gdb_version = bpftrace_version = ""
    if args.no_gdb:
        skipped.update({"gdb_eq": "--no-gdb", "gdb_gt": "--no-gdb"})
    elif shutil.which("gdb") is None:
        skipped.update({"gdb_eq": "gdb is not on PATH", "gdb_gt": "gdb is not on PATH"})
    else:
        gdb_version = subprocess.run(["gdb", "--version"], capture_output=True,
                                     text=True).stdout.splitlines()[0]
    if args.no_bpftrace:
        skipped.update({"bpftrace_eq": "--no-bpftrace", "bpftrace_gt": "--no-bpftrace"})
    elif shutil.which("bpftrace") is None:
        why = "bpftrace is not installed (Debian: apt-get install bpftrace)"
        skipped.update({"bpftrace_eq": why, "bpftrace_gt": why})
    else:
        bpftrace_version = subprocess.run(["bpftrace", "--version"], capture_output=True,
                                          text=True).stdout.strip()
    modes = list(MODES)
    load_before = harness.load_average()
    retried: dict = {}
    notes: list = []
    anomalies: list = []
    workdir = tempfile.mkdtemp(prefix="perfbp-bench-values-")
    try:
        try:
            exe, addr = build(workdir)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"cannot build the target: {exc}", file=sys.stderr)
            return 2
        try:
            res = measure(modes, exe, addr, args.writes, args.gdb_writes,
                          max(1, args.rounds), workdir, env, skipped, retried, notes,
                          anomalies)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            print(f"a run failed: {exc}", file=sys.stderr)
            return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "perfbp_stat" not in res:
        print(f"perfbp stat could not run: {skipped.get('perfbp_stat', '?')}", file=sys.stderr)
        return 2
    result = {
        **harness.machine(), "cpus": len(os.sched_getaffinity(0)),
        "python_executable": sys.executable, "perfbp_dir": args.perfbp,
        "gdb_version": gdb_version, "bpftrace_version": bpftrace_version,
        "writes": args.writes, "gdb_writes": args.gdb_writes, "rounds": args.rounds,
        "loadavg_before": round(load_before, 2),
        "loadavg_after": round(harness.load_average(), 2),
        "modes": res, "skipped": skipped, "notes": notes, "rows": goal_rows(res),
        "goal_if_vs_record": GOAL_IF_VS_RECORD, "trap_retries": retried,
        "anomalies": anomalies,
    }
    warnings = [harness.busy_warning(load_before)]
    bad = [m for m, o in res.items() if o["hits_ok"] is False or o["matched_ok"] is False]
    if bad:
        warnings.append(f"counts off in: {', '.join(bad)}")
    if retried:
        warnings.append(f"{sum(retried.values())} run(s) ran again after a SIGTRAP killed the "
                        f"program (debug exceptions delivered without their status)")
    return harness.finish(result, args.json, print_table, warnings)


if __name__ == "__main__":
    sys.exit(main())
