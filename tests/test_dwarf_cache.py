"""The DWARF index and its cache (perfbp.symbols.dwarf_file, dwarf_cache,
dwarf_accel), checked against gdb and against the plain scan.

Every answer here comes from another tool or another path through perfbp:
gdb's ``p &EXPR`` and ``sizeof`` on the same program, readelf's symbol
values, or the answer of a build without name tables.  A cache file that
fails a check (bit flips, truncation, another file's, sizes that disagree)
must be rebuilt and give the same answers; processes writing the cache at
once must leave it valid.  Every test has a cache directory of its own
(``XDG_CACHE_HOME`` under tmp_path): none touches ~/.cache.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfbp.symbols import dwarf_cache, dwarf_file, dwarf_index
from perfbp.symbols.dwarf import resolve_member
from perfbp.symbols.resolve import lookup_symbol

pytestmark = pytest.mark.gcc  # builds its programs with gcc

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = Path(__file__).resolve().parent / "workloads"

#: parts of dwarf_layout.c's globals (no bitfields: gdb cannot take their address)
EXPRS = ["config", "config.flags", "config.limit", "config.tail", "table[3].next",
         "table[7].value", "grid[2][3]", "grid[1]", "recs[1].name[5]", "recs[0].head.value",
         "frozen.head", "frozen.name[15]", "s.radius", "s.corner.y", "s.arr[4].x",
         "s.color.b", "word.half.hi", "word.bytes[6]", "counter", "ptrs[2]"]


def forget() -> None:
    """Start afresh, as a new process would: no file, store or member in memory."""
    dwarf_file._STORES.clear()
    dwarf_file._origin.cache_clear()
    dwarf_file._load.cache_clear()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> Path:
    """A cache directory of the test's, and nothing remembered from before."""
    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("PERFBP_NO_CACHE", raising=False)
    forget()
    yield home / "perfbp" / "dwarf"
    forget()


@pytest.fixture(scope="module")
def layout(build) -> Path:
    return build("dwarf_layout.c", "-O2", "-g", "-no-pie", name="cache_layout")


def answers(path: Path, exprs=EXPRS) -> "dict[str, tuple[int, int]]":
    """``{expr: (link-time address, size)}`` as perfbp resolves them."""
    out = {}
    for expr in exprs:
        sym, offset, size = lookup_symbol(str(path), expr)
        out[expr] = (sym.value + offset, size)
    return out


def gdb_answers(path: Path, exprs=EXPRS) -> "dict[str, tuple[int, int]]":
    """The same from gdb's DWARF reader, on the file (link-time addresses)."""
    if shutil.which("gdb") is None:
        pytest.skip("needs gdb")
    args = ["gdb", "-batch", "-nx"]
    for expr in exprs:
        args += ["-ex", f"p/x (unsigned long)&({expr})", "-ex", f"p sizeof({expr})"]
    out = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=60).stdout
    values = [int(v, 0) for v in re.findall(r"^\$\d+ = (\S+)$", out, re.M)]
    assert len(values) == 2 * len(exprs), out
    return {e: (values[2 * i], values[2 * i + 1]) for i, e in enumerate(exprs)}


