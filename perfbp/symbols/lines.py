"""Turning link-time addresses into ``file:line``, from DWARF line programs.

Every compilation unit compiled with ``-g`` has a line program in
``.debug_line`` (DWARF 6.2): a byte code that, run on a small state machine,
produces a table of rows ``(address, file, line, column)``, one *sequence* of
rows per contiguous run of code, each closed by an ``end_sequence`` row.  A row
covers the addresses from its own up to the next row's, so the line of an
address is the row whose range ``[row.address, next_row.address)`` contains it.

:class:`LineTable` runs every line program of a file once (pyelftools decodes
the headers and the file tables, DWARF 2 to 5; the byte code is run here,
several times faster than pyelftools' own row decoder), flattens all sequences
into sorted columns (arrays), and answers :meth:`LineTable.lookup` by binary
search.  Addresses are the file's link-time virtual addresses: the ``vaddr``
:mod:`perfbp.symbols.elf` computes from an ip (``ElfObject.vaddr_of_offset``).

Agrees with ``addr2line`` (binutils): when several rows share one address the
last one wins, and line 0 ("no source line", DWARF 6.2.2) answers None, as
``addr2line`` prints ``file:?``.  It differs in one place, where binutils
2.40 departs from the standard: the file register starts at 1 in DWARF 5 as
in DWARF 4 (DWARF 5, Table 6.4), so rows before a sequence's first
``DW_LNS_set_file`` are in file 1; bfd starts DWARF 5 sequences at file 0
(the primary source file).  ``readelf --debug-dump=decodedline`` agrees
with this module.  The two files differ only when a unit's first code
comes from an ``#include``d file.

Pure Python over files; no kernel.
"""

from __future__ import annotations

import bisect
import os
import posixpath
import struct
from array import array
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from .dwarf_index import sleb128, uleb128
from ..kernel.system import open_regular

__all__ = ["SourceLine", "LineTable", "line_table"]

# Standard opcodes (DWARF 5, 6.2.5.2) and extended opcodes (6.2.5.3), by
# pyelftools' names (DW_LNE_define_file is DWARF 2-4 only)
from elftools.dwarf.constants import (  # noqa: E402
    DW_LNE_define_file,
    DW_LNE_end_sequence,
    DW_LNE_set_address,
    DW_LNS_advance_line,
    DW_LNS_advance_pc,
    DW_LNS_const_add_pc,
    DW_LNS_copy,
    DW_LNS_fixed_advance_pc,
    DW_LNS_negate_stmt,
    DW_LNS_set_basic_block,
    DW_LNS_set_column,
    DW_LNS_set_epilogue_begin,
    DW_LNS_set_file,
    DW_LNS_set_prologue_end,
)

SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

UNKNOWN_FILE = "??"         # what addr2line prints for a file it cannot name
_END = (1 << 32) - 1        # the file column of a row that ends a sequence


@dataclass(frozen=True)
class SourceLine:
    """The source line an address was compiled from.

    Attributes:
        file: the source path as DWARF gives it, joined with its directory
            (and the compilation directory) when relative; not normalized.
        line: the line number, from 1.
        column: the column, from 1, or 0 when the compiler gave none.
    """

    file: str
    line: int
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def short(self) -> str:
        """``basename:line``, for output that must fit 80 columns."""
        return f"{posixpath.basename(self.file)}:{self.line}"


