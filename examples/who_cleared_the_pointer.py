"""Experiment 4: who sets a pointer to NULL while it still points somewhere?

A program's queue head is written hundreds of thousands of times by push,
pop and one rare "flush" path that clears it (examples/queue.c).  Recording
every write would bury the one that matters; a condition on the value,
tested in the kernel on every hit (`old != 0 and new == 0`), keeps only the
writes that cleared it, each with the function and line that did it.  The
program runs at full speed between hits: no stop per write, as gdb's
conditional watchpoint would make.

Run:  sudo python3 examples/who_cleared_the_pointer.py   (needs gcc; BPF needs root)
"""

import os
import subprocess
import sys
import tempfile

import perfbp

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = 100003  # pushes and pops; every 1009th round flushes: 99 times


def build(tmp: str) -> str:
    exe = os.path.join(tmp, "queue")
    subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-o", exe,
                    os.path.join(HERE, "queue.c")], check=True)
    return exe


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        data = os.path.join(tmp, "cleared.data")
        try:
            result = perfbp.record(["head"], data, command=[exe, str(ROUNDS)],
                                   condition="old != 0 and new == 0")
        except perfbp.PerfbpError as exc:
            print(f"cannot watch values here: {exc}")
            return 3
        (st,) = result.stats
        print(f"head was written {st.hits} times; {st.matched} writes cleared it "
              f"({st.samples} sampled, {st.lost} lost)")
        report = perfbp.load_report(data)
        (w,) = report.watches
        for wr in w.writers:
            print(f"  {wr.samples:6} {wr.location} ({wr.source})")
        for old, new, n in w.transitions:
            print(f"  {n:6} {old:#x} -> {new:#x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
