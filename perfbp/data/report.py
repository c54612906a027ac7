"""``perfbp report``: who touched the watched memory, from a recording.

Reads perfbp's recordings and perf's own recordings of ``mem:`` events
(``perf record -e mem:ADDR/LEN:ACCESS``), decodes the samples in bulk (as
runs of alike samples where they come in runs, the common case), and
groups them per watch: hits (samples), lost samples, the writers (ip as
function+offset in its object), the threads, the CPUs.  When the recording
was made by perfbp, it also carries the kernel's own hit count per watch
(a PERF_RECORD_READ), so the report can say whether every hit is accounted
for.
"""

from __future__ import annotations

import bisect
import errno
from collections import Counter as _Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from ..kernel.arch import TYPE_NAMES
from ..errors import CorruptRecord, CorruptRecording, PerfbpError
from .perfdata import (HEADER_ARCH, HEADER_NRCPUS, FileAttr, Recording,
                       read_recording, stream_extras)
from ..kernel._uapi import PERF_SAMPLE_ADDR, PERF_SAMPLE_CALLCHAIN, PERF_SAMPLE_REGS_ABI_64
from ..kernel.records import (USER_STACK_BITS, Comm, Lost, LostSamples, Mmap, Read, Sample,
                              Task, decode_bulk, iter_records, non_samples, sample_runs)
from ..symbols.elf import Location, Symbolizer, load_object

SORT_KEYS = ("watch", "symbol", "thread", "cpu")


@dataclass(frozen=True)
class Writer:
    """One instruction that hit a watch, with its count."""

    location: Location
    pid: int
    samples: int
    source: "str | None" = None

    def as_dict(self) -> dict:
        loc = self.location
        return {"ip": loc.ip, "symbol": loc.symbol, "offset": loc.offset,
                "dso": loc.dso, "where": str(loc), "source": self.source,
                "samples": self.samples}


@dataclass(frozen=True)
class ThreadHits:
    pid: int
    tid: int
    comm: str
    samples: int

    def as_dict(self) -> dict:
        return {"pid": self.pid, "tid": self.tid, "comm": self.comm, "samples": self.samples}


class CallStack(NamedTuple):
    """One call stack of a watch's samples, innermost frame first.

    Attributes:
        frames: the hit's instruction, then each caller's return address.
        samples: the samples with this stack.
        reliable: False for a stack the kernel walked by frame pointers
            that cannot be true (:func:`~perfbp.symbols.unwind.broken_frame`:
            a caller that is no return address, none at all, or one the
            walk missed, the hit's function keeping no frame pointer):
            ``frames`` stop before the first false one, and the stack is
            not to be believed beyond them.  Code built without frame pointers gives
            these; ``callchain="dwarf"`` records stacks unwound with its CFI.
    """

    frames: "list[Location]"
    samples: int
    reliable: bool = True

    def as_dict(self) -> dict:
        return {"samples": self.samples, "frames": [str(f) for f in self.frames],
                **({} if self.reliable else {"reliable": False})}


