/* Two files each with a static `dup`: an ambiguous symbol for perfbp. */
static volatile long dup;
void touch_a(long n) { for (long i = 0; i < n; i++) dup = i; }
