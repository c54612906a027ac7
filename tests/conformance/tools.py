"""Run perf and perfbp on the same real command and find, without perfbp,
the addresses perf must watch.

Addresses come from the programs' own ELF files (``readelf``: dynamic
symbols, R_X86_64_COPY relocations, program headers) and from gdb (``info
proc mappings`` of the same command, ``p &expr`` from DWARF).  gdb runs its
inferior with address randomization off, exactly as ``setarch -R`` does, so
what it shows is where things lie in the perf and perfbp runs, which both go
through ``setarch -R``.

The platform loses a debug trap's status now and then (about one hit in
10^4-10^5, in bursts: the hypervisor drops DR6).  The kernel then counts
nothing and the program gets a SIGTRAP and dies (status 133); perf suffers it
as perfbp does.  A run whose workload died that way proves nothing about
either tool, so :func:`retry` runs the whole comparison again, up to three
times, instead of comparing a broken run.

The debug registers are shared with whatever else runs on the machine (other
perf or perfbp sessions, gdb): a system-wide watch takes a slot from every
thread.  An open refused with ENOSPC is therefore waited out and retried
(:class:`SlotsBusy`) rather than reported as a difference.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import pytest

TIMEOUT = 120
NO_ASLR = ("setarch", "-R")
ATTEMPTS = 3
TRAPPED = 128 + signal.SIGTRAP  # the shell's, perf's and perfbp's status for it
BUSY_SECONDS = 60  # how long slots held by others are waited out

T = TypeVar("T")


class Trapped(Exception):
    """A workload died of SIGTRAP: the platform lost a hit (see the module doc)."""


class SlotsBusy(Exception):
    """perf or perfbp found no free debug register (ENOSPC): held by others."""


def need(*programs: str) -> list[str]:
    """Full paths of ``programs``; skips the test naming the first missing one."""
    paths = []
    for name in programs:
        path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} is not installed here (.ci/run installs it)")
        paths.append(path)
    return paths


def run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    """``argv``, its output captured as text, stdin empty, within TIMEOUT."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, **kw)


def _output(argv: Sequence[str], **kw) -> str:
    proc = run(argv, **kw)
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


def check_run(proc: subprocess.CompletedProcess, what: str) -> None:
    """Raise Trapped or SlotsBusy when ``proc`` (perf or perfbp) met either."""
    if proc.returncode in (TRAPPED, -signal.SIGTRAP) or "Trace/breakpoint trap" in proc.stderr:
        raise Trapped(f"{what}: the workload died of SIGTRAP")
    if proc.returncode != 0 and ("No space left on device" in proc.stderr
                                 or "ENOSPC" in proc.stderr):
        raise SlotsBusy(f"{what}: {proc.stderr.strip()}")


def retry(attempt: Callable[[], T]) -> T:
    """``attempt()``, again (up to 3 times in all) while a workload dies of
    SIGTRAP, and again while the debug registers are held by others."""
    trapped = []
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            return attempt()
        except Trapped as exc:
            trapped.append(str(exc))
            if len(trapped) == ATTEMPTS:
                pytest.fail(f"{ATTEMPTS} runs in a row lost a debug trap: {trapped}")
            time.sleep(1)  # the losses come in bursts: let one pass
        except SlotsBusy as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"no free debug register for {BUSY_SECONDS} s: {exc}")
            time.sleep(0.5)


# -- ELF files, read by readelf ---------------------------------------------

@dataclass(frozen=True)
class Symbol:
    """A defined dynamic symbol: its link-time value and size."""
    value: int
    size: int


def dynamic_symbols(path: str) -> dict[str, Symbol]:
    """``readelf --dyn-syms``: every defined name (version suffix dropped)."""
    syms: dict[str, Symbol] = {}
    for line in _output(["readelf", "-W", "--dyn-syms", path]).splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].rstrip(":").isdigit() or f[6] == "UND":
            continue
        syms.setdefault(f[7].split("@")[0], Symbol(int(f[1], 16), int(f[2], 0)))
    return syms


def copy_relocations(path: str) -> dict[str, int]:
    """``readelf -r``: the R_X86_64_COPY relocations of an executable, as
    symbol name -> link-time address of the executable's copy."""
    copies = {}
    for line in _output(["readelf", "-rW", path]).splitlines():
        f = line.split()
        if len(f) >= 5 and f[2] == "R_X86_64_COPY":
            copies[f[4].split("@")[0]] = int(f[0], 16)
    return copies


