/*
 * http_server.c - test helper: threaded HTTP/1.1 file server with faults.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/loader/http_server.h"
#include "tests/thaw_test.h"

#define MAX_CONN 64

struct ts_http {
    struct ts_http_opts o;
    int lfd;
    pthread_t acceptor;
    _Atomic int stop;
    _Atomic int n_req, n_bin;
    _Atomic int left_500, left_reset, left_corrupt;
    pthread_mutex_t lock;
    pthread_t conn[MAX_CONN];
    int conn_fd[MAX_CONN];
    int n_conn;
};

struct conn_arg {
    struct ts_http *s;
    int fd;
};

static int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void reply_simple(int fd, int code, const char *text)
{
    char h[256];
    int n = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n%s",
                     code, text, strlen(text), text);
    send_all(fd, h, (size_t)n);
}

static int take(_Atomic int *left)
{
    int v = atomic_load(left);
    while (v > 0) {
        if (atomic_compare_exchange_weak(left, &v, v - 1))
            return 1;
    }
    return 0;
}

static void *conn_main(void *arg)
{
    struct conn_arg *ca = arg;
    struct ts_http *s = ca->s;
    int fd = ca->fd;
    free(ca);
    char req[8192];
    size_t have = 0;
    for (;;) {
        char *end;
        while ((end = memmem(req, have, "\r\n\r\n", 4)) == NULL) {
            if (have == sizeof req)
                goto done;
            ssize_t r = recv(fd, req + have, sizeof req - have, 0);
            if (r <= 0)
                goto done;
            have += (size_t)r;
        }
        size_t hlen = (size_t)(end - req) + 4;
        char head[8192];
        memcpy(head, req, hlen);
        head[hlen] = '\0';
        memmove(req, req + hlen, have - hlen);
        have -= hlen;
        atomic_fetch_add(&s->n_req, 1);
        char method[16], path[2048];
        if (sscanf(head, "%15s %2047s", method, path) != 2 || strcmp(method, "GET") != 0) {
            reply_simple(fd, 400, "bad request");
            continue;
        }
        int is_bin = strlen(path) > 4 && strcmp(path + strlen(path) - 4, ".bin") == 0;
        if (is_bin)
            atomic_fetch_add(&s->n_bin, 1);
        if (strstr(path, "..")) {
            reply_simple(fd, 403, "forbidden");
            continue;
        }
        if (is_bin && take(&s->left_500)) {
            reply_simple(fd, 500, "injected failure");
            continue;
        }
        char fpath[4096];
        snprintf(fpath, sizeof fpath, "%s%s", s->o.root, path);
        int ffd = open(fpath, O_RDONLY);
        struct stat st;
        if (ffd < 0 || fstat(ffd, &st) != 0 || !S_ISREG(st.st_mode)) {
            if (ffd >= 0)
                close(ffd);
            reply_simple(fd, 404, "not found");
            continue;
        }
        unsigned long long a = 0, b = (unsigned long long)st.st_size - 1;
        int ranged = 0;
        char *rh = strcasestr(head, "\r\nRange: bytes=");
        if (rh && !s->o.ignore_range && sscanf(rh + 15, "%llu-%llu", &a, &b) >= 1) {
            ranged = 1;
            if (b >= (unsigned long long)st.st_size)
                b = (unsigned long long)st.st_size - 1;
        }
        size_t len = st.st_size ? (size_t)(b - a + 1) : 0;
        char h[512];
        int n = ranged ? snprintf(h, sizeof h, "HTTP/1.1 206 Partial Content\r\nContent-Length: %zu\r\n"
                                              "Content-Range: bytes %llu-%llu/%lld\r\n"
                                              "Connection: keep-alive\r\n\r\n",
                                  len, a, b, (long long)st.st_size)
                       : snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                                              "Connection: keep-alive\r\n\r\n", len);
        char *body = malloc(len ? len : 1);
        ssize_t got = pread(ffd, body, len, (off_t)a);
        close(ffd);
        if (got != (ssize_t)len) {
            free(body);
            goto done;
        }
        int reset = is_bin && len > 1 && take(&s->left_reset);
        if (!reset && is_bin && len > 0 && take(&s->left_corrupt))
            body[len / 2] ^= 0x01; /* only on bodies that are sent whole */
        int bad = send_all(fd, h, (size_t)n) || send_all(fd, body, reset ? len / 2 : len);
        free(body);
        if (bad || reset)
            goto done;
    }
done:
    shutdown(fd, SHUT_RDWR);
    close(fd);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct ts_http *s = arg;
    while (!atomic_load(&s->stop)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (atomic_load(&s->stop)) {
            close(fd);
            break;
        }
        struct conn_arg *ca = malloc(sizeof *ca);
        ca->s = s;
        ca->fd = fd;
        pthread_mutex_lock(&s->lock);
        if (s->n_conn == MAX_CONN) {
            pthread_mutex_unlock(&s->lock);
            close(fd);
            free(ca);
            continue;
        }
        s->conn_fd[s->n_conn] = fd;
        pthread_create(&s->conn[s->n_conn++], NULL, conn_main, ca);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

struct ts_http *ts_http_start(const struct ts_http_opts *o, int *port)
{
    struct ts_http *s = calloc(1, sizeof *s);
    CHECK(s != NULL);
    s->o = *o;
    atomic_store(&s->left_500, o->n_500);
    atomic_store(&s->left_reset, o->n_reset);
    atomic_store(&s->left_corrupt, o->n_corrupt);
    pthread_mutex_init(&s->lock, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s->lfd >= 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK(bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(listen(s->lfd, 64) == 0);
    socklen_t sl = sizeof sa;
    CHECK(getsockname(s->lfd, (struct sockaddr *)&sa, &sl) == 0);
    *port = ntohs(sa.sin_port);
    CHECK(pthread_create(&s->acceptor, NULL, accept_main, s) == 0);
    return s;
}

void ts_http_stop(struct ts_http *s)
{
    atomic_store(&s->stop, 1);
    shutdown(s->lfd, SHUT_RDWR);
    close(s->lfd);
    pthread_join(s->acceptor, NULL);
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n_conn; i++)
        shutdown(s->conn_fd[i], SHUT_RDWR);
    int n = s->n_conn;
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < n; i++)
        pthread_join(s->conn[i], NULL);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int ts_http_bin_requests(struct ts_http *s)
{
    return atomic_load(&s->n_bin);
}

int ts_http_requests(struct ts_http *s)
{
    return atomic_load(&s->n_req);
}
