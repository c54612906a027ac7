#!/usr/bin/env python3
"""Decode benchmark: how fast perfbp turns ring/perf.data bytes into samples.

Three measurements:

``decode_bulk`` (the bulk path, :func:`perfbp.kernel.records.decode_bulk`)
    on a synthetic stream of 1,000,000 PERF_RECORD_SAMPLE records with the
    sample_type perfbp records with (``perfbp.kernel.sampling.BASE_SAMPLE_TYPE``:
    IDENTIFIER|IP|TID|TIME|ADDR|CPU|PERIOD, 64 bytes a sample, sample_id_all
    on, as :class:`perfbp.Sampler` configures it), built with numpy, with a
    non-sample record every 3,000 to 5,000 samples (about one in 4,000):
    alternately an 8-byte FINISHED_ROUND (what perf and ``perfbp record``
    put between ring drains) and a PERF_RECORD_LOST with its sample_id
    trailer.  Timed two ways:

    * steady: the median of several calls in this process, after one
      warm-up call;
    * first call in a fresh process: what ``perfbp report`` pays, since it
      decodes once per process (new memory for the columns is faulted in on
      the way; on a VM that is not free).  The median over a few child
      processes.

    The decoded columns are checked against what was encoded (every sample,
    every field, and the count and kinds of the other records) before
    anything is timed.

``iter_records`` (record by record, :func:`perfbp.kernel.records.iter_records`)
    on the first 100,000 samples of the same stream, for comparison.

a real perf-written file
    ``perf record -e mem:ADDR/8:w:u -c 1`` of a loop writing a global
    200,003 times (about 2 s to record; or ``--perf-data FILE``): time of
    :func:`perfbp.data.perfdata.read_recording` (file read and framing check) and
    of ``decode_bulk`` on its data section.

Goal: ``decode_bulk`` >= 3 million samples/s (both the steady and the
first-call figure are checked against it).  This is a benchmark: it reports
PASS/MISS, it never asserts, and it exits 0 whenever it could measure (2 if
perfbp cannot be imported or the synthetic stream does not decode right).

Usage::

    python3 benchmarks/bench_decode.py [--samples N] [--every K] [--rounds R]
                                       [--perf-data FILE | --no-perf] [--json]
                                       [--perfbp DIR]

``--perfbp DIR`` and ``--json``: the common options (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as harness

GOAL_SAMPLES_PER_S = 3.0e6
PERF_RECORD_FINISHED_ROUND = 68  # tools/perf/util/event.h


# ----------------------------------------------------------------------------------
# The synthetic stream
# ----------------------------------------------------------------------------------

def sampler_config():
    """The ParseConfig perfbp's Sampler decodes its rings with."""
    from perfbp.kernel._uapi import PERF_FORMAT_LOST
    from perfbp.kernel.records import ParseConfig
    from perfbp.kernel.sampling import BASE_SAMPLE_TYPE

    return ParseConfig(BASE_SAMPLE_TYPE, True, PERF_FORMAT_LOST)


def build_stream(n: int, every: int, seed: int = 4001):
    """``n`` samples with a non-sample record every ``every`` samples on
    average (uniform in [0.75, 1.25] x every).

    Returns ``(buf, expected)``: the bytes, and what decoding must give
    (the sample array and the other records' kinds and positions)."""
    import struct

    import numpy as np

    from perfbp.kernel._uapi import PERF_RECORD_LOST, PERF_RECORD_SAMPLE
    from perfbp.kernel.records import sample_dtype, sample_id_bytes

    cfg = sampler_config()
    dt = sample_dtype(cfg)
    rng = np.random.default_rng(seed)
    idx = np.arange(n, dtype=np.uint64)
    a = np.zeros(n, dtype=dt)
    a["type"] = PERF_RECORD_SAMPLE
    a["misc"] = 2  # PERF_RECORD_MISC_USER
    a["size"] = dt.itemsize
    cpu = rng.integers(0, 2, n, dtype=np.uint32)
    a["identifier"] = 1000 + cpu            # one event id per CPU
    a["ip"] = 0x401136 + 7 * (idx % 3)      # three writer instructions
    a["pid"] = 4242
    a["tid"] = 4242 + cpu                   # two threads
    a["time"] = 10**12 + np.cumsum(rng.integers(5000, 9000, n, dtype=np.uint64))
    a["cpu"] = cpu
    for name, value in (("addr", 0x404040), ("period", 1)):  # when the layout has them
        if name in dt.names:
            a[name] = value
    raw = a.tobytes()
    size = dt.itemsize

    finished = struct.pack("<IHH", PERF_RECORD_FINISHED_ROUND, 0, 8)
    lo, hi = max(1, int(every * 0.75)), max(2, int(every * 1.25) + 1)
    parts, kinds = [], []
    pos = 0
    k = 0
    while pos < n:
        step = int(rng.integers(lo, hi))
        parts.append(raw[pos * size:min(n, pos + step) * size])
        pos += step
        if pos >= n:
            break
        if k % 2 == 0:
            parts.append(finished)
            kinds.append("finished_round")
        else:
            body = struct.pack("<QQ", 1000, 17) + sample_id_bytes(
                cfg, pid=4242, tid=4242, time=int(a["time"][pos - 1]), id=1000, cpu=0)
            parts.append(struct.pack("<IHH", PERF_RECORD_LOST, 0, 8 + len(body)) + body)
            kinds.append("lost")
        k += 1
    return b"".join(parts), {"samples": a, "kinds": kinds, "size": size}


