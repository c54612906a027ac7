"""Every command of the CLI under a spec and option fuzzer (issue 11: nothing
lost, nothing hangs).

Hypothesis draws ``-w`` specs (numbers of any size and base, lengths,
access letters, names with ``@`` and ``+``, unicode, control characters,
empty, very long) and option values (pids dead, 0, negative, huge; CPU
lists; durations; periods; ring sizes; paths that are devices, FIFOs,
directories, links or missing) for each command, runs ``perfbp`` in this
process (``cli.main``), and checks the project's rule: exit 0, or 2 for bad
input (``check`` also 1: watchpoints do not work here) within 10 s, no
traceback, and each error one line with no raw control characters.

Nothing runs for long: a run that gets past the checks launches
``/bin/true`` (it ends at once), or watches a process or CPUs for 0.05 s
(``-d``); ``top``, which has no ``-d``, only gets targets it must refuse or
``-- /bin/true``; ring sizes that would map a GiB are never drawn.  Argument
strings never hold NUL: execve cannot pass one.  The examples are
derandomized (the same every run) for CI; the seed of a failure is in
hypothesis's report, with the argv that failed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cli_in_process, cli_problem

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

LIMIT = 10
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


# --- the place the runs happen in ------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen(["/bin/true"])
    p.wait()
    return p.pid


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A directory to run in (``record`` writes ./perfbp.data), with the
    files the path options are pointed at."""
    d = tmp_path_factory.mktemp("fuzz_cli")
    os.mkfifo(d / "fifo")
    (d / "link").symlink_to("/dev/zero")
    (d / "empty.data").write_bytes(b"")
    (d / "text.data").write_text("not a recording\n")
    subprocess.run(["perf", "record", "-q", "-o", str(d / "perf.data"), "-e", "mem:0x10000/8:w",
                    "--", "true"], check=True, capture_output=True, timeout=60)
    here = os.getcwd()
    os.chdir(d)
    try:
        yield d
    finally:
        os.chdir(here)


# --- strategies ---------------------------------------------------------------------------------

#: what a shell can pass in argv: anything but NUL, invalid UTF-8 arriving as
#: surrogate escapes
CHARS = st.characters(exclude_characters="\0", exclude_categories=("Cs",)) | \
    st.sampled_from(["\udcff", "\udc80", "\n", "\r", "\x1b", "\t", "\x7f", "\u202e", "é", "\u3000"])
TEXT = st.text(CHARS, max_size=24)
LONG = st.builds(lambda s, n: (s or "x") * n, st.text(CHARS, min_size=1, max_size=3),
                 st.sampled_from([100, 257, 4097, 70000]))


def mostly(good, bad, tries: int = 4):
    """``good`` three times in four, else ``bad``: most runs get past the
    first check, so the later ones are reached too."""
    # hypothesis leans to small numbers, so the rare branch is the largest
    return st.integers(0, tries - 1).flatmap(lambda k: bad if k == tries - 1 else good)


def _num(n: int, base: str) -> str:
    sign = "-" if n < 0 else ""
    n = abs(n)
    return sign + {"x": f"0x{n:x}", "X": f"0X{n:X}", "d": str(n), "o": f"0o{n:o}",
                   "b": f"0b{n:b}", "_": f"{n:_}"}[base]


INTS = st.one_of(st.integers(-3, 70000), st.integers(-(1 << 80), 1 << 80),
                 st.sampled_from([0, 1 << 31, 1 << 32, 1 << 63, (1 << 64) - 1, 1 << 64]))
NUMBER = st.builds(_num, INTS, st.sampled_from("xXdob_"))
ADDRESSES = st.sampled_from(["0x10000", "0x404040", "0x404041", "65536", "0x0", "0x7ffffffff000",
                             "0xffffffff81000000", "0x10001", "0xfffffffffffffff8"])
NAMES = st.sampled_from(["counter", "environ", "environ@libc.so.6", "stdout@libc.so.6",
                         "main", "errno", "x@", "@libc.so.6", "a.b.c", "table[3]", "table[-1]",
                         "table[99999999999999999999]", "s.f[2].g", "_start", "é", "名前",
                         "counter@/bin/true", "counter@/dev/zero", "counter@", "nosuch",
                         "environ+8", "environ@libc.so.6+0x10000000000000000"])
ADDRESS = mostly(ADDRESSES | NAMES, st.one_of(NUMBER, TEXT,
                                               st.builds(lambda n, o: f"{n}+{o}", NAMES, NUMBER)))
LENGTH = mostly(st.sampled_from(["1", "2", "4", "8", "16", "3", "64"]),
                st.one_of(st.sampled_from(["0", "512", "513", "", "-8", "0x8", "8.0", "1e3"]),
                          NUMBER, TEXT))
ACCESS = mostly(st.sampled_from(["w", "rw", "x", "wr"]),
                st.one_of(st.sampled_from(["r", "rx", "wx", "rwx", "W", "", "a", "ww"]), TEXT))
MOD = mostly(st.sampled_from(["u", "k", "uk"]), st.sampled_from(["h", "", "uu"]) | TEXT)


