"""Planning watches onto debug-register slots before opening anything.

A :class:`Watch` is what the user asked for — a range, perhaps longer than
one register can take — and the :class:`~perfbp.Breakpoint` pieces that
cover it (:func:`perfbp.planning.regions.split_range`).  :func:`plan` checks, with the
kernel's own accounting (:class:`~perfbp.kernel.slots.SlotModel`, holding every
event perfbp has open in this process), whether a set of watches fits on a
target, and explains in plain words why or why not.  Opening is then
all-or-nothing: if any event fails, every one already opened is closed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..kernel import arch, system
from ..kernel.breakpoint import Breakpoint
from ..errors import NoBreakpointSlots, NoSuchProcess, PerfbpError, phrase
from ..kernel.events import LEDGER, Target
from .regions import split_range


@dataclass(frozen=True)
class Watch:
    """One watch: a label, and the breakpoints (pieces) that cover its range.

    Build one with :meth:`range` (split as needed), :meth:`of` (one
    breakpoint), or :meth:`from_spec` (a parsed ``-w`` spec).

    Attributes:
        label: how outputs name it.
        pieces: the breakpoints, one per debug register.
        exclude_kernel: None (default: user addresses exclude kernel-mode
            hits), True or False.
        warning: why the watch can never fire, when perfbp can tell (a
            write watch on memory the program maps read-only: no store
            reaches it, so no x86 data breakpoint fires), or None.  Set
            where a name or address is resolved in a program
            (:mod:`perfbp.symbols.resolve`); not part of the watch's identity.
    """

    label: str
    pieces: "tuple[Breakpoint, ...]"
    exclude_kernel: "bool | None" = None
    warning: "str | None" = field(default=None, compare=False)

    @classmethod
    def range(cls, address: int, length: int, access: str = "w", *, label: str = "",
              exclude_kernel: "bool | None" = None) -> "Watch":
        """A watch on ``length`` bytes at ``address``, split over as many
        registers as alignment needs (execute: one register)."""
        if access == "x":
            pieces = (Breakpoint.execute(address),)
        else:
            pieces = tuple(Breakpoint(a, n, access) for a, n in split_range(address, length))
        return cls(label or f"{address:#x}/{length}:{access}", pieces, exclude_kernel)

    @classmethod
    def of(cls, bp: Breakpoint, label: str = "", exclude_kernel: "bool | None" = None) -> "Watch":
        return cls(label or bp.spec, (bp,), exclude_kernel)

    @classmethod
    def from_spec(cls, spec) -> "Watch":
        """From a :class:`perfbp.planning.spec.WatchSpec`."""
        return cls(spec.label, tuple(spec.pieces()), spec.exclude_kernel)

    @property
    def address(self) -> int:
        return self.pieces[0].address

    @property
    def length(self) -> int:
        return self.pieces[-1].address + self.pieces[-1].length - self.pieces[0].address

    @property
    def access(self) -> str:
        return self.pieces[0].access

    @property
    def spec(self) -> str:
        """perf's spelling for one piece; ``ADDR/LEN:ACCESS`` for a split range."""
        if len(self.pieces) == 1:
            return self.pieces[0].spec
        return f"{self.address:#x}/{self.length}:{self.access}"

    def describe_pieces(self) -> str:
        if len(self.pieces) == 1:
            return "1 slot"
        sizes = "+".join(str(p.length) for p in self.pieces[:8])
        more = "+..." if len(self.pieces) > 8 else ""
        return f"{len(self.pieces)} slots ({sizes}{more} bytes)"


def as_watches(items: "Iterable") -> "list[Watch]":
    """Accept Watch objects, Breakpoints, or ``(breakpoint, label,
    exclude_kernel)`` triples."""
    out = []
    for it in items:
        if isinstance(it, Watch):
            out.append(it)
        elif isinstance(it, Breakpoint):
            out.append(Watch.of(it))
        else:
            bp, label, ek = it
            out.append(Watch.of(bp, label, ek))
    return out


