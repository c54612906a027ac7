"""A DWARF struct member inside libpython, in a real CPython 3.11 run.

``_PyRuntime.ceval.signals_pending@libpython3.11.so.1.0`` is the flag the C
signal handler raises (SIGNAL_PENDING_SIGNALS) and the eval loop lowers once
it has run the Python handler: two writes per signal.  The script sends its
own process SIGNALS signals, one at a time, so the member is written exactly
2 * SIGNALS times.  The GIL's ``interval`` and ``switch_number`` are written
once each by a single-threaded run (the GIL's set-up, its first holder).
Members written on every GIL release (``locked``, ``last_holder``) are left
out: how often start-up releases the GIL depends on import-cache timing
(FileFinder's directory mtimes), so their counts vary from run to run.

The member addresses for perf come from gdb (``p/x &_PyRuntime.ceval...``
from libpython's DWARF, in a run of the same interpreter without
randomization), not from perfbp.  It needs a python3.11 linked against a
shared libpython3.11.so.1.0 that carries DWARF (.debug_info): pyenv builds
with --enable-shared do; Debian's python3.11 is linked statically and its
debug build (python3.11-dbg) too, so without such a build the test skips.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

import pytest

from .tools import Layout, compare_counts, need, perf_event, run

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

LIB = "libpython3.11.so.1.0"
SIGNALS = 37
SCRIPT = f"""\
import os, signal
signal.signal(signal.SIGUSR1, lambda *a: None)
for _ in range({SIGNALS}):
    os.kill(os.getpid(), signal.SIGUSR1)
"""
MEMBERS = ["ceval.signals_pending", "ceval.gil.interval", "ceval.gil.switch_number"]


def _libpython(python: str) -> str | None:
    """The libpython3.11.so.1.0 ``python`` loads (ldd), if it has DWARF."""
    proc = run(["ldd", python])
    m = re.search(rf"{re.escape(LIB)} => (\S+)", proc.stdout)
    if proc.returncode != 0 or not m:
        return None
    sections = run(["readelf", "-SW", m[1]]).stdout
    return m[1] if ".debug_info" in sections else None


@pytest.fixture(scope="module")
def python311() -> str:
    need("ldd", "readelf")
    candidates = [p for home in dict.fromkeys([os.path.expanduser("~"), "/root"])
                  for p in sorted(glob.glob(f"{home}/.pyenv/versions/3.11*/bin/python3.11"))]
    candidates += [p for p in (shutil.which("python3.11"), "/usr/local/bin/python3.11") if p]
    for python in candidates:
        if os.access(python, os.X_OK) and _libpython(os.path.realpath(python)):
            return os.path.realpath(python)
    pytest.skip(f"no python3.11 with a shared {LIB} carrying DWARF here "
                f"(tried {candidates}; a pyenv build with --enable-shared has one)")


def test_libpython_struct_members_count_what_perf_counts(python311, tmp_path):
    """Three members of _PyRuntime by name in libpython, counted by perfbp
    and by perf at gdb's addresses: equal, and signals_pending exactly
    twice per signal."""
    need("perf", "gdb", "setarch")
    argv = [python311, "-I", "-S", "-c", SCRIPT]
    layout = Layout.of(argv, tmp_path, [f"&_PyRuntime.{m}" for m in MEMBERS]
                       + [f"sizeof(_PyRuntime.{m})" for m in MEMBERS])
    addresses, sizes = layout.values[:len(MEMBERS)], layout.values[len(MEMBERS):]
    events = [perf_event(a, n) for a, n in zip(addresses, sizes)]
    specs = [f"_PyRuntime.{m}@{LIB}" for m in MEMBERS]

    hits, perf = compare_counts(specs, events, argv, tmp_path)
    assert dict(zip(MEMBERS, hits)) == dict(zip(MEMBERS, perf)), \
        f"perfbp {hits} vs perf {perf} at {events}"
    assert perf[0] == 2 * SIGNALS, f"signals_pending written {perf[0]} times by the script"
