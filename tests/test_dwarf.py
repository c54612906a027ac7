"""Members and elements of globals from DWARF (perfbp.symbols.dwarf), checked against
the compiler.

tests/workloads/dwarf_layout.c prints, for every valid index path into its
arrays and for a set of members, the offset from the variable's start and the
size as the compiler computes them (``&PATH - &VAR``, ``sizeof PATH``); the
same binary's DWARF must give the same numbers, at -O0 and -O2, in DWARF 5
(gcc 12's default), 4 (old-style bitfields) and 2 (member locations as
``DW_OP_plus_uconst`` expressions).  No value here is worked out by hand.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfbp.symbols import dwarf, dwarf_accel, dwarf_cache, dwarf_file, dwarf_index
from perfbp.symbols.dwarf import Member, parse_expr, resolve_member
from perfbp.errors import InvalidBreakpoint, PerfbpError, SymbolNotFound

pytestmark = pytest.mark.gcc  # builds its programs with gcc

WORKLOADS = Path(__file__).resolve().parent / "workloads"

BUILDS = {
    "O0": ["-O0", "-g"],
    "O2": ["-O2", "-g"],
    "O0-dwarf4": ["-O0", "-gdwarf-4"],
    "O2-dwarf4": ["-O2", "-gdwarf-4"],
    "O2-dwarf2": ["-O2", "-gdwarf-2", "-gstrict-dwarf"],
}


def gcc(*args) -> None:
    proc = subprocess.run(["gcc", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, f"gcc {' '.join(map(str, args))} failed:\n{proc.stderr}"


def run(exe: Path) -> str:
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, check=True)
    return proc.stdout


class Layout:
    """One build of dwarf_layout.c and what it printed."""

    def __init__(self, exe: Path) -> None:
        self.exe = exe
        self.path = str(exe)
        self.members: dict[str, tuple[int, int]] = {}  # path -> (offset, size)
        self.bits: dict[str, tuple[int, int]] = {}  # bitfield -> (first byte, last byte)
        for line in run(exe).splitlines():
            parts = line.split()
            if parts[0] == "BITS":
                self.bits[parts[1]] = (int(parts[2]), int(parts[3]))
            else:
                self.members[parts[0]] = (int(parts[1]), int(parts[2]))
        assert len(self.members) > 100 and len(self.bits) == 2


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dwarf")


@pytest.fixture(scope="module")
def layouts(build_dir) -> "dict[str, Layout]":
    out = {}
    for name, flags in BUILDS.items():
        exe = build_dir / f"layout_{name}"
        gcc(*flags, "-no-pie", "-Wall", "-Wextra", "-Werror", "-o", exe,
            WORKLOADS / "dwarf_layout.c")
        out[name] = Layout(exe)
    return out


@pytest.fixture(scope="module")
def layout(layouts) -> Layout:
    """The default build: -O2 -g (DWARF 5)."""
    return layouts["O2"]


@pytest.fixture(scope="module")
def units(build_dir) -> "dict[str, Path]":
    """dwarf_units_a.c (-g) + dwarf_units_b.c built without -g (``nog``: only
    declarations of ``origin`` and ``hidden`` in the DWARF, ``hidden``'s
    struct incomplete), the same + dwarf_units_c.c with -g (``nog+c``: the
    struct complete in another unit), and b with -g (``g``: two static
    ``dup`` of different layouts)."""
    objs = {}
    for name, src, flags in (("a", "a", ["-g"]), ("b_nog", "b", []), ("b_g", "b", ["-g"]),
                             ("c", "c", ["-g"])):
        objs[name] = build_dir / f"units_{name}.o"
        gcc("-O0", *flags, "-Wall", "-Wextra", "-Werror", "-c", "-o", objs[name],
            WORKLOADS / f"dwarf_units_{src}.c")
    out = {}
    for name, parts in (("nog", ["a", "b_nog"]), ("nog+c", ["a", "b_nog", "c"]),
                        ("g", ["a", "b_g"])):
        out[name] = build_dir / f"units_{name}"
        gcc("-no-pie", "-o", out[name], *(objs[p] for p in parts))
    return out


# --------------------------------------------------------------------------
# Offsets and sizes, as the compiler laid them out
# --------------------------------------------------------------------------

@pytest.mark.parametrize("build", list(BUILDS))
def test_every_path_matches_the_compiler(layouts, build):
    """Each of the ~130 paths the program prints (grid[i][j], table[i].next,
    recs[i].name[k], s.arr[i].y, members of anonymous unions, of
    const-volatile typedefs, of unions ...) resolves to the compiler's
    offset and size."""
    lay = layouts[build]
    wrong = []
    for path, expected in lay.members.items():
        m = resolve_member(lay.path, path)
        if (m.offset, m.size) != expected or m.bitfield:
            wrong.append(f"{path}: DWARF {m.offset}/{m.size}, compiler {expected}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("build", list(BUILDS))
def test_bitfields_give_their_storage_unit(layouts, build):
    """`config.mode` (3 bits) and `config.on` (1 bit) give the `unsigned`
    that holds their bits, wherever the DWARF version puts the bit offset."""
    lay = layouts[build]
    for path, (first, last) in lay.bits.items():
        m = resolve_member(lay.path, path)
        assert m.bitfield and m.type_name == "unsigned int", m
        assert m.size == 4 and m.offset % 4 == 0, m
        assert m.offset <= first and last < m.offset + m.size, (m, first, last)


def test_member_record(layout):
    m = resolve_member(layout.path, " table[3].next ")
    assert m == Member("table", "table[3].next", *layout.members["table[3].next"],
                       "struct node *")
    assert m.bitfield is False
    with pytest.raises(AttributeError):
        m.offset = 0  # frozen


@pytest.mark.parametrize("expr,type_name", [
    ("config", "struct config"),
    ("config.flags", "int"),
    ("config.limit", "long int"),
    ("table", "struct node[8]"),
    ("table[3].next", "struct node *"),
    ("grid", "long int[3][4]"),
    ("grid[1]", "long int[4]"),
    ("grid[1][2]", "long int"),
    ("recs[1]", "rec_t"),
    ("recs[1].name", "char[16]"),
    ("recs[1].name[3]", "char"),
    ("ptrs", "struct node *[4]"),
    ("ptrs[2]", "struct node *"),
    ("frozen", "crec_t"),
    ("frozen.head", "struct node"),
    ("s.arr", "struct point[6]"),
    ("s.color", "struct {...}"),
    ("word", "union word"),
    ("word.bytes", "unsigned char[8]"),
])
def test_type_names(layout, expr, type_name):
    assert resolve_member(layout.path, expr).type_name == type_name


def test_whole_variables_and_pointers_are_their_own_bytes(layout):
    """A bare name is the whole variable; an element that is a pointer is
    the pointer's 8 bytes: nothing is dereferenced."""
    for name in ("config", "grid", "table", "recs", "counter"):
        m = resolve_member(layout.path, name)
        assert (m.offset, m.size) == layout.members[name] and m.offset == 0
    for i in range(4):
        m = resolve_member(layout.path, f"ptrs[{i}]")
        assert (m.offset, m.size) == layout.members[f"ptrs[{i}]"] == (8 * i, 8)


