"""``-p PID``: perfbp and perf attached together to a running, multi-threaded
CPython process.

attach_writer.py starts its threads, prints the address of a cell and waits.
perf (``perf stat -p``) and perfbp (``perfbp stat -p``) attach to every
thread of it at the same time; once both hold an open event on every thread
(their perf_event file descriptors, counted in /proc), the test lets the
threads go: each writes the cell WRITES times and the process exits, which
ends both tools.  Both watched the whole window, so both must count every
write: THREADS * WRITES, the same number.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .tools import Trapped, check_run, need, perf_event, retry

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

THREADS, WRITES = 3, 101  # primes
SCRIPT = Path(__file__).with_name("attach_writer.py")
WAIT = 30


def _perf_fds(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += "perf_event" in os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return n


def _python() -> str:
    for path in ("/usr/bin/python3.11", "/usr/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    pytest.skip("python3.11 is not installed here (.ci/run installs it)")


def _finish(proc: subprocess.Popen, what: str) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # both tools print their counts on SIGINT
        out, err = proc.communicate(timeout=WAIT)
        pytest.fail(f"{what} did not end with its target:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def attach_both(python: str, tmp_path: Path) -> tuple[int, int]:
    target = subprocess.Popen([python, "-I", "-S", str(SCRIPT), str(THREADS), str(WRITES)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tools: list[subprocess.Popen] = []
    try:
        address = int(target.stdout.readline())
        nthreads = len(os.listdir(f"/proc/{target.pid}/task"))
        assert nthreads == THREADS + 1
        event = perf_event(address, 8)
        perf_out, perfbp_out = tmp_path / "perf-stat.csv", tmp_path / "perfbp-stat.json"
        for path in (perf_out, perfbp_out):
            path.unlink(missing_ok=True)
        tools.append(subprocess.Popen(
            ["perf", "stat", "-x,", "-o", str(perf_out), "-e", event, "-p", str(target.pid)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        tools.append(subprocess.Popen(
            [sys.executable, "-m", "perfbp", "stat", "--json", "-o", str(perfbp_out),
             "-w", f"mem:{address:#x}/8:w", "-p", str(target.pid)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + WAIT
        while not all(_perf_fds(t.pid) >= nthreads for t in tools):
            for t, what in zip(tools, ("perf stat", "perfbp stat")):
                if t.poll() is not None:  # it gave up before arming: say why
                    done = _finish(t, what)
                    check_run(done, what)  # slots held by others: retried
                    pytest.fail(f"{what} ended before the writes ({done.returncode}):\n"
                                f"{done.stderr}")
            assert time.monotonic() < deadline, "perf and perfbp did not both attach"
            time.sleep(0.05)
        time.sleep(0.3)  # both enable their events right after opening them

        target.stdin.write("go\n")
        target.stdin.flush()
        status = target.wait(timeout=WAIT)
        perf, perfbp = (_finish(t, w) for t, w in zip(tools, ("perf stat", "perfbp stat")))
        if status == -signal.SIGTRAP:
            raise Trapped("the python process died of SIGTRAP")
        assert status == 0, f"the python process ended with {status}"
        assert perf.returncode == 0, perf.stderr
        assert perfbp.returncode == 0, perfbp.stderr
        rows = [ln.split(",") for ln in perf_out.read_text().splitlines()
                if ln and not ln.startswith("#")]
        (watch,) = json.loads(perfbp_out.read_text())["watches"]
        return watch["hits"], int(rows[0][0])
    finally:
        for proc in (target, *tools):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_attach_to_running_threads_counts_what_perf_counts(tmp_path):
    """Both attached to the same 4-thread process for the same window:
    perfbp's hits equal perf's count, and both are every write."""
    need("perf")
    python = _python()
    hits, perf = retry(lambda: attach_both(python, tmp_path))
    assert hits == perf == THREADS * WRITES, f"perfbp {hits} vs perf {perf}"
