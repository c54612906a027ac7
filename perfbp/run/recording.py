"""``perfbp record``: sample every hit into a perf.data file, and summarize.

:func:`record` arms a :class:`~perfbp.kernel.sampling.Sampler` on the target, writes
every record the kernel produces into a perf.data file (file mode, see
:mod:`perfbp.data.perfdata`) as it drains the rings, adds the COMM and MMAP2
records perf needs to name threads and symbolize ips (synthesized from /proc
for processes that already run; the kernel's own for a launched command), and
checks at the end that ``samples + lost == hits`` for every watch.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import InvalidBreakpoint
from ..kernel import system
from ..kernel.events import Target
from ..planning.planner import Plan
from ..data.perfdata import (PERF_RECORD_FINISHED_ROUND, BuildId, FileEvent,
                             PerfDataPipeWriter, PerfDataWriter)
from .lifecycle import Run, SampledArming, StopRequest
from ..kernel.records import ParseConfig, iter_records, sample_id_bytes
from ..kernel.sampling import CallGraph, Sampler, WatchStats

FINISHED_ROUND = struct.pack("<IHH", PERF_RECORD_FINISHED_ROUND, 0, 8)
PERF_RECORD_MISC_USER = 2
PERF_RECORD_MISC_MMAP_DATA = 1 << 13
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
    from ..kernel._uapi import PERF_RECORD_LOST_SAMPLES, PERF_RECORD_READ

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
    executable mappings (every mapping when the samples carry user stacks,
    as the tracking event then asks the kernel for: see
    :func:`~perfbp.kernel.events.tracking_attr`), from /proc, as perf
    synthesizes them."""
    from ..kernel._uapi import PERF_RECORD_COMM, PERF_RECORD_MMAP2, PERF_SAMPLE_STACK_USER

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
        if "x" not in perms and not config.sample_type & PERF_SAMPLE_STACK_USER:
            continue
        start, end = (int(x, 16) for x in rng.split("-"))
        maj, mnr = (int(x, 16) for x in dev.split(":"))
        prot = (1 if "r" in perms else 0) | (2 if "w" in perms else 0) \
            | (PROT_EXEC if "x" in perms else 0)
        flags = MAP_SHARED if "s" in perms else MAP_PRIVATE
        name = (path or "//anon").encode() + b"\0"
        name = name.ljust((len(name) + 7) // 8 * 8, b"\0")
        body = struct.pack("<IIQQQIIQQII", pid, pid, start, end - start, int(off, 16),
                           maj, mnr, int(ino), 0, prot, flags) + name
        out += _record(PERF_RECORD_MMAP2, PERF_RECORD_MISC_USER
                       | (0 if "x" in perms else PERF_RECORD_MISC_MMAP_DATA),
                       body + _sample_id_trailer(config, pid, pid))
    return bytes(out)


class BuildIds:
    """The build-ids of the objects a recording maps executable, for its
    build-id table (HEADER_BUILD_ID), read from each file when its first
    mapping record is written (the file may be replaced later).  Every
    object mapped is listed, as ``perf record --buildid-all`` lists them
    (perf lists only those its samples hit, which it knows after a pass
    over the recording)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self.found: list = []  # perfdata.BuildId, in the order first mapped

    def add(self, records) -> None:
        """Note the files of the MMAP/MMAP2 records among ``records``."""
        from ..kernel.records import Mmap
        from ..symbols.elf import ElfReader

        for r in records:
            if not isinstance(r, Mmap) or (r.v2 and not r.prot & PROT_EXEC):
                continue
            path = r.filename
            if path in self._seen or not path.startswith("/"):
                continue
            self._seen.add(path)
            try:
                with ElfReader(path) as elf:
                    bid = elf.build_id()
            except (OSError, ValueError):  # gone, not ELF, a device: no entry
                continue
            if bid:
                self.found.append(BuildId(path, bid))


def _all_pids() -> "list[int]":
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def record(watches: "Sequence", output: str, *,
           target: "Target | None" = None, command: "Sequence[str] | None" = None,
           duration: "float | None" = None, period: int = 1,
           callchain: "bool | str" = False,
           ring_pages: "int | None" = None,
           on_start: "Callable[[str, Plan], None] | None" = None,
           on_batch: "Callable[[object, Sampler], None] | None" = None,
           cmdline: "list[str] | None" = None,
           multiplex: "float | None" = None, trace: bool = True,
           condition: "str | Sequence | None" = None, values: bool = False) -> RecordResult:
    """Sample every hit of ``watches`` on a target into a perf.data file.

    Args:
        watches: :class:`~perfbp.Watch` objects (or breakpoints, or
            ``(breakpoint, label, exclude_kernel)`` triples); a watch split
            over several registers is one watch in every output.
        output: the perf.data path (created 0600; an existing file becomes
            ``.old``; a symlink is refused).
        target / command, on_start: as :func:`perfbp.count`.
        period: sample every Nth hit (hits stay exact).
        callchain: record call stacks: ``True`` or ``"fp"`` (the kernel
            walks the frame pointers), ``"dwarf"`` or ``"dwarf,SIZE"`` (each
            sample carries the user registers and SIZE bytes of stack, 8192
            by default, which :func:`~perfbp.load_report` unwinds with the
            objects' CFI: right in code built without frame pointers), as
            perf's ``--call-graph``.
        on_batch: called with each decoded :class:`~perfbp.kernel.sampling.Batch`.
        multiplex: when the watches need more slots than there are, let them
            take turns in slices of this many seconds (the sampling events
            are re-pointed in place; each sample's address says which watch
            it hit) and report per watch the hits seen, the coverage and the
            scaled estimate (None: refuse with the plan's explanation).
        condition: a condition on the watched value (``"new == 0"``; or one
            per watch, None in it for every hit), tested in the kernel on
            every hit: only the hits for which it holds become samples, and
            each sample carries ``old`` and ``new`` (the value before and
            after the hit).  The watch's ``matched`` counts them: then
            ``samples + lost == matched``, and ``hits`` stays every hit.
        values: every sample carries ``old`` and ``new`` (implied by
            ``condition``; without one, every hit is a sample).

    Returns:
        Per watch, hits, samples and lost; whether they add up.

    Raises:
        PerfbpError: bad input, privilege, slots, process, output path.
    """
    callchain = CallGraph.parse(callchain)  # bad input is refused before anything runs
    stream = _StdoutStream() if output == "-" else None
    try:
        if (condition is not None or values) and period != 1:
            raise InvalidBreakpoint(f"a condition or values see every hit: period {period} "
                                    f"(one sample every {period} hits) cannot go with them")
        run = Run(watches, target, command, multiplex, trace, condition, values)
        armed = run.arm_sampler(period=period, callchain=callchain,
                                **({} if ring_pages is None else {"ring_pages": ring_pages}))
        sampler, mux = armed.sampler, armed.mux
        build_ids = BuildIds()
        try:
            writer = _open_output(output, stream, run, armed, build_ids)
        except BaseException:
            sampler.close()
            run.abort()
            raise
        failed = True
        try:
            # from the banner on, Ctrl-C and SIGTERM end the recording cleanly:
            # they only set a flag that the loop reads between batches, so a
            # signal never lands between draining a ring and writing it
            with StopRequest() as stop:
                start = time.monotonic()
                run.start(mux)  # raises CommandNotFound if exec fails: no banner then
                by_addr = _AddressCounts(mux) if mux is not None else None
                hook = _batch_hook(on_batch, by_addr, build_ids)
                if on_start:
                    on_start(run.description, run.plan)

                def drain() -> None:
                    _flush(sampler, writer, hook)
                    if run.execs is not None:
                        run.execs.poll()

                ended_by, exit_code = run.wait(stop, start=start, duration=duration, mux=mux,
                                               fds=sampler.ring_fds, on_wake=drain, idle=0.25)
                estimates, ws, stats, meta = _stop(run, armed, writer, hook, by_addr, period,
                                                   cmdline, build_ids)
                failed = False
        finally:
            if mux is not None:
                mux.close()
            sampler.close()
            writer.abandon()
            run.close(failed)  # a failed recording never leaves its command running
        return RecordResult(output, run.description, file_labels(ws, run.conditions), stats,
                            time.monotonic() - start, ended_by, exit_code, writer.data_size,
                            estimates, sideband_lost=meta.get("sideband_lost", 0),
                            **run.outcome())
    finally:
        if stream is not None:
            stream.restore()


def _open_output(output: str, stream, run: Run, armed: SampledArming,
                 build_ids: BuildIds) -> PerfDataWriter:
    """The perf.data writer, one event per sampling slot (named after its
    watch: perf shows the watch's name, and perfbp report merges the pieces
    of a watch back into one), then the tracking event; for a target that
    already runs, the COMM and MMAP2 records synthesized from /proc (a
    launched command gets the kernel's own, from its exec on; CPUs, those of
    every process, even while a command runs)."""
    sampler = armed.sampler
    names = ([f"perfbp multiplexed slot {i}" for i in range(len(armed.pieces))]
             if armed.mux is not None else
             [file_labels(run.watches, run.conditions)[wi] for wi, _bp, _ek in armed.pieces])
    events = [FileEvent(sampler.attr_bytes(i), sampler.event_ids(i), name)
              for i, name in enumerate(names)]
    if sampler.tracking is not None:  # after the watches: event i is watch i
        events.append(FileEvent(*sampler.tracking, "dummy:u"))
    writer = (PerfDataPipeWriter(stream.fd, events) if stream is not None
              else PerfDataWriter(output, events))
    if run.child is None or run.target.kind == "cpus":
        try:
            tgt = run.target
            pids = (_all_pids() if tgt.kind == "cpus"
                    else [system.thread_group(tgt.pid) or tgt.pid])
            records = b"".join(synthesize_process(p, sampler.config) for p in pids)
            writer.write(records + FINISHED_ROUND)
            build_ids.add(iter_records(records, sampler.config))
        except BaseException:
            writer.abandon()
            raise
    return writer


def _stop(run: Run, armed: SampledArming, writer, hook, by_addr, period: int, cmdline,
          build_ids: BuildIds):
    """End a recording: stop the events first (a hit after this is neither
    counted nor sampled, so the final drain holds every sample of every
    counted hit), drain, read the kernel's counts into the file and finish
    it with the build-ids of what it mapped.  Returns ``(estimates,
    watches, stats, meta)``."""
    sampler, mux = armed.sampler, armed.mux
    estimates = mux.stop() if mux is not None else None
    sampler.disable()
    _flush(sampler, writer, hook)
    run.finish()
    piece_stats = sampler.stats()
    writer.write(read_records(sampler, piece_stats))
    ws, stats, meta = _account(run, armed, piece_stats, by_addr, estimates, period)
    writer.finish(cmdline=list(cmdline or ["perfbp", "record"]),
                  nr_cpus=(len(system.possible_cpus()), len(system.online_cpus())), meta=meta,
                  build_ids=build_ids.found)
    return estimates, ws, stats, meta


def _batch_hook(on_batch, by_addr, build_ids: BuildIds):
    """What each decoded batch goes to: the build-ids of the files it maps,
    the caller's ``on_batch``, and the per-address counts of a multiplexed
    recording."""
    def hook(batch, smp):
        if batch.records:
            build_ids.add(batch.records)
        if by_addr is not None:
            by_addr.add(batch)
        if on_batch:
            on_batch(batch, smp)
    return hook


def _account(run: Run, armed: SampledArming, piece_stats, by_addr, estimates, period):
    """``(watches, stats, meta)`` at the end: each watch where it was armed
    last, its hits, samples and lost, and perfbp's own description of the
    watches for the file (bindings, recovered hits, notes, side-band records
    lost, a multiplexed run's turns)."""
    ws = run.final_watches(run.watches)
    meta: dict = {"watches": [{"label": label, "access": w.access,
                               "pieces": [[p.address, p.length] for p in w.pieces]}
                              for w, label in zip(ws, file_labels(ws, run.conditions))]}
    if run.conditions is not None:  # the samples carry old and new
        for d, c, ts in zip(meta["watches"], run.conditions, run.tallies()):
            d["condition"] = None if c is None else str(c)
            d["matched"] = sum(t.matched for t in ts)
    child = run.child
    if child is not None:  # where named watches were armed, what happened
        for d, b, r in zip(meta["watches"], child.bindings, child.recovered):
            if b:
                d["bindings"] = [x.as_dict() for x in b]
            if r:
                d["recovered"] = r
        if child.notes:
            meta["notes"] = list(child.notes)
    sideband_lost = armed.sampler.tracking_lost
    if sideband_lost:
        meta["sideband_lost"] = sideband_lost
    mux = armed.mux
    if mux is None:
        return ws, _per_watch(ws, armed.pieces, piece_stats, period), meta
    stats = [WatchStats(w.pieces[0], mux.seen[i], by_addr.counts[i], mux.lost[i], period, 1)
             for i, w in enumerate(ws)]
    meta["multiplexed"] = [{"seen": e.seen, "coverage": e.coverage, "estimate": e.hits,
                            "lost": mux.lost[i]} for i, e in enumerate(estimates)]
    return ws, stats, meta


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


def file_labels(watches, conditions: "list | None") -> "list[str]":
    """Each watch's name in a recording, where a report tells the watches
    apart by name (a watch split over several registers is several events
    of one name): its label, and for a label that several watches share,
    its condition (``state if new == 0``) or else its place (``state #2``)."""
    labels = [w.label for w in watches]
    out = []
    for i, label in enumerate(labels):
        if labels.count(label) == 1:
            out.append(label)
            continue
        cond = conditions[i] if conditions else None
        same = [j for j, x in enumerate(labels) if x == label
                and (conditions[j] if conditions else None) == cond]
        out.append(f"{label} if {cond}" if cond is not None and len(same) == 1
                   else f"{label} #{labels[:i].count(label) + 1}")
    return out


def _per_watch(ws, pieces, piece_stats, period) -> "list[WatchStats]":
    """Add up the pieces of each watch."""
    out = []
    for wi, w in enumerate(ws):
        mine = [st for (pw, _bp, _ek), st in zip(pieces, piece_stats) if pw == wi]
        matched = (None if any(s.matched is None for s in mine)
                   else sum(s.matched for s in mine))
        out.append(WatchStats(w.pieces[0], sum(s.hits for s in mine),
                              sum(s.samples for s in mine), sum(s.lost for s in mine), period,
                              sum(s.contexts for s in mine), matched))
    return out


def _flush(sampler: Sampler, writer: PerfDataWriter, on_batch) -> int:
    chunks = sampler.drain()
    if not chunks:
        return 0
    writer.write(b"".join([*chunks, FINISHED_ROUND]))  # one copy
    batch = sampler.decode(chunks)
    if on_batch:
        on_batch(batch, sampler)
    return len(batch)
