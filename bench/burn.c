/* The neighbour scenario's noisy owner (bench/extras.py): a libfcgi app that
 * burns CPU in a busy loop for ?s=N seconds (default 12) per request, then
 * answers. Built by the bench: cc -O2 -o burn burn.c -lfcgi */
#include <fcgi_stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    while (FCGI_Accept() >= 0) {
        const char *q = getenv("QUERY_STRING");
        double secs = (q && strncmp(q, "s=", 2) == 0) ? atof(q + 2) : 12.0;
        double end = now() + secs;
        volatile unsigned long x = 0;
        while (now() < end) {
            for (int i = 0; i < 100000; i++) {
                x += i;
            }
        }
        printf("Content-Type: text/plain\r\n\r\nburnt %.1f s\n", secs);
    }
    return 0;
}
