"""Decoding perf records: the kernel's ring-buffer and perf.data record format.

Pure Python (and numpy for the bulk path); no kernel needed.  Fields are read
in the kernel's order (``include/uapi/linux/perf_event.h``,
``enum perf_event_type``), as the :class:`ParseConfig` derived from the
opening attr says.  Three paths:

* :func:`parse_record` / :func:`iter_records`: record by record, into small
  typed records (:class:`Sample`, :class:`Lost`, :class:`Comm`, ...).  A type
  perfbp does not know comes back as :class:`Unknown`, never as an exception.
* :func:`decode_bulk`: many fixed-size samples at once into columns (numpy
  arrays), with the record-by-record path for whatever else is interleaved.
* :func:`sample_runs`: the same samples as runs of samples alike in the
  fields asked for (a report's common case: few writers, threads, stacks
  and watches), found by comparing the records' bytes in place, without
  numpy.

Runs of samples of one size are found by that comparison (:func:`_walk`)
for the last two and for :func:`whole_records_end`.  Truncated or corrupt
input never crashes any path: the result is data, or :class:`CorruptRecord`
(a :class:`~perfbp.PerfbpError`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Iterator, NamedTuple, Optional, Sequence, Union

from ._uapi import (
    PERF_FORMAT_GROUP,
    PERF_FORMAT_ID,
    PERF_FORMAT_LOST,
    PERF_FORMAT_TOTAL_TIME_ENABLED,
    PERF_FORMAT_TOTAL_TIME_RUNNING,
    PERF_RECORD_COMM,
    PERF_RECORD_EXIT,
    PERF_RECORD_FORK,
    PERF_RECORD_LOST,
    PERF_RECORD_LOST_SAMPLES,
    PERF_RECORD_MISC_COMM_EXEC,
    PERF_RECORD_MMAP,
    PERF_RECORD_MMAP2,
    PERF_RECORD_READ,
    PERF_RECORD_SAMPLE,
    PERF_RECORD_THROTTLE,
    PERF_RECORD_UNTHROTTLE,
    PERF_SAMPLE_ADDR,
    PERF_SAMPLE_CALLCHAIN,
    PERF_SAMPLE_CPU,
    PERF_SAMPLE_ID,
    PERF_SAMPLE_IDENTIFIER,
    PERF_SAMPLE_IP,
    PERF_SAMPLE_BRANCH_STACK,
    PERF_SAMPLE_PERIOD,
    PERF_SAMPLE_RAW,
    PERF_SAMPLE_READ,
    PERF_SAMPLE_REGS_USER,
    PERF_SAMPLE_STACK_USER,
    PERF_SAMPLE_STREAM_ID,
    PERF_SAMPLE_TID,
    PERF_SAMPLE_TIME,
)
from ..errors import CorruptRecord

PERF_RECORD_MISC_MMAP_BUILD_ID = 1 << 14
HEADER = struct.Struct("<IHH")
#: The values a sample of a watch with a condition carries in its
#: PERF_SAMPLE_RAW field (written by the watch's BPF program, see
#: :mod:`perfbp.kernel.values`): ``u32 size`` (28, written by the kernel),
#: ``u32 kind`` (:data:`VALUES_KIND`), ``u64 addr`` (the breakpoint's address
#: at the hit: what PERF_SAMPLE_ADDR would hold, which a bpf-output sample
#: has not), ``u64 old``, ``u64 new``: 32 bytes, the u64s 8-aligned in the
#: record.  perf reads the field and ignores it.
VALUES_RAW = struct.Struct("<IIQQQ")
VALUES_KIND = 1

#: sample_type bits whose fields have a fixed size: the bulk path's domain.
FIXED_SAMPLE_BITS = (PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID
                     | PERF_SAMPLE_TIME | PERF_SAMPLE_ADDR | PERF_SAMPLE_ID
                     | PERF_SAMPLE_STREAM_ID | PERF_SAMPLE_CPU | PERF_SAMPLE_PERIOD)
#: the user stack and the registers to unwind it from (``--call-graph dwarf``)
USER_STACK_BITS = PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER
#: every sample_type bit this decoder understands.
KNOWN_SAMPLE_BITS = (FIXED_SAMPLE_BITS | PERF_SAMPLE_READ | PERF_SAMPLE_CALLCHAIN
                     | USER_STACK_BITS)


@dataclass(frozen=True)
class ParseConfig:
    """How to decode records: derived from the attr that opened the event.

    Attributes:
        sample_type: ``attr.sample_type``.
        sample_id_all: ``attr.sample_id_all`` (non-sample records carry a
            sample_id trailer).
        read_format: ``attr.read_format`` (for PERF_SAMPLE_READ).
        sample_regs_user: ``attr.sample_regs_user`` (for
            PERF_SAMPLE_REGS_USER: one u64 per bit set, in bit order).
        raw_size: with PERF_SAMPLE_RAW, the raw field's bytes (its u32 size
            included) when every sample's is perfbp's values
            (:data:`VALUES_RAW`: what a watch with a condition samples), which
            are then decoded as the ``old``, ``new`` and ``addr`` of each
            sample; 0: none (a raw field of another size is not decoded).
    """

    sample_type: int
    sample_id_all: bool = False
    read_format: int = 0
    sample_regs_user: int = 0
    raw_size: int = 0

    @classmethod
    def from_attr(cls, attr) -> "ParseConfig":
        return cls(int(attr.sample_type), bool(attr.sample_id_all), int(attr.read_format),
                   int(attr.sample_regs_user))

    @property
    def sample_id_size(self) -> int:
        """Bytes of the sample_id trailer on non-sample records."""
        if not self.sample_id_all:
            return 0
        st = self.sample_type
        n = 0
        for bit in (PERF_SAMPLE_TID, PERF_SAMPLE_TIME, PERF_SAMPLE_ID, PERF_SAMPLE_STREAM_ID,
                    PERF_SAMPLE_CPU, PERF_SAMPLE_IDENTIFIER):
            if st & bit:
                n += 8
        return n

    @property
    def values(self) -> bool:
        """Whether each sample carries perfbp's values in its raw field."""
        return bool(self.raw_size and self.sample_type & PERF_SAMPLE_RAW)

    @property
    def fixed_sample_size(self) -> "int | None":
        """The size of every PERF_RECORD_SAMPLE when all fields are fixed-size
        (header included), else None."""
        raw = self.raw_size if self.values else 0
        if self.sample_type & ~FIXED_SAMPLE_BITS & ~(PERF_SAMPLE_RAW if raw else 0):
            return None
        return 8 + 8 * bin(self.sample_type & FIXED_SAMPLE_BITS).count("1") + raw


