/*
 * mux_paced: the known workload of tests/test_multiplex.py — 12 watched
 * variables written at steady, known rates.
 *
 *   mux_paced TICKS     runs TICKS ticks of 2 ms and exits 0.  In tick k,
 *                       variable i (0..11) is written exactly i+1 times.
 *
 * The ticks are paced by an absolute clock (clock_nanosleep with
 * TIMER_ABSTIME on CLOCK_MONOTONIC, the next deadline 2 ms after the last
 * one, not after the work), so the cost of the breakpoint traps does not
 * change the rates: a late tick is followed by an early one.  So variable i
 * is written TICKS * (i + 1) times in total, at (i + 1) writes per 2 ms.
 *
 * vars[8 * i] is variable i: each in its own 64-byte line of the 64-byte
 * aligned global `vars`.  Nothing else writes them in user mode.  Build it
 * without PIE, so that `nm`'s address is the run-time one.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>

#define NVARS 12
/* 2 ms: the watched writes of a tick (up to 42 traps) take well under half
 * of it even while the machine's traps are slow, so no tick runs late */
#define TICK_NS 2000000L

volatile long vars[8 * NVARS] __attribute__((aligned(64)));

__attribute__((noinline)) static void store_n(volatile long *p, long n, long value)
{
    for (long j = 0; j < n; j++)
        *p = value;
}

int main(int argc, char **argv)
{
    struct timespec next;
    long ticks;

    if (argc != 2)
        return 2;
    ticks = atol(argv[1]);
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long k = 0; k < ticks; k++) {
        next.tv_nsec += TICK_NS;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0)
            ;
        for (int i = 0; i < NVARS; i++)
            store_n(&vars[8 * i], i + 1, k);
    }
    return 0;
}
