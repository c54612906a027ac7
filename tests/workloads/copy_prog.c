/* Built without PIE, it reaches ctor_lib's lib_counter directly: the linker
 * gives it an R_X86_64_COPY relocation, so lib_counter lives in this
 * program's .bss and every access (the library's own too) goes there.
 * main writes it argv[1] times, after bump(argv[2]). */
#include <stdlib.h>

extern long lib_counter;
long prog_flag;
void bump(long n);

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    bump(argc > 2 ? atol(argv[2]) : 0);
    for (long i = 0; i < n; i++)
        *(volatile long *)&lib_counter += i;
    return 0;
}
