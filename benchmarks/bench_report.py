#!/usr/bin/env python3
"""Report benchmark: ``perfbp report`` against ``perf report --stdio`` on the
same one-million-sample recording, written by perf.

The recording: a C program (gcc -O2 -no-pie) whose loop writes a global
1,000,003 times, recorded with ``perf record -e mem:ADDR/8:w -c 1 -o F --
./prog`` (every hit a sample; without ``:u``, so the few kernel-mode writes
the ELF loader makes to .bss are in it too, and the report has a kernel
writer to symbolize).  Recording takes 10 to 20 s.  Its sample count is
checked with perfbp's decoder and with ``perf script | wc -l``.

Timed, wall clock, best of 3 (rounds interleaved so that a change in the
machine's load hits every command alike; the file is read once before each
run, so every command finds it in the page cache):

* ``perf report -i F --stdio > /dev/null``
* ``python3 -m perfbp report -i F > /dev/null``   (the goal's figure)
* ``python3 -m perfbp report -i F --format json > /dev/null``
* ``perf script -i F > /dev/null``                (for context)
* ``python3 -c pass``                            (the interpreter's own start)

``python3`` is this interpreter (``sys.executable``), with PYTHONPATH set to
the perfbp checkout being measured.

Goal: ``perfbp report`` no slower than ``perf report`` (ratio <= 1.0).

Then where perfbp's time goes, from one run under ``-X importtime`` (import
time by top-level package: numpy, typer (with the pydantic it loads to parse
options), rich, elftools, perfbp) and one under cProfile (file read and
framing check, decode_bulk, symbolization, grouping and the rest of
load_report, the command line).  cProfile slows Python-heavy code more than
numpy calls, so its seconds are larger than the wall-clock ones, but they
show the split.

This is a benchmark: it reports PASS/MISS, it never asserts, and it exits 0
whenever it could measure (2 if gcc, perf or hardware breakpoints are
missing).

Usage::

    python3 benchmarks/bench_report.py [--hits N] [--rounds R] [--data FILE]
                                       [--keep DIR] [--no-profile] [--json]
                                       [--perfbp DIR]

``--data FILE`` reuses a recording (skips the 10-20 s of recording);
``--keep DIR`` leaves the program and the recording in DIR for that;
``--perfbp DIR`` and ``--json``: the common options (benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time

import _harness as harness

GOAL_RATIO = 1.0
#: the working directory of every child: a scratch directory, never a checkout
#: (``python -m perfbp`` puts its cwd first on sys.path, ahead of PYTHONPATH)
CWD = [tempfile.gettempdir()]
DEFAULT_HITS = 1_000_003

C_SOURCE = r"""
#include <stdlib.h>
volatile long counter;
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000003;
    for (long i = 0; i < n; i++)
        counter = i;
    return 0;
}
"""


# ----------------------------------------------------------------------------------
# Building and recording
# ----------------------------------------------------------------------------------

def build(workdir: str) -> "tuple[str, int]":
    """Compile the program; return (path, address of `counter`)."""
    exe = harness.compile_c(workdir, "report_loop", C_SOURCE, "-O2", "-no-pie")
    return exe, harness.symbol_address(exe)


def record(perf: str, exe: str, addr: int, hits: int, out: str) -> float:
    """perf record every write; return the seconds it took."""
    t0 = time.monotonic()
    proc = subprocess.run([perf, "record", "-e", f"mem:{addr:#x}/8:w", "-c", "1", "-o", out,
                           "--", exe, str(hits)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"perf record failed: {proc.stderr.strip()[-400:]}")
    return time.monotonic() - t0


_COUNT = r"""
import json, sys
import perfbp
from perfbp.data.perfdata import read_recording
from perfbp.kernel.records import Lost, LostSamples, decode_bulk
rec = read_recording(sys.argv[1])
cols, others = decode_bulk(rec.data, rec.config)
lost = sum(r.lost for r in others if isinstance(r, (Lost, LostSamples)))
print(json.dumps({"samples": len(cols), "lost": lost, "version": perfbp.__version__,
                  "dir": perfbp.__file__}))
