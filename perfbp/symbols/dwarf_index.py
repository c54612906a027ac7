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

Each variable is listed with whether it is a definition and whether it is
external (:class:`Variable`), so that a lookup builds pyelftools DIEs only
for the definitions it needs: ``_PyRuntime`` is declared in 89 of
libpython's units and defined in one.  :func:`scan_units` reads only the
units it is given, those a name table (``.debug_names``, ``.gdb_index``,
``.debug_pubnames``: :mod:`perfbp.symbols.dwarf_accel`) names for a name.

A DIE the scan does not need is skipped without decoding its attributes
when its abbreviation allows: a leaf whose forms have fixed sizes by their
total, and a DIE with children by its ``DW_AT_sibling`` when the forms
before it have fixed sizes (structs, functions and arrays, as gcc writes
them): libpython's 120,000 top-level DIEs in 0.1 s instead of 0.3 s.

The abbreviation tables are read here too, not with pyelftools'
``DWARFInfo.get_abbrev_table``: pyelftools parses each table whole with
construct, 0.77 s for libpython's 146 tables, four times the whole scan.
Forms, tags and attributes are pyelftools' names (``ENUM_DW_FORM`` ...).

:func:`uleb128` and :func:`sleb128` are perfbp's LEB128 readers, for this
scan and for the line programs of :mod:`perfbp.symbols.lines`.

Pure Python over bytes; no kernel.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

from elftools.dwarf.enums import (
    ENUM_DW_AT,
    ENUM_DW_CHILDREN,
    ENUM_DW_FORM,
    ENUM_DW_TAG,
    ENUM_DW_UT,
)

__all__ = ["ScanError", "Variable", "scan_variables", "scan_units", "unit_offsets",
           "walk_variables", "variable_index", "uleb128", "sleb128"]

_DWARF64 = 0xFFFFFFFF  # a unit_length that announces the 64-bit format (7.4)


class ScanError(Exception):
    """The fast scan met a form or layout it does not know."""


class Variable(NamedTuple):
    """A variable at file scope, as the index lists it.

    Attributes:
        offset: its DIE's offset in .debug_info.
        definition: it has DW_AT_location, or neither DW_AT_declaration
            nor DW_AT_const_value (an ``extern`` declaration is not one).
        external: DW_AT_external, on it or on the declaration its
            DW_AT_specification completes.
    """

    offset: int
    definition: bool
    external: bool


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


def variable_index(dwarf) -> "dict[str, list[Variable]]":
    """``{name: [Variable, ...]}`` of the variables at file scope: by
    :func:`scan_variables`, or by :func:`walk_variables` where the scan
    meets something it does not know."""
    try:
        return scan_variables(dwarf)
    except ScanError:
        return walk_variables(dwarf)


def walk_variables(dwarf) -> "dict[str, list[Variable]]":
    """``{name: [Variable, ...]}`` of the variables at file scope of every
    compile unit, by pyelftools' DIE walk: a variable named there, or one
    whose DW_AT_specification names a declaration there (a C++ class's
    static member, whose declaration is inside the class, is left out)."""
    index: dict[str, list[Variable]] = {}
    for cu in dwarf.iter_CUs():
        top = cu.get_top_DIE()
        if top.tag not in ("DW_TAG_compile_unit", "DW_TAG_partial_unit"):
            continue
        named: dict[int, tuple[str, bool]] = {}
        for die in top.iter_children():
            attrs = die.attributes
            if die.tag != "DW_TAG_variable" or "DW_AT_abstract_origin" in attrs:
                continue
            external = _flag(die, "DW_AT_external")
            if "DW_AT_specification" in attrs:
                name, decl_external = named.get(
                    die.get_DIE_from_attribute("DW_AT_specification").offset, ("", False))
                external = external or decl_external
            else:
                name = _die_name(die)
                named[die.offset] = (name, external)
            if name:
                definition = "DW_AT_location" in attrs or (
                    "DW_AT_declaration" not in attrs and "DW_AT_const_value" not in attrs)
                index.setdefault(name, []).append(Variable(die.offset, definition, external))
    return index


