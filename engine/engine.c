/*
 * engine.c - continuous batching, and the CPU backend's forward pass (the
 * CUDA backend, engine/cuda.cu behind engine/eng_cuda.h, runs the same pass
 * on the GPU when the engine is created with THAW_BACKEND_CUDA).
 *
 * Each step gathers one token from every decoding sequence and a chunk of
 * prompt from prefilling ones into a single batch, so the weights are read
 * once per step however many sequences run. K/V are kept per sequence slot
 * in f32 ([slot][layer][ctx][n_kv * head_dim]); the buffer is reserved up
 * front and only touched pages become resident. Logits are computed only
 * for a sequence's last token of the step.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/eng_cuda.h"
#include "engine/engine_int.h"

#define QUEUE_MAX 4096
#define MAX_CHUNKS 64 /* parallel chunks per job; each has its own scratch */

struct seq {
    uint64_t id;
    int32_t *tokens;
    size_t n, cap, n_prompt, n_cached;
    uint32_t n_gen, max_tokens;
    struct thaw_sampling sampling;
    int32_t *stop;
    size_t n_stop;
    int logprobs, cancel, slot;
    struct eng_rng rng;
};

struct thaw_engine {
    struct thaw_model *m;
    enum thaw_backend backend;
    struct eng_cuda *cuda; /* CUDA backend; NULL on the CPU */
    struct eng_pool *pool;
    int ctx, max_seqs, chunk, max_tok, max_logit_rows;
    int H, I, qd, kvd, hd, V;
    float *kcache, *vcache;
    float *cos_t, *sin_t; /* [ctx][hd/2] */
    float *x, *xb, *xb2, *q, *k, *v, *att, *hb, *hb2;
    float *logits;        /* [max_logit_rows][V]; the CUDA backend's pinned buffer there */
    float *scratch;       /* per chunk: ENG_MATMUL_SCRATCH(max(H, I, qd)) */
    float *scores;        /* per chunk: ctx */
    size_t scratch_per;
    struct seq **slots;   /* [max_seqs] */
    struct seq **queue;
    size_t n_queue;
    uint64_t next_id;
    struct thaw_event *events;
    size_t n_events, cap_events;
    struct eng_sample_buf sbuf;
    struct eng_btok *batch;
    int n_batch;
};

const char *thaw_finish_name(enum thaw_finish f)
{
    switch (f) {
    case THAW_FINISH_NONE: return "none";
    case THAW_FINISH_STOP: return "stop";
    case THAW_FINISH_LENGTH: return "length";
    case THAW_FINISH_CANCEL: return "cancel";
    }
    return "?";
}

/* ---------------------------------------------------------------- set-up */

