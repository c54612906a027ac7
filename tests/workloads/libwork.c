/*
 * libwork: known workloads for perfbp's real-kernel tests.
 *
 * Every loop does exactly the number of accesses its name says: the pointers
 * are volatile, so the compiler must emit one load or store per iteration and
 * may neither merge nor drop them.  The tests watch `scratch`, which Python
 * never reads or writes, so every hit comes from these functions.
 *
 * Built by tests/conftest.py with: gcc -O2 -shared -fPIC.
 */
#include <fcntl.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The memory the tests watch: its own cache lines, nothing else in them. */
__attribute__((aligned(64))) volatile uint8_t scratch[256];

void *scratch_addr(void) { return (void *)scratch; }

void write_u8(volatile uint8_t *p, long n)
{
    for (long i = 0; i < n; i++)
        *p = (uint8_t)i;
}

void write_u16(volatile uint16_t *p, long n)
{
    for (long i = 0; i < n; i++)
        *p = (uint16_t)i;
}

void write_u32(volatile uint32_t *p, long n)
{
    for (long i = 0; i < n; i++)
        *p = (uint32_t)i;
}

void write_u64(volatile uint64_t *p, long n)
{
    for (long i = 0; i < n; i++)
        *p = (uint64_t)i;
}

uint64_t read_u64(volatile uint64_t *p, long n)
{
    uint64_t sum = 0;
    for (long i = 0; i < n; i++)
        sum += *p;
    return sum;
}

/* n read(2)s of 8 bytes from /dev/zero into *p: the kernel stores to p,
 * in kernel mode, and this code never does.  Returns the number of reads
 * that filled all 8 bytes (n), or -1 if /dev/zero cannot be opened. */
long kernel_write_u64(volatile uint64_t *p, long n)
{
    int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long done = 0;
    for (long i = 0; i < n; i++)
        if (read(fd, (void *)p, 8) == 8)
            done++;
    close(fd);
    return done;
}

/* The target of the execute-breakpoint test: never inlined, never cloned,
 * never dropped (the asm statement is a side effect the compiler keeps). */
__attribute__((noinline, noipa)) void work_fn(void)
{
    __asm__ volatile("" ::: "memory");
}

void call_work_fn(long n)
{
    for (long i = 0; i < n; i++) {
        work_fn();
        __asm__ volatile("" ::: "memory");
    }
}

/* Fork a child that stores n times to *p and exits; wait for it.
 * Returns the child's wait status, or -1 if fork failed. */
int fork_and_write(volatile uint64_t *p, long n)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        for (long i = 0; i < n; i++)
            *p = (uint64_t)i;
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    return status;
}
