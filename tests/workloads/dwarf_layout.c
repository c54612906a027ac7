/* Globals with structs, unions, arrays, bitfields and typedefs, for
 * perfbp.dwarf.  The program prints the layout as the compiler sees it, so
 * tests/test_dwarf.py compares DWARF answers with the compiler's own:
 *
 *     PATH OFFSET SIZE      one line per member or element: the byte offset
 *                           from the variable's start (&PATH - &VAR) and
 *                           sizeof PATH, for every valid index path into
 *                           grid, table and recs, and a few others
 *     BITS PATH FIRST LAST  the first and last byte a bitfield's bits touch
 *                           (found by setting all its bits in a zeroed copy)
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

extern struct config config; /* a declaration first: the DIE of the
                                definition then names it by
                                DW_AT_specification */

struct config {
    int flags;
    int level;
    long limit;
    unsigned mode : 3;
    unsigned on : 1;
    unsigned char tail;
} config = {1, 2, 3, 4, 1, 5};

struct node {
    struct node *next;
    int value;
} table[8];

long grid[3][4];

typedef struct {
    char name[16];
    struct node head;
} rec_t;

rec_t recs[2];

typedef const volatile rec_t crec_t;
crec_t frozen = {"frozen", {0, 7}};

struct node *ptrs[4];

struct point {
    short x;
    short y;
};

struct shape {
    int kind;
    union {             /* anonymous: its members are the struct's */
        long radius;
        struct point corner;
    };
    struct point arr[6];
    struct {
        unsigned char r, g, b;
    } color;
} s;

union word {
    unsigned long value;
    unsigned char bytes[8];
    struct { unsigned lo, hi; } half;
} word;

long counter;

static void show(const char *path, const volatile void *var,
                 const volatile void *at, size_t size)
{
    printf("%s %ld %zu\n", path,
           (long)((const volatile char *)at - (const volatile char *)var), size);
}

/* SHOW(variable, member expression, printf format of its path, ...) */
#define SHOW(var, expr, ...) do {                                     \
        char path_[64];                                               \
        snprintf(path_, sizeof path_, __VA_ARGS__);                   \
        show(path_, &(var), &(expr), sizeof(expr));                   \
    } while (0)
#define SHOW_AS_IS(var, expr) SHOW(var, expr, "%s", #expr)

/* Prints which bytes a bitfield occupies: all its bits set in a zeroed copy. */
#define BITS(field, ones) do {                                        \
        struct config c_;                                             \
        memset(&c_, 0, sizeof c_);                                    \
        c_.field = ones;                                              \
        const unsigned char *b_ = (const unsigned char *)&c_;         \
        int first_ = -1, last_ = -1;                                  \
        for (int k_ = 0; k_ < (int)sizeof c_; k_++)                   \
            if (b_[k_]) { if (first_ < 0) first_ = k_; last_ = k_; }  \
        printf("BITS config.%s %d %d\n", #field, first_, last_);      \
    } while (0)

int main(void)
{
    SHOW_AS_IS(config, config);
    SHOW_AS_IS(config, config.flags);
    SHOW_AS_IS(config, config.level);
    SHOW_AS_IS(config, config.limit);
    SHOW_AS_IS(config, config.tail);
    BITS(mode, 7);
    BITS(on, 1);

    SHOW_AS_IS(grid, grid);
    for (int i = 0; i < 3; i++) {
        SHOW(grid, grid[i], "grid[%d]", i);
        for (int j = 0; j < 4; j++) {
            SHOW(grid, grid[i][j], "grid[%d][%d]", i, j);
        }
    }

    SHOW_AS_IS(table, table);
    for (int i = 0; i < 8; i++) {
        SHOW(table, table[i], "table[%d]", i);
        SHOW(table, table[i].next, "table[%d].next", i);
        SHOW(table, table[i].value, "table[%d].value", i);
    }

    SHOW_AS_IS(recs, recs);
    for (int i = 0; i < 2; i++) {
        SHOW(recs, recs[i], "recs[%d]", i);
        SHOW(recs, recs[i].name, "recs[%d].name", i);
        for (int k = 0; k < 16; k++) {
            SHOW(recs, recs[i].name[k], "recs[%d].name[%d]", i, k);
        }
        SHOW(recs, recs[i].head, "recs[%d].head", i);
        SHOW(recs, recs[i].head.next, "recs[%d].head.next", i);
        SHOW(recs, recs[i].head.value, "recs[%d].head.value", i);
    }

    SHOW_AS_IS(frozen, frozen.head.value);
    SHOW_AS_IS(frozen, frozen.name[15]);
    for (int i = 0; i < 4; i++) {
        SHOW(ptrs, ptrs[i], "ptrs[%d]", i);
    }
    SHOW_AS_IS(s, s.radius);
    SHOW_AS_IS(s, s.corner.y);
    for (int i = 0; i < 6; i++) {
        SHOW(s, s.arr[i].x, "s.arr[%d].x", i);
        SHOW(s, s.arr[i].y, "s.arr[%d].y", i);
    }
    SHOW_AS_IS(s, s.color.b);
    SHOW_AS_IS(word, word.bytes[7]);
    SHOW_AS_IS(word, word.half.hi);
    SHOW_AS_IS(counter, counter);
    return 0;
}
