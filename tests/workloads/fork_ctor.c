/* Preloaded (LD_PRELOAD): its constructor, run by ld.so before main, forks;
 * the child prints "child of the constructor" and exits 0, the parent
 * waits and prints "constructor's child status S". */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((constructor)) static void fork_early(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        printf("child of the constructor\n");
        fflush(stdout);
        _exit(0);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    printf("constructor's child status %d\n", status);
    fflush(stdout);
}
