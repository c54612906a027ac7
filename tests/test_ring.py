"""The perf ring protocol (perfbp.kernel.ring.Ring) over a fake kernel, and its
mapping (perfbp.kernel.abi.RingMapping) over the real one, in both the x86 path and
the compiled-atomics path that weakly ordered machines use.

The fake plays the kernel's side as ``kernel/events/ring_buffer.c`` does:
``perf_output_begin()`` refuses a record that does not fit
(``ring_buffer_has_space()``: ``CIRC_SPACE(head, tail, size) >= record size``,
so the ring is never filled to the last byte) and counts it lost; the record is
copied in at ``head & mask``, in two pieces when it straddles the end; and
``perf_output_put_handle()`` publishes ``data_head`` only when every record
reserved so far is complete (nested writers publish once, at the outermost).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfbp
from perfbp.kernel import abi, ring
from perfbp.kernel import system
from perfbp.kernel.records import ParseConfig, Unknown, iter_records
from perfbp.kernel.ring import Ring, RingOverrun

REPO_ROOT = Path(__file__).resolve().parent.parent
UNKNOWN_TYPE = 99  # records of a type nobody decodes: the ring does not care


class FakeKernel:
    """A ring's data area and head/tail words, written as the kernel would.

    Attributes:
        data, data_size: what :class:`~perfbp.kernel.ring.Ring` reads (the Mapping
            protocol).
        head: the published ``data_head``.
        reserved: the kernel's private head (``rb->head``): records between
            ``head`` and ``reserved`` are being written.
        tail: ``data_tail`` as the reader stored it.
        lost: records refused because they did not fit.
        tail_stores: every value the reader stored, in order.
    """

    def __init__(self, size: int = 4096, start: int = 0) -> None:
        assert size & (size - 1) == 0 and start % 8 == 0
        self.buf = bytearray(b"\xcc" * size)
        self.data = memoryview(self.buf)
        self.data_size = size
        self.head = self.reserved = self.tail = start
        self.lost = 0
        self.tail_stores: list[int] = []
        self.wraps = 0

    # the Mapping protocol
    def load_head(self) -> int:
        return self.head

    def load_tail(self) -> int:
        return self.tail

    def store_tail(self, value: int) -> None:
        assert value <= self.head, "the reader released bytes the kernel never published"
        self.tail_stores.append(value)
        self.tail = value

    # the kernel's side
    def space(self) -> int:
        """CIRC_SPACE(head, tail, size), from include/linux/circ_buf.h."""
        return (self.tail - (self.reserved + 1)) & (self.data_size - 1)

    def begin(self, rec: bytes) -> bool:
        """Reserve and copy one record without publishing it; False (and
        one more lost) when it does not fit."""
        if self.space() < len(rec):
            self.lost += 1
            return False
        pos = self.reserved & (self.data_size - 1)
        first = min(len(rec), self.data_size - pos)
        self.buf[pos:pos + first] = rec[:first]
        self.buf[:len(rec) - first] = rec[first:]
        if first < len(rec) or pos + first == self.data_size:
            self.wraps += 1
        self.reserved += len(rec)
        return True

    def publish(self) -> None:
        """perf_output_put_handle(): make every complete record visible."""
        self.head = self.reserved

    def write(self, rec: bytes) -> bool:
        ok = self.begin(rec)
        if ok:
            self.publish()
        return ok


def make_record(seq: int, size: int) -> bytes:
    """A record of ``size`` bytes (a multiple of 8) whose every byte depends on
    ``seq``, so that a misplaced or stale byte shows."""
    assert size % 8 == 0 and 8 <= size < 1 << 16
    body = bytes((seq * 131 + i * 7 + 1) & 0xFF for i in range(size - 8))
    return struct.pack("<IHH", UNKNOWN_TYPE, seq & 0xFFFF, size) + body


def seqs_of(chunk: bytes) -> list[int]:
    """The sequence numbers (misc) of the whole records in ``chunk``."""
    recs = list(iter_records(chunk, ParseConfig(0)))  # raises if a record is cut
    assert all(isinstance(x, Unknown) and x.type == UNKNOWN_TYPE for x in recs)
    return [x.misc for x in recs]


# -- the protocol over the fake kernel -----------------------------------------------------


def test_read_returns_what_was_published_in_order():
    k = FakeKernel()
    r = Ring(k)
    assert r.read() == b"" and k.tail_stores == []
    recs = [make_record(i, 8 * (i + 1)) for i in range(10)]
    for rec in recs:
        assert k.write(rec)
    assert r.pending() == sum(map(len, recs))
    assert r.read() == b"".join(recs)
    assert k.tail_stores == [k.head] and r.tail == k.head == r.bytes_read
    assert r.pending() == 0 and r.read() == b""
    assert k.tail_stores == [k.head]  # an empty read stores nothing


def test_record_straddling_the_end_is_made_whole():
    k = FakeKernel(4096)
    r = Ring(k)
    assert k.write(make_record(0, 4000))
    assert seqs_of(r.read()) == [0]
    rec = make_record(1, 200)  # 96 bytes at the end, 104 at the start
    assert k.write(rec)
    assert (k.head - 200) % 4096 == 4000
    assert r.read() == rec
    assert k.tail == k.head == 4200
    # a header that straddles the end too
    k2 = FakeKernel(4096, start=4092 - 4)
    r2 = Ring(k2)
    rec = make_record(2, 64)
    assert k2.write(rec) and k2.buf[4088:4096] == rec[:8]
    assert r2.read() == rec


def test_full_ring_refuses_and_counts_lost():
    """The kernel keeps one byte free (CIRC_SPACE): 4096 bytes hold 4088 of
    8-byte-aligned records; what does not fit is lost, not overwritten."""
    k = FakeKernel(4096)
    r = Ring(k)
    recs = [make_record(i, 8) for i in range(511)]
    assert all(k.write(rec) for rec in recs)
    assert not k.write(make_record(511, 8)) and k.lost == 1
    assert r.pending() == 4088
    assert r.read() == b"".join(recs)
    assert k.write(make_record(512, 4088))  # now the whole buffer is free again
    assert seqs_of(r.read()) == [512]


def test_unpublished_record_is_not_read():
    k = FakeKernel()
    r = Ring(k)
    a, b, c = make_record(1, 64), make_record(2, 128), make_record(3, 32)
    assert k.write(a)
    assert k.begin(b) and k.begin(c)  # being written (c nested in b)
    assert r.read() == a
    assert k.tail == len(a)
    assert r.read() == b""
    k.publish()
    assert r.read() == b + c


def test_tail_starts_where_the_mapping_says():
    start = 2**40 + 4096 * 3 + 1000
    k = FakeKernel(4096, start=start)
    r = Ring(k)
    assert r.tail == start
    rec = make_record(5, 3200)  # straddles the end
    assert k.write(rec)
    assert r.read() == rec and k.tail == start + 3200


def test_head_more_than_a_buffer_ahead_is_an_overrun():
    k = FakeKernel(4096, start=4096 * 7 + 512)
    r = Ring(k)
    # a whole buffer exactly is fine (the kernel never does it, but it is
    # not an overrun): it is read from the tail's position, around the end
    data = bytes(range(256)) * 16
    k.buf[:] = data
    k.head = k.tail + 4096
    assert r.read() == data[512:] + data[:512]
    assert k.tail == k.head
    k.head = k.tail + 4096 + 8
    before = (r.tail, list(k.tail_stores), r.bytes_read)
    with pytest.raises(RingOverrun) as err:
        r.read()
    assert isinstance(err.value, perfbp.PerfbpError) and isinstance(err.value, OSError)
    assert "4104 bytes past tail" in str(err.value)
    assert (r.tail, k.tail_stores, r.bytes_read) == before  # nothing released
    assert issubclass(ring.RingOverrun, perfbp.PerfbpError)


def test_many_wraps():
    """10007 records of varied sizes through a 4 KiB ring, read now and then:
    every published byte comes out once, in order; a record refused by a full
    ring is written again after a read, and fits then."""
    import random

    rnd = random.Random(10007)
    k = FakeKernel(4096)
    r = Ring(k)
    out = []
    expected = []
    refused = 0
    for seq in range(10007):
        rec = make_record(seq, 8 * rnd.randint(1, 64))
        if not k.write(rec):
            refused += 1
            out.append(r.read())
            assert k.write(rec)
        expected.append(rec)
        if rnd.random() < 0.1:
            out.append(r.read())
            assert k.tail_stores[-1] == k.head == r.tail
    out.append(r.read())
    assert b"".join(out) == b"".join(expected)
    assert k.lost == refused > 0
    assert k.wraps > 500
    assert r.bytes_read == sum(map(len, expected)) == k.head


RECORD_SIZES = st.one_of(st.integers(1, 16), st.integers(1, 511),
                         st.just(511)).map(lambda n: 8 * n)
OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), RECORD_SIZES),
    st.tuples(st.just("begin"), RECORD_SIZES),
    st.tuples(st.just("publish")),
    st.tuples(st.just("read")),
), max_size=300)


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(0, 2**45).map(lambda n: 8 * n), st.sampled_from([4096, 8192, 512]))
def test_ring_protocol_property(ops, start, size):
    """Random record sizes, random interleaving of writes (complete or in
    progress), publications and reads: the reader gets exactly the published
    records, whole and in order, stores the tail after each read, and the
    kernel refuses (loses) only what does not fit."""
    k = FakeKernel(size, start)
    r = Ring(k)
    published: list[bytes] = []  # complete and visible, not yet read
    in_flight: list[bytes] = []
    refused = 0
    read_total = 0
    seq = 0
    for op in ops:
        if op[0] in ("write", "begin"):
            rec = make_record(seq, min(op[1], size - 8))
            seq += 1
            fits = k.space() >= len(rec)
            assert k.begin(rec) is fits
            if not fits:
                refused += 1
                continue
            in_flight.append(rec)
            if op[0] == "write":
                k.publish()
        elif op[0] == "publish":
            k.publish()
        else:
            stores = len(k.tail_stores)
            head = k.head
            chunk = r.read()
            want = b"".join(published)
            assert chunk == want
            if chunk:
                assert k.tail_stores[stores:] == [head]
                assert r.tail == k.tail == head
            else:
                assert len(k.tail_stores) == stores
            seqs_of(chunk)  # whole records only
            read_total += len(chunk)
            published.clear()
        if k.head == k.reserved:
            published.extend(in_flight)
            in_flight.clear()
        assert r.pending() == sum(map(len, published))
    assert k.lost == refused
    k.publish()
    published.extend(in_flight)
    assert r.read() == b"".join(published)
    assert r.tail == k.tail == k.head
    assert r.bytes_read == read_total + sum(map(len, published)) == k.head - start


# -- the real mapping ------------------------------------------------------------------------

DATA_TAIL = abi.ffi.offsetof("struct perf_event_mmap_page", "data_tail")
DATA_HEAD = abi.ffi.offsetof("struct perf_event_mmap_page", "data_head")


def kernel_view(fd: int, pages: int) -> "tuple[int, int]":
    """(data_head, data_tail) read through a second, read-only mapping of the
    event: the words the kernel shares, not the reader's own copy of them."""
    mm = mmap.mmap(fd, (1 + pages) * mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        return (struct.unpack_from("<Q", mm, DATA_HEAD)[0],
                struct.unpack_from("<Q", mm, DATA_TAIL)[0])
    finally:
        mm.close()


ROUNDS = (60, 60, 60, 60, 31)  # 271 stores, a prime; 60 samples (2,880 bytes) fit a 4 KiB ring


@pytest.mark.kernel
@pytest.mark.skipif(os.environ.get("PERFBP_FORCE_ATOMICS") == "1",
                    reason="checks the plain x86 accessors")
def test_ring_mapping_on_a_real_event():
    """ring_pages=1: a 4 KiB data area, an empty ring at first, and after each
    read the kernel sees the new tail: five rounds of stores, 13 KiB of
    samples through 4 KiB rings, and not one sample lost."""
    from perfbp.kernel.sampling import Sampler

    cell = (ctypes.c_long * 1)()
    with Sampler([perfbp.Breakpoint.write(ctypes.addressof(cell), 8)],
                 perfbp.Target.this_thread(), ring_pages=1) as s:
        rings = s._rings
        assert set(rings) == set(system.online_cpus())
        for fd, rg, m in rings.values():
            assert isinstance(m, abi.RingMapping)
            assert m.data_size == 4096 and len(m.data) == 4096
            assert m.data_offset == mmap.PAGESIZE
            assert m.load_tail() == 0 and m.load_head() == 0 and rg.tail == 0
            assert kernel_view(fd, 1) == (0, 0)
            assert "load_head" not in vars(m)  # x86: the plain accessors
        decoded = 0
        moved = 0
        for n in ROUNDS:
            for i in range(n):
                cell[0] = i
            for fd, rg, m in rings.values():
                head = m.load_head()
                chunk = rg.read()
                decoded += sum(1 for _ in iter_records(chunk, s.config))
                assert m.load_tail() == head == rg.tail
                assert kernel_view(fd, 1) == (head, head)
                moved += len(chunk)
        (stats,) = s.stats()
    assert decoded == sum(ROUNDS)
    assert moved > 3 * 4096
    assert (stats.hits, stats.lost) == (sum(ROUNDS), 0)


def test_ring_mapping_refuses_a_bad_page_count():
    with pytest.raises(ValueError):
        abi.RingMapping(-1, 3)


ATOMICS_SCRIPT = r"""
import ctypes, json
import perfbp
from perfbp.kernel import abi
from perfbp.kernel.sampling import Sampler
cell = (ctypes.c_long * 1)()
with Sampler([perfbp.Breakpoint.write(ctypes.addressof(cell), 8)],
             perfbp.Target.this_thread(), ring_pages=1) as s:
    maps = [m for _fd, _r, m in s._rings.values()]
    out = {"compiled": all("load_head" in vars(m) for m in maps),
           "initial_tails": [m.load_tail() for m in maps]}
    decoded = 0
    for n in (50, 51):  # 101 samples, 6464 bytes: the kernel must see the first tail
        for i in range(n):
            cell[0] = i
        decoded += len(s.read())
    (st,) = s.stats()
    # the tail stored by the compiled helper, read back through plain cffi
    out["tails_match"] = all(int(m._page.data_tail) == int(m._page.data_head)
                             == m.load_head() for m in maps)
    out["moved"] = sum(r.bytes_read for _fd, r, _m in s._rings.values())
out.update(loaded=abi._atomics is not None, decoded=decoded, hits=st.hits,
           samples=st.samples, lost=st.lost)
print(json.dumps(out))
"""


@pytest.mark.kernel
def test_compiled_atomics_path(tmp_path):
    """PERFBP_FORCE_ATOMICS=1 builds the acquire/release helper with cffi and
    gcc (arm64's path) and reads the rings through it: 101 stores in two
    rounds through 4 KiB rings (more than one ring's worth, so the kernel must
    see the tail the helper stored), 101 samples, none lost.  TMPDIR is fresh
    so that the helper is really built."""
    env = dict(os.environ, PERFBP_FORCE_ATOMICS="1", TMPDIR=str(tmp_path),
               PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", ATOMICS_SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["compiled"] and out["loaded"]
    assert out["initial_tails"] == [0] * len(system.online_cpus())
    assert out["tails_match"]
    assert (out["hits"], out["samples"], out["decoded"], out["lost"]) == (101, 101, 101, 0)
    assert out["moved"] == 101 * 48  # bytes: header + 5 u64 fields a sample
    assert list(tmp_path.glob(f"perfbp-atomics-{os.getuid()}-*/*.so"))
