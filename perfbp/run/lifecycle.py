"""One watch session's life, which every command lives the same way:

1. **prepare**: resolve the watches for the target (names, copy relocations,
   a launched command forked and stopped before exec) and plan the slots
   (:func:`perfbp.run.follow.prepare_run`);
2. **arm**: open every watch all-or-nothing, as counters
   (:meth:`Run.arm_counters`, for ``count``) or as sampling events sharing
   one ring per CPU (:meth:`Run.arm_sampler`, for ``record`` and ``top``);
   when the watches take turns, the multiplexer's slots, the idle ones
   parked; the tracer of a launched command gets what it moves;
3. **start**: a launched command runs (its events start inside its execve),
   the multiplexer's first turn begins (:meth:`Run.start`);
4. **drain loop**: wait for the target's end, a deadline or a signal, waking
   to rotate the turns, drain rings or tick an interval (:meth:`Run.wait`);
   Ctrl-C, SIGTERM and the deadline end a launched command and the loop
   keeps going until it is gone (:class:`CommandEnd`);
5. **stop**: the caller disables the events and reads or drains them a last
   time; :meth:`Run.finish` ends the tracer, and :meth:`Run.close` makes sure
   a launched command never outlives the run.

:func:`perfbp.count`, :func:`perfbp.record` and :class:`perfbp.LiveSession`
are compositions of these steps; ``perfbp slots`` stops after step 1.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from ..kernel.breakpoint import Breakpoint
from ..kernel.counter import Counter
from ..kernel.events import EventOptions, Target
from .follow import ExecCheck, HolderArmer, MuxArmer, opening_watches, prepare_run

if TYPE_CHECKING:  # imported where a run samples: a counting run needs no ring
    from ..kernel.sampling import Sampler

#: seconds a command perfbp ends gets between the signal and SIGKILL
TERM_GRACE = 2.0


class StopRequest:
    """SIGINT and SIGTERM, while a session runs, become a request to stop
    (``signum``) that the loop reads between batches, and wake its poll
    (through a self-pipe); a second signal raises KeyboardInterrupt, for a
    user who really wants out.  Main thread only (Python's rule for handlers)."""

    def __init__(self) -> None:
        self.signum: "int | None" = None
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fd = self._r
        self._previous: dict = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    def __enter__(self) -> "StopRequest":
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self._r)
        os.close(self._w)


