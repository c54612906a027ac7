"""Splitting a memory range into debug-register pieces (perfbp.planning.regions).

Two independent oracles, neither taken from perfbp.planning.regions:

* gdb's x86 rule, transcribed from ``x86_handle_nonaligned_watchpoint``
  (gdb/nat/x86-dregs.c): at each address, ``size_try_array[size - 1][addr %
  8]`` with ``size = min(length left, 8)``;
* a brute-force dynamic programme for the fewest aligned 1/2/4/8-byte pieces,
  inside the range, whose union is the range (overlaps allowed, so it also
  shows that overlapping would not save a register).
"""

from __future__ import annotations

import errno
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfbp
from perfbp.planning.regions import split_range

TOP = 1 << 64

# gdb/nat/x86-dregs.c, x86_handle_nonaligned_watchpoint(), 64-bit (max_wp_len 8)
GDB_SIZE_TRY = (
    (1, 1, 1, 1, 1, 1, 1, 1),  # trying size one
    (2, 1, 2, 1, 2, 1, 2, 1),  # size two
    (2, 1, 2, 1, 2, 1, 2, 1),  # size three
    (4, 1, 2, 1, 4, 1, 2, 1),  # size four
    (4, 1, 2, 1, 4, 1, 2, 1),  # size five
    (4, 1, 2, 1, 4, 1, 2, 1),  # size six
    (4, 1, 2, 1, 4, 1, 2, 1),  # size seven
    (8, 1, 2, 1, 4, 1, 2, 1),  # size eight
)


def gdb_split(addr: int, length: int) -> list[tuple[int, int]]:
    """The pieces gdb asks x86 debug registers for."""
    pieces = []
    while length > 0:
        size = GDB_SIZE_TRY[min(length, 8) - 1][addr % 8]
        pieces.append((addr, size))
        addr += size
        length -= size
    return pieces


def fewest_pieces(addr: int, length: int) -> int:
    """Brute force: the fewest naturally aligned 1/2/4/8-byte pieces lying
    inside ``[addr, addr + length)`` whose union is the whole range.

    ``best(b)`` is the answer when ``[addr, b)`` is already covered: the
    leftmost uncovered byte ``b`` needs some piece ``[p, p + s)`` with
    ``p <= b < p + s``; after it ``[addr, p + s)`` is covered.
    """
    end = addr + length

    @lru_cache(maxsize=None)
    def best(b: int) -> int:
        if b >= end:
            return 0
        options = []
        for s in (1, 2, 4, 8):
            p = b - b % s  # the one aligned piece of size s holding b
            if p >= addr and p + s <= end:
                options.append(1 + best(p + s))
        return min(options)  # s == 1 always qualifies

    return best(addr)


# -- the docstring's examples and gdb's rule ------------------------------------------

def test_docstring_examples():
    assert split_range(0x1000, 16) == [(0x1000, 8), (0x1008, 8)]
    assert split_range(0x1001, 8) == [(0x1001, 1), (0x1002, 2), (0x1004, 4), (0x1008, 1)]
    assert split_range(0x1000, 3) == [(0x1000, 2), (0x1002, 1)]


@pytest.mark.parametrize("addr, length, pieces", [
    (0x1001, 8, [(0x1001, 1), (0x1002, 2), (0x1004, 4), (0x1008, 1)]),  # 1+2+4+1
    (0x1000, 16, [(0x1000, 8), (0x1008, 8)]),                            # 8+8
    (0x1000, 3, [(0x1000, 2), (0x1002, 1)]),                             # 2+1
    (0x1000, 8, [(0x1000, 8)]),
    (0x1004, 8, [(0x1004, 4), (0x1008, 4)]),
    (0x1003, 1, [(0x1003, 1)]),
    (0x1006, 4, [(0x1006, 2), (0x1008, 2)]),
    (0x1007, 10, [(0x1007, 1), (0x1008, 8), (0x1010, 1)]),
    (0x1001, 15, [(0x1001, 1), (0x1002, 2), (0x1004, 4), (0x1008, 8)]),
    (0, 1, [(0, 1)]),
])
def test_gdb_x86_rule(addr, length, pieces):
    assert gdb_split(addr, length) == pieces  # the oracle itself
    assert split_range(addr, length) == pieces


def test_top_of_the_address_space():
    assert split_range(TOP - 8, 8) == [(TOP - 8, 8)]
    assert split_range(TOP - 3, 3) == [(TOP - 3, 1), (TOP - 2, 2)]


def test_other_sizes_for_32_bit():
    # i386 watches at most 4 bytes: the same greedy rule over (4, 2, 1)
    assert split_range(0x1000, 8, sizes=(4, 2, 1)) == [(0x1000, 4), (0x1004, 4)]
    assert split_range(0x1001, 8, sizes=(4, 2, 1)) == \
        [(0x1001, 1), (0x1002, 2), (0x1004, 4), (0x1008, 1)]


# -- properties ------------------------------------------------------------------------

ADDRS = st.one_of(st.integers(0, 4096), st.integers(0, TOP - 256),
                  st.integers(0, TOP // 8 - 32).map(lambda a: a * 8 + 7))


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(addr=ADDRS, length=st.integers(1, 200))
def test_pieces_cover_the_range_exactly_with_fewest_aligned_pieces(addr, length):
    pieces = split_range(addr, length)
    assert pieces[0][0] == addr
    for (a, s), (b, _) in zip(pieces, pieces[1:]):
        assert a + s == b, "pieces must be contiguous"
    last_addr, last_size = pieces[-1]
    assert last_addr + last_size == addr + length
    for a, s in pieces:
        assert s in (1, 2, 4, 8)
        assert a % s == 0, f"piece {a:#x}/{s} is not naturally aligned"
    assert len(pieces) == fewest_pieces(addr, length)
    assert pieces == gdb_split(addr, length)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(addr=st.integers(0, 64), length=st.integers(1, 40))
def test_every_small_range_is_minimal(addr, length):
    assert len(split_range(addr, length)) == fewest_pieces(addr, length)


def test_all_small_ranges_exhaustively():
    for addr in range(0, 24):
        for length in range(1, 40):
            pieces = split_range(addr, length)
            assert len(pieces) == fewest_pieces(addr, length), (addr, length, pieces)
            assert pieces == gdb_split(addr, length), (addr, length, pieces)


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("addr, length", [
    (0x1000, 0), (0x1000, -1), (0x1000, -8), (-1, 8), (TOP - 7, 8), (TOP, 1),
])
def test_bad_input_is_invalid_breakpoint(addr, length):
    with pytest.raises(perfbp.InvalidBreakpoint) as info:
        split_range(addr, length)
    assert info.value.errno == errno.EINVAL == 22
    assert isinstance(info.value, OSError)
    assert str(info.value)  # says what was asked