class SampleId(NamedTuple):
    """The sample_id trailer of a non-sample record (sample_id_all)."""

    pid: Optional[int] = None
    tid: Optional[int] = None
    time: Optional[int] = None
    id: Optional[int] = None
    stream_id: Optional[int] = None
    cpu: Optional[int] = None


class Sample(NamedTuple):
    """One PERF_RECORD_SAMPLE: one hit of a watch.

    Fields not in the sample_type are None.  ``ip`` is, on x86, the address of
    the instruction *after* the access (data breakpoints trap after the
    access); ``addr`` is the watch's address (``bp_addr``), not the byte
    touched.

    With perfbp's values in PERF_SAMPLE_RAW (a watch with a condition:
    :attr:`ParseConfig.raw_size`): ``old`` and ``new``, the watched value
    before and after the hit, and ``addr`` the breakpoint's address.

    With PERF_SAMPLE_REGS_USER and PERF_SAMPLE_STACK_USER (``--call-graph
    dwarf``): ``regs_abi`` (PERF_SAMPLE_REGS_ABI_64 = 2, 0 when the task had
    no user registers: a kernel thread), ``regs`` (the user registers of
    ``sample_regs_user``, in bit order) and ``stack`` (the bytes the kernel
    copied from the user stack pointer up, ``dyn_size`` of them).
    """

    id: Optional[int]
    ip: Optional[int]
    pid: Optional[int]
    tid: Optional[int]
    time: Optional[int]
    addr: Optional[int]
    stream_id: Optional[int]
    cpu: Optional[int]
    period: Optional[int]
    callchain: tuple = ()
    read: tuple = ()
    misc: int = 0
    regs_abi: int = 0
    regs: tuple = ()
    stack: bytes = b""
    old: Optional[int] = None
    new: Optional[int] = None


class Lost(NamedTuple):
    """PERF_RECORD_LOST: ``lost`` records dropped because the ring was full."""

    id: int
    lost: int
    sample_id: Optional[SampleId] = None


class LostSamples(NamedTuple):
    """PERF_RECORD_LOST_SAMPLES: samples the PMU dropped."""

    lost: int
    sample_id: Optional[SampleId] = None


class Throttle(NamedTuple):
    """PERF_RECORD_THROTTLE / UNTHROTTLE."""

    time: int
    id: int
    stream_id: int
    unthrottle: bool
    sample_id: Optional[SampleId] = None


class Comm(NamedTuple):
    """PERF_RECORD_COMM: a task's command name (``exec``: set by exec)."""

    pid: int
    tid: int
    comm: str
    exec: bool
    sample_id: Optional[SampleId] = None


class Task(NamedTuple):
    """PERF_RECORD_FORK / PERF_RECORD_EXIT."""

    pid: int
    ppid: int
    tid: int
    ptid: int
    time: int
    exit: bool
    sample_id: Optional[SampleId] = None


class Mmap(NamedTuple):
    """PERF_RECORD_MMAP / MMAP2: a mapping of a file (or anon) in a process.

    For MMAP2 records with a build id (misc & PERF_RECORD_MISC_MMAP_BUILD_ID),
    ``build_id`` holds it and ``maj/min/ino/ino_generation`` are 0.
    """

    pid: int
    tid: int
    addr: int
    len: int
    pgoff: int
    filename: str
    maj: int = 0
    min: int = 0
    ino: int = 0
    ino_generation: int = 0
    prot: int = 0
    flags: int = 0
    build_id: bytes = b""
    v2: bool = False
    sample_id: Optional[SampleId] = None


class Read(NamedTuple):
    """PERF_RECORD_READ: an event's count (``values`` per the read_format)."""

    pid: int
    tid: int
    values: tuple
    sample_id: Optional[SampleId] = None


class Unknown(NamedTuple):
    """A record type perfbp does not decode: kept as bytes."""

    type: int
    misc: int
    data: bytes


Record = Union[Sample, Lost, LostSamples, Throttle, Comm, Task, Mmap, Read, Unknown]

_U64 = struct.Struct("<Q")
_U32x2 = struct.Struct("<II")


def _cstring(raw: bytes) -> str:
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "replace")


def _sample_id(body: bytes, cfg: ParseConfig) -> Optional[SampleId]:
    n = cfg.sample_id_size
    if not n:
        return None
    if len(body) < n:
        raise CorruptRecord(f"record too short for its sample_id trailer ({len(body)} < {n} bytes)")
    layout, ix = _layout(_SAMPLE_ID_TRAILER, cfg.sample_type, _TRAILER_OUT)
    v = layout.unpack_from(body, len(body) - n) + (None,)
    vals = {k: v[i] for k, i in zip(_TRAILER_OUT, ix) if i >= 0}
    return SampleId(**vals)


