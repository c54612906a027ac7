#!/usr/bin/env python3
"""``perfbp top`` keeps up: two threads on two CPUs hit a watch as fast as
this machine traps; zero samples lost, and perfbp's own CPU use under half
a core.

The target is a C program (gcc -O2 -g, PIE) with two threads, pinned to
CPU 0 and CPU 1, each storing to the global ``counter`` N = 500,009 times
as fast as it can (every store a trap: ~5-9 us).  It writes a small report
of its own: CLOCK_MONOTONIC when its threads start and when they are done
(the hit phase), and its own CPU time (getrusage RUSAGE_SELF).  It runs
under ``perfbp top -w counter --interval 1 -- PROG`` in two modes:

* ``piped``: stdout a pipe, so top prints one plain line a second (no
  rendering cost to hide behind); perfbp is this script's child.
* ``tty``: in a detached tmux session of 120x40 (when tmux is installed),
  so rich redraws the live view every second.

perfbp's own CPU time is measured two ways:

* polled: utime + stime of /proc/PERFBP/stat (fields 14 and 15), read every
  50 ms while it runs; the last value read (it misses at most the last
  50 ms: the final drain and the summary).
* wait4 (piped only): the rusage os.wait4 returns for perfbp, which counts
  the children it reaped too, so minus the target's own CPU time (from the
  target's report).

``perfbp CPU s`` is the larger of the two; ``cores`` is that over the wall
time of the whole run (start-up and the summary included);
``hit-phase cores`` is the CPU perfbp used while the target's threads were
storing, over that time (from the polled series: the last sample before the
phase and the first after it, so it errs high).  Samples, lost samples and
the kernel's hit count come from top's final summary.

Goal: lost == 0, samples == hits == 2 x N (a hit the machine delivers
without its status is neither sampled nor counted by the kernel: perfbp's
summary counts it apart, and it counts here on both sides), and both
``cores`` and ``hit-phase cores`` < 0.5: PASS, else MISS.  This is a benchmark: it never
asserts; it exits 0 whenever it could measure, and 2 when it cannot run (no
gcc, no hardware breakpoints).  A run takes about N x the cost of a hit
(both threads trap in parallel) plus ~1 s of start-up: ~5 s per run here.

Usage::

    python3 benchmarks/bench_top.py [--hits N] [--rounds R] [--no-tty]
                                    [--perfbp DIR] [--json]

``--perfbp DIR`` and ``--json``: the common options (benchmarks/README.md).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _harness as harness

DEFAULT_HITS = 500_009
GOAL_CORES = 0.5
POLL = 0.05                 # seconds between reads of /proc/PERFBP/stat
TIMEOUT = 300               # seconds a run may take before it is abandoned
CLK_TCK = os.sysconf("SC_CLK_TCK")
EXIT_MARK = "perfbp-exit-status"

C_SOURCE = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

volatile long counter;          /* the watched global */
static long n_writes;
static pthread_barrier_t ready;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

__attribute__((noinline)) static void bump(long n)
{
    for (long i = 0; i < n; i++)
        counter = i;
}

static void *worker(void *arg)
{
    long cpu = (long)arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set))
        fprintf(stderr, "top_bench: cannot pin a thread to CPU %ld\n", cpu);
    pthread_barrier_wait(&ready);
    bump(n_writes);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) return 2;
    n_writes = atol(argv[1]);
    int threads = atoi(argv[2]);
    pthread_t t[64];
    if (threads < 1 || threads > 64) return 2;
    pthread_barrier_init(&ready, NULL, (unsigned)threads + 1);
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i)) return 3;
    pthread_barrier_wait(&ready);
    long long start = now_ns();
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    long long end = now_ns();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    FILE *f = fopen(argv[3], "w");
    if (!f) return 4;
    fprintf(f, "%lld %lld %ld %ld\n", start, end,
            (long)ru.ru_utime.tv_sec * 1000000L + (long)ru.ru_utime.tv_usec,
            (long)ru.ru_stime.tv_sec * 1000000L + (long)ru.ru_stime.tv_usec);
    fclose(f);
    return 0;
}
"""


