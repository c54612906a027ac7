"""perfbp.watch() on Python-visible memory (real kernel, exact counts)."""

from __future__ import annotations

import array
from pathlib import Path
import ctypes
import threading

import numpy as np
import pytest

import perfbp

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

N = 1009


def test_numpy_element_writes_counted_exactly():
    a = np.zeros(64)
    with perfbp.watch(a[10:11]) as w:
        for i in range(N):
            a[10] = i
        a[11] = 1.0  # the next element: not watched
        a[9] = 1.0
    assert w.hits == N
    assert w.watch.length == 8 and w.watch.address == a[10:11].__array_interface__["data"][0]


def test_bytearray_and_array_and_memoryview():
    b = bytearray(64)
    with perfbp.watch(b, length=8) as w:
        for i in range(N):
            b[3] = i % 256
        b[8] = 1  # outside the 8 bytes
    assert w.hits == N
    arr = array.array("q", [0] * 8)
    with perfbp.watch(memoryview(arr)[2:3]) as w2:
        for i in range(N):
            arr[2] = i
        arr[3] = 7
    assert w2.hits == N


def test_ctypes_object_and_move_and_hits_after_close():
    c = (ctypes.c_long * 4)()
    with perfbp.watch(c, length=8) as w:
        c[0] = 1
        c[1] = 1  # outside
        w.move(ctypes.addressof(c) + 8)
        c[1] = 2
        c[0] = 3  # no longer watched
    assert w.hits == 2
    assert w.hits == 2  # stays readable after the with block
    assert "closed" in repr(w) and "2 hits" in repr(w)


def test_a_range_split_over_registers_counts_as_one_watch():
    a = np.zeros(8, dtype=np.int64)
    with perfbp.watch(a[1:3]) as w:  # 16 bytes: two registers
        for i in range(N):
            a[1] = i
            a[2] = i
    assert len(w.watch.pieces) == 2 and w.hits == 2 * N


def test_every_thread_of_the_process_is_watched():
    a = np.zeros(8)
    with perfbp.watch(a[0:1]) as w:
        def worker():
            for i in range(N):
                a[0] = i
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert w.hits == 2 * N


def test_bad_targets():
    with pytest.raises(perfbp.InvalidBreakpoint, match="needs a length"):
        perfbp.watch(0x1000)
    with pytest.raises(perfbp.InvalidBreakpoint, match="cannot watch a object"):
        perfbp.watch(object())
    with pytest.raises(perfbp.InvalidBreakpoint, match="contiguous"):
        perfbp.watch(np.zeros((4, 4))[:, 1])
    with pytest.raises(perfbp.NoBreakpointSlots):
        perfbp.watch(np.zeros(8))  # 64 bytes: 8 registers


def _lines_marked(marker: str) -> "list[int]":
    import inspect

    src, start = inspect.getsourcelines(__import__(__name__))
    return [i + 1 for i, line in enumerate(src) if marker in line]


def test_callback_gets_the_exact_python_line_and_values():
    """on_hit runs inside the trap, in this thread: the line is the one that
    stored (not a later one), and old/new are the bytes around the store."""
    a = np.zeros(8)
    events = []

    def mutate():
        a[1] = 5.0
        a[2] = 7.0  # STORE-A
        x = 1  # noqa: F841
        for i in range(3):
            a[2] = 10.0 + i  # STORE-B
        return x

    with perfbp.watch(a[2:3], on_hit=events.append) as w:
        mutate()
    store_a, store_b = _lines_marked("# STORE-A")[0], _lines_marked("# STORE-B")[0]
    assert w.hits == 4 and len(events) == 4
    assert [e.line for e in events] == [store_a, store_b, store_b, store_b]
    assert {e.function for e in events} == {"mutate"}
    assert all(e.filename == __file__ for e in events)
    olds = [np.frombuffer(e.old)[0] for e in events]
    news = [np.frombuffer(e.new)[0] for e in events]
    assert olds == [0.0, 7.0, 10.0, 11.0] and news == [7.0, 10.0, 11.0, 12.0]
    assert all(e.tid == threading.get_native_id() for e in events)


