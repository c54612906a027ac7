#!/usr/bin/env python3
"""Report benchmark: ``perfbp report`` against ``perf report --stdio`` on the
same recordings, written by perf, of 1 M and 5 M samples.

The recordings: a C program (gcc -O2 -no-pie) whose loop writes a global N
times (1,000,003 and 5,000,011 by default), recorded with ``perf record -e
mem:ADDR/8:w -c 1 -o F -- ./prog N`` (every hit a sample; without ``:u``, so
the few kernel-mode writes the ELF loader makes to .bss are in it too, and
the report has a kernel writer to symbolize).  The program ignores SIGTRAP:
on a machine that sometimes delivers a hit without its status (DR6), the
signal would otherwise end it early.  Recording takes about 9 us a hit
(10-20 s at 1 M, about a minute at 5 M).  Each sample count is checked with
perfbp's decoder and with ``perf script | wc -l``.

Timed, wall clock, in R rounds (5 by default) whose commands are
interleaved, so that a change in the machine's load hits every command
alike; the median of each is reported.  The file is read once before each
run, so every command finds it in the page cache.  For every recording:

* ``perf report -i F --stdio``
* ``python3 -m perfbp report -i F``                (the goal's figure)
* ``python3 -m perfbp report -i F --format json``

and, once a round, the start-up floor of any perfbp command:

* ``python3 -c pass``                          (the interpreter's own start)
* ``python3 -m perfbp report --help``          (interpreter, typer and the CLI)

Each command's standard output is a pipe this script reads: the time to its
first byte (what a user waits before anything shows) and to its end are
both taken.  ``python3`` is this interpreter (``sys.executable``), with
PYTHONPATH set to the perfbp checkout being measured.

Goal: ``perfbp report`` no slower than ``perf report``, at both sizes, in
wall time and in time to the first byte (ratio <= 1.0).

Then where perfbp's time goes on the first recording, from one run under
``-X importtime`` (import time by top-level package: numpy, typer (with the
pydantic it loads to parse options), rich, elftools, perfbp) and one under
cProfile (file read and framing check, decoding and counting the samples,
symbolization, the rest of load_report, the command line).  cProfile slows
Python-heavy code more than numpy calls, so its seconds are larger than the
wall-clock ones, but they show the split.

This is a benchmark: it reports PASS/MISS, it never asserts, and it exits 0
whenever it could measure (2 if gcc, perf or hardware breakpoints are
missing).

Usage::

    python3 benchmarks/bench_report.py [--samples N,N...] [--rounds R]
                                       [--data FILE]... [--keep DIR]
                                       [--no-profile] [--json] [--perfbp DIR]

``--data FILE`` (once per recording) reuses recordings and skips making
them; ``--keep DIR`` leaves the program and the recordings in DIR, and a
later run with the same ``--keep DIR`` reuses the recordings it finds there;
``--perfbp DIR`` and ``--json``: the common options (benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import _harness as harness

GOAL_RATIO = 1.0
#: the working directory of every child: a scratch directory, never a checkout
#: (``python -m perfbp`` puts its cwd first on sys.path, ahead of PYTHONPATH)
CWD = [tempfile.gettempdir()]
DEFAULT_SAMPLES = "1000003,5000011"
#: seconds a recording may take, per write (9 us a hit, and a margin)
RECORD_SECONDS_PER_HIT = 60e-6

C_SOURCE = r"""
#include <signal.h>
#include <stdlib.h>
volatile long counter;
static void on_trap(int sig) { (void)sig; }
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000003;
    signal(SIGTRAP, on_trap);
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
                          capture_output=True, text=True,
                          timeout=max(600.0, hits * RECORD_SECONDS_PER_HIT))
    if proc.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"perf record failed: {proc.stderr.strip()[-400:]}")
    return time.monotonic() - t0


def recordings(perf: str, writes: "list[int]", data: "list[str]",
               workdir: str) -> "list[dict]":
    """The recordings to report: the ``--data`` files as given, else one
    per count of writes, made in ``workdir`` unless it already holds it.

    Raises:
        RuntimeError, subprocess.CalledProcessError: the program cannot be
            built or recorded.
    """
    if data:
        return [{"path": os.path.abspath(p), "writes": None, "record_seconds": None}
                for p in data]
    out = []
    exe = addr = None
    for n in writes:
        path = os.path.join(workdir, f"perf-mem-{n}.data")
        seconds = None
        if not os.path.exists(path):
            if exe is None:
                exe, addr = build(workdir)
            seconds = record(perf, exe, addr, n, path)
        out.append({"path": path, "writes": n, "record_seconds": seconds})
    return out


