"""Separate debug files (perfbp.symbols.debuginfo): a stripped program whose
debug file is installed works as the unstripped build does.

The program is tests/workloads/rec_writers.c, built with ``gcc -g`` (PIE and
not) and split as distributions split theirs: ``objcopy --only-keep-debug``
into a debug file, ``strip``, ``objcopy --add-gnu-debuglink``.  The debug
file then goes to one of the places perfbp looks (docs/perfbp.md, DEBUG
FILES): beside the program, in its ``.debug/``, under a debug root by the
program's directory or by build-id, or in the debuginfod client's cache.
What the stripped program gives must be what the unstripped build gives, to
the address and the line: names (a global, a static, an element, a
function), the symbolizer's functions, the line table, and on the real
kernel the counts and the report's writers and source lines.  Recordings
carry the build-ids of what they map: ``perf buildid-list -i`` lists them,
and perf finds the debug file under /usr/lib/debug by them.

The in-process tests point the debug root (``debuginfo.DEBUG_ROOTS``) and
the debuginfod cache (``DEBUGINFOD_CACHE_PATH``) at temporary directories;
one test installs a debug file under the real ``/usr/lib/debug/.build-id``
and removes it after.  perf runs with a temporary HOME (its build-id cache,
``~/.debug``, is not the user's).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORKLOADS, machine_disturbed

from perfbp.data.perfdata import BuildId, read_recording
from perfbp.planning.spec import parse
from perfbp.symbols import debuginfo, elf
from perfbp.symbols.lines import line_table
from perfbp.symbols.resolve import resolve_in_file

REPO = Path(__file__).resolve().parent.parent
FLAGS = ("-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread")
KINDS = {"nopie": ("-no-pie",), "pie": ("-fPIE", "-pie")}
PLACES = ("beside", "dot-debug", "root-dir", "build-id", "debuginfod")
N = 1009                  # bump() calls per writer thread (a prime)
NAMES = ("counter", "N", "tids", "tids[1]", "bump:x")
STAT_NAMES = ("counter", "N", "tids[1]", "bump:x")  # 4 registers: all fit
ADDR_NO_RANDOMIZE = 0x0040000
TIMEOUT = 60


def tool(*args, cwd=None) -> str:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                       timeout=TIMEOUT)
    assert r.returncode == 0, f"{' '.join(map(str, args))}: {r.stderr}"
    return r.stdout


def split(full: Path, exe: Path) -> Path:
    """``exe``: ``full`` stripped, with a .gnu_debuglink to ``EXE.debug``
    beside it, which holds ``full``'s symbols and DWARF.  Returns the debug
    file."""
    debug = exe.with_name(exe.name + ".debug")
    tool("objcopy", "--only-keep-debug", full, debug)
    tool("strip", "-o", exe, full)
    tool("objcopy", f"--add-gnu-debuglink={debug.name}", exe.name, cwd=exe.parent)
    return debug


def build_id(path: Path) -> str:
    (found,) = re.findall(r"Build ID: ([0-9a-f]+)", tool("readelf", "-n", path))
    return found


def place(debug: Path, exe: Path, where: str, root: Path, cache: Path) -> Path:
    """Move the debug file of ``exe`` to ``where`` (one of PLACES), under
    the debug root ``root`` or the debuginfod cache ``cache``."""
    bid = build_id(exe)
    here = Path(os.path.realpath(exe.parent))
    dest = {"beside": debug,
            "dot-debug": exe.parent / ".debug" / debug.name,
            "root-dir": root / here.relative_to("/") / debug.name,
            "build-id": root / ".build-id" / bid[:2] / f"{bid[2:]}.debug",
            "debuginfod": cache / bid / "debuginfo"}[where]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest != debug:
        debug.rename(dest)
    return dest


def nm(path: Path, kinds: str = "TtDdBbRr") -> "dict[str, int]":
    """name -> link-time address of the symbols of ``kinds`` ``nm`` lists."""
    out = {}
    for line in tool("nm", path).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in kinds:
            out[parts[2]] = int(parts[0], 16)
    return out


def source_line(text: str) -> str:
    """``rec_writers.c:LINE`` of the one line of rec_writers.c that holds
    ``text``."""
    lines = (WORKLOADS / "rec_writers.c").read_text().splitlines()
    (number,) = [i for i, line in enumerate(lines, 1) if text in line]
    return f"rec_writers.c:{number}"


@pytest.fixture(scope="module")
def full(build) -> "dict[str, Path]":
    """rec_writers built with -g, not stripped: the reference."""
    return {kind: build("rec_writers.c", *FLAGS, *flags, name=f"writers_{kind}")
            for kind, flags in KINDS.items()}


@pytest.fixture
def places(tmp_path, monkeypatch) -> "tuple[Path, Path]":
    """``(debug root, debuginfod cache)``: temporary directories, used by
    perfbp in this process."""
    root, cache = tmp_path / "debug-root", tmp_path / "debuginfod"
    monkeypatch.setattr(debuginfo, "DEBUG_ROOTS", (str(root),))
    monkeypatch.setenv("DEBUGINFOD_CACHE_PATH", str(cache))
    return root, cache


def installed(full: Path, where: str, places, tmp_path: Path) -> "tuple[Path, Path]":
    """``(stripped program, its debug file)``, the debug file at ``where``."""
    exe = tmp_path / "bin" / "writers"
    exe.parent.mkdir()
    debug = place(split(full, exe), exe, where, *places)
    assert not elf.debug_facts(str(exe)).symtab and not elf.debug_facts(str(exe)).dwarf
    return exe, debug


# -- in this process: the lookup, names, functions, lines -----------------------------

@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("kind", KINDS)
def test_names_resolve_as_in_the_unstripped_build(full, kind, where, places, tmp_path):
    exe, debug = installed(full[kind], where, places, tmp_path)
    assert elf.debug_file(str(exe)) == str(debug)
    specs = [parse(n) for n in NAMES]
    got = [(w.address, w.length, w.access) for w in resolve_in_file(specs, str(exe))]
    want = [(w.address, w.length, w.access) for w in resolve_in_file(specs, str(full[kind]))]
    assert got == want
    syms = nm(full[kind])  # the unstripped build's own addresses (link time)
    assert got == [(syms["counter"], 8, "w"), (syms["N"], 8, "w"), (syms["tids"], 16, "w"),
                   (syms["tids"] + 8, 8, "w"), (syms["bump"], 8, "x")]


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("kind", KINDS)
def test_functions_and_lines_as_in_the_unstripped_build(full, kind, where, places, tmp_path):
    """The report's symbolizer and line table read the debug file: every
    function and every line-table row of the unstripped build, the same."""
    exe, debug = installed(full[kind], where, places, tmp_path)
    stripped, whole = elf.ElfObject(str(exe)), elf.ElfObject(str(full[kind]))
    functions = nm(full[kind], "Tt")
    assert {"main", "bump", "worker", "pin"} <= functions.keys()
    for addr in sorted(functions.values()):
        for vaddr in (addr, addr + 1):
            assert stripped.function_at(vaddr) == whole.function_at(vaddr), hex(vaddr)
    assert stripped.function_at(functions["bump"] + 4) == ("bump", 4)

    lines, want = line_table(str(exe)), line_table(str(full[kind]))
    assert lines.path == str(debug) and len(lines) == len(want) > 20
    assert [lines.lookup(a) for a in want.starts] == [want.lookup(a) for a in want.starts]


def test_order_and_checks(full, places, tmp_path):
    """By build-id first, then by debuglink, then the debuginfod cache; a
    file of another build (its build-id, or the debuglink's CRC-32,
    differs) is passed over."""
    root, cache = places
    exe, beside = installed(full["nopie"], "beside", places, tmp_path)
    bid = build_id(exe)
    by_id = root / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
    in_cache = cache / bid / "debuginfo"
    for p in (by_id, in_cache):
        p.parent.mkdir(parents=True)
        shutil.copy(beside, p)
    assert elf.debug_file(str(exe)) == str(by_id)
    other = tmp_path / "other.debug"  # the PIE build's debug file: another build-id
    tool("objcopy", "--only-keep-debug", full["pie"], other)
    shutil.copy(other, by_id)
    assert elf.debug_file(str(exe)) == str(beside)
    with open(beside, "ab") as f:
        f.write(b"\0")  # the CRC-32 the debuglink holds no longer matches
    assert elf.debug_file(str(exe)) == str(in_cache)
    in_cache.unlink()
    assert elf.debug_file(str(exe)) is None
    assert elf.missing_debug(str(exe)) == (
        f"writers is stripped and no debug file of it was found (looked for {by_id}, "
        f"writers.debug (its .gnu_debuglink) beside it, in .debug/ and under {root}, "
        f"{in_cache})")
    assert elf.missing_debug(str(full["nopie"])) is None  # not stripped
    assert not {"counter", "N", "bump"} & elf.named_symbols(str(exe)).keys()  # .dynsym alone


def test_nothing_to_find_a_debug_file_by(build, places):
    exe = build("rec_writers.c", *FLAGS, "-no-pie", "-s", "-Wl,--build-id=none",
                name="writers_no_build_id")
    assert elf.debug_file(str(exe)) is None
    assert elf.missing_debug(str(exe)) == (
        "writers_no_build_id is stripped and no debug file of it was found (it has "
        "neither a build-id nor a .gnu_debuglink to find one by)")


def test_debuginfod_cache_is_found_as_elfutils_finds_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    assert debuginfo.debuginfod_cache(env) == f"{home}/.cache/debuginfod_client"
    env["XDG_CACHE_HOME"] = "/xdg"
    assert debuginfo.debuginfod_cache(env) == "/xdg/debuginfod_client"
    (home / ".debuginfod_client_cache").mkdir()  # the old default wins when it exists
    assert debuginfo.debuginfod_cache(env) == f"{home}/.debuginfod_client_cache"
    env["DEBUGINFOD_CACHE_PATH"] = "/explicit"
    assert debuginfo.debuginfod_cache(env) == "/explicit"
    assert debuginfo.debuginfod_cache({}) == "/.cache/debuginfod_client"


# -- on the real kernel: stat, record, report, perf ---------------------------------

def _no_aslr() -> None:  # preexec_fn: runs in the child before exec
    if ctypes.CDLL(None, use_errno=True).personality(ADDR_NO_RANDOMIZE) == -1:
        os._exit(126)


def perfbp(*args, env=None) -> subprocess.CompletedProcess:
    """``perfbp ARGS``, address-space randomization off (inherited by the
    command: a PIE's addresses are the same in every run)."""
    return subprocess.run([sys.executable, "-m", "perfbp", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, preexec_fn=_no_aslr,
                          env={**os.environ, **(env or {})})


def perfbp_json(*args, env=None) -> "tuple[dict, subprocess.CompletedProcess]":
    """``perfbp ARGS --json`` to a run the machine did not disturb (a hit
    delivered without its status has no sample: conftest), up to 4 runs."""
    for _attempt in range(4):
        r = perfbp(*args, env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        doc = json.loads(line)
        if not machine_disturbed(doc):
            break
    return doc, r


def writers(doc: dict) -> "list[tuple]":
    (w,) = doc["watches"]
    return [(x["symbol"], x["offset"], x["source"], x["samples"]) for x in w["writers"]]


def perf_env(tmp_path: Path) -> dict:
    """perf's environment: a HOME of the test's (perf's build-id cache)."""
    home = tmp_path / "perf-home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home)}


def buildid_list(path, tmp_path, stdin=None) -> "set[tuple[str, str]]":
    r = subprocess.run(["perf", "buildid-list", "-i", str(path)], capture_output=True,
                       text=True, timeout=TIMEOUT, env=perf_env(tmp_path), input=stdin)
    assert r.returncode == 0, r.stderr
    return {tuple(line.split(None, 1)) for line in r.stdout.splitlines() if line.strip()}


def check_counts_and_writers(exe: Path, whole: Path, tmp_path: Path, env=None) -> None:
    """stat: every name of the stripped program at the unstripped build's
    address, with the workload's exact counts; record: the report's writers,
    functions and source lines, the unstripped build's."""
    args = [a for n in STAT_NAMES for a in ("-w", n)]
    got, _r = perfbp_json("stat", "--json", *args, "--", exe, N, env=env)
    want, _r = perfbp_json("stat", "--json", *args, "--", whole, N, env=env)
    at = [(w["watch"], w["address"], w["length"], w["hits"]) for w in got["watches"]]
    assert at == [(w["watch"], w["address"], w["length"], w["hits"]) for w in want["watches"]]
    # counter: main once and bump 2N times; N and tids[1]: once; bump runs 2N times
    assert [h for *_x, h in at] == [2 * N + 1, 1, 1, 2 * N]

    got, r = perfbp_json("record", "--json", "-w", "counter", "-o", tmp_path / "s.data",
                         "--", exe, N, env=env)
    want, _r = perfbp_json("record", "--json", "-w", "counter", "-o", tmp_path / "u.data",
                           "--", whole, N, env=env)
    assert writers(got) == writers(want)
    (bump_offset,) = [off for sym, off, *_x in writers(want) if sym == "bump"]
    assert [(s, src, n) for s, _off, src, n in writers(got)] == [
        ("bump", source_line("counter = i;"), 2 * N), ("main", source_line("counter = -1;"), 1)]
    assert "perfbp: note:" not in r.stderr
    assert bump_offset > 0
    r = perfbp("report", "-i", tmp_path / "s.data", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert writers(json.loads(r.stdout)) == writers(got)


@pytest.mark.kernel
@pytest.mark.parametrize("kind,where", [("nopie", "beside"), ("pie", "beside"),
                                        ("pie", "debuginfod")])
def test_stripped_program_counts_and_reports_as_unstripped(full, kind, where, tmp_path):
    """The debug file beside the program (its .gnu_debuglink), or in the
    debuginfod cache that DEBUGINFOD_CACHE_PATH names (perfbp runs as a
    command here: the environment tells it)."""
    cache = tmp_path / "debuginfod"
    exe, _debug = installed(full[kind], where, (tmp_path / "unused-root", cache), tmp_path)
    check_counts_and_writers(exe, full[kind], tmp_path, env={"DEBUGINFOD_CACHE_PATH": str(cache)})


@pytest.mark.kernel
@pytest.mark.root
def test_debug_file_in_the_real_usr_lib_debug(full, tmp_path):
    """The place Debian's -dbgsym packages install to:
    /usr/lib/debug/.build-id/XX/YYYY.debug, found by perfbp, and by perf
    from the build-id the recording carries."""
    exe = tmp_path / "bin" / "writers"
    exe.parent.mkdir()
    debug = split(full["nopie"], exe)
    bid = build_id(exe)
    dest = Path("/usr/lib/debug/.build-id") / bid[:2] / f"{bid[2:]}.debug"
    assert not dest.exists(), f"{dest} is already installed"
    made = [d for d in (dest.parent.parent.parent, dest.parent.parent, dest.parent)
            if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.move(debug, dest)  # and none beside: the debuglink leads nowhere
        assert elf.debug_file(str(exe)) == str(dest)
        check_counts_and_writers(exe, full["nopie"], tmp_path)
        rec = tmp_path / "s.data"
        assert (bid, str(exe)) in buildid_list(rec, tmp_path)
        # perf finds the debug file by the recording's build-id, and names bump
        r = subprocess.run(["perf", "report", "-i", str(rec), "--stdio", "--sort", "sym,dso"],
                           capture_output=True, text=True, timeout=TIMEOUT,
                           env=perf_env(tmp_path))
        assert r.returncode == 0, r.stderr
        assert re.search(r"\[\.\] bump\s+writers\s*$", r.stdout, re.M), r.stdout
    finally:
        dest.unlink(missing_ok=True)
        for d in reversed(made):
            d.rmdir()
    assert not dest.exists()


@pytest.mark.kernel
def test_stripped_program_without_debug_file_gets_a_hint_at_the_start(full, tmp_path):
    """record and top say so when they start, as a name it lacks does."""
    exe = tmp_path / "bin" / "writers"
    exe.parent.mkdir()
    split(full["nopie"], exe).unlink()
    bid = build_id(exe)
    cache = os.environ["DEBUGINFOD_CACHE_PATH"]
    why = (f"writers is stripped and no debug file of it was found (looked for "
           f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug, writers.debug (its "
           f".gnu_debuglink) beside it, in .debug/ and under /usr/lib/debug, "
           f"{cache}/{bid}/debuginfo)")
    counter = nm(full["nopie"])["counter"]
    doc, r = perfbp_json("record", "--json", "-w", hex(counter), "-o", tmp_path / "s.data",
                         "--", exe, N)
    err = r.stderr.splitlines()
    assert err[0].startswith("perfbp: watching 1 location"), r.stderr
    assert err[1] == (f"perfbp: note: {why}: the report will show its code as addresses; "
                      f"install its debug file (Debian: its -dbgsym package), or build it "
                      f"with -g and without strip")
    (w,) = doc["watches"]
    assert {x["symbol"] for x in w["writers"]} == {None}  # addresses: no names known
    assert sum(x["samples"] for x in w["writers"]) == 2 * N + 1

    r = perfbp("top", "-w", hex(counter), "--interval", "0.2", "--", exe, N)  # piped
    assert r.returncode == 0 and r.stderr.splitlines() == err[1:2], r.stderr
    # a wrapper's command line: the note is about the program it names by
    # path, not the shell (stripped too, on Debian) nor what it runs by name
    for program, noted in ((exe, True), (full["nopie"], False)):
        doc, r = perfbp_json("record", "--json", "-w", hex(counter), "-o",
                             tmp_path / "w.data", "--", "/bin/sh", "-c",
                             f"echo start >&2; exec {program} {N}")
        assert sum(x["samples"] for x in doc["watches"][0]["writers"]) == 2 * N + 1
        notes = [line for line in r.stderr.splitlines() if line.startswith("perfbp: note:")]
        assert notes == (err[1:2] if noted else []), r.stderr

    r = perfbp("stat", "-w", "counter", "--", exe, N)
    assert r.returncode == 2
    (line,) = r.stderr.splitlines()
    assert line.startswith("perfbp: error: watch 'counter': no symbol 'counter' in ")
    assert line.endswith(f"; {why}: install its debug file (Debian: its -dbgsym package), "
                         f"or build it with -g and without strip, or watch by address")


@pytest.mark.kernel
def test_recordings_carry_build_ids(full, tmp_path):
    """perf buildid-list -i lists the program and its libraries with their
    build-ids, as readelf gives them, from a file and from a stream; perfbp
    reads perf's own table the same way."""
    whole = full["nopie"]
    rec = tmp_path / "perfbp.data"
    _doc, _r = perfbp_json("record", "--json", "-w", "counter", "-o", rec, "--", whole, N)
    libs = [line.split("=>")[-1].split("(")[0].strip()
            for line in tool("ldd", whole).splitlines() if "/" in line]
    expected = {(build_id(Path(p)), p) for p in [str(whole)]
                + [os.path.realpath(lib) for lib in libs]}
    listed = buildid_list(rec, tmp_path)
    # the mappings name the libraries by the paths ld.so opened: compare real paths
    assert {(b, os.path.realpath(p)) for b, p in listed} == expected
    assert {(b.build_id, os.path.realpath(b.path)) for b in read_recording(str(rec)).build_ids} \
        == expected

    stream = subprocess.run([sys.executable, "-m", "perfbp", "record", "-o", "-", "-w",
                             "counter", "--", str(whole), str(N)], cwd=REPO, timeout=TIMEOUT,
                            capture_output=True, stdin=subprocess.DEVNULL)
    assert stream.returncode == 0, stream.stderr
    (tmp_path / "stream.data").write_bytes(stream.stdout)
    ours = {(b.build_id, b.path) for b in read_recording(str(tmp_path / "stream.data")).build_ids}
    assert {(b, os.path.realpath(p)) for b, p in ours} == expected
    # a stream: perf lists the objects its samples hit
    r = subprocess.run(["perf", "buildid-list", "-i", "-"], input=stream.stdout,
                       capture_output=True, timeout=TIMEOUT, env=perf_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == [build_id(whole), str(whole)]

    # perf's own recording: its table, read by perfbp, is what perf lists
    theirs = tmp_path / "perf.data"
    for _attempt in range(5):  # perf's workload dies of a SIGTRAP without its status
        r = subprocess.run(["perf", "record", "-e", f"mem:{nm(whole)['counter']:#x}/8:w",
                            "-o", str(theirs), "--", str(whole), str(N)],
                           capture_output=True, timeout=TIMEOUT, env=perf_env(tmp_path))
        if r.returncode != -signal.SIGTRAP and b"Trace/breakpoint trap" not in r.stderr:
            break
    assert r.returncode == 0, r.stderr
    table = read_recording(str(theirs)).build_ids
    assert {(b.build_id, b.path) for b in table} == buildid_list(theirs, tmp_path)
    assert BuildId(str(whole), build_id(whole)) in table  # a user-space object (misc)


def test_a_debuginfod_file_of_another_user_is_not_taken(full, places, tmp_path):
    """The debuginfod cache is found through HOME or the environment: a file
    there owned by someone else (root running with a user's HOME) is passed
    over; the same file owned by the one running (or root) is used."""
    _root, cache = places
    exe, beside = installed(full["nopie"], "beside", places, tmp_path)
    bid = build_id(exe)
    in_cache = cache / bid / "debuginfo"
    in_cache.parent.mkdir(parents=True)
    shutil.copy(beside, in_cache)
    beside.unlink()
    assert elf.debug_file(str(exe)) == str(in_cache)
    os.chown(in_cache, 65534, 65534)  # nobody's
    assert elf.debug_file(str(exe)) is None
    os.chown(in_cache, os.geteuid(), os.getegid())
    assert elf.debug_file(str(exe)) == str(in_cache)

