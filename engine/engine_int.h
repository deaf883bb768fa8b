/*
 * engine_int.h - private to engine/: the bound model, CPU kernels, the
 * thread pool and the sampler's per-sequence state. Also read by the CUDA
 * backend (engine/cuda.cu, C++), so it stays free of C-only headers.
 */
#ifndef ENGINE_INT_H
#define ENGINE_INT_H

#include <errno.h>

#include "ckpt/thaw_ckpt.h"
#include "engine/thaw_engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A weight matrix [rows][cols] (or vector: rows 1) in the loader's buffer. */
struct eng_weight {
    const void *p;
    enum thaw_dtype dt; /* F32, F16 or BF16 */
    int rows, cols;
};

struct eng_layer {
    struct eng_weight attn_norm, q, k, v, o, q_bias, k_bias, v_bias;
    struct eng_weight ffn_norm, gate, up, down;
};

/* One partition of the checkpoint as the model was bound to it. */
struct eng_part {
    const char *base; /* host or device address (see device_ptrs) */
    size_t bytes;
};

struct thaw_model {
    struct thaw_model_config cfg;
    struct eng_weight embed, norm, lm_head; /* lm_head == embed when tied */
    struct eng_layer *layers;
    uint64_t weight_bytes;
    int sliding_window; /* 0 = none */
    struct eng_part *parts; /* [n_parts]: every weight lies inside one */
    uint32_t n_parts;
    int device_ptrs;        /* weights are CUDA device pointers: never dereference on the host */
};

/* One token of a step's batch: the token, its position in its sequence, the
 * sequence's KV slot and the row of the logits it wants (-1: none). Shared
 * by the CPU forward and the CUDA backend (which copies it to the device). */
struct eng_btok {
    int32_t tok;
    int32_t pos, slot;
    int32_t logit_row;
};

/* ---------------------------------------------------------------- thread pool */

/* fn(arg, i, n): chunk i of the n chunks of one parallel job. */
typedef void (*eng_job_fn)(void *arg, int i, int n);

struct eng_pool;

int eng_pool_create(int n_threads, struct eng_pool **out) THAW_MUST_CHECK;
void eng_pool_destroy(struct eng_pool *p);
int eng_pool_size(const struct eng_pool *p);
/* Run chunks 0..n_chunks-1 of fn on the caller and the workers (each chunk
 * exactly once, any thread) and wait for all. */
void eng_pool_run(struct eng_pool *p, eng_job_fn fn, void *arg, int n_chunks);

/* ---------------------------------------------------------------- kernels */

/* Pick AVX2/FMA kernels when the CPU has them (called once; idempotent). */
void eng_cpu_init(void);
/* Which kernels run: "avx512" (the batched matmul on 512-bit registers, the
 * rest AVX2), "avx2" or "scalar". */
const char *eng_cpu_isa(void);
/* Force the scalar kernels (tests of the fallback). */
void eng_cpu_force_scalar(int on);
/* Force the 256-bit kernels on a CPU with AVX-512 (tests of that path). */
void eng_cpu_force_avx2(int on);

/* dst[0..n) = f32 of row r of w (any dtype). */
void eng_row_f32(float *dst, const struct eng_weight *w, int r);

/*
 * y[t][o] = sum_i x[t][i] * W[o][i] (+ bias[o]) for t < n_tok and o in
 * [o0, o1); x rows of w->cols floats, y rows of ldy floats. Every output
 * element is computed with the same order of operations whatever n_tok and
 * the row range are, so batched and unbatched results are bitwise equal.
 * scratch holds ENG_MATMUL_SCRATCH(w->cols) floats.
 */
#define ENG_MATMUL_SCRATCH(cols) (16 * (size_t)(cols) + 16)
void eng_matmul_rows(float *y, int ldy, const float *x, int n_tok, const struct eng_weight *w,
                     const struct eng_weight *bias, int o0, int o1, float *scratch);

/*
 * One head of one token's attention: out[0..hd) = sum_p softmax_p(scale *
 * q.K[p]) V[p] over positions p0..p1 (inclusive); K and V point at the
 * head's first position, rows kv_stride floats apart. scores holds p1 + 1
 * floats. The result depends only on these inputs (not on the batch).
 */
void eng_attn_head(float *out, const float *q, const float *K, const float *V, size_t kv_stride,
                   int p0, int p1, int hd, float scale, float *scores);

/* out = x * rsqrt(mean(x^2) + eps) * w, n elements. */
void eng_rmsnorm(float *out, const float *x, const struct eng_weight *w, int n, float eps);

/* ---------------------------------------------------------------- sampler */

struct eng_rng {
    uint64_t s[4]; /* xoshiro256** */
};
void eng_rng_seed(struct eng_rng *r, uint64_t seed);
uint64_t eng_rng_next(struct eng_rng *r);
double eng_rng_uniform(struct eng_rng *r); /* [0, 1) */

/* Scratch reused across calls (grows to the vocabulary). */
struct eng_sample_buf {
    float *probs;
    int32_t *idx;
    uint32_t *counts; /* token counts for penalties, [vocab] */
    size_t cap;
};
void eng_sample_buf_free(struct eng_sample_buf *b);

/*
 * Apply penalties (repetition over all tokens; presence/frequency over the
 * generated ones, tokens[n_prompt..n)), temperature and top-k/top-p/min-p to
 * logits[vocab] (modified in place) and pick a token. *logprob (logprob may
 * be NULL: then greedy needs no softmax) gets its log probability under the
 * final distribution (greedy: the penalised softmax).
 */
int eng_sample(const struct thaw_sampling *s, float *logits, int vocab, const int32_t *tokens,
               size_t n, size_t n_prompt, struct eng_rng *rng, struct eng_sample_buf *b,
               int32_t *token, float *logprob) THAW_MUST_CHECK;

#ifdef __cplusplus
}
#endif

#endif /* ENGINE_INT_H */
