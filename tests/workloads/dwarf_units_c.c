/* A third file for dwarf_units_a.c's program: it knows `struct hidden`
 * complete (as dwarf_units_b.c defines it) but not the variable, so a build
 * of a and c with -g and b without has the variable's declaration in one
 * unit and its type's definition in another. */
struct hidden {
    int p, q;
};

struct hidden *hidden_ptr;