@dataclass
class WatchReport:
    """Everything the recording says about one watch.

    Attributes:
        name: the watch's label (perfbp) or event name (perf).
        address, length, access: what was watched.
        hits: samples for this watch in the recording.
        lost: samples the kernel could not write for this watch, when known.
        kernel_hits: the kernel's own hit count, when the recording has it.
        period: one sample every ``period`` hits.
        stacks: the most common call stacks (:class:`CallStack`), when the
            samples carry them.
        call_graph: how the stacks were recorded: ``fp`` (frame pointers,
            the kernel's walk), ``dwarf`` (unwound here with the CFI), or
            None.
        condition: the condition the samples met (perfbp record --if), or
            None.
        matched: with values (--if, --values), the hits the kernel's
            program let through: each one a sample or lost; ``kernel_hits``
            stays every hit.
        values: with values, the most frequent values written (``new``),
            as ``(value, samples)``, most frequent first.
        transitions: with values, the most frequent ``(old, new, samples)``.
    """

    index: int
    name: str
    address: int
    length: int
    access: str
    hits: int
    lost: "int | None" = None
    kernel_hits: "int | None" = None
    period: int = 1
    contexts: int = 1
    writers: "list[Writer]" = field(default_factory=list)
    threads: "list[ThreadHits]" = field(default_factory=list)
    cpus: "dict[int, int]" = field(default_factory=dict)
    coverage: float = 1.0
    estimate: "int | None" = None
    stacks: "list[CallStack]" = field(default_factory=list)
    call_graph: "str | None" = None
    bindings: "list[dict]" = field(default_factory=list)
    recovered: int = 0
    condition: "str | None" = None
    matched: "int | None" = None
    values: "list[tuple[int, int]]" = field(default_factory=list)
    transitions: "list[tuple[int, int, int]]" = field(default_factory=list)

    @property
    def estimated(self) -> bool:
        """Multiplexed: the watch held a slot part of the time; ``kernel_hits``
        is what it saw then, ``estimate`` the whole run's scaled figure."""
        return self.coverage < 1.0

    @property
    def accounted(self) -> "bool | None":
        """samples + lost == hits (None when the recording lacks the kernel's count)."""
        if self.kernel_hits is None or self.lost is None:
            return None
        if self.matched is not None:  # the samples are the matching hits
            return self.hits + self.lost == self.matched
        if self.period == 1:
            return self.hits + self.lost == self.kernel_hits
        # each event instance (a thread on a CPU) counts its own period
        spare = self.kernel_hits - (self.hits + self.lost) * self.period
        return 0 <= spare <= (self.period - 1) * self.contexts

    def as_dict(self) -> dict:
        return {"name": self.name, "address": self.address, "length": self.length,
                "access": self.access, "hits": self.hits, "lost": self.lost,
                "kernel_hits": self.kernel_hits, "period": self.period,
                "accounted": self.accounted,
                **({"estimated": True, "coverage": round(self.coverage, 6),
                    "estimate": self.estimate} if self.estimated else {}),
                "writers": [w.as_dict() for w in self.writers],
                "threads": [t.as_dict() for t in self.threads],
                "cpus": {str(k): v for k, v in sorted(self.cpus.items())},
                **({"call_graph": self.call_graph,
                    "stacks": [c.as_dict() for c in self.stacks]} if self.stacks else {}),
                **({"bindings": self.bindings} if self.bindings else {}),
                **({"recovered": self.recovered} if self.recovered else {}),
                **({"condition": self.condition, "matched": self.matched,
                    "values": [{"value": v, "hits": n} for v, n in self.values],
                    "transitions": [{"old": o, "new": v, "hits": n}
                                    for o, v, n in self.transitions]}
                   if self.matched is not None else {})}


@dataclass
class Report:
    """A whole recording, summarized.

    Attributes:
        samples: samples in the recording (all watches).
        lost: samples lost (the kernel's LOST records, or perfbp's per-watch
            counts when larger).
        truncated: the recording was cut short (it is read up to the last
            whole record).
    """

    path: str
    samples: int
    lost: int
    watches: "list[WatchReport]"
    truncated: bool = False
    producer: str = "perf"
    cmdline: "list[str]" = field(default_factory=list)
    groups: "list[dict]" = field(default_factory=list)
    notes: "list[str]" = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"path": self.path, "producer": self.producer, "samples": self.samples,
                "lost": self.lost, "truncated": self.truncated,
                "watches": [w.as_dict() for w in self.watches],
                "groups": self.groups, **({"notes": self.notes} if self.notes else {})}


def _event_kind(ev) -> str:
    """An event's name for a message (perf's own, else its type)."""
    if ev.name:
        return ev.name
    kind = FileAttr.decode(ev.attr).type
    return {0: "a hardware event", 1: "a software event", 2: "a tracepoint",
            3: "a cache event", 4: "a raw event"}.get(kind, f"an event of type {kind}")


def _watch_meta(rec: Recording, i: int) -> "tuple[str, int, int, str]":
    a = FileAttr.decode(rec.events[i].attr)
    access = TYPE_NAMES.get(a.bp_type, str(a.bp_type))
    name = rec.events[i].name or f"mem:{a.bp_addr:#x}/{a.bp_len}:{access}"
    return name, a.bp_addr, a.bp_len, access


