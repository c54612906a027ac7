#!/usr/bin/env python3
"""Lifecycle benchmark: what one breakpoint costs from Python, against C.

Two operations are timed, in C (gcc -O2, raw syscalls) and from Python:

``cycle``
    the whole life of one write watchpoint on the calling thread:
    perf_event_open (disabled) + PERF_EVENT_IOC_ENABLE + PERF_EVENT_IOC_DISABLE
    + read(8 bytes) + close.  From Python, through the public API::

        c = perfbp.Counter(perfbp.Breakpoint.write(addr, 8), enabled=False)
        c.enable(); c.disable(); c.read(); c.close()

``move``
    PERF_EVENT_IOC_MODIFY_ATTRIBUTES moving one armed (enabled) breakpoint
    back and forth between two addresses (only ``bp_addr`` changes; the attr
    passed has ``disabled = 0``, so the event stays armed).  From Python, on
    ``perfbp.Counter(bp)`` (enabled, the way a watch is moved in use):
    ``c.move(addr2)`` / ``c.move(addr1)`` alternating.  The kernel disables
    the event, changes it and enables it again, reinstalling the debug
    register: about 1.7 us in C here.

``move (disabled)``
    the same on a disabled event (C: ``disabled = 1`` in both attrs; Python:
    ``Counter(bp, enabled=False)``), for context: the kernel only rewrites
    the attr, about 0.5 us in C.  No goal: a disabled watch is rarely moved
    in a loop.

The raw ABI layer (``perfbp.kernel.abi`` with a pre-built attr) is timed as well, to
show whether the overhead sits in the syscall binding or in the layers above.

Method, the same on both sides: warm-up, then several rounds of N operations
each (clock_gettime(CLOCK_MONOTONIC) in C, time.perf_counter_ns in Python, both
monotonic clocks), reported as the median over rounds of ns per operation.
C and Python rounds alternate (one C round, then one round of each Python
measurement, and again), so a change in the machine's load hits both sides.
The process (and the C child, which inherits it) is pinned to one CPU unless
``--no-pin`` is given.  The garbage collector stays on, as in real use.  The
watched words (a static array in C, a ctypes buffer in Python) are never
written, so no hit is ever taken: this is the cost of managing a watch.

Goals: ``cycle`` within 1.25x of C, ``move`` within 1.5x of C.  This is a
benchmark: it reports PASS/MISS, it never asserts, and it exits 0 whenever it
could measure (2 if the environment cannot run it: no gcc, no hardware
breakpoints).  When another process holds every debug-register slot (ENOSPC),
the round is retried, waiting up to 30 s in all, and the output says so.

Usage::

    python3 benchmarks/bench_lifecycle.py [--iterations N] [--rounds R] [--json]
                                         [--breakdown] [--no-pin] [--perfbp DIR]

``--breakdown`` also times the pieces of the Python path (Breakpoint
construction and validation, EventOptions, make_attr, weakref.finalize, the
cffi syscall and ioctls, os.read, os.close, ...) and the C syscalls one by
one, to show where the time goes.  ``--perfbp DIR`` and ``--json``: the
common options (benchmarks/README.md); the C side is the same for every DIR.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import weakref

import _harness as harness

#: perfbp and the two modules timed below it, imported by load_perfbp()
perfbp = abi = _events = None

GOALS = {"cycle": 1.25, "move": 1.5, "move_disabled": None}

# ----------------------------------------------------------------------------------
# The C side
# ----------------------------------------------------------------------------------

C_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The watched words: never written while the benchmark runs. */
static uint64_t watched[8] __attribute__((aligned(64)));

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void make_attr(struct perf_event_attr *attr, uint64_t addr, int disabled)
{
    memset(attr, 0, sizeof(*attr));
    attr->type = PERF_TYPE_BREAKPOINT;
    attr->size = sizeof(struct perf_event_attr);
    attr->bp_type = HW_BREAKPOINT_W;
    attr->bp_addr = addr;
    attr->bp_len = HW_BREAKPOINT_LEN_8;
    attr->exclude_kernel = 1;
    attr->exclude_hv = 1;
    attr->disabled = disabled;
}

static int open_bp(struct perf_event_attr *attr)
{
    return (int)syscall(SYS_perf_event_open, attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
}

static void die(const char *what)
{
    int e = errno;
    fprintf(stderr, "%s: %s (errno %d)%s\n", what, strerror(e), e,
            e == ENOSPC ? "; every debug-register slot is held (another debugger, "
                          "perf or perfbp user?): run the benchmark on an idle machine"
                        : e == EACCES || e == EPERM ? "; run as root or lower "
                          "kernel.perf_event_paranoid" : "");
    exit(1);
}

/* One full cycle; exits on any failure. */
static inline void cycle(struct perf_event_attr *attr)
{
    uint64_t count;
    int fd = open_bp(attr);
    if (fd < 0) die("perf_event_open");
    if (ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0) die("PERF_EVENT_IOC_ENABLE");
    if (ioctl(fd, PERF_EVENT_IOC_DISABLE, 0) < 0) die("PERF_EVENT_IOC_DISABLE");
    if (read(fd, &count, sizeof(count)) != sizeof(count)) die("read");
    if (close(fd) < 0) die("close");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Print "name median min max" in ns per op, over `rounds` rounds. */
static void report(const char *name, double *per_op, int rounds)
{
    qsort(per_op, rounds, sizeof(double), cmp_double);
    double med = rounds % 2 ? per_op[rounds / 2]
                            : (per_op[rounds / 2 - 1] + per_op[rounds / 2]) / 2.0;
    printf("%s %.1f %.1f %.1f\n", name, med, per_op[0], per_op[rounds - 1]);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 20000;
    int rounds = argc > 2 ? atoi(argv[2]) : 7;
    long warm = argc > 3 ? atol(argv[3]) : 2000;
    int breakdown = argc > 4 ? atoi(argv[4]) : 0;
    double *per_op = calloc(rounds, sizeof(double));
    struct perf_event_attr attr, a1, a2;
    uint64_t t0, count;
    long i;
    int r, fd;

    printf("attr_size %zu\n", sizeof(struct perf_event_attr));
    make_attr(&attr, (uint64_t)(uintptr_t)&watched[0], 1);

    /* (a) the full cycle */
    for (i = 0; i < warm; i++) cycle(&attr);
    for (r = 0; r < rounds; r++) {
        t0 = now_ns();
        for (i = 0; i < iters; i++) cycle(&attr);
        per_op[r] = (double)(now_ns() - t0) / iters;
    }
    report("cycle", per_op, rounds);

    /* (b) MODIFY_ATTRIBUTES back and forth between two addresses, on an
       armed event (disabled = 0: it stays armed), then on a disabled one */
    for (int disabled = 0; disabled < 2; disabled++) {
        make_attr(&a1, (uint64_t)(uintptr_t)&watched[0], disabled);
        make_attr(&a2, (uint64_t)(uintptr_t)&watched[4], disabled);
        fd = open_bp(&a1);
        if (fd < 0) die("perf_event_open");
        for (i = 0; i < warm; i++) {
            if (ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, (i & 1) ? &a1 : &a2) < 0)
                die("PERF_EVENT_IOC_MODIFY_ATTRIBUTES");
        }
        for (r = 0; r < rounds; r++) {
            t0 = now_ns();
            for (i = 0; i < iters; i += 2) {
                if (ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, &a2) < 0)
                    die("PERF_EVENT_IOC_MODIFY_ATTRIBUTES");
                if (ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, &a1) < 0)
                    die("PERF_EVENT_IOC_MODIFY_ATTRIBUTES");
            }
            per_op[r] = (double)(now_ns() - t0) / i;
        }
        report(disabled ? "move_disabled" : "move", per_op, rounds);
        if (!disabled || !breakdown)
            close(fd);
    }

    if (breakdown) {
        /* The pieces, one by one (ns per call). */
        /* enable+disable pair on an open fd, counted per ioctl */
        for (r = 0; r < rounds; r++) {
            t0 = now_ns();
            for (i = 0; i < iters; i++) {
                if (ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0) die("PERF_EVENT_IOC_ENABLE");
                if (ioctl(fd, PERF_EVENT_IOC_DISABLE, 0) < 0) die("PERF_EVENT_IOC_DISABLE");
            }
            per_op[r] = (double)(now_ns() - t0) / iters;
        }
        report("ENABLE+DISABLE", per_op, rounds);
        for (r = 0; r < rounds; r++) {
            t0 = now_ns();
            for (i = 0; i < iters; i++)
                if (read(fd, &count, sizeof(count)) != sizeof(count)) die("read");
            per_op[r] = (double)(now_ns() - t0) / iters;
        }
        report("read(8)", per_op, rounds);
        for (r = 0; r < rounds; r++) {
            t0 = now_ns();
            for (i = 0; i < iters; i++) {
                int f = open_bp(&attr);
                if (f < 0) die("perf_event_open");
                if (close(f) < 0) die("close");
            }
            per_op[r] = (double)(now_ns() - t0) / iters;
        }
        report("perf_event_open+close", per_op, rounds);
        close(fd);
    }
    return 0;
}
"""