static int rope_tables(struct thaw_engine *e)
{
    const struct thaw_model_config *c = &e->m->cfg;
    int half = e->hd / 2;
    float *inv = thaw_malloc((size_t)half * sizeof *inv);
    if (!inv)
        return -ENOMEM;
    /* As transformers: inv_freq = 1 / theta^(2j/d) in fp32, scaled per type. */
    for (int j = 0; j < half; j++) {
        inv[j] = 1.0f / powf(c->rope_theta, (float)(2 * j) / (float)e->hd);
        if (c->rope_type == THAW_ROPE_LINEAR) {
            inv[j] /= c->rope_factor;
        } else if (c->rope_type == THAW_ROPE_LLAMA3) {
            float old = (float)c->rope_orig_max_pos;
            float low_wl = old / c->rope_low_freq, high_wl = old / c->rope_high_freq;
            float wl = 2.0f * (float)M_PI / inv[j];
            if (wl > low_wl) {
                inv[j] /= c->rope_factor;
            } else if (!(wl < high_wl)) {
                float s = (old / wl - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
                inv[j] = (1 - s) * inv[j] / c->rope_factor + s * inv[j];
            }
        }
    }
    for (int p = 0; p < e->ctx; p++) {
        for (int j = 0; j < half; j++) {
            float a = (float)p * inv[j];
            e->cos_t[(size_t)p * half + j] = (float)cos((double)a);
            e->sin_t[(size_t)p * half + j] = (float)sin((double)a);
        }
    }
    thaw_free(inv);
    return 0;
}

int thaw_engine_create(struct thaw_model *m, const struct thaw_engine_opts *o,
                       struct thaw_engine **out)
{
    *out = NULL;
    struct thaw_engine_opts def = { 0 };
    if (!o)
        o = &def;
    if (o->backend != THAW_BACKEND_CPU && o->backend != THAW_BACKEND_CUDA)
        return THAW_FAIL(THAW_EINVAL, "engine: unknown backend %d", (int)o->backend);
    if (m->device_ptrs && o->backend != THAW_BACKEND_CUDA)
        return THAW_FAIL(THAW_EINVAL, "engine: the model's weights are in GPU memory "
                         "(loaded with target GPU); only the CUDA backend can run it");
    int cpu = o->backend == THAW_BACKEND_CPU;
    eng_cpu_init();
    const struct thaw_model_config *c = &m->cfg;
    struct thaw_engine *e = thaw_calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->m = m;
    e->backend = o->backend;
    e->max_seqs = o->max_seqs ? (int)o->max_seqs : 8;
    e->ctx = o->ctx ? (int)o->ctx : (c->max_pos < 4096 ? c->max_pos : 4096);
    if (m->sliding_window && m->sliding_window < e->ctx)
        e->ctx = m->sliding_window; /* no rolling cache: stay inside the window */
    e->chunk = o->prefill_chunk ? (int)o->prefill_chunk : 512;
    if (e->max_seqs > 1024 || e->ctx < 2 || e->ctx > (1 << 20) || e->chunk > 65536) {
        thaw_free(e);
        return THAW_FAIL(THAW_EINVAL, "engine: max_seqs %d (<= 1024), ctx %d (2..1M) or "
                         "prefill_chunk %d out of range", e->max_seqs, e->ctx, e->chunk);
    }
    e->max_tok = e->chunk + e->max_seqs;
    e->max_logit_rows = e->max_seqs > 64 ? e->max_seqs : 64;
    e->H = c->hidden;
    e->I = c->intermediate;
    e->hd = c->head_dim;
    e->qd = c->n_heads * c->head_dim;
    e->kvd = c->n_kv_heads * c->head_dim;
    e->V = c->vocab;
    /* The CUDA backend runs no host threads of its own. */
    int rc = eng_pool_create(cpu ? (int)o->n_threads : 1, &e->pool);
    if (rc) {
        thaw_free(e);
        return rc;
    }
    int nt = eng_pool_size(e->pool), wide = e->H;
    if (e->I > wide)
        wide = e->I;
    if (e->qd > wide)
        wide = e->qd;
    e->scratch_per = ENG_MATMUL_SCRATCH(wide);
    size_t kv = (size_t)e->max_seqs * c->n_layers * (size_t)e->ctx * e->kvd;
    size_t T = (size_t)e->max_tok;
    /* calloc: large blocks come from fresh mmap, so untouched KV costs nothing.
     * The CUDA backend keeps KV, activations and logits itself. */
    if (cpu) {
        e->kcache = thaw_calloc(kv, sizeof(float));
        e->vcache = thaw_calloc(kv, sizeof(float));
    }
    e->cos_t = thaw_malloc((size_t)e->ctx * (e->hd / 2) * sizeof(float));
    e->sin_t = thaw_malloc((size_t)e->ctx * (e->hd / 2) * sizeof(float));
    if (cpu) {
        e->x = thaw_malloc(T * e->H * sizeof(float));
        e->xb = thaw_malloc(T * wide * sizeof(float));
        e->xb2 = thaw_malloc(T * e->H * sizeof(float));
        e->q = thaw_malloc(T * e->qd * sizeof(float));
        e->k = thaw_malloc(T * e->kvd * sizeof(float));
        e->v = thaw_malloc(T * e->kvd * sizeof(float));
        e->att = thaw_malloc(T * e->qd * sizeof(float));
        e->hb = thaw_malloc(T * e->I * sizeof(float));
        e->hb2 = thaw_malloc(T * e->I * sizeof(float));
        e->logits = thaw_malloc((size_t)e->max_logit_rows * e->V * sizeof(float));
        e->scratch = thaw_malloc((size_t)MAX_CHUNKS * e->scratch_per * sizeof(float));
        e->scores = thaw_malloc((size_t)MAX_CHUNKS * e->ctx * sizeof(float));
    }
    e->slots = thaw_calloc((size_t)e->max_seqs, sizeof *e->slots);
    e->queue = thaw_calloc(QUEUE_MAX, sizeof *e->queue);
    e->batch = thaw_calloc(T, sizeof *e->batch);
    int cpu_missing = cpu && (!e->kcache || !e->vcache || !e->x || !e->xb || !e->xb2 || !e->q ||
                              !e->k || !e->v || !e->att || !e->hb || !e->hb2 || !e->logits ||
                              !e->scratch || !e->scores);
    if (cpu_missing || !e->cos_t || !e->sin_t || !e->slots || !e->queue || !e->batch) {
        thaw_engine_destroy(e);
        return THAW_FAIL(-ENOMEM, "engine: cannot allocate buffers (KV %zu MiB)",
                         kv * 2 * sizeof(float) >> 20);
    }
    if ((rc = rope_tables(e))) {
        thaw_engine_destroy(e);
        return rc;
    }
    if (!cpu) {
        struct eng_cuda_opts co = { .device = o->gpu_device, .max_seqs = e->max_seqs,
                                    .ctx = e->ctx, .max_tok = e->max_tok,
                                    .max_logit_rows = e->max_logit_rows,
                                    .fast_act = o->gpu_fast_act, .cos_t = e->cos_t,
                                    .sin_t = e->sin_t };
        if ((rc = eng_cuda_create(m, &co, &e->cuda))) {
            thaw_engine_destroy(e);
            return rc;
        }
        e->logits = eng_cuda_logits(e->cuda);
    }
    e->next_id = 1;
    THAW_LOG(THAW_LOG_DEBUG, "engine", "create",
             "backend=%s isa=%s threads=%d max_seqs=%d ctx=%d chunk=%d",
             thaw_engine_backend_name(e), eng_cpu_isa(), nt, e->max_seqs, e->ctx, e->chunk);
    *out = e;
    return 0;
}

static void seq_free(struct seq *s)
{
    if (!s)
        return;
    thaw_free(s->tokens);
    thaw_free(s->stop);
    thaw_free(s);
}

void thaw_engine_destroy(struct thaw_engine *e)
{
    if (!e)
        return;
    eng_pool_destroy(e->pool);
    for (int i = 0; e->slots && i < e->max_seqs; i++)
        seq_free(e->slots[i]);
    for (size_t i = 0; i < e->n_queue; i++)
        seq_free(e->queue[i]);
    thaw_free(e->kcache);
    thaw_free(e->vcache);
    thaw_free(e->cos_t);
    thaw_free(e->sin_t);
    thaw_free(e->x);
    thaw_free(e->xb);
    thaw_free(e->xb2);
    thaw_free(e->q);
    thaw_free(e->k);
    thaw_free(e->v);
    thaw_free(e->att);
    thaw_free(e->hb);
    thaw_free(e->hb2);
    if (!e->cuda)
        thaw_free(e->logits); /* else the backend's pinned buffer */
    eng_cuda_destroy(e->cuda);
    thaw_free(e->scratch);
    thaw_free(e->scores);
    thaw_free(e->slots);
    thaw_free(e->queue);
    thaw_free(e->batch);
    thaw_free(e->events);
    eng_sample_buf_free(&e->sbuf);
    thaw_free(e);
}

/* ---------------------------------------------------------------- forward */

struct mm_part {
    const struct eng_weight *w, *bias;
    float *y;
    int ldy, col0; /* output column offset inside y rows */
    const float *x;
};

struct mm_job {
    struct thaw_engine *e;
    struct mm_part part[3];
    int n_parts, n_tok;
};

/* Chunk ci of nc of the rows of all parts (concatenated), in blocks of 4. */
static void mm_run(void *arg, int wi, int nw)
{
    struct mm_job *j = arg;
    long total = 0;
    for (int p = 0; p < j->n_parts; p++)
        total += j->part[p].w->rows;
    long blocks = (total + 3) / 4, per = (blocks + nw - 1) / nw;
    long r0 = wi * per * 4, r1 = (wi + 1) * per * 4;
    if (r1 > total)
        r1 = total;
    float *scratch = j->e->scratch + (size_t)wi * j->e->scratch_per;
    long base = 0;
    for (int p = 0; p < j->n_parts && r0 < r1; p++) {
        const struct mm_part *pt = &j->part[p];
        long lo = r0 > base ? r0 : base, hi = r1 < base + pt->w->rows ? r1 : base + pt->w->rows;
        if (lo < hi)
            eng_matmul_rows(pt->y + pt->col0 - 0, pt->ldy, pt->x, j->n_tok, pt->w, pt->bias,
                            (int)(lo - base), (int)(hi - base), scratch);
        base += pt->w->rows;
    }
}

/*
 * About 64 rows per chunk for one token, 128 for several (each chunk of a
 * batched matmul first lays out its tokens for the kernel: larger chunks
 * repeat that less), at most MAX_CHUNKS. Several chunks per worker keep
 * them busy when one is descheduled; a multiple of the thread count gives
 * the threads equal shares when none is (576 rows in 9 chunks left one of 2
 * threads idle for a ninth of the matmul).
 */
static int mm_chunks(const struct mm_job *j)
{
    long rows = 0, per = j->n_tok > 1 ? 128 : 64;
    for (int p = 0; p < j->n_parts; p++)
        rows += j->part[p].w->rows;
    long c = (rows + per - 1) / per, nt = eng_pool_size(j->e->pool);
    if (c > MAX_CHUNKS)
        c = MAX_CHUNKS;
    if (c > nt)
        c -= c % nt;
    return (int)c;
}

static void matmul(struct thaw_engine *e, int n_tok, const float *x, const struct eng_weight *w,
                   const struct eng_weight *bias, float *y, int ldy)
{
    struct mm_job j = { .e = e, .n_tok = n_tok, .n_parts = 1 };
    j.part[0] = (struct mm_part){ w, bias, y, ldy, 0, x };
    eng_pool_run(e->pool, mm_run, &j, mm_chunks(&j));
}

struct att_job {
    struct thaw_engine *e;
    int layer;
};

static void att_run(void *arg, int wi, int nw)
{
    struct att_job *j = arg;
    struct thaw_engine *e = j->e;
    const struct thaw_model_config *c = &e->m->cfg;
    int nh = c->n_heads, hd = e->hd, group = c->n_heads / c->n_kv_heads;
    long items = (long)e->n_batch * nh, per = (items + nw - 1) / nw;
    long i0 = wi * per, i1 = i0 + per < items ? i0 + per : items;
    float *sc = e->scores + (size_t)wi * e->ctx;
    float scale = 1.0f / sqrtf((float)hd);
    int window = e->m->sliding_window;
    for (long it = i0; it < i1; it++) {
        int t = (int)(it / nh), h = (int)(it % nh), kvh = h / group;
        const struct eng_btok *bt = &e->batch[t];
        const float *q = e->q + (size_t)t * e->qd + (size_t)h * hd;
        size_t base = ((size_t)bt->slot * c->n_layers + j->layer) * (size_t)e->ctx;
        const float *K = e->kcache + base * e->kvd + (size_t)kvh * hd;
        const float *V = e->vcache + base * e->kvd + (size_t)kvh * hd;
        int p0 = window && bt->pos >= window ? bt->pos - window + 1 : 0;
        eng_attn_head(e->att + (size_t)t * e->qd + (size_t)h * hd, q, K, V, (size_t)e->kvd, p0,
                      bt->pos, hd, scale, sc);
    }
}

struct silu_job {
    float *a;       /* gate in, SiLU(gate) * up out */
    const float *b; /* up */
    size_t n;
};

static void silu_run(void *arg, int wi, int nw)
{
    struct silu_job *j = arg;
    size_t per = (j->n + (size_t)nw - 1) / (size_t)nw, i0 = (size_t)wi * per;
    size_t i1 = i0 + per < j->n ? i0 + per : j->n;
    for (size_t i = i0; i < i1; i++) {
        float a = j->a[i];
        j->a[i] = a / (1.0f + expf(-a)) * j->b[i];
    }
}

/* Rotate one head vector (half-split, as HF's rotate_half) at pos. */
static void rope(float *x, const float *cs, const float *sn, int half)
{
    for (int j = 0; j < half; j++) {
        float a = x[j], b = x[j + half];
        x[j] = a * cs[j] - b * sn[j];
        x[j + half] = b * cs[j] + a * sn[j];
    }
}

/* Run the batch e->batch[0..n_batch); logits rows for tokens that ask. */
static void forward(struct thaw_engine *e)
{
    const struct thaw_model *m = e->m;
    const struct thaw_model_config *c = &m->cfg;
    int N = e->n_batch, H = e->H, I = e->I, half = e->hd / 2;
    for (int t = 0; t < N; t++)
        eng_row_f32(e->x + (size_t)t * H, &m->embed, e->batch[t].tok);
    for (int l = 0; l < c->n_layers; l++) {
        const struct eng_layer *L = &m->layers[l];
        for (int t = 0; t < N; t++)
            eng_rmsnorm(e->xb + (size_t)t * H, e->x + (size_t)t * H, &L->attn_norm, H, c->rms_eps);
        struct mm_job j = { .e = e, .n_tok = N, .n_parts = 3 };
        j.part[0] = (struct mm_part){ &L->q, &L->q_bias, e->q, e->qd, 0, e->xb };
        j.part[1] = (struct mm_part){ &L->k, &L->k_bias, e->k, e->kvd, 0, e->xb };
        j.part[2] = (struct mm_part){ &L->v, &L->v_bias, e->v, e->kvd, 0, e->xb };
        eng_pool_run(e->pool, mm_run, &j, mm_chunks(&j));
        for (int t = 0; t < N; t++) {
            const struct eng_btok *bt = &e->batch[t];
            const float *cs = e->cos_t + (size_t)bt->pos * half, *sn = e->sin_t + (size_t)bt->pos * half;
            for (int h = 0; h < c->n_heads; h++)
                rope(e->q + (size_t)t * e->qd + (size_t)h * e->hd, cs, sn, half);
            for (int h = 0; h < c->n_kv_heads; h++)
                rope(e->k + (size_t)t * e->kvd + (size_t)h * e->hd, cs, sn, half);
            size_t at = (((size_t)bt->slot * c->n_layers + l) * e->ctx + bt->pos) * e->kvd;
            memcpy(e->kcache + at, e->k + (size_t)t * e->kvd, (size_t)e->kvd * sizeof(float));
            memcpy(e->vcache + at, e->v + (size_t)t * e->kvd, (size_t)e->kvd * sizeof(float));
        }
        struct att_job aj = { e, l };
        long items = (long)N * c->n_heads;
        eng_pool_run(e->pool, att_run, &aj, items < MAX_CHUNKS ? (int)items : MAX_CHUNKS);
        matmul(e, N, e->att, &L->o, NULL, e->xb2, H);
        for (size_t i = 0; i < (size_t)N * H; i++)
            e->x[i] += e->xb2[i];
        for (int t = 0; t < N; t++)
            eng_rmsnorm(e->xb + (size_t)t * H, e->x + (size_t)t * H, &L->ffn_norm, H, c->rms_eps);
        struct mm_job g = { .e = e, .n_tok = N, .n_parts = 2 };
        g.part[0] = (struct mm_part){ &L->gate, NULL, e->hb, I, 0, e->xb };
        g.part[1] = (struct mm_part){ &L->up, NULL, e->hb2, I, 0, e->xb };
        eng_pool_run(e->pool, mm_run, &g, mm_chunks(&g));
        struct silu_job sj = { e->hb, e->hb2, (size_t)N * I };
        /* A batch's SiLU (an expf per element) is worth splitting; one token's is not. */
        eng_pool_run(e->pool, silu_run, &sj, N > 1 ? eng_pool_size(e->pool) : 1);
        matmul(e, N, e->hb, &L->down, NULL, e->xb2, H);
        for (size_t i = 0; i < (size_t)N * H; i++)
            e->x[i] += e->xb2[i];
    }
    /* Final norm of the rows that want logits, packed by logit row. */
    int nl = 0;
    for (int t = 0; t < N; t++) {
        int r = e->batch[t].logit_row;
        if (r < 0)
            continue;
        eng_rmsnorm(e->xb + (size_t)r * H, e->x + (size_t)t * H, &m->norm, H, c->rms_eps);
        if (r + 1 > nl)
            nl = r + 1;
    }
    if (nl)
        matmul(e, nl, e->xb, &m->lm_head, NULL, e->logits, e->V);
}

/* One forward pass of e->batch on the engine's backend. */
static int run_forward(struct thaw_engine *e)
{
    if (e->cuda)
        return eng_cuda_forward(e->cuda, e->batch, e->n_batch);
    forward(e);
    return 0;
}

const char *thaw_engine_backend_name(const struct thaw_engine *e)
{
    return e->cuda ? eng_cuda_name(e->cuda) : "cpu";
}

/* ---------------------------------------------------------------- sequences */

static int seq_push(struct seq *s, int32_t t)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        int32_t *p = thaw_realloc(s->tokens, nc * sizeof *p);
        if (!p)
            return -ENOMEM;
        s->tokens = p;
        s->cap = nc;
    }
    s->tokens[s->n++] = t;
    return 0;
}

