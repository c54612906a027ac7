"""Decoding perf records (perfbp.kernel.records): byte-exact, bulk == one by one, never
crashes on bad input, and right on what the real kernel writes.

Record types covered: SAMPLE (every combination of the sample_type bits perfbp
decodes, every read_format), LOST, LOST_SAMPLES, THROTTLE, UNTHROTTLE, COMM
(and exec), FORK, EXIT, MMAP, MMAP2 (inode and build-id), READ, and types
perfbp does not decode (Unknown), each without and with sample_id trailers.

The records here are built by hand with :mod:`struct`, following
``include/uapi/linux/perf_event.h`` (``enum perf_event_type`` and
``struct sample_id``), not with anything from perfbp.kernel.records: the encoder below
is a second, independent reading of the header.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import struct
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perfbp
from perfbp.kernel import records
from perfbp.kernel import system
from perfbp.kernel._uapi import (
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
    PERF_SAMPLE_PERIOD,
    PERF_SAMPLE_READ,
    PERF_SAMPLE_REGS_USER,
    PERF_SAMPLE_STACK_USER,
    PERF_SAMPLE_STREAM_ID,
    PERF_SAMPLE_TID,
    PERF_SAMPLE_TIME,
)
from perfbp.kernel.records import (
    COLUMNS,
    Comm,
    CorruptRecord,
    Lost,
    LostSamples,
    Mmap,
    ParseConfig,
    Read,
    Sample,
    SampleColumns,
    SampleId,
    Task,
    Throttle,
    Unknown,
    decode_bulk,
    iter_records,
    non_samples,
    parse_record,
    parse_sample,
)

# -- an independent encoder, from include/uapi/linux/perf_event.h ---------------------

MISC_COMM_EXEC = 1 << 13          # PERF_RECORD_MISC_COMM_EXEC
MISC_MMAP_BUILD_ID = 1 << 14      # PERF_RECORD_MISC_MMAP_BUILD_ID
MISC_USER = 2                     # PERF_RECORD_MISC_USER

#: The fixed-size sample fields, in the kernel's order (perf_output_sample()).
FIXED_BITS = (PERF_SAMPLE_IDENTIFIER, PERF_SAMPLE_IP, PERF_SAMPLE_TID, PERF_SAMPLE_TIME,
              PERF_SAMPLE_ADDR, PERF_SAMPLE_ID, PERF_SAMPLE_STREAM_ID, PERF_SAMPLE_CPU,
              PERF_SAMPLE_PERIOD)
#: Every sample_type bit perfbp decodes.
SAMPLE_BITS = FIXED_BITS + (PERF_SAMPLE_READ, PERF_SAMPLE_CALLCHAIN)
#: The bits of struct sample_id (the trailer of non-sample records).
SAMPLE_ID_BITS = (PERF_SAMPLE_TID, PERF_SAMPLE_TIME, PERF_SAMPLE_ID, PERF_SAMPLE_STREAM_ID,
                  PERF_SAMPLE_CPU, PERF_SAMPLE_IDENTIFIER)
READ_BITS = (PERF_FORMAT_TOTAL_TIME_ENABLED, PERF_FORMAT_TOTAL_TIME_RUNNING,
             PERF_FORMAT_ID, PERF_FORMAT_LOST)


def bits_of(n: int, bits) -> int:
    """The OR of the ``bits`` selected by the binary digits of ``n``."""
    out = 0
    for i, bit in enumerate(bits):
        if n >> i & 1:
            out |= bit
    return out


ALL_READ_FORMATS = [bits_of(n, READ_BITS) | g for g in (0, PERF_FORMAT_GROUP)
                    for n in range(1 << len(READ_BITS))]


def record(rtype: int, misc: int, body: bytes) -> bytes:
    """``struct perf_event_header`` + body."""
    assert len(body) % 8 == 0 and 8 + len(body) < 1 << 16
    return struct.pack("<IHH", rtype, misc, 8 + len(body)) + body


def padded_string(s: bytes) -> bytes:
    """A NUL-terminated string padded to u64 (perf_event_comm_event(),
    perf_event_mmap_event(): ``ALIGN(strlen(s) + 1, sizeof(u64))``)."""
    n = (len(s) + 1 + 7) & ~7
    return s + b"\0" * (n - len(s))


def u64(r: random.Random) -> int:
    return r.getrandbits(64)


def u32(r: random.Random) -> int:
    return r.getrandbits(32)


def sample_id_trailer(cfg: ParseConfig, r: random.Random) -> "tuple[bytes, SampleId | None]":
    """``struct sample_id`` for ``cfg`` with random values, and what it decodes to."""
    if not cfg.sample_id_all:
        return b"", None
    s = cfg.sample_type
    out = b""
    want: dict = {}
    if s & PERF_SAMPLE_TID:
        want["pid"], want["tid"] = u32(r), u32(r)
        out += struct.pack("<II", want["pid"], want["tid"])
    if s & PERF_SAMPLE_TIME:
        want["time"] = u64(r)
        out += struct.pack("<Q", want["time"])
    if s & PERF_SAMPLE_ID:
        want["id"] = u64(r)
        out += struct.pack("<Q", want["id"])
    if s & PERF_SAMPLE_STREAM_ID:
        want["stream_id"] = u64(r)
        out += struct.pack("<Q", want["stream_id"])
    if s & PERF_SAMPLE_CPU:
        want["cpu"] = u32(r)
        out += struct.pack("<II", want["cpu"], u32(r))  # res: anything
    if s & PERF_SAMPLE_IDENTIFIER:
        # the kernel writes the same id in both places; a different value
        # here shows which one wins (the identifier, the last field)
        want["id"] = u64(r)
        out += struct.pack("<Q", want["id"])
    # an empty trailer (no sample_id bits in sample_type) decodes as no trailer
    return out, (SampleId(**want) if out else None)


def read_values(read_format: int, r: random.Random) -> "tuple[bytes, tuple]":
    """``struct read_format`` with random values, and its decoded form."""
    if read_format & PERF_FORMAT_GROUP:
        nr = r.randrange(0, 4)
        head = tuple(u64(r) for b in (PERF_FORMAT_TOTAL_TIME_ENABLED,
                                      PERF_FORMAT_TOTAL_TIME_RUNNING) if read_format & b)
        per = 1 + bool(read_format & PERF_FORMAT_ID) + bool(read_format & PERF_FORMAT_LOST)
        vals = tuple(u64(r) for _ in range(nr * per))
        return struct.pack(f"<Q{len(head)}Q{len(vals)}Q", nr, *head, *vals), (head, vals)
    vals = (u64(r),) + tuple(u64(r) for b in READ_BITS if read_format & b)
    return struct.pack(f"<{len(vals)}Q", *vals), vals


def make_sample(cfg: ParseConfig, r: random.Random, misc: "int | None" = None,
                callchain: "int | None" = None) -> "tuple[bytes, Sample]":
    """A PERF_RECORD_SAMPLE for ``cfg`` with random values, and its decoding."""
    s = cfg.sample_type
    misc = r.choice((0, 1, MISC_USER)) if misc is None else misc
    body = b""
    f: dict = dict(id=None, ip=None, pid=None, tid=None, time=None, addr=None,
                   stream_id=None, cpu=None, period=None, callchain=(), read=(), misc=misc)
    if s & PERF_SAMPLE_IDENTIFIER:
        ident = u64(r)
        body += struct.pack("<Q", ident)
    if s & PERF_SAMPLE_IP:
        f["ip"] = u64(r)
        body += struct.pack("<Q", f["ip"])
    if s & PERF_SAMPLE_TID:
        f["pid"], f["tid"] = u32(r), u32(r)
        body += struct.pack("<II", f["pid"], f["tid"])
    if s & PERF_SAMPLE_TIME:
        f["time"] = u64(r)
        body += struct.pack("<Q", f["time"])
    if s & PERF_SAMPLE_ADDR:
        f["addr"] = u64(r)
        body += struct.pack("<Q", f["addr"])
    if s & PERF_SAMPLE_ID:
        f["id"] = u64(r)
        body += struct.pack("<Q", f["id"])
    if s & PERF_SAMPLE_STREAM_ID:
        f["stream_id"] = u64(r)
        body += struct.pack("<Q", f["stream_id"])
    if s & PERF_SAMPLE_CPU:
        f["cpu"] = u32(r)
        body += struct.pack("<II", f["cpu"], u32(r))
    if s & PERF_SAMPLE_PERIOD:
        f["period"] = u64(r)
        body += struct.pack("<Q", f["period"])
    if s & PERF_SAMPLE_READ:
        raw, f["read"] = read_values(cfg.read_format, r)
        body += raw
    if s & PERF_SAMPLE_CALLCHAIN:
        nr = r.randrange(0, 6) if callchain is None else callchain
        f["callchain"] = tuple(u64(r) for _ in range(nr))
        body += struct.pack(f"<Q{nr}Q", nr, *f["callchain"])
    if s & PERF_SAMPLE_IDENTIFIER:
        f["id"] = ident  # PERF_SAMPLE_IDENTIFIER wins over PERF_SAMPLE_ID
    return record(PERF_RECORD_SAMPLE, misc, body), Sample(**f)


def make_lost(cfg, r):
    rid, lost = u64(r), u64(r)
    tail, sid = sample_id_trailer(cfg, r)
    return record(PERF_RECORD_LOST, 0, struct.pack("<QQ", rid, lost) + tail), Lost(rid, lost, sid)


def make_lost_samples(cfg, r):
    lost = u64(r)
    tail, sid = sample_id_trailer(cfg, r)
    return (record(PERF_RECORD_LOST_SAMPLES, 0, struct.pack("<Q", lost) + tail),
            LostSamples(lost, sid))


def make_throttle(cfg, r, unthrottle=False):
    t, rid, stream = u64(r), u64(r), u64(r)
    tail, sid = sample_id_trailer(cfg, r)
    rtype = PERF_RECORD_UNTHROTTLE if unthrottle else PERF_RECORD_THROTTLE
    return (record(rtype, 0, struct.pack("<QQQ", t, rid, stream) + tail),
            Throttle(t, rid, stream, unthrottle, sid))


def make_unthrottle(cfg, r):
    return make_throttle(cfg, r, True)


COMM_NAMES = (b"", b"x", b"python3", b"1234567", b"12345678", b"kworker/u8:2-ev",
              "caf\u00e9".encode())


def make_comm(cfg, r, exec_=None):
    exec_ = r.random() < 0.5 if exec_ is None else exec_
    pid, tid = u32(r), u32(r)
    name = r.choice(COMM_NAMES)
    tail, sid = sample_id_trailer(cfg, r)
    misc = MISC_COMM_EXEC if exec_ else 0
    body = struct.pack("<II", pid, tid) + padded_string(name) + tail
    return record(PERF_RECORD_COMM, misc, body), Comm(pid, tid, name.decode(), exec_, sid)


def make_task(cfg, r, exit_=None):
    exit_ = r.random() < 0.5 if exit_ is None else exit_
    pid, ppid, tid, ptid, t = u32(r), u32(r), u32(r), u32(r), u64(r)
    tail, sid = sample_id_trailer(cfg, r)
    rtype = PERF_RECORD_EXIT if exit_ else PERF_RECORD_FORK
    return (record(rtype, 0, struct.pack("<IIIIQ", pid, ppid, tid, ptid, t) + tail),
            Task(pid, ppid, tid, ptid, t, exit_, sid))


FILENAMES = (b"", b"//anon", b"/usr/lib/x86_64-linux-gnu/libc.so.6", b"[vdso]",
             b"/tmp/\xc3\xa9t\xc3\xa9/a.out", b"1234567")


def make_mmap(cfg, r):
    pid, tid, addr, ln, pgoff = u32(r), u32(r), u64(r), u64(r), u64(r)
    name = r.choice(FILENAMES)
    tail, sid = sample_id_trailer(cfg, r)
    body = struct.pack("<IIQQQ", pid, tid, addr, ln, pgoff) + padded_string(name) + tail
    return (record(PERF_RECORD_MMAP, MISC_USER, body),
            Mmap(pid, tid, addr, ln, pgoff, name.decode(), sample_id=sid))


def make_mmap2(cfg, r, build_id=None):
    build_id = r.random() < 0.5 if build_id is None else build_id
    pid, tid, addr, ln, pgoff = u32(r), u32(r), u64(r), u64(r), u64(r)
    prot, flags = u32(r), u32(r)
    name = r.choice(FILENAMES)
    tail, sid = sample_id_trailer(cfg, r)
    head = struct.pack("<IIQQQ", pid, tid, addr, ln, pgoff)
    if build_id:
        size = r.choice((20, 16, 1, 0))
        raw = bytes(r.getrandbits(8) for _ in range(20))  # bytes past size: noise
        union = struct.pack("<BBH", size, r.getrandbits(8), r.getrandbits(16)) + raw
        want = Mmap(pid, tid, addr, ln, pgoff, name.decode(), prot=prot, flags=flags,
                    build_id=raw[:size], v2=True, sample_id=sid)
        misc = MISC_USER | MISC_MMAP_BUILD_ID
    else:
        maj, mnr, ino, gen = u32(r), u32(r), u64(r), u64(r)
        union = struct.pack("<IIQQ", maj, mnr, ino, gen)
        want = Mmap(pid, tid, addr, ln, pgoff, name.decode(), maj, mnr, ino, gen, prot,
                    flags, v2=True, sample_id=sid)
        misc = MISC_USER
    assert len(union) == 24
    body = head + union + struct.pack("<II", prot, flags) + padded_string(name) + tail
    return record(PERF_RECORD_MMAP2, misc, body), want


def make_read(cfg, r):
    pid, tid = u32(r), u32(r)
    raw, values = read_values(cfg.read_format, r)
    tail, sid = sample_id_trailer(cfg, r)
    return (record(PERF_RECORD_READ, 0, struct.pack("<II", pid, tid) + raw + tail),
            Read(pid, tid, values, sid))


def make_unknown(cfg, r):
    rtype = r.choice((99, 14, 21, 0, 0xFFFFFFFF))  # 14: SWITCH, 21: not decoded
    misc = r.getrandbits(16)
    body = bytes(r.getrandbits(8) for _ in range(8 * r.randrange(0, 5)))
    return record(rtype, misc, body), Unknown(rtype, misc, body)


MAKERS = {
    "sample": make_sample,
    "lost": make_lost,
    "lost_samples": make_lost_samples,
    "throttle": make_throttle,
    "unthrottle": make_unthrottle,
    "comm": make_comm,
    "task": make_task,
    "mmap": make_mmap,
    "mmap2": make_mmap2,
    "read": make_read,
    "unknown": make_unknown,
}
OTHER_KINDS = [k for k in MAKERS if k != "sample"]


def make(kind, cfg, r):
    return MAKERS[kind](cfg, r)


def decode_one(raw: bytes, cfg: ParseConfig):
    (rec,) = list(iter_records(raw, cfg))
    return rec


# -- byte-exact decoding -----------------------------------------------------------------


def test_every_sample_type_combination_decodes_exactly():
    """All 2**11 combinations of the sample_type bits perfbp knows; the
    read_format runs through its 32 variants along the way."""
    r = random.Random(1009)
    for n in range(1 << len(SAMPLE_BITS)):
        sample_type = bits_of(n, SAMPLE_BITS)
        cfg = ParseConfig(sample_type, bool(n & 1), ALL_READ_FORMATS[n % 32])
        for nr in (0, 3):
            raw, want = make_sample(cfg, r, callchain=nr)
            assert len(raw) == struct.unpack_from("<H", raw, 6)[0]
            got = decode_one(raw, cfg)
            assert got == want, f"sample_type={sample_type:#x} read_format={cfg.read_format:#x}"
            assert parse_sample(raw[8:], cfg, want.misc) == want
            if not sample_type & (PERF_SAMPLE_READ | PERF_SAMPLE_CALLCHAIN):
                assert cfg.fixed_sample_size == len(raw)
            else:
                assert cfg.fixed_sample_size is None


@pytest.mark.parametrize("read_format", ALL_READ_FORMATS,
                         ids=lambda f: f"read_format={f:#x}")
def test_sample_read_values_decode_exactly(read_format):
    r = random.Random(read_format)
    for sample_type in (PERF_SAMPLE_READ, PERF_SAMPLE_READ | PERF_SAMPLE_CALLCHAIN,
                        bits_of(-1, SAMPLE_BITS)):
        cfg = ParseConfig(sample_type, False, read_format)
        for _ in range(5):
            raw, want = make_sample(cfg, r)
            got = decode_one(raw, cfg)
            assert got == want
            if read_format & PERF_FORMAT_GROUP:
                head, vals = got.read
                assert len(head) == bin(read_format & 3).count("1")
                per = 1 + bool(read_format & PERF_FORMAT_ID) + bool(read_format & PERF_FORMAT_LOST)
                assert len(vals) % per == 0
            else:
                assert len(got.read) == 1 + bin(read_format & 0x17).count("1")


def test_sample_fields_by_hand():
    """One sample spelled out field by field: the layout is the kernel's."""
    st_ = (PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME
           | PERF_SAMPLE_ADDR | PERF_SAMPLE_CPU | PERF_SAMPLE_PERIOD | PERF_SAMPLE_CALLCHAIN)
    body = struct.pack("<QQIIQQIIQQQQ", 77, 0x401000, 100, 101, 123456789, 0x404118,
                       3, 0xDEAD, 1, 2, 0xFFFFFFFFFFFFFE00, 0x401000)
    raw = struct.pack("<IHH", 9, 2, 8 + len(body)) + body
    got = decode_one(raw, ParseConfig(st_, True))
    assert got == Sample(id=77, ip=0x401000, pid=100, tid=101, time=123456789, addr=0x404118,
                         stream_id=None, cpu=3, period=1,
                         callchain=(0xFFFFFFFFFFFFFE00, 0x401000), read=(), misc=2)


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_non_sample_records_decode_exactly(kind):
    """Each record type, without and with a sample_id trailer of every shape
    (all 64 combinations of the six struct sample_id bits, plus bits that do
    not belong in the trailer: IP, ADDR, PERIOD, READ, CALLCHAIN)."""
    r = random.Random(kind)
    extra = PERF_SAMPLE_IP | PERF_SAMPLE_ADDR | PERF_SAMPLE_PERIOD | PERF_SAMPLE_READ \
        | PERF_SAMPLE_CALLCHAIN
    configs = [ParseConfig(bits_of(n, SAMPLE_ID_BITS), False, ALL_READ_FORMATS[n % 32])
               for n in range(64)]
    configs += [ParseConfig(bits_of(n, SAMPLE_ID_BITS) | (extra if n & 1 else 0), True,
                            ALL_READ_FORMATS[(n + 7) % 32]) for n in range(64)]
    for cfg in configs:
        for _ in range(4):
            raw, want = make(kind, cfg, r)
            got = decode_one(raw, cfg)
            assert got == want, f"{kind} sample_type={cfg.sample_type:#x} all={cfg.sample_id_all}"


