/*
 * unwind_chain: a known call chain in code without frame pointers, for
 * tests/test_unwind.py (record --call-graph dwarf, and -g).
 *
 *   unwind_chain [N]
 *
 * main calls a() N times (default 10,007, a prime); a calls b, b calls
 * store, and store makes the one store to `counter`: exactly N stores, every
 * one with the stack store <- b <- a <- main.  Built with -O2
 * -fomit-frame-pointer: rbp is an ordinary register here, holding values
 * that live across the calls (the frame pointers a kernel walk would follow
 * are numbers), and each function keeps values in callee-saved registers,
 * so each frame has its own size in its CFI.  The calls are not tail calls
 * (each caller uses the result afterwards): every frame is on the stack.
 *
 * With -DSTORE_CALLS store calls an empty function after its store: it is
 * no leaf, so built with -fno-omit-frame-pointer it sets up a frame (a leaf
 * sets up none, and a walk of the frame pointers from it misses b).
 */
#include <stdlib.h>

volatile long counter;
long sink;

#ifdef STORE_CALLS
__attribute__((noipa)) void after(long v)
{
    (void)v;
}
#endif

__attribute__((noipa)) long store(long v)
{
    counter = v;
#ifdef STORE_CALLS
    after(v);
#endif
    return v ^ 0x55;
}

__attribute__((noipa)) long b(long x, long y)
{
    long s = x * 3, t = y ^ 5, u = x + y, w = x - 7, z = y * y;

    long r = store(x);
    return r + s * t + u * w + z;  /* all five live across the call */
}

__attribute__((noipa)) long a(long x)
{
    long p = x + 2, q = x * x, k = x ^ 0x33, m = x - 1, n = 3 * x;

    long r = b(x, x + 1);
    return r + p * q + k * m + n;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10007;
    long acc = 0;

    for (long i = 0; i < n; i++)
        acc += a(i);
    sink = acc;
    return 0;
}