def test_callback_for_a_write_made_by_c_code_names_the_calling_python_line():
    """A store made inside a C function (ctypes.memmove) is attributed to the
    Python line that called it: the innermost Python frame at the trap."""
    c = (ctypes.c_char * 16)()
    src = ctypes.create_string_buffer(b"x" * 8)
    events = []
    with perfbp.watch(c, length=8, on_hit=events.append):
        ctypes.memmove(c, src, 8)  # C-STORE
    assert events and {e.line for e in events} == set(_lines_marked("# C-STORE")[:1])


def test_callback_watches_the_calling_thread_only():
    """sigtrap watches are task-bound to the calling thread: another thread's
    writes are neither counted nor reported (documented)."""
    a = np.zeros(8)
    events = []
    with perfbp.watch(a[0:1], on_hit=events.append) as w:
        t = threading.Thread(target=lambda: a.__setitem__(0, 3.0))
        t.start()
        t.join()
        a[0] = 4.0
    assert w.hits == 1 and len(events) == 1 and np.frombuffer(events[0].new)[0] == 4.0
    with pytest.raises(perfbp.InvalidBreakpoint, match="this thread only"):
        perfbp.watch(a[0:1], on_hit=print, pid=1)


def test_sampling_watch_gives_every_hit_as_columns():
    a = np.zeros(8)
    with perfbp.watch(a[4:5], sample=True) as w:
        for i in range(N):
            a[4] = i
    cols = w.samples()
    assert w.hits == N and len(cols) == N
    assert set(cols.tid.tolist()) == {threading.get_native_id()}
    assert set(cols.addr.tolist()) == {a[4:5].__array_interface__["data"][0]}
    assert (np.diff(cols.time.astype(np.int64)) >= 0).sum() >= N - 2  # time-ordered per CPU
    # a repr for a notebook: the shape and the columns, not 1,009 values of each
    assert repr(cols) == "<SampleColumns: 1,009 samples x 7 columns (ip, pid, tid, time, " \
        "addr, id, cpu)>"


def test_recording_back_as_columns_and_frames(tmp_path):
    import subprocess

    exe = Path(__file__).resolve().parent.parent / "demo" / "demo"
    if not exe.exists():
        subprocess.run(["make", "-s", "demo/demo"], cwd=exe.parent.parent, check=True)
    out = tmp_path / "d.data"
    for _attempt in range(4):  # a hit the machine loses has no sample: record again
        res = perfbp.record(["counter", "config.flags"],
                            str(out), command=[str(exe)])
        if not any(res.recovered) and not res.unattributed:
            break
    assert [s.hits for s in res.stats] == [100042, 1]
    samples = perfbp.load_samples(str(out))
    assert len(samples) == 100043 and samples.watches == ["counter", "config.flags"]
    assert np.bincount(samples.columns["watch"]).tolist() == [100042, 1]
    df = samples.to_pandas()
    assert df["watch"].value_counts().to_dict() == {"counter": 100042, "config.flags": 1}
    assert df.groupby("tid").size().sort_values().tolist() == [1, 50021, 50021]
    pl = samples.to_polars()
    assert pl.height == 100043 and set(pl.columns) >= {"watch", "ip", "tid", "time", "cpu", "addr"}
    assert repr(samples) == ("<Samples: 100,043 samples x 7 columns (watch, ip, pid, tid, "
                             "time, addr, cpu), of 2 watches (counter, config.flags)>")


def test_a_kernel_without_sigtrap_gets_unsupported(monkeypatch):
    """A fake kernel (the real one has sigtrap): a pre-5.13 kernel answers
    EINVAL to attr.sigtrap; perfbp says Unsupported, with the reason."""
    import errno

    from perfbp.kernel import abi

    real = abi.perf_event_open

    def old_kernel(attr, pid, cpu, group_fd=-1, flags=8):
        if attr.sigtrap:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(attr, pid, cpu, group_fd, flags)

    monkeypatch.setattr(abi, "perf_event_open", old_kernel)
    a = np.zeros(2)
    with pytest.raises(perfbp.Unsupported, match="Linux 5.13") as err:
        perfbp.watch(a[0:1], on_hit=print)
    assert err.value.errno == errno.EOPNOTSUPP
    with perfbp.watch(a[0:1]) as w:  # counting still works
        a[0] = 1.0
    assert w.hits == 1


def _addr(view) -> int:
    return view.__array_interface__["data"][0]


