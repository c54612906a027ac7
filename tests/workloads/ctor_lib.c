/* A shared library whose constructor writes before the program's main:
 * lib_counter once and the program's prog_flag once; bump(n) then writes
 * lib_counter n times.  lib_counter starts at 5 (.data: ld.so neither
 * clears nor relocates it). */
extern long prog_flag;
long lib_counter = 5;

__attribute__((constructor)) static void init(void)
{
    lib_counter = 1;
    prog_flag = 7;
}

void bump(long n)
{
    for (long i = 0; i < n; i++)
        *(volatile long *)&lib_counter += i;
}
