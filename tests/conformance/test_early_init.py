"""Library watches armed before any initializer runs.

libc's ``_init_first``, run by ld.so among the library initializers before
the program's constructors and ``main``, stores the environment pointer into
``__environ`` (``environ`` is its alias): one write by libc's own code, in
every dynamically linked program, before main.  In programs that do not copy
``__environ`` into their .bss (true, cat, ls do not: readelf -r) that store
lands in libc's own variable.  perf, armed at exec, counts it; perfbp must
arm ``environ@libc.so.6`` early enough to count it too.
"""

from __future__ import annotations

import shutil

import pytest

from .tools import Layout, compare_counts, copy_relocations, dynamic_symbols, need, perf_event

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

LIBC = "libc.so.6"

PROGRAMS = [["true"], ["cat", "/dev/null"], ["ls", "-d", "/"]]


@pytest.mark.parametrize("argv", PROGRAMS, ids=[a[0] for a in PROGRAMS])
@pytest.mark.parametrize("name", ["environ", "__environ"])
def test_libc_init_writes_are_counted(argv, name, tmp_path):
    """``-w environ@libc.so.6 -- true``: the hit of libc's _init_first,
    counted by perf at libc's address (gdb's mappings + readelf), is
    perfbp's too."""
    need(argv[0], "perf", "readelf", "setarch")
    argv = [shutil.which(argv[0]), *argv[1:]]
    layout = Layout.of(argv, tmp_path)
    libc = Layout.object_named(layout.end, LIBC)
    syms = dynamic_symbols(libc)
    sym = syms[name]
    copied = {syms[n].value for n in copy_relocations(argv[0]) if n in syms}
    assert sym.value not in copied, f"{argv[0]} copies {name}: not libc's own store"
    event = perf_event(Layout.bias(layout.end, libc) + sym.value, sym.size)

    (hits,), (perf,) = compare_counts([f"{name}@{LIBC}"], [event], argv, tmp_path)
    assert hits == perf, f"perfbp {hits} vs perf {perf} at {event}"
    assert perf >= 1, "libc's _init_first did not write __environ: the test proves nothing"