def test_indexes_in_hex_and_with_blanks(layout):
    assert resolve_member(layout.path, "grid[0x2][ 3 ]").offset == layout.members["grid[2][3]"][0]
    assert resolve_member(layout.path, "recs[0X1].name[0xf]").offset == \
        layout.members["recs[1].name[15]"][0]


def test_declaration_only_variable(units):
    """`origin` is defined in a file built without -g: the other file's
    `extern` declaration still gives its type."""
    expected = dict(line.split(None, 1) for line in run(units["nog"]).splitlines())
    m = resolve_member(str(units["nog"]), "origin.y")
    assert f"{m.offset} {m.size}" == expected["origin.y"]
    assert m.type_name == "short int"
    m = resolve_member(str(units["nog"]), "dup.b")  # one static dup in the DWARF
    assert f"{m.offset} {m.size}" == expected["dup.b"]


def test_struct_known_by_name_only(units):
    """`extern struct hidden hidden;` where no unit with -g defines the
    struct cannot be resolved; where another unit does, its definition is used."""
    with pytest.raises(InvalidBreakpoint) as err:
        resolve_member(str(units["nog"]), "hidden.q")
    assert "hidden is struct hidden, which the debug information declares but does not " \
           "define (build the file that defines it with -g)" in str(err.value)
    expected = dict(line.split(None, 1) for line in run(units["g"]).splitlines())
    for build in ("g", "nog+c"):  # defined where the variable is / in another unit
        m = resolve_member(str(units[build]), "hidden.q")
        assert f"{m.offset} {m.size}" == expected["hidden.q"], build


