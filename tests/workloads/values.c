/*
 * values: the workload of the value tests (tests/test_values.py).
 *
 *   values N
 *
 * Prints the address of `value` and "ready", with thread A already started
 * and parked on a barrier.  After reading a line from stdin (the test
 * attaches, then sends "go"), one writer at a time, each joined before the
 * next starts:
 *   thread A stores 1, 2, ..., N to value;
 *   main starts thread B (created after the attach), which stores N+1 .. 2N;
 *   main forks a child, which stores 2N+1 .. 3N and exits.
 * So a watch on the whole process sees exactly 3N stores, of the values
 * 1 .. 3N in order: each store's old value is the one before it (0 before
 * the first).  Then it prints "done A B CHILD" (the thread ids of A and B and
 * the child's pid), then "lost V..." (the values of the stores that reached
 * the program as a SIGTRAP with si_code TRAP_BRKPT: a debug exception whose
 * status the machine lost, which no watch saw; none on a sound machine; the
 * trap comes right after the store, so `value` still holds what it stored),
 * and waits for one more line before exiting 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

volatile uint64_t value;
static long N;
static pthread_barrier_t go;
#define MAX_LOST 500
static volatile long *lost;  /* [0] how many, [1..] their values; shared with the child */
static volatile long tids[2];

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    if (si->si_code == TRAP_BRKPT) {
        long v = (long)value;
        long i = __atomic_fetch_add(lost, 1, __ATOMIC_SEQ_CST);
        if (i < MAX_LOST)
            lost[1 + i] = v;
    }
}

static void store(long first, long last)
{
    for (long v = first; v <= last; v++)
        value = (uint64_t)v;
}

static void *thread_a(void *arg)
{
    (void)arg;
    tids[0] = syscall(SYS_gettid);
    pthread_barrier_wait(&go);
    store(1, N);
    return NULL;
}

static void *thread_b(void *arg)
{
    (void)arg;
    tids[1] = syscall(SYS_gettid);
    store(N + 1, 2 * N);
    return NULL;
}

int main(int argc, char **argv)
{
    char line[64];
    pthread_t a, b;

    if (argc != 2)
        return 2;
    N = atol(argv[1]);
    lost = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (lost == MAP_FAILED)
        return 9;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);
    pthread_barrier_init(&go, NULL, 2);
    if (pthread_create(&a, NULL, thread_a, NULL))
        return 3;
    printf("%p\nready\n", (void *)&value);
    fflush(stdout);

    if (!fgets(line, sizeof line, stdin))
        return 4;
    pthread_barrier_wait(&go);
    pthread_join(a, NULL);

    if (pthread_create(&b, NULL, thread_b, NULL))
        return 5;
    pthread_join(b, NULL);

    pid_t pid = fork();
    if (pid < 0)
        return 6;
    if (pid == 0) {
        store(2 * N + 1, 3 * N);
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
        return 7;

    printf("done %ld %ld %ld\nlost", tids[0], tids[1], (long)pid);
    for (long i = 0; i < lost[0] && i < MAX_LOST; i++)
        printf(" %ld", lost[1 + i]);
    printf(lost[0] > MAX_LOST ? " more\n" : "\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 8;
    return 0;
}