@pytest.mark.parametrize("all_", [False, True])
def test_specific_variants(all_):
    """The misc bits that change a record's meaning: COMM exec, MMAP2 build id,
    and FORK vs EXIT, THROTTLE vs UNTHROTTLE."""
    cfg = ParseConfig(PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_IDENTIFIER, all_)
    r = random.Random(7)
    for exec_ in (False, True):
        raw, want = make_comm(cfg, r, exec_)
        got = decode_one(raw, cfg)
        assert got == want and got.exec is exec_
    for exit_ in (False, True):
        raw, want = make_task(cfg, r, exit_)
        got = decode_one(raw, cfg)
        assert got == want and got.exit is exit_
    for un in (False, True):
        raw, want = make_throttle(cfg, r, un)
        got = decode_one(raw, cfg)
        assert got == want and got.unthrottle is un
    for bid in (False, True):
        for _ in range(8):
            raw, want = make_mmap2(cfg, r, bid)
            got = decode_one(raw, cfg)
            assert got == want and got.v2
            if bid:
                assert (got.maj, got.min, got.ino, got.ino_generation) == (0, 0, 0, 0)
                assert got.build_id == raw[8 + 36:8 + 36 + raw[8 + 32]]
            else:
                assert got.build_id == b""


def test_comm_by_hand():
    body = struct.pack("<II", 42, 43) + b"python3\0" + struct.pack("<IIQ", 42, 43, 999)
    raw = struct.pack("<IHH", PERF_RECORD_COMM, MISC_COMM_EXEC, 8 + len(body)) + body
    cfg = ParseConfig(PERF_SAMPLE_TID | PERF_SAMPLE_TIME, True)
    assert decode_one(raw, cfg) == Comm(42, 43, "python3", True, SampleId(42, 43, 999))