@st.composite
def specs(draw) -> str:
    """A ``-w`` value: most look like specs, some are anything at all."""
    kind = draw(st.sampled_from(["spec"] * 8 + ["text", "long"]))
    if kind == "text":
        return draw(TEXT)
    if kind == "long":
        return draw(LONG)
    text = draw(mostly(st.sampled_from(["", "mem:"]), st.sampled_from(["MEM:", "mem:mem:"])))
    text += draw(ADDRESS)
    for sep, part, often in (("/", LENGTH, 2), (":", ACCESS, 2), (":", MOD, 4)):
        if draw(st.integers(0, often)) == 0:
            text += sep + draw(part)
    return text


def watches():
    return mostly(st.lists(specs(), min_size=1, max_size=3), st.just([]), tries=10).map(
        lambda ws: [a for w in ws for a in ("-w", w)])


PIDS = mostly(st.sampled_from(["1", "dead"]),
              st.one_of(st.sampled_from(["0", "-1", "4194304", "2147483647", "2147483648",
                                         str(1 << 64), "0x10", "", " 1", "1.5"]), NUMBER, TEXT))
BAD_PIDS = PIDS.filter(lambda p: p not in ("1", "0x10"))
CPUS = mostly(st.sampled_from(["0", "1", "0-1", "0,1", "1,0", "0-0"]),
              st.one_of(st.sampled_from(["2", "0-", "-1", "1-0", "0-99999999999", "", ",",
                                         ",,0", "a", "0-3", "0 1", "٠"]), NUMBER, TEXT))
SECONDS = mostly(st.sampled_from(["0.01", "0.5", "2", "1e308", "1e-300"]),
                 st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "-inf", "abc", "", "1_0",
                                            "0x1", "1e999"]),
                           st.floats(allow_nan=True, allow_infinity=True).map(repr), TEXT))
HOSTILE_INT = st.one_of(NUMBER, st.integers(-5, 0).map(str), TEXT)
#: --if: conditions (most of them good), then anything
CONDITIONS = mostly(
    st.sampled_from(["new == 0", "old != 0 and new == 0", "new & 0x80", "new > 5",
                     "not (new < 3 or old >= 7)", "new == 0xff", "old"]),
    st.one_of(TEXT, LONG, st.builds(lambda n: f"new == {n}", NUMBER),
              st.sampled_from(["new =", "(((", "old <", "new == -1", "new == 1e3", "1 < new < 5",
                               "new == 0x1ffffffffffffffff", "and", "new ~ 1", ""])))


def ints(*good: str):
    return mostly(st.sampled_from(list(good)), HOSTILE_INT)


def _pid(value: str, dead: int) -> str:
    return str(dead) if value == "dead" else value


@st.composite
def target(draw, dead: int, *, deadline: bool = True):
    """The target options: ``-- /bin/true`` (ends at once), or -p/-t/-a/-C
    (with -d 0.05 when the command has -d and the values may be good;
    commands without -d only get values that are refused).  Returns the
    arguments, and whether /bin/true is the one target."""
    if draw(st.integers(0, 2)):
        return ["--", "/bin/true"], True
    args: list[str] = []
    pids = PIDS if deadline else BAD_PIDS
    for opt in ("-p", "-t"):
        if draw(st.integers(0, 2)) == 0:
            args += [opt, _pid(draw(pids), dead)]
    if draw(st.integers(0, 3)) == 0 and deadline:
        args.append("-a")
    if draw(st.integers(0, 2)) == 0:
        cpus = draw(CPUS)
        if not deadline and cpus in ("0", "1", "0-1", "0,1", "1,0", "0-0"):
            cpus = "9" + cpus  # no such CPU here
        args += ["-C", cpus]
    if deadline:
        args += ["-d", "0.05"]
    if draw(st.integers(0, 3)) == 0:
        args += ["--", "/bin/true"]
    return args, False


JUNK = mostly(st.just([]), st.lists(st.one_of(
    st.sampled_from(["--nope", "-", "-w", "--json=1", "-pp", "--top", "-Z", "--format"]), TEXT),
    min_size=1, max_size=2), tries=8)


def _option(draw, opt: str, values) -> "list[str]":
    return [opt, draw(values)] if draw(st.integers(0, 2)) == 0 else []


def _flags(draw, *flags: str) -> "list[str]":
    return [f for f in flags if draw(st.integers(0, 3)) == 0]


OUTPUTS = mostly(st.sampled_from(["out.txt", "out.data", "empty.data"]),
                 st.sampled_from([".", "fifo", "link", "/dev/null", "/dev/full",
                                  "missing/dir/out", "", "a\nb", "x" * 300, "/proc/self/mem",
                                  "-", "\x1b[2J"]))
#: ring sizes the kernel may take without mapping a GiB a CPU
RING = mostly(st.sampled_from(["1", "2", "64"]), st.one_of(
    st.sampled_from(["0", "3", "-1", "262145", str(1 << 40), "", "0x10"]),
    st.integers().filter(lambda n: n & (n - 1) or n > 1 << 18 or n < 1).map(str)))


