"""``perfbp record`` read back by perf: sample for sample.

sort parses its options with getopt, writing its copies of libc's ``optind``
and ``optarg`` (R_X86_64_COPY) once per option, after ld.so's copy.
perfbp records every write; ``perf script -i perfbp.data`` must print the
very samples perfbp decodes from its own file (thread, time, address, ip),
and the same writes, in the same order and from the same instructions, as
``perf record`` of the same command at the same addresses (found with
readelf and gdb's mappings, not by perfbp).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import perfbp

from .tools import NO_ASLR, Layout, check_run, libc_copies, need, perf_event, perfbp_argv, \
    retry, run

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

NAMES = ["optind", "optarg"]
LINES = 211
_SAMPLE = re.compile(r"^\s*(\d+)\s+(\d+)\.(\d{9}):\s+(.+):\s+([0-9a-f]+)\s+([0-9a-f]+)\s*$")


def perf_script(data: Path) -> list[tuple[int, int, str, int, int]]:
    """(tid, time in ns, event, addr, ip) of every sample, as perf reads them."""
    proc = run(["perf", "script", "-i", str(data), "--ns", "-F", "tid,time,event,addr,ip"])
    assert proc.returncode == 0, proc.stderr
    samples = []
    for line in proc.stdout.splitlines():
        m = _SAMPLE.match(line)
        assert m, f"perf script printed {line!r}"
        samples.append((int(m[1]), int(m[2]) * 10**9 + int(m[3]), m[4],
                        int(m[5], 16), int(m[6], 16)))
    return samples


def test_perf_script_reads_every_sample_perfbp_recorded(tmp_path):
    """perfbp.data through ``perf script`` equals perfbp's own decoding of it
    (tid, time, watch, addr, ip), and its (addr, ip) sequence equals perf
    record's of the same sort run."""
    sort, = need("sort")
    need("perf", "readelf", "setarch")
    data = tmp_path / "input.csv"
    data.write_text("".join(f"{i * 89 % LINES},{i}\n" for i in range(LINES)))
    argv = [sort, "-s", "-r", "-n", "-t", ",", "-k", "1,1", "-o", str(tmp_path / "out"),
            str(data)]
    layout = Layout.of(argv, tmp_path)
    bias = Layout.bias(layout.end, sort)
    copies = libc_copies(sort, Layout.object_named(layout.end, "libc.so.6"), NAMES)
    addresses = {name: bias + off for name, (off, _size) in copies.items()}
    events = [perf_event(bias + off, size) for off, size in copies.values()]
    ours, theirs = tmp_path / "perfbp.data", tmp_path / "perf.data"

    def record_both():
        cmd = [*NO_ASLR, "perf", "record", "-q", "-d", "-o", str(theirs)]
        for ev in events:
            cmd += ["-e", ev]
        proc = run([*cmd, "--", *argv], cwd=tmp_path)
        check_run(proc, "perf record")
        assert proc.returncode == 0, proc.stderr
        proc = run(perfbp_argv("record", "-o", str(ours),
                               *(a for n in NAMES for a in ("-w", n)), "--", *argv),
                   cwd=tmp_path)
        check_run(proc, "perfbp record")
        assert proc.returncode == 0, proc.stderr
    retry(record_both)

    # perf reads perfbp's file as perfbp does: the same samples, field for field
    script = perf_script(ours)
    samples = perfbp.load_samples(str(ours))
    c = samples.columns
    decoded = [(int(tid), int(t), samples.watches[int(w)], int(addr), int(ip))
               for tid, t, w, addr, ip in zip(c["tid"], c["time"], c["watch"], c["addr"], c["ip"])]
    assert script == decoded
    assert all(addr == addresses[name] for _tid, _t, name, addr, _ip in script)

    # ... and the same writes as perf's own recording of the same command
    ours_seen = [(addr, ip) for *_, addr, ip in script]
    perf_seen = [(addr, ip) for *_, addr, ip in perf_script(theirs)]
    assert ours_seen == perf_seen, \
        f"perfbp recorded {len(ours_seen)} samples, perf {len(perf_seen)}"
    assert len(script) > 2 * len(NAMES), f"only {len(script)} samples: getopt did not run"