def load_report(path: str, *, top: int = 5, sort: str = "watch",
                window: "int | None" = None) -> Report:
    """Summarize a recording.

    The data section is read and decoded a window at a time
    (:meth:`~perfbp.data.perfdata.Recording.chunks`), and the samples are counted
    as they go by: per watch, per (pid, ip), per (pid, tid), per CPU and per
    call stack.  Memory grows with those distinct keys, not with the number
    of samples.

    Args:
        top: writers and threads listed per watch.
        sort: ``watch`` (sections per watch), ``symbol``, ``thread`` or
            ``cpu`` (one table over all watches, grouped by that key).
        window: bytes of the data section decoded at a time (default
            :data:`~perfbp.data.perfdata.DATA_WINDOW`); the report is the same
            whatever it is.

    Raises:
        CorruptRecording / PerfbpError: the file is not a readable recording.
    """
    if sort not in SORT_KEYS:
        raise PerfbpError(f"--sort {sort!r} is not one of {', '.join(SORT_KEYS)}")
    rec = read_recording(path)
    user_stacks = rec.config.sample_type & USER_STACK_BITS == USER_STACK_BITS
    try:
        first: list = []
        if rec.pipe or user_stacks:
            # a stream carries its features and perfbp's description of the
            # watches at its end (nothing can be rewritten in a pipe), and
            # user stacks are unwound through the mappings: read the records
            # other than samples first
            for chunk in rec.chunks(window):
                first.extend(non_samples(chunk, rec.config))
            stream_extras(rec, first)
        names, order, event_watch, id_map = _watches_of(rec)
        by_addr = bool(rec.meta.get("multiplexed")) and bool(
            rec.config.sample_type & PERF_SAMPLE_ADDR)
        watches_of = _Watches(rec, id_map, by_addr)
        arch = _arch(rec)
        if user_stacks and arch not in (None, "x86_64"):
            user_stacks = False  # registers numbered otherwise: not unwound
            notes_before = [f"the user stacks recorded on {arch} are not unwound (perfbp "
                            f"unwinds x86-64's): the call stacks show their kernel part"]
        else:
            notes_before = []
        if user_stacks:
            history = _replay([r for r in first if isinstance(r, _REPLAYED)], id_map)
            from ..symbols.unwind import Unwinder

            tally = _count_unwound(rec, window, watches_of,
                                   Unwinder(history.sym, rec.config.sample_regs_user))
        else:
            tally, others = _count_samples(rec, window, watches_of)
            history = _replay(others, id_map)
    except CorruptRecord as exc:
        raise CorruptRecording(f"{path}: {exc.message}") from None
    if all(nm is None for nm in names):
        raise PerfbpError(
            f"{path} holds no watchpoint events (it records "
            f"{', '.join(sorted({_event_kind(e) for e in rec.events}))}): perfbp report "
            f"summarizes breakpoint recordings (perfbp record, perf record -e mem:ADDR); "
            f"read this one with perf report", errno=errno.EINVAL)
    tally.graph = ("dwarf" if user_stacks else
                   "fp" if rec.config.sample_type & PERF_SAMPLE_CALLCHAIN else None)
    period = FileAttr.decode(rec.events[0].attr).period
    if by_addr and tally.samples:
        return _multiplexed_report(rec, tally, history.sym, history.comms, history.lost,
                                   period, top, sort)
    watches = [_watch_report(rec, i, name, event_watch, tally, history, period, top,
                             alone=len(order) == 1)
               for i, name in enumerate(order)]
    lost = max(history.lost, sum(w.lost or 0 for w in watches))
    notes = list(rec.meta.get("notes", [])) + notes_before
    if rec.meta.get("sideband_lost"):
        notes.append(f"{rec.meta['sideband_lost']:,} thread and mapping records were lost "
                     f"(ring full): some threads or code may show as [unknown]")
    report = Report(path, tally.samples, lost, watches, rec.truncated, rec.producer,
                    rec.cmdline, notes=notes)
    if sort != "watch":
        report.groups = _groups(sort, history.sym, tally, history.comms)
    return report


