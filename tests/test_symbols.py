"""Watching by name: symbols resolved in the target's executable, PIE under
ASLR included; unknown and ambiguous names answered (real kernel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfbp
from perfbp.symbols.elf import KernelSymbols
from perfbp.symbols.resolve import find_symbol

REPO = Path(__file__).resolve().parent.parent
WRITES = 50021  # per demo thread


def perfbp_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfbp", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    d = tmp_path_factory.mktemp("symbols")
    out = {}
    for name, flags in (("nopie", ["-no-pie"]), ("pie", ["-fPIE", "-pie"])):
        exe = d / f"demo_{name}"
        subprocess.run(["cc", "-O2", "-g", "-pthread", *flags, "-o", str(exe),
                        str(REPO / "demo" / "demo.c")], check=True)
        out[name] = exe
    dup = d / "dup"
    subprocess.run(["cc", "-O2", "-no-pie", "-o", str(dup),
                    str(REPO / "tests" / "workloads" / "sym_dup_a.c"),
                    str(REPO / "tests" / "workloads" / "sym_dup_b.c")], check=True)
    out["dup"] = dup
    return out


@pytest.mark.kernel
@pytest.mark.parametrize("kind", ["nopie", "pie"])
def test_stat_by_name_counts_exactly(progs, kind):
    """`-w counter` on a launched program, PIE under ASLR included: resolved
    in the new image, exact counts, the very first write in main counted."""
    r = perfbp_cli("stat", "--json", "-w", "counter", "-w", "config+0/4", "--", str(progs[kind]))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    counter, flags = doc["watches"]
    assert (counter["watch"], counter["hits"], counter["length"]) == ("counter", 2 * WRITES, 8)
    assert (flags["hits"], flags["length"]) == (1, 4)  # config.flags = 1, first thing in main
    sym = find_symbol(str(progs[kind]), "counter")
    if kind == "nopie":
        assert counter["address"] == sym.value
    else:  # moved by the load bias: ASLR puts a PIE far above its link address
        assert counter["address"] != sym.value and counter["address"] % 4096 == sym.value % 4096


def test_symbol_length_defaults_to_its_size(progs):
    """`table` is `long table[8]`: 64 bytes, 8 registers (the plan says so,
    and refuses it without opening anything)."""
    r = perfbp_cli("slots", "--json", "-w", "table", "-w", "counter", "--", str(progs["nopie"]))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    table, counter = doc["watches"]
    assert (table["length"], table["slots"], counter["length"], counter["slots"]) == (64, 8, 8, 1)
    assert (doc["slots_needed"], doc["fits"]) == (9, False)
    r = perfbp_cli("stat", "-w", "table", "--", str(progs["nopie"]))
    assert r.returncode == 2 and "8 slots" in r.stderr


def test_unknown_symbol_gets_closest_names(progs):
    r = perfbp_cli("stat", "-w", "countr", "--", str(progs["nopie"]))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "no symbol 'countr'" in lines[0] and "closest: counter" in lines[0]


@pytest.mark.kernel
def test_ambiguous_symbol_lists_candidates(progs):
    with pytest.raises(perfbp.SymbolNotFound) as err:
        find_symbol(str(progs["dup"]), "dup")
    assert "ambiguous" in str(err.value) and str(err.value).count("local") == 2
    r = perfbp_cli("stat", "-w", "dup", "--", str(progs["dup"]))
    assert r.returncode == 2 and "ambiguous" in r.stderr and "Traceback" not in r.stderr
    r = perfbp_cli("stat", "--json", "-w", "shared_total", "--", str(progs["dup"]), "1009")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["watches"][0]["hits"] == 1009


def test_symbol_needs_a_process(progs):
    r = perfbp_cli("stat", "-w", "counter", "-a", "-d", "0.1")
    assert r.returncode == 2 and "needs a process" in r.stderr


@pytest.fixture(scope="module")
def libprog(tmp_path_factory):
    d = tmp_path_factory.mktemp("symlib")
    exe = d / "sym_lib"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(REPO / "tests" / "workloads" / "sym_lib.c")],
                   check=True)
    return exe


@pytest.mark.kernel
def test_library_symbol_resolved_before_main(libprog):
    """`environ@libc.so.6` on a launched PIE: perfbp arms it the moment ld.so
    maps libc, before any initializer: libc's own `_init_first` write to
    environ is counted, then setenv's (2, as perf counts at that address),
    and the address lies inside libc's mapping."""
    r = perfbp_cli("stat", "--json", "-w", "environ@libc.so.6", "--", str(libprog), "1009")
    assert r.returncode == 0, r.stderr
    (w,) = json.loads(r.stdout.strip().splitlines()[-1])["watches"]
    assert (w["watch"], w["hits"], w["length"]) == ("environ@libc.so.6", 2, 8)
    assert w["address"] > 0x7F0000000000  # a shared library's mapping, not the program's


