"""Call stacks through code without frame pointers: ``record --call-graph
dwarf`` on the real kernel, read back by perf's own unwinder (``perf
script``, ``perf report -G``) and by perfbp's (``perfbp report``), which
must agree frame for frame on every sample; the same code recorded with
``-g`` (frame pointers) shown as unreliable, with the hint.

The workload (``tests/workloads/unwind_chain.c``) is built with ``-O2
-fomit-frame-pointer``: main calls a, a calls b, b calls store, and store
makes the one store to ``counter``, N times (a prime), each with the stack
store <- b <- a <- main (and below main, libc's start and ``_start``).

Without a kernel: the ``--call-graph`` values, the x86-64 call encodings
that make an address a return address, and the unwinder's reuse of its
last unwind (checked against a fresh unwinder on every word of a real
sample's stack changed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
import conftest
from conftest import machine_disturbed

import perfbp
from perfbp.data.perfdata import read_recording
from perfbp.data.report import CallStack, load_report
from perfbp.kernel.records import Comm, Mmap, Sample, iter_records
from perfbp.kernel.sampling import CallGraph
from perfbp.symbols.elf import Symbolizer
from perfbp.symbols.unwind import Unwinder, is_after_call, regs_index

N_DWARF = 3001    # stores recorded with their stacks: 8.4 KB a sample, 25 MB
N_FP = 1009       # stores recorded with the kernel's frame-pointer walk
#: runs of a recording while the machine loses hits (conftest): at its worst
#: here, 1 in 7,000, a run of 3,001 hits is spoiled one time in two
ATTEMPTS = 6
CHAIN = ("store", "b", "a", "main")
TIMEOUT = 120
SLOT_WAIT = 15  # seconds to wait for slots held by other programs
#: 32 MiB a CPU: every dwarf sample fits, however late the rings are drained
RING_PAGES = "8192"


@pytest.fixture(scope="module")
def prog(build) -> Path:
    exe = build("unwind_chain.c", "-O2", "-fomit-frame-pointer", "-Wall", "-Wextra", "-Werror")
    # the premise: no function sets up a frame pointer, and rbp holds data
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(exe)], check=True,
                         capture_output=True, text=True).stdout
    for name in CHAIN:
        body = asm.split(f"<{name}>:\n", 1)[1].split("\n\n", 1)[0]
        assert "%rsp,%rbp" not in body, body
    assert "mov    %rdi,%rbp" in asm.split("<b>:\n", 1)[1].split("\n\n", 1)[0]
    return exe


def run_perfbp(*args: str) -> subprocess.CompletedProcess:
    """``perfbp ARGS`` (conftest's: waiting for slots another program holds)."""
    return conftest.run_perfbp(*args, timeout=TIMEOUT, slot_wait=SLOT_WAIT)

def record_api(*args, **kw):
    """:func:`perfbp.record`, again while the slots are held elsewhere."""
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        try:
            return perfbp.record(*args, **kw)
        except perfbp.NoBreakpointSlots:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def perf(*args: str) -> str:
    path = shutil.which("perf")
    assert path, "perf is not on PATH: install linux-perf (these tests compare with it)"
    r = subprocess.run([path, *args], capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"perf {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r.stdout


def json_line(stdout: str) -> dict:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return json.loads(line)


@pytest.fixture(scope="module")
def dwarf_recording(prog, tmp_path_factory) -> "tuple[Path, dict]":
    """``perfbp record --call-graph dwarf -w counter -- unwind_chain 3001``,
    again (up to ATTEMPTS times) when the machine lost a hit (conftest)."""
    for _attempt in range(ATTEMPTS):
        path = tmp_path_factory.mktemp("dwarf") / "perfbp.data"
        r = run_perfbp("record", "--json", "--call-graph", "dwarf", "--ring-pages", RING_PAGES,
                       "-o", str(path), "-w", "counter", "--", str(prog), str(N_DWARF))
        assert r.returncode == 0, r.stderr
        doc = json_line(r.stdout)
        if not machine_disturbed(doc):
            break
    return path, doc


def perf_script_stacks(path: Path) -> "list[list[tuple[int, str, str]]]":
    """Each sample's frames as ``perf script`` prints them, innermost first:
    (address in its object, symbol, object).  perf prints the frames of
    inlined functions as lines of their own with their caller's address:
    consecutive lines of one address are one frame (the first line's)."""
    stacks: list = []
    for line in perf("script", "-i", str(path)).splitlines():
        if not line.strip():
            continue
        if not line.startswith("\t"):
            stacks.append([])
            continue
        m = re.match(r"\s+([0-9a-f]+) (\S+) \((.*)\)$", line)
        assert m, line
        addr, sym, dso = int(m[1], 16), m[2], m[3]
        if not stacks[-1] or stacks[-1][-1][0] != addr:
            stacks[-1].append((addr, sym, dso))
    return stacks


@pytest.mark.kernel
def test_dwarf_stacks_are_the_chain_for_perfbp(dwarf_recording):
    """Every one of the N stores is a sample, and perfbp unwinds each to
    store <- b <- a <- main <- libc's start <- _start: one stack, N samples."""
    path, doc = dwarf_recording
    (w,) = doc["watches"]
    assert (w["hits"], w["lost"], w["kernel_hits"], w["accounted"]) == (N_DWARF, 0, N_DWARF,
                                                                         True)
    assert w["call_graph"] == "dwarf"
    (stack,) = w["stacks"]
    assert stack["samples"] == N_DWARF and "reliable" not in stack
    names = [f.split("+")[0] for f in stack["frames"]]
    assert tuple(names[:4]) == CHAIN
    assert names[-1] == "_start" and len(names) == 7, stack["frames"]
    # the table the user reads: a frame a line, under "call stacks:"
    table = run_perfbp("report", "-i", str(path)).stdout
    lines = table.split("  call stacks:\n", 1)[1].splitlines()[:7]
    assert lines[0].split() == [f"{N_DWARF:,}", "100.0%", stack["frames"][0]]
    assert [ln.strip() for ln in lines[1:]] == [f"<- {f}" for f in stack["frames"][1:7]]


@pytest.mark.kernel
def test_perf_unwinds_perfbps_recording_to_the_same_frames(dwarf_recording):
    """perf script (perf's unwinder reading perfbp's file): N samples, each
    with the frames perfbp finds, address for address (perf shows a caller
    at its return address less one, the call instruction: perfbp at the
    return address); perf report -G: the one call graph, _start to store."""
    path, _doc = dwarf_recording
    stacks = perf_script_stacks(path)
    assert len(stacks) == N_DWARF
    assert all(s == stacks[0] for s in stacks)
    frames = stacks[0]
    assert tuple(sym.split("+")[0] for _a, sym, _d in frames[:4]) == CHAIN
    (w,) = load_report(str(path)).watches
    (ours,) = w.stacks
    assert [a for a, _s, _d in frames] == [loc.vaddr - (i > 0) for i, loc in
                                           enumerate(ours.frames)]
    assert all(os.path.basename(d) == loc.short_dso for (_a, _s, d), loc in
               zip(frames, ours.frames) if d != "inlined")
    report = perf("report", "-i", str(path), "-G", "--stdio", "--no-children")
    assert f"# Event count (approx.): {N_DWARF}" in report
    graph = report.split("---", 1)[1].split("\n#", 1)[0].split()
    graph = [g for g in graph if g != "(inlined)"]
    assert graph == [sym.split("+")[0] for _a, sym, _d in reversed(frames)]
    assert graph[-4:] == list(reversed(CHAIN)) and graph[0] == "_start"
    assert re.search(r"100\.00%\s+unwind_chain\s+unwind_chain\s+\[\.\] store", report), report


@pytest.mark.kernel
def test_code_with_only_debug_frame_is_unwound_with_it(build, tmp_path):
    """Built without unwind tables but with -g, the program's functions
    have CFI in .debug_frame only (.eh_frame keeps the C runtime's):
    perfbp report finds it there (perf 6.1 reads .eh_frame only)."""
    exe = build("unwind_chain.c", "-O2", "-fomit-frame-pointer", "-g",
                "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
                name="unwind_chain_debug_frame")
    sections = subprocess.run(["readelf", "-S", "-W", str(exe)], check=True,
                              capture_output=True, text=True).stdout
    assert ".debug_frame" in sections
    n = 1009
    for _attempt in range(ATTEMPTS):
        path = tmp_path / "debug_frame.data"
        r = run_perfbp("record", "--json", "--call-graph", "dwarf,1024", "-o", str(path),
                       "-w", "counter", "--", str(exe), str(n))
        assert r.returncode == 0, r.stderr
        doc = json_line(r.stdout)
        if not machine_disturbed(doc):
            break
    (w,) = doc["watches"]
    assert (w["hits"], w["lost"], w["kernel_hits"]) == (n, 0, n)
    (stack,) = w["stacks"]
    assert stack["samples"] == n
    names = [f.split("+")[0] for f in stack["frames"]]
    assert tuple(names[:4]) == CHAIN and names[-1] == "_start"


@pytest.mark.kernel
def test_a_running_process_is_unwound_from_the_mappings_perfbp_reads(prog, tmp_path):
    """-p: the mappings come from /proc (code and the rest: perf's unwinder
    finds a PIE's .eh_frame_hdr in its read-only segment); every sample,
    by perfbp and by perf, has the chain."""
    proc = subprocess.Popen([str(prog), "1000000000"], stdout=subprocess.DEVNULL)
    try:
        path = tmp_path / "attach.data"
        r = run_perfbp("record", "--json", "--call-graph", "dwarf,1024", "-o", str(path),
                       "-w", "counter", "-p", str(proc.pid), "-d", "0.3")
        assert r.returncode == 0, r.stderr
    finally:
        proc.kill()
        proc.wait()
    (w,) = json_line(r.stdout)["watches"]
    assert w["hits"] > 100 and w["accounted"] is True
    assert [tuple(f.split("+")[0] for f in s["frames"][:4]) for s in w["stacks"]] == [CHAIN]
    assert w["stacks"][0]["samples"] == w["hits"]
    stacks = perf_script_stacks(path)
    assert len(stacks) == w["hits"]
    assert {tuple(sym.split("+")[0] for _a, sym, _d in s[:4]) for s in stacks} == {CHAIN}


@pytest.mark.kernel
def test_frame_pointer_stacks_of_such_code_are_unreliable(prog, tmp_path):
    """-g on the same code: the kernel's walk follows rbp, which holds a
    number, and finds no caller of store; the report does not show that as
    a stack: it is unreliable, cut where it went wrong, with the hint."""
    path = tmp_path / "fp.data"
    w = record_fp(prog, path)
    assert w.call_graph == "fp"
    (stack,) = w.stacks
    assert isinstance(stack, CallStack)
    assert (stack.samples, stack.reliable) == (N_FP, False)
    assert [str(f) for f in stack.frames] == ["store+0xa"]
    table = run_perfbp("report", "-i", str(path)).stdout
    shown = table.split("  call stacks (frame pointers):\n", 1)[1]
    assert shown.splitlines()[:2] == [f"{N_FP:>16,} 100.0%  store+0xa", f"{'':25}<- ??"]
    assert "record with --call-graph dwarf" in " ".join(shown.split())
    doc = json.loads(run_perfbp("report", "-i", str(path), "--format", "json").stdout)
    assert doc["watches"][0]["stacks"] == [{"samples": N_FP, "frames": ["store+0xa"],
                                            "reliable": False}]


def record_fp(exe: Path, path: Path):
    """``record(callchain=True)`` of ``exe N_FP`` until the machine lost no
    hit (conftest); the one watch's report."""
    for _attempt in range(ATTEMPTS):
        result = record_api(["counter"], str(path), command=[str(exe), str(N_FP)],
                            callchain=True)
        if not any(result.recovered) and not result.unattributed:
            break
    (st,) = result.stats
    assert (st.hits, st.samples, st.lost) == (N_FP, N_FP, 0)
    (w,) = load_report(str(path)).watches
    return w


@pytest.mark.kernel
@pytest.mark.parametrize("leaf", [False, True])
def test_frame_pointer_stacks_of_code_that_keeps_them(build, tmp_path, leaf):
    """Built with frame pointers, store called from b: when store sets one
    up (it calls a function), the walk is the chain and is shown as such;
    when it is a leaf that sets none up, the walk starts in b's frame and
    misses b, which the CFI of store tells: unreliable, cut after store."""
    flags = ["-O2", "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Werror"]
    exe = build("unwind_chain.c", *flags, *([] if leaf else ["-DSTORE_CALLS"]),
                name=f"unwind_chain_fp{'_leaf' if leaf else ''}")
    w = record_fp(exe, tmp_path / "fp.data")
    (stack,) = w.stacks
    names = [f.symbol for f in stack.frames]
    if leaf:
        assert (names, stack.reliable) == (["store"], False)
    else:
        assert tuple(names[:4]) == CHAIN and stack.reliable
        assert stack.frames[4].short_dso.startswith("libc.so")


@pytest.mark.kernel
def test_the_unwinder_reuses_an_unwind_only_while_it_holds(dwarf_recording):
    """A sample's stack with any one of its words, or one of its registers,
    changed: the shared unwinder (which reuses its last unwind from the
    same ip and stack pointer when the words it depended on are the same)
    gives what a fresh one gives, changed chain or not."""
    path, _doc = dwarf_recording
    rec = read_recording(str(path))
    sym, sample = Symbolizer(), None
    for r in iter_records(rec.data, rec.config):
        if isinstance(r, Mmap):
            sym.add_mmap(r.pid, r.addr, r.len, r.pgoff, r.filename)
        elif isinstance(r, Comm) and r.exec:
            sym.exec(r.pid)
        elif isinstance(r, Sample) and sample is None:
            sample = r
    mask = rec.config.sample_regs_user
    shared = Unwinder(sym, mask)
    first = shared.unwind(sample.pid, sample.regs, sample.stack)
    assert len(first) == 7
    changed = 0
    for off in range(0, min(len(sample.stack), 512) - 7, 8):
        (word,) = struct.unpack_from("<Q", sample.stack, off)
        for value in ((word + 8) % 2**64, first[2], 0):
            stack = sample.stack[:off] + struct.pack("<Q", value) + sample.stack[off + 8:]
            got = shared.unwind(sample.pid, sample.regs, stack)
            assert got == Unwinder(sym, mask).unwind(sample.pid, sample.regs, stack), off
            changed += got != first
            assert shared.unwind(sample.pid, sample.regs, sample.stack) == first
    assert changed  # some words decide the chain (its return addresses)
    index = regs_index(mask)
    for reg, place in enumerate(index):
        if place is None or reg in (7, 16):  # the stack pointer and ip: the key
            continue
        regs = list(sample.regs)
        regs[place] = (regs[place] + 16) % 2**64
        assert shared.unwind(sample.pid, tuple(regs), sample.stack) == \
            Unwinder(sym, mask).unwind(sample.pid, tuple(regs), sample.stack)


# -- without a kernel ------------------------------------------------------------------------

def test_user_stacks_of_another_architecture_are_not_unwound(tmp_path):
    """A recording made on aarch64 numbers its registers otherwise: its
    user stacks are left alone, and the report says so."""
    from types import SimpleNamespace
    from unittest import mock

    from perfbp.data import perfdata
    from perfbp.data.perfdata import FileEvent, PerfDataWriter
    from perfbp.kernel._uapi import (PERF_SAMPLE_CALLCHAIN, PERF_SAMPLE_IP,
                                     PERF_SAMPLE_REGS_USER, PERF_SAMPLE_STACK_USER,
                                     PERF_SAMPLE_TID)

    st = (PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_CALLCHAIN | PERF_SAMPLE_REGS_USER
          | PERF_SAMPLE_STACK_USER)
    mask = (1 << 33) - 1
    attr = bytearray(128)
    struct.pack_into("<IIQQQQQIIQQ", attr, 0, 5, 128, 0, 1, st, 0, 0, 0, 2, 0x404028, 8)
    struct.pack_into("<QI", attr, 80, mask, 64)
    regs = struct.pack(f"<Q{bin(mask).count('1')}Q", 2, *range(33))
    body = struct.pack("<QIIQ", 0x401000, 1, 1, 0) + regs + struct.pack("<Q", 64) + bytes(64) \
        + struct.pack("<Q", 64)
    path = str(tmp_path / "arm.data")
    writer = PerfDataWriter(path, [FileEvent(bytes(attr), (), "w")])
    writer.write(struct.pack("<IHH", 9, 2, 8 + len(body)) + body)
    with mock.patch.object(perfdata.os, "uname", return_value=SimpleNamespace(
            nodename="h", release="6.18", machine="aarch64")):
        writer.finish(cmdline=["test"], nr_cpus=(1, 1))
    report = load_report(path)
    assert report.watches[0].hits == 1 and not report.watches[0].stacks
    assert any("recorded on aarch64 are not unwound" in n for n in report.notes)


@pytest.mark.parametrize("value, mode, size", [
    (True, "fp", 8192), ("fp", "fp", 8192), ("dwarf", "dwarf", 8192),
    ("dwarf,4096", "dwarf", 4096), ("dwarf,100", "dwarf", 104), ("dwarf,0x10", "dwarf", 16),
    ("dwarf,65528", "dwarf", 65528)])
def test_call_graph_values(value, mode, size):
    """perf's spellings; a size rounded up to whole words, as perf does."""
    graph = CallGraph.parse(value)
    assert (graph.mode, graph.stack_size) == (mode, size)
    assert CallGraph.parse(False) is None and CallGraph.parse(None) is None


@pytest.mark.parametrize("value", ["lbr", "dwarf,0", "dwarf,65529", "dwarf,x", "fp,8",
                                   "dwarf,-8", ""])
def test_bad_call_graphs_are_refused_before_anything_runs(value):
    """In the API's words (callchain=...), and the command line's
    (--call-graph ...): one error line, exit 2, nothing launched."""
    with pytest.raises(perfbp.PerfbpError) as err:
        perfbp.record(["0x1000"], "/nonexistent/x.data", command=["true"], callchain=value)
    assert err.value.errno == 22 and str(err.value).startswith(f"callchain={value!r}")
    r = run_perfbp("record", "--call-graph", value, "-o", "/nonexistent/x.data",
                   "-w", "0x1000", "--", "true")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"perfbp: error: --call-graph {value!r}"
                                     + str(err.value).split(repr(value), 1)[1]]


@pytest.mark.parametrize("code, call", [
    ("e8 00 00 00 00", True),              # call rel32
    ("ff d0", True),                       # call *%rax
    ("41 ff d3", True),                    # call *%r11
    ("ff 15 10 20 30 40", True),           # call *0x40302010(%rip)
    ("ff 14 24", True),                    # call *(%rsp)
    ("ff 54 24 08", True),                 # call *0x8(%rsp)
    ("ff 94 24 00 01 00 00", True),        # call *0x100(%rsp)
    ("ff 50 10", True),                    # call *0x10(%rax)
    ("ff 14 c5 00 10 40 00", True),        # call *0x401000(,%rax,8)
    ("ff e0", False),                      # jmp *%rax
    ("ff 25 10 20 30 40", False),          # jmp *0x40302010(%rip)
    ("48 89 c7", False),                   # mov %rax,%rdi
    ("c3", False),                         # ret
    ("", False),
])
def test_return_addresses_follow_a_call(code, call):
    """Whether the bytes before an address end with an x86-64 call (a
    direct one whose target is code)."""
    assert is_after_call(bytes.fromhex(code)) is call
    assert is_after_call(bytes.fromhex("90 90 90 90 90 90 90") + bytes.fromhex(code)) is call
    if code.startswith("e8"):  # a target outside the code: bytes of something else
        assert not is_after_call(bytes.fromhex(code), lambda d: False)


def test_every_call_site_of_a_program_is_seen_as_one(prog):
    """objdump's every call in the workload: what follows it is a return
    address; what follows any other instruction of the chain's functions
    is not."""
    data = prog.read_bytes()
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(prog)], check=True,
                         capture_output=True, text=True).stdout
    text = subprocess.run(["objdump", "-h", str(prog)], check=True, capture_output=True,
                          text=True).stdout
    (vma, off), = [(int(f[3], 16), int(f[5], 16)) for f in map(str.split, text.splitlines())
                   if len(f) > 5 and f[1] == ".text"]
    size = len(data)
    seen = {True: 0, False: 0}
    for name in CHAIN:
        body = asm.split(f"<{name}>:\n", 1)[1].split("\n\n", 1)[0].splitlines()
        rows = [(int(ln.split(":")[0], 16), ln.split("\t")[-1].split()[0]) for ln in body]
        for (_at, insn), (after, _next) in zip(rows, rows[1:]):
            code = data[after - vma + off - 7:after - vma + off]
            lands = lambda d, after=after: 0 <= after + d < size  # noqa: E731 (in the file)
            assert is_after_call(code, lands) is (insn == "call"), (name, hex(after))
            seen[insn == "call"] += 1
    assert seen[True] >= 4 and seen[False] > 20
