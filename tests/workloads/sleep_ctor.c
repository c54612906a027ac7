/* Preloaded (LD_PRELOAD): its constructor sleeps half a second before main,
 * then prints "slept". */
#include <stdio.h>
#include <unistd.h>

__attribute__((constructor)) static void sleep_early(void)
{
    usleep(500000);
    printf("slept\n");
    fflush(stdout);
}
