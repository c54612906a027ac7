"""Values tested in the kernel on every hit (perfbp.kernel.values), on the real kernel.

The programs are loaded by the kernel's verifier and attached to real
breakpoint events; the workloads are C, so what is written is known exactly:

* libwork's ``write_uN(p, n)`` stores 0, 1, ..., n-1 (cut to N bits) to one
  cell, in the calling thread;
* ``tests/workloads/values.c`` stores 1 .. 3N to one u64, in order, from
  thread A (1 .. N), thread B (started after the watch; N+1 .. 2N) and a
  forked child (2N+1 .. 3N): every hit's old value is the one before it.

Each case asserts exact numbers: the event's own hit count (every hit,
whatever the condition), the program's tally (hits, matched, last), and for
a Sampler the samples (exactly the matching hits, from the thread that
wrote them).  A hit the machine delivers without its status (see conftest)
is seen by no event and no program.  values.c writes 30,021 times, and this
machine loses about one hit in 10,000: so values.c names the values of the
stores it lost, and the expected numbers are those of the stores the kernel
saw (on a sound machine, every store: the numbers in PROCESS_CASES).  The
libwork tests are short; one the machine disturbs runs again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from collections import Counter as Tally_

import pytest
from hypothesis import HealthCheck, given, settings

from perfbp.errors import InvalidBreakpoint, PerfbpError, PermissionDenied
from perfbp.kernel import _uapi, abi
from perfbp.kernel.bpf import BPF_EXIT_INSN, BPF_MOV64_REG, encode
from perfbp.kernel.breakpoint import Breakpoint
from perfbp.kernel.condition import Tally, parse
from perfbp.kernel.counter import Counter
from perfbp.kernel.events import EventOptions, Target
from perfbp.kernel.sampling import Sampler
from perfbp.kernel import values
from perfbp.kernel.values import ValueProgram

from test_condition import cases  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.root  # BPF programs on perf events need CAP_BPF and CAP_PERFMON

N = 10_007         # values.c: stores per writer, a prime
WRITES = 1_009     # libwork: stores per length, a prime
#: a sampling event that starts disabled: the program is attached, then it is enabled
SAMPLING = EventOptions(enabled=False, sample_period=1)


@pytest.fixture(scope="module")
def values_prog(build):
    return build("values.c", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread")


# --- the verifier ----------------------------------------------------------------------

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_the_verifier_accepts_every_condition(case):
    length, text, _new, _old = case
    for emit in (True, False):
        with ValueProgram(text, length, emit=emit) as prog:
            assert prog.prog_fd >= 0 and prog.tally() == Tally(0, 0, 0, 0)


def test_the_verifier_accepts_kernel_reads_and_no_condition():
    with ValueProgram("new == 1", 8, kernel=True) as k, ValueProgram(None, 1) as every:
        assert k.prog_fd >= 0 and every.prog_fd >= 0


def test_a_refused_program_brings_the_verifiers_log():
    bad = encode([BPF_MOV64_REG(_uapi.BPF_REG_0, _uapi.BPF_REG_2), BPF_EXIT_INSN()])
    with pytest.raises(OSError) as info:
        abi.bpf_prog_load(_uapi.BPF_PROG_TYPE_PERF_EVENT, bad)
    assert info.value.errno == errno.EACCES
    assert "R2 !read_ok" in info.value.log


# --- counting: the program tallies, the event counts every hit ----------------------------

def lengths_cases():
    for length, fn in ((1, "write_u8"), (2, "write_u16"), (4, "write_u32"), (8, "write_u64")):
        top = (1 << 8 * length) - 1
        for text in ("new == 5", "old != 0 and new == 0", f"new > {min(top, WRITES) - 11}",
                     "new & 0x80 and not old & 0x80"):
            yield pytest.param(length, fn, text, id=f"{length}:{text}")


@pytest.mark.parametrize("length, fn, text", list(lengths_cases()))
def test_counting_every_length(libwork, machine_lost, length, fn, text):
    addr = libwork.scratch
    bp = Breakpoint.write(addr, length)
    top = (1 << 8 * length) - 1
    written = [i & top for i in range(WRITES)]
    cond = parse(text)
    olds = [0] + written[:-1]
    want = sum(cond.evaluate(new, old) for new, old in zip(written, olds))
    with ValueProgram.for_breakpoint(bp, cond, emit=False) as prog, \
            Counter(bp, options=SAMPLING) as c:
        for fd in c.fds:
            prog.attach(fd)
        c.enable()
        getattr(libwork, fn)(addr, WRITES)
        c.disable()
        assert (c.read(), machine_lost()) == (WRITES, 0)
        assert prog.tally() == Tally(WRITES, want, written[-1], 0)


def test_old_starts_from_set_last(libwork):
    addr = libwork.scratch
    bp = Breakpoint.write(addr, 8)
    with ValueProgram.for_breakpoint(bp, "old == 77 and new == 0", emit=False) as prog, \
            Counter(bp, options=SAMPLING) as c:
        prog.set_last(77)
        prog.attach(c.fds[0])
        c.enable()
        libwork.write_u64(addr, 3)
        assert prog.tally() == Tally(3, 1, 2, 0)


def test_a_counting_event_never_runs_the_program(libwork):
    # the kernel runs a perf-event program on overflows only: a counting
    # event (sample_period 0) takes it and never runs it
    addr = libwork.scratch
    bp = Breakpoint.write(addr, 8)
    with ValueProgram.for_breakpoint(bp, "new == 5", emit=False) as prog, \
            Counter(bp, options=EventOptions(enabled=False)) as c:
        prog.attach(c.fds[0])
        c.enable()
        libwork.write_u64(addr, 11)
        assert (c.read(), prog.tally()) == (11, Tally(0, 0, 0, 0))


def test_an_event_takes_one_program(libwork):
    bp = Breakpoint.write(libwork.scratch, 8)
    with ValueProgram.for_breakpoint(bp, "new == 5") as prog, \
            Counter(bp, options=SAMPLING) as c:
        prog.attach(c.fds[0])
        with pytest.raises(PerfbpError) as info:
            prog.attach(c.fds[0])
    assert info.value.errno == errno.EEXIST
    assert "cannot attach to a breakpoint the program that tests 'new == 5'" in str(info.value)


def test_a_sampler_with_a_condition_samples_every_hit():
    bp = Breakpoint.write(0x1000, 8)
    with ValueProgram.for_breakpoint(bp, "new == 5") as prog:
        with pytest.raises(InvalidBreakpoint, match="period 3"):
            Sampler([bp], Target.this_thread(), period=3, programs=[prog])


# --- a process: two threads and a forked child, counted and sampled -----------------------

class ValuesRun:
    """values.c running: attached to by ``arm(pid)``, then let go."""

    def __init__(self, exe) -> None:
        self.proc = subprocess.Popen([str(exe), str(N)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.addr = int(self.proc.stdout.readline(), 16)
        assert self.proc.stdout.readline() == "ready\n"

    def go(self) -> "tuple[dict[int, str], list[int]]":
        """Let it write; return ({thread id: writer}, the values of the
        stores the machine lost)."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        word, tid_a, tid_b, child = self.proc.stdout.readline().split()
        assert word == "done"
        word, *lost = self.proc.stdout.readline().split()
        assert word == "lost" and "more" not in lost
        return {int(tid_a): "A", int(tid_b): "B", int(child): "child"}, [int(v) for v in lost]

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("exit\n")
            self.proc.stdin.flush()
            assert self.proc.wait(30) == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()


