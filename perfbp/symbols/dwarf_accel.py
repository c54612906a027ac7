"""Name tables that compilers and tools put beside DWARF: which units name what.

DWARF's "accelerated access" (DWARF 5, 6.1) lets a reader find a name
without reading every unit.  Three tables are in use, and each is read here
only as far as "the units whose DIEs a name appears in":

* ``.debug_names`` (DWARF 5, 6.1.1): a hash table of names, each with
  entries of an abbreviated form (``DW_IDX_compile_unit``,
  ``DW_IDX_die_offset`` ...).  clang writes it (``-gpubnames``), and gdb
  (``gdb-add-index -dwarf-5``), whose entries name the unit only.  Names
  are hashed with the DJB hash (7.33), case-folded by gdb and LLVM.
* ``.gdb_index`` (gdb's manual, "Index Section Format", versions 7 to 9):
  ``gdb-add-index``, and ``ld.gold``/``lld --gdb-index``: a hash table of
  names (``mapped_index_string_hash``), each with a vector of unit numbers.
* ``.debug_pubnames`` (DWARF 4, 6.1.1; gcc ``-gpubnames``) and
  ``.debug_gnu_pubnames`` (``-ggnu-pubnames``, one more byte of flags an
  entry): a list of names per unit.

A table is used only where it covers every unit of ``.debug_info`` that
can hold variables (:attr:`NameTable.units`; the caller checks): a file
linked from objects built with and without ``-gpubnames`` has a table that
misses names.  The units a table gives are then scanned whole by
:func:`perfbp.symbols.dwarf_index.scan_units`, so an answer found through a
table is the one the full scan gives for those units.

Pure Python over bytes; no kernel.  A table that does not decode raises
ValueError (the caller then scans every unit).
"""

from __future__ import annotations

import struct
from typing import Callable, NamedTuple, Optional

from .dwarf_index import uleb128

__all__ = ["NameTable", "name_table", "SECTIONS"]

#: The sections read, in the order preferred.
SECTIONS = (".debug_names", ".gdb_index", ".debug_pubnames", ".debug_gnu_pubnames")

_DWARF64 = 0xFFFFFFFF
DW_IDX_compile_unit, DW_IDX_type_unit = 1, 2
DW_TAG_variable = 0x34
# the forms a .debug_names entry uses, by size (0x0c DW_FORM_flag, 0x19 flag_present)
_IDX_FIXED = {0x0b: 1, 0x11: 1, 0x0c: 1, 0x05: 2, 0x12: 2, 0x06: 4, 0x13: 4, 0x07: 8,
              0x14: 8, 0x20: 8, 0x19: 0, 0x1e: 16}
_IDX_ULEB = {0x0f, 0x15}  # DW_FORM_udata, DW_FORM_ref_udata
_IDX_SLEB = 0x0d          # DW_FORM_sdata


class NameTable(NamedTuple):
    """One name table of a file.

    Attributes:
        section: the section it was read from (``.debug_names`` ...).
        units: the offsets (in .debug_info) of the units it covers.
        lookup: ``lookup(name)``: the offsets of the units it lists ``name`` in.
    """

    section: str
    units: "frozenset[int]"
    lookup: "Callable[[str], set[int]]"


def name_table(sections: "dict[str, bytes]", strings: bytes,
               little_endian: bool) -> Optional[NameTable]:
    """The first table of :data:`SECTIONS` present in ``sections`` (their
    bytes by name), with ``strings`` the bytes of .debug_str; None when
    there is none.

    Raises:
        ValueError: the table does not decode.
    """
    order = "<" if little_endian else ">"
    try:
        for section in SECTIONS:
            data = sections.get(section)
            if not data:
                continue
            if section == ".debug_names":
                return _debug_names(data, strings, order)
            if section == ".gdb_index":
                return _gdb_index(data)
            return _pubnames(section, data, order)
    except (struct.error, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"{section} does not decode: {exc!r}") from None
    return None


def _cstring(data: bytes, pos: int) -> bytes:
    end = data.index(b"\0", pos)
    return data[pos:end]