def test_mmap2_build_id_by_hand():
    bid = bytes(range(1, 21))
    body = (struct.pack("<IIQQQ", 7, 8, 0x400000, 0x1000, 0)
            + struct.pack("<BBH", 20, 0, 0) + bid + struct.pack("<II", 5, 0x802)
            + b"/bin/true\0".ljust(16, b"\0"))
    raw = struct.pack("<IHH", PERF_RECORD_MMAP2, MISC_MMAP_BUILD_ID | MISC_USER,
                      8 + len(body)) + body
    got = decode_one(raw, ParseConfig(0, False))
    assert got == Mmap(7, 8, 0x400000, 0x1000, 0, "/bin/true", prot=5, flags=0x802,
                       build_id=bid, v2=True)


@pytest.mark.parametrize("all_", [False, True])
def test_unknown_types_keep_their_bytes(all_):
    cfg = ParseConfig(PERF_SAMPLE_TID | PERF_SAMPLE_IDENTIFIER, all_)
    for rtype in (99, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 1000, 0xFFFFFFFF):
        body = bytes(range(8, 8 + 24))
        raw = struct.pack("<IHH", rtype, 0xABCD, 8 + len(body)) + body
        got = decode_one(raw, cfg)
        assert got == Unknown(rtype, 0xABCD, body)
        assert type(got.data) is bytes
        assert parse_record(rtype, 0xABCD, body, cfg) == got
    # an empty body (a bare header) is a record too
    assert decode_one(struct.pack("<IHH", 99, 0, 8), cfg) == Unknown(99, 0, b"")


