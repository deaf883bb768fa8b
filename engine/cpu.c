/*
 * cpu.c - the CPU backend's kernels and its thread pool.
 *
 * Weights stay in their stored dtype (BF16, F16 or F32) and are widened to
 * f32 in registers; every sum accumulates in f32. The matmul computes each
 * output element with one fixed sequence of operations (8 lanes over the
 * row, then a fixed horizontal sum, then the scalar tail), whatever the
 * batch size and row split, so a sequence's logits do not depend on what it
 * was batched with. AVX2/FMA/F16C kernels are chosen at run time, and on
 * CPUs with AVX-512 the batched matmul runs two rows' 8-lane chains per
 * 512-bit register (the same lanes, so the same results); the scalar
 * kernels mirror their order of operations.
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

static int use_avx2 = -1, use_avx512;
static int force_scalar, force_avx2;

void eng_cpu_init(void)
{
    if (use_avx2 < 0) {
        __builtin_cpu_init();
        /* F16C through cpuid: clang's __builtin_cpu_supports lacks it. */
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
        /* libgcc's check includes the OS saving the zmm state (XCR0). */
        use_avx512 = use_avx2 && __builtin_cpu_supports("avx512f") &&
                     __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
}

const char *eng_cpu_isa(void)
{
    eng_cpu_init();
    if (!use_avx2 || force_scalar)
        return "scalar";
    return use_avx512 && !force_avx2 ? "avx512" : "avx2";
}

void eng_cpu_force_scalar(int on)
{
    force_scalar = on;
}

void eng_cpu_force_avx2(int on)
{
    force_avx2 = on;
}

static int avx2_on(void)
{
    if (use_avx2 < 0)
        eng_cpu_init();
    return use_avx2 && !force_scalar;
}