"""


def count_samples_perfbp(path: str, env: dict) -> dict:
    """Samples and lost samples as perfbp's decoder sees them (in a child
    process: this one stays small, since a child's peak RSS counts its
    parent's memory at fork)."""
    proc = subprocess.run([sys.executable, "-c", _COUNT, path], env=env, cwd=CWD[0],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"perfbp cannot read the recording: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def count_lines_perf_script(perf: str, path: str) -> int:
    """``perf script | wc -l``, read in chunks (holding perf script's 100 MB of
    text here would make every later child's peak RSS look that large)."""
    proc = subprocess.Popen([perf, "script", "-i", path], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    n = 0
    while True:
        chunk = proc.stdout.read(1 << 20)
        if not chunk:
            break
        n += chunk.count(b"\n")
    proc.wait()
    return n


# ----------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------

def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def run_timed(cmd: "list[str]", env: dict, stdout=subprocess.DEVNULL) -> dict:
    """Wall-clock seconds and peak RSS of one run (os.wait4 for the child's
    own rusage)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=CWD[0])
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": wall, "maxrss_kb": usage.ru_maxrss, "rc": proc.returncode,
            "user": usage.ru_utime, "sys": usage.ru_stime,
            "stderr": err.decode(errors="replace")[-400:]}


def commands(perf: str, path: str) -> "list[tuple[str, str, list[str]]]":
    py = sys.executable
    return [
        ("perf_report", "perf report -i F --stdio", [perf, "report", "-i", path, "--stdio"]),
        ("perfbp_report", "python3 -m perfbp report -i F",
         [py, "-m", "perfbp", "report", "-i", path]),
        ("perfbp_json", "python3 -m perfbp report -i F --format json",
         [py, "-m", "perfbp", "report", "-i", path, "--format", "json"]),
        ("perf_script", "perf script -i F", [perf, "script", "-i", path]),
        ("python_bare", "python3 -c pass (interpreter start)", [py, "-c", "pass"]),
    ]


def time_all(perf: str, path: str, env: dict, rounds: int) -> dict:
    cmds = commands(perf, path)
    runs: dict = {key: [] for key, _l, _c in cmds}
    for _ in range(rounds):
        for key, _label, cmd in cmds:
            warm(path)
            r = run_timed(cmd, env)
            if r["rc"] != 0:
                raise RuntimeError(f"{' '.join(cmd)} exited {r['rc']}: {r['stderr']}")
            runs[key].append(r)
    out = {}
    for key, label, cmd in cmds:
        best = min(runs[key], key=lambda r: r["seconds"])
        out[key] = {"label": label, "best": best["seconds"],
                    "all": [round(r["seconds"], 4) for r in runs[key]],
                    "maxrss_kb": best["maxrss_kb"], "user": best["user"], "sys": best["sys"]}
    return out


# ----------------------------------------------------------------------------------
# Where perfbp's time goes
# ----------------------------------------------------------------------------------

def import_times(path: str, env: dict) -> dict:
    """-X importtime of one ``perfbp report`` run: cumulative microseconds of
    the outermost imports, summed by top-level package."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "perfbp", "report", "-i",
                           path], env=env, cwd=CWD[0], capture_output=True, text=True,
                          timeout=300)
    by_pkg: dict = {}
    pydantic = 0
    total = 0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        cumulative, indent, name = int(m.group(2)), len(m.group(3)), m.group(4)
        if indent == 1:  # an outermost import (level 0 is indented by one space)
            root = name.split(".")[0]
            by_pkg[root] = by_pkg.get(root, 0) + cumulative
            total += cumulative
        if name == "pydantic":  # loaded by typer while it parses the options
            pydantic = max(pydantic, cumulative)
    return {"by_package_s": {k: v / 1e6 for k, v in sorted(by_pkg.items(), key=lambda x: -x[1])},
            "pydantic_s": pydantic / 1e6, "total_s": total / 1e6}


def _cum(stats: pstats.Stats, pred) -> float:
    """Largest cumulative time among functions matching pred(file, name)
    (the outermost call of a recursive or repeated function)."""
    best = 0.0
    for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if pred(file, name):
            best = max(best, ct)
    return best


def _sum_cum(stats: pstats.Stats, pred) -> float:
    return sum(ct for (file, _line, name), (_cc, _nc, _tt, ct, _c) in stats.stats.items()
               if pred(file, name))