static int check_ids(const struct thaw_engine *e, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->V)
            return THAW_FAIL(THAW_EINVAL, "token id %d at position %zu is outside the "
                             "vocabulary (0..%d)", ids[i], i, e->V - 1);
    return 0;
}

static int seq_new(struct thaw_engine *e, const int32_t *tokens, size_t n, size_t n_prompt,
                   const struct thaw_seq_params *p, struct seq **out)
{
    *out = NULL;
    if (n == 0)
        return THAW_FAIL(THAW_EINVAL, "empty prompt");
    if (n + 1 > (size_t)e->ctx)
        return THAW_FAIL(THAW_ELIMIT, "prompt of %zu tokens does not fit the context of %d "
                         "tokens (at least one must be left to generate)", n, e->ctx);
    int rc = check_ids(e, tokens, n);
    if (rc)
        return rc;
    if ((rc = check_ids(e, p->stop_ids, p->stop_ids ? p->n_stop_ids : 0)))
        return rc;
    if ((rc = thaw_sampling_validate(&p->sampling)))
        return rc;
    if (e->n_queue >= QUEUE_MAX)
        return THAW_FAIL(THAW_ELIMIT, "engine queue is full (%d sequences)", QUEUE_MAX);
    struct seq *s = thaw_calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cap = n + 64;
    s->tokens = thaw_malloc(s->cap * sizeof *s->tokens);
    s->n_stop = p->stop_ids ? p->n_stop_ids : 0;
    s->stop = thaw_malloc((s->n_stop ? s->n_stop : 1) * sizeof *s->stop);
    if (!s->tokens || !s->stop) {
        seq_free(s);
        return -ENOMEM;
    }
    memcpy(s->tokens, tokens, n * sizeof *tokens);
    if (s->n_stop)
        memcpy(s->stop, p->stop_ids, s->n_stop * sizeof *s->stop);
    s->n = n;
    s->n_prompt = n_prompt;
    s->max_tokens = p->max_tokens;
    s->sampling = p->sampling;
    s->logprobs = p->logprobs;
    s->slot = -1;
    s->id = e->next_id++;
    eng_rng_seed(&s->rng, p->sampling.seed);
    *out = s;
    return 0;
}