#: The sample_id trailer of a non-sample record (sample_id_all), in the
#: kernel's order (perf_event__output_id_sample): flag, names of its values.
_SAMPLE_ID_TRAILER = (
    (PERF_SAMPLE_TID, ("pid", "tid")),
    (PERF_SAMPLE_TIME, ("time",)),
    (PERF_SAMPLE_ID, ("id",)),
    (PERF_SAMPLE_STREAM_ID, ("stream_id",)),
    (PERF_SAMPLE_CPU, ("cpu", None)),  # cpu, res
    (PERF_SAMPLE_IDENTIFIER, ("id",)),
)


_TRAILER_OUT = ("pid", "tid", "time", "id", "stream_id", "cpu")


def sample_id_bytes(cfg: ParseConfig, *, pid: int = 0, tid: int = 0, time: int = 0,
                    id: int = 0, cpu: int = 0) -> bytes:
    """Encode a sample_id trailer for ``cfg`` (for records perfbp writes)."""
    if not cfg.sample_id_all:
        return b""
    st = cfg.sample_type
    out = b""
    if st & PERF_SAMPLE_TID:
        out += _U32x2.pack(pid & 0xFFFFFFFF, tid & 0xFFFFFFFF)
    if st & PERF_SAMPLE_TIME:
        out += _U64.pack(time)
    if st & PERF_SAMPLE_ID:
        out += _U64.pack(id)
    if st & PERF_SAMPLE_STREAM_ID:
        out += _U64.pack(id)
    if st & PERF_SAMPLE_CPU:
        out += _U32x2.pack(cpu, 0)
    if st & PERF_SAMPLE_IDENTIFIER:
        out += _U64.pack(id)
    return out


def _read_values(body: bytes, off: int, read_format: int) -> "tuple[tuple, int]":
    """Decode a ``struct read_format``; return (values, new offset)."""
    if read_format & PERF_FORMAT_GROUP:
        nr = _U64.unpack_from(body, off)[0]
        off += 8
        head = []
        for bit in (PERF_FORMAT_TOTAL_TIME_ENABLED, PERF_FORMAT_TOTAL_TIME_RUNNING):
            if read_format & bit:
                head.append(_U64.unpack_from(body, off)[0])
                off += 8
        per = 1 + bool(read_format & PERF_FORMAT_ID) + bool(read_format & PERF_FORMAT_LOST)
        if nr > (len(body) - off) // (8 * per):
            raise CorruptRecord(f"read_format group of {nr} entries does not fit the record")
        vals = struct.unpack_from(f"<{nr * per}Q", body, off)
        off += 8 * per * nr
        return (tuple(head), vals), off
    n = 1 + sum(bool(read_format & b) for b in (PERF_FORMAT_TOTAL_TIME_ENABLED,
                                                  PERF_FORMAT_TOTAL_TIME_RUNNING,
                                                  PERF_FORMAT_ID, PERF_FORMAT_LOST))
    vals = struct.unpack_from(f"<{n}Q", body, off)
    return vals, off + 8 * n


#: The fixed-size fields at the head of a sample, in the kernel's order
#: (perf_output_sample): the flag, and the names of its one or two values.
_SAMPLE_HEAD = (
    (PERF_SAMPLE_IDENTIFIER, ("identifier",)),
    (PERF_SAMPLE_IP, ("ip",)),
    (PERF_SAMPLE_TID, ("pid", "tid")),
    (PERF_SAMPLE_TIME, ("time",)),
    (PERF_SAMPLE_ADDR, ("addr",)),
    (PERF_SAMPLE_ID, ("id",)),
    (PERF_SAMPLE_STREAM_ID, ("stream",)),
    (PERF_SAMPLE_CPU, ("cpu", None)),  # cpu, res
    (PERF_SAMPLE_PERIOD, ("period",)),
)


_HEAD_OUT = ("identifier", "id", "ip", "pid", "tid", "time", "addr", "stream", "cpu", "period")


_LAYOUTS: dict = {}  # (table id, sample_type) -> _layout's answer: one dict lookup a record


def _layout(table, sample_type: int, wanted: "tuple[str, ...]") -> "tuple[struct.Struct, tuple]":
    """The fields of ``table`` that ``sample_type`` selects, as one struct,
    and for each name in ``wanted`` its index in the unpacked values (-1:
    absent; the values get a None appended for it).  Cached per table and
    sample_type (the tables are module constants)."""
    found = _LAYOUTS.get((id(table), sample_type))
    if found is None:
        if len(_LAYOUTS) > 256:  # damaged files may bring any sample_type
            _LAYOUTS.clear()
        found = _LAYOUTS[(id(table), sample_type)] = _make_layout(table, sample_type, wanted)
    return found


def _make_layout(table, sample_type: int, wanted) -> "tuple[struct.Struct, tuple]":
    fmt, names = "<", []
    for flag, ns in table:
        if sample_type & flag:
            fmt += "Q" if len(ns) == 1 else "II"
            names.extend(ns)
    index = tuple(max((i for i, n in enumerate(names) if n == w), default=-1) for w in wanted)
    return struct.Struct(fmt), index