class LineTable:
    """Every row of every line program of one ELF file, sorted by address.

    Built once per file (see :func:`line_table` for the cached, forgiving
    front).  Rows are kept as columns (arrays) of ranges: ``starts``,
    ``ends`` (exclusive), a file index into ``files``, ``lines``, ``columns``.

    Sequences of code the linker discarded (a COMDAT duplicate, a function
    dropped by ``--gc-sections``) keep their line programs but are relocated
    to address 0 or to a tombstone (-1, -2); only sequences that start inside
    an executable section are kept, except in relocatable objects (``.o``),
    whose sections all start at 0.  Where two kept sequences still overlap,
    the one that starts later wins.

    Attributes:
        path: the file read.
        files: the source paths, indexed by the file column.
        skipped: ``(offset in .debug_line, reason)`` of line programs that
            could not be read (damaged, or a form pyelftools lacks); their
            addresses answer None.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not ELF, or it has no ``.debug_line``.
    """

    def __init__(self, path: str) -> None:
        from elftools.common.exceptions import DWARFError, ELFError
        from elftools.elf.elffile import ELFFile

        self.path = path
        self.files: list[str] = []
        self.skipped: list[tuple[int, str]] = []
        self._file_ids: dict[str, int] = {}
        rows: list[tuple[int, int, int, int]] = []
        with open_regular(path) as f:
            try:
                elf = ELFFile(f)
                if not (elf.has_section(".debug_line") or elf.has_section(".zdebug_line")):
                    raise ValueError(f"{path} has no line information (.debug_line): "
                                     "build it with -g, or read its separate debug file")
                self._little = elf.little_endian
                sections = list(elf.iter_sections())
                code = [] if elf["e_type"] == "ET_REL" else [
                    (s["sh_addr"], s["sh_addr"] + s["sh_size"]) for s in sections
                    if s["sh_flags"] & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC | SHF_EXECINSTR
                    and s["sh_size"]]
                self._code_starts = sorted(code)
                # relocations of the DWARF sections (.rela.debug_line...), which
                # relocatable objects have: without them, asking pyelftools to
                # apply them costs a walk of every section header per section
                relocate = any(s.name.startswith(".rel") and "debug" in s.name
                               for s in sections)
                dwarf = elf.get_dwarf_info(relocate_dwarf_sections=relocate, follow_links=False)
                if dwarf.debug_line_sec is None:
                    raise ValueError(f"{path} has an empty .debug_line")
                stream = dwarf.debug_line_sec.stream
                stream.seek(0)
                data = stream.read()
                seen: set[int] = set()
                for cu in dwarf.iter_CUs():
                    top = cu.get_top_DIE()
                    stmt = top.attributes.get("DW_AT_stmt_list")
                    if stmt is None or stmt.value in seen:
                        continue  # no lines, or a type unit sharing its CU's program
                    seen.add(stmt.value)
                    try:
                        program = dwarf.line_program_for_CU(cu)
                        comp_dir = top.attributes.get("DW_AT_comp_dir")
                        self._run(data, stmt.value, program.header,
                                  _text(comp_dir.value) if comp_dir is not None else None, rows)
                    except (ELFError, DWARFError, NotImplementedError, IndexError,
                            KeyError, struct.error, ValueError) as exc:
                        self.skipped.append((stmt.value, f"{type(exc).__name__}: {exc}"))
            except (ELFError, DWARFError) as exc:
                raise ValueError(f"{path}: not an ELF file or damaged DWARF: {exc}") from None

        self.starts, self.ends, self.file_index, self.lines, self.columns = _ranges(rows)

    def __len__(self) -> int:
        return len(self.starts)

    def lookup(self, vaddr: int) -> Optional[SourceLine]:
        """The source line of the instruction at (or containing) ``vaddr``.

        Args:
            vaddr: a link-time virtual address of this file (for a shared
                object or PIE: the run-time address minus the load bias).

        Returns:
            The line whose address range contains ``vaddr``, or None when no
            line program covers it or the compiler marked it line 0 (code
            with no source line of its own).
        """
        if not 0 <= vaddr < 1 << 64 or not len(self.starts):
            return None
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0 or vaddr >= self.ends[i]:
            return None
        line = self.lines[i]
        if line == 0:
            return None
        return SourceLine(self.files[self.file_index[i]], line, self.columns[i])

    def lookup_before(self, vaddr: int) -> Optional[SourceLine]:
        """The source line of the instruction that ends just before ``vaddr``:
        ``lookup(vaddr - 1)``.

        Use it for the ip of a data-breakpoint sample.  On x86 a data
        breakpoint is a trap: the debug exception is raised after the
        instruction that touched the watched memory has completed, so the ip
        in the sample is the *next* instruction's.  The store itself lies at
        a lower address and ends at ``vaddr``: ``vaddr - 1`` is its last byte.
        (A store is not a branch, so the next instruction is the one that
        follows it in memory.)

        Exceptions, where the ip is not the next instruction: a ``rep stos`` /
        ``rep movs`` with iterations left traps with the ip still on the
        string instruction; a ``call`` whose pushed return address lands on
        the watched memory traps at the called function.  On arm64 a
        watchpoint is taken before the access, with the ip on the access
        itself: use :meth:`lookup` there.
        """
        return self.lookup(vaddr - 1)

    # -- running a line program ------------------------------------------

    def _file_id(self, path: str) -> int:
        fid = self._file_ids.get(path)
        if fid is None:
            fid = self._file_ids[path] = len(self.files)
            self.files.append(path)
        return fid

    def _in_code(self, addr: int) -> bool:
        if not self._code_starts:
            return True  # a relocatable object, or no section headers
        i = bisect.bisect_right(self._code_starts, (addr, 1 << 65)) - 1
        return i >= 0 and addr < self._code_starts[i][1]

    def _file_map(self, header, comp_dir: Optional[str]) -> "tuple[list[int], list[str]]":
        """The file table of one line program, as ids into ``self.files``,
        and its directories (relative ones joined with the compilation
        directory).

        DWARF 5 numbers files and directories from 0, and entry 0 of each is
        the primary source file and the compilation directory.  DWARF 2-4
        number files from 1 and directories from 1, directory 0 being the
        compilation directory (``DW_AT_comp_dir`` of the unit).
        """
        version = header["version"]
        dirs = [_text(d) for d in header["include_directory"] or ()]
        if version < 5:
            dirs.insert(0, comp_dir or "")
        base = dirs[0] if dirs else (comp_dir or "")
        dirs = [d if i == 0 or posixpath.isabs(d) else posixpath.join(base, d)
                for i, d in enumerate(dirs)]
        out = [] if version >= 5 else [self._file_id(UNKNOWN_FILE)]
        for entry in header["file_entry"] or ():
            out.append(self._file_id(_join(dirs, entry["dir_index"] or 0, _text(entry["name"]))))
        return out, dirs

    def _file_at(self, files: list, index: int) -> int:
        """The id of entry ``index`` of a program's file table, or of
        ``UNKNOWN_FILE`` past its end."""
        return files[index] if index < len(files) else self._file_id(UNKNOWN_FILE)

    def _run(self, data: bytes, offset: int, header, comp_dir: Optional[str],
             rows: list) -> None:
        """Run the line program at ``offset`` of ``.debug_line`` (``data``),
        appending ``(address, file id, line, column)`` rows to ``rows``, with
        a ``file id == _END`` row closing each sequence kept.

        The state machine's registers (DWARF 5, 6.2.2) live in locals, and
        the opcodes that come by the million (special opcodes, advance_pc,
        set_column, advance_line) are decoded inline; the rest are helpers."""
        pos, end = _program_start(data, offset, header, self._little)
        order = "little" if self._little else "big"
        files, dirs = self._file_map(header, comp_dir)
        addr_step, line_step, const_add = _special_opcodes(header)
        min_len = header["minimum_instruction_length"]
        opcode_base = header["opcode_base"]
        std_lengths = list(header["standard_opcode_lengths"])
        emit = rows.append
        address, line, column = 0, 1, 0
        reg_file = 1
        fid = self._file_at(files, reg_file)
        seq_start = len(rows)
        while pos < end:
            op = data[pos]
            pos += 1
            if op >= opcode_base:
                address += addr_step[op]
                line += line_step[op]
                emit((address, fid, line, column))
            elif op == DW_LNS_copy:
                emit((address, fid, line, column))
            elif op == DW_LNS_advance_pc or op == DW_LNS_set_column or op == DW_LNS_set_file:
                value = data[pos]
                pos += 1
                if value & 0x80:
                    value, pos = uleb128(data, pos - 1)
                if op == DW_LNS_advance_pc:
                    address += value * min_len
                elif op == DW_LNS_set_column:
                    column = value
                else:
                    reg_file = value
                    fid = self._file_at(files, value)
            elif op == DW_LNS_advance_line:
                value = data[pos]
                pos += 1
                if value & 0x80:
                    value, pos = sleb128(data, pos - 1)
                elif value & 0x40:
                    value -= 0x80
                line += value
            elif op == DW_LNS_const_add_pc:
                address += const_add
            elif op == 0:  # extended: length, sub-opcode, operands
                length, pos = uleb128(data, pos)
                nxt = pos + length
                sub = data[pos] if length else 0
                if sub == DW_LNE_end_sequence:
                    seq_start = self._end_sequence(rows, seq_start, address)
                    address, line, column = 0, 1, 0
                    reg_file = 1
                    fid = self._file_at(files, reg_file)
                elif sub == DW_LNE_set_address:
                    address = int.from_bytes(data[pos + 1:nxt], order)
                elif sub == DW_LNE_define_file:
                    files.append(self._defined_file(data, pos + 1, dirs))
                    fid = self._file_at(files, reg_file)
                # DW_LNE_set_discriminator and vendor opcodes: nothing to keep
                pos = nxt
            elif op == DW_LNS_fixed_advance_pc:
                address += int.from_bytes(data[pos:pos + 2], order)
                pos += 2
            elif op not in _NO_OPERANDS:  # DW_LNS_set_isa, or a later standard's
                for _ in range(std_lengths[op - 1]):
                    _, pos = uleb128(data, pos)
        del rows[seq_start:]  # a sequence the program never ended

    def _end_sequence(self, rows: list, seq_start: int, address: int) -> int:
        """Close the sequence ``rows[seq_start:]`` at ``address``: keep it with
        an ``_END`` row if it starts in code, else drop it (discarded code,
        at address 0 or a tombstone).  Returns where the next one starts."""
        if len(rows) > seq_start and self._in_code(rows[seq_start][0]):
            rows.append((address, _END, 0, 0))
        else:
            del rows[seq_start:]
        return len(rows)

    def _defined_file(self, data: bytes, pos: int, dirs: list) -> int:
        """The id of the file a ``DW_LNE_define_file`` at ``pos`` (past its
        sub-opcode) adds: a name, a directory index (DWARF 2-4, 6.2.5.3)."""
        name_end = data.index(b"\0", pos)
        dir_index, _ = uleb128(data, name_end + 1)
        return self._file_id(_join(dirs, dir_index, _text(data[pos:name_end])))


