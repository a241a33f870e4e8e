/* The app of the bench's extra measurements (libfcgi), two behaviours:
 *   ?sleep=N  sleeps N seconds (at most 300) before answering: holds the
 *             pool's only worker so that further requests find the queue full;
 *   otherwise reads the whole request body and throws it away, answering with
 *             the number of bytes read: an upload whose memory cost is only
 *             the server's (the app keeps 64 KiB).
 * Built by bench/extras.py: cc -O2 -o extras_app extras_app.c -lfcgi */
#include <fcgi_stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[65536];

int main(void) {
    while (FCGI_Accept() >= 0) {
        const char *q = getenv("QUERY_STRING");
        if (q != NULL && strncmp(q, "sleep=", 6) == 0) {
            long n = strtol(q + 6, NULL, 10);
            if (n < 0) n = 0;
            if (n > 300) n = 300;
            sleep((unsigned)n);
            printf("Content-Type: text/plain\r\n\r\nslept %ld\n", n);
            continue;
        }
        unsigned long long total = 0;
        size_t got;
        while ((got = FCGI_fread(buf, 1, sizeof buf, FCGI_stdin)) > 0) {
            total += got;
        }
        printf("Content-Type: text/plain\r\n\r\nread %llu\n", total);
    }
    return 0;
}