def build(workdir: str) -> str:
    return harness.compile_c(workdir, "top_bench", C_SOURCE, "-O2", "-g", "-pthread")


# ----------------------------------------------------------------------------------
# Measuring a process from outside
# ----------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> "float | None":
    """utime + stime of a live process (all its threads), or None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if rest[0] == "Z":  # a zombie's times are being folded into its parent's
        return None
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # fields 14, 15


class CpuPoller(threading.Thread):
    """Reads a process's CPU time every POLL seconds until it is gone:
    ``series`` holds (CLOCK_MONOTONIC seconds, CPU seconds)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.series: "list[tuple[float, float]]" = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            c = cpu_seconds(self.pid)
            if c is None:
                return
            self.series.append((time.monotonic(), c))
            self._done.wait(POLL)

    def stop(self) -> None:
        self._done.set()
        self.join()

    @property
    def last(self) -> "float | None":
        return self.series[-1][1] if self.series else None

    def used_between(self, t0: float, t1: float) -> "float | None":
        """CPU used from t0 to t1: the last sample at or before t0 to the
        first at or after t1 (a span at least as long: it errs high)."""
        before = [c for t, c in self.series if t <= t0]
        after = [c for t, c in self.series if t >= t1]
        if not before or not after:
            return None
        return after[0] - before[-1]


def read_target_report(path: str) -> "dict | None":
    try:
        with open(path) as f:
            start, end, utime, stime = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    return {"start": start / 1e9, "end": end / 1e9, "cpu": (utime + stime) / 1e6}


def parse_summary(text: str) -> dict:
    m = re.search(r"samples ([\d,]+)\s+lost ([\d,]+)\s+kernel's hit count ([\d,]+)", text)
    if not m:
        return {"samples": None, "lost": None, "hits": None, "accounted": False}
    samples, lost, hits = (int(g.replace(",", "")) for g in m.groups())
    # hits the machine delivered without their status: neither counted by
    # the kernel nor sampled, but counted by perfbp (the summary says so)
    r = re.search(r"([\d,]+) more hits reached perfbp without their status", text)
    recovered = int(r.group(1).replace(",", "")) if r else 0
    return {"samples": samples, "lost": lost, "hits": hits, "recovered": recovered,
            "accounted": "every hit accounted for" in text}


# ----------------------------------------------------------------------------------
# The two modes
# ----------------------------------------------------------------------------------

def top_argv(exe: str, hits: int, report: str) -> "list[str]":
    return [sys.executable, "-m", "perfbp", "top", "-w", "counter", "--interval", "1",
            "--", exe, str(hits), "2", report]


def run_piped(exe: str, hits: int, pdir: str, workdir: str) -> dict:
    report = os.path.join(workdir, "piped.report")
    if os.path.exists(report):
        os.unlink(report)
    env = harness.child_env(pdir, keep_pythonpath=False)
    t0 = time.monotonic()
    proc = subprocess.Popen(top_argv(exe, hits, report), cwd=pdir, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    poller = CpuPoller(proc.pid)
    poller.start()
    out: dict = {}

    def drain(name, stream):
        out[name] = stream.read().decode(errors="replace")

    readers = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + TIMEOUT
    while True:  # wait4 once it has exited (WNOHANG: keep the deadline)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    poller.stop()
    for r in readers:
        r.join(10)
    target = read_target_report(report)
    waited = usage.ru_utime + usage.ru_stime
    own_wait4 = waited - target["cpu"] if target else None
    res = {"mode": "piped", "wall": wall, "status": proc.returncode,
           "cpu_polled": poller.last, "cpu_wait4": own_wait4,
           "target_cpu": target["cpu"] if target else None,
           "stderr": out.get("stderr", "").strip()[-400:]}
    res.update(parse_summary(out.get("stdout", "")))
    lines = re.findall(r"^\s*\d+\.\d+ counter hits=\d+ rate=\d+/s samples=\d+ lost=(\d+)$",
                       out.get("stdout", ""), re.M)
    res["interval_lines"] = len(lines)
    res["max_lost_in_lines"] = max((int(x) for x in lines), default=None)
    return finish(res, poller, target)


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", *args], capture_output=True,
                          text=True, timeout=10).stdout


