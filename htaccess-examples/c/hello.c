/* A persistent FastCGI app in C with libfcgi.
 * Build: cc -o hello.fcgi hello.c -lfcgi   (Debian: libfcgi-dev) */
#include <fcgi_stdio.h>
#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    unsigned long served = 0;
    while (FCGI_Accept() >= 0) {
        struct passwd *pw = getpwuid(getuid());
        const char *uri = getenv("REQUEST_URI");
        served++;
        printf("Content-Type: text/plain\r\n\r\n");
        printf("Hello from C, running as %s (uid %u)\n", pw ? pw->pw_name : "?", (unsigned)getuid());
        printf("REQUEST_URI = %s\n", uri ? uri : "");
        printf("this worker (pid %d) has served %lu request(s)\n", (int)getpid(), served);
    }
    return 0;
}
