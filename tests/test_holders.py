"""Who holds the debug-register slots when perfbp's own watches do not:
a real gdb and a real perf, on the real kernel (perfbp.kernel.holders).

The target is ``tests/workloads/cli_loop.c``, which prints the address of
its ``counter`` and then waits on stdin: nothing in it writes ``counter`` or
the 24 bytes after it (``lost`` is written only in its SIGTRAP handler), so
the watchpoints set there never fire.

* gdb attached with ``watch *(long*)ADDR`` and ``continue`` holds one slot
  per watchpoint in the thread (the kernel makes each a breakpoint of the
  traced thread, with no descriptor): the thread has exactly 4 - N free,
  and a refusal names gdb, its pid, and the process it traces.
* gdb that deleted its watchpoints and detached leaves them held: the
  kernel frees a tracer's breakpoints only when the thread execs or exits.
  /proc shows no holder then; the message says what may be the cause.
* ``perf record -e mem:...`` on the process holds one slot per event on
  each CPU; a refusal names perf with its breakpoints and target.

The free slots are measured with ``perfbp slots --probe -p PID``.  Other
programs on this machine (other test runs) may hold slots for a moment: the
measurements wait for the exact value, SLOT_WAIT seconds at most.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import perfbp
from perfbp.kernel import holders, system

REPO = Path(__file__).resolve().parent.parent
PERFBP = [sys.executable, "-m", "perfbp"]
SLOTS = 4
SLOT_WAIT = 15
TIMEOUT = 30


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not on PATH: install it (.ci/run does: gdb, linux-perf)"
    return path


def perfbp_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PERFBP, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def loop_exe(build) -> Path:
    return build("cli_loop.c", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-fPIE", "-pie")


class Started:
    """Processes a test starts, ended (by pid) when it is over."""

    def __init__(self) -> None:
        self.procs: "list[subprocess.Popen]" = []

    def __call__(self, argv: "list[str]", **kw) -> subprocess.Popen:
        self.procs.append(subprocess.Popen(argv, **kw))
        return self.procs[-1]

    def end(self) -> None:
        for p in reversed(self.procs):  # the tracers before their target
            if p.poll() is None:
                p.kill()
            p.wait(TIMEOUT)
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()


@pytest.fixture
def started():
    s = Started()
    yield s
    s.end()


@pytest.fixture
def target(loop_exe, started):
    """cli_loop, waiting: ``(pid, address of counter)``."""
    proc = started([str(loop_exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    address, _tid = proc.stdout.readline().split()
    return proc.pid, int(address, 16)


def gdb_watching(started, pid: int, addresses: "list[int]", *after: str) -> subprocess.Popen:
    """gdb attached to ``pid`` with a hardware watchpoint on each address,
    the program let run (``continue``); then, once gdb is interrupted
    (SIGINT), the commands ``after``."""
    args = [tool("gdb"), "-q", "-nx", "-batch", "-p", str(pid)]
    for a in addresses:
        args += ["-ex", f"watch *(long *){a:#x}"]
    args += ["-ex", "continue"]
    for cmd in after:
        args += ["-ex", cmd]
    return started(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True)


def probe(pid: int, free: int) -> dict:
    """``perfbp slots --probe --json -p PID`` once its thread has ``free``
    slots (or SLOT_WAIT seconds have passed: what it says then)."""
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        r = perfbp_cli("slots", "--probe", "--json", "-p", str(pid))
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        if [t["free"] for t in doc["threads"]] == [free] or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)


def refused(*args: str) -> str:
    """The one error line of a perfbp run the kernel refused (ENOSPC)."""
    r = perfbp_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith("perfbp: error: ") and "(ENOSPC)" in line, line
    assert "perfbp's own watches are not what holds them" in line, line
    return line


def perf_event_fds(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}") == holders.PERF_EVENT_LINK
               for fd in os.listdir(f"/proc/{pid}/fd"))


# -- gdb -------------------------------------------------------------------------------

@pytest.mark.kernel
def test_gdb_watchpoints_take_the_threads_slots_and_are_named(target, started):
    pid, a = target
    gdb = gdb_watching(started, pid, [a, a + 8])
    doc = probe(pid, SLOTS - 2)
    assert doc["target"] == f"process {pid} (cli_loop)" and doc["capacity"] == SLOTS
    [thread] = doc["threads"]
    assert thread == {"tid": pid, "comm": "cli_loop", "free": 2,
                      "per_cpu": {str(c): 2 for c in system.online_cpus()}}
    ours = [h for h in doc["holders"] if h["pid"] == gdb.pid]
    assert ours == [{"pid": gdb.pid, "name": "gdb", "traces": [pid], "perf_events": 0,
                     "breakpoints": [], "on": "", "known": True}]
    assert doc["held_by"].startswith(f"held by gdb (pid {gdb.pid}, tracing process {pid})")

    # 3 slots for 2 free: the kernel refuses the third, and gdb is named
    line = refused("stat", "-w", f"{a:#x}/24", "-p", str(pid), "-d", "0.2")
    assert f"they are held by gdb (pid {gdb.pid}, tracing process {pid})" in line, line


@pytest.mark.kernel
def test_slots_probe_text_names_gdb(target, started):
    pid, a = target
    gdb = gdb_watching(started, pid, [a])
    probe(pid, SLOTS - 1)
    r = perfbp_cli("slots", "--probe", "-p", str(pid))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    cpus = ", ".join(f"CPU {c}: 3" for c in system.online_cpus())
    assert out[:2] == [f"free debug-register slots in process {pid} (cli_loop) (of 4 per "
                       f"thread):", f"  thread {pid} (cli_loop): 3 on every CPU ({cpus})"]
    assert " ".join(out[2:]).startswith(
        f"the others are held by gdb (pid {gdb.pid}, tracing process {pid})"), r.stdout


@pytest.mark.kernel
def test_a_cpu_wide_watch_refused_for_gdbs_thread_names_gdb(target, started):
    """A CPU watch counts against every thread's slots on that CPU
    (max_bp_pinned_slots): gdb's 3 in one thread leave 1 for -a; -a asks
    for 2, is refused, and opens nothing."""
    pid, a = target
    gdb = gdb_watching(started, pid, [a, a + 8, a + 16])
    probe(pid, SLOTS - 3)
    assert holders.Holder(gdb.pid, "gdb", (pid,)) in holders.find(-1)
    line = refused("stat", "-a", "-w", f"{a:#x}/16", "-d", "0.2")
    assert f"gdb (pid {gdb.pid}, tracing process {pid})" in line, line


@pytest.mark.kernel
def test_a_detached_gdb_leaves_its_slots_held(target, started):
    """gdb deletes its watchpoints and detaches: the thread's 3 slots stay
    held (ptrace breakpoints are freed at exec or exit only), no tracer is
    left to name, and the message says what /proc cannot show."""
    pid, a = target
    gdb = gdb_watching(started, pid, [a, a + 8, a + 16], "delete", "detach")
    probe(pid, SLOTS - 3)
    gdb.send_signal(signal.SIGINT)  # back at gdb's prompt: delete, detach, exit
    out, _ = gdb.communicate(timeout=TIMEOUT)
    assert f"[Inferior 1 (process {pid}) detached]" in out, out
    doc = probe(pid, SLOTS - 3)
    assert doc["threads"][0]["free"] == 1
    assert not any(pid in h["traces"] for h in doc["holders"]), doc["holders"]
    assert doc["held_by"].startswith("held outside perfbp, by nothing /proc names for sure: "
                                     "perhaps a debugger that has detached"), doc["held_by"]


# -- perf ------------------------------------------------------------------------------

@pytest.mark.kernel
def test_perf_record_mem_events_are_named(target, started, tmp_path):
    pid, a = target
    events = [f"mem:{a + 8 * k:#x}/8:w" for k in range(3)]
    perf = started([tool("perf"), "record", "-q", "-o", str(tmp_path / "perf.data"),
                    *(x for e in events for x in ("-e", e)), "-p", str(pid)],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    doc = probe(pid, SLOTS - 3)
    assert doc["threads"][0]["free"] == 1
    n = perf_event_fds(perf.pid)
    ours = [h for h in doc["holders"] if h["pid"] == perf.pid]
    assert ours == [{"pid": perf.pid, "name": "perf", "traces": [], "perf_events": n,
                     "breakpoints": events, "on": f"process {pid}", "known": True}]
    line = refused("stat", "-w", f"{a:#x}/16", "-p", str(pid), "-d", "0.2")
    assert (f"perf (pid {perf.pid}, {n} perf events: {events[0]} and 2 more on process "
            f"{pid})") in line, line
    perf.send_signal(signal.SIGINT)  # perf ends by raising it again, as perf stat does
    assert perf.wait(TIMEOUT) == -signal.SIGINT, perf.stderr.read()


# -- what a command line says (no kernel needed) ----------------------------------------

@pytest.mark.parametrize("argv, watched, family, expected", [
    (["perf", "record", "-q", "-e", "mem:0x10/8:w,mem:0x18/4:rw", "-p", "12,13", "-o", "x"],
     {12}, set(), ("perf", ("mem:0x10/8:w", "mem:0x18/4:rw"), "process 12,13")),
    (["perf", "record", "-e", "mem:0x10/8:w", "-p", "99"], {12}, set(), None),  # elsewhere
    (["perf", "stat", "-e", "cycles", "-a"], {12}, set(), None),  # no breakpoint
    (["/usr/bin/perf", "record", "-emem:0x10/8:w", "-a"], {12}, set(),
     ("perf", ("mem:0x10/8:w",), "every CPU")),
    (["perf", "stat", "-e", "mem:0x10/8", "-C", "0", "sleep", "1"], {12}, set(),
     ("perf", ("mem:0x10/8",), "CPU 0")),
    (["perf", "stat", "-e", "mem:0x10/8", "--", "./prog"], {12}, {12, 5, 1},
     ("perf", ("mem:0x10/8",), "the command it runs")),
    (["perf", "stat", "-e", "mem:0x10/8", "./prog"], {12}, {12, 1}, None),  # not its child
    (["perf", "record", "--event=breakpoint/bp_addr=0x10,bp_len=8/", "--tid=12"], {12}, set(),
     ("perf", ("breakpoint/bp_addr=0x10,bp_len=8/",), "thread 12")),
    (["/usr/bin/python3", "-m", "perfbp", "stat", "-w", "counter", "-t", "12"], {12}, set(),
     ("perfbp", ("counter",), "thread 12")),
    (["perf", "record", "-e", "mem:0x10/8", "-p", "99"], None, set(),  # a CPU: anywhere
     ("perf", ("mem:0x10/8",), "process 99")),
    (["gdb", "-p", "12"], {12}, set(), None),
    # another process's command line is any text: "²" and "٣" are digits to
    # str.isdigit, not ids
    (["perf", "record", "-e", "mem:0x10/8:w", "-p", "\u00b2,12,\u0663"], {12}, set(),
     ("perf", ("mem:0x10/8:w",), "process 12")),
], ids=["perf-p", "perf-elsewhere", "perf-cycles", "perf-a", "perf-C", "perf-child",
        "perf-not-child", "perf-breakpoint-pmu", "perfbp-t", "perf-p-for-a-cpu", "not-perf",
        "perf-p-unicode-digits"])
def test_what_a_command_line_says(argv, watched, family, expected):
    got = holders.claim(argv, 5, watched, family)
    assert (got if got is None else (got.name, got.breakpoints, got.on)) == expected


def test_summary_names_the_sure_then_the_possible():
    gdb = holders.Holder(5678, "gdb", traces=(os.getpid(),))
    perf = holders.Holder(99, "perf", events=2, breakpoints=("mem:0x10/8:w",), on="every CPU")
    other = holders.Holder(77, "python3", events=3, known=False)
    assert holders.summary([gdb, perf, other]) == (
        f"held by gdb (pid 5678, tracing process {os.getpid()}) and perf (pid 99, 2 perf "
        f"events: mem:0x10/8:w on every CPU); perhaps also by python3 (pid 77, 3 perf "
        f"events of a kind /proc does not show)")


def test_probe_of_cpus_is_refused():
    with pytest.raises(perfbp.PerfbpError, match="probe a thread or a process"):
        perfbp.probe(target=perfbp.Target.cpus([0]))


def test_a_thread_named_with_any_bytes_is_still_read():
    """prctl(PR_SET_NAME) takes any bytes and /proc shows them raw: the
    thread's process, name and the holders' scan still work."""
    import ctypes
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    named, done = threading.Event(), threading.Event()
    tid = []

    def oddly_named():
        libc.prctl(15, b"\xff\xfebad\x80", 0, 0, 0)  # PR_SET_NAME
        tid.append(threading.get_native_id())
        named.set()
        done.wait(10)

    t = threading.Thread(target=oddly_named)
    t.start()
    try:
        assert named.wait(10)
        assert system.thread_group(tid[0]) == os.getpid()
        assert system.comm(tid[0]) == "\ufffd\ufffdbad\ufffd"
        assert system.status_field(tid[0], "PPid") == os.getppid()
        holders.find(tid[0])  # reads every process's /proc: no exception
    finally:
        done.set()
        t.join()

