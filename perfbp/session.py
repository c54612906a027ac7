"""Running a watch session: arm watches on a target, let it run, read the hits.

The command-line tools are thin shells over :func:`count`: it launches or
attaches, opens every watch all-or-nothing, waits until the target ends, a
deadline passes, or the user interrupts (Ctrl-C, SIGTERM), calling back every
interval, and returns exact counts.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Callable, Sequence

from .counter import Counter
from .events import EventOptions, Target
from .planner import Plan
from .follow import ExecCheck, HolderArmer, MuxArmer, opening_watches, prepare_run
from .results import CountResult, WatchHits


class StopRequest:
    """SIGINT and SIGTERM, while a recording runs, become a request to stop
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


def count(watches: "Sequence", *,
          target: "Target | None" = None, command: "Sequence[str] | None" = None,
          duration: "float | None" = None, interval: "float | None" = None,
          on_interval: "Callable[[float, list[WatchHits]], None] | None" = None,
          on_start: "Callable[[str, Plan], None] | None" = None,
          multiplex: "float | None" = None, trace: bool = True) -> CountResult:
    """Count hits of ``watches`` on a target until it ends.

    Args:
        watches: :class:`~perfbp.Watch` objects (or breakpoints, or
            ``(breakpoint, label, exclude_kernel)`` triples).
        target: a thread, process or CPUs; or None with ``command``.
        command: argv of a program to launch with the watches armed before its
            first instruction.
        duration: stop after this many seconds.
        interval: call ``on_interval(elapsed, hits_in_this_interval)`` every
            ``interval`` seconds.
        on_start: called with the target's description and the
            :class:`~perfbp.Plan` of the watches, names resolved (their
            pieces, the slots they take, whether they take turns), once
            everything is armed and a launched command has started.
        multiplex: when the watches need more slots than there are, rotate
            them through the slots in time slices of this many seconds and
            report scaled estimates (None: refuse with the plan's explanation).
        trace: follow ``command`` with ptrace (names need it; see
            :mod:`perfbp.follow`).  False for a program that uses ptrace
            itself (strace, gdb): addresses only.

    Returns:
        The exact hit counts (estimates when multiplexed).

    Raises:
        PerfbpError: bad input, missing privilege, no free slot, no such
            process, command not found.  Nothing is left open.
    """
    child, ws, the_plan, arming = prepare_run(watches, target, command, multiplex, trace)
    tgt = Target.process(child.pid, name=" ".join(command)) if child else target
    execs = ExecCheck(tgt.pid) if "image" in arming else None
    # a launched command is armed inside its execve (enable_on_exec); names
    # whose address is not known yet start parked, and the tracer moves them
    at_exec = child is not None
    counters: "list[list[Counter]]" = []
    mux = None
    try:
        if not the_plan.fits:
            from .multiplex import Multiplexer
            mux = Multiplexer(opening_watches(ws, arming), tgt, slice_seconds=multiplex,
                              enable_on_exec=at_exec)
            if child:
                child.arm(MuxArmer(mux), ws)
        else:
            for w, mode in zip(opening_watches(ws, arming), arming):
                group = []
                counters.append(group)
                opts = EventOptions(enabled=not at_exec, enable_on_exec=at_exec,
                                    exclude_kernel=w.exclude_kernel,
                                    remove_on_exec=mode == "image")
                for bp in w.pieces:
                    group.append(Counter(bp, target=tgt, options=opts))
            if child:
                child.arm(HolderArmer(counters), ws)
    except BaseException:
        for group in counters:
            for c in group:
                c.close()
        if child:
            child.abort()
        raise
    description = (" ".join(command) if child else tgt.describe())
    if child:
        description = f"command '{description}' (pid {child.pid})"

    def read_all() -> "list[int]":
        if mux is not None:
            return [h.hits for h in mux.read()]
        return [sum(c.read() for c in group) for group in counters]

    stop = StopRequest()
    try:
        # from the banner on, Ctrl-C and SIGTERM only ask the loop to stop:
        # the counts are then read and printed whatever moment they came at
        with stop:
            start = time.monotonic()
            if child:
                child.start()  # raises CommandNotFound if exec fails: no banner then
            if mux is not None:
                mux.start()
            if on_start:
                on_start(description, the_plan)
            ended_by, exit_code = _wait(child, tgt, read_all, ws, start, duration,
                                        interval, on_interval, mux, stop,
                                        execs.poll if execs is not None else None)
            elapsed = time.monotonic() - start
            if mux is not None:
                hits = mux.stop()
            else:
                hits = [WatchHits(w, n) for w, n in zip(ws, read_all())]
            if child is not None:
                child.finish()
                # a named watch is shown where it was armed last
                hits = [WatchHits(b[-1].resolution.watch if b else h.watch, h.hits + r,
                                  h.seen, h.coverage, tuple(b), r)
                        for h, b, r in zip(hits, child.bindings, child.recovered)]
    finally:
        if mux is not None:
            mux.close()
        for group in counters:
            for c in group:
                c.close()
        if child and child.returncode is None:
            child.wait()
    if child is None:
        note = execs.note() if execs is not None else None
        return CountResult(description, hits, elapsed, ended_by, exit_code,
                           (note,) if note else ())
    return CountResult(description, hits, elapsed, ended_by, exit_code, tuple(child.notes),
                       tuple(child.unresolved_error(i) for i in child.unresolved()),
                       child.unattributed)


