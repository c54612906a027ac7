"""``perfbp report``'s counting, without a kernel: the path sized for the
common case (runs of alike samples, :func:`perfbp.kernel.records.sample_runs`)
gives the report the general one (numpy columns,
:func:`perfbp.kernel.records.decode_bulk`) gives, whatever the recording.

The recordings are synthetic, written with perfbp's own writers (file and
pipe mode): perf's and perfbp's sample formats (with call stacks, -g, or
not), one to three watches (events sharing a name are one watch), a
non-breakpoint event beside them, samples of a few writers, threads, CPUs,
stacks and event ids (some of no event), in runs long and short, with other
records (COMM, LOST, FINISHED_ROUND) between them, and multiplexed
recordings whose samples go to watches by address.
The samples are built here with :mod:`struct`, in the kernel's order
(``perf_output_sample``).  Recordings made by the kernel and perf are in
test_record.py.
"""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from perfbp.data import report as report_module
from perfbp.data.perfdata import FileEvent, PerfDataPipeWriter, PerfDataWriter
from perfbp.data.report import SORT_KEYS, load_report
from perfbp.kernel._uapi import (
    PERF_FORMAT_ID,
    PERF_FORMAT_LOST,
    PERF_SAMPLE_ADDR,
    PERF_SAMPLE_CALLCHAIN,
    PERF_SAMPLE_CPU,
    PERF_SAMPLE_ID,
    PERF_SAMPLE_IDENTIFIER,
    PERF_SAMPLE_IP,
    PERF_SAMPLE_PERIOD,
    PERF_SAMPLE_STREAM_ID,
    PERF_SAMPLE_TID,
    PERF_SAMPLE_TIME,
)
from perfbp.kernel.records import ParseConfig, sample_id_bytes, sample_runs

REPO = Path(__file__).resolve().parent.parent

# the first 72 bytes of struct perf_event_attr (PERF_ATTR_SIZE_VER1): type,
# size, config, sample_period, sample_type, read_format, flags, wakeup_events,
# bp_type, bp_addr, bp_len
ATTR = struct.Struct("<IIQQQQQIIQQ")
PERF_TYPE_SOFTWARE, PERF_TYPE_BREAKPOINT = 1, 5
SAMPLE_ID_ALL = 1 << 18            # attr.sample_id_all
HW_BREAKPOINT_W = 2
PERF_RECORD_LOST, PERF_RECORD_COMM, PERF_RECORD_SAMPLE = 2, 3, 9
PERF_RECORD_FINISHED_ROUND = 68
MISC_USER, MISC_KERNEL = 2, 1

#: perf's formats (one event; several; --sample-cpu), perfbp's, and odd ones
SAMPLE_TYPES = (
    PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
    PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_ID,
    PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
    PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CPU,
    PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME
    | PERF_SAMPLE_ADDR | PERF_SAMPLE_CPU | PERF_SAMPLE_PERIOD,
    PERF_SAMPLE_IP | PERF_SAMPLE_TIME | PERF_SAMPLE_STREAM_ID,
    PERF_SAMPLE_TID | PERF_SAMPLE_ADDR,
    # -g: perf's, and perfbp's
    PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CALLCHAIN,
    PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME
    | PERF_SAMPLE_CPU | PERF_SAMPLE_CALLCHAIN,
)
PERF_CONTEXT_USER = (-512) & (2**64 - 1)
#: call stacks: none, user frames (two of one depth), and with perf's
#: context marker
STACKS = ((), (0x401136, 0x401200), (0x401136, 0x401210),
          (PERF_CONTEXT_USER, 0x401136, 0x401300), (PERF_CONTEXT_USER,))
WATCH_ADDRS = (0x404028, 0x404030, 0x404038)


def attr(kind: int, sample_type: int, bp_addr: int = 0) -> bytes:
    return ATTR.pack(kind, 128, 9 if kind == PERF_TYPE_SOFTWARE else 0, 1, sample_type,
                     PERF_FORMAT_ID | PERF_FORMAT_LOST, SAMPLE_ID_ALL, 0,
                     HW_BREAKPOINT_W if kind == PERF_TYPE_BREAKPOINT else 0, bp_addr,
                     8 if kind == PERF_TYPE_BREAKPOINT else 0).ljust(128, b"\0")


def header(rtype: int, misc: int, body: bytes) -> bytes:
    return struct.pack("<IHH", rtype, misc, 8 + len(body)) + body


