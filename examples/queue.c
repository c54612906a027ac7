/* A work queue whose head pointer is written from four places; one of them,
 * on a rare path, clears it while work is still queued (the bug).
 *
 * Usage: queue [ROUNDS]   (default 100003, a prime)
 *
 * Each round pushes a node, then pops it (head becomes the next node, or
 * NULL when the queue drains: the correct clears).  Every 1009th round a
 * "flush" clears head without draining: the bug the example hunts.
 * Prints how many rounds ran and how many times the queue drained. */
#include <stdio.h>
#include <stdlib.h>

struct node {
    struct node *next;
    long value;
};

struct node *volatile head;
static struct node pool[2];

static void push(struct node *n)
{
    n->next = head;
    head = n;
}

static void pop(void)
{
    head = head->next;  /* NULL when it drains: fine */
}

static void __attribute__((noinline)) flush_stale(void)
{
    head = NULL;  /* the bug: drops the queued node */
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 100003;
    long drained = 0, flushed = 0;
    push(&pool[0]);  /* one node that stays queued */
    for (long i = 1; i <= rounds; i++) {
        push(&pool[1]);
        pop();
        if (i % 1009 == 0) {
            flush_stale();
            flushed++;
            push(&pool[0]);
        }
        if (!head)
            drained++;
    }
    printf("queue: %ld rounds, %ld flushes, head %s\n", rounds, flushed,
           head ? "set" : "NULL");
    return drained != 0;
}
