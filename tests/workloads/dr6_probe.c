/* Does this machine deliver every breakpoint hit with its status?
 *
 * Opens a write breakpoint on its own global (perf_event_open, this thread),
 * writes it N times (argv[1], default 200003) and prints
 * "HITS TRAPS N": the event's count and the SIGTRAPs with si_code
 * TRAP_BRKPT it took.  On a sound machine HITS == N and TRAPS == 0; a
 * hypervisor that loses DR6 turns hits into such traps (the kernel cannot
 * tell which breakpoint fired), one that loses DR7 loses hits outright. */
#define _GNU_SOURCE
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile long target;
static volatile long traps;

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    if (si->si_code == TRAP_BRKPT)
        traps++;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200003;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);

    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_BREAKPOINT;
    attr.size = sizeof attr;
    attr.bp_type = HW_BREAKPOINT_W;
    attr.bp_addr = (unsigned long)&target;
    attr.bp_len = HW_BREAKPOINT_LEN_8;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    int fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    if (fd < 0) {
        perror("perf_event_open");
        return 2;
    }
    for (long i = 0; i < n; i++)
        target = i;
    long long hits = 0;
    if (read(fd, &hits, sizeof hits) != (ssize_t)sizeof hits)
        return 2;
    printf("%lld %ld %ld\n", hits, (long)traps, n);
    return 0;
}
