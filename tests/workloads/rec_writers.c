/*
 * rec_writers: the workload of tests/test_record.py (record, report, perf).
 *
 *   rec_writers N [STATUS [THREADS]]
 *
 * Prints "counter ADDRESS" (the address of the global `counter`), then, with
 * THREADS = 2 (the default):
 *   main pins itself to CPU 0 and stores to counter once (in main);
 *   thread 0, pinned to CPU 0, calls bump() N times;
 *   thread 1, pinned to CPU 1, calls bump() N times;
 * bump() is one store to counter, not inlined.  So a watch on counter sees
 * exactly 2N + 1 stores: N + 1 on CPU 0 (main's and thread 0's), N on CPU 1,
 * 2N from bump and 1 from main.  With THREADS = 1 only thread 0 runs and main
 * does not store: exactly N stores, all from bump, all on CPU 0, one thread.
 * At the end it prints "tids MAIN THREAD0 THREAD1" (0 for a thread that did
 * not run) and exits with STATUS (default 0).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile long counter;
static long N;
static long tids[2];

__attribute__((noinline)) void bump(long i)
{
    counter = i;
}

static int pin(int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);  /* 0: the calling thread */
}

static void *worker(void *arg)
{
    long id = (long)arg;

    if (pin((int)id))
        exit(10);
    tids[id] = (long)syscall(SYS_gettid);
    for (long i = 0; i < N; i++)
        bump(i);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    long threads = argc > 3 ? atol(argv[3]) : 2;

    if (argc < 2 || threads < 1 || threads > 2)
        return 2;
    N = atol(argv[1]);
    printf("counter %p\n", (void *)&counter);
    fflush(stdout);
    if (pin(0))
        return 11;
    if (threads == 2)
        counter = -1;
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i))
            return 12;
    for (long i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    printf("tids %ld %ld %ld\n", (long)getpid(), tids[0], tids[1]);
    fflush(stdout);
    return argc > 2 ? atoi(argv[2]) : 0;
}
