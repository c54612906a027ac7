/*
 * top_steady: the known workload of tests/test_top.py (perfbp top).
 *
 *   top_steady N M STATUS [FIFO [noterm]]
 *
 * Stores to the global `counter` exactly N times (in bump_counter) and to
 * the global `busier` exactly M times (in bump_busier), then, given a FIFO,
 * opens it and waits for a line (or its end) so that the process stays alive
 * with its counts final while the test reads perfbp's screen; then exits
 * with STATUS.  With "noterm" it ignores SIGTERM: a program that will not be
 * hurried, which perfbp must not hang on.
 *
 * Nothing else writes either global (both are volatile, so -O2 keeps every
 * store), and the program prints nothing.  `_PyRuntime` is never written: it
 * gives the view long names that differ only at their end, as CPython's do
 * (`_PyRuntime.ceval.gil.switch_number`, `_PyRuntime.ceval.gil.locked`).
 *
 * A safety net: alarm(60), so that a test that dies before releasing the
 * FIFO (or killing the program) leaves nothing behind for long.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile long counter;
volatile long busier;
struct gil { long switch_number; long locked; };
struct ceval { struct gil gil; };
struct { struct ceval ceval; } _PyRuntime;

__attribute__((noinline)) static void bump_counter(long n)
{
	for (long i = 0; i < n; i++)
		counter = i;
}

__attribute__((noinline)) static void bump_busier(long n)
{
	for (long i = 0; i < n; i++)
		busier = i;
}

int main(int argc, char **argv)
{
	char line[64];
	int fd;

	if (argc < 4)
		return 100;
	alarm(60);
	if (argc > 5 && strcmp(argv[5], "noterm") == 0)
		signal(SIGTERM, SIG_IGN);
	bump_counter(atol(argv[1]));
	bump_busier(atol(argv[2]));
	if (argc > 4) {
		fd = open(argv[4], O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return 101;
		if (read(fd, line, sizeof line) < 0)
			return 102;
		close(fd);
	}
	return atoi(argv[3]);
}
