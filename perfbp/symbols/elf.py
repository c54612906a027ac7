"""ELF files: their headers and tables, and turning instruction addresses
into ``function+offset (object)``.

:class:`ElfReader` reads what perfbp needs of an ELF file (the file
header, the program and section headers, the symbol tables, the dynamic
section, relocations, the build-id note) with :mod:`struct`, from layouts
declared once in :data:`ELF_LAYOUTS` by the gABI's own field names.
pyelftools builds an object per symbol through construct: libpython's
14,000 symbols take it 0.6 s, and its import alone 40 ms; the tables here
are decoded whole with ``struct.iter_unpack`` (milliseconds).
pyelftools remains the reader of DWARF (:mod:`perfbp.symbols.dwarf`).

An ip seen in a sample is mapped through the process's mappings (MMAP /
MMAP2 records, the same ones perf uses) to a file offset in an ELF object,
then to the object's virtual address through its PT_LOAD segments, then to
the function that contains it (``.symtab``, else ``.dynsym``).  Pure Python
over files; no kernel.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import operator
import os
import struct
from collections import namedtuple
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator, NamedTuple, Optional

from ..kernel.system import open_regular

# --------------------------------------------------------------------------
# The layouts (System V gABI, "Object Files"), by ELF class
# --------------------------------------------------------------------------

#: Each record as ``(field, struct code)`` pairs in the file's order; the
#: byte order is the file's (``EI_DATA``).  ``Ehdr`` starts after
#: ``e_ident``'s 16 bytes.
ELF_LAYOUTS = {
    64: {
        "Ehdr": (("e_type", "H"), ("e_machine", "H"), ("e_version", "I"), ("e_entry", "Q"),
                 ("e_phoff", "Q"), ("e_shoff", "Q"), ("e_flags", "I"), ("e_ehsize", "H"),
                 ("e_phentsize", "H"), ("e_phnum", "H"), ("e_shentsize", "H"),
                 ("e_shnum", "H"), ("e_shstrndx", "H")),
        "Phdr": (("p_type", "I"), ("p_flags", "I"), ("p_offset", "Q"), ("p_vaddr", "Q"),
                 ("p_paddr", "Q"), ("p_filesz", "Q"), ("p_memsz", "Q"), ("p_align", "Q")),
        "Shdr": (("sh_name", "I"), ("sh_type", "I"), ("sh_flags", "Q"), ("sh_addr", "Q"),
                 ("sh_offset", "Q"), ("sh_size", "Q"), ("sh_link", "I"), ("sh_info", "I"),
                 ("sh_addralign", "Q"), ("sh_entsize", "Q")),
        "Sym": (("st_name", "I"), ("st_info", "B"), ("st_other", "B"), ("st_shndx", "H"),
                ("st_value", "Q"), ("st_size", "Q")),
        "Dyn": (("d_tag", "q"), ("d_val", "Q")),
        "Rel": (("r_offset", "Q"), ("r_info", "Q")),
        "Rela": (("r_offset", "Q"), ("r_info", "Q"), ("r_addend", "q")),
    },
    32: {
        "Ehdr": (("e_type", "H"), ("e_machine", "H"), ("e_version", "I"), ("e_entry", "I"),
                 ("e_phoff", "I"), ("e_shoff", "I"), ("e_flags", "I"), ("e_ehsize", "H"),
                 ("e_phentsize", "H"), ("e_phnum", "H"), ("e_shentsize", "H"),
                 ("e_shnum", "H"), ("e_shstrndx", "H")),
        "Phdr": (("p_type", "I"), ("p_offset", "I"), ("p_vaddr", "I"), ("p_paddr", "I"),
                 ("p_filesz", "I"), ("p_memsz", "I"), ("p_flags", "I"), ("p_align", "I")),
        "Shdr": (("sh_name", "I"), ("sh_type", "I"), ("sh_flags", "I"), ("sh_addr", "I"),
                 ("sh_offset", "I"), ("sh_size", "I"), ("sh_link", "I"), ("sh_info", "I"),
                 ("sh_addralign", "I"), ("sh_entsize", "I")),
        "Sym": (("st_name", "I"), ("st_value", "I"), ("st_size", "I"), ("st_info", "B"),
                ("st_other", "B"), ("st_shndx", "H")),
        "Dyn": (("d_tag", "i"), ("d_val", "I")),
        "Rel": (("r_offset", "I"), ("r_info", "I")),
        "Rela": (("r_offset", "I"), ("r_info", "I"), ("r_addend", "i")),
    },
}
#: ``ELFCLASS32``/``ELFCLASS64`` (``e_ident[EI_CLASS]``) and
#: ``ELFDATA2LSB``/``ELFDATA2MSB`` (``e_ident[EI_DATA]``).
EI_CLASS = {1: 32, 2: 64}
EI_DATA = {1: "<", 2: ">"}
ET_DYN = 3
PT_LOAD, PT_INTERP, PT_NOTE = 1, 3, 4
SHT_RELA, SHT_DYNAMIC, SHT_NOBITS, SHT_REL = 4, 6, 8, 9
SHN_UNDEF, SHN_XINDEX = 0, 0xFFFF
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_TLS, STT_GNU_IFUNC = 0, 1, 2, 6, 10
STB_LOCAL = 0
DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH = 1, 14, 15, 29
NT_GNU_BUILD_ID = 3
#: ``(shift, mask)`` of ``r_info`` by class: ``ELF64_R_SYM(i) = i >> 32``,
#: ``ELF64_R_TYPE(i) = i & 0xffffffff``; ``ELF32_R_SYM(i) = i >> 8``,
#: ``ELF32_R_TYPE(i) = i & 0xff``.
R_INFO = {64: (32, 0xFFFFFFFF), 32: (8, 0xFF)}
#: ``e_machine`` by the names pyelftools gives them (others: ``EM_<number>``).
E_MACHINE = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390",
             40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV",
             258: "EM_LOONGARCH"}

@lru_cache(maxsize=None)
def _record_of(cls: int, order: str, name: str):
    """The struct and the named tuple of layout ``name`` in an ELF file of
    class ``cls`` and byte order ``order``: made when first read (the 28 of
    them cost 10 ms at import, a report reads 4)."""
    fields = ELF_LAYOUTS[cls][name]
    return (struct.Struct(order + "".join(c for _f, c in fields)),
            namedtuple(f"Elf{cls}_{name}", [f for f, _c in fields]))


class ElfReader:
    """The headers of one ELF file, and its sections' bytes on demand.

    Use as a context manager (the file is open inside it).  ``segments``
    and ``sections`` are lists of ``Phdr`` / ``Shdr`` named tuples with the
    gABI's field names; ``names`` are the sections' names.

    Raises:
        OSError: the file cannot be read (or is not a regular file).
        ValueError: it is not an ELF file, or its headers lie outside it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open_regular(path)
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self._read_headers()
        except (struct.error, IndexError, KeyError, UnicodeDecodeError) as exc:
            self._file.close()
            raise ValueError(f"{path} is not an ELF file: {exc}") from None
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "ElfReader":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset``.

        Raises:
            ValueError: they are not all in the file.
        """
        if offset < 0 or size < 0 or offset + size > self.size:  # before any allocation
            raise ValueError(f"{self.path}: {size} bytes at {offset:#x} are past its end")
        data = os.pread(self._file.fileno(), size, offset) if size else b""
        if len(data) != size:
            raise ValueError(f"{self.path}: {size} bytes at {offset:#x} are past its end")
        return data

    def _read_headers(self) -> None:
        ident = self.read(0, 16)
        if ident[:4] != b"\x7fELF":
            raise ValueError(f"{self.path} is not an ELF file (no ELF magic)")
        self.elfclass, self.order = EI_CLASS[ident[4]], EI_DATA[ident[5]]
        fmt, Ehdr = self._record("Ehdr")
        self.header = Ehdr._make(fmt.unpack(self.read(16, fmt.size)))
        self.e_type = self.header.e_type
        self.machine = E_MACHINE.get(self.header.e_machine, f"EM_{self.header.e_machine}")
        h = self.header
        self.segments = self._table(h.e_phoff, h.e_phnum, h.e_phentsize, "Phdr") \
            if h.e_phoff else []
        self.sections, self.names = [], []
        if h.e_shoff:
            shnum, shstrndx = h.e_shnum, h.e_shstrndx
            if shnum == 0 or shstrndx == SHN_XINDEX:  # counts past 0xff00: in section 0
                first = self._table(h.e_shoff, 1, h.e_shentsize, "Shdr")[0]
                shnum = shnum or first.sh_size
                shstrndx = first.sh_link if shstrndx == SHN_XINDEX else shstrndx
            self.sections = self._table(h.e_shoff, shnum, h.e_shentsize, "Shdr")
            if 0 < shstrndx < len(self.sections):
                names = StringTable(self.data(self.sections[shstrndx]))
                self.names = [names[s.sh_name] for s in self.sections]

    def _record(self, name: str):
        return _record_of(self.elfclass, self.order, name)

    def _table(self, offset: int, count: int, entsize: int, name: str) -> list:
        fmt, record = self._record(name)
        if entsize < fmt.size or count > 1 << 20:
            raise ValueError(f"{self.path}: a table of {count} {name} of {entsize} bytes")
        data = self.read(offset, count * entsize)
        return [record._make(fmt.unpack_from(data, i * entsize)) for i in range(count)]

    def _fields(self, name: str, *fields: str) -> "operator.itemgetter":
        """What picks ``fields``, in that order, from a raw record of layout
        ``name`` (their order in the file depends on the class)."""
        order = [f for f, _c in ELF_LAYOUTS[self.elfclass][name]]
        return operator.itemgetter(*map(order.index, fields))

    def section(self, name: str):
        """The first section called ``name`` (a ``Shdr``), or None."""
        try:
            return self.sections[self.names.index(name)]
        except ValueError:
            return None

    def data(self, shdr) -> bytes:
        """A section's bytes (none for ``SHT_NOBITS``)."""
        if shdr.sh_type == SHT_NOBITS:
            return b""
        return self.read(shdr.sh_offset, shdr.sh_size)

    def rows(self, shdr, name: str, raw: bool = False) -> list:
        """A section's records of layout ``name`` (``Sym``, ``Dyn``, ``Rela``
        ...), as named tuples, or as plain tuples in the layout's order
        (``raw``: three times faster, for tables of thousands).

        Raises:
            ValueError: the section's entry size does not fit the layout.
        """
        fmt, record = self._record(name)
        entsize = shdr.sh_entsize or fmt.size
        if entsize < fmt.size:
            raise ValueError(f"{self.path}: {name} entries of {entsize} bytes")
        data = self.data(shdr)
        count = len(data) // entsize
        if entsize == fmt.size:
            rows = list(fmt.iter_unpack(data[:count * entsize]))
        else:
            rows = [fmt.unpack_from(data, i * entsize) for i in range(count)]
        return rows if raw else list(map(record._make, rows))

    def symbols(self, name: str) -> "Iterator[tuple[str, int, int, int, int]]":
        """``(name, st_value, st_size, st_info, st_shndx)`` of each named
        symbol of the table ``name`` (``.symtab`` or ``.dynsym``; nothing
        when the file has none)."""
        sec = self.section(name)
        if sec is None or not 0 < sec.sh_link < len(self.sections):
            return
        strings = StringTable(self.data(self.sections[sec.sh_link]))
        pick = self._fields("Sym", "st_name", "st_value", "st_size", "st_info", "st_shndx")
        at = strings.at
        for st_name, value, size, info, shndx in map(pick, self.rows(sec, "Sym", raw=True)):
            if st_name:
                yield at(st_name) or strings[st_name], value, size, info, shndx

    def symbols_named(self, table: str, name: str
                      ) -> "list[tuple[str, int, int, int, int]]":
        """:meth:`symbols` of the table ``table`` called ``name``, found
        without decoding the table: the name's offsets in the string table
        and then those offsets in the symbols' ``st_name`` (the first field
        of ``Sym`` in both classes) by :meth:`bytes.find`, in table order."""
        sec = self.section(table)
        if sec is None or not 0 < sec.sh_link < len(self.sections) or not name:
            return []
        strings, wanted = self.data(self.sections[sec.sh_link]), name.encode() + b"\0"
        offsets, at = [], strings.find(wanted)
        while at >= 0:
            offsets.append(at)
            at = strings.find(wanted, at + 1)
        if not offsets:
            return []
        fmt, _record = self._record("Sym")
        entsize = sec.sh_entsize or fmt.size
        data = self.data(sec)
        pick = self._fields("Sym", "st_value", "st_size", "st_info", "st_shndx")
        hits = []
        for offset in offsets:
            pattern = struct.pack(self.order + "I", offset)
            at = data.find(pattern)
            while at >= 0:
                if at % entsize == 0 and at + fmt.size <= len(data):
                    hits.append((at, pick(fmt.unpack_from(data, at))))
                at = data.find(pattern, at + 1)
        return [(name, *row) for _at, row in sorted(hits)]

    def defines_any(self, table: str) -> bool:
        """Whether the table ``table`` has a named, defined symbol of a kind
        :func:`named_symbols` keeps (read up to the first: a few entries)."""
        sec = self.section(table)
        if sec is None or not 0 < sec.sh_link < len(self.sections):
            return False
        fmt, record = self._record("Sym")
        if (sec.sh_entsize or fmt.size) != fmt.size:
            return any(shndx != SHN_UNDEF and info & 0xF in _KINDS
                       for _n, _v, _s, info, shndx in self.symbols(table))
        data = self.data(sec)
        for row in fmt.iter_unpack(data[:len(data) // fmt.size * fmt.size]):
            sym = record._make(row)
            if sym.st_name and sym.st_shndx != SHN_UNDEF and sym.st_info & 0xF in _KINDS:
                return True
        return False

    def build_id(self) -> Optional[str]:
        """The ``NT_GNU_BUILD_ID`` note's bytes in hex, or None."""
        for seg in self.segments:
            if seg.p_type != PT_NOTE or seg.p_filesz > 1 << 16:
                continue
            data, pos = self.read(seg.p_offset, seg.p_filesz), 0
            align = 8 if seg.p_align == 8 else 4
            while pos + 12 <= len(data):
                namesz, descsz, kind = struct.unpack_from(self.order + "III", data, pos)
                name_at = pos + 12
                desc_at = name_at + (namesz + align - 1) // align * align
                pos = desc_at + (descsz + align - 1) // align * align
                if kind == NT_GNU_BUILD_ID and data[name_at:name_at + namesz] == b"GNU\0":
                    return data[desc_at:desc_at + descsz].hex() or None
        return None


class StringTable:
    """A string table (``.strtab``, ``.dynstr``, ``.shstrtab``) read by
    offset: split at its NULs once, so that thousands of names cost one
    dictionary lookup each; an offset inside a string (a suffix two names
    share) is found by search."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        raw = data.split(b"\0")
        starts = itertools.accumulate((len(p) + 1 for p in raw), initial=0)
        parts = (data.decode("ascii").split("\0") if data.isascii() else
                 [p.decode("utf-8", "replace") for p in raw])
        # the strings that start after a NUL (the last has no NUL after it)
        self.at = dict(zip(starts, parts[:-1])).get

    def __getitem__(self, offset: int) -> str:
        """The NUL-terminated string at ``offset``.

        Raises:
            ValueError: ``offset`` is outside the table, or no NUL ends it.
        """
        found = self.at(offset)
        if found is not None:
            return found
        end = self.data.find(b"\0", offset)
        if offset >= len(self.data) or end < 0:
            raise ValueError(f"string offset {offset:#x} outside a table of "
                             f"{len(self.data)} bytes")
        return self.data[offset:end].decode("utf-8", "replace")


@dataclass(frozen=True)
class Location:
    """Where an ip lies.

    Attributes:
        ip: the address.
        dso: the object's path (or ``[unknown]``).
        symbol: the function's name, or None.
        offset: ip minus the function's start.
        vaddr: the ip as a link-time address in ``dso`` (for line lookups).
    """

    ip: int
    dso: str
    symbol: Optional[str]
    offset: int = 0
    vaddr: Optional[int] = None

    def __str__(self) -> str:
        if self.symbol is None:
            return f"{self.ip:#x}" + (f" ({os.path.basename(self.dso)})" if self.dso != "[unknown]" else "")
        return f"{self.symbol}+{self.offset:#x}"

    @property
    def short_dso(self) -> str:
        return os.path.basename(self.dso)


class ElfObject:
    """The function symbols and load segments of one ELF file, and whether
    it has a DWARF line table (``has_lines``: a ``.debug_line`` section);
    the symbols and lines of a stripped one from its separate debug file
    (:func:`debug_file`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        starts: dict[int, tuple[str, int]] = {}
        symbols = file_with(path, "symtab")  # a stripped object's: in its debug file
        with ElfReader(path) as elf, (ElfReader(symbols) if symbols != path
                                      else contextlib.nullcontext(elf)) as tables:
            self.pie_or_shared = elf.e_type == ET_DYN
            self.has_lines = (bool({".debug_line", ".zdebug_line"} & set(elf.names))
                              or file_with(path, "lines") != path)
            self.segments = [(s.p_offset, s.p_filesz, s.p_vaddr)  # (p_offset, p_filesz, p_vaddr)
                             for s in elf.segments if s.p_type == PT_LOAD]
            for table in (".symtab", ".dynsym"):
                for name, addr, size, info, shndx in tables.symbols(table):
                    if info & 0xF not in (STT_FUNC, STT_GNU_IFUNC) or shndx == SHN_UNDEF:
                        continue
                    # prefer the first table (.symtab) and sized symbols
                    if addr not in starts or (starts[addr][1] == 0 and size):
                        starts[addr] = (name, size)
                if starts and table == ".symtab":
                    break
        self._addrs = sorted(starts)
        self._syms = [starts[a] for a in self._addrs]

    def vaddr_of_offset(self, offset: int) -> Optional[int]:
        for p_off, p_size, p_vaddr in self.segments:
            if p_off <= offset < p_off + max(p_size, 1):
                return offset - p_off + p_vaddr
        return None

    def function_at(self, vaddr: int) -> "tuple[str, int] | None":
        i = bisect.bisect_right(self._addrs, vaddr) - 1
        if i < 0:
            return None
        name, size = self._syms[i]
        start = self._addrs[i]
        if size and vaddr >= start + size:
            return None
        return name, vaddr - start


class Symbol(NamedTuple):
    """A named symbol of an ELF file (``st_value`` is a link-time address)."""

    name: str
    value: int
    size: int
    kind: str  # "object", "func", "notype" or "tls" (thread-local)
    local: bool


def named_symbols(path: str) -> "dict[str, list[Symbol]]":
    """Every defined data, function and untyped symbol of ``path`` by name
    (``.symtab``, else ``.dynsym``); read once per file (whatever path names
    it: /lib and /usr/lib are one on merged-/usr systems) while unchanged.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not ELF.
    """
    real = os.path.realpath(file_with(path, "symtab"))
    st = os.stat(real)
    return _named_symbols(real, st.st_ino, st.st_mtime_ns, st.st_size)


def symbols_named(path: str, name: str) -> "list[Symbol]":
    """``named_symbols(path).get(name, [])``, without reading the whole
    table when ``.symtab`` has the name (:meth:`ElfReader.symbols_named`:
    a name among libpython's 14,000 symbols in a millisecond, against 35 ms
    for the table).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not ELF.
    """
    real = os.path.realpath(file_with(path, "symtab"))
    st = os.stat(real)
    return _symbols_named(real, st.st_ino, st.st_mtime_ns, st.st_size, name)


_KINDS = {STT_OBJECT: "object", STT_FUNC: "func", STT_NOTYPE: "notype", STT_TLS: "tls",
          STT_GNU_IFUNC: "func"}


def _add_symbols(out: "dict[str, list[Symbol]]", rows) -> None:
    """Add the defined data, function and untyped symbols of ``rows``
    (:meth:`ElfReader.symbols`' tuples) to ``out``, each once."""
    for name, value, size, info, shndx in rows:
        kind = _KINDS.get(info & 0xF)
        if kind is None or shndx == SHN_UNDEF:
            continue
        entry = Symbol(name, value, size, kind, info >> 4 == STB_LOCAL)
        same = out.get(name)
        if same is None:
            out[name] = [entry]
        elif entry not in same:
            same.append(entry)


@lru_cache(maxsize=64)
def _named_symbols(path: str, _ino: int, _mtime: int, _size: int
                   ) -> "dict[str, list[Symbol]]":
    out: dict[str, list[Symbol]] = {}
    with ElfReader(path) as elf:
        for table in (".symtab", ".dynsym"):
            _add_symbols(out, elf.symbols(table))
            if out and table == ".symtab":
                break
    return out


@lru_cache(maxsize=256)
def _symbols_named(path: str, ino: int, mtime: int, size: int, name: str
                   ) -> "list[Symbol]":
    found: dict[str, list[Symbol]] = {}
    with ElfReader(path) as elf:
        _add_symbols(found, elf.symbols_named(".symtab", name))
        if found or elf.defines_any(".symtab"):  # named_symbols reads .symtab alone
            return found.get(name, [])
    return _named_symbols(path, ino, mtime, size).get(name, [])


# --------------------------------------------------------------------------
# Separate debug files (where they may be: perfbp.symbols.debuginfo)
# --------------------------------------------------------------------------

class DebugFacts(NamedTuple):
    """What a file's headers say about its symbols and debug information.

    Attributes:
        symtab: it has a ``.symtab`` (``strip`` removes it; ``.dynsym``
            stays).
        dwarf: it has DWARF (``.debug_info``); ``lines``: a line table
            (``.debug_line``).
        build_id: its ``NT_GNU_BUILD_ID`` in hex, or None.
        debuglink: its ``.gnu_debuglink``: ``(file name, CRC-32)``, or None.
    """

    symtab: bool
    dwarf: bool
    lines: bool
    build_id: Optional[str]
    debuglink: "Optional[tuple[str, int]]"


def debug_facts(path: str) -> DebugFacts:
    """The :class:`DebugFacts` of ``path``, read once while it is unchanged.

    Raises:
        OSError: it cannot be read.
        ValueError: it is not ELF.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    return _debug_facts(real, st.st_ino, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _debug_facts(path: str, _ino: int, _mtime: int, _size: int) -> DebugFacts:
    with ElfReader(path) as elf:
        def has(*names: str) -> bool:
            return any(name in names and s.sh_type != SHT_NOBITS and s.sh_size
                       for name, s in zip(elf.names, elf.sections))

        link = None
        sec = elf.section(".gnu_debuglink")
        if sec is not None and sec.sh_type != SHT_NOBITS:
            data = elf.data(sec)
            end = data.find(b"\0")
            at = (end + 4) // 4 * 4  # the name, its NUL, padding to 4, then the CRC
            if end > 0 and at + 4 <= len(data):
                crc = struct.unpack_from(elf.order + "I", data, at)[0]
                link = (data[:end].decode("utf-8", "replace"), crc)
        return DebugFacts(has(".symtab"), has(".debug_info", ".zdebug_info"),
                          has(".debug_line", ".zdebug_line"), elf.build_id(), link)


def debug_file(path: str) -> Optional[str]:
    """The separate debug file of the object at ``path``, in the order of
    :mod:`perfbp.symbols.debuginfo`: the first candidate whose build-id is
    the object's (when both have one) and that has a ``.symtab`` or DWARF;
    None when there is none, or ``path`` cannot be read."""
    from . import debuginfo

    try:
        facts = debug_facts(path)
    except (OSError, ValueError):
        return None

    def accept(cand: str) -> bool:
        try:
            found = debug_facts(cand)
        except (OSError, ValueError):  # unreadable or not ELF: as if absent, as gdb does
            return False
        same = not (facts.build_id and found.build_id) or found.build_id == facts.build_id
        return same and (found.symtab or found.dwarf)

    cand = debuginfo.find(os.path.realpath(path), facts.build_id, facts.debuglink, accept)
    return cand.path if cand is not None else None


def file_with(path: str, what: str) -> str:
    """The file that holds ``what`` (``symtab``, ``dwarf`` or ``lines``, as
    in :class:`DebugFacts`) for the object at ``path``: the object itself
    when it has it, else its separate debug file (:func:`debug_file`) when
    that has it, else the object (whose readers then say what is missing)."""
    try:
        if getattr(debug_facts(path), what):
            return path
    except (OSError, ValueError):
        return path
    debug = debug_file(path)
    try:
        return debug if debug is not None and getattr(debug_facts(debug), what) else path
    except (OSError, ValueError):
        return path


def missing_debug(path: str) -> Optional[str]:
    """``NAME is stripped and no debug file of it was found (looked for
    ...)`` when the object at ``path`` has no ``.symtab`` and
    :func:`debug_file` finds none: the start of a hint, which its caller
    ends with what is missing for it (names, a report's functions and
    lines) and what to do; None otherwise."""
    from . import debuginfo

    try:
        facts = debug_facts(path)
    except (OSError, ValueError):
        return None
    if facts.symtab or debug_file(path) is not None:
        return None
    real = os.path.realpath(path)
    where = debuginfo.places(real, facts.build_id, facts.debuglink)
    return (f"{os.path.basename(real)} is stripped and no debug file of it was found "
            + (f"(looked for {where})" if where else
               "(it has neither a build-id nor a .gnu_debuglink to find one by)"))


#: What to do about :func:`missing_debug`, for messages.
INSTALL_DEBUG = ("install its debug file (Debian: its -dbgsym package), or build it with "
                 "-g and without strip")


def load_bias(pid: int, path: str) -> int:
    """Where ``path`` is loaded in process ``pid``: the difference between
    run-time and link-time addresses (0 for a non-PIE executable).

    Raises:
        LookupError: ``path`` is not mapped in the process.
    """
    real = os.path.realpath(path)
    with ElfReader(real) as elf:
        loads = [(s.p_vaddr, s.p_offset) for s in elf.segments if s.p_type == PT_LOAD]
    if not loads:
        raise LookupError(f"{path} has no loadable segments")
    first_vaddr, first_off = min(loads)
    page = 4096
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 6 or os.path.realpath(parts[5].strip()) != real:
                continue
            start = int(parts[0].split("-")[0], 16)
            pgoff = int(parts[2], 16)
            if pgoff == first_off & ~(page - 1):
                return start - (first_vaddr & ~(page - 1))
    raise LookupError(f"{path} is not mapped in process {pid}")


@lru_cache(maxsize=256)
def load_object(path: str) -> Optional[ElfObject]:
    """The parsed ELF at ``path``, or None when it is missing or not ELF."""
    try:
        return ElfObject(path)
    except Exception:  # not ELF, unreadable, damaged: symbolization degrades to raw ips
        return None


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    pgoff: int
    path: str


class AddressSpace:
    """The file mappings of one process."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._maps: list[Mapping] = []

    def add(self, m: Mapping) -> None:
        # a new mapping replaces whatever it overlaps (mmap semantics)
        keep = [x for x in self._maps if x.end <= m.start or x.start >= m.end]
        keep.append(m)
        keep.sort(key=lambda x: x.start)
        self._maps = keep
        self._starts = [x.start for x in keep]

    def find(self, ip: int) -> Optional[Mapping]:
        i = bisect.bisect_right(self._starts, ip) - 1
        if i >= 0 and ip < self._maps[i].end:
            return self._maps[i]
        return None

    def copy(self) -> "AddressSpace":
        new = AddressSpace()
        new._starts = list(self._starts)
        new._maps = list(self._maps)
        return new


KERNEL_START = 0xFFFF800000000000


class KernelSymbols:
    """Kernel text symbols from /proc/kallsyms (addresses need root or
    kernel.kptr_restrict=0; without them kernel ips stay raw).

    Every line of the file (~120,000 lines, 5 MB) starts with a fixed-width
    hex address, a space, the type letter, a space and the name.  The
    symbol of an ip is the text symbol (``t``, ``T``, ``w``, ``W``) at the
    greatest nonzero address at or below it, the file's first line at that
    address; its name is decoded only when looked up.  A report meets few
    kernel ips, so each is found by a search of the text for the lines
    whose address shares the ip's leading hex digits (:meth:`_near`),
    without parsing the file; past :data:`SEARCHES` of them, or when the
    search finds nothing near, the whole file is parsed once with numpy
    (:meth:`_table`) and searched in bulk."""

    #: ips found by a text search (1 to 3 ms each) before the whole file is
    #: parsed instead (numpy's import and the parse: 70 ms)
    SEARCHES = 24
    #: the leading hex digits an ip's symbol is looked for under, as digits
    #: left out: 3 (the ip's 4 KiB), 4 (64 KiB), 5 (1 MiB), then 7 (256 MiB)
    _SPANS = (3, 4, 5, 7)

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        self._data = b""
        self._width = 0
        self._lower = b""
        self._parsed = None
        self._searches = 0
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return
        width = data.find(b" ")
        if not data or not 0 < width <= 16:
            return
        self._data = data
        self._width = width

    def _table(self):
        """``(addresses, name offsets)``: every text symbol's first line, in
        address order, as numpy arrays (the whole file, parsed once)."""
        import numpy as np

        if self._parsed is not None:
            return self._parsed
        data, width = self._data, self._width
        self._parsed = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64))
        if not data:
            return self._parsed
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        if not len(ends) or ends[-1] != len(buf) - 1:
            ends = np.append(ends, len(buf))
        starts = np.concatenate(([0], ends[:-1] + 1))
        starts = starts[starts + width + 3 < ends]  # room for " T x"
        starts = starts[buf[starts + width] == 32]
        kind = buf[starts + width + 1]
        starts = starts[(kind == ord("t")) | (kind == ord("T")) | (kind == ord("w"))
                        | (kind == ord("W"))]
        lut = np.full(256, 255, dtype=np.uint8)
        lut[48:58] = np.arange(10)
        lut[97:103] = np.arange(10, 16)
        lut[65:71] = np.arange(10, 16)
        # one hex digit column at a time: a (lines x width) matrix of u64
        # would cost 16 times the memory of the addresses
        addrs = np.zeros(len(starts), dtype=np.uint64)
        good = np.ones(len(starts), dtype=bool)
        for k in range(width):
            digit = lut[buf[starts + k]]
            good &= digit != 255
            addrs = addrs << np.uint64(4) | digit.astype(np.uint64)
        starts, addrs = starts[good], addrs[good]
        nonzero = addrs != 0
        addrs, starts = addrs[nonzero], starts[nonzero]
        order = np.argsort(addrs, kind="stable")  # the first line of an address wins
        addrs, starts = addrs[order], starts[order]
        first = np.ones(len(addrs), dtype=bool)
        first[1:] = addrs[1:] != addrs[:-1]
        self._parsed = (addrs[first], starts[first] + width + 3)
        return self._parsed

    def _near(self, ip: int) -> "tuple[int, int] | None":
        """``(address, name offset)`` of the symbol of ``ip`` from a text
        search, or None when it found none near ``ip``.

        The addresses that share the ip's first ``width - k`` hex digits
        are an interval that holds the ip: if a symbol in it lies at or
        below the ip, the greatest such is the greatest in the whole file."""
        width = self._width
        if ip >= 1 << (4 * width):
            return None
        if not self._lower:  # "\n" first: every line then follows one
            self._lower = b"\n" + self._data.lower()
        digits = f"{ip:0{width}x}".encode()
        for k in self._SPANS:
            if k >= width:
                break
            best = self._best_under(b"\n" + digits[:width - k], ip)
            if best is not None:
                return best
        return None

    def _best_under(self, prefix: bytes, ip: int) -> "tuple[int, int] | None":
        """The greatest text symbol at or below ``ip`` among the lines
        that start with ``prefix`` (after its newline), case aside."""
        data, width, best = self._data, self._width, None
        pos = self._lower.find(prefix)
        while pos >= 0:
            start = pos  # the line's offset in data: _lower has one byte more
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end
            head = data[start:start + width]
            if (start + width + 3 < end and data[start + width] == 32
                    and data[start + width + 1] in b"tTwW"
                    and not head.translate(None, b"0123456789abcdefABCDEF")):
                addr = int(head, 16)
                if 0 < addr <= ip and (best is None or addr > best[0]):
                    best = (addr, start + width + 3)
            pos = self._lower.find(prefix, end)
        return best

    def _name(self, start: int) -> str:
        end = self._data.find(b"\n", start)
        raw = self._data[start:end if end >= 0 else len(self._data)]
        return raw.split()[0].decode("utf-8", "replace") if raw.strip() else ""

    def resolve(self, ip: int) -> Location:
        found = None
        if self._data and self._searches < self.SEARCHES:
            self._searches += 1
            found = self._near(ip)
        if found is None and self._data:
            found = _nearest_in(self._table(), ip)
        if found is None:
            return Location(ip, "[kernel.kallsyms]", None)
        addr, name_at = found
        return Location(ip, "[kernel.kallsyms]", self._name(name_at), ip - addr)

    def lookup(self, name: str) -> "int | None":
        """The address of a kernel text symbol by name (first match)."""
        raw = name.encode()
        pos = self._data.find(b" " + raw + b"\n")
        while pos >= 0:
            line_start = self._data.rfind(b"\n", 0, pos) + 1
            parts = self._data[line_start:pos + len(raw) + 1].split()
            if len(parts) >= 3 and parts[1] in (b"t", b"T", b"w", b"W") and parts[2] == raw:
                return int(parts[0], 16) or None
            pos = self._data.find(b" " + raw + b"\n", pos + 1)
        return None


def _nearest_in(table, ip: int) -> "tuple[int, int] | None":
    """The ``(address, name offset)`` of :meth:`KernelSymbols._table` at the
    greatest address at or below ``ip``, or None."""
    import numpy as np

    addrs, name_at = table
    i = int(np.searchsorted(addrs, np.uint64(ip), side="right")) - 1
    return (int(addrs[i]), int(name_at[i])) if i >= 0 else None


def kernel_symbol_any(name: str, path: str = "/proc/kallsyms") -> "tuple[int, str] | None":
    """``(address, type letter)`` of a kernel symbol of any type (text, data,
    bss), or None when /proc/kallsyms does not list it (data symbols appear
    only with CONFIG_KALLSYMS_ALL) or hides addresses."""
    import re

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    m = re.search(rb"^([0-9a-fA-F]+) (\w) " + re.escape(name.encode()) + rb"$", data, re.M)
    if not m:
        return None
    return int(m.group(1), 16), m.group(2).decode()


@lru_cache(maxsize=1)
def kernel_symbols() -> KernelSymbols:
    return KernelSymbols()


class Symbolizer:
    """Symbolizes ips of many processes from their mapping records."""

    def __init__(self) -> None:
        self.spaces: dict[int, AddressSpace] = {}

    def add_mmap(self, pid: int, start: int, length: int, pgoff: int, path: str) -> None:
        self.spaces.setdefault(pid, AddressSpace()).add(Mapping(start, start + length, pgoff, path))

    def fork(self, parent: int, child: int) -> None:
        if parent in self.spaces and parent != child:
            self.spaces[child] = self.spaces[parent].copy()

    def exec(self, pid: int) -> None:
        self.spaces[pid] = AddressSpace()

    def add_proc_maps(self, pid: int) -> bool:
        """Read a live process's executable mappings from /proc (fallback when
        a recording lacks them)."""
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) < 6 or "x" not in parts[1]:
                        continue
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    self.add_mmap(pid, start, end - start, int(parts[2], 16), parts[5].strip())
            return True
        except OSError:
            return False

    def resolve(self, pid: int, ip: int) -> Location:
        if ip >= KERNEL_START:
            return kernel_symbols().resolve(ip)
        space = self.spaces.get(pid)
        m = space.find(ip) if space else None
        if m is None:
            return Location(ip, "[unknown]", None)
        obj = load_object(m.path) if m.path.startswith("/") else None
        if obj is None:
            return Location(ip, m.path, None)
        vaddr = obj.vaddr_of_offset(ip - m.start + m.pgoff)
        if vaddr is None:
            return Location(ip, m.path, None)
        fn = obj.function_at(vaddr)
        if fn is None:
            return Location(ip, m.path, None, 0, vaddr)
        return Location(ip, m.path, fn[0], fn[1], vaddr)

    def resolve_many(self, pairs: "Iterable[tuple[int, int]]") -> "dict[tuple[int, int], Location]":
        return {(pid, ip): self.resolve(pid, ip) for pid, ip in pairs}
