"""The ``perfbp`` command line, run as a user runs it, on the real kernel.

Every test runs ``python -m perfbp`` as a subprocess from the repository root
(never through a shell) and checks exit status, stdout and stderr against
workloads whose counts are known exactly:

* ``demo/demo``: two threads write ``counter`` 50,021 times each (100,042),
  and ``main`` writes ``config.flags`` once before starting them.
* ``tests/workloads/cli_loop.c``: prints the address of its ``counter`` and
  the id of the thread that writes it, then writes ``counter`` N times for
  every line N it reads on stdin, answering "done".  The attach tests (-p, -t,
  -a, -C) make 101 writes before perfbp attaches (which must not count), wait
  for perfbp's banner (it is printed once everything is armed), make 10,007
  more, and then end the run: SIGINT or SIGTERM to perfbp, the target
  exiting, or --duration.

Bad input must give one line on stderr, ``perfbp: error: ...``, exit status
2 and no traceback (no banner either: it is printed only after arming).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

REPO_ROOT = Path(__file__).resolve().parent.parent
PERFBP = [sys.executable, "-m", "perfbp"]

DEMO_HITS = 2 * 50021   # demo.c: 2 threads x WRITES_PER_THREAD
BEFORE = 101            # writes made before perfbp attaches: never counted
ROUND = 10007           # writes made while perfbp watches
BANNER = "Ctrl-C to end"
TIMEOUT = 30            # seconds; no test comes near it unless perfbp hangs
NOBODY = 65534
SLOT_WAIT = 15          # seconds to wait for slots held by other programs


# -- running perfbp ----------------------------------------------------------------

def no_free_slot(stderr: str) -> bool:
    """perfbp could not arm because every debug-register slot was taken.

    The kernel counts the slots of a CPU-wide watch against every task's
    (toggle_bp_slot): while another program on this machine holds 4
    breakpoints in one thread (another test suite, gdb), -a fails with ENOSPC,
    rightly.  Tests wait for the slots to come back rather than fail.
    """
    return "(ENOSPC)" in stderr


def run_perfbp(*args: str, timeout: float = TIMEOUT, env: "dict | None" = None,
               stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """``perfbp ARGS`` to completion, from the repository root."""
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        r = subprocess.run([*PERFBP, *args], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=timeout, stdin=stdin,
                           env=env if env is not None else os.environ.copy())
        if not no_free_slot(r.stderr) or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def lines(text: str) -> "list[str]":
    return [line for line in text.splitlines() if line.strip()]


def one_json(stdout: str) -> dict:
    """The one JSON object perfbp printed: the last line of stdout (a launched
    command's own output may come before it)."""
    out = lines(stdout)
    objects = [line for line in out if line.startswith("{")]
    assert len(objects) == 1, stdout
    assert out[-1] == objects[0], stdout
    return json.loads(objects[0])


def assert_clean(proc_stderr: str, stdout: str = "") -> None:
    assert "Traceback" not in proc_stderr and "Traceback" not in stdout, proc_stderr


def _reset_sigint() -> None:
    # Python turns SIGINT into KeyboardInterrupt only if it starts with the
    # default disposition; a test runner started in the background (nohup, a
    # CI shell's &) may pass SIGINT on ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Pipe:
    """Reads a child's pipe with a deadline, so a hung perfbp fails the test
    instead of hanging it."""

    def __init__(self, stream) -> None:
        self.fd = stream.fileno()
        self.buf = b""
        self.eof = False

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; read so far: {self.buf.decode(errors='replace')!r}")
        ready, _, _ = select.select([self.fd], [], [], left)
        if ready:
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.buf += chunk

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.buf:
            if self.eof:
                raise AssertionError(f"EOF before {text!r}; read: {self.buf.decode(errors='replace')!r}")
            self._fill(deadline)
        return self.buf.decode()

    def readline(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise AssertionError(f"EOF before a line; read: {self.buf!r}")
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def rest(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._fill(deadline)
        return self.buf.decode()


class Loop:
    """A running ``cli_loop``: ``address``, ``pid``, ``tid`` (of the writer)."""

    def __init__(self, exe: Path, *args: str, cpu: "int | None" = None) -> None:
        def preexec():
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
        self.proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, preexec_fn=preexec)
        self.out = Pipe(self.proc.stdout)
        try:
            addr, tid = self.out.readline().split()
        except BaseException:
            self.kill()
            raise
        self.address = int(addr, 16)
        self.lost = 0
        self.pid = self.proc.pid
        self.tid = int(tid)

    def write(self, n: int) -> None:
        """Make the program write ``counter`` n times; return when it has.
        ``lost`` adds up the writes the machine delivered without their
        status (no watch counted them: see cli_loop.c)."""
        self.proc.stdin.write(f"{n}\n".encode())
        self.proc.stdin.flush()
        word, lost = self.out.readline().split()
        assert word == "done"
        self.lost += int(lost)

    def end(self) -> int:
        """Close its stdin: it exits 0."""
        self.proc.stdin.close()
        return self.proc.wait(TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()


def _full_pipe() -> "tuple[int, int]":
    """A pipe whose buffer is full of newlines: the next write blocks."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    for size in (4096, 1):
        try:
            while True:
                os.write(w, b"\n" * size)
        except BlockingIOError:
            pass
    os.set_blocking(w, True)
    return r, w


class Background:
    """``perfbp ARGS`` running in the background, stopped by the test.

    With ``stderr_full``, perfbp's stderr is a pipe that is already full, so
    perfbp blocks in its first write there, the banner, until the test reads
    (a terminal paused with Ctrl-S, a pager that does not read): its watches
    are armed and counting, and it has not yet gone on to wait.
    """

    def __init__(self, *args: str, stderr_full: bool = False) -> None:
        r, w = _full_pipe() if stderr_full else (-1, subprocess.PIPE)
        self.proc = subprocess.Popen([*PERFBP, *args], cwd=REPO_ROOT,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=w, start_new_session=True,
                                     preexec_fn=_reset_sigint)
        if stderr_full:
            os.close(w)
            self._stderr = os.fdopen(r, "rb")
        else:
            self._stderr = self.proc.stderr
        self.out = Pipe(self.proc.stdout)
        self.err = Pipe(self._stderr)

    def perf_event_fds(self) -> int:
        """How many perf events perfbp holds open now."""
        n = 0
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                n += os.readlink(f"/proc/{self.proc.pid}/fd/{fd}") == "anon_inode:[perf_event]"
            except FileNotFoundError:
                pass
        return n

    def wait_armed(self) -> str:
        """Wait for the banner, which perfbp prints once every watch is armed."""
        try:
            return self.err.wait_for(BANNER)
        except AssertionError:
            self.kill()
            raise

    def finish(self, sig: "int | None" = None,
               timeout: float = TIMEOUT) -> "tuple[int, str, str]":
        """Send ``sig`` (if any) and collect ``(returncode, stdout, stderr)``."""
        if sig is not None:
            self.proc.send_signal(sig)
        out = self.out.rest(timeout)
        err = self.err.rest(timeout)
        return self.proc.wait(timeout), out, err

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.proc.stdout.close()
        self._stderr.close()


# -- fixtures ----------------------------------------------------------------------

def _symbols(exe: Path) -> "dict[str, int]":
    out = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in map(str.split, out.splitlines())
            if len(parts) == 3}


@pytest.fixture(scope="session")
def demo(build):
    """The demo, built as the Makefile builds it; ``demo.counter`` and
    ``demo.config`` are the addresses of its globals (from nm)."""
    exe = build(REPO_ROOT / "demo" / "demo.c", "-O2", "-g", "-pthread", "-no-pie")
    syms = _symbols(exe)

    class Demo:
        path = str(exe)
        counter = syms["counter"]
        config = syms["config"]
    return Demo


@pytest.fixture(scope="session")
def loop_exe(build) -> Path:
    return build("cli_loop.c", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-fPIE", "-pie")


@pytest.fixture
def run(loop_exe):
    """Start ``Loop`` / ``Background`` processes; kill any still running at
    the end of the test."""
    started: list = []

    class Run:
        @staticmethod
        def loop(*args: str, cpu: "int | None" = None) -> Loop:
            started.append(Loop(loop_exe, *args, cpu=cpu))
            return started[-1]

        @staticmethod
        def unarmed(*args: str, stderr_full: bool = False) -> Background:
            """perfbp in the background, just started."""
            started.append(Background(*args, stderr_full=stderr_full))
            return started[-1]

        @staticmethod
        def perfbp(*args: str) -> "tuple[Background, str]":
            """perfbp in the background, armed; and its banner."""
            deadline = time.monotonic() + SLOT_WAIT
            while True:
                started.append(Background(*args))
                try:
                    return started[-1], started[-1].wait_armed()
                except AssertionError:
                    if not no_free_slot(started[-1].err.buf.decode()) \
                            or time.monotonic() > deadline:
                        raise
                time.sleep(0.5)

    yield Run
    for p in reversed(started):
        p.close()


# -- stat on a launched command ------------------------------------------------------

def test_stat_counts_every_write_of_the_demo(demo):
    r = run_perfbp("stat", "-w", f"mem:{demo.counter:#x}/8:w", "--", demo.path)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr, r.stdout)
    assert "demo: 2 threads wrote counter 50021 times each (100042 in all)" in r.stdout
    row = [line for line in lines(r.stdout) if "100,042" in line]
    assert len(row) == 1, r.stdout
    assert re.match(rf"^\s+100,042\s+mem:{demo.counter:#x}/8:w\s*$", row[0]), row[0]
    assert "(target ended, exit status 0)" in r.stdout
    # stderr: only the banner, naming what is watched and where
    err = lines(r.stderr)
    assert len(err) == 1 and err[0].startswith("perfbp: watching 1 location "), r.stderr
    assert f"mem:{demo.counter:#x}/8:w" in err[0] and BANNER in err[0]


def test_stat_json_demo(demo):
    r = run_perfbp("stat", "--json", "-w", f"mem:{demo.counter:#x}/8:w", "--", demo.path)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr, r.stdout)
    # the command's own output passes through, before perfbp's one object
    assert lines(r.stdout)[0] == "demo: 2 threads wrote counter 50021 times each (100042 in all)"
    out = one_json(r.stdout)
    assert out["ended_by"] == "exit" and out["exit_code"] == 0
    assert len(out["watches"]) == 1
    w = out["watches"][0]
    assert type(w["address"]) is int and w["address"] == demo.counter
    assert (w["length"], w["access"], w["hits"]) == (8, "w", DEMO_HITS)
    assert w["spec"] == f"mem:{demo.counter:#x}/8:w"


def test_first_write_in_main_is_counted(demo):
    """Armed before the first instruction: main's one `config.flags = 1`."""
    r = run_perfbp("stat", "--json", "-w", f"{demo.config:#x}/4:w", "--", demo.path)
    assert r.returncode == 0, r.stderr
    w = one_json(r.stdout)["watches"][0]
    assert (w["address"], w["length"], w["hits"]) == (demo.config, 4, 1)


def test_two_watches_at_once(demo):
    r = run_perfbp("stat", "--json", "-w", f"{demo.counter:#x}", "-w", f"{demo.config:#x}/4",
                   "--", demo.path)
    assert r.returncode == 0, r.stderr
    assert [w["hits"] for w in one_json(r.stdout)["watches"]] == [DEMO_HITS, 1]


def test_user_mode_default_is_exact_and_k_adds_kernel_hits(demo):
    """The ELF loader clears .bss (where counter lives) in kernel mode: only
    :k may count that; the default and :u count the program's writes only."""
    counts = {}
    for mod in ("", ":u", ":k"):
        r = run_perfbp("stat", "--json", "-w", f"{demo.counter:#x}/8:w{mod}", "--", demo.path)
        assert r.returncode == 0, r.stderr
        counts[mod] = one_json(r.stdout)["watches"][0]["hits"]
    assert counts[""] == DEMO_HITS
    assert counts[":u"] == DEMO_HITS
    assert counts[":k"] >= DEMO_HITS


@pytest.mark.parametrize("script, status, words", [
    ("exit 7", 7, "(target ended, exit status 7)"),
    ("kill -9 $$", 128 + 9, "(target ended, killed by signal 9)"),
], ids=["exit-7", "sigkill"])
def test_exit_status_of_the_command_passes_through(demo, script, status, words):
    r = run_perfbp("stat", "-w", f"{demo.counter:#x}", "--", "/bin/sh", "-c", script)
    assert r.returncode == status, r.stderr
    assert_clean(r.stderr, r.stdout)
    # the table is printed all the same
    assert re.search(r"^\s+hits\s+watch$", r.stdout, re.M), r.stdout
    assert re.search(rf"^\s+0\s+{demo.counter:#x}\b", r.stdout, re.M), r.stdout
    assert words in r.stdout


def test_killed_command_in_json(demo):
    r = run_perfbp("stat", "--json", "-w", f"{demo.counter:#x}", "--",
                   "/bin/sh", "-c", "kill -9 $$")
    assert r.returncode == 137
    out = one_json(r.stdout)
    assert (out["ended_by"], out["exit_code"], out["exit_status"]) == ("exit", -9, 137)
    assert "error" not in out


@pytest.mark.parametrize("command", ["record", "stat"])
def test_a_commands_status_2_is_told_from_perfbps_own(demo, tmp_path, command):
    """A command that exits 2 makes perfbp exit 2 too; the JSON says the
    status is the command's (no error), and stderr has no error line."""
    extra = ["-o", str(tmp_path / "two.data")] if command == "record" else []
    r = run_perfbp(command, "--json", *extra, "-w", f"{demo.counter:#x}", "--",
                   "/bin/sh", "-c", "exit 2")
    assert r.returncode == 2, r.stderr
    assert "perfbp: error:" not in r.stderr
    out = one_json(r.stdout)
    assert (out["exit_code"], out["exit_status"]) == (2, 2) and "error" not in out


def test_duration_ends_the_command_and_exits_0(demo):
    r = run_perfbp("stat", "--json", "-d", "0.3", "-w", f"{demo.counter:#x}", "--",
                   "/bin/sh", "-c", "sleep 5")
    assert r.returncode == 0, r.stderr
    out = one_json(r.stdout)
    assert (out["ended_by"], out["exit_code"], out["exit_status"]) == \
        ("duration", -signal.SIGTERM, 0)


# -- stat on a running process (-p) ----------------------------------------------------

@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_pid_until_sigint(run, as_json):
    lp = run.loop()
    lp.write(BEFORE)
    pb, banner = run.perfbp("stat", "-w", f"{lp.address:#x}", "-p", str(lp.pid),
                            *(["--json"] if as_json else []))
    assert f"process {lp.pid} (cli_loop)" in banner
    lp.write(ROUND)
    assert pb.running()
    rc, out, err = pb.finish(signal.SIGINT)
    assert rc == 0, err
    assert_clean(err, out)
    assert len(lines(err)) == 1  # the banner only
    if as_json:
        res = one_json(out)
        assert len(lines(out)) == 1
        assert (res["ended_by"], res["exit_code"]) == ("interrupt", None)
        assert res["watches"][0]["hits"] == ROUND - lp.lost
    else:
        assert f"Hits for process {lp.pid} (cli_loop):" in out
        assert re.search(rf"^\s+{ROUND - lp.lost:,}\s+{lp.address:#x}\b", out, re.M), out
        assert "(interrupted)" in out
    assert lp.proc.poll() is None  # perfbp leaves an attached process alone
    assert lp.end() == 0


def test_pid_until_the_target_exits(run):
    lp = run.loop()
    lp.write(BEFORE)
    pb, _ = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-p", str(lp.pid))
    lp.write(ROUND)
    assert lp.end() == 0
    rc, out, err = pb.finish(timeout=10)  # ends by itself
    assert rc == 0, err
    res = one_json(out)
    assert (res["ended_by"], res["exit_code"]) == ("exit", None)
    assert res["watches"][0]["hits"] == ROUND - lp.lost


def test_pid_duration(run):
    lp = run.loop()
    lp.write(BEFORE)
    pb, _ = run.perfbp("stat", "--json", "--duration", "0.5", "-w", f"{lp.address:#x}",
                    "-p", str(lp.pid))
    lp.write(ROUND)  # about 0.1 s of hits
    rc, out, err = pb.finish(timeout=10)  # ends by itself
    assert rc == 0, err
    res = one_json(out)
    assert res["ended_by"] == "duration" and res["exit_code"] is None
    assert 0.5 <= res["elapsed_seconds"] < 5
    assert res["watches"][0]["hits"] == ROUND - lp.lost
    assert lp.proc.poll() is None  # the target keeps running
    assert lp.end() == 0


def test_pid_sigterm_is_a_clean_stop(run):
    lp = run.loop()
    lp.write(BEFORE)
    pb, _ = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-p", str(lp.pid))
    lp.write(ROUND)
    rc, out, err = pb.finish(signal.SIGTERM)
    assert rc == 0, err
    assert_clean(err, out)
    res = one_json(out)
    assert res["ended_by"] == "interrupt"
    assert res["watches"][0]["hits"] == ROUND - lp.lost


def test_pid_intervals_add_up(run):
    """-I 100: the target writes in the second interval, then idles for
    several more, so the last full interval ends after its last write and the
    intervals add up to the total.  (Writes made at once after the banner are
    the next test's.)"""
    lp = run.loop()
    lp.write(BEFORE)
    pb, _ = run.perfbp("stat", "--json", "-I", "100", "-w", f"{lp.address:#x}", "-p", str(lp.pid))
    time.sleep(0.15)
    lp.write(ROUND)
    time.sleep(0.35)
    assert lp.end() == 0
    rc, out, err = pb.finish(timeout=10)
    assert rc == 0, err
    res = one_json(out)
    total = res["watches"][0]["hits"]
    assert total == ROUND - lp.lost
    ivals = res["intervals"]
    assert len(ivals) >= 3
    times = [iv["time"] for iv in ivals]
    assert times == sorted(times) and times[0] >= 0.1
    per = [iv["watches"][0]["hits"] for iv in ivals]
    assert all(n >= 0 for n in per) and per[-1] == 0
    assert sum(per) == total


def test_pid_intervals_include_hits_made_while_the_banner_is_written(run):
    """The same, with perfbp's stderr slow (a full pipe): perfbp is armed and
    counting, and blocked writing its banner, while the target makes its
    first 10,007 writes; those belong in the first interval."""
    lp = run.loop()
    lp.write(BEFORE)
    pb = run.unarmed("stat", "--json", "-I", "100", "-w", f"{lp.address:#x}", "-p", str(lp.pid),
                     stderr_full=True)
    deadline = time.monotonic() + TIMEOUT
    while pb.perf_event_fds() == 0:  # armed: the watch is open and enabled
        assert pb.running() and time.monotonic() < deadline, pb.finish()
        time.sleep(0.01)
    lp.write(ROUND)
    time.sleep(0.15)  # perfbp stays blocked on its banner
    pb.wait_armed()   # drain the pipe: perfbp goes on
    lp.write(ROUND)
    time.sleep(0.35)
    assert lp.end() == 0
    rc, out, err = pb.finish(timeout=10)
    assert rc == 0, err
    res = one_json(out)
    assert res["watches"][0]["hits"] == 2 * ROUND - lp.lost
    per = [iv["watches"][0]["hits"] for iv in res["intervals"]]
    assert sum(per) == 2 * ROUND - lp.lost, per


def test_intervals_of_a_launched_command(demo):
    r = run_perfbp("stat", "--json", "-I", "100", "-w", f"{demo.counter:#x}", "--", demo.path)
    assert r.returncode == 0, r.stderr
    out = one_json(r.stdout)
    total = out["watches"][0]["hits"]
    assert total == DEMO_HITS
    per = [iv["watches"][0]["hits"] for iv in out["intervals"]]
    times = [iv["time"] for iv in out["intervals"]]
    # the last, partial interval too, ending with the run: they add up
    assert sum(per) == total, per
    assert times == sorted(times) and times[-1] == out["elapsed_seconds"]
    assert all(round(t - 0.1 * (i + 1), 6) >= 0 for i, t in enumerate(times[:-1]))


def test_an_interval_longer_than_the_run_is_printed_whole(demo):
    """-I 100000 on a run of a second: one interval, the partial one, with
    every hit, in the table as in JSON."""
    r = run_perfbp("stat", "-I", "100000", "-w", f"{demo.counter:#x}", "--", demo.path)
    assert r.returncode == 0, r.stderr
    rows = re.findall(rf"^\s+(\d+\.\d{{3}})\s+([\d,]+)  {demo.counter:#x}$", r.stdout, re.M)
    elapsed = re.search(r"^ (\d+\.\d{3}) seconds \(target ended", r.stdout, re.M).group(1)
    assert rows == [(elapsed, f"{DEMO_HITS:,}")], r.stdout
    r = run_perfbp("stat", "--json", "-I", "100000", "-w", f"{demo.counter:#x}", "--",
                   demo.path)
    out = one_json(r.stdout)
    assert [(iv["time"], iv["watches"][0]["hits"]) for iv in out["intervals"]] == \
        [(out["elapsed_seconds"], DEMO_HITS)]


# -- one thread (-t) -----------------------------------------------------------------

def test_tid_counts_only_that_thread(run):
    """cli_loop writes from a second thread: -t of that thread sees every
    write; -t of the main thread (which writes nothing) sees none.  Both end
    when the process exits."""
    lp = run.loop("thread")
    assert lp.tid != lp.pid
    lp.write(BEFORE)
    writer, banner = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-t", str(lp.tid))
    main, _ = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-t", str(lp.pid))
    assert f"thread {lp.tid}" in banner
    lp.write(ROUND)
    assert lp.end() == 0
    for pb, hits in ((writer, ROUND - lp.lost), (main, 0)):
        rc, out, err = pb.finish(timeout=10)  # each ends by itself
        assert rc == 0, err
        res = one_json(out)
        assert res["ended_by"] == "exit"
        assert res["watches"][0]["hits"] == hits


# -- CPUs (-a, -C) ---------------------------------------------------------------------

def test_all_cpus(run):
    lp = run.loop(cpu=0)
    lp.write(BEFORE)
    pb, _ = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-a")
    lp.write(ROUND)
    rc, out, err = pb.finish(signal.SIGINT)
    assert rc == 0, err
    res = one_json(out)
    assert res["ended_by"] == "interrupt"
    assert res["watches"][0]["hits"] == ROUND - lp.lost


def test_cpu_list_counts_only_those_cpus(run):
    online = _online_cpus()
    if 1 not in online:
        pytest.skip("needs CPUs 0 and 1 online")
    lp = run.loop(cpu=0)
    lp.write(BEFORE)
    on0, banner = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-C", "0")
    on1, _ = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-C", "1")
    assert "in CPU 0;" in banner
    lp.write(ROUND)
    hits = []
    for pb in (on0, on1):
        rc, out, err = pb.finish(signal.SIGINT)
        assert rc == 0, err
        hits.append(one_json(out)["watches"][0]["hits"])
    assert hits == [ROUND - lp.lost, 0]


# -- CPUs while a command runs (-a -- CMD, -C CPUS -- CMD) -------------------------------

@pytest.fixture(scope="session")
def fixed_writer(build) -> Path:
    return build("fixed_writer.c", "-O2", "-Wall", "-Wextra", "-Werror")


def _fresh_address() -> int:
    """A page no process on this machine uses: fixed_writer maps it, and a
    CPU-wide watch there sees that program's stores alone."""
    import random

    return 0x2000_0000_0000 + random.randrange(1 << 24) * 4096


@pytest.mark.parametrize("cpus, pinned, expected", [
    (["-a"], 0, ROUND), (["-C", "0"], 0, ROUND), (["-C", "1"], 0, 0),
], ids=["all-cpus", "its-cpu", "another-cpu"])
def test_cpus_while_a_command_runs(fixed_writer, cpus, pinned, expected):
    """perf's -a -- CMD: the CPUs are watched, for as long as the command
    runs; its exit status is perfbp's."""
    if not {0, 1} <= set(_online_cpus()):
        pytest.skip("needs CPUs 0 and 1 online")
    a = _fresh_address()
    r = run_perfbp("stat", "--json", *cpus, "-w", f"{a:#x}", "--", str(fixed_writer),
                   f"{a:#x}", str(ROUND), "7", str(pinned))
    assert r.returncode == 7, r.stderr
    out = one_json(r.stdout)
    where = "CPUs " + ",".join(map(str, _online_cpus())) if cpus == ["-a"] else f"CPU {cpus[1]}"
    command = f"{fixed_writer} {a:#x} {ROUND} 7 {pinned}"
    assert re.fullmatch(rf"{where} while command '{re.escape(command)}' \(pid \d+\) runs",
                        out["target"]), out["target"]
    assert (out["ended_by"], out["exit_code"], out["exit_status"]) == ("exit", 7, 7)
    assert out["watches"][0]["hits"] == expected
    assert f"in {where} while command" in r.stderr and "slot per CPU" in r.stderr


def test_record_on_every_cpu_while_a_command_runs(fixed_writer, tmp_path):
    a = _fresh_address()
    data = tmp_path / "cpus.data"
    r = run_perfbp("record", "--json", "-o", str(data), "-a", "-w", f"{a:#x}", "--",
                   str(fixed_writer), f"{a:#x}", str(ROUND), "0")
    assert r.returncode == 0, r.stderr
    out = one_json(r.stdout)
    [w] = out["watches"]
    # every hit a sample, but those the machine delivered without their status
    assert w["hits"] + w.get("recovered", 0) == ROUND and w["kernel_hits"] == w["hits"]
    assert w["accounted"] and w["lost"] == 0
    [thread] = w["threads"]  # named from the kernel's COMM record of its exec
    assert (thread["comm"], thread["samples"]) == ("fixed_writer", w["hits"])
    assert w["writers"][0]["symbol"] == "main"


def test_slots_plans_cpus_for_a_command():
    r = run_perfbp("slots", "--json", "-a", "-w", "0x601000/16", "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    d = one_json(r.stdout)
    assert (d["fits"], d["slots_needed"]) == (True, 2)
    assert "on each of CPUs" in d["explanation"]


# -- bad input -------------------------------------------------------------------------

def _online_cpus() -> "list[int]":
    """/sys/devices/system/cpu/online, read here rather than by perfbp."""
    with open("/sys/devices/system/cpu/online") as f:
        text = f.read().strip()
    cpus: list = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _free_pid() -> int:
    """An id that is neither a process nor a thread right now."""
    with open("/proc/sys/kernel/pid_max") as f:
        top = int(f.read())
    return next(n for n in range(top - 1, 1, -1) if not os.path.exists(f"/proc/{n}"))


def _offline_cpu() -> int:
    online = _online_cpus()
    return next(c for c in range(7, 1 << 16) if c not in online)


@pytest.fixture(scope="session")
def odd_files(tmp_path_factory):
    cli_build = tmp_path_factory.mktemp("cli")
    plain = cli_build / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    junk = cli_build / "not-a-program"
    junk.write_bytes(b"\x00\x01 not an ELF file, no #! line\n")
    junk.chmod(0o755)
    return {"plain": str(plain), "junk": str(junk), "dir": str(cli_build)}


def _bad_inputs(demo, odd_files):
    a = f"{demo.counter:#x}"
    d = demo.path
    free = _free_pid()
    return {
        # perf's mem: syntax asks for exactly one register: refused, with the fix
        "misaligned": (["-w", f"mem:{demo.counter + 1:#x}/8", "--", d], r"not aligned.*without mem:"),
        "length-3": (["-w", f"mem:{a}/3", "--", d], r"length 3.*without mem:"),
        "read-only": (["-w", f"{a}:r", "--", d], r"no read-only .*use rw"),
        "access-q": (["-w", f"{a}:q", "--", d], r"access 'q'"),
        "modifier-z": (["-w", f"{a}/8:w:z", "--", d], r"modifier 'z'"),
        "symbol-name": (["-w", "countr", "--", d], r"no symbol 'countr'.*closest: counter"),
        "no-such-pid": (["-w", a, "-p", str(free)], rf"process {free} does not exist"),
        "pid-0": (["-w", a, "-p", "0"], r"-p 0 is not a process id"),
        "no-such-tid": (["-w", a, "-t", str(free)], rf"thread {free} does not exist"),
        "no-such-path": (["-w", a, "--", "/nonexistent/prog"], r"does not exist"),
        "not-in-PATH": (["-w", a, "--", "perfbp-no-such-command"], r"not found in \$PATH"),
        "not-executable": (["-w", a, "--", odd_files["plain"]], r"is not executable"),
        "a-directory": (["-w", a, "--", odd_files["dir"]], r"is a directory"),
        "no-target": (["-w", a], r"^perfbp: error: no target"),
        "two-targets": (["-w", a, "-p", str(os.getpid()), "--", d], r"more than one target"),
        "two-targets-a-t": (["-w", a, "-a", "-t", str(os.getpid())], r"more than one target"),
        "two-targets-t-cmd": (["-w", a, "-t", str(os.getpid()), "--", d],
                              r"more than one target \(-t, -- CMD\)"),
        "cpus-and-a-name": (["-w", "counter", "-a", "--", d],
                            r"a name of the command cannot be watched on every CPU"),
        "no-watch": (["--", d], r"no watch given"),
        "five-watches": ([*(x for i in range(5) for x in ("-w", f"{demo.counter + 8 * i:#x}")),
                          "--", d], r"\b4\b.*slots|slots.*\b4\b"),
        "offline-cpu": (["-w", a, "-C", str(_offline_cpu())], r"not online"),
        "cpu-not-a-list": (["-w", a, "-C", "abc"], r"not a CPU list"),
        "interval-1ms": (["-w", a, "-I", "1", "--", d], r"-I 1 is too short"),
        "negative-duration": (["-w", a, "--duration", "-1", "--", d], r"--duration"),
        "zero-duration": (["-w", a, "--duration", "0", "--", d], r"--duration"),
    }


BAD_NAMES = ["misaligned", "length-3", "read-only", "access-q", "modifier-z", "symbol-name",
             "no-such-pid", "pid-0", "no-such-tid", "no-such-path", "not-in-PATH",
             "not-executable", "a-directory", "no-target", "two-targets", "two-targets-a-t",
             "two-targets-t-cmd", "cpus-and-a-name",
             "no-watch", "five-watches", "offline-cpu", "cpu-not-a-list", "interval-1ms",
             "negative-duration", "zero-duration"]


def assert_one_error_line(r: subprocess.CompletedProcess, pattern: str = "") -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert_clean(r.stderr, r.stdout)
    assert r.stdout == ""
    err = lines(r.stderr)
    assert len(err) == 1, r.stderr  # no banner: nothing was armed
    assert err[0].startswith("perfbp: error: "), r.stderr
    if pattern:
        assert re.search(pattern, err[0]), err[0]
    return err[0]


def test_bad_input_gets_one_line_and_status_2(demo, odd_files):
    """Every case in one test, run in parallel (each is a Python start-up)."""
    cases = _bad_inputs(demo, odd_files)
    assert sorted(cases) == sorted(BAD_NAMES)
    running = {name: subprocess.Popen([*PERFBP, "stat", *args], cwd=REPO_ROOT,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
               for name, (args, _) in cases.items()}
    failures = []
    for name, p in running.items():
        out, err = p.communicate(timeout=TIMEOUT)
        r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        try:
            assert_one_error_line(r, cases[name][1])
        except AssertionError as exc:
            failures.append(f"{name}: {exc}\n  stderr: {err!r}")
    assert not failures, "\n".join(failures)


# Errors of the option parser get the same one line as perfbp's own.
@pytest.mark.parametrize("args, pattern", [
    pytest.param(["stat", "-w", "0x4040a0", "-p", "abc"], r"-p", id="pid-not-a-number"),
    pytest.param(["stat", "-w", "0x4040a0", "--bogus", "--", "/bin/true"], r"--bogus",
                 id="unknown-option"),
    pytest.param(["bogus"], r"bogus", id="unknown-command"),
])
def test_usage_errors_get_one_line(args, pattern):
    assert_one_error_line(run_perfbp(*args), pattern)


def test_command_that_cannot_be_executed(demo, odd_files):
    r = run_perfbp("stat", "-w", f"{demo.counter:#x}", "--", odd_files["junk"])
    assert_one_error_line(r, r"Exec format error")


def test_bad_input_never_a_traceback(demo, odd_files):
    """Status 2, an error message, no traceback, no count."""
    for args in (["stat", "-w", "0x4040a0", "-p", "abc"], ["bogus"],
                 ["stat", "-w", f"{demo.counter:#x}", "--", odd_files["junk"]]):
        r = run_perfbp(*args)
        assert r.returncode == 2, r.stderr
        assert_clean(r.stderr, r.stdout)
        assert "rror" in r.stderr and "hits" not in r.stdout


# -- privileges ------------------------------------------------------------------------

def _dists(roots) -> list:
    """The installed distributions ``roots`` need, recursively (no extras)."""
    seen: dict = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            seen[key] = None
            continue
        seen[key] = dist
        for req in dist.requires or []:
            if ";" in req and "extra" in req.split(";", 1)[1]:
                continue
            todo.append(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))
    return [d for d in seen.values() if d is not None]


def _as_nobody(python: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           python, *args], cwd="/", env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


@pytest.fixture(scope="session")
def nobody_perfbp():
    """``argv`` that runs perfbp as uid/gid 65534 with no capabilities, and
    its environment.

    The interpreter and its site-packages may not be readable by nobody (a
    pyenv Python under /root, mode 700): then perfbp and every distribution
    it needs (perfbp's requirements and theirs) are copied to a world-readable
    directory, run by the same interpreter if nobody can, else by the
    system's python of the same version (the C extensions need the ABI).
    """
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run perfbp as another user")
    top = Path(tempfile.mkdtemp(prefix="perfbp-nobody-"))
    try:
        shutil.copytree(REPO_ROOT / "perfbp", top / "perfbp",
                        ignore=shutil.ignore_patterns("__pycache__"))
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(top),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8"}
        probe = ("import sys, perfbp.cli, typer, cffi, _cffi_backend; "
                 "print('%d.%d' % sys.version_info[:2])")
        version = "%d.%d" % sys.version_info[:2]

        def usable(python: str) -> bool:
            r = _as_nobody(python, "-c", probe, env=env)
            return r.returncode == 0 and r.stdout.strip() == version

        def publish() -> None:
            for dirpath, dirnames, filenames in os.walk(top):
                os.chmod(dirpath, 0o755)
                for f in filenames:
                    p = os.path.join(dirpath, f)
                    os.chmod(p, os.stat(p).st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.chmod(top, 0o755)

        publish()
        pythons = [sys.executable]
        if not usable(sys.executable):
            # perfbp's own requirements (typer, cffi, numpy, pyelftools ...)
            needs = [r for r in importlib.metadata.distribution("perfbp").requires or []
                     if not (";" in r and "extra" in r.split(";", 1)[1])]
            for dist in _dists([re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r).group(1)
                                for r in needs]):
                base = Path(dist.locate_file("")).resolve()
                for f in dist.files or []:
                    src = Path(dist.locate_file(f)).resolve()
                    if "__pycache__" in src.parts or not src.is_file():
                        continue
                    try:
                        rel = src.relative_to(base)
                    except ValueError:
                        continue  # a script in bin/, outside site-packages
                    (top / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, top / rel)
            publish()
            pythons = [p for p in (sys.executable, shutil.which(f"python{version}"),
                                   f"/usr/bin/python{version}") if p]
        python = next((p for p in dict.fromkeys(pythons) if usable(p)), None)
        if python is None:  # root with setpriv can always do this: a fault, not a skip
            tried = _as_nobody(pythons[-1], "-c", probe, env=env)
            pytest.fail(f"no python {version} that uid {NOBODY} can run with perfbp's "
                        f"dependencies (tried {', '.join(dict.fromkeys(pythons))}):\n"
                        f"{tried.stderr[-2000:]}")
        yield [python, "-m", "perfbp"], env
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("target", [["--", "/bin/true"], ["-a"]], ids=["command", "all-cpus"])
def test_kernel_address_unprivileged(nobody_perfbp, target):
    argv, env = nobody_perfbp
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        *argv, "stat", "-w", "0xffffffff81000000:k", *target],
                       cwd="/", env=env, capture_output=True, text=True, timeout=TIMEOUT)
    line = assert_one_error_line(r)
    assert "perf_event_paranoid" in line or "CAP_" in line, line


def test_user_address_unprivileged_works(nobody_perfbp):
    """The same setting is not vacuous: nobody may watch its own command."""
    argv, env = nobody_perfbp
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        *argv, "stat", "--json", "-w", "0x400000", "--", "/bin/true"],
                       cwd="/", env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert one_json(r.stdout)["exit_code"] == 0


def test_a_condition_unprivileged_says_what_is_missing(nobody_perfbp):
    """nobody may watch its own command, but not load the BPF program of a
    condition: one line naming the capabilities, exit 2."""
    argv, env = nobody_perfbp
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        *argv, "stat", "-w", "0x400000", "--if", "new == 0", "--", "/bin/true"],
                       cwd="/", env=env, capture_output=True, text=True, timeout=TIMEOUT)
    line = assert_one_error_line(r)
    assert "(EPERM)" in line and "lacks CAP_BPF and CAP_PERFMON" in line, line
    assert "or watch without a condition" in line


