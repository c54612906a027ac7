"""A model of the kernel's hardware-breakpoint slot accounting.

This mirrors ``kernel/events/hw_breakpoint.c`` as it is since Marco Elver's
2022 rewrite ("perf/hw_breakpoint: Optimize for thousands of tasks", v6.1),
so that perfbp can tell *before* opening anything whether a set of
breakpoints fits, and why not.  The kernel's facts, and the names used here:

* The resource is a per-CPU count of debug registers ("slots") per slot type.
  ``find_slot_idx()``: a type with R or W bits is TYPE_DATA, anything else
  TYPE_INST; on x86 and sh (``CONFIG_HAVE_MIXED_BREAKPOINTS_REGS``) both are
  one pool.  Every breakpoint weighs 1 (``hw_breakpoint_weight()``).
* A breakpoint is CPU-bound (``pid == -1, cpu == c``), task-bound on every
  CPU (``cpu == -1``), or task-bound on one CPU.  A task is a thread.
* ``__reserve_bp_slot()`` admits a breakpoint when
  ``max_bp_pinned_slots(bp, type) + 1 <= nr_slots[type]``, where
  ``max_bp_pinned_slots`` is the maximum over the breakpoint's CPUs (all
  *possible* CPUs for ``cpu == -1``) of ``cpu_pinned[c]`` plus, for a
  task-bound breakpoint, ``task_bp_pinned(c)`` of its own task, or, for a
  CPU-bound one, ``max_task_bp_pinned(c)`` over every task.
* The slot is taken at event creation and released only when the event is
  freed (``release_bp_slot()``): disabled events hold their slot.
* Inherited child events reserve again, against the child task.
* Errno order in ``hw_breakpoint_event_init()``: EOPNOTSUPP when the type's
  pool has no slots (Linux 6.15+), then EINVAL for ``bp_type`` 0 or 7, then
  ENOSPC from the slot check, and only then the architecture's validation
  (so a full thread answers ENOSPC even to an invalid length).

The model keeps the list of reservations and evaluates the admission rule
directly (the closed form of the kernel's histograms, which agree with it by
construction: a slot count per CPU is the histogram's highest bucket).  Pure
Python; ``tests/test_slots.py`` checks it against the real kernel.
"""

from __future__ import annotations

import errno as E
import itertools
from dataclasses import dataclass
from typing import Hashable, Iterable, Optional

from ._uapi import (
    HW_BREAKPOINT_EMPTY,
    HW_BREAKPOINT_INVALID,
    HW_BREAKPOINT_R,
    HW_BREAKPOINT_RW,
    HW_BREAKPOINT_W,
    HW_BREAKPOINT_X,
)
from ..errors import InvalidBreakpoint, NoBreakpointSlots, Unsupported

TYPE_INST = 0
TYPE_DATA_SPLIT = 1

_TYPE_NAMES = {"r": HW_BREAKPOINT_R, "w": HW_BREAKPOINT_W, "rw": HW_BREAKPOINT_RW,
               "x": HW_BREAKPOINT_X}

#: Slot counts per architecture: (data slots, instruction slots, shared pool).
ARCH_SLOTS = {
    "x86_64": (4, 4, True),
    "i386": (4, 4, True),
    "sh": (2, 2, True),
}


def bp_type_of(bp_type: "int | str") -> int:
    """An ``HW_BREAKPOINT_*`` value from an int or ``"r"``/``"w"``/``"rw"``/``"x"``."""
    if isinstance(bp_type, str):
        try:
            return _TYPE_NAMES[bp_type]
        except KeyError:
            raise InvalidBreakpoint(f"unknown breakpoint type {bp_type!r}: use r, w, rw or x") from None
    return int(bp_type)


@dataclass(frozen=True)
class Reservation:
    """One breakpoint holding a slot (what :meth:`SlotModel.reserve` returns).

    Attributes:
        task: the task (thread) it is bound to, or None for a CPU-bound one.
        cpu: its CPU, or -1 for every CPU.
        bp_type: its ``HW_BREAKPOINT_*`` type.
        slot_type: the pool it draws on (``find_slot_idx``).
        inherit: children of ``task`` reserve a copy (see :meth:`fork`).
        owner: free text saying who holds it (for explanations).
        inherited: this is a child's copy, freed when the child exits.
    """

    serial: int
    task: Optional[Hashable]
    cpu: int
    bp_type: int
    slot_type: int
    inherit: bool = False
    owner: str = ""
    inherited: bool = False


