"""Experiment 3: count a kernel function's executions system-wide, by name.

An execute breakpoint on `vfs_read` (from /proc/kallsyms) on every CPU, for
two seconds while this script reads a file in a loop.  Needs root.

On x86 the kernel accepts execute breakpoints in kernel code only where
kprobes may go, so a kernel built without CONFIG_KPROBES refuses them all:
the script then prints perfbp's explanation and exits 3 (the machine cannot
run the experiment; perfbp works, the kernel says no).

Run:  sudo python3 examples/kernel_function_calls.py [FUNCTION]
"""

import sys
import threading
import time

import perfbp


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "vfs_read"
    (watch,) = perfbp.resolve_watches([f"{name}@kernel:x"], 0)
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            with open("/proc/self/stat", "rb") as f:
                f.read()

    t = threading.Thread(target=reader)
    t.start()
    try:
        result = perfbp.count([watch], target=perfbp.Target.cpus(), duration=2.0)
    except perfbp.PerfbpError as exc:
        print(f"cannot count {name}() here: {exc}")
        return 3
    finally:
        stop.set()
        t.join()
    (hits,) = result.watches
    print(f"{name}() ran {hits.hits} times in {result.elapsed:.1f} s on every CPU "
          f"({hits.hits / result.elapsed:.0f}/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
