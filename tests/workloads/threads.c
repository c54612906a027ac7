/*
 * threads: the workload of the process-target test.
 *
 *   threads N
 *
 * Prints the address of `counter` and "ready", with thread A already
 * started and parked on a barrier.  After reading a line from stdin (the
 * test attaches, then sends "go"):
 *   thread A stores to counter N times;
 *   main starts thread B (created after the attach), which stores N times;
 *   main stores N times;
 *   main forks a child that stores N times and exits.
 * So a watch on the whole process sees exactly 4N stores.  Then it prints
 * "done LOST_OTHERS LOST_A" and waits for one more line before exiting 0,
 * so the test can read the count while the process is still alive.  LOST_*
 * count the stores (of thread A; of main, B and the child) that reached the
 * program as a SIGTRAP with si_code TRAP_BRKPT: a debug exception whose
 * status the machine lost, which no watch counted (0 on a sound machine).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long counter;
static long N;
static pthread_barrier_t go;
static volatile long tid_a;
static volatile long *lost;  /* [0] others, [1] thread A: shared with the child */

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    if (si->si_code == TRAP_BRKPT)
        __atomic_add_fetch(&lost[syscall(SYS_gettid) == tid_a], 1, __ATOMIC_SEQ_CST);
}

static void store_n(void)
{
    for (long i = 0; i < N; i++)
        counter = i;
}

static void *thread_a(void *arg)
{
    (void)arg;
    tid_a = syscall(SYS_gettid);
    pthread_barrier_wait(&go);
    store_n();
    return NULL;
}

static void *thread_b(void *arg)
{
    (void)arg;
    store_n();
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
    printf("%p\nready\n", (void *)&counter);
    fflush(stdout);

    if (!fgets(line, sizeof line, stdin))
        return 4;
    pthread_barrier_wait(&go);
    pthread_join(a, NULL);

    if (pthread_create(&b, NULL, thread_b, NULL))
        return 5;
    pthread_join(b, NULL);

    store_n();

    pid_t pid = fork();
    if (pid < 0)
        return 6;
    if (pid == 0) {
        store_n();
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
        return 7;

    printf("done %ld %ld\n", lost[0], lost[1]);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 8;
    return 0;
}
