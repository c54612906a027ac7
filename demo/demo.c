/* perfbp's bundled demo target.
 *
 * Two worker threads write the global `counter` a known number of times each
 * (a prime: 50021), so every tool can be checked against an exact answer:
 * perfbp stat on `counter` must say 100042 writes.  `config` and `table` give
 * struct members and array elements to watch.
 *
 * Build: cc -O2 -g -fno-omit-frame-pointer -pthread -no-pie -o demo/demo demo/demo.c
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define WRITES_PER_THREAD 50021L

volatile long counter;
struct config {
    int flags;
    int level;
    long limit;
} config = { 0, 1, 100 };
volatile long table[8];

__attribute__((noinline)) static void bump(long i)
{
    counter = i;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (long i = 0; i < WRITES_PER_THREAD; i++)
        bump(i);
    table[id] = WRITES_PER_THREAD;
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    config.flags = 1;
    for (long i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("demo: 2 threads wrote counter %ld times each (%ld in all)\n",
           WRITES_PER_THREAD, 2 * WRITES_PER_THREAD);
    return 0;
}