/* The batched matmul's 512-bit kernels (everything else stays 256-bit). */
static int avx512_on(void)
{
    return avx2_on() && use_avx512 && !force_avx2;
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

/*
 * One head of one token's attention, in the order the AVX2 twin uses: each
 * score is an 8-lane fmaf dot (as dot_rows_scalar), and the output is
 * accumulated position by position with one fmaf per element.
 */
static void attn_head_scalar(float *out, const float *q, const float *K, const float *V,
                             size_t kv_stride, int p0, int p1, int hd, float scale, float *sc)
{
    float mx = -INFINITY;
    for (int p = p0; p <= p1; p++) {
        const float *kp = K + (size_t)p * kv_stride;
        float s;
        dot_rows_scalar(&s, &kp, 1, q, hd);
        s *= scale;
        sc[p] = s;
        if (s > mx)
            mx = s;
    }
    float sum = 0;
    for (int p = p0; p <= p1; p++) {
        sc[p] = expf(sc[p] - mx);
        sum += sc[p];
    }
    float inv = 1.0f / sum;
    for (int d = 0; d < hd; d++)
        out[d] = 0;
    for (int p = p0; p <= p1; p++) {
        const float *vp = V + (size_t)p * kv_stride;
        float w = sc[p] * inv;
        for (int d = 0; d < hd; d++)
            out[d] = fmaf(w, vp[d], out[d]);
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

/* Row r at columns i..i+8 as f32: from w[r] (F32) or widened from src. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256
row8(const float *const *w, const uint16_t *src, size_t stride, int r, int i, enum thaw_dtype dt)
{
    if (dt == THAW_DTYPE_F32)
        return _mm256_loadu_ps(w[r] + i);
    __m128i h = _mm_loadu_si128((const __m128i *)(src + (size_t)r * stride + i));
    if (dt == THAW_DTYPE_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/*
 * The batched micro-kernel: 4 weight rows against nt tokens (1..3), one
 * 8-lane FMA chain per (row, token), each the same sequence of FMAs as
 * dot_rows_avx, so the results are bitwise those of single-token calls.
 * With 3 tokens, twelve accumulators, three x vectors and one weight vector
 * fill the 16 registers and every weight vector feeds three FMAs: the loop
 * runs at the FMA ports' rate, not the load ports'.
 *
 * dt says how the rows are read: F32 from w[r]; BF16/F16 from src (row r at
 * src + r * stride), widened in registers and also stored to dst[r * n..]
 * as f32, so the block's later token groups read them from L1 without
 * converting again (one pass over the 16-bit rows, no separate widening
 * loop). The 16-bit variant also prefetches the next block's rows.
 * always_inline with constant nt and dt gives one specialised loop each.
 */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
dot4xk_avx(float (*out)[4], const float *const *w, const uint16_t *src, size_t stride, float *dst,
           const float *x, size_t ldx, int n, int nt, enum thaw_dtype dt)
{
    const float *x0 = x, *x1 = nt > 1 ? x + ldx : x, *x2 = nt > 2 ? x + 2 * ldx : x;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0,
           c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    int i = 0;
#define STEP(r, A, B, C) \
    do { \
        __m256 wv = row8(w, src, stride, r, i, dt); \
        if (dt != THAW_DTYPE_F32) \
            _mm256_storeu_ps(dst + (size_t)(r)*n + i, wv); \
        A = _mm256_fmadd_ps(wv, xa, A); \
        if (nt > 1) \
            B = _mm256_fmadd_ps(wv, xb, B); \
        if (nt > 2) \
            C = _mm256_fmadd_ps(wv, xc, C); \
    } while (0)
    for (; i + 8 <= n; i += 8) {
        if (dt != THAW_DTYPE_F32 && !(i & 31)) {
            _mm_prefetch((const char *)(src + 4 * stride + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(src + 5 * stride + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(src + 6 * stride + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(src + 7 * stride + i), _MM_HINT_T0);
        }
        __m256 xa = _mm256_loadu_ps(x0 + i), xb = xa, xc = xa;
        if (nt > 1)
            xb = _mm256_loadu_ps(x1 + i);
        if (nt > 2)
            xc = _mm256_loadu_ps(x2 + i);
        STEP(0, a0, b0, c0);
        STEP(1, a1, b1, c1);
        STEP(2, a2, b2, c2);
        STEP(3, a3, b3, c3);
    }
#undef STEP
    __m256 acc[3][4] = { { a0, a1, a2, a3 }, { b0, b1, b2, b3 }, { c0, c1, c2, c3 } };
    const float *xs[3] = { x0, x1, x2 };
    for (int r = 0; r < 4; r++) {
        const float *wr = w[r];
        if (dt != THAW_DTYPE_F32) { /* the tail, widened like eng_row_f32 */
            const uint16_t *sr = src + (size_t)r * stride;
            float *dr = dst + (size_t)r * n;
            for (int j = i; j < n; j++)
                dr[j] = dt == THAW_DTYPE_BF16 ? bf16_f32(sr[j]) : f16_f32(sr[j]);
            wr = dr;
        }
        for (int t = 0; t < nt; t++) {
            float s = hsum8_avx(acc[t][r]);
            for (int j = i; j < n; j++)
                s = fmaf(wr[j], xs[t][j], s);
            out[t][r] = s;
        }
    }
}

/* One specialised kernel per (tokens, dtype): reads f32 rows (F32 weights
 * or the block's widened copy), or widens BF16/F16 ones into dst. */
#define DOT4XK(name, nt, dt) \
    __attribute__((target("avx2,fma,f16c"))) static void name(float(*out)[4], \
                                                              const float *const *w, \
                                                              const uint16_t *src, size_t stride, \
                                                              float *dst, const float *x, \
                                                              size_t ldx, int n) \
    { \
        dot4xk_avx(out, w, src, stride, dst, x, ldx, n, nt, dt); \
    }
DOT4XK(dot4x1_f32, 1, THAW_DTYPE_F32)
DOT4XK(dot4x2_f32, 2, THAW_DTYPE_F32)
DOT4XK(dot4x3_f32, 3, THAW_DTYPE_F32)
DOT4XK(dot4x1_bf16, 1, THAW_DTYPE_BF16)
DOT4XK(dot4x2_bf16, 2, THAW_DTYPE_BF16)
DOT4XK(dot4x3_bf16, 3, THAW_DTYPE_BF16)
DOT4XK(dot4x1_f16, 1, THAW_DTYPE_F16)
DOT4XK(dot4x2_f16, 2, THAW_DTYPE_F16)
DOT4XK(dot4x3_f16, 3, THAW_DTYPE_F16)
#undef DOT4XK

typedef void (*dot4xk_fn)(float (*out)[4], const float *const *w, const uint16_t *src,
                          size_t stride, float *dst, const float *x, size_t ldx, int n);

/* [dtype: f32 / bf16 / f16][tokens - 1] */
static const dot4xk_fn dot4xk_tab[3][3] = {
    { dot4x1_f32, dot4x2_f32, dot4x3_f32 },
    { dot4x1_bf16, dot4x2_bf16, dot4x3_bf16 },
    { dot4x1_f16, dot4x2_f16, dot4x3_f16 },
};

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

/* attn_head_scalar with 8-lane FMAs: bitwise the same results. The output
 * is kept in registers, 32 floats per pass over the positions. */
__attribute__((target("avx2,fma,f16c"))) static void attn_head_avx(float *out, const float *q,
                                                                   const float *K, const float *V,
                                                                   size_t kv_stride, int p0, int p1,
                                                                   int hd, float scale, float *sc)
{
    float mx = -INFINITY;
    int d8 = hd & ~7, p = p0;
    /* Four positions at a time: four independent FMA chains (one is
     * latency bound), each position's in the same order as alone. */
    for (; p + 4 <= p1 + 1 && d8 == hd; p += 4) {
        const float *k0 = K + (size_t)p * kv_stride, *k1 = k0 + kv_stride, *k2 = k1 + kv_stride,
                    *k3 = k2 + kv_stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int d = 0; d < d8; d += 8) {
            __m256 qv = _mm256_loadu_ps(q + d);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + d), qv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + d), qv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(k2 + d), qv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(k3 + d), qv, a3);
        }
        float s0 = hsum8_avx(a0) * scale, s1 = hsum8_avx(a1) * scale;
        float s2 = hsum8_avx(a2) * scale, s3 = hsum8_avx(a3) * scale;
        sc[p] = s0;
        sc[p + 1] = s1;
        sc[p + 2] = s2;
        sc[p + 3] = s3;
        mx = s0 > mx ? s0 : mx;
        mx = s1 > mx ? s1 : mx;
        mx = s2 > mx ? s2 : mx;
        mx = s3 > mx ? s3 : mx;
    }
    for (; p <= p1; p++) {
        const float *kp = K + (size_t)p * kv_stride;
        __m256 acc = _mm256_setzero_ps();
        for (int d = 0; d < d8; d += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(kp + d), _mm256_loadu_ps(q + d), acc);
        float s = hsum8_avx(acc);
        for (int d = d8; d < hd; d++)
            s = fmaf(kp[d], q[d], s);
        s *= scale;
        sc[p] = s;
        if (s > mx)
            mx = s;
    }
    float sum = 0;
    for (int k = p0; k <= p1; k++) {
        sc[k] = expf(sc[k] - mx);
        sum += sc[k];
    }
    float inv = 1.0f / sum;
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int k = p0; k <= p1; k++) {
            const float *vp = V + (size_t)k * kv_stride + d;
            __m256 w = _mm256_set1_ps(sc[k] * inv);
            o0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp), o0);
            o1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp + 8), o1);
            o2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp + 16), o2);
            o3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp + 24), o3);
        }
        _mm256_storeu_ps(out + d, o0);
        _mm256_storeu_ps(out + d + 8, o1);
        _mm256_storeu_ps(out + d + 16, o2);
        _mm256_storeu_ps(out + d + 24, o3);
    }
    for (; d + 8 <= hd; d += 8) {
        __m256 o0 = _mm256_setzero_ps();
        for (int k = p0; k <= p1; k++)
            o0 = _mm256_fmadd_ps(_mm256_set1_ps(sc[k] * inv),
                                 _mm256_loadu_ps(V + (size_t)k * kv_stride + d), o0);
        _mm256_storeu_ps(out + d, o0);
    }
    for (; d < hd; d++) {
        float o = 0;
        for (int k = p0; k <= p1; k++)
            o = fmaf(sc[k] * inv, V[(size_t)k * kv_stride + d], o);
        out[d] = o;
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

/* ---------------------------------------------------------------- AVX-512 kernels */

/*
 * The AVX-512 twin of dot4xk_avx, for CPUs whose 512-bit FMA runs at twice
 * the 256-bit rate. A zmm register holds two rows' 8-lane chains side by
 * side ([row 2q | row 2q+1]) for one token, against that token's 8 x values
 * repeated in both halves, so every lane sees exactly the FMA sequence of
 * dot_rows_avx and hsum8_avx sums each half apart: the results are bitwise
 * those of the 256-bit kernels. 4 rows (2 pairs) x nt tokens (nt <= 8): up
 * to 16 accumulators, 2 weight pairs and one x vector.
 *
 * The rows are widened in registers straight from w (F32 or 16-bit, row r
 * at w + r * stride elements). x comes repeated and interleaved in xd
 * ([i / 8][token][16 floats], see dup_x), so each step's x vectors are
 * plain 64-byte loads at fixed offsets from one pointer: no broadcasts or
 * inserts, which would compete with the FMAs for the vector pipes.
 */
#define AVX512_TARGET "avx512f,avx512dq,avx512vl,avx2,fma,f16c"

/* Rows r and r + 1 at column i as one [row r | row r + 1] vector. */
__attribute__((target(AVX512_TARGET), always_inline)) static inline __m512
pair_rows(const void *w, size_t stride, int r, int i, enum thaw_dtype dt)
{
    if (dt == THAW_DTYPE_F32) {
        const float *f = (const float *)w + (size_t)r * stride + i;
        return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(f)),
                                  _mm256_loadu_ps(f + stride), 1);
    }
    const uint16_t *h = (const uint16_t *)w + (size_t)r * stride + i;
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)h)),
                                        _mm_loadu_si128((const __m128i *)(h + stride)), 1);
    if (dt == THAW_DTYPE_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
    return _mm512_cvtph_ps(v);
}

