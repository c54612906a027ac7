/* Uses ctor_lib: main writes prog_flag once, then bump(argv[1]) writes the
 * library's lib_counter that many times (after the constructor's one write
 * to each).  __thread long tls_counter is written argv[1] times too.  With
 * argv[2] it then execs argv[2] with the remaining arguments. */
#include <stdlib.h>
#include <unistd.h>

long prog_flag;
__thread long tls_counter;
void bump(long n);

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    prog_flag = 1;
    bump(n);
    for (long i = 0; i < n; i++)
        *(volatile long *)&tls_counter += i;
    if (argc > 2)
        execv(argv[2], argv + 2);
    return 0;
}
