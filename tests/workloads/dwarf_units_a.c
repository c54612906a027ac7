/* Files for perfbp.dwarf built as one program (with dwarf_units_b.c and
 * sometimes dwarf_units_c.c).
 *
 * `origin` is defined in dwarf_units_b.c: when that file is built without
 * -g, the program's DWARF holds only this file's declaration of it (its type
 * is still known).  `dup` is a static variable in both files with different
 * layouts: when both are built with -g, `dup.b` means two different places.
 * `hidden`'s struct is incomplete here: with dwarf_units_b.c built without
 * -g, only dwarf_units_c.c (if linked, with -g) describes it.
 * The program prints, as dwarf_layout.c does, `PATH OFFSET SIZE` lines.
 */
#include <stdio.h>

struct point {
    short x;
    short y;
};

extern struct point origin;
extern struct hidden hidden;

static struct {
    int a;
    long b;
} dup = {1, 2};

void touch_b(void);
long hidden_q_offset(void);
size_t hidden_q_size(void);

int main(void)
{
    origin.y = 3;
    dup.b = 4;
    touch_b();
    void *volatile keep = &hidden;  /* used, so declared in the DWARF */
    (void)keep;
    printf("hidden.q %ld %zu\n", hidden_q_offset(), hidden_q_size());
    printf("origin.y %ld %zu\n", (long)((char *)&origin.y - (char *)&origin), sizeof origin.y);
    printf("dup.b %ld %zu\n", (long)((char *)&dup.b - (char *)&dup), sizeof dup.b);
    return 0;
}
