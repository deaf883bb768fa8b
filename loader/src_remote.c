/*
 * src_remote.c - the remote tier: http(s):// and s3:// through libcurl.
 * Chunks are fetched as parallel range requests over n_connections easy
 * handles on one multi handle (connections are kept alive and reused). A
 * failed transfer (reset, timeout, 5xx, short body) is retried with
 * exponential backoff, resuming at the last byte received; a chunk whose
 * checksum fails is fetched again whole. 4xx answers are final. s3:// is
 * signed with SigV4 by libcurl (CURLOPT_AWS_SIGV4) from the usual AWS_*
 * environment variables.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "loader/loader_int.h"

#define MAX_CONNS 64
#define BACKOFF_CAP_MS 5000

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Credentials and endpoint for s3:// URLs, from the environment. */
struct s3_cfg {
    char userpwd[512];
    char sigv4[128];
    char token_hdr[2100];
    char sha_hdr[128];
    int sign;
};

static const char *env(const char *a, const char *b)
{
    const char *v = getenv(a);
    if ((!v || !v[0]) && b)
        v = getenv(b);
    return v && v[0] ? v : NULL;
}

/* Map s3://bucket/key to a path-style HTTPS URL on the configured endpoint. */
static int map_url(const char *url, char *out, size_t n, struct s3_cfg *s3)
{
    memset(s3, 0, sizeof *s3);
    if (strncmp(url, "s3://", 5) != 0) {
        snprintf(out, n, "%s", url);
        return 0;
    }
    const char *region = env("AWS_REGION", "AWS_DEFAULT_REGION");
    if (!region)
        region = "us-east-1";
    const char *ep = env("THAW_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3");
    if (!ep)
        ep = env("AWS_ENDPOINT_URL", NULL);
    char def[256];
    if (!ep) {
        snprintf(def, sizeof def, "https://s3.%s.amazonaws.com", region);
        ep = def;
    }
    size_t el = strlen(ep);
    while (el > 0 && ep[el - 1] == '/')
        el--;
    if (snprintf(out, n, "%.*s/%s", (int)el, ep, url + 5) >= (int)n)
        return THAW_FAIL(THAW_EINVAL, "URL too long: %s", url);
    const char *id = env("AWS_ACCESS_KEY_ID", NULL), *secret = env("AWS_SECRET_ACCESS_KEY", NULL);
    if (id && secret) {
        s3->sign = 1;
        snprintf(s3->userpwd, sizeof s3->userpwd, "%s:%s", id, secret);
        snprintf(s3->sigv4, sizeof s3->sigv4, "aws:amz:%s:s3", region);
        /* S3 wants the payload hash as a header too; a GET's body is empty.
         * libcurl signs every header we add (and, before 8.x, does not add
         * this one itself). */
        snprintf(s3->sha_hdr, sizeof s3->sha_hdr, "x-amz-content-sha256: %s",
                 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        const char *tok = env("AWS_SESSION_TOKEN", NULL);
        if (tok)
            snprintf(s3->token_hdr, sizeof s3->token_hdr, "x-amz-security-token: %s", tok);
    }
    return 0;
}

static void common_opts(CURL *h, const struct s3_cfg *s3, struct curl_slist **hdrs)
{
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L); /* stalled: < 1 KiB/s ... */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);    /* ... for 30 s */
    curl_easy_setopt(h, CURLOPT_USERAGENT, "thaw/" THAW_VERSION);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (s3 && s3->sign) {
        curl_easy_setopt(h, CURLOPT_USERPWD, s3->userpwd);
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s3->sigv4);
        *hdrs = curl_slist_append(*hdrs, s3->sha_hdr);
        if (s3->token_hdr[0])
            *hdrs = curl_slist_append(*hdrs, s3->token_hdr);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
    }
}

static int retryable_status(long code)
{
    return code == 408 || code == 429 || code >= 500;
}

