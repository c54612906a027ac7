"""What a watch session returns: the hits of each watch and the run's
account (:class:`WatchHits`, :class:`CountResult`).

Below both :mod:`perfbp.run.session`, which counts, and :mod:`perfbp.run.multiplex`,
which estimates when watches take turns, so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.breakpoint import Breakpoint
from ..planning.planner import Watch


@dataclass(frozen=True)
class WatchHits:
    """The hits of one watch (all its pieces together).

    Attributes:
        watch: what was watched.
        hits: exact count of accesses (for a multiplexed watch: the estimate
            scaled to the whole run; see ``seen`` and ``coverage``).  A watch
            split over several registers counts an access once per piece it
            touches: exact per access for accesses no wider than a piece.
        seen: hits counted while the watch held a slot.
        bindings: where a named watch was armed, in a launched command.
        recovered: hits included in ``hits`` that the kernel could not count
            (the machine delivered the debug exception without its status)
            and that could only be this watch's.
        coverage: fraction of the run the watch held a slot (1.0 unless
            multiplexed).
        matched: with a condition, the hits for which it held (tested in
            the kernel on every hit the kernel counted; the recovered ones
            were never tested); None without one.
        faults: with a condition, hits whose value could not be read
            (never matched).
        condition: the condition, as text (None: every hit matched).
        untested: with a condition, hits the kernel counted that its program
            did not see (an event made for a thread started while perfbp was
            arming, before the program was attached; or another BPF program
            running on that CPU then): they are in ``hits``, never in
            ``matched``.
    """

    watch: Watch
    hits: int
    seen: "int | None" = None
    coverage: float = 1.0
    bindings: "tuple" = ()
    recovered: int = 0
    matched: "int | None" = None
    faults: int = 0
    condition: "str | None" = None
    untested: int = 0

    @property
    def label(self) -> str:
        return self.watch.label

    @property
    def breakpoint(self) -> Breakpoint:
        """The first piece (the whole watch when it takes one register)."""
        return self.watch.pieces[0]

    @property
    def estimated(self) -> bool:
        return self.coverage < 1.0

    def as_dict(self) -> dict:
        w = self.watch
        out = {"watch": w.label, "spec": w.spec, "address": w.address,
               "length": w.length, "access": w.access, "hits": self.hits,
               "slots": len(w.pieces)}
        if self.estimated:
            out.update({"estimated": True, "seen": self.seen,
                        "coverage": round(self.coverage, 6)})
        if self.bindings:
            out["bindings"] = [b.as_dict() for b in self.bindings]
        if self.recovered:
            out["recovered"] = self.recovered
        if self.matched is not None:
            out["matched"] = self.matched
            out["condition"] = self.condition
            if self.faults:
                out["unreadable"] = self.faults
            if self.untested:
                out["untested"] = self.untested
        if w.warning:
            out["warning"] = w.warning
        return out


@dataclass(frozen=True)
class CountResult:
    """What :func:`count` measured.

    Attributes:
        target: plain-words description of what was watched.
        watches: per watch, the hits.
        elapsed: seconds from arming to the end.
        ended_by: ``"exit"`` (the target ended), ``"duration"``,
            ``"interrupt"`` (Ctrl-C / SIGTERM).
        exit_code: the launched command's return code (``-N`` when killed by
            signal N), or None when perfbp did not launch it.
        notes: what happened to named watches on the way (moved to the
            program an exec started, disarmed, not defined).
        unresolved: named watches no program of the run defined, as
            :class:`~perfbp.SymbolNotFound` errors naming the programs.
        unattributed: debug exceptions the machine delivered without saying
            which breakpoint fired: hits the kernel could not count.
    """

    target: str
    watches: "list[WatchHits]"
    elapsed: float
    ended_by: str
    exit_code: "int | None" = None
    notes: "tuple[str, ...]" = ()
    unresolved: "tuple" = ()
    unattributed: int = 0

    def as_dict(self) -> dict:
        out = {"target": self.target, "elapsed_seconds": round(self.elapsed, 6),
               "ended_by": self.ended_by, "exit_code": self.exit_code,
               "watches": [w.as_dict() for w in self.watches]}
        if self.notes:
            out["notes"] = list(self.notes)
        if self.unresolved:
            out["unresolved"] = [str(e) for e in self.unresolved]
        if self.unattributed:
            out["unattributed_traps"] = self.unattributed
        return out
