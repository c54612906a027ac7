#!/usr/bin/env python3
"""Every speed goal in one table: perfbp and its peer, measured in the same run.

Runs the benchmarks below one after the other (each as its own process, with
``--json``), and prints one row per goal with both sides, their ratio, the
goal and PASS/MISS:

============================  =====================  ==============================
row                           benchmark              peer
============================  =====================  ==============================
start-up (stat -- true)       bench_startup.py       ``python3 -c pass`` (goal 5x)
report, 1 M / 5 M samples     bench_report.py        ``perf report --stdio``
named watch in libpython      bench_follow.py        gdb to ``main`` (warm, cold)
per hit, recording, 1 and     bench_overhead.py      ``perf record -c 1``
2 threads
Counter cycle, move           bench_lifecycle.py     the same syscalls in C
per hit, record --if          bench_values.py        plain ``perfbp record``
============================  =====================  ==============================

Each benchmark's own output (its table, with the details and the ``--help``
of how it measures) is saved next to the summary when ``--keep DIR`` is
given.  ``--quick`` runs each with fewer rounds and smaller sizes (minutes,
not a quarter of an hour): the figures are then rougher.  ``--only NAMES``
runs some of them (comma-separated: startup, report, names, overhead,
lifecycle, values).

This is a benchmark: it reports, never asserts, and exits 0 once every
benchmark it ran has measured (2 when one could not run; the others are
still reported).

Usage::

    python3 benchmarks/bench_all.py [--quick] [--only NAMES] [--keep DIR]
                                    [--recordings DIR] [--json] [--perfbp DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _harness as harness

HERE = Path(__file__).resolve().parent


def _row(what, perfbp, peer_name, peer, unit, ratio, goal, status=None):
    if status is None:
        status = "-" if goal is None or ratio is None else ("PASS" if ratio <= goal else "MISS")
    return {"what": what, "perfbp": perfbp, "peer_name": peer_name, "peer": peer,
            "unit": unit, "ratio": ratio, "goal": goal, "status": status}


def startup_rows(r: dict) -> list:
    by = {row["command"]: row["median_s"] for row in r["rows"]}
    stat, base = by["perfbp stat -w ADDR -- true"], by["python3 -c pass"]
    return [_row("perfbp stat -w ADDR -- true, wall", stat, "python3 -c pass", base, "s",
                 stat / base, r["goal"]),
            _row("  (for context) perf stat -e mem:ADDR -- true", None, "perf stat",
                 by["perf stat -e mem:ADDR/8:w -- true"], "s", None, None)]


def report_rows(r: dict) -> list:
    return [_row(f"report: {row['label']}", row["perfbp"], "perf report --stdio", row["perf"],
                 "s", row["ratio"], row["goal"])
            for row in r["rows"] if row["goal"] is not None]


def names_rows(r: dict) -> list:
    member = r.get("member") or {}
    if "cases" not in member:
        return [_row(f"named watch in libpython: {member.get('skipped', 'not measured')}",
                     None, "gdb", None, "s", None, None)]
    cases, gdb = member["cases"], member["cases"]["gdb"]["wall"]
    return [_row(f"named member in libpython, {case}", cases[f"perfbp, {case}"]["wall"],
                 "gdb (run to main)", gdb, "s", cases[f"perfbp, {case}"]["vs_gdb"], goal)
            for case, goal in (("warm cache", 1.0), ("cold cache", 2.0))]


def overhead_rows(r: dict) -> list:
    rows = []
    for variant, res in r["variants"].items():
        rec, prec = res.get("perfbp_record"), res.get("perf_record")
        if rec and prec and prec["us_per_hit"] > 0:
            rows.append(_row(f"per hit, recording every hit, {variant}", rec["us_per_hit"],
                             "perf record -c 1", prec["us_per_hit"], "us",
                             rec["us_per_hit"] / prec["us_per_hit"], 1.0))
    return rows


def lifecycle_rows(r: dict) -> list:
    labels = {"cycle": "Counter open/enable/disable/read/close",
              "move": "move() of an armed watch"}
    return [_row(labels[row["operation"]], row["python_ns"] / 1000, "C", row["c_ns"] / 1000,
                 "us", row["ratio"], row["goal"])
            for row in r["rows"] if row["operation"] in labels]


def values_rows(r: dict) -> list:
    modes = r["modes"]
    rec, rif = modes.get("perfbp_record"), modes.get("perfbp_record_if")
    if not (rec and rif):
        why = r["skipped"].get("perfbp_record_if", "not measured")
        return [_row(f"per hit, record --if: {why}", None, "perfbp record", None, "us",
                     None, None)]
    ratio = rif["us_per_hit"] / rec["us_per_hit"] if rec["us_per_hit"] > 0 else None
    rows = [_row("per hit, record --if 'new > N-10'", rif["us_per_hit"], "perfbp record",
                 rec["us_per_hit"], "us", ratio, r["goal_if_vs_record"])]
    sif, gdb = modes.get("perfbp_stat_if"), modes.get("gdb_eq")
    if sif and gdb:
        rows.append(_row("  (for context) per hit, stat --if 'new == K'", sif["us_per_hit"],
                         "gdb watch ... if", gdb["us_per_hit"], "us",
                         sif["us_per_hit"] / gdb["us_per_hit"], None))
    return rows


#: name -> (script, its arguments, quick arguments, rows from its JSON)
SUITE = {
    "startup": ("bench_startup.py", [], ["--rounds", "7"], startup_rows),
    "report": ("bench_report.py", ["--no-profile"],
               ["--samples", "200003", "--rounds", "3", "--no-profile"], report_rows),
    "names": ("bench_follow.py", ["--runs", "9"], ["--runs", "3"], names_rows),
    "overhead": ("bench_overhead.py", ["--hits", "100003", "--rounds", "5"],
                 ["--hits", "30011", "--rounds", "3"], overhead_rows),
    "lifecycle": ("bench_lifecycle.py", [], ["--iterations", "5000", "--rounds", "3"],
                  lifecycle_rows),
    "values": ("bench_values.py", [], ["--writes", "30011", "--gdb-writes", "503",
                                       "--rounds", "1"], values_rows),
}


def run_one(name: str, args, keep: "Path | None") -> "tuple[list, str | None, float]":
    """Run one benchmark; its rows, or the reason it could not run."""
    script, full, quick, rows_of = SUITE[name]
    argv = [sys.executable, str(HERE / script), "--perfbp", args.perfbp,
            *(quick if args.quick else full)]
    if name == "report" and args.recordings:
        argv += ["--keep", args.recordings]  # made once, then reused
    start = time.monotonic()
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True)
    took = time.monotonic() - start
    if keep is not None:
        (keep / f"{name}.json").write_text(done.stdout)
        (keep / f"{name}.stderr").write_text(done.stderr)
    if done.returncode != 0:
        return [], (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1], took
    try:
        return rows_of(json.loads(done.stdout)), None, took
    except (ValueError, KeyError) as exc:
        return [], f"unreadable output ({type(exc).__name__}: {exc})", took


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="fewer rounds and smaller sizes: minutes, rougher figures")
    ap.add_argument("--only", metavar="NAMES", default=",".join(SUITE),
                    help=f"comma-separated, of: {', '.join(SUITE)}")
    ap.add_argument("--keep", metavar="DIR", help="save each benchmark's JSON and stderr here")
    ap.add_argument("--recordings", metavar="DIR",
                    help="where bench_report keeps its 1 M and 5 M sample recordings, made "
                         "once (a minute or two) and reused by later runs")
    args = harness.parse_args(ap, argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(SUITE)}")
    keep = None
    if args.keep:
        keep = Path(args.keep)
        keep.mkdir(parents=True, exist_ok=True)
    load_before = harness.load_average()
    rows, failed, took = [], {}, {}
    for name in names:
        print(f"bench_all: running {SUITE[name][0]} ...", file=sys.stderr, flush=True)
        got, why, took[name] = run_one(name, args, keep)
        rows += got
        if why:
            failed[name] = why
    result = {**harness.machine(), "quick": args.quick, "loadavg_before": load_before,
              "loadavg_after": harness.load_average(), "seconds": took, "rows": rows,
              "failed": failed}
    harness.finish(result, args.json, print_table, [harness.busy_warning(load_before)])
    return 2 if failed else 0


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms"
    return f"{value:.3g} {unit}"


def print_table(result: dict) -> None:
    harness.print_warning(result)
    print(f"perfbp against its peers ({result['machine']}, Linux {result['kernel']}, "
          f"Python {result['python']}{', quick' if result['quick'] else ''})")
    print()
    harness.print_header(f"{'what':46} {'perfbp':>10}  {'peer':>10} {'(peer)':18} "
                         f"{'ratio':>7} {'goal':>7}  status")
    for r in result["rows"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        goal = "-" if r["goal"] is None else f"<={r['goal']:g}x"
        print(f"{r['what']:46} {_fmt(r['perfbp'], r['unit']):>10}  "
              f"{_fmt(r['peer'], r['unit']):>10} {r['peer_name']:18} {ratio:>7} {goal:>7}  "
              f"{r['status']}")
    for name, why in result["failed"].items():
        print(f"{name}: could not run: {why}")
    print()
    print("seconds per benchmark: " + ", ".join(f"{n} {s:.0f}" for n, s in
                                                result["seconds"].items()))


if __name__ == "__main__":
    sys.exit(main())