def parse_sample(body: bytes, cfg: ParseConfig, misc: int = 0) -> Sample:
    """Decode the body (after the 8-byte header) of a PERF_RECORD_SAMPLE."""
    st = cfg.sample_type
    callchain: tuple = ()
    read: tuple = ()
    try:
        head, ix = _layout(_SAMPLE_HEAD, st, _HEAD_OUT)
        v = head.unpack_from(body, 0) + (None,)
        off = head.size
        if st & PERF_SAMPLE_READ:
            read, off = _read_values(body, off, cfg.read_format)
        if st & PERF_SAMPLE_CALLCHAIN:
            nr = _U64.unpack_from(body, off)[0]
            off += 8
            if nr > (len(body) - off) // 8:
                raise CorruptRecord(f"callchain of {nr} entries does not fit the record "
                                    f"({len(body) - off} bytes left)")
            callchain = struct.unpack_from(f"<{nr}Q", body, off)
            off += 8 * nr
        old = new = None
        addr = v[ix[6]]
        if cfg.values and _U32x2.unpack_from(body, off) == (4, 0):
            off += 8  # an empty raw field: a breakpoint's own sample (no program ran)
        elif cfg.values:
            size, kind, raw_addr, old, new = VALUES_RAW.unpack_from(body, off)
            if size != cfg.raw_size - 4 or kind != VALUES_KIND:
                raise CorruptRecord(f"sample's raw field ({size} bytes, kind {kind}) does not "
                                    f"hold perfbp's values ({cfg.raw_size - 4} bytes, kind "
                                    f"{VALUES_KIND})")
            off += cfg.raw_size
            if addr is None:
                addr = raw_addr
        user = _user_stack(body, off, cfg) if st & USER_STACK_BITS else _NO_USER_STACK
    except struct.error:
        raise CorruptRecord(f"sample record truncated ({len(body) + 8} bytes for "
                            f"sample_type {st:#x})") from None
    ident = v[ix[0]]
    return _make_sample((ident if ident is not None else v[ix[1]], v[ix[2]], v[ix[3]], v[ix[4]],
                         v[ix[5]], addr, v[ix[7]], v[ix[8]], v[ix[9]], callchain, read,
                         misc) + user + (old, new))


_NO_USER_STACK = (0, (), b"")
_make_sample = Sample._make


def _user_stack(body: bytes, off: int, cfg: ParseConfig) -> "tuple[int, tuple, bytes]":
    """``(regs_abi, regs, stack)`` of a sample's PERF_SAMPLE_REGS_USER and
    PERF_SAMPLE_STACK_USER, which start at ``off`` (after the callchain):
    ``u64 abi; u64 regs[popcount(sample_regs_user)]`` (no regs when abi is
    0), then ``u64 size; char data[size]; u64 dyn_size`` (only the size when
    it is 0), ``dyn_size`` being how much of ``data`` the kernel could copy.
    Nothing when the sample has BRANCH_STACK or a RAW field other than
    perfbp's values (between the callchain and these), which perfbp does
    not decode."""
    st = cfg.sample_type
    if st & PERF_SAMPLE_BRANCH_STACK or (st & PERF_SAMPLE_RAW and not cfg.values):
        return 0, (), b""
    abi, regs, stack = 0, (), b""
    if st & PERF_SAMPLE_REGS_USER:
        abi = _U64.unpack_from(body, off)[0]
        off += 8
        if abi:
            n = bin(cfg.sample_regs_user).count("1")
            regs = struct.unpack_from(f"<{n}Q", body, off)
            off += 8 * n
    if st & PERF_SAMPLE_STACK_USER:
        size = _U64.unpack_from(body, off)[0]
        off += 8
        if size:
            if size > len(body) - off - 8:
                raise CorruptRecord(f"user stack of {size} bytes does not fit the record "
                                    f"({len(body) - off} bytes left)")
            (dyn,) = _U64.unpack_from(body, off + size)
            stack = body[off:off + min(dyn, size)]
    return abi, regs, stack


def parse_record(rtype: int, misc: int, body: bytes, cfg: ParseConfig) -> Record:
    """Decode one record from its header fields and body.

    Raises:
        CorruptRecord: the body does not hold what its type promises.
    """
    try:
        if rtype == PERF_RECORD_SAMPLE:
            return parse_sample(body, cfg, misc)
        if rtype == PERF_RECORD_LOST:
            rid, lost = struct.unpack_from("<QQ", body, 0)
            return Lost(rid, lost, _sample_id(body[16:], cfg))
        if rtype == PERF_RECORD_LOST_SAMPLES:
            return LostSamples(_U64.unpack_from(body, 0)[0], _sample_id(body[8:], cfg))
        if rtype in (PERF_RECORD_THROTTLE, PERF_RECORD_UNTHROTTLE):
            t, rid, stream = struct.unpack_from("<QQQ", body, 0)
            return Throttle(t, rid, stream, rtype == PERF_RECORD_UNTHROTTLE,
                            _sample_id(body[24:], cfg))
        if rtype == PERF_RECORD_COMM:
            pid, tid = _U32x2.unpack_from(body, 0)
            rest = body[8:len(body) - cfg.sample_id_size]
            return Comm(pid, tid, _cstring(rest), bool(misc & PERF_RECORD_MISC_COMM_EXEC),
                        _sample_id(body[8:], cfg))
        if rtype in (PERF_RECORD_FORK, PERF_RECORD_EXIT):
            pid, ppid, tid, ptid, t = struct.unpack_from("<IIIIQ", body, 0)
            return Task(pid, ppid, tid, ptid, t, rtype == PERF_RECORD_EXIT,
                        _sample_id(body[24:], cfg))
        if rtype == PERF_RECORD_READ:
            pid, tid = _U32x2.unpack_from(body, 0)
            values, off = _read_values(body, 8, cfg.read_format)
            return Read(pid, tid, values, _sample_id(body[off:], cfg))
        if rtype == PERF_RECORD_MMAP:
            pid, tid, addr, ln, pgoff = struct.unpack_from("<IIQQQ", body, 0)
            name = _cstring(body[32:len(body) - cfg.sample_id_size])
            return Mmap(pid, tid, addr, ln, pgoff, name, sample_id=_sample_id(body[32:], cfg))
        if rtype == PERF_RECORD_MMAP2:
            pid, tid, addr, ln, pgoff = struct.unpack_from("<IIQQQ", body, 0)
            prot, flags = _U32x2.unpack_from(body, 56)
            name = _cstring(body[64:len(body) - cfg.sample_id_size])
            sid = _sample_id(body[64:], cfg)
            if misc & PERF_RECORD_MISC_MMAP_BUILD_ID:
                size = body[32]
                build_id = bytes(body[36:36 + min(size, 20)])
                return Mmap(pid, tid, addr, ln, pgoff, name, prot=prot, flags=flags,
                            build_id=build_id, v2=True, sample_id=sid)
            maj, mnr, ino, gen = struct.unpack_from("<IIQQ", body, 32)
            return Mmap(pid, tid, addr, ln, pgoff, name, maj, mnr, ino, gen, prot, flags,
                        v2=True, sample_id=sid)
    except struct.error:
        raise CorruptRecord(f"record of type {rtype} truncated ({len(body) + 8} bytes)") from None
    return Unknown(rtype, misc, bytes(body))