int thaw_engine_submit(struct thaw_engine *e, const int32_t *prompt, size_t n,
                       const struct thaw_seq_params *p, uint64_t *seq)
{
    struct seq *s;
    int rc = seq_new(e, prompt, n, n, p, &s);
    if (rc)
        return rc;
    e->queue[e->n_queue++] = s;
    *seq = s->id;
    return 0;
}

static struct seq *find(struct thaw_engine *e, uint64_t id, size_t *qi)
{
    for (int i = 0; i < e->max_seqs; i++)
        if (e->slots[i] && e->slots[i]->id == id)
            return e->slots[i];
    for (size_t i = 0; i < e->n_queue; i++) {
        if (e->queue[i]->id == id) {
            if (qi)
                *qi = i;
            return e->queue[i];
        }
    }
    return NULL;
}

int thaw_engine_cancel(struct thaw_engine *e, uint64_t id)
{
    struct seq *s = find(e, id, NULL);
    if (!s || s->cancel)
        return THAW_FAIL(THAW_ENOTFOUND, "sequence %llu is not running", (unsigned long long)id);
    s->cancel = 1;
    return 0;
}

size_t thaw_engine_active(const struct thaw_engine *e)
{
    size_t n = e->n_queue;
    for (int i = 0; i < e->max_seqs; i++)
        n += e->slots[i] != NULL;
    return n;
}