def _watches_of(rec: Recording):
    """``(names, order, event_watch, id_map)``: each event's watch name (None
    for an event that is not a breakpoint: perf's cycles, page faults, the
    dummy tracking event), the watches in order, each event's watch index
    (-1: none) and each event id's.  Events with one name are one watch:
    perfbp writes a watch split over several registers as one event per
    piece, all named after the watch."""
    names = [_watch_meta(rec, i)[0] if rec.events[i].is_breakpoint else None
             for i in range(len(rec.events))]
    order = list(dict.fromkeys(nm for nm in names if nm is not None))
    event_watch = [order.index(nm) if nm is not None else -1 for nm in names]
    id_map = {i: event_watch[e] for i, e in rec.id_to_event().items()}
    return names, order, event_watch, id_map


def _decoded(chunk, rec: Recording, fields: "tuple[str, ...]"):
    """One window of records decoded: ``(runs, None, others)`` with the
    runs of samples alike in ``fields`` (:func:`~perfbp.kernel.records.sample_runs`:
    the common case, few distinct values, at memory speed), else ``(None,
    columns, others)`` (:func:`~perfbp.kernel.records.decode_bulk`)."""
    got = sample_runs(chunk, rec.config, fields)
    if got is not None:
        return got[0], None, got[1]
    cols, others = decode_bulk(chunk, rec.config)
    return None, cols, others


def _count_samples(rec: Recording, window, watches: "_Watches"):
    """Decode the data a window at a time and count the samples per watch
    (:class:`_Tally`); keep the records whose history is replayed.

    Raises:
        CorruptRecord: a record is damaged.
    """
    tally = _Tally()
    others: list = []
    for chunk in rec.chunks(window):
        runs, cols, recs = _decoded(chunk, rec, (watches.field,) + _Tally.FIELDS)
        others.extend(r for r in recs if isinstance(r, _REPLAYED))
        if runs is not None:
            tally.add_runs(runs, watches)
        elif len(cols):
            tally.add(cols, watches.of_all(cols))
    return tally, others


def _count_unwound(rec: Recording, window, watches: "_Watches", unwinder) -> "_Tally":
    """Count samples that carry user stacks (``--call-graph dwarf``), each
    with its stack unwound: the kernel's part of it (a kernel-mode hit's),
    then the user part, unwound from the registers and stack bytes.
    Consecutive samples alike in watch, thread, ip, CPU and whole stack are
    counted as one run.

    Raises:
        CorruptRecord: a record is damaged.
    """
    tally = _Tally()
    field_ = watches.field
    for chunk in rec.chunks(window):
        runs: list = []
        for s in iter_records(chunk, rec.config):
            if not isinstance(s, Sample):
                continue
            chain = tuple(ip for ip in s.callchain if ip < PERF_CONTEXT_MAX)
            if s.regs_abi == PERF_SAMPLE_REGS_ABI_64 and s.stack:
                chain += unwinder.unwind(s.pid or 0, s.regs, s.stack)
            values = (getattr(s, field_), s.pid, s.tid, s.ip, s.cpu, chain)
            if s.new is not None:
                tally.add_value(watches.of(values[0]), s.old, s.new)
            if runs and runs[-1][0] == values:
                runs[-1][1] += 1
            else:
                runs.append([values, 1])
        tally.add_runs(runs, watches)
    return tally


@dataclass
class _History:
    """What the non-sample records say: mappings (``sym``), thread names,
    records lost, the kernel's own hit and lost counts per watch (perfbp's
    PERF_RECORD_READ), and how many tasks were forked."""

    sym: Symbolizer
    comms: "dict[int, str]" = field(default_factory=dict)
    lost: int = 0
    kernel: "dict[int, tuple[int, int]]" = field(default_factory=dict)
    forks: int = 0


def _replay(others: list, id_map: dict) -> _History:
    """Replay the task and mapping history in time order (rings are per CPU:
    records reach the file grouped by CPU, not in time order)."""
    def when(r) -> int:
        sid = getattr(r, "sample_id", None)
        return (sid.time or 0) if sid is not None else 0

    h = _History(Symbolizer())
    for r in sorted(others, key=when):
        if isinstance(r, Mmap):
            h.sym.add_mmap(r.pid, r.addr, r.len, r.pgoff, r.filename)
        elif isinstance(r, Comm):
            h.comms[r.tid] = r.comm
            if r.exec:
                h.sym.exec(r.pid)
        elif isinstance(r, Task) and not r.exit:
            h.forks += 1
            if r.pid != r.ppid:
                h.sym.fork(r.ppid, r.pid)
        elif isinstance(r, (Lost, LostSamples)):
            h.lost += r.lost
        elif isinstance(r, Read) and r.sample_id is not None and r.sample_id.id in id_map:
            if len(r.values) >= 2:
                hits, lost = h.kernel.get(id_map[r.sample_id.id], (0, 0))
                h.kernel[id_map[r.sample_id.id]] = (hits + r.values[0], lost + r.values[-1])
    return h


