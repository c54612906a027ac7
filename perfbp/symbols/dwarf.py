"""Members and elements of global variables, from DWARF type information.

``config.flags``, ``table[3].next``, ``grid[1][2]``: the expressions gdb's
``watch`` takes for the parts of a global variable, turned into a byte range
inside the variable (its offset from the variable's start and its size), as
the compiler laid it out.  The variable's address comes from elsewhere (the
symbol table and the load bias, as for a plain name): a watch on
``config.flags`` is ``address(config) + offset`` for ``size`` bytes.

What is read from the program's own file (or from its separate debug file,
found by build-id or ``.gnu_debuglink`` as gdb does):

* the ``DW_TAG_variable`` DIEs at file scope (a definition, or a declaration
  completed by a ``DW_AT_specification``), found by name through
  :mod:`perfbp.symbols.dwarf_file`: from the on-disk cache, a name table
  the toolchain wrote, or :mod:`perfbp.symbols.dwarf_index`'s scan of
  .debug_info's bytes (libpython's 9 MB of DWARF in 0.15 s; pyelftools'
  DIE walk, its fallback and its check in the tests, takes 3 s);
* with pyelftools, their types, through typedefs and ``const``/``volatile``/``restrict``/
  ``_Atomic``; struct, union and class members by ``DW_AT_name`` (anonymous
  members and base classes searched too) at ``DW_AT_data_member_location``;
  arrays by their ``DW_TAG_subrange_type`` children, one per dimension.

What a watch can and cannot reach, and so what is refused here: a watch sees
memory, not values, so pointers are never followed (``ptrs[2]`` is the
pointer's own 8 bytes; ``ptrs[2].x`` or ``p->x`` is refused: watch the address
the pointer holds instead).  A bitfield cannot be watched alone: the debug
registers see bytes, so a bitfield member gives its whole storage unit (the
``unsigned`` that holds ``mode:3``), marked ``bitfield=True``; writes to its
neighbours in that unit count as hits too.

A member resolved once is kept in the cache (:mod:`perfbp.symbols.dwarf_cache`)
under its canonical spelling (``table[3].next`` for ``table[0x3].next``):
the next run answers it without reading DWARF or importing pyelftools.

Pure Python over files; no kernel.
"""

from __future__ import annotations

import difflib
import errno
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, NamedTuple, Optional, Union

from . import dwarf_file
from .dwarf_cache import CachedMember
from .dwarf_file import DebugFile
from ..errors import InvalidBreakpoint, SymbolNotFound

__all__ = ["Member", "parse_expr", "resolve_member"]

EXAMPLES = "for example config.flags, table[3].next or grid[1][2]"
GRAMMAR = "VARIABLE followed by .MEMBER or [INDEX] parts"


@dataclass(frozen=True)
class Member:
    """A part of a global variable: where it lies inside the variable.

    Attributes:
        variable: the variable's name (``table``).
        expr: the expression as given (``table[3].next``).
        offset: the part's byte offset from the variable's start.
        size: its size in bytes (for a bitfield: its storage unit's).
        type_name: its C type, with the compiler's names for base types
            (``int``, ``struct node *``, ``long int[4]``, ``rec_t``).
        bitfield: the part is a bitfield: ``offset`` and ``size`` are those of
            the storage unit that holds its bits (a watch sees whole bytes).
    """

    variable: str
    expr: str
    offset: int
    size: int
    type_name: str
    bitfield: bool = False


# --------------------------------------------------------------------------
# The expression
# --------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX = re.compile(r"0[xX][0-9a-fA-F]+|0|[1-9][0-9]*")


def _bad_expr(expr: str, what: str) -> InvalidBreakpoint:
    return InvalidBreakpoint(f"cannot parse {expr!r}: {what}; write {GRAMMAR}, {EXAMPLES}",
                             expr=expr)