def run_tty(exe: str, hits: int, pdir: str, workdir: str) -> dict:
    report = os.path.join(workdir, "tty.report")
    if os.path.exists(report):
        os.unlink(report)
    socket, name = f"perfbp-bench-top-{os.getpid()}", "bench"
    line = (f"unset COLUMNS LINES; cd {shlex.quote(pdir)} && "
            f"PYTHONPATH={shlex.quote(pdir)} {shlex.join(top_argv(exe, hits, report))}; "
            f"echo {EXIT_MARK} $?; sleep 60")
    t0 = time.monotonic()
    subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", name,
                    "-x", "120", "-y", "40", "/bin/sh", "-c", line], check=True, timeout=10)
    try:
        shell = int(_tmux(socket, "display", "-p", "-t", name, "#{pane_pid}").strip())
        perfbp = None
        deadline = time.monotonic() + 10
        while perfbp is None and time.monotonic() < deadline:  # the shell's child
            try:
                with open(f"/proc/{shell}/task/{shell}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                kids = []
            perfbp = kids[0] if kids else None
            if perfbp is None:
                time.sleep(0.005)
        if perfbp is None:
            raise RuntimeError("perfbp did not start in tmux")
        poller = CpuPoller(perfbp)
        poller.start()
        deadline = time.monotonic() + TIMEOUT
        text = ""
        while EXIT_MARK not in text:
            if time.monotonic() > deadline:
                raise RuntimeError("perfbp top did not end in tmux")
            time.sleep(0.05)
            if not poller.is_alive():
                text = _tmux(socket, "capture-pane", "-p", "-S", "-1000", "-t", name)
        wall = time.monotonic() - t0  # to within 50 ms (+ the shell's echo)
        poller.stop()
    finally:
        _tmux(socket, "kill-server")
        sock = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}" / socket
        if sock.exists():
            sock.unlink()
    m = re.search(rf"^{EXIT_MARK} (\d+)$", text, re.M)
    target = read_target_report(report)
    res = {"mode": "tty (tmux)", "wall": wall, "status": int(m.group(1)) if m else None,
           "cpu_polled": poller.last, "cpu_wait4": None,
           "target_cpu": target["cpu"] if target else None, "stderr": ""}
    res.update(parse_summary(text))
    return finish(res, poller, target)


def finish(res: dict, poller: CpuPoller, target: "dict | None") -> dict:
    known = [c for c in (res["cpu_polled"], res["cpu_wait4"]) if c is not None]
    res["cpu"] = max(known) if known else None
    res["cores"] = res["cpu"] / res["wall"] if res["cpu"] is not None else None
    res["hit_phase_s"] = res["hit_phase_cores"] = None
    if target:
        span = target["end"] - target["start"]
        used = poller.used_between(target["start"], target["end"])
        res["hit_phase_s"] = span
        if used is not None and span > 0:
            res["hit_phase_cores"] = used / span
    return res


def judge(res: dict, expected: int) -> dict:
    recovered = res.get("recovered") or 0
    counts_ok = (res["samples"] is not None and res["lost"] == 0
                 and res["samples"] + recovered == expected
                 and res["hits"] + recovered == expected and res["accounted"])
    cores = [c for c in (res["cores"], res["hit_phase_cores"]) if c is not None]
    cores_ok = bool(cores) and max(cores) < GOAL_CORES
    res["goal"] = counts_ok and cores_ok
    res["verdict"] = "PASS" if res["goal"] else "MISS"
    return res


# ----------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------

