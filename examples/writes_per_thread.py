"""Experiment 2: how often does each thread write a shared counter, and what
does sharing a cache line with it cost a neighbouring field?

Builds examples/shared_counter.c twice (the neighbour on the counter's cache
line, and padded onto its own), counts the writes to `shared.counter` per
thread with perfbp (by name, struct member from DWARF), then times the
neighbour's writes without any watch to show the false-sharing cost.

Run:  python3 examples/writes_per_thread.py   (needs gcc)
"""

import os
import subprocess
import sys
import tempfile

import perfbp

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = 3
PER_WORKER = 2003  # watched: every write traps (~9 us), so keep it small


def build(out_dir: str, padded: bool) -> str:
    exe = os.path.join(out_dir, "padded" if padded else "shared")
    cmd = ["cc", "-O2", "-g", "-pthread", "-o", exe, os.path.join(HERE, "shared_counter.c")]
    if padded:
        cmd.insert(1, "-DPADDED")
    subprocess.run(cmd, check=True)
    return exe


def neighbour_ns(exe: str) -> float:
    """ns per neighbour write while the workers hammer the counter (unwatched)."""
    out = subprocess.run([exe, str(WORKERS)], check=True, capture_output=True, text=True).stdout
    return float(out.split("neighbour-write=")[1].split()[0])


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        shared, padded = build(d, False), build(d, True)
        session = perfbp.LiveSession(["shared.counter"],
                                     command=[shared, str(WORKERS), str(PER_WORKER)],
                                     interval=0.5)
        with session:
            session.start()
            while session.ended_by is None:
                session.poll()
            session.stop()
            fig = session.figures[0]
            threads = session.threads(16)
        print(f"shared.counter: {fig.hits} writes, {fig.samples} sampled, {fig.lost} lost"
              + (f", {fig.recovered} without their status (the machine's fault: no sample)"
                 if fig.recovered else ""))
        for t in threads:
            print(f"  thread {t.tid} ({t.comm}): {t.samples} writes")
        same = min(neighbour_ns(shared) for _ in range(3))
        apart = min(neighbour_ns(padded) for _ in range(3))
        print(f"neighbour field: {same:.2f} ns/write on the counter's cache line, "
              f"{apart:.2f} ns/write on its own line ({same / apart:.1f}x)")
        ok = fig.hits == WORKERS * PER_WORKER and len(threads) == WORKERS
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
