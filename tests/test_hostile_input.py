"""Hostile input: every bad value gets one short line and exit 2, at once —
never a traceback, a hang, or memory that grows with the number typed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfbp.kernel.system import open_regular

REPO = Path(__file__).resolve().parent.parent
FAST = 20  # seconds: each case is refused long before this


def perfbp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfbp", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=FAST,
                          stdin=subprocess.DEVNULL)


def one_line(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("perfbp: error: "), r.stderr[-500:]
    assert len(lines[0]) < 400, lines[0][:500]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("what", ["/dev/zero", "fifo", "dir"])
def test_report_reads_only_regular_files(what, fifo, tmp_path):
    path = {"/dev/zero": "/dev/zero", "fifo": str(fifo), "dir": str(tmp_path)}[what]
    kind = {"/dev/zero": "a device", "fifo": "a FIFO", "dir": "a directory"}[what]
    one_line(perfbp("report", "-i", path), f"{kind}, not a regular file")


def test_open_regular_never_blocks_on_a_fifo(fifo):
    with pytest.raises(OSError) as info:
        open_regular(str(fifo))
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("spec", ["0x404058/100000000", "0x0/4294967296"])
def test_huge_ranges_are_refused_without_expanding_them(spec):
    one_line(perfbp("slots", "-w", spec, "-p", str(os.getpid())), "debug registers",
             "watch up to 512 bytes")


def test_huge_cpu_lists_are_refused_without_expanding_them():
    for cpus in ("0-999999999", "0-99999999999", "4294967296"):
        one_line(perfbp("stat", "-C", cpus, "-w", "0x10000", "-d", "0.1"),
                 "is not a CPU list of this machine")


@pytest.mark.parametrize("args, words", [
    (["stat", "-w", "0x1" + "0" * 4400, "--", "true"], ["4,403 characters long"]),
    (["stat", "-w", "0x1\nperfbp: error: forged", "--", "true"],
     ["contains control characters", r"\n"]),
    (["stat", "-w", "0x1\x1b[31m", "--", "true"], ["contains control characters"]),
    (["record", "--period", str(1 << 64), "-w", "0x10000", "--", "true"], ["2^63-1"]),
    (["record", "--ring-pages", str(1 << 40), "-w", "0x10000", "--", "true"], ["262144"]),
    (["stat", "-d", "nan", "-w", "0x10000", "--", "true"], ["positive number"]),
    (["stat", "-d", "inf", "-w", "0x10000", "--", "true"], ["positive number"]),
    (["stat", "-d", "-1", "-w", "0x10000", "--", "true"], ["positive number"]),
    (["report", "--top", "-1", "-i", "/dev/null"], ["--top"]),
    # what the messages quote is escaped, whoever wrote the message
    (["report", "-i", "/no/such\nperfbp: error: forged"], ["cannot read", r"\n"]),
    (["check", "--x\x1b[2J"], ["No such option", r"\x1b"]),
    (["stat", "-w", "0x1\x9b31m", "--", "true"], ["contains control characters"]),
    (["stat", "-w", "0x1\u202e", "--", "true"], ["contains unprintable characters"]),
])
def test_bad_values_get_one_short_line(args, words):
    one_line(perfbp(*args), *words)


@pytest.mark.kernel
def test_top_with_an_interval_of_1e308_seconds_still_ends():
    r = perfbp("top", "--interval", "1e308", "-w", "0x10000", "--", "true")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-500:]


def test_output_to_a_device_is_refused_before_the_run():
    one_line(perfbp("stat", "-o", "/dev/full", "-w", "0x10000", "--", "true"),
             "not a regular file")


@pytest.mark.kernel
def test_output_on_a_full_disk_prints_the_counts_and_says_so(tmp_path):
    """-o is written beside FILE and renamed over it: on a full file system
    the counts go to the terminal, one line says so, nothing is left
    behind."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "fill").write_bytes(b"\0" * 4096)
        r = perfbp("stat", "-o", str(mnt / "out.txt"), "-w", "0x10000", "--", "true")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("perfbp: error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0]
        assert "printed above" in errors[0] and str(mnt / "out.txt") in errors[0]
        assert "0  0x10000" in r.stdout  # the counts, on the terminal
        assert sorted(p.name for p in mnt.iterdir()) == ["fill"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.kernel
def test_output_replaces_the_file_whole(tmp_path):
    out = tmp_path / "n.json"
    out.write_text("an earlier result\n")
    r = perfbp("stat", "--json", "-o", str(out), "-w", "0x10000", "--", "true")
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith('{"target": "command ' + "'true'")
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.json"]


@pytest.mark.kernel
def test_a_recording_without_watchpoints_is_refused(tmp_path):
    data = tmp_path / "faults.data"
    subprocess.run(["perf", "record", "-q", "-o", str(data), "-e", "page-faults", "-c", "1",
                    "--", "true"], check=True, capture_output=True, timeout=60)
    one_line(perfbp("report", "-i", str(data)), "holds no watchpoint events",
             "page-faults", "perf report")


@pytest.mark.kernel
def test_other_events_beside_a_watch_are_not_shown_as_watches(tmp_path):
    data = tmp_path / "mixed.data"
    subprocess.run(["perf", "record", "-q", "-o", str(data), "-e", "mem:0x10000/8:w",
                    "-e", "page-faults", "-c", "1", "--", "true"], check=True,
                   capture_output=True, timeout=60)
    r = perfbp("report", "-i", str(data), "--format", "json")
    assert r.returncode == 0, r.stderr
    (w,) = json.loads(r.stdout)["watches"]  # perf names the event mem:0x10000
    assert (w["name"], w["address"], w["length"]) == ("mem:0x10000", 0x10000, 8)
