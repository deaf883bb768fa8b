/*
 * cpu.c - the CPU backend's kernels and its thread pool.
 *
 * Weights stay in their stored dtype (BF16, F16 or F32) and are widened to
 * f32 in registers; every sum accumulates in f32. The matmul computes each
 * output element with one fixed sequence of operations (8 lanes over the
 * row, then a fixed horizontal sum, then the scalar tail), whatever the
 * batch size and row split, so a sequence's logits do not depend on what it
 * was batched with. AVX2/FMA/F16C kernels are chosen at run time; the scalar
 * ones mirror their order of operations.
 */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine_int.h"

/* ---------------------------------------------------------------- thread pool */

/*
 * A job is split into chunks that the caller and the workers claim from one
 * counter, so a worker the kernel has not scheduled yet delays nothing: the
 * others take its chunks. The counter holds (generation << 32 | next chunk),
 * so a worker that wakes late can never claim a chunk of a newer job with
 * the function of an older one.
 */
struct eng_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic(eng_job_fn) fn;
    _Atomic(void *) arg;
    _Atomic int n_chunks;
    _Atomic uint64_t claim; /* gen << 32 | next chunk */
    _Atomic int done;       /* chunks finished in this generation */
    _Atomic int sleeping;
    _Atomic int stop;
    uint32_t gen;
};

/* Spin this many checks before sleeping: a step issues a few hundred short
 * jobs, and a wake-up through the kernel would dominate them. */
#define POOL_SPIN 4000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
}

/* Claim and run chunks of generation gen until none is left. */
static void pool_work(struct eng_pool *p, uint32_t gen)
{
    eng_job_fn fn = atomic_load_explicit(&p->fn, memory_order_acquire);
    void *arg = atomic_load_explicit(&p->arg, memory_order_acquire);
    int n = atomic_load_explicit(&p->n_chunks, memory_order_acquire);
    uint64_t v = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(v >> 32) != gen || (int)(uint32_t)v >= n)
            return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        fn(arg, (int)(uint32_t)v, n);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
        v = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static void *worker_main(void *v)
{
    struct eng_pool *p = v;
    uint32_t seen = 0;
    for (;;) {
        int spins = 0;
        uint32_t g;
        while ((g = (uint32_t)(atomic_load_explicit(&p->claim, memory_order_acquire) >> 32)) ==
               seen) {
            if (atomic_load(&p->stop))
                return NULL;
            if (++spins < POOL_SPIN) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleeping, 1);
            while ((uint32_t)(atomic_load(&p->claim) >> 32) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleeping, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = g;
        pool_work(p, g);
    }
}

int eng_pool_create(int n_threads, struct eng_pool **out)
{
    *out = NULL;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > 256)
        n_threads = 256;
    struct eng_pool *p = thaw_calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->n = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = thaw_calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        eng_pool_destroy(p);
        return -ENOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc) {
            eng_pool_destroy(p);
            return THAW_FAIL(-rc, "engine: cannot start worker thread");
        }
        p->n = i + 1;
    }
    *out = p;
    return 0;
}

void eng_pool_destroy(struct eng_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    thaw_free(p->threads);
    thaw_free(p);
}

int eng_pool_size(const struct eng_pool *p)
{
    return p->n;
}

void eng_pool_run(struct eng_pool *p, eng_job_fn fn, void *arg, int n_chunks)
{
    if (n_chunks <= 0)
        return;
    if (p->n == 1 || n_chunks == 1) {
        for (int i = 0; i < n_chunks; i++)
            fn(arg, i, n_chunks);
        return;
    }
    uint32_t gen = ++p->gen;
    if (gen == 0) /* 0 is what idle workers start from */
        gen = ++p->gen;
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->n_chunks, n_chunks, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->claim, (uint64_t)gen << 32, memory_order_release);
    if (atomic_load(&p->sleeping)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pool_work(p, gen);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < n_chunks) {
        if (++spins < 64)
            cpu_relax();
        else
            sched_yield(); /* a worker mid-chunk may need this core */
    }
}