def libc_copies(exe: str, libc: str, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """For each libc name: (link address of the executable's copy, size),
    matched by the address the name has in libc (so ``environ`` finds the
    copy of ``__environ``)."""
    libc_syms = dynamic_symbols(libc)
    by_value = {libc_syms[name].value: off
                for name, off in copy_relocations(exe).items() if name in libc_syms}
    out = {}
    for name in names:
        sym = libc_syms[name]
        assert sym.value in by_value, f"{exe} has no copy of {name} (readelf -r)"
        out[name] = (by_value[sym.value], sym.size)
    return out


def first_load_vaddr(path: str) -> int:
    """The p_vaddr of the first PT_LOAD (``readelf -l``), page-aligned down."""
    for line in _output(["readelf", "-lW", path]).splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            return int(f[2], 16) & ~0xFFF
    raise AssertionError(f"{path} has no PT_LOAD")


def is_pie_or_library(path: str) -> bool:
    """ELF type DYN (``readelf -h``): loaded wherever the kernel or ld.so puts it."""
    return "DYN (" in _output(["readelf", "-hW", path])


def nm_symbol(path: str, name: str) -> int:
    """``nm``: the address of a defined global in a (non-PIE) executable."""
    for line in _output(["nm", path]).splitlines():
        f = line.split()
        if len(f) == 3 and f[2] == name:
            return int(f[0], 16)
    raise AssertionError(f"nm: no {name} in {path}")


# -- where things lie: gdb's view of the same command -----------------------

@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int
    path: str


_MAPPING = re.compile(r"^\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)"
                      r"\s+\S+\s+(/\S+)\s*$")


def _gdb(argv: Sequence[str], cwd: Path, script: Sequence[str]) -> str:
    need("gdb")
    cmd = ["gdb", "-batch", "-nx", "-ex", "set startup-with-shell off",
           "-ex", "set pagination off",
           "-ex", "handle all nostop noprint pass"]  # the program's own signals
    for line in script:
        cmd += ["-ex", line]
    return _output([*cmd, "--args", *argv], cwd=cwd)


@dataclass(frozen=True)
class Layout:
    """The files mapped in a command's process without randomization: at its
    first instruction (``start``: the executable and ld.so) and when it calls
    exit_group (``end``: after the loader, and after any exec)."""
    start: tuple[Mapping, ...]
    end: tuple[Mapping, ...]
    values: tuple[int, ...] = ()  # the expressions asked for, at exit_group

    @staticmethod
    def of(argv: Sequence[str], cwd: Path, expressions: Sequence[str] = ()) -> "Layout":
        out = _gdb(argv, cwd, ["starti", "echo @@start\\n", "info proc mappings",
                               "catch syscall exit_group", "continue",
                               "echo @@end\\n", "info proc mappings",
                               *(f"p/x {e}" for e in expressions)])
        start, end = out.split("@@start\n", 1)[1].split("@@end\n", 1)
        values = tuple(int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", end, re.M))
        assert len(values) == len(expressions), f"gdb could not evaluate {expressions}:\n{out}"
        return Layout(_mappings(start), _mappings(end), values)

    @staticmethod
    def bias(maps: Sequence[Mapping], path: str) -> int:
        """How far ``path`` was moved from its link addresses in ``maps``."""
        if not is_pie_or_library(path):
            return 0
        real = os.path.realpath(path)
        for m in maps:
            if m.offset == 0 and os.path.realpath(m.path) == real:
                return m.start - first_load_vaddr(path)
        raise AssertionError(f"{path} is not mapped: {maps}")

    @staticmethod
    def object_named(maps: Sequence[Mapping], basename: str) -> str:
        """The path of the mapped file called ``basename`` (libc.so.6 ...)."""
        for m in maps:
            if os.path.basename(m.path) == basename:
                return m.path
        raise AssertionError(f"no {basename} mapped: {sorted({m.path for m in maps})}")


def _mappings(text: str) -> tuple[Mapping, ...]:
    rows = (_MAPPING.match(line) for line in text.splitlines())
    return tuple(Mapping(int(m[1], 16), int(m[2], 16), int(m[3], 16), m[4]) for m in rows if m)


# -- the two tools ----------------------------------------------------------

def perf_event(address: int, length: int) -> str:
    """perf's spelling of a user-mode write watch (perfbp excludes the kernel)."""
    return f"mem:{address:#x}/{length}:w:u"


def perf_stat(events: Sequence[str], argv: Sequence[str], cwd: Path) -> list[int]:
    """``setarch -R perf stat -e EVENT... -- ARGV``: one count per event."""
    need("perf")
    out = cwd / "perf-stat.csv"
    out.unlink(missing_ok=True)
    cmd = [*NO_ASLR, "perf", "stat", "-x,", "-o", str(out)]
    for ev in events:
        cmd += ["-e", ev]
    proc = run([*cmd, "--", *argv], cwd=cwd)
    check_run(proc, "perf stat")
    assert proc.returncode == 0, f"perf stat failed ({proc.returncode}):\n{proc.stderr}"
    rows = [line.split(",") for line in out.read_text().splitlines()
            if line and not line.startswith("#")]
    assert len(rows) == len(events), f"perf stat printed {rows} for {events}"
    counts = []
    for r in rows:
        assert r[0].isdigit(), f"perf stat did not count {r[2]}: {r[0]}"
        counts.append(int(r[0]))
    return counts


def perfbp_argv(*args: str) -> list[str]:
    """perfbp as installed in the test's interpreter, without randomization."""
    return [*NO_ASLR, sys.executable, "-m", "perfbp", *args]


def perfbp_stat(specs: Sequence[str], argv: Sequence[str], cwd: Path) -> dict:
    """``perfbp stat --json -w SPEC... -- ARGV``: its JSON document."""
    out = cwd / "perfbp-stat.json"  # -o: the command's own stdout stays apart
    out.unlink(missing_ok=True)
    cmd = perfbp_argv("stat", "--json", "-o", str(out),
                      *(a for s in specs for a in ("-w", s)), "--", *argv)
    proc = run(cmd, cwd=cwd)
    check_run(proc, "perfbp stat")
    assert proc.returncode == 0, \
        f"perfbp stat failed ({proc.returncode}):\n{proc.stderr}"
    doc = json.loads(out.read_text())
    assert [w["watch"] for w in doc["watches"]] == list(specs), doc
    return doc


def compare_counts(specs: Sequence[str], events: Sequence[str], argv: Sequence[str],
                   cwd: Path) -> tuple[list[int], list[int]]:
    """perfbp's hits for ``specs`` and perf's counts for ``events``, both on
    ``argv`` without randomization; the pair again if a workload lost a trap."""
    def once():
        perf = perf_stat(events, argv, cwd)
        doc = perfbp_stat(specs, argv, cwd)
        return [w["hits"] for w in doc["watches"]], perf
    return retry(once)