def test_library_not_loaded_is_answered(libprog):
    r = perfbp_cli("stat", "-w", "foo@libnotthere.so", "-p", str(__import__("os").getpid()),
                   "-d", "0.1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "libnotthere.so is not loaded in process" in lines[0]


def test_library_symbol_in_a_running_process():
    """-p: the library is already mapped; the symbol is resolved through its
    load bias (this test process's own libc)."""
    import ctypes
    import os

    (w,) = perfbp.resolve_watches(["environ@libc.so.6"], os.getpid())
    libc = ctypes.CDLL(None)
    assert w.address == ctypes.addressof(ctypes.c_void_p.in_dll(libc, "environ"))


@pytest.mark.kernel
def test_kernel_symbols():
    """`NAME@kernel` comes from /proc/kallsyms: code needs :x; data needs
    CONFIG_KALLSYMS_ALL (this kernel lacks it: a clear refusal); and this
    kernel (no CONFIG_KPROBES) refuses execute breakpoints in kernel code,
    which perfbp explains."""
    import os

    (w,) = perfbp.resolve_watches(["do_exit@kernel:x"], os.getpid())
    kallsyms = {ln.split()[2]: int(ln.split()[0], 16) for ln in open("/proc/kallsyms")
                if len(ln.split()) >= 3 and ln.split()[1] in "tT"}
    assert w.address == kallsyms["do_exit"] and w.access == "x"
    r = perfbp_cli("stat", "-w", "do_exit@kernel", "-a", "-d", "0.1")
    assert r.returncode == 2 and "kernel code" in r.stderr and ":x" in r.stderr
    r = perfbp_cli("stat", "-w", "jiffies_64@kernel", "-a", "-d", "0.1")
    assert r.returncode == 2 and "CONFIG_KALLSYMS_ALL" in r.stderr
    r = perfbp_cli("stat", "-w", "do_exit@kernel:x", "-a", "-d", "0.1")
    assert r.returncode == 2
    assert "CONFIG_KPROBES" in r.stderr  # this VM's kernel: no kprobes


@pytest.mark.kernel
@pytest.mark.parametrize("kind", ["nopie", "pie"])
def test_members_and_elements_by_name(progs, kind):
    """gdb-like `config.flags`, `table[1]`: offsets and sizes from DWARF;
    the demo writes config.flags once in main and table[i] once per thread."""
    r = perfbp_cli("stat", "--json", "-w", "config.flags", "-w", "config.limit",
                   "-w", "table[1]", "-w", "counter", "--", str(progs[kind]))
    assert r.returncode == 0, r.stderr
    flags, limit, t1, counter = json.loads(r.stdout.strip().splitlines()[-1])["watches"]
    assert (flags["length"], flags["hits"]) == (4, 1)
    assert (limit["length"], limit["hits"], limit["address"] - flags["address"]) == (8, 0, 8)
    assert (t1["length"], t1["hits"]) == (8, 1)
    assert counter["hits"] == 2 * WRITES


def test_member_errors_are_one_line(progs):
    for spec, fragment in (("config.flagz", "did you mean 'flags'"),
                           ("table[9]", "valid indexes are 0..7"),
                           ("counter.x", "not a struct")):
        r = perfbp_cli("stat", "-w", spec, "--", str(progs["nopie"]))
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1, (spec, r.stderr)
        assert fragment in lines[0] and "Traceback" not in r.stderr, (spec, lines[0])


# -- a write watch on read-only memory --------------------------------------------------

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def readelf_read_only_sections(path: str) -> "set[str]":
    """The sections readelf maps to a loadable segment without W."""
    out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True,
                         check=True).stdout
    heads, _sep, mapping = out.partition("Section to Segment mapping:")
    segments = [line.split() for line in heads.splitlines()
                if line.split()[:1] and line.split()[0].isupper()
                and line.split()[0] not in ("Type", "Elf", "Entry", "There")]
    rows = [line.split() for line in mapping.splitlines()[2:] if line.strip()]
    fixed: set[str] = set()
    for seg, row in zip(segments, rows):
        if seg[0] == "LOAD" and "W" not in "".join(seg[6:-1]):  # Flg
            fixed.update(row[1:])
    return fixed


@pytest.mark.parametrize("which", ["libc", "nopie", "pie"])
def test_read_only_sections_as_readelf_maps_them(progs, which):
    """What perfbp calls read-only is what readelf maps to a PT_LOAD without
    write permission: .rodata and .text are, .data, .bss and .data.rel.ro
    (relocated by ld.so, then made read-only) are not."""
    from perfbp.symbols import images

    path = LIBC if which == "libc" else str(progs[which])
    mine = {name for _lo, _hi, name in images.image(path).read_only}
    assert mine == readelf_read_only_sections(path)
    assert {".rodata", ".text"} <= mine and not mine & {".data", ".bss", ".data.rel.ro"}


IN6 = ("in6addr_any@libc.so.6{} is in .rodata of libc.so.6, which the program maps "
       "read-only: no store can reach it, so this write watch can never fire (watch its "
       "reads with :rw)")