/* ---------------------------------------------------------------- conversions */

static inline float bf16_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float wget(const struct eng_weight *w, size_t i)
{
    switch (w->dt) {
    case THAW_DTYPE_BF16: return bf16_f32(((const uint16_t *)w->p)[i]);
    case THAW_DTYPE_F16: return f16_f32(((const uint16_t *)w->p)[i]);
    default: return ((const float *)w->p)[i];
    }
}

/* ---------------------------------------------------------------- dispatch */

static int use_avx2 = -1;
static int force_scalar;

void eng_cpu_init(void)
{
    if (use_avx2 < 0) {
        __builtin_cpu_init();
        /* F16C through cpuid: clang's __builtin_cpu_supports lacks it. */
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
}

const char *eng_cpu_isa(void)
{
    eng_cpu_init();
    return use_avx2 && !force_scalar ? "avx2" : "scalar";
}

void eng_cpu_force_scalar(int on)
{
    force_scalar = on;
}

static int avx2_on(void)
{
    if (use_avx2 < 0)
        eng_cpu_init();
    return use_avx2 && !force_scalar;
}

/* ---------------------------------------------------------------- scalar kernels */

/*
 * The scalar dot mirrors the AVX2 one: 8 lane sums over blocks of 8, summed
 * as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), then the tail in order. fmaf
 * keeps each lane step a fused multiply-add like the vector code.
 */
static float hsum8_scalar(const float l[8])
{
    float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    float b0 = a0 + a2, b1 = a1 + a3;
    return b0 + b1;
}

static void dot_rows_scalar(float *out, const float *const *w, int nr, const float *x, int n)
{
    for (int r = 0; r < nr; r++) {
        float lane[8] = { 0 };
        int i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++)
                lane[k] = fmaf(w[r][i + k], x[i + k], lane[k]);
        float s = hsum8_scalar(lane);
        for (; i < n; i++)
            s = fmaf(w[r][i], x[i], s);
        out[r] = s;
    }
}

/* ---------------------------------------------------------------- AVX2 kernels */

__attribute__((target("avx2,fma,f16c"))) static inline float hsum8_avx(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 a = _mm_add_ps(lo, hi);               /* l0+l4, l1+l5, l2+l6, l3+l7 */
    __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a)); /* a0+a2, a1+a3 */
    __m128 c = _mm_add_ss(b, _mm_shuffle_ps(b, b, 1));
    return _mm_cvtss_f32(c);
}

/* Up to 4 rows of f32 weights against one x: 4 independent FMA chains. */
__attribute__((target("avx2,fma,f16c"))) static void dot_rows_avx(float *out,
                                                                  const float *const *w, int nr,
                                                                  const float *x, int n)
{
    __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                      _mm256_setzero_ps() };
    int i = 0;
    if (nr == 4) {
        for (; i + 8 <= n; i += 8) {
            __m256 xv = _mm256_loadu_ps(x + i);
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w[0] + i), xv, acc[0]);
            acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(w[1] + i), xv, acc[1]);
            acc[2] = _mm256_fmadd_ps(_mm256_loadu_ps(w[2] + i), xv, acc[2]);
            acc[3] = _mm256_fmadd_ps(_mm256_loadu_ps(w[3] + i), xv, acc[3]);
        }
    } else {
        for (; i + 8 <= n; i += 8) {
            __m256 xv = _mm256_loadu_ps(x + i);
            for (int r = 0; r < nr; r++)
                acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w[r] + i), xv, acc[r]);
        }
    }
    for (int r = 0; r < nr; r++) {
        float s = hsum8_avx(acc[r]);
        for (int j = i; j < n; j++)
            s = fmaf(w[r][j], x[j], s);
        out[r] = s;
    }
}

/* 4 rows against 2 tokens: 8 chains, each in the same order as dot_rows_avx,
 * so the results are bitwise those of two single-token calls. */