def parse_expr(expr: str) -> "tuple[str, list[Union[str, int]]]":
    """Split a member expression into the variable's name and its steps.

    The grammar is ``NAME ( '.' NAME | '[' INT ']' )*``, ``INT`` decimal or
    ``0x`` hex; blanks are allowed inside the brackets only.
    ``table[0x3].next`` gives ``("table", [3, "next"])``.

    Raises:
        InvalidBreakpoint: the expression does not follow the grammar (the
            message says where and what was expected).
    """
    text = expr.strip()
    m = _IDENT.match(text)
    if not m:
        raise _bad_expr(expr, "it names no variable" if not text else
                        f"{text[:1]!r} cannot start a variable name")
    name = m.group()
    steps: list[Union[str, int]] = []
    i = m.end()
    while i < len(text):
        ch = text[i]
        if ch == ".":
            m = _IDENT.match(text, i + 1)
            if not m:
                got = text[i + 1:i + 2]
                raise _bad_expr(expr, f"a member name must follow '.' at column {i + 1}"
                                + (f" (got {got!r})" if got else ""))
            steps.append(m.group())
            i = m.end()
        elif ch == "[":
            close = text.find("]", i + 1)
            inside = text[i + 1:close if close >= 0 else len(text)].strip()
            if close < 0:
                raise _bad_expr(expr, f"the '[' at column {i + 1} is not closed"
                                if inside else f"an index must follow '[' at column {i + 1}")
            if not _INDEX.fullmatch(inside):
                if re.fullmatch(r"0[0-9]+", inside):
                    why = f"index {inside!r} has a leading zero (octal in C?)"
                elif not inside:
                    why = f"the brackets at column {i + 1} hold no index"
                else:
                    why = f"index {inside!r} at column {i + 2} is not a number (decimal or 0x hex)"
                raise _bad_expr(expr, why)
            steps.append(int(inside, 0))
            i = close + 1
        elif text.startswith("->", i):
            raise InvalidBreakpoint(
                f"cannot resolve {expr!r}: '->' follows a pointer, and a watch sees "
                f"memory, not values, so it cannot follow pointers; watch the pointer "
                f"itself, or the address it holds", expr=expr)
        else:
            raise _bad_expr(expr, f"unexpected {ch!r} at column {i + 1}")
    return name, steps


# --------------------------------------------------------------------------
# The variables' DIEs (found by name by perfbp.symbols.dwarf_file)
# --------------------------------------------------------------------------

class _Var(NamedTuple):
    die: object            # the DIE that carries (or inherits) DW_AT_type
    type_die: object       # DW_AT_type, or None (a variable of unknown type)


def _variable(debug: DebugFile, entry) -> _Var:
    """The DIE of an index's variable, and its type (from the declaration
    a DW_AT_specification completes, when the definition has none)."""
    die = debug.dwarf.get_DIE_from_refaddr(entry.offset)
    if "DW_AT_type" in die.attributes:
        return _Var(die, _target(die))
    decl = die
    if "DW_AT_specification" in die.attributes:
        decl = die.get_DIE_from_attribute("DW_AT_specification")
    return _Var(die, _target(decl))


def _complete_type(debug: DebugFile, tag: str, name: str):
    """The first complete definition of struct/union/class ``name`` at
    file scope, or None (read on first use: only declared-only types,
    such as an ``extern`` variable's in a file built without -g, need it)."""
    if debug.complete_types is None:
        found: dict[tuple[str, str], object] = {}
        for cu in debug.dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag in _AGGREGATES and "DW_AT_declaration" not in die.attributes:
                    found.setdefault((die.tag, _name(die)), die)
        debug.complete_types = found
    return debug.complete_types.get((tag, name))


# --------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------

_AGGREGATES = ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type")
_QUALIFIERS = {"DW_TAG_const_type": "const", "DW_TAG_volatile_type": "volatile",
               "DW_TAG_restrict_type": "restrict", "DW_TAG_atomic_type": "_Atomic"}
_KEYWORDS = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
             "DW_TAG_class_type": "class", "DW_TAG_enumeration_type": "enum"}