_U64_TOP = (1 << 64) - 1


def _ranges(rows: list) -> tuple:
    """``(starts, ends, file ids, lines, columns)`` (arrays, by start) of
    the address ranges of the rows ``(address, file id, line, column)``
    of every sequence kept, each closed by a row of file id ``_END``.

    A row's range ends at the next row's address; a row that ends a
    sequence is no range, and a range that is empty (the next row has the
    same address) yields to that row: the last row at an address wins.
    Where sequences overlap, the one that starts later wins.  The values
    are held as 64-bit registers: a damaged program that ran one past 64
    bits is clamped to them, and lines and columns of 2**63 and more read
    negative."""
    addrs = _u64([row[0] for row in rows])
    keep = [i for i, (fid, a, b) in enumerate(zip([row[1] for row in rows], addrs, addrs[1:]))
            if fid != _END and b > a]
    keep.sort(key=addrs.__getitem__)  # stable: equal starts keep their order
    starts = [addrs[i] for i in keep]
    ends = [addrs[i + 1] for i in keep]
    # overlapping sequences: the later start wins
    ends[:-1] = [e if e <= s else s for e, s in zip(ends, starts[1:])]
    nonempty = [j for j, (s, e) in enumerate(zip(starts, ends)) if e > s]
    if len(nonempty) < len(keep):
        keep = [keep[j] for j in nonempty]
        starts = [starts[j] for j in nonempty]
        ends = [ends[j] for j in nonempty]
    return (array("Q", starts), array("Q", ends), array("i", [rows[i][1] for i in keep]),
            array("q", _signed(_u64([rows[i][2] for i in keep]))),
            array("q", _signed(_u64([rows[i][3] for i in keep]))))