def _initial_length(data: bytes, pos: int, order: str) -> "tuple[int, int, int]":
    """``(end, position past the length, offset size)`` of a DWARF unit_length."""
    (length,) = struct.unpack_from(order + "I", data, pos)
    if length == _DWARF64:
        (length,) = struct.unpack_from(order + "Q", data, pos + 4)
        return pos + 12 + length, pos + 12, 8
    return pos + 4 + length, pos + 4, 4


def _offsets(data: bytes, pos: int, count: int, size: int, order: str) -> "list[int]":
    return list(struct.unpack_from(f"{order}{count}{'Q' if size == 8 else 'I'}", data, pos))


# --------------------------------------------------------------------------
# .debug_names
# --------------------------------------------------------------------------

def djb_hash(name: bytes) -> int:
    """DWARF 5's name hash (7.33): ``h = h * 33 + c`` from 5381, in 32 bits."""
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


class _NameIndex(NamedTuple):
    """One name index of a .debug_names section (a section may hold several,
    one per unit as a linker concatenates them)."""

    cus: "list[int]"
    buckets: "list[int]"
    hashes: "list[int]"
    names: "list[int]"     # .debug_str offsets
    entries: "list[int]"   # offsets in the entry pool
    abbrevs: "dict[int, tuple[int, list]]"
    pool: int


def _debug_names(data: bytes, strings: bytes, order: str) -> NameTable:
    indexes, pos = [], 0
    while pos < len(data):
        end, p, off = _initial_length(data, pos, order)
        version, _pad, cu_count, ltu, ftu, nbuckets, nnames, abbrev_size, aug_size = \
            struct.unpack_from(order + "HHIIIIIII", data, p)
        if version != 5 or end > len(data):
            raise ValueError(f".debug_names version {version}, or longer than the section")
        p += 32 + aug_size
        cus = _offsets(data, p, cu_count, off, order)
        p += cu_count * off + ltu * off + ftu * 8
        buckets = _offsets(data, p, nbuckets, 4, order)
        p += nbuckets * 4
        hashes = _offsets(data, p, nnames, 4, order) if nbuckets else []
        p += len(hashes) * 4
        names = _offsets(data, p, nnames, off, order)
        p += nnames * off
        entries = _offsets(data, p, nnames, off, order)
        p += nnames * off
        abbrevs, a = {}, p
        while True:
            code, a = uleb128(data, a)
            if code == 0:
                break
            tag, a = uleb128(data, a)
            attrs = []
            while True:
                idx, a = uleb128(data, a)
                form, a = uleb128(data, a)
                if idx == 0 and form == 0:
                    break
                if form not in _IDX_FIXED and form not in _IDX_ULEB and form != _IDX_SLEB:
                    raise ValueError(f".debug_names form {form:#x}")
                attrs.append((idx, form))
            abbrevs[code] = (tag, attrs)
        indexes.append(_NameIndex(cus, buckets, hashes, names, entries, abbrevs,
                                  p + abbrev_size))
        pos = end

    def lookup(name: str) -> "set[int]":
        raw = name.encode()
        found: set[int] = set()
        for index in indexes:
            for i in _names_matching(index, raw, strings):
                found |= _entry_units(data, index, index.entries[i], order)
        return found

    return NameTable(".debug_names", frozenset(u for ix in indexes for u in ix.cus), lookup)


def _names_matching(index: _NameIndex, raw: bytes, strings: bytes) -> "list[int]":
    """The positions of ``raw`` in an index's names: through its hash table
    (the hash case-folded, as gdb and LLVM write it, then as the spec's
    figure has it), or one by one when it has none."""
    if not index.buckets:
        return [i for i, at in enumerate(index.names) if _cstring(strings, at) == raw]
    n = len(index.buckets)
    for h in dict.fromkeys((djb_hash(raw.lower()), djb_hash(raw))):
        i = index.buckets[h % n]
        while i and i <= len(index.hashes) and index.hashes[i - 1] % n == h % n:
            if index.hashes[i - 1] == h and _cstring(strings, index.names[i - 1]) == raw:
                return [i - 1]
            i += 1
    return []


