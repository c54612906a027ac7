"""eBPF instructions built in Python: the builder perfbp's programs are made with.

perfbp loads small programs into the kernel (see :mod:`perfbp.kernel.condition`)
without clang, bcc or libbpf: it writes the instructions itself.  This module
is the instruction set as the kernel's ``include/linux/filter.h`` spells it:
each builder below is named after the filter.h macro it mirrors and takes the
same arguments in the same order, so a program reads like the kernel's own
samples and tests (``BPF_MOV64_IMM(BPF_REG_0, 0)``, ``BPF_EXIT_INSN()``).
The constants are :mod:`perfbp.kernel._uapi`'s (``BPF_ALU64``, ``BPF_JEQ`` ...).

One instruction (``struct bpf_insn``, 8 bytes)::

    u8 code        class | size | mode (loads, stores), class | op | source (ALU, jumps)
    u8 regs        dst_reg in the low 4 bits, src_reg in the high 4 (little-endian)
    s16 off        memory offset, or jump distance in instructions after this one
    s32 imm        immediate; sign-extended to 64 bits by ALU64 and JMP

``BPF_LD_IMM64`` is two instructions: the low 32 bits of the constant in the
first's ``imm``, the high 32 in the second's (whose other fields are zero).
With ``src_reg = BPF_PSEUDO_MAP_VALUE`` the first ``imm`` is a map's file
descriptor and the second an offset into its value: the verifier replaces
them with the address of that byte of the map (an array map of one entry).

Jumps name their target with a label (any ``str`` as ``off``) and
:class:`Assembler` resolves it, after dropping jumps to the next instruction
and instructions no path reaches (the verifier refuses a program that has
one: ``unreachable insn``).  The kernel's verifier remains the final judge of
what is loaded; this module checks only that each field fits its bits.
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple, Union

from ._uapi import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_DW,
    BPF_EXIT,
    BPF_IMM,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MOV,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    BPF_ST,
    BPF_STX,
    BPF_X,
    MAX_BPF_REG,
)

_INSN = struct.Struct("<BBhI")
INSN_SIZE = _INSN.size  # 8

S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1
U64_MAX = (1 << 64) - 1


class Insn(NamedTuple):
    """One ``struct bpf_insn``.

    Attributes:
        code: the opcode.
        dst_reg, src_reg: register numbers, 0-10.
        off: the signed 16-bit offset, or (before :class:`Assembler`
            resolves it) the label a jump goes to.
        imm: the 32-bit immediate, as a signed value (-2**31 .. 2**31-1) or,
            for the halves of ``BPF_LD_IMM64``, as the unsigned bits
            (0 .. 2**32-1).
    """

    code: int
    dst_reg: int = 0
    src_reg: int = 0
    off: "int | str" = 0
    imm: int = 0

    def encode(self) -> bytes:
        """The 8 bytes of the instruction (little-endian, as on x86-64 and arm64).

        Raises:
            ValueError: a field does not fit, or ``off`` is an unresolved label.
        """
        if isinstance(self.off, str):
            raise ValueError(f"jump to label {self.off!r} not resolved: assemble the program")
        if not (0 <= self.code <= 0xff and 0 <= self.dst_reg < MAX_BPF_REG
                and 0 <= self.src_reg < 16):
            raise ValueError(f"bad instruction {self}")
        if not -0x8000 <= self.off <= 0x7fff:
            raise ValueError(f"offset {self.off} does not fit in 16 bits")
        if not S32_MIN <= self.imm <= 0xffffffff:
            raise ValueError(f"immediate {self.imm} does not fit in 32 bits")
        return _INSN.pack(self.code, self.src_reg << 4 | self.dst_reg, self.off,
                          self.imm & 0xffffffff)

    @classmethod
    def decode(cls, raw: bytes, at: int = 0) -> "Insn":
        """The instruction at byte ``at`` of ``raw`` (``imm`` signed)."""
        code, regs, off, imm = _INSN.unpack_from(raw, at)
        return cls(code, regs & 0xf, regs >> 4, off, imm - (1 << 32) if imm >> 31 else imm)


def encode(insns: "Iterable[Insn]") -> bytes:
    """The program's bytes, what ``BPF_PROG_LOAD`` takes as ``insns``."""
    return b"".join(i.encode() for i in insns)


