"""Fixtures shared by the real-kernel tests: known workloads and pinned threads.

The workloads are C, so that the number of accesses to the watched memory is
known exactly (tests/workloads/*.c say how); they are built once per session
with the system's gcc, through the ``build`` fixture.  Python never reads or writes the watched memory.

* ``build``: ``build(source, *flags, name=None) -> Path`` compiles one
  workload with gcc (``source`` relative to tests/workloads/), once per
  session for each (source, flags, name), into one session directory, where
  ``-L.`` and ``$ORIGIN`` find the libraries built before.
* ``libwork``: ``tests/workloads/libwork.c`` as a shared library, loaded with
  ctypes, argument types declared.  ``libwork.scratch`` is the address of its
  64-byte-aligned ``scratch`` array.
* ``threads_prog``: the path of ``tests/workloads/threads.c`` built as a
  program (the process-target test).
* ``pinned_thread``: a factory of :class:`PinnedThread`, a Python thread that
  pins itself to one CPU, reports its thread id, and waits for ``go()``
  before it calls into libwork; every one is released and joined at teardown.
* ``run_unprivileged``: run a Python snippet that imports perfbp as root and
  then drops to nobody (uid/gid 65534, no groups, no capabilities).

perfbp keeps a cache of DWARF indexes under ``$XDG_CACHE_HOME/perfbp``
(perfbp.symbols.dwarf_cache), and reads debug files from the debuginfod
client's cache (``$DEBUGINFOD_CACHE_PATH``, perfbp.symbols.debuginfo): the
session points both at directories of its own, for every test and the
perfbp commands they run, so that no test reads or writes the user's
``~/.cache``.

Machines that lose debug exceptions.  Some hypervisors now and then deliver
a breakpoint's debug exception without its status (DR6 empty): the kernel
then counts nothing and the program gets a SIGTRAP, which kills a workload
that does not handle it (perf's programs too).  At the start of the session
``tests/workloads/dr6_probe.c`` measures this machine (200,003 hits on
itself) when the selection has a test marked ``kernel``, and up to three
times more after a test fails until it has seen a loss (the losses come in
bursts); the summary says what it found.  On a machine that lost
any, a test that fails is run again, up to twice, with its fixtures made
anew: the assertions stay exact, and a run the machine did not disturb must
pass them.  On a sound machine nothing is ever run again.

Markers (registered in pyproject.toml): ``kernel`` (arms hardware
breakpoints), ``root``, ``gcc``; the tests that use the fixtures above get
theirs here.  ``pytest -m "not kernel"`` passes on a machine without
breakpoints.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
WORKLOADS = TESTS_DIR / "workloads"

NOBODY = 65534


PERFBP = [sys.executable, "-m", "perfbp"]


def run_perfbp(*args: str, timeout: float = 60, slot_wait: float = 15,
               **kw) -> subprocess.CompletedProcess:
    """``perfbp ARGS`` to completion, from the repository root (``kw`` go
    to :func:`subprocess.run`).  While another program holds every
    debug-register slot CPU-wide (another test suite, gdb), arming fails
    with ENOSPC, rightly: it is run again until the slots come back, for
    up to ``slot_wait`` seconds."""
    deadline = time.monotonic() + slot_wait
    while True:
        r = subprocess.run([*PERFBP, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, **kw)
        if "(ENOSPC)" not in r.stderr or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def _gcc(args: "list[str]", cwd: "Path | None" = None) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc {' '.join(args)} failed:\n{proc.stderr}")


class Builder:
    """``build(source, *flags, name=None) -> Path``: ``source`` (a path,
    relative ones in tests/workloads/) compiled by ``gcc -o OUT SOURCE FLAGS``
    in one directory, the working directory of every build.  The same
    (source, flags, name) is built once; ``name`` defaults to the source's
    stem (``lib<stem>.so`` with ``-shared``), made unique when another build
    already took it.  Raises ``RuntimeError`` with gcc's stderr."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: "dict[tuple, Path]" = {}
        self._names: "dict[str, tuple]" = {}

    def __call__(self, source, *flags: str, name: "str | None" = None) -> Path:
        src = WORKLOADS / source
        key = (str(src), tuple(map(str, flags)), name)
        if key in self._built:
            return self._built[key]
        if name is None:
            stem = f"lib{src.stem}.so" if "-shared" in flags else src.stem
            name, n = stem, 1
            while name in self._names:
                n += 1
                name = f"{stem}-{n}"
        elif name in self._names:
            raise ValueError(f"build: {name} is already the output of {self._names[name]}")
        out = self.root / name
        _gcc(["-o", str(out), str(src), *key[1]], cwd=self.root)
        self._names[name] = key
        self._built[key] = out
        return out


