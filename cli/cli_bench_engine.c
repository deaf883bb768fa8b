/*
 * cli_bench_engine.c - `thaw bench engine CKPT`: decode and prefill speed of
 * the CPU engine against the limits of this machine measured in the same
 * run: memory read bandwidth (decode reads every weight once per step) and
 * the FMA rate of all cores (prefill is compute bound). With --device cuda
 * the checkpoint is loaded into GPU memory and the CUDA backend is timed;
 * the rate at which it streams the weights (weight bytes x tok/s) is
 * reported for comparison with the GPU's HBM bandwidth (bench/gpu/run.sh
 * measures that separately).
 */
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_int.h"
#include "engine/thaw_engine.h"
#include "loader/thaw_loader.h"

struct probe {
    const float *buf;
    size_t n;
    long iters;
    double sum;
    pthread_barrier_t *bar;
};

__attribute__((target("avx2,fma"))) static void *read_worker(void *v)
{
    struct probe *p = v;
    pthread_barrier_wait(p->bar);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 32 <= p->n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p->buf + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p->buf + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p->buf + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p->buf + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    p->sum = t[0] + t[7];
    return NULL;
}

__attribute__((target("avx2,fma"))) static void *fma_worker(void *v)
{
    struct probe *p = v;
    pthread_barrier_wait(p->bar);
    __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    /* Ten independent chains cover the FMA latency on two ports. */
    __m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1), a2 = _mm256_set1_ps(2),
           a3 = _mm256_set1_ps(3), a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5),
           a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7), a8 = _mm256_set1_ps(8),
           a9 = _mm256_set1_ps(9);
    for (long i = 0; i < p->iters; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c);
        a1 = _mm256_fmadd_ps(a1, m, c);
        a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c);
        a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c);
        a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(a8, a9));
    float t[8];
    _mm256_storeu_ps(t, s);
    p->sum = t[0];
    return NULL;
}

/* Run fn on n threads at once; returns the wall time. */
static double run_threads(int n, void *(*fn)(void *), struct probe *pr)
{
    pthread_t th[256];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        pr[i].bar = &bar;
        pthread_create(&th[i], NULL, fn, &pr[i]);
    }
    pthread_barrier_wait(&bar);
    double t0 = thaw_now_s();
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double t = thaw_now_s() - t0;
    pthread_barrier_destroy(&bar);
    return t;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median GB/s of reading a 1 GiB buffer with n threads. */
static double mem_bandwidth(int n)
{
    size_t bytes = (size_t)1 << 30, nf = bytes / sizeof(float);
    float *buf = thaw_malloc_aligned(4096, bytes);
    if (!buf)
        return 0;
    for (size_t i = 0; i < nf; i++)
        buf[i] = (float)(i & 1023);
    struct probe pr[256];
    double r[7];
    size_t per = nf / (size_t)n / 32 * 32;
    for (int rep = 0; rep < 7; rep++) {
        for (int i = 0; i < n; i++)
            pr[i] = (struct probe){ .buf = buf + (size_t)i * per, .n = per };
        r[rep] = (double)per * n * sizeof(float) / run_threads(n, read_worker, pr) / 1e9;
    }
    thaw_free_aligned(buf);
    qsort(r, 7, sizeof r[0], cmp_d);
    return r[3];
}

/* Median GFLOP/s of FMAs in registers (2 flops per lane) on n threads. */
static double fma_rate(int n)
{
    struct probe pr[256];
    double r[5];
    long iters = 20 * 1000 * 1000;
    for (int rep = 0; rep < 5; rep++) {
        for (int i = 0; i < n; i++)
            pr[i] = (struct probe){ .iters = iters };
        r[rep] = (double)iters * 10 * 8 * 2 * n / run_threads(n, fma_worker, pr) / 1e9;
    }
    qsort(r, 5, sizeof r[0], cmp_d);
    return r[2];
}

/* Decode n_seqs sequences of `tokens` tokens together; tokens/s after the
 * prefill step. */
static int decode_rate(struct thaw_model *m, const struct thaw_engine_opts *base, int n_seqs,
                       int tokens, double *tps)
{
    struct thaw_engine_opts o = *base;
    o.max_seqs = (uint32_t)n_seqs;
    o.ctx = (uint32_t)tokens + 64;
    struct thaw_engine *e;
    int rc = thaw_engine_create(m, &o, &e);
    if (rc)
        return rc;
    int V = thaw_model_config(m)->vocab;
    for (int s = 0; s < n_seqs; s++) {
        int32_t prompt[16];
        for (int i = 0; i < 16; i++)
            prompt[i] = (s * 31 + i * 7 + 1) % V;
        struct thaw_seq_params p = { .max_tokens = (uint32_t)tokens };
        thaw_sampling_defaults(&p.sampling);
        uint64_t id;
        if ((rc = thaw_engine_submit(e, prompt, 16, &p, &id)))
            goto out;
    }
    const struct thaw_event *ev;
    size_t nev;
    if ((rc = thaw_engine_step(e, &ev, &nev))) /* prefill + first tokens */
        goto out;
    long produced = 0;
    double t0 = thaw_now_s();
    while (thaw_engine_active(e)) {
        if ((rc = thaw_engine_step(e, &ev, &nev)))
            goto out;
        produced += (long)nev;
    }
    *tps = (double)produced / (thaw_now_s() - t0);
out:
    thaw_engine_destroy(e);
    return rc;
}

