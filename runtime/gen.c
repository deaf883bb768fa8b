/*
 * gen.c - the generation service: one engine thread owns the engine and
 * runs continuous batching over every admitted request; HTTP threads submit
 * requests and wait on them. Admission is bounded: at most max_seqs run and
 * `queue` more wait; beyond that a submit fails (THAW_ELIMIT) and the caller
 * answers "overloaded" at once.
 *
 * Each request accumulates its text through the streaming detokenizer, cuts
 * it at the first stop string, holds back the bytes that could still start
 * one, and ends at its deadline (finish "deadline") with one step to spare.
 */
#include <errno.h>
#include <string.h>

#include "runtime/runtime_int.h"

#define RESULT_MAX (900u * 1024) /* OpenWhisk results stay within 1 MB */

struct rt_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    /* input (immutable after submit) */
    int32_t *ids;
    size_t n_ids;
    struct rt_req_params p;
    size_t max_stop;         /* longest stop string */
    /* engine-thread state */
    uint64_t seq;
    int in_engine;
    struct thaw_detok *dt;
    double t_submit, t_admit, t_first, t_last;
    /* shared state (under mu) */
    char *text;              /* all text so far (cut at a stop string) */
    size_t len, cap, visible;
    uint32_t n_gen;
    enum rt_finish finish;
    int cancel;
    char error[256];
    struct rt_req *next;     /* pending list */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running, stop;
    struct rt_model *model;
    struct thaw_engine *e;
    unsigned max_seqs, queue_cap;
    struct rt_req *pending_head, *pending_tail;
    unsigned n_pending;
    struct rt_req **active; /* [max_seqs], engine thread only */
    unsigned n_active;      /* read under mu by rt_gen_load */
    double step_s;          /* EWMA of a step's duration, for deadlines */
} G = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

const char *rt_finish_name(enum rt_finish f)
{
    switch (f) {
    case RT_RUNNING: return "running";
    case RT_STOP: return "stop";
    case RT_LENGTH: return "length";
    case RT_DEADLINE: return "deadline";
    case RT_CANCEL: return "cancelled";
    case RT_ERROR: return "error";
    }
    return "?";
}

static void req_free(struct rt_req *r)
{
    for (size_t i = 0; i < r->p.n_stop; i++)
        thaw_free(r->p.stop[i]);
    thaw_free(r->p.stop);
    thaw_free(r->ids);
    thaw_free(r->text);
    thaw_detok_destroy(r->dt);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    thaw_free(r);
}

void rt_req_put(struct rt_req *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        req_free(r);
}

void rt_req_cancel(struct rt_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->cancel = 1;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&G.mu);
    pthread_cond_signal(&G.cv);
    pthread_mutex_unlock(&G.mu);
}

/* ---------------------------------------------------------------- text */

static int utf8_cont(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

/* Append a piece; cut at a stop string; recompute what is visible. Called
 * with r->mu held. Returns 1 when a stop string ended the text. */
static int append_text(struct rt_req *r, const char *piece, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 256;
        while (nc < r->len + n + 1)
            nc *= 2;
        char *t = thaw_realloc(r->text, nc);
        if (!t)
            return -ENOMEM;
        r->text = t;
        r->cap = nc;
    }
    size_t old = r->len;
    memcpy(r->text + r->len, piece, n);
    r->len += n;
    r->text[r->len] = 0;
    /* A stop string may straddle the old end: search from old - max + 1. */
    size_t from = old > r->max_stop ? old - r->max_stop : 0, cut = SIZE_MAX;
    for (size_t i = 0; i < r->p.n_stop; i++) {
        const char *hit = memmem(r->text + from, r->len - from, r->p.stop[i], strlen(r->p.stop[i]));
        if (hit && (size_t)(hit - r->text) < cut)
            cut = (size_t)(hit - r->text);
    }
    if (cut != SIZE_MAX) {
        r->len = cut;
        r->text[cut] = 0;
        r->visible = cut;
        return 1;
    }
    /* Hold back what could still begin a stop string, on a character
     * boundary. */
    size_t vis = r->len > (r->max_stop ? r->max_stop - 1 : 0) ? r->len - (r->max_stop ? r->max_stop - 1 : 0) : 0;
    while (vis > 0 && vis < r->len && utf8_cont((unsigned char)r->text[vis]))
        vis--;
    if (vis > r->visible)
        r->visible = vis;
    return 0;
}