def readelf_symbols(path: Path) -> "dict[str, int]":
    out = subprocess.run(["readelf", "-sW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return {f[7]: int(f[1], 16) for line in out.splitlines() if len(f := line.split()) >= 8
            and f[6] != "UND" and f[3] == "OBJECT"}


def cache_file(cache: Path) -> Path:
    (found,) = list(cache.glob("*.idx"))
    return found


def key_of(path: Path) -> str:
    return dwarf_file.origin(str(path)).key


# --------------------------------------------------------------------------
# Answers: as gdb gives them, cold and warm
# --------------------------------------------------------------------------

def test_names_resolve_as_gdb_and_readelf_say_cold_and_warm(layout, own_cache):
    """A first run builds the index and keeps it; the next, from the cache,
    gives the same addresses and sizes, which are gdb's; the variables are
    where readelf's symbol table puts them."""
    expected = gdb_answers(layout)
    assert answers(layout) == expected  # cold: scanned, then written
    store = dwarf_cache.decode(cache_file(own_cache).read_bytes(), key_of(layout))
    assert store is not None and store.names is not None
    assert set(store.members) == set(EXPRS) - {"config", "counter"}  # members only
    forget()
    assert answers(layout) == expected  # warm: from the cache
    values = readelf_symbols(layout)
    for expr in EXPRS:
        base = re.split(r"[.\[]", expr)[0]
        offset = resolve_member(str(layout), expr).offset
        assert values[base] + offset == expected[expr][0], expr


def test_a_warm_run_reads_no_dwarf(layout, own_cache):
    """In a new process, a member resolved before comes from the cache:
    pyelftools, which every read of DWARF goes through, is not imported."""
    code = ("import sys; from perfbp.symbols.dwarf import resolve_member; "
            "m = resolve_member(sys.argv[1], 'recs[1].head.value'); "
            "print(m.offset, m.size, 'elftools' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def run() -> str:
        return subprocess.run([sys.executable, "-c", code, str(layout)], env=env,
                              capture_output=True, text=True, check=True).stdout.split()

    cold, warm = run(), run()
    expected = [str(v) for v in gdb_answers(layout, ["recs[1].head.value"])
                ["recs[1].head.value"]]
    assert cold[1] == warm[1] == expected[1]
    assert (cold[2], warm[2]) == ("True", "False")


def test_a_rebuilt_program_is_read_anew(build_dir, own_cache):
    """A new build (another build-id) has its own cache file; the same path
    rebuilt never answers from the old one."""
    src, exe = build_dir / "cache_rebuilt.c", build_dir / "cache_rebuilt"
    for pad, offset in ((0, 8), (3, 24)):
        src.write_text(f"struct {{ char a; int pad[{pad} + 1]; long b; }} v;\n"
                       "int main(void) { return v.a; }\n")
        subprocess.run(["gcc", "-g", "-o", str(exe), str(src)], check=True)
        assert resolve_member(str(exe), "v.b").offset == offset
    assert len(list(own_cache.glob("*.idx"))) == 2


# --------------------------------------------------------------------------
# A damaged cache file is refused, rebuilt, and answers the same
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_cache(layout, tmp_path_factory) -> "tuple[bytes, str]":
    """The bytes of layout's cache file after a cold run, and its key."""
    home = tmp_path_factory.mktemp("good-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        forget()
        answers(layout)
        forget()
        return cache_file(home / "perfbp" / "dwarf").read_bytes(), key_of(layout)


def test_the_good_file_decodes(good_cache):
    data, key = good_cache
    store = dwarf_cache.decode(data, key)
    assert store is not None and len(store.names) == 9 and len(store.members) == 18
    assert dwarf_cache.encode(store) == data  # what is read is what was written


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_bit_flip_and_truncation_is_refused(good_cache, data):
    raw, key = good_cache
    bit = data.draw(st.integers(0, 8 * len(raw) - 1), label="bit")
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert dwarf_cache.decode(bytes(flipped), key) is None
    cut = data.draw(st.integers(0, len(raw) - 1), label="length")
    assert dwarf_cache.decode(raw[:cut], key) is None
    junk = data.draw(st.binary(min_size=1, max_size=64), label="junk")
    assert dwarf_cache.decode(raw + junk, key) is None


def test_another_files_cache_is_refused(good_cache):
    raw, key = good_cache
    assert dwarf_cache.decode(raw, "build-id:" + "0" * 40) is None
    assert dwarf_cache.decode(raw, key) is not None


_SIZES = [f for f, _c in dwarf_cache.HEADER if f not in ("magic", "checksum")]


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(_SIZES), value=st.integers(0, 2 ** 16 - 1))
def test_a_header_that_disagrees_with_the_body_is_refused(good_cache, field, value):
    """Sizes, counts, version and flags are checked against the body, not
    only by the checksum: a header changed with its checksum made good
    again is still refused."""
    raw, key = good_cache
    fmt = struct.Struct("<" + "".join(c for _f, c in dwarf_cache.HEADER))
    fields = dict(zip([f for f, _c in dwarf_cache.HEADER], fmt.unpack_from(raw)))
    if fields[field] == value:
        return
    fields[field] = value
    head = fmt.pack(*fields.values())[:-4]
    body = raw[fmt.size:]
    forged = head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body
    assert dwarf_cache.decode(forged, key) is None


DAMAGE = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10 ** 9)),
    st.tuples(st.just("truncate"), st.integers(0, 10 ** 9)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("empty"), st.none()),
    st.tuples(st.just("another key"), st.none()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=DAMAGE)