@dataclass(frozen=True)
class Plan:
    """Whether a set of watches fits on a target, and why.

    Attributes:
        watches: the watches, with their pieces.
        target: where (description).
        slots_needed: debug registers needed in every watched thread (or on
            every watched CPU).
        capacity: registers the architecture has per thread and per CPU.
        free: registers perfbp's model says are free there now (capacity
            minus what perfbp's own open events hold; slots held outside
            perfbp are invisible until the kernel refuses).
        fits: ``slots_needed <= free``.
        explanation: the plain-words account (what to do named as the
            Python API names it; :meth:`explain` for the command line's
            words).
    """

    watches: "list[Watch]"
    target: str
    slots_needed: int
    capacity: int
    free: int
    fits: bool
    explanation: str
    tasks: int = 1
    shared_data_execute: bool = True
    held_by_perfbp: "list[str]" = field(default_factory=list)
    template: str = field(default="", repr=False, compare=False)

    def explain(self, front: str = "api") -> str:
        """The explanation in ``front``'s words (``"api"`` or ``"cli"``: see
        :func:`perfbp.errors.phrase`)."""
        return phrase(self.template, front) if self.template else self.explanation

    def as_dict(self) -> dict:
        return {"fits": self.fits, "slots_needed": self.slots_needed,
                "capacity": self.capacity, "free": self.free, "target": self.target,
                "threads": self.tasks, "shared_data_execute": self.shared_data_execute,
                "explanation": self.explanation, "held_by_perfbp": self.held_by_perfbp,
                "watches": [{"watch": w.label, "address": w.address, "length": w.length,
                             "access": w.access, "slots": len(w.pieces),
                             "pieces": [{"address": p.address, "length": p.length}
                                        for p in w.pieces],
                             **({"warning": w.warning} if w.warning else {})}
                            for w in self.watches]}

    def require(self) -> None:
        """Raise :class:`~perfbp.NoBreakpointSlots` with the explanation when
        the plan does not fit."""
        if not self.fits:
            raise NoBreakpointSlots.phrased(self.template or self.explanation)


def _tasks_of(target: "Target | None") -> "list":
    """The model's task ids for a target (a fresh task for a launch)."""
    if target is None:
        return [("new process",)]
    if target.kind == "thread":
        return [LEDGER.task_of(target.pid)]
    if target.kind == "process":
        try:
            return system.thread_ids(target.pid)
        except ProcessLookupError:
            raise NoSuchProcess(f"cannot plan watches on process {target.pid}: it does "
                                f"not exist (or has exited)", pid=target.pid) from None
    return [None]


def plan(watches: "Sequence", target: "Target | None" = None) -> Plan:
    """Check whether ``watches`` fit on ``target`` (None: a command perfbp
    will launch), with the kernel's slot accounting, before opening anything.

    Returns:
        The :class:`Plan`; call :meth:`Plan.require` to raise when it does not
        fit.
    """
    ws = as_watches(watches)
    rules = arch.current()
    needed = sum(len(w.pieces) for w in ws)
    tasks = _tasks_of(target)
    cpus = list(target.cpus) if target is not None and target.kind == "cpus" else []
    # a thread or process target restricted to one CPU is opened with that
    # cpu, and the kernel checks only that CPU (cpumask_of_bp)
    task_cpu = target.cpus[0] if target is not None and target.kind != "cpus" and target.cpus else -1
    model, held = LEDGER.snapshot()
    free = rules.data_slots
    fits = True
    for task in tasks:
        for c in (cpus if task is None else [task_cpu]):
            probe = copy.deepcopy(model)
            n = 0
            for w in ws:
                for p in w.pieces:
                    if probe.would_fit(task, c, p.bp_type):
                        probe.reserve(task, c, p.bp_type)
                        n += 1
            free = min(free, model.free_slots(task, c, "w"))
            if n < needed:
                fits = False
    where = "a new process" if target is None else target.describe()
    if target is None:
        place = "in every thread of the command"
    elif target.kind == "thread":
        place = f"in {where}"
    elif target.kind == "process":
        place = f"in every thread of {where}"
    else:
        place = f"on {where}" if len(cpus) == 1 else f"on each of {where}"
    per = "; ".join(f"{w.label}: {w.describe_pieces()}" for w in ws)
    n_w = len(ws)
    text = (f"{n_w} watch{'es' if n_w != 1 else ''} need{'s' if n_w == 1 else ''} "
            f"{needed} debug-register slot{'s' if needed != 1 else ''} {place} "
            f"({per}). {rules.name} has {rules.data_slots} per thread and per CPU, "
            f"{'shared by data and execute breakpoints' if rules.shared_slots else 'data and execute apart'}")
    in_use = rules.data_slots - free
    if in_use:
        text += (f"; perfbp's own open watches hold {in_use} there "
                 f"({'; '.join(held)})")
    if fits:
        text += (f". It fits ({free - needed} left). Slots held outside perfbp (gdb, "
                 f"another perf, a system-wide watch) show only when opening; "
                 f"{{probe}} measures them for a thread.")
    else:
        text += (f": it does not fit ({free} free). Remove a watch or shorten a range, "
                 f"or give {{multiplex}} to rotate the watches through the slots "
                 f"(counts become estimates).")
    return Plan(ws, where, needed, rules.data_slots, free, fits, phrase(text), len(tasks),
                rules.shared_slots, held, text)


