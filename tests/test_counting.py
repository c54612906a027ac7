"""Counting against the real kernel: exact hit counts on known workloads.

Every workload makes a prime number of accesses (tests/workloads/*.c, checked
with objdump: one load or store per iteration, volatile), and every count is
compared with ``==``.  Watches on user-space addresses exclude kernel mode, so
nothing but the workload's own instructions can hit: a count that is off by
one is a bug, in perfbp or in the test, never noise.

The areas: access types and widths; range edges; the four kinds of target
(a thread, a process with its threads and children, inherit, CPUs); moving a
watch in place (after perf's tools/perf/tests/wp.c); slots and file
descriptors being released; and the errno of every error class, raised for
real where the kernel can be made to refuse.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import pickle
import subprocess
import threading
import time

import pytest

import perfbp
from perfbp import Breakpoint, Counter
from perfbp.kernel import abi, system

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

# Prime numbers of accesses.  One hit costs ~9 us, so these keep the file fast.
P1009, P2003, P3001, P4001, P5003, P6007, P7919, P10007 = (
    1009, 2003, 3001, 4001, 5003, 6007, 7919, 10007)

CPUS = system.online_cpus()


def primes(first: int, count: int) -> list[int]:
    """The ``count`` primes from ``first`` on (distinct counts for many CPUs)."""
    out: list[int] = []
    n = first
    while len(out) < count:
        if n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1)):
            out.append(n)
        n += 1
    return out


def open_fds() -> set[int]:
    """This process's open descriptors, without the one the listing used.

    Garbage is collected first, so that a file some earlier test dropped
    (a failed test's pipes, kept alive by its traceback) cannot close
    in the middle of a comparison.
    """
    gc.collect()
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:  # the directory's own fd, closed by now
            continue
        out.add(int(name))
    return out


def other_cpu(cpu: int) -> int:
    return CPUS[(CPUS.index(cpu) + 1) % len(CPUS)]


@pytest.fixture
def syscall_spy(monkeypatch):
    """Record every perf syscall perfbp makes (the real calls still happen)."""
    calls: list[str] = []
    for name in ("perf_event_open", "modify_attributes", "enable", "disable", "reset"):
        real = getattr(abi, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(abi, name, spy)
    return calls


# -- access types and widths ----------------------------------------------------------


@pytest.mark.parametrize("length, writer", [(1, "write_u8"), (2, "write_u16"),
                                            (4, "write_u32"), (8, "write_u64")])
def test_write_watch_counts_every_store(libwork, length, writer):
    addr = libwork.scratch
    with Counter(Breakpoint.write(addr, length)) as c:
        assert c.read() == 0
        getattr(libwork, writer)(addr, P10007)
        assert c.read() == P10007
        # loads do not trigger a write watch
        libwork.read_u64(addr, P1009)
        assert c.read() == P10007


def test_read_write_watch_counts_loads_and_stores(libwork):
    addr = libwork.scratch
    with Counter(Breakpoint.read_write(addr, 8)) as rw, \
            Counter(Breakpoint.write(addr, 8)) as w:
        libwork.read_u64(addr, P1009)
        assert (rw.read(), w.read()) == (P1009, 0)
        libwork.write_u64(addr, P2003)
        assert (rw.read(), w.read()) == (P1009 + P2003, P2003)


def test_execute_breakpoint_counts_calls(libwork):
    with Counter(Breakpoint.execute(libwork.work_fn_addr)) as c:
        libwork.call_work_fn(P7919)
        assert c.read() == P7919
        libwork.work_fn()  # one more, called from Python through ctypes
        assert c.read() == P7919 + 1


def test_kernel_mode_stores_not_counted_by_default(libwork):
    """read(2) from /dev/zero into the watched bytes: the kernel stores there
    in kernel mode, which a user-space watch excludes unless asked not to."""
    addr = libwork.scratch
    with Counter(Breakpoint.write(addr, 8)) as c:
        assert libwork.kernel_write_u64(addr, P2003) == P2003
        assert c.read() == 0
        libwork.write_u64(addr, P1009)
        assert c.read() == P1009
    # exclude_kernel=False: each read(2) clears the 8 bytes once, so byte 0
    # takes exactly one kernel store per call (the 8-byte watch would see as
    # many as the kernel's clear_user makes: 8 with `rep stosb`)
    with Counter(Breakpoint.write(addr, 1), exclude_kernel=False) as c:
        assert libwork.kernel_write_u64(addr, P2003) == P2003
        assert c.read() == P2003


# -- the edges of the watched range -----------------------------------------------------


def test_write_next_to_8_byte_watch_not_counted(libwork):
    addr = libwork.scratch
    with Counter(Breakpoint.write(addr, 8)) as c:
        libwork.write_u64(addr + 8, P4001)   # the next 8 bytes
        assert c.read() == 0
        libwork.write_u8(addr + 7, P1009)    # the last byte watched
        assert c.read() == P1009


def test_write_next_to_1_byte_watch_not_counted(libwork):
    addr = libwork.scratch
    with Counter(Breakpoint.write(addr + 1, 1)) as c:
        libwork.write_u8(addr, P3001)        # byte 0, just before
        libwork.write_u8(addr + 2, P2003)    # byte 2, just after
        assert c.read() == 0
        libwork.write_u8(addr + 1, P1009)
        assert c.read() == P1009
        libwork.write_u16(addr, P2003)       # a 2-byte store covering byte 1
        assert c.read() == P1009 + P2003


# -- targets --------------------------------------------------------------------------


@pytest.mark.parametrize("cpu", CPUS)
def test_thread_target_on_each_cpu(libwork, pinned_thread, cpu):
    addr = libwork.scratch
    bp = Breakpoint.write(addr, 8)
    t = pinned_thread(cpu, libwork.write_u64, addr, P5003)
    tid = t.start()
    assert tid != threading.get_native_id()
    with Counter(bp, pid=tid) as anywhere, \
            Counter(bp, pid=tid, cpu=cpu) as here, \
            Counter(bp, pid=tid, cpu=other_cpu(cpu)) as elsewhere:
        assert anywhere.target == perfbp.Target.thread(tid)
        libwork.write_u64(addr, P2003)       # the main thread: not the target
        assert (anywhere.read(), here.read(), elsewhere.read()) == (0, 0, 0)
        t.finish()
        assert t.ran_on == cpu
        assert (anywhere.read(), here.read(), elsewhere.read()) == (P5003, P5003, 0)
        libwork.write_u64(addr, P1009)       # the main thread again
        assert anywhere.read() == P5003


def test_process_target_threads_before_and_after_attach_and_child(threads_prog):
    n = P7919
    with subprocess.Popen([str(threads_prog), str(n)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            _watch_threads_prog(proc, n)
        finally:
            if proc.poll() is None:
                proc.kill()


def _watch_threads_prog(proc: subprocess.Popen, n: int) -> None:
    """Attach to threads.c after its thread A started; let it run; count."""
    addr = int(proc.stdout.readline(), 16)
    assert proc.stdout.readline() == "ready\n"
    tids = system.thread_ids(proc.pid)
    assert len(tids) == 2 and proc.pid in tids      # main and thread A
    (tid_a,) = set(tids) - {proc.pid}
    with Counter(Breakpoint.write(addr, 8), pid=proc.pid, process=True) as c:
        assert sorted(c.read_per_task()) == sorted(tids)
        assert len(c.fds) == 2
        assert c.read() == 0
        proc.stdin.write("go\n")
        proc.stdin.flush()
        word, lost_others, lost_a = proc.stdout.readline().split()
        assert word == "done"
        # (stores the machine delivered without their status, which no
        # watch counts, were counted by the program: see threads.c)
        lost_others, lost_a = int(lost_others), int(lost_a)
        # alive, with A, B and the child gone: their hits are all in
        assert c.read() == 4 * n - lost_others - lost_a
        # B and the child were inherited from main, so fold into main
        assert c.read_per_task() == {proc.pid: 3 * n - lost_others, tid_a: n - lost_a}
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
        assert c.read() == 4 * n - lost_others - lost_a


@pytest.mark.parametrize("inherit", [True, False])
def test_inherit_follows_forked_child(libwork, inherit):
    addr = libwork.scratch
    with Counter(Breakpoint.write(addr, 8), pid=0, inherit=inherit) as c:
        libwork.write_u64(addr, P1009)                  # the parent itself
        assert libwork.fork_and_write(addr, P4001) == 0  # exit status 0
        assert c.read() == P1009 + (P4001 if inherit else 0)


@pytest.mark.parametrize("cpu", CPUS)
def test_cpu_wide_counts_only_that_cpu(libwork, pinned_thread, cpu, machine_lost):
    addr = libwork.scratch
    bp = Breakpoint.write(addr, 8)
    t = pinned_thread(cpu, libwork.write_u64, addr, P6007)
    t.start()
    with Counter(bp, pid=-1, cpu=cpu) as here, \
            Counter(bp, pid=-1, cpu=other_cpu(cpu)) as there:
        assert here.target == perfbp.Target.cpus([cpu])
        t.finish()
        assert t.ran_on == cpu
        # every write is a hit on this CPU or one the machine lost (conftest)
        assert (here.read() + machine_lost(), there.read()) == (P6007, 0)
        assert here.read_per_cpu() == {cpu: here.read()}


def test_all_cpus_counts_per_cpu(libwork, pinned_thread):
    addr = libwork.scratch
    counts = dict(zip(CPUS, primes(P2003, len(CPUS))))     # 2003, 2011, ...
    assert len(CPUS) >= 2
    with Counter(Breakpoint.write(addr, 8), pid=-1, cpu=-1) as c:
        assert c.target.cpus == tuple(CPUS)
        assert len(c.fds) == len(CPUS)
        for cpu, n in counts.items():
            t = pinned_thread(cpu, libwork.write_u64, addr, n)
            t.start()
            t.finish()
            assert t.ran_on == cpu
        assert c.read_per_cpu() == counts
        assert c.read() == sum(counts.values())


# -- moving a watch in place ---------------------------------------------------------


def test_move_like_perf_wp_modify(libwork):
    """tools/perf/tests/wp.c's test__wp_modify, with prime counts."""
    data1 = libwork.scratch          # u64 data1
    data2 = libwork.scratch + 64     # u8 data2[3]
    with Counter(Breakpoint.write(data1, 8)) as c:
        libwork.write_u64(data1, P1009)
        assert c.read() == P1009
        c.disable()
        c.move(data2, 2)             # wp.c: modify with disabled = 1
        assert c.breakpoint == Breakpoint.write(data2, 2)
        assert c.enabled is False
        libwork.write_u8(data2 + 1, P2003)   # not counted: disabled
        assert c.read() == P1009
        c.enable()
        libwork.write_u8(data2 + 1, P3001)   # counted: inside the new range
        assert c.read() == P1009 + P3001
        libwork.write_u8(data2 + 2, P4001)   # not counted: outside it
        libwork.write_u64(data1, P5003)      # not counted: the old range
        assert c.read() == P1009 + P3001


def test_move_while_enabled_keeps_counting(libwork):
    a = libwork.scratch
    b = libwork.scratch + 8
    with Counter(Breakpoint.write(a, 8)) as c:
        libwork.write_u64(a, P1009)
        c.move(b)
        assert c.enabled is True
        assert c.breakpoint == Breakpoint.write(b, 8)
        assert c.read() == P1009                # the count is kept
        libwork.write_u64(b, P2003)
        libwork.write_u64(a, P3001)             # the old range: not counted
        assert c.read() == P1009 + P2003
        c.move(a, 4)                            # and back, shorter
        libwork.write_u32(a, P4001)
        libwork.write_u32(a + 4, P5003)         # outside the 4 bytes
        assert c.read() == P1009 + P2003 + P4001


def test_move_misaligned_raises_before_syscall(libwork, syscall_spy):
    a = libwork.scratch
    with Counter(Breakpoint.write(a, 8)) as c:
        assert syscall_spy == ["perf_event_open"]
        with pytest.raises(perfbp.InvalidBreakpoint) as info:
            c.move(a + 4, 8)
        assert info.value.errno == errno.EINVAL == 22
        assert syscall_spy == ["perf_event_open"]   # no ioctl was made
        assert c.breakpoint == Breakpoint.write(a, 8)
        libwork.write_u64(a, P1009)                 # still watching a
        assert c.read() == P1009


# -- slots and file descriptors are released ---------------------------------------


def test_close_releases_slot(libwork, machine_lost):
    a = libwork.scratch
    held = [Counter(Breakpoint.write(a + 8 * i, 8)) for i in range(4)]
    try:
        before = open_fds()
        with pytest.raises(perfbp.NoBreakpointSlots) as info:
            Counter(Breakpoint.write(a + 32, 8))
        assert info.value.errno == errno.ENOSPC == 28
        assert isinstance(info.value, OSError)
        assert open_fds() == before                 # the failure left no fd
        # the refusal names perfbp's own four watches, on this thread
        for i in range(4):
            assert f"perfbp's mem:{a + 8 * i:#x}/8:w on this thread" in str(info.value)
        held.pop().close()
        with Counter(Breakpoint.write(a + 32, 8)) as fifth:
            libwork.write_u64(a + 32, P1009)
            assert fifth.read() + machine_lost() == P1009
    finally:
        for c in held:
            c.close()


def test_disabled_counter_still_holds_slot(libwork):
    a = libwork.scratch
    held = [Counter(Breakpoint.write(a + 8 * i, 8), enabled=False) for i in range(4)]
    try:
        assert not any(c.enabled for c in held)
        with pytest.raises(perfbp.NoBreakpointSlots) as info:
            Counter(Breakpoint.write(a + 32, 8))
        assert info.value.errno == errno.ENOSPC
    finally:
        for c in held:
            c.close()
    assert all(c.closed for c in held)
    with Counter(Breakpoint.write(a + 32, 8)) as fifth:    # room again
        assert fifth.read() == 0


def test_no_fd_leak_over_10000_cycles(libwork):
    bp = Breakpoint.write(libwork.scratch, 8)
    before = open_fds()
    for _ in range(5000):
        c = Counter(bp)
        c.close()
        c.close()                                   # twice is safe
    for _ in range(5000):
        with Counter(bp):
            pass
    assert open_fds() == before
    # and the slots came back: four can be held at once
    held = [Counter(Breakpoint.write(libwork.scratch + 8 * i, 8)) for i in range(4)]
    for c in held:
        c.close()
    assert open_fds() == before


def test_finalizer_closes_dropped_counter(libwork):
    before = open_fds()
    c = Counter(Breakpoint.write(libwork.scratch, 8))
    (fd,) = c.fds
    assert open_fds() == before | {fd}
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[perf_event]"
    assert fcntl.fcntl(fd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC  # not passed to exec
    del c
    gc.collect()
    assert open_fds() == before
    # the slot came back too
    held = [Counter(Breakpoint.write(libwork.scratch + 8 * i, 8)) for i in range(4)]
    for h in held:
        h.close()


# -- the errno of every error --------------------------------------------------------


INVALID = {
    "misaligned": lambda a, x: Breakpoint.write(a + 4, 8),
    "length 3": lambda a, x: Breakpoint.write(a, 3),
    "read-only on x86": lambda a, x: Breakpoint.read(a, 8),
    "execute length 4": lambda a, x: Breakpoint(x, 4, "x"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_breakpoint_raised_before_any_syscall(libwork, syscall_spy, case):
    before = open_fds()
    with pytest.raises(perfbp.InvalidBreakpoint) as info:
        Counter(INVALID[case](libwork.scratch, libwork.work_fn_addr))
    assert info.value.errno == errno.EINVAL == 22
    assert syscall_spy == []
    assert open_fds() == before


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
@pytest.mark.parametrize("gone", ["reaped", "zombie"])
def test_no_such_process(libwork, gone, process):
    child = subprocess.Popen(["true"])
    try:
        if gone == "reaped":
            assert child.wait() == 0
            assert not os.path.exists(f"/proc/{child.pid}")
        else:  # exited, not yet waited for: /proc/PID is still there
            deadline = time.monotonic() + 10
            while process_state(child.pid) != "Z" and time.monotonic() < deadline:
                time.sleep(0.005)
            assert process_state(child.pid) == "Z"
        before = open_fds()
        with pytest.raises(perfbp.NoSuchProcess) as info:
            Counter(Breakpoint.write(libwork.scratch, 8), pid=child.pid, process=process)
        assert info.value.errno == errno.ESRCH == 3
        assert isinstance(info.value, OSError)
        assert str(child.pid) in str(info.value)
        assert open_fds() == before
    finally:
        child.wait()


def kernel_text_address() -> int:
    with open("/proc/kallsyms") as f:
        for line in f:
            addr, kind, name = line.split()[:3]
            if name == "_stext" and kind in "Tt":
                assert int(addr, 16) != 0, "kallsyms hides addresses from root"
                return int(addr, 16)
    raise AssertionError("no _stext in /proc/kallsyms")


def test_permission_denied_unprivileged(run_unprivileged):
    paranoid = system.perf_event_paranoid()
    assert paranoid is not None and paranoid >= 2   # so all three must refuse
    kaddr = kernel_text_address()
    out = run_unprivileged(r"""
import ctypes
buf = ctypes.create_string_buffer(64)
addr = (ctypes.addressof(buf) + 7) & ~7
kaddr, root_pid = int(sys.argv[1]), int(sys.argv[2])
attempt("cpu_wide", lambda: perfbp.Counter(perfbp.Breakpoint.write(addr, 8), pid=-1, cpu=0))
attempt("kernel", lambda: perfbp.Counter(perfbp.Breakpoint.execute(kaddr)))
attempt("other_user", lambda: perfbp.Counter(perfbp.Breakpoint.write(addr, 8), pid=root_pid))
attempt("own_thread", lambda: perfbp.Counter(perfbp.Breakpoint.write(addr, 8)))
""", str(kaddr), str(os.getpid()))

    cpu_wide = out["cpu_wide"]
    assert (cpu_wide["error"], cpu_wide["errno"], cpu_wide["oserror"]) == \
        ("PermissionDenied", errno.EACCES, True)
    assert f"perf_event_paranoid is {paranoid}" in cpu_wide["message"]
    assert "CAP_PERFMON" in cpu_wide["message"]
    # it names what was asked and why that needs more than a thread does
    assert "on CPU 0" in cpu_wide["message"]
    assert "whole CPU" in cpu_wide["message"]

    # perf_allow_kernel() refuses first (EACCES) when paranoid > 1; below
    # that, hw_breakpoint_parse() refuses a kernel address with EPERM
    kernel = out["kernel"]
    assert (kernel["error"], kernel["errno"]) == \
        ("PermissionDenied", errno.EACCES if paranoid > 1 else errno.EPERM)
    assert "CAP_SYS_ADMIN" in kernel["message"]

    other = out["other_user"]
    assert (other["error"], other["errno"]) == ("PermissionDenied", errno.EACCES)
    assert "ptrace" in other["message"]

    # the control: an unprivileged user may watch its own thread
    assert out["own_thread"] == {"error": None, "count": 0, "fds": 1}


ERRNOS = [
    (perfbp.NoBreakpointSlots, errno.ENOSPC, 28),
    (perfbp.PermissionDenied, errno.EACCES, 13),
    (perfbp.InvalidBreakpoint, errno.EINVAL, 22),
    (perfbp.NoSuchProcess, errno.ESRCH, 3),
    (perfbp.Unsupported, errno.EOPNOTSUPP, 95),
]


@pytest.mark.parametrize("cls, code, number", ERRNOS, ids=[c.__name__ for c, _, _ in ERRNOS])
def test_error_class_errno_and_bases(cls, code, number):
    assert code == number
    assert issubclass(cls, perfbp.PerfbpError) and issubclass(cls, OSError)
    err = cls("what was asked: why not; what to do", pid=42)
    assert (err.errno, str(err), err.context) == \
        (number, "what was asked: why not; what to do", {"pid": 42})
    assert isinstance(err, OSError) and isinstance(err, perfbp.PerfbpError)
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.errno, str(again), again.context) == \
        (cls, number, str(err), {"pid": 42})


def test_every_public_error_is_a_perfbp_oserror():
    errors = [getattr(perfbp, name) for name in perfbp.__all__
              if isinstance(getattr(perfbp, name), type)
              and issubclass(getattr(perfbp, name), BaseException)]
    assert {c for c, _, _ in ERRNOS} <= set(errors)
    for cls in errors:
        assert issubclass(cls, perfbp.PerfbpError) and issubclass(cls, OSError), cls


def test_closed_counter_refuses_every_verb():
    """A closed counter raises like a closed file, instead of reading 0."""
    import ctypes
    cell = (ctypes.c_long * 2)()
    c = perfbp.Counter(perfbp.Breakpoint.write(ctypes.addressof(cell), 8))
    c.close()
    for verb in (c.read, c.enable, c.disable, c.reset, c.read_per_task,
                 lambda: c.move(ctypes.addressof(cell) + 8)):
        with pytest.raises(ValueError, match="closed"):
            verb()
    assert c.breakpoint.address == ctypes.addressof(cell)
    c.close()  # twice is fine


def test_each_thread_s_counters_are_entered_with_its_own_thread_id(libwork):
    """The calling thread's fast path keeps one attr cache per thread: counters
    opened in two threads hold slots in the ledger under their own ids."""
    from perfbp.kernel.events import LEDGER

    a = libwork.scratch
    made = {}

    def open_one(key, addr):
        made[key] = (Counter(Breakpoint.write(addr, 8)), threading.get_native_id())

    main = Counter(Breakpoint.write(a, 8))
    worker = threading.Thread(target=open_one, args=("worker", a + 8))
    worker.start()
    worker.join()
    try:
        other, other_tid = made["worker"]
        tasks = {LEDGER._by_fd[c.fds[0]][1] for c in (main, other)}
        assert tasks == {threading.get_native_id(), other_tid}
        assert other_tid != threading.get_native_id()
    finally:
        main.close()
        other.close()



def test_a_forked_child_s_counters_are_entered_under_its_own_id(libwork):
    """After fork, the child's counters (the calling thread's fast path and the
    general one) are the child's in the slot ledger, not its parent's."""
    from perfbp.kernel.events import LEDGER

    a = libwork.scratch
    with Counter(Breakpoint.write(a, 8)):
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            try:
                mine = [Counter(Breakpoint.write(a + 8, 8)),
                        Counter(Breakpoint.write(a + 16, 8), exclude_kernel=True)]
                ok = [LEDGER._by_fd[c.fds[0]][1] for c in mine] == [os.getpid()] * 2
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