@pytest.mark.kernel
def test_a_write_watch_on_read_only_memory_is_warned_of(progs):
    """in6addr_any is in libc's .rodata: the write watch counts 0, and the
    banner, the JSON and the API say why it can never fire; the same name
    watched for reads, and a written global, are not warned of."""
    r = perfbp_cli("stat", "--json", "-w", "in6addr_any@libc.so.6/8", "-w", "counter",
                   "-w", "in6addr_any@libc.so.6/8:rw", "--", str(progs["nopie"]))
    assert r.returncode == 0, r.stderr
    ro, counter, reads = json.loads(r.stdout.strip().splitlines()[-1])["watches"]
    assert (ro["hits"], ro["warning"]) == (0, IN6.format("/8"))
    assert counter["hits"] == 2 * WRITES and "warning" not in counter
    assert "warning" not in reads
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert warnings == [f"perfbp: WARNING: {IN6.format('/8')}"]
    result = perfbp.count(["in6addr_any@libc.so.6"], command=[str(progs["nopie"])])
    assert result.watches[0].hits == 0 and result.watches[0].watch.warning == IN6.format("")
    here = perfbp.resolve_watches(["in6addr_any@libc.so.6"], os.getpid())
    assert perfbp.plan(here).watches[0].warning == IN6.format("")


@pytest.mark.kernel
def test_a_write_watch_on_read_only_memory_of_a_running_process():
    """-p: an address is checked in /proc/PID/maps, a name in its object's
    ELF headers."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.2)  # sleep's libc is mapped
        (w,) = perfbp.resolve_watches(["in6addr_any@libc.so.6"], proc.pid)
        with open(f"/proc/{proc.pid}/maps") as f:
            rows = [line.split() for line in f]
        (path,) = {r[5] for r in rows if len(r) == 6
                   and int(r[0].split("-")[0], 16) <= w.address < int(r[0].split("-")[1], 16)}
        spec = f"{w.address:#x}/8"
        r = perfbp_cli("stat", "--json", "-w", spec, "-w", "in6addr_any@libc.so.6/8",
                       "-w", f"{spec}:rw", "-p", str(proc.pid), "-d", "0.1")
        assert r.returncode == 0, r.stderr
        by_address, by_name, reads = json.loads(r.stdout.strip().splitlines()[-1])["watches"]
        assert by_address["warning"] == (
            f"{spec} is in a read-only mapping (r--p) of {path} in process {proc.pid}: no "
            f"store can reach it, so this write watch can never fire (watch its reads with :rw)")
        assert by_name["warning"] == IN6.format("/8")
        assert "warning" not in reads
        assert [line for line in r.stderr.splitlines() if "WARNING" in line] == [
            f"perfbp: WARNING: {by_address['warning']}", f"perfbp: WARNING: {IN6.format('/8')}"]
    finally:
        proc.kill()
        proc.wait()


# -- kernel ips, from /proc/kallsyms's text --------------------------------------------------

#: addresses a few lines share, near each other and 4 KiB, 1 MiB, 256 MiB apart
BASES = (0xFFFFFFFF81000000, 0xFFFFFFFF81000FF0, 0xFFFFFFFF810FF000, 0xFFFFFFFF8F000000,
         0xFFFFFFFFC0000000, 0)


@st.composite
def kallsyms(draw):
    """The text of a /proc/kallsyms: lines of any type, in any order, some
    of them damaged (an address with a bad digit or in capitals, a line cut
    short, no space after the address), with or without a last newline."""
    lines = []
    for _ in range(draw(st.integers(0, 40))):
        addr = draw(st.sampled_from(BASES)) + draw(st.one_of(
            st.sampled_from([0, 8, 0x10, 0xFF0, 0x1000]), st.integers(0, 0x3000)))
        text = f"{addr:016x}"
        damage = draw(st.sampled_from([None] * 6 + ["upper", "digit", "short", "space"]))
        if damage == "upper":
            text = text.upper()
        elif damage == "digit":  # not hex (int() would take "_" and " ")
            at = draw(st.sampled_from([5, 13, 14, 15]))
            text = text[:at] + draw(st.sampled_from("g_ +")) + text[at + 1:]
        kind = draw(st.sampled_from("tTwWtTdDbr"))
        name = draw(st.sampled_from(["f", "do_exit", "x\t[mod]", "", " "]))
        line = {"short": text[:15], "space": text + kind + " " + name}.get(
            damage, f"{text} {kind} {name}")
        lines.append(line)
    body = "\n".join(lines)
    return (body + ("\n" if lines and draw(st.booleans()) else "")).encode()


@settings(max_examples=300, deadline=None)
@given(kallsyms(), st.lists(st.one_of(
    st.builds(lambda b, d: b + d, st.sampled_from(BASES), st.integers(-0x200000, 0x300000)),
    st.integers(0, (1 << 64) - 1)), min_size=1, max_size=12))
def test_kernel_ips_found_by_search_as_by_the_whole_table(text, ips):
    """A kernel ip's symbol, from a search of the text near the ip, is the
    one the whole file parsed into a table gives."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(text)
        f.flush()
        searched, parsed = KernelSymbols(f.name), KernelSymbols(f.name)
    searched.SEARCHES, parsed.SEARCHES = len(ips), 0
    ips = [ip % (1 << 64) for ip in ips]
    assert [searched.resolve(ip) for ip in ips] == [parsed.resolve(ip) for ip in ips]
