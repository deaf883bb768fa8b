/*
 * sim_trace.c - workloads for the simulator, built from the public traces
 * under <shared>/data/traces (see its README.md): the Azure LLM inference
 * traces of 2023 (real arrivals and token counts; the model of each request
 * is drawn from a Zipf popularity), the Azure Functions 2019 sample (each
 * function hashed to a model, its per-minute counts thinned to a target rate
 * and spread uniformly inside the minute; lengths from ShareGPT or GSM8K),
 * and a synthetic Poisson workload for tests.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sim.h"

#define DEF_MODELS 64
#define DEF_ZIPF 1.0
#define DEF_FN_RPS 4.0
#define MAX_LINE 16384

int thaw_sched_sim_workload_alloc(size_t n_models, size_t n_reqs,
                                  struct thaw_sched_sim_workload **out)
{
    struct thaw_sched_sim_workload *w = thaw_calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->n_models = n_models;
    w->n_reqs = n_reqs;
    w->models = thaw_calloc(n_models ? n_models : 1, sizeof *w->models);
    w->reqs = thaw_calloc(n_reqs ? n_reqs : 1, sizeof *w->reqs);
    if (!w->models || !w->reqs) {
        thaw_sched_sim_workload_free(w);
        return -ENOMEM;
    }
    *out = w;
    return 0;
}

void thaw_sched_sim_workload_free(struct thaw_sched_sim_workload *w)
{
    if (!w)
        return;
    thaw_free(w->models);
    thaw_free(w->reqs);
    thaw_free(w);
}

/* ------------------------------------------------------------- helpers */

struct rng {
    uint64_t s;
};

