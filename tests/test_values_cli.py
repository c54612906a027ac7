"""Conditions and values from the command line (``--if``, ``--values``) and in
recordings, on the real kernel.

The workload is ``tests/workloads/values.c`` (see test_values.py): it
stores 1 .. 3N to one u64, in order, from thread A, thread B (started after
an attach) and a forked child, so every hit's old value is the store before
it.  Attached with ``-p``, it names the stores this machine lost (a debug
exception without its status reaches it as a SIGTRAP), and the expected
numbers are those of the stores the kernel saw: exact on any machine.
Launched (``-- values N``), perfbp's tracer takes those SIGTRAPs and counts
them as the watch's ``recovered`` hits, whose values nobody knows: the
expected numbers are then exact on a sound machine and bounded by them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import time
from collections import Counter as Tally_

import pytest

import perfbp
from perfbp.kernel.condition import parse
from conftest import PERFBP, REPO_ROOT, run_perfbp
from test_values import N, PROCESS_CASES, ValuesRun, expected, writer_of

pytestmark = pytest.mark.root  # BPF programs on perf events need CAP_BPF and CAP_PERFMON


@pytest.fixture(scope="module")
def values_prog(build):
    return build("values.c", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread")


def launched(*args: str) -> subprocess.CompletedProcess:
    """``perfbp ARGS`` where ARGS end in ``-- values N``: values.c reads
    "go", writes, and reads one more line before it exits."""
    return subprocess.run([*PERFBP, *args], cwd=REPO_ROOT, input="go\nexit\n",
                          capture_output=True, text=True, timeout=120)


def attached(run: ValuesRun, *args: str) -> "tuple[int, str, str]":
    """``perfbp ARGS -p PID`` on values.c: armed (its banner read), then
    values.c writes and ends, and perfbp with it.  Returns perfbp's exit
    status, stdout and stderr, and values.c's ({tid: writer}, lost)."""
    proc = subprocess.Popen([*PERFBP, *args, "-p", str(run.proc.pid)], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline()
        assert banner.startswith("perfbp: watching"), banner + proc.stderr.read()
        got = run.go()
        run.end()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, banner + err, got


# --- stat --if ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", list(PROCESS_CASES))
def test_stat_if_counts_the_matching_stores_of_two_threads_and_a_child(values_prog, text,
                                                                          tmp_path):
    out_file = tmp_path / "n.json"
    with ValuesRun(values_prog) as run:
        code, _out, err, (_writers, lost) = attached(
            run, "stat", "--json", "-o", str(out_file), "-w", f"{run.addr:#x}/8", "--if", text)
    assert code == 0, err
    seen, want = expected(text, lost)
    (w,) = json.loads(out_file.read_text())["watches"]
    assert (w["hits"], w["matched"], w["condition"]) == (len(seen), sum(want.values()), text)


def test_stat_if_on_a_launched_command_by_name(values_prog, tmp_path):
    out_file = tmp_path / "n.json"
    texts = ["new == 5", f"new > {3 * N - 11}"]  # 1 and the last 11 stores
    r = launched("stat", "--json", "-o", str(out_file), "-w", "value", "-w", "value",
                 "--if", texts[0], "--if", texts[1], "--", str(values_prog), str(N))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out_file.read_text())
    # hits the kernel missed: a watch's own (recovered, in its hits), or,
    # both watches being on one address, nobody's (unattributed, in neither)
    unattributed = doc.get("unattributed_traps", 0)
    for w, text, want in zip(doc["watches"], texts, (1, 11)):
        missed = w.get("recovered", 0) + unattributed  # never tested
        assert w["condition"] == text
        assert 3 * N - unattributed <= w["hits"] <= 3 * N
        assert want - missed <= w["matched"] <= want, w
        if not missed:
            assert (w["hits"], w["matched"]) == (3 * N, want)


def test_stat_if_table_shows_hits_matched_and_the_condition(values_prog):
    r = launched("stat", "-w", "value", "--if", "new == 5", "--", str(values_prog), str(N))
    assert r.returncode == 0, r.stderr
    head = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("hits")]
    assert head and head[0].split() == ["hits", "matched", "watch"], r.stdout
    row = [ln for ln in r.stdout.splitlines() if ln.rstrip().endswith("if new == 5")]
    assert len(row) == 1, r.stdout
    assert row[0].split()[0] == f"{3 * N:,}"


# --- record --if: samples with old and new ----------------------------------------------------

@pytest.mark.parametrize("text", [f"new > {3 * N - 10}", f"new > {N - 10} and new <= {N + 10}",
                                  f"old == {2 * N} and new == {2 * N + 1}", "new & 1 == 0"])
