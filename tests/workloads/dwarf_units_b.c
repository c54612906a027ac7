/* The second file of dwarf_units_a.c's program (see there). */
#include <stddef.h>

struct point {
    short x;
    short y;
};

struct point origin = {1, 2};

struct hidden {
    int p, q;
} hidden;

/* Where hidden.q lies, for dwarf_units_a.c to print (it sees no members). */
long hidden_q_offset(void) { return (long)offsetof(struct hidden, q); }
size_t hidden_q_size(void) { return sizeof hidden.q; }

static struct {
    long b;
    int a;
} dup = {5, 6};

void touch_b(void)
{
    dup.a = 7;
}
