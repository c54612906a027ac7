"""perfbp.cli.coerce: option values without pydantic, exactly as typer converts them,
and the console entry point's quick exit.

The conversion is checked against typer's own (the pydantic ``TypeAdapter``
typer builds for the same perfbp parameter): on values drawn by hypothesis
and on a table of edge cases, whatever perfbp converts itself must equal
typer's result, value and type; everything else must be left to typer.  Then
whole commands run in fresh interpreters and must not import pydantic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import typer.core
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.main import get_command

from perfbp.cli import app, coerce

COMMANDS = get_command(app).commands


def param(command: str, name: str):
    return next(p for p in COMMANDS[command].params if p.name == name)


#: One perfbp parameter of each kind the CLI has.
KINDS = {
    "int": param("stat", "pid"),
    "int >= 1": param("record", "top"),
    "float": param("stat", "duration"),
    "str": param("stat", "cpu"),
    "list[str] option": param("stat", "watch"),
    "list[str] argument": param("stat", "command"),
}


def typers(p, value):
    """typer's own conversion of ``value`` for parameter ``p``: ('ok', value)
    or ('error', message)."""
    runtime = typer.core._TyperParameter.get_runtime_param(p)
    try:
        return "ok", runtime.coerce(value, param=p, ctx=None)
    except Exception as exc:  # typer's BadParameter
        return "error", str(exc)


def perfbps(p, value):
    try:
        return coerce.plain_value(p.type_descriptor.annotation, p.type_descriptor.parameter_info,
                                  value)
    except coerce.Unhandled:
        return coerce.Unhandled


def same_as_typer(p, value) -> None:
    mine = perfbps(p, value)
    if mine is coerce.Unhandled:
        return
    kind, theirs = typers(p, value)
    assert kind == "ok", f"perfbp accepts {value!r}, typer refuses it: {theirs}"
    assert type(mine) is type(theirs) and mine == theirs, f"{value!r}: {mine!r} vs {theirs!r}"


NUMBERISH = st.text(alphabet="0123456789+-.eE_ xai\u0663\u00b9", max_size=12)


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(kind=st.sampled_from(sorted(KINDS)), value=st.one_of(
    NUMBERISH, st.text(max_size=8), st.integers(), st.floats(allow_nan=True),
    st.lists(st.text(max_size=4), max_size=3).map(tuple)))
def test_perfbp_converts_only_what_typer_converts_alike(kind, value):
    same_as_typer(KINDS[kind], value)


EDGES = ["0", "7", "-7", "+7", "007", "1.0", "1e3", " 7", "7 ", "1_000", "0x10", "\u0663",
         "9" * 5000, "", "-", "+", ".", "1.", ".5", "-.5e-3", "1e999", "-1e999", "inf", "nan",
         "1e-999", "3.14159", "1E5", "2e+2", "٣.٣"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_edge_values(kind):
    for value in EDGES:
        same_as_typer(KINDS[kind], value)


@pytest.mark.parametrize("kind,value,expected", [
    ("int", "42", 42), ("int", "-3", -3), ("int >= 1", "5", 5), ("float", "0.25", 0.25),
    ("float", "2", 2.0), ("float", 1, 1.0), ("str", "0-1", "0-1"),
    ("list[str] option", ("a", "b"), ["a", "b"]), ("list[str] argument", ("true",), ["true"]),
])
def test_the_common_values_are_converted_here(kind, value, expected):
    got = perfbps(KINDS[kind], value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("kind,value", [
    ("int", "1.0"), ("int", " 7"), ("int", "1_000"), ("int >= 1", "0"), ("float", "inf"),
    ("float", "nan"), ("float", "1e999"), ("str", 5), ("list[str] option", "a"),
])
def test_the_rest_goes_to_typer(kind, value):
    assert perfbps(KINDS[kind], value) is coerce.Unhandled


def test_every_parameter_of_every_command_is_hooked():
    group = get_command(app)
    for command in [group, *group.commands.values()]:
        ctx = command.make_context("perfbp", [], resilient_parsing=True)
        for p in command.get_params(ctx):
            assert isinstance(p.get_runtime_param(), coerce.PlainCoercion), (command.name, p.name)


def fresh(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=60)


NO_PYDANTIC = """
    import sys
    from perfbp.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit as done:
        code = done.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "pydantic")
    print("pydantic:", loaded[:3], "exit:", code)
"""


@pytest.mark.kernel
@pytest.mark.parametrize("argv", [
    ["stat", "-w", "0x1000/8:w", "-d", "0.05", "--cpu", "0", "--", "/bin/true"],
    ["slots", "-w", "0x1000", "-w", "0x2000/4:rw", "--", "/bin/true"],
    ["check", "--json"],
    ["report", "-i", "/nonexistent/perfbp.data", "--top", "3"],
    ["record", "--top", "2", "-o", "/nonexistent/dir/out.data", "-w", "0x1000", "--", "/bin/true"],
])
def test_commands_run_without_importing_pydantic(argv):
    done = fresh(NO_PYDANTIC, *argv)
    assert "pydantic: []" in done.stdout, done.stdout + done.stderr


def test_a_bad_value_keeps_typers_message():
    done = fresh(NO_PYDANTIC, "stat", "-p", "abc", "-w", "0x1000")
    assert "Invalid value for '-p' / '--pid': Input should be a valid integer" in done.stderr
    assert "exit: 2" in done.stdout
    done = fresh(NO_PYDANTIC, "record", "--top", "0", "-w", "0x1000", "--", "/bin/true")
    assert "Invalid value for '--top': Input should be greater than or equal to 1" in done.stderr


CONSOLE = """
    import atexit, sys, threading, time
    atexit.register(lambda: print("atexit ran", flush=True))
    if "--thread" in sys.argv:
        sys.argv.remove("--thread")
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
    sys.argv[0] = "perfbp"
    from perfbp.cli import console
    console()
"""


def test_console_exits_with_the_commands_status_after_the_exit_handlers():
    done = fresh(CONSOLE, "report", "-i", "/nonexistent/perfbp.data")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot read /nonexistent/perfbp.data" in done.stderr
    assert done.stdout == "atexit ran\n"
    done = fresh(CONSOLE, "--help")
    assert done.returncode == 0 and done.stdout.startswith("Usage: perfbp")
    assert done.stdout.endswith("atexit ran\n")


def test_console_waits_for_a_live_thread():
    done = fresh(CONSOLE, "--thread", "--help")
    assert done.returncode == 0
    assert "thread done" in done.stdout and done.stdout.endswith("atexit ran\n")


def test_console_output_into_a_closed_pipe_is_one_quiet_exit_1():
    """As before the quick exit: click's own handling of EPIPE, exit 1, no message."""
    reader, writer = os.pipe()
    os.close(reader)
    done = subprocess.run([sys.executable, "-m", "perfbp", "--help"], stdout=writer,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(writer)
    assert (done.returncode, done.stderr) == (1, "")
