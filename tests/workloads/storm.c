/*
 * storm: many threads storing to one global at once.
 *
 *   storm THREADS N
 *
 * Starts THREADS threads (1 to 256); each stores to the global `counter`
 * exactly N times, in a function that is not inlined; main joins them and
 * exits 0.  Nothing else writes `counter`, so a watch on it sees exactly
 * THREADS * N stores.  With a one-page ring, most samples and many of the
 * thread records (FORK, COMM, EXIT) find the ring full: what
 * tests/test_record.py uses to check that lost samples are counted exactly.
 */
#include <pthread.h>
#include <stdlib.h>

volatile long counter;
static long n;

__attribute__((noinline)) static void store_n(long count)
{
    for (long i = 0; i < count; i++)
        counter = i;
}

static void *run(void *arg)
{
    store_n(n);
    return arg;
}

int main(int argc, char **argv)
{
    pthread_t t[256];
    int threads;

    if (argc != 3)
        return 2;
    threads = atoi(argv[1]);
    n = atol(argv[2]);
    if (threads < 1 || threads > 256)
        return 2;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, run, NULL))
            return 3;
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return 0;
}