def test_iter_records_and_decode_bulk_respect_offset_and_end():
    assert bits_of(-1, FIXED_BITS) == records.FIXED_SAMPLE_BITS
    cfg = ParseConfig(records.FIXED_SAMPLE_BITS, True)
    r = random.Random(3)
    recs = [make(k, cfg, r) for k in ["sample"] * 5 + ["lost", "comm"] + ["sample"] * 3]
    stream = b"".join(raw for raw, _ in recs)
    junk = b"\xff" * 24
    buf = bytearray(junk + stream + junk)
    want = [w for _, w in recs]
    assert list(iter_records(buf, cfg, len(junk), len(junk) + len(stream))) == want
    for view in (buf, memoryview(buf), bytes(buf)):
        cols, others = decode_bulk(view, cfg, len(junk), len(junk) + len(stream))
        assert others == [w for w in want if not isinstance(w, Sample)]
        assert cols.ip.tolist() == [w.ip for w in want if isinstance(w, Sample)]


def test_iter_records_on_a_memoryview_of_u64s():
    import array

    cfg = ParseConfig(0)
    raw = b"".join(struct.pack("<IHH", 99, i, 8) for i in range(8))
    words = array.array("Q")
    words.frombytes(raw)
    assert list(iter_records(memoryview(words), cfg)) == list(iter_records(raw, cfg))


@pytest.mark.parametrize("decode", [lambda b, c, e: list(iter_records(b, c, 0, e)),
                                    lambda b, c, e: decode_bulk(b, c, 0, e)],
                         ids=["iter_records", "decode_bulk"])
def test_end_past_the_buffer_is_corrupt(decode):
    """A perf.data file cut short says its data runs to ``end``; the bytes
    stop earlier: truncated input, so CorruptRecord."""
    cfg = ParseConfig(records.FIXED_SAMPLE_BITS)
    buf = b"".join(make_sample(cfg, random.Random(i))[0] for i in range(3))
    with pytest.raises(CorruptRecord):
        decode(buf, cfg, len(buf) + 64)


# -- bulk == record by record ------------------------------------------------------------


def columns_equal(a: SampleColumns, b: SampleColumns) -> None:
    assert len(a) == len(b)
    for name in COLUMNS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype == np.uint64, name
            assert np.array_equal(x, y), name


def assert_bulk_agrees(buf, cfg, want=None):
    """decode_bulk gives, column for column, what iter_records gives."""
    recs = list(iter_records(buf, cfg))
    if want is not None:
        assert recs == want
    samples = [x for x in recs if isinstance(x, Sample)]
    cols, others = decode_bulk(buf, cfg)
    assert others == [x for x in recs if not isinstance(x, Sample)]
    columns_equal(cols, SampleColumns.from_samples(samples))
    if samples and any(getattr(samples[0], c) is not None for c in COLUMNS):
        assert len(cols) == len(samples)
    return cols, others


@st.composite
def configs(draw, variable=True):
    sample_type = bits_of(draw(st.integers(0, (1 << len(FIXED_BITS)) - 1)), FIXED_BITS)
    # read_format shapes PERF_RECORD_READ too, with or without PERF_SAMPLE_READ
    read_format = draw(st.sampled_from(ALL_READ_FORMATS))
    if variable:
        if draw(st.booleans()):
            sample_type |= PERF_SAMPLE_CALLCHAIN
        if draw(st.integers(0, 3)) == 0:
            sample_type |= PERF_SAMPLE_READ
    return ParseConfig(sample_type, draw(st.booleans()), read_format)


