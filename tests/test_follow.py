"""Named watches on launched commands: each armed the moment its address is
known, on the object really accessed, and followed through exec (real
kernel, programs built here; tests/conformance compares real programs with
perf).

Workloads: tests/workloads/ctor_lib.c (a library whose constructor writes
its ``lib_counter`` and the program's ``prog_flag`` once before main; bump(n)
writes lib_counter n times), ctor_prog.c (main writes prog_flag once, calls
bump(argv[1]), may exec argv[2]), copy_prog.c (non-PIE: lib_counter reached
through a copy relocation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import perfbp
from perfbp.planning.spec import parse

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

REPO = Path(__file__).resolve().parent.parent
N1, N2 = 1009, 211


def perfbp_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfbp", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def stat_json(*args: str, cwd=None) -> dict:
    r = perfbp_cli("stat", "--json", *args, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def progs(build) -> Path:
    """The directory of the builds: libctor.so and the programs linked
    against it (``-L.``, found again through ``$ORIGIN``)."""
    build("ctor_lib.c", "-O2", "-shared", "-fPIC", name="libctor.so")
    rpath = "-Wl,-rpath,$ORIGIN"
    build("ctor_prog.c", "-O2", "-no-pie", "-rdynamic", "-L.", "-lctor", rpath, name="ctor_prog")
    build("ctor_prog.c", "-O2", "-fPIE", "-pie", "-rdynamic", "-L.", "-lctor", rpath,
          name="ctor_pie")
    build("copy_prog.c", "-O2", "-no-pie", "-L.", "-lctor", rpath, name="copy_prog")
    return build.root


def address_of(exe: Path, name: str) -> int:
    out = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    return next(int(line.split()[0], 16) for line in out.splitlines()
                if line.split()[-1] == name)


def test_library_name_counts_the_constructors_write(progs):
    """Armed when ld.so maps the library, before any initializer: the
    constructor's write and bump's N1, by soname and by bare name (the
    program does not define it: its library does)."""
    doc = stat_json("-w", "lib_counter@libctor.so", "-w", "lib_counter", "--",
                    str(progs / "ctor_pie"), str(N1))
    assert [w["hits"] for w in doc["watches"]] == [1 + N1, 1 + N1]
    for w in doc["watches"]:
        (b,) = w["bindings"]
        assert b["object"] == str(progs / "libctor.so") and b["address"] == w["address"]
        assert "copy_of" not in b


def test_arming_point_does_not_depend_on_the_other_watches(progs):
    """An address is armed inside execve whatever else is watched: the
    library constructor's write to the program's prog_flag counts with and
    without a library name beside it."""
    flag = address_of(progs / "ctor_prog", "prog_flag")
    alone = stat_json("-w", f"mem:{flag:#x}/8:w", "--", str(progs / "ctor_prog"), "3")
    both = stat_json("-w", f"mem:{flag:#x}/8:w", "-w", "lib_counter@libctor.so", "--",
                     str(progs / "ctor_prog"), "3")
    named = stat_json("-w", "prog_flag", "--", str(progs / "ctor_prog"), "3")
    assert alone["watches"][0]["hits"] == both["watches"][0]["hits"] == 2
    assert named["watches"][0]["hits"] == 2 and named["watches"][0]["address"] == flag


def test_copy_relocation_watches_the_programs_copy(progs):
    """copy_prog holds lib_counter's copy (R_X86_64_COPY): the name, with
    @LIB or bare, watches the copy at the address readelf gives, counting
    exactly what the address form counts: ld.so's copy of the initial
    value, the constructor's write, bump's N2 and main's N1 (all go to the
    copy); the output says a copy relocation moved the watch."""
    rel = subprocess.run(["readelf", "-rW", str(progs / "copy_prog")], capture_output=True,
                         text=True, check=True).stdout
    copy = next(int(line.split()[0], 16) for line in rel.splitlines()
                if "R_X86_64_COPY" in line and line.split()[-3] == "lib_counter")
    args = ("--", str(progs / "copy_prog"), str(N1), str(N2))
    doc = stat_json("-w", "lib_counter@libctor.so", "-w", "lib_counter",
                    "-w", f"mem:{copy:#x}/8:w", *args)
    named, bare, by_address = doc["watches"]
    assert named["address"] == bare["address"] == copy
    assert named["hits"] == bare["hits"] == by_address["hits"]
    assert named["hits"] - (1 + N1 + N2) in (1, 2)  # memcpy's stores of the copy
    assert named["bindings"][0]["copy_of"] == {"object": str(progs / "libctor.so"),
                                               "symbol": "lib_counter"}
    r = perfbp_cli("stat", "-w", "lib_counter@libctor.so", *args)
    assert r.returncode == 0, r.stderr
    note = " ".join(r.stdout.split("note: ", 1)[1].split())
    assert note.startswith(f"lib_counter@libctor.so is watched in copy_prog's copy at "
                           f"{copy:#x}/8 (a copy relocation: libctor.so's own lib_counter "
                           f"is unused)"), r.stdout
    notes = r.stdout[r.stdout.index(" note: "):].splitlines()
    assert all(len(line) <= 80 for line in notes), notes


def test_slots_plans_a_library_name_and_a_copy(progs):
    r = perfbp_cli("slots", "--json", "-w", "lib_counter@libctor.so", "-w", "errno",
                   "--", str(progs / "copy_prog"))
    assert r.returncode == 2 and "thread-local" in r.stderr
    r = perfbp_cli("slots", "--json", "-w", "lib_counter@libctor.so", "-w", "prog_flag/16",
                   "--", str(progs / "copy_prog"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["fits"], doc["slots_needed"]) == (True, 3)


def test_name_defined_after_exec_through_env(progs):
    """env does not define lib_counter; the program it execs does."""
    doc = stat_json("-w", "lib_counter", "--", "env", "X=1", str(progs / "ctor_pie"), str(N2))
    (w,) = doc["watches"]
    assert w["hits"] == 1 + N2
    assert [b["program"] for b in w["bindings"]] == [str(progs / "ctor_pie")]


def test_exec_moves_the_watch_to_the_new_program(progs):
    """sh runs ctor_prog in a child, then execs ctor_pie: the watch is
    armed in each in turn, each binding with its own hits."""
    doc = stat_json("-w", "lib_counter@libctor.so", "--", "sh", "-c",
                    f"{progs / 'ctor_prog'} {N2}; exec {progs / 'ctor_pie'} {N1}")
    (w,) = doc["watches"]
    assert [(b["program"], b["hits"]) for b in w["bindings"]] == [
        (str(progs / "ctor_prog"), 1 + N2), (str(progs / "ctor_pie"), 1 + N1)]
    assert w["hits"] == 2 + N1 + N2
    assert "notes" not in doc  # one after the other: nothing was moved from a live program


def test_exec_into_a_program_without_the_name_disarms_it(progs):
    """ctor_prog execs /bin/true, whose libraries lack lib_counter: the
    watch is disarmed there (a note says so) and keeps its N2 + 1 hits."""
    doc = stat_json("-w", "lib_counter@libctor.so", "--", str(progs / "ctor_prog"), str(N2),
                    "/bin/true")
    (w,) = doc["watches"]
    assert w["hits"] == 1 + N2
    assert any("disarmed" in n and "true" in n for n in doc["notes"]), doc


def test_unknown_name_is_refused_before_anything_runs(progs, tmp_path):
    marker = tmp_path / "ran"
    r = perfbp_cli("stat", "-w", "lib_countr", "--", "sh", "-c",
                   f"touch {marker}; exec {progs / 'ctor_prog'} 1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no symbol 'lib_countr'" in r.stderr and "closest: lib_counter" in r.stderr
    assert str(progs / "ctor_prog") in r.stderr and not marker.exists()


def test_name_no_program_of_a_script_defines_is_an_error_after_the_run(progs, tmp_path):
    """What a script runs is not on its command line: perfbp follows it,
    then names every program of the run."""
    script = tmp_path / "wrapper.sh"
    script.write_text(f"#!/bin/sh\nexec {progs / 'ctor_prog'} {N2}\n")
    script.chmod(0o755)
    r = perfbp_cli("stat", "-w", "no_such_name", "-w", "lib_counter", "--", str(script))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("perfbp: error:")]
    assert len(err) == 1 and "no symbol 'no_such_name'" in err[0]
    assert str(progs / "ctor_prog") in err[0]
    assert f"{1 + N2:,}  lib_counter" in r.stdout  # the counts come first


def test_json_says_when_the_status_is_perfbps_own_error(progs, tmp_path):
    """The counts come, then the error: exit 2, and the JSON says 2 is
    perfbp's (``error``), not the command's (``exit_code`` 0)."""
    script = tmp_path / "wrapper.sh"
    script.write_text(f"#!/bin/sh\nexec {progs / 'ctor_prog'} {N2}\n")
    script.chmod(0o755)
    r = perfbp_cli("stat", "--json", "-w", "no_such_name", "-w", "lib_counter", "--",
                   str(script))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert (doc["exit_code"], doc["exit_status"]) == (0, 2)
    assert "no symbol 'no_such_name'" in doc["error"] and doc["error"] in r.stderr
    assert doc["watches"][1]["hits"] == 1 + N2


def test_thread_local_name_is_refused(progs):
    for spec in ("tls_counter", "errno@libc.so.6"):
        r = perfbp_cli("stat", "-w", spec, "--", str(progs / "ctor_prog"), "1")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        (line,) = r.stderr.splitlines()
        assert "thread-local (STT_TLS" in line and \
            "then watch its address (-w ADDR/LEN) with -t TID; it is " in line


def test_thread_local_name_is_refused_in_the_apis_words(progs):
    with pytest.raises(perfbp.InvalidBreakpoint) as info:
        perfbp.count(["tls_counter"], command=[str(progs / "ctor_prog"), "1"])
    msg = str(info.value)
    assert "thread-local (STT_TLS" in msg
    assert ("then watch its address (Watch.range(ADDR, LEN)) with "
            "target=Target.thread(TID); it is ") in msg
    assert "-t TID" not in msg and "-w " not in msg


def test_pid_names_stop_at_exec(progs, tmp_path):
    """-p resolves names once: when the process execs, the kernel removes
    their events (remove_on_exec), and a note says so."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    proc = subprocess.Popen(["sh", "-c", f"read x < {fifo}; "
                             f"exec {progs / 'ctor_prog'} {N2} /bin/sleep 1"])
    try:
        time.sleep(0.2)
        r = subprocess.Popen([sys.executable, "-m", "perfbp", "stat", "--json", "-w",
                              "environ@libc.so.6", "-p", str(proc.pid)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        with open(fifo, "w") as f:
            f.write("go\n")
        out, err = r.communicate(timeout=60)
    finally:
        proc.wait(timeout=30)
    assert r.returncode == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["watches"][0]["hits"] == 0  # nothing after the exec
    assert any(f"process {proc.pid} exec'd " in n and "stopped counting" in n
               for n in doc["notes"]), doc


def test_api_count_reports_the_binding(progs):
    spec = parse("lib_counter@libctor.so")
    res = perfbp.count([spec], command=[str(progs / "copy_prog"), "7", "11"])
    (w,) = res.watches
    (b,) = w.bindings
    assert b.resolution.copied == "lib_counter" and b.resolution.obj.endswith("copy_prog")
    assert w.hits == b.hits and w.hits - 19 in (1, 2)


def test_record_keeps_where_a_name_was_armed(progs, tmp_path):
    """The recording carries each name's bindings: `perfbp report` shows
    the copy relocation and both programs, and perf reads every sample."""
    out = tmp_path / "follow.data"
    r = perfbp_cli("record", "--json", "-w", "lib_counter@libctor.so", "-o", str(out), "--",
                   "sh", "-c", f"{progs / 'ctor_prog'} {N2}; exec {progs / 'copy_prog'} 5 7")
    assert r.returncode == 0, r.stderr
    r = perfbp_cli("report", "-i", str(out), "--format", "json")
    assert r.returncode == 0, r.stderr
    (w,) = json.loads(r.stdout)["watches"]
    first, second = w["bindings"]
    assert (first["program"], first["hits"]) == (str(progs / "ctor_prog"), 1 + N2)
    assert second["program"] == str(progs / "copy_prog") and "copy_of" in second
    assert w["address"] == second["address"]  # not the parked address the events opened at
    assert w["hits"] == w["kernel_hits"] == first["hits"] + second["hits"]
    table = perfbp_cli("report", "-i", str(out)).stdout
    assert "copy relocation: watched in copy_prog's copy; libctor.so's is unused" in table
    assert f"armed in: ctor_prog/{first['pid']} ({1 + N2:,} hits)" in table
    perf = subprocess.run(["perf", "script", "-i", str(out), "-F", "ip"], capture_output=True,
                          text=True)
    assert perf.returncode == 0, perf.stderr
    assert len(perf.stdout.splitlines()) == w["hits"]


@pytest.fixture(scope="module")
def more_progs(progs, build) -> Path:
    d = progs
    build("spawn_parent.c", "-O2", "-fPIE", "-pie", name="spawn_parent")
    build("fork_ctor.c", "-O2", "-shared", "-fPIC", name="libforkctor.so")
    build("sleep_ctor.c", "-O2", "-shared", "-fPIC", name="libsleepctor.so")
    os.makedirs(d / "libdir", exist_ok=True)
    subprocess.run(["cp", str(d / "libctor.so"), str(d / "libdir" / "libctor.so")], check=True)
    build("ctor_prog.c", "-O2", "-fPIE", "-pie", "-rdynamic", "-Llibdir", "-lctor",
          name="no_rpath")
    return d


def test_a_child_that_defines_the_name_too_gives_it_back(more_progs):
    """spawn_parent writes prog_flag N1 times, runs ctor_prog (which defines
    prog_flag too: its library's constructor and its main write it once
    each), then writes prog_flag N2 times: the watch moves to the child and
    back to the parent when the child ends, and nothing else of the parent
    (its pad) is counted."""
    d = more_progs
    doc = stat_json("-w", "prog_flag", "--", str(d / "spawn_parent"), str(N1), str(N2),
                    str(d / "ctor_prog"), "3")
    (w,) = doc["watches"]
    assert w["hits"] == N1 + 2 + N2
    assert [(os.path.basename(b["program"]), b["hits"]) for b in w["bindings"]] == [
        ("spawn_parent", N1), ("ctor_prog", 2), ("spawn_parent", N2)]
    assert any("back in" in n for n in doc["notes"])


def test_a_fork_in_a_constructor_while_loading_is_left_alone(more_progs):
    """ld.so runs a preloaded constructor that forks while perfbp traces
    the loading: the child runs and exits normally."""
    d = more_progs
    r = perfbp_cli("stat", "--json", "-w", "lib_counter@libctor.so", "--", "env",
                   f"LD_PRELOAD={d / 'libforkctor.so'}", str(d / "ctor_pie"), str(N2))
    assert r.returncode == 0, r.stderr
    assert "child of the constructor" in r.stdout
    assert "constructor's child status 0" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["watches"][0]["hits"] == 1 + N2


def test_a_program_left_running_finishes_normally(more_progs, tmp_path):
    """perfbp ends with its command while a background job it started and
    traced is still starting (its constructor sleeps): the job runs to its
    end, untouched."""
    d = more_progs
    out = tmp_path / "bg.out"
    r = perfbp_cli("stat", "-w", "lib_counter@libctor.so", "--", "sh", "-c",
                   f"(exec env LD_PRELOAD={d / 'libsleepctor.so'} {d / 'ctor_pie'} 5 "
                   f"> {out}) & exec {d / 'ctor_pie'} 3")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "slept" not in (
            out.read_text() if out.exists() else ""):
        time.sleep(0.1)
    assert out.read_text() == "slept\n"


def test_library_path_given_on_the_command_line(more_progs):
    """`env LD_LIBRARY_PATH=DIR prog`: the names are found (before the run
    too) where that program will load its libraries from."""
    d = more_progs
    doc = stat_json("-w", "lib_counter@libctor.so", "--", "env",
                    f"LD_LIBRARY_PATH={d / 'libdir'}", str(d / "no_rpath"), str(N2))
    (w,) = doc["watches"]
    assert w["hits"] == 1 + N2
    assert w["bindings"][0]["object"] == str(d / "libdir" / "libctor.so")


def test_no_ptrace_leaves_ptrace_to_the_command(build, progs):
    """A followed command cannot be traced by anyone else (strace, gdb);
    --no-ptrace launches it untraced: addresses only."""
    exe = build("traceme.c", "-O2")
    followed = perfbp_cli("stat", "-w", "0x10000", "--", str(exe))
    assert followed.returncode == 0 and "traceme: Operation not permitted" in followed.stdout
    alone = perfbp_cli("stat", "--no-ptrace", "-w", "0x10000", "--", str(exe))
    assert alone.returncode == 0 and "traceme ok" in alone.stdout, alone.stderr
    named = perfbp_cli("stat", "--no-ptrace", "-w", "prog_flag", "--", str(progs / "ctor_prog"))
    assert named.returncode == 2 and "--no-ptrace" in named.stderr


@pytest.mark.root  # a condition is a BPF program
def test_a_library_variables_first_old_is_its_initial_value(progs):
    """lib_counter is 5 in the library's .data; its constructor writes 1
    first: the first hit's old is 5 (read once ld.so has mapped the
    library's data, not when its first segment was mapped)."""
    doc = stat_json("-w", "lib_counter@libctor.so", "--if", "old == 5 and new == 1",
                    "-w", "lib_counter@libctor.so", "--if", "old == 0", "--",
                    str(progs / "ctor_pie"), str(N1))
    first, zero = doc["watches"]
    recovered = first.get("recovered", 0)
    assert first["hits"] == 1 + N1
    if not recovered:
        assert (first["matched"], zero["matched"]) == (1, 0)
    else:  # a lost hit is never tested, and the one after it sees an older old
        assert first["matched"] <= 1 and zero["matched"] <= recovered
