/* Asks to be traced by its parent (PTRACE_TRACEME), as strace's and gdb's
 * children do, and says whether it could: "traceme ok" or "traceme: ERROR". */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>

int main(void)
{
    if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0)
        printf("traceme ok\n");
    else
        printf("traceme: %s\n", strerror(errno));
    return 0;
}