static unsigned backoff_ms(const struct thaw_loader *ld, unsigned attempt)
{
    uint64_t ms = (uint64_t)ld->o.retry_base_ms << (attempt > 10 ? 10 : attempt - 1);
    return (unsigned)(ms > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : ms);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------- small objects */

struct membuf {
    char *data;
    size_t len, cap, max;
    int overflow;
};

static size_t mem_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct membuf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > b->max) {
        b->overflow = 1;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = thaw_realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

int loader_fetch_small(struct thaw_loader *ld, const char *url, size_t max_bytes, char **out,
                       size_t *len)
{
    char real[4200];
    struct s3_cfg s3;
    pthread_once(&curl_once, curl_init_once);
    int rc = map_url(url, real, sizeof real, &s3);
    if (rc)
        return rc;
    for (unsigned attempt = 1;; attempt++) {
        struct membuf b = { .max = max_bytes };
        struct curl_slist *hdrs = NULL;
        char err[CURL_ERROR_SIZE] = "";
        CURL *h = curl_easy_init();
        if (!h)
            return -ENOMEM;
        common_opts(h, &s3, &hdrs);
        curl_easy_setopt(h, CURLOPT_URL, real);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, mem_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
        CURLcode cc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(h);
        curl_slist_free_all(hdrs);
        if (cc == CURLE_OK && code == 200) {
            if (!b.data && !(b.data = thaw_calloc(1, 1)))
                return -ENOMEM;
            *out = b.data;
            *len = b.len;
            return 0;
        }
        thaw_free(b.data);
        if (b.overflow)
            return THAW_FAIL(THAW_ELIMIT, "%s: larger than %zu bytes", url, max_bytes);
        int final = cc == CURLE_OK ? !retryable_status(code)
                                   : (cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT);
        if (final || attempt > ld->o.max_retries) {
            if (cc == CURLE_OK)
                return THAW_FAIL(THAW_EHTTP, "%s: HTTP %ld%s", url, code,
                                 final ? "" : " (retries exhausted)");
            return THAW_FAIL(THAW_EHTTP, "%s: %s (after %u attempts)", url,
                             err[0] ? err : curl_easy_strerror(cc), attempt);
        }
        atomic_fetch_add(&ld->retries, 1);
        sleep_ms(backoff_ms(ld, attempt));
    }
}

/* ---------------------------------------------------------------- chunk transfers */

struct xfer {
    CURL *h;
    struct curl_slist *hdrs;
    size_t chunk;     /* index into ld->chunks, or SIZE_MAX when idle */
    void *buf;
    size_t got;       /* bytes of the chunk received and kept */
    unsigned attempt;
    uint64_t not_before_ns; /* backoff: don't restart before */
    int overflow;
    size_t range_got; /* x->got when this transfer started */
    char err[CURL_ERROR_SIZE];
};

/* A received chunk waiting for verification, or one to fetch again. */
struct item {
    size_t chunk;
    void *buf;
};

/*
 * The curl loop only receives. Finished chunks go through a queue to worker
 * threads that verify them, write them through to the cache and hand them to
 * the sink, so a slow cache disk or checksum never stalls the network. A
 * chunk that fails its checksum comes back on the refetch list.
 */
struct remote {
    struct thaw_loader *ld;
    CURLM *multi;
    struct xfer x[MAX_CONNS];
    unsigned n_x;
    char **part_url;
    struct s3_cfg s3;
    unsigned *attempts;          /* per chunk */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct item *q;              /* ring of received chunks, capacity n_chunks */
    size_t q_head, q_len;
    struct item *refetch;        /* chunks to fetch again, capacity n_chunks */
    size_t n_refetch;
    int closing;
    _Atomic size_t done;         /* chunks handed to the sink */
};

struct wctx {
    struct remote *r;
    struct xfer *x;
};

static size_t chunk_write_ctx(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct wctx *w = ud;
    struct xfer *x = w->x;
    const struct loader_chunk *c = &w->r->ld->chunks[x->chunk];
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    if (code != 206 && code != 200)
        return n; /* an error body: drop it, the status decides */
    if (x->got + n > c->len) {
        x->overflow = 1;
        return 0;
    }
    memcpy((char *)x->buf + x->got, ptr, n);
    x->got += n;
    return n;
}

static int start_xfer(struct remote *r, struct xfer *x, struct wctx *w)
{
    const struct loader_chunk *c = &r->ld->chunks[x->chunk];
    char range[64];
    snprintf(range, sizeof range, "%" PRIu64 "-%" PRIu64, c->offset + x->got,
             c->offset + c->len - 1);
    curl_easy_reset(x->h);
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    x->range_got = x->got;
    common_opts(x->h, &r->s3, &x->hdrs);
    curl_easy_setopt(x->h, CURLOPT_URL, r->part_url[c->part]);
    curl_easy_setopt(x->h, CURLOPT_RANGE, range);
    curl_easy_setopt(x->h, CURLOPT_BUFFERSIZE, 512L * 1024); /* fewer, larger receives */
    curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, chunk_write_ctx);
    curl_easy_setopt(x->h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(x->h, CURLOPT_ERRORBUFFER, x->err);
    curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
    x->err[0] = '\0';
    x->overflow = 0;
    CURLMcode mc = curl_multi_add_handle(r->multi, x->h);
    if (mc != CURLM_OK)
        return THAW_FAIL(THAW_EHTTP, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
    return 0;
}

/* Schedule x to fetch (the rest of) its chunk again after a backoff, or
 * fail once the chunk has used its retries. */
static int retry_later(struct remote *r, struct xfer *x, const char *why)
{
    struct thaw_loader *ld = r->ld;
    const struct loader_chunk *c = &ld->chunks[x->chunk];
    x->attempt = ++r->attempts[x->chunk];
    if (x->attempt > ld->o.max_retries)
        return THAW_FAIL(THAW_EHTTP, "%s chunk %u: %s (after %u attempts)", r->part_url[c->part],
                         c->index, why, x->attempt);
    atomic_fetch_add(&ld->retries, 1);
    THAW_LOG(THAW_LOG_DEBUG, "loader", "chunk_retry",
             "url=%s chunk=%u attempt=%u resume=%zu why=\"%s\"", r->part_url[c->part], c->index,
             x->attempt, x->got, why);
    x->not_before_ns = thaw_now_ns() + (uint64_t)backoff_ms(ld, x->attempt) * 1000000ull;
    return 0;
}

/* A transfer ended: queue a complete chunk, or resume, or fail. */
static int finish_xfer(struct remote *r, struct xfer *x, CURLcode cc, int *idle)
{
    struct thaw_loader *ld = r->ld;
    const struct loader_chunk *c = &ld->chunks[x->chunk];
    const char *url = r->part_url[c->part];
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    curl_multi_remove_handle(r->multi, x->h);
    *idle = 0;
    char why[CURL_ERROR_SIZE + 64];
    if (cc == CURLE_OK && code == 200 && c->offset + x->range_got != 0) {
        /* A 200 carries the file from byte 0: the server ignored Range. */
        return THAW_FAIL(THAW_EHTTP, "%s: server ignores Range requests (HTTP 200)", url);
    }
    if (cc == CURLE_OK && (code == 206 || code == 200) && x->got == c->len) {
        pthread_mutex_lock(&r->lock);
        r->q[(r->q_head + r->q_len) % ld->n_chunks] = (struct item){ x->chunk, x->buf };
        r->q_len++;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        x->buf = NULL;
        x->chunk = SIZE_MAX;
        *idle = 1;
        return 0;
    }
    if (x->overflow)
        return THAW_FAIL(THAW_EHTTP, "%s chunk %u: server sent more bytes than requested", url,
                         c->index);
    if (cc == CURLE_OK && !retryable_status(code) && code != 206 && code != 200)
        return THAW_FAIL(THAW_EHTTP, "%s chunk %u: HTTP %ld", url, c->index, code);
    if (cc == CURLE_OK && (code == 206 || code == 200))
        snprintf(why, sizeof why, "short body: %zu of %zu bytes", x->got, c->len);
    else if (cc == CURLE_OK)
        snprintf(why, sizeof why, "HTTP %ld", code); /* retryable: resume at x->got */
    else
        snprintf(why, sizeof why, "%s", x->err[0] ? x->err : curl_easy_strerror(cc));
    return retry_later(r, x, why);
}

/* Worker: verify, write through, hand to the sink; bad checksums go back. */
static void *verify_worker(void *arg)
{
    struct remote *r = arg;
    struct thaw_loader *ld = r->ld;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (r->q_len == 0 && !r->closing)
            pthread_cond_wait(&r->cond, &r->lock);
        if (r->q_len == 0) {
            pthread_mutex_unlock(&r->lock);
            break;
        }
        struct item it = r->q[r->q_head];
        r->q_head = (r->q_head + 1) % ld->n_chunks;
        r->q_len--;
        pthread_mutex_unlock(&r->lock);
        if (atomic_load(&ld->failed)) {
            ld->sink->ops->abandon(ld->sink, &ld->chunks[it.chunk], it.buf);
            continue;
        }
        int rc = loader_chunk_verify(ld, &ld->chunks[it.chunk], it.buf);
        if (rc == THAW_ECHECKSUM) {
            /* corrupt in transit: fetch the whole chunk again */
            THAW_LOG(THAW_LOG_DEBUG, "loader", "chunk_corrupt", "error=\"%s\"", thaw_errmsg());
            pthread_mutex_lock(&r->lock);
            r->refetch[r->n_refetch++] = it;
            pthread_mutex_unlock(&r->lock);
        } else if (rc == 0) {
            rc = loader_chunk_forward(ld, &ld->chunks[it.chunk], it.buf);
            if (rc == 0)
                atomic_fetch_add(&r->done, 1);
        } else {
            ld->sink->ops->abandon(ld->sink, &ld->chunks[it.chunk], it.buf);
        }
        if (rc && rc != THAW_ECHECKSUM)
            loader_fail(ld, rc);
        curl_multi_wakeup(r->multi);
    }
    return NULL;
}

int loader_src_remote(struct thaw_loader *ld, const char *base)
{
    struct remote r = { .ld = ld };
    struct wctx w[MAX_CONNS];
    pthread_t th[MAX_CONNS];
    unsigned n_th = 0;
    uint32_t np = thaw_manifest_n_partitions(ld->m);
    size_t nc = ld->n_chunks ? ld->n_chunks : 1;
    int rc = 0;
    pthread_once(&curl_once, curl_init_once);
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    r.part_url = thaw_calloc(np, sizeof(char *));
    r.attempts = thaw_calloc(nc, sizeof *r.attempts);
    r.q = thaw_calloc(nc, sizeof *r.q);
    r.refetch = thaw_calloc(nc, sizeof *r.refetch);
    if (!r.part_url || !r.attempts || !r.q || !r.refetch)
        rc = -ENOMEM;
    for (uint32_t p = 0; p < np && rc == 0; p++) {
        char url[4200], real[4400];
        snprintf(url, sizeof url, "%s/%s", base, thaw_manifest_partition(ld->m, p)->file);
        rc = map_url(url, real, sizeof real, &r.s3);
        if (rc == 0 && !(r.part_url[p] = thaw_strdup(real)))
            rc = -ENOMEM;
    }
    r.multi = rc == 0 ? curl_multi_init() : NULL;
    if (!r.multi && rc == 0)
        rc = -ENOMEM;
    r.n_x = ld->o.n_connections < MAX_CONNS ? ld->o.n_connections : MAX_CONNS;
    if ((size_t)r.n_x > nc)
        r.n_x = (unsigned)nc;
    for (unsigned i = 0; i < r.n_x && rc == 0; i++) {
        r.x[i].chunk = SIZE_MAX;
        r.x[i].h = curl_easy_init();
        w[i] = (struct wctx){ &r, &r.x[i] };
        if (!r.x[i].h)
            rc = -ENOMEM;
    }
    if (rc == 0)
        curl_multi_setopt(r.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)r.n_x);
    unsigned want_th = ld->o.n_threads < 4 ? ld->o.n_threads : 4;
    for (; rc == 0 && n_th < want_th; n_th++) {
        if (pthread_create(&th[n_th], NULL, verify_worker, &r) != 0)
            break;
    }
    if (rc == 0 && n_th == 0)
        rc = THAW_FAIL(-EAGAIN, "cannot start verify threads");

    double t0 = thaw_now_s();
    size_t next = 0;
    while (rc == 0 && atomic_load(&r.done) < ld->n_chunks) {
        if (atomic_load(&ld->failed)) {
            rc = loader_error(ld);
            break;
        }
        /* Give idle transfers a chunk to refetch or a new one; restart
         * those whose backoff ended. */
        uint64_t now = thaw_now_ns(), wait_ns = 100000000ull;
        for (unsigned i = 0; i < r.n_x && rc == 0; i++) {
            struct xfer *x = &r.x[i];
            if (x->chunk == SIZE_MAX) {
                struct item it = { SIZE_MAX, NULL };
                pthread_mutex_lock(&r.lock);
                if (r.n_refetch > 0)
                    it = r.refetch[--r.n_refetch];
                pthread_mutex_unlock(&r.lock);
                if (it.chunk != SIZE_MAX) {
                    x->chunk = it.chunk;
                    x->buf = it.buf;
                    x->got = 0;
                    rc = retry_later(&r, x, "checksum mismatch");
                    continue;
                }
                if (next >= ld->n_chunks)
                    continue;
                x->chunk = next++;
                x->got = 0;
                x->not_before_ns = 0;
                rc = ld->sink->ops->acquire(ld->sink, &ld->chunks[x->chunk], &x->buf);
                if (rc) {
                    x->chunk = SIZE_MAX;
                    break;
                }
            } else if (x->not_before_ns == 0) {
                continue; /* running */
            }
            if (x->not_before_ns > now) {
                uint64_t d = x->not_before_ns - now;
                wait_ns = d < wait_ns ? d : wait_ns;
                continue;
            }
            x->not_before_ns = 0;
            rc = start_xfer(&r, x, &w[i]);
        }
        if (rc)
            break;
        int still = 0;
        CURLMcode mc = curl_multi_perform(r.multi, &still);
        if (mc == CURLM_OK)
            mc = curl_multi_poll(r.multi, NULL, 0, (int)(wait_ns / 1000000ull) + 1, NULL);
        if (mc != CURLM_OK) {
            rc = THAW_FAIL(THAW_EHTTP, "curl multi: %s", curl_multi_strerror(mc));
            break;
        }
        CURLMsg *msg;
        int left;
        while (rc == 0 && (msg = curl_multi_info_read(r.multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct xfer *x = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            int idle = 0;
            rc = finish_xfer(&r, x, msg->data.result, &idle);
        }
    }
    if (rc)
        loader_fail(ld, rc); /* stop the workers from forwarding */
    pthread_mutex_lock(&r.lock);
    r.closing = 1;
    pthread_cond_broadcast(&r.cond);
    pthread_mutex_unlock(&r.lock);
    for (unsigned i = 0; i < n_th; i++)
        pthread_join(th[i], NULL);
    if (rc) {
        for (unsigned i = 0; i < r.n_x; i++) {
            if (r.x[i].chunk != SIZE_MAX && r.x[i].buf)
                ld->sink->ops->abandon(ld->sink, &ld->chunks[r.x[i].chunk], r.x[i].buf);
        }
        for (size_t i = 0; i < r.n_refetch; i++)
            ld->sink->ops->abandon(ld->sink, &ld->chunks[r.refetch[i].chunk], r.refetch[i].buf);
    }
    ld->st.read_s = thaw_now_s() - t0;
    ld->st.method = "http";
    ld->st.tier[THAW_TIER_REMOTE].bytes = thaw_manifest_total_bytes(ld->m);
    ld->st.tier[THAW_TIER_REMOTE].seconds = ld->st.read_s;
    for (unsigned i = 0; i < r.n_x; i++) {
        if (r.x[i].h) {
            curl_multi_remove_handle(r.multi, r.x[i].h);
            curl_easy_cleanup(r.x[i].h);
        }
        curl_slist_free_all(r.x[i].hdrs);
    }
    if (r.multi)
        curl_multi_cleanup(r.multi);
    for (uint32_t p = 0; r.part_url && p < np; p++)
        thaw_free(r.part_url[p]);
    thaw_free(r.part_url);
    thaw_free(r.attempts);
    thaw_free(r.q);
    thaw_free(r.refetch);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.cond);
    return rc;
}
