"""Addresses to source lines (perfbp.symbols.lines), checked against binutils.

The oracle is ``addr2line -e PROG ADDR`` on programs compiled here with gcc
(DWARF 5, gcc's default, and DWARF 4; -O0 and -O2; non-PIE and PIE): every
byte address of the program's code must get the same file basename and line.
The stores to ``g_target`` in tests/workloads/lines_demo.c sit on lines
marked ``LINE_<name>``; the test finds the marks by reading the source, the
stores by ``objdump -d`` (a ``mov`` to ``0x..(%rip)`` whose target is the
address ``nm`` gives for ``g_target``), and checks that the ip a data
breakpoint reports for each store (the next instruction's) is put back on
the store's line by ``lookup_before``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfbp.symbols import lines
from perfbp.symbols.lines import LineTable, SourceLine, line_table

WORKLOADS = Path(__file__).resolve().parent / "workloads"
SOURCES = ("lines_demo.c", "lines_part.c")

pytestmark = [pytest.mark.gcc, pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gcc", "objdump", "addr2line", "nm", "strip", "readelf")),
    reason="needs gcc and binutils")]

# name: (gcc flags, compile from a copy by relative path (DW_AT_comp_dir joins))
BUILDS = {
    "O0": (["-O0", "-g", "-no-pie"], False),
    "O2": (["-O2", "-g", "-no-pie"], False),
    "O0-dwarf4": (["-O0", "-gdwarf-4", "-no-pie"], True),
    "O2-dwarf4": (["-O2", "-gdwarf-4", "-no-pie"], True),
    "O2-relative": (["-O2", "-g", "-no-pie"], True),
    "O2-pie": (["-O2", "-g", "-fPIE", "-pie"], False),
}


def run(*cmd: str, **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def marked_lines() -> "dict[tuple[str, int], str]":
    """``{(file name, line): mark}`` of every ``/* LINE_x */`` in the sources."""
    out = {}
    for name in SOURCES:
        for n, text in enumerate((WORKLOADS / name).read_text().splitlines(), 1):
            m = re.search(r"/\* (LINE_\w+) \*/", text)
            if m:
                out[(name, n)] = m.group(1)
    return out


def instructions(prog: Path) -> "list[tuple[int, str]]":
    """``(address, text)`` of every instruction ``objdump -d`` shows."""
    out = []
    for line in run("objdump", "-d", "--no-show-raw-insn", str(prog)).splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(.*)", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def addr2line(prog: Path, addrs: "list[int]") -> "list[tuple[str, int] | None]":
    """binutils' answer per address: (basename, line), or None for ``??:0``
    and ``file:?`` (no line)."""
    text = run("addr2line", "-e", str(prog), input="\n".join(f"{a:x}" for a in addrs))
    out = []
    for line in text.splitlines():
        where = line.split(" (discriminator")[0]
        path, _, num = where.rpartition(":")
        out.append(None if path in ("??", "") or not num.isdigit() or num == "0"
                   else (os.path.basename(path), int(num)))
    assert len(out) == len(addrs)
    return out


def brief(sl: "SourceLine | None") -> "tuple[str, int] | None":
    return None if sl is None else (os.path.basename(sl.file), sl.line)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    d = tmp_path_factory.mktemp("lines")
    for name in SOURCES:
        shutil.copy(WORKLOADS / name, d / name)

    def build(item):
        name, (flags, relative) = item
        exe = d / f"demo_{name}"
        src = "lines_demo.c" if relative else str(WORKLOADS / "lines_demo.c")
        subprocess.run(["gcc", *flags, "-o", str(exe), src], cwd=d, check=True)
        return name, (exe, (d if relative else WORKLOADS))

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(build, BUILDS.items()))


@pytest.mark.parametrize("build", list(BUILDS))
def test_every_code_byte_agrees_with_addr2line(builds, build):
    """Every byte from the first to the last instruction of the program (its
    own functions, the C runtime's without lines, the gaps), instruction
    starts and the middles of instructions alike."""
    prog, _ = builds[build]
    addrs = [a for a, _ in instructions(prog)]
    every = list(range(min(addrs), max(addrs) + 16))
    table = LineTable(str(prog))
    assert not table.skipped
    want = addr2line(prog, every)
    got = [brief(table.lookup(a)) for a in every]
    wrong = [(hex(a), w, g) for a, w, g in zip(every, want, got) if w != g]
    assert not wrong, wrong[:10]
    found = {g for g in got if g}
    assert {"lines_demo.c", "lines_part.c"} <= {f for f, _ in found}


@pytest.mark.parametrize("build", list(BUILDS))
def test_lookup_before_puts_a_data_breakpoint_ip_on_the_store(builds, build):
    """x86 reports a write watch's hit with the ip of the instruction after
    the store; ``lookup_before`` gives the store's own line, for every store
    to g_target, and every marked line has a store."""
    prog, srcdir = builds[build]
    (g_target,) = [int(ln.split()[0], 16) for ln in run("nm", str(prog)).splitlines()
                   if ln.split()[-1] == "g_target"]
    insns = instructions(prog)
    store = re.compile(r"mov\w*\s+\S+,0x[0-9a-f]+\(%rip\)\s+# ([0-9a-f]+) <g_target>")
    after = [insns[i + 1][0] for i, (_, text) in enumerate(insns)
             if (m := store.match(text)) and int(m.group(1), 16) == g_target]
    table = line_table(str(prog))
    seen = {}
    for ip in after:
        sl = table.lookup_before(ip)
        assert sl is not None and sl.column > 0
        key = (os.path.basename(sl.file), sl.line)
        assert key in marked_lines(), (hex(ip), sl)
        # the path is the real file: DWARF's directory joined to its name
        assert os.path.samefile(sl.file, srcdir / key[0])
        seen[key] = sl
    assert set(seen) == set(marked_lines())
    # ... which the next instruction's own line is not, at least once: the
    # reason lookup_before exists
    assert any(brief(table.lookup(ip)) != brief(table.lookup_before(ip)) for ip in after)


def test_dwarf5_file_index_0(builds, tmp_path):
    """DWARF 5 numbers files from 0, entry 0 being the primary source file:
    the same program with every ``.loc 1`` rewritten to ``.loc 0`` has the
    same lines, by file 0."""
    asm = tmp_path / "demo.s"
    run("gcc", "-S", "-O2", "-gdwarf-5", "-o", str(asm), str(WORKLOADS / "lines_demo.c"))
    text, n = re.subn(r"^(\s*\.loc)\s+1\s", r"\1 0 ", asm.read_text(), flags=re.M)
    assert n > 10
    asm.write_text(text)
    prog = tmp_path / "demo0"
    run("gcc", "-no-pie", "-o", str(prog), str(asm))
    assert "Set File Name to entry 0" in run("readelf", "--debug-dump=rawline", str(prog))
    table = LineTable(str(prog))
    reference = LineTable(str(builds["O2"][0]))
    addrs = [a for a, _ in instructions(prog)]
    every = list(range(min(addrs), max(addrs) + 16))
    assert [brief(table.lookup(a)) for a in every] == addr2line(prog, every)
    assert [brief(table.lookup(a)) for a in every] == [brief(reference.lookup(a)) for a in every]


def test_dwarf5_file_register_starts_at_1(tmp_path):
    """The file register starts at 1 in DWARF 5 too (Table 6.4), so rows
    before the first DW_LNS_set_file are in file 1 — here lines_part.c, not
    the primary file 0.  readelf agrees; binutils 2.40's addr2line (bfd)
    starts at file 0 and names the primary file instead, so the oracle here
    is ``readelf --debug-dump=decodedline``."""
    src = tmp_path / "first.c"
    src.write_text("volatile long g_target, g_other;\n#include \"lines_part.c\"\n"
                   "int main(void) { part_store(3); return 0; }\n")
    prog = tmp_path / "first"
    run("gcc", "-O0", "-gdwarf-5", "-no-pie", "-I", str(WORKLOADS), "-o", str(prog), str(src))
    (start,) = [int(ln.split()[0], 16) for ln in run("nm", str(prog)).splitlines()
                if ln.split()[-1] == "part_store"]
    decoded = run("readelf", "--debug-dump=decodedline", str(prog))
    rows = [m.groups() for m in re.finditer(r"^(\S+)\s+(\d+)\s+(0x[0-9a-f]+)", decoded, re.M)]
    first = [(f, int(n)) for f, n, a in rows if int(a, 16) == start]
    assert first and first[-1][0] == "lines_part.c"
    assert brief(line_table(str(prog)).lookup(start)) == first[-1]


def test_no_line_information(builds, tmp_path):
    """Stripped, built without -g, not ELF, missing: no table (and the class
    says why)."""
    prog = builds["O2"][0]
    stripped = tmp_path / "stripped"
    run("strip", "-o", str(stripped), str(prog))
    nodebug = tmp_path / "nodebug"
    run("strip", "--strip-debug", "-o", str(nodebug), str(prog))
    g0 = tmp_path / "g0"
    run("gcc", "-O2", "-g0", "-no-pie", "-o", str(g0), str(WORKLOADS / "lines_demo.c"))
    for path in (stripped, nodebug, g0):
        assert line_table(str(path)) is None
        with pytest.raises(ValueError, match="no line information"):
            LineTable(str(path))
    assert line_table(str(WORKLOADS / "lines_demo.c")) is None  # not ELF
    with pytest.raises(ValueError):
        LineTable(str(WORKLOADS / "lines_demo.c"))
    assert line_table(str(tmp_path / "missing")) is None
    with pytest.raises(OSError):
        LineTable(str(tmp_path / "missing"))


def test_line_table_is_cached_and_records_are_small(builds):
    path = str(builds["O0"][0])
    table = line_table(path)
    assert table is line_table(path) and len(table) > 0
    assert table.lookup(-1) is None and table.lookup(0) is None and table.lookup(1 << 64) is None
    assert table.lookup_before(0) is None
    sl = SourceLine("/src/a.c", 12, 3)
    assert (str(sl), sl.short) == ("/src/a.c:12", "a.c:12")
    with pytest.raises(AttributeError):
        sl.line = 13  # frozen


def test_building_a_2mb_table_takes_under_a_second(tmp_path):
    """A 2+ MB debug build (two units, 6,000 functions)."""
    def unit(k: int, n: int) -> str:
        out = ["extern volatile long sink;"]
        for i in range(n):
            out += [f"long f{k}_{i}(long a, long b) {{", "  long s = a;",
                    "  for (long j = 0; j < b; j++) {", f"    s += j * {i} ^ (s >> 3);",
                    "    if (s & 1) sink = s;", "  }", f"  return s + {i};", "}"]
        return "\n".join(out) + "\n"

    n = 3000
    srcs = []
    for k in range(2):
        src = tmp_path / f"unit{k}.c"
        src.write_text(unit(k, n))
        srcs.append(src)
    main = tmp_path / "main.c"
    main.write_text("volatile long sink;\n"
                    + "".join(f"long f{k}_{i}(long, long);\n" for k in range(2) for i in (0, n - 1))
                    + "int main(void) { return (int)(f0_0(1, 2) + f1_%d(3, 4)); }\n" % (n - 1))
    def compile_unit(src: Path) -> Path:
        obj = src.with_suffix(".o")
        run("gcc", "-c", "-O0", "-g", "-o", str(obj), str(src))
        return obj

    with ThreadPoolExecutor(2) as pool:
        objs = list(pool.map(compile_unit, srcs))
    prog = tmp_path / "big"
    run("gcc", "-g", "-no-pie", "-o", str(prog), str(main), *map(str, objs))
    assert prog.stat().st_size >= 2 << 20

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        table = LineTable(str(prog))
        best = min(best, time.perf_counter() - t0)
    assert best < 1.0, f"{best:.2f} s"
    (f1,) = [int(ln.split()[0], 16) for ln in run("nm", str(prog)).splitlines()
             if ln.split()[-1] == f"f1_{n - 1}"]
    assert brief(table.lookup(f1)) == addr2line(prog, [f1])[0] == ("unit1.c", 8 * (n - 1) + 2)


def numpy_ranges(rows: list) -> tuple:
    """The ranges of the rows, as LineTable built them with numpy: the
    reference for :func:`perfbp.symbols.lines._ranges`."""
    try:
        table = np.array(rows, dtype=np.uint64).reshape(-1, 4)
    except OverflowError:
        top = (1 << 64) - 1
        table = np.array([[min(max(v, 0), top) for v in row] for row in rows],
                         dtype=np.uint64).reshape(-1, 4)
    addr, fid = table[:, 0], table[:, 1]
    keep = (fid[:-1] != lines._END) & (addr[1:] > addr[:-1])
    starts, ends = addr[:-1][keep], addr[1:][keep]
    cols = table[:-1][keep]
    order = np.argsort(starts, kind="stable")
    starts, ends, cols = starts[order], ends[order], cols[order]
    if len(starts) > 1:
        np.minimum(ends[:-1], starts[1:], out=ends[:-1])
        nonempty = ends > starts
        starts, ends, cols = starts[nonempty], ends[nonempty], cols[nonempty]
    return (starts.tolist(), ends.tolist(), cols[:, 1].astype(np.int32).tolist(),
            cols[:, 2].astype(np.int64).tolist(), cols[:, 3].astype(np.int64).tolist())


VALUES = st.one_of(st.integers(0, 40), st.sampled_from([0, 1 << 63, (1 << 64) - 1, 1 << 64, -1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(VALUES, st.integers(0, 3), VALUES, VALUES), max_size=8),
                max_size=6))
def test_ranges_as_numpy_made_them(sequences):
    """Sequences that overlap, share addresses, go backwards, or ran a
    register past 64 bits (a damaged program): the ranges are those the
    numpy columns were, value for value."""
    rows = []
    for seq in sequences:
        rows += seq
        if seq:
            rows.append((seq[-1][0] + 1, lines._END, 0, 0))
    assert [list(col) for col in lines._ranges(rows)] == list(numpy_ranges(rows))
