"""perfbp.symbols.elf's ELF reader, compared with readelf on real files.

The symbol tables (``named_symbols``, and ``symbols_named``, which finds one
name without decoding the table), the dynamic-linking facts of
``images.image`` (needed libraries, soname, rpath/runpath, interpreter,
first PT_LOAD, copy relocations) and the build-id, on programs and
libraries built here (PIE and not, a library with a soname and an
$ORIGIN runpath, a program with copy relocations) and on the system's
(libc, ld.so, python, coreutils).  Every expected value is parsed from
readelf's output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from perfbp.symbols import elf, images

pytestmark = pytest.mark.gcc

KINDS = {"OBJECT": "object", "FUNC": "func", "NOTYPE": "notype", "TLS": "tls",
         "IFUNC": "func"}

LIB = """
int lib_counter = 3;
static int lib_hidden = 4;
int lib_read(void) { return lib_counter + lib_hidden; }
"""
PROG = """
#include <stdio.h>
#include <unistd.h>
extern int lib_counter;
extern char **environ;
int lib_read(void);
static int local_one = 1;
int main(int argc, char **argv) {
    (void)argv;
    return lib_read() + lib_counter + (environ != 0) + optind + local_one + argc
        + (stdout != 0);
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> "list[Path]":
    if shutil.which("readelf") is None:
        pytest.skip("needs readelf")
    d = tmp_path_factory.mktemp("elf")
    (d / "lib.c").write_text(LIB)
    (d / "prog.c").write_text(PROG)
    lib = d / "libelfcheck.so"
    subprocess.run(["gcc", "-O1", "-g", "-shared", "-fPIC", "-Wl,-soname,libelfcheck.so",
                    "-Wl,-rpath,$ORIGIN/sub:/opt/x", "-o", str(lib), str(d / "lib.c")],
                   check=True)
    out = [lib]
    for name, flags in (("prog_nopie", ["-no-pie", "-fno-pic"]), ("prog_pie", ["-fPIE", "-pie"]),
                        ("prog_stripped", ["-no-pie", "-fno-pic", "-s"]),
                        ("prog_rpath", ["-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN"])):
        exe = d / name
        subprocess.run(["gcc", "-O1", *flags, "-o", str(exe), str(d / "prog.c"), f"-L{d}",
                        "-lelfcheck"], check=True)
        out.append(exe)
    return out


def system_files() -> "list[Path]":
    names = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2",
             "/usr/bin/python3.11", "/usr/bin/xz", "/usr/bin/env", "/bin/sh", "/usr/bin/ls",
             *sorted(os.path.expanduser(p) for p in
                     ["~/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"])]
    return [Path(os.path.realpath(p)) for p in names if os.path.isfile(p)]


def readelf(*args) -> str:
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True,
                          check=True).stdout


def readelf_symbols(path: Path) -> "dict[str, set]":
    """What named_symbols should give: .symtab's defined symbols of the
    kinds perfbp keeps, or .dynsym's when .symtab has none."""
    tables: dict[str, dict[str, set]] = {}
    table = None
    for line in readelf("-s", str(path)).splitlines():
        m = re.match(r"Symbol table '(\S+)'", line)
        if m:
            table = tables.setdefault(m[1], {})
            continue
        f = line.split()
        if table is None or len(f) < 8 or not f[0].endswith(":") or f[3] not in KINDS \
                or f[6] == "UND":
            continue
        name = " ".join(f[7:])
        if table is tables.get(".dynsym"):
            name = name.split("@")[0]  # readelf shows the version after the name
        if name:
            table.setdefault(name, set()).add((int(f[1], 16), int(f[2], 0), KINDS[f[3]],
                                               f[4] == "LOCAL"))
    return tables.get(".symtab") or tables.get(".dynsym") or {}


def files(built) -> "list[Path]":
    return built + system_files()


def test_symbols_as_readelf_lists_them(built):
    """As readelf lists them in the file that holds the object's symbols:
    itself, or for a stripped one its debug file when one is installed
    (libc6-dbg's for libc and ld.so, here)."""
    for path in files(built):
        got = {name: {(s.value, s.size, s.kind, s.local) for s in syms}
               for name, syms in elf.named_symbols(str(path)).items()}
        assert got == readelf_symbols(Path(elf.file_with(str(path), "symtab"))), path


