"""Global variables by name, read fast from the bytes of ``.debug_info``.

``.debug_info`` is a run of units (DWARF 5, 7.5.1), one per compiled file.
A unit is a tree of DIEs (debugging information entries) written depth
first: each DIE is an *abbreviation code* followed by its attribute values,
and the code names an entry of the unit's table in ``.debug_abbrev`` that
gives the DIE's tag, whether children follow it (closed by a 0 code), and
its attributes as ``(DW_AT, DW_FORM)`` pairs.  The form says how each value
is laid out: a fixed number of bytes, a LEB128 number, a NUL-terminated
string, a block with its length in front.

The variables a watch can name are the ``DW_TAG_variable`` DIEs at file
scope: the children of each unit's top DIE.  :func:`scan_variables` decodes
only those top-level DIEs, only as far as their tag, name,
``DW_AT_specification`` and ``DW_AT_sibling``, and skips their subtrees by
``DW_AT_sibling`` (or, without it, by the sizes of their forms).  That is ten
times faster than building pyelftools DIEs (libpython's 9 MB of DWARF: 0.2 s
against 3 s for :func:`walk_variables`, the pyelftools walk that is its
fallback and, in the tests, its check).

The abbreviation tables are read here too, not with pyelftools'
``DWARFInfo.get_abbrev_table``: pyelftools parses each table whole with
construct, 0.77 s for libpython's 146 tables, four times the whole scan.
Forms, tags and attributes are pyelftools' names (``ENUM_DW_FORM`` ...).

:func:`uleb128` and :func:`sleb128` are perfbp's LEB128 readers, for this
scan and for the line programs of :mod:`perfbp.symbols.lines`.

Pure Python over bytes; no kernel.
"""

from __future__ import annotations

from typing import Optional

from elftools.dwarf.enums import (
    ENUM_DW_AT,
    ENUM_DW_CHILDREN,
    ENUM_DW_FORM,
    ENUM_DW_TAG,
    ENUM_DW_UT,
)

__all__ = ["ScanError", "scan_variables", "walk_variables", "variable_index",
           "uleb128", "sleb128"]

_DWARF64 = 0xFFFFFFFF  # a unit_length that announces the 64-bit format (7.4)


class ScanError(Exception):
    """The fast scan met a form or layout it does not know."""


