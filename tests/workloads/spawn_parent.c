/* spawn_parent N1 N2 [CHILD ARGS...]: writes prog_flag N1 times, runs CHILD
 * (fork + exec) and waits for it, then writes prog_flag N2 times and its
 * pad N2 times (pad: memory a watch on another program's prog_flag might
 * land on).  Exits with the child's status. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

long prog_flag;
long pad[64];

int main(int argc, char **argv)
{
    long n1 = argc > 1 ? atol(argv[1]) : 0, n2 = argc > 2 ? atol(argv[2]) : 0;
    int status = 0;

    for (long i = 0; i < n1; i++)
        *(volatile long *)&prog_flag += i;
    if (argc > 3) {
        pid_t pid = fork();
        if (pid == 0) {
            execv(argv[3], argv + 3);
            _exit(127);
        }
        waitpid(pid, &status, 0);
    }
    for (long i = 0; i < n2; i++) {
        *(volatile long *)&prog_flag += i;
        for (int k = 0; k < 64; k++)
            *(volatile long *)&pad[k] += i;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
