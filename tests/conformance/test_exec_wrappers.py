"""Names resolved in every program image of a command, across exec.

``env X=1 CMD`` and ``sh -c 'exec CMD'`` are real wrappers: the process
perfbp starts runs env (or sh), which then execs the program.  A name is
watched where each image defines it: ``environ@libc.so.6`` in env is env's
own copy of ``__environ`` (an R_X86_64_COPY, readelf -r), then, after the
exec, the new image's libc ``__environ``; ``counter`` exists only in the
program env or sh execs.  perf watches each of those addresses from the
start (found with readelf, nm and gdb's mappings before and after the exec),
and the sum of its counts is what perfbp must count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .tools import Layout, compare_counts, copy_relocations, dynamic_symbols, need, \
    nm_symbol, perf_event

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

LIBC = "libc.so.6"
WRITES = 23  # exec_target.c's main writes counter this many times
SOURCE = Path(__file__).with_name("exec_target.c")


@pytest.fixture(scope="module")
def prog(build) -> Path:
    """exec_target.c built without PIE: `counter` lies at nm's address, an
    address nothing is mapped at in env or sh, so perf counts only the
    program's own writes there."""
    need("gcc")
    return build(SOURCE, "-O2", "-Wall", "-Werror", "-no-pie")


def test_environ_through_env_is_counted_in_both_images(tmp_path):
    """``-w environ@libc.so.6 -- env X=1 true``: env's copy of __environ
    (written by ld.so's copy, libc's _init_first and env's setenv), then
    true's libc __environ: perfbp's count is perf's two counts summed."""
    env, true = need("env", "true")
    need("perf", "readelf", "setarch")
    argv = [env, "X=1", true]
    layout = Layout.of(argv, tmp_path)
    libc = Layout.object_named(layout.end, LIBC)
    environ = dynamic_symbols(libc)["environ"]
    env_syms = dynamic_symbols(env)
    copy = [off for n, off in copy_relocations(env).items()
            if n in env_syms and n.endswith("environ")]
    assert len(copy) == 1, f"env's copies of __environ: {copy}"
    events = [perf_event(Layout.bias(layout.start, env) + copy[0], environ.size),
              perf_event(Layout.bias(layout.end, libc) + environ.value, environ.size)]

    (hits,), perf = compare_counts([f"environ@{LIBC}"], events, argv, tmp_path)
    assert hits == sum(perf), f"perfbp {hits} vs perf {perf} (env's copy, true's libc)"
    assert all(n >= 1 for n in perf), f"an image did not write environ: {perf}"


WRAPPERS = [["env", "X=1", "./prog"], ["sh", "-c", "exec ./prog"]]


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=["env", "sh-exec"])
def test_name_defined_only_after_exec(wrapper, prog, tmp_path):
    """``-w counter -- env X=1 ./prog`` (and through sh): env and sh have no
    `counter`; the name is resolved in the program they exec, and every one
    of its writes is counted, as perf counts them at nm's address."""
    need(wrapper[0], "perf", "setarch")
    shutil.copy(prog, tmp_path / "prog")
    argv = [shutil.which(wrapper[0]), *wrapper[1:]]
    event = perf_event(nm_symbol(str(prog), "counter"), 8)

    (hits,), (perf,) = compare_counts(["counter"], [event], argv, tmp_path)
    assert hits == perf == WRITES, f"perfbp {hits} vs perf {perf} (the program writes {WRITES})"