def load_perfbp(perfbp_dir=harness.ROOT) -> None:
    """Import perfbp from ``perfbp_dir`` (by default this checkout, which
    need not be installed), once."""
    global perfbp, abi, _events
    if perfbp is not None:
        return
    harness.use_perfbp(perfbp_dir)
    import perfbp
    from perfbp.kernel import abi
    from perfbp.kernel import events as _events


class SlotsBusy(RuntimeError):
    """ENOSPC: every debug-register slot was held (by another process)."""


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, SlotsBusy) or (isinstance(exc, OSError)
                                          and exc.errno == errno.ENOSPC)


def build_c(workdir: str) -> str:
    """Write the C program into ``workdir`` and compile it with gcc -O2."""
    return harness.compile_c(workdir, "bench_lifecycle", C_SOURCE, "-O2", "-Wall")


def run_c(exe: str, iterations: int, rounds: int, warmup: int, breakdown: bool) -> dict:
    """Run the C program; return ``{name: {"median": ns, "min": ns, "max": ns}}``."""
    proc = subprocess.run([exe, str(iterations), str(rounds), str(warmup),
                           "1" if breakdown else "0"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        msg = f"C benchmark failed: {proc.stderr.strip() or proc.returncode}"
        raise SlotsBusy(msg) if "(errno 28)" in proc.stderr else RuntimeError(msg)
    out: dict = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[0] == "attr_size":
            out["attr_size"] = int(parts[1])
            continue
        med, lo, hi = map(float, parts[1:4])
        out[parts[0]] = {"median": med, "min": lo, "max": hi}
    return out


# ----------------------------------------------------------------------------------
# The Python side
# ----------------------------------------------------------------------------------

_clock = time.perf_counter_ns


def time_once(body, n: int, ops_per_call: int = 1) -> float:
    """ns per operation of one round: ``body(n)`` runs n calls of
    ``ops_per_call`` operations each."""
    t0 = _clock()
    body(n)
    return (_clock() - t0) / (n * ops_per_call)


def summary(per_op: list) -> dict:
    return {"median": statistics.median(per_op), "min": min(per_op), "max": max(per_op)}


def measure(body, iterations: int, rounds: int, warmup: int, ops_per_call: int = 1) -> dict:
    """Warm-up, then ``rounds`` rounds of ``body(iterations)``: ns per
    operation, median/min/max over the rounds."""
    body(max(warmup, 1))
    return summary([time_once(body, iterations, ops_per_call) for _ in range(rounds)])


class Watched:
    """Two 8-byte-aligned words in a ctypes buffer, never written."""

    def __init__(self) -> None:
        self.buf = (ctypes.c_uint64 * 8)()
        self.addr1 = ctypes.addressof(self.buf)
        self.addr2 = self.addr1 + 32


def py_cycle(w: Watched):
    Counter, write, addr = perfbp.Counter, perfbp.Breakpoint.write, w.addr1

    def body(n: int) -> None:
        for _ in range(n):
            c = Counter(write(addr, 8), enabled=False)
            c.enable()
            c.disable()
            c.read()
            c.close()
    return body


def py_move(c, w: Watched):
    move, a1, a2 = c.move, w.addr1, w.addr2

    def body(n: int) -> None:          # n calls of 2 moves
        for _ in range(n):
            move(a2)
            move(a1)
    return body


def _abi_attr(addr: int, enabled: bool = False):
    """The attr perfbp builds for ``Counter(Breakpoint.write(addr, 8), enabled=...)``."""
    bp = perfbp.Breakpoint.write(addr, 8)
    return _events.make_attr(bp, False, _events.EventOptions(enabled=enabled))


def abi_cycle(w: Watched):
    attr = _abi_attr(w.addr1)
    peo, enable, disable, read_count, close = (abi.perf_event_open, abi.enable, abi.disable,
                                               abi.read_count, abi.close)

    def body(n: int) -> None:
        for _ in range(n):
            fd = peo(attr, 0, -1)
            enable(fd)
            disable(fd)
            read_count(fd)
            close(fd)
    return body


def abi_move(fd: int, w: Watched):
    """Moves of an armed event: attrs with ``disabled = 0``."""
    a1, a2 = _abi_attr(w.addr1, True), _abi_attr(w.addr2, True)
    modify = abi.modify_attributes

    def body(n: int) -> None:          # n calls of 2 moves
        for _ in range(n):
            modify(fd, a2)
            modify(fd, a1)
    return body


class PythonSide:
    """The four Python measurements, one round at a time (so that rounds can
    be interleaved with the C program's)."""

    KEYS = ("cycle", "cycle_abi", "move", "move_abi", "move_disabled")

    def __init__(self, iterations: int, warmup: int) -> None:
        self.n = iterations
        self.warmup = max(warmup, 2)
        self.w = Watched()
        self.cycle = py_cycle(self.w)
        self.cycle_abi = abi_cycle(self.w)
        self.per_op: dict = {k: [] for k in self.KEYS}
        self.cycle(self.warmup)
        self.cycle_abi(self.warmup)

    def round(self) -> None:
        """One round of each measurement; nothing is kept if one fails."""
        got = {"cycle": time_once(self.cycle, self.n),
               "cycle_abi": time_once(self.cycle_abi, self.n)}
        # the move counters are opened per round, like the C program's events
        half, warm = self.n // 2, self.warmup // 2
        c = perfbp.Counter(perfbp.Breakpoint.write(self.w.addr1, 8))  # armed
        try:
            body = py_move(c, self.w)
            body(warm)
            got["move"] = time_once(body, half, 2)
            body = abi_move(c.fds[0], self.w)
            body(warm)
            got["move_abi"] = time_once(body, half, 2)
        finally:
            c.close()
        c = perfbp.Counter(perfbp.Breakpoint.write(self.w.addr1, 8), enabled=False)
        try:
            body = py_move(c, self.w)
            body(warm)
            got["move_disabled"] = time_once(body, half, 2)
        finally:
            c.close()
        for k, v in got.items():
            self.per_op[k].append(v)

    def results(self) -> dict:
        return {k: summary(v) for k, v in self.per_op.items()}


def python_results(iterations: int, rounds: int, warmup: int) -> dict:
    """The Python side alone: ``{key: {"median", "min", "max"}}`` (for A/B
    comparisons of perfbp versions; the C side does not change)."""
    load_perfbp()
    side = PythonSide(iterations, warmup)
    for _ in range(rounds):
        side.round()
    return side.results()


# ----------------------------------------------------------------------------------
# Breakdown of the Python path (--breakdown)
# ----------------------------------------------------------------------------------

def python_breakdown(iterations: int, rounds: int, warmup: int) -> dict:
    """ns per call of each piece of ``Counter(...)/enable/disable/read/close``
    and of ``move``, timed one by one (same method as the main figures).

    Pieces marked ``alt:`` are not what perfbp does today but what another
    binding of the same call costs (for comparison).  A piece that this
    version of perfbp cannot run is reported as None."""
    import fcntl

    from perfbp.kernel import arch
    from perfbp.kernel import counter as _counter
    from perfbp.kernel._uapi import (
        PERF_EVENT_IOC_DISABLE,
        PERF_EVENT_IOC_ENABLE,
        PERF_EVENT_IOC_MODIFY_ATTRIBUTES,
        PERF_FLAG_FD_CLOEXEC,
    )

    w = Watched()
    a1, a2 = w.addr1, w.addr2
    bp = perfbp.Breakpoint.write(a1, 8)
    opts = _events.EventOptions(enabled=False)
    attr, attr2 = _abi_attr(a1), _abi_attr(a2)
    ffi, lib = abi.ffi, abi.lib
    pieces: dict = {}

    def piece(name, fn):
        def body(k):
            for _ in range(k):
                fn()
        try:
            # the fastest round: for pieces this small, other processes only add
            pieces[name] = measure(body, iterations, rounds, warmup)["min"]
        except Exception as exc:  # an internal this perfbp version lacks
            pieces[name] = None
            print(f"breakdown: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)

    # --- pure Python work, no syscall -------------------------------------------
    piece("Breakpoint.write(addr, 8)", lambda: perfbp.Breakpoint.write(a1, 8))
    piece("  arch.current()", arch.current)
    rules = arch.current()
    piece("  arch.validate('w', addr, 8, rules)", lambda: arch.validate("w", a1, 8, rules))
    piece("  bp.is_kernel()", bp.is_kernel)
    piece("EventOptions(enabled=False)", lambda: _events.EventOptions(enabled=False))
    piece("counter.target_for(0, -1, False, None)",
          lambda: _counter.target_for(0, -1, False, None))
    piece("events.make_attr(bp, False, opts)", lambda: _events.make_attr(bp, False, opts))
    piece("  abi.new_attr()", abi.new_attr)
    piece("  ffi.new('struct perf_event_attr *')",
          lambda: ffi.new("struct perf_event_attr *"))

    def one_bitfield():
        attr.exclude_hv = 1
    piece("  one bitfield store (attr.exclude_hv = 1)", one_bitfield)

    def one_field():
        attr.bp_addr = a1
    piece("  one u64 store (attr.bp_addr = addr)", one_field)

    class Obj:
        pass

    def finalize():
        weakref.finalize(Obj(), list.clear, [])()
    piece("weakref.finalize(obj, fn, arg) + call", finalize)
    piece("ffi.cast('long', x)", lambda: ffi.cast("long", 5))
    piece("abi.copy_attr(attr)", lambda: abi.copy_attr(attr))
    piece("ffi.buffer(attr)", lambda: ffi.buffer(attr))
    piece("bp.moved(addr2) (validates)", lambda: bp.moved(a2))

    # --- the syscalls --------------------------------------------------------------
    peo = abi.perf_event_open
    piece("abi.perf_event_open + os.close", lambda: os.close(peo(attr, 0, -1)))
    nr = ffi.cast("long", abi.NR_PERF_EVENT_OPEN)
    c_pid, c_cpu, c_flags = ffi.cast("long", 0), ffi.cast("long", -1), \
        ffi.cast("long", PERF_FLAG_FD_CLOEXEC)
    piece("alt: lib.syscall, args pre-cast + os.close",
          lambda: os.close(lib.syscall(nr, attr, c_pid, c_cpu, c_cpu, c_flags)))
    fixed = ffi.cast("long (*)(long, struct perf_event_attr *, long, long, long, unsigned long)",
                     lib.syscall)
    piece("alt: syscall() via fixed prototype + os.close",
          lambda: os.close(fixed(abi.NR_PERF_EVENT_OPEN, attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC)))

    fd = peo(attr, 0, -1)
    try:
        zero = ffi.cast("unsigned long", 0)
        ioctl = fcntl.ioctl

        def en_dis():
            abi.enable(fd)
            abi.disable(fd)
        piece("abi.enable + abi.disable", en_dis)

        def en_dis_cffi():
            lib.ioctl(fd, PERF_EVENT_IOC_ENABLE, zero)
            lib.ioctl(fd, PERF_EVENT_IOC_DISABLE, zero)
        piece("alt: lib.ioctl (variadic) ENABLE + DISABLE", en_dis_cffi)

        def en_dis_fcntl():
            ioctl(fd, PERF_EVENT_IOC_ENABLE)
            ioctl(fd, PERF_EVENT_IOC_DISABLE)
        piece("alt: fcntl.ioctl(fd, req) ENABLE + DISABLE", en_dis_fcntl)

        def en_dis_fcntl0():
            ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
            ioctl(fd, PERF_EVENT_IOC_DISABLE, 0)
        piece("alt: fcntl.ioctl(fd, req, 0) ENABLE + DISABLE", en_dis_fcntl0)
        piece("abi.read_count(fd)", lambda: abi.read_count(fd))
        piece("os.read(fd, 8)", lambda: os.read(fd, 8))

        def mod2():
            abi.modify_attributes(fd, attr2)
            abi.modify_attributes(fd, attr)
        piece("abi.modify_attributes x2", mod2)

        def mod2_cffi():
            lib.ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, attr2)
            lib.ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, attr)
        piece("alt: lib.ioctl (variadic) MODIFY_ATTRIBUTES x2", mod2_cffi)
        b1, b2 = ffi.buffer(attr), ffi.buffer(attr2)

        def mod2_fcntl():
            ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, b2, False)
            ioctl(fd, PERF_EVENT_IOC_MODIFY_ATTRIBUTES, b1, False)
        piece("alt: fcntl.ioctl(fd, req, buffer, False) MODIFY x2", mod2_fcntl)
    finally:
        os.close(fd)

    # --- Counter as a whole -----------------------------------------------------
    c = perfbp.Counter(bp, enabled=False)
    try:
        def c_en_dis():
            c.enable()
            c.disable()
        piece("Counter.enable + Counter.disable", c_en_dis)
        piece("Counter.read", c.read)

        def cmove():
            c.move(a2)
            c.move(a1)
        piece("Counter.move x2", cmove)
    finally:
        c.close()
    piece("Counter(bp, enabled=False) + close, bp pre-built",
          lambda: perfbp.Counter(bp, enabled=False).close())
    return pieces