def test_record_if_samples_exactly_the_matching_stores_with_old_and_new(values_prog, text,
                                                                        tmp_path):
    data = tmp_path / "v.data"
    with ValuesRun(values_prog) as run:
        code, _out, err, (writers, lost) = attached(
            run, "record", "--json", "-o", str(data), "-w", f"{run.addr:#x}/8", "--if", text)
    assert code == 0, err
    seen, want = expected(text, lost)
    prev = dict(zip(seen, [0] + seen[:-1]))
    matches = [v for v in seen if parse(text).evaluate(v, prev[v])]
    s = perfbp.load_samples(str(data))
    order = s.columns["time"].argsort(kind="stable")
    news = s.columns["new"][order].tolist()
    olds = s.columns["old"][order].tolist()
    assert news == matches  # every matching store, in order, and nothing else
    assert olds == [prev[v] for v in matches]  # each one's old: the store the kernel saw before
    tids = s.columns["tid"][order].tolist()
    assert [writers[t] for t in tids] == [writer_of(v) for v in matches]
    assert (s.columns["addr"] == run.addr).all()
    report = perfbp.load_report(str(data), top=100)
    (w,) = report.watches
    assert (w.hits, w.lost, w.matched, w.kernel_hits) == (len(matches), 0, len(matches), len(seen))
    assert w.accounted and w.condition == text
    assert sorted(w.values) == sorted(Tally_(matches).items())[:100] or len(matches) > 100


def test_record_values_samples_every_store_with_consecutive_values(values_prog, tmp_path):
    data = tmp_path / "v.data"
    with ValuesRun(values_prog) as run:
        code, _out, err, (_writers, lost) = attached(
            run, "record", "-o", str(data), "-w", f"{run.addr:#x}/8", "--values")
    assert code == 0, err
    seen, _want = expected("new != 0 or new == 0", lost)
    s = perfbp.load_samples(str(data))
    order = s.columns["time"].argsort(kind="stable")
    assert s.columns["new"][order].tolist() == seen
    assert s.columns["old"][order].tolist() == [0] + seen[:-1]
    assert "samples" in err and f"{len(seen):,} samples, 0 lost" in err


def test_report_of_values_in_text_csv_and_json(values_prog, tmp_path):
    data = tmp_path / "v.data"
    text = f"new > {3 * N - 10} or new == 7"
    with ValuesRun(values_prog) as run:
        code, out, err, (_writers, lost) = attached(
            run, "record", "-o", str(data), "-w", f"{run.addr:#x}/8", "--if", text)
    assert code == 0, err
    seen, want = expected(text, lost)
    n = sum(want.values())
    assert f"matched {n:,} of {len(seen):,} hits (if {text}): every match accounted for" in out
    assert "values written (new):" in out and "transitions (old -> new):" in out
    assert "           1   " in out.split("transitions (old -> new):")[1]  # each pair once
    r = run_perfbp("report", "-i", str(data), "--format", "csv", "--top", "100")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    pairs = {(int(x["old"]), int(x["new"])): int(x["samples"]) for x in rows if x["old"]}
    prev = dict(zip(seen, [0] + seen[:-1]))
    assert pairs == {(prev[v], v): 1 for v in seen if v == 7 or v > 3 * N - 10}
    r = run_perfbp("report", "-i", str(data), "--format", "json", "--top", "100")
    assert r.returncode == 0, r.stderr
    (w,) = json.loads(r.stdout)["watches"]
    assert (w["matched"], w["condition"], w["accounted"]) == (n, text, True)
    assert sorted(v["value"] for v in w["values"]) == sorted(
        v for v in seen if v == 7 or v > 3 * N - 10)
    assert all(v["hits"] == 1 for v in w["values"])


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is installed by .ci/run")
def test_perf_reads_a_recording_with_values(values_prog, tmp_path):
    data = tmp_path / "v.data"
    text = f"new > {3 * N - 10}"
    with ValuesRun(values_prog) as run:
        code, _out, err, (_writers, lost) = attached(
            run, "record", "-o", str(data), "-w", f"{run.addr:#x}/8", "--if", text)
    assert code == 0, err
    _seen, want = expected(text, lost)
    r = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,ip,event"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(rows) == sum(want.values()), r.stdout


# --- refusals: one line, a caret, exit 2 -------------------------------------------------------

