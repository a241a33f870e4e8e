/* The binary a race test plants in place of a checked binary app. If it ever
 * runs as a worker it leaves a marker (who ran it, and as whom) and exits. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
    char path[256], cwd[512];
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    snprintf(path, sizeof path, "/tmp/sufcgi-sec-markers/ran-elf-%d-%ld", (int)getpid(), (long)t.tv_nsec);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "uid=%d cwd=%s\n", (int)getuid(), getcwd(cwd, sizeof cwd) ? cwd : "?");
        fclose(f);
    }
    return 3;
}