def _flag(die, name: str) -> bool:
    a = die.attributes.get(name)
    return a is not None and bool(a.value)


def _die_name(die) -> str:
    a = die.attributes.get("DW_AT_name")
    value = None if a is None else a.value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""


def scan_variables(dwarf) -> "dict[str, list[Variable]]":
    """What :func:`walk_variables` finds, read straight from the bytes of
    .debug_info: each compile unit's top-level DIEs are decoded only as far
    as their tag, name, DW_AT_specification, DW_AT_sibling and what says
    whether they are definitions, ten times faster than building
    pyelftools DIEs.

    Raises:
        ScanError: a unit, form or string this scan does not handle
            (split DWARF's string indexes, DWARF 1); the caller walks instead.
    """
    return _Scan(dwarf).run()


def scan_units(dwarf, units: "Iterable[int]") -> "dict[str, list[Variable]]":
    """:func:`scan_variables` of the units at the offsets ``units`` only.

    Raises:
        ScanError: as :func:`scan_variables`, and an offset where no unit
            starts.
    """
    return _Scan(dwarf).run(units)


def unit_offsets(dwarf) -> "set[int]":
    """The offsets of the units of .debug_info that can hold variables
    (compile and partial units; not type or skeleton units).

    Raises:
        ScanError: a unit header this scan does not read.
    """
    return _Scan(dwarf).unit_starts()


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
_AT_LOCATION = ENUM_DW_AT["DW_AT_location"]
_AT_DECLARATION = ENUM_DW_AT["DW_AT_declaration"]
_AT_CONST_VALUE = ENUM_DW_AT["DW_AT_const_value"]
_AT_EXTERNAL = ENUM_DW_AT["DW_AT_external"]
_WANTED = frozenset({_AT_SIBLING, _AT_NAME, _AT_SPECIFICATION, _AT_ABSTRACT_ORIGIN,
                     _AT_LOCATION, _AT_DECLARATION, _AT_CONST_VALUE, _AT_EXTERNAL})
_TAG_VARIABLE = ENUM_DW_TAG["DW_TAG_variable"]
_UNITS_WITH_VARIABLES = (ENUM_DW_UT["DW_UT_compile"], ENUM_DW_UT["DW_UT_partial"])
_CHILDREN_YES = ENUM_DW_CHILDREN["DW_CHILDREN_yes"]
_FLAG_PRESENT = ENUM_DW_FORM["DW_FORM_flag_present"]


class _Abbrev(NamedTuple):
    """One abbreviation, with how to step over a DIE of it unread: a leaf
    by ``total`` bytes, a DIE with children through the ``sibling_size``
    bytes at ``sibling_at`` (a unit-relative DW_AT_sibling)."""

    tag: int
    children: bool
    total: Optional[int]       # the attributes' bytes, when every form is fixed
    attrs: list                # (DW_AT, DW_FORM, size or None)
    sibling_at: Optional[int]  # the DW_AT_sibling's offset, when the forms before are fixed
    sibling_size: int


