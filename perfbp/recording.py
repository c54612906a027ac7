"""``perfbp record``: sample every hit into a perf.data file, and summarize.

:func:`record` arms a :class:`~perfbp.sampling.Sampler` on the target, writes
every record the kernel produces into a perf.data file (file mode, see
:mod:`perfbp.perfdata`) as it drains the rings, adds the COMM and MMAP2
records perf needs to name threads and symbolize ips (synthesized from /proc
for processes that already run; the kernel's own for a launched command), and
checks at the end that ``samples + lost == hits`` for every watch.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from . import system
from .events import Target
from .planner import Plan
from .perfdata import (PERF_RECORD_FINISHED_ROUND, FileEvent, PerfDataPipeWriter,
                       PerfDataWriter)
from .follow import ExecCheck, HolderArmer, MuxArmer, opening_watches, prepare_run
from .records import ParseConfig, sample_id_bytes
from .sampling import Sampler, WatchStats
from .session import CommandEnd, StopRequest

FINISHED_ROUND = struct.pack("<IHH", PERF_RECORD_FINISHED_ROUND, 0, 8)
PERF_RECORD_MISC_USER = 2
PROT_EXEC = 4
MAP_PRIVATE, MAP_SHARED = 2, 1


@dataclass
class RecordResult:
    """What :func:`record` wrote and counted.

    Attributes:
        path: the perf.data file.
        target: description of what was watched.
        stats: per watch, the kernel's hits and lost samples and the samples
            written.
        elapsed: seconds.
        ended_by: ``exit``, ``duration`` or ``interrupt``.
        exit_code: the launched command's return code, or None.
        bytes_written: size of the data section.
        notes, unresolved, unattributed: as :class:`~perfbp.CountResult`.
        recovered: per watch, hits the kernel missed (a debug exception
            without its status) that could only be that watch's: they have
            no sample, and are not in ``stats``.
        bindings: per watch, where a named watch was armed (launches).
        sideband_lost: COMM, MMAP2, FORK and EXIT records the kernel could
            not write (ring full): threads or code a report cannot name.
    """

    path: str
    target: str
    labels: "list[str]"
    stats: "list[WatchStats]"
    elapsed: float
    ended_by: str
    exit_code: "int | None" = None
    bytes_written: int = 0
    estimates: "list | None" = None
    notes: "tuple[str, ...]" = ()
    unresolved: "tuple" = ()
    unattributed: int = 0
    bindings: "tuple" = ()
    recovered: "tuple[int, ...]" = ()
    sideband_lost: int = 0

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.stats)


def _sample_id_trailer(config: ParseConfig, pid: int, tid: int) -> bytes:
    """A sample_id trailer (pid/tid, the rest zero) for synthesized records."""
    return sample_id_bytes(config, pid=pid, tid=tid)


def read_records(sampler: Sampler, stats: "list[WatchStats]") -> bytes:
    """One PERF_RECORD_READ per watch with the kernel's final hit and lost
    counts (read_format = PERF_FORMAT_LOST), tagged with the watch's first
    event id: how a recording carries its own "nothing lost" proof.  Where
    samples were lost, also a PERF_RECORD_LOST_SAMPLES, as perf record
    writes at its end: what perf report's "Total Lost Samples" reads."""
    from ._uapi import PERF_RECORD_LOST_SAMPLES, PERF_RECORD_READ

    out = bytearray()
    for i, st in enumerate(stats):
        ids = sampler.event_ids(i)
        if not ids:
            continue
        trailer = sample_id_bytes(sampler.config, pid=-1, tid=-1, id=ids[0])
        body = struct.pack("<IIQQ", 0xFFFFFFFF, 0xFFFFFFFF, st.hits, st.lost)
        out += _record(PERF_RECORD_READ, 0, body + trailer)
        if st.lost:
            out += _record(PERF_RECORD_LOST_SAMPLES, 0, struct.pack("<Q", st.lost) + trailer)
    return bytes(out)