def test_one_name_is_found_as_in_the_whole_table(built):
    """symbols_named, which reads no more than it needs, agrees with
    named_symbols for every name of every file, and for names no file has."""
    for path in files(built):
        table = elf.named_symbols(str(path))
        names = list(table)[::max(len(table) // 400, 1)]  # every name of a small table
        for name in [*names, "no_such_name", "lib_", "main.x"]:
            assert elf.symbols_named(str(path), name) == table.get(name, []), (path, name)


def test_dynamic_facts_as_readelf_shows_them(built):
    for path in files(built):
        img = images.image(str(path))
        dynamic = readelf("-d", str(path))
        assert list(img.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]",
                                              dynamic), path
        soname = re.findall(r"\(SONAME\)\s+Library soname: \[(.*)\]", dynamic)
        assert img.soname == (soname[0] if soname else None)
        origin = str(path.parent)
        for tag, got in (("RPATH", img.rpath), ("RUNPATH", img.runpath)):
            found = re.findall(rf"\({tag}\)\s+Library r\w*path: \[(.*)\]", dynamic)
            want = [p.replace("$ORIGIN", origin) for p in found[0].split(":")] if found else []
            assert list(got) == want, (path, tag)
        headers = readelf("-l", str(path))
        interp = re.findall(r"\[Requesting program interpreter: (.*)\]", headers)
        assert img.interp == (interp[0] if interp else None), path
        loads = [(int(m[2], 16), int(m[1], 16)) for m in
                 re.finditer(r"^\s*LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", headers, re.M)]
        assert img.first_load == (min(loads)[1], min(loads)[0]), path
        notes = re.findall(r"Build ID: ([0-9a-f]+)", readelf("-n", str(path)))
        with elf.ElfReader(str(path)) as reader:
            assert reader.build_id() == (notes[0] if notes else None), path


def test_copy_relocations_as_readelf_shows_them(built):
    """The non-PIE program copies lib_counter, environ (as libc's
    __environ), optind and stdout."""
    for path in files(built):
        img = images.image(str(path))
        want = {}
        sizes = {f[7].split("@")[0]: int(f[2], 0) for line in
                 readelf("--dyn-syms", str(path)).splitlines()
                 if len(f := line.split()) >= 8 and f[0][:-1].isdigit()}
        for m in re.finditer(r"^([0-9a-f]+)\s+\S+\s+R_X86_64_COPY\s+\S+\s+(\S+)",
                             readelf("-r", str(path)), re.M):
            name = m[2].split("@")[0]
            want[name] = (int(m[1], 16), sizes[name])
        assert img.copies == want, path
    assert set(images.image(str(built[1])).copies) == {"lib_counter", "__environ", "optind",
                                                       "stdout"}


def test_not_elf_and_truncated_files_are_value_errors(tmp_path, built):
    text = tmp_path / "text"
    text.write_text("#!/bin/sh\n")
    cut = tmp_path / "cut"
    cut.write_bytes(built[1].read_bytes()[:200])
    for path in (text, cut):
        with pytest.raises(ValueError):
            elf.named_symbols(str(path))
        with pytest.raises(ValueError):
            images.image(str(path))


@pytest.mark.parametrize("size", [1 << 40, 1 << 62, (1 << 64) - 1])
def test_a_section_larger_than_the_file_is_a_value_error(tmp_path, size):
    """A header may claim any size: it is checked against the file before
    anything is read or allocated (a MemoryError or OverflowError would be a
    traceback), and the debug-file lookups that read the section say no."""
    import struct

    evil = tmp_path / "evil_true"
    shutil.copy("/bin/true", evil)
    with elf.ElfReader("/bin/true") as r:
        h = r.header
        at = h.e_shoff + r.names.index(".gnu_debuglink") * h.e_shentsize + 32  # sh_size
    with open(evil, "r+b") as f:
        f.seek(at)
        f.write(struct.pack("<Q", size))
    with elf.ElfReader(str(evil)) as r:
        with pytest.raises(ValueError, match="past its end"):
            r.data(r.sections[r.names.index(".gnu_debuglink")])
    for lookup in (lambda: elf.debug_facts(str(evil)), lambda: elf.missing_debug(str(evil)),
                   lambda: elf.file_with(str(evil), "symtab")):
        try:
            lookup()
        except ValueError:
            pass