@st.composite
def streams(draw, variable=True, max_size=60):
    """(cfg, [(raw, decoded), ...]): samples with other records at random places."""
    cfg = draw(configs(variable))
    kinds = draw(st.lists(st.sampled_from(["sample"] * len(OTHER_KINDS) + OTHER_KINDS),
                          max_size=max_size))
    r = random.Random(draw(st.integers(0, 2**32)))  # values: random, not shrunk
    return cfg, [make(k, cfg, r) for k in kinds]


def joined(recs):
    return b"".join(raw for raw, _ in recs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(variable=False))
def test_bulk_agrees_with_iter_records_fixed_size(stream):
    cfg, recs = stream
    assert cfg.fixed_sample_size is not None
    assert_bulk_agrees(joined(recs), cfg, [w for _, w in recs])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(variable=True))
def test_bulk_agrees_with_iter_records_any_sample_type(stream):
    cfg, recs = stream
    assert_bulk_agrees(joined(recs), cfg, [w for _, w in recs])


@settings(max_examples=100, deadline=None)
@given(streams(variable=False), st.integers(0, 2**32))
def test_bulk_agrees_on_samples_whose_size_is_not_the_fixed_size(stream, seed):
    """A PERF_RECORD_SAMPLE longer than its sample_type says (padding the
    kernel never writes, but a perf.data file might) is not a bulk row: both
    paths decode it the same way."""
    cfg, recs = stream
    recs = list(recs)
    r = random.Random(seed)
    raw, want = make_sample(cfg, r)
    padded = (struct.pack("<IHH", PERF_RECORD_SAMPLE, want.misc, len(raw) + 8)
              + raw[8:] + b"\xee" * 8)
    recs.insert(r.randrange(len(recs) + 1), (padded, want))
    assert_bulk_agrees(joined(recs), cfg, [w for _, w in recs])


def test_bulk_agrees_on_long_runs():
    """Long runs of samples (the walk's steps double while a run goes on),
    with other records just before, at and after powers of two."""
    cfg = ParseConfig(bits_of(-1, FIXED_BITS), True)
    r = random.Random(65537)
    n = (1 << 16) + 1009
    raw, _ = make_sample(cfg, r)
    size = len(raw)
    base = np.frombuffer(b"".join(make_sample(cfg, r)[0] for _ in range(64)), dtype=np.uint8)
    samples = np.tile(base, n // 64 + 1)[: n * size].tobytes()
    pieces = []
    cuts = sorted({0, 1, 2, 1023, 1024, 1025, 1 << 16, (1 << 16) + 1, n})
    for a, b in zip(cuts, cuts[1:]):
        pieces.append(samples[a * size:b * size])
        pieces.append(make(OTHER_KINDS[b % len(OTHER_KINDS)], cfg, r)[0])
    buf = b"".join(pieces)
    cols, others = assert_bulk_agrees(buf, cfg)
    assert len(cols) == n
    assert len(others) == len(cuts) - 1
    assert_runs_agree(buf, cfg)


# -- runs of alike samples == the columns ------------------------------------------------

#: every field sample_runs may be asked for
RUN_FIELDS = ("id", "ip", "pid", "tid", "time", "addr", "stream_id", "cpu", "period",
              "callchain")


def column(cols: SampleColumns, name: str, i: int):
    """Sample ``i``'s ``name`` in the columns (a call stack: () when none)."""
    col = getattr(cols, name)
    if name == "callchain":
        return () if col is None else col[i]
    return None if col is None else col[i]


def assert_runs_agree(buf, cfg, fields=RUN_FIELDS, min_run=1) -> "list | None":
    """sample_runs gives, sample for sample, the values of decode_bulk's
    columns, the same other records, and runs whose values differ from the
    run before; or None, and then only for samples with read values (or
    fields perfbp does not know), none of the columns, or runs shorter than
    ``min_run``."""
    got = records.sample_runs(buf, cfg, fields, min_run=min_run)
    cols, others = decode_bulk(buf, cfg)
    if cfg.sample_type & ~(records.FIXED_SAMPLE_BITS | PERF_SAMPLE_CALLCHAIN) \
            or not cfg.sample_type & records.FIXED_SAMPLE_BITS:
        assert got is None
        return None
    if got is None:
        assert min_run > 1
        return None
    runs, runs_others = got
    assert runs_others == others
    want = [tuple(column(cols, f, i) for f in fields) for i in range(len(cols))]
    assert [tuple(v) for v, n in runs for _ in range(n)] == want
    assert all(n > 0 for _v, n in runs)
    assert all(a[0] != b[0] for a, b in zip(runs, runs[1:]))
    return runs


@st.composite
def alike_streams(draw):
    """(cfg, bytes): copies of a few samples (with call stacks or not) that
    differ in their time only, in stretches, with other records between
    some of them: some of those a sample's copy but for their type (an
    impostor of type 99)."""
    cfg = draw(configs(variable=False))
    if draw(st.booleans()):
        cfg = ParseConfig(cfg.sample_type | PERF_SAMPLE_CALLCHAIN, cfg.sample_id_all,
                          cfg.read_format)
    r = random.Random(draw(st.integers(0, 2**32)))
    protos = [make_sample(cfg, r, callchain=draw(st.sampled_from([0, 1, 3, 3, 40])))[0]
              for _ in range(draw(st.integers(1, 3)))]
    head = 16 + 8 * bin(cfg.sample_type & records.FIXED_SAMPLE_BITS).count("1")  # to the ips
    if cfg.sample_type & PERF_SAMPLE_CALLCHAIN and len(protos[0]) > head:
        # the first sample with another last frame: alike but for its stack
        protos.append(protos[0][:-8] + struct.pack("<Q", u64(r)))
    # the time's word: after the header, the identifier, the ip and the tid
    at = 8 + 8 * sum(bool(cfg.sample_type & b) for b in FIXED_BITS[:3])
    out = b""
    for which, count, other in draw(st.lists(st.tuples(
            st.integers(0, len(protos) - 1), st.integers(1, 300),
            st.sampled_from([None, None, "impostor"] + OTHER_KINDS)), max_size=12)):
        for _ in range(count):
            raw = bytearray(protos[which])
            if cfg.sample_type & PERF_SAMPLE_TIME:
                struct.pack_into("<Q", raw, at, u64(r))
            out += raw
        if other == "impostor":
            out += struct.pack("<I", 99) + protos[which][4:]
        elif other:
            out += make(other, cfg, r)[0]
    return cfg, out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(variable=True), st.sampled_from([RUN_FIELDS, ("id", "pid", "tid", "ip", "cpu"),
                                                ("addr", "callchain"), ()]))