def _record(rtype: int, misc: int, body: bytes) -> bytes:
    return struct.pack("<IHH", rtype, misc, 8 + len(body)) + body


def synthesize_process(pid: int, config: ParseConfig) -> bytes:
    """COMM records for every thread of ``pid`` and MMAP2 records for its
    executable mappings, from /proc, as perf synthesizes them."""
    from ._uapi import PERF_RECORD_COMM, PERF_RECORD_MMAP2

    out = bytearray()
    try:
        tids = system.thread_ids(pid)
    except ProcessLookupError:
        return b""
    for tid in tids:
        name = system.comm(tid).encode()[:15] + b"\0"
        name = name.ljust((len(name) + 7) // 8 * 8, b"\0")
        out += _record(PERF_RECORD_COMM, 0, struct.pack("<II", pid, tid) + name
                       + _sample_id_trailer(config, pid, tid))
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.readlines()
    except OSError:
        return bytes(out)
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        rng, perms, off, dev, ino = parts[:5]
        path = parts[5].strip() if len(parts) > 5 else ""
        if "x" not in perms:
            continue
        start, end = (int(x, 16) for x in rng.split("-"))
        maj, mnr = (int(x, 16) for x in dev.split(":"))
        prot = (1 if "r" in perms else 0) | (2 if "w" in perms else 0) | PROT_EXEC
        flags = MAP_SHARED if "s" in perms else MAP_PRIVATE
        name = (path or "//anon").encode() + b"\0"
        name = name.ljust((len(name) + 7) // 8 * 8, b"\0")
        body = struct.pack("<IIQQQIIQQII", pid, pid, start, end - start, int(off, 16),
                           maj, mnr, int(ino), 0, prot, flags) + name
        out += _record(PERF_RECORD_MMAP2, PERF_RECORD_MISC_USER,
                       body + _sample_id_trailer(config, pid, pid))
    return bytes(out)


def _all_pids() -> "list[int]":
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def record(watches: "Sequence", output: str, *,
           target: "Target | None" = None, command: "Sequence[str] | None" = None,
           duration: "float | None" = None, period: int = 1, callchain: bool = False,
           ring_pages: "int | None" = None,
           on_start: "Callable[[str, Plan], None] | None" = None,
           on_batch: "Callable[[object, Sampler], None] | None" = None,
           cmdline: "list[str] | None" = None,
           multiplex: "float | None" = None, trace: bool = True) -> RecordResult:
    """Sample every hit of ``watches`` on a target into a perf.data file.

    Args:
        watches: :class:`~perfbp.Watch` objects (or breakpoints, or
            ``(breakpoint, label, exclude_kernel)`` triples); a watch split
            over several registers is one watch in every output.
        output: the perf.data path (created 0600; an existing file becomes
            ``.old``; a symlink is refused).
        target / command, on_start: as :func:`perfbp.count`.
        period: sample every Nth hit (hits stay exact).
        callchain: record user call stacks.
        on_batch: called with each decoded :class:`~perfbp.sampling.Batch`.
        multiplex: when the watches need more slots than there are, let them
            take turns in slices of this many seconds (the sampling events
            are re-pointed in place; each sample's address says which watch
            it hit) and report per watch the hits seen, the coverage and the
            scaled estimate (None: refuse with the plan's explanation).

    Returns:
        Per watch, hits, samples and lost; whether they add up.

    Raises:
        PerfbpError: bad input, privilege, slots, process, output path.
    """
    stream = _StdoutStream() if output == "-" else None
    try:
        child, ws, the_plan, arming = prepare_run(watches, target, command, multiplex, trace)
        mux_slots = the_plan.free if not the_plan.fits else 0
        # a launched command is armed inside its execve; names whose address is
        # not known yet start parked, and the tracer moves them
        at_exec = child is not None
        opened = opening_watches(ws, arming)
        execs = ExecCheck(target.pid) if "image" in arming else None
        sampler = writer = mux = None
        try:
            tgt = Target.process(child.pid, name=" ".join(command)) if child else target
            kwargs = {} if ring_pages is None else {"ring_pages": ring_pages}
            if mux_slots:
                # the slots take turns: each sampling slot starts on the first
                # piece and is re-pointed by the multiplexer; samples tell their
                # watch by address
                import numpy  # noqa: F401  (attributes them: imported now, its ~0.1 s
                # does not stretch the first time slice of the run)
                from .multiplex import Multiplexer

                from .breakpoint import Breakpoint

                ek = ws[0].exclude_kernel
                group = Multiplexer.preview(opened, mux_slots)
                # slots the first group leaves free are parked as execute
                # breakpoints on a data address: armed, in the same pool (x86),
                # and never hit until the multiplexer gives them a piece
                parked = Breakpoint.execute(ws[0].pieces[0].address)
                pieces = [(-1, bp, ek) for bp in group] + \
                    [(-1, parked, ek)] * (mux_slots - len(group))
            else:
                pieces = [(wi, bp, w.exclude_kernel) for wi, w in enumerate(opened)
                          for bp in w.pieces]
                kwargs["remove_on_exec"] = [arming[wi] == "image" for wi, _bp, _ek in pieces]
            sampler = Sampler([p[1] for p in pieces], tgt, period=period, callchain=callchain,
                              enable_on_exec=at_exec, track=True,
                              exclude_kernel=[p[2] for p in pieces], **kwargs)
            if mux_slots:
                mux = Multiplexer(opened, tgt, slice_seconds=multiplex, enable_on_exec=at_exec,
                                  holders=[sampler.slot(j) for j in range(len(pieces))])
                if child is not None:
                    child.arm(MuxArmer(mux), ws)
                events = [FileEvent(sampler.attr_bytes(i), sampler.event_ids(i),
                                    f"perfbp multiplexed slot {i}") for i in range(len(pieces))]
            else:
                # one perf.data event per piece, named after its watch: perf shows
                # the watch's name, and perfbp report merges the pieces back into one
                events = [FileEvent(sampler.attr_bytes(i), sampler.event_ids(i), ws[wi].label)
                          for i, (wi, _bp, _ek) in enumerate(pieces)]
                if child is not None:
                    child.arm(HolderArmer([[sampler.slot(k) for k, p in enumerate(pieces)
                                            if p[0] == wi] for wi in range(len(ws))]), ws)
            if sampler.tracking is not None:  # after the watches: event i is watch i
                events.append(FileEvent(*sampler.tracking, "dummy:u"))
            writer = (PerfDataPipeWriter(stream.fd, events) if stream is not None
                      else PerfDataWriter(output, events))
            if child is None:
                # what already runs: COMM and MMAP2 from /proc (a launched command
                # gets the kernel's own, from its exec on)
                pids = (_all_pids() if tgt.kind == "cpus"
                        else [system.thread_group(tgt.pid) or tgt.pid])
                synth = b"".join(synthesize_process(p, sampler.config) for p in pids)
                writer.write(synth + FINISHED_ROUND)
        except BaseException:
            if sampler is not None:
                sampler.close()
            if writer is not None:
                writer.abandon()
            if child:
                child.abort()
            raise
        description = (f"command '{' '.join(command)}' (pid {child.pid})" if child
                       else tgt.describe())
        ended_by, exit_code = "exit", None
        start = time.monotonic()
        stop = StopRequest()
        try:
            # from the banner on, Ctrl-C and SIGTERM end the recording cleanly: they
            # only set a flag that the loop reads between batches, so a signal never
            # lands between draining a ring and writing what was drained
            with stop:
                if child:
                    armed_at = time.monotonic()
                    child.start()  # raises CommandNotFound if exec fails: no banner then
                    if mux is not None:  # the first group counts since exec
                        mux.start(armed_since=armed_at)
                by_addr = _AddressCounts(mux) if mux is not None else None
                batch_hook = on_batch
                if by_addr is not None:
                    def batch_hook(batch, smp, _user=on_batch):
                        by_addr.add(batch)
                        if _user:
                            _user(batch, smp)
                    if child is None:
                        mux.start()
                if on_start:
                    on_start(description, the_plan)
                ended_by, exit_code = _loop(sampler, writer, child, tgt, start, duration,
                                            batch_hook, stop, mux)
                # stop the events first: a hit after this is neither counted nor
                # sampled, so the final drain holds every sample of every counted hit
                estimates = mux.stop() if mux is not None else None
                sampler.disable()
                _flush(sampler, writer, batch_hook)
                piece_stats = sampler.stats()
                if child is not None:
                    child.finish()
                    ws = [b[-1].resolution.watch if b else w for w, b in zip(ws, child.bindings)]
                writer.write(read_records(sampler, piece_stats))
                sideband_lost = sampler.tracking_lost
                meta = {"watches": [{"label": w.label, "access": w.access,
                                     "pieces": [[p.address, p.length] for p in w.pieces]}
                                    for w in ws]}
                if child is not None:  # where named watches were armed, what happened
                    for d, b, r in zip(meta["watches"], child.bindings, child.recovered):
                        if b:
                            d["bindings"] = [x.as_dict() for x in b]
                        if r:
                            d["recovered"] = r
                    if child.notes:
                        meta["notes"] = list(child.notes)
                if sideband_lost:
                    meta["sideband_lost"] = sideband_lost
                if mux is not None:
                    stats = [WatchStats(w.pieces[0], mux.seen[i], by_addr.counts[i], mux.lost[i],
                                        period, 1) for i, w in enumerate(ws)]
                    meta["multiplexed"] = [{"seen": e.seen, "coverage": e.coverage,
                                            "estimate": e.hits, "lost": mux.lost[i]}
                                           for i, e in enumerate(estimates)]
                else:
                    stats = _per_watch(ws, pieces, piece_stats, period)
                cpus = system.online_cpus()
                writer.finish(cmdline=list(cmdline or ["perfbp", "record"]),
                              nr_cpus=(len(system.possible_cpus()), len(cpus)), meta=meta)
        except BaseException:
            # the recording cannot go on (the output failed, a bug): the
            # command perfbp launched must not outlive it
            if child and child.poll() is None:
                CommandEnd.kill(child)
            raise
        finally:
            if mux is not None:
                mux.close()
            sampler.close()
            writer.abandon()
            if child and child.returncode is None:
                child.wait()
        extra = {"sideband_lost": sideband_lost}
        note = execs.note() if execs is not None else None
        if note:
            extra["notes"] = (note,)
        if child is not None:
            extra.update({"notes": tuple(child.notes), "unattributed": child.unattributed,
                          "recovered": tuple(child.recovered),
                          "unresolved": tuple(child.unresolved_error(i)
                                              for i in child.unresolved()),
                          "bindings": tuple(tuple(b) for b in child.bindings)})
        return RecordResult(output, description, [w.label for w in ws], stats,
                            time.monotonic() - start, ended_by, exit_code, writer.data_size,
                            estimates, **extra)
    finally:
        if stream is not None:
            stream.restore()


class _StdoutStream:
    """``-o -``: the recording goes to standard output, as perf's pipe mode.

    The stream gets its own descriptor (a copy of fd 1), and fd 1 becomes a
    copy of standard error until :meth:`restore`: what perf does for its
    workload, so neither the command nor a stray print writes into the
    stream."""

    def __init__(self) -> None:
        import sys

        sys.stdout.flush()
        self.fd = os.dup(1)
        self._saved = os.dup(1)
        os.dup2(2, 1)

    def restore(self) -> None:
        import sys

        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)


class _AddressCounts:
    """Samples per watch, told apart by the sample's address (the address of
    the piece the slot held when it hit): how multiplexed samples are
    attributed."""

    def __init__(self, mux) -> None:
        self.mux = mux
        self._key = None
        self.counts = [0] * len(mux.watches)

    def _table(self) -> None:
        """The address table of the watches now (a name may have moved)."""
        import numpy as np

        key = tuple(w.pieces for w in self.mux.watches)
        if key != self._key:
            pairs = sorted((p.address, i) for i, w in enumerate(self.mux.watches)
                           for p in w.pieces)
            self._addrs = np.array([a for a, _ in pairs], dtype=np.uint64)
            self._watch = np.array([i for _, i in pairs], dtype=np.int64)
            self._key = key

    def add(self, batch) -> None:
        import numpy as np

        self._table()
        addr = batch.samples.addr
        if addr is None or not len(addr):
            return
        pos = np.minimum(np.searchsorted(self._addrs, addr), len(self._addrs) - 1)
        found = self._addrs[pos] == addr
        counts = np.bincount(self._watch[pos[found]], minlength=len(self.counts))
        for i, n in enumerate(counts.tolist()):
            self.counts[i] += n


def _per_watch(ws, pieces, piece_stats, period) -> "list[WatchStats]":
    """Add up the pieces of each watch."""
    out = []
    for wi, w in enumerate(ws):
        mine = [st for (pw, _bp, _ek), st in zip(pieces, piece_stats) if pw == wi]
        out.append(WatchStats(w.pieces[0], sum(s.hits for s in mine),
                              sum(s.samples for s in mine), sum(s.lost for s in mine), period,
                              sum(s.contexts for s in mine)))
    return out


def _flush(sampler: Sampler, writer: PerfDataWriter, on_batch) -> int:
    chunks = sampler.drain()
    if not chunks:
        return 0
    writer.write(b"".join(chunks) + FINISHED_ROUND)
    batch = sampler.decode(chunks)
    if on_batch:
        on_batch(batch, sampler)
    return len(batch)


def _loop(sampler, writer, child, target, start, duration, on_batch, stop, mux=None):
    pidfd = -1
    if child is not None:
        pidfd = child.pidfd_open()
    elif target.kind == "process" and target.pid > 0:
        try:
            pidfd = os.pidfd_open(target.pid)
        except OSError:
            pidfd = -1
    deadline = start + duration if duration is not None else None
    poller = select.poll()
    for fd in sampler.ring_fds:
        poller.register(fd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    poller.register(stop.fd, select.POLLIN)
    ending = None  # a CommandEnd: the rings are drained until the command is gone
    try:
        while True:
            if stop.signum is not None and ending is None:
                if child is None:
                    return "interrupt", None
                ending = CommandEnd(child, stop.signum, "interrupt")
                poller.unregister(stop.fd)
            if ending is not None and ending.step():
                _flush(sampler, writer, on_batch)
                return ending.ended_by, child.wait()
            now = time.monotonic()
            wait = 0.25 if deadline is None or ending else max(0.0, min(0.25, deadline - now))
            if ending is not None:
                wait = min(wait, 0.02)
            if mux is not None:
                wait = max(0.0, min(wait, mux.next_rotation() - now))
            events = poller.poll(int(wait * 1000))
            if mux is not None and time.monotonic() >= mux.next_rotation():
                mux.rotate()
            _flush(sampler, writer, on_batch)
            if any(fd == pidfd for fd, _ev in events):
                if child is not None:
                    return (ending.ended_by if ending else "exit"), child.wait()
                return "exit", None
            if target is not None and target.kind == "thread" and target.pid > 0 \
                    and not os.path.exists(f"/proc/{target.pid}"):
                return "exit", None
            if deadline is not None and time.monotonic() >= deadline and ending is None:
                if child is None:
                    return "duration", None
                ending = CommandEnd(child, signal.SIGTERM, "duration")
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep what was drained
        if child is None:
            raise
        CommandEnd.kill(child)
        return "interrupt", child.wait()
    finally:
        if pidfd >= 0:
            os.close(pidfd)
