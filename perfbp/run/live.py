"""A live watch session: sample every hit and keep running figures, for
``perfbp top``.

:class:`LiveSession` arms watches on a target (launch, attach, CPUs; names
resolved as everywhere else), samples every hit through the per-CPU rings,
and after each :meth:`LiveSession.poll` holds per watch: the kernel's hit
count, samples, lost samples, the rate of every interval (for sparklines),
the busiest writers (symbolized: function+offset, source line) and
threads.  :meth:`LiveSession.summary` gives the same
:class:`~perfbp.data.report.Report` that ``perfbp record`` prints at the end.

A launched command's output can be kept apart from a live view
(``command_output=``): its standard output and error go to a file, its
standard input is ``/dev/null``.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections import Counter as _Counter
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import PerfbpError
from ..kernel import system
from ..kernel.events import Target
from ..data.report import Report, ThreadHits, WatchReport, Writer, most, writers_of
from .lifecycle import TERM_GRACE, Run
from ..symbols.elf import Symbolizer

HISTORY = 60  # intervals of rates kept for sparklines


@dataclass
class LiveWatch:
    """Running figures of one watch.

    Attributes:
        label: the watch's name.
        hits: the kernel's count so far.
        samples: samples decoded so far.
        lost: samples the kernel could not write.
        history: hits per second of each interval, newest last (the last
            ``HISTORY`` intervals; the first may be shorter than the others:
            see :meth:`LiveSession.start`).
        rate: hits per second over the last interval.
        recovered: hits included in ``hits`` that have no sample (the
            machine delivered their debug exception without its status).
    """

    label: str
    address: int
    length: int
    access: str
    hits: int = 0
    samples: int = 0
    lost: int = 0
    rate: float = 0.0
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    writers: _Counter = field(default_factory=_Counter)  # (pid, ip) -> samples
    threads: _Counter = field(default_factory=_Counter)  # (pid, tid) -> samples
    recovered: int = 0  # in hits: hits the kernel missed (no sample), see perfbp.run.follow
    coverage: float = 1.0  # multiplexed: the fraction of the run watched
    estimate: "int | None" = None  # multiplexed: hits scaled to the whole run
    condition: "str | None" = None  # with a condition (--if): its text
    matched: "int | None" = None  # with a condition or values: the hits let through
    values: _Counter = field(default_factory=_Counter)  # with values: new -> samples
    transitions: _Counter = field(default_factory=_Counter)  # (old, new) -> samples

    @property
    def complete(self) -> bool:
        """samples + lost == hits (hits seen while watched, when multiplexed),
        the recovered hits, which have no sample, left out; with a
        condition, samples + lost == matched."""
        if self.matched is not None:
            return self.samples + self.lost == self.matched
        return self.samples + self.lost == self.hits - self.recovered


class LiveSession:
    """Sample ``watches`` on a target and keep live figures.

    Args:
        watches: watch specs or :class:`~perfbp.Watch` objects.
        target / command: as :func:`perfbp.count`.
        interval: seconds between figure updates.
        command_output: a file for the launched command's standard output
            and standard error (created mode 0600, or emptied; not through a
            symbolic link); its standard input is then ``/dev/null``.  For a
            live view on a terminal, which the command's output would
            otherwise draw over.  None: the command shares perfbp's.
        condition: only the hits for which it holds are sampled (as
            :func:`perfbp.record`); each watch's figures then have
            ``matched``, and its values and transitions.

    Raises:
        PerfbpError: as :func:`perfbp.record`, or ``command_output`` cannot
            be written (or is given without ``command``); nothing is left
            open.
    """

    def __init__(self, watches: "Sequence", *, target: "Target | None" = None,
                 command: "Sequence[str] | None" = None, interval: float = 1.0,
                 ring_pages: "int | None" = None, multiplex: "float | None" = None,
                 trace: bool = True, command_output: "str | None" = None,
                 condition: "str | Sequence | None" = None) -> None:
        import numpy  # noqa: F401 - the first drain decodes with it: loaded before arming
        self.interval = interval
        if command_output is not None and command is None:
            raise PerfbpError("command_output= is where a launched command's output goes: "
                              "give command=[...] too, or leave it out", errno=errno.EINVAL)
        self.command_output = command_output
        with _command_stdio(command_output):  # what the command is forked with
            self.run = run = Run(watches, target, command, multiplex, trace, condition)
        options = {} if ring_pages is None else {"ring_pages": ring_pages}
        armed = run.arm_sampler(wakeup_fraction=8, **options)
        self.child, self.watches, self.target = run.child, run.watches, run.target
        self.plan = run.plan
        self.sampler, self.mux = armed.sampler, armed.mux
        ws = self.watches
        self._piece_watch = [wi for wi, _bp, _ek in armed.pieces]
        # multiplexed samples tell their watch by address
        self._addr_watch: dict = {}
        self._addr_key = None  # the multiplexer's pieces _addr_watch was made from
        self.figures = [LiveWatch(w.label, w.address, w.length, w.access) for w in ws]
        for f, c in zip(self.figures, run.conditions or ()):
            f.condition = None if c is None else str(c)
        self.comms: dict[int, str] = {}
        self._last_hits = [0] * len(ws)
        self.description = run.description
        self.started = None
        self.ended_by: "str | None" = None
        self.exit_code: "int | None" = None
        self._pidfd = -1
        self._next = None
        self._last_tick = None
        self.updates = 0  # how many times the figures were updated

    def start(self, first: "float | None" = None) -> None:
        """Let the target run (a launched command starts now).

        Args:
            first: seconds to the first update of the figures, when it
                should come sooner than one interval (a live view's first
                frame, with live counts); the next ones follow every
                ``interval`` from it.
        """
        if self.child is None and self.target.kind == "process":
            # mapped before the events opened (an attached process runs): read
            # the maps now, while they exist; the kernel reports later
            # mappings (MMAP records)
            self._symbolizer().add_proc_maps(self.target.pid)
        self.run.start(self.mux)
        fd = self.run.target_pidfd()
        self._pidfd = -1 if fd is None else fd
        self.started = time.monotonic()
        self._next = self.started + (self.interval if first is None else min(first,
                                                                            self.interval))
        self._last_tick = self.started

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def fds(self) -> "list[int]":
        """Descriptors to poll besides the rings' (the target's pidfd)."""
        return [self._pidfd] if self._pidfd >= 0 else []

    def poll(self, extra_fds: "Sequence[int]" = ()) -> "list[int]":
        """Wait until the next interval (draining the rings meanwhile);
        update the figures.  Returns the ``extra_fds`` that became readable
        (a keyboard, say).  Sets :attr:`ended_by` when the target ended."""
        poller = select.poll()
        for fd in self.sampler.ring_fds:
            poller.register(fd, select.POLLIN)
        if self._pidfd >= 0:
            poller.register(self._pidfd, select.POLLIN)
        for fd in extra_fds:
            poller.register(fd, select.POLLIN)
        ready: list[int] = []
        while True:
            now = time.monotonic()
            wake = self._next if self.mux is None else min(self._next, self.mux.next_rotation())
            # at most a minute a wait: poll takes an int of milliseconds, and
            # an interval of 1e308 s is still a wait that ends
            events = poller.poll(int(min(max(0.0, wake - now), 60.0) * 1000))
            if self.mux is not None and time.monotonic() >= self.mux.next_rotation():
                self.mux.rotate()
            self._drain()
            hit = [fd for fd, _ev in events if fd in extra_fds]
            if hit:
                ready.extend(hit)
                return ready
            if any(fd == self._pidfd for fd, _ev in events) and self._pidfd >= 0:
                self.ended_by = "exit"
                if self.child is not None:
                    self.exit_code = self.child.wait()
                self._tick(time.monotonic())
                return ready
            if self.run.target_gone():
                self.ended_by = "exit"
                self._tick(time.monotonic())
                return ready
            if time.monotonic() >= self._next:
                self._tick(time.monotonic())
                self._next += self.interval
                return ready

    def _drain(self) -> None:
        from ..kernel.records import Comm, Mmap

        batch = self.sampler.read()
        for rec in batch.records:
            if isinstance(rec, Comm):
                self.comms[rec.tid] = rec.comm
                if rec.exec and rec.pid == rec.tid:
                    self._symbolizer().exec(rec.pid)  # a new image: its MMAPs follow
            elif isinstance(rec, Mmap):
                sym = self._symbolizer()
                if rec.pid not in sym.spaces:  # what it mapped before we watched
                    sym.add_proc_maps(rec.pid)
                sym.add_mmap(rec.pid, rec.addr, rec.len, rec.pgoff, rec.filename)
        if not len(batch):
            return
        cols = batch.samples
        pieces = batch.watch.tolist()
        pids = cols.pid.tolist() if cols.pid is not None else [0] * len(pieces)
        tids = cols.tid.tolist() if cols.tid is not None else [0] * len(pieces)
        ips = cols.ip.tolist() if cols.ip is not None else [0] * len(pieces)
        sym = self._symbolizer()
        for pid in set(pids) - set(sym.spaces):  # read its maps while it lives
            sym.add_proc_maps(pid)
        for tid, pid in set(zip(tids, pids)):  # and its threads' names
            if tid not in self.comms:
                self._comm(pid, tid)
        olds = news = None
        if cols.new is not None:
            olds, news = cols.old.tolist(), cols.new.tolist()
        addrs = None
        if self.mux is not None:
            addrs = cols.addr.tolist()
            now = tuple(w.pieces for w in self.mux.watches)
            if now != self._addr_key:  # a name moved: the watches' addresses now
                self._addr_key = now
                self._addr_watch = {p.address: wi for wi, w in enumerate(self.mux.watches)
                                    for p in w.pieces}
        for n, (p, pid, tid, ip) in enumerate(zip(pieces, pids, tids, ips)):
            if addrs is not None:
                wi = self._addr_watch.get(addrs[n], -1)
            else:
                wi = self._piece_watch[p] if p >= 0 else -1
            if wi < 0:
                continue
            f = self.figures[wi]
            f.samples += 1
            f.writers[(pid, ip)] += 1
            f.threads[(pid, tid)] += 1
            if news is not None:
                f.values[news[n]] += 1
                f.transitions[(olds[n], news[n])] += 1

    def _tick(self, now: float) -> None:
        hits = [0] * len(self.figures)
        lost = [0] * len(self.figures)
        if self.mux is not None:
            for i, est in enumerate(self.mux.read(now)):
                hits[i], lost[i] = est.seen, self.mux.lost[i]
                self.figures[i].coverage = est.coverage
                self.figures[i].estimate = est.hits
        else:
            matched = [0] * len(self.figures) if self.run.conditions is not None else None
            for p, st in enumerate(self.sampler.stats()):
                hits[self._piece_watch[p]] += st.hits
                lost[self._piece_watch[p]] += st.lost
                if matched is not None:
                    matched[self._piece_watch[p]] += st.matched or 0
            for f, m in zip(self.figures, matched or ()):
                f.matched = m
        if self.child is not None:  # hits the kernel missed, known to be this watch's
            for i, n in enumerate(self.child.recovered):
                hits[i] += n
                self.figures[i].recovered = n
            for f, bound in zip(self.figures, self.child.bindings):
                if bound:  # where a name is armed now (or was last)
                    f.address = bound[-1].resolution.watch.address
        span = now - self._last_tick if self._last_tick is not None else self.interval
        self._last_tick = now
        self.updates += 1
        for i, f in enumerate(self.figures):
            delta = hits[i] - self._last_hits[i]
            f.rate = delta / span if span > 0 else 0.0
            f.history.append(f.rate)
            f.hits, f.lost = hits[i], lost[i]
            self._last_hits[i] = hits[i]

    def stop(self) -> None:
        """End: stop the events, drain what is left, take the final counts."""
        if self.mux is not None:
            self.mux.stop()
        self.sampler.disable()
        self._drain()
        self._tick(time.monotonic())
        if self.ended_by is None:
            self.ended_by = "interrupt"
            if self.child is not None and self.child.poll() is None:
                # the user quit: a command perfbp started ends with the view
                try:
                    os.kill(self.child.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        """Close the events.  A command perfbp started that still runs (the
        user quit, or an error) gets SIGTERM and ``TERM_GRACE`` seconds, then
        SIGKILL; it is always reaped, so close never waits for good."""
        if self.mux is not None:
            self.mux.close()
        self.sampler.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self.child is not None and self.child.poll() is None:
            try:
                os.kill(self.child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + TERM_GRACE
            while self.child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.child.poll() is None:
                self.child.kill()  # SIGKILL, and reap
        if self.child is not None:
            self.exit_code = self.child.wait()
        self.run.close()  # the programs of the conditions, the command's descriptors

    def writers(self, watch: int, top: int = 3) -> "list[Writer]":
        """The busiest writers of a watch so far, symbolized, with their
        source lines."""
        busiest = _Counter(dict(self.figures[watch].writers.most_common(64)))
        return writers_of(self._symbolizer(), busiest, top)

    def top_writers(self, watch: int, top: int = 1) -> "list[str]":
        """The busiest writers of a watch so far as function+offset, without
        their source lines: what a live view shows, with no DWARF read (the
        first line table costs a frame ~0.2 s here, pyelftools' import and
        the demo's table; a large library's costs more)."""
        sym = self._symbolizer()
        named: _Counter = _Counter()
        for (pid, ip), n in self.figures[watch].writers.most_common(64):
            named[str(sym.resolve(pid, ip))] += n
        return [name for name, _n in named.most_common(top)]

    def threads(self, top: int = 5) -> "list[ThreadHits]":
        """The busiest threads over every watch."""
        total: _Counter = _Counter()
        for f in self.figures:
            total.update(f.threads)
        return [ThreadHits(pid, tid, self._comm(pid, tid), n)
                for (pid, tid), n in total.most_common(top)]

    def _comm(self, pid: int, tid: int) -> str:
        name = self.comms.get(tid) or self.comms.get(pid)
        if name is None:
            name = system.comm(tid)
            if name == "?":
                name = system.comm(pid)
            self.comms[tid] = name
        return name

    def _symbolizer(self) -> Symbolizer:
        sym = getattr(self, "_sym", None)
        if sym is None:
            sym = self._sym = Symbolizer()
        pids = {pid for f in self.figures for (pid, _ip) in f.writers}
        for pid in pids - set(sym.spaces):
            sym.add_proc_maps(pid)
        return sym

    def summary(self, top: int = 5) -> Report:
        """The end-of-run summary, as ``perfbp record`` prints it."""
        watches = []
        bindings = self.child.bindings if self.child is not None else [[]] * len(self.figures)
        for i, (f, bound) in enumerate(zip(self.figures, bindings)):
            where = bound[-1].resolution.watch if bound else None
            w = WatchReport(i, f.label, where.address if where else f.address,
                            where.length if where else f.length, f.access, f.samples,
                            lost=f.lost, kernel_hits=f.hits - f.recovered,
                            coverage=f.coverage, estimate=f.estimate,
                            bindings=[b.as_dict() for b in bound], recovered=f.recovered,
                            condition=f.condition, matched=f.matched)
            w.writers = self.writers(i, top)
            w.values = most(f.values.items(), top)
            w.transitions = [(o, v, n) for (o, v), n in most(f.transitions.items(), top)]
            w.threads = [ThreadHits(pid, tid, self._comm(pid, tid), n)
                         for (pid, tid), n in f.threads.most_common(top)]
            watches.append(w)
        return Report("", sum(f.samples for f in self.figures),
                      sum(f.lost for f in self.figures), watches, producer="perfbp",
                      notes=list(self.child.notes) if self.child is not None else [])

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def _command_stdio(path: "str | None"):
    """While a command is forked: this process's standard input is
    ``/dev/null`` and its standard output and error are the file ``path``
    (the child inherits them), then its own again.  Nothing when ``path``
    is None.

    Raises:
        PerfbpError: the file cannot be opened for writing.
    """
    if path is None:
        yield
        return
    import sys

    try:
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise PerfbpError(f"cannot write the command's output to {path!r}: {exc.strerror}; "
                          f"give another file", errno=exc.errno) from None
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]  # close-on-exec: the command never sees them
    try:
        for fd, new in ((0, null), (1, out), (2, out)):
            os.dup2(new, fd)
        yield
    finally:
        for fd, old in zip((0, 1, 2), saved):
            os.dup2(old, fd)
            os.close(old)
        os.close(out)
        os.close(null)