def test_runs_agree_with_bulk(stream, fields):
    cfg, recs = stream
    assert_runs_agree(joined(recs), cfg, fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alike_streams(), st.sampled_from([("id", "pid", "tid", "ip", "cpu", "callchain"),
                                         ("addr", "ip"), ()]))
def test_runs_agree_with_bulk_on_alike_samples(stream, fields):
    """Samples alike but for their time: long runs, merged across the other
    records; the time asked for splits them again."""
    cfg, buf = stream
    runs = assert_runs_agree(buf, cfg, fields)
    if runs is not None and not fields:
        assert len(runs) <= 1
    assert_runs_agree(buf, cfg, fields + ("time",))
    assert_runs_agree(buf, cfg, fields, min_run=records.MIN_RUN)


def test_runs_give_up_on_short_runs():
    """More than 8 runs, and more than one per MIN_RUN samples: None (the
    columns are the faster way); long runs of the same samples: a few; read
    values: None."""
    cfg = ParseConfig(PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME, True)
    r = random.Random(3)
    a, b = make_sample(cfg, r)[0], make_sample(cfg, r)[0]
    fields = ("ip", "pid", "tid")
    assert records.sample_runs((a + b) * 100, cfg, fields) is None
    runs, others = records.sample_runs((a * 3000 + b * 3000) * 3, cfg, fields)
    assert [n for _v, n in runs] == [3000] * 6 and others == []
    assert records.sample_runs(b"", cfg, fields) == ([], [])
    reads = ParseConfig(cfg.sample_type | PERF_SAMPLE_READ, True)
    assert records.sample_runs(make_sample(reads, r)[0], reads, fields) is None


# -- never crash: only PerfbpError ---------------------------------------------------------


@contextlib.contextmanager
def deadline(seconds: int = 20):
    """Fail, rather than hang, if decoding loops."""
    def alarm(*_):
        raise AssertionError(f"decoding took more than {seconds} s: a loop?")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def decode_both(buf, cfg) -> "list | None":
    """Run both paths; return the records, or None if (and only if) both
    raised a PerfbpError.  Anything else escapes and fails the test."""
    with deadline():
        try:
            recs = list(iter_records(buf, cfg))
        except perfbp.PerfbpError as exc:
            assert isinstance(exc, OSError) and exc.errno
            recs = None
        assert records.whole_records_end(buf, cfg) == whole_end(buf)
        try:
            runs = records.sample_runs(buf, cfg, RUN_FIELDS, min_run=1)
        except perfbp.PerfbpError:
            assert recs is None, "sample_runs raised where iter_records did not"
            runs = "raised"
        try:
            cols, others = decode_bulk(buf, cfg)
        except perfbp.PerfbpError:
            assert recs is None, "decode_bulk raised where iter_records did not"
            assert runs == "raised" or runs is None, "sample_runs did not raise"
            return None
    assert recs is not None, "iter_records raised where decode_bulk did not"
    assert others == [x for x in recs if not isinstance(x, Sample)]
    columns_equal(cols, SampleColumns.from_samples([x for x in recs if isinstance(x, Sample)]))
    assert_runs_agree(buf, cfg)
    return recs


def whole_end(buf) -> int:
    """Where the records of ``buf`` stop being whole: the chain of sizes
    followed to the first impossible or cut-short record."""
    pos = 0
    while pos + 8 <= len(buf):
        (size,) = struct.unpack_from("<H", buf, pos + 6)
        if size < 8 or pos + size > len(buf):
            break
        pos += size
    return pos


ANY_CONFIG = st.one_of(
    configs(),
    st.builds(ParseConfig, st.integers(0, 2**64 - 1), st.booleans(), st.integers(0, 2**64 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), ANY_CONFIG)
def test_random_bytes_never_crash(buf, cfg):
    decode_both(buf, cfg)


@st.composite
def plausible_garbage(draw):
    """Records with consistent headers and random bodies: every type's
    decoder meets garbage, not just the header check."""
    out = b""
    for _ in range(draw(st.integers(0, 12))):
        rtype = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 10, 13, 99]))
        body = draw(st.binary(max_size=160))
        if draw(st.booleans()):
            body += b"\0" * (-len(body) % 8)
        # a huge count (callchain nr, group nr) right where one may be read
        if draw(st.integers(0, 3)) == 0 and len(body) >= 8:
            at = draw(st.integers(0, len(body) // 8 - 1)) * 8
            body = body[:at] + struct.pack("<Q", draw(st.sampled_from(
                [2**60, 2**64 - 1, 2**32, 2**61 + 1]))) + body[at + 8:]
        misc = draw(st.sampled_from([0, MISC_COMM_EXEC, MISC_MMAP_BUILD_ID, 0xFFFF]))
        out += struct.pack("<IHH", rtype, misc, 8 + len(body)) + body
    return out


@settings(max_examples=300, deadline=None)
@given(plausible_garbage(), ANY_CONFIG)
def test_garbage_bodies_never_crash(buf, cfg):
    decode_both(buf, cfg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(max_size=6))
def test_truncated_streams_at_every_length(stream):
    """Cut a valid stream at every length: at a record boundary the prefix
    decodes to the first records, anywhere else it is a CorruptRecord."""
    cfg, recs = stream
    buf = joined(recs)
    bounds = {0}
    for raw, _ in recs:
        bounds.add(max(bounds) + len(raw))
    want = [w for _, w in recs]
    with deadline():
        for cut in range(len(buf) + 1):
            piece = buf[:cut]
            assert records.whole_records_end(piece, cfg) == max(b for b in bounds if b <= cut)
            if cut in bounds:
                n = sorted(bounds).index(cut)
                assert decode_both(piece, cfg) == want[:n]
            else:
                with pytest.raises(CorruptRecord):
                    list(iter_records(piece, cfg))
                with pytest.raises(CorruptRecord):
                    decode_bulk(piece, cfg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(max_size=20), st.data())
def test_corrupted_streams_never_crash(stream, data):
    cfg, recs = stream
    buf = bytearray(joined(recs))
    if not buf:
        return
    starts = [0]
    for raw, _ in recs[:-1]:
        starts.append(starts[-1] + len(raw))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(1, 255)),
                               min_size=1, max_size=8))
    for pos, x in flips:
        buf[pos] ^= x
    # header size fields and the counts the decoders trust
    sizes = data.draw(st.lists(st.tuples(st.sampled_from(starts),
                                         st.sampled_from([0, 1, 7, 8, 9, 16, 24, 0xFFFF,
                                                          0xFFF8, 4096])), max_size=3))
    for start, size in sizes:
        struct.pack_into("<H", buf, start + 6, size)
    types = data.draw(st.lists(st.tuples(st.sampled_from(starts),
                                         st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 10, 13, 99])),
                               max_size=2))
    for start, rtype in types:
        struct.pack_into("<I", buf, start, rtype)
    decode_both(bytes(buf), cfg)