__attribute__((target("avx2,fma,f16c"))) static void dot4x2_avx(float *o0, float *o1,
                                                               const float *const *w,
                                                               const float *x0,
                                                               const float *x1, int n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
           b3 = a0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xa = _mm256_loadu_ps(x0 + i), xb = _mm256_loadu_ps(x1 + i);
        __m256 w0 = _mm256_loadu_ps(w[0] + i), w1 = _mm256_loadu_ps(w[1] + i);
        __m256 w2 = _mm256_loadu_ps(w[2] + i), w3 = _mm256_loadu_ps(w[3] + i);
        a0 = _mm256_fmadd_ps(w0, xa, a0);
        b0 = _mm256_fmadd_ps(w0, xb, b0);
        a1 = _mm256_fmadd_ps(w1, xa, a1);
        b1 = _mm256_fmadd_ps(w1, xb, b1);
        a2 = _mm256_fmadd_ps(w2, xa, a2);
        b2 = _mm256_fmadd_ps(w2, xb, b2);
        a3 = _mm256_fmadd_ps(w3, xa, a3);
        b3 = _mm256_fmadd_ps(w3, xb, b3);
    }
    __m256 acc[8] = { a0, a1, a2, a3, b0, b1, b2, b3 };
    for (int r = 0; r < 8; r++) {
        const float *wr = w[r & 3], *x = r < 4 ? x0 : x1;
        float s = hsum8_avx(acc[r]);
        for (int j = i; j < n; j++)
            s = fmaf(wr[j], x[j], s);
        (r < 4 ? o0 : o1)[r & 3] = s;
    }
}

/* One token against 4 rows of 16-bit weights, widened in registers (no
 * scratch round trip): the decode path. Each row's chain is the same
 * sequence of FMAs as dot_rows_avx on the widened row, so the results are
 * bitwise those of the batched path. */
__attribute__((target("avx2,fma,f16c"))) static void dot4_w16_avx(float *out, const uint16_t *w0,
                                                                  size_t stride, int bf,
                                                                  const float *x, int n)
{
    const uint16_t *w1 = w0 + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
#define W16(p) (bf ? _mm256_castsi256_ps(_mm256_slli_epi32(                                  \
                         _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))    \
                   : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p))))
    if (bf) {
        for (; i + 8 <= n; i += 8) {
            if (!(i & 31)) { /* the next rows' lines, well ahead of the loads */
                _mm_prefetch((const char *)(w0 + i + 4 * stride), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + i + 4 * stride), _MM_HINT_T0);
                _mm_prefetch((const char *)(w2 + i + 4 * stride), _MM_HINT_T0);
                _mm_prefetch((const char *)(w3 + i + 4 * stride), _MM_HINT_T0);
            }
            __m256 xv = _mm256_loadu_ps(x + i);
            a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(
                                     _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w0 + i))), 16)),
                                 xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(
                                     _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w1 + i))), 16)),
                                 xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(
                                     _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w2 + i))), 16)),
                                 xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(
                                     _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w3 + i))), 16)),
                                 xv, a3);
        }
    } else {
        for (; i + 8 <= n; i += 8) {
            __m256 xv = _mm256_loadu_ps(x + i);
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w0 + i))), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w1 + i))), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w2 + i))), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w3 + i))), xv, a3);
        }
    }
#undef W16
    __m256 acc[4] = { a0, a1, a2, a3 };
    const uint16_t *rows[4] = { w0, w1, w2, w3 };
    for (int r = 0; r < 4; r++) {
        float s = hsum8_avx(acc[r]);
        for (int j = i; j < n; j++)
            s = fmaf(bf ? bf16_f32(rows[r][j]) : f16_f32(rows[r][j]), x[j], s);
        out[r] = s;
    }
}

/* Widen 16-bit weights to f32, 8 at a time. */
__attribute__((target("avx2,fma,f16c"))) static void widen_avx(float *dst,
                                                              const struct eng_weight *w,
                                                              size_t off, int n)
{
    const uint16_t *s = (const uint16_t *)w->p + off;
    int i = 0;
    if (w->dt == THAW_DTYPE_BF16) {
        for (; i + 8 <= n; i += 8) {
            __m128i h = _mm_loadu_si128((const __m128i *)(s + i));
            __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(u));
        }
        for (; i < n; i++)
            dst[i] = bf16_f32(s[i]);
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i,
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
        for (; i < n; i++)
            dst[i] = f16_f32(s[i]);
    }
}