def sample(st_: int, key: tuple, time: int) -> bytes:
    """A PERF_RECORD_SAMPLE: ``key`` is (id, ip, pid, tid, cpu, addr, stack)."""
    ident, ip, pid, tid, cpu, addr, stack = key
    body = b""
    for bit, raw in ((PERF_SAMPLE_IDENTIFIER, struct.pack("<Q", ident)),
                     (PERF_SAMPLE_IP, struct.pack("<Q", ip)),
                     (PERF_SAMPLE_TID, struct.pack("<II", pid, tid)),
                     (PERF_SAMPLE_TIME, struct.pack("<Q", time)),
                     (PERF_SAMPLE_ADDR, struct.pack("<Q", addr)),
                     (PERF_SAMPLE_ID, struct.pack("<Q", ident)),
                     (PERF_SAMPLE_STREAM_ID, struct.pack("<Q", ident)),
                     (PERF_SAMPLE_CPU, struct.pack("<II", cpu, 0)),
                     (PERF_SAMPLE_PERIOD, struct.pack("<Q", 1)),
                     (PERF_SAMPLE_CALLCHAIN, struct.pack(f"<Q{len(stack)}Q", len(stack), *stack))):
        if st_ & bit:
            body += raw
    return header(PERF_RECORD_SAMPLE, MISC_KERNEL if ip >> 63 else MISC_USER, body)


def other(kind: str, cfg: ParseConfig, key: tuple, time: int) -> bytes:
    ident, _ip, pid, tid, cpu, _addr, _stack = key
    trailer = sample_id_bytes(cfg, pid=pid, tid=tid, time=time, id=ident, cpu=cpu)
    if kind == "lost":
        return header(PERF_RECORD_LOST, 0, struct.pack("<QQ", ident, 3) + trailer)
    if kind == "comm":
        name = f"t{tid}".encode().ljust(8, b"\0")
        return header(PERF_RECORD_COMM, 0, struct.pack("<II", pid, tid) + name + trailer)
    return header(PERF_RECORD_FINISHED_ROUND, 0, b"")


@st.composite
def recordings(draw):
    """What a synthetic recording holds: its sample_type, events, samples
    (in runs of one key, with another record after some), whether it is
    multiplexed, and its mode (file or pipe)."""
    st_ = draw(st.sampled_from(SAMPLE_TYPES))
    names = draw(st.lists(st.sampled_from(["a", "a", "b", "c", ""]), min_size=1, max_size=3))
    next_id = iter(range(100, 1000, 7))
    events = [FileEvent(attr(PERF_TYPE_BREAKPOINT, st_, WATCH_ADDRS[i % 3]),
                        tuple(next(next_id) for _ in range(draw(st.integers(1, 2)))), nm)
              for i, nm in enumerate(names)]
    if draw(st.booleans()):  # the dummy event that carries thread and mapping records
        events.append(FileEvent(attr(PERF_TYPE_SOFTWARE, st_), (next(next_id),), "dummy:u"))
    ids = [i for ev in events for i in ev.ids] + [7]  # 7: of no event
    keys = draw(st.lists(st.tuples(
        st.sampled_from(ids), st.sampled_from([0x401136, 0x401140, 0x7F0000001000]),
        st.sampled_from([1000, 1001]), st.sampled_from([1000, 1002, 1003]),
        st.integers(0, 2), st.sampled_from(WATCH_ADDRS + (0x10,)), st.sampled_from(STACKS)),
        min_size=1, max_size=4))
    if draw(st.booleans()):  # a sample like the first but for its stack's last frame
        stack = keys[0][6]
        keys.append(keys[0][:6] + (stack[:-1] + (stack[-1] + 16,) if stack else (0x401136,),))
    runs = draw(st.lists(st.tuples(st.integers(0, len(keys) - 1),
                                   st.sampled_from([1, 2, 5, 100, 1500, 3000]),
                                   st.sampled_from([None, None, "round", "lost", "comm"])),
                         max_size=12))
    multiplexed = bool(st_ & PERF_SAMPLE_ADDR) and draw(st.booleans())
    return st_, events, keys, runs, multiplexed, draw(st.booleans())


def write(path: str, rec) -> None:
    st_, events, keys, runs, multiplexed, pipe = rec
    cfg = ParseConfig(st_, True)
    data, time = bytearray(), 1
    for which, count, kind in runs:
        for _ in range(count):
            data += sample(st_, keys[which], time)
            time += 1
        if kind:
            data += other(kind, cfg, keys[which], time)
    meta = None
    if multiplexed:
        meta = {"watches": [{"label": f"w{i}", "access": "w", "pieces": [[a, 8]]}
                            for i, a in enumerate(WATCH_ADDRS)],
                "multiplexed": [{"seen": 10, "estimate": 20, "lost": 0, "coverage": 0.5}
                                for _ in WATCH_ADDRS]}
    if pipe:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        writer = PerfDataPipeWriter(fd, events, path)
    else:
        writer = PerfDataWriter(path, events)
    writer.write(bytes(data))
    writer.finish(cmdline=["test"], nr_cpus=(3, 3), meta=meta)