def _span(buf, offset: int, end: "int | None") -> "tuple[memoryview, int]":
    """``buf`` as a byte view and the checked end of the records in it.

    Raises:
        CorruptRecord: ``offset..end`` is not inside the buffer (a perf.data
            file cut short: its header promises more bytes than there are).
    """
    mv = memoryview(buf).cast("B")  # index by bytes, whatever the buffer's format
    end = len(mv) if end is None else end
    if not 0 <= offset <= end <= len(mv):
        raise CorruptRecord(f"records said to span bytes {offset}..{end}, but the "
                            f"buffer holds {len(mv)} bytes: truncated input")
    return mv, end


def iter_records(buf: "bytes | memoryview", cfg: ParseConfig, offset: int = 0,
                 end: "int | None" = None) -> Iterator[Record]:
    """Decode consecutive records from ``buf[offset:end]``.

    Raises:
        CorruptRecord: a header is impossible (size < 8 or past the end).
    """
    mv, end = _span(buf, offset, end)
    pos = offset
    while pos < end:
        if end - pos < 8:
            raise CorruptRecord(f"{end - pos} stray bytes at offset {pos}: truncated record header")
        rtype, misc, size = HEADER.unpack_from(mv, pos)
        if size < 8:
            raise CorruptRecord(f"record at offset {pos} has impossible size {size}")
        if pos + size > end:
            raise CorruptRecord(f"record at offset {pos} (type {rtype}, {size} bytes) is "
                                f"truncated: only {end - pos} bytes left")
        yield parse_record(rtype, misc, bytes(mv[pos + 8:pos + size]), cfg)
        pos += size


# --- the bulk path -----------------------------------------------------------------

_COLUMN_ORDER = (
    (PERF_SAMPLE_IDENTIFIER, (("identifier", "<u8"),)),
    (PERF_SAMPLE_IP, (("ip", "<u8"),)),
    (PERF_SAMPLE_TID, (("pid", "<u4"), ("tid", "<u4"))),
    (PERF_SAMPLE_TIME, (("time", "<u8"),)),
    (PERF_SAMPLE_ADDR, (("addr", "<u8"),)),
    (PERF_SAMPLE_ID, (("id", "<u8"),)),
    (PERF_SAMPLE_STREAM_ID, (("stream_id", "<u8"),)),
    (PERF_SAMPLE_CPU, (("cpu", "<u4"), ("res", "<u4"))),
    (PERF_SAMPLE_PERIOD, (("period", "<u8"),)),
)
COLUMNS = ("ip", "pid", "tid", "time", "addr", "id", "stream_id", "cpu", "period", "old", "new")
#: perfbp's values in a sample's raw field (:data:`VALUES_RAW`), as numpy fields
_VALUES_FIELDS = (("raw_size", "<u4"), ("raw_kind", "<u4"), ("raw_addr", "<u8"),
                  ("old", "<u8"), ("new", "<u8"))


def shape_repr(kind: str, rows: int, names: "Sequence[str]", extra: str = "") -> str:
    """A repr of columnar samples that fits a line: the shape and the
    column names, never the data (``<Samples: 1,009 samples x 6 columns
    (ip, pid, ...)>``)."""
    return (f"<{kind}: {rows:,} samples x {len(names)} column{'s' if len(names) != 1 else ''}"
            f" ({', '.join(names)}){extra}>")


def sample_dtype(cfg: ParseConfig):
    """The numpy structured dtype of one fixed-size PERF_RECORD_SAMPLE."""
    import numpy as np

    fields = [("type", "<u4"), ("misc", "<u2"), ("size", "<u2")]
    for bit, cols in _COLUMN_ORDER:
        if cfg.sample_type & bit:
            fields.extend(cols)
    return np.dtype(fields)