static int emit(struct thaw_engine *e, uint64_t id, int32_t tok, float lp, enum thaw_finish f)
{
    if (e->n_events == e->cap_events) {
        size_t nc = e->cap_events ? e->cap_events * 2 : 16;
        struct thaw_event *p = thaw_realloc(e->events, nc * sizeof *p);
        if (!p)
            return -ENOMEM;
        e->events = p;
        e->cap_events = nc;
    }
    e->events[e->n_events++] = (struct thaw_event){ id, tok, lp, f };
    return 0;
}

int thaw_engine_step(struct thaw_engine *e, const struct thaw_event **ev, size_t *n_ev)
{
    e->n_events = 0;
    *ev = NULL;
    *n_ev = 0;
    int rc;
    /* Cancellations, queued ones included. */
    for (size_t i = 0; i < e->n_queue;) {
        struct seq *s = e->queue[i];
        if (s->cancel) {
            if ((rc = emit(e, s->id, -1, 0, THAW_FINISH_CANCEL)))
                return rc;
            seq_free(s);
            memmove(&e->queue[i], &e->queue[i + 1], (e->n_queue - i - 1) * sizeof *e->queue);
            e->n_queue--;
        } else {
            i++;
        }
    }
    for (int i = 0; i < e->max_seqs; i++) {
        struct seq *s = e->slots[i];
        if (s && s->cancel) {
            if ((rc = emit(e, s->id, -1, 0, THAW_FINISH_CANCEL)))
                return rc;
            seq_free(s);
            e->slots[i] = NULL;
        }
    }
    /* Admit queued sequences, first come first served. */
    for (int i = 0; i < e->max_seqs && e->n_queue; i++) {
        if (e->slots[i])
            continue;
        struct seq *s = e->queue[0];
        memmove(&e->queue[0], &e->queue[1], (e->n_queue - 1) * sizeof *e->queue);
        e->n_queue--;
        s->slot = i;
        e->slots[i] = s;
    }
    /* Batch: decoding sequences first (one token each), then prompt chunks
     * within the token budget. */
    int N = 0, nl = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->max_seqs; i++) {
            struct seq *s = e->slots[i];
            if (!s)
                continue;
            size_t left = s->n - s->n_cached;
            if ((pass == 0) != (left == 1) || left == 0)
                continue;
            size_t take = left < (size_t)e->chunk ? left : (size_t)e->chunk;
            if (take > (size_t)(e->max_tok - N))
                take = (size_t)(e->max_tok - N);
            for (size_t k = 0; k < take; k++) {
                size_t pos = s->n_cached + k;
                e->batch[N++] = (struct eng_btok){ s->tokens[pos], (int)pos, i, -1 };
            }
            s->n_cached += take;
            if (take && s->n_cached == s->n)
                e->batch[N - 1].logit_row = nl++;
        }
    }
    e->n_batch = N;
    /* A failed GPU pass leaves this step's sequences unusable (their tokens
     * counted as cached); the caller treats it as fatal for the engine. */
    if (N && (rc = run_forward(e)))
        return rc;
    /* Sample for every sequence that got logits. */
    for (int t = 0; t < N; t++) {
        int r = e->batch[t].logit_row;
        if (r < 0)
            continue;
        struct seq *s = e->slots[e->batch[t].slot];
        int32_t tok;
        float lp = 0;
        rc = eng_sample(&s->sampling, e->logits + (size_t)r * e->V, e->V, s->tokens, s->n,
                        s->n_prompt, &s->rng, &e->sbuf, &tok, s->logprobs ? &lp : NULL);
        if (!rc)
            rc = seq_push(s, tok);
        if (rc)
            return rc;
        s->n_gen++;
        enum thaw_finish f = THAW_FINISH_NONE;
        for (size_t k = 0; k < s->n_stop; k++)
            if (s->stop[k] == tok)
                f = THAW_FINISH_STOP;
        if (!f && ((s->max_tokens && s->n_gen >= s->max_tokens) || s->n >= (size_t)e->ctx))
            f = THAW_FINISH_LENGTH;
        if ((rc = emit(e, s->id, tok, s->logprobs ? lp : 0, f)))
            return rc;
        if (f) {
            e->slots[s->slot] = NULL;
            seq_free(s);
        }
    }
    *ev = e->events;
    *n_ev = e->n_events;
    return 0;
}