def profile_report(path: str, env: dict, workdir: str) -> dict:
    """cProfile of one ``perfbp report`` run, split into phases."""
    prof = os.path.join(workdir, "report.prof")
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", prof, "-m", "perfbp",
                           "report", "-i", path], env=env, cwd=CWD[0], capture_output=True,
                          timeout=600)
    if proc.returncode != 0 or not os.path.exists(prof):
        raise RuntimeError(f"profiled run failed: {proc.stderr.decode(errors='replace')[-300:]}")
    st = pstats.Stats(prof)
    total = max(ct for (_f, _l, _n), (_cc, _nc, _tt, ct, _c) in st.stats.items())

    def perfbp_fn(mod, fn):
        return lambda f, n: n == fn and f.replace("\\", "/").endswith(f"perfbp/{mod}.py")

    load = _cum(st, perfbp_fn("report", "load_report"))
    # the file is read by read_recording (before the data was read in
    # windows) or by Recording.chunks (since); whole_records_end is the
    # framing check either way
    read = _cum(st, perfbp_fn("perfdata", "read_recording")) + \
        _cum(st, perfbp_fn("perfdata", "chunks"))
    trim = _cum(st, perfbp_fn("records", "whole_records_end"))
    decode = _cum(st, perfbp_fn("records", "decode_bulk"))
    # Symbolizer.resolve (outermost: KernelSymbols.resolve shares the name)
    sym_outer = _cum(st, lambda f, n: n == "resolve" and f.endswith("perfbp/symbols/elf.py"))
    kallsyms = _cum(st, lambda f, n: n == "kernel_symbols" and f.endswith("perfbp/symbols/elf.py"))
    elf = _cum(st, lambda f, n: n == "load_object" and f.endswith("perfbp/symbols/elf.py"))
    unique = _sum_cum(st, lambda f, n: n == "unique" and "numpy" in f)
    # imports made inside perfbp's functions (numpy in load_report and
    # decode_bulk; those made while symbolizing are counted there)
    lazy = 0.0
    for (file, _line, name), (_cc, _nc, _tt, _ct, callers) in st.stats.items():
        if name != "_find_and_load" or "importlib" not in file:
            continue
        for (cfile, _cl, cname), edge in callers.items():
            cfile = cfile.replace("\\", "/")
            if "/perfbp/" in cfile and cname != "<module>" and not cfile.endswith("symbols.py"):
                lazy += edge[3]
    typer_parse = _cum(st, lambda f, n: n == "make_context" and "typer" in f)
    phases = {
        "total (profiled process)": total,
        "load_report": load,
        "  read_recording + chunks (file read + framing check)": read,
        "    whole_records_end (framing check)": trim,
        "  decode_bulk": decode,
        "  symbolization (Symbolizer.resolve)": sym_outer,
        "    /proc/kallsyms parse": kallsyms,
        "    ELF symbol tables (load_object, incl. pyelftools import)": elf,
        "  imports inside load_report (numpy)": lazy,
        "  numpy unique (grouping)": unique,
        "  grouping and the rest": max(0.0, load - read - decode - sym_outer - lazy),
        "outside load_report (imports, CLI, output)": max(0.0, total - load),
        "  typer parsing the options (builds pydantic adapters)": typer_parse,
    }
    top = sorted(((ct, tt, f"{os.path.basename(f)}:{line}({n})")
                  for (f, line, n), (_cc, _nc, tt, ct, _c) in st.stats.items()),
                 key=lambda x: -x[1])[:8]
    return {"phases_s": phases,
            "top_self_time": [{"function": name, "self_s": tt, "cumulative_s": ct}
                              for ct, tt, name in top]}


# ----------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------

