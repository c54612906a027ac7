"""Sampling every hit: :class:`Sampler` arms watches with ``sample_period``
and reads each hit's sample (ip, thread, time, CPU, address, callchain) from
the kernel's mmap rings.

Layout: **one ring per CPU**, shared through ``PERF_EVENT_IOC_SET_OUTPUT`` by
every event on that CPU (perf's own layout).  Why: a per-task event with
``inherit`` cannot be mmapped at all (the kernel refuses, so that children on
many CPUs do not write into one buffer), so following threads and children
requires per-CPU events; sharing one ring per CPU then keeps the number of
mappings and poll descriptors at the number of CPUs, whatever the number of
threads and watches, and each ring holds its CPU's records in time order.

Accounting ("nothing lost"): for each watch the kernel's own hit count and its
count of samples it could not write (``PERF_FORMAT_LOST``, Linux 6.0+) are read
from the events, and the samples are counted as they are decoded, so
``samples + lost == hits`` can be checked exactly, per watch.
"""

from __future__ import annotations

import errno
import select
from dataclasses import dataclass, field
from typing import Sequence

from . import abi, arch, system
from ._uapi import (
    PERF_FORMAT_LOST,
    PERF_SAMPLE_ADDR,
    PERF_SAMPLE_CALLCHAIN,
    PERF_SAMPLE_CPU,
    PERF_SAMPLE_IDENTIFIER,
    PERF_SAMPLE_IP,
    PERF_SAMPLE_RAW,
    PERF_SAMPLE_REGS_USER,
    PERF_SAMPLE_STACK_USER,
    PERF_SAMPLE_TID,
    PERF_SAMPLE_TIME,
)
from .breakpoint import Breakpoint
from ..errors import InvalidBreakpoint, NoSuchProcess, PerfbpError
from .events import (EventOptions, Target, close_event, error_from_oserror, make_attr,
                     open_event_fd, open_output_fd, open_tracking_fd, tracking_attr)
from .records import VALUES_RAW, Lost, ParseConfig, Record, SampleColumns, Task, decode_bulk
from .ring import Ring

#: What every sample carries: 48 bytes with its header (perf record -c 1: 32,
#: without the id and the CPU).  Left out because they carry nothing:
#: PERIOD (the kernel writes the hits since the last sample, which is the
#: period, ours) and ADDR (a breakpoint's sample holds the event's
#: ``bp_addr`` at the time, not the address accessed: the watch's, known from
#: the id), unless the events are moved while they sample (``addr=True``).
BASE_SAMPLE_TYPE = (PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID
                    | PERF_SAMPLE_TIME | PERF_SAMPLE_CPU)
DEFAULT_RING_PAGES = 512  # 2 MiB per CPU: ~40,000 samples, ~0.4 s of hits at full rate
#: with a dwarf call graph each sample is ~8.4 KB: 16 MiB per CPU holds ~2,000
DWARF_RING_PAGES = 4096


