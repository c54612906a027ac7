"""The architectures' breakpoint rules, as data, and the validation they imply.

Each :class:`ArchRules` mirrors one ``arch/*/kernel/hw_breakpoint.c``:
``hw_breakpoint_arch_parse`` (lengths, alignment, types) and
``arch_check_bp_in_kernelspace`` (the user/kernel split), plus the slot counts
of ``hw_breakpoint_slots()``.  :func:`validate` checks a request against them
*before* any syscall, so the user gets the rule by name instead of a bare
EINVAL.  Pure Python; no kernel needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._uapi import HW_BREAKPOINT_R, HW_BREAKPOINT_RW, HW_BREAKPOINT_W, HW_BREAKPOINT_X
from ..errors import InvalidBreakpoint

#: Access names as perf spells them, and the ``bp_type`` each one means.
ACCESS_TYPES = {
    "r": HW_BREAKPOINT_R,
    "w": HW_BREAKPOINT_W,
    "rw": HW_BREAKPOINT_RW,
    "x": HW_BREAKPOINT_X,
}
TYPE_NAMES = {v: k for k, v in ACCESS_TYPES.items()}

PAGE_SIZE = 4096


@dataclass(frozen=True)
class ArchRules:
    """What one architecture's kernel accepts for a hardware breakpoint.

    Attributes:
        name: ``uname -m`` spelling.
        data_lengths: the ``bp_len`` values a data watch may have.
        exec_length: the ``bp_len`` an execute breakpoint must have.
        aligned: data watches must be naturally aligned (``addr % len == 0``).
        read_only: whether ``HW_BREAKPOINT_R`` alone is supported.
        task_size_max: first address the kernel treats as kernel space.
        data_slots / inst_slots: ``hw_breakpoint_slots(TYPE_DATA / TYPE_INST)``.
        shared_slots: data and execute breakpoints draw on one pool
            (``CONFIG_HAVE_MIXED_BREAKPOINTS_REGS``).
        sample_regs_user: the user registers a sample carries to unwind its
            stack from (``attr.sample_regs_user``, one bit per
            ``PERF_REG_*``): perf's ``PERF_REGS_MASK``, every general
            register (``tools/perf/arch/*/include/perf_regs.h``).
    """

    name: str
    data_lengths: tuple[int, ...]
    exec_length: int
    aligned: bool
    read_only: bool
    task_size_max: int
    data_slots: int
    inst_slots: int
    shared_slots: bool
    sample_regs_user: int


X86_64 = ArchRules(
    name="x86_64",
    data_lengths=(1, 2, 4, 8),
    exec_length=8,  # sizeof(long): arch/x86 requires bp_len == sizeof(long) for X
    aligned=True,
    read_only=False,
    task_size_max=(1 << 47) - PAGE_SIZE,
    data_slots=4,
    inst_slots=4,
    shared_slots=True,
    # PERF_REG_X86_AX .. FLAGS, CS, SS and R8 .. R15: all but DS, ES, FS, GS
    # (bits 12-15), which x86_64's perf_reg_validate refuses
    sample_regs_user=0xFF0FFF,
)

ARM64 = ArchRules(
    name="aarch64",
    data_lengths=(1, 2, 3, 4, 5, 6, 7, 8),
    exec_length=4,
    aligned=False,
    read_only=True,
    task_size_max=1 << 48,
    data_slots=4,
    inst_slots=6,
    shared_slots=False,
    sample_regs_user=(1 << 33) - 1,  # PERF_REG_ARM64_X0 .. PC
)

KNOWN = {"x86_64": X86_64, "aarch64": ARM64}


_CURRENT = KNOWN.get(os.uname().machine, X86_64)


def current() -> ArchRules:
    """The rules of the machine perfbp runs on (x86-64 rules when unknown)."""
    return _CURRENT


def is_kernel_address(address: int, length: int, rules: ArchRules) -> bool:
    """``arch_check_bp_in_kernelspace``: does any byte lie in kernel space?"""
    return address >= rules.task_size_max or address + max(length, 1) - 1 >= rules.task_size_max


_FAST_DATA = {(rules.name, a, n) for rules in KNOWN.values() if rules.aligned
              for a in ("w", "rw") for n in rules.data_lengths}


def validate(access: str, address: int, length: int, rules: ArchRules) -> None:
    """Check a breakpoint request against ``rules`` before any syscall.

    Raises:
        InvalidBreakpoint: naming the rule broken and what to do instead.
    """
    # the common case first, in one set lookup and two comparisons: an
    # aligned write or read/write watch of an allowed length
    if (rules.name, access, length) in _FAST_DATA and not address % length \
            and 0 <= address <= (1 << 64) - length:
        return
    if access not in ACCESS_TYPES:
        raise InvalidBreakpoint(
            f"unknown access {access!r}: use w (write), rw (read or write), "
            f"x (execute) or r (read)", address=address)
    if not 0 <= address < 1 << 64:
        raise InvalidBreakpoint(f"address {address:#x} is not a 64-bit address",
                                address=address)
    if access == "x":
        if length != rules.exec_length:
            raise InvalidBreakpoint(
                f"an execute breakpoint on {rules.name} must have length "
                f"{rules.exec_length} (sizeof(long)), not {length}: drop the /LEN "
                f"or write /{rules.exec_length}", address=address, length=length)
        return
    if access == "r" and not rules.read_only:
        raise InvalidBreakpoint(
            f"{rules.name} has no read-only watchpoints (the debug registers "
            f"trap on write or on read-or-write): use rw (read_write) instead, "
            f"which also counts writes", address=address, length=length)
    if length not in rules.data_lengths:
        allowed = ", ".join(str(n) for n in rules.data_lengths)
        raise InvalidBreakpoint(
            f"length {length} cannot be watched on {rules.name}: the debug "
            f"registers take {allowed} bytes; watch a larger or odd range as "
            f"several aligned pieces (for example /{_largest_fit(address, length, rules)})",
            address=address, length=length)
    if rules.aligned and address % length:
        down = address - address % length
        raise InvalidBreakpoint(
            f"address {address:#x} is not aligned to the length {length}: "
            f"{rules.name} watches only naturally aligned ranges; watch "
            f"{down:#x}/{length}, or a smaller length that divides the address "
            f"(/{_largest_fit(address, length, rules)})",
            address=address, length=length)
    if address + length - 1 >= 1 << 64:
        raise InvalidBreakpoint(f"range {address:#x}/{length} wraps past the end of memory",
                                address=address, length=length)


def _largest_fit(address: int, length: int, rules: ArchRules) -> int:
    """The largest allowed length that is aligned at ``address`` and <= length."""
    for n in sorted(rules.data_lengths, reverse=True):
        if n <= max(length, 1) and (not rules.aligned or address % n == 0):
            return n
    return 1
