/*
 * rec_attach: the attach (-p) target of tests/test_record.py.
 *
 *   rec_attach N
 *
 * Starts a thread named "recwriter" (pthread_setname_np) that waits, then
 * prints "ADDRESS TID" (the address of the global `counter` and the writer
 * thread's id) and "ready".  On the first line read from stdin the writer
 * calls bump() N times (one store to counter each; nothing else stores to
 * it) and main prints "done", then "lost K": the stores that reached it as a
 * SIGTRAP with si_code TRAP_BRKPT (a debug exception whose status the
 * machine lost, which no watch saw; 0 on a sound machine); on the second
 * line (or end of input) it exits 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile long counter;
static long N;
static long writer_tid;
static pthread_barrier_t ready, go;
static volatile long lost;

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    if (si->si_code == TRAP_BRKPT)
        __atomic_fetch_add(&lost, 1, __ATOMIC_SEQ_CST);
}

__attribute__((noinline)) void bump(long i)
{
    counter = i;
}

static void *writer(void *arg)
{
    (void)arg;
    writer_tid = (long)syscall(SYS_gettid);
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&go);
    for (long i = 0; i < N; i++)
        bump(i);
    return NULL;
}

int main(int argc, char **argv)
{
    char line[64];
    pthread_t t;

    if (argc != 2)
        return 2;
    N = atol(argv[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);
    pthread_barrier_init(&ready, NULL, 2);
    pthread_barrier_init(&go, NULL, 2);
    if (pthread_create(&t, NULL, writer, NULL))
        return 3;
    pthread_setname_np(t, "recwriter");
    pthread_barrier_wait(&ready);
    printf("%p %ld\nready\n", (void *)&counter, writer_tid);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 4;
    pthread_barrier_wait(&go);
    pthread_join(t, NULL);
    printf("done\nlost %ld\n", lost);
    fflush(stdout);
    (void)fgets(line, sizeof line, stdin);
    return 0;
}