# languages whose arrays start at 1 unless DW_AT_lower_bound says otherwise
# (DWARF 5, table 7.17 "Language default lower bound values")
_ONE_BASED = ("DW_LANG_Ada83", "DW_LANG_Ada95", "DW_LANG_Ada2005", "DW_LANG_Ada2012",
              "DW_LANG_Cobol74", "DW_LANG_Cobol85", "DW_LANG_Fortran77", "DW_LANG_Fortran90",
              "DW_LANG_Fortran95", "DW_LANG_Fortran03", "DW_LANG_Fortran08",
              "DW_LANG_Fortran18", "DW_LANG_Julia", "DW_LANG_Modula2", "DW_LANG_Modula3",
              "DW_LANG_Pascal83", "DW_LANG_PLI")


@lru_cache(maxsize=1)
def _one_based() -> "frozenset[int]":
    """The DW_LANG codes of :data:`_ONE_BASED` (pyelftools' enums are read
    on first use: a cached member needs none of pyelftools)."""
    from elftools.dwarf.enums import ENUM_DW_LANG

    return frozenset(ENUM_DW_LANG[name] for name in _ONE_BASED)


def _attr(die, name: str, default=None):
    a = die.attributes.get(name)
    return default if a is None else a.value


def _name(die) -> str:
    value = _attr(die, "DW_AT_name")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _target(die):
    """The type a typedef, qualifier, pointer or array refers to (None: void)."""
    if "DW_AT_type" not in die.attributes:
        return None
    return die.get_DIE_from_attribute("DW_AT_type")


def _peel(die, debug: DebugFile):
    """``die`` without typedefs and qualifiers, and with a declared-only
    struct replaced by its complete definition when the file has one."""
    while die is not None and (die.tag == "DW_TAG_typedef" or die.tag in _QUALIFIERS):
        die = _target(die)
    if die is not None and die.tag in _AGGREGATES and _attr(die, "DW_AT_declaration"):
        if "DW_AT_signature" in die.attributes:
            return _peel(die.get_DIE_from_attribute("DW_AT_signature"), debug)
        die = _complete_type(debug, die.tag, _name(die)) or die
    return die


class _Dim(NamedTuple):
    lower: int
    count: Optional[int]    # None: unknown (``int a[]``, a VLA)
    stride: Optional[int]   # DW_AT_byte_stride, if given


_CONSTANT_FORMS = {"DW_FORM_data1": 8, "DW_FORM_data2": 16, "DW_FORM_data4": 32,
                   "DW_FORM_data8": 64, "DW_FORM_sdata": 0, "DW_FORM_udata": 0,
                   "DW_FORM_implicit_const": 0}


def _constant(die, name: str) -> Optional[int]:
    """A constant-class attribute, sign-extended; None when absent or not a
    constant (an expression or a reference: a variable-length array)."""
    a = die.attributes.get(name)
    if a is None or a.form not in _CONSTANT_FORMS or not isinstance(a.value, int):
        return None
    bits = _CONSTANT_FORMS[a.form]
    value = a.value
    if bits and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _dims(array) -> "list[_Dim]":
    lang = _attr(array.cu.get_top_DIE(), "DW_AT_language")
    default_lower = 1 if lang in _one_based() else 0
    dims = []
    for sub in array.iter_children():
        if sub.tag != "DW_TAG_subrange_type":
            continue
        lower = _constant(sub, "DW_AT_lower_bound")
        lower = default_lower if lower is None else lower
        count = _constant(sub, "DW_AT_count")
        if count is None:
            upper = _constant(sub, "DW_AT_upper_bound")
            if upper is not None:
                count = max(upper - lower + 1, 0)
        dims.append(_Dim(lower, count, _constant(sub, "DW_AT_byte_stride")))
    return dims or [_Dim(default_lower, None, None)]


class _View(NamedTuple):
    """A type as reached by an expression: a type DIE as written (typedefs
    kept, for its name), or the rows of an array: ``array`` with its first
    ``skip`` dimensions already indexed."""

    die: object
    skip: int = 0


def _array_of(view: _View, debug: DebugFile):
    """``(array DIE, its dimensions, dimensions already indexed)`` or None."""
    die = view.die if view.skip else _peel(view.die, debug)
    if die is None or die.tag != "DW_TAG_array_type":
        return None
    return die, _dims(die), view.skip


