/* FastCGI test app (libfcgi, FCGI_Accept loop on fd 0): JSON with uid/gid and
 * the CGI environment of each request. Built by the harness: cc -o X env.c -lfcgi */
#include <fcgi_stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static void json_str(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            putchar('\\');
            putchar(c);
        } else if (c < 0x20 || c >= 0x7f) {
            printf("\\u%04x", c); /* bytes above 0x7f shown as latin-1 code points */
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

int main(void) {
    while (FCGI_Accept() >= 0) {
        printf("Content-Type: application/json\r\n\r\n");
        printf("{\"app\": \"c\", \"uid\": %u, \"gid\": %u, \"euid\": %u, \"pid\": %d, \"env\": {",
               (unsigned)getuid(), (unsigned)getgid(), (unsigned)geteuid(), (int)getpid());
        int first = 1;
        for (char **e = environ; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            if (!eq) continue;
            if (!first) printf(", ");
            first = 0;
            json_str(*e, (size_t)(eq - *e));
            printf(": ");
            json_str(eq + 1, strlen(eq + 1));
        }
        printf("}}\n");
    }
    return 0;
}