def print_table(r: dict) -> None:
    print(f"perfbp report benchmark  ({r['machine']}, kernel {r['kernel']}, Python "
          f"{r['python']}, {r['perf_version']}, perfbp from {r['perfbp_dir']})")
    print(f"recording: {r['recording']['path']} ({r['recording']['bytes'] / 1e6:.1f} MB), "
          f"{r['recording']['samples_perfbp']:,} samples per perfbp, "
          f"{r['recording']['lines_perf_script']:,} lines from perf script"
          + (f"; recorded in {r['recording']['record_seconds']:.1f} s"
             if r['recording'].get('record_seconds') else ""))
    harness.print_warning(r)
    print()
    hdr = (f"{'command (F = the recording, output to /dev/null)':48} {'best s':>8} "
           f"{'runs':>22} {'peak RSS':>10}")
    harness.print_header(hdr)
    for key, t in r["times"].items():
        runs = " ".join(f"{x:.2f}" for x in t["all"])
        print(f"{t['label']:48} {t['best']:8.3f} {runs:>22} {t['maxrss_kb'] / 1024:8.0f} MB")
    harness.print_ratios("comparison", r["rows"], 48, 2)
    if r.get("imports"):
        imp = r["imports"]
        print()
        print(f"imports of one `perfbp report` run (-X importtime, outermost imports, "
              f"{imp['total_s']:.3f} s in all):")
        for pkg, s in imp["by_package_s"].items():
            if s >= 0.002:
                print(f"  {pkg:40} {s:8.3f} s")
        if imp["pydantic_s"]:
            print(f"  {'(of which pydantic, loaded by typer)':40} {imp['pydantic_s']:8.3f} s")
    if r.get("profile"):
        print()
        print("cProfile of one `perfbp report` run (seconds, cumulative; cProfile inflates "
              "pure-Python loops):")
        for name, s in r["profile"]["phases_s"].items():
            print(f"  {name:56} {s:8.3f}")
        print("  most self time:")
        for t in r["profile"]["top_self_time"]:
            print(f"    {t['function']:58} {t['self_s']:7.3f} s self, "
                  f"{t['cumulative_s']:7.3f} s cumulative")


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--hits", type=int, default=DEFAULT_HITS,
                    help="writes of the global, one sample each (default 1,000,003)")
    harness.rounds_option(ap, 3, "timed runs of each command; the best is reported")
    ap.add_argument("--data", metavar="FILE", help="reuse this perf recording")
    ap.add_argument("--keep", metavar="DIR", help="keep the program and the recording in DIR")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the -X importtime and cProfile runs")
    args = harness.parse_args(ap, argv)

    try:
        pdir, perf, perf_version, env = setup(args.perfbp)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2

    load_before = harness.load_average()
    workdir = args.keep or tempfile.mkdtemp(prefix="perfbp-bench-report-")
    os.makedirs(workdir, exist_ok=True)
    CWD[0] = tempfile.mkdtemp(prefix="perfbp-bench-cwd-")
    record_seconds = None
    try:
        if args.data:
            path = os.path.abspath(args.data)
        else:
            try:
                exe, addr = build(workdir)
                path = os.path.join(workdir, "perf-mem.data")
                record_seconds = record(perf, exe, addr, args.hits, path)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"cannot make the recording: {exc}", file=sys.stderr)
                return 2
        size = os.path.getsize(path)
        try:
            counted = count_samples_perfbp(path, env)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(str(exc), file=sys.stderr)
            return 2
        samples, lost = counted["samples"], counted["lost"]
        lines = count_lines_perf_script(perf, path)
        if not args.data and not (args.hits <= samples <= args.hits + 1000):
            print(f"note: the recording holds {samples:,} samples for {args.hits:,} writes",
                  file=sys.stderr)
        try:
            times = time_all(perf, path, env, max(1, args.rounds))
        except RuntimeError as exc:
            print(f"a timed command failed: {exc}", file=sys.stderr)
            return 2
        imports = profile = None
        if not args.no_profile:
            try:
                imports = import_times(path, env)
                profile = profile_report(path, env, workdir)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                print(f"profile skipped: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(CWD[0], ignore_errors=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    perf_s = times["perf_report"]["best"]
    rows = []
    for key, label in (("perfbp_report", "perfbp report / perf report --stdio"),
                       ("perfbp_json", "perfbp report --format json / perf report")):
        ratio = times[key]["best"] / perf_s
        rows.append({"key": key, "label": label, "ratio": ratio, "goal": GOAL_RATIO,
                     "status": "PASS" if ratio <= GOAL_RATIO else "MISS"})
    rows.append({"key": "perfbp_vs_script", "label": "perfbp report / perf script (context)",
                 "ratio": times["perfbp_report"]["best"] / times["perf_script"]["best"],
                 "goal": None, "status": "-"})
    rows.append({"key": "perfbp_minus_start", "label":
                 "(perfbp report - python start) / perf report",
                 "ratio": (times["perfbp_report"]["best"] - times["python_bare"]["best"]) / perf_s,
                 "goal": None, "status": "-"})
    load_after = harness.load_average()
    result = {
        **harness.machine(),
        "python_executable": sys.executable, "perf_version": perf_version,
        "perfbp": counted["version"], "perfbp_dir": pdir,
        "loadavg_before": round(load_before, 2), "loadavg_after": round(load_after, 2),
        "recording": {"path": path if args.keep or args.data else "(temporary)",
                      "bytes": size,
                      "hits": None if args.data else args.hits, "samples_perfbp": samples,
                      "lost": lost, "lines_perf_script": lines,
                      "record_seconds": record_seconds},
        "times": times, "rows": rows, "goal_ratio": GOAL_RATIO,
        "imports": imports, "profile": profile,
    }
    return harness.finish(result, args.json, print_table, [harness.busy_warning(load_before)])


def setup(perfbp_dir: str) -> "tuple[str, str, str, dict]":
    """The perfbp directory measured (checked by harness.parse_args), perf's
    path and version, and the children's environment (that directory first
    on PYTHONPATH).

    Raises:
        RuntimeError: no perf.
    """
    pdir = perfbp_dir
    perf, perf_version = harness.find_perf()
    return pdir, perf, perf_version, harness.child_env(pdir)


if __name__ == "__main__":
    sys.exit(main())
