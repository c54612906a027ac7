/* A program reached through a wrapper (env, sh): it alone defines `counter`,
 * and main writes it exactly WRITES times. */
#define WRITES 23

volatile long counter;

int main(void)
{
    for (long i = 0; i < WRITES; i++)
        counter = i;
    return 0;
}
