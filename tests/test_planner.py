"""Planning watches onto debug-register slots (perfbp.plan), opening them
all-or-nothing, and the CLI's ``slots`` command and range splitting in
``stat``, on the real kernel.

The plan is checked with exact numbers: a watch takes one slot per piece of
its range (``0x601001/8`` is 1+2+4+1 bytes: 4 slots), x86-64 has 4 per thread
and per CPU, and the slots perfbp's own open events hold are subtracted
exactly and named in the explanation.

All-or-nothing is checked where it matters: when the kernel refuses the
*third* of four pieces because slots are held outside perfbp.  A helper
process holds CPU-bound breakpoints (``pid == -1``), two on every online CPU;
the kernel counts each against every task on that CPU
(``max_bp_pinned_slots``: ``cpu_pinned + task_bp_pinned``), so a launched
command, or this thread, can then take exactly 2.  The call must raise
NoBreakpointSlots (ENOSPC) saying the slots are "held outside perfbp", and
leave nothing open: the ledger is empty and no perf_event descriptor is left
in /proc/self/fd.

The known workload is ``tests/workloads/plan_writes.c``: ``plan_writes N M``
writes the long ``area.a`` N times, the adjacent long ``area.b`` M times,
and each byte ``area.bytes[k]`` BYTE_WRITES[k] times (one-byte stores).

Other programs on this machine (other test runs) may hold slots; the tests
that need the kernel's slots wait for them, as tests/test_slots.py does.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import conftest
import perfbp
from perfbp.kernel import abi
from perfbp.kernel import system
from perfbp.planning.regions import split_range
from perfbp.planning.spec import parse
from perfbp.kernel._uapi import HW_BREAKPOINT_W, PERF_TYPE_BREAKPOINT
from perfbp.kernel.events import LEDGER

REPO_ROOT = Path(__file__).resolve().parent.parent
NSLOTS = 4                # x86-64: DR0-DR3 per thread and per CPU
TIMEOUT = 30              # seconds for one CLI run; none comes near it
SLOT_WAIT = 30            # seconds to wait for slots held by other programs
ONLINE = system.online_cpus()

# plan_writes.c: area.bytes[k] is written BYTE_WRITES[k] times
BYTE_WRITES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)
N_A, N_B = 10007, 5003    # writes to area.a and area.b (primes)
BYTES_AT = 16             # offset of area.bytes in area

# addresses for plans only: nothing is opened on them
BASE = 0x601000


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def nothing_left_open():
    """Every test starts and ends with perfbp holding no event in this process."""
    assert len(LEDGER) == 0, "a previous test left perfbp events open"
    yield
    assert len(LEDGER) == 0, "this test left perfbp events open"


def perf_fds() -> "set[int]":
    """This process's perf_event descriptors."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[perf_event]":
                out.add(int(name))
        except OSError:  # the descriptor listdir itself used
            continue
    return out


def _raw_open(pid: int, cpu: int, addr: int) -> "int | None":
    attr = abi.new_attr()
    attr.type = PERF_TYPE_BREAKPOINT
    attr.bp_type = HW_BREAKPOINT_W
    attr.bp_addr = addr
    attr.bp_len = 8
    attr.exclude_kernel = 1
    attr.exclude_hv = 1
    attr.disabled = 1
    try:
        return abi.perf_event_open(attr, pid, cpu)
    except OSError:
        return None


_cells = (ctypes.c_long * 8)()


def task_capacity() -> int:
    """How many breakpoints this thread could take on every CPU right now
    (raw opens, below perfbp; closed again)."""
    fds = []
    while len(fds) <= NSLOTS:
        fd = _raw_open(0, -1, ctypes.addressof(_cells) + 8 * len(fds))
        if fd is None:
            break
        fds.append(fd)
    for fd in fds:
        abi.close(fd)
    return len(fds)


def wait_for_task_slots() -> None:
    """Wait until no one holds CPU-bound breakpoints (every task can take all
    4 slots): another program's system-wide watch would change the numbers."""
    deadline = time.monotonic() + SLOT_WAIT
    while task_capacity() != NSLOTS:
        if time.monotonic() > deadline:
            pytest.fail(f"breakpoint slots held by another program for {SLOT_WAIT} s: "
                        f"this thread can take only {task_capacity()} of {NSLOTS}")
        time.sleep(0.2)