def _entry_units(data: bytes, index: _NameIndex, at: int, order: str) -> "set[int]":
    """The units of the variable entries of one name (DWARF 5, 6.1.1.4.8)."""
    units, pos = set(), index.pool + at
    while True:
        code, pos = uleb128(data, pos)
        if code == 0:
            return units
        tag, attrs = index.abbrevs[code]
        cu: Optional[int] = 0 if len(index.cus) == 1 else None
        for idx, form in attrs:
            if form in _IDX_ULEB:
                value, pos = uleb128(data, pos)
            elif form == _IDX_SLEB:
                value, pos = uleb128(data, pos)  # (never a unit: read as unsigned)
            else:
                size = _IDX_FIXED[form]
                value = int.from_bytes(data[pos:pos + size], "little" if order == "<" else "big")
                pos += size
            if idx == DW_IDX_compile_unit:
                cu = value
            elif idx == DW_IDX_type_unit:
                cu = None
        if tag == DW_TAG_variable and cu is not None:
            units.add(index.cus[cu])


# --------------------------------------------------------------------------
# .gdb_index
# --------------------------------------------------------------------------

def gdb_index_hash(name: bytes) -> int:
    """gdb's ``mapped_index_string_hash`` (index version 5 and later):
    ``r = r * 67 + tolower(c) - 113`` in 32 bits."""
    r = 0
    for c in name.lower():
        r = (r * 67 + c - 113) & 0xFFFFFFFF
    return r


def _gdb_index(data: bytes) -> NameTable:
    version = struct.unpack_from("<I", data, 0)[0]  # always little-endian
    if not 7 <= version <= 9:
        raise ValueError(f".gdb_index version {version} (7 to 9 are read)")
    words = struct.unpack_from("<7I" if version >= 9 else "<6I", data, 0)
    cu_list, types_list, symbols, pool = words[1], words[2], words[4], words[-1]
    symbols_end = words[5] if version >= 9 else pool
    cus = [struct.unpack_from("<Q", data, cu_list + 16 * i)[0]
           for i in range((types_list - cu_list) // 16)]
    slots = (symbols_end - symbols) // 8
    if slots & (slots - 1) or pool > len(data):
        raise ValueError(f".gdb_index has {slots} hash slots (a power of 2 is needed)")

    def lookup(name: str) -> "set[int]":
        raw, units = name.encode(), set()
        if not slots:
            return units
        h = gdb_index_hash(raw)
        i, step = h & (slots - 1), ((h * 17) & (slots - 1)) | 1
        for _ in range(slots):
            name_at, vector_at = struct.unpack_from("<II", data, symbols + 8 * i)
            if name_at == 0 and vector_at == 0:
                break
            if _cstring(data, pool + name_at) == raw:
                (count,) = struct.unpack_from("<I", data, pool + vector_at)
                for value in struct.unpack_from(f"<{count}I", data, pool + vector_at + 4):
                    cu = value & 0xFFFFFF  # GDB_INDEX_CU_BITSIZE: 24
                    if cu < len(cus):  # beyond: a type unit
                        units.add(cus[cu])
                break
            i = (i + step) & (slots - 1)
        return units

    return NameTable(".gdb_index", frozenset(cus), lookup)


# --------------------------------------------------------------------------
# .debug_pubnames, .debug_gnu_pubnames
# --------------------------------------------------------------------------

def _pubnames(section: str, data: bytes, order: str) -> NameTable:
    flags = 1 if section == ".debug_gnu_pubnames" else 0  # a byte of kind after each offset
    table: dict[bytes, set[int]] = {}
    units, pos = set(), 0
    while pos < len(data):
        end, p, off = _initial_length(data, pos, order)
        version = struct.unpack_from(order + "H", data, p)[0]
        if version != 2 or end > len(data):
            raise ValueError(f"{section} version {version}, or longer than the section")
        unit = _offsets(data, p + 2, 1, off, order)[0]
        units.add(unit)
        p += 2 + 2 * off
        while p < end:
            if not _offsets(data, p, 1, off, order)[0]:
                break
            p += off + flags
            name = _cstring(data, p)
            p += len(name) + 1
            table.setdefault(name, set()).add(unit)
        pos = end

    def lookup(name: str) -> "set[int]":
        return set(table.get(name.encode(), ()))

    return NameTable(section, frozenset(units), lookup)
