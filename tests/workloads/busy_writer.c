/* busy_writer: writes the global `counter` as fast as it can until a signal
 * ends it (SIGTERM, SIGINT, SIGKILL); prints "writing" first.  With the
 * argument "ignore" it ignores SIGTERM and SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

volatile long counter;

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "ignore") == 0) {
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
    }
    printf("writing\n");
    fflush(stdout);
    for (long i = 0;; i++)
        counter = i;
}
