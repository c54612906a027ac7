/* Included by lines_demo.c and by test_lines.py's file-register probe (not
 * built on its own): a function whose lines are in a second file of the line
 * table.  The includer defines the volatile longs g_target and g_other. */

__attribute__((noinline)) static void part_store(long v)
{
	g_other = v + 1;
	g_target = v * 7; /* LINE_PART */
}
