/* Writes libc's `environ` through setenv a known number of times.  setenv
 * replaces environ once when it first grows the array; later calls for the
 * same name only replace the string: exactly 1 write to environ. */
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1009;
    for (long i = 0; i < n; i++)
        setenv("PERFBP_X", i % 2 ? "a" : "b", 1);
    puts("done");
    return 0;
}
