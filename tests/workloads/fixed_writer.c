/*
 * fixed_writer: stores at an address the caller chooses, for the CPU-wide
 * watches of a launched command (-a -- CMD, -C CPUS -- CMD), whose address
 * must be known before the command runs.
 *
 *   fixed_writer ADDRESS N STATUS [CPU]
 *
 * Maps one page at ADDRESS (MAP_FIXED_NOREPLACE; the tests pick it at
 * random, so that no other process on the machine stores there), stores to
 * the 8 bytes at ADDRESS exactly N times, and exits with STATUS.  With CPU
 * it first pins itself to that CPU.  The kernel zero-fills the page (in
 * kernel mode: a user-mode watch does not count it); nothing else stores
 * there.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: fixed_writer ADDRESS N STATUS [CPU]\n");
        return 100;
    }
    unsigned long address = strtoul(argv[1], NULL, 0);
    long n = atol(argv[2]);
    if (argc > 4) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(argv[4]), &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            perror("sched_setaffinity");
            return 101;
        }
    }
    void *page = mmap((void *)(address & ~4095UL), 4096, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 102;
    }
    volatile long *cell = (volatile long *)address;
    for (long i = 0; i < n; i++)
        *cell = i;
    return atoi(argv[3]);
}