class SlotModel:
    """The kernel's slot accounting for one machine.

    Args:
        arch: ``x86_64`` (4 shared slots), ``arm64``/``aarch64`` or
            ``powerpc``/``ppc64le`` (split pools: give ``data_slots`` and
            ``inst_slots``; powerpc has 0 instruction slots), or any name with
            explicit counts.
        possible_cpus: the number of possible CPUs (0..N-1), or the CPU ids.
        data_slots, inst_slots: override the architecture's counts.
        shared: data and instruction breakpoints share one pool.

    Example::

        model = SlotModel("x86_64", possible_cpus=2)
        h = model.reserve(task=1234, cpu=-1, bp_type="w")
        model.would_fit(None, 0, "x")      # a CPU-bound breakpoint on CPU 0?
        model.release(h)
    """

    def __init__(self, arch: str = "x86_64", possible_cpus: "int | Iterable[int]" = 1, *,
                 data_slots: "int | None" = None, inst_slots: "int | None" = None,
                 shared: "bool | None" = None) -> None:
        known = ARCH_SLOTS.get(arch)
        if arch in ("arm64", "aarch64", "powerpc", "ppc64", "ppc64le", "arm", "loongarch64"):
            if data_slots is None or (inst_slots is None and not arch.startswith(("powerpc", "ppc"))):
                raise ValueError(f"{arch} has no fixed slot counts: pass data_slots= and "
                                 f"inst_slots= (read them from the boot log or probe)")
            known = (data_slots, 0 if inst_slots is None else inst_slots, False)
        if known is None:
            if data_slots is None or inst_slots is None:
                raise ValueError(f"unknown architecture {arch!r}: pass data_slots=, inst_slots=")
            known = (data_slots, inst_slots, bool(shared))
        d, i, sh = known
        self.arch = arch
        self.shared = sh if shared is None else shared
        data = d if data_slots is None else data_slots
        inst = i if inst_slots is None else inst_slots
        if self.shared:
            self.nr_slots = {TYPE_INST: data}
        else:
            self.nr_slots = {TYPE_INST: inst, TYPE_DATA_SPLIT: data}
        if isinstance(possible_cpus, int):
            self.cpus = tuple(range(possible_cpus))
        else:
            self.cpus = tuple(sorted(possible_cpus))
        self._held: dict[int, Reservation] = {}
        self._serial = itertools.count(1)

    # -- kernel/events/hw_breakpoint.c, in Python ----------------------------------------
    def find_slot_idx(self, bp_type: int) -> int:
        """``find_slot_idx()``: TYPE_DATA if the type has R or W bits."""
        if bp_type & HW_BREAKPOINT_RW:
            return TYPE_INST if self.shared else TYPE_DATA_SPLIT
        return TYPE_INST

    def hw_breakpoint_slots(self, slot_type: int) -> int:
        return self.nr_slots[slot_type]

    def cpu_pinned(self, cpu: int, slot_type: int) -> int:
        """``bp_cpuinfo[cpu][type].cpu_pinned``: CPU-bound breakpoints on ``cpu``."""
        return sum(1 for r in self._held.values()
                   if r.task is None and r.cpu == cpu and r.slot_type == slot_type)

    def task_bp_pinned(self, cpu: int, task: Hashable, slot_type: int) -> int:
        """``task_bp_pinned()``: ``task``'s breakpoints that apply on ``cpu``."""
        return sum(1 for r in self._held.values()
                   if r.task == task and r.slot_type == slot_type and r.cpu in (-1, cpu))

    def max_task_bp_pinned(self, cpu: int, slot_type: int) -> int:
        """``max_task_bp_pinned()``: the most any one task holds on ``cpu``."""
        tasks = {r.task for r in self._held.values() if r.task is not None}
        return max((self.task_bp_pinned(cpu, t, slot_type) for t in tasks), default=0)

    def cpus_of(self, cpu: int) -> "tuple[int, ...]":
        """``cpumask_of_bp()``: the one CPU, or every possible CPU."""
        return (cpu,) if cpu >= 0 else self.cpus

    def max_bp_pinned_slots(self, task: Optional[Hashable], cpu: int, slot_type: int) -> int:
        """``max_bp_pinned_slots()``: the fullest CPU this breakpoint would use."""
        best = 0
        for c in self.cpus_of(cpu):
            nr = self.cpu_pinned(c, slot_type)
            if task is None:
                nr += self.max_task_bp_pinned(c, slot_type)
            else:
                nr += self.task_bp_pinned(c, task, slot_type)
            best = max(best, nr)
        return best

    # -- the interface -----------------------------------------------------------------
    def check(self, task: Optional[Hashable], cpu: int, bp_type: "int | str") -> None:
        """Raise what ``perf_event_open`` would raise for this breakpoint's
        slot, in the kernel's order; return when it fits.

        Raises:
            Unsupported: the type's pool has no slots (EOPNOTSUPP).
            InvalidBreakpoint: ``bp_type`` 0 or 7, or a CPU the model does not
                have (EINVAL).
            NoBreakpointSlots: no slot is free (ENOSPC).
        """
        t = bp_type_of(bp_type)
        if cpu >= 0 and cpu not in self.cpus:
            raise InvalidBreakpoint(f"CPU {cpu} is not a possible CPU "
                                    f"(possible: {','.join(map(str, self.cpus))})")
        if task is None and cpu < 0:
            raise InvalidBreakpoint("a CPU-bound breakpoint needs a CPU (pid -1 and cpu -1 is EINVAL)")
        slot_type = self.find_slot_idx(t)
        if self.hw_breakpoint_slots(slot_type) == 0:
            raise Unsupported(f"this machine has no {'instruction' if slot_type == TYPE_INST else 'data'} "
                              f"breakpoint slots (EOPNOTSUPP)", errno=E.EOPNOTSUPP)
        if t in (HW_BREAKPOINT_EMPTY, HW_BREAKPOINT_INVALID):
            raise InvalidBreakpoint(f"breakpoint type {t} is not a breakpoint (EINVAL)")
        used = self.max_bp_pinned_slots(task, cpu, slot_type)
        total = self.hw_breakpoint_slots(slot_type)
        if used + 1 > total:
            raise NoBreakpointSlots(self.explain(task, cpu, slot_type, used, total),
                                    task=task, cpu=cpu)

    def would_fit(self, task: Optional[Hashable], cpu: int, bp_type: "int | str") -> bool:
        """Whether :meth:`reserve` would succeed (False for any refusal)."""
        try:
            self.check(task, cpu, bp_type)
        except (NoBreakpointSlots, InvalidBreakpoint, Unsupported):
            return False
        return True

    def reserve(self, task: Optional[Hashable], cpu: int, bp_type: "int | str", *,
                inherit: bool = False, owner: str = "", _inherited: bool = False) -> Reservation:
        """``reserve_bp_slot()``: take a slot, or raise as the kernel would.

        Args:
            task: the thread it is bound to, or None for a CPU-bound breakpoint.
            cpu: a CPU, or -1 for every CPU (task-bound only).
            bp_type: ``HW_BREAKPOINT_*`` or ``"r"``, ``"w"``, ``"rw"``, ``"x"``.
            inherit: children of ``task`` get a copy (see :meth:`fork`).
            owner: who holds it, for explanations.

        Returns:
            A handle for :meth:`release`.
        """
        self.check(task, cpu, bp_type)
        t = bp_type_of(bp_type)
        r = Reservation(next(self._serial), task, cpu, t, self.find_slot_idx(t), inherit, owner,
                        _inherited)
        self._held[r.serial] = r
        return r

    def admit(self, task: Optional[Hashable], cpu: int, bp_type: "int | str", *,
              owner: str = "") -> Reservation:
        """Record a breakpoint the kernel already admitted, without checking
        (the model's baseline may differ from the kernel's: the kernel is
        the authority on what it accepted)."""
        t = bp_type_of(bp_type)
        r = Reservation(next(self._serial), task, cpu, t, self.find_slot_idx(t), False, owner)
        self._held[r.serial] = r
        return r

    def release(self, handle: Reservation) -> None:
        """``release_bp_slot()``: the event was freed."""
        self._held.pop(handle.serial, None)

    def fork(self, parent: Hashable, child: Hashable) -> "list[Reservation]":
        """``inherit_event()``: a new child task reserves a copy of each of the
        parent's inherited breakpoints, all or nothing (the kernel fails the
        fork with ENOSPC when one does not fit).

        Raises:
            NoBreakpointSlots: a copy does not fit (the fork would fail).
        """
        made: list[Reservation] = []
        try:
            for r in [r for r in self._held.values() if r.task == parent and r.inherit]:
                made.append(self.reserve(child, r.cpu, r.bp_type, inherit=True,
                                         owner=r.owner, _inherited=True))
        except NoBreakpointSlots:
            for r in made:
                self.release(r)
            raise
        return made

    def exit(self, task: Hashable) -> None:
        """A task exited: its *inherited* copies are freed (the originals are
        held by their file descriptors until closed)."""
        for serial in [n for n, r in self._held.items() if r.task == task and r.inherited]:
            del self._held[serial]

    def is_used(self) -> bool:
        """``hw_breakpoint_is_used()``: any slot held at all."""
        return bool(self._held)

    @property
    def reservations(self) -> "list[Reservation]":
        return list(self._held.values())

    def free_slots(self, task: Optional[Hashable], cpu: int, bp_type: "int | str" = "w") -> int:
        """How many more breakpoints of this kind would fit."""
        st = self.find_slot_idx(bp_type_of(bp_type))
        return max(0, self.hw_breakpoint_slots(st) - self.max_bp_pinned_slots(task, cpu, st))

    # -- words ---------------------------------------------------------------------------
    def explain(self, task, cpu, slot_type, used, total) -> str:
        """Plain words: why a breakpoint does not fit, and who holds the slots."""
        kind = "" if self.shared else (" instruction" if slot_type == TYPE_INST else " data")
        if task is None:
            where = f"CPU {cpu}"
        else:
            where = f"thread {task}" + (f" on CPU {cpu}" if cpu >= 0 else "")
        holders = []
        for r in self._held.values():
            if r.slot_type != slot_type:
                continue
            applies = (r.task == task and (cpu < 0 or r.cpu in (-1, cpu))) if task is not None \
                else (r.cpu == cpu or r.task is not None)
            if r.task is None and (cpu < 0 or r.cpu == cpu):
                applies = True
            if applies:
                holders.append(r.owner or ("a CPU-wide breakpoint on CPU %d" % r.cpu if r.task is None
                                           else f"a breakpoint of thread {r.task}"))
        held = (": held by " + "; ".join(sorted(set(holders)))) if holders else ""
        return (f"no{kind} breakpoint slot is free for {where}: {used} of {total} are "
                f"in use{held}")