HOLDER = r"""
import ctypes, sys
from perfbp.kernel import abi
from perfbp.kernel._uapi import HW_BREAKPOINT_W, PERF_TYPE_BREAKPOINT
n, cpus = int(sys.argv[1]), [int(c) for c in sys.argv[2].split(",")]
cells = (ctypes.c_long * 64)()
fds = []
for cpu in cpus:
    for _ in range(n):
        attr = abi.new_attr()
        attr.type = PERF_TYPE_BREAKPOINT
        attr.bp_type = HW_BREAKPOINT_W
        attr.bp_addr = ctypes.addressof(cells) + 8 * len(fds)
        attr.bp_len = 8
        attr.exclude_kernel = 1
        attr.exclude_hv = 1
        attr.disabled = 1
        try:
            fds.append(abi.perf_event_open(attr, -1, cpu))
        except OSError:
            pass
print(len(fds), flush=True)
sys.stdin.read()
"""


class HeldOutside:
    """Another process holding ``n`` CPU-bound breakpoints on every online
    CPU, until the ``with`` block ends (then every task can take 4 again)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.proc: "subprocess.Popen | None" = None

    def __enter__(self) -> "HeldOutside":
        deadline = time.monotonic() + SLOT_WAIT
        want = self.n * len(ONLINE)
        while True:
            wait_for_task_slots()
            self.proc = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(self.n), ",".join(map(str, ONLINE))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
            got = int(self.proc.stdout.readline())
            if got == want:
                return self
            # another program holds task breakpoints: CPU-bound ones do not fit
            self._end()
            if time.monotonic() > deadline:
                pytest.fail(f"could hold only {got} of {want} CPU-bound breakpoints "
                            f"for {SLOT_WAIT} s: another program holds slots")
            time.sleep(0.2)

    def _end(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()

    def __exit__(self, *exc) -> None:
        self._end()


def run_perfbp(*args: str) -> subprocess.CompletedProcess:
    """``perfbp ARGS`` (conftest's), waiting up to SLOT_WAIT seconds for slots."""
    return conftest.run_perfbp(*args, timeout=TIMEOUT, slot_wait=SLOT_WAIT)

def one_error_line(r: subprocess.CompletedProcess) -> str:
    """perfbp refused as bad input: status 2, one line on stderr, no output."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert err[0].startswith("perfbp: error: ")
    assert r.stdout == ""
    return err[0]


def one_json(stdout: str) -> dict:
    """The one JSON object perfbp printed: the last line of stdout."""
    objects = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(objects) == 1, stdout
    assert stdout.strip().splitlines()[-1] == objects[0], stdout
    return json.loads(objects[0])


@pytest.fixture(scope="session")
def plan_writes(build) -> "tuple[Path, int]":
    """plan_writes built without PIE, and the address of its ``area``."""
    exe = build("plan_writes.c", "-O2", "-Wall", "-Wextra", "-Werror", "-no-pie")
    with open(exe, "rb") as f:
        (sym,) = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("area")
        area = sym["st_value"]
    assert area % 64 == 0
    return exe, area


def sizes(w: perfbp.Watch) -> "list[int]":
    return [p.length for p in w.pieces]


# -- the plan: pieces, slots, fits -----------------------------------------------------

@pytest.mark.parametrize("addr, length, pieces", [
    (BASE + 1, 8, [1, 2, 4, 1]),       # misaligned 8 bytes: gdb's split
    (BASE, 16, [8, 8]),                # 16 aligned bytes
    (BASE, 3, [2, 1]),
    (BASE + 7, 2, [1, 1]),             # straddles an 8-byte boundary
    (BASE + 4, 4, [4]),
    (BASE, 40, [8, 8, 8, 8, 8]),       # longer than the registers can take
])
def test_slots_needed_is_the_number_of_pieces(addr, length, pieces):
    w = perfbp.Watch.range(addr, length)
    assert sizes(w) == pieces
    assert (w.address, w.length) == (addr, length)
    assert [(p.address, p.length) for p in w.pieces] == \
        [(a, n) for a, n in split_range(addr, length)]
    p = perfbp.plan([w])
    assert p.slots_needed == len(pieces)
    assert p.capacity == NSLOTS
    assert p.free == NSLOTS
    assert p.fits is (len(pieces) <= NSLOTS)
    label = f"{addr:#x}/{length}:w"
    if len(pieces) == 1:
        assert f"{label}: 1 slot)" in p.explanation
    else:
        sizes_text = "+".join(map(str, pieces))
        assert f"{label}: {len(pieces)} slots ({sizes_text} bytes)" in p.explanation


def test_slots_needed_is_the_sum_over_watches():
    ws = [perfbp.Watch.range(BASE + 1, 8), perfbp.Watch.range(BASE + 0x40, 16),
          perfbp.Watch.range(BASE + 0x80, 3)]
    p = perfbp.plan(ws)
    assert p.slots_needed == 4 + 2 + 2
    assert [w["slots"] for w in p.as_dict()["watches"]] == [4, 2, 2]


@pytest.mark.parametrize("ranges, needed", [
    ([(BASE + 1, 8)], 4),                                 # 1+2+4+1
    ([(BASE, 16), (BASE + 0x40, 3)], 4),                  # 2 + 2
    ([(BASE + 8 * i, 8) for i in range(4)], 4),          # 4 registers
])
def test_exactly_four_fits(ranges, needed):
    ws = [perfbp.Watch.range(a, n) for a, n in ranges]
    p = perfbp.plan(ws)
    assert (p.slots_needed, p.capacity, p.free, p.fits) == (needed, NSLOTS, NSLOTS, True)
    assert "It fits (0 left)" in p.explanation
    assert "does not fit" not in p.explanation and "multiplex" not in p.explanation
    for w in ws:
        assert w.label in p.explanation
    p.require()  # does not raise


@pytest.mark.parametrize("ranges, needed", [
    ([(BASE + 1, 8), (BASE + 0x40, 1)], 5),              # 4 + 1
    ([(BASE, 16), (BASE + 0x40, 3), (BASE + 0x80, 1)], 5),
    ([(BASE + 8 * i, 8) for i in range(5)], 5),
    ([(BASE, 40)], 5),                                    # one watch, 5 pieces
    ([(BASE + 1, 8), (BASE + 0x41, 8)], 8),
])
def test_one_more_does_not_fit(ranges, needed):
    ws = [perfbp.Watch.range(a, n) for a, n in ranges]
    p = perfbp.plan(ws)
    assert (p.slots_needed, p.capacity, p.free, p.fits) == (needed, NSLOTS, NSLOTS, False)
    n = len(ws)
    assert p.explanation.startswith(
        f"{n} watch{'es' if n > 1 else ''} need{'s' if n == 1 else ''} {needed} "
        f"debug-register slots in every thread of the command (")
    for w in ws:
        assert f"{w.label}: {w.describe_pieces()}" in p.explanation
    assert "4 per thread and per CPU" in p.explanation
    assert f"it does not fit ({NSLOTS} free)" in p.explanation
    # the API's words for what to do; the command line's in explain("cli")
    assert "give multiplex=SECONDS (count, record, LiveSession" in p.explanation
    assert "--multiplex" not in p.explanation
    assert p.explain("cli") == p.explanation.replace(
        "multiplex=SECONDS (count, record, LiveSession: the length of a turn)", "--multiplex")
    with pytest.raises(perfbp.NoBreakpointSlots) as info:
        p.require()
    assert info.value.errno == 28
    assert str(info.value) == p.explanation
    assert info.value.message_for("cli") == p.explain("cli")


def test_plan_as_dict():
    p = perfbp.plan([perfbp.Watch.range(BASE + 1, 8)])
    d = p.as_dict()
    assert (d["fits"], d["slots_needed"], d["capacity"], d["free"]) == (True, 4, 4, 4)
    assert d["explanation"] == p.explanation
    (w,) = d["watches"]
    assert (w["address"], w["length"], w["access"], w["slots"]) == (BASE + 1, 8, "w", 4)
    assert w["pieces"] == [{"address": BASE + 1, "length": 1}, {"address": BASE + 2, "length": 2},
                           {"address": BASE + 4, "length": 4}, {"address": BASE + 8, "length": 1}]
    json.dumps(d)  # all plain data


# -- the plan sees perfbp's own open watches -----------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("held", [1, 2, 3, 4])
def test_free_drops_by_exactly_the_watches_perfbp_holds(held):
    wait_for_task_slots()
    cells = (ctypes.c_long * 8)()
    base = ctypes.addressof(cells)
    want = perfbp.Watch.range(BASE + 1, 8)   # 4 pieces
    assert perfbp.plan([want], perfbp.Target.this_thread()).free == NSLOTS
    counters = [perfbp.Counter(perfbp.Breakpoint.write(base + 8 * i, 8), enabled=False)
                for i in range(held)]
    try:
        one = perfbp.plan([perfbp.Watch.range(BASE, 8)], perfbp.Target.this_thread())
        p = perfbp.plan([want], perfbp.Target.this_thread())
        names = sorted(f"perfbp's mem:{base + 8 * i:#x}/8:w on this thread" for i in range(held))
    finally:
        for c in counters:
            c.close()
    assert p.free == NSLOTS - held and one.free == NSLOTS - held
    assert p.fits is False                      # 4 pieces, fewer than 4 free
    assert one.fits is (held < NSLOTS)
    assert p.held_by_perfbp == names
    text = p.explanation
    assert text.startswith("1 watch needs 4 debug-register slots in this thread (")
    assert f"perfbp's own open watches hold {held} there ({'; '.join(names)})" in text
    assert f"it does not fit ({NSLOTS - held} free)" in text and "multiplex=" in text
    if held < NSLOTS:
        assert f"It fits ({NSLOTS - held - 1} left)" in one.explanation
    assert perfbp.plan([want], perfbp.Target.this_thread()).free == NSLOTS  # closed again


@pytest.mark.kernel
def test_a_cpu_wide_watch_of_perfbp_takes_a_slot_of_every_thread():
    wait_for_task_slots()
    cells = (ctypes.c_long * 1)()
    bp = perfbp.Breakpoint.write(ctypes.addressof(cells), 8)
    with perfbp.Counter(bp, pid=-1, cpu=ONLINE[0], enabled=False):
        mine = perfbp.plan([perfbp.Watch.range(BASE + 1, 8)], perfbp.Target.this_thread())
        new = perfbp.plan([perfbp.Watch.range(BASE + 1, 8)])
    name = f"perfbp's {bp.spec} on CPU {ONLINE[0]}"
    for p in (mine, new):
        assert (p.free, p.fits) == (NSLOTS - 1, False)
        assert f"perfbp's own open watches hold 1 there ({name})" in p.explanation
        assert "it does not fit (3 free)" in p.explanation


def test_a_watch_on_another_thread_takes_no_slot_of_this_one(pinned_thread):
    wait_for_task_slots()
    cells = (ctypes.c_long * 4)()
    t = pinned_thread(ONLINE[-1], time.sleep, 0)
    tid = t.start()
    bps = [perfbp.Breakpoint.write(ctypes.addressof(cells) + 8 * i, 8) for i in range(4)]
    with perfbp.Group([(bp, perfbp.Target.thread(tid)) for bp in bps], enabled=False):
        mine = perfbp.plan([perfbp.Watch.range(BASE + 1, 8)], perfbp.Target.this_thread())
        theirs = perfbp.plan([perfbp.Watch.range(BASE, 8)], perfbp.Target.thread(tid))
    t.finish()
    assert (mine.free, mine.fits) == (NSLOTS, True)
    assert "perfbp's own open watches" not in mine.explanation
    assert (theirs.free, theirs.fits) == (0, False)
    for bp in bps:
        assert f"perfbp's {bp.spec} on thread {tid}" in theirs.explanation


# -- refusals name perfbp's own watches -------------------------------------------------

@pytest.mark.kernel
def test_refusal_by_the_plan_names_perfbps_watches():
    wait_for_task_slots()
    cells = (ctypes.c_long * 8)()
    base = ctypes.addressof(cells)
    held = [perfbp.Counter(perfbp.Breakpoint.write(base + 8 * i, 8), enabled=False)
            for i in range(2)]
    fds = perf_fds()
    try:
        with pytest.raises(perfbp.NoBreakpointSlots) as info:
            perfbp.count([perfbp.Watch.range(base + 0x21, 4)],   # 1+2+1: 3 slots
                         target=perfbp.Target.this_thread(), duration=5)
        assert perf_fds() == fds and len(LEDGER) == 2   # opened nothing more
    finally:
        for c in held:
            c.close()
    msg = str(info.value)
    assert info.value.errno == 28
    assert "1 watch needs 3 debug-register slots in this thread" in msg
    for i in range(2):
        assert f"perfbp's mem:{base + 8 * i:#x}/8:w on this thread" in msg
    assert "perfbp's own open watches hold 2 there" in msg
    assert "it does not fit (2 free)" in msg


@pytest.mark.kernel
def test_refusal_by_the_kernel_names_perfbps_watches():
    wait_for_task_slots()
    cells = (ctypes.c_long * 8)()
    base = ctypes.addressof(cells)
    held = [perfbp.Counter(perfbp.Breakpoint.write(base + 8 * i, 8), enabled=False)
            for i in range(NSLOTS)]
    fds = perf_fds()
    try:
        with pytest.raises(perfbp.NoBreakpointSlots) as info:
            perfbp.Counter(perfbp.Breakpoint.write(base + 0x20, 8))
        assert perf_fds() == fds
    finally:
        for c in held:
            c.close()
    msg = str(info.value)
    assert info.value.errno == 28
    assert "(ENOSPC)" in msg and "4 of 4 are in use" in msg
    assert "held by " + "; ".join(f"perfbp's mem:{base + 8 * i:#x}/8:w on this thread"
                                  for i in range(NSLOTS)) in msg
    assert "outside perfbp" not in msg


# -- all-or-nothing: the kernel refuses the third of four pieces ----------------------

def _third_piece_refused(exc: perfbp.NoBreakpointSlots, w: perfbp.Watch) -> str:
    msg = str(exc)
    third = w.pieces[2]
    assert exc.errno == 28
    assert isinstance(exc, OSError)
    assert msg.startswith(f"cannot open the write watch on {third.length} bytes at "
                          f"{third.address:#x} on ")
    assert "(ENOSPC)" in msg and "held outside perfbp" in msg
    return msg


@pytest.mark.kernel
def test_count_opens_all_pieces_or_none(plan_writes):
    exe, area = plan_writes
    w = perfbp.Watch.range(area + 1, 8)          # 1+2+4+1
    fds = perf_fds()
    with HeldOutside(2):
        assert perfbp.plan([w]).fits            # perfbp cannot see the helper's
        with pytest.raises(perfbp.NoBreakpointSlots) as info:
            perfbp.count([w], command=[str(exe), str(N_A), str(N_B)])
    msg = _third_piece_refused(info.value, w)
    assert len(LEDGER) == 0 and perf_fds() == fds
    pid = int(re.search(r" on process (\d+) ", msg).group(1))
    assert not os.path.exists(f"/proc/{pid}"), "the prepared command was not reaped"


@pytest.mark.kernel
def test_record_opens_all_pieces_or_none(plan_writes, tmp_path):
    exe, area = plan_writes
    w = perfbp.Watch.range(area + 1, 8)
    out = tmp_path / "perf.data"
    fds = perf_fds()
    with HeldOutside(2):
        with pytest.raises(perfbp.NoBreakpointSlots) as info:
            perfbp.record([w], str(out), command=[str(exe), str(N_A), str(N_B)])
    _third_piece_refused(info.value, w)
    assert len(LEDGER) == 0 and perf_fds() == fds
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.kernel
def test_group_opens_all_pieces_or_none():
    cells = (ctypes.c_long * 4)()
    w = perfbp.Watch.range(ctypes.addressof(cells) + 1, 8)
    me = perfbp.Target.this_thread()
    fds = perf_fds()
    with HeldOutside(2):
        with pytest.raises(perfbp.NoBreakpointSlots) as info:
            perfbp.Group([(bp, me) for bp in w.pieces], enabled=False)
        msg = _third_piece_refused(info.value, w)
        assert " on this thread " in msg
        assert len(LEDGER) == 0 and perf_fds() == fds
        # and two pieces do fit: the helper holds exactly two slots
        with perfbp.Group([(bp, me) for bp in w.pieces[:2]], enabled=False) as g:
            assert len(g) == 2 and len(LEDGER) == 2
    assert len(LEDGER) == 0 and perf_fds() == fds


@pytest.mark.kernel
def test_group_of_plain_breakpoints():
    wait_for_task_slots()
    cells = (ctypes.c_long * 2)()
    bps = [perfbp.Breakpoint.write(ctypes.addressof(cells) + 8 * i, 8) for i in range(2)]
    with perfbp.Group(bps, enabled=False) as g:
        assert [c.breakpoint for c in g] == bps


@pytest.mark.kernel
def test_plan_for_a_thread_on_one_cpu_counts_only_that_cpu():
    if len(ONLINE) < 2:
        pytest.skip("needs two online CPUs")
    wait_for_task_slots()
    cells = (ctypes.c_long * 8)()
    base = ctypes.addressof(cells)
    # perfbp holds a CPU-wide watch on the first CPU only; on the second, this
    # thread can still take all 4 (the kernel agrees: it opens them)
    with perfbp.Counter(perfbp.Breakpoint.write(base, 8), pid=-1, cpu=ONLINE[0],
                        enabled=False):
        target = perfbp.Target.thread(0, cpu=ONLINE[1])
        bps = [perfbp.Breakpoint.write(base + 8 + 8 * i, 8) for i in range(NSLOTS)]
        with perfbp.Group([(bp, target) for bp in bps], enabled=False):
            pass
        p = perfbp.plan([perfbp.Watch.of(bp) for bp in bps], target)
    assert (p.free, p.fits) == (NSLOTS, True)


# -- the CLI: slots ------------------------------------------------------------------

def test_slots_json_for_a_command():
    r = run_perfbp("slots", "--json", "-w", f"{BASE + 1:#x}/8", "-w", f"{BASE + 0x40:#x}/16",
                   "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    d = one_json(r.stdout)
    assert (d["fits"], d["slots_needed"], d["capacity"], d["free"]) == (False, 6, 4, 4)
    assert isinstance(d["explanation"], str)
    assert "2 watches need 6 debug-register slots in every thread of the command" \
        in d["explanation"] and "--multiplex" in d["explanation"]
    assert [w["watch"] for w in d["watches"]] == [f"{BASE + 1:#x}/8", f"{BASE + 0x40:#x}/16"]
    assert [w["slots"] for w in d["watches"]] == [4, 2]
    assert [[p["length"] for p in w["pieces"]] for w in d["watches"]] == [[1, 2, 4, 1], [8, 8]]
    assert [p["address"] for p in d["watches"][0]["pieces"]] == \
        [BASE + 1, BASE + 2, BASE + 4, BASE + 8]

    r = run_perfbp("slots", "--json", "-w", f"{BASE + 1:#x}/8", "--", "/bin/true")
    d = one_json(r.stdout)
    assert (r.returncode, d["fits"], d["slots_needed"], d["capacity"]) == (0, True, 4, 4)
    assert "It fits (0 left)" in d["explanation"]


def test_slots_text_for_a_command():
    r = run_perfbp("slots", "-w", f"{BASE + 1:#x}/8", "--", "/bin/true")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == (f"{BASE + 1:#x}/8: 4 slots (1+2+4+1 bytes): {BASE + 1:#x}/1, "
                      f"{BASE + 2:#x}/2, {BASE + 4:#x}/4, {BASE + 8:#x}/1")
    assert "fits: needs 4 slots, 4 free (capacity 4)" in out


@pytest.mark.kernel
def test_slots_probe_json():
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        r = run_perfbp("slots", "--probe", "--json")
        assert r.returncode == 0, r.stderr
        d = one_json(r.stdout)
        quiet = d["task_slots"] == NSLOTS and set(d["per_cpu"].values()) == {NSLOTS}
        if quiet or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # another program holds slots: wait for them
    assert d["task_slots"] == NSLOTS
    assert d["shared_data_execute"] is True
    assert sorted(map(int, d["per_cpu"])) == ONLINE == sorted(map(int, d["cpu_slots"]))
    assert set(d["per_cpu"].values()) == {NSLOTS}
    assert all(0 <= n <= NSLOTS for n in d["cpu_slots"].values())


def test_slots_probe_takes_no_watch():
    err = one_error_line(run_perfbp("slots", "--probe", "-w", f"{BASE:#x}"))
    assert "--probe" in err and "no watches" in err


# -- the CLI: stat refuses what does not fit ---------------------------------------------

@pytest.mark.parametrize("specs, needed", [
    ([f"{BASE + 8 * i:#x}" for i in range(5)], 5),       # 5 single registers
    ([f"{BASE:#x}/40"], 5),                                # one range of 5 pieces
])
def test_stat_refuses_more_than_four_slots(specs, needed):
    args = [a for s in specs for a in ("-w", s)]
    err = one_error_line(run_perfbp("stat", *args, "--", "/bin/true"))
    expected = perfbp.plan([perfbp.Watch.from_spec(parse(s)) for s in specs])
    assert err == f"perfbp: error: {expected.explain('cli')}"
    assert f"need{'s' if len(specs) == 1 else ''} {needed} debug-register slots" in err
    assert "4 per thread" in err and "--multiplex" in err and "multiplex=" not in err
    assert "Ctrl-C" not in err


def test_count_refuses_more_than_four_slots_in_the_apis_words():
    """The API's error names the API's argument, not the command line's
    option: the same refusal as above, from perfbp.count."""
    ws = [perfbp.Watch.range(BASE + 8 * i, 8) for i in range(5)]
    with pytest.raises(perfbp.NoBreakpointSlots) as info:
        perfbp.count(ws, command=["/bin/true"])
    msg = str(info.value)
    assert msg == perfbp.plan(ws).explanation
    assert "or give multiplex=SECONDS (count, record, LiveSession: the length of a turn) " \
        "to rotate the watches" in msg
    assert "--multiplex" not in msg and "perfbp slots" not in msg
    assert "or give --multiplex to rotate the watches" in info.value.message_for("cli")


# -- the CLI: ranges split over several registers, counted as one watch ---------------

@pytest.mark.kernel
def test_stat_sums_the_pieces_of_an_aligned_range(plan_writes):
    exe, area = plan_writes
    r = run_perfbp("stat", "--json", "-w", f"{area:#x}/16", "--", str(exe), str(N_A), str(N_B))
    assert r.returncode == 0, r.stderr
    (w,) = one_json(r.stdout)["watches"]
    assert (w["watch"], w["hits"], w["slots"], w["length"]) == \
        (f"{area:#x}/16", N_A + N_B, 2, 16)
    assert "estimated" not in w

    r = run_perfbp("stat", "-w", f"{area:#x}/16", "--", str(exe), str(N_A), str(N_B))
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.rstrip().endswith(f"{area:#x}/16:w)")]
    assert len(rows) == 1, r.stdout
    assert rows[0].split()[0] == f"{N_A + N_B:,}"


@pytest.mark.kernel
@pytest.mark.parametrize("first, length", [(1, 8), (0, 3), (7, 2), (3, 13)])
def test_stat_sums_the_pieces_of_a_misaligned_range(plan_writes, first, length):
    exe, area = plan_writes
    addr = area + BYTES_AT + first
    spec = f"{addr:#x}/{length}"
    expected = sum(BYTE_WRITES[first:first + length])
    r = run_perfbp("stat", "--json", "-w", spec, "--", str(exe), str(N_A), str(N_B))
    assert r.returncode == 0, r.stderr
    (w,) = one_json(r.stdout)["watches"]
    assert (w["watch"], w["hits"], w["slots"]) == \
        (spec, expected, len(split_range(addr, length)))


def test_stat_mem_spec_is_one_register(plan_writes):
    exe, area = plan_writes
    err = one_error_line(run_perfbp("stat", "-w", f"mem:{area + BYTES_AT + 1:#x}/8",
                                    "--", str(exe), "1", "1"))
    assert "without mem:" in err
    assert f"{area + BYTES_AT + 1:#x}/8:w without mem:" in err
