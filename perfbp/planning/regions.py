"""Splitting a memory range into what the debug registers can watch.

x86 debug registers watch 1, 2, 4 or 8 naturally aligned bytes.  A longer or
misaligned range is covered by several registers, as gdb does on x86
(``x86_handle_nonaligned_watchpoint``): at each address take the largest
aligned piece that fits in what is left.  That greedy choice is minimal: a
piece starting at ``a`` can be no larger than the alignment of ``a`` allows,
and a larger-than-needed piece would watch bytes outside the range.  Pure
Python.
"""

from __future__ import annotations

from ..errors import InvalidBreakpoint

SIZES = (8, 4, 2, 1)
#: the longest range split at all: 64 registers' worth, far more than any
#: machine has (x86: 4), so the answer to a longer one needs no expansion
MAX_RANGE = 512


def split_range(addr: int, length: int, sizes: "tuple[int, ...]" = SIZES) -> "list[tuple[int, int]]":
    """The fewest naturally aligned ``(addr, length)`` pieces of 1, 2, 4 or 8
    bytes that cover ``[addr, addr + length)`` exactly.

    Examples::

        split_range(0x1000, 16) == [(0x1000, 8), (0x1008, 8)]
        split_range(0x1001, 8)  == [(0x1001, 1), (0x1002, 2), (0x1004, 4), (0x1008, 1)]
        split_range(0x1000, 3)  == [(0x1000, 2), (0x1002, 1)]

    Raises:
        InvalidBreakpoint: a length below 1 or above :data:`MAX_RANGE`, or an
            address outside 64 bits.
    """
    if length < 1:
        raise InvalidBreakpoint(f"cannot watch {length} bytes: the length must be 1 or more")
    if length > MAX_RANGE:
        raise InvalidBreakpoint(
            f"cannot watch {length:,} bytes: that takes at least {-(-length // max(sizes)):,} "
            f"debug registers (one per {max(sizes)} bytes at most) and a thread has a few "
            f"(x86: 4); watch up to {MAX_RANGE} bytes, or the words that matter")
    if addr < 0 or addr + length > 1 << 64:
        raise InvalidBreakpoint(f"range {addr:#x}/{length} is not inside the 64-bit address space")
    pieces = []
    end = addr + length
    a = addr
    while a < end:
        for size in sizes:
            if a % size == 0 and a + size <= end:
                pieces.append((a, size))
                a += size
                break
        else:
            raise InvalidBreakpoint(f"{a:#x} cannot be covered with pieces of {sizes} bytes")
    return pieces
