"""``perfbp record`` and ``perfbp report`` on the real kernel, checked against
perf itself.

Every recording here is made of a workload whose hits are known exactly
(``tests/workloads/rec_writers.c``: two threads pinned to CPU 0 and CPU 1 call
``bump()`` N = 10,007 times each, and ``main`` stores once, on CPU 0:
2N + 1 = 20,015 stores; ``tests/workloads/rec_attach.c``: a thread named
``recwriter`` calls ``bump()`` N times when told to).  The recordings are
read back three ways that must agree sample for sample: perfbp's own decoder
(:func:`perfbp.data.perfdata.read_recording` + :func:`perfbp.kernel.records.decode_bulk`),
``perfbp report``, and Debian's ``perf`` (``perf script``, ``perf report``);
and perf's own recordings of ``mem:`` events are read by ``perfbp report``.

``perf`` must be on PATH (CI installs linux-perf): without it these tests
fail, they do not skip.  perfbp runs as ``python -m perfbp`` from the
repository root, never through a shell.  PIE targets run with address-space
randomization off (personality ADDR_NO_RANDOMIZE, inherited by perfbp's
child), so the address of their ``counter`` is known before they start.
"""

from __future__ import annotations

import collections
import csv
import ctypes
import io
import json
import os
import queue
import re
import shutil
import struct
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import conftest
from conftest import machine_disturbed

import perfbp
from perfbp.data.perfdata import read_recording
from perfbp.kernel._uapi import PERF_SAMPLE_ADDR, PERF_SAMPLE_PERIOD
from perfbp.kernel.records import decode_bulk
from perfbp.data.report import load_report

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

REPO_ROOT = Path(__file__).resolve().parent.parent
PERFBP = [sys.executable, "-m", "perfbp"]

N = 10007                  # bump() calls per writer thread (a prime)
TOTAL = 2 * N + 1          # rec_writers: two writer threads, and main once
EXIT_STATUS = 3            # rec_writers' exit status in the shared recording
TIMEOUT = 60               # seconds; nothing comes near it unless something hangs
ADDR_NO_RANDOMIZE = 0x0040000
SLOT_WAIT = 15             # seconds to wait for slots held by other programs
SAMPLE_BYTES = 48          # a perfbp sample: header + 5 u64 fields (no callchain)


# -- building and running ------------------------------------------------------------

def nm_address(exe: Path, symbol: str) -> int:
    """The link-time address of a global, from ``nm``."""
    out = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16)
    raise AssertionError(f"{symbol} not in nm {exe}")


def _no_aslr() -> None:  # preexec_fn: runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.personality(ADDR_NO_RANDOMIZE) == -1:
        os._exit(126)


@pytest.fixture(scope="module")
def perf() -> str:
    path = shutil.which("perf")
    assert path, "perf is not on PATH: install linux-perf (these tests compare with it)"
    return path


@pytest.fixture(scope="module")
def progs(build) -> dict:
    """The workloads, built: ``nopie`` and ``pie`` (rec_writers), ``attach``."""
    common = ["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"]
    return {"nopie": build("rec_writers.c", *common, "-no-pie"),
            "pie": build("rec_writers.c", *common, "-fPIE", "-pie"),
            "attach": build("rec_attach.c", *common, "-no-pie")}


def counter_address(progs: dict, kind: str) -> int:
    """Where ``counter`` lies at run time: nm's address for the non-PIE
    build; for the PIE, what a run without randomization prints (its page
    offset checked against nm's)."""
    link = nm_address(progs[kind], "counter")
    if kind != "pie":
        return link
    r = subprocess.run([str(progs["pie"]), "0"], capture_output=True, text=True,
                       preexec_fn=_no_aslr, timeout=TIMEOUT)
    assert r.returncode == 0, r
    addr = int(r.stdout.split()[1], 16)
    assert addr & 0xFFF == link & 0xFFF and addr != link
    return addr


def run_perfbp(*args: str, no_aslr: bool = False, **kw) -> subprocess.CompletedProcess:
    """``perfbp ARGS`` (conftest's: waiting for slots another program holds),
    with address-space randomization off when ``no_aslr``."""
    return conftest.run_perfbp(*args, timeout=TIMEOUT, slot_wait=SLOT_WAIT,
                               preexec_fn=_no_aslr if no_aslr else None, **kw)