@st.composite
def stat_argv(draw, dead: int):
    head, launched = draw(target(dead))
    args = draw(watches()) + _flags(draw, "--json", "--no-ptrace", "--multiplex")
    args += _option(draw, "-I", ints("10", "100", "100000")) \
        + _option(draw, "--slice-ms", ints("1", "10", "1000000")) \
        + _option(draw, "--if", CONDITIONS) + _option(draw, "--if", CONDITIONS)
    if launched:  # any duration: /bin/true ends first
        args += _option(draw, "-d", SECONDS)
    args += _option(draw, "-o", OUTPUTS)
    return ["stat", *args, *draw(JUNK), *head]


@st.composite
def record_argv(draw, dead: int):
    head, launched = draw(target(dead))
    args = draw(watches()) + _flags(draw, "--json", "--no-ptrace", "--multiplex", "-g",
                                    "--values")
    args += _option(draw, "--if", CONDITIONS)
    for opt, values in (("--period", ints("1", "2", "1000", str((1 << 63) - 1))),
                        ("-c", ints("1", "7")), ("--ring-pages", RING),
                        ("--top", ints("1", "5", "1000000")), ("--slice-ms", ints("1", "10")),
                        ("-o", OUTPUTS)):
        args += _option(draw, opt, values)
    if launched:
        args += _option(draw, "-d", SECONDS)
    return ["record", *args, *draw(JUNK), *head]


@st.composite
def top_argv(draw, dead: int):
    head, _launched = draw(target(dead, deadline=False))
    args = draw(watches()) + _flags(draw, "--no-ptrace", "--multiplex")
    args += _option(draw, "--if", CONDITIONS)
    for opt, values in (("--interval", SECONDS), ("-i", SECONDS),
                        ("--top", ints("1", "5", "1000000")), ("--slice-ms", ints("1", "10"))):
        args += _option(draw, opt, values)
    return ["top", *args, *draw(JUNK), *head]


@st.composite
def slots_argv(draw, dead: int):
    head, _launched = draw(target(dead, deadline=False))
    if draw(st.booleans()):
        head = [a for a in head if a not in ("-d", "0.05")]
    args = draw(watches()) + _flags(draw, "--json")
    if draw(st.integers(0, 5)) == 5:  # measuring opens real breakpoints: refused here
        args += ["--probe", "-w", "0x10000"]
    return ["slots", *args, *draw(JUNK), *head]


INPUTS = mostly(st.sampled_from(["perf.data", "out.data"]),
                st.sampled_from(["empty.data", "text.data", "fifo", "link", ".", "/dev/zero",
                                 "/proc/self/mem", "missing.data", "", "a\nb.data", "\udcff",
                                 "x" * 5000, "\x1b[2J"]) | TEXT)


@st.composite
def report_argv(draw, dead: int):
    args = _option(draw, "-i", INPUTS) or ["-i", "perf.data"]
    for opt, values in (
            ("--format", mostly(st.sampled_from(["table", "json", "csv"]), TEXT)),
            ("-f", mostly(st.sampled_from(["json", "csv"]), st.sampled_from(["CSV", ""]) | TEXT)),
            ("--sort", mostly(st.sampled_from(["watch", "symbol", "thread", "cpu"]), TEXT)),
            ("-s", mostly(st.sampled_from(["cpu", "thread"]), st.sampled_from(["Symbol", ""]))),
            ("--top", ints("1", "5", "1000000"))):
        args += _option(draw, opt, values)
    return ["report", *args, *draw(JUNK)]


@st.composite
def check_argv(draw, dead: int):
    """check measures the machine (3 s): only what it must refuse."""
    junk = draw(st.lists(st.one_of(st.sampled_from(["--nope", "-w", "0x10000", "--json=yes",
                                                    "-p", "1", "/bin/true"]), TEXT),
                         min_size=1, max_size=3))
    return ["check", *_flags(draw, "--json"), *junk]


# --- the runs -------------------------------------------------------------------------------------


def _run(argv: "list[str]") -> None:
    code, _out, err, seconds = cli_in_process(argv, LIMIT)
    codes = (0, 1, 2) if argv[0] == "check" else (0, 2)
    problem = cli_problem(code, err, seconds, LIMIT, codes)
    assert problem is None, f"perfbp {shlex.join(argv)}\n  {problem}"


@pytest.fixture(scope="module")
def dead(place) -> int:
    return _dead_pid()


#: each command's arguments, and how many examples it gets
COMMANDS = {"stat": (stat_argv, 300), "record": (record_argv, 200), "top": (top_argv, 150),
            "slots": (slots_argv, 400), "report": (report_argv, 400), "check": (check_argv, 100)}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_fuzz(place, dead, command):
    strategy, examples = COMMANDS[command]

    @settings(FUZZ, max_examples=examples)
    @given(argv=strategy(dead))
    def run(argv):
        _run(argv)

    run()


def test_every_command_is_fuzzed():
    from perfbp.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert commands == set(COMMANDS)
