#include <stdlib.h>
static volatile long dup;
volatile long shared_total;
void touch_a(long n);
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1009;
    touch_a(n);
    for (long i = 0; i < n; i++) {
        dup = i;
        shared_total = i;
    }
    return 0;
}