/* ---------------------------------------------------------------- public kernels */

void eng_row_f32(float *dst, const struct eng_weight *w, int r)
{
    size_t off = (size_t)r * (size_t)w->cols;
    if (w->dt == THAW_DTYPE_F32) {
        memcpy(dst, (const float *)w->p + off, (size_t)w->cols * sizeof(float));
    } else if (avx2_on()) {
        widen_avx(dst, w, off, w->cols);
    } else {
        for (int i = 0; i < w->cols; i++)
            dst[i] = wget(w, off + (size_t)i);
    }
}

void eng_matmul_rows(float *y, int ldy, const float *x, int n_tok, const struct eng_weight *w,
                     const struct eng_weight *bias, int o0, int o1, float *scratch)
{
    int n = w->cols, avx = avx2_on();
    for (int o = o0; o < o1; o += 4) {
        int nr = o1 - o < 4 ? o1 - o : 4;
        float res[4];
        if (n_tok == 1 && avx && nr == 4 && w->dt != THAW_DTYPE_F32) {
            dot4_w16_avx(res, (const uint16_t *)w->p + (size_t)o * (size_t)n, (size_t)n,
                         w->dt == THAW_DTYPE_BF16, x, n);
            for (int r = 0; r < 4; r++)
                y[o + r] = res[r] + (bias && bias->p ? wget(bias, (size_t)(o + r)) : 0.0f);
            continue;
        }
        /* Batched: the next block's rows come in while this one computes. */
        size_t esz = w->dt == THAW_DTYPE_F32 ? 4 : 2, row_bytes = (size_t)n * esz;
        for (int r = 4; r < 8 && o + r < w->rows; r++) {
            const char *rp = (const char *)w->p + (size_t)(o + r) * row_bytes;
            for (size_t b = 0; b < row_bytes; b += 64)
                _mm_prefetch(rp + b, _MM_HINT_T0);
        }
        const float *rows[4];
        for (int r = 0; r < nr; r++) {
            if (w->dt == THAW_DTYPE_F32) {
                rows[r] = (const float *)w->p + (size_t)(o + r) * (size_t)n;
            } else {
                eng_row_f32(scratch + (size_t)r * n, w, o + r);
                rows[r] = scratch + (size_t)r * n;
            }
        }
        int t = 0;
        if (avx && nr == 4) {
            for (; t + 2 <= n_tok; t += 2) {
                float r0[4], r1[4];
                dot4x2_avx(r0, r1, rows, x + (size_t)t * n, x + (size_t)(t + 1) * n, n);
                float *y0 = y + (size_t)t * ldy, *y1 = y0 + ldy;
                for (int r = 0; r < 4; r++) {
                    float b = bias && bias->p ? wget(bias, (size_t)(o + r)) : 0.0f;
                    y0[o + r] = r0[r] + b;
                    y1[o + r] = r1[r] + b;
                }
            }
        }
        for (; t < n_tok; t++) {
            const float *xt = x + (size_t)t * n;
            if (avx)
                dot_rows_avx(res, rows, nr, xt, n);
            else
                dot_rows_scalar(res, rows, nr, xt, n);
            float *yt = y + (size_t)t * ldy;
            for (int r = 0; r < nr; r++)
                yt[o + r] = res[r] + (bias && bias->p ? wget(bias, (size_t)(o + r)) : 0.0f);
        }
    }
}

void eng_rmsnorm(float *out, const float *x, const struct eng_weight *w, int n, float eps)
{
    double ss = 0; /* HF computes the mean of squares in fp32; double is at least as exact */
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + (double)eps));
    for (int i = 0; i < n; i++)
        out[i] = (x[i] * inv) * wget(w, (size_t)i);
}
