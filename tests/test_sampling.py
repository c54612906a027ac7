"""Sampling every hit on the real kernel: nothing lost, exactly."""

from __future__ import annotations

import ctypes
import os
import threading

import pytest

import perfbp
from perfbp.kernel.sampling import Sampler

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

WRITES = 500_009  # per thread: a prime

SRC = r"""
#include <stdint.h>
volatile uint64_t scratch[8] __attribute__((aligned(64)));
void write_u64(volatile uint64_t *p, long n) { for (long i = 0; i < n; i++) *p = i; }
"""


@pytest.fixture(scope="module")
def writer(tmp_path_factory, build):
    d = tmp_path_factory.mktemp("sampling")
    (d / "w.c").write_text(SRC)
    lib = ctypes.CDLL(str(build(d / "w.c", "-O2", "-shared", "-fPIC")))
    lib.write_u64.argtypes = [ctypes.c_void_p, ctypes.c_long]
    addr = ctypes.addressof(ctypes.c_uint64.in_dll(lib, "scratch"))
    return lib, addr


def _two_threads_on_two_cpus(lib, addr, n, sampler):
    """Two threads pinned to CPU 0 and CPU 1, each writing ``n`` times, while
    the main thread drains the rings; return (samples decoded, tids seen)."""
    go = threading.Event()

    def worker(cpu):
        os.sched_setaffinity(0, {cpu})
        go.wait()
        lib.write_u64(addr, n)

    threads = [threading.Thread(target=worker, args=(cpu,)) for cpu in (0, 1)]
    for t in threads:
        t.start()
    go.set()
    decoded = 0
    cpus = set()
    while any(t.is_alive() for t in threads):
        sampler.wait(0.05)
        batch = sampler.read()
        decoded += len(batch)
        if len(batch):
            cpus.update(int(c) for c in set(batch.samples.cpu.tolist()))
    for t in threads:
        t.join()
    batch = sampler.read()
    decoded += len(batch)
    if len(batch):
        cpus.update(int(c) for c in set(batch.samples.cpu.tolist()))
    return decoded, cpus


def test_every_hit_sampled_two_threads_two_cpus(writer, machine_lost):
    lib, addr = writer
    with Sampler([perfbp.Breakpoint.write(addr, 8)], perfbp.Target.process(os.getpid())) as s:
        decoded, cpus = _two_threads_on_two_cpus(lib, addr, WRITES, s)
        (st,) = s.stats()
    # every write is a hit, or a debug exception the machine lost (no event
    # counted it: see conftest)
    assert st.hits + machine_lost() == 2 * WRITES
    assert st.samples == decoded == st.hits
    assert st.lost == 0
    assert st.complete and st.missing == 0
    assert cpus == {0, 1}


def test_tiny_ring_loses_samples_but_accounts_for_every_hit(writer, machine_lost):
    lib, addr = writer
    n = 100_003
    with Sampler([perfbp.Breakpoint.write(addr, 8)], perfbp.Target.process(os.getpid()),
                 ring_pages=1) as s:
        decoded, _ = _two_threads_on_two_cpus(lib, addr, n, s)
        (st,) = s.stats()
    assert st.hits + machine_lost() == 2 * n
    assert st.lost > 0
    assert st.samples == decoded
    assert st.samples + st.lost == st.hits
    assert st.complete


def test_period_samples_every_nth_hit_and_keeps_exact_hits(writer, machine_lost):
    lib, addr = writer
    n, period = 10_007, 10
    with Sampler([perfbp.Breakpoint.write(addr, 8)], perfbp.Target.this_thread(),
                 period=period) as s:
        lib.write_u64(addr, n)
        batch = s.read()
        (st,) = s.stats()
    assert st.hits + machine_lost() == n
    assert len(batch) == st.samples == st.hits // period
    # the kernel would sample every hit if PERIOD were in sample_type
    # (perf_swevent_event), so perfbp leaves it out for period > 1
    assert batch.samples.period is None
    assert st.complete


def test_samples_carry_thread_address_and_ip(writer):
    lib, addr = writer
    n = 1009
    with Sampler([perfbp.Breakpoint.write(addr, 8)], perfbp.Target.this_thread()) as s:
        lib.write_u64(addr, n)
        batch = s.read()
    assert len(batch) == n
    assert set(batch.samples.tid.tolist()) == {threading.get_native_id()}
    assert set(batch.samples.pid.tolist()) == {os.getpid()}
    assert set(batch.samples.addr.tolist()) == {addr}
    # one store instruction in the loop: every hit reports the same ip, the
    # instruction after the store, inside write_u64
    ips = set(batch.samples.ip.tolist())
    assert len(ips) == 1
    fn = ctypes.cast(lib.write_u64, ctypes.c_void_p).value
    assert fn < ips.pop() < fn + 64
    assert set(batch.watch.tolist()) == {0}


def test_samples_leave_out_what_carries_nothing(writer):
    """PERIOD (1) and ADDR (the watch's, known from the id) are not asked for
    unless the events may move; then ADDR is there and tells the breakpoint."""
    from perfbp.kernel._uapi import (PERF_SAMPLE_ADDR, PERF_SAMPLE_CPU, PERF_SAMPLE_IDENTIFIER,
                                     PERF_SAMPLE_IP, PERF_SAMPLE_TID, PERF_SAMPLE_TIME)

    lib, addr = writer
    lean = (PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME
            | PERF_SAMPLE_CPU)
    here = perfbp.Target.this_thread()
    with Sampler([perfbp.Breakpoint.write(addr, 8)], here) as s:
        assert s.sample_type == lean
        with pytest.raises(RuntimeError, match="addr=True"):
            s.slot(0).retarget(perfbp.Breakpoint.write(addr + 8, 8))
    with Sampler([perfbp.Breakpoint.write(addr, 8)], here, addr=True) as s:
        assert s.sample_type == lean | PERF_SAMPLE_ADDR
        lib.write_u64(addr, 7)
        s.slot(0).retarget(perfbp.Breakpoint.write(addr + 8, 8))
        lib.write_u64(addr + 8, 11)
        batch = s.read()
    addrs = batch.samples.addr.tolist()
    assert (addrs.count(addr), addrs.count(addr + 8)) == (7, 11)
