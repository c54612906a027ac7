/* perfbp.lines test workload: known lines store to a global.
 *
 * Every line marked LINE_<name> writes g_target exactly once; the test finds
 * the marks by reading this file, the stores by objdump, and checks that the
 * line table puts each store on its marked line.  lines_part.c is included
 * (at the end, so that file 1 of the line table is this file, as it is in
 * most programs), so a second file of the line table is exercised too.
 * Nothing else writes g_target, and it is volatile so -O2 keeps every store.
 */
#include <stdlib.h>

volatile long g_target;
volatile long g_other;

static void part_store(long v);

__attribute__((noinline)) static long helper(long n)
{
	long sum = 0;

	for (long i = 0; i < n; i++) {
		sum += i * 3;
		if (sum & 4)
			g_target = sum; /* LINE_HELPER_LOOP */
		g_other = i;
	}
	g_target = -sum; /* LINE_HELPER_END */
	return sum;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 7;

	g_target = 1; /* LINE_MAIN_FIRST */
	n += helper(n);
	part_store(n);
	if (n > 3)
		g_target = n * 5; /* LINE_MAIN_IF */
	g_other = n;
	g_target = 0; /* LINE_MAIN_LAST */
	return (int)(g_other & 1);
}

#include "lines_part.c"