def test_a_damaged_cache_is_rebuilt_with_the_same_answers(layout, good_cache, own_cache,
                                                         damage):
    raw, key = good_cache
    kind, arg = damage
    if kind == "flip":
        bad = bytearray(raw)
        bad[arg % len(raw)] ^= 1 << (arg % 8)
        bad = bytes(bad)
    elif kind == "truncate":
        bad = raw[:arg % len(raw)]
    elif kind == "append":
        bad = raw + arg
    elif kind == "empty":
        bad = b""
    else:  # a good file of another key, under this file's name
        store = dwarf_cache.decode(raw, key)
        store.key = "build-id:" + "1" * 40
        bad = dwarf_cache.encode(store)
    own_cache.mkdir(parents=True, exist_ok=True)
    target = own_cache / dwarf_cache.file_name(key)
    target.write_bytes(bad)
    forget()
    assert answers(layout) == gdb_answers_of_layout(layout)
    rebuilt = dwarf_cache.decode(target.read_bytes(), key)
    assert rebuilt is not None and rebuilt.names is not None


_GDB: dict = {}


def gdb_answers_of_layout(layout: Path):
    if layout not in _GDB:
        _GDB[layout] = gdb_answers(layout)
    return _GDB[layout]


# --------------------------------------------------------------------------
# Several processes at once
# --------------------------------------------------------------------------

_WRITER = """
import sys, time
from perfbp.symbols import dwarf_file
from perfbp.symbols.resolve import lookup_symbol
path, start, exprs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
while time.time() < start:
    time.sleep(0.001)
for round in range(8):
    for expr in exprs:
        dwarf_file._STORES.clear()  # read the file again, as a new run would
        sym, offset, size = lookup_symbol(path, expr)
        print(expr, sym.value + offset, size)
"""


def test_concurrent_writers_leave_a_valid_cache(layout, own_cache):
    """Six processes resolve different members of one program at once, each
    writing the cache file again and again: every answer is gdb's, and the
    file they leave is valid, holds only right answers, and no temporary
    file is left behind."""
    import time

    expected = gdb_answers_of_layout(layout)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = str(time.time() + 1.5)
    groups = [EXPRS[i::6] for i in range(6)]
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(layout), start, *g],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for g in groups]
    for proc, group in zip(procs, groups):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        for line in out.splitlines():
            expr, address, size = line.split()
            assert (int(address), int(size)) == expected[expr]
    assert not list(own_cache.glob("*.tmp"))
    store = dwarf_cache.decode(cache_file(own_cache).read_bytes(), key_of(layout))
    assert store is not None and store.names is not None
    forget()
    for expr, m in store.members.items():
        sym, _offset, _size = lookup_symbol(str(layout), expr.split(".")[0].split("[")[0])
        assert (sym.value + m.offset, m.size) == expected[expr]


# --------------------------------------------------------------------------
# Name tables: each gives what the plain scan gives
# --------------------------------------------------------------------------

TABLES = {
    "pubnames": (["-gpubnames"], None, ".debug_pubnames"),
    "pubnames-dwarf4": (["-gdwarf-4", "-gpubnames"], None, ".debug_pubnames"),
    "gnu-pubnames": (["-ggnu-pubnames"], None, ".debug_gnu_pubnames"),
    "gdb-index": ([], ["gdb-add-index"], ".gdb_index"),
    "debug-names": ([], ["gdb-add-index", "-dwarf-5"], ".debug_names"),
}
UNITS = ["dwarf_units_a.c", "dwarf_units_b.c", "dwarf_units_c.c"]