@dataclass(frozen=True)
class CallGraph:
    """How each sample carries its call stack, in perf's words
    (``--call-graph fp|dwarf[,SIZE]``).

    ``fp``: the kernel walks the frame pointers at the hit and writes the
    return addresses (PERF_SAMPLE_CALLCHAIN).  Cheap (8 bytes a frame), and
    only as good as the code's frame pointers: code built without them
    (``-O2`` on x86-64 omits them) gives stacks cut short or made of
    whatever its rbp held.

    ``dwarf``: the kernel copies the user registers and ``stack_size`` bytes
    of the user stack from the stack pointer up into each sample
    (PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER, as ``perf record
    --call-graph dwarf``); the reader unwinds them with each object's CFI
    (``.eh_frame``, ``.debug_frame``), which every x86-64 object has.  Right
    whatever the frame pointers, and big: each sample is ``stack_size`` bytes
    more (8 KiB by default), so a fast writer fills the rings sooner.  A
    stack deeper than ``stack_size`` bytes is unwound as far as the copy
    goes.
    """

    mode: str
    stack_size: int = 8192

    #: the largest stack a sample can carry: the record's size is a u16
    #: (perf's limit, ``round_down(USHRT_MAX, 8)``)
    MAX_STACK = 65528

    @classmethod
    def parse(cls, value: "bool | str | CallGraph | None") -> "CallGraph | None":
        """``False``/``None``: no stacks; ``True`` or ``"fp"``: frame
        pointers; ``"dwarf"`` or ``"dwarf,SIZE"`` (bytes, rounded up to a
        multiple of 8, as perf does).

        Raises:
            PerfbpError: (EINVAL) any other value, or a size out of range.
        """
        if isinstance(value, CallGraph) or value is None or value is False:
            return value or None
        if value is True:
            return cls("fp")
        mode, _, size = str(value).partition(",")
        if mode == "fp" and not size:
            return cls("fp")
        if mode != "dwarf":
            raise PerfbpError.phrased(
                f"{{call_graph}}{value!r} is not a call graph: give fp (frame pointers) "
                f"or dwarf[,SIZE] (the user stack, unwound with the CFI)",
                errno=errno.EINVAL)
        if not size:
            return cls("dwarf")
        try:
            n = int(size, 0)
        except ValueError:
            n = -1
        n = (n + 7) // 8 * 8
        if not 8 <= n <= cls.MAX_STACK:
            raise PerfbpError.phrased(
                f"{{call_graph}}{value!r}: the stack size must be 8 to {cls.MAX_STACK} "
                f"bytes (a sample is one record of at most 64 KiB); perf's default is "
                f"8192", errno=errno.EINVAL)
        return cls("dwarf", n)

    def __str__(self) -> str:
        return self.mode if self.mode == "fp" else f"dwarf,{self.stack_size}"


@dataclass(frozen=True)
class WatchStats:
    """The accounting of one watch.

    Attributes:
        breakpoint: the watch.
        hits: the kernel's own count of hits (read from the events).
        samples: samples decoded so far.
        lost: samples the kernel could not write (ring full).
        period: one sample every ``period`` hits.
        matched: with a value program, the hits that matched its condition
            (each one a sample, or lost); None without one.
    """

    breakpoint: Breakpoint
    hits: int
    samples: int
    lost: int
    period: int = 1
    contexts: int = 1
    matched: "int | None" = None

    @property
    def complete(self) -> bool:
        """Every hit is accounted for: ``(samples + lost) * period``
        equals the hits, up to one partial stride per event instance (each
        thread on each CPU counts its own period: ``contexts``).  With a
        value program, every matching hit: ``samples + lost == matched``."""
        if self.matched is not None:
            return self.samples + self.lost == self.matched
        if self.period == 1:
            return self.samples + self.lost == self.hits
        spare = self.hits - (self.samples + self.lost) * self.period
        return 0 <= spare <= (self.period - 1) * self.contexts

    @property
    def missing(self) -> int:
        """Hits neither sampled nor reported lost (0 when complete)."""
        if self.matched is not None:
            return self.matched - self.samples - self.lost
        if self.period == 1:
            return self.hits - self.samples - self.lost
        return 0 if self.complete else self.hits // self.period - self.samples - self.lost


@dataclass
class Batch:
    """What one drain of the rings produced.

    Attributes:
        samples: columns (numpy arrays), plus ``watch``: the index of the
            watch each sample belongs to.
        watch: numpy array of watch indices, one per sample.
        records: the other records (LOST, COMM, MMAP2, FORK, EXIT, ...).
    """

    samples: SampleColumns
    watch: object
    records: "list[Record]" = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