@pytest.mark.parametrize("nr", [2**60, 2**64 - 1, 2**32, 2**61 + 1, 4])
def test_huge_callchain_nr_is_corrupt_not_an_allocation(nr):
    cfg = ParseConfig(PERF_SAMPLE_IP | PERF_SAMPLE_CALLCHAIN)
    body = struct.pack("<QQQQ", 0x401000, nr, 1, 2)
    raw = struct.pack("<IHH", PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body
    with deadline(5), pytest.raises(CorruptRecord) as err:
        list(iter_records(raw, cfg))
    assert err.value.errno == 74  # EBADMSG
    with deadline(5), pytest.raises(CorruptRecord):
        decode_bulk(raw, cfg)


@pytest.mark.parametrize("read_format", [f for f in ALL_READ_FORMATS if f & PERF_FORMAT_GROUP])
@pytest.mark.parametrize("nr", [2**60, 2**64 - 1, 2**59 + 3])
def test_huge_group_nr_is_corrupt_not_an_allocation(read_format, nr):
    cfg = ParseConfig(PERF_SAMPLE_READ, False, read_format)
    body = struct.pack("<QQQQ", nr, 1, 2, 3)
    raw = struct.pack("<IHH", PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body
    with deadline(5), pytest.raises(CorruptRecord):
        list(iter_records(raw, cfg))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=256),
       st.booleans())
def test_parse_sample_with_any_sample_type_bits(sample_type, read_format, body, all_):
    """Random sample_type (unknown high bits too) and read_format: a Sample
    or a PerfbpError, nothing else."""
    cfg = ParseConfig(sample_type, all_, read_format)
    with deadline():
        try:
            got = parse_sample(body, cfg)
        except perfbp.PerfbpError:
            return
    assert isinstance(got, Sample)
    for name in ("ip", "pid", "tid", "time", "addr", "stream_id", "cpu", "period"):
        v = getattr(got, name)
        assert v is None or 0 <= v < 2**64


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), configs())
def test_known_fields_survive_unknown_sample_type_bits(extra, cfg):
    """Bits perfbp does not decode all come after READ and CALLCHAIN in the
    kernel's order: the fields perfbp knows still decode exactly."""
    extra &= ~records.KNOWN_SAMPLE_BITS
    r = random.Random(extra)
    raw, want = make_sample(cfg, r)
    raw += bytes(r.getrandbits(8) for _ in range(8 * r.randrange(0, 8)))
    got = parse_sample(raw[8:], ParseConfig(cfg.sample_type | extra, cfg.sample_id_all,
                                            cfg.read_format), want.misc)
    assert got == want


def test_corrupt_record_is_a_perfbp_error():
    assert issubclass(CorruptRecord, perfbp.PerfbpError)
    assert issubclass(CorruptRecord, OSError)
    with pytest.raises(CorruptRecord) as err:
        list(iter_records(struct.pack("<IHH", 9, 0, 4), ParseConfig(0)))
    assert "size 4" in str(err.value)


# -- the real kernel -----------------------------------------------------------------------

HITS = 1009  # a prime


@pytest.mark.kernel
def test_real_kernel_samples_decode_exactly(machine_lost):
    """1009 stores from this thread into a ctypes cell, sampled on every hit
    (but those the machine delivers without their status, which the kernel
    neither counts nor samples): each decoded field is what the kernel must
    have written, and the bulk and one-by-one decoders agree on the raw ring
    bytes."""
    from perfbp.kernel.sampling import Sampler

    cell = (ctypes.c_long * 1)()
    addr = ctypes.addressof(cell)
    chunks: list = []
    with Sampler([perfbp.Breakpoint.write(addr, 8)], perfbp.Target.this_thread()) as s:
        for i in range(HITS):
            cell[0] = i
        raw = s.drain()  # keep a copy of the raw bytes for the cross-check
        chunks.extend(enumerate(raw))
        batch = s.decode(raw)
        (stats,) = s.stats()
        ids = set(s._id_watch)
        cfg = s.config
    assert cell[0] == HITS - 1
    cols = batch.samples
    seen = HITS - machine_lost()
    assert len(batch) == seen
    assert set(cols.tid.tolist()) == {threading.get_native_id()}
    assert set(cols.pid.tolist()) == {os.getpid()}
    assert set(cols.addr.tolist()) == {addr}  # filled in from the watch: no ADDR asked
    assert cols.period is None  # nor PERIOD: it is 1
    assert not cfg.sample_type & (PERF_SAMPLE_ADDR | PERF_SAMPLE_PERIOD)
    assert set(cols.cpu.tolist()) <= set(system.online_cpus())
    for cpu in set(cols.cpu.tolist()):
        t = cols.time[cols.cpu == cpu]
        assert np.all(np.diff(t.astype(np.int64)) >= 0), f"time goes back on CPU {cpu}"
    assert set(cols.id.tolist()) <= ids
    assert set(batch.watch.tolist()) == {0}
    assert batch.records == []  # no LOST, no THROTTLE
    assert (stats.hits, stats.lost, stats.samples) == (seen, 0, seen)
    assert stats.complete

    # the same bytes, record by record: the same samples
    n = 0
    seen_cpus = []
    for _i, chunk in chunks:
        recs = list(iter_records(chunk, cfg))
        samples = [x for x in recs if isinstance(x, Sample)]
        cpus = {x.cpu for x in samples}
        assert len(cpus) <= 1  # one ring per CPU: a chunk holds one CPU's samples
        seen_cpus.extend(cpus)
        assert all(x.misc & 7 == MISC_USER for x in samples)  # user-mode hits
        n += len(samples)
        assert_bulk_agrees(chunk, cfg, recs)
    assert len(seen_cpus) == len(set(seen_cpus))
    assert n == HITS


