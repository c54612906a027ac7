"""Running a watch session: arm watches on a target, let it run, read the hits.

The command-line tools are thin shells over :func:`count`: it launches or
attaches, opens every watch all-or-nothing, waits until the target ends, a
deadline passes, or the user interrupts (Ctrl-C, SIGTERM), calling back every
interval, and returns exact counts.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

from ..kernel.events import Target
from .lifecycle import Run, StopRequest
from ..planning.planner import Plan
from .results import CountResult, WatchHits

__all__ = ["count"]


def count(watches: "Sequence", *,
          target: "Target | None" = None, command: "Sequence[str] | None" = None,
          duration: "float | None" = None, interval: "float | None" = None,
          on_interval: "Callable[[float, list[WatchHits]], None] | None" = None,
          on_start: "Callable[[str, Plan], None] | None" = None,
          multiplex: "float | None" = None, trace: bool = True,
          condition: "str | Sequence | None" = None) -> CountResult:
    """Count hits of ``watches`` on a target until it ends.

    Args:
        watches: :class:`~perfbp.Watch` objects (or breakpoints, or
            ``(breakpoint, label, exclude_kernel)`` triples).
        target: a thread, process or CPUs; or None with ``command``.
        command: argv of a program to launch with the watches armed before its
            first instruction; with CPUs as ``target`` (perf's ``-a -- CMD``),
            a program during which the CPUs are watched (armed first).
        duration: stop after this many seconds.
        interval: call ``on_interval(elapsed, hits_in_this_interval)`` every
            ``interval`` seconds, and once more at the end for the last,
            partial interval: the intervals add up to the totals.
        on_start: called with the target's description and the
            :class:`~perfbp.Plan` of the watches, names resolved (their
            pieces, the slots they take, whether they take turns), once
            everything is armed and a launched command has started.
        multiplex: when the watches need more slots than there are, rotate
            them through the slots in time slices of this many seconds and
            report scaled estimates (None: refuse with the plan's explanation).
        trace: follow ``command`` with ptrace (names need it; see
            :mod:`perfbp.run.follow`).  False for a program that uses ptrace
            itself (strace, gdb): addresses only.
        condition: a condition on the watched value (``"new == 0"``, see
            :mod:`perfbp.kernel.condition`), tested in the kernel on every
            hit; or one per watch (a list; None in it: that watch's every
            hit matches).  Each watch then also has ``matched``: its hits for
            which the condition held.  ``hits`` stays every hit.

    Returns:
        The exact hit counts (estimates when multiplexed).

    Raises:
        PerfbpError: bad input, missing privilege, no free slot, no such
            process, command not found.  Nothing is left open.
    """
    run = Run(watches, target, command, multiplex, trace, condition)
    counters, mux = run.arm_counters()
    ws = run.watches
    reads = _Reads(ws, counters, mux, on_interval, run.child, run)
    failed = True
    try:
        # from the banner on, Ctrl-C and SIGTERM only ask the loop to stop:
        # the counts are then read and printed whatever moment they came at
        with StopRequest() as stop:
            start = time.monotonic()
            run.start(mux)
            if on_start:
                on_start(run.description, run.plan)
            execs = run.execs.poll if run.execs is not None else None
            ended_by, exit_code = run.wait(stop, start=start, duration=duration, mux=mux,
                                           on_wake=execs, idle=0.05 if execs else 0.5,
                                           interval=interval, on_tick=reads.tick)
            elapsed = time.monotonic() - start
            hits = mux.stop() if mux is not None else [
                WatchHits(w, n) for w, n in zip(ws, reads.read_all())]
            tallies = run.tallies()
            if tallies is not None:
                reads.final_matched = [sum(t.matched for t in ts) for ts in tallies]
                hits = [replace(h, matched=sum(t.matched for t in ts),
                                faults=sum(t.faults for t in ts),
                                condition=None if c is None else str(c),
                                untested=max(0, h.hits - sum(t.hits for t in ts)))
                        for h, ts, c in zip(hits, tallies, run.conditions)]
            run.finish()
            failed = False
    finally:
        if mux is not None:
            mux.close()
        for c in (c for group in counters for c in group):
            c.close()
        run.close(failed)
    outcome = run.outcome()
    if run.child is not None:  # a named watch is shown where it was armed last
        hits = [replace(h, watch=w, hits=h.hits + r, bindings=b, recovered=r)
                for w, h, b, r in zip(run.final_watches([h.watch for h in hits]), hits,
                                      outcome.pop("bindings"), outcome.pop("recovered"))]
    if interval:  # the last, partial interval: the intervals add up to the totals
        reads.tick(elapsed, [h.hits for h in hits])
    return CountResult(run.description, hits, elapsed, ended_by, exit_code, **outcome)


class _Reads:
    """The counts of a session's watches (from their counters, or the
    multiplexer's estimates, plus the hits a launched command's tracer
    recovered), and the hits of each interval."""

    def __init__(self, watches, counters, mux, on_interval, child, run=None) -> None:
        self.watches, self.counters, self.mux = watches, counters, mux
        self.on_interval, self.child = on_interval, child
        self.last = [0] * len(watches)  # opened just now: every hit since is in an interval
        #: with conditions: the run (its programs' tallies), and the matches so far
        self.run = run if run is not None and run.conditions is not None else None
        self.last_matched = [0] * len(watches)
        self.final_matched: "list[int] | None" = None  # read before the programs close

    def matched(self) -> "list[int] | None":
        """Each watch's matches so far (None without conditions)."""
        if self.run is None:
            return None
        if self.final_matched is not None:
            return self.final_matched
        return [sum(t.matched for t in ts) for ts in self.run.tallies()]

    def read_all(self) -> "list[int]":
        """The events' counts (estimates), without the recovered hits."""
        if self.mux is not None:
            return [h.hits for h in self.mux.read()]
        return [sum(c.read() for c in group) for group in self.counters]

    def tick(self, elapsed: float, totals: "list[int] | None" = None) -> None:
        """Report the hits since the last tick, recovered ones included; with
        ``totals`` (the final hits, read once the events stopped), those of
        the last, partial interval."""
        cur = totals
        if cur is None:
            cur = self.read_all()
            if self.child is not None:
                cur = [n + r for n, r in zip(cur, self.child.recovered)]
        matched = self.matched()
        if self.on_interval:
            hits = [WatchHits(w, n - p) for w, n, p in zip(self.watches, cur, self.last)]
            if matched is not None:
                hits = [replace(h, matched=m - p, condition=str(c) if c is not None else None)
                        for h, m, p, c in zip(hits, matched, self.last_matched,
                                              self.run.conditions)]
            self.on_interval(elapsed, hits)
        self.last = cur
        if matched is not None:
            self.last_matched = matched