def uleb128(data: bytes, pos: int) -> "tuple[int, int]":
    """The unsigned LEB128 number at ``data[pos]`` and the offset past it
    (DWARF 5, 7.6: seven bits a byte, low first, the high bit set on all
    bytes but the last)."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def sleb128(data: bytes, pos: int) -> "tuple[int, int]":
    """The signed LEB128 number at ``data[pos]`` and the offset past it: the
    unsigned reading, less ``2**bits`` when the last byte's bit 6 (the sign)
    is set."""
    value, end = uleb128(data, pos)
    if data[end - 1] & 0x40:
        value -= 1 << (7 * (end - pos))
    return value, end


def variable_index(dwarf) -> "dict[str, list[int]]":
    """``{name: [DIE offset, ...]}`` of the variables at file scope: by
    :func:`scan_variables`, or by :func:`walk_variables` where the scan
    meets something it does not know."""
    try:
        return scan_variables(dwarf)
    except ScanError:
        return walk_variables(dwarf)


def walk_variables(dwarf) -> "dict[str, list[int]]":
    """``{name: [DIE offset, ...]}`` of the variables at file scope of every
    compile unit, by pyelftools' DIE walk: a variable named there, or one
    whose DW_AT_specification names a declaration there (a C++ class's
    static member, whose declaration is inside the class, is left out)."""
    index: dict[str, list[int]] = {}
    for cu in dwarf.iter_CUs():
        top = cu.get_top_DIE()
        if top.tag not in ("DW_TAG_compile_unit", "DW_TAG_partial_unit"):
            continue
        named: dict[int, str] = {}
        for die in top.iter_children():
            if die.tag != "DW_TAG_variable" or "DW_AT_abstract_origin" in die.attributes:
                continue
            if "DW_AT_specification" in die.attributes:
                name = named.get(die.get_DIE_from_attribute("DW_AT_specification").offset)
            else:
                name = named[die.offset] = _die_name(die)
            if name:
                index.setdefault(name, []).append(die.offset)
    return index


def _die_name(die) -> str:
    a = die.attributes.get("DW_AT_name")
    value = None if a is None else a.value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""


def scan_variables(dwarf) -> "dict[str, list[int]]":
    """What :func:`walk_variables` finds, read straight from the bytes of
    .debug_info: each compile unit's top-level DIEs are decoded only as far
    as their tag, name, DW_AT_specification and DW_AT_sibling (which skips
    their children), ten times faster than building pyelftools DIEs.

    Raises:
        ScanError: a unit, form or string this scan does not handle
            (split DWARF's string indexes, DWARF 1); the caller walks instead.
    """
    return _Scan(dwarf).run()


def _section_bytes(sec) -> bytes:
    if sec is None:
        return b""
    sec.stream.seek(0)
    return sec.stream.read()


def _forms() -> dict:
    """DW_FORM codes by how an entry's bytes are laid out."""
    F = ENUM_DW_FORM

    def codes(*names):
        return {F[n] for n in names if n in F}

    return {
        1: codes("DW_FORM_data1", "DW_FORM_ref1", "DW_FORM_flag", "DW_FORM_strx1",
                 "DW_FORM_addrx1"),
        2: codes("DW_FORM_data2", "DW_FORM_ref2", "DW_FORM_strx2", "DW_FORM_addrx2"),
        3: codes("DW_FORM_strx3", "DW_FORM_addrx3"),
        4: codes("DW_FORM_data4", "DW_FORM_ref4", "DW_FORM_strx4", "DW_FORM_addrx4",
                 "DW_FORM_ref_sup4"),
        8: codes("DW_FORM_data8", "DW_FORM_ref8", "DW_FORM_ref_sig8", "DW_FORM_ref_sup8"),
        16: codes("DW_FORM_data16"),
        0: codes("DW_FORM_flag_present", "DW_FORM_implicit_const"),
        "offset": codes("DW_FORM_strp", "DW_FORM_line_strp", "DW_FORM_sec_offset",
                        "DW_FORM_GNU_ref_alt", "DW_FORM_GNU_strp_alt", "DW_FORM_strp_sup"),
        "leb": codes("DW_FORM_udata", "DW_FORM_sdata", "DW_FORM_ref_udata", "DW_FORM_strx",
                     "DW_FORM_addrx", "DW_FORM_loclistx", "DW_FORM_rnglistx",
                     "DW_FORM_GNU_addr_index", "DW_FORM_GNU_str_index"),
        "block": {F["DW_FORM_block1"]: 1, F["DW_FORM_block2"]: 2, F["DW_FORM_block4"]: 4},
        "uleb_block": codes("DW_FORM_block", "DW_FORM_exprloc"),
        "cu_ref": codes("DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8",
                        "DW_FORM_ref_udata"),
        "string": F["DW_FORM_string"], "strp": F["DW_FORM_strp"],
        "line_strp": F["DW_FORM_line_strp"], "addr": F["DW_FORM_addr"],
        "ref_addr": F["DW_FORM_ref_addr"], "indirect": F["DW_FORM_indirect"],
        "implicit_const": F["DW_FORM_implicit_const"],
    }


_AT_SIBLING = ENUM_DW_AT["DW_AT_sibling"]
_AT_NAME = ENUM_DW_AT["DW_AT_name"]
_AT_SPECIFICATION = ENUM_DW_AT["DW_AT_specification"]
_AT_ABSTRACT_ORIGIN = ENUM_DW_AT["DW_AT_abstract_origin"]
_WANTED = frozenset({_AT_SIBLING, _AT_NAME, _AT_SPECIFICATION, _AT_ABSTRACT_ORIGIN})
_TAG_VARIABLE = ENUM_DW_TAG["DW_TAG_variable"]
_UNITS_WITH_VARIABLES = (ENUM_DW_UT["DW_UT_compile"], ENUM_DW_UT["DW_UT_partial"])
_CHILDREN_YES = ENUM_DW_CHILDREN["DW_CHILDREN_yes"]


class _Scan:
    """One scan of a file's .debug_info: the sections' bytes, the
    abbreviation tables decoded so far, and the byte size of each form in
    the unit at hand (addresses and offsets depend on the unit's header)."""

    def __init__(self, dwarf) -> None:
        self.forms = forms = _forms()
        self.fixed = {code: size for size in (0, 1, 2, 3, 4, 8, 16) for code in forms[size]}
        self.info = _section_bytes(dwarf.debug_info_sec)
        self.abbrev = _section_bytes(dwarf.debug_abbrev_sec)
        self.strs = _section_bytes(dwarf.debug_str_sec)
        self.line_strs = _section_bytes(getattr(dwarf, "debug_line_str_sec", None))
        self.order = "little" if dwarf.config.little_endian else "big"
        self.tables: dict[tuple, dict] = {}
        self.sizes: dict[int, int] = {}
        self.index: dict[str, list[int]] = {}

    def run(self) -> "dict[str, list[int]]":
        unit = 0
        try:
            while unit < len(self.info):
                end, pos, table = self.unit_header(unit)
                if table is not None:
                    self.unit(unit, pos, end, table)
                unit = end
        except (IndexError, KeyError, ValueError) as exc:
            raise ScanError(f"in the unit at offset {unit:#x}: {exc!r}") from None
        return self.index

    def unit_header(self, unit: int) -> "tuple[int, int, Optional[dict]]":
        """``(end, offset of the top DIE, abbreviation table)`` of the unit at
        ``unit`` (DWARF 5, 7.5.1), the table None for a unit that holds no
        variables (a type unit, a skeleton)."""
        info, order = self.info, self.order
        length = int.from_bytes(info[unit:unit + 4], order)
        pos, off_size = unit + 4, 4
        if length == _DWARF64:
            length = int.from_bytes(info[pos:pos + 8], order)
            pos, off_size = pos + 8, 8
        end = pos + length
        if length < 7 or end > len(info):
            raise ScanError("unit length")
        version = int.from_bytes(info[pos:pos + 2], order)
        pos += 2
        if version >= 5:
            unit_type, addr_size = info[pos], info[pos + 1]
            abbrev_off = int.from_bytes(info[pos + 2:pos + 2 + off_size], order)
            pos += 2 + off_size
            if unit_type not in _UNITS_WITH_VARIABLES:
                return end, pos, None
        elif version >= 2:
            abbrev_off = int.from_bytes(info[pos:pos + off_size], order)
            addr_size = info[pos + off_size]
            pos += off_size + 1
        else:
            raise ScanError(f"DWARF version {version}")
        ref_addr_size = addr_size if version == 2 else off_size
        forms, sizes = self.forms, self.sizes
        sizes.clear()
        sizes.update(self.fixed)
        sizes.update(dict.fromkeys(forms["offset"], off_size))
        sizes[forms["addr"]] = addr_size
        sizes[forms["ref_addr"]] = ref_addr_size
        return end, pos, self.abbrev_table(abbrev_off, (addr_size, off_size, ref_addr_size))

    def abbrev_table(self, offset: int, unit_sizes: tuple) -> dict:
        """``{code: (tag, has_children, fixed size or None, attrs)}``, with
        ``attrs`` a list of ``(DW_AT, DW_FORM, size or None)`` (DWARF 5, 7.5.3)."""
        key = (offset, unit_sizes)
        if key in self.tables:
            return self.tables[key]
        abbrev, sizes = self.abbrev, self.sizes
        implicit_const = self.forms["implicit_const"]
        table, pos = {}, offset
        while True:
            code, pos = uleb128(abbrev, pos)
            if code == 0:
                break
            tag, pos = uleb128(abbrev, pos)
            children = abbrev[pos] == _CHILDREN_YES
            pos += 1
            attrs, total = [], 0
            while True:
                attr, pos = uleb128(abbrev, pos)
                form, pos = uleb128(abbrev, pos)
                if attr == 0 and form == 0:
                    break
                if form == implicit_const:  # an SLEB128 in the abbrev
                    _value, pos = uleb128(abbrev, pos)  # (skipped alike)
                size = sizes.get(form)
                attrs.append((attr, form, size))
                total = None if total is None or size is None else total + size
            table[code] = (tag, children, total, attrs)
        self.tables[key] = table
        return table

    def unit(self, unit: int, pos: int, end: int, table: dict) -> None:
        """Index the variables among the children of the unit's top DIE."""
        info, index = self.info, self.index
        code, pos = uleb128(info, pos)
        pos, _got = self.read_attrs(pos, table[code])
        if not table[code][1]:
            return
        named: dict[int, str] = {}
        depth = 0  # below the top-level DIEs, while skipping a subtree
        while pos < end:
            die = pos
            code, pos = uleb128(info, pos)
            if code == 0:
                if depth == 0:
                    break
                depth -= 1
                continue
            spec = table[code]
            tag, children, total, _attrs = spec
            if depth and total is not None and not children:
                pos += total
                continue
            pos, got = self.read_attrs(pos, spec)
            if depth == 0 and tag == _TAG_VARIABLE and _AT_ABSTRACT_ORIGIN not in got:
                if _AT_SPECIFICATION in got:
                    name = named.get(self.ref_target(unit, got[_AT_SPECIFICATION]))
                else:
                    name = named[die] = self.name_of(got)
                if name:
                    index.setdefault(name, []).append(die)
            if children:
                if _AT_SIBLING in got:
                    sibling = self.ref_target(unit, got[_AT_SIBLING])
                    if not pos <= sibling <= end:
                        raise ScanError(f"DW_AT_sibling {sibling:#x} at {die:#x}")
                    pos = sibling
                else:
                    depth += 1

    def read_attrs(self, pos: int, spec) -> "tuple[int, dict]":
        """Past one DIE's attributes; ``{DW_AT: (DW_FORM, value)}`` of the
        four this scan reads (a string's value is its bytes)."""
        info, forms, order, wanted = self.info, self.forms, self.order, _WANTED
        got = {}
        for attr, form, size in spec[3]:
            if form == forms["indirect"]:
                form, pos = uleb128(info, pos)
                size = self.sizes.get(form)
            if size is not None:
                if attr in wanted:
                    got[attr] = (form, int.from_bytes(info[pos:pos + size], order))
                pos += size
            elif form in forms["leb"]:
                value, pos = uleb128(info, pos)
                if attr in wanted:
                    got[attr] = (form, value)
            elif form == forms["string"]:
                end = info.index(b"\0", pos)
                if attr in wanted:
                    got[attr] = (form, info[pos:end])
                pos = end + 1
            elif form in forms["uleb_block"]:
                length, pos = uleb128(info, pos)
                pos += length
            elif form in forms["block"]:
                n = forms["block"][form]
                pos += n + int.from_bytes(info[pos:pos + n], order)
            else:
                raise ScanError(f"form {form:#x}")
        return pos, got

    def name_of(self, got: dict) -> "Optional[str]":
        if _AT_NAME not in got:
            return None
        form, value = got[_AT_NAME]
        forms = self.forms
        if form == forms["string"]:
            raw = value
        elif form in (forms["strp"], forms["line_strp"]):
            data = self.strs if form == forms["strp"] else self.line_strs
            end = data.find(b"\0", value)
            if end < 0:
                raise ScanError("string offset out of the section")
            raw = data[value:end]
        else:  # DW_FORM_strx*: string offsets tables (split DWARF)
            raise ScanError(f"name in form {form:#x}")
        return raw.decode("utf-8", "replace")

    def ref_target(self, unit: int, ref) -> int:
        form, value = ref
        if form in self.forms["cu_ref"]:
            return unit + value
        if form == self.forms["ref_addr"]:
            return value
        raise ScanError(f"reference in form {form:#x}")
