"""libc's variables in executables that took a copy of them.

A non-PIC reference from an executable to libc's ``optind``, ``optarg``,
``stdout`` or ``environ`` makes the linker reserve room in the executable's
own .bss and emit an R_X86_64_COPY relocation: at start-up ld.so copies
libc's initial value there, and from then on every access, libc's own
included (through the GOT), goes to the copy.  Watching ``optind@libc.so.6``
therefore means watching the executable's copy; perf is pointed at it by
``readelf -r`` and gdb's mappings, and perfbp must count what perf counts.
``environ`` is an alias of ``__environ`` in libc (one address); executables
copy ``__environ`` under that name, so the copy is matched by address.
"""

from __future__ import annotations

import json
import shutil

import pytest

from .tools import Layout, compare_counts, dynamic_symbols, libc_copies, need, perf_event, \
    perfbp_argv, run

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

LINES = 2003  # lines of the input file: real work for xz, gzip, sort, cat

# program, its arguments (FILE: the input file, OUT: an output path), the
# libc variables it copies and that the test watches.  Options are given one
# by one so that getopt runs once per option, writing optind and optarg.
PROGRAMS = [
    ("xz", ["-k", "-f", "-v", "-T1", "-3", "FILE"], ["optind", "optarg", "stdout"]),
    ("gzip", ["-k", "-f", "-v", "-6", "FILE"], ["optind", "optarg", "stdout"]),
    ("ls", ["-l", "-a", "-h", "--color=never", "-I", "x*", "/"], ["optind", "optarg", "stdout"]),
    ("cat", ["-n", "-s", "-A", "FILE"], ["optind", "stdout"]),
    ("sort", ["-s", "-r", "-n", "-t", ",", "-k", "1,1", "-o", "OUT", "FILE"],
     ["optind", "optarg", "stdout"]),
    ("head", ["-n", "5", "-q", "-c", "64", "FILE"], ["optind", "optarg", "stdout"]),
    # env prints the environment it built: setenv/unsetenv move __environ
    ("env", ["-u", "HOME", "A=1", "B=2"], ["optind", "environ", "stdout"]),
    ("find", ["/", "-maxdepth", "1", "-name", "l*"], ["environ", "stdout"]),
]

LIBC = "libc.so.6"


def _argv(prog: str, args: list[str], tmp_path) -> list[str]:
    files = {"FILE": str(tmp_path / "input.txt"), "OUT": str(tmp_path / "out.txt")}
    return [shutil.which(prog) or prog, *(files.get(a, a) for a in args)]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "input.txt").write_text("".join(f"{i * 7919 % LINES},line {i}\n"
                                                for i in range(LINES)))
    return tmp_path


def expected_events(argv: list[str], names: list[str], cwd) -> list[str]:
    """perf's events at the executable's copies, found with readelf and the
    executable's load address in gdb's mappings of the same command."""
    need("perf", "readelf", "setarch")
    layout = Layout.of(argv, cwd)
    exe = argv[0]
    libc = Layout.object_named(layout.end, LIBC)
    bias = Layout.bias(layout.end, exe)
    return [perf_event(bias + off, size)
            for off, size in libc_copies(exe, libc, names).values()]


@pytest.mark.parametrize("qualified", [True, False], ids=["at-libc", "bare"])
@pytest.mark.parametrize("prog,args,names", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_copy_relocated_names_count_what_perf_counts(prog, args, names, qualified, workdir):
    """``-w optind@libc.so.6`` (and the bare ``-w optind``) on a program that
    copies optind: perfbp's hits equal perf's count at the copy, name by name."""
    need(prog)
    argv = _argv(prog, args, workdir)
    events = expected_events(argv, names, workdir)
    specs = [f"{n}@{LIBC}" if qualified else n for n in names]
    hits, perf = compare_counts(specs, events, argv, workdir)
    # ld.so's copy relocation itself writes every copy: a 0 is a broken reference
    assert all(n > 0 for n in perf), f"perf counted {perf} at {events}"
    assert dict(zip(specs, hits)) == dict(zip(specs, perf)), \
        f"perfbp {hits} vs perf {perf} at {events}"


@pytest.mark.parametrize("name", ["optind", "optarg", "stdout"])
def test_slots_plans_a_copy_relocated_name(name, workdir):
    """``perfbp slots -w NAME@libc.so.6 -- xz ...`` resolves the name and plans
    one register of the variable's size (libc's symbol size)."""
    (xz,) = need("xz")
    argv = [xz, "-k", "-f", "-v", str(workdir / "input.txt")]
    size = dynamic_symbols(Layout.object_named(Layout.of(argv, workdir).end, LIBC))[name].size
    proc = run(perfbp_argv("slots", "--json", "-w", f"{name}@{LIBC}", "--", *argv), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (watch,) = doc["watches"]
    assert (doc["fits"], doc["slots_needed"]) == (True, 1), doc
    assert (watch["watch"], watch["length"], watch["slots"]) == (f"{name}@{LIBC}", size, 1)
