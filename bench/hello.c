/* The benchmarked FastCGI app (libfcgi): one FCGI_Accept loop on fd 0 that
 * answers every request with a 13-byte body, so the numbers measure the
 * request path (Apache -> FastCGI -> app -> back), not the app.
 * Built by bench.py: cc -O2 -o hello hello.c -lfcgi */
#include <fcgi_stdio.h>

int main(void) {
    while (FCGI_Accept() >= 0) {
        printf("Content-Type: text/plain\r\n\r\nHello, world\n");
    }
    return 0;
}