def _size(view: _View, debug: DebugFile) -> Optional[int]:
    arr = _array_of(view, debug)
    if arr is not None:
        array, dims, skip = arr
        if skip == 0 and _attr(array, "DW_AT_byte_size") is not None:
            return _attr(array, "DW_AT_byte_size")
        if dims[skip].stride is not None:
            n = dims[skip].count
            return None if n is None else n * dims[skip].stride
        total = _size(_View(_target(array)), debug)
        for d in dims[skip:]:
            if total is None or d.count is None:
                return None
            total *= d.count
        return total
    die = _peel(view.die, debug)
    if die is None:
        return None
    size = _attr(die, "DW_AT_byte_size")
    if size is None and die.tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type",
                                    "DW_TAG_rvalue_reference_type"):
        return die.cu["address_size"]
    if size is None and _attr(die, "DW_AT_bit_size") is not None:
        return (_attr(die, "DW_AT_bit_size") + 7) // 8
    return size


def _join(base: str, inner: str) -> str:
    if not inner:
        return base
    return base + inner if inner.startswith("[") else f"{base} {inner}"


def _dims_text(dims: "list[_Dim]") -> str:
    return "".join(f"[{'' if d.count is None else d.count}]" for d in dims)


def _type_name(die, inner: str = "") -> str:
    """A C spelling of the type ``die`` (None: void) around the declarator
    ``inner``: ``struct node *``, ``long[3][4]``, ``int (*)(int)``."""
    if die is None:
        return _join("void", inner)
    tag = die.tag
    if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type", "DW_TAG_rvalue_reference_type"):
        mark = {"DW_TAG_pointer_type": "*", "DW_TAG_reference_type": "&"}.get(tag, "&&")
        return _type_name(_target(die), mark + inner)
    if tag in _QUALIFIERS:
        word = _QUALIFIERS[tag]
        target = _target(die)
        if target is not None and target.tag == "DW_TAG_pointer_type":
            return _type_name(target, f"{word} {inner}".strip())
        return f"{word} " + _type_name(target, inner)
    if tag == "DW_TAG_array_type":
        if inner[:1] in ("*", "&"):
            inner = f"({inner})"
        return _type_name(_target(die), inner + _dims_text(_dims(die)))
    if tag == "DW_TAG_subroutine_type":
        params = []
        for child in die.iter_children():
            if child.tag == "DW_TAG_formal_parameter":
                params.append(_type_name(_target(child)))
            elif child.tag == "DW_TAG_unspecified_parameters":
                params.append("...")
        if not params and _attr(die, "DW_AT_prototyped"):
            params = ["void"]
        inner = f"({inner})" if inner else ""
        return _type_name(_target(die), f"{inner}({', '.join(params)})")
    if tag in _KEYWORDS:
        return _join(f"{_KEYWORDS[tag]} {_name(die) or '{...}'}", inner)
    return _join(_name(die) or tag.replace("DW_TAG_", "<") + ">", inner)


def _view_name(view: _View, debug: DebugFile) -> str:
    if view.skip:
        array, dims, skip = _array_of(view, debug)
        return _type_name(_target(array), _dims_text(dims[skip:]))
    return _type_name(view.die)


# --------------------------------------------------------------------------
# Members
# --------------------------------------------------------------------------

def _member_location(member, expr: str) -> int:
    """DW_AT_data_member_location: a constant, or (DWARF 2) an expression,
    ``DW_OP_plus_uconst N``; absent in a union: 0."""
    a = member.attributes.get("DW_AT_data_member_location")
    if a is None:
        return 0
    if isinstance(a.value, int):
        return a.value
    from elftools.dwarf.dwarf_expr import DWARFExprParser

    ops = DWARFExprParser(member.cu.structs).parse_expr(a.value)
    names = [op.op_name for op in ops]
    if names == ["DW_OP_plus_uconst"]:
        return ops[0].args[0]
    if names in (["DW_OP_constu", "DW_OP_plus"], ["DW_OP_lit0", "DW_OP_plus"]):
        return ops[0].args[0] if ops[0].args else 0
    raise InvalidBreakpoint(
        f"cannot resolve {expr!r}: the member {_name(member) or '(anonymous)'} is placed "
        f"by a DWARF expression ({' '.join(names)}), as a virtual base class is, which "
        f"depends on the object's contents; watch it by address", expr=expr)