def _program(build_dir: Path, name: str, sources: "list[str]", flags: "list[str]",
             tool: "list[str] | None") -> Path:
    exe = build_dir / name
    if not exe.exists():
        subprocess.run(["gcc", "-O0", "-g", *flags, "-o", str(exe),
                        *(str(WORKLOADS / s) for s in sources)], check=True)
        if tool is not None:
            if shutil.which(tool[0]) is None:
                pytest.skip(f"needs {tool[0]}")
            subprocess.run([*tool, str(exe)], check=True, capture_output=True)
    return exe


def _full_scan(path: Path) -> dict:
    forget()
    return dwarf_index.scan_variables(dwarf_file.load(str(path)).dwarf)


def pool(entries) -> set:
    """The variables a lookup uses (perfbp.symbols.dwarf's rule): the
    external definitions, else the definitions, else the declarations."""
    definitions = {v for v in entries if v.definition}
    return {v for v in definitions if v.external} or definitions or set(entries)


@pytest.mark.parametrize("variant", list(TABLES))
@pytest.mark.parametrize("sources", [["dwarf_layout.c"], UNITS], ids=["one-unit", "units"])
def test_a_name_table_finds_what_the_scan_finds(build_dir, variant, sources, monkeypatch):
    """The table is read and trusted; every variable the scan finds is
    looked up to the same variables (through the table, or the scan when
    the table's units do not hold an external definition: a static, a
    name gdb's table lists in a unit that only declares it); and the
    answers are those of the same program built without a table, through
    the table alone (the full scan forbidden) for the one-unit program."""
    flags, tool, section = TABLES[variant]
    stem = Path(sources[0]).stem
    exe = _program(build_dir, f"table_{stem}_{variant}", sources, flags, tool)
    plain = _program(build_dir, f"table_{stem}_plain", sources, [], None)
    full = _full_scan(exe)
    for name, entries in full.items():
        forget()
        debug = dwarf_file.load(str(exe))
        table = debug.name_table()
        assert table is not None and table.section == section
        assert pool(debug.entries(name)) == pool(entries), name
    one_unit = stem == "dwarf_layout"
    exprs = EXPRS if one_unit else ["origin.y", "hidden_ptr", "hidden.q"]
    forget()
    expected = answers(plain, exprs)
    forget()
    if one_unit:
        monkeypatch.setattr(dwarf_index, "variable_index", _no_full_scan)
    assert answers(exe, exprs) == {e: (expected[e][0] - _shift(plain, exe, e), expected[e][1])
                                   for e in exprs}


def _no_full_scan(_dwarf):
    raise AssertionError("the full scan ran where a name table answers")


def _shift(plain: Path, exe: Path, expr: str) -> int:
    """How far the variable of ``expr`` moved between two builds (the
    tables change the layout of the file, not of the data)."""
    base = re.split(r"[.\[]", expr)[0]
    return readelf_symbols(plain)[base] - readelf_symbols(exe)[base]


def test_a_table_that_misses_units_is_not_used(build_dir):
    """One unit with -gpubnames, the other without: the table covers one
    unit of two, so it is not trusted, and the scan answers."""
    obj = build_dir / "table_units_b_plain.o"
    subprocess.run(["gcc", "-O0", "-g", "-c", "-o", str(obj),
                    str(WORKLOADS / "dwarf_units_b.c")], check=True)
    exe = build_dir / "table_units_partial"
    subprocess.run(["gcc", "-O0", "-g", "-gpubnames", "-o", str(exe),
                    str(WORKLOADS / "dwarf_units_a.c"), str(obj)], check=True)
    debug = dwarf_file.load(str(exe))
    assert ".debug_pubnames" in debug._tables and debug.name_table() is None
    assert resolve_member(str(exe), "origin.y").offset == 2