@pytest.mark.parametrize("text, column, why", [
    ("new = 5", 4, "`=` is not a comparison: write =="),
    ("new == ", 7, ""),
    ("1 < new < 5", 8, ""),
    ("new == 0x1ff", 7, "does not fit"),
])
def test_a_bad_condition_is_one_line_and_a_caret(text, column, why):
    r = run_perfbp("stat", "-w", "0x601040/1", "--if", text, "--", "true")
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 3 and lines[0].startswith("perfbp: error: condition "), r.stderr
    assert why in lines[0]
    assert lines[1] == f"  {text}"
    assert lines[2] == "  " + " " * column + "^"
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("text, why", [
    ("(" * 40 + "new == 0" + ")" * 40, "nested more than 32 deep"),
    ("not " * 40 + "new == 0", "nested more than 32 deep"),
    (" or ".join(f"new == {i}" for i in range(100)), "at most 1,000 are read"),
    ("new ==\n0", "'\\n' is a control character"),
])
def test_conditions_too_deep_too_long_or_on_two_lines_are_one_line(text, why):
    r = run_perfbp("stat", "-w", "0x601040", "--if", text, "--", "true")
    assert r.returncode == 2, r.stderr
    assert why in r.stderr.splitlines()[0] and "Traceback" not in r.stderr, r.stderr


def test_watches_of_one_name_stay_apart_in_a_recording(values_prog, tmp_path):
    data = tmp_path / "v.data"
    with ValuesRun(values_prog) as run:
        spec = f"{run.addr:#x}/8"
        code, _out, err, (_writers, lost) = attached(
            run, "record", "-o", str(data), "-w", spec, "--if", "new == 5",
            "-w", spec, "--if", f"new > {3 * N - 10}", "-w", spec, "--if", "new == 5")
    assert code == 0, err
    report = perfbp.load_report(str(data))
    names = [w.name for w in report.watches]
    assert names == [f"{spec} #1", f"{spec} if new > {3 * N - 10}", f"{spec} #3"]
    for w, text in zip(report.watches, ["new == 5", f"new > {3 * N - 10}", "new == 5"]):
        assert (w.matched, w.hits, w.accounted) == (sum(expected(text, lost)[1].values()),) * 2 \
            + (True,)
    assert perfbp.load_samples(str(data)).watches == names


@pytest.mark.parametrize("args, why", [
    (["stat", "-w", "0x601040", "-w", "0x601080", "-w", "0x6010c0", "--if", "new == 1",
      "--if", "new == 2"], "2 --if conditions for 3 watches"),
    (["record", "-o", "/dev/null", "--period", "3", "-w", "0x601040", "--if", "new == 1"],
     "--period 3 samples one hit in 3, and --if needs every hit"),
    (["record", "-o", "/dev/null", "--period", "3", "-w", "0x601040", "--values"],
     "--values needs every hit"),
    (["stat", "--multiplex", "-w", "0x601000/64", "--if", "new == 1"],
     "watches that take turns (--multiplex)"),
])
def test_conditions_that_cannot_apply_are_refused(args, why):
    r = run_perfbp(*args, "--", "true")
    assert r.returncode == 2, r.stderr
    assert why in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


# --- top --if, the Python API, a damaged recording ---------------------------------------------

def test_top_if_shows_matched_and_the_values(values_prog):
    r = launched("top", "-w", "value", "--if", f"new > {3 * N - 3}", "-i", "0.2", "--",
                 str(values_prog), str(N))
    assert r.returncode == 0, r.stderr
    last = [ln for ln in r.stdout.splitlines() if " value hits=" in ln][-1]
    fields = dict(f.split("=") for f in last.split() if "=" in f)
    recovered = int(fields.get("recovered", 0))
    assert int(fields["hits"]) == 3 * N
    assert 3 - recovered <= int(fields["matched"]) == int(fields["samples"]) <= 3, last
    assert f"matched {fields['matched']} of {3 * N - recovered:,} hits (if new > {3 * N - 3})" \
        in r.stdout
    if not recovered:
        assert f"1  33.3%  {3 * N - 1:,} -> {3 * N:,}" in r.stdout


def test_sampler_condition_in_this_process(machine_lost):
    import ctypes

    cells = (ctypes.c_uint32 * 2)()
    a = ctypes.addressof(cells)
    bps = [perfbp.Breakpoint.write(a, 4), perfbp.Breakpoint.write(a + 4, 4)]
    with perfbp.Sampler(bps, perfbp.Target.this_thread(), condition=["old > new", None]) as s:
        for i in range(1, 1010):  # 1,009 writes to each cell
            cells[0] = i % 7
            cells[1] = i
        s.disable()
        batch = s.read()
        stats = s.stats()
    assert machine_lost() == 0
    # the first cell drops from 6 to 0 once in 7 writes: 144 times in 1,009
    assert [(st.hits, st.matched, st.samples, st.lost) for st in stats] == \
        [(1009, 144, 144, 0), (1009, 1009, 1009, 0)]
    first = batch.watch == 0
    assert set(zip(batch.samples.old[first].tolist(), batch.samples.new[first].tolist())) == {(6, 0)}
    assert batch.samples.new[~first].tolist() == list(range(1, 1010))
    assert batch.samples.old[~first].tolist() == list(range(0, 1009))


