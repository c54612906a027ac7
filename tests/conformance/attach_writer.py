"""A multi-threaded CPython process for the attach test (run by python3.11).

THREADS threads start and wait; the main thread prints the address of an
8-byte cell (ctypes) and waits for a line on stdin; then every thread writes
the cell WRITES times (one 8-byte store per assignment) and the process
exits.  Nothing else writes the cell after it is created.
"""

import ctypes
import sys
import threading

THREADS, WRITES = int(sys.argv[1]), int(sys.argv[2])
cell = (ctypes.c_long * 1)()
go = threading.Event()


def work():
    go.wait()
    for i in range(WRITES):
        cell[0] = i


threads = [threading.Thread(target=work) for _ in range(THREADS)]
for t in threads:
    t.start()
print(ctypes.addressof(cell), flush=True)
sys.stdin.readline()
go.set()
for t in threads:
    t.join()
