"""``perfbp check``: can hardware watchpoints work here, and how well?

Each check opens real events on the calling thread and compares exact counts:
some virtual machines accept breakpoints and then never fire them, which no
amount of reading /sys reveals.
"""

from __future__ import annotations

import ctypes
import errno as E
import signal
from dataclasses import dataclass

from ..kernel import arch, system
from ..kernel.breakpoint import Breakpoint
from ..kernel.counter import Counter
from ..errors import PerfbpError
from ..kernel.events import EventOptions

#: Writes made by the firing check: a prime, so an off-by-some shows.
CHECK_WRITES = 10007


@dataclass(frozen=True)
class CheckItem:
    """One line of the report.

    Attributes:
        name: short key (``pmu``, ``paranoid``, ``fires`` ...).
        ok: passed (None: informational only).
        summary: one line in plain words.
        value: the measured value, for ``--json``.
    """

    name: str
    ok: "bool | None"
    summary: str
    value: object = None


@dataclass(frozen=True)
class CheckReport:
    items: "list[CheckItem]"

    @property
    def works(self) -> bool:
        """Watchpoints work here: the PMU exists and a watch counts exactly."""
        return all(i.ok for i in self.items if i.name in ("pmu", "fires"))

    def as_dict(self) -> dict:
        return {"works": self.works,
                "checks": {i.name: {"ok": i.ok, "summary": i.summary, "value": i.value}
                           for i in self.items}}


_PARANOID_MEANING = {
    -1: "everything allowed to everyone",
    0: "CPU-wide watches allowed to everyone; no raw tracepoints",
    1: "user and kernel watches of your own processes; CPU-wide watches need CAP_PERFMON",
    2: "user-space watches of your own processes; kernel and CPU-wide need CAP_PERFMON",
}


def _paranoid() -> CheckItem:
    p = system.perf_event_paranoid()
    if p is None:
        return CheckItem("paranoid", None, "perf_event_paranoid cannot be read", None)
    meaning = _PARANOID_MEANING.get(p, "no perf events without CAP_PERFMON")
    privileged = system.has_capability(system.CAP_PERFMON) or system.has_capability(system.CAP_SYS_ADMIN)
    if privileged:
        meaning += " (this process has CAP_PERFMON/CAP_SYS_ADMIN, so no limit applies)"
    return CheckItem("paranoid", None, f"perf_event_paranoid = {p}: {meaning}", p)


def _caps() -> CheckItem:
    held = [name for cap, name in sorted(system.CAP_NAMES.items()) if system.has_capability(cap)]
    missing = [name for cap, name in sorted(system.CAP_NAMES.items()) if not system.has_capability(cap)]
    text = "capabilities held: " + (", ".join(held) if held else "none")
    if missing:
        text += "; not held: " + ", ".join(missing)
    return CheckItem("capabilities", None, text, held)


def _write_watched(writes: int) -> "tuple[int, int]":
    """Write a watched cell ``writes`` times: ``(the kernel's count, the
    debug exceptions that arrived without their status meanwhile)``.

    Raises:
        PerfbpError: the watch could not be opened.
    """
    from ..kernel.events import TrapGuard

    cell = (ctypes.c_long * 2)()
    addr = ctypes.addressof(cell)
    with Counter(Breakpoint.write(addr, 8)) as c:
        taken = TrapGuard.taken
        for i in range(writes):
            cell[0] = i
        cell[1] = 1  # outside the watched range: must not count
        return c.read(), TrapGuard.taken - taken


def _fires() -> CheckItem:
    try:
        hits, lost = _write_watched(CHECK_WRITES)
    except PerfbpError as exc:
        return CheckItem("fires", False, f"a write watch could not be opened: {exc}", None)
    if hits == CHECK_WRITES:
        return CheckItem("fires", True, f"a write watch fired and counted exactly "
                         f"({hits} of {CHECK_WRITES} writes)", hits)
    if hits + lost == CHECK_WRITES:
        return CheckItem("fires", True, f"a write watch fired on every write ({CHECK_WRITES} "
                         f"of {CHECK_WRITES}; {lost} of them without their status: see "
                         f"'status')", CHECK_WRITES)
    if hits == 0:
        return CheckItem("fires", False, f"a write watch opened but never fired (0 of "
                         f"{CHECK_WRITES} writes): this machine (a VM?) does not "
                         f"deliver debug traps", hits)
    return CheckItem("fires", False, f"a write watch counted {hits} of {CHECK_WRITES} writes", hits)