def _wait(child, target, read_all, watches, start, duration, interval, on_interval, mux=None,
          stop: "StopRequest | None" = None, on_wake=None):
    """Wait for the end; return ``(ended_by, exit_code)``."""
    pidfd = -1
    if child is not None:
        pidfd = child.pidfd_open()
    elif target.kind in ("process", "thread") and target.pid > 0:
        try:
            pidfd = os.pidfd_open(target.pid)
        except ProcessLookupError:
            return "exit", None
        except OSError:
            pidfd = -1  # a thread id that is not a process: poll /proc instead
    last = [0] * len(watches)  # opened just now: every hit since is in an interval
    next_tick = start + interval if interval else None
    deadline = start + duration if duration is not None else None
    next_slice = mux.next_rotation() if mux is not None else None
    poller = select.poll()
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    if stop is not None:
        poller.register(stop.fd, select.POLLIN)
    ending = None  # a CommandEnd, once Ctrl-C, SIGTERM or the deadline came
    try:
        while True:
            if stop is not None and stop.signum is not None and ending is None:
                if child is None:
                    return "interrupt", None
                ending = CommandEnd(child, stop.signum, "interrupt")
                poller.unregister(stop.fd)  # stays readable: the loop goes on counting
            if ending is not None and ending.step():
                return ending.ended_by, child.wait()
            now = time.monotonic()
            soon = now + (0.02 if ending is not None else 0.05 if on_wake is not None else 0.5)
            wake = min(t for t in (next_tick, deadline, next_slice, soon) if t is not None)
            events = poller.poll(max(0, int((wake - now) * 1000)))
            if on_wake is not None:
                on_wake()
            if any(fd == pidfd for fd, _ev in events) or _gone(child, target, pidfd):
                if child is not None:
                    return (ending.ended_by if ending else "exit"), child.wait()
                return "exit", None
            now = time.monotonic()
            if mux is not None and now >= next_slice:
                mux.rotate()
                next_slice = mux.next_rotation()
            if next_tick is not None and now >= next_tick:
                cur = read_all()
                if on_interval:
                    on_interval(now - start, [WatchHits(w, n - p) for w, n, p
                                              in zip(watches, cur, last)])
                last = cur
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


def _gone(child, target, pidfd) -> bool:
    if child is not None or pidfd >= 0:
        return False
    if target.kind == "thread" and target.pid > 0:
        return not os.path.exists(f"/proc/{target.pid}")
    return False


#: seconds a command perfbp ends gets between the signal and SIGKILL
TERM_GRACE = 2.0


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