/* Weight (r, j) as f32, for the tails. */
static inline float wval(const void *w, size_t stride, int r, int j, enum thaw_dtype dt)
{
    size_t k = (size_t)r * stride + (size_t)j;
    if (dt == THAW_DTYPE_F32)
        return ((const float *)w)[k];
    uint16_t h = ((const uint16_t *)w)[k];
    return dt == THAW_DTYPE_BF16 ? bf16_f32(h) : f16_f32(h);
}

/* xd[i / 8][t][16] = x[t][i..i+8) twice, for nt tokens (x rows ldx apart)
 * and the n & ~7 columns the vector loop covers; xd is 64-byte aligned. */
__attribute__((target(AVX512_TARGET))) static void dup_x(float *xd, const float *x, size_t ldx,
                                                         int nt, int n)
{
    for (int i = 0; i + 8 <= n; i += 8)
        for (int t = 0; t < nt; t++)
            _mm512_store_ps(xd + (size_t)i * 16 + (size_t)t * 16,
                            _mm512_broadcast_f32x8(_mm256_loadu_ps(x + (size_t)t * ldx + i)));
}

__attribute__((target(AVX512_TARGET), always_inline)) static inline void
dot4xt_avx512(float (*out)[4], const void *w, size_t stride, const float *xd, const float *x,
              size_t ldx, int n, int nt, enum thaw_dtype dt)
{
    __m512 acc[2][8];
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++)
        acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        if (dt != THAW_DTYPE_F32 && !(i & 31)) { /* the next block's rows */
            const uint16_t *h = (const uint16_t *)w + 4 * stride + i;
            _mm_prefetch((const char *)h, _MM_HINT_T0);
            _mm_prefetch((const char *)(h + stride), _MM_HINT_T0);
            _mm_prefetch((const char *)(h + 2 * stride), _MM_HINT_T0);
            _mm_prefetch((const char *)(h + 3 * stride), _MM_HINT_T0);
        }
        __m512 w0 = pair_rows(w, stride, 0, i, dt), w1 = pair_rows(w, stride, 2, i, dt);
        const float *xs = xd + (size_t)i * 16;
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            __m512 xv = _mm512_load_ps(xs + t * 16);
            __asm__("" : "+v"(xv)); /* one load for both FMAs, not one each */
            acc[0][t] = _mm512_fmadd_ps(w0, xv, acc[0][t]);
            acc[1][t] = _mm512_fmadd_ps(w1, xv, acc[1][t]);
        }
    }
    /*
     * All 32 horizontal sums at once, with hsum8_avx's tree for each:
     * l[k] + l[k+4], then (a0 + a2) and (a1 + a3), then their sum. First
     * each token's two pairs become one vector of four 4-lane partials
     * (one 128-bit block per row); then blocks of two tokens, then of four,
     * are folded together so that block r of sum[g] ends as rows r of
     * tokens 4g..4g+3. Unused tokens' accumulators are zero.
     */
    __m512 u[8], v[4], sum[2];
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++)
        u[t] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[0][t], acc[1][t], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(acc[0][t], acc[1][t], _MM_SHUFFLE(3, 1, 3, 1)));
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++)
        v[t] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * t], u[2 * t + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(u[2 * t], u[2 * t + 1], _MM_SHUFFLE(3, 2, 3, 2)));
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++)
        sum[g] = _mm512_add_ps(_mm512_shuffle_ps(v[2 * g], v[2 * g + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_ps(v[2 * g], v[2 * g + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    float s[2][4][4]; /* [token / 4][row][token % 4] */
    _mm512_storeu_ps(&s[0][0][0], sum[0]);
    _mm512_storeu_ps(&s[1][0][0], sum[1]);
    for (int t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * ldx;
        for (int r = 0; r < 4; r++) {
            float a = s[t >> 2][r][t & 3];
            for (int j = i; j < n; j++)
                a = fmaf(wval(w, stride, r, j, dt), xt[j], a);
            out[t][r] = a;
        }
    }
}

#define DOT4XT(nt) \
    __attribute__(( \
        target(AVX512_TARGET))) static void zdot4x##nt##_f32(float(*out)[4], const void *w, \
                                                             size_t stride, const float *xd, \
                                                             const float *x, size_t ldx, int n) \
    { \
        dot4xt_avx512(out, w, stride, xd, x, ldx, n, nt, THAW_DTYPE_F32); \
    } \
    __attribute__(( \
        target(AVX512_TARGET))) static void zdot4x##nt##_bf16(float(*out)[4], const void *w, \
                                                              size_t stride, const float *xd, \
                                                              const float *x, size_t ldx, int n) \
    { \
        dot4xt_avx512(out, w, stride, xd, x, ldx, n, nt, THAW_DTYPE_BF16); \
    } \
    __attribute__(( \
        target(AVX512_TARGET))) static void zdot4x##nt##_f16(float(*out)[4], const void *w, \
                                                             size_t stride, const float *xd, \
                                                             const float *x, size_t ldx, int n) \
    { \
        dot4xt_avx512(out, w, stride, xd, x, ldx, n, nt, THAW_DTYPE_F16); \
    }
DOT4XT(1)
DOT4XT(2)
DOT4XT(3)
DOT4XT(4)
DOT4XT(5)
DOT4XT(6)
DOT4XT(7)
DOT4XT(8)
#undef DOT4XT

typedef void (*dot4xt_fn)(float (*out)[4], const void *w, size_t stride, const float *xd,
                          const float *x, size_t ldx, int n);

/* [dtype: f32 / bf16 / f16][tokens - 1] */
#define ROW(d) \
    { \
        zdot4x1_##d, zdot4x2_##d, zdot4x3_##d, zdot4x4_##d, zdot4x5_##d, zdot4x6_##d, zdot4x7_##d, \
            zdot4x8_##d \
    }
static const dot4xt_fn dot4xt_tab[3][8] = { ROW(f32), ROW(bf16), ROW(f16) };
#undef ROW

/*
 * The batched matmul on AVX-512: token groups of up to 8 outer, blocks of 4
 * rows inner (the rows of one call, a chunk of a few dozen, stay in L2
 * between groups). Rows past the last whole block are left to the caller.
 */
static int matmul_avx512(float *y, int ldy, const float *x, int n_tok, const struct eng_weight *w,
                         const struct eng_weight *bias, int o0, int o1, float *xd)
{
    int n = w->cols, d = w->dt == THAW_DTYPE_F32 ? 0 : w->dt == THAW_DTYPE_BF16 ? 1 : 2;
    size_t esz = w->dt == THAW_DTYPE_F32 ? 4 : 2;
    int oe = o0 + (o1 - o0) / 4 * 4;
    /* 64-byte aligned: an unaligned zmm load spans two cache lines and
     * halves the rate at which the loop can feed its FMAs. */
    xd = (float *)(((uintptr_t)xd + 63) & ~(uintptr_t)63);
    for (int t = 0; t < n_tok; t += 8) {
        int nt = n_tok - t < 8 ? n_tok - t : 8;
        const float *xt = x + (size_t)t * n;
        dup_x(xd, xt, (size_t)n, nt, n);
        for (int o = o0; o < oe; o += 4) {
            float res[8][4];
            dot4xt_tab[d][nt - 1](res, (const char *)w->p + (size_t)o * n * esz, (size_t)n, xd, xt,
                                  (size_t)n, n);
            for (int r = 0; r < 4; r++) {
                float b = bias && bias->p ? wget(bias, (size_t)(o + r)) : 0.0f;
                for (int u = 0; u < nt; u++)
                    y[(size_t)(t + u) * ldy + o + r] = res[u][r] + b;
            }
        }
    }
    return oe;
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
    if (n_tok >= 2 && avx512_on())
        o0 = matmul_avx512(y, ldy, x, n_tok, w, bias, o0, o1, scratch);
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
        int t = 0;
        const float *rows[4];
        if (avx && nr == 4) {
            /*
             * Token groups of 3 (2 when 4 or 2 are left, 1 for a last one).
             * The first group of a 16-bit block widens the rows into scratch
             * as it goes; the later ones read that f32 copy.
             */
            int f32 = w->dt == THAW_DTYPE_F32, k = w->dt == THAW_DTYPE_BF16 ? 1 : 2;
            const uint16_t *src = f32 ? NULL : (const uint16_t *)w->p + (size_t)o * (size_t)n;
            for (int r = 0; r < 4; r++)
                rows[r] = f32 ? (const float *)w->p + (size_t)(o + r) * (size_t)n
                              : scratch + (size_t)r * n;
            for (int r = 4; f32 && r < 8 && o + r < w->rows; r++) { /* the next block's rows */
                const char *rp = (const char *)(rows[0] + (size_t)r * n);
                for (size_t b = 0; b < (size_t)n * sizeof(float); b += 64)
                    _mm_prefetch(rp + b, _MM_HINT_T0);
            }
            while (t < n_tok) {
                int left = n_tok - t, nt = left == 4 ? 2 : left < 3 ? left : 3;
                float res_t[3][4];
                dot4xk_tab[t == 0 ? (f32 ? 0 : k) : 0][nt - 1](res_t, rows, src, (size_t)n, scratch,
                                                               x + (size_t)t * n, (size_t)n, n);
                for (int r = 0; r < 4; r++) {
                    float b = bias && bias->p ? wget(bias, (size_t)(o + r)) : 0.0f;
                    for (int u = 0; u < nt; u++)
                        y[(size_t)(t + u) * ldy + o + r] = res_t[u][r] + b;
                }
                t += nt;
            }
            continue;
        }
        for (int r = 0; r < nr; r++) {
            if (w->dt == THAW_DTYPE_F32) {
                rows[r] = (const float *)w->p + (size_t)(o + r) * (size_t)n;
            } else {
                eng_row_f32(scratch + (size_t)r * n, w, o + r);
                rows[r] = scratch + (size_t)r * n;
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

void eng_attn_head(float *out, const float *q, const float *K, const float *V, size_t kv_stride,
                   int p0, int p1, int hd, float scale, float *scores)
{
    if (avx2_on())
        attn_head_avx(out, q, K, V, kv_stride, p0, p1, hd, scale, scores);
    else
        attn_head_scalar(out, q, K, V, kv_stride, p0, p1, hd, scale, scores);
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