def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_table(r: dict) -> None:
    print(f"perfbp top benchmark  ({r['machine']}, kernel {r['kernel']}, {r['cpus']} CPUs, "
          f"Python {r['python']}, perfbp from {r['perfbp_dir']})")
    print(f"target: 2 threads pinned to CPU 0 and 1, each storing to `counter` "
          f"{r['hits']:,} times ({r['expected']:,} hits a run); "
          f"perfbp top -w counter --interval 1")
    print(f"goal: lost == 0, samples == hits == {r['expected']:,}, "
          f"cores and hit-phase cores < {GOAL_CORES}")
    harness.print_warning(r)
    print()
    hdr = (f"{'mode':11} {'wall s':>7} {'perfbp CPU s':>12} {'cores':>6} {'hit-phase':>9} "
           f"{'samples':>10} {'lost':>6} {'hits':>10} {'goal':>5}  result")
    harness.print_header(hdr)
    for row in r["runs"]:
        print(f"{row['mode']:11} {row['wall']:7.2f} {_f(row['cpu'], '12.2f')} "
              f"{_f(row['cores'], '6.3f')} {_f(row['hit_phase_cores'], '9.3f')} "
              f"{_f(row['samples'], '10,')} {_f(row['lost'], '6,')} {_f(row['hits'], '10,')} "
              f"{'yes' if row['goal'] else 'no':>5}  {row['verdict']}")
    print()
    print("perfbp CPU s: the larger of /proc/PID/stat polled every 50 ms (the last read) and,")
    print("piped, wait4's rusage minus the target's own; by run (polled / wait4 / target):")
    for row in r["runs"]:
        print(f"  {row['mode']:11} {_f(row['cpu_polled'], '.2f'):>6} / "
              f"{_f(row['cpu_wait4'], '.2f'):>6} / {_f(row['target_cpu'], '.2f'):>6} s; "
              f"hit phase {_f(row['hit_phase_s'], '.2f')} s; exit status {row['status']}"
              + (f"; stderr: {row['stderr']}" if row["stderr"] else ""))
    print()
    print(f"overall: {r['verdict']}")


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--hits", type=int, default=DEFAULT_HITS,
                    help="stores per thread (default 500,009)")
    harness.rounds_option(ap, 2, "runs per mode, each reported")
    ap.add_argument("--no-tty", action="store_true", help="skip the tmux (terminal) mode")
    args = harness.parse_args(ap, argv)
    pdir = args.perfbp
    ncpu = len(os.sched_getaffinity(0))
    if not {0, 1} <= os.sched_getaffinity(0):
        print("needs CPUs 0 and 1", file=sys.stderr)
        return 2
    modes = [run_piped]
    warnings = []
    if not args.no_tty:
        if shutil.which("tmux"):
            modes.append(run_tty)
        else:
            warnings.append("tmux is not installed: no tty mode")
    load_before = harness.load_average()
    expected = 2 * args.hits
    runs = []
    workdir = tempfile.mkdtemp(prefix="perfbp-bench-top-")
    try:
        try:
            exe = build(workdir)
        except RuntimeError as exc:
            print(f"cannot build the target: {exc}", file=sys.stderr)
            return 2
        for _ in range(max(1, args.rounds)):
            for mode in modes:  # alternate: a change in load hits both alike
                try:
                    res = mode(exe, args.hits, pdir, workdir)
                except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                    print(f"a run failed: {exc}", file=sys.stderr)
                    return 2
                if res["samples"] is None and "(ENOSPC)" not in res["stderr"] \
                        and res["status"] == 2:
                    print(f"perfbp top could not run: {res['stderr']}", file=sys.stderr)
                    return 2
                runs.append(judge(res, expected))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    warnings.append(harness.busy_warning(load_before))
    if ncpu < 2:
        warnings.append("fewer than 2 CPUs: the threads and perfbp share one")
    result = {
        **harness.machine(), "cpus": ncpu, "python_executable": sys.executable,
        "perfbp_dir": pdir, "hits": args.hits, "expected": expected,
        "rounds": args.rounds, "goal_cores": GOAL_CORES,
        "loadavg_before": round(load_before, 2), "loadavg_after": round(harness.load_average(), 2),
        "runs": runs, "verdict": "PASS" if runs and all(r["goal"] for r in runs) else "MISS",
    }
    return harness.finish(result, args.json, print_table, warnings)


if __name__ == "__main__":
    sys.exit(main())