def _u64(values: list) -> list:
    """``values`` as 64-bit registers hold them: clamped to 0 .. 2**64 - 1."""
    if values and (min(values) < 0 or max(values) > _U64_TOP):
        return [min(max(v, 0), _U64_TOP) for v in values]
    return values


def _signed(values: list) -> list:
    """64-bit registers read as signed: 2**63 and more are negative."""
    if values and max(values) >> 63:
        return [v - (1 << 64) if v >> 63 else v for v in values]
    return values


# standard opcodes that take no operands and change nothing a row keeps
_NO_OPERANDS = frozenset({DW_LNS_negate_stmt, DW_LNS_set_basic_block,
                          DW_LNS_set_prologue_end, DW_LNS_set_epilogue_begin})


def _program_start(data: bytes, offset: int, header, little: bool) -> "tuple[int, int]":
    """``(start of the byte code, end of the unit)`` of the line program at
    ``offset``, from the header's own lengths (DWARF 5, 6.2.4: robust to
    header fields pyelftools does not know).

    Raises:
        ValueError: the unit runs past the section, or it is a VLIW program
            (maximum_operations_per_instruction > 1), which this module
            does not run.
        struct.error: the section ends inside the unit's length.
    """
    end_fmt = "<" if little else ">"
    (unit_length,) = struct.unpack_from(end_fmt + "I", data, offset)
    if unit_length == 0xFFFFFFFF:  # the 64-bit DWARF format
        (unit_length,) = struct.unpack_from(end_fmt + "Q", data, offset + 4)
        pos, offset_size = offset + 12, 8
    else:
        pos, offset_size = offset + 4, 4
    end = pos + unit_length
    order = "little" if little else "big"
    version = int.from_bytes(data[pos:pos + 2], order)
    pos += 4 if version >= 5 else 2  # version, (address_size, seg_sel_size)
    header_length = int.from_bytes(data[pos:pos + offset_size], order)
    pos += offset_size + header_length
    if end > len(data):
        raise ValueError(f"line program at {offset:#x} runs past .debug_line")
    if header.get("maximum_operations_per_instruction", 1) not in (0, 1):
        raise ValueError("VLIW line programs (maximum_operations_per_instruction > 1) "
                         "are not supported")
    return pos, end