def decode(raw: bytes) -> "list[Insn]":
    """The instructions of encoded bytes (the two halves of a ``BPF_LD_IMM64``
    stay two instructions, as in the kernel)."""
    if len(raw) % INSN_SIZE:
        raise ValueError(f"{len(raw)} bytes is not a whole number of instructions")
    return [Insn.decode(raw, at) for at in range(0, len(raw), INSN_SIZE)]


def _imm32(imm: int) -> int:
    """An immediate that ALU64 and JMP sign-extend: it must be a signed 32-bit value."""
    if not S32_MIN <= imm <= S32_MAX:
        raise ValueError(f"immediate {imm:#x} does not fit a signed 32-bit field (the "
                         f"kernel sign-extends it): load it with BPF_LD_IMM64")
    return imm


# --- the filter.h macros --------------------------------------------------------------

def BPF_ALU64_REG(op: int, dst: int, src: int) -> Insn:
    """``dst op= src`` on 64 bits."""
    return Insn(BPF_ALU64 | op | BPF_X, dst, src, 0, 0)


def BPF_ALU32_REG(op: int, dst: int, src: int) -> Insn:
    """``dst op= src`` on the low 32 bits; the upper 32 of ``dst`` become zero."""
    return Insn(BPF_ALU | op | BPF_X, dst, src, 0, 0)


def BPF_ALU64_IMM(op: int, dst: int, imm: int) -> Insn:
    """``dst op= imm`` on 64 bits (``imm`` sign-extended)."""
    return Insn(BPF_ALU64 | op | BPF_K, dst, 0, 0, _imm32(imm))


def BPF_ALU32_IMM(op: int, dst: int, imm: int) -> Insn:
    """``dst op= imm`` on the low 32 bits."""
    return Insn(BPF_ALU | op | BPF_K, dst, 0, 0, _imm32(imm))


def BPF_MOV64_REG(dst: int, src: int) -> Insn:
    """``dst = src``."""
    return Insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)


def BPF_MOV32_REG(dst: int, src: int) -> Insn:
    """``dst = (u32) src``."""
    return Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)


def BPF_MOV64_IMM(dst: int, imm: int) -> Insn:
    """``dst = imm`` (sign-extended)."""
    return Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, _imm32(imm))


def BPF_MOV32_IMM(dst: int, imm: int) -> Insn:
    """``dst = (u32) imm``."""
    return Insn(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, _imm32(imm))


def BPF_LD_IMM64_RAW(dst: int, src: int, imm: int) -> "tuple[Insn, Insn]":
    """The two instructions of a 64-bit load, ``src`` saying what ``imm`` means
    (0: a constant; ``BPF_PSEUDO_MAP_FD``: a map's fd)."""
    if not 0 <= imm <= U64_MAX:
        raise ValueError(f"{imm} does not fit in 64 bits")
    return (Insn(BPF_LD | BPF_DW | BPF_IMM, dst, src, 0, imm & 0xffffffff),
            Insn(0, 0, 0, 0, imm >> 32))


def BPF_LD_IMM64(dst: int, imm: int) -> "tuple[Insn, Insn]":
    """``dst = imm``, any 64-bit constant (given as 0 .. 2**64-1)."""
    return BPF_LD_IMM64_RAW(dst, 0, imm)


def BPF_LD_MAP_FD(dst: int, map_fd: int) -> "tuple[Insn, Insn]":
    """``dst =`` the map ``map_fd`` (for helpers such as ``bpf_map_lookup_elem``)."""
    return BPF_LD_IMM64_RAW(dst, BPF_PSEUDO_MAP_FD, map_fd)