@dataclass
class SampleColumns:
    """Samples as columns (numpy arrays of equal length); absent fields are
    None.  ``id`` holds PERF_SAMPLE_IDENTIFIER or PERF_SAMPLE_ID."""

    ip: object = None
    pid: object = None
    tid: object = None
    time: object = None
    addr: object = None
    id: object = None
    stream_id: object = None
    cpu: object = None
    period: object = None
    #: the watched value before and after each hit, when the samples carry
    #: them (a watch with a condition)
    old: object = None
    new: object = None
    #: call stacks (a list of tuples of ips), when the samples carry them
    callchain: object = None

    def __len__(self) -> int:
        for name in COLUMNS:
            col = getattr(self, name)
            if col is not None:
                return len(col)
        return 0

    def __repr__(self) -> str:
        names = [n for n in COLUMNS if getattr(self, n) is not None]
        return shape_repr("SampleColumns", len(self), names,
                          ", with call stacks" if self.callchain is not None else "")

    @classmethod
    def concat(cls, parts: "list[SampleColumns]") -> "SampleColumns":
        import numpy as np

        out = cls()
        parts = [p for p in parts if len(p)]
        if not parts:
            return out
        for name in COLUMNS:
            cols = [getattr(p, name) for p in parts]
            if all(c is not None for c in cols):
                setattr(out, name, np.concatenate(cols))
        if all(p.callchain is not None for p in parts):
            out.callchain = [c for p in parts for c in p.callchain]
        return out

    @classmethod
    def from_samples(cls, samples: "list[Sample]") -> "SampleColumns":
        import numpy as np

        out = cls()
        if not samples:
            return out
        for name in COLUMNS:
            vals = [getattr(s, name) for s in samples]
            if all(v is not None for v in vals):
                setattr(out, name, np.array(vals, dtype=np.uint64))
        if any(s.callchain for s in samples):
            out.callchain = [s.callchain for s in samples]
        return out


#: the columns that make a record a fixed-size sample, as ``(format, index)``
#: of a value in the record viewed as an array of that format: its type (u32
#: at byte 0) and its size (u16 at byte 6); misc may vary
_FRAMING = (("I", 0), ("H", 3))


def _alike(cols, lo: int, hi: int) -> bool:
    """Whether items ``lo - 1`` to ``hi - 1`` are equal, in every column."""
    return all(c[lo:hi] == c[lo - 1:hi - 1] for c in cols)


def _run_length(cols, avail: int) -> int:
    """How many items, from the first, equal the first in every column (1
    to ``avail``): a gallop (steps that double) to past the first change,
    then a halving search for it, so that it costs about the run's own
    length whatever follows it."""
    good, step = 1, 1
    while good < avail:
        hi = min(avail, good + step)
        if _alike(cols, good, hi):
            good, step = hi, step * 2
            continue
        while hi - good > 1:  # the first change is in [good, hi)
            mid = (good + hi) // 2
            if _alike(cols, good, mid):
                good = mid
            else:
                hi = mid
        break
    return good


