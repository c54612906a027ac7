/*
 * plan_writes: the known workload of tests/test_planner.py (ranges split
 * over several debug registers, counted as one watch).
 *
 *   plan_writes N M     writes area.a exactly N times and area.b exactly M
 *                       times, then each byte area.bytes[k] exactly
 *                       BYTE_WRITES[k] times (one-byte stores), and exits 0.
 *
 * `area` is a global aligned to 64 bytes: a at offset 0, b at 8 (two
 * adjacent longs, one 16-byte aligned range), bytes[16] at offset 16.
 * Nothing else writes `area` in user mode.  Build it without PIE, so that
 * the address read from the symbol table (`nm`) is the one at run time.
 */
#include <stdlib.h>

/* keep in step with BYTE_WRITES in tests/test_planner.py: primes */
static const long BYTE_WRITES[16] = {
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53,
};

struct area {
    long a;
    long b;
    unsigned char bytes[16];
};

volatile struct area area __attribute__((aligned(64)));

__attribute__((noinline)) static void store_long(volatile long *p, long n)
{
    for (long i = 0; i < n; i++)
        *p = i;
}

__attribute__((noinline)) static void store_byte(volatile unsigned char *p, long n)
{
    for (long i = 0; i < n; i++)
        *p = (unsigned char)i;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    store_long(&area.a, atol(argv[1]));
    store_long(&area.b, atol(argv[2]));
    for (int k = 0; k < 16; k++)
        store_byte(&area.bytes[k], BYTE_WRITES[k]);
    return 0;
}