def test_static_variables_of_different_layouts_are_ambiguous(units):
    with pytest.raises(SymbolNotFound) as err:
        resolve_member(str(units["g"]), "dup.b")
    msg = str(err.value)
    assert "'dup' names 2 static variables" in msg
    assert msg.endswith("watch one by its address (Watch.range(ADDR, LEN))")  # the API's words
    assert err.value.message_for("cli").endswith("watch one by its address (-w ADDR/LEN)")
    assert "\n" not in msg
    # the whole of dup is 16 bytes in both files: not ambiguous
    assert resolve_member(str(units["g"]), "dup").size == 16


# --------------------------------------------------------------------------
# Random index paths against the compiler's table
# --------------------------------------------------------------------------

def _index(i: int, style: str) -> str:
    return {"dec": f"[{i}]", "hex": f"[{i:#x}]", "blank": f"[ {i} ]"}[style]


@st.composite
def index_paths(draw):
    """``(as typed, as the C program prints it)`` for a random valid path
    into grid, table or recs."""
    style = st.sampled_from(["dec", "hex", "blank"])
    var = draw(st.sampled_from(["grid", "table", "recs"]))
    if var == "grid":
        steps = [draw(st.integers(0, 2))]
        if draw(st.booleans()):
            steps.append(draw(st.integers(0, 3)))
    elif var == "table":
        steps = [draw(st.integers(0, 7))]
        steps += draw(st.sampled_from([[], ["next"], ["value"]]))
    else:
        steps = [draw(st.integers(0, 1))]
        steps += draw(st.sampled_from([[], ["name"], ["name", draw(st.integers(0, 15))],
                                       ["head"], ["head", "next"], ["head", "value"]]))
    typed, canonical = var, var
    for step in steps:
        if isinstance(step, int):
            typed += _index(step, draw(style))
            canonical += f"[{step}]"
        else:
            typed += f".{step}"
            canonical += f".{step}"
    return typed, canonical


@settings(max_examples=300, deadline=None)
@given(path=index_paths(), build=st.sampled_from(list(BUILDS)))
def test_random_paths_agree_with_the_compiler(layouts, path, build):
    typed, canonical = path
    lay = layouts[build]
    m = resolve_member(lay.path, typed)
    assert (m.offset, m.size) == lay.members[canonical], (typed, m)
    assert parse_expr(typed) == parse_expr(canonical)


@settings(max_examples=100, deadline=None)
@given(var=st.sampled_from([("grid", 3), ("table", 8), ("recs", 2)]),
       index=st.integers(0, 10**12))
def test_random_indexes_out_of_range_are_refused(layout, var, index):
    name, count = var
    expr = f"{name}[{index}]"
    if index < count:
        assert resolve_member(layout.path, expr).offset == layout.members[expr][0]
    else:
        with pytest.raises(InvalidBreakpoint, match=rf"valid indexes are 0\.\.{count - 1}"):
            resolve_member(layout.path, expr)


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

@pytest.mark.parametrize("expr,parsed", [
    ("config", ("config", [])),
    ("config.flags", ("config", ["flags"])),
    ("table[3].next", ("table", [3, "next"])),
    ("a.b.c", ("a", ["b", "c"])),
    ("grid[1][2]", ("grid", [1, 2])),
    ("s.arr[5].x", ("s", ["arr", 5, "x"])),
    ("t[0x1F]", ("t", [31])),
    ("t[0]", ("t", [0])),
    ("_x9[ 7 ]._y", ("_x9", [7, "_y"])),
])
def test_parse_expr(expr, parsed):
    assert parse_expr(expr) == parsed


@pytest.mark.parametrize("expr,fragment", [
    ("config.", "a member name must follow '.' at column 7"),
    ("config..flags", "a member name must follow '.' at column 7 (got '.')"),
    ("table[", "an index must follow '[' at column 6"),
    ("table[3", "the '[' at column 6 is not closed"),
    ("table[]", "hold no index"),
    ("table[x]", "index 'x' at column 7 is not a number"),
    ("table[-1]", "index '-1' at column 7 is not a number"),
    ("table[010]", "index '010' has a leading zero"),
    ("table[3]next", "unexpected 'n' at column 9"),
    ("config flags", "unexpected ' ' at column 7"),
    ("3table", "'3' cannot start a variable name"),
    ("", "it names no variable"),
    ("table[3]->next", "cannot follow"),
])
def test_malformed_expressions(expr, fragment):
    with pytest.raises(InvalidBreakpoint) as err:
        parse_expr(expr)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg
    if "->" not in expr:
        assert "for example config.flags" in msg  # the fix: what to write
    assert err.value.errno == 22