def BPF_LD_MAP_VALUE(dst: int, map_fd: int, off: int) -> "tuple[Insn, Insn]":
    """``dst =`` the address of byte ``off`` of the value of ``map_fd``, an
    array map of one entry (no lookup, no NULL check: the verifier knows it)."""
    return (Insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_VALUE, 0, map_fd),
            Insn(0, 0, 0, 0, off))


def BPF_LDX_MEM(size: int, dst: int, src: int, off: int) -> Insn:
    """``dst = *(size *)(src + off)``, zero-extended."""
    return Insn(BPF_LDX | size | BPF_MEM, dst, src, off, 0)


def BPF_STX_MEM(size: int, dst: int, src: int, off: int) -> Insn:
    """``*(size *)(dst + off) = src``."""
    return Insn(BPF_STX | size | BPF_MEM, dst, src, off, 0)


def BPF_ST_MEM(size: int, dst: int, off: int, imm: int) -> Insn:
    """``*(size *)(dst + off) = imm``."""
    return Insn(BPF_ST | size | BPF_MEM, dst, 0, off, _imm32(imm))


def BPF_ATOMIC_OP(size: int, op: int, dst: int, src: int, off: int) -> Insn:
    """An atomic read-modify-write of ``*(size *)(dst + off)`` with ``src``:
    ``op`` is ``BPF_ADD`` (``lock *(u64 *)(dst + off) += src``), ``BPF_AND``,
    ``BPF_OR``, ``BPF_XOR``, optionally ``| BPF_FETCH``; ``size`` BPF_W or BPF_DW."""
    return Insn(BPF_STX | size | BPF_ATOMIC, dst, src, off, op)


def BPF_JMP_REG(op: int, dst: int, src: int, off: "int | str") -> Insn:
    """``if dst op src goto off`` (64-bit compare; unsigned for JGT, JLT ...)."""
    return Insn(BPF_JMP | op | BPF_X, dst, src, off, 0)


def BPF_JMP_IMM(op: int, dst: int, imm: int, off: "int | str") -> Insn:
    """``if dst op imm goto off`` (``imm`` sign-extended to 64 bits first)."""
    return Insn(BPF_JMP | op | BPF_K, dst, 0, off, _imm32(imm))


def BPF_JMP32_REG(op: int, dst: int, src: int, off: "int | str") -> Insn:
    """``if (u32) dst op (u32) src goto off``."""
    return Insn(BPF_JMP32 | op | BPF_X, dst, src, off, 0)


def BPF_JMP32_IMM(op: int, dst: int, imm: int, off: "int | str") -> Insn:
    """``if (u32) dst op imm goto off``."""
    return Insn(BPF_JMP32 | op | BPF_K, dst, 0, off, _imm32(imm))


def BPF_JMP_A(off: "int | str") -> Insn:
    """``goto off``."""
    return Insn(BPF_JMP | BPF_JA, 0, 0, off, 0)


def BPF_EMIT_CALL(func_id: int) -> Insn:
    """``call`` helper ``func_id`` (``enum bpf_func_id``: ``BPF_FUNC_*``);
    arguments in r1-r5, result in r0, r1-r5 clobbered.  (filter.h takes the
    kernel function and subtracts ``__bpf_call_base``; user space gives the id.)"""
    return Insn(BPF_JMP | BPF_CALL, 0, 0, 0, func_id)


def BPF_EXIT_INSN() -> Insn:
    """``exit``: return r0."""
    return Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)


# --- assembling: labels resolved --------------------------------------------------------

class Label(NamedTuple):
    """A place in an :class:`Assembler`'s program that jumps may name."""

    name: str


class _Wide(NamedTuple):
    """The two instructions of a ``BPF_LD_IMM64``, kept together."""

    first: Insn
    second: Insn


Item = Union[Insn, _Wide, Label]


def is_jump(insn: Insn) -> bool:
    """A ``BPF_JMP``/``BPF_JMP32`` instruction whose ``off`` is a jump
    (not a call or an exit)."""
    cls, op = insn.code & 0x07, insn.code & 0xf0
    return cls in (BPF_JMP, BPF_JMP32) and op not in (BPF_CALL, BPF_EXIT)