static int prefill_rate(struct thaw_model *m, const struct thaw_engine_opts *base, int n,
                        double *tps)
{
    struct thaw_engine_opts o = *base;
    o.max_seqs = 1;
    o.ctx = (uint32_t)n + 8;
    o.prefill_chunk = (uint32_t)n;
    struct thaw_engine *e;
    int rc = thaw_engine_create(m, &o, &e);
    if (rc)
        return rc;
    int32_t *ids = thaw_malloc((size_t)n * sizeof *ids);
    if (!ids) {
        thaw_engine_destroy(e);
        return -ENOMEM;
    }
    int V = thaw_model_config(m)->vocab;
    for (int i = 0; i < n; i++)
        ids[i] = (i * 7919 + 3) % V;
    double best = 0;
    for (int rep = 0; rep < 3 && !rc; rep++) {
        struct thaw_seq_params p = { .max_tokens = 1 };
        thaw_sampling_defaults(&p.sampling);
        uint64_t id;
        const struct thaw_event *ev;
        size_t nev;
        double t0 = thaw_now_s();
        rc = thaw_engine_submit(e, ids, (size_t)n, &p, &id);
        while (!rc && thaw_engine_active(e))
            rc = thaw_engine_step(e, &ev, &nev);
        double r = n / (thaw_now_s() - t0);
        if (r > best)
            best = r;
    }
    *tps = best;
    thaw_free(ids);
    thaw_engine_destroy(e);
    return rc;
}

/* The CUDA backend: decode at batch 1 and `batch`, prefill; no CPU probes. */
static int bench_cuda(const struct thaw_loader *ld, int gpu_loaded, struct thaw_model *m,
                      const struct thaw_engine_opts *eo, int tokens, int batch, int prompt,
                      int json)
{
    const struct thaw_model_config *c = thaw_model_config(m);
    const struct thaw_load_stats *ls = thaw_loader_stats(ld);
    double wbytes = (double)thaw_model_weight_bytes(m);
    struct thaw_engine *e;
    int rc = thaw_engine_create(m, eo, &e); /* validates the device, names it */
    if (rc)
        return cli_error("bench engine", rc);
    char dev[320];
    snprintf(dev, sizeof dev, "%s", thaw_engine_backend_name(e));
    thaw_engine_destroy(e);
    double d1 = 0, dn = 0, pf = 0;
    if ((rc = decode_rate(m, eo, 1, tokens, &d1)) || (rc = decode_rate(m, eo, batch, tokens, &dn)) ||
        (rc = prefill_rate(m, eo, prompt, &pf)))
        return cli_error("bench engine", rc);
    if (json) {
        printf("{\"model\":\"%s\",\"device\":\"%s\",\"weight_bytes\":%.0f,"
               "\"weights_in_gpu_memory\":%s,\"load_s\":%.3f,\"load_gbps\":%.2f,"
               "\"fast_act\":%s,\"decode1_tps\":%.2f,\"decode1_weight_gbps\":%.1f,"
               "\"batch\":%d,\"decodeN_tps\":%.2f,\"decodeN_step_weight_gbps\":%.1f,"
               "\"batch_speedup\":%.2f,\"prefill_tokens\":%d,\"prefill_tps\":%.1f}\n",
               c->architecture, dev, wbytes, gpu_loaded ? "true" : "false",
               ls->seconds, ls->gbps, eo->gpu_fast_act ? "true" : "false", d1, d1 * wbytes / 1e9,
               batch, dn, dn / batch * wbytes / 1e9, dn / d1, prompt, pf);
    } else {
        printf("model %s on %s: %.1f MB of weights read per decode step\n", c->architecture, dev,
               wbytes / 1e6);
        printf("  load                    %.2f s (%.2f GB/s)\n", ls->seconds, ls->gbps);
        printf("  decode, 1 sequence      %.1f tok/s = %.0f GB/s of weights\n", d1,
               d1 * wbytes / 1e9);
        printf("  decode, %d sequences    %.1f tok/s = %.2fx one sequence (%.0f GB/s per step)\n",
               batch, dn, dn / d1, dn / batch * wbytes / 1e9);
        printf("  prefill, %d tokens      %.0f tok/s\n", prompt, pf);
    }
    return 0;
}

