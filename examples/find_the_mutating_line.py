"""Experiment 1: which Python line mutates one element of a numpy array?

A "larger program" updates a 1,000-element array in several places; one
element (index 617) ends up wrong.  A hardware watchpoint on that element,
with a callback, names every line that wrote it, with the values before and
after: no tracing of the whole program, no guessing.

Run:  python3 examples/find_the_mutating_line.py
"""

from collections import Counter

import numpy as np

import perfbp


def smooth(a):
    a[1:-1] = (a[:-2] + a[1:-1] + a[2:]) / 3.0


def decay(a, k):
    a *= 0.99
    if k % 7 == 0:
        a[617] += 1.0  # the culprit: a stray update of one element


def simulate(a, steps):
    for k in range(steps):
        decay(a, k)
        if k % 10 == 0:
            smooth(a)


def main() -> int:
    data = np.ones(1000)
    writers = Counter()
    with perfbp.watch(data[617:618], on_hit=lambda e: writers.update(
            [(e.function, e.line)])) as w:
        simulate(data, 50)
    print(f"element 617 was written {w.hits} times:")
    for (function, line), n in writers.most_common():
        print(f"  {n:4d}  line {line} in {function}()")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