class Sampler:
    """Sample hits of up to four watches on one target.

    Example::

        with Sampler([Breakpoint.write(addr, 8)], Target.process(pid)) as s:
            while running():
                s.wait(0.5)
                batch = s.read()
                print(len(batch), "hits; ips:", batch.samples.ip[:5])
            print(s.stats())

    Args:
        watches: the breakpoints.
        target: where (thread, process, CPUs).
        period: sample every ``period``-th hit (perf's sample_period); the hit
            counts stay exact.
        callchain: record the call stack of each hit: ``True`` or ``"fp"``
            (frame pointers), ``"dwarf"`` or ``"dwarf,SIZE"`` (the user
            registers and stack, to unwind with the CFI): see
            :class:`CallGraph`.
        ring_pages: data pages per CPU ring (a power of two); by default
            :data:`DEFAULT_RING_PAGES`, or :data:`DWARF_RING_PAGES` with a
            dwarf call graph (samples 170 times bigger).
        enabled, enable_on_exec, exclude_kernel: as for
            :class:`~perfbp.Counter`.
        track: also ask the kernel for COMM, MMAP2, FORK and EXIT records (what
            perf needs to name threads and symbolize ips).
        remove_on_exec: per watch (or for all), have the kernel remove its
            events from a task that execs (a watch on a name of the program).
        addr: have each sample carry the breakpoint's address (PERF_SAMPLE_ADDR)
            too: needed when the events are moved while they sample (the
            multiplexer, a name bound while the command runs), where the
            address tells which breakpoint a sample hit.  Otherwise
            :meth:`decode` fills ``samples.addr`` from the watch.
        programs: per watch, a :class:`~perfbp.kernel.values.ValueProgram`
            (made with ``emit=True``) or None: attached to each of the
            watch's events before they are enabled, so only the hits that
            match its condition become samples (``period`` must be 1).  The
            caller keeps and closes them.  Programs made with ``values=True``
            (every watch then needs one; a condition of None lets every hit
            through) write the samples themselves, with the watched value
            before and after each hit (``old``, ``new``): the sampler opens
            their output events, one per CPU and watch, on the CPU's ring,
            and counts their samples and losses as the watch's.
        condition: the simple way to ``programs``: a condition on the
            watched value (``"new == 0"``, see :mod:`perfbp.kernel.condition`),
            or one per watch (None in it: every hit): only the hits for
            which it holds are sampled, each sample with ``old`` and ``new``
            (``batch.samples.old``, ``.new``), and :meth:`stats` gives each
            watch's ``matched``.  The sampler makes and closes the programs;
            the first hit's ``old`` is 0 (give ``programs`` whose
            :meth:`~perfbp.kernel.values.ValueProgram.set_last` was called
            for another).
        values: every sample carries ``old`` and ``new`` (implied by
            ``condition``).

    Raises:
        PerfbpError: as :class:`~perfbp.Counter`; nothing is left open.
    """

    def __init__(self, watches: "Sequence[Breakpoint]", target: Target, *, period: int = 1,
                 callchain: "bool | str | CallGraph" = False,
                 ring_pages: "int | None" = None,
                 enabled: bool = True, enable_on_exec: bool = False,
                 exclude_kernel: "bool | None | Sequence[bool | None]" = None,
                 track: bool = False, wakeup_fraction: int = 4,
                 remove_on_exec: "bool | Sequence[bool]" = False, addr: bool = False,
                 programs: "Sequence | None" = None,
                 condition: "str | Sequence | None" = None, values: bool = False) -> None:
        if period < 1:
            raise InvalidBreakpoint(f"period {period} must be 1 (every hit) or more")
        own = condition is not None or values
        if own and programs is not None:
            raise InvalidBreakpoint("give condition= (or values=) or programs=, not both")
        if period != 1 and (own or any(p is not None for p in programs or ())):
            raise InvalidBreakpoint(f"a condition sees every hit: period {period} "
                                    f"(every {period}th hit) cannot go with it")
        self._own_programs: list = _programs(list(watches), condition) if own else []
        if own:
            programs = self._own_programs
        self.programs = list(programs) if programs is not None else [None] * len(watches)
        self.values = any(p is not None and p.values for p in self.programs)
        if self.values and not all(p is not None and p.values for p in self.programs):
            raise InvalidBreakpoint("values in samples are for every watch of a sampler or "
                                    "none: give each watch a program made with values=True")
        self.watches = list(watches)
        self.target = target
        self.period = period
        # never PERF_SAMPLE_PERIOD: perf_swevent_event() (which breakpoints
        # go through) samples *every* hit, with period = 1, whenever it is in
        # sample_type, whatever sample_period says
        graph = self.call_graph = CallGraph.parse(callchain)
        dwarf = graph is not None and graph.mode == "dwarf"
        # dwarf as perf records it: the kernel's part of the stack (none for
        # a user watch) as a callchain, the user part as registers and bytes
        regs = arch.current().sample_regs_user if dwarf else 0
        # with values, the address is in the raw field (a bpf-output sample
        # has no ADDR of its own)
        self.sample_type = (BASE_SAMPLE_TYPE | (PERF_SAMPLE_CALLCHAIN if graph else 0)
                            | (PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER if dwarf else 0)
                            | (PERF_SAMPLE_ADDR if addr and not self.values else 0)
                            | (PERF_SAMPLE_RAW if self.values else 0))
        self.config = ParseConfig(self.sample_type, True, PERF_FORMAT_LOST, regs,
                                  VALUES_RAW.size if self.values else 0)
        if ring_pages is None:
            ring_pages = DWARF_RING_PAGES if dwarf else DEFAULT_RING_PAGES
        if dwarf:
            # stack samples fill a ring in tens of milliseconds: the first
            # drain must not wait for numpy's import (a third of a second)
            import numpy  # noqa: F401
        self.ring_pages = ring_pages
        page = 4096
        watermark = max(page, ring_pages * page // wakeup_fraction)
        if not isinstance(exclude_kernel, (list, tuple)):
            exclude_kernel = [exclude_kernel] * len(self.watches)
        if not isinstance(remove_on_exec, (list, tuple)):
            remove_on_exec = [remove_on_exec] * len(self.watches)
        # every event opens disabled and is enabled once all the rings are
        # mapped: an enabled event counts a hit that comes before its ring
        # exists (or before its output is redirected to one), and the kernel
        # drops that hit's sample without counting it lost (perf_output_begin
        # finds no rb), so samples + lost would fall short of the hits
        self._opts = [EventOptions(enabled=False,
                                   enable_on_exec=enable_on_exec, exclude_kernel=ek,
                                   sample_period=period, sample_type=self.sample_type,
                                   watermark=watermark, sample_id_all=True,
                                   read_format=PERF_FORMAT_LOST,
                                   exclude_callchain_kernel=bool(graph) and not bp.is_kernel(),
                                   exclude_callchain_user=dwarf, sample_regs_user=regs,
                                   sample_stack_user=graph.stack_size if dwarf else 0,
                                   remove_on_exec=roe)
                      for ek, roe, bp in zip(exclude_kernel, remove_on_exec, self.watches)]
        self._track = track
        self._events: list[tuple[int, int, int, int]] = []  # (fd, watch, cpu, tid)
        self._trackers: list[int] = []  # the dummy events that carry side-band records
        self._outputs: dict[tuple[int, int], int] = {}  # (watch, cpu) -> bpf-output event
        self._tracking_ids: list[int] = []
        self._tracking_attr: "bytes | None" = None
        self._rings: dict[int, tuple[int, Ring, abi.RingMapping]] = {}
        self._id_watch: dict[int, int] = {}
        self._attr_of: dict[int, bytes] = {}
        self._opts_of: dict[int, EventOptions] = {}
        self._id_table = None  # sorted (ids, watches), for decoding
        self._samples = [0] * len(self.watches)
        self._lost_records = 0
        self._forks = 0
        self._closed = False
        self._enabled = False
        self.cpus = (list(target.cpus) if target.kind == "cpus"
                     else (list(target.cpus) or system.online_cpus()))
        try:
            self._open_all()
        except BaseException:
            self.close()
            raise
        self._poll = select.poll()
        for fd, _ring, _map in self._rings.values():
            self._poll.register(fd, select.POLLIN)
        if enabled and not enable_on_exec:
            self.enable()

    # -- opening ---------------------------------------------------------------------
    def _open(self, widx: int, pid: int, cpu: int) -> None:
        bp = self.watches[widx]
        opts = self._opts[widx]
        inherit = self.target.inherit or self.target.kind == "process"
        if self._track and cpu not in self._rings:
            # side-band records come from a dummy event of their own, which
            # then owns the CPU's ring (see events.tracking_attr)
            tfd = open_tracking_fd(pid, cpu, inherit, opts, self.target)
            self._trackers.append(tfd)
            if self._tracking_attr is None:
                self._tracking_attr = abi.attr_bytes(tracking_attr(inherit, opts))
            self._tracking_ids.append(abi.event_id(tfd))
            self._map_ring(tfd, cpu)
        fd = open_event_fd(bp, pid, cpu, inherit, opts, self.target)
        self._events.append((fd, widx, cpu, pid))
        if self.programs[widx] is not None:
            self.programs[widx].attach(fd)
        self._opts_of[fd] = opts  # what MODIFY_ATTRIBUTES must reproduce
        if widx not in self._attr_of:
            self._attr_of[widx] = abi.attr_bytes(make_attr(bp, inherit, opts))
        self._id_watch[abi.event_id(fd)] = widx
        if cpu not in self._rings:
            self._map_ring(fd, cpu)
        else:
            try:
                abi.set_output(fd, self._rings[cpu][0])
            except OSError as exc:
                raise error_from_oserror(exc, bp=bp, pid=pid, cpu=cpu, target=self.target,
                                         action="share a ring for") from None
        if self.values and (widx, cpu) not in self._outputs:
            self._open_output(widx, cpu)

    def _open_output(self, widx: int, cpu: int) -> None:
        """The watch's bpf-output event on ``cpu``, writing into the CPU's
        ring: enabled at once (a disabled one takes no sample, and the
        breakpoints that run the program are not enabled yet)."""
        from dataclasses import replace

        ofd = open_output_fd(cpu, replace(self._opts[widx], enabled=True), self.target)
        self._outputs[(widx, cpu)] = ofd
        self._id_watch[abi.event_id(ofd)] = widx
        try:
            abi.set_output(ofd, self._rings[cpu][0])
        except OSError as exc:
            raise error_from_oserror(exc, pid=-1, cpu=cpu, target=self.target,
                                     action="share a ring for",
                                     what="values output event") from None
        self.programs[widx].add_output(cpu, ofd)

    def _map_ring(self, fd: int, cpu: int) -> None:
        try:
            mapping = abi.RingMapping(fd, self.ring_pages)
        except OSError as exc:
            raise PerfbpError(f"cannot map the ring buffer of CPU {cpu} "
                              f"({self.ring_pages} pages): {exc.strerror}; try fewer "
                              f"pages, or raise kernel.perf_event_mlock_kb",
                              errno=exc.errno) from None
        self._rings[cpu] = (fd, Ring(mapping), mapping)

    def _open_all(self) -> None:
        t = self.target
        if t.kind == "cpus":
            for cpu in self.cpus:
                for w in range(len(self.watches)):
                    self._open(w, -1, cpu)
            return
        if t.kind == "thread":
            for cpu in self.cpus:
                for w in range(len(self.watches)):
                    self._open(w, t.pid, cpu)
            return
        seen: set[int] = set()
        while True:
            try:
                tids = system.thread_ids(t.pid)
            except ProcessLookupError:
                raise NoSuchProcess(f"cannot watch process {t.pid}: it does not exist "
                                    f"(or has exited)", pid=t.pid) from None
            new = [x for x in tids if x not in seen]
            if not new:
                return
            for tid in new:
                seen.add(tid)
                try:
                    for cpu in self.cpus:
                        for w in range(len(self.watches)):
                            self._open(w, tid, cpu)
                except NoSuchProcess:
                    if tid == t.pid:
                        raise

    # -- reading ---------------------------------------------------------------------
    def wait(self, timeout: "float | None" = None) -> bool:
        """Wait until a ring reaches its wakeup watermark (or ``timeout``
        seconds pass); return whether one did."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        return bool(self._poll.poll(ms))

    def drain(self) -> "list[bytes]":
        """Copy every ring's published records out (one chunk per ring with
        data) and release the space, without decoding."""
        chunks = []
        for _fd, ring, _map in self._rings.values():
            chunk = ring.read()
            if chunk:
                chunks.append(chunk)
        return chunks

    def decode(self, chunks: "list[bytes]") -> Batch:
        """Decode drained chunks; count each watch's samples."""
        import numpy as np

        parts = []
        watch_parts = []
        others: list[Record] = []
        for chunk in chunks:
            cols, recs = decode_bulk(chunk, self.config)
            if len(cols):
                parts.append(cols)
                watch_parts.append(self._watch_of(cols.id))
            for rec in recs:
                if isinstance(rec, Lost):
                    self._lost_records += rec.lost
                elif isinstance(rec, Task) and not rec.exit:
                    self._forks += 1  # a new task: inherited events, own periods
            others.extend(recs)
        samples = SampleColumns.concat(parts)
        watch = np.concatenate(watch_parts) if watch_parts else np.zeros(0, dtype=np.int64)
        if samples.addr is None and len(watch):
            # unmoved events: each sample's address is its watch's
            addrs = np.array([bp.address for bp in self.watches] + [0], dtype=np.uint64)
            samples.addr = addrs[watch]  # watch -1 (an unknown id) -> 0
        if len(watch):
            counts = np.bincount(watch[watch >= 0], minlength=len(self.watches))
            for i in range(len(self.watches)):
                self._samples[i] += int(counts[i])
        return Batch(samples, watch, others)

    def read(self) -> Batch:
        """Drain every ring and decode: the samples (as columns) and the
        other records."""
        return self.decode(self.drain())

    def attr_bytes(self, watch: int) -> bytes:
        """The attr the watch's events were opened with."""
        return self._attr_of[watch]

    def event_ids(self, watch: int) -> "tuple[int, ...]":
        """The kernel ids of the watch's events (what samples carry)."""
        return tuple(i for i, w in self._id_watch.items() if w == watch)

    def _watch_of(self, ids):
        import numpy as np

        if self._id_table is None:  # the events are all open: build it once
            keys = np.array(sorted(self._id_watch), dtype=np.uint64)
            vals = np.array([self._id_watch[int(k)] for k in keys], dtype=np.int64)
            self._id_table = (keys, vals)
        keys, vals = self._id_table
        pos = np.searchsorted(keys, ids)
        pos = np.minimum(pos, len(keys) - 1)
        found = keys[pos] == ids
        return np.where(found, vals[pos], -1)

    @property
    def tracking(self) -> "tuple[bytes, tuple[int, ...]] | None":
        """The tracking events' attr and ids (what a perf.data file lists as
        one more event), or None without ``track``."""
        if self._tracking_attr is None:
            return None
        return self._tracking_attr, tuple(self._tracking_ids)

    @property
    def tracking_lost(self) -> int:
        """Side-band records (COMM, MMAP2, FORK, EXIT) the kernel could not
        write: threads or mappings a reader will not be able to name."""
        return sum(abi.read_u64s(fd, 2)[1] for fd in self._trackers)

    def watch_of_id(self, event_id: int) -> int:
        """Index of the watch an event id (a sample's ``id``) belongs to, or -1."""
        return self._id_watch.get(event_id, -1)

    def stats(self) -> "list[WatchStats]":
        """Per watch: the kernel's hits and lost samples, and the samples
        decoded so far.  Drain with :meth:`read` first for a final figure."""
        hits = [0] * len(self.watches)
        lost = [0] * len(self.watches)
        for fd, widx, _cpu, _tid in self._events:
            value, nlost = abi.read_u64s(fd, 2)
            hits[widx] += value
            lost[widx] += nlost
        for (widx, _cpu), fd in self._outputs.items():  # the samples with values
            lost[widx] += abi.read_u64s(fd, 2)[1]
        opened = [0] * len(self.watches)
        for _fd, widx, _cpu, _tid in self._events:
            opened[widx] += 1
        tallies = [None if p is None else p.tally() for p in self.programs]
        matched = [None if t is None else t.matched for t in tallies]
        for widx, t in enumerate(tallies):
            if t is not None:  # samples its program could not write: lost too
                lost[widx] += t.unsent
        return [WatchStats(bp, h, s, l, self.period, n + self._forks * len(self.cpus), m)
                for bp, h, s, l, n, m in zip(self.watches, hits, self._samples, lost, opened,
                                             matched)]

    def slot(self, watch: int) -> "SamplerSlot":
        """The events of one watch as a movable slot (for multiplexing)."""
        return SamplerSlot(self, watch)

    @property
    def lost_records(self) -> int:
        """Records lost, from the rings' PERF_RECORD_LOST (all watches)."""
        return self._lost_records

    # -- control ---------------------------------------------------------------------
    def enable(self) -> None:
        for fd in self._trackers:
            abi.enable(fd)
        for fd, *_ in self._events:
            abi.enable(fd)
        self._enabled = True

    def disable(self) -> None:
        for fd, *_ in self._events:
            abi.disable(fd)
        for fd in self._trackers:
            abi.disable(fd)
        self._enabled = False

    @property
    def ring_fds(self) -> "tuple[int, ...]":
        """One descriptor per ring: poll these for POLLIN."""
        return tuple(fd for fd, _ring, _map in self._rings.values())

    @property
    def fds(self) -> "tuple[int, ...]":
        return tuple(fd for fd, *_ in self._events)

    def close(self) -> None:
        """Unmap the rings and close every event.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for _fd, _ring, mapping in self._rings.values():
            mapping.close()
        self._rings.clear()
        for fd, *_ in self._events:
            close_event(fd)
        self._events.clear()
        for fd in self._trackers:
            close_event(fd)
        self._trackers.clear()
        for fd in self._outputs.values():
            close_event(fd)
        self._outputs.clear()
        for prog in self._own_programs:
            prog.close()
        self._own_programs = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Sampler of {len(self.watches)} watches on {self.target.describe()}, "
                f"{len(self._rings)} rings>")


class SamplerSlot:
    """One watch index of a :class:`Sampler`, driven as a slot that can be
    re-pointed at other breakpoints (``PERF_EVENT_IOC_MODIFY_ATTRIBUTES`` on
    every event of that watch): what :class:`perfbp.run.multiplex.Multiplexer`
    rotates when recording.  Samples keep telling which breakpoint they hit
    through their ADDR field (the breakpoint's address at that moment)."""

    def __init__(self, sampler: Sampler, watch: int) -> None:
        self.sampler = sampler
        self.watch = watch
        self.breakpoint = sampler.watches[watch]
        self._enabled = sampler._enabled

    def _fds(self) -> "list[int]":
        return [fd for fd, w, _cpu, _tid in self.sampler._events if w == self.watch]

    def retarget(self, bp: Breakpoint) -> None:
        import errno as E

        s = self.sampler
        if not s.sample_type & PERF_SAMPLE_ADDR and not s.values:  # values: addr in raw
            raise RuntimeError("a Sampler made without addr=True cannot move its events: "
                               "its samples would not tell which breakpoint they hit")
        inherit = s.target.inherit or s.target.kind == "process"
        for fd in self._fds():
            attr = make_attr(self.breakpoint, inherit, s._opts_of[fd])
            attr.bp_addr, attr.bp_len, attr.bp_type = bp.address, bp.length, bp.bp_type
            attr.disabled = 0 if self._enabled else 1
            try:
                abi.modify_attributes(fd, attr)
            except OSError as exc:
                # the kernel clears enable_on_exec when exec enables the event
                if exc.errno != E.EINVAL or not attr.enable_on_exec:
                    raise error_from_oserror(exc, bp=bp, target=s.target,
                                             action="move to") from None
                attr.enable_on_exec = 0
                try:
                    abi.modify_attributes(fd, attr)
                except OSError as exc2:
                    raise error_from_oserror(exc2, bp=bp, target=s.target,
                                             action="move to") from None
        self.breakpoint = bp

    def enable(self) -> None:
        for fd in self._fds():
            abi.enable(fd)
        self._enabled = True

    def disable(self) -> None:
        for fd in self._fds():
            abi.disable(fd)
        self._enabled = False

    def read(self) -> int:
        return sum(abi.read_u64s(fd, 2)[0] for fd in self._fds())

    def read_lost(self) -> int:
        return sum(abi.read_u64s(fd, 2)[1] for fd in self._fds())

    def close(self) -> None:
        """The sampler owns the events: nothing to do here."""


def _programs(watches: "list[Breakpoint]", condition) -> list:
    """A values program for each watch: ``condition`` for all, or one each."""
    from .condition import read_conditions
    from .values import ValueProgram

    conds = read_conditions(condition, values=True)
    if len(conds) == 1:
        conds = conds * len(watches)
    if len(conds) != len(watches):
        raise InvalidBreakpoint(f"{len(conds)} conditions for {len(watches)} watches: give "
                                f"one for all, or one per watch")
    progs: list = []
    try:
        for bp, cond in zip(watches, conds):
            progs.append(ValueProgram.for_breakpoint(bp, cond, values=True))
    except BaseException:
        for p in progs:
            p.close()
        raise
    return progs