static void finish(struct rt_req *r, enum rt_finish f, const char *err)
{
    pthread_mutex_lock(&r->mu);
    if (r->finish == RT_RUNNING) {
        r->finish = f;
        r->visible = r->len;
        if (err)
            snprintf(r->error, sizeof r->error, "%s", err);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------- engine thread */

/* Cancel in the engine; a sequence that already finished is not an error. */
static void cancel_seq(uint64_t seq)
{
    if (thaw_engine_cancel(G.e, seq) != 0)
        thaw_err_clear();
}

static void drop_active(unsigned i)
{
    struct rt_req *r = G.active[i];
    G.active[i] = NULL;
    r->in_engine = 0;
    rt_req_put(r);
    pthread_mutex_lock(&G.mu);
    G.n_active--;
    pthread_mutex_unlock(&G.mu);
}

static void on_event(struct rt_req *r, const struct thaw_event *ev, unsigned slot)
{
    double now = thaw_now_s();
    if (!r->t_first)
        r->t_first = now;
    r->t_last = now;
    enum rt_finish f = RT_RUNNING;
    pthread_mutex_lock(&r->mu);
    if (ev->token >= 0 && ev->finish != THAW_FINISH_STOP) {
        r->n_gen++;
        const char *piece = "";
        size_t pl = 0;
        int rc = thaw_detok_push(r->dt, ev->token, &piece, &pl);
        if (!rc)
            rc = append_text(r, piece, pl);
        if (rc < 0) {
            pthread_mutex_unlock(&r->mu);
            finish(r, RT_ERROR, "out of memory");
            cancel_seq(r->seq);
            return;
        }
        if (rc == 1)
            f = RT_STOP;
        else if (r->len > RESULT_MAX)
            f = RT_LENGTH;
    } else if (ev->token >= 0) {
        r->n_gen++; /* the stop token counts as generated, as in vLLM */
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (ev->finish != THAW_FINISH_NONE && f == RT_RUNNING) {
        if (ev->finish != THAW_FINISH_STOP) { /* flush a held UTF-8 tail */
            const char *piece;
            size_t pl;
            if (thaw_detok_flush(r->dt, &piece, &pl) == 0 && pl) {
                pthread_mutex_lock(&r->mu);
                if (append_text(r, piece, pl) == 1)
                    f = RT_STOP;
                pthread_mutex_unlock(&r->mu);
            }
        }
        if (f == RT_RUNNING)
            f = ev->finish == THAW_FINISH_STOP ? RT_STOP
              : ev->finish == THAW_FINISH_LENGTH ? RT_LENGTH : RT_CANCEL;
    }
    if (f != RT_RUNNING) {
        int engine_done = ev->finish != THAW_FINISH_NONE;
        /* A cancelled sequence reports CANCEL in a later step; its request
         * is finished now, and the slot bookkeeping stays until then. */
        finish(r, f, NULL);
        if (engine_done)
            drop_active(slot);
        else
            cancel_seq(r->seq);
    }
}

/* Admit pending requests while the engine has free slots. */
static void admit(void)
{
    for (;;) {
        pthread_mutex_lock(&G.mu);
        struct rt_req *r = NULL;
        if (G.pending_head && G.n_active < G.max_seqs) {
            r = G.pending_head;
            G.pending_head = r->next;
            if (!G.pending_head)
                G.pending_tail = NULL;
            G.n_pending--;
            G.n_active++;
        }
        pthread_mutex_unlock(&G.mu);
        if (!r)
            return;
        unsigned slot = 0;
        while (G.active[slot])
            slot++;
        r->t_admit = thaw_now_s();
        int32_t stops[16];
        size_t ns = G.model->n_stop_ids;
        memcpy(stops, G.model->stop_ids, ns * sizeof *stops);
        struct thaw_seq_params sp = { .sampling = r->p.sampling, .max_tokens = r->p.max_tokens,
                                      .stop_ids = stops, .n_stop_ids = ns };
        int rc = thaw_detok_create(G.model->tok, 1, &r->dt);
        if (!rc)
            rc = thaw_engine_submit(G.e, r->ids, r->n_ids, &sp, &r->seq);
        if (rc) {
            finish(r, RT_ERROR, thaw_errmsg());
            rt_req_put(r);
            pthread_mutex_lock(&G.mu);
            G.n_active--;
            pthread_mutex_unlock(&G.mu);
            continue;
        }
        r->in_engine = 1;
        G.active[slot] = r;
    }
}

static void *engine_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&G.mu);
        while (!G.stop && !G.pending_head && G.n_active == 0)
            pthread_cond_wait(&G.cv, &G.mu);
        int stop = G.stop;
        pthread_mutex_unlock(&G.mu);
        if (stop)
            break;
        admit();
        /* Cancellations and deadlines, one step of margin. */
        uint64_t now = thaw_now_ns(), margin = (uint64_t)(G.step_s * 2e9) + 20000000ull;
        unsigned running = 0;
        for (unsigned i = 0; i < G.max_seqs; i++) {
            struct rt_req *r = G.active[i];
            if (!r)
                continue;
            running++;
            pthread_mutex_lock(&r->mu);
            int live = r->finish == RT_RUNNING, cancel = r->cancel && live;
            pthread_mutex_unlock(&r->mu);
            if (cancel) {
                finish(r, RT_CANCEL, NULL);
                cancel_seq(r->seq);
            } else if (live && r->p.deadline_ns && now + margin >= r->p.deadline_ns) {
                finish(r, RT_DEADLINE, NULL);
                cancel_seq(r->seq);
            }
        }
        rt_metrics_batch(running);
        const struct thaw_event *ev;
        size_t nev;
        double t0 = thaw_now_s();
        int rc = thaw_engine_step(G.e, &ev, &nev);
        double dt = thaw_now_s() - t0;
        G.step_s = G.step_s ? 0.8 * G.step_s + 0.2 * dt : dt;
        if (rc) {
            /* An engine failure ends every running request with its message. */
            char msg[256];
            snprintf(msg, sizeof msg, "engine: %s", thaw_errmsg());
            THAW_LOG(THAW_LOG_ERROR, "runtime", "engine_step_failed", "err=\"%s\"", msg);
            for (unsigned i = 0; i < G.max_seqs; i++) {
                if (!G.active[i])
                    continue;
                finish(G.active[i], RT_ERROR, msg);
                cancel_seq(G.active[i]->seq);
            }
            continue;
        }
        for (size_t k = 0; k < nev; k++) {
            for (unsigned i = 0; i < G.max_seqs; i++) {
                struct rt_req *r = G.active[i];
                if (r && r->seq == ev[k].seq) {
                    if (ev[k].finish == THAW_FINISH_CANCEL) {
                        finish(r, RT_CANCEL, NULL);
                        drop_active(i);
                    } else {
                        on_event(r, &ev[k], i);
                    }
                    break;
                }
            }
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- public */

int rt_gen_start(struct rt_model *m, const struct rt_config *cfg)
{
    struct thaw_engine_opts o = { .max_seqs = cfg->max_seqs, .ctx = cfg->ctx,
                                  .n_threads = cfg->threads };
    int rc = thaw_engine_create(m->m, &o, &G.e);
    if (rc)
        return rc;
    G.active = thaw_calloc(cfg->max_seqs, sizeof *G.active);
    if (!G.active) {
        thaw_engine_destroy(G.e);
        G.e = NULL;
        return -ENOMEM;
    }
    G.model = m;
    G.max_seqs = cfg->max_seqs;
    G.queue_cap = cfg->queue;
    G.stop = 0;
    if ((rc = pthread_create(&G.thread, NULL, engine_main, NULL))) {
        thaw_free(G.active);
        thaw_engine_destroy(G.e);
        G.e = NULL;
        return THAW_FAIL(-rc, "cannot start the engine thread");
    }
    pthread_mutex_lock(&G.mu);
    G.running = 1;
    pthread_mutex_unlock(&G.mu);
    return 0;
}

void rt_gen_stop(void)
{
    pthread_mutex_lock(&G.mu);
    int running = G.running;
    G.stop = 1;
    pthread_cond_broadcast(&G.cv);
    pthread_mutex_unlock(&G.mu);
    if (!running)
        return;
    pthread_join(G.thread, NULL);
    for (unsigned i = 0; i < G.max_seqs; i++) {
        if (G.active[i]) {
            finish(G.active[i], RT_CANCEL, NULL);
            rt_req_put(G.active[i]);
        }
    }
    while (G.pending_head) {
        struct rt_req *r = G.pending_head;
        G.pending_head = r->next;
        finish(r, RT_CANCEL, NULL);
        rt_req_put(r);
    }
    thaw_engine_destroy(G.e);
    thaw_free(G.active);
    G.e = NULL;
    G.active = NULL;
    G.running = 0;
}

void rt_gen_load(unsigned *active, unsigned *capacity)
{
    pthread_mutex_lock(&G.mu);
    *active = G.n_active + G.n_pending;
    *capacity = G.max_seqs + G.queue_cap;
    pthread_mutex_unlock(&G.mu);
}

int rt_gen_submit(const int32_t *ids, size_t n, const struct rt_req_params *p,
                  struct rt_req **out)
{
    *out = NULL;
    struct rt_req *r = thaw_calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 2; /* caller + engine */
    r->p = *p;
    r->p.stop = NULL;
    r->p.n_stop = 0;
    r->ids = thaw_malloc(n * sizeof *ids);
    if (p->n_stop)
        r->p.stop = thaw_calloc(p->n_stop, sizeof *r->p.stop);
    if (!r->ids || (p->n_stop && !r->p.stop)) {
        req_free(r);
        return -ENOMEM;
    }
    memcpy(r->ids, ids, n * sizeof *ids);
    r->n_ids = n;
    for (size_t i = 0; i < p->n_stop; i++) {
        if (!(r->p.stop[r->p.n_stop] = thaw_strdup(p->stop[i]))) {
            req_free(r);
            return -ENOMEM;
        }
        size_t l = strlen(p->stop[i]);
        if (l > r->max_stop)
            r->max_stop = l;
        r->p.n_stop++;
    }
    r->t_submit = thaw_now_s();
    pthread_mutex_lock(&G.mu);
    if (!G.running || G.stop) {
        pthread_mutex_unlock(&G.mu);
        req_free(r);
        return THAW_FAIL(THAW_ENOTSUP, "no model is loaded");
    }
    if (G.n_active + G.n_pending >= G.max_seqs + G.queue_cap) {
        unsigned cap = G.max_seqs + G.queue_cap;
        pthread_mutex_unlock(&G.mu);
        req_free(r);
        return THAW_FAIL(THAW_ELIMIT, "overloaded: %u requests are running or queued", cap);
    }
    if (G.pending_tail)
        G.pending_tail->next = r;
    else
        G.pending_head = r;
    G.pending_tail = r;
    G.n_pending++;
    pthread_cond_signal(&G.cv);
    pthread_mutex_unlock(&G.mu);
    *out = r;
    return 0;
}

int rt_req_wait(struct rt_req *r, size_t have, int timeout_ms, struct rt_req_view *v)
{
    struct timespec dl;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&r->mu);
    while (r->finish == RT_RUNNING && r->visible <= have) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&r->cv, &r->mu);
        } else if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    size_t from = have < r->visible ? have : r->visible;
    v->n_new = r->visible - from;
    v->text = thaw_malloc(v->n_new + 1);
    if (v->text) {
        memcpy(v->text, r->text ? r->text + from : "", v->n_new);
        v->text[v->n_new] = 0;
    } else {
        v->n_new = 0;
    }
    v->len = r->visible;
    v->finish = r->finish;
    v->completion_tokens = r->n_gen;
    v->queue_ms = r->t_admit ? (r->t_admit - r->t_submit) * 1e3 : 0;
    v->ttft_ms = r->t_first ? (r->t_first - r->t_submit) * 1e3 : 0;
    v->decode_ms = r->t_first ? (r->t_last - r->t_first) * 1e3 : 0;
    snprintf(v->error, sizeof v->error, "%s", r->error);
    pthread_mutex_unlock(&r->mu);
    return v->text ? 0 : -ENOMEM;
}