# --------------------------------------------------------------------------
# Errors: the class, and a message that names the problem and the fix
# --------------------------------------------------------------------------

@pytest.mark.parametrize("expr,exc,fragments", [
    ("confg", SymbolNotFound, ["no global variable 'confg'", "closest: config"]),
    ("nosuchthing", SymbolNotFound, ["no global variable 'nosuchthing'", "check the spelling"]),
    ("main", SymbolNotFound, ["main is a function"]),
    ("config.flag", SymbolNotFound,
     ["struct config has no member 'flag'", "did you mean 'flags'?",
      "its members: flags, level, limit, mode, on, tail"]),
    ("s.x", SymbolNotFound, ["its members: kind, radius, corner, arr, color"]),
    ("table[8]", InvalidBreakpoint,
     ["index 8 is out of range for table (struct node[8])", "valid indexes are 0..7"]),
    ("grid[0][4]", InvalidBreakpoint,
     ["out of range for grid[0] (long int[4])", "valid indexes are 0..3"]),
    ("recs[1].name[16]", InvalidBreakpoint, ["valid indexes are 0..15"]),
    ("config[1]", InvalidBreakpoint, ["config is struct config, not an array", "watch config"]),
    ("counter.x", InvalidBreakpoint,
     ["counter is long int, not a struct or union", "watch counter itself"]),
    ("grid.x", InvalidBreakpoint, ["not a struct or union", "e.g. grid[0].x"]),
    ("table[1].next.value", InvalidBreakpoint,
     ["table[1].next is a pointer (struct node *)", "cannot follow pointers",
      "the address it holds"]),
    ("ptrs[1][0]", InvalidBreakpoint, ["ptrs[1] is a pointer", "cannot follow pointers"]),
    ("config.mode.x", InvalidBreakpoint, ["config.mode is a bitfield", "watch config.mode"]),
    ("table[x]", InvalidBreakpoint, ["is not a number"]),
])
def test_errors(layout, expr, exc, fragments):
    with pytest.raises(exc) as err:
        resolve_member(layout.path, expr)
    msg = str(err.value)
    assert type(err.value) is exc and isinstance(err.value, PerfbpError)
    assert "\n" not in msg and "Traceback" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_stripped_program_has_no_dwarf(layout, build_dir):
    stripped = build_dir / "layout_stripped"
    subprocess.run(["strip", "-g", "-o", str(stripped), layout.path], check=True)
    with pytest.raises(SymbolNotFound) as err:
        resolve_member(str(stripped), "config.flags")
    assert str(err.value) == (f"{stripped} has no DWARF debug information: rebuild with -g, "
                              f"or watch by address")


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="needs objcopy (binutils)")
def test_separate_debug_file_by_debuglink(layout, build_dir):
    """A program stripped after its DWARF went to a .debug file (as
    distributions ship them) resolves through .gnu_debuglink, CRC checked."""
    d = build_dir / "debuglink"
    d.mkdir()
    exe, debug = d / "prog", d / "prog.debug"
    subprocess.run(["objcopy", "--only-keep-debug", layout.path, str(debug)], check=True)
    subprocess.run(["strip", "-g", "-o", str(exe), layout.path], check=True)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={debug}", str(exe)], check=True, cwd=d)
    m = resolve_member(str(exe), "recs[1].head.value")
    assert (m.offset, m.size) == layout.members["recs[1].head.value"]
    debug.write_bytes(debug.read_bytes() + b"\0")  # another build's: its CRC differs
    with pytest.raises(SymbolNotFound, match="has no DWARF debug information"):
        resolve_member(str(exe), "config")


def test_files_that_are_not_programs(tmp_path):
    with pytest.raises(SymbolNotFound, match="cannot read the debug information of .*: "):
        resolve_member(str(tmp_path / "missing"), "config")
    text = tmp_path / "text"
    text.write_text("not ELF\n")
    with pytest.raises(SymbolNotFound, match="watch by address instead"):
        resolve_member(str(text), "config")


# --------------------------------------------------------------------------
# The index: fast scan, cache
# --------------------------------------------------------------------------

def test_fast_scan_agrees_with_pyelftools_walk(layouts, units):
    """The index read straight from .debug_info equals the one built from
    pyelftools' DIEs, for every DWARF version and both link variants."""
    from elftools.elf.elffile import ELFFile

    for exe in [lay.path for lay in layouts.values()] + [str(p) for p in units.values()]:
        with open(exe, "rb") as f:
            info = ELFFile(f).get_dwarf_info()
            fast = dwarf_index.scan_variables(info)
            assert fast == dwarf_index.walk_variables(info), exe
            assert {"config", "table", "grid", "recs", "ptrs"} <= set(fast) or "units" in exe