def probe(limit: int = 64, *, target: "Target | None" = None) -> dict:
    """Measure the real capacity here, like perf's tests/bp_account.c: how
    many breakpoints this thread can hold (on every CPU, and on each CPU),
    and whether data and execute breakpoints share slots.  With ``target``
    (a thread, or a process: each of its threads), measure that task's free
    slots instead, and name who holds the others.

    Breakpoints are opened disabled, on this thread or the target's, until
    the kernel says ENOSPC, and closed at once: the target's free slots are
    held for those microseconds (a debugger setting a watchpoint in that
    instant would be refused).

    Returns:
        ``{"task_slots": int, "per_cpu": {cpu: int}, "shared_data_execute":
        bool | None, "cpu_slots": {cpu: int}}``; with ``target``:
        ``{"target": str, "capacity": int, "threads": [{"tid", "comm",
        "free", "per_cpu": {cpu: int}}], "holders": [...], "held_by": str}``
        (each holder as :meth:`perfbp.kernel.holders.Holder.as_dict` gives
        it; ``held_by``: all of them in words).

    Raises:
        NoSuchProcess, PermissionDenied: the target does not exist, or is
            not this user's to watch.
    """
    import ctypes

    from ..kernel.counter import Counter
    from ..kernel.events import EventOptions

    cells = (ctypes.c_long * limit)()
    base = ctypes.addressof(cells)
    off = EventOptions(enabled=False)

    def fill(pid: int, cpu: int) -> "list[Counter]":
        held = []
        while len(held) < limit:
            try:
                bp = Breakpoint.write(base + 8 * len(held), 8)
                if pid == -1:
                    held.append(Counter(bp, pid=-1, cpu=cpu, options=off))
                else:
                    held.append(Counter(bp, target=Target.thread(pid, cpu=cpu), options=off))
            except NoBreakpointSlots:
                break
        return held

    def count(pid: int, cpu: int) -> int:
        held = fill(pid, cpu)
        for c in held:
            c.close()
        return len(held)

    if target is not None:
        return _probe_target(target, count)
    out: dict = {"per_cpu": {}, "cpu_slots": {}}
    held = fill(0, -1)
    out["task_slots"] = len(held)
    shared = None
    if held:
        fn = ctypes.cast(ctypes.CDLL(None).labs, ctypes.c_void_p).value
        try:
            Counter(Breakpoint.execute(fn), options=off).close()
            shared = False
        except NoBreakpointSlots:
            shared = True
    for c in held:
        c.close()
    out["shared_data_execute"] = shared
    for cpu in system.online_cpus():
        out["per_cpu"][cpu] = count(0, cpu)
        try:
            out["cpu_slots"][cpu] = count(-1, cpu)
        except PerfbpError:
            out["cpu_slots"][cpu] = 0
    return out


#: threads of a process ``probe`` measures (the first, by id)
PROBED_THREADS = 64


def _probe_target(target: Target, count) -> dict:
    """:func:`probe` of another task: each thread's free slots on every CPU
    and on each, and who holds the others."""
    from ..kernel import holders

    if target.kind == "cpus" or target.pid <= 0:
        raise PerfbpError("probe a thread or a process by its id (this thread: no target)")
    if target.kind == "process":
        try:
            tids = system.thread_ids(target.pid)[:PROBED_THREADS]
        except ProcessLookupError:
            raise NoSuchProcess(f"cannot probe the slots of process {target.pid}: it does "
                                f"not exist (or has exited)", pid=target.pid) from None
    else:
        tids = [target.pid]
    threads = []
    for tid in tids:
        try:
            free = count(tid, -1)
            per_cpu = {cpu: count(tid, cpu) for cpu in system.online_cpus()}
        except NoSuchProcess:
            if len(tids) == 1:
                raise
            continue  # a thread that ended meanwhile
        threads.append({"tid": tid, "comm": system.comm(tid), "free": free,
                        "per_cpu": per_cpu})
    found = holders.find(target.pid)
    return {"target": target.describe(), "capacity": arch.current().data_slots,
            "threads": threads, "holders": [h.as_dict() for h in found],
            "held_by": holders.summary(found)}