def _members(aggregate, debug: DebugFile) -> "Iterator[tuple[str, object, object]]":
    """``(name, member DIE, None)`` for every named data member, and
    ``("", member DIE, its type)`` for an anonymous struct/union member or a
    base class, whose members are reached through it."""
    for child in aggregate.iter_children():
        if child.tag == "DW_TAG_member":
            name = _name(child)
            if name:
                yield name, child, None
            else:
                inner = _peel(_target(child), debug)
                if inner is not None and inner.tag in _AGGREGATES:
                    yield "", child, inner
        elif child.tag == "DW_TAG_inheritance":
            base = _peel(_target(child), debug)
            if base is not None and base.tag in _AGGREGATES:
                yield "", child, base


def _find_member(aggregate, name: str, debug: DebugFile, expr: str, depth: int = 0):
    """``(member DIE, offset of its container from aggregate)`` or None."""
    nested = []
    for mname, member, inner in _members(aggregate, debug):
        if inner is None:
            if mname == name:
                return member, 0
        else:
            nested.append((member, inner))
    if depth < 16:
        for member, inner in nested:
            found = _find_member(inner, name, debug, expr, depth + 1)
            if found is not None:
                return found[0], found[1] + _member_location(member, expr)
    return None


def _member_names(aggregate, debug: DebugFile, depth: int = 0) -> "list[str]":
    names = []
    for mname, _member, inner in _members(aggregate, debug):
        if inner is None:
            names.append(mname)
        elif depth < 16:
            names += _member_names(inner, debug, depth + 1)
    return names


def _bitfield_unit(member, container_size: Optional[int], base: int,
                   debug: DebugFile) -> "tuple[int, int]":
    """``(offset, size)`` of the storage unit that holds a bitfield's bits,
    from the start of the member's container (``base`` is the offset of the
    container's part that declares it, for anonymous members)."""
    bit_size = _attr(member, "DW_AT_bit_size")
    unit = _attr(member, "DW_AT_byte_size") or _size(_View(_target(member)), debug) or 1
    if "DW_AT_data_bit_offset" in member.attributes:  # DWARF 4+: from the start
        first_bit = _attr(member, "DW_AT_data_bit_offset")
    else:  # DWARF 2/3: from the most significant bit of the storage unit
        loc = _member_location(member, "")
        bit_offset = _attr(member, "DW_AT_bit_offset", 0)
        if debug.little_endian:
            first_bit = loc * 8 + unit * 8 - bit_offset - bit_size
        else:
            first_bit = loc * 8 + bit_offset
    first_bit += base * 8
    last_bit = first_bit + bit_size - 1
    start = first_bit // (8 * unit) * unit
    end = (last_bit // (8 * unit) + 1) * unit
    if container_size is not None:
        end = min(end, container_size)
    return start, end - start


# --------------------------------------------------------------------------
# Resolving
# --------------------------------------------------------------------------

def resolve_member(path: str, expr: str) -> Member:
    """Where the part ``expr`` of a global variable lies, from the DWARF of
    the ELF file ``path``: its offset inside the variable and its size.

    ``expr`` is gdb's spelling (see :func:`parse_expr`): ``config.flags``,
    ``table[3].next``, ``grid[1][2]``, ``recs[0].name[3]``, or a bare name.
    Typedefs and qualifiers are looked through; pointers are not followed
    (``ptrs[2]`` is the pointer itself).  The variable's address is not
    part of the answer: take it from the symbol table, as for a plain name.

    Raises:
        SymbolNotFound: no DWARF in the file (rebuild with ``-g``), no such
            global variable (with the closest names), no such member (with
            the members there are), or a name that means several variables
            whose layouts differ.
        InvalidBreakpoint: a malformed expression, an index out of the
            array's bounds, an index on something that is not an array, a
            member of something that is not a struct, class or union, a
            pointer to follow, or a part whose size is unknown.
    """
    name, steps = parse_expr(expr)
    canonical = name + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)
    where = dwarf_file.origin(path)  # None: the full load says why
    store = dwarf_file.store_for(where.key, where.source) if where is not None else None
    if store is not None and canonical in store.members:
        m = store.members[canonical]
        return Member(m.variable, expr.strip(), m.offset, m.size, m.type_name, m.bitfield)
    debug = dwarf_file.load(path)
    if store is not None and store.source != debug.source:  # a later debug file's
        store = dwarf_file.store_for(where.key, debug.source)
    debug.store = store
    try:
        member = _resolve_in(debug, name, steps, expr)
        if store is not None:
            store.add_member(canonical, CachedMember(member.variable, member.offset,
                                                     member.size, member.type_name,
                                                     member.bitfield))
        return member
    finally:
        if store is not None and store.dirty:
            dwarf_file.remember(store)