class _Table(NamedTuple):
    """An abbreviation table, and the codes whose DIEs are stepped over
    unread: ``leaves`` by their size, ``siblings`` through their
    DW_AT_sibling (``(offset, size)`` of it), the ``top_`` ones at the top
    level of a unit, where variables are read."""

    specs: "dict[int, _Abbrev]"
    leaves: "dict[int, int]"
    siblings: "dict[int, tuple[int, int]]"
    top_leaves: "dict[int, int]"
    top_siblings: "dict[int, tuple[int, int]]"

    @classmethod
    def of(cls, specs: "dict[int, _Abbrev]") -> "_Table":
        leaves = {c: a.total for c, a in specs.items()
                  if not a.children and a.total is not None}
        siblings = {c: (a.sibling_at, a.sibling_size) for c, a in specs.items()
                    if a.children and a.sibling_at is not None}
        variables = {c for c, a in specs.items() if a.tag == _TAG_VARIABLE}
        return cls(specs, leaves, siblings,
                   {c: n for c, n in leaves.items() if c not in variables},
                   {c: j for c, j in siblings.items() if c not in variables})


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
        self.tables: dict[tuple, _Table] = {}
        self.sizes: dict[int, int] = {}
        self.index: dict[str, list[Variable]] = {}

    def run(self, units: "Optional[Iterable[int]]" = None) -> "dict[str, list[Variable]]":
        """Index every unit, or the units at the offsets ``units``."""
        unit = 0
        try:
            if units is None:
                while unit < len(self.info):
                    end, pos, table = self.unit_header(unit)
                    if table is not None:
                        self.unit(unit, pos, end, table)
                    unit = end
                return self.index
            starts = self.unit_starts()
            for unit in sorted(set(units)):
                if unit not in starts:
                    raise ScanError("no unit starts there")
                end, pos, table = self.unit_header(unit)
                self.unit(unit, pos, end, table)
        except (IndexError, KeyError, ValueError) as exc:
            raise ScanError(f"in the unit at offset {unit:#x}: {exc!r}") from None
        return self.index

    def unit_starts(self) -> "set[int]":
        """The offsets of the units that can hold variables."""
        starts, unit = set(), 0
        try:
            while unit < len(self.info):
                end, _pos, layout = self.unit_layout(unit)
                if layout is not None:
                    starts.add(unit)
                unit = end
        except (IndexError, KeyError, ValueError) as exc:
            raise ScanError(f"in the unit at offset {unit:#x}: {exc!r}") from None
        return starts

    def unit_layout(self, unit: int) -> "tuple[int, int, Optional[tuple]]":
        """``(end, offset of the top DIE, (abbreviation table's offset,
        address size, offset size, DW_FORM_ref_addr's size))`` of the unit at
        ``unit`` (DWARF 5, 7.5.1), the last None for a unit that holds no
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
        return end, pos, (abbrev_off, addr_size, off_size,
                          addr_size if version == 2 else off_size)

    def unit_header(self, unit: int) -> "tuple[int, int, Optional[_Table]]":
        """``(end, offset of the top DIE, abbreviation table)`` of the unit at
        ``unit``, the table None for a unit that holds no variables; the
        form sizes set for the unit."""
        end, pos, layout = self.unit_layout(unit)
        if layout is None:
            return end, pos, None
        abbrev_off, addr_size, off_size, ref_addr_size = layout
        forms, sizes = self.forms, self.sizes
        sizes.clear()
        sizes.update(self.fixed)
        sizes.update(dict.fromkeys(forms["offset"], off_size))
        sizes[forms["addr"]] = addr_size
        sizes[forms["ref_addr"]] = ref_addr_size
        return end, pos, self.abbrev_table(abbrev_off, layout[1:])

    def abbrev_table(self, offset: int, unit_sizes: tuple) -> "_Table":
        """The abbreviations of the table at ``offset`` (DWARF 5, 7.5.3)."""
        key = (offset, unit_sizes)
        if key in self.tables:
            return self.tables[key]
        abbrev, sizes, cu_refs = self.abbrev, self.sizes, self.forms["cu_ref"]
        implicit_const = self.forms["implicit_const"]
        table, pos = {}, offset
        while True:
            code, pos = uleb128(abbrev, pos)
            if code == 0:
                break
            tag, pos = uleb128(abbrev, pos)
            children = abbrev[pos] == _CHILDREN_YES
            pos += 1
            attrs, total, sibling_at, sibling_size = [], 0, None, 0
            while True:
                attr, form = abbrev[pos], abbrev[pos + 1]  # one byte each, mostly
                if attr < 0x80 and form < 0x80:
                    pos += 2
                else:
                    attr, pos = uleb128(abbrev, pos)
                    form, pos = uleb128(abbrev, pos)
                if attr == 0 and form == 0:
                    break
                if form == implicit_const:  # an SLEB128 in the abbrev
                    _value, pos = uleb128(abbrev, pos)  # (skipped alike)
                size = sizes.get(form)
                if attr == _AT_SIBLING and form in cu_refs and size and total is not None:
                    sibling_at, sibling_size = total, size
                attrs.append((attr, form, size))
                total = None if total is None or size is None else total + size
            table[code] = _Abbrev(tag, children, total, attrs, sibling_at, sibling_size)
        self.tables[key] = found = _Table.of(table)
        return found

    def unit(self, unit: int, pos: int, end: int, table: "_Table") -> None:
        """Index the variables among the children of the unit's top DIE."""
        info, order, specs = self.info, self.order, table.specs
        code, pos = uleb128(info, pos)
        pos, _got = self.read_attrs(pos, specs[code])
        if not specs[code].children:
            return
        named: dict[int, tuple[str, bool]] = {}
        depth = 0  # below the top-level DIEs, while skipping a subtree
        leaves, siblings = table.top_leaves, table.top_siblings
        while pos < end:
            die = pos
            code = info[pos]
            if code < 0x80:
                pos += 1
            else:
                code, pos = uleb128(info, pos)
            if code == 0:
                if depth == 0:
                    break
                depth -= 1
                if depth == 0:
                    leaves, siblings = table.top_leaves, table.top_siblings
                continue
            size = leaves.get(code)  # stepped over unread if it can be
            if size is not None:
                pos += size
                continue
            jump = siblings.get(code)
            if jump is not None:
                at = pos + jump[0]
                sibling = unit + int.from_bytes(info[at:at + jump[1]], order)
                if not at < sibling <= end:
                    raise ScanError(f"DW_AT_sibling {sibling:#x} at {die:#x}")
                pos = sibling
                continue
            spec = specs[code]
            pos, got = self.read_attrs(pos, spec)
            if depth == 0 and spec.tag == _TAG_VARIABLE and _AT_ABSTRACT_ORIGIN not in got:
                self.variable(unit, die, got, named)
            if spec.children:
                if _AT_SIBLING in got:
                    sibling = self.ref_target(unit, got[_AT_SIBLING])
                    if not pos <= sibling <= end:
                        raise ScanError(f"DW_AT_sibling {sibling:#x} at {die:#x}")
                    pos = sibling
                else:
                    depth += 1
                    leaves, siblings = table.leaves, table.siblings

    def variable(self, unit: int, die: int, got: dict,
                 named: "dict[int, tuple[str, bool]]") -> None:
        """Index one top-level DW_TAG_variable: ``named`` holds the names
        (and DW_AT_external) of the unit's variables so far, for the
        definitions that complete them by DW_AT_specification."""
        external = _AT_EXTERNAL in got and (got[_AT_EXTERNAL][0] == _FLAG_PRESENT
                                            or bool(got[_AT_EXTERNAL][1]))
        if _AT_SPECIFICATION in got:
            name, decl_external = named.get(self.ref_target(unit, got[_AT_SPECIFICATION]),
                                            ("", False))
            external = external or decl_external
        else:
            name = self.name_of(got) or ""
            named[die] = (name, external)
        if name:
            definition = _AT_LOCATION in got or (
                _AT_DECLARATION not in got and _AT_CONST_VALUE not in got)
            self.index.setdefault(name, []).append(Variable(die, definition, external))

    def read_attrs(self, pos: int, spec) -> "tuple[int, dict]":
        """Past one DIE's attributes; ``{DW_AT: (DW_FORM, value)}`` of those
        this scan reads (a string's value is its bytes, a block's None)."""
        info, forms, order, wanted = self.info, self.forms, self.order, _WANTED
        got = {}
        for attr, form, size in spec.attrs:
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
                if attr in wanted:
                    got[attr] = (form, None)
            elif form in forms["block"]:
                n = forms["block"][form]
                pos += n + int.from_bytes(info[pos:pos + n], order)
                if attr in wanted:
                    got[attr] = (form, None)
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