def _goes_on(insn: Insn) -> bool:
    """Whether the next instruction may run after ``insn`` (not after an exit
    or an unconditional jump)."""
    return insn.code not in (BPF_JMP | BPF_EXIT, BPF_JMP | BPF_JA)


class Assembler:
    """A program under construction: instructions, and labels for jumps.

    Example::

        asm = Assembler()
        asm.emit(BPF_JMP_IMM(BPF_JEQ, BPF_REG_1, 0, "zero"),
                 BPF_MOV64_IMM(BPF_REG_0, 1),
                 BPF_EXIT_INSN())
        asm.label("zero")
        asm.emit(BPF_MOV64_IMM(BPF_REG_0, 0), BPF_EXIT_INSN())
        insns = asm.assemble()
    """

    def __init__(self) -> None:
        self._items: "list[Item]" = []
        self._labels: "set[str]" = set()
        self._made = 0

    def emit(self, *insns: "Insn | tuple[Insn, Insn]") -> None:
        """Append instructions (a ``BPF_LD_IMM64`` pair as one argument)."""
        for insn in insns:
            self._items.append(insn if isinstance(insn, Insn) else _Wide(*insn))

    def label(self, name: str) -> None:
        """Bind ``name`` to the next instruction emitted."""
        if name in self._labels:
            raise ValueError(f"label {name!r} bound twice")
        self._labels.add(name)
        self._items.append(Label(name))

    def new_label(self, hint: str = "L") -> str:
        """A label name not used yet (bind it with :meth:`label`)."""
        self._made += 1
        return f"{hint}.{self._made}"

    def assemble(self) -> "list[Insn]":
        """The instructions with every label resolved to an offset, after
        dropping jumps to the very next instruction and instructions no path
        from the first reaches.

        Raises:
            ValueError: a jump names a label never bound, or the program is
                empty.
        """
        code = list(self._items)
        while True:  # dropping one may make the other find more
            before = len(code)
            code = self._reachable(self._without_jumps_to_next(code))
            if len(code) == before:
                break
        if not code:
            raise ValueError("the program has no instructions")
        at: "dict[str, int]" = {}
        slot = 0
        for item in code:
            if isinstance(item, Label):
                at[item.name] = slot
            else:
                slot += 2 if isinstance(item, _Wide) else 1
        out: "list[Insn]" = []
        for item in code:
            if isinstance(item, Label):
                continue
            if isinstance(item, _Wide):
                out.extend(item)
            elif isinstance(item.off, str):
                out.append(item._replace(off=at[item.off] - len(out) - 1))
            else:
                out.append(item)
        return out

    def _check_labels(self, items: "list[Item]") -> "dict[str, int]":
        where = {item.name: i for i, item in enumerate(items) if isinstance(item, Label)}
        for item in items:
            if isinstance(item, Insn) and isinstance(item.off, str) and item.off not in where:
                raise ValueError(f"jump to label {item.off!r}, which is never bound")
        return where

    def _without_jumps_to_next(self, items: "list[Item]") -> "list[Item]":
        while True:
            where = self._check_labels(items)
            drop = None
            for i, item in enumerate(items):
                if (isinstance(item, Insn) and item.code == BPF_JMP | BPF_JA
                        and isinstance(item.off, str)
                        and all(isinstance(x, Label) for x in items[i + 1:where[item.off]])
                        and where[item.off] > i):
                    drop = i
                    break
            if drop is None:
                return items
            del items[drop]

    def _reachable(self, items: "list[Item]") -> "list[Item]":
        where = self._check_labels(items)
        seen: "set[int]" = set()
        todo = [0]
        while todo:
            i = todo.pop()
            while i < len(items) and i not in seen:
                seen.add(i)
                item = items[i]
                if isinstance(item, Insn):
                    if is_jump(item):
                        target = item.off if isinstance(item.off, str) else None
                        if target is None:
                            raise ValueError(f"jump {item} has a numeric offset: use a label")
                        todo.append(where[target])
                    if not _goes_on(item):
                        break
                i += 1
        return [item for i, item in enumerate(items) if i in seen]