# --------------------------------------------------------------------------
# No cache: off, unwritable, another user's
# --------------------------------------------------------------------------

def test_no_cache_when_turned_off(layout, own_cache, monkeypatch):
    monkeypatch.setenv("PERFBP_NO_CACHE", "1")
    assert answers(layout) == gdb_answers_of_layout(layout)
    assert not own_cache.exists()


def test_an_unwritable_cache_directory_is_no_error(layout, tmp_path, monkeypatch):
    """XDG_CACHE_HOME under a regular file (mkdir fails as it would on a
    read-only home, whoever runs): the answers, and no file anywhere."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    assert answers(layout) == gdb_answers_of_layout(layout)
    forget()
    assert answers(layout) == gdb_answers_of_layout(layout)


def test_a_relative_xdg_cache_home_means_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dwarf_cache.cache_dir() == str(tmp_path / ".cache" / "perfbp" / "dwarf")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_another_users_cache_directory_is_not_used(layout, good_cache, own_cache):
    """A directory that is not this user's could steer a run as root: its
    files are not read (not even a good one) and nothing is written there."""
    raw, key = good_cache
    own_cache.mkdir(parents=True)
    store = dwarf_cache.decode(raw, key)
    store.members["config.flags"] = store.members["config.flags"]._replace(offset=999)
    (own_cache / dwarf_cache.file_name(key)).write_bytes(dwarf_cache.encode(store))
    os.chown(own_cache, 65534, 65534)
    before = {p.name: p.read_bytes() for p in own_cache.iterdir()}
    assert answers(layout) == gdb_answers_of_layout(layout)
    assert {p.name: p.read_bytes() for p in own_cache.iterdir()} == before


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_creates_nothing_in_another_users_home(layout, tmp_path, monkeypatch):
    """``sudo -E perfbp ...``: root with a user's HOME answers, and leaves
    no directory of root's in that home (the user could not write it)."""
    home = tmp_path / "user-home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(home))
    assert answers(layout) == gdb_answers_of_layout(layout)
    assert list(home.iterdir()) == []


def test_old_files_are_pruned(own_cache):
    """Beyond MAX_FILES the oldest cache files go, and a crashed run's
    temporary file once it is old."""
    import time

    own_cache.mkdir(parents=True)
    now = time.time()
    for i in range(dwarf_cache.MAX_FILES + 3):
        p = own_cache / f"{i:040x}.idx"
        p.write_bytes(b"x")
        os.utime(p, (now - 10000 + i, now - 10000 + i))
    stale = own_cache / "x.idx.1.ab.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (now - 2 * dwarf_cache.TEMP_AGE,) * 2)
    fresh = own_cache / "y.idx.1.ab.tmp"
    fresh.write_bytes(b"")
    assert dwarf_cache.save(dwarf_cache.Store("build-id:" + "f" * 40, "src"))
    names = {p.name for p in own_cache.iterdir()}
    assert len([n for n in names if n.endswith(".idx")]) == dwarf_cache.MAX_FILES
    assert {f"{i:040x}.idx" for i in range(4)}.isdisjoint(names)
    assert "f" * 40 + ".idx" in names and fresh.name in names and stale.name not in names


def test_a_name_table_that_breaks_on_lookup_falls_back_to_the_scan(layout, monkeypatch):
    """A damaged .gdb_index or .debug_names may fail only when a name is
    looked up (a count past its end: struct.error): the full index answers,
    with gdb's addresses."""

    from perfbp.symbols import dwarf_file

    class Broken:
        section, units = ".gdb_index", 1

        def lookup(self, name):
            raise struct.error("unpack_from requires a buffer of at least 67108860 bytes")

    monkeypatch.setattr(dwarf_file.DebugFile, "name_table", lambda self: Broken())
    monkeypatch.setenv("PERFBP_NO_CACHE", "1")
    forget()
    assert answers(layout) == gdb_answers(layout)