def reports(path: str, top: int, window) -> "list[dict]":
    return [load_report(path, top=top, sort=sort, window=window).as_dict()
            for sort in SORT_KEYS]


#: perf -g: one thread's samples from one place, their stacks alike but for
#: the last frame, one stretch after the other
STACK_PAIR = (SAMPLE_TYPES[-2],
              [FileEvent(attr(PERF_TYPE_BREAKPOINT, SAMPLE_TYPES[-2], WATCH_ADDRS[0]), (100,),
                         "a")],
              [(100, 0x401136, 1000, 1000, 0, 0, (0x401136, 0x401200)),
               (100, 0x401136, 1000, 1000, 0, 0, (0x401136, 0x401210))],
              [(0, 10, None), (1, 10, None), (0, 5, "round"), (0, 5, None)], False, False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recordings(), st.integers(1, 4), st.sampled_from([None, 4096]))
@example(STACK_PAIR, 3, None)
def test_runs_give_the_report_the_columns_give(rec, top, window):
    """Every sort, every window: the same report, whether the samples are
    counted in runs, in columns (sample_runs made to give up), or in runs
    and columns by turns (it gives up on every other window)."""
    calls = itertools.count()

    def every_other(*args, **kw):
        return None if next(calls) % 2 else sample_runs(*args, **kw)

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "synthetic.data")
        write(path, rec)
        fast = reports(path, top, window)
        with mock.patch.object(report_module, "sample_runs", return_value=None):
            general = reports(path, top, window)
        with mock.patch.object(report_module, "sample_runs", every_other):
            mixed = reports(path, top, window)
    assert fast == general == mixed
    assert fast[0]["samples"] == sum(n for _k, n, _o in rec[3])


def test_writers_in_objects_without_debug_info_need_no_dwarf(build, tmp_path):
    """A writer in a program built without -g is named from its symbols,
    with no source line, and neither pyelftools nor numpy is loaded; built
    with -g, it has its line."""
    st_ = SAMPLE_TYPES[0]
    for flag, line in (("-g0", None), ("-g", "lines_demo.c")):
        exe = build("lines_demo.c", "-O2", flag, "-no-pie", name=f"lines_demo{flag}")
        nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True)
        (main,) = [int(ln.split()[0], 16) for ln in nm.stdout.splitlines()
                   if ln.split()[-1] == "main"]
        name = str(exe).encode().ljust((len(str(exe)) + 8) // 8 * 8, b"\0")
        mmap = header(1, 0, struct.pack("<IIQQQ", 1000, 1000, 0x400000, 1 << 20, 0) + name
                      + sample_id_bytes(ParseConfig(st_, True), pid=1000, tid=1000))
        path = str(tmp_path / f"writer{flag}.data")
        events = [FileEvent(attr(PERF_TYPE_BREAKPOINT, st_, WATCH_ADDRS[0]), (100,), "")]
        writer = PerfDataWriter(path, events)
        writer.write(mmap + sample(st_, (100, main + 4, 1000, 1000, 0, 0, ()), 1) * 50)
        writer.finish(cmdline=["test"], nr_cpus=(1, 1))
        code = ("import sys; from perfbp.data.report import load_report; "
                f"(w,) = load_report({path!r}).watches[0].writers; "
                "print(w.location, w.source, sorted({'numpy', 'elftools'} & set(sys.modules)))")
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        where, source, loaded = r.stdout.split(" ", 2)
        assert where == "main+0x4"
        if line is None:
            assert (source, loaded.strip()) == ("None", "[]")
        else:
            assert source.startswith("lines_demo.c:")


def test_long_runs_are_counted_without_columns(tmp_path):
    """Few writers, threads and watches: no window is decoded into columns,
    and the report process loads no numpy."""
    path = str(tmp_path / "runs.data")
    st_ = SAMPLE_TYPES[0]
    events = [FileEvent(attr(PERF_TYPE_BREAKPOINT, st_, WATCH_ADDRS[0]), (100,), "")]
    runs = [(0, 4000, "round"), (1, 30, None), (0, 20000, "round")] * 3
    write(path, (st_, events, [(100, 0x401136, 1000, 1000, 0, 0, ()),
                               (100, 0x401140, 1000, 1002, 0, 0, ())], runs, False, False))
    with mock.patch.object(report_module, "decode_bulk", side_effect=AssertionError):
        rep = load_report(path, window=4096)
    (w,) = rep.watches
    assert w.hits == rep.samples == 3 * 24030
    assert sorted(t.samples for t in w.threads) == [90, 72000]
    code = ("import sys; from perfbp.data.report import load_report; "
            f"load_report({path!r}); assert 'numpy' not in sys.modules, 'numpy'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