static uint64_t rnext(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double runit(struct rng *r)
{
    return ((double)(rnext(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* A growable array of requests. */
struct reqvec {
    struct thaw_sched_sim_request *v;
    size_t n, cap;
};

static int reqvec_push(struct reqvec *rv, const struct thaw_sched_sim_request *q)
{
    if (rv->n == rv->cap) {
        size_t cap = rv->cap ? 2 * rv->cap : 4096;
        struct thaw_sched_sim_request *v = thaw_realloc(rv->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        rv->v = v;
        rv->cap = cap;
    }
    rv->v[rv->n++] = *q;
    return 0;
}

/* Length pairs (input, output tokens) to draw from. */
struct lengths {
    uint32_t *in, *out;
    size_t n;
};

static void lengths_free(struct lengths *l)
{
    thaw_free(l->in);
    thaw_free(l->out);
    l->in = l->out = NULL;
    l->n = 0;
}

static int lengths_push(struct lengths *l, size_t *cap, uint32_t in, uint32_t out)
{
    if (l->n == *cap) {
        size_t c = *cap ? 2 * *cap : 4096;
        uint32_t *a = thaw_realloc(l->in, c * sizeof *a);
        if (!a)
            return -ENOMEM;
        l->in = a;
        uint32_t *b = thaw_realloc(l->out, c * sizeof *b);
        if (!b)
            return -ENOMEM;
        l->out = b;
        *cap = c;
    }
    l->in[l->n] = in;
    l->out[l->n] = out;
    l->n++;
    return 0;
}

static FILE *open_trace(const char *shared, const char *rel, char *path, size_t cap)
{
    snprintf(path, cap, "%s/data/traces/%s", shared, rel);
    return fopen(path, "r");
}

/* The n-th comma-separated field of line (0-based), or NULL. */
static const char *field(const char *line, int n)
{
    const char *p = line;
    for (int i = 0; i < n; i++) {
        p = strchr(p, ',');
        if (!p)
            return NULL;
        p++;
    }
    return p;
}

/*
 * Token lengths: ShareGPT (LLaMA-2 token counts from Vidur/Sarathi) or
 * GSM8K (words, converted like ServerlessLLM's replay: prompt = 1.3 tokens
 * per question word, max_tokens = answer words), or a fixed 512/128.
 */
static int lengths_load(const char *shared, const char *which, struct lengths *l)
{
    size_t cap = 0;
    if (!which || strcmp(which, "fixed") == 0)
        return lengths_push(l, &cap, 512, 128);
    int gsm = strcmp(which, "gsm8k") == 0;
    if (!gsm && strcmp(which, "sharegpt") != 0)
        return THAW_FAIL(THAW_EINVAL, "simulate: unknown lengths '%s' (sharegpt|gsm8k|fixed)",
                         which);
    char path[4096];
    FILE *f = open_trace(shared,
                         gsm ? "gsm8k/gsm8k_lengths.csv"
                             : "sharegpt/sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
                         path, sizeof path);
    if (!f)
        return THAW_FAIL(-errno, "simulate: cannot open %s", path);
    char line[MAX_LINE];
    int rc = 0;
    if (!fgets(line, sizeof line, f)) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: empty", path);
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        uint32_t in, out;
        if (gsm) {
            /* split,idx,question_words,question_chars,answer_words,... */
            const char *qw = field(line, 2), *aw = field(line, 4);
            if (!qw || !aw)
                continue;
            in = (uint32_t)(1.3 * strtod(qw, NULL) + 0.5);
            out = (uint32_t)strtoul(aw, NULL, 10);
        } else {
            const char *dc = field(line, 1);
            if (!dc)
                continue;
            in = (uint32_t)strtoul(line, NULL, 10);
            out = (uint32_t)strtoul(dc, NULL, 10);
        }
        if (in == 0)
            in = 1;
        if (out == 0)
            out = 1;
        rc = lengths_push(l, &cap, in, out);
        if (rc < 0)
            goto out;
    }
    if (l->n == 0)
        rc = THAW_FAIL(THAW_EFORMAT, "%s: no rows", path);
out:
    fclose(f);
    return rc;
}

/* Zipf(s) over n items: the cumulative distribution, item 0 most popular. */
static int zipf_cdf(size_t n, double s, double **out)
{
    double *c = thaw_malloc(n * sizeof *c);
    if (!c)
        return -ENOMEM;
    double acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += 1.0 / pow((double)(i + 1), s);
        c[i] = acc;
    }
    for (size_t i = 0; i < n; i++)
        c[i] /= acc;
    *out = c;
    return 0;
}

static uint32_t zipf_draw(const double *cdf, size_t n, struct rng *r)
{
    double u = runit(r);
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (uint32_t)lo;
}

/* Seconds since 1970 of "YYYY-MM-DD HH:MM:SS.fffffff" (UTC), or NAN. */
static double parse_ts(const char *s)
{
    int y, mo, d, h, mi;
    double sec;
    if (sscanf(s, "%d-%d-%d %d:%d:%lf", &y, &mo, &d, &h, &mi, &sec) != 6)
        return NAN;
    /* Days from civil (H. Hinnant). */
    y -= mo <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    double days = (double)era * 146097 + doe - 719468;
    return days * 86400.0 + h * 3600.0 + mi * 60.0 + sec;
}

static int cmp_arrival(const void *a, const void *b)
{
    const struct thaw_sched_sim_request *x = a, *y = b;
    if (x->arrival_s != y->arrival_s)
        return (x->arrival_s > y->arrival_s) - (x->arrival_s < y->arrival_s);
    return (x->model > y->model) - (x->model < y->model);
}

/* ------------------------------------------------------------- traces */

static int load_azure_llm(const struct thaw_sched_sim_trace_opts *o, const char *file,
                          size_t n_models, struct rng *r, struct reqvec *rv)
{
    double *cdf = NULL;
    char path[4096];
    FILE *f = open_trace(o->shared_dir, file, path, sizeof path);
    if (!f)
        return THAW_FAIL(-errno, "simulate: cannot open %s", path);
    int rc = zipf_cdf(n_models, o->zipf_s > 0 ? o->zipf_s : DEF_ZIPF, &cdf);
    if (rc < 0)
        goto out;
    char line[MAX_LINE];
    double t0 = NAN;
    if (!fgets(line, sizeof line, f)) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: empty", path);
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        /* TIMESTAMP,ContextTokens,GeneratedTokens */
        const char *ctx = field(line, 1), *gen = field(line, 2);
        double t = parse_ts(line);
        if (!ctx || !gen || isnan(t))
            continue;
        if (isnan(t0))
            t0 = t;
        struct thaw_sched_sim_request q = {
            .arrival_s = t - t0,
            .model = zipf_draw(cdf, n_models, r),
            .in_tokens = (uint32_t)strtoul(ctx, NULL, 10),
            .out_tokens = (uint32_t)strtoul(gen, NULL, 10),
        };
        if (q.out_tokens == 0)
            q.out_tokens = 1;
        if (o->minutes > 0 && q.arrival_s >= o->minutes * 60)
            break;
        rc = reqvec_push(rv, &q);
        if (rc < 0)
            goto out;
    }
    if (rv->n == 0)
        rc = THAW_FAIL(THAW_EFORMAT, "%s: no requests", path);
out:
    thaw_free(cdf);
    fclose(f);
    return rc;
}

/* FNV-1a of a string up to a comma. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s && *s != ',' && *s != '\n'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static int load_azure_fn(const struct thaw_sched_sim_trace_opts *o, size_t n_models,
                         const struct lengths *len, struct rng *r, struct reqvec *rv)
{
    char rel[128], path[4096];
    snprintf(rel, sizeof rel, "azure_functions_2019_invitro_samples/%d/invocations.csv",
             o->fn_sample == 100 ? 100 : 500);
    char *line = thaw_malloc(MAX_LINE * 4);
    if (!line)
        return -ENOMEM;
    FILE *f = open_trace(o->shared_dir, rel, path, sizeof path);
    if (!f) {
        thaw_free(line);
        return THAW_FAIL(-errno, "simulate: cannot open %s", path);
    }
    int rc = 0;
    /* Two passes: the total sets the thinning probability. */
    double total = 0;
    int n_min = 0;
    if (!fgets(line, MAX_LINE * 4, f)) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: empty", path);
        goto out;
    }
    for (const char *p = field(line, 4); p; p = strchr(p, ','), p = p ? p + 1 : NULL)
        n_min++;
    int keep_min = n_min;
    if (o->minutes > 0 && o->minutes < n_min)
        keep_min = (int)o->minutes;
    while (fgets(line, MAX_LINE * 4, f)) {
        const char *p = field(line, 4);
        for (int i = 0; p && i < keep_min; i++) {
            total += strtod(p, NULL);
            p = strchr(p, ',');
            p = p ? p + 1 : NULL;
        }
    }
    double rps = o->fn_rps > 0 ? o->fn_rps : DEF_FN_RPS;
    double keep = total > 0 ? rps * keep_min * 60.0 / total : 0;
    if (keep > 1)
        keep = 1;
    rewind(f);
    if (!fgets(line, MAX_LINE * 4, f)) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: short read", path);
        goto out;
    }
    while (fgets(line, MAX_LINE * 4, f)) {
        /* HashOwner,HashApp,HashFunction,Trigger,480,481,... */
        const char *fn = field(line, 2);
        const char *p = field(line, 4);
        if (!fn || !p)
            continue;
        uint32_t model = (uint32_t)(fnv1a(fn) % n_models);
        for (int i = 0; p && i < keep_min; i++) {
            long c = strtol(p, NULL, 10);
            for (long k = 0; k < c; k++) {
                if (runit(r) >= keep)
                    continue;
                size_t j = (size_t)(rnext(r) % len->n);
                struct thaw_sched_sim_request q = {
                    .arrival_s = (i + runit(r)) * 60.0,
                    .model = model,
                    .in_tokens = len->in[j],
                    .out_tokens = len->out[j],
                };
                rc = reqvec_push(rv, &q);
                if (rc < 0)
                    goto out;
            }
            p = strchr(p, ',');
            p = p ? p + 1 : NULL;
        }
    }
    if (rv->n == 0)
        rc = THAW_FAIL(THAW_EFORMAT, "%s: no requests kept", path);
out:
    fclose(f);
    thaw_free(line);
    return rc;
}