# -- check -----------------------------------------------------------------------------

def test_check():
    r = run_perfbp("check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_clean(r.stderr, r.stdout)
    assert lines(r.stdout)[-1] == "hardware watchpoints work here"
    assert re.search(r"^ok\s+fires\s+.*10007 of 10007", r.stdout, re.M), r.stdout


def test_check_json():
    # the slot probe finds fewer than 4 while another program on this machine
    # holds CPU-wide breakpoints: wait for them to be released
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        r = run_perfbp("check", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        if out["checks"]["slots"]["value"]["task_slots"] == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(lines(r.stdout)) == 1
    assert out["works"] is True
    assert out["checks"]["fires"]["value"] == 10007
    assert out["checks"]["fires"]["ok"] is True
    slots = out["checks"]["slots"]["value"]
    assert slots["task_slots"] == 4
    assert slots["shared_data_execute"] is True


# -- help ------------------------------------------------------------------------------

HELPS = [["--help"], ["stat", "--help"], ["check", "--help"], ["record", "--help"],
         ["report", "--help"], ["slots", "--help"], ["top", "--help"]]


def _help(args: "list[str]") -> str:
    r = run_perfbp(*args, env=dict(os.environ, COLUMNS="80"))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


@pytest.mark.parametrize("args", HELPS, ids=" ".join)
def test_help_ends_with_examples(args):
    text = _help(args).rstrip("\n").splitlines()
    heads = [i for i, line in enumerate(text) if line.strip() == "Examples:"]
    assert len(heads) == 1, text
    examples = text[heads[0] + 1:]
    assert examples, text
    for line in examples:  # every line to the end: a command, then a comment
        assert re.match(r"^\s+perfbp \S.*\S\s+# \S", line), line
    command = args[0] if args[0] != "--help" else None
    usage = [line for line in examples
             if line.split()[1] == command or (command is None and line.split()[1] in ("stat", "check"))]
    assert usage


@pytest.mark.parametrize("args", HELPS, ids=" ".join)
def test_help_fits_80_columns(args):
    """Output fits 80 columns (a terminal's width, as bcc's tools keep to)."""
    wide = [line for line in _help(args).splitlines() if len(line) > 80]
    assert not wide, wide


@pytest.mark.parametrize("command", ["stat", "record", "top", "slots"])
def test_help_shows_the_whole_watch_spec_grammar(command):
    """Every command that takes -w explains each part of a SPEC, with an
    example of each that perfbp parses; members and elements included."""
    from perfbp import _plumbing

    text = _help([command, "--help"])
    assert "(each part under 'Watch SPEC' below)" in " ".join(text.split())
    block = text.split("\n  Watch SPEC: ", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block[0] == "[mem:]ADDR|SYMBOL[@OBJECT][+OFF][/LEN][:ACCESS][:u|k]"
    parts = [line.split()[0] for line in block[1:] if re.match(r"^ {4}(?: {2})?\S", line)]
    assert parts == ["ADDR", "SYMBOL", ".MEMBER", "[N]", "@OBJECT", "+OFF", "/LEN",
                     ":ACCESS", ":u", "mem:", "Quote"]
    # the examples: the last column (after two spaces), on the lines that have one
    found = [re.search(r"\s{2}([^ ]+(?:, [^ ]+)*)$", line) for line in block[1:-1]]
    specs = [e for m in found if m for e in m.group(1).split(", ")]
    assert specs == ["0x4040a0", "counter", "config.flags", "table[3]", "grid[1][2].next",
                     "environ@libc.so.6", "vfs_read@kernel:x", "counter+4", "buf/64",
                     "counter:rw", "0x4040a0:w:k", "mem:0x4040a0/8:w"], block
    for spec in specs:
        _plumbing.parse_watch(spec)  # raises on a SPEC perfbp would refuse


# -- the banner: the slots the watches really take, per thread or per CPU --------------

def test_banner_counts_the_slots_of_a_struct_watched_by_name(demo):
    """``config`` is a 16-byte struct (2 registers) whose size is known only
    once its name is resolved; with ``table[1]`` the run takes 3 slots.  (Not
    ``counter``: its 100,042 hits are more than this test needs.)"""
    r = run_perfbp("stat", "--json", "-w", "config", "-w", "table[1]", "--", demo.path)
    assert r.returncode == 0, r.stderr
    err = lines(r.stderr)
    assert len(err) == 1, r.stderr
    assert err[0].startswith("perfbp: watching 2 locations (config, table[1]) "), err[0]
    assert "; 3 debug-register slots per thread. Ctrl-C to end." in err[0], err[0]
    res = one_json(r.stdout)
    # main sets config.flags once; worker 1 sets table[1] once
    assert [w["hits"] for w in res["watches"]] == [1, 1]


def test_banner_says_per_cpu_for_cpus_and_per_thread_for_a_process(run):
    """A CPU-wide watch takes its slots on every CPU (and counts against every
    thread there: toggle_bp_slot), so the -p watch comes after the -a and -C
    ones end."""
    lp = run.loop(cpu=0)
    lp.write(BEFORE)
    rng = f"{lp.address:#x}/16"  # counter and the 8 bytes after it: 2 registers
    on_cpus, cpus_banner = run.perfbp("stat", "--json", "-w", rng, "-a")
    on_cpu0, cpu0_banner = run.perfbp("stat", "--json", "-w", f"{lp.address:#x}", "-C", "0")
    assert "; 2 debug-register slots per CPU. Ctrl-C to end." in cpus_banner, cpus_banner
    assert "; 1 debug-register slot per CPU. Ctrl-C to end." in cpu0_banner, cpu0_banner
    lp.write(1009)
    hits = []
    for pb in (on_cpus, on_cpu0):
        rc, out, err = pb.finish(signal.SIGINT)
        assert rc == 0, err
        hits.append(one_json(out)["watches"][0]["hits"])
    on_pid, pid_banner = run.perfbp("stat", "--json", "-w", rng, "-p", str(lp.pid))
    assert "; 2 debug-register slots per thread. Ctrl-C to end." in pid_banner, pid_banner
    lp.write(1013)
    rc, out, err = on_pid.finish(signal.SIGINT)
    assert rc == 0, err
    hits.append(one_json(out)["watches"][0]["hits"])
    assert hits == [1009, 1009, 1013]


def test_named_watch_on_another_users_process_says_whose_it_is(nobody_perfbp, run):
    """The process exists: the refusal is permission, and says whose it is."""
    argv, env = nobody_perfbp
    loop = run.loop()
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        *argv, "stat", "-w", "counter", "-p", str(loop.pid)],
                       cwd="/", env=env, capture_output=True, text=True, timeout=TIMEOUT)
    line = assert_one_error_line(r)
    assert f"process {loop.pid} (cli_loop) belongs to root (uid 0)" in line, line
    assert "does not exist" not in line


@pytest.mark.parametrize("spec", ["0x400000:k", "0x400000:w:k"])
def test_kernel_mode_on_own_command_names_perf_event_paranoid(nobody_perfbp, spec):
    """:k on one's own program is refused by perf_event_paranoid (2 here),
    not for want of rights over the process."""
    argv, env = nobody_perfbp
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        *argv, "stat", "-w", spec, "--", "/bin/true"],
                       cwd="/", env=env, capture_output=True, text=True, timeout=TIMEOUT)
    line = assert_one_error_line(r)
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        paranoid = int(f.read())
    assert f"perf_event_paranoid is {paranoid} here. Drop :k" in line, line
    assert "another user" not in line and "belongs to" not in line