_COUNT = r"""
import json, sys
import perfbp
from perfbp.data.perfdata import read_recording
from perfbp.kernel.records import Lost, LostSamples, decode_bulk
rec = read_recording(sys.argv[1])
samples = lost = 0
for chunk in rec.chunks():
    cols, others = decode_bulk(chunk, rec.config)
    samples += len(cols)
    lost += sum(r.lost for r in others if isinstance(r, (Lost, LostSamples)))
print(json.dumps({"samples": samples, "lost": lost, "version": perfbp.__version__,
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
    own rusage); with ``stdout=subprocess.PIPE``, also the seconds to the
    first byte of its output (``first_byte``, None when it wrote nothing),
    the output itself read and dropped as it comes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=CWD[0])
    first = None
    if stdout == subprocess.PIPE:
        if proc.stdout.read(1):
            first = time.perf_counter() - t0
            while proc.stdout.read(1 << 16):
                pass
        proc.stdout.close()
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": wall, "first_byte": first, "maxrss_kb": usage.ru_maxrss,
            "rc": proc.returncode, "user": usage.ru_utime, "sys": usage.ru_stime,
            "stderr": err.decode(errors="replace")[-400:]}


def commands(perf: str, files: "list[dict]"
             ) -> "list[tuple[str, str, list[str], int | None]]":
    """``(key, label, argv, recording)`` of every timed command: the
    start-up floor (recording None), then per recording (its index in
    ``files``) perf report, perfbp report and perfbp report --format json."""
    py = sys.executable
    out = [("python_bare", "python3 -c pass (interpreter start)", [py, "-c", "pass"], None),
           ("perfbp_help", "python3 -m perfbp report --help (start-up floor)",
            [py, "-m", "perfbp", "report", "--help"], None)]
    for i, f in enumerate(files):
        path = f["path"]
        out += [(f"perf_report_{i}", "perf report -i F --stdio",
                 [perf, "report", "-i", path, "--stdio"], i),
                (f"perfbp_report_{i}", "python3 -m perfbp report -i F",
                 [py, "-m", "perfbp", "report", "-i", path], i),
                (f"perfbp_json_{i}", "python3 -m perfbp report -i F --format json",
                 [py, "-m", "perfbp", "report", "-i", path, "--format", "json"], i)]
    return out


def time_all(perf: str, files: "list[dict]", env: dict, rounds: int) -> dict:
    """Every command once a round, interleaved; the median wall time and
    time to the first byte of each."""
    cmds = commands(perf, files)
    runs: dict = {key: [] for key, _l, _c, _f in cmds}
    for _ in range(rounds):
        for key, _label, cmd, i in cmds:
            if i is not None:
                warm(files[i]["path"])
            r = run_timed(cmd, env, stdout=subprocess.PIPE)
            if r["rc"] != 0:
                raise RuntimeError(f"{' '.join(cmd)} exited {r['rc']}: {r['stderr']}")
            runs[key].append(r)
    out = {}
    for key, label, _cmd, i in cmds:
        rs = runs[key]
        firsts = [r["first_byte"] for r in rs if r["first_byte"] is not None]
        out[key] = {"label": label, "recording": i,
                    "median": statistics.median(r["seconds"] for r in rs),
                    "first_byte": statistics.median(firsts) if firsts else None,
                    "all": [round(r["seconds"], 4) for r in rs],
                    "maxrss_kb": max(r["maxrss_kb"] for r in rs),
                    "user": statistics.median(r["user"] for r in rs),
                    "sys": statistics.median(r["sys"] for r in rs)}
    return out


def comparisons(times: dict, files: "list[dict]") -> "list[dict]":
    """Per recording, perfbp against perf: the report's wall time (table and
    JSON) and its time to the first byte, each a ratio of medians with the
    goal; and, without a goal, what perfbp's own part takes (its wall time
    less the start-up floor) against perf's whole run."""
    floor = times["perfbp_help"]["median"]
    rows = []
    for i, f in enumerate(files):
        perf_t = times[f"perf_report_{i}"]
        what = f"{f['samples']:,} samples"
        for key, label, field in ((f"perfbp_report_{i}", "report", "median"),
                                  (f"perfbp_json_{i}", "report --format json", "median"),
                                  (f"perfbp_report_{i}", "first byte (report)", "first_byte")):
            ours, theirs = times[key][field], perf_t[field]
            ratio = ours / theirs if ours is not None and theirs else None
            rows.append({"key": f"{key}_{field}", "label": f"{what}, {label}",
                         "perf": theirs, "perfbp": ours, "ratio": ratio, "goal": GOAL_RATIO,
                         "status": "-" if ratio is None
                         else "PASS" if ratio <= GOAL_RATIO else "MISS"})
        ours = times[f"perfbp_report_{i}"]["median"] - floor
        rows.append({"key": f"perfbp_own_{i}", "label": f"{what}, report less the start-up floor",
                     "perf": perf_t["median"],
                     "perfbp": ours, "ratio": ours / perf_t["median"], "goal": None,
                     "status": "-"})
    return rows


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


