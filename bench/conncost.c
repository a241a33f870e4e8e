/* What a connection per request costs a FastCGI app that serves one
 * connection at a time (issue 16), without any web server in between:
 * NW copies of an app (the bench's libfcgi hello app), each accepting on its
 * own Unix socket as sufcgi's workers do, driven at saturation by
 *
 *   fresh  NT client threads, each request on a new connection to the next
 *          worker (round robin): socket, connect, write, read to
 *          END_REQUEST, close; with NT > NW the next connection is already in
 *          a worker's backlog when it closes the last one, as when sufcgi
 *          pipelines;
 *   kept   one client thread per worker on one connection kept for good
 *          (FCGI_KEEP_CONN): the next request is written once END_REQUEST
 *          of the last one was read, so the app waits for it in read();
 *   queue  NT client threads sharing the NW kept connections, as the request
 *          threads of one server process would: the thread that reads an
 *          END_REQUEST writes the next waiting thread's request at once and
 *          wakes it (a futex) to read its own answer.
 *
 * Prints one JSON line: req/s, the apps' CPU (user + system, from /proc) and
 * context switches per request, and the client's own CPU and context
 * switches per request (what the server side would pay).
 * Built and run by bench/conncost.py: cc -O2 -o conncost conncost.c -lpthread
 * usage: conncost fresh|kept|queue NWORKERS NTHREADS SECONDS APP SOCKDIR */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <time.h>
#include <unistd.h>

#define MAXW 16
#define MAXT 64

static int nworkers, seconds;
static const char *sockdir;
static pid_t pids[MAXW];
static atomic_long done, next_worker;
static atomic_int stop;
static unsigned char req_fresh[4096], req_kept[4096];
static int req_len;

static void header(unsigned char *p, int type, int len) {
    p[0] = 1; p[1] = type; p[2] = 0; p[3] = 1; p[4] = len >> 8; p[5] = len & 255; p[6] = 0; p[7] = 0;
}

/* BEGIN_REQUEST (responder), ~1.2 KB of PARAMS in one record (25 pairs, about
 * what Apache passes), the end of PARAMS and the empty STDIN: one write. */
static int build_request(unsigned char *b, int keep) {
    unsigned char params[2048];
    int n = 0, pl = 0;
    header(b, 1, 8);
    memset(b + 8, 0, 8);
    b[9] = 1;
    b[10] = keep;
    n = 16;
    for (int i = 0; i < 25; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "HTTP_SOME_PARAM_%02d", i);
        int vl = snprintf(v, sizeof v, "value-of-the-param-number-%02d-with-some-length", i);
        params[pl++] = kl;
        params[pl++] = vl;
        memcpy(params + pl, k, kl); pl += kl;
        memcpy(params + pl, v, vl); pl += vl;
    }
    header(b + n, 4, pl); n += 8;
    memcpy(b + n, params, pl); n += pl;
    header(b + n, 4, 0); n += 8;
    header(b + n, 5, 0); n += 8;
    return n;
}

static void worker_addr(int i, struct sockaddr_un *a) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof a->sun_path, "%s/w%d.sock", sockdir, i);
}

static void die(const char *what) {
    fprintf(stderr, "conncost: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connect_worker(int i) {
    struct sockaddr_un a;
    worker_addr(i, &a);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    return fd;
}

static void write_all(int fd, const unsigned char *b, int n) {
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w <= 0 && atomic_load(&stop)) pthread_exit(0); /* the apps were stopped */
        if (w <= 0) die("write");
        b += w;
        n -= w;
    }
}

/* Read until one END_REQUEST: records are parsed, so a response split over
 * reads, or several records in one read, count right. */
static void read_response(int fd) {
    static __thread unsigned char buf[65536];
    int have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n <= 0) { if (atomic_load(&stop)) pthread_exit(0); die("read"); }
        have += n;
        int off = 0;
        while (have - off >= 8) {
            unsigned char *h = buf + off;
            int total = 8 + ((h[4] << 8) | h[5]) + h[6];
            if (have - off < total) break;
            if (h[1] == 3) return; /* the app writes nothing after it */
            off += total;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
}

static void *fresh(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        int fd = connect_worker(atomic_fetch_add(&next_worker, 1) % nworkers);
        write_all(fd, req_fresh, req_len);
        read_response(fd);
        close(fd);
        atomic_fetch_add(&done, 1);
    }
    return 0;
}

/* queue: thread i uses kept connection i % NW; who waits queues FIFO. */
struct waiter {
    struct waiter *next;
    atomic_int go;
};
struct shared_conn {
    pthread_mutex_t lock;
    int fd, busy;
    struct waiter *head, *tail;
};
static struct shared_conn conns[MAXW];

static void futex_wait_go(atomic_int *w) {
    while (!atomic_load(w)) syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, 0, 0, 0, 0);
}