@pytest.fixture(scope="session", autouse=True)
def _own_cache_home(tmp_path_factory):
    """``XDG_CACHE_HOME`` and ``DEBUGINFOD_CACHE_PATH``: directories of the
    session's (see the module's doc)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache-home")))
        mp.setenv("DEBUGINFOD_CACHE_PATH", str(tmp_path_factory.mktemp("debuginfod-cache")))
        yield


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workloads")


@pytest.fixture(scope="session")
def build(build_dir) -> Builder:
    """Compile a workload once per session: see :class:`Builder`."""
    return Builder(build_dir)


@pytest.fixture(scope="session")
def libwork(build):
    """libwork.so, loaded.  ``libwork.scratch`` is the watched array's address."""
    so = build("libwork.c", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC")
    lib = ctypes.CDLL(str(so))
    for name in ("write_u8", "write_u16", "write_u32", "write_u64"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_long]
        fn.restype = None
    lib.read_u64.argtypes = [ctypes.c_void_p, ctypes.c_long]
    lib.read_u64.restype = ctypes.c_uint64
    lib.kernel_write_u64.argtypes = [ctypes.c_void_p, ctypes.c_long]
    lib.kernel_write_u64.restype = ctypes.c_long
    lib.call_work_fn.argtypes = [ctypes.c_long]
    lib.call_work_fn.restype = None
    lib.work_fn.argtypes = []
    lib.work_fn.restype = None
    lib.fork_and_write.argtypes = [ctypes.c_void_p, ctypes.c_long]
    lib.fork_and_write.restype = ctypes.c_int
    lib.scratch_addr.argtypes = []
    lib.scratch_addr.restype = ctypes.c_void_p
    lib.scratch = lib.scratch_addr()
    assert lib.scratch % 64 == 0
    lib.work_fn_addr = ctypes.cast(lib.work_fn, ctypes.c_void_p).value
    return lib


@pytest.fixture(scope="session")
def threads_prog(build) -> Path:
    return build("threads.c", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread")


def _thread_cpu() -> int:
    """The CPU the calling thread last ran on (field 39 of its stat)."""
    with open("/proc/thread-self/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[39 - 3])


class PinnedThread(threading.Thread):
    """A thread that pins itself to ``cpu``, publishes its thread id, and
    runs ``fn(*args)`` only when told to go.

    Usage::

        t = PinnedThread(1, lib.write_u64, addr, n)
        tid = t.start()          # returns once the thread is pinned
        ... open a Counter on tid ...
        t.finish()               # go, join, re-raise its exception if any
    """

    def __init__(self, cpu: int, fn, *args) -> None:
        super().__init__(name=f"pinned-cpu{cpu}", daemon=True)
        self.cpu = cpu
        self.fn = fn
        self.args = args
        self.tid: int | None = None
        self.ran_on: int | None = None
        self.result = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._go = threading.Event()

    def run(self) -> None:
        try:
            os.sched_setaffinity(0, {self.cpu})  # 0: this thread only
            self.tid = threading.get_native_id()
        except BaseException as exc:  # reported by start()
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        self._go.wait()
        try:
            self.result = self.fn(*self.args)
            self.ran_on = _thread_cpu()
        except BaseException as exc:  # re-raised by finish()
            self.error = exc

    def start(self) -> int:  # type: ignore[override]
        super().start()
        self._ready.wait(10)
        if self.error is not None:
            raise self.error
        assert self.tid is not None
        return self.tid

    def go(self) -> None:
        self._go.set()

    def finish(self, timeout: float = 60):
        self.go()
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def pinned_thread():
    threads: list[PinnedThread] = []

    def make(cpu: int, fn, *args) -> PinnedThread:
        t = PinnedThread(cpu, fn, *args)
        threads.append(t)
        return t

    yield make
    for t in threads:
        t.go()
        if t.ident is not None:  # started
            t.join(60)


# The snippet imports perfbp (and so cffi) as root, since the interpreter and
# its site-packages may live under /root (mode 700), then drops to nobody:
# setresuid from root to non-zero ids clears every capability (capabilities(7)),
# so what follows is an ordinary unprivileged process as the kernel sees it.
_UNPRIVILEGED_PRELUDE = r"""
import ctypes, json, os, sys
import perfbp
from perfbp.kernel import system
for _name in perfbp.__all__:  # the API's modules load on first use: load them now
    getattr(perfbp, _name)
import perfbp.kernel.values  # conditions' (not behind a public name), read as root too
os.setgroups([])
os.setresgid(%(id)d, %(id)d, %(id)d)
os.setresuid(%(id)d, %(id)d, %(id)d)
def _cap(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1], 16)
RESULT = {"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
          "CapEff": _cap("CapEff"), "CapPrm": _cap("CapPrm"), "CapAmb": _cap("CapAmb")}
def attempt(name, fn):
    try:
        c = fn()
    except perfbp.PerfbpError as e:
        RESULT[name] = {"error": type(e).__name__, "errno": e.errno,
                        "oserror": isinstance(e, OSError), "message": str(e)}
    else:
        RESULT[name] = {"error": None, "count": c.read(), "fds": len(c.fds)}
        c.close()
"""


@pytest.fixture(scope="session")
def run_unprivileged():
    """Run ``code`` (after the prelude above) as uid/gid 65534 with no
    capabilities; return the ``RESULT`` dict it printed as JSON."""

    def run(code: str, *args: str) -> dict:
        script = _UNPRIVILEGED_PRELUDE % {"id": NOBODY} + code + \
            "\nprint(json.dumps(RESULT))\n"
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([sys.executable, "-c", script, *args], cwd="/", env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        # the drop really happened: nobody, no groups, not one capability
        assert (result["uid"], result["euid"], result["groups"]) == (NOBODY, NOBODY, [])
        assert (result["CapEff"], result["CapPrm"], result["CapAmb"]) == (0, 0, 0)
        return result

    return run


# -- machines that lose debug exceptions (see the module documentation) ---------------

ATTEMPTS_ON_A_LOSSY_MACHINE = 3
_MACHINE: dict = {}


def _probe_machine(build: Path) -> "tuple[int, int, int] | None":
    """``(hits, traps, writes)`` of dr6_probe, or None when it cannot run."""
    exe = build / "dr6_probe"
    try:
        _gcc(["-O1", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
              str(WORKLOADS / "dr6_probe.c")])
        out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
        hits, traps, writes = (int(x) for x in out.stdout.split())
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return hits, traps, writes


def _probe_now() -> "tuple[int, int, int] | None":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        found = _probe_machine(Path(d))
    if found is not None and found[0] != found[2]:
        _MACHINE["lossy"] = True
        _MACHINE["probe"] = found
    return found


# Tests that use these fixtures arm breakpoints; ``build`` compiles with gcc
# and ``run_unprivileged`` and ``nobody_perfbp`` (test_cli) drop from root to nobody.
_KERNEL_FIXTURES = {"libwork", "threads_prog", "pinned_thread", "machine_lost"}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark by fixture (see above), then probe the machine only when a test
    that needs breakpoints was selected (``-m "not kernel"`` runs none)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _KERNEL_FIXTURES:
            item.add_marker(pytest.mark.kernel)
        if "build" in names:
            item.add_marker(pytest.mark.gcc)
        if names & {"run_unprivileged", "nobody_perfbp"}:
            item.add_marker(pytest.mark.root)


def pytest_collection_finish(session) -> None:
    _MACHINE["lossy"] = False
    if any(item.get_closest_marker("kernel") for item in session.items):
        _MACHINE["probe"] = _probe_now()


def pytest_report_collectionfinish(config, start_path, items) -> "str | None":
    return _header() if _MACHINE.get("probe") is not None else None


def _header() -> str:
    found = _MACHINE.get("probe")
    if found is None:
        return "debug exceptions: not probed (no test needs them, no compiler or no events)"
    hits, traps, writes = found
    if not _MACHINE["lossy"]:
        return f"debug exceptions: {hits:,} of {writes:,} hits delivered with their status"
    return (f"debug exceptions: this machine lost {writes - hits:,} of {writes:,} hits "
            f"({traps:,} arrived without their status): a failed test runs again, up to "
            f"{ATTEMPTS_ON_A_LOSSY_MACHINE - 1} times")


def pytest_runtest_protocol(item, nextitem):
    if _MACHINE.get("probe") is None:
        return None
    from _pytest.runner import runtestprotocol

    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in range(ATTEMPTS_ON_A_LOSSY_MACHINE):
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        if not any(r.failed for r in reports):
            break
        for _look in range(3):  # the losses come in bursts: look again, right after
            if _MACHINE["lossy"]:
                break
            _probe_now()
        if not _MACHINE["lossy"]:
            break
        if attempt + 1 < ATTEMPTS_ON_A_LOSSY_MACHINE:
            item.add_report_section("call", "machine",
                                    f"attempt {attempt + 1} failed on a machine that loses "
                                    f"debug exceptions; running it again")
            # fixtures of every scope are made again: a module's shared run
            # (a recording, a terminal session) may be what the machine spoiled
            item.session._setupstate.teardown_exact(None)
            time.sleep(1.0)  # and a burst of losses may pass meanwhile
    if attempt:
        _MACHINE.setdefault("again", []).append(
            (item.nodeid, attempt + 1, not any(r.failed for r in reports)))
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def machine_disturbed(doc: dict) -> bool:
    """Whether perfbp's JSON output says the machine lost hits in that run
    (``recovered`` on a watch, ``unattributed_traps``): a run to do again
    where a test needs every hit sampled."""
    return bool(doc.get("unattributed_traps")) or any(
        w.get("recovered") for w in doc.get("watches", ()))


@pytest.fixture
def machine_lost():
    """A callable: the hits on this process's own watches that the machine
    delivered without their status since the test began (perfbp's SIGTRAP
    guard counted them; no event did).  0 on a sound machine."""
    from perfbp.kernel.events import TrapGuard

    start = TrapGuard.taken
    return lambda: TrapGuard.taken - start


def pytest_terminal_summary(terminalreporter) -> None:
    """The probe's finding, and every test that needed another run (also
    under -q, where the header is not shown)."""
    if _MACHINE.get("probe") is None:
        return
    terminalreporter.write_line(_header())
    for nodeid, runs, passed in _MACHINE.get("again", []):
        terminalreporter.write_line(f"  ran {runs} times ({'passed' if passed else 'failed'}): "
                                    f"{nodeid}")


# -- the CLI in this process, for the fuzzers (test_corpus, test_fuzz_cli) ------------


class _TooSlow(Exception):
    pass


def _too_slow(_sig, _frame):
    raise _TooSlow()


def cli_in_process(argv: "list[str]", limit: int = 10) -> "tuple[int | str, str, str, float]":
    """``perfbp ARGV`` through the CLI's ``main`` in this process: ``(exit
    code, stdout, stderr, seconds)``.  The code is ``"timeout"`` when it ran
    past ``limit`` seconds (SIGALRM), ``"traceback"`` when an exception
    escaped ``main`` (what a user would see as a traceback; stderr then
    ends with a ``Traceback:`` line naming it and where it was raised)."""
    import contextlib
    import io
    import signal
    import traceback

    from perfbp import cli

    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, _too_slow)
    signal.alarm(limit)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(list(argv))
                code: "int | str" = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    except _TooSlow:
        code = "timeout"
    except BaseException as exc:
        code = "traceback"
        where = traceback.extract_tb(exc.__traceback__)[-1]
        err.write(f"Traceback: {type(exc).__name__}: {str(exc)[:300]!r} at "
                  f"{Path(where.filename).name}:{where.lineno} ({where.line})")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - start


def cli_problem(code, stderr: str, seconds: float, limit: int = 10,
                codes: "tuple[int, ...]" = (0, 2)) -> "str | None":
    """What is wrong with a run of the CLI, or None: it must end within
    ``limit`` seconds with one of ``codes`` and no traceback, and bad input
    (exit 2) gets one error line (one per name, when names were not found),
    with no raw control characters."""
    if code == "timeout" or seconds >= limit:
        return f"took {seconds:.1f} s (limit {limit} s)"
    if code not in codes or "Traceback" in stderr:
        return f"exit {code}: {stderr.strip()[-1500:]}"
    errors = [ln for ln in stderr.splitlines() if ln.startswith("perfbp: error:")]
    if code == 2 and not errors:
        return f"exit 2 with no error line: {stderr.strip()[-500:]!r}"
    if len(errors) > 1 and not all("not found" in e or "no symbol" in e for e in errors):
        return f"{len(errors)} error lines: {stderr.strip()[-500:]!r}"
    for e in errors:
        if not e.isprintable():  # control characters, bidi overrides, lone surrogates
            return f"raw control or unprintable characters in {e[:300]!r}"
    lines = stderr.splitlines()
    after = lines[lines.index(errors[0]):] if errors else []
    if len(after) == 3 and re.fullmatch(r"  \S.*", after[1]) and after[1].isprintable() \
            and re.fullmatch(r"  *\^", after[2]):
        after = after[:1]  # a condition's mistake, and a caret under it
    if any(not ln.startswith("perfbp: error:") for ln in after):
        return f"an error message of more than one line: {stderr.strip()[-500:]!r}"
    return None
