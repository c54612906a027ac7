"""Watching more locations than there are debug registers, by taking turns.

When a plan needs more slots than exist, :class:`Multiplexer` opens as many
counters as there are free slots and rotates the watches through them in time
slices, re-pointing each counter in place with
``PERF_EVENT_IOC_MODIFY_ATTRIBUTES`` (no close/open, so no slot is ever given
up).  For each watch it knows the hits seen while it held a slot and the
fraction of the run it held one, and estimates the whole run's hits by
scaling, as perf scales multiplexed counters (``count * enabled / running``).
The estimate is good for steady access rates and poor for bursts shorter than
a rotation; outputs mark it as an estimate.
"""

from __future__ import annotations

import time
from typing import Sequence

from .counter import Counter
from .errors import InvalidBreakpoint, NoBreakpointSlots
from .events import EventOptions, Target
from .planner import Watch, plan

DEFAULT_SLICE = 0.01  # seconds a group of watches holds the slots


class Multiplexer:
    """Rotate ``watches`` through the free slots of ``target``.

    Args:
        watches: more watches (pieces) than there are slots.
        target: where.
        slice_seconds: how long each group holds the slots.
        enable_on_exec: arm the first group at the target's exec (launch).
        slots: how many counters to use (default: the plan's free slots).

    Raises:
        NoBreakpointSlots: not one slot is free, or one watch alone needs more
            slots than are free.
        InvalidBreakpoint: the watches disagree on counting kernel-mode hits.
    """

    def __init__(self, watches: "Sequence[Watch]", target: Target, *,
                 slice_seconds: "float | None" = DEFAULT_SLICE, enable_on_exec: bool = False,
                 slots: "int | None" = None, holders: "Sequence | None" = None) -> None:
        self.watches = list(watches)
        self.slice = slice_seconds or DEFAULT_SLICE
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
        opts = EventOptions(enabled=False, exclude_kernel=kinds.pop())
        self._enable_on_exec = enable_on_exec
        first = self.watches[0].pieces[0]
        # the slot holders: perfbp's Counters, or anything with the same verbs
        # (retarget, enable, disable, read, close; read_lost when sampling)
        self.counters: list = list(holders) if holders is not None else []
        try:
            while len(self.counters) < self.nslots:
                o = EventOptions(enabled=False, enable_on_exec=enable_on_exec,
                                 exclude_kernel=opts.exclude_kernel)
                self.counters.append(Counter(first, target=target, options=o))
        except BaseException:
            self.close()
            raise
        self._sampling = all(hasattr(c, "read_lost") for c in self.counters)
        self.lost = [0] * len(self.watches)
        self._last_lost = [0] * self.nslots
        self.seen = [0] * len(self.watches)
        self.watched = [0.0] * len(self.watches)
        self._last = [0] * self.nslots
        self._assign: list[int] = []  # slot -> watch index (one per piece)
        self._next = 0
        self._t0 = self._t_slice = None
        self.rotations = 0

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

    def _arm(self, group: "list[int]") -> None:
        self._assign = []
        k = 0
        for w in group:
            for piece in self.watches[w].pieces:
                self.counters[k].retarget(piece)
                self._assign.append(w)
                k += 1
        for j in range(k):
            self._last[j] = self.counters[j].read()
            if self._sampling:
                self._last_lost[j] = self.counters[j].read_lost()

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

    def start(self, *, armed_since: "float | None" = None) -> None:
        """Arm the first group (at exec, for a launch) and start the clock.

        Args:
            armed_since: the holders were opened on :meth:`preview`'s
                pieces and have counted since this time (a launch's exec):
                keep their counts instead of re-pointing them.
        """
        if armed_since is not None:
            group = self._group()
            self._assign = [w for w in group for _p in self.watches[w].pieces]
            self._last = [0] * self.nslots
            self._last_lost = [0] * self.nslots
            self._enable_on_exec = False
            for c in self.counters:
                c._enabled = True  # enable_on_exec switched them on at exec
            self._t0 = self._t_slice = armed_since
            return
        group = self._group()
        self._arm(group)
        # retarget() wrote attr.disabled = 1 into the armed events: enable them
        # now, launch or not (a launch has exec'd by now, and the kernel may
        # already have cleared enable_on_exec)
        self._enable_on_exec = False
        self._t0 = self._t_slice = self._switch(self.counters[:len(self._assign)], "enable")

    @staticmethod
    def _switch(counters: "list[Counter]", verb: str) -> float:
        """Enable or disable ``counters``; return the middle of the switch,
        the best estimate of when the slots changed hands (each ioctl on a
        running task costs an IPI, ~15-20 us: timing before or after them
        all would count a whole switch as watched)."""
        before = time.monotonic()
        for c in counters:
            getattr(c, verb)()
        return (before + time.monotonic()) / 2

    def _collect(self, now: float) -> None:
        for j, w in enumerate(self._assign):
            value = self.counters[j].read()
            self.seen[w] += value - self._last[j]
            self._last[j] = value
            if self._sampling:
                lost = self.counters[j].read_lost()
                self.lost[w] += lost - self._last_lost[j]
                self._last_lost[j] = lost
        for w in set(self._assign):
            self.watched[w] += now - self._t_slice

    def next_rotation(self) -> float:
        return (self._t_slice or time.monotonic()) + self.slice

    def rotate(self) -> None:
        """End the current slice and give the slots to the next group."""
        now = self._switch(self.counters[:len(self._assign)], "disable")
        self._collect(now)
        group = self._group()
        self._arm(group)
        self._t_slice = self._switch(self.counters[:len(self._assign)], "enable")
        self.rotations += 1

    def read(self, now: "float | None" = None) -> list:
        """The estimates so far (without ending the slice)."""
        from .session import WatchHits

        now = time.monotonic() if now is None else now
        total = max(now - (self._t0 or now), 1e-9)
        live = [0] * len(self.watches)
        cur_time = [0.0] * len(self.watches)
        for j, w in enumerate(self._assign):
            live[w] += self.counters[j].read() - self._last[j]
        for w in set(self._assign):
            cur_time[w] = now - (self._t_slice or now)
        out = []
        for i, w in enumerate(self.watches):
            seen = self.seen[i] + live[i]
            watched = self.watched[i] + cur_time[i]
            cover = min(1.0, watched / total)
            est = round(seen / cover) if cover > 0 else 0
            out.append(WatchHits(w, est, seen, cover))
        return out

    def stop(self) -> list:
        """End the run: collect the last slice and return the estimates."""
        now = self._switch(self.counters[:len(self._assign)], "disable")
        self._collect(now)
        self._t_slice = now
        self._assign = []
        return self.read(now)

    def close(self) -> None:
        for c in self.counters:
            c.close()