def verify(buf: bytes, expected: dict) -> "list[str]":
    """Decode once with decode_bulk and compare with what was encoded; return
    the problems (empty: right)."""
    import numpy as np

    from perfbp.kernel.records import Lost, Unknown, decode_bulk

    cfg = sampler_config()
    cols, others = decode_bulk(buf, cfg)
    a = expected["samples"]
    problems = []
    if len(cols) != len(a):
        problems.append(f"{len(cols)} samples decoded, {len(a)} encoded")
        return problems
    for col, field in (("ip", "ip"), ("pid", "pid"), ("tid", "tid"), ("time", "time"),
                       ("addr", "addr"), ("cpu", "cpu"), ("period", "period"),
                       ("id", "identifier")):
        if field not in a.dtype.names:  # not in perfbp's samples (ADDR, PERIOD)
            continue
        got = getattr(cols, col)
        if got is None or not np.array_equal(got, a[field].astype(np.uint64)):
            problems.append(f"column {col} differs from what was encoded")
    kinds = ["lost" if isinstance(r, Lost) else
             "finished_round" if isinstance(r, Unknown) and r.type == PERF_RECORD_FINISHED_ROUND
             else type(r).__name__ for r in others]
    if kinds != expected["kinds"]:
        problems.append(f"other records: got {len(kinds)} ({kinds[:4]}...), "
                        f"encoded {len(expected['kinds'])}")
    return problems


# ----------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------

_clock = time.perf_counter


def time_call(fn, *args) -> float:
    t0 = _clock()
    fn(*args)
    return _clock() - t0


def steady_decode(buf: bytes, rounds: int) -> "list[float]":
    from perfbp.kernel.records import decode_bulk

    cfg = sampler_config()
    decode_bulk(buf, cfg)  # warm-up
    return [time_call(decode_bulk, buf, cfg) for _ in range(rounds)]


def child_first_call(args) -> int:
    """--child-first-call: build the stream, time one decode_bulk call, print
    the seconds as JSON (run in a fresh process by the parent)."""
    from perfbp.kernel.records import decode_bulk

    buf, _exp = build_stream(args.samples, args.every)
    cfg = sampler_config()
    print(json.dumps({"seconds": time_call(decode_bulk, buf, cfg)}))
    return 0


def first_call_in_fresh_processes(args, perfbp_dir: str, processes: int) -> "list[float]":
    out = []
    for _ in range(processes):
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child-first-call",
             "--samples", str(args.samples), "--every", str(args.every),
             "--perfbp", perfbp_dir],
            capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"child failed: {proc.stderr.strip()[-500:]}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
    return out


def iter_rate(buf: bytes, n_samples: int, rounds: int) -> "tuple[float, int]":
    """Seconds (median) for iter_records over the records holding the first
    ``n_samples`` samples; returns (seconds, samples actually decoded)."""
    from perfbp.kernel.records import HEADER, iter_records

    cfg = sampler_config()
    # find the byte offset just past the n-th sample (headers walked once)
    pos, seen = 0, 0
    mv = memoryview(buf)
    while seen < n_samples and pos < len(buf):
        rtype, _m, size = HEADER.unpack_from(mv, pos)
        seen += rtype == 9
        pos += size
    times = []
    for _ in range(rounds):
        t0 = _clock()
        for _rec in iter_records(buf, cfg, 0, pos):
            pass
        times.append(_clock() - t0)
    return statistics.median(times), seen


# ----------------------------------------------------------------------------------
# A real perf-written file
# ----------------------------------------------------------------------------------

C_LOOP = r"""
volatile long counter;
int main(int argc, char **argv)
{
    long n = 200003;
    if (argc > 1) { n = 0; for (char *p = argv[1]; *p; p++) n = n * 10 + (*p - '0'); }
    for (long i = 0; i < n; i++)
        counter = i;
    return 0;
}
"""