def _watch_report(rec: Recording, i: int, name: str, event_watch, tally, history: _History,
                  period: int, top: int, alone: bool) -> WatchReport:
    """Watch ``i``: its events' address range, hits, the kernel's count (or,
    for a lone watch of perf's, the records lost), writers and threads."""
    members = [e for e, wi in enumerate(event_watch) if wi == i]
    metas = [_watch_meta(rec, e) for e in members]
    addr = min(m[1] for m in metas)
    length = max(m[1] + m[2] for m in metas) - addr
    hits = tally.hits.get(i, 0)
    contexts = sum(len(rec.events[e].ids) for e in members) \
        + history.forks * _online_cpus(rec) * len(members)
    w = WatchReport(i, name, addr, length, metas[0][3], hits, period=period, contexts=contexts)
    _named(w, rec.meta)
    if i in history.kernel:
        w.kernel_hits, w.lost = history.kernel[i]
    elif alone:
        w.lost = history.lost
    if hits:
        _details(w, tally, i, history.sym, history.comms, top)
    return w


#: the records whose history the report replays (the rest are not kept)
_REPLAYED = (Mmap, Comm, Task, Lost, LostSamples, Read)


class _Watches:
    """Which watch a sample is of: by its event id (``id_map``), or, in a
    multiplexed recording (``by_addr``), by its address (perfbp's own
    header feature says which watch has which); watch 0 when the samples
    carry no id or the events none (a lone event)."""

    def __init__(self, rec: Recording, id_map: dict, by_addr: bool) -> None:
        if by_addr:
            defs = rec.meta.get("watches", [])
            pairs = sorted((int(a), i) for i, d in enumerate(defs)
                           for a, _n in d.get("pieces", []))
        else:
            pairs = sorted(id_map.items())
        #: the sample field that says the watch
        self.field = "addr" if by_addr else "id"
        self.by_addr = by_addr
        self.ids = bool(id_map)
        # sorted keys (event ids, or addresses) and their watch indices
        self.keys = [k for k, _ in pairs]
        self.watches = [w for _, w in pairs]

    def of(self, value: "int | None") -> int:
        """The watch of one sample's :attr:`field` value; -1 for none."""
        if not self.by_addr and (value is None or not self.ids):
            return 0
        i = bisect.bisect_left(self.keys, value)
        return self.watches[i] if i < len(self.keys) and self.keys[i] == value else -1

    def of_all(self, cols):
        """:meth:`of` for every sample of the columns ``cols``, as an array."""
        import numpy as np

        n = len(cols)
        values = cols.addr if self.by_addr else cols.id
        if not self.by_addr and (values is None or not self.ids):
            return np.zeros(n, dtype=np.int64)
        if not self.keys:
            return np.full(n, -1, dtype=np.int64)
        keys = np.array(self.keys, dtype=np.uint64)
        pos = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
        return np.where(keys[pos] == values, np.array(self.watches, dtype=np.int64)[pos], -1)