int thaw_engine_logits(struct thaw_engine *e, const int32_t *ids, size_t n, float *out)
{
    if (n == 0)
        return THAW_FAIL(THAW_EINVAL, "no ids");
    if (n > (size_t)e->ctx)
        return THAW_FAIL(THAW_ELIMIT, "%zu ids do not fit the context of %d tokens", n, e->ctx);
    int rc = check_ids(e, ids, n);
    if (rc)
        return rc;
    int slot = -1;
    for (int i = 0; i < e->max_seqs && slot < 0; i++)
        if (!e->slots[i])
            slot = i;
    if (slot < 0)
        return THAW_FAIL(THAW_ELIMIT, "no free sequence slot");
    size_t step = (size_t)(e->max_logit_rows < e->max_tok ? e->max_logit_rows : e->max_tok);
    for (size_t at = 0; at < n; at += step) {
        size_t k = n - at < step ? n - at : step;
        for (size_t i = 0; i < k; i++)
            e->batch[i] = (struct eng_btok){ ids[at + i], (int)(at + i), slot, (int)i };
        e->n_batch = (int)k;
        if ((rc = run_forward(e)))
            return rc;
        memcpy(out + at * e->V, e->logits, k * e->V * sizeof(float));
    }
    return 0;
}

/* ---------------------------------------------------------------- migration */