def test_move_onto_a_wider_range_replans_onto_two_registers():
    """move() to a range that needs more registers opens them (and one that
    needs fewer closes the rest); hits accumulate over every range watched."""
    a = np.zeros(32, dtype=np.int64)
    with perfbp.watch(a[10:11]) as w:
        for i in range(101):
            a[10] = i
        w.move(a[10:12])  # 16 bytes: 2 registers
        assert w.watch.address == _addr(a[10:12]) and w.watch.length == 16
        assert [(p.address, p.length) for p in w.watch.pieces] == \
            [(_addr(a[10:11]), 8), (_addr(a[11:12]), 8)]
        assert f"{_addr(a[10:12]):#x}/16:w" in repr(w)
        for i in range(211):
            a[10] = i
        for i in range(307):
            a[11] = i
        a[12] = 1  # outside
        assert w.hits == 101 + 211 + 307
        w.move(a[20:22], length=8)  # an explicit length wins over the target's size
        assert len(w.watch.pieces) == 1 and w.watch.length == 8
        assert f"{_addr(a[20:21]):#x}/8:w" in repr(w) and f"{_addr(a[10:12]):#x}" not in repr(w)
        for i in range(13):
            a[20] = i
        a[21] = 1  # outside the 8 bytes
        a[11] = 1  # no longer watched
        # the surplus counter is closed: its slot is free again
        with perfbp.watch(a[0:3]) as three:  # 3 registers + this watch's 1
            a[1] = 1
        assert three.hits == 1
    assert w.hits == 101 + 211 + 307 + 13
    with pytest.raises(perfbp.InvalidBreakpoint, match="closed"):
        w.move(a[0:1])


def test_move_that_does_not_fit_raises_and_keeps_the_old_watch():
    a = np.zeros(8, dtype=np.int64)
    b = np.zeros(8, dtype=np.int64)
    with perfbp.watch(b[0:2]) as other, perfbp.watch(a[0:1]) as w:  # 2 + 1 of 4 slots
        w.move(a[0:2])  # one more register: fits, the watch's own slot counted as its own
        before, pieces = repr(w), w.watch.pieces
        with pytest.raises(perfbp.NoBreakpointSlots, match="1 more than the 2 it holds") as err:
            w.move(a[0:3])  # 3 registers: 1 more, none free
        assert "still watches" in str(err.value)
        assert repr(w) == before and w.watch.pieces == pieces
        for i in range(103):
            a[0] = i
        for i in range(107):
            a[1] = i
        for i in range(109):
            a[2] = i  # not watched: the failed move added nothing
        for i in range(17):
            b[1] = i
        assert w.hits == 103 + 107 and other.hits == 17


def test_move_that_the_kernel_refuses_rolls_back():
    """The extra register opens, then re-pointing the kept one fails (a user
    watch cannot move into kernel space): the extra one is closed again and
    the watch still counts its old range."""
    a = np.zeros(8, dtype=np.int64)
    with perfbp.watch(a[0:1]) as w:
        before = repr(w)
        with pytest.raises(perfbp.InvalidBreakpoint, match="kernel space"):
            w.move(perfbp.kernel.arch.current().task_size_max + (1 << 20), length=16)
        assert repr(w) == before and len(w.watch.pieces) == 1
        for i in range(29):
            a[0] = i
        a[1] = 1
        with perfbp.watch(a[4:7]):  # 3 registers: the extra one was given back
            pass
    assert w.hits == 29


def test_move_of_callback_and_sampling_watches():
    a = np.zeros(8)
    events = []
    with perfbp.watch(a[0:1], on_hit=events.append) as w:
        a[0] = 1.0
        w.move(a[2:4])  # 2 registers, on this thread, with the callback
        a[2] = 2.0
        a[3] = 3.0
        a[3] = 5.0
        a[0] = 7.0  # no longer watched
    assert w.hits == 4 and len(events) == 4
    assert [e.address for e in events[1:]] == [_addr(a[2:3]), _addr(a[3:4]), _addr(a[3:4])]
    assert np.frombuffer(events[1].old).tolist() == [0.0, 0.0]  # the new range at the move
    assert np.frombuffer(events[3].new).tolist() == [2.0, 5.0]
    with perfbp.watch(a[4:5], sample=True) as s:
        with pytest.raises(perfbp.Unsupported, match="sampling watch cannot move"):
            s.move(a[5:6])
        a[4] = 1.0
    assert s.hits == 1 and len(s.samples()) == 1
