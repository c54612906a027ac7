/* Threads hammering a shared counter, and a neighbour field on the same
 * cache line (or, with -DPADDED, on its own line).  Usage: shared_counter
 * [WORKERS [PER_WORKER]].  Each worker thread adds to `shared.counter`
 * PER_WORKER times (default ITERS); one more thread writes `shared.neighbour`
 * ITERS times.  Prints the ns per neighbour write, the false-sharing cost. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS 2000003L

struct {
    volatile long counter;
#ifdef PADDED
    char pad[120];
#endif
    volatile long neighbour;
} shared __attribute__((aligned(128)));

static long per_worker = ITERS;
static pthread_barrier_t start;

static void *worker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    for (long i = 0; i < per_worker; i++)
        __atomic_fetch_add(&shared.counter, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void *neighbour(void *arg) {
    struct timespec a, b;
    pthread_barrier_wait(&start);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < ITERS; i++)
        __atomic_fetch_add(&shared.neighbour, 1, __ATOMIC_RELAXED);
    clock_gettime(CLOCK_MONOTONIC, &b);
    *(double *)arg = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / ITERS;
    return NULL;
}

int main(int argc, char **argv) {
    int nworkers = argc > 1 ? atoi(argv[1]) : 3;
    if (argc > 2)
        per_worker = atol(argv[2]);
    pthread_t t[16], n;
    double ns = 0;
    pthread_barrier_init(&start, NULL, nworkers + 1);
    pthread_create(&n, NULL, neighbour, &ns);
    for (int i = 0; i < nworkers; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < nworkers; i++)
        pthread_join(t[i], NULL);
    pthread_join(n, NULL);
    printf("counter=%ld neighbour-write=%.2f ns\n", shared.counter, ns);
    return 0;
}