def record_with_perf(workdir: str, hits: int) -> "tuple[str | None, str]":
    """Record ``hits`` writes with perf; return (path or None, why not)."""
    perf = shutil.which("perf")
    if perf is None:
        return None, "needs perf on PATH"
    try:
        exe = harness.compile_c(workdir, "loop", C_LOOP, "-O2", "-no-pie")
        addr = harness.symbol_address(exe)
    except RuntimeError as exc:
        return None, str(exc)
    out = os.path.join(workdir, "perf.data")
    proc = subprocess.run([perf, "record", "-q", "-e", f"mem:{addr:#x}/8:w:u", "-c", "1",
                           "-o", out, "--", exe, str(hits)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not os.path.exists(out):
        return None, f"perf record failed: {proc.stderr.strip()[-300:]}"
    return out, ""


def real_file(path: str, rounds: int) -> dict:
    from perfbp.data.perfdata import read_recording
    from perfbp.kernel.records import decode_bulk

    with open(path, "rb") as f:  # page cache warm, as for perf's own reads
        while f.read(1 << 22):
            pass
    def read_all():  # the header, and the data section (read on demand since 11)
        return read_recording(path).data

    read_s = time_call(read_all)
    rec = read_recording(path)
    data = rec.data
    first = time_call(decode_bulk, data, rec.config)
    cols, others = decode_bulk(data, rec.config)
    steady = [time_call(decode_bulk, data, rec.config) for _ in range(rounds)]
    reads = [time_call(read_all) for _ in range(max(1, rounds // 2))]
    return {"path": path, "bytes": os.path.getsize(path), "samples": len(cols),
            "other_records": len(others), "sample_size": rec.config.fixed_sample_size,
            "read_first_s": read_s, "read_median_s": statistics.median(reads),
            "decode_first_s": first, "decode_median_s": statistics.median(steady)}


# ----------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------

def _status(rate: "float | None") -> str:
    if rate is None:
        return "-"
    return "PASS" if rate >= GOAL_SAMPLES_PER_S else "MISS"


def print_table(r: dict) -> None:
    print(f"perfbp decode benchmark  ({r['machine']}, kernel {r['kernel']}, Python "
          f"{r['python']}, numpy {r['numpy']}, perfbp from {r['perfbp_dir']})")
    s = r["stream"]
    print(f"synthetic stream: {s['samples']:,} samples of {s['sample_size']} bytes "
          f"(sample_type {s['sample_type']:#x}) + {s['other_records']} other records "
          f"(one every ~{s['every']:,} samples), {s['bytes'] / 1e6:.1f} MB; "
          f"decoded right: {'yes' if s['verified'] else 'NO'}")
    harness.print_warning(r)
    print()
    hdr = f"{'measurement':58} {'seconds':>9} {'Msamples/s':>11} {'goal':>8}  status"
    harness.print_header(hdr)
    for row in r["rows"]:
        goal = f">={row['goal'] / 1e6:g}M" if row.get("goal") else "-"
        sec = "-" if row["seconds"] is None else f"{row['seconds']:9.4f}"
        rate = "-" if row["rate"] is None else f"{row['rate'] / 1e6:11.2f}"
        print(f"{row['label']:58} {sec:>9} {rate:>11} {goal:>8}  {row['status']}")
    print()
    if r.get("bulk_vs_iter"):
        print(f"decode_bulk (steady) is {r['bulk_vs_iter']:.0f}x the record-by-record rate.")
    if r.get("real_file_note"):
        print(r["real_file_note"])


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--samples", type=int, default=1_000_000,
                    help="samples in the synthetic stream (default 1,000,000)")
    ap.add_argument("--every", type=int, default=4000,
                    help="one non-sample record every ~K samples (default 4000)")
    harness.rounds_option(ap, 5, "timed calls for the steady figures; median")
    ap.add_argument("--processes", type=int, default=3,
                    help="fresh processes for the first-call figure (default 3; 0 skips)")
    ap.add_argument("--iter-samples", type=int, default=100_000,
                    help="samples decoded by iter_records (default 100,000)")
    ap.add_argument("--perf-data", metavar="FILE",
                    help="a perf.data file to time (default: record one with perf)")
    ap.add_argument("--perf-hits", type=int, default=200_003,
                    help="hits in the recording made when --perf-data is not given")
    ap.add_argument("--no-perf", action="store_true", help="skip the real-file measurement")
    ap.add_argument("--child-first-call", action="store_true", help=argparse.SUPPRESS)
    args = harness.parse_args(ap, argv)
    harness.use_perfbp(args.perfbp)
    try:
        import numpy as np
        import perfbp
    except ImportError as exc:
        print(f"cannot import perfbp (or numpy) from {args.perfbp}: {exc}", file=sys.stderr)
        return 2
    if args.child_first_call:
        return child_first_call(args)
    loaded_from = str(Path(perfbp.__file__).resolve().parent.parent)

    load_before = harness.load_average()
    buf, expected = build_stream(args.samples, args.every)
    problems = verify(buf, expected)
    if problems:
        print("decode_bulk does not decode the synthetic stream right:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    n = args.samples
    rows = []
    steady = steady_decode(buf, max(1, args.rounds))
    med = statistics.median(steady)
    rows.append({"key": "bulk_steady",
                 "label": f"decode_bulk, steady (median of {len(steady)} calls)",
                 "seconds": med, "rate": n / med, "goal": GOAL_SAMPLES_PER_S,
                 "status": _status(n / med), "all_seconds": steady})
    rows.append({"key": "bulk_best", "label": "decode_bulk, steady (best call)",
                 "seconds": min(steady), "rate": n / min(steady), "goal": None,
                 "status": "-"})
    if args.processes > 0:
        try:
            firsts = first_call_in_fresh_processes(args, loaded_from, args.processes)
            fmed = statistics.median(firsts)
            rows.append({"key": "bulk_first_call",
                         "label": f"decode_bulk, first call in a fresh process "
                                  f"(median of {len(firsts)})",
                         "seconds": fmed, "rate": n / fmed, "goal": GOAL_SAMPLES_PER_S,
                         "status": _status(n / fmed), "all_seconds": firsts})
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            print(f"first-call measurement skipped: {exc}", file=sys.stderr)
    it_s, it_n = iter_rate(buf, args.iter_samples, 3)
    rows.append({"key": "iter_records", "label": f"iter_records, first {it_n:,} samples "
                                                 f"(median of 3)",
                 "seconds": it_s, "rate": it_n / it_s, "goal": None, "status": "-"})

    real = None
    real_note = ""
    if not args.no_perf:
        tmp = None
        try:
            path = args.perf_data
            if path is None:
                tmp = tempfile.mkdtemp(prefix="perfbp-bench-decode-")
                path, why = record_with_perf(tmp, args.perf_hits)
                if path is None:
                    real_note = f"real perf file: skipped ({why})"
            if path is not None:
                real = real_file(path, max(1, args.rounds))
                rn = real["samples"]
                label = (f"perf.data ({rn:,} samples of {real['sample_size']} B, "
                         f"{real['bytes'] / 1e6:.1f} MB)")
                rows.append({"key": "real_read", "label": f"read_recording: {label}",
                             "seconds": real["read_median_s"],
                             "rate": rn / real["read_median_s"] if rn else None,
                             "goal": None, "status": "-"})
                rows.append({"key": "real_decode_first",
                             "label": "decode_bulk on it, first call",
                             "seconds": real["decode_first_s"],
                             "rate": rn / real["decode_first_s"] if rn else None,
                             "goal": None, "status": "-"})
                rows.append({"key": "real_decode",
                             "label": f"decode_bulk on it, steady (median of {args.rounds})",
                             "seconds": real["decode_median_s"],
                             "rate": rn / real["decode_median_s"] if rn else None,
                             "goal": GOAL_SAMPLES_PER_S,
                             "status": _status(rn / real["decode_median_s"] if rn else None)})
                both = real["read_median_s"] + real["decode_median_s"]
                rows.append({"key": "real_read_decode", "label": "read_recording + decode_bulk",
                             "seconds": both, "rate": rn / both if rn else None,
                             "goal": None, "status": "-"})
        except (subprocess.SubprocessError, OSError, perfbp.PerfbpError) as exc:
            real_note = f"real perf file: skipped ({type(exc).__name__}: {exc})"
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    load_after = harness.load_average()
    bulk = next(r for r in rows if r["key"] == "bulk_steady")
    it = next(r for r in rows if r["key"] == "iter_records")
    result = {
        **harness.machine(),
        "numpy": np.__version__, "perfbp": perfbp.__version__, "perfbp_dir": loaded_from,
        "loadavg_before": round(load_before, 2), "loadavg_after": round(load_after, 2),
        "goal_samples_per_s": GOAL_SAMPLES_PER_S,
        "stream": {"samples": n, "sample_size": expected["size"],
                   "sample_type": sampler_config().sample_type,
                   "other_records": len(expected["kinds"]), "every": args.every,
                   "bytes": len(buf), "verified": not problems},
        "rows": rows,
        "bulk_vs_iter": bulk["rate"] / it["rate"],
        "real_file": real,
        "real_file_note": real_note,
    }
    return harness.finish(result, args.json, print_table, [harness.busy_warning(load_before)])


if __name__ == "__main__":
    sys.exit(main())