# ----------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------

def rows(c: dict, py: dict) -> list:
    out = []
    for key, label, op in (("cycle", "cycle  (perfbp.Counter)", "cycle"),
                           ("cycle_abi", "cycle  (perfbp.kernel.abi raw)", "cycle"),
                           ("move", "move   (Counter.move)", "move"),
                           ("move_abi", "move   (abi.modify_attributes)", "move"),
                           ("move_disabled", "move, disabled (Counter.move)",
                            "move_disabled")):
        c_ns, p_ns = c[op]["median"], py[key]["median"]
        ratio = p_ns / c_ns
        goal = GOALS[op]
        out.append({
            "operation": key, "label": label, "c_ns": round(c_ns, 1),
            "python_ns": round(p_ns, 1), "ratio": round(ratio, 2), "goal": goal,
            "status": "-" if goal is None else "PASS" if ratio <= goal else "MISS",
            "python_min_ns": round(py[key]["min"], 1),
            "python_max_ns": round(py[key]["max"], 1),
            "c_min_ns": round(c[op]["min"], 1), "c_max_ns": round(c[op]["max"], 1),
        })
    return out


def print_table(result: dict) -> None:
    print(f"perfbp lifecycle benchmark  ({result['machine']}, kernel {result['kernel']}, "
          f"Python {result['python']}, CPU {result['cpu']})")
    print(f"{result['rounds']} rounds x {result['iterations']} ops (C and Python rounds "
          f"interleaved), median ns/op; attr.size: C {result['c_attr_size']}, "
          f"perfbp {result['perfbp_attr_size']}")
    harness.print_warning(result)
    if result.get("enospc_retries"):
        print(f"note: {result['enospc_retries']} attempt(s) waited for debug-register "
              f"slots held by another process (ENOSPC)")
    print()
    hdr = (f"{'operation':32} {'C ns/op':>9} {'perfbp ns/op':>13} {'ratio':>7} "
           f"{'goal':>7}  status")
    harness.print_header(hdr)
    for r in result["rows"]:
        goal = "-" if r["goal"] is None else "<=" + format(r["goal"], "g") + "x"
        print(f"{r['label']:32} {r['c_ns']:9.0f} {r['python_ns']:13.0f} "
              f"{r['ratio']:6.2f}x {goal:>7}  {r['status']}")
    print()
    print("Goals are for the Counter rows; the abi rows (same syscalls through")
    print("perfbp.kernel.abi with a pre-built attr) show what the binding alone costs.")
    print("move: an armed event on both sides (the debug register is reinstalled);")
    print("move, disabled: for context, no goal.")
    if result.get("breakdown"):
        bd = result["breakdown"]
        print()
        print("C, one syscall kind at a time (ns per call, fastest round):")
        for k, v in bd["c"].items():
            print(f"  {k:58} {v:8.0f}")
        print("Python pieces, timed one by one (ns per call, fastest round; "
              "'alt:' = another binding):")
        for k, v in bd["python"].items():
            print(f"  {k:58} {'n/a' if v is None else format(v, '8.0f'):>8}")


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--iterations", "-n", type=int, default=20000,
                    help="operations per round (default 20000)")
    harness.rounds_option(ap, 7, "timed rounds; the median is reported")
    ap.add_argument("--warmup", type=int, default=None,
                    help="warm-up operations (default iterations/10)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the pieces of the Python path and the C syscalls")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the benchmark (and the C child) to one CPU")
    args = harness.parse_args(ap, argv)
    try:
        load_perfbp(args.perfbp)
    except ImportError as exc:
        print(f"cannot import perfbp: {exc}", file=sys.stderr)
        return 2
    iterations = max(2, args.iterations - args.iterations % 2)
    rounds = max(1, args.rounds)
    warmup = args.warmup if args.warmup is not None else max(2, iterations // 10)

    load_before = harness.load_average()
    cpu = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {cpu})

    c_rounds: dict = {"cycle": [], "move": [], "move_disabled": []}
    c_attr_size = None
    breakdown = None
    retries = 0

    def patiently(fn, *a):
        """``fn(*a)``, again while every debug-register slot is held by
        someone else (ENOSPC), for up to 30 s in all."""
        nonlocal retries
        while True:
            try:
                return fn(*a)
            except (OSError, RuntimeError) as exc:
                if not is_enospc(exc) or retries >= 60:
                    raise
                retries += 1
                time.sleep(0.5)

    try:
        with tempfile.TemporaryDirectory(prefix="perfbp-bench-") as tmp:
            exe = build_c(tmp)
            py = patiently(PythonSide, iterations, warmup)
            # C and Python rounds alternate, so that a change in the machine's
            # load during the run hits both sides alike.
            for _ in range(rounds):
                c = patiently(run_c, exe, iterations, 1, warmup, False)
                c_attr_size = c.get("attr_size")
                for k in c_rounds:
                    c_rounds[k].append(c[k]["median"])
                patiently(py.round)
            if args.breakdown:
                c = patiently(run_c, exe, iterations // 2, rounds, warmup, True)
                breakdown = {
                    "c": {k: v["min"] for k, v in c.items()
                          if k not in ("attr_size", *c_rounds)},
                    "python": patiently(python_breakdown, max(2, iterations // 2),
                                        rounds, warmup),
                }
    except RuntimeError as exc:  # gcc missing or failing included
        print(f"cannot run the C side: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # PerfbpError included
        print(f"cannot run the Python side: {exc}", file=sys.stderr)
        return 2

    load_after = harness.load_average()
    c_res = {k: summary(v) for k, v in c_rounds.items()}
    result = {
        **harness.machine(), "perfbp": perfbp.__version__,
        "cpu": "any" if cpu is None else cpu,
        "iterations": iterations, "rounds": rounds, "warmup": warmup,
        "gc_enabled": gc.isenabled(),
        "loadavg_before": round(load_before, 2), "loadavg_after": round(load_after, 2),
        "c_attr_size": c_attr_size, "perfbp_attr_size": abi.ATTR_SIZE,
        "rows": rows(c_res, py.results()),
    }
    if retries:
        result["enospc_retries"] = retries
    if breakdown is not None:
        result["breakdown"] = breakdown
    busy = harness.busy_warning(load_before, "and other processes' breakpoints may share "
                                             "the debug registers")
    return harness.finish(result, args.json, print_table, [busy])


if __name__ == "__main__":
    sys.exit(main())