#: condition -> the writer of each matching store ("A", "B" or "child")
PROCESS_CASES = {
    "new == 5": {"A": 1},
    f"new > {3 * N - 10}": {"child": 10},
    f"new > {N - 10} and new <= {N + 10}": {"A": 10, "B": 10},
    f"old == {N} and new == {N + 1}": {"B": 1},              # from thread A to thread B
    f"old == {2 * N} and new == {2 * N + 1}": {"child": 1},  # from the parent to the child
    "old >= new": {},                                        # every old is the store before
    "new & 1 == 0": {"A": N // 2, "B": N // 2 + 1, "child": N // 2},
}


def writer_of(value: int) -> str:
    return ("A", "B", "child")[(value - 1) // N]


def expected(text: str, lost: "list[int]") -> "tuple[list[int], dict[str, int]]":
    """The stores the kernel saw (1 .. 3N but the lost ones), and the writers
    of those that match: each one's old is the seen store before it."""
    seen = [v for v in range(1, 3 * N + 1) if v not in set(lost)]
    cond = parse(text)
    matched = [new for new, old in zip(seen, [0] + seen[:-1]) if cond.evaluate(new, old)]
    return seen, dict(Tally_(writer_of(v) for v in matched))


def test_the_expected_numbers_of_a_sound_machine():
    for text, want in PROCESS_CASES.items():
        assert expected(text, [])[1] == want, text


@pytest.mark.parametrize("text", list(PROCESS_CASES))
def test_sampling_a_process_two_threads_and_a_child(values_prog, text):
    with ValuesRun(values_prog) as run:
        bp = Breakpoint.write(run.addr, 8)
        with ValueProgram.for_breakpoint(bp, text) as prog, \
                Sampler([bp], Target.process(run.proc.pid), programs=[prog]) as s:
            writers, lost = run.go()
            batch = s.read()
            (st,) = s.stats()
            tally = prog.tally()
            run.end()
    seen, want = expected(text, lost)
    tids = batch.samples.tid.tolist() if len(batch) else []
    by_writer = Tally_(writers.get(int(t), f"tid {t}") for t in tids)
    assert (st.hits, tally.hits) == (len(seen), len(seen))  # every store, all tested
    assert (tally.matched, tally.last, tally.faults) == (sum(want.values()), seen[-1], 0)
    assert dict(by_writer) == want
    assert (st.samples, st.lost, st.matched) == (tally.matched, 0, tally.matched)
    assert st.complete and st.missing == 0


def test_a_full_ring_loses_matching_samples_and_says_how_many(values_prog):
    text = "new & 1 == 0"  # half the stores: more than a one-page ring holds
    with ValuesRun(values_prog) as run:
        bp = Breakpoint.write(run.addr, 8)
        with ValueProgram.for_breakpoint(bp, text) as prog, \
                Sampler([bp], Target.process(run.proc.pid), programs=[prog],
                        ring_pages=1) as s:
            _writers, lost = run.go()  # not drained while it runs
            s.read()
            (st,) = s.stats()
            tally = prog.tally()
            run.end()
    seen, want = expected(text, lost)
    assert (st.hits, tally.matched) == (len(seen), sum(want.values()))
    assert st.lost > 0 and st.samples + st.lost == tally.matched
    assert st.complete


def test_values_are_available_here():
    assert values.unavailable() is None


def test_counting_a_process_two_threads_and_a_child(values_prog):
    with ValuesRun(values_prog) as run:
        bp = Breakpoint.write(run.addr, 8)
        text = "new == 5 or new > 30000"
        with ValueProgram.for_breakpoint(bp, text, emit=False) as prog, \
                Counter(bp, pid=run.proc.pid, process=True, options=SAMPLING) as c:
            assert len(c.fds) == 2  # main and thread A; B and the child inherit
            for fd in c.fds:
                prog.attach(fd)
            c.enable()
            _writers, lost = run.go()
            seen, want = expected(text, lost)
            assert sum(want.values()) == 22 - sum(v == 5 or v > 30000 for v in lost)
            assert c.read() == len(seen)
            assert prog.tally() == Tally(len(seen), sum(want.values()), seen[-1], 0)
            run.end()


# --- where BPF is not allowed ---------------------------------------------------------------

def test_nobody_is_told_what_is_missing(run_unprivileged):
    out = run_unprivileged(r"""
from perfbp.kernel import values
try:
    values.ValueProgram("new == 0", 8)
except perfbp.PerfbpError as e:
    RESULT["refused"] = {"error": type(e).__name__, "errno": e.errno, "message": str(e)}
RESULT["unavailable"] = str(values.unavailable())
""")
    refused = out["refused"]
    assert out["unavailable"] == refused["message"]
    assert (refused["error"], refused["errno"]) == ("PermissionDenied", errno.EPERM)
    assert refused["message"] == (
        "cannot make the map that keeps the values of 'new == 0' on 8-byte values in the "
        "kernel (EPERM): testing values in the kernel needs a BPF program, which needs "
        "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), and this process lacks CAP_BPF and "
        "CAP_PERFMON. Run as root, grant them (setcap cap_bpf,cap_perfmon+ep), or watch "
        "without a condition")


# capget(2)/capset(2): a header and two words each of effective, permitted
# and inheritable (include/uapi/linux/capability.h, version 3)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _drop_effective(*caps: int) -> None:
    """Clear capabilities from this process's effective set (it stays root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    assert libc.capget(header, data) == 0
    for cap in caps:
        data[3 * (cap // 32)] &= ~(1 << cap % 32)  # effective words are 0 and 3
    assert libc.capset(header, data) == 0, os.strerror(ctypes.get_errno())


def test_without_cap_perfmon_the_map_is_made_and_the_program_refused():
    # in a child: root that keeps CAP_BPF but not CAP_PERFMON nor CAP_SYS_ADMIN
    from perfbp.kernel import system

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            _drop_effective(system.CAP_PERFMON, system.CAP_SYS_ADMIN)
            try:
                ValueProgram("new == 0", 8)
                msg = "loaded"
            except PermissionDenied as e:
                msg = f"{e.errno} {e}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.read()
    os.waitpid(pid, 0)
    assert msg.startswith(f"{errno.EPERM} cannot load the program that tests 'new == 0' on "
                          f"8-byte values in the kernel (EPERM)"), msg
    assert "and this process lacks CAP_PERFMON. Run as root" in msg