def test_a_recording_whose_values_are_damaged_is_one_line(values_prog, tmp_path):
    data = tmp_path / "v.data"
    with ValuesRun(values_prog) as run:
        code, _out, err, _got = attached(run, "record", "-o", str(data), "-w",
                                         f"{run.addr:#x}/8", "--if", "new == 5 or new == 6")
    assert code == 0, err
    raw = bytearray(data.read_bytes())
    kind = (28).to_bytes(4, "little") + (1).to_bytes(4, "little")  # raw size, kind
    at = raw.find(kind)
    assert at > 0
    raw[at + 4] = 9  # a kind perfbp never writes
    data.write_bytes(bytes(raw))
    r = run_perfbp("report", "-i", str(data))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "does not hold perfbp's values" in r.stderr and "Traceback" not in r.stderr


def test_stat_intervals_carry_matched_and_add_up(values_prog, tmp_path):
    out_file = tmp_path / "n.json"
    r = launched("stat", "--json", "-o", str(out_file), "-I", "20", "-w", "value", "--if",
                 "new & 1", "--", str(values_prog), str(N))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out_file.read_text())
    (w,) = doc["watches"]
    parts = [i["watches"][0] for i in doc["intervals"]]
    assert len(parts) >= 2
    assert sum(p["hits"] for p in parts) == w["hits"] == 3 * N
    assert sum(p["matched"] for p in parts) == w["matched"]
    assert all(p["condition"] == "new & 1" for p in parts)


def test_a_full_ring_loses_samples_with_values_and_says_how_many(values_prog):
    """A one-page ring, not drained while half of 30,021 stores match: the
    kernel counts the samples it could not write, once, and samples + lost
    is exactly the matches."""
    text = "new & 1 == 0"
    with ValuesRun(values_prog) as run:
        bp = perfbp.Breakpoint.write(run.addr, 8)
        with perfbp.Sampler([bp], perfbp.Target.process(run.proc.pid), condition=text,
                            ring_pages=1) as s:
            _writers, lost = run.go()
            batch = s.read()
            (st,) = s.stats()
            run.end()
    seen, want = expected(text, lost)
    assert (st.hits, st.matched) == (len(seen), sum(want.values()))
    assert st.lost > 0 and st.samples + st.lost == st.matched and st.complete
    assert (batch.samples.new & 1 == 0).all() and (batch.samples.new - batch.samples.old > 0).all()


def _wait_for_perf_events(pid: int, timeout: float = 20.0) -> None:
    """Until process ``pid`` (perf) has a perf event open, and a moment
    more for it to enable it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            links = []
        if "anon_inode:[perf_event]" in links:
            time.sleep(0.5)
            return
        time.sleep(0.05)
    raise AssertionError(f"perf (pid {pid}) opened no event in {timeout} s")


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is installed by .ci/run")
def test_perf_record_with_raw_samples_still_reads(values_prog, tmp_path):
    """perf record -R gives breakpoint samples an empty raw field: not
    perfbp's values, and no error; the report is perf's samples."""
    data = tmp_path / "perf-raw.data"
    with ValuesRun(values_prog) as run:
        rec = subprocess.Popen(["perf", "record", "-q", "-R", "-o", str(data), "-e",
                                f"mem:{run.addr:#x}/8:w", "-p", str(run.proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for_perf_events(rec.pid)  # perf has no "armed" line
        _writers, lost = run.go()
        run.end()
        rec.wait(30)
    # what this test is about is that the file reads, samples as samples;
    # how many perf took is perf's business (its event counts kernel-mode
    # writes too, and starts when it starts)
    report = perfbp.load_report(str(data))
    (w,) = report.watches
    s = perfbp.load_samples(str(data))
    assert w.hits == len(s) > 0 and w.matched is None and not w.values and not w.transitions
    assert "old" not in s.columns and "new" not in s.columns
    assert (s.columns["addr"] == run.addr).all()
    user = s.columns["ip"] < 0x800000000000
    assert set(s.columns["tid"][user].tolist()) <= set(_writers) | {run.proc.pid}