int cli_bench_engine(int argc, char **argv)
{
    const char *ckpt = NULL;
    int threads = 0, tokens = 64, batch = 8, prompt = 256, json = 0, backend = THAW_BACKEND_CPU;
    int fast_act = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0)
            json = 1;
        else if (strcmp(a, "--fast-act") == 0)
            fast_act = 1;
        else if (strcmp(a, "--device") == 0 && v) {
            if ((backend = cli_parse_device(argv[++i])) < 0)
                goto usage;
        }
        else if (strcmp(a, "--threads") == 0 && v)
            threads = atoi(argv[++i]);
        else if (strcmp(a, "--tokens") == 0 && v)
            tokens = atoi(argv[++i]);
        else if (strcmp(a, "--batch") == 0 && v)
            batch = atoi(argv[++i]);
        else if (strcmp(a, "--prompt") == 0 && v)
            prompt = atoi(argv[++i]);
        else if (!ckpt && a[0] != '-')
            ckpt = a;
        else
            goto usage;
    }
    if (!ckpt || tokens < 2 || batch < 1 || batch > 256 || prompt < 1)
        goto usage;
    if (threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 0 ? (int)c : 1;
    }
    if (threads > 256)
        threads = 256;
    struct thaw_loader_opts lo = { 0 };
    int gpu = backend == THAW_BACKEND_CUDA && thaw_loader_gpu_available();
    if (gpu)
        lo.target = THAW_LOAD_GPU;
    struct thaw_loader *ld;
    int rc = thaw_loader_load(ckpt, &lo, &ld);
    if (rc)
        return cli_error(ckpt, rc);
    struct thaw_model *m;
    if ((rc = cli_model_open(ld, gpu, &m))) {
        thaw_loader_destroy(ld);
        return cli_error(ckpt, rc);
    }
    const struct thaw_model_config *c = thaw_model_config(m);
    struct thaw_engine_opts eo = { .n_threads = (uint32_t)threads,
                                   .backend = (enum thaw_backend)backend,
                                   .gpu_fast_act = fast_act };
    if (backend == THAW_BACKEND_CUDA) {
        rc = bench_cuda(ld, gpu, m, &eo, tokens, batch, prompt, json);
        thaw_model_destroy(m);
        thaw_loader_destroy(ld);
        return rc;
    }
    double bw = mem_bandwidth(threads), gflops = fma_rate(threads);
    double wbytes = (double)thaw_model_weight_bytes(m);
    double d1 = 0, dn = 0, pf = 0;
    if (!(rc = decode_rate(m, &eo, 1, tokens, &d1)) &&
        !(rc = decode_rate(m, &eo, batch, tokens, &dn)))
        rc = prefill_rate(m, &eo, prompt, &pf);
    if (rc) {
        thaw_model_destroy(m);
        thaw_loader_destroy(ld);
        return cli_error("bench engine", rc);
    }
    double bound = bw * 1e9 / wbytes;
    /* 2 flops per weight used per token (the matmuls, lm_head included),
     * plus attention over half the prompt on average. */
    int H = c->hidden, I = c->intermediate, qd = c->n_heads * c->head_dim,
        kvd = c->n_kv_heads * c->head_dim;
    double nparam = (double)c->n_layers * ((double)H * qd * 2 + (double)H * kvd * 2 + 3.0 * H * I) +
                    (double)c->vocab * H;
    double attn_flops = 2.0 * c->n_layers * c->n_heads * c->head_dim * 2.0 * (prompt / 2.0);
    double pf_gflops = pf * (2.0 * nparam + attn_flops) / 1e9;
    if (json) {
        printf("{\"model\":\"%s\",\"weight_bytes\":%.0f,\"threads\":%d,\"isa\":\"%s\","
               "\"mem_read_gbps\":%.2f,\"fma_gflops\":%.1f,\"decode_bound_tps\":%.2f,"
               "\"decode1_tps\":%.2f,\"decode1_ratio\":%.3f,\"batch\":%d,\"decodeN_tps\":%.2f,"
               "\"batch_speedup\":%.2f,\"prefill_tokens\":%d,\"prefill_tps\":%.1f,"
               "\"prefill_gflops\":%.1f,\"prefill_ratio\":%.3f}\n",
               c->architecture, wbytes, threads, "avx2", bw, gflops, bound, d1, d1 / bound, batch,
               dn, dn / d1, prompt, pf, pf_gflops, pf_gflops / gflops);
    } else {
        printf("model %s: %.1f MB of weights read per token, %d threads\n", c->architecture,
               wbytes / 1e6, threads);
        printf("  memory read bandwidth   %.2f GB/s  -> decode bound %.1f tok/s\n", bw, bound);
        printf("  FMA rate (registers)    %.1f GFLOP/s\n", gflops);
        printf("  decode, 1 sequence      %.1f tok/s = %.2fx the bound\n", d1, d1 / bound);
        printf("  decode, %d sequences     %.1f tok/s = %.2fx one sequence\n", batch, dn, dn / d1);
        printf("  prefill, %d tokens      %.0f tok/s = %.1f GFLOP/s = %.2fx the FMA rate\n", prompt,
               pf, pf_gflops, pf_gflops / gflops);
    }
    thaw_model_destroy(m);
    thaw_loader_destroy(ld);
    return 0;
usage:
    fprintf(stderr, "usage: thaw bench engine CKPT [--tokens N] [--batch N] [--prompt N] "
                    "[--threads N] [--device cpu|cuda] [--fast-act] [--json]\n");
    return 2;
}