STATUS_WRITES = 100003


def _status() -> CheckItem:
    """Whether every hit reaches the kernel with its status (DR6): some
    hypervisors now and then deliver the debug exception without it."""
    try:
        hits, lost = _write_watched(STATUS_WRITES)
    except PerfbpError as exc:
        return CheckItem("status", False, f"a write watch could not be opened: {exc}", None)
    missed = STATUS_WRITES - hits
    if missed == 0:
        return CheckItem("status", True, f"every one of {STATUS_WRITES:,} hits arrived with "
                         f"its status (DR6)", 0)
    return CheckItem("status", False,
                     f"this machine lost {missed:,} of {STATUS_WRITES:,} hits ({lost:,} arrived "
                     f"as debug exceptions without their status: the hypervisor drops DR6; "
                     f"the rest never trapped). The kernel counts none of them, and a program "
                     f"that does not handle SIGTRAP dies of them (perf's too): perfbp keeps "
                     f"the commands it launches alive and adds such hits back where only one "
                     f"watch can have taken them ('recovered'), and says when it cannot", missed)


def _executes() -> CheckItem:
    libc = ctypes.CDLL(None)
    fn = libc.labs
    addr = ctypes.cast(fn, ctypes.c_void_p).value
    calls = 1009
    try:
        with Counter(Breakpoint.execute(addr)) as c:
            for i in range(calls):
                fn(i)
            hits = c.read()
    except PerfbpError as exc:
        return CheckItem("execute", False, f"an execute breakpoint could not be opened: {exc}")
    ok = hits == calls
    return CheckItem("execute", ok, f"an execute breakpoint on labs() counted {hits} of "
                     f"{calls} calls", hits)


def _modify() -> CheckItem:
    cell = (ctypes.c_long * 2)()
    addr = ctypes.addressof(cell)
    try:
        with Counter(Breakpoint.write(addr, 8)) as c:
            c.move(addr + 8)
            cell[0] = 1
            cell[1] = 1
            cell[1] = 2
            hits = c.read()
    except PerfbpError as exc:
        return CheckItem("modify", False, f"moving a watch in place failed: {exc}")
    ok = hits == 2
    return CheckItem("modify", ok, "PERF_EVENT_IOC_MODIFY_ATTRIBUTES moves a watch in place"
                     if ok else f"a moved watch counted {hits} writes instead of 2", ok)


def _sigtrap() -> CheckItem:
    cell = (ctypes.c_long * 1)()
    addr = ctypes.addressof(cell)
    seen = []
    previous = signal.signal(signal.SIGTRAP, lambda s, f: seen.append(s))
    try:
        opts = EventOptions(sigtrap=True, sig_data=0x5EED)
        with Counter(Breakpoint.write(addr, 8), options=opts):
            cell[0] = 7
            for _ in range(1000):  # let the interpreter run the Python handler
                if seen:
                    break
    except PerfbpError as exc:
        if exc.errno == E.EINVAL:
            return CheckItem("sigtrap", False, "attr.sigtrap is not supported "
                             "(needs Linux 5.13+): no synchronous hit callbacks", False)
        return CheckItem("sigtrap", False, f"sigtrap watch could not be opened: {exc}", False)
    finally:
        signal.signal(signal.SIGTRAP, previous)
    ok = len(seen) == 1
    return CheckItem("sigtrap", ok, "synchronous SIGTRAP on a hit works (callbacks)"
                     if ok else f"expected one SIGTRAP, got {len(seen)}", ok)


#: Writes made by the values check (1, 2, ..., VALUE_WRITES): a prime
VALUE_WRITES = 101


