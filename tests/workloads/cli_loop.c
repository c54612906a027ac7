/*
 * cli_loop: the attach target of tests/test_cli.py (-p, -t, -a, -C).
 *
 *   cli_loop            the main thread does the writing
 *   cli_loop thread     a second thread does it; main only waits for it
 *
 * Prints one line, "ADDRESS TID": the address of the global `counter` and
 * the thread id of the thread that writes it.  Then, for every line read from
 * stdin (a number N), that thread stores to `counter` exactly N times and
 * prints "done".  It exits 0 at end of input.
 *
 * The line "spin" makes it write `counter` without pause, an unknown number
 * of times, until the next line arrives; it then prints "spun N" (N writes)
 * and handles that line as usual.
 *
 * Nothing else in the program writes `counter` (stdin is read into a buffer
 * on the stack), so a watch on it sees exactly the N of each round.  Build it
 * as PIE, so that the address differs from run to run and from every other
 * process's: a CPU-wide watch (-a, -C) then sees only this program's stores.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile long counter;

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
        if (strncmp(line, "spin", 4) == 0) {
            struct pollfd in = { .fd = 0, .events = POLLIN };
            long n = 0;
            do {
                store_n(1024);
                n += 1024;
            } while (poll(&in, 1, 0) == 0);
            printf("spun %ld\n", n);
            fflush(stdout);
            continue;
        }
        store_n(atol(line));
        printf("done\n");
        fflush(stdout);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t;

    if (argc > 1 && strcmp(argv[1], "thread") == 0) {
        if (pthread_create(&t, NULL, loop, NULL))
            return 3;
        pthread_join(t, NULL);
        return 0;
    }
    loop(NULL);
    return 0;
}
