"""How a run ends with a command perfbp launched: the deadline (-d) and
Ctrl-C end the command and keep every hit it made; one that ignores them is
killed; perfbp's own death takes the command with it (real kernel)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

REPO = Path(__file__).resolve().parent.parent
PERFBP = [sys.executable, "-m", "perfbp"]


@pytest.fixture(scope="module")
def writer(build) -> Path:
    return build("busy_writer.c", "-O1")


def last_json(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


def test_deadline_ends_the_command_and_keeps_its_hits(writer):
    start = time.monotonic()
    r = subprocess.run([*PERFBP, "stat", "--json", "-d", "0.4", "-w", "counter", "--",
                        str(writer)], cwd=REPO, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert r.returncode == 0, r.stderr  # perfbp ended it, as asked
    doc = last_json(r.stdout)
    assert (doc["ended_by"], doc["exit_code"]) == ("duration", -signal.SIGTERM)
    assert doc["watches"][0]["hits"] > 0
    assert took < 10


def test_deadline_kills_a_command_that_ignores_sigterm(writer):
    start = time.monotonic()
    r = subprocess.run([*PERFBP, "stat", "--json", "-d", "0.3", "-w", "0x10000", "--",
                        str(writer), "ignore"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    doc = last_json(r.stdout)
    assert (doc["ended_by"], doc["exit_code"]) == ("duration", -signal.SIGKILL)
    assert time.monotonic() - start < 10  # 0.3 s, then 2 s of grace


@pytest.mark.parametrize("how", ["deadline", "sigint"])
def test_record_ended_early_accounts_for_every_hit(writer, tmp_path, how):
    """The rings are drained until the command is gone: samples + lost
    equals the kernel's hits, whether the deadline or Ctrl-C ended it."""
    out = tmp_path / "end.data"
    args = [*PERFBP, "record", "--json", "-w", "counter", "-o", str(out)]
    if how == "deadline":
        args += ["-d", "0.5"]
    proc = subprocess.Popen([*args, "--", str(writer)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if how == "sigint":
        assert proc.stdout.readline() == "writing\n"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # perfbp alone: it passes it on
    out_text, err = proc.communicate(timeout=60)
    doc = last_json(out_text)
    assert doc["ended_by"] == ("duration" if how == "deadline" else "interrupt"), err
    (w,) = doc["watches"]
    assert w["kernel_hits"] > 1000
    assert w["hits"] + w["lost"] == w["kernel_hits"] and w["accounted"], w
    assert "unaccounted for" not in err  # the machine's own losses are said apart


def test_the_command_dies_with_perfbp(writer):
    proc = subprocess.Popen([*PERFBP, "stat", "-w", "counter", "--", str(writer)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == proc.pid]
    assert len(children) == 1
    proc.kill()
    proc.wait(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(children[0], writer):
        time.sleep(0.05)
    assert not _alive(children[0], writer)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _alive(pid: int, exe: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == str(exe)
    except OSError:
        return False


def test_record_attached_to_a_busy_writer_accounts_for_every_hit(writer, tmp_path):
    """Attaching to a process that is writing: the events open disabled and
    are enabled only once their rings are mapped, so no hit is counted
    before there is a ring for its sample (the kernel would drop that sample
    without counting it lost).  Two watches, so that the second event of a
    CPU, whose output is redirected into the first one's ring, is covered
    too; eight attaches to the same running writer."""
    proc = None
    try:
        for run in range(8):
            if proc is None or proc.poll() is not None:  # the machine may kill it
                proc = subprocess.Popen([str(writer)], stdout=subprocess.PIPE, text=True)
                assert proc.stdout.readline() == "writing\n"
            out = tmp_path / f"attach{run}.data"
            r = subprocess.run([*PERFBP, "record", "--json", "-w", "counter", "-w",
                                "counter:rw", "-p", str(proc.pid), "-d", "0.3", "-o", str(out)],
                               cwd=REPO, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            for w in last_json(r.stdout)["watches"]:
                assert w["hits"] + w["lost"] == w["kernel_hits"] and w["accounted"], (run, w)
            assert "unaccounted for" not in r.stderr
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def test_record_on_a_full_disk_keeps_whole_batches_and_stops_the_command(writer, tmp_path):
    """The disk fills: one error line, exit 2, the command stopped, and the
    file holds exactly the header and the whole batches before (perf reads
    as many samples as perfbp)."""
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        out = disk / "full.data"
        r = subprocess.run([*PERFBP, "record", "-w", "counter", "-o", str(out), "--",
                            str(writer)], cwd=REPO, capture_output=True, text=True, timeout=60)
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("perfbp: error")]
        assert r.returncode == 2 and len(errors) == 1, r.stderr
        assert "No space left on device" in errors[0] and "Traceback" not in r.stderr
        assert not any(_alive(int(p), writer) for p in os.listdir("/proc") if p.isdigit())
        blob = out.read_bytes()
        data_offset, data_size = struct.unpack_from("<QQ", blob, 40)
        assert data_size > 0 and data_offset + data_size == len(blob)
        perf = subprocess.run(["perf", "script", "-i", str(out)], capture_output=True,
                              text=True, timeout=60)
        rep = subprocess.run([*PERFBP, "report", "-i", str(out), "--format", "json"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert rep.returncode == 0, rep.stderr
        assert json.loads(rep.stdout)["samples"] == len(perf.stdout.splitlines()) > 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