def run_perf(perf: str, *args: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([perf, *args], capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL, **kw)
    assert r.returncode == 0, f"perf {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r


def perf_records_a_whole_run(perf: str, *args: str, **kw) -> subprocess.CompletedProcess:
    """``perf record ARGS -- workload``, again (up to 5 times) while the
    workload dies of a SIGTRAP: on a machine that delivers a hit without its
    status the kernel sends one, and perf, unlike perfbp, cannot keep its
    program alive (see conftest).  Such a run proves nothing about perfbp."""
    for _attempt in range(5):
        r = subprocess.run([perf, *args], capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL, **kw)
        if r.returncode != -signal.SIGTRAP and "Trace/breakpoint trap" not in r.stderr:
            break
    assert r.returncode == 0, f"perf {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """Exit 2, exactly one line on stderr, ``perfbp: error: ...``, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1, r.stderr
    assert err[0].startswith("perfbp: error: "), err[0]
    return err[0]


def json_line(stdout: str) -> dict:
    """The JSON object perfbp printed (the workload shares its stdout)."""
    found = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(found) == 1, stdout
    return json.loads(found[0])


def workload_tids(stdout: str) -> "tuple[int, int, int]":
    """rec_writers' ``tids MAIN THREAD0 THREAD1`` line."""
    found = [line.split()[1:] for line in stdout.splitlines() if line.startswith("tids ")]
    assert len(found) == 1, stdout
    main, t0, t1 = (int(x) for x in found[0])
    return main, t0, t1


def perf_script_samples(perf: str, path: Path) -> "list[tuple[int, int, int]]":
    """(time ns, tid, ip) of every sample, as ``perf script`` prints them."""
    out = run_perf(perf, "script", "-i", str(path), "-F", "tid,ip,time", "--ns").stdout
    rows = []
    for line in out.splitlines():
        if not line.strip():
            continue
        # "  28954  3461.127538578:           401144"
        tid, when, ip = line.split()
        sec, nsec = when.rstrip(":").split(".")
        assert len(nsec) == 9, line
        rows.append((int(sec) * 10**9 + int(nsec), int(tid), int(ip, 16)))
    return sorted(rows)


def perf_script_fields(perf: str, path: Path, fields: str) -> "list[list[str]]":
    out = run_perf(perf, "script", "-i", str(path), "-F", fields).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def perfbp_samples(path: Path) -> "list[tuple[int, int, int]]":
    """(time ns, tid, ip) of every sample, by perfbp's own decoder."""
    rec = read_recording(str(path))
    cols, _others = decode_bulk(rec.data, rec.config)
    if not len(cols):
        return []
    return sorted(zip(cols.time.tolist(), cols.tid.tolist(), cols.ip.tolist()))


def sampled_addresses(path: Path) -> "set[int]":
    """The watched addresses the samples hit, as load_samples gives them."""
    return set(perfbp.load_samples(str(path)).columns["addr"].tolist())


class Lines:
    """Lines of a child's text stream, read by a thread, waited for with a timeout."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._q: "queue.Queue[str | None]" = queue.Queue()
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream) -> None:
        for line in stream:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, pred, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; got {self.lines}"
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"stream ended; got {self.lines}"
            self.lines.append(line)
            if pred(line):
                return line

    def rest(self, timeout: float = TIMEOUT) -> "list[str]":
        """Every line until the stream ends."""
        self._t.join(timeout)
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                return self.lines
            self.lines.append(line)


def kill_if_ours(pid: int, exe: Path) -> None:
    """SIGKILL ``pid`` if it still runs ``exe`` (never some other process)."""
    try:
        if os.readlink(f"/proc/{pid}/exe") == str(exe):
            os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass


# -- shared recordings ---------------------------------------------------------------

class Recorded:
    def __init__(self, path: Path, proc: subprocess.CompletedProcess, addr: int) -> None:
        self.path = path
        self.proc = proc
        self.addr = addr
        self.json = json_line(proc.stdout)
        self.main, self.t0, self.t1 = workload_tids(proc.stdout)


def _record_writers(progs, tmp_path_factory, kind: str) -> Recorded:
    """The recording the tests below share.  A hit the machine delivers
    without its status has no sample (perfbp reports it: conftest's
    machine_disturbed), so such a run is recorded again, up to 4 times."""
    addr = counter_address(progs, kind)
    for _attempt in range(4):
        path = tmp_path_factory.mktemp(f"rec_{kind}") / "perfbp.data"
        r = run_perfbp("record", "--json", "-w", f"{addr:#x}", "-o", str(path), "--",
                       str(progs[kind]), str(N), str(EXIT_STATUS), no_aslr=kind == "pie")
        assert "Traceback" not in r.stderr, r.stderr
        if not machine_disturbed(json_line(r.stdout)):
            break
    return Recorded(path, r, addr)


@pytest.fixture(scope="module")
def rec_nopie(progs, tmp_path_factory) -> Recorded:
    """``perfbp record --json -w &counter -- rec_writers 10007 3`` (non-PIE)."""
    return _record_writers(progs, tmp_path_factory, "nopie")


@pytest.fixture(scope="module")
def rec_pie(progs, tmp_path_factory) -> Recorded:
    """The same with the PIE build, randomization off."""
    return _record_writers(progs, tmp_path_factory, "pie")


# -- 1. perf reads perfbp's recordings -----------------------------------------------

@pytest.mark.parametrize("kind", ["nopie", "pie"])
def test_perf_script_lists_exactly_perfbps_samples(kind, perf, request):
    rec = request.getfixturevalue(f"rec_{kind}")
    ours = perfbp_samples(rec.path)
    theirs = perf_script_samples(perf, rec.path)
    assert len(ours) == TOTAL
    assert len(theirs) == TOTAL
    assert theirs == ours  # (time ns, tid, ip), sample for sample
    assert sampled_addresses(rec.path) == {rec.addr}
    # lean samples: no ADDR (the watch's address) nor PERIOD (1), as perf's
    assert not read_recording(str(rec.path)).config.sample_type & (
        PERF_SAMPLE_ADDR | PERF_SAMPLE_PERIOD)
    tids = collections.Counter(tid for _t, tid, _ip in ours)
    assert tids == {rec.t0: N, rec.t1: N, rec.main: 1}


@pytest.mark.parametrize("kind", ["nopie", "pie"])
def test_perf_symbolizes_perfbps_recording(kind, perf, progs, request):
    rec = request.getfixturevalue(f"rec_{kind}")
    rows = perf_script_fields(perf, rec.path, "tid,ip,sym,dso")
    assert len(rows) == TOTAL
    # "28958  401337 bump (/tmp/.../rec_writers)"
    syms = collections.Counter((int(tid), sym) for tid, _ip, sym, _dso in rows)
    assert syms == {(rec.t0, "bump"): N, (rec.t1, "bump"): N, (rec.main, "main"): 1}
    assert {dso for *_x, dso in rows} == {f"({progs[kind]})"}

    default = run_perf(perf, "script", "-i", str(rec.path)).stdout.splitlines()
    assert len(default) == TOTAL
    assert sum(bool(re.search(r" bump\+0x[0-9a-f]+ \(", line)) for line in default) == 2 * N

    report = run_perf(perf, "report", "-i", str(rec.path), "--stdio")
    assert re.search(r"\[\.\] bump\s*$", report.stdout, re.M), report.stdout
    assert re.search(r"# Samples: 20K of event", report.stdout), report.stdout
    assert "# Total Lost Samples: 0" in report.stdout


# -- 2. perfbp reads perf's recordings -----------------------------------------------

def _check_perfbp_reads_perf(perf: str, path: Path, addr: int, user_only: bool) -> None:
    rows = perf_script_fields(perf, path, "tid,ip,sym")
    per_ip = collections.Counter(int(ip, 16) for _tid, ip, *_s in rows)
    per_tid = collections.Counter(int(tid) for tid, *_r in rows)
    per_sym = collections.Counter(s[0] if s else "?" for _tid, _ip, *s in rows)
    assert per_sym["bump"] == 2 * N and per_sym["main"] == 1
    if user_only:
        assert len(rows) == TOTAL
    else:  # the ELF loader's kernel-mode writes into .bss are counted too
        assert len(rows) > TOTAL

    r = run_perfbp("report", "-i", str(path), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = json.loads(r.stdout)
    assert out["samples"] == len(rows)
    assert out["lost"] == 0 and out["truncated"] is False
    assert out["producer"] == "perf"
    (w,) = out["watches"]
    assert (w["address"], w["length"], w["access"]) == (addr, 8, "w")
    assert w["hits"] == len(rows) and w["lost"] == 0
    assert w["kernel_hits"] is None and w["accounted"] is None

    rep = load_report(str(path), top=1000)
    (wr,) = rep.watches
    assert {x.location.ip: x.samples for x in wr.writers} == per_ip
    assert {t.tid: t.samples for t in wr.threads} == per_tid
    where = {x.location.symbol: x.samples for x in wr.writers}
    assert where["bump"] == 2 * N and where["main"] == 1


@pytest.mark.parametrize("modifier", [":u", ""])
def test_perfbp_reports_perf_file_mode_recording(modifier, perf, progs, tmp_path):
    addr = counter_address(progs, "nopie")
    path = tmp_path / "perf.data"
    perf_records_a_whole_run(perf, "record", "-N", "-e", f"mem:{addr:#x}/8:w{modifier}",
                             "-c", "1", "-o", str(path), "--", str(progs["nopie"]), str(N))
    _check_perfbp_reads_perf(perf, path, addr, user_only=modifier == ":u")


def test_perfbp_reports_perf_pipe_mode_recording(perf, progs, tmp_path):
    addr = counter_address(progs, "nopie")
    path = tmp_path / "perf-pipe.data"
    for _attempt in range(5):  # again while perf's workload dies of SIGTRAP (see above)
        with open(path, "wb") as out:
            r = subprocess.run([perf, "record", "-N", "-e", f"mem:{addr:#x}/8:w:u", "-c", "1",
                                "-o", "-", "--", str(progs["nopie"]), str(N)],
                               stdout=out, stderr=subprocess.PIPE, text=True,
                               timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        if r.returncode != -signal.SIGTRAP and "Trace/breakpoint trap" not in r.stderr:
            break
    assert r.returncode == 0, r.stderr
    with open(path, "rb") as f:  # pipe mode: a 16-byte header
        assert f.read(16) == b"PERFILE2" + (16).to_bytes(8, "little")
    _check_perfbp_reads_perf(perf, path, addr, user_only=True)


# -- 3. perfbp record --json ---------------------------------------------------------

def test_record_json_accounts_for_every_hit(rec_nopie, progs):
    rec = rec_nopie
    assert rec.proc.returncode == EXIT_STATUS, rec.proc.stderr  # the command's status
    out = rec.json
    assert out["exit_code"] == EXIT_STATUS and out["ended_by"] == "exit"
    assert out["producer"] == "perfbp"
    assert out["samples"] == TOTAL and out["lost"] == 0 and out["truncated"] is False
    (w,) = out["watches"]
    assert w["address"] == rec.addr and w["length"] == 8 and w["access"] == "w"
    assert w["hits"] == w["kernel_hits"] == TOTAL
    assert w["lost"] == 0 and w["accounted"] is True and w["period"] == 1
    writers = [(x["where"].split("+0x")[0], x["samples"], x["dso"]) for x in w["writers"]]
    assert writers == [("bump", 2 * N, str(progs["nopie"])),
                       ("main", 1, str(progs["nopie"]))]
    assert all(re.fullmatch(r"(bump|main)\+0x[0-9a-f]+", x["where"]) for x in w["writers"])
    threads = {(t["pid"], t["tid"], t["comm"]): t["samples"] for t in w["threads"]}
    comm = progs["nopie"].name[:15]
    assert threads == {(rec.main, rec.t0, comm): N, (rec.main, rec.t1, comm): N,
                       (rec.main, rec.main, comm): 1}
    assert w["cpus"] == {"0": N + 1, "1": N}
    err = rec.proc.stderr
    assert "Ctrl-C to end" in err and f"{TOTAL:,} samples, 0 lost" in err
    assert "WARNING" not in err


# -- 4. -p: a process that already runs ----------------------------------------------

class Attached:
    """What :func:`record_attached` saw."""

    def __init__(self, rc, out, err, addr, writer, target_rc, lost=0) -> None:
        self.rc, self.out, self.err = rc, out, err
        self.addr, self.writer, self.target_rc = addr, writer, target_rc
        #: stores the machine delivered without their status (no watch saw them)
        self.lost = lost
        #: the stores the watch saw: every one on a sound machine
        self.seen = N - lost


def record_attached(progs: dict, path: Path, writes: bool, settle: float) -> Attached:
    """``perfbp record --json -p PID`` on rec_attach: wait for the banner,
    then (if ``writes``) make it write N times and wait for its "done"; with
    ``settle``, wait until the recording holds N samples' worth of bytes and
    ``settle`` seconds more; then SIGINT perfbp."""
    target = subprocess.Popen([str(progs["attach"]), str(N)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    perfbp = None
    try:
        t_out = Lines(target.stdout)
        addr_text, tid_text = t_out.wait_for(lambda s: True).split()
        t_out.wait_for(lambda s: s == "ready")
        addr, writer = int(addr_text, 16), int(tid_text)

        perfbp = subprocess.Popen([*PERFBP, "record", "--json", "-w", f"{addr:#x}",
                                   "-p", str(target.pid), "-o", str(path)],
                                  cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p_err, p_out = Lines(perfbp.stderr), Lines(perfbp.stdout)
        banner = p_err.wait_for(lambda s: "Ctrl-C to end" in s)
        assert f"process {target.pid}" in banner, banner
        if writes:
            target.stdin.write("go\n")
            target.stdin.flush()
            t_out.wait_for(lambda s: s == "done")
            lost = int(t_out.wait_for(lambda s: s.startswith("lost ")).split()[1])
        else:
            lost = 0
        if settle:
            deadline = time.monotonic() + TIMEOUT
            while writes and path.stat().st_size < (N - lost) * SAMPLE_BYTES:
                assert time.monotonic() < deadline, "perfbp never wrote the samples"
                time.sleep(0.02)
            time.sleep(settle)
        perfbp.send_signal(signal.SIGINT)
        rc = perfbp.wait(TIMEOUT)
        out, err = p_out.rest(), p_err.rest()
    finally:
        if perfbp is not None and perfbp.poll() is None:
            perfbp.kill()
            perfbp.wait()
        try:
            if target.poll() is None:
                target.stdin.write("go\nend\n")  # unwatched now, if not done yet
                target.stdin.close()
                target.wait(TIMEOUT)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            target.kill()
            target.wait()
    return Attached(rc, out, err, addr, writer, target.returncode, lost)


def test_record_running_process(perf, progs, tmp_path):
    path = tmp_path / "attach.data"
    # settle: let perfbp drain and write the samples before the SIGINT (a
    # SIGINT in the middle of a drain: see the next test)
    run = record_attached(progs, path, writes=True, settle=0.5)
    assert run.rc == 0, run.err
    assert run.target_rc == 0
    assert run.addr == nm_address(progs["attach"], "counter")
    assert "Traceback" not in "\n".join(run.err)
    assert f"{run.seen:,} samples, 0 lost" in "\n".join(run.err)
    assert not any("WARNING" in line for line in run.err), run.err
    out = json.loads(run.out[-1])
    assert out["ended_by"] == "interrupt" and out["exit_code"] is None
    assert out["producer"] == "perfbp" and out["truncated"] is False
    (w,) = out["watches"]
    assert w["hits"] == w["kernel_hits"] == run.seen and w["lost"] == 0 and w["accounted"]
    assert [t["tid"] for t in w["threads"]] == [run.writer]

    samples = perfbp_samples(path)
    assert len(samples) == run.seen
    assert {tid for _t, tid, _ip in samples} == {run.writer}
    assert sampled_addresses(path) == {run.addr}

    # perf names the thread and the function from the synthesized COMM and MMAP2
    rows = perf_script_fields(perf, path, "comm,tid,ip,sym,dso")
    assert collections.Counter((comm, tid, sym, dso) for comm, tid, _ip, sym, dso in rows) \
        == {("recwriter", str(run.writer), "bump", f"({progs['attach']})"): run.seen}

    r = run_perfbp("report", "-i", str(path), "--format", "json")
    assert r.returncode == 0, r.stderr
    (w,) = json.loads(r.stdout)["watches"]
    assert [(t["tid"], t["comm"], t["samples"]) for t in w["threads"]] == \
        [(run.writer, "recwriter", run.seen)]
    assert [x["where"].split("+0x")[0] for x in w["writers"]] == ["bump"]
    assert w["writers"][0]["dso"] == str(progs["attach"])


def test_record_sigint_at_any_moment_finishes_the_recording(progs, tmp_path):
    """A SIGINT the moment the banner is out, or the moment the target is
    done (perfbp is then busy with its first batch), ends the recording as
    cleanly as one that comes when perfbp is idle.  Racy by nature: four
    rounds, each of which fails most of the time when signals are unsafe."""
    for i, writes in enumerate([False, True, False, True]):
        path = tmp_path / f"sigint{i}.data"
        run = record_attached(progs, path, writes=writes, settle=0.0)
        err = "\n".join(run.err)
        assert run.rc == 0, (i, err)
        assert "Traceback" not in err and "WARNING" not in err, (i, err)
        out = json.loads(run.out[-1])
        (w,) = out["watches"]
        expected = run.seen if writes else 0
        assert out["producer"] == "perfbp" and out["truncated"] is False, i
        assert (w["hits"], w["kernel_hits"], w["lost"]) == (expected, expected, 0), i
        assert len(perfbp_samples(path)) == expected, i


# -- 5. a recording cut short --------------------------------------------------------

LONG_N = 5000003  # ~30 s of hits per thread: perfbp is killed long before the end


@pytest.fixture(scope="module")
def cut_recording(progs, tmp_path_factory) -> Path:
    """A recording whose perfbp was SIGKILLed mid-run (a few hundred KB in)."""
    addr = counter_address(progs, "nopie")
    path = tmp_path_factory.mktemp("rec_cut") / "cut.data"
    perfbp = subprocess.Popen([*PERFBP, "record", "-w", f"{addr:#x}", "-o", str(path), "--",
                               str(progs["nopie"]), str(LONG_N)],
                              cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = None
    try:
        banner = Lines(perfbp.stderr).wait_for(lambda s: "Ctrl-C to end" in s)
        target = int(re.search(r"\(pid (\d+)\)", banner).group(1))
        deadline = time.monotonic() + TIMEOUT
        while not (path.exists() and path.stat().st_size > 400_000):
            assert time.monotonic() < deadline, "the recording never grew"
            assert perfbp.poll() is None, "perfbp ended early"
            time.sleep(0.02)
        perfbp.send_signal(signal.SIGKILL)
        perfbp.wait(TIMEOUT)
    finally:
        if perfbp.poll() is None:
            perfbp.kill()
            perfbp.wait()
        if target is not None:
            kill_if_ours(target, progs["nopie"])
    assert perfbp.returncode == -signal.SIGKILL
    return path


def test_cut_recording_is_readable_by_perf_and_perfbp(perf, cut_recording):
    theirs = perf_script_samples(perf, cut_recording)
    assert len(theirs) > 0
    r = run_perfbp("report", "-i", str(cut_recording), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert out["samples"] == len(theirs) == sum(w["hits"] for w in out["watches"])
    assert perfbp_samples(cut_recording) == theirs


def test_cut_recording_is_reported_truncated(cut_recording):
    r = run_perfbp("report", "-i", str(cut_recording), "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["truncated"] is True
    assert "cut short" in r.stderr
    # no version header in a cut recording: the producer is read from its events
    assert out["producer"] == "perfbp"


def test_perf_recording_cut_short_is_labelled_perf(perf, progs, tmp_path):
    """A perf recording as a SIGKILL leaves it (the feature sections, its
    version header among them, never written) is still perf's."""
    addr = counter_address(progs, "nopie")
    path = tmp_path / "perf.data"
    perf_records_a_whole_run(perf, "record", "-N", "-e", f"mem:{addr:#x}/8:w:u",
                             "-c", "1", "-o", str(path), "--", str(progs["nopie"]), "101")
    blob = bytearray(path.read_bytes())
    data_off, data_size = struct.unpack_from("<QQ", blob, 40)
    blob[72:104] = bytes(32)  # no features
    path.write_bytes(bytes(blob[:data_off + data_size]))
    r = run_perfbp("report", "-i", str(path), "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["producer"], out["truncated"], out["samples"]) == ("perf", True, 2 * 101 + 1)


# -- 6. the output file --------------------------------------------------------------

def test_record_creates_0600_and_keeps_the_earlier_file(progs, tmp_path):
    addr = counter_address(progs, "nopie")
    path = tmp_path / "perfbp.data"
    earlier = b"an earlier recording\n" * 100
    path.write_bytes(earlier)
    r = run_perfbp("record", "-w", f"{addr:#x}", "-o", str(path), "--",
                   str(progs["nopie"]), "101", umask=0)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "perfbp.data.old").read_bytes() == earlier
    assert len(perfbp_samples(path)) == 2 * 101 + 1


def test_record_refuses_a_symlink(progs, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    os.utime(victim, ns=(1_000_000_000, 1_000_000_000))
    before = victim.stat()
    link = tmp_path / "perfbp.data"
    link.symlink_to(victim)
    marker = tmp_path / "marker"
    r = run_perfbp("record", "-w", "0x404040", "-o", str(link), "--",
                   shutil.which("touch"), str(marker))
    line = one_error_line(r)
    assert str(link) in line and "symbolic link" in line
    assert victim.read_bytes() == b"precious\n"
    assert victim.stat().st_mtime_ns == before.st_mtime_ns == 1_000_000_000
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert not (tmp_path / "perfbp.data.old").exists()
    assert not marker.exists(), "the command ran although the recording was refused"


def test_record_refuses_a_dangling_symlink(tmp_path):
    link = tmp_path / "perfbp.data"
    target = tmp_path / "elsewhere"
    link.symlink_to(target)
    marker = tmp_path / "marker"
    r = run_perfbp("record", "-w", "0x404040", "-o", str(link), "--",
                   shutil.which("touch"), str(marker))
    assert str(link) in one_error_line(r)
    assert not target.exists() and not marker.exists()


@pytest.mark.parametrize("where", ["missing-dir", "proc", "directory"])
def test_record_unwritable_output(where, tmp_path):
    path = {"missing-dir": str(tmp_path / "no" / "such" / "dir" / "perfbp.data"),
            "proc": "/proc/perfbp.data",
            "directory": str(tmp_path)}[where]
    marker = tmp_path / "marker"
    r = run_perfbp("record", "-w", "0x404040", "-o", path, "--",
                   shutil.which("touch"), str(marker))
    assert path in one_error_line(r)
    assert not marker.exists()


# -- 7. perfbp report on bad input ---------------------------------------------------

@pytest.mark.parametrize("kind", ["missing", "empty", "random", "header-50"])
def test_report_bad_input(kind, rec_nopie, tmp_path):
    path = tmp_path / kind
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(65536))
    elif kind == "header-50":
        path.write_bytes(rec_nopie.path.read_bytes()[:50])
    r = run_perfbp("report", "-i", str(path))
    assert str(path) in one_error_line(r)
    assert r.stdout == ""


@pytest.mark.parametrize("option", [("--format", "xml"), ("--sort", "bogus")])
def test_report_bad_option(option, rec_nopie):
    r = run_perfbp("report", "-i", str(rec_nopie.path), *option)
    assert option[1] in one_error_line(r)
    assert r.stdout == ""


# -- 8. --sort and --format csv ------------------------------------------------------

def test_report_sorted_by_thread_symbol_cpu(rec_nopie):
    rec = rec_nopie
    expected = {
        "thread": {rec.t0: N, rec.t1: N, rec.main: 1},
        "symbol": {"bump": 2 * N, "main": 1},
        "cpu": {0: N + 1, 1: N},
    }
    field = {"thread": "tid", "symbol": "key", "cpu": "cpu"}
    for sort, want in expected.items():
        r = run_perfbp("report", "-i", str(rec.path), "--sort", sort, "--format", "json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["samples"] == TOTAL
        got = {g[field[sort]]: g["samples"] for g in out["groups"]}
        assert got == want, sort

        r = run_perfbp("report", "-i", str(rec.path), "--sort", sort, "--format", "csv")
        assert r.returncode == 0, r.stderr
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert sum(int(row["samples"]) for row in rows) == TOTAL
        assert sorted(int(row["samples"]) for row in rows) == sorted(want.values())


def test_report_csv(rec_nopie, progs):
    r = run_perfbp("report", "-i", str(rec_nopie.path), "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert sum(int(row["samples"]) for row in rows) == TOTAL
    assert {(row["where"].split("+0x")[0], int(row["samples"])) for row in rows} == \
        {("bump", 2 * N), ("main", 1)}
    for row in rows:
        assert int(row["address"]) == rec_nopie.addr
        assert (int(row["hits"]), int(row["lost"]), int(row["kernel_hits"])) == (TOTAL, 0, TOTAL)
        assert row["dso"] == str(progs["nopie"])


# -- 9. --period ---------------------------------------------------------------------

def test_record_period_one_thread(perf, progs, tmp_path):
    """One writer thread, pinned: 10,007 hits, one sample every 10th: 1,000."""
    addr = counter_address(progs, "nopie")
    path = tmp_path / "period.data"
    r = run_perfbp("record", "--json", "--period", "10", "-w", f"{addr:#x}", "-o", str(path),
                   "--", str(progs["nopie"]), str(N), "0", "1")
    assert r.returncode == 0, r.stderr
    assert "unaccounted for" not in r.stderr
    (w,) = json_line(r.stdout)["watches"]
    # every hit is one the kernel counted, or one whose status the machine
    # lost (the tracer saw its SIGTRAP: "recovered", 0 on a sound machine)
    hits = w["kernel_hits"]
    assert hits + w.get("recovered", 0) == N
    assert (w["hits"], w["lost"], w["period"]) == (hits // 10, 0, 10)
    assert w["accounted"] is True
    assert len(perfbp_samples(path)) == hits // 10
    assert len(perf_script_fields(perf, path, "tid,ip")) == hits // 10


def test_record_period_many_threads(progs, tmp_path):
    addr = counter_address(progs, "nopie")
    path = tmp_path / "period.data"
    r = run_perfbp("record", "--json", "--period", "10", "-w", f"{addr:#x}", "-o", str(path),
                   "--", str(progs["nopie"]), str(N))
    assert r.returncode == 0, r.stderr
    (w,) = json_line(r.stdout)["watches"]
    # the kernel keeps one period counter per event instance (a thread on a
    # CPU): the sample count depends on how the hits fell on instances, by at
    # most period-1 hits per instance; the kernel's hit count stays exact, and
    # "accounted" checks the samples against it within that bound
    hits = w["kernel_hits"]  # with the hits whose status the machine lost, see above
    assert (hits + w.get("recovered", 0), w["lost"]) == (TOTAL, 0)
    assert 2 * ((hits - 1) // 2 // 10) - 2 <= w["hits"] <= hits // 10
    assert "unaccounted for" not in r.stderr
    assert w["accounted"] is True


STORM_N = 1009  # stores per storm thread (a prime)


@pytest.fixture(scope="module")
def storm(build) -> Path:
    return build("storm.c", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread")


@pytest.mark.parametrize("threads", [1, 8, 64])
@pytest.mark.parametrize("pages", [1, 2])
def test_record_small_ring_counts_lost_samples_exactly(storm, tmp_path, threads, pages):
    """A ring too small for the storm: most samples are lost, and so are
    thread records (FORK, COMM, EXIT), which the kernel counts as lost on the
    event that writes them.  They come from a tracking event of their own,
    so a watch's lost count is its lost samples alone: samples + lost is the
    kernel's hit count exactly, never more."""
    path = tmp_path / "storm.data"
    r = run_perfbp("record", "--json", "--ring-pages", str(pages), "-w", "counter", "-o",
                   str(path), "--", str(storm), str(threads), str(STORM_N))
    assert r.returncode == 0, r.stderr
    (w,) = json_line(r.stdout)["watches"]
    assert w["hits"] + w["lost"] == w["kernel_hits"] and w["accounted"], w
    # every store is a hit the kernel counted, or one the machine lost the
    # status of (the tracer saw its SIGTRAP; 0 on a sound machine)
    assert w["kernel_hits"] + w.get("recovered", 0) == threads * STORM_N
    assert w["lost"] > 0 and "unaccounted for" not in r.stderr
    # perf reads the same figure from the PERF_RECORD_LOST_SAMPLES perfbp wrote
    p = subprocess.run(["perf", "report", "--stdio", "-i", str(path)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert f"# Total Lost Samples: {w['lost']}\n" in p.stdout, p.stdout


# -- pipe mode: record -o - ------------------------------------------------------------

def _record_to_pipe(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([*PERFBP, "record", "-o", "-", *args], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE)


def test_record_to_stdout_is_a_stream_perf_reads(perf, storm, tmp_path):
    """``record -o -`` writes perf's pipe mode: perf report and perf script
    read it from a pipe, with the watch's name; perfbp report -i - reads the
    same bytes with the kernel's own count."""
    path = tmp_path / "stream.data"
    with open(path, "wb") as out:
        rec = _record_to_pipe("-w", "counter", "--", str(storm), "2", str(STORM_N), stdout=out)
        _out, err = rec.communicate(timeout=TIMEOUT)
    assert rec.returncode == 0, err
    assert path.read_bytes()[:16] == b"PERFILE2" + struct.pack("<Q", 16)  # the pipe header
    rows = run_perf(perf, "script", "-i", str(path), "-F", "event,ip,sym").stdout.splitlines()
    report = subprocess.run([perf, "report", "-i", "-", "--stdio"], stdin=open(path, "rb"),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert "of event 'counter'" in report.stdout, report.stdout + report.stderr
    r = subprocess.run([*PERFBP, "report", "-i", "-", "--format", "json"], cwd=REPO_ROOT,
                       stdin=open(path, "rb"), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (w,) = out["watches"]
    assert (out["producer"], out["path"], w["name"]) == ("perfbp", "-", "counter")
    assert w["hits"] == len(rows) and w["hits"] + w["lost"] == w["kernel_hits"]
    assert w["kernel_hits"] + w.get("recovered", 0) == 2 * STORM_N
    assert all("store_n" in row for row in rows)
    # the armed address, not the page a name waits on before its program runs
    assert w["address"] != 0 and w["bindings"]


def test_record_to_stdout_keeps_the_command_output_out_of_the_stream(build, tmp_path):
    """The command's standard output goes to standard error (as perf does
    for its workload), so the stream stays whole."""
    writer = build("busy_writer.c", "-O1")
    path = tmp_path / "stream.data"
    with open(path, "wb") as out:
        rec = _record_to_pipe("-d", "0.3", "-w", "counter", "--", str(writer), stdout=out)
        _out, err = rec.communicate(timeout=TIMEOUT)
    assert rec.returncode == 0, err
    assert b"writing\n" in err and b"writing" not in path.read_bytes()
    r = subprocess.run([*PERFBP, "report", "-i", "-", "--format", "json"], cwd=REPO_ROOT,
                       stdin=open(path, "rb"), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and json.loads(r.stdout)["watches"][0]["hits"] > 0, r.stderr


def test_record_to_stdout_ends_when_the_reader_goes(build):
    """A reader that closes the pipe ends the recording: one error line,
    exit 2, and the command perfbp launched does not go on running."""
    writer = build("busy_writer.c", "-O1")
    rec = _record_to_pipe("-w", "counter", "--", str(writer))
    rec.stdout.read(100)
    rec.stdout.close()
    _out, err = rec.communicate(timeout=TIMEOUT)
    lines = [ln for ln in err.decode().splitlines()
             if ln.startswith("perfbp: error")]
    assert rec.returncode == 2 and len(lines) == 1, err
    assert "Broken pipe" in lines[0] and "Traceback" not in err.decode()
    assert not [p for p in os.listdir("/proc") if p.isdigit()
                and _exe(int(p)) == str(writer)], "the command outlived perfbp"


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def test_record_to_stdout_refuses_json_and_a_terminal(tmp_path):
    one_error_line(run_perfbp("record", "-o", "-", "--json", "-w", "0x10000", "--", "true"))
    master, slave = os.openpty()
    try:
        r = subprocess.run([*PERFBP, "record", "-o", "-", "-w", "0x10000", "--", "true"],
                           cwd=REPO_ROOT, stdout=slave, stderr=subprocess.PIPE, text=True,
                           timeout=TIMEOUT)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2 and "which is a terminal" in r.stderr, r.stderr


# -- 10. memory: bounded by the work, not the samples --------------------------------

SMALL_RUN, LARGE_RUN = 100_003, 600_011  # hits of one writer thread (primes)
MEMORY_BOUND = 30 << 20  # bytes more for 500,008 more samples (was 80 MiB; now ~2)


def record_peak_rss(progs, tmp_path, hits: int) -> "tuple[int, dict]":
    """Peak RSS in bytes of ``perfbp record --json`` (its summary included)
    on ``hits`` writes of one thread, from the kernel's accounting of the
    child (wait4's ru_maxrss), and the summary."""
    addr = counter_address(progs, "nopie")
    path, out, err = (tmp_path / f"{hits}{ext}" for ext in (".data", ".out", ".err"))
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen([*PERFBP, "record", "--json", "-w", f"{addr:#x}", "-o",
                                     str(path), "--", str(progs["nopie"]), str(hits), "0",
                                     "1"], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                    stdout=o, stderr=e)
            _pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        if "(ENOSPC)" not in err.read_text() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, err.read_text()
    return usage.ru_maxrss * 1024, json_line(out.read_text())


def test_record_memory_does_not_grow_with_the_samples(progs, tmp_path):
    """Six times the samples, about the same peak RSS: the rings are drained
    to the file as the run goes, and the summary is counted over the file a
    window at a time."""
    small, s_out = record_peak_rss(progs, tmp_path, SMALL_RUN)
    large, l_out = record_peak_rss(progs, tmp_path, LARGE_RUN)
    for hits, out in ((SMALL_RUN, s_out), (LARGE_RUN, l_out)):
        (w,) = out["watches"]
        assert w["accounted"] is True
        if not machine_disturbed(out):
            assert w["hits"] == w["kernel_hits"] == hits
    assert large - small < MEMORY_BOUND, \
        f"{SMALL_RUN:,} hits: {small >> 20} MiB; {LARGE_RUN:,} hits: {large >> 20} MiB"


@pytest.mark.parametrize("cut", [False, True])
def test_report_is_the_same_whatever_the_window(rec_nopie, tmp_path, cut):
    """load_report decodes the data section a window at a time: one window
    for the whole file, windows of a few records, and windows shorter than
    some records (read again, longer) give the same report, every --sort;
    so does a copy of the file cut inside a record (truncated)."""
    path = rec_nopie.path
    if cut:
        raw = rec_nopie.path.read_bytes()
        path = tmp_path / "cut.data"
        path.write_bytes(raw[:len(raw) // 2 + 13])
    whole = os.path.getsize(path)
    for sort in ("watch", "symbol", "thread", "cpu"):
        want = load_report(str(path), top=1000, sort=sort, window=whole).as_dict()
        assert want["truncated"] is cut and want["samples"] > 0
        for window in (4096, 100) if sort == "watch" else (4096,):
            got = load_report(str(path), top=1000, sort=sort, window=window).as_dict()
            assert got == want, (sort, window)


def test_perfbp_report_says_the_period_of_perfs_recording(perf, progs, tmp_path):
    """perf record -c 3: one sample every third hit of each thread (the two
    writers' 1009 each, main's one store never reaches a third); the table
    says the period, since such a file holds no final count, and JSON has
    it.  Few hits: perf's program dies of a hit that comes without its status
    (see perf_records_a_whole_run), the more likely the more hits."""
    n = 1009
    addr = counter_address(progs, "nopie")
    path = tmp_path / "perf-c3.data"
    perf_records_a_whole_run(perf, "record", "-N", "-e", f"mem:{addr:#x}/8:w:u", "-c", "3",
                             "-o", str(path), "--", str(progs["nopie"]), str(n))
    samples = 2 * (n // 3)
    assert len(perf_script_samples(perf, path)) == samples
    r = run_perfbp("report", "-i", str(path))
    assert r.returncode == 0, r.stderr
    assert (f"  samples {samples:,}   lost 0   (1 sample every 3 hits: about "
            f"{3 * samples:,} hits)") in r.stdout.splitlines(), r.stdout
    (w,) = json.loads(run_perfbp("report", "-i", str(path), "--format", "json").stdout)["watches"]
    assert (w["hits"], w["period"]) == (samples, 3)
