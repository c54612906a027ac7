"""Call stacks from a sample's user registers and stack bytes, unwound
with each object's call frame information; and whether a frame-pointer
stack can be true.

A sample of ``--call-graph dwarf`` holds the user registers at the hit
(PERF_SAMPLE_REGS_USER) and a copy of the user stack from the stack pointer
up (PERF_SAMPLE_STACK_USER).  :class:`Unwinder` walks it as a debugger
does: for the instruction of each frame it finds the row of CFI that the
compiler wrote for that address (``.eh_frame``, found through the
``.eh_frame_hdr`` search table, else ``.debug_frame``), which says how to
compute the frame's CFA (the caller's stack pointer) and where the return
address and the saved registers are; the return address is the next
frame's instruction.  pyelftools decodes the CFI (one FDE at a time: a
library's whole ``.eh_frame`` takes it a second); the rows are compiled
into small tuples and kept per object and per instruction, so that a
recording of many samples of few stacks costs a few dictionary lookups a
frame.  x86-64 only: the register numbers are the psABI's.

:func:`broken_frame` answers the other question: in a stack the kernel
walked by frame pointers, is a caller's frame a return address at all
(inside a mapped object, just after a call instruction)?  In code built
without frame pointers the walk follows whatever rbp holds, and what it
finds is not.

Pure Python over files; no kernel.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from functools import lru_cache
from typing import Optional

from ..kernel.system import open_regular
from .elf import KERNEL_START, ElfReader, Symbolizer, load_object

#: The x86-64 registers in the order of perf's ``PERF_REG_X86_*`` bits
#: (``arch/x86/include/uapi/asm/perf_regs.h``): a sample's registers come in
#: this order, those of ``sample_regs_user`` only.
PERF_REGS_X86_64 = ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "ip", "flags", "cs",
                    "ss", "ds", "es", "fs", "gs", "r8", "r9", "r10", "r11", "r12", "r13",
                    "r14", "r15")
#: The DWARF register numbers of the x86-64 psABI (figure 3.36): 0 to 15,
#: and 16, the return address (the ip).
DWARF_REGS_X86_64 = ("ax", "dx", "cx", "bx", "si", "di", "bp", "sp", "r8", "r9", "r10",
                     "r11", "r12", "r13", "r14", "r15", "ip")
SP, RA = 7, 16
_RBP = 6  # the frame pointer
_U64 = struct.Struct("<Q")
#: frames at most, as perf's PERF_MAX_STACK_DEPTH
MAX_FRAMES = 127

# a compiled register rule's kinds (DWARF 5, 6.4.1)
_AT, _VAL, _REG, _UNDEF, _EXPR, _VAL_EXPR = range(6)


def regs_index(sample_regs_user: int) -> "tuple[Optional[int], ...]":
    """For each DWARF register (0 to 16), its place among a sample's
    registers taken with the mask ``sample_regs_user``, or None."""
    places = [bit for bit in range(len(PERF_REGS_X86_64)) if sample_regs_user >> bit & 1]
    out = []
    for name in DWARF_REGS_X86_64:
        bit = PERF_REGS_X86_64.index(name)
        out.append(places.index(bit) if bit in places else None)
    return tuple(out)


class FrameTable:
    """The CFI of one ELF object: :meth:`step` gives the compiled rule row
    for a link-time address.

    ``.eh_frame`` is searched through ``.eh_frame_hdr``'s sorted table
    (the FDE's start and address), and only that FDE is decoded; an object
    without the table has its ``.eh_frame`` decoded whole, once; addresses
    no FDE there covers are looked up in ``.debug_frame`` (decoded whole,
    once, when first needed).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._steps: dict = {}
        self._fdes: dict = {}  # .eh_frame offset -> FDE; "eh", "debug" -> every FDE
        self._eh: "tuple[bytes, int] | None" = None  # its bytes and address
        self._eh_info = None  # pyelftools' reader of .eh_frame
        self._starts: "list[int]" = []  # .eh_frame_hdr's table: FDE starts
        self._fde_at: "list[int]" = []  # and their offsets in .eh_frame
        with ElfReader(path) as elf:
            self.little = elf.order == "<"
            self.wide = elf.elfclass == 64
            eh, hdr = elf.section(".eh_frame"), elf.section(".eh_frame_hdr")
            if eh is not None and eh.sh_size:
                self._eh = (elf.data(eh), eh.sh_addr)
                if hdr is not None:
                    self._search_table(elf.data(hdr), hdr.sh_addr, eh.sh_addr)
            dbg = elf.section(".debug_frame")
            self._debug_raw = elf.data(dbg) if dbg is not None else b""
        self._eh_whole = self._eh is not None and not self._starts

    def _search_table(self, hdr: bytes, hdr_addr: int, eh_addr: int) -> None:
        """Read ``.eh_frame_hdr``'s table: version 1, then the encodings of
        the .eh_frame pointer, the count and the table; only the encodings
        every linker writes (``pcrel|sdata4``, ``udata4``,
        ``datarel|sdata4``), else the table is not used."""
        if len(hdr) < 12 or hdr[0] != 1 or hdr[1:4] != b"\x1b\x03\x3b" or not self.little:
            return
        (count,) = struct.unpack_from("<I", hdr, 8)
        if 12 + 8 * count > len(hdr):
            return
        pairs = struct.unpack_from(f"<{2 * count}i", hdr, 12)
        self._starts = [hdr_addr + x for x in pairs[0::2]]
        self._fde_at = [hdr_addr + x - eh_addr for x in pairs[1::2]]

    def step(self, vaddr: int):
        """The compiled CFI row of ``vaddr`` (cached), or None: no FDE
        covers it, or its CFI cannot be read."""
        try:
            return self._steps[vaddr]
        except KeyError:
            pass
        if len(self._steps) > 1 << 16:
            self._steps.clear()
        try:
            found = self._lookup(vaddr)
        except Exception:  # damaged CFI (pyelftools raises its own kinds): no row
            found = None
        self._steps[vaddr] = found
        return found

    def _lookup(self, vaddr: int):
        fde = None
        if self._starts:
            i = bisect.bisect_right(self._starts, vaddr) - 1
            if i >= 0:
                fde = self._fde(self._fde_at[i])
        elif self._eh_whole:
            fde = _covering(self._whole("eh"), vaddr)
        if fde is None or not _covers(fde, vaddr):
            fde = _covering(self._whole("debug"), vaddr) if self._debug_raw else None
        if fde is None:
            return None
        return _row_step(fde, vaddr, self._expr_parser(fde))

    def _cfi(self, which: str):
        from elftools.dwarf.callframe import CallFrameInfo
        from elftools.dwarf.structs import DWARFStructs

        structs = DWARFStructs(little_endian=self.little, dwarf_format=32,
                               address_size=8 if self.wide else 4)
        data, addr = self._eh if which == "eh" else (self._debug_raw, 0)
        return CallFrameInfo(io.BytesIO(data), len(data), addr, structs,
                             for_eh_frame=which == "eh")

    def _fde(self, offset: int):
        """The FDE at ``offset`` in .eh_frame, decoded alone."""
        found = self._fdes.get(offset)
        if found is None:
            if self._eh_info is None:
                self._eh_info = self._cfi("eh")
            # pyelftools reads a whole section at once; its reader of one
            # entry (and of its CIE) is what lets a lookup decode one FDE
            found = self._fdes[offset] = self._eh_info._parse_entry_at(offset)
        return found

    def _whole(self, which: str) -> "tuple[list[int], list]":
        """Every FDE of .eh_frame or .debug_frame, sorted: ``(starts, FDEs)``."""
        cached = self._fdes.get(which)
        if cached is None:
            fdes = sorted((e for e in self._cfi(which).get_entries() if _covers(e, None)),
                          key=lambda e: e.header.initial_location)
            cached = self._fdes[which] = ([f.header.initial_location for f in fdes], fdes)
        return cached

    def _expr_parser(self, fde):
        from elftools.dwarf.dwarf_expr import DWARFExprParser

        return DWARFExprParser(fde.structs)


def _covers(entry, vaddr: "int | None") -> bool:
    """Whether ``entry`` is an FDE whose range holds ``vaddr`` (any FDE
    for None)."""
    h = getattr(entry, "header", None)
    if h is None or "initial_location" not in h:
        return False
    return vaddr is None or h.initial_location <= vaddr < h.initial_location + h.address_range


def _covering(table: "tuple[list[int], list]", vaddr: int):
    starts, fdes = table
    i = bisect.bisect_right(starts, vaddr) - 1
    return fdes[i] if i >= 0 and _covers(fdes[i], vaddr) else None


def _row_step(fde, vaddr: int, parser):
    """The row of ``fde``'s table that holds at ``vaddr``, compiled:
    ``(cfa, rules, reads, sets)``, ``cfa`` being ``(register, offset)`` or
    ``(None, ops)``; ``rules`` ``(register, kind, argument)`` for every
    register the row gives a rule (the return address's included:
    undefined when the row has none, which ends the stack); ``reads`` the
    registers the row's rules read, ``sets`` those it gives values (the
    stack pointer too: the CFA is the caller's)."""
    table = fde.get_decoded().table
    row = None
    for line in table:
        if line["pc"] > vaddr:
            break
        row = line
    if row is None:
        return None
    cfa = row["cfa"]
    if cfa.expr is not None:
        cfa_rule = (None, parser.parse_expr(cfa.expr))
    elif cfa.reg is None:
        return None
    else:
        cfa_rule = (cfa.reg, cfa.offset)
    ra = fde.cie.header.get("return_address_register", RA)
    rules = []
    kinds = {"OFFSET": _AT, "VAL_OFFSET": _VAL, "REGISTER": _REG, "UNDEFINED": _UNDEF,
             "EXPRESSION": _EXPR, "VAL_EXPRESSION": _VAL_EXPR}
    for reg, rule in row.items():
        kind = kinds.get(getattr(rule, "type", None))
        if not isinstance(reg, int) or kind is None:
            continue  # pc, cfa; same value; architectural
        arg = parser.parse_expr(rule.arg) if kind in (_EXPR, _VAL_EXPR) else rule.arg
        rules.append((RA if reg == ra else reg, kind, arg))
    if not any(reg == RA for reg, _k, _a in rules):
        rules.append((RA, _UNDEF, None))
    # the registers the row reads, and those it sets (the CFA is the SP)
    reads = {cfa.reg} if cfa.expr is None else _expr_regs(cfa_rule[1])
    for _reg, kind, arg in rules:
        if kind == _REG:
            reads.add(arg)
        elif kind in (_EXPR, _VAL_EXPR):
            reads |= _expr_regs(arg)
    sets = frozenset({reg for reg, _k, _a in rules} | {SP})
    return cfa_rule, tuple(rules), frozenset(reads), sets


def _expr_regs(ops) -> "set[int]":
    """The registers a DWARF expression reads (its DW_OP_breg*)."""
    out = set()
    for op in ops:
        if op.op_name == "DW_OP_bregx":
            out.add(op.args[0])
        elif op.op_name.startswith("DW_OP_breg"):
            out.add(int(op.op_name[10:]))
    return out


class _Stack:
    """The stack bytes of one sample, from the stack pointer ``base`` up;
    and the words read, as ``(owner, offset)``: the register whose rule
    read it (``owner``, set before each rule; None for the CFA's)."""

    __slots__ = ("data", "base", "reads", "owner")

    def __init__(self, data: bytes, base: int) -> None:
        self.data, self.base = data, base
        self.reads: "list[tuple[int | None, int]]" = []
        self.owner: "int | None" = None

    def read(self, addr: int) -> "int | None":
        off = addr - self.base
        if 0 <= off <= len(self.data) - 8:
            self.reads.append((self.owner, off))
            return _U64.unpack_from(self.data, off)[0]
        return None


def _evaluate(ops, regs: dict, stack: _Stack, push: "int | None" = None) -> "int | None":
    """A DWARF expression of CFI (the stack machine of DWARF 5, 2.5), for
    the operations compilers write there (PLT entries, signal frames,
    realigned stacks): None when it reads what the sample does not hold."""
    st = [] if push is None else [push]
    for op in ops:
        name, args = op.op_name, op.args
        if name.startswith("DW_OP_lit"):
            st.append(int(name[9:]))
        elif name.startswith("DW_OP_breg") and name[10:].isdigit():
            base = regs.get(int(name[10:]))
            if base is None:
                return None
            st.append(base + args[0])
        elif name.startswith("DW_OP_const"):
            st.append(args[0])
        elif name == "DW_OP_bregx":
            base = regs.get(args[0])
            if base is None:
                return None
            st.append(base + args[1])
        elif name == "DW_OP_deref" and st:
            value = stack.read(st.pop())
            if value is None:
                return None
            st.append(value)
        elif name == "DW_OP_plus_uconst" and st:
            st.append(st.pop() + args[0])
        elif name in _BINARY and len(st) >= 2:
            b, a = st.pop(), st.pop()
            st.append(_BINARY[name](a, b) & 0xFFFFFFFFFFFFFFFF)
        else:
            return None
    return st[-1] if st else None


_BINARY = {"DW_OP_plus": lambda a, b: a + b, "DW_OP_minus": lambda a, b: a - b,
           "DW_OP_and": lambda a, b: a & b, "DW_OP_or": lambda a, b: a | b,
           "DW_OP_shl": lambda a, b: a << b, "DW_OP_shr": lambda a, b: a >> b,
           "DW_OP_ge": lambda a, b: int(a >= b), "DW_OP_gt": lambda a, b: int(a > b),
           "DW_OP_lt": lambda a, b: int(a < b), "DW_OP_le": lambda a, b: int(a <= b),
           "DW_OP_mul": lambda a, b: a * b}


@lru_cache(maxsize=256)
def frame_table(path: str) -> "FrameTable | None":
    """The CFI of the ELF object at ``path`` (None: missing, not ELF)."""
    try:
        return FrameTable(path)
    except Exception:  # unreadable or damaged: its frames end the stack
        return None


class Unwinder:
    """Unwinds the user stacks of a recording's samples through the
    mappings its records replayed (a :class:`~perfbp.symbols.elf.Symbolizer`).

    Args:
        sym: the mappings of every process.
        sample_regs_user: the mask the samples' registers were taken with.
    """

    def __init__(self, sym: Symbolizer, sample_regs_user: int) -> None:
        self.sym = sym
        self.index = regs_index(sample_regs_user)
        self._steps: dict = {}  # (pid, address looked up) -> compiled row or None
        #: (pid, ip, sp, stack bytes) -> what the last unwind from there
        #: read and found: ``(registers, words, chain)``
        self._last: dict = {}

    def unwind(self, pid: int, regs: "tuple[int, ...]", stack: bytes) -> "tuple[int, ...]":
        """The instruction of every frame, innermost first: the sample's
        ip, then each return address, as far as the CFI and the stack bytes
        go (to the outermost frame, whose return address the CFI leaves
        undefined, or to where the copy of the stack ends).

        A loop's samples mostly start from one ip and stack pointer, and
        their stacks differ only in words that do not decide the chain
        (locals, saved registers no rule reads): the last unwind from each
        (ip, stack pointer) is kept with the sample's registers and stack
        words it depended on (return addresses, and what a CFA was
        computed from), and a sample that holds the same ones has its
        chain at the cost of one comparison in C."""
        index = self.index
        if index[RA] is None or index[SP] is None or max(index[RA], index[SP]) >= len(regs):
            return ()
        key = (pid, regs[index[RA]], regs[index[SP]], len(stack))
        last = self._last.get(key)
        if last is not None:
            used, words, chain = last
            if all(regs[index[reg]] == value for reg, value in used) \
                    and words[0].unpack_from(stack) == words[1]:
                return chain
        return self._unwind(key, regs, stack)

    def _unwind(self, key, regs, stack: bytes) -> "tuple[int, ...]":
        pid, ip, sp = key[:3]
        r = {d: regs[i] for d, i in enumerate(self.index) if i is not None and i < len(regs)}
        mem = _Stack(stack, sp)
        chain = [ip]
        # what the chain depends on: the sample's registers that a rule
        # read while they still held the sample's value, and the stack
        # words read for a return address, for a CFA, or for a register a
        # later rule read (``pending``: those read, not yet needed)
        fresh, used, needed, pending = set(r), set(), [], {}
        lookup = ip  # the first frame's ip is the instruction itself
        while len(chain) < MAX_FRAMES:
            step = self._steps.get((pid, lookup), False)
            if step is False:
                step = self._steps[(pid, lookup)] = _row_at(self.sym, pid, lookup)
            if step is None:
                break
            for reg in step[2]:
                if reg in fresh:
                    used.add(reg)
                needed.extend(pending.pop(reg, ()))
            fresh -= step[3]
            for reg in step[3]:
                pending.pop(reg, None)
            mem.reads = []
            r = _frame(step, r, mem)
            for owner, off in mem.reads:
                if owner is None or owner == RA:
                    needed.append(off)
                else:
                    pending.setdefault(owner, []).append(off)
            if r is None:
                break
            ip = r.get(RA)
            if not ip:
                break  # the outermost frame (_start, a thread's start)
            chain.append(ip)
            lookup = ip - 1  # the call, not what follows it (a noreturn call ends a function)
        found = tuple(chain)
        words = _words(needed)
        if words is not None:
            if len(self._last) > 1 << 14:
                self._last.clear()
            self._last[key] = (tuple((reg, r0) for reg, r0 in sorted(
                (reg, regs[self.index[reg]]) for reg in used - {SP, RA})),
                (words, words.unpack_from(stack)), found)
        return found


def _row_at(sym: Symbolizer, pid: int, ip: int):
    """The compiled CFI row for the address ``ip`` of process ``pid``
    (None: in no object, or in one without CFI for it)."""
    space = sym.spaces.get(pid)
    m = space.find(ip) if space is not None else None
    if m is None or not m.path.startswith("/"):
        return None
    obj = load_object(m.path)
    table = frame_table(m.path) if obj is not None else None
    vaddr = obj.vaddr_of_offset(ip - m.start + m.pgoff) if table is not None else None
    return table.step(vaddr) if vaddr is not None else None


@lru_cache(maxsize=1024)
def _words_at(offsets: "tuple[int, ...]") -> struct.Struct:
    fmt, at = "<", 0
    for off in offsets:
        fmt += f"{off - at}xQ" if off > at else "Q"
        at = off + 8
    return struct.Struct(fmt)


def _words(reads: "list[int]") -> "struct.Struct | None":
    """What unpacks the stack words at the offsets ``reads`` in one call
    (None when two of them overlap)."""
    offsets = tuple(sorted(set(reads)))
    if any(b - a < 8 for a, b in zip(offsets, offsets[1:])):
        return None
    return _words_at(offsets)


def _frame(step, regs: dict, mem: _Stack) -> "dict | None":
    """The caller's registers, from this frame's ``regs`` and compiled CFI
    row (None when the row's CFA cannot be computed, does not move up the
    stack, or its return address is not in the stack bytes)."""
    (cfa_reg, cfa_arg), rules = step[:2]
    mem.owner = None
    if cfa_reg is None:
        cfa = _evaluate(cfa_arg, regs, mem)
    else:
        base = regs.get(cfa_reg)
        cfa = None if base is None else base + cfa_arg
    if cfa is None or cfa <= regs[SP]:
        return None
    new = dict(regs)
    for reg, kind, arg in rules:
        mem.owner = reg
        if kind == _AT:
            value = mem.read(cfa + arg)
        elif kind == _VAL:
            value = cfa + arg
        elif kind == _REG:
            value = regs.get(arg)
        elif kind == _EXPR:
            addr = _evaluate(arg, regs, mem, cfa)
            value = None if addr is None else mem.read(addr)
        elif kind == _VAL_EXPR:
            value = _evaluate(arg, regs, mem, cfa)
        else:
            value = None
        if value is None:
            if reg == RA and kind != _UNDEF:
                return None  # the return address lies past the copied stack
            new.pop(reg, None)
        else:
            new[reg] = value
    new[SP] = cfa
    return new


# --- frame-pointer stacks ---------------------------------------------------------------

def broken_frame(sym: Symbolizer, pid: int, chain: "tuple[int, ...]") -> "int | None":
    """In a call stack the kernel walked by frame pointers (innermost
    first), the index of the first frame that cannot be true, or None.

    The first user frame is the hit's own ip.  Each later one must be a
    return address: in a mapped object, right after a call instruction.
    A stack of one user frame is broken too: every function was called by
    one, so the walk failed at its first step (rbp held no frame pointer).
    And where the CFI says that the hit's function keeps its frame by the
    stack pointer (it has not made rbp its frame pointer: a leaf, or code
    built without them), the walk began in its caller's frame and skipped
    its caller: the second frame is false.  Kernel frames are the kernel's
    own unwinder's and are trusted.
    """
    user = [i for i, ip in enumerate(chain) if ip < KERNEL_START]
    if not user:
        return None
    if len(user) == 1:
        return len(chain)
    row = _row_at(sym, pid, chain[user[0]])
    if row is not None and row[0][0] is not None and row[0][0] != _RBP:
        return user[1]
    for i in user[1:]:
        if not _after_call(sym, pid, chain[i]):
            return i
    return None


def _after_call(sym: Symbolizer, pid: int, ip: int) -> bool:
    """Whether ``ip`` of process ``pid`` follows a call instruction in the
    code of a mapped object."""
    space = sym.spaces.get(pid)
    m = space.find(ip) if space is not None else None
    if m is None or not m.path.startswith("/"):
        return False
    obj = load_object(m.path)
    offset = ip - m.start + m.pgoff
    vaddr = obj.vaddr_of_offset(offset) if obj is not None else None
    if vaddr is None or not any(p_off + 7 <= offset <= p_off + p_size
                                for p_off, p_size, _v in obj.segments):
        return False
    return is_after_call(_code_before(m.path, offset), lambda displacement: any(
        v <= vaddr + displacement < v + size for _o, size, v in obj.segments))


@lru_cache(maxsize=4096)
def _code_before(path: str, offset: int) -> bytes:
    """The 7 bytes of ``path`` before file ``offset`` (fewer: unreadable)."""
    try:
        with open_regular(path) as f:
            return os.pread(f.fileno(), 7, offset - 7)
    except OSError:
        return b""


def is_after_call(code: bytes, lands=lambda displacement: True) -> bool:
    """Whether ``code`` (the bytes before an address) ends with an x86-64
    call: ``e8`` and a 32-bit displacement from the address to a target
    ``lands(displacement)`` accepts (in the object's code: the bytes of
    other instructions often hold an ``e8`` five from their end), or ``ff
    /2`` (an indirect call through a register or memory) whose ModRM, SIB
    and displacement end exactly there.  Prefixes (REX, segment) come
    before the opcode and do not change where it is."""
    n = len(code)
    if n >= 5 and code[n - 5] == 0xE8 and lands(struct.unpack_from("<i", code, n - 4)[0]):
        return True
    for k in range(2, min(n, 7) + 1):
        if code[n - k] != 0xFF:
            continue
        modrm = code[n - k + 1]
        if modrm >> 3 & 7 != 2:
            continue
        mod, rm = modrm >> 6, modrm & 7
        length = 2
        if mod != 3 and rm == 4:  # a SIB byte
            length += 1
            if mod == 0 and k >= 3 and code[n - k + 2] & 7 == 5:
                length += 4  # no base: a 32-bit displacement
        if mod == 1:
            length += 1
        elif mod == 2 or (mod == 0 and rm == 5):
            length += 4
        if length == k:
            return True
    return False