int thaw_engine_export(struct thaw_engine *e, uint64_t id, char **json)
{
    *json = NULL;
    struct seq *s = find(e, id, NULL);
    if (!s)
        return THAW_FAIL(THAW_ENOTFOUND, "sequence %llu is not running", (unsigned long long)id);
    json_t *o = json_object(), *toks = json_array(), *stop = json_array(), *rng = json_array();
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(toks, json_integer(s->tokens[i]));
    for (size_t i = 0; i < s->n_stop; i++)
        json_array_append_new(stop, json_integer(s->stop[i]));
    for (int i = 0; i < 4; i++) {
        char hex[24];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)s->rng.s[i]);
        json_array_append_new(rng, json_string(hex));
    }
    const struct thaw_sampling *sp = &s->sampling;
    json_t *samp = json_pack("{s:f, s:i, s:f, s:f, s:f, s:f, s:f, s:I}", "temperature",
                             (double)sp->temperature, "top_k", sp->top_k, "top_p",
                             (double)sp->top_p, "min_p", (double)sp->min_p, "presence_penalty",
                             (double)sp->presence_penalty, "frequency_penalty",
                             (double)sp->frequency_penalty, "repetition_penalty",
                             (double)sp->repetition_penalty, "seed", (json_int_t)sp->seed);
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "tokens", toks);
    json_object_set_new(o, "n_prompt", json_integer((json_int_t)s->n_prompt));
    json_object_set_new(o, "n_generated", json_integer(s->n_gen));
    json_object_set_new(o, "max_tokens", json_integer(s->max_tokens));
    json_object_set_new(o, "stop_ids", stop);
    json_object_set_new(o, "logprobs", json_boolean(s->logprobs));
    json_object_set_new(o, "sampling", samp);
    json_object_set_new(o, "rng", rng);
    *json = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return *json ? 0 : -ENOMEM;
}

static int jnum(json_t *o, const char *k, double *v)
{
    json_t *x = json_object_get(o, k);
    if (!json_is_number(x))
        return THAW_FAIL(THAW_EFORMAT, "sequence state: \"%s\" must be a number", k);
    *v = json_number_value(x);
    return 0;
}