# -- samples with user stacks (--call-graph dwarf) ---------------------------------------

#: perf's x86-64 mask (PERF_REGS_MASK): 20 registers; and a small one
REGS_MASKS = (0xFF0FFF, (1 << 6) | (1 << 7) | (1 << 8))


def make_stack_sample(cfg: ParseConfig, r: random.Random, stack_size: int,
                      chain: int = 0) -> "tuple[bytes, Sample]":
    """A sample of ``cfg`` (whose sample_type has REGS_USER and STACK_USER)
    with random registers and ``stack_size`` bytes of stack of which a
    random part is valid (``dyn_size``); a kernel thread's (ABI 0: no
    registers, no stack) one time in eight."""
    head_cfg = ParseConfig(cfg.sample_type & ~(PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER),
                           cfg.sample_id_all, cfg.read_format)
    raw, want = make_sample(head_cfg, r, callchain=chain)
    body = raw[8:]
    if r.randrange(8):
        n = bin(cfg.sample_regs_user).count("1")
        regs = tuple(u64(r) for _ in range(n))
        data = r.randbytes(stack_size)
        dyn = r.randrange(0, stack_size + 1)
        body += struct.pack(f"<Q{n}Q", 2, *regs) + struct.pack("<Q", stack_size) + data \
            + struct.pack("<Q", dyn)
        want = want._replace(regs_abi=2, regs=regs, stack=data[:dyn])
    else:
        body += struct.pack("<QQ", 0, 0)
    return record(PERF_RECORD_SAMPLE, want.misc, body), want


@st.composite
def stack_streams(draw):
    """(cfg, [(raw, decoded), ...]): samples with user stacks (of one size,
    as the kernel writes them, but for kernel threads'), perfbp's and
    perf's sample_types, other records between them."""
    fixed = draw(st.sampled_from([
        PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME
        | PERF_SAMPLE_CPU | PERF_SAMPLE_CALLCHAIN,
        PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_ADDR
        | PERF_SAMPLE_CALLCHAIN,
        PERF_SAMPLE_IP | PERF_SAMPLE_TID]))
    cfg = ParseConfig(fixed | PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER,
                      draw(st.booleans()), PERF_FORMAT_LOST, draw(st.sampled_from(REGS_MASKS)))
    size = draw(st.sampled_from([8, 64, 1024]))
    r = random.Random(draw(st.integers(0, 2**32)))
    out = []
    for kind in draw(st.lists(st.sampled_from(["sample"] * 4 + OTHER_KINDS), max_size=40)):
        if kind == "sample":
            chain = r.choice((0, 0, 0, 2)) if fixed & PERF_SAMPLE_CALLCHAIN else 0
            out.append(make_stack_sample(cfg, r, size, chain))
        else:
            out.append(make(kind, cfg, r))
    return cfg, out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack_streams())
def test_samples_with_user_stacks_decode_exactly(stream):
    """Registers and stack bytes (``dyn_size`` of them) one by one; the
    columns of decode_bulk, which reads runs of them in place, are those of
    the samples; non_samples gives the other records; sample_runs leaves
    them to the columns."""
    cfg, recs = stream
    buf = joined(recs)
    assert list(iter_records(buf, cfg)) == [w for _, w in recs]
    cols, others = decode_bulk(buf, cfg)
    samples = [w for _, w in recs if isinstance(w, Sample)]
    assert others == [w for _, w in recs if not isinstance(w, Sample)]
    columns_equal(cols, SampleColumns.from_samples(samples))
    assert cols.callchain == SampleColumns.from_samples(samples).callchain
    assert non_samples(buf, cfg) == others
    assert records.sample_runs(buf, cfg, ("id", "ip")) is None


def test_a_user_stack_larger_than_its_sample_is_corrupt():
    cfg = ParseConfig(PERF_SAMPLE_IP | PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER, False,
                      0, REGS_MASKS[1])
    body = struct.pack("<Q", 0x401000) + struct.pack("<4Q", 2, 1, 2, 3) \
        + struct.pack("<Q", 4096) + bytes(64) + struct.pack("<Q", 64)
    with pytest.raises(CorruptRecord, match="user stack of 4096 bytes"):
        parse_sample(body, cfg)


#: configs whose samples carry perfbp's values in their raw field (a watch
#: with a condition): alone, after a callchain, before a user stack
VALUES_CONFIGS = st.builds(
    lambda st_, regs: ParseConfig(st_ | records.PERF_SAMPLE_RAW, True, 0, regs,
                                  records.VALUES_RAW.size),
    st.sampled_from([0x1 | 0x2 | 0x4 | 0x80 | 0x10000, 0x1 | 0x2 | 0x20 | 0x10000,
                     0x1 | 0x2 | 0x20 | 0x1000 | 0x2000 | 0x10000, 0x1 | 0x1000 | 0x2000, 0]),
    st.sampled_from([0, 1, 0xff]))


@settings(max_examples=400, deadline=None)
@given(plausible_garbage(), VALUES_CONFIGS)
def test_garbage_with_values_never_crashes(buf, cfg):
    decode_both(buf, cfg)


def test_values_decode_in_bulk_and_one_by_one_alike():
    """A sample's raw values (size 28, kind 1, addr, old, new) become the
    columns addr, old and new; a raw field of another size or kind is a
    CorruptRecord for both decoders."""
    cfg = ParseConfig(0x1 | 0x2 | 0x10000 | records.PERF_SAMPLE_RAW, True, 0, 0,
                      records.VALUES_RAW.size)
    body = lambda i, kind=1, size=28: (struct.pack("<QQII", 7, 0x400000 + i, 10, 11)  # noqa: E731
                                       + records.VALUES_RAW.pack(size, kind, 0x4040, i, i + 1))
    buf = b"".join(struct.pack("<IHH", 9, 2, 8 + len(body(i))) + body(i) for i in range(5))
    recs = decode_both(buf, cfg)
    assert [(r.addr, r.old, r.new) for r in recs] == [(0x4040, i, i + 1) for i in range(5)]
    for bad in (body(0, kind=2), body(0, size=20)):
        with pytest.raises(CorruptRecord, match="perfbp's values"):
            decode_bulk(struct.pack("<IHH", 9, 2, 8 + len(bad)) + bad, cfg)
        with pytest.raises(CorruptRecord, match="perfbp's values"):
            list(iter_records(struct.pack("<IHH", 9, 2, 8 + len(bad)) + bad, cfg))