def _walk(mv, size: "int | None", offset: int, end: int, strict: bool = True, alike=()):
    """Walk the records of ``mv[offset:end]``: yield ``(pos, count)`` for a run
    of ``count`` consecutive samples of ``size`` bytes, and ``(pos, 0)`` for
    any other record (its header is at ``pos``).  With ``size`` None, samples
    of any size (a multiple of 8) come in runs, each of the size of its first
    sample.

    With ``alike`` (``(format, index)`` pairs, as :data:`_FRAMING`, which
    they replace: they must hold the header's type and size; or a function
    of a run's size that gives them), a run's samples are also alike there:
    a sample that differs starts the next run.  Runs are found by comparing
    strided memoryviews of the records (C loops, no copies, no numpy), so a
    run costs a few nanoseconds a sample and a few steps of Python.  With
    ``strict=False`` the walk ends quietly at an impossible or cut-short
    record, yielding ``(pos, -1)``; else that raises :class:`CorruptRecord`.
    """
    specs: dict = {}  # a run's size -> its columns, (format, index, stride)
    pos = offset
    while pos < end:
        if end - pos >= 8:
            rtype, _misc, rsize = HEADER.unpack_from(mv, pos)
            run = rsize if size is None else size
            avail = (end - pos) // run if run >= 8 and not run % 8 else 0
            if rtype == PERF_RECORD_SAMPLE and rsize == run and avail:
                spec = specs.get(run)
                if spec is None:
                    cols = alike(run) if callable(alike) else alike or _FRAMING
                    spec = specs[run] = [(fmt, index, run // struct.calcsize(fmt))
                                         for fmt, index in cols]
                view = mv[pos:pos + avail * run]
                count = _run_length([view.cast(fmt)[index::step]
                                     for fmt, index, step in spec], avail)
                yield pos, count
                pos += count * run
                continue
        # one record that is not a fixed-size sample (or a short tail)
        if end - pos < 8:
            if not strict:
                yield pos, -1
                return
            raise CorruptRecord(f"{end - pos} stray bytes at offset {pos}: truncated record header")
        rtype, _misc, rsize = HEADER.unpack_from(mv, pos)
        if rsize < 8 or pos + rsize > end:
            if not strict:
                yield pos, -1
                return
            if rsize < 8:
                raise CorruptRecord(f"record at offset {pos} has impossible size {rsize}")
            raise CorruptRecord(f"record at offset {pos} (type {rtype}, {rsize} bytes) is "
                                f"truncated: only {end - pos} bytes left")
        yield pos, 0
        pos += rsize


def whole_records_end(buf: "bytes | memoryview", cfg: ParseConfig) -> int:
    """The offset just past the last whole record in ``buf`` (``len(buf)``
    when the records fill it exactly): where a recording cut short inside
    a record is cut back to."""
    mv, end = _span(buf, 0, None)
    for pos, count in _walk(mv, cfg.fixed_sample_size, 0, end, strict=False):
        if count < 0:
            return pos
    return end


def non_samples(buf: "bytes | memoryview", cfg: ParseConfig, offset: int = 0,
                end: "int | None" = None) -> "list[Record]":
    """The records of ``buf[offset:end]`` that are not samples, decoded;
    the samples are stepped over undecoded (in runs of one size): what a
    reader needs before the samples (the mappings a stack is unwound
    through; a stream's features, at its end).

    Raises:
        CorruptRecord: a header is impossible or a record is cut short.
    """
    mv, end = _span(buf, offset, end)
    out: list[Record] = []
    for pos, count in _walk(mv, None, offset, end):
        rtype, misc, rsize = HEADER.unpack_from(mv, pos)
        if not count and rtype != PERF_RECORD_SAMPLE:
            out.append(parse_record(rtype, misc, bytes(mv[pos + 8:pos + rsize]), cfg))
    return out


def decode_bulk(buf: "bytes | memoryview", cfg: ParseConfig, offset: int = 0,
                end: "int | None" = None) -> "tuple[SampleColumns, list[Record]]":
    """Decode a run of records: fixed-size samples into columns at numpy
    speed, every other record (and samples with variable fields) one by one.

    Samples with user stacks (``--call-graph dwarf``) are variable in
    principle and of one size in practice (a stack copy cut short makes
    one shorter): they too come in runs of one size, whose fixed fields
    numpy reads in place; their kernel callchains are decoded one by one
    where a run has any (a kernel-mode hit's), and their registers and
    stack bytes not at all (the columns do not hold them).

    Returns:
        ``(columns, others)``: the samples in order as columns, and the
        non-sample records in order.

    Raises:
        CorruptRecord: a header is impossible or a record is cut short.
    """
    import numpy as np

    mv, end = _span(buf, offset, end)
    size = cfg.fixed_sample_size
    others: list[Record] = []
    stacks = (size is None and cfg.sample_type & USER_STACK_BITS
              and not cfg.sample_type & PERF_SAMPLE_READ)
    # a sample with a user stack holds at least its registers' abi and the
    # stack's size: one too short for them is decoded alone (to say so)
    need = 8 * (bool(cfg.sample_type & PERF_SAMPLE_REGS_USER)
                + bool(cfg.sample_type & PERF_SAMPLE_STACK_USER)) if stacks else 0
    if size is None and (not stacks or cfg.values and cfg.sample_type & PERF_SAMPLE_CALLCHAIN):
        # one by one: a run's size does not say where the values are when a
        # callchain of any length comes before them and a stack after
        samples = []
        for rec in iter_records(mv, cfg, offset, end):
            (samples if isinstance(rec, Sample) else others).append(rec)
        return SampleColumns.from_samples(samples), others
    full = cfg  # a sample decoded alone is decoded whole (a damaged one says so)
    if stacks:
        # the columns have no user stacks: leave them undecoded (they come
        # last of what perfbp decodes, and are most of the bytes)
        cfg = replace(cfg, sample_type=cfg.sample_type & ~USER_STACK_BITS)
    chains = [] if cfg.sample_type & PERF_SAMPLE_CALLCHAIN else None
    # first find the runs of samples of one size (and decode everything
    # else), then copy each column once into an array of its final length
    pieces: list = []  # (pos, count, dtype) runs and single Samples, in order
    total = 0
    for pos, count in _walk(mv, size, offset, end):
        rsize = HEADER.unpack_from(mv, pos)[2]
        dtype = _run_dtype(cfg, rsize) if count else None
        if dtype is not None and need and (
                dtype.fields["rest"][0].itemsize if "rest" in dtype.fields else 0) < need:
            dtype = None
        if dtype is not None and (
                chains is None or not np.frombuffer(mv, dtype, count, pos)["nr"].any()):
            if need:  # the stacks are not decoded, but a damaged one is found
                user = dtype.fields["rest"][1] - 8  # in the body: after the header
                for rpos in range(pos, pos + count * rsize, rsize):
                    try:
                        _user_stack(mv[rpos + 8:rpos + rsize], user, full)
                    except struct.error:
                        raise CorruptRecord(f"sample record truncated ({rsize} bytes for "
                                            f"sample_type {full.sample_type:#x})") from None
            pieces.append((pos, count, dtype))
            total += count
            if chains is not None:
                chains.extend([()] * count)
            continue
        for rpos in range(pos, pos + max(count, 1) * rsize, rsize):
            rtype, misc, _size = HEADER.unpack_from(mv, rpos)
            rec = parse_record(rtype, misc, bytes(mv[rpos + 8:rpos + rsize]), full)
            if isinstance(rec, Sample):
                pieces.append(rec)
                total += 1
                if chains is not None:
                    chains.append(rec.callchain)
            else:
                others.append(rec)
    cols = SampleColumns()
    if not total:
        return cols, others
    names = sample_dtype(cfg).names
    fields = [(name, name) for name in COLUMNS if name in names]
    if "identifier" in names:
        fields.append(("id", "identifier"))
    if cfg.values and not any(isinstance(p, Sample) and p.new is None for p in pieces):
        # (a sample with an empty raw field, a breakpoint's own, has no
        # values: then no sample of the chunk has these columns)
        fields += [("old", "old"), ("new", "new")]
        if "addr" not in names:
            fields.append(("addr", "raw_addr"))
    out = {attr: np.empty(total, dtype=np.uint64) for attr, _field in fields}
    k = 0
    for piece in pieces:
        if isinstance(piece, Sample):
            for attr, _field in fields:
                out[attr][k] = getattr(piece, attr)
            k += 1
            continue
        pos, count, dtype = piece
        arr = np.frombuffer(mv, dtype=dtype, count=count, offset=pos)
        if cfg.values and ((arr["raw_size"] != cfg.raw_size - 4).any()
                           or (arr["raw_kind"] != VALUES_KIND).any()):
            raise CorruptRecord(f"a sample's raw field at offset {pos} or after does not "
                                f"hold perfbp's values ({cfg.raw_size - 4} bytes, kind "
                                f"{VALUES_KIND})")
        for attr, field_ in fields:
            out[attr][k:k + count] = arr[field_]
        k += count
    for attr, col in out.items():
        setattr(cols, attr, col)
    if chains is not None and any(chains):
        cols.callchain = chains
    return cols, others


@lru_cache(maxsize=64)
def _run_dtype(cfg: ParseConfig, size: int):
    """The dtype of a sample of ``size`` bytes: :func:`sample_dtype`'s
    fields, then the callchain's length (``nr``) when the sample has one,
    then the rest of the record, unread; None when ``size`` cannot hold
    them (a damaged record, decoded alone to say so)."""
    import numpy as np

    head = sample_dtype(cfg)
    fields = [(n, head.fields[n][0]) for n in head.names]
    rest = size - head.itemsize
    if cfg.sample_type & PERF_SAMPLE_CALLCHAIN:
        fields.append(("nr", "<u8"))
        rest -= 8
        if cfg.values:  # the values follow the callchain: of the length the size leaves
            ips = rest - cfg.raw_size
            if ips < 0 or ips % 8:
                return None
            if ips:
                fields.append(("ips", f"V{ips}"))
            rest -= ips
    if cfg.values:
        fields.extend(_VALUES_FIELDS)
        rest -= cfg.raw_size
    if rest < 0:
        return None
    return np.dtype(fields + ([("rest", f"V{rest}")] if rest else []))


# --- runs of alike samples: the bulk path without numpy ---------------------------------

#: the fields of :class:`Sample` that each word of a sample's head holds
_WORD_FIELDS = {"identifier": "id", "stream": "stream_id"}
#: at most one run per this many samples, on average, before
#: :func:`sample_runs` gives up (numpy's columns are then the faster way)
MIN_RUN = 1024


def _words_of(sample_type: int, fields) -> "list[int]":
    """The u64 words of a fixed-size sample (0: the header) that hold
    ``fields`` (names of :class:`Sample`'s fields), in the kernel's order."""
    words, word = set(), 1
    for flag, names in _SAMPLE_HEAD:
        if sample_type & flag:
            if any(_WORD_FIELDS.get(n, n) in fields for n in names if n):
                words.add(word)
            word += 1
    return sorted(words)


def _with_stack(head: list, stack: int, size: int) -> list:
    """The columns ``head`` and every word of a sample of ``size`` bytes
    from word ``stack`` on: its call stack (nr and ips), compared whole so
    that every sample of a run decodes as its first does."""
    return head + [("Q", w) for w in range(stack, size // 8)]


def sample_runs(buf: "bytes | memoryview", cfg: ParseConfig, fields: "tuple[str, ...]",
                offset: int = 0, end: "int | None" = None, *, min_run: int = MIN_RUN
                ) -> "tuple[list[list], list[Record]] | None":
    """Decode a run of records as runs of samples alike in ``fields``: what
    a report counts, for the common case of few writers, few threads and
    few watches, at memory speed and without numpy.

    Consecutive samples whose ``fields`` (names of :class:`Sample`'s
    fields: ``id``, ``ip``, ``pid``, ``tid``, ``addr``, ``cpu``,
    ``callchain``...) hold the same values are one run, whatever other
    records lie between them: ``[values, count]``, the values those of
    :func:`decode_bulk`'s columns (None for a field the sample_type lacks;
    ``()`` for a callchain it lacks).  Only the first sample of a stretch
    of alike samples is decoded: samples with call stacks are alike only
    with the same stack.

    Returns:
        ``(runs, others)``: the runs in order and the non-sample records
        in order; or None when the samples are not in long runs (more
        than 8 runs and one per ``min_run`` samples on average), or carry
        read values (PERF_SAMPLE_READ) or fields perfbp does not know, or
        no fields (no columns): then :func:`decode_bulk` is the way.

    Raises:
        CorruptRecord: a header is impossible or a record is cut short.
    """
    fixed = cfg.sample_type & FIXED_SAMPLE_BITS
    if cfg.sample_type & ~(FIXED_SAMPLE_BITS | PERF_SAMPLE_CALLCHAIN) or not fixed:
        return None  # read values (or bits unknown); or no field at all, so no columns
    mv, end = _span(buf, offset, end)
    # the whole header word: its type and size, and its misc too (which
    # changes with the ip's mode, user or kernel, so seldom splits a run)
    alike = [("Q", w) for w in [0] + _words_of(cfg.sample_type, fields)]
    if cfg.sample_type & PERF_SAMPLE_CALLCHAIN:
        alike = partial(_with_stack, alike, 1 + bin(fixed).count("1"))
    runs: list = []
    others: list[Record] = []
    samples = 0
    for pos, count in _walk(mv, cfg.fixed_sample_size, offset, end, alike=alike):
        rtype, misc, rsize = HEADER.unpack_from(mv, pos)
        rec = parse_record(rtype, misc, bytes(mv[pos + 8:pos + rsize]), cfg)
        if not isinstance(rec, Sample):
            others.append(rec)
            continue
        values = tuple(getattr(rec, f) for f in fields)
        samples += count or 1
        if runs and runs[-1][0] == values:
            runs[-1][1] += count or 1
            continue
        if len(runs) >= 8 + samples // min_run:
            return None
        runs.append([values, count or 1])
    return runs, others