class _Tally:
    """What a report is made of, counted over the samples as they are
    decoded, chunk by chunk: per watch index (-1: samples of no watch), the
    samples, the (pid, ip) pairs, the (pid, tid) pairs, the CPUs and the
    call stacks.  Its size is that of the distinct keys."""

    #: the sample fields counted (beside the watch's)
    FIELDS = ("pid", "tid", "ip", "cpu", "callchain")

    def __init__(self) -> None:
        self.samples = 0
        #: with values: per watch, the values written, and the (old, new) pairs
        self.values: "dict[int, _Counter]" = {}
        self.transitions: "dict[int, _Counter]" = {}
        #: how the stacks were recorded: "fp", "dwarf" or None (no stacks)
        self.graph: "str | None" = None
        self.hits: "dict[int, int]" = {}
        self.writers: "dict[int, _Counter]" = {}
        self.threads: "dict[int, _Counter]" = {}
        self.cpus: "dict[int, _Counter]" = {}
        self.stacks: "dict[int, _Counter]" = {}

    def add(self, cols, widx) -> None:
        """Count the samples of one chunk (``widx``: the watch of each)."""
        import numpy as np

        n = len(cols)
        self.samples += n
        pids = cols.pid if cols.pid is not None else np.zeros(n, dtype=np.uint64)
        tids = cols.tid if cols.tid is not None else np.zeros(n, dtype=np.uint64)
        ips = cols.ip if cols.ip is not None else np.zeros(n, dtype=np.uint64)
        one = bool((widx == widx[0]).all())  # one watch: the common case, no masks
        for i in ([int(widx[0])] if one else np.unique(widx).tolist()):
            mask = None if one else widx == i
            p, t, a = (pids, tids, ips) if one else (pids[mask], tids[mask], ips[mask])
            self.hits[i] = self.hits.get(i, 0) + len(p)
            _add_pairs(self.writers.setdefault(i, _Counter()), p, a)
            _add_pairs(self.threads.setdefault(i, _Counter()), p, t)
            if cols.cpu is not None:
                c, k = np.unique(cols.cpu if one else cols.cpu[mask], return_counts=True)
                self.cpus.setdefault(i, _Counter()).update(dict(zip(c.tolist(), k.tolist())))
            if cols.new is not None:
                old, new = (cols.old, cols.new) if one else (cols.old[mask], cols.new[mask])
                v, k = np.unique(new, return_counts=True)
                self.values.setdefault(i, _Counter()).update(dict(zip(v.tolist(), k.tolist())))
                _add_pairs(self.transitions.setdefault(i, _Counter()), old, new)
            if cols.callchain is not None:
                stacks = self.stacks.setdefault(i, _Counter())
                chains = cols.callchain
                for j in (range(n) if one else mask.nonzero()[0].tolist()):
                    if chains[j]:
                        stacks[(int(pids[j]), tuple(ip for ip in chains[j]
                                                    if ip < PERF_CONTEXT_MAX))] += 1

    def add_value(self, i: int, old: int, new: int) -> None:
        """Count one sample's values (``old`` before the hit, ``new`` after)."""
        self.values.setdefault(i, _Counter())[new] += 1
        self.transitions.setdefault(i, _Counter())[(old, new)] += 1

    def add_runs(self, runs, watches: _Watches) -> None:
        """Count runs of samples alike in the watch's field and
        :attr:`FIELDS` (:func:`~perfbp.kernel.records.sample_runs`): what
        :meth:`add` counts from their columns."""
        for (key, pid, tid, ip, cpu, chain), n in runs:
            i = watches.of(key)
            pid = pid or 0
            self.samples += n
            self.hits[i] = self.hits.get(i, 0) + n
            self.writers.setdefault(i, _Counter())[(pid, ip or 0)] += n
            self.threads.setdefault(i, _Counter())[(pid, tid or 0)] += n
            if cpu is not None:
                self.cpus.setdefault(i, _Counter())[cpu] += n
            if chain:
                self.stacks.setdefault(i, _Counter())[
                    (pid, tuple(ip for ip in chain if ip < PERF_CONTEXT_MAX))] += n


def _add_pairs(counts: _Counter, a, b) -> None:
    for x, y, c in zip(*_pair_counts(a, b)):
        counts[(x, y)] += c


def _merged(table: "dict[int, _Counter]") -> _Counter:
    """One count over every watch (and the samples of none)."""
    out: _Counter = _Counter()
    for counts in table.values():
        out.update(counts)
    return out


def most(items, top: int) -> list:
    """The ``top`` items of ``(key, count)`` with the highest counts, ties in
    the order of their keys."""
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))[:top]


