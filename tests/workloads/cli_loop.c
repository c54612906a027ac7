/*
 * cli_loop: the attach target of tests/test_cli.py (-p, -t, -a, -C).
 *
 *   cli_loop            the main thread does the writing
 *   cli_loop thread     a second thread does it; main only waits for it
 *
 * Prints one line, "ADDRESS TID": the address of the global `counter` and
 * the thread id of the thread that writes it.  Then, for every line read from
 * stdin (a number N), that thread stores to `counter` exactly N times and
 * prints "done LOST": LOST is how many of those stores reached it as a
 * SIGTRAP with si_code TRAP_BRKPT, a debug exception whose status (DR6) the
 * machine lost, which no watch counted (a machine fault; 0 on a sound one).
 * It exits 0 at end of input.
 *
 * Nothing else in the program writes `counter` (stdin is read into a buffer
 * on the stack), so a watch on it sees exactly the N of each round.  Build it
 * as PIE, so that the address differs from run to run and from every other
 * process's: a CPU-wide watch (-a, -C) then sees only this program's stores.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile long counter;
static volatile long lost;

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    if (si->si_code == TRAP_BRKPT)
        lost++;
}

__attribute__((noinline)) static void store_n(long n)
{
    for (long i = 0; i < n; i++)
        counter = i;
}

static void *loop(void *arg)
{
    char line[64];

    (void)arg;
    printf("%p %ld\n", (void *)&counter, (long)syscall(SYS_gettid));
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        long before = lost;
        store_n(atol(line));
        printf("done %ld\n", lost - before);
        fflush(stdout);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t;
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);
    if (argc > 1 && strcmp(argv[1], "thread") == 0) {
        if (pthread_create(&t, NULL, loop, NULL))
            return 3;
        pthread_join(t, NULL);
        return 0;
    }
    loop(NULL);
    return 0;
}