class CommandEnd:
    """Ending a launched command while the session keeps counting (and
    draining rings) until it is gone, so the counts include everything it
    did.

    Ctrl-C from a terminal reaches the command too (same process group), so
    it gets a second to end on its own; a signal sent to perfbp alone
    (``kill -INT``, SIGTERM) and a deadline are passed on at once.  A command
    still running ``TERM_GRACE`` seconds after the signal gets SIGKILL: one
    that ignores signals never keeps perfbp waiting.

    Args:
        child: the command.
        sig: the signal to pass on.
        ended_by: what the session reports (``interrupt``, ``duration``).
    """

    def __init__(self, child, sig: int, ended_by: str) -> None:
        self.child = child
        self.sig = sig
        self.ended_by = ended_by
        self._signal_at = time.monotonic() + (1.0 if sig == signal.SIGINT else 0.0)
        self._kill_at = None

    def step(self) -> bool:
        """Move on (never blocks); whether the command has ended."""
        if self.child.poll() is not None:
            return True
        now = time.monotonic()
        if self._kill_at is None and now >= self._signal_at:
            self._send(self.sig)
            self._kill_at = now + TERM_GRACE
        elif self._kill_at is not None and now >= self._kill_at:
            self.kill(self.child)
            self._kill_at = float("inf")
        return False

    def _send(self, sig: int) -> None:
        try:
            os.kill(self.child.pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def kill(child) -> None:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class SampledArming:
    """What :meth:`Run.arm_sampler` opened.

    Attributes:
        sampler: the sampling events, one ring per CPU.
        mux: the multiplexer re-pointing the sampler's slots, or None.
        pieces: per sampler slot, ``(watch index or -1 when the slots take
            turns, breakpoint, exclude_kernel)``.
    """

    sampler: Sampler
    mux: object
    pieces: "list[tuple[int, Breakpoint, bool | None]]"


class Run:
    """One session: the target, the watches as resolved and planned, and the
    launched command (if any) with its tracer.  See the module docstring for
    the steps.

    Raises:
        PerfbpError: bad input, privilege, slots, process, command; nothing
            is left running.
    """

    def __init__(self, watches: "Sequence", target: "Target | None",
                 command: "Sequence[str] | None", multiplex: "float | None",
                 trace: bool = True, condition=None, values: bool = False) -> None:
        from ..kernel.condition import read_conditions

        conditions = read_conditions(condition, values)  # a mistake forks nothing
        self.child, self.watches, self.plan, self.arming = prepare_run(
            watches, target, command, multiplex, trace)
        child = self.child
        try:
            self.conditions = _conditions(conditions, self.watches, self.plan)
        except BaseException:
            if child is not None:
                child.abort()
                if hasattr(child, "release"):
                    child.release()
            raise
        #: per watch, per piece: the ValueProgram testing its condition (armed)
        self.programs: "list[list]" = []
        self.multiplex = multiplex
        # CPUs and a command (-a -- CMD): the CPUs, armed now, while it runs
        self.target = target or Target.process(child.pid, name=" ".join(command))
        # a launched command is armed inside its execve; names whose address
        # is not known yet start parked, and the tracer moves them
        self.at_exec = target is None
        self.opening = opening_watches(self.watches, self.arming)
        self.execs = ExecCheck(self.target.pid) if "image" in self.arming else None
        launched = f"command '{' '.join(command)}' (pid {child.pid})" if child else ""
        self.description = (launched if target is None else self.target.describe()
                            + (f" while {launched} runs" if child else ""))
        self._slots_preview = False  # arm_sampler opened the first turn's pieces

    @property
    def moves_events(self) -> bool:
        """Whether an event may be re-pointed while it counts or samples: the
        watches take turns, or a name of a launched command is bound (or
        bound again, after an exec) while it runs."""
        return (not self.plan.fits
                or (self.child is not None and any(s is not None for s in self.child.specs)))

    # -- 2. arm ------------------------------------------------------------------------
    def arm_counters(self) -> "tuple[list[list[Counter]], object]":
        """Counters per watch (one per piece), or a multiplexer when the
        watches need more slots than there are.

        Returns:
            ``(counters, mux)``: one of the two is empty / None.
        """
        counters: "list[list[Counter]]" = []
        try:
            if not self.plan.fits:
                from .multiplex import Multiplexer

                mux = Multiplexer(self.opening, self.target, slice_seconds=self.multiplex,
                                  enable_on_exec=self.at_exec)
                self._arm(MuxArmer(mux))
                return counters, mux
            tested = self.conditions is not None
            for wi, (w, mode) in enumerate(zip(self.opening, self.arming)):
                # a condition runs on overflows: a sampling event (period 1,
                # no ring), attached before it is enabled
                opts = EventOptions(enabled=not self.at_exec and not tested,
                                    enable_on_exec=self.at_exec,
                                    exclude_kernel=w.exclude_kernel,
                                    remove_on_exec=mode == "image",
                                    sample_period=1 if tested else 0)
                counters.append([])
                progs = self._load_programs(wi, values=False) if tested else [None] * len(w.pieces)
                for bp, prog in zip(w.pieces, progs):
                    counters[-1].append(Counter(bp, target=self.target, options=opts,
                                                on_open=prog.attach if prog else None))
            self._arm(HolderArmer(counters, self.programs or None))
            if tested and not self.at_exec:
                self._set_running_olds()
                for c in (c for group in counters for c in group):
                    c.enable()
            return counters, None
        except BaseException:
            for c in (c for group in counters for c in group):
                c.close()
            self.close_programs()
            self.abort()
            raise

    def _load_programs(self, wi: int, *, values: bool) -> list:
        """Load the programs testing watch ``wi``'s condition, one per piece
        (attached to each event as it opens: ``Counter(on_open=)``, and the
        sampler's own).  Each reads its piece's length as planned (a name's
        events may open parked, until the tracer binds them)."""
        from ..kernel.values import ValueProgram

        progs: list = []
        self.programs.append(progs)
        for j, bp in enumerate(self.watches[wi].pieces):
            progs.append(ValueProgram.for_breakpoint(bp, self.conditions[wi], emit=False,
                                                     values=values, name=f"perfbp_w{wi}_{j}"))
        return progs

    def _set_running_olds(self) -> None:
        """A running target's value now is each piece's first ``old``: read
        just before the events are enabled (a write in between is the only
        one the first hit's ``old`` can miss)."""
        from ..kernel.values import read_value

        if not self.target.pid:
            return
        for wi, progs in enumerate(self.programs):
            for prog, bp in zip(progs, self.watches[wi].pieces):
                prog.set_last(read_value(self.target.pid, bp.address, bp.length) or 0)

    def tallies(self) -> "list[list] | None":
        """Per watch, per piece, what its program saw
        (:class:`~perfbp.kernel.condition.Tally`); None without conditions."""
        if self.conditions is None:
            return None
        return [[p.tally() for p in progs] for progs in self.programs]

    def close_programs(self) -> None:
        for p in (p for progs in self.programs for p in progs):
            p.close()
        self.programs = []

    def arm_sampler(self, **options) -> SampledArming:
        """Sampling events for every piece, sharing one ring per CPU (and a
        tracking event per ring); when the watches take turns, the
        multiplexer's slots, those the first turn leaves free parked as
        execute breakpoints on a data address (armed, in the same pool on
        x86, never hit).  ``options`` go to :class:`~perfbp.Sampler`."""
        ws = self.watches
        sampler = mux = None
        free = self.plan.free if not self.plan.fits else 0
        try:
            if free:
                from .multiplex import Multiplexer

                ek = ws[0].exclude_kernel
                group = Multiplexer.preview(self.opening, free)
                parked = Breakpoint.execute(ws[0].pieces[0].address)
                pieces = [(-1, bp, ek) for bp in group] + [(-1, parked, ek)] * (free - len(group))
            else:
                pieces = [(wi, bp, w.exclude_kernel) for wi, w in enumerate(self.opening)
                          for bp in w.pieces]
                options["remove_on_exec"] = [self.arming[wi] == "image"
                                             for wi, _bp, _ek in pieces]
            from ..kernel.sampling import Sampler

            if self.conditions is not None:
                for wi in range(len(self.opening)):
                    self._load_programs(wi, values=True)
                options["programs"] = [p for progs in self.programs for p in progs]
                later = not self.at_exec and options.get("enabled", True)
                if later:  # the first olds are read just before it is enabled
                    options["enabled"] = False
            sampler = Sampler([p[1] for p in pieces], self.target, track=True,
                              enable_on_exec=self.at_exec, addr=self.moves_events,
                              exclude_kernel=[p[2] for p in pieces], **options)
            if self.conditions is not None and later:
                self._set_running_olds()
                sampler.enable()
            slots = [sampler.slot(j) for j in range(len(pieces))]
            if free:
                mux = Multiplexer(self.opening, self.target, slice_seconds=self.multiplex,
                                  enable_on_exec=self.at_exec, holders=slots)
                self._slots_preview = True
                self._arm(MuxArmer(mux))
            else:
                self._arm(HolderArmer([[s for s, p in zip(slots, pieces) if p[0] == wi]
                                       for wi in range(len(ws))], self.programs or None))
            return SampledArming(sampler, mux, pieces)
        except BaseException:
            if sampler is not None:
                sampler.close()
            self.close_programs()
            self.abort()
            raise

    def _arm(self, armer) -> None:
        if self.child is not None:
            self.child.arm(armer, self.watches)

    def abort(self) -> None:
        """Arming failed: the command perfbp forked never runs; the programs
        of the conditions are closed."""
        if self.child is not None:
            self.child.abort()
            if hasattr(self.child, "release"):
                self.child.release()
        self.close_programs()

    # -- 3. start ----------------------------------------------------------------------
    def start(self, mux=None) -> None:
        """A launched command runs (raises CommandNotFound when its exec
        fails); the multiplexer's first turn begins (for a command whose
        sampling slots were opened on the first turn's pieces, counted from
        the moment it was armed: its events start inside exec)."""
        armed = time.monotonic()
        if self.child is not None:
            self.child.start()
        if mux is not None and self.child is not None and self._slots_preview:
            # the sampler's slots hold the first turn's pieces since exec
            mux.start(armed_since=armed)
        elif mux is not None:
            mux.start()  # the multiplexer's own counters: it points them now

    # -- 4. the drain loop -------------------------------------------------------------
    def wait(self, stop: "StopRequest | None", *, start: float,
             duration: "float | None" = None, mux=None, fds: "Sequence[int]" = (),
             on_wake: "Callable[[], None] | None" = None, idle: float = 0.5,
             interval: "float | None" = None,
             on_tick: "Callable[[float], None] | None" = None) -> "tuple[str, int | None]":
        """Wait for the end: the target exits, ``duration`` passes (a launched
        command then gets SIGTERM, and SIGKILL after ``TERM_GRACE``), or
        ``stop`` is asked (Ctrl-C, SIGTERM: passed on to a launched command;
        the loop goes on until it is gone, so nothing it did is lost).

        Args:
            fds: descriptors (the rings) whose readiness wakes the loop.
            on_wake: called after every wake-up (drain the rings, check for
                an exec ...).
            idle: the longest sleep between wake-ups.
            interval / on_tick: ``on_tick(elapsed)`` every ``interval`` s.

        Returns:
            ``(ended_by, exit_code)``: ``exit``, ``duration`` or
            ``interrupt``, and the launched command's status (None for an
            attached target).
        """
        child = self.child
        pidfd = self.target_pidfd()
        if pidfd is None:
            return "exit", None  # the process is gone already
        poller = select.poll()
        for fd in [*fds, pidfd, stop.fd if stop is not None else -1]:
            if fd >= 0:
                poller.register(fd, select.POLLIN)
        deadline = start + duration if duration is not None else None
        next_tick = start + interval if interval else None
        ending = None  # a CommandEnd, once Ctrl-C, SIGTERM or the deadline came
        try:
            while True:
                if stop is not None and stop.signum is not None and ending is None:
                    if child is None:
                        return "interrupt", None
                    ending = CommandEnd(child, stop.signum, "interrupt")
                    poller.unregister(stop.fd)  # stays readable: the loop goes on
                if ending is not None and ending.step():
                    return ending.ended_by, child.wait()
                now = time.monotonic()
                soon = now + (0.02 if ending is not None else idle)
                wake = min(t for t in (next_tick, deadline if ending is None else None,
                                       mux.next_rotation() if mux is not None else None,
                                       soon) if t is not None)
                events = poller.poll(int(min(max(0.0, wake - now), 60.0) * 1000))
                if mux is not None and time.monotonic() >= mux.next_rotation():
                    mux.rotate()
                if on_wake is not None:
                    on_wake()
                if any(fd == pidfd for fd, _ev in events) or self.target_gone():
                    return (ending.ended_by if ending else "exit"), \
                        (child.wait() if child is not None else None)
                now = time.monotonic()
                if next_tick is not None and now >= next_tick:
                    on_tick(now - start)
                    next_tick += interval
                if deadline is not None and now >= deadline and ending is None:
                    if child is None:
                        return "duration", None
                    ending = CommandEnd(child, signal.SIGTERM, "duration")
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, with what was counted
            if child is None:
                raise
            CommandEnd.kill(child)
            return "interrupt", child.wait()
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def target_pidfd(self) -> "int | None":
        """A pidfd that becomes readable when the target ends (-1: none to
        poll, a thread is checked in /proc; None: the process is gone)."""
        if self.child is not None:
            return self.child.pidfd_open()
        t = self.target
        if t.kind in ("process", "thread") and t.pid > 0:
            try:
                return os.pidfd_open(t.pid)
            except ProcessLookupError:
                return None
            except OSError:
                return -1  # a thread id that is not a process: /proc is polled
        return -1

    def target_gone(self) -> bool:
        """A watched thread (which has no pidfd to poll) is gone."""
        t = self.target
        return (self.child is None and t.kind == "thread" and t.pid > 0
                and not os.path.exists(f"/proc/{t.pid}"))

    # -- 5. stop -----------------------------------------------------------------------
    def finish(self) -> None:
        """End the tracer (a launched command): its bindings, notes and
        recovered hits are final."""
        if self.child is not None:
            self.child.finish()

    def close(self, failed: bool = False) -> None:
        """The run is over: a launched command that still runs is killed when
        the run failed (it must not outlive perfbp), and is always reaped;
        then the programs of the conditions are closed (its tracer may move
        them until the command is gone)."""
        child = self.child
        if child is not None and child.returncode is None:
            if failed and child.poll() is None:
                CommandEnd.kill(child)
            child.wait()
        if child is not None and hasattr(child, "release"):
            child.release()
        self.close_programs()

    def final_watches(self, watches: "Sequence") -> list:
        """Each watch as it was armed last (a named watch in a launched
        command may have moved to another program)."""
        if self.child is None:
            return list(watches)
        return [b[-1].resolution.watch if b else w
                for w, b in zip(watches, self.child.bindings)]

    def outcome(self) -> dict:
        """What happened on the way, for the result: ``notes`` (names moved
        at an exec, disarmed, not defined), and for a launched command
        ``unresolved`` (SymbolNotFound per name no program defined),
        ``unattributed`` and ``recovered`` hits (see :mod:`perfbp.run.follow`)
        and ``bindings``."""
        child = self.child
        if child is None:
            note = self.execs.note() if self.execs is not None else None
            return {"notes": (note,) if note else ()}
        return {"notes": tuple(child.notes),
                "unresolved": tuple(child.unresolved_error(i) for i in child.unresolved()),
                "unattributed": child.unattributed, "recovered": tuple(child.recovered),
                "bindings": tuple(tuple(b) for b in child.bindings)}


def _conditions(conditions: "Sequence | None", watches, plan) -> "list | None":
    """The condition of each watch (``conditions``: read, one for all or
    one per watch), checked against each of its pieces' length; None: the
    run tests no values.

    Raises:
        InvalidCondition: a number does not fit a piece.
        PerfbpError: the watches take turns (a condition must see every hit).
    """
    if conditions is None:
        return None
    from ..errors import PerfbpError

    conds = list(conditions)
    if len(conds) == 1 and len(watches) > 1:
        conds = conds * len(watches)
    if len(conds) != len(watches):
        raise PerfbpError(f"{len(conds)} condition{'s' if len(conds) != 1 else ''} for "
                          f"{len(watches)} watch{'es' if len(watches) != 1 else ''}: give one "
                          f"for all, or one per watch, in the order of the watches")
    if not plan.fits:
        raise PerfbpError("a condition (--if, --values) needs every hit of its watch, and "
                          "watches that take turns (--multiplex) miss the hits of the "
                          "turns they sit out: watch fewer addresses, or drop the condition")
    for cond, w in zip(conds, watches):
        if cond is not None:
            for bp in w.pieces:
                cond.check(bp.length)
    return conds
