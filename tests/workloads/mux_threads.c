/*
 * mux_threads: the threaded workload of tests/test_multiplex.py — 4 threads
 * writing 6 watched variables at steady, known rates.
 *
 *   mux_threads MODE TICKS DELAY_MS
 *
 * Variable i (0..5) is vars[8 * i], each in its own 64-byte line of the
 * 64-byte aligned global `vars`; nothing else writes them in user mode.  In
 * all, variable i is written exactly TOTAL[i] times (primes), shared among
 * the 4 threads (thread t takes floor((t+1)N/4) - floor(tN/4) of N) and
 * spread evenly over TICKS ticks of 1 ms: thread t writes its share n in
 * tick k floor(((k+1)n + p)/TICKS) - floor((kn + p)/TICKS) times, where the
 * phase p = t*TICKS/4 keeps the threads from writing in the same ticks.
 * The ticks are paced by an absolute clock (clock_nanosleep with
 * TIMER_ABSTIME on CLOCK_MONOTONIC, tick k due k ms after the thread
 * starts), so the cost of the breakpoint traps does not change the rates.
 *
 * MODE says who writes:
 *   threads  main sleeps DELAY_MS, then starts the 4 threads (threads born
 *            after the watch was armed), joins them and exits 0.
 *   attach   main starts the 4 threads at once, parked on a barrier, prints
 *            "ready" and its pid, and releases them when a line arrives on
 *            stdin (the test attaches with -p in between); DELAY_MS unused.
 *   fork     main sleeps DELAY_MS, then forks a child process that starts
 *            the 4 threads; main waits for it and exits with its status.
 * Build it without PIE, so that the symbol's address is the run-time one.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NVARS 6
#define NTHREADS 4
#define TICK_NS 1000000L

static const long TOTAL[NVARS] = {601, 1009, 1409, 1801, 2203, 2609};

volatile long vars[8 * NVARS] __attribute__((aligned(64)));

static long ticks;
static pthread_barrier_t go;
static int parked;

/* Sleep until k ticks after start: an absolute deadline, so a late tick is
 * followed by an early one. */
static void sleep_until_tick(const struct timespec *start, long k)
{
    long long ns = start->tv_nsec + k * TICK_NS;
    struct timespec at = {start->tv_sec + ns / 1000000000LL, ns % 1000000000LL};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) != 0)
        ;
}

static void *writer(void *arg)
{
    long t = (long)arg;
    long share[NVARS], phase = t * ticks / NTHREADS;
    struct timespec start;

    for (int i = 0; i < NVARS; i++)
        share[i] = (t + 1) * TOTAL[i] / NTHREADS - t * TOTAL[i] / NTHREADS;
    if (parked)
        pthread_barrier_wait(&go);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long k = 0; k < ticks; k++) {
        sleep_until_tick(&start, k + 1);
        for (int i = 0; i < NVARS; i++) {
            long n = ((k + 1) * share[i] + phase) / ticks - (k * share[i] + phase) / ticks;
            for (long j = 0; j < n; j++)
                vars[8 * i] = k;
        }
    }
    return NULL;
}

static int run_threads(void)
{
    pthread_t th[NTHREADS];
    char line[16];

    if (parked)
        pthread_barrier_init(&go, NULL, NTHREADS + 1);
    for (long t = 0; t < NTHREADS; t++)
        if (pthread_create(&th[t], NULL, writer, (void *)t) != 0)
            return 1;
    if (parked) {
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin))
            return 1;
        pthread_barrier_wait(&go);
    }
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    return 0;
}

int main(int argc, char **argv)
{
    int status;
    pid_t pid;

    if (argc != 4)
        return 2;
    ticks = atol(argv[2]);
    if (strcmp(argv[1], "attach") == 0) {
        parked = 1;
        return run_threads();
    }
    usleep(atol(argv[3]) * 1000);
    if (strcmp(argv[1], "threads") == 0)
        return run_threads();
    if (strcmp(argv[1], "fork") != 0)
        return 2;
    pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0)
        _exit(run_threads());
    if (waitpid(pid, &status, 0) != pid)
        return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
