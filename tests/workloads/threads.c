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
 * "done" and waits for one more line before exiting 0, so the test can read
 * the count while the process is still alive.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long counter;
static long N;
static pthread_barrier_t go;

static void store_n(void)
{
    for (long i = 0; i < N; i++)
        counter = i;
}

static void *thread_a(void *arg)
{
    (void)arg;
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

    printf("done\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 8;
    return 0;
}