def _resolve_in(debug: DebugFile, name: str, steps: list, expr: str) -> Member:
    from elftools.common.exceptions import DWARFError, ELFError

    try:
        return _resolve(debug, name, steps, expr.strip())
    except (ELFError, DWARFError, KeyError, IndexError, ValueError, struct.error) as exc:
        raise SymbolNotFound(f"cannot resolve {expr!r}: the debug information of "
                             f"{debug.path} is damaged ({exc}); watch by address instead",
                             path=debug.path, expr=expr) from None


def _resolve(debug: DebugFile, name: str, steps: list, expr: str) -> Member:
    entries = debug.entries(name)
    if not entries:
        raise _unknown_variable(debug, name, expr)
    definitions = [v for v in entries if v.definition]
    pool = [_variable(debug, v)
            for v in [v for v in definitions if v.external] or definitions or entries]
    if len(pool) == 1:
        return _walk(debug, pool[0], name, steps, expr)
    answers, first_error = set(), None
    for var in pool:
        try:
            answers.add(_walk(debug, var, name, steps, expr))
        except (SymbolNotFound, InvalidBreakpoint) as exc:
            first_error = first_error or exc
    if not answers:
        raise first_error
    if len(answers) > 1:
        where = ", ".join(f"{m.size} bytes at +{m.offset} ({m.type_name})"
                          for m in sorted(answers, key=lambda m: (m.offset, m.size)))
        raise SymbolNotFound.phrased(
            f"cannot resolve {expr!r}: {name!r} names {len(pool)} static variables in "
            f"{debug.path} and the part differs between them ({where}); watch one by "
            f"{{address}}", errno=errno.EINVAL, path=debug.path, expr=expr)
    return answers.pop()


def _unknown_variable(debug: DebugFile, name: str, expr: str) -> SymbolNotFound:
    close = difflib.get_close_matches(name, list(debug.index()), n=5, cutoff=0.6)
    if close:
        hint = f"; closest: {', '.join(close)}"
    elif _symbol_kind(debug.path, name) == "func":
        hint = f"; {name} is a function: watch a variable, or {name}:x to trap its calls"
    elif _symbol_kind(debug.path, name) is not None:
        hint = (f"; {name} is in the symbol table, so the file that defines it was "
                f"built without -g: rebuild it with -g, or watch {name}+OFFSET/LEN")
    else:
        hint = (f" (it describes {len(debug.index())}; `readelf --debug-dump=info` "
                f"lists them); check the spelling, or watch by address")
    return SymbolNotFound(f"cannot resolve {expr!r}: no global variable {name!r} in the "
                          f"debug information of {debug.path}{hint}",
                          path=debug.path, expr=expr)


def _symbol_kind(path: str, name: str) -> Optional[str]:
    """The kind (``object``, ``func`` ...: :class:`perfbp.symbols.elf.Symbol`)
    of a defined symbol ``name`` of ``path``, or None."""
    from .elf import named_symbols

    try:
        found = named_symbols(path).get(name)
    except (OSError, ValueError):  # only a hint in a message: no hint is no harm
        return None
    return found[0].kind if found else None