def _named(w: WatchReport, meta: dict) -> None:
    """A perfbp recording's own account of a watch: where a name was armed
    (its events' attrs may still hold the parked address), and hits the
    kernel missed."""
    for d in meta.get("watches", []):
        if d.get("label") == w.name and d.get("pieces"):
            pieces = [(int(a), int(n)) for a, n in d["pieces"]]
            w.address = min(a for a, _n in pieces)
            w.length = max(a + n for a, n in pieces) - w.address
            w.bindings = list(d.get("bindings", []))
            w.recovered = int(d.get("recovered", 0))
            if "matched" in d:
                w.condition = d.get("condition")
                w.matched = int(d["matched"])
            return


def _multiplexed_report(rec, tally, sym, comms, lost_total, period, top, sort) -> Report:
    """A multiplexed recording: the watches, with what each saw, its
    coverage and its scaled estimate, come from perfbp's own header
    feature; the samples were told apart by address."""
    meta = rec.meta
    defs = meta.get("watches", [])
    mux = meta.get("multiplexed", [])
    watches = []
    for i, d in enumerate(defs):
        pieces = d.get("pieces", [[0, 0]])
        addr = min(int(a) for a, _ in pieces)
        length = max(int(a) + int(ln) for a, ln in pieces) - addr
        hits = tally.hits.get(i, 0)
        m = mux[i] if i < len(mux) else {}
        w = WatchReport(i, str(d.get("label", f"watch {i}")), addr, length,
                        str(d.get("access", "w")), hits, lost=m.get("lost"),
                        kernel_hits=m.get("seen"), period=period,
                        coverage=float(m.get("coverage", 1.0)), estimate=m.get("estimate"))
        if hits:
            _details(w, tally, i, sym, comms, top)
        watches.append(w)
    lost = max(lost_total, sum(w.lost or 0 for w in watches))
    report = Report(rec.path, tally.samples, lost, watches, rec.truncated, "perfbp",
                    rec.cmdline)
    if sort != "watch":
        report.groups = _groups(sort, sym, tally, comms)
    return report


def _details(w: WatchReport, tally: _Tally, i: int, sym, comms, top: int) -> None:
    """Fill a watch's writers, threads, CPUs (and call stacks) from the
    counts of its samples."""
    if i in tally.stacks:
        w.call_graph = tally.graph
        w.stacks = _call_stacks(tally.stacks[i], sym, tally.graph, top)
    w.writers = writers_of(sym, tally.writers[i], top)
    w.threads = _threads(tally.threads[i], comms, top)
    if i in tally.values:
        w.values = most(tally.values[i].items(), top)
        w.transitions = [(o, v, n) for (o, v), n in most(tally.transitions[i].items(), top)]
    if i in tally.cpus:
        w.cpus = dict(sorted(tally.cpus[i].items()))


PERF_CONTEXT_MAX = (-4095) & 0xFFFFFFFFFFFFFFFF


def _call_stacks(stacks: _Counter, sym: Symbolizer, graph: "str | None",
                 top: int) -> "list[CallStack]":
    """The ``top`` stacks of the (pid, chain) counts ``stacks``, named.  A
    frame-pointer stack that cannot be true is cut before its first false
    frame and marked unreliable; stacks alike up to there are one (what
    followed was noise: whatever the registers held)."""
    if graph != "fp":
        return [CallStack([sym.resolve(pid, ip) for ip in chain], n)
                for (pid, chain), n in stacks.most_common(top)]
    from ..symbols.unwind import broken_frame

    merged: _Counter = _Counter()
    for (pid, chain), n in stacks.items():
        cut = broken_frame(sym, pid, chain)
        merged[(pid, chain[:cut], cut is None)] += n
    return [CallStack([sym.resolve(pid, ip) for ip in chain], n, reliable)
            for (pid, chain, reliable), n in sorted(
                sorted(merged.items()), key=lambda kv: -kv[1])[:top]]


def _arch(rec: Recording) -> "str | None":
    """The machine the recording was made on (HEADER_ARCH: ``uname -m``),
    None when unknown."""
    raw = rec.features.get(HEADER_ARCH, b"")[4:]  # struct perf_header_string
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") or None


def _online_cpus(rec: Recording) -> int:
    """CPUs online when recorded (HEADER_NRCPUS), 1 when unknown."""
    import struct
    raw = rec.features.get(HEADER_NRCPUS, b"")
    return max(1, struct.unpack_from("<II", raw)[1]) if len(raw) >= 8 else 1


