"""Watching more locations than there are debug registers, by taking turns.

When a plan needs more slots than exist, :class:`Multiplexer` opens as many
counters as there are free slots and rotates the watches through them in time
slices, re-pointing each counter in place with
``PERF_EVENT_IOC_MODIFY_ATTRIBUTES`` (no close/open, so no slot is ever given
up).  For each watch it knows the hits seen while it held a slot and the
fraction of the run it held one, and estimates the whole run's hits by
scaling, as perf scales multiplexed counters (``count * enabled / running``).

Threads and children.  A process target's counters have ``inherit``: every
thread and child process the target starts gets its own copy of each event
(an inherited child event).  The kernel applies each verb of a slot to all
of them before the ioctl returns: ``ENABLE`` and ``DISABLE`` walk the
event's children (``perf_event_for_each_child``), ``MODIFY_ATTRIBUTES``
re-points every child as well (``perf_event_modify_attr``, Linux 5.13+), and
``read()`` adds every child's count, live or exited
(``perf_event_read_value``).  So a slot is on or off, and points at one
piece, in every thread at once — up to the time the ioctl itself takes,
which grows with the number of threads (each running one costs an IPI: tens
of microseconds on a VM, milliseconds when the machine is busy).

That cost is why the slots are switched one at a time: a slot is disabled,
read, re-pointed and enabled again, and the time it was on for a watch runs
from the middle of the ``ENABLE`` ioctl to the middle of the ``DISABLE``
ioctl *of that slot*.  Switching all the slots off, then all of them on
would leave every watch unwatched for the whole switch (all the IPIs of all
the slots) while the target keeps running, and measuring it from the middle
of that switch mis-times the children by up to half of it.  A watch that
stays in the group keeps its slot and is not touched at all.  The kernel's
own per-event times (``PERF_FORMAT_TOTAL_TIME_ENABLED``) are no measure
here: for a per-thread event they advance only while the thread is on a CPU,
and a watched thread spends much of that time in the traps of the very
watch being measured (about 9 us a hit on a VM), so they would credit a
busy watch with more coverage than it had and under-estimate it.

The estimate assumes that the target accesses each location at the same
rate whether it is watched or not, which holds for a program whose pace is
set by something else (a clock, input, other work) and fails for one that
does little but access the watched location: every hit costs a trap, so
such a loop runs thousands of times faster while its location is not
watched, and nearly all of its accesses fall in the moments it is not.  Two
threads doing nothing but writing one variable (``demo/demo``) make 100,042
writes, of which a multiplexed watch sees a few thousand however long it
holds a slot (one thread alone fares the same): no scaling by time, wall
clock or the threads' own, can recover the rest.  Bursts shorter than a
rotation are estimated poorly too; outputs mark every figure as an estimate.
"""

from __future__ import annotations

import time
from typing import Sequence

from ..kernel import system
from ..kernel.counter import Counter
from ..errors import InvalidBreakpoint, NoBreakpointSlots, Unsupported
from ..kernel.events import EventOptions, Target
from ..planning.planner import Watch, plan
from .results import WatchHits

DEFAULT_SLICE = 0.01  # seconds a group of watches holds the slots
#: MODIFY_ATTRIBUTES re-points inherited child events too since this release
#: (perf_event_modify_attr walks event->child_list); before, the threads and
#: children a target starts keep watching the first piece.
MODIFIES_CHILDREN = (5, 13)


def _kernel_version() -> "tuple[int, int]":
    major, _, rest = system.kernel_release().partition(".")
    minor = "".join(ch for ch in rest.partition(".")[0] if ch.isdigit())
    return int(major), int(minor or 0)