def _special_opcodes(header) -> "tuple[list[int], list[int], int]":
    """``(address advance, line advance)`` of each special opcode, indexed by
    opcode, and DW_LNS_const_add_pc's address advance (DWARF 5, 6.2.5.1).

    Raises:
        ValueError: a line_range of 0.
    """
    min_len = header["minimum_instruction_length"]
    line_base = header["line_base"]
    line_range = header["line_range"]
    opcode_base = header["opcode_base"]
    if line_range == 0:
        raise ValueError("line_range is 0")
    addr_step = [0] * 256
    line_step = [0] * 256
    for op in range(opcode_base, 256):
        adj = op - opcode_base
        addr_step[op] = (adj // line_range) * min_len
        line_step[op] = line_base + adj % line_range
    return addr_step, line_step, ((255 - opcode_base) // line_range) * min_len


def _text(raw) -> str:
    """A DWARF string as a path (undecodable bytes kept, as os.fsdecode does)."""
    if raw is None:
        return ""
    return os.fsdecode(raw) if isinstance(raw, (bytes, bytearray)) else str(raw)


def _join(dirs: list, index: int, name: str) -> str:
    if not name:
        return UNKNOWN_FILE
    if posixpath.isabs(name) or not 0 <= index < len(dirs) or not dirs[index]:
        return name
    return posixpath.join(dirs[index], name)


@lru_cache(maxsize=64)
def line_table(path: str) -> Optional[LineTable]:
    """The line table of the ELF file at ``path``, built once and cached:
    from the file, or from its separate debug file when it is stripped
    (:func:`perfbp.symbols.elf.file_with`).

    Returns:
        The table, or None when the file gives no lines: neither it nor a
        debug file of it has ``.debug_line`` (stripped, or built without
        ``-g``), or it is missing, unreadable or not ELF.  Like
        ``symbols.load_object``, this degrades rather than raises, so a
        report can ask about every object it meets; build a
        :class:`LineTable` directly to see why.
    """
    from .elf import file_with

    try:
        return LineTable(file_with(path, "lines"))
    except (OSError, ValueError):
        return None