int thaw_engine_import(struct thaw_engine *e, const char *text, size_t len, uint64_t *id)
{
    json_error_t jerr;
    json_t *o = json_loadb(text, len, 0, &jerr);
    if (!o)
        return THAW_FAIL(THAW_EFORMAT, "sequence state: %s", jerr.text);
    int rc = 0;
    int32_t *toks = NULL, *stop = NULL;
    json_t *jt = json_object_get(o, "tokens"), *js = json_object_get(o, "stop_ids"),
           *jr = json_object_get(o, "rng"), *samp = json_object_get(o, "sampling");
    json_t *np = json_object_get(o, "n_prompt"), *ng = json_object_get(o, "n_generated"),
           *mt = json_object_get(o, "max_tokens");
    if (!json_is_integer(json_object_get(o, "version")) ||
        json_integer_value(json_object_get(o, "version")) != 1 || !json_is_array(jt) ||
        !json_array_size(jt) || !json_is_array(js) || !json_is_array(jr) ||
        json_array_size(jr) != 4 || !json_is_object(samp) || !json_is_integer(np) ||
        !json_is_integer(ng) || !json_is_integer(mt)) {
        rc = THAW_FAIL(THAW_EFORMAT, "sequence state: needs version 1, tokens, n_prompt, "
                       "n_generated, max_tokens, stop_ids, sampling and rng[4]");
        goto out;
    }
    size_t n = json_array_size(jt), ns = json_array_size(js);
    toks = thaw_malloc(n * sizeof *toks);
    stop = thaw_malloc((ns ? ns : 1) * sizeof *stop);
    if (!toks || !stop) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(jt, i);
        if (!json_is_integer(v)) {
            rc = THAW_FAIL(THAW_EFORMAT, "sequence state: tokens[%zu] is not an integer", i);
            goto out;
        }
        toks[i] = (int32_t)json_integer_value(v);
    }
    for (size_t i = 0; i < ns; i++)
        stop[i] = (int32_t)json_integer_value(json_array_get(js, i));
    struct thaw_seq_params p = { .stop_ids = stop, .n_stop_ids = ns,
                                 .max_tokens = (uint32_t)json_integer_value(mt),
                                 .logprobs = json_is_true(json_object_get(o, "logprobs")) };
    double d;
    thaw_sampling_defaults(&p.sampling);
    if ((rc = jnum(samp, "temperature", &d)))
        goto out;
    p.sampling.temperature = (float)d;
    if ((rc = jnum(samp, "top_p", &d)))
        goto out;
    p.sampling.top_p = (float)d;
    if ((rc = jnum(samp, "min_p", &d)))
        goto out;
    p.sampling.min_p = (float)d;
    if ((rc = jnum(samp, "presence_penalty", &d)))
        goto out;
    p.sampling.presence_penalty = (float)d;
    if ((rc = jnum(samp, "frequency_penalty", &d)))
        goto out;
    p.sampling.frequency_penalty = (float)d;
    if ((rc = jnum(samp, "repetition_penalty", &d)))
        goto out;
    p.sampling.repetition_penalty = (float)d;
    if ((rc = jnum(samp, "top_k", &d)))
        goto out;
    p.sampling.top_k = (int)d;
    json_int_t np_v = json_integer_value(np), ng_v = json_integer_value(ng);
    if (np_v < 1 || (size_t)np_v > n || ng_v < 0 || (size_t)(np_v + ng_v) != n) {
        rc = THAW_FAIL(THAW_EFORMAT, "sequence state: n_prompt + n_generated must equal the "
                       "number of tokens");
        goto out;
    }
    struct seq *s;
    if ((rc = seq_new(e, toks, n, (size_t)np_v, &p, &s)))
        goto out;
    for (int i = 0; i < 4; i++) {
        json_t *h = json_array_get(jr, (size_t)i);
        const char *hs = json_is_string(h) ? json_string_value(h) : "";
        char *end;
        unsigned long long v = strtoull(hs, &end, 16);
        if (!*hs || *end || strlen(hs) > 16) {
            seq_free(s);
            rc = THAW_FAIL(THAW_EFORMAT, "sequence state: rng[%d] must be 16 hex digits", i);
            goto out;
        }
        s->rng.s[i] = v;
    }
    s->n_gen = (uint32_t)ng_v;
    if (s->max_tokens && s->n_gen >= s->max_tokens) {
        seq_free(s);
        rc = THAW_FAIL(THAW_EINVAL, "sequence state: already generated max_tokens");
        goto out;
    }
    e->queue[e->n_queue++] = s;
    *id = s->id;
out:
    thaw_free(toks);
    thaw_free(stop);
    json_decref(o);
    return rc;
}