def _values() -> CheckItem:
    """Conditions tested in the kernel (``--if``, ``--values``): a BPF
    program on a write watch, which must see every write and match one."""
    from ..kernel.values import ValueProgram

    cell = (ctypes.c_uint64 * 1)()
    addr = ctypes.addressof(cell)
    bp = Breakpoint.write(addr, 8)
    try:
        with ValueProgram.for_breakpoint(bp, "new == 5", emit=False,
                                         name="perfbp_check") as prog, \
                Counter(bp, options=EventOptions(enabled=False, sample_period=1)) as c:
            for fd in c.fds:
                prog.attach(fd)
            c.enable()
            for i in range(1, VALUE_WRITES + 1):
                cell[0] = i
            c.disable()
            hits, tally = c.read(), prog.tally()
    except PerfbpError as exc:
        return CheckItem("values", False, f"conditions on values (--if, --values) are not "
                         f"available: {exc}", None)
    ok = tally.matched == 1 and tally.hits == hits == VALUE_WRITES
    if ok:  # and samples carry the values (record --if, top --if)
        from ..kernel.events import Target
        from ..kernel.sampling import Sampler

        try:
            with Sampler([bp], Target.this_thread(), condition="new == 5") as s:
                for i in range(1, VALUE_WRITES + 1):
                    cell[0] = i
                s.disable()
                batch = s.read()
        except PerfbpError as exc:
            return CheckItem("values", False, f"conditions are tested in the kernel, but "
                             f"their samples cannot be written: {exc}", 0)
        got = list(zip(batch.samples.old.tolist(), batch.samples.new.tolist())) \
            if len(batch) else []
        if got != [(4, 5)]:
            return CheckItem("values", False, f"a sampled condition 'new == 5' over 1..."
                             f"{VALUE_WRITES} gave the values {got[:3]} instead of "
                             f"[(4, 5)]", len(got))
        return CheckItem("values", True, f"conditions on values (--if, --values) are tested in "
                         f"the kernel: 'new == 5' matched 1 of {VALUE_WRITES} writes, and its "
                         f"sample says 4 -> 5", 1)
    return CheckItem("values", False, f"a condition tested in the kernel matched "
                     f"{tally.matched} of {tally.hits} writes it saw ({hits} counted, "
                     f"{VALUE_WRITES} made; 'new == 5' should match 1)", tally.matched)


def _capacity() -> CheckItem:
    from ..planning.planner import probe

    try:
        found = probe()
    except PerfbpError as exc:
        return CheckItem("slots", False, f"slot probe failed: {exc}")
    n, shared = found["task_slots"], found["shared_data_execute"]
    rules = arch.current()
    if shared is None:
        return CheckItem("slots", False, "no breakpoint slot is free for this thread", 0)
    how = "shared by data and execute breakpoints" if shared else "data only (execute has its own)"
    note = "" if n == rules.data_slots else f" (the architecture has {rules.data_slots}: " \
        f"{rules.data_slots - n} held by something else, such as gdb or a system-wide watch)"
    return CheckItem("slots", n > 0, f"{n} slots free for this thread, {how}{note}",
                     {"task_slots": n, "shared_data_execute": shared})


def run_checks() -> CheckReport:
    """Run every check; never raises for a missing feature (it is reported)."""
    items = [CheckItem("kernel", None, f"kernel {system.kernel_release()} on {arch.current().name}",
                       system.kernel_release())]
    pmu = system.breakpoint_pmu_type()
    if pmu is None:
        items.append(CheckItem("pmu", False, "no breakpoint PMU: "
                               "/sys/bus/event_source/devices/breakpoint is missing "
                               "(kernel built without CONFIG_HAVE_HW_BREAKPOINT?)", None))
        return CheckReport(items + [_paranoid(), _caps()])
    items.append(CheckItem("pmu", True, f"breakpoint PMU present (type {pmu})", pmu))
    items += [_paranoid(), _caps(), _fires(), _status(), _executes(), _modify(), _sigtrap(),
              _values(), _capacity()]
    return CheckReport(items)