def _fn(module: str, *names: str):
    """A predicate for _cum: a function of ``names`` in perfbp's ``module``
    (a path under perfbp/, as ``data/report``)."""
    return lambda f, n: n in names and f.replace("\\", "/").endswith(f"perfbp/{module}.py")


#: the command line's main, as ``python -m perfbp`` runs it but for its exit
#: (os._exit, which would skip writing cProfile's statistics)
_DRIVER = "import sys\nfrom perfbp.cli import main\nmain(sys.argv[1:])\n"


def profile_report(path: str, env: dict, workdir: str) -> dict:
    """cProfile of one ``perfbp report`` run, split into phases."""
    prof = os.path.join(workdir, "report.prof")
    driver = os.path.join(workdir, "report_driver.py")
    with open(driver, "w") as f:
        f.write(_DRIVER)
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", prof, driver,
                           "report", "-i", path], env=env, cwd=CWD[0], capture_output=True,
                          timeout=600)
    if proc.returncode != 0 or not os.path.exists(prof):
        raise RuntimeError(f"profiled run failed: {proc.stderr.decode(errors='replace')[-300:]}")
    st = pstats.Stats(prof)
    total = max(ct for (_f, _l, _n), (_cc, _nc, _tt, ct, _c) in st.stats.items())
    load = _cum(st, _fn("data/report", "load_report"))
    # the data section is read by Recording.chunks; whole_records_end is
    # the framing check of each window
    read = _cum(st, _fn("data/perfdata", "read_recording")) + \
        _cum(st, _fn("data/perfdata", "chunks"))
    trim = _cum(st, _fn("kernel/records", "whole_records_end"))
    count = _cum(st, _fn("data/report", "_count_samples"))
    # Symbolizer.resolve (outermost: KernelSymbols.resolve shares the name)
    sym_outer = _cum(st, _fn("symbols/elf", "resolve"))
    kallsyms = _cum(st, _fn("symbols/elf", "kernel_symbols"))
    elf = _cum(st, _fn("symbols/elf", "load_object"))
    lines = _cum(st, _fn("symbols/lines", "line_table"))
    unique = _sum_cum(st, lambda f, n: n == "unique" and "numpy" in f)
    typer_parse = _cum(st, lambda f, n: n == "make_context" and "typer" in f)
    phases = {
        "total (profiled process)": total,
        "load_report": load,
        "  read_recording + chunks (file read + framing check)": read,
        "    whole_records_end (framing check)": trim,
        "  _count_samples (read, decode and count)": count,
        "  symbolization (Symbolizer.resolve)": sym_outer,
        "    /proc/kallsyms": kallsyms,
        "    ELF symbol tables (load_object)": elf,
        "  source lines (line_table, DWARF)": lines,
        "  numpy unique (grouping)": unique,
        "  the rest of load_report": max(0.0, load - count - sym_outer - lines),
        "outside load_report (imports, CLI, output)": max(0.0, total - load),
        "  typer parsing the options": typer_parse,
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

def _s(x: "float | None") -> str:
    return "-" if x is None else f"{x:.3f}"


def print_table(r: dict) -> None:
    print(f"perfbp report benchmark  ({r['machine']}, kernel {r['kernel']}, Python "
          f"{r['python']}, {r['perf_version']}, perfbp from {r['perfbp_dir']})")
    for f in r["recordings"]:
        print(f"recording: {f['path']} ({f['bytes'] / 1e6:.1f} MB), {f['samples']:,} samples "
              f"per perfbp, {f['lines_perf_script']:,} lines from perf script"
              + (f"; recorded in {f['record_seconds']:.1f} s" if f.get("record_seconds")
                 else ""))
    harness.print_warning(r)
    print()
    print(f"median of {r['rounds']} interleaved rounds; s = wall seconds, first = seconds to "
          f"the first byte of output")
    hdr = (f"{'command (F = the recording)':50} {'s':>7} {'first':>7} {'peak RSS':>9}  "
           f"{'runs (s)'}")
    harness.print_header(hdr)
    last = None
    for t in r["times"].values():
        if t["recording"] is not None and t["recording"] != last:
            print(f"  {r['recordings'][t['recording']]['samples']:,} samples:")
        last = t["recording"]
        runs = " ".join(f"{x:.2f}" for x in t["all"])
        print(f"{t['label']:50} {_s(t['median']):>7} {_s(t['first_byte']):>7} "
              f"{t['maxrss_kb'] / 1024:6.0f} MB  {runs}")
    harness.print_ratios("perfbp against perf report --stdio", r["rows"], 50, 2,
                         (("perf", "perf s", "7.3f"), ("perfbp", "perfbp s", "8.3f")))
    if r.get("imports"):
        imp = r["imports"]
        print()
        print(f"imports of one `perfbp report` run on the first recording (-X importtime, "
              f"outermost imports, {imp['total_s']:.3f} s in all):")
        for pkg, s in imp["by_package_s"].items():
            if s >= 0.002:
                print(f"  {pkg:40} {s:8.3f} s")
        if imp["pydantic_s"]:
            print(f"  {'(of which pydantic, loaded by typer)':40} {imp['pydantic_s']:8.3f} s")
    if r.get("profile"):
        print()
        print("cProfile of one `perfbp report` run on the first recording (seconds, "
              "cumulative; cProfile inflates pure-Python loops):")
        for name, s in r["profile"]["phases_s"].items():
            print(f"  {name:56} {s:8.3f}")
        print("  most self time:")
        for t in r["profile"]["top_self_time"]:
            print(f"    {t['function']:58} {t['self_s']:7.3f} s self, "
                  f"{t['cumulative_s']:7.3f} s cumulative")


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--samples", default=DEFAULT_SAMPLES,
                    help="writes of the global to record, one sample each, comma-separated "
                         "(default 1,000,003 and 5,000,011)")
    harness.rounds_option(ap, 5, "interleaved rounds of every command; the median is "
                                 "reported")
    ap.add_argument("--data", metavar="FILE", action="append", default=[],
                    help="reuse this perf recording (repeat for several)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep the program and the recordings in DIR (and reuse those "
                         "already there)")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the -X importtime and cProfile runs")
    args = harness.parse_args(ap, argv)

    try:
        pdir, perf, perf_version, env = setup(args.perfbp)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    writes = [int(x) for x in args.samples.split(",") if x.strip()]
    load_before = harness.load_average()
    workdir = args.keep or tempfile.mkdtemp(prefix="perfbp-bench-report-")
    os.makedirs(workdir, exist_ok=True)
    CWD[0] = tempfile.mkdtemp(prefix="perfbp-bench-cwd-")
    try:
        try:
            files = recordings(perf, writes, args.data, workdir)
        except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"cannot make the recording: {exc}", file=sys.stderr)
            return 2
        counted = None
        for f in files:
            f["bytes"] = os.path.getsize(f["path"])
            try:
                counted = count_samples_perfbp(f["path"], env)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                print(str(exc), file=sys.stderr)
                return 2
            f["samples"], f["lost"] = counted["samples"], counted["lost"]
            f["lines_perf_script"] = count_lines_perf_script(perf, f["path"])
            if f["writes"] and not f["writes"] - 1000 <= f["samples"] <= f["writes"] + 1000:
                print(f"note: {f['path']} holds {f['samples']:,} samples for {f['writes']:,} "
                      f"writes", file=sys.stderr)
        try:
            times = time_all(perf, files, env, max(1, args.rounds))
        except RuntimeError as exc:
            print(f"a timed command failed: {exc}", file=sys.stderr)
            return 2
        imports = profile = None
        if not args.no_profile:
            try:
                imports = import_times(files[0]["path"], env)
                profile = profile_report(files[0]["path"], env, CWD[0])
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                print(f"profile skipped: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(CWD[0], ignore_errors=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    load_after = harness.load_average()
    if not (args.keep or args.data):
        for f in files:
            f["path"] = f"(temporary) {os.path.basename(f['path'])}"
    result = {
        **harness.machine(),
        "python_executable": sys.executable, "perf_version": perf_version,
        "perfbp": counted["version"], "perfbp_dir": pdir,
        "loadavg_before": round(load_before, 2), "loadavg_after": round(load_after, 2),
        "rounds": max(1, args.rounds), "recordings": files,
        "times": times, "rows": comparisons(times, files), "goal_ratio": GOAL_RATIO,
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