static int load_synthetic(const struct thaw_sched_sim_trace_opts *o, size_t n_models,
                          const struct lengths *len, struct rng *r, struct reqvec *rv)
{
    double *cdf = NULL;
    int rc = zipf_cdf(n_models, o->zipf_s > 0 ? o->zipf_s : DEF_ZIPF, &cdf);
    if (rc < 0)
        return rc;
    double rps = o->synth_rps > 0 ? o->synth_rps : 2.0;
    double end = (o->minutes > 0 ? o->minutes : 10) * 60.0;
    for (double t = -log(runit(r)) / rps; t < end; t += -log(runit(r)) / rps) {
        size_t j = (size_t)(rnext(r) % len->n);
        struct thaw_sched_sim_request q = {
            .arrival_s = t,
            .model = zipf_draw(cdf, n_models, r),
            .in_tokens = len->in[j],
            .out_tokens = len->out[j],
        };
        rc = reqvec_push(rv, &q);
        if (rc < 0)
            break;
    }
    thaw_free(cdf);
    return rc;
}

int thaw_sched_sim_workload_load(const struct thaw_sched_sim_trace_opts *o,
                                 struct thaw_sched_sim_workload **out)
{
    const char *trace = o->trace ? o->trace : "azure-conv";
    size_t n_models = o->n_models ? o->n_models : DEF_MODELS;
    struct rng r = { o->seed * 0x2545f4914f6cdd1dull + 1 };
    struct reqvec rv = { 0 };
    struct lengths len = { 0 };
    struct thaw_sched_sim_workload *w = NULL;
    int rc;
    int is_llm = strcmp(trace, "azure-code") == 0 || strcmp(trace, "azure-conv") == 0;
    int is_fn = strcmp(trace, "azure-fn") == 0;
    int is_syn = strcmp(trace, "synthetic") == 0;
    if (!is_llm && !is_fn && !is_syn)
        return THAW_FAIL(THAW_EINVAL,
                         "simulate: unknown trace '%s' (azure-code|azure-conv|azure-fn|synthetic)",
                         trace);
    if (!is_syn && !o->shared_dir)
        return THAW_FAIL(THAW_EINVAL, "simulate: no shared directory for the traces");
    if (!is_llm) {
        rc = lengths_load(o->shared_dir, o->lengths ? o->lengths : (is_syn ? "fixed" : "sharegpt"),
                          &len);
        if (rc < 0)
            goto out;
    }
    if (is_llm)
        rc = load_azure_llm(o,
                            strcmp(trace, "azure-code") == 0
                                ? "azure_llm_2023/AzureLLMInferenceTrace_code.csv"
                                : "azure_llm_2023/AzureLLMInferenceTrace_conv.csv",
                            n_models, &r, &rv);
    else if (is_fn)
        rc = load_azure_fn(o, n_models, &len, &r, &rv);
    else
        rc = load_synthetic(o, n_models, &len, &r, &rv);
    if (rc < 0)
        goto out;
    qsort(rv.v, rv.n, sizeof rv.v[0], cmp_arrival);
    rc = thaw_sched_sim_workload_alloc(n_models, 0, &w);
    if (rc < 0)
        goto out;
    thaw_free(w->reqs);
    w->reqs = rv.v;
    w->n_reqs = rv.n;
    rv.v = NULL;
    w->duration_s = w->n_reqs ? w->reqs[w->n_reqs - 1].arrival_s : 0;
    snprintf(w->name, sizeof w->name, "%s", trace);
    thaw_sched_sim_models_default(w->models, n_models, o->gpu_bytes);
    *out = w;
out:
    thaw_free(rv.v);
    lengths_free(&len);
    return rc;
}