def _pair_counts(a, b) -> "tuple[list[int], list[int], list[int]]":
    """The distinct (a[i], b[i]) pairs and how often each occurs, sorted by
    (a, b): what ``np.unique(np.stack([a, b], 1), axis=0, return_counts=True)``
    gives, without its row sort (which sorts void records and takes seconds
    on a million samples).  Each column is reduced to the index of its value
    among the column's distinct values, and the two indices combine into one
    integer key that is counted with bincount (few distinct pairs) or a 1-D
    unique."""
    import numpy as np

    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    if not len(a):
        return [], [], []

    def codes(x):
        if (x == x[0]).all():  # one thread, one writer: the common case
            return x[:1], np.zeros(len(x), dtype=np.int64)
        values = np.unique(x)
        return values, np.searchsorted(values, x).astype(np.int64)

    (au, ak), (bu, bk) = codes(a), codes(b)
    nb = len(bu)
    key = ak * nb + bk
    if len(au) * nb <= max(len(key), 1 << 16):
        counts = np.bincount(key, minlength=len(au) * nb)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(key, return_counts=True)
    return au[keys // nb].tolist(), bu[keys % nb].tolist(), counts.tolist()


def writers_of(sym: Symbolizer, pairs: _Counter, top: int) -> "list[Writer]":
    """The ``top`` locations of the (pid, ip) counts ``pairs`` (what
    ``report`` and ``top`` show as writers)."""
    # the same function+offset in several processes: merge by location
    merged: _Counter = _Counter()
    where: dict = {}
    for (pid, ip), c in sorted(pairs.items()):
        loc = sym.resolve(pid, ip)
        key = (loc.dso, loc.symbol, loc.offset) if loc.symbol else (loc.dso, None, ip)
        merged[key] += c
        where.setdefault(key, (loc, pid))
    return [Writer(where[k][0], where[k][1], c, source_of(where[k][0]))
            for k, c in merged.most_common(top)]


def source_of(loc: Location) -> "str | None":
    """``file:line`` of the access, from the object's DWARF line table when
    it has one.  The sample's ip is the instruction *after* the access (x86
    data breakpoints trap once it is done), so the line is that of ip - 1."""
    if loc.vaddr is None or not loc.dso.startswith("/"):
        return None
    obj = load_object(loc.dso)
    if obj is not None and not obj.has_lines:
        return None  # stripped, or built without -g: no DWARF to read (nor pyelftools)
    from ..symbols.lines import line_table  # DWARF: only when a writer is shown

    table = line_table(loc.dso)
    if table is None:
        return None
    line = table.lookup_before(loc.vaddr)
    return f"{line.short}" if line else None


def _threads(pairs: _Counter, comms, top: int) -> "list[ThreadHits]":
    """The ``top`` threads of the (pid, tid) counts ``pairs``."""
    ranked = sorted(sorted(pairs.items()), key=lambda kv: -kv[1])[:top]
    return [ThreadHits(p, t, comms.get(t, comms.get(p, "?")), c) for (p, t), c in ranked]


def _groups(sort, sym, tally: _Tally, comms) -> "list[dict]":
    out: list[dict] = []
    if sort == "thread":
        for (pid, tid), c in sorted(sorted(_merged(tally.threads).items()),
                                    key=lambda kv: -kv[1]):
            comm = comms.get(tid, comms.get(pid, "?"))
            out.append({"key": f"{comm}/{tid}", "pid": pid, "tid": tid,
                        "samples": c})
    elif sort == "cpu":
        for cpu, cnt in sorted(sorted(_merged(tally.cpus).items()), key=lambda x: -x[1]):
            out.append({"key": f"CPU {cpu}", "cpu": cpu, "samples": cnt})
    else:  # symbol
        merged: _Counter = _Counter()
        for (pid, ip), c in sorted(_merged(tally.writers).items()):
            loc = sym.resolve(pid, ip)
            merged[(loc.symbol or f"{ip:#x}", loc.short_dso)] += c
        for (name, dso), c in merged.most_common():
            out.append({"key": name, "dso": dso, "samples": c})
    return out