static void *queue(void *arg) {
    struct shared_conn *c = &conns[(long)arg % nworkers];
    struct waiter me;
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&c->lock);
        if (!c->busy) {
            c->busy = 1;
            pthread_mutex_unlock(&c->lock);
            write_all(c->fd, req_kept, req_len);
        } else {
            me.next = 0;
            atomic_store(&me.go, 0);
            if (c->tail) c->tail->next = &me; else c->head = &me;
            c->tail = &me;
            pthread_mutex_unlock(&c->lock);
            futex_wait_go(&me.go); /* the one ahead wrote this request */
        }
        read_response(c->fd);
        pthread_mutex_lock(&c->lock);
        struct waiter *w = c->head;
        if (w) {
            if (!(c->head = w->next)) c->tail = 0;
            write_all(c->fd, req_kept, req_len);
            atomic_store(&w->go, 1);
            syscall(SYS_futex, &w->go, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
        } else {
            c->busy = 0;
        }
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_add(&done, 1);
    }
    return 0;
}

static void *kept(void *arg) {
    int fd = connect_worker((int)(long)arg);
    while (!atomic_load(&stop)) {
        write_all(fd, req_kept, req_len);
        read_response(fd);
        atomic_fetch_add(&done, 1);
    }
    return 0;
}

/* The apps' CPU ticks (utime + stime) and context switches, summed. */
static void app_usage(long *ticks, long *switches) {
    *ticks = 0;
    *switches = 0;
    for (int i = 0; i < nworkers; i++) {
        char path[64], line[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f || !fgets(line, sizeof line, f)) die("reading /proc/PID/stat");
        fclose(f);
        long ut = 0, st = 0;
        /* fields after the command: state is 3, utime 14, stime 15 */
        if (sscanf(strrchr(line, ')') + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2)
            die("parsing /proc/PID/stat");
        *ticks += ut + st;
        snprintf(path, sizeof path, "/proc/%d/status", pids[i]);
        if (!(f = fopen(path, "r"))) die("reading /proc/PID/status");
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "voluntary_ctxt_switches:", 24) || !strncmp(line, "nonvoluntary_ctxt_switches:", 27))
                *switches += atol(strchr(line, ':') + 1);
        fclose(f);
    }
}

static long self_switches(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_nvcsw + u.ru_nivcsw;
}

static double self_cpu_us(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: conncost fresh|kept|queue NWORKERS NTHREADS SECONDS APP SOCKDIR\n");
        return 2;
    }
    const char *mode = argv[1], *app = argv[5];
    int is_fresh = !strcmp(mode, "fresh"), is_queue = !strcmp(mode, "queue");
    nworkers = atoi(argv[2]);
    int nthreads = is_fresh || is_queue ? atoi(argv[3]) : nworkers;
    seconds = atoi(argv[4]);
    sockdir = argv[6];
    if ((!is_fresh && !is_queue && strcmp(mode, "kept")) || nworkers < 1 || nworkers > MAXW || nthreads < 1 || nthreads > MAXT) {
        fprintf(stderr, "conncost: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    req_len = build_request(req_fresh, 0);
    build_request(req_kept, 1);
    for (int i = 0; i < nworkers; i++) {
        struct sockaddr_un a;
        worker_addr(i, &a);
        unlink(a.sun_path);
        int ls = socket(AF_UNIX, SOCK_STREAM, 0);
        if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 64) < 0) die("listen");
        if (!(pids[i] = fork())) {
            /* A FastCGI app finds its listening socket on fd 0. */
            dup2(ls, 0);
            execl(app, app, (char *)0);
            _exit(127);
        }
        close(ls);
    }
    usleep(200000);
    for (int i = 0; is_queue && i < nworkers; i++) {
        pthread_mutex_init(&conns[i].lock, 0);
        conns[i].fd = connect_worker(i);
    }
    pthread_t th[MAXT];
    for (long i = 0; i < nthreads; i++)
        pthread_create(&th[i], 0, is_fresh ? fresh : is_queue ? queue : kept, (void *)i);
    sleep(1); /* warm-up */
    long t0, s0, t1, s1;
    long d0 = atomic_load(&done);
    app_usage(&t0, &s0);
    double c0 = self_cpu_us(), w0 = now_s();
    long x0 = self_switches();
    sleep(seconds);
    long d1 = atomic_load(&done);
    app_usage(&t1, &s1);
    double c1 = self_cpu_us(), w1 = now_s();
    long x1 = self_switches();
    long n = d1 - d0;
    if (n <= 0) {
        fprintf(stderr, "conncost: no request completed\n");
        return 1;
    }
    printf("{\"mode\": \"%s\", \"workers\": %d, \"threads\": %d, \"requests\": %ld, \"req_s\": %.0f, "
           "\"app_us_per_req\": %.2f, \"app_switches_per_req\": %.3f, \"client_us_per_req\": %.2f, \"client_switches_per_req\": %.3f}\n",
           mode, nworkers, nthreads, n, n / (w1 - w0), (t1 - t0) * 1e6 / sysconf(_SC_CLK_TCK) / n,
           (double)(s1 - s0) / n, (c1 - c0) / n, (double)(x1 - x0) / n);
    fflush(stdout);
    atomic_store(&stop, 1);
    for (int i = 0; i < nworkers; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < nworkers; i++) waitpid(pids[i], 0, 0);
    for (int i = 0; i < nworkers; i++) {
        struct sockaddr_un a;
        worker_addr(i, &a);
        unlink(a.sun_path);
    }
    _exit(0);
}