def test_index_is_cached_until_the_file_changes(build_dir):
    """Resolving again reads no DWARF (the member is remembered); another
    member of the same file reads it once more, from memory; a program
    rebuilt in place is read anew."""
    src, exe = build_dir / "rebuilt.c", build_dir / "rebuilt"
    src.write_text("struct { char a; long b; } v;\nint main(void) { return v.a; }\n")
    gcc("-g", "-o", exe, src)
    assert resolve_member(str(exe), "v.b").offset == 8
    before = dwarf_file._load.cache_info()
    assert resolve_member(str(exe), "v.b").offset == 8
    assert dwarf_file._load.cache_info() == before
    assert resolve_member(str(exe), "v.a").offset == 0
    after = dwarf_file._load.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    src.write_text("struct { char a; int pad[3]; long b; } v;\nint main(void) { return v.a; }\n")
    gcc("-g", "-o", exe, src)
    assert resolve_member(str(exe), "v.b").offset == 16


# --------------------------------------------------------------------------
# The module's own rules
# --------------------------------------------------------------------------

def test_imports_only_stdlib_pyelftools_and_errors():
    """perfbp.symbols.dwarf is a pure core: the standard library, pyelftools, and of
    perfbp only the error hierarchy, system's open_regular (files are
    opened only when regular: a FIFO named as a debug file cannot hang),
    the ELF reader and its own modules (the file, the index, the name
    tables, the cache), held to the same rule."""
    seen = set()
    for module in (dwarf, dwarf_index, dwarf_file, dwarf_accel, dwarf_cache):
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Import):
                seen |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                seen.add("." * node.level + (node.module or ""))
    stdlib = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    for name in seen:
        top = name.split(".")[0]
        assert name in ("..errors", "..kernel.system", ".dwarf_index", ".dwarf_file",
                        ".dwarf_accel", ".dwarf_cache", ".elf", ".") or top == "elftools" \
            or top == "__future__" or stdlib is None or top in stdlib, name
    assert "..errors" in seen


def test_public_api():
    assert dwarf.__all__ == ["Member", "parse_expr", "resolve_member"]
    fields = [f for f in Member.__dataclass_fields__]
    assert fields == ["variable", "expr", "offset", "size", "type_name", "bitfield"]
    assert re.search(r"Raises:", resolve_member.__doc__)


class _Attr:
    def __init__(self, value, form="DW_FORM_data1"):
        self.value, self.form = value, form


class _Die:
    """Just what ``dwarf._dims`` reads of a DIE."""

    def __init__(self, tag, attributes, children=(), cu=None):
        self.tag, self.attributes, self._children, self.cu = tag, attributes, children, cu

    def iter_children(self):
        return iter(self._children)

    def get_top_DIE(self):
        return self._top


def _array_in(language: str, upper: int) -> "_Die":
    """An array ``[upper]``-style DIE (one subrange with only an upper bound)
    in a unit of ``language``."""
    from elftools.dwarf.enums import ENUM_DW_LANG

    cu = _Die("DW_TAG_compile_unit", {})
    cu._top = _Die("DW_TAG_compile_unit",
                   {"DW_AT_language": _Attr(ENUM_DW_LANG[language], "DW_FORM_data2")})
    sub = _Die("DW_TAG_subrange_type", {"DW_AT_upper_bound": _Attr(upper)})
    return _Die("DW_TAG_array_type", {}, [sub], cu)


@pytest.mark.parametrize("language, lower, count", [
    ("DW_LANG_C", 0, 10), ("DW_LANG_C89", 0, 10), ("DW_LANG_C11", 0, 10),
    ("DW_LANG_Rust", 0, 10),
    ("DW_LANG_Fortran90", 1, 9), ("DW_LANG_Ada83", 1, 9), ("DW_LANG_Cobol85", 1, 9),
    ("DW_LANG_Pascal83", 1, 9),
])
def test_default_lower_bound_follows_the_language(language, lower, count):
    """DWARF 5 table 7.17: C arrays start at 0 and Fortran, Ada, Cobol and
    Pascal arrays at 1 when the subrange gives no DW_AT_lower_bound; an
    upper bound of 9 is then 10 or 9 elements."""
    (dim,) = dwarf._dims(_array_in(language, 9))
    assert (dim.lower, dim.count) == (lower, count)