class Multiplexer:
    """Rotate ``watches`` through the free slots of ``target``.

    Args:
        watches: more watches (pieces) than there are slots.  A watch may be
            replaced (``watches[i] = ...``, the same number of pieces) while
            the multiplexer runs: its slots follow at the next rotation.
        target: where.
        slice_seconds: how long each group holds the slots.
        enable_on_exec: arm the first group at the target's exec (launch).
        slots: how many counters to use (default: the plan's free slots).
        holders: slot holders opened by the caller instead (perfbp's
            sampler slots): anything with ``retarget``, ``enable``,
            ``disable``, ``read``, ``close`` (and ``read_lost`` when
            sampling).

    Raises:
        NoBreakpointSlots: not one slot is free, or one watch alone needs more
            slots than are free.
        InvalidBreakpoint: the watches disagree on counting kernel-mode hits.
        Unsupported: the target follows threads and children, and the kernel
            is older than 5.13 (it would re-point the target's first thread
            only).
    """

    def __init__(self, watches: "Sequence[Watch]", target: Target, *,
                 slice_seconds: "float | None" = DEFAULT_SLICE, enable_on_exec: bool = False,
                 slots: "int | None" = None, holders: "Sequence | None" = None) -> None:
        self.watches = list(watches)
        self.slice = slice_seconds or DEFAULT_SLICE
        if (target.kind == "process" or target.inherit) and _kernel_version() < MODIFIES_CHILDREN:
            raise Unsupported.phrased(
                f"cannot multiplex on {target.describe()}: Linux "
                f"{system.kernel_release()} does not move the watches of the threads and "
                f"children a process starts (that needs Linux 5.13); watch at most as "
                f"many locations as there are free slots, or watch one thread ({{thread}})")
        kinds = {w.exclude_kernel for w in self.watches}
        if len(kinds) > 1:
            raise InvalidBreakpoint("multiplexed watches must all count kernel-mode hits "
                                    "or all not (:k on all of them or on none)")
        if holders is not None:
            slots = len(holders)
        free = plan([], target).free if slots is None else slots
        widest = max(len(w.pieces) for w in self.watches)
        if free < 1 or widest > free:
            raise NoBreakpointSlots(
                f"cannot multiplex: {free} slot{'s' if free != 1 else ''} free on "
                f"{target.describe()}, and the widest watch needs {widest}")
        self.nslots = free
        opts = EventOptions(enabled=False, enable_on_exec=enable_on_exec,
                            exclude_kernel=kinds.pop())
        first = self.watches[0].pieces[0]
        # the slot holders: perfbp's Counters, or anything with the same verbs
        self.counters: list = list(holders) if holders is not None else []
        try:
            while len(self.counters) < self.nslots:
                self.counters.append(Counter(first, target=target, options=opts))
        except BaseException:
            self.close()
            raise
        self._sampling = all(hasattr(c, "read_lost") for c in self.counters)
        n = len(self.watches)
        self.seen = [0] * n
        self.lost = [0] * n
        self.watched = [0.0] * n  # seconds each watch held its slots
        # per slot: (watch, piece) it counts for, or None (idle); whether it
        # may be on (enable_on_exec can switch it on behind our back); since
        # when it has counted for its watch; the share of the watch's time
        # it carries (1 / pieces); its count and lost count at that moment
        self._held: "list[tuple[int, object] | None]" = [None] * self.nslots
        self._on = [enable_on_exec or holders is not None] * self.nslots
        self._since = [0.0] * self.nslots
        self._share = [0.0] * self.nslots
        self._last = [0] * self.nslots
        self._last_lost = [0] * self.nslots
        self._next = 0
        self._t0 = self._t_slice = None
        self.rotations = 0

    # -- choosing ------------------------------------------------------------------
    def _group(self) -> "list[int]":
        """The next watches, round robin, that fit the slots together."""
        chosen: list[int] = []
        used = 0
        n = len(self.watches)
        i = self._next
        for _ in range(n):
            need = len(self.watches[i].pieces)
            if used + need > self.nslots:
                break
            chosen.append(i)
            used += need
            i = (i + 1) % n
        self._next = i
        return chosen

    def _placement(self, group: "list[int]") -> "list[tuple[int, object] | None]":
        """What each slot holds for ``group``: a watch already in a slot
        keeps it (it is not switched at all), the others take the slots
        left."""
        out: "list[tuple[int, object] | None]" = [None] * self.nslots
        where: "dict[int, list[int]]" = {}
        for j, held in enumerate(self._held):
            if held is not None:
                where.setdefault(held[0], []).append(j)
        incoming = []
        for w in group:
            pieces = self.watches[w].pieces
            slots = where.get(w, [])
            if len(slots) == len(pieces):
                for j, piece in zip(slots, pieces):
                    out[j] = (w, piece)
            else:
                incoming.append(w)
        free = iter([j for j in range(self.nslots) if out[j] is None])
        for w in incoming:
            for piece in self.watches[w].pieces:
                out[next(free)] = (w, piece)
        return out

    @staticmethod
    def preview(watches: "Sequence[Watch]", slots: int) -> "list":
        """The pieces of the first group for ``slots`` slots (round robin from
        the first watch): what holders opened ahead should point at."""
        out: list = []
        for w in watches:
            if len(out) + len(w.pieces) > slots:
                break
            out.extend(w.pieces)
        return out

    # -- switching one slot ---------------------------------------------------------
    def _toggle(self, j: int, verb: str) -> float:
        """Enable or disable slot ``j``; return the middle of the ioctl, the
        best estimate of when it took effect in the target's threads (the
        kernel walks them one by one within it)."""
        before = time.monotonic()
        getattr(self.counters[j], verb)()
        self._on[j] = verb == "enable"
        return (before + time.monotonic()) / 2

    def _credit(self, j: int, until: float) -> None:
        """Add slot ``j``'s hits (and lost samples) and time since it was
        armed to the watch it counts for."""
        w = self._held[j][0]
        c = self.counters[j]
        value = c.read()
        self.seen[w] += value - self._last[j]
        self._last[j] = value
        if self._sampling:
            lost = c.read_lost()
            self.lost[w] += lost - self._last_lost[j]
            self._last_lost[j] = lost
        self.watched[w] += (until - self._since[j]) * self._share[j]
        self._since[j] = until

    def _switch(self, j: int, new: "tuple[int, object] | None") -> None:
        """Give slot ``j`` to ``new`` (a watch and its piece), or idle it.

        Off, read, re-pointed, on: the count read while the slot is off
        belongs to the old watch alone, whatever thread or child made it."""
        if self._on[j]:
            off = self._toggle(j, "disable")
            if self._held[j] is not None:
                self._credit(j, off)
        self._held[j] = None
        if new is None:
            return
        w, piece = new
        c = self.counters[j]
        c.retarget(piece)
        self._last[j] = c.read()
        if self._sampling:
            self._last_lost[j] = c.read_lost()
        self._share[j] = 1.0 / len(self.watches[w].pieces)
        self._held[j] = new
        self._since[j] = self._toggle(j, "enable")

    def _apply(self, placement: "list[tuple[int, object] | None]") -> None:
        """Switch the slots whose watch or piece changes; idle slots off."""
        for j, new in enumerate(placement):
            if new != self._held[j] or (new is None and self._on[j]):
                self._switch(j, new)

    # -- the run ----------------------------------------------------------------------
    def start(self, *, armed_since: "float | None" = None) -> None:
        """Arm the first group (at exec, for a launch) and start the clock.

        Args:
            armed_since: the holders were opened on :meth:`preview`'s
                pieces and have counted since this time (a launch's exec):
                keep their counts instead of re-pointing them.
        """
        group = self._group()
        if armed_since is not None:
            k = 0
            for w in group:
                for piece in self.watches[w].pieces:
                    self._held[k] = (w, piece)
                    self._share[k] = 1.0 / len(self.watches[w].pieces)
                    self._since[k] = armed_since
                    self._last[k] = self._last_lost[k] = 0
                    k += 1
            for c in self.counters:
                c._enabled = True  # enable_on_exec switched them on at exec
            self._on = [True] * self.nslots
            self._t0 = self._t_slice = armed_since
            return
        # a launch has exec'd by now: enable_on_exec may have switched the
        # counters on, and they all point at the first piece
        self._apply(self._placement(group))
        armed = [self._since[j] for j, h in enumerate(self._held) if h is not None]
        self._t0 = sum(armed) / len(armed)
        self._t_slice = time.monotonic()

    def next_rotation(self) -> float:
        return (self._t_slice or time.monotonic()) + self.slice

    def rotate(self) -> None:
        """End the current slice and give the slots to the next group."""
        self._apply(self._placement(self._group()))
        self._t_slice = time.monotonic()
        self.rotations += 1

    def read(self, now: "float | None" = None) -> list:
        """The estimates so far (without ending the slice)."""
        now = time.monotonic() if now is None else now
        total = max(now - (self._t0 or now), 1e-9)
        seen = list(self.seen)
        watched = list(self.watched)
        for j, held in enumerate(self._held):
            if held is not None:
                w = held[0]
                seen[w] += self.counters[j].read() - self._last[j]
                watched[w] += max(0.0, now - self._since[j]) * self._share[j]
        out = []
        for w, s, t in zip(self.watches, seen, watched):
            cover = min(1.0, t / total)
            est = round(s / cover) if cover > 0 else 0
            out.append(WatchHits(w, est, s, cover))
        return out

    def stop(self) -> list:
        """End the run: collect the last slice and return the estimates."""
        end = None
        for j, held in enumerate(self._held):
            if held is not None:
                end = self._toggle(j, "disable")
                self._credit(j, end)
                self._held[j] = None
        return self.read(end)

    def close(self) -> None:
        for c in self.counters:
            c.close()