def _walk(debug: DebugFile, var: _Var, name: str, steps: list, expr: str) -> Member:
    def refuse(what: str) -> InvalidBreakpoint:
        return InvalidBreakpoint(f"cannot resolve {expr!r}: {what}", expr=expr)

    if var.type_die is None:
        raise SymbolNotFound(f"cannot resolve {expr!r}: the debug information of "
                             f"{debug.path} gives {name} no type; watch {name} by name "
                             f"with a length, or by address", expr=expr)
    view = _View(var.type_die)
    offset = 0
    done = name  # the part of the expression resolved so far
    bitfield: Optional[tuple[int, int]] = None  # (offset, size) of the unit
    for step in steps:
        here = f"{done} is {_view_name(view, debug)}"
        if bitfield is not None:
            raise refuse(f"{done} is a bitfield, which has no parts; watch {done}")
        if isinstance(step, int):
            arr = _array_of(view, debug)
            if arr is None:
                raise refuse(_pointer_refusal(view, debug, done)
                             or f"{here}, not an array, and cannot be indexed; watch "
                                f"{done} itself")
            array, dims, skip = arr
            dim = dims[skip]
            if dim.count is not None and not dim.lower <= step < dim.lower + dim.count:
                bounds = ("it has no elements" if dim.count == 0 else
                          f"valid indexes are {dim.lower}..{dim.lower + dim.count - 1}")
                raise refuse(f"index {step} is out of range for {done} "
                             f"({_view_name(view, debug)}): {bounds}")
            elem = _View(array, skip + 1) if skip + 1 < len(dims) else _View(_target(array))
            stride = dim.stride if dim.stride is not None else _size(elem, debug)
            if stride is None:
                raise refuse(f"the elements of {done} ({_view_name(view, debug)}) have no "
                             f"size in the debug information; watch by address")
            offset += (step - dim.lower) * stride
            view = elem
            done += f"[{step}]"
        else:
            aggregate = _peel(view.die, debug) if not view.skip else None
            if aggregate is None or aggregate.tag not in _AGGREGATES:
                fix = (f"pick an element first, e.g. {done}[0].{step}"
                       if _array_of(view, debug) is not None else f"watch {done} itself")
                raise refuse(_pointer_refusal(view, debug, done)
                             or f"{here}, not a struct or union, so it has no member "
                                f"{step!r}; {fix}")
            if _attr(aggregate, "DW_AT_declaration"):
                raise refuse(f"{here}, which the debug information declares but does "
                             f"not define (build the file that defines it with -g)")
            found = _find_member(aggregate, step, debug, expr)
            if found is None:
                members = _member_names(aggregate, debug)
                close = difflib.get_close_matches(step, members, n=1, cutoff=0.6)
                did = f"did you mean {close[0]!r}? " if close else ""
                listing = ", ".join(members) if members else "none"
                raise SymbolNotFound(f"cannot resolve {expr!r}: {_view_name(view, debug)} "
                                     f"has no member {step!r}; {did}its members: {listing}",
                                     expr=expr)
            member, base = found
            if _attr(member, "DW_AT_bit_size") is not None:
                unit_off, unit_size = _bitfield_unit(member, _size(view, debug), base, debug)
                bitfield = (offset + unit_off, unit_size)
            else:
                offset += base + _member_location(member, expr)
            view = _View(_target(member))
            done += f".{step}"
    if bitfield is not None:
        return Member(name, expr, bitfield[0], bitfield[1], _view_name(view, debug), True)
    size = _size(view, debug)
    if size is None:
        raise InvalidBreakpoint(f"cannot resolve {expr!r}: {done} ({_view_name(view, debug)}) "
                                f"has no size in the debug information (an array without "
                                f"bounds?); watch an element, e.g. {done}[0], or give a "
                                f"length", expr=expr)
    return Member(name, expr, offset, size, _view_name(view, debug))


def _pointer_refusal(view: _View, debug: DebugFile, done: str) -> str:
    """Why a pointer cannot be indexed or have members here ("" if no pointer)."""
    die = None if view.skip else _peel(view.die, debug)
    if die is not None and die.tag == "DW_TAG_pointer_type":
        return (f"{done} is a pointer ({_view_name(view, debug)}), and a watch sees "
                f"memory, not values, so it cannot follow pointers; watch {done} "
                f"itself, or the address it holds")
    return ""
