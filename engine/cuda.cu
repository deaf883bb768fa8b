/*
 * cuda.cu - the CUDA backend: engine.c's forward pass on one GPU. GEMMs are
 * cuBLAS (cublasGemmEx, fp32 accumulation into fp32 outputs); the rest are
 * small kernels here: embedding, RMSNorm, bias + RoPE + KV store, causal GQA
 * attention with an online softmax over tiles of keys, SiLU*up, the 16-bit
 * split of activations for 16-bit weights, and the residual adds.
 *
 * Layouts are the CPU backend's: activations are row-major [token][feature]
 * in fp32, the KV cache is [slot][layer][ctx][n_kv * head_dim] in fp32, and
 * weights stay in their stored dtype (BF16, F16 or F32) where the loader put
 * them (device memory), or in one device copy per partition of a host load.
 * Correctness first: every kernel is the plain loop of engine.c spread over
 * threads, with the same formulas (RMSNorm's sum of squares in double).
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine/eng_cuda.h"

#define NORM_THREADS 256
#define ELT_THREADS 256
#define ATT_THREADS 128 /* 4 warps; a multiple of 32 (the reductions rely on it) */
#define ATT_TILE 1024   /* keys scored per pass through shared memory */
#define ATT_MAX_HD 1024 /* model.c refuses head_dim > 1024 */
#define MAX_GRID 8192   /* grid-stride kernels never need more blocks */

/* A weight as the kernels and cuBLAS see it: a device pointer. */
struct dw {
    const void *p; /* NULL: absent (biases) */
    int dt;        /* enum thaw_dtype: F32, F16 or BF16 */
    int rows, cols;
};

struct dlayer {
    struct dw attn_norm, q, k, v, o, q_bias, k_bias, v_bias;
    struct dw ffn_norm, gate, up, down;
};

struct eng_cuda {
    int device;
    char name[320];
    cudaStream_t st;
    cublasHandle_t blas;
    int L, H, I, nh, nkv, hd, qd, kvd, V;
    int ctx, max_seqs, max_tok, max_logit_rows, window, fast_act;
    float eps;
    struct dw embed, norm, lm_head;
    struct dlayer *layers; /* host array [L] of device pointers */
    void **owned;          /* [n_owned] device copies of host partitions, or NULL */
    uint32_t n_owned;
    float *kc, *vc;        /* [max_seqs][L][ctx][kvd] */
    float *cos_t, *sin_t;  /* [ctx][hd / 2] */
    float *x;              /* [max_tok][H] residual stream */
    float *xb;             /* [max_tok][H] normed input of a block */
    float *q, *k, *v;      /* [max_tok][qd], [max_tok][kvd] x2 projections */
    float *att;            /* [max_tok][qd] attention output */
    float *hb, *hb2;       /* [max_tok][I] gate, up */
    void *act;             /* 16-bit GEMM input: [2][rows][in] (hi, then lo) */
    float *split;          /* GEMM output of hi and lo halves: [2][rows][out] */
    float *logits_d;       /* [max_logit_rows][V] */
    float *logits_h;       /* pinned, same shape */
    void *stage_d, *stage_h;     /* the batch then the logits row map, uploaded in one copy */
    struct eng_btok *batch_d;    /* [max_tok] inside stage_d */
    int32_t *rows_d;             /* [max_logit_rows]: batch index of each logits row, -1 none */
    size_t stage_bytes;
};

/* Return THAW_ECUDA naming the call when a CUDA runtime call fails. */
#define CU(call)                                                                               \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess)                                                                 \
            return THAW_FAIL(THAW_ECUDA, "%s: %s", #call, cudaGetErrorString(e_));            \
    } while (0)

/* After a kernel launch: launch errors (bad configuration) are reported here,
 * faults inside the kernel at the next synchronising call. */
#define LAUNCHED(what)                                                                         \
    do {                                                                                       \
        cudaError_t e_ = cudaGetLastError();                                                   \
        if (e_ != cudaSuccess)                                                                 \
            return THAW_FAIL(THAW_ECUDA, "launching %s: %s", (what), cudaGetErrorString(e_)); \
    } while (0)

/* ---------------------------------------------------------------- device helpers */

__device__ __forceinline__ float wload(const void *p, int dt, size_t i)
{
    if (dt == THAW_DTYPE_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (dt == THAW_DTYPE_F16)
        return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

template <typename T> __device__ __forceinline__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/*
 * Sum (or max) over the block; every thread gets the result. blockDim.x is
 * a multiple of 32 and at most 1024, red has 33 slots. Every thread of the
 * block must call it (it holds barriers).
 */
template <typename T> __device__ T block_sum(T v, T *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    if (w == 0) {
        T s = lane < nw ? red[lane] : (T)0;
        s = warp_sum(s);
        if (lane == 0)
            red[32] = s;
    }
    __syncthreads();
    T r = red[32];
    __syncthreads(); /* all have read red[32] before a next call writes red */
    return r;
}

__device__ float block_max(float v, float *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    if (w == 0) {
        float s = lane < nw ? red[lane] : -INFINITY;
        s = warp_max(s);
        if (lane == 0)
            red[32] = s;
    }
    __syncthreads();
    float r = red[32];
    __syncthreads();
    return r;
}

/* ---------------------------------------------------------------- kernels */

/* x[t][:] = f32(embed[tok_t][:]); one block per token. */
__global__ void embed_kernel(float *x, const void *emb, int dt, int H, const struct eng_btok *b)
{
    int t = blockIdx.x;
    size_t row = (size_t)b[t].tok * (size_t)H;
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        x[(size_t)t * H + i] = wload(emb, dt, row + i);
}

/*
 * out[r][:] = x[src][:] * rsqrt(mean(x[src]^2) + eps) * w, one block per
 * output row r; src = rows[r] (rows NULL: src = r), rows[r] < 0 writes zeros.
 * As eng_rmsnorm: the sum of squares in double, the scale in float.
 */
__global__ void rmsnorm_kernel(float *out, const float *x, const void *w, int dt, int H, float eps,
                               const int32_t *rows)
{
    __shared__ double red[33];
    int r = blockIdx.x, src = rows ? rows[r] : r;
    float *o = out + (size_t)r * H;
    if (src < 0) { /* uniform over the block: no thread reaches the barriers */
        for (int i = threadIdx.x; i < H; i += blockDim.x)
            o[i] = 0.0f;
        return;
    }
    const float *xr = x + (size_t)src * H;
    double ss = 0;
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        ss += (double)xr[i] * (double)xr[i];
    ss = block_sum(ss, red);
    float inv = (float)(1.0 / sqrt(ss / H + (double)eps));
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        o[i] = (xr[i] * inv) * wload(w, dt, (size_t)i);
}

/*
 * The 16-bit GEMM input from n f32 activations: act[i] = hi = round(x[i]),
 * and with parts == 2 also act[n + i] = lo = round(x[i] - hi). x - hi is
 * exact in f32, so hi + lo carries ~16 significant bits (bf16) or ~22 (f16)
 * where hi alone has 8 or 11. F16 clamps to its finite range first.
 */
__global__ void split_kernel(void *act, const float *x, size_t n, int dt, int parts)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        if (dt == THAW_DTYPE_BF16) {
            __nv_bfloat16 *a = (__nv_bfloat16 *)act;
            __nv_bfloat16 hi = __float2bfloat16(v);
            a[i] = hi;
            if (parts == 2)
                a[n + i] = __float2bfloat16(v - __bfloat162float(hi));
        } else {
            __half *a = (__half *)act;
            float vc = fminf(fmaxf(v, -65504.0f), 65504.0f);
            __half hi = __float2half(vc);
            a[i] = hi;
            if (parts == 2)
                a[n + i] = __float2half(vc - __half2float(hi));
        }
    }
}

/* y[t][o] (+)= s[t][o] + s[n + t][o]: the hi and lo halves of a split GEMM. */
__global__ void combine_kernel(float *y, const float *s, size_t n_elems, int accumulate)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_elems;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = s[i] + s[n_elems + i];
        y[i] = accumulate ? y[i] + v : v;
    }
}

/*
 * Per token (one block each): add the q/k/v biases (NULL: none), rotate q
 * and k (half-split, as HF's rotate_half) with the tables at the token's
 * position, and store k and v into the cache at (slot, layer, pos). q is
 * rotated in place; k and v are read from the projections.
 */
__global__ void qkv_kernel(float *q, const float *k, const float *v, const void *bq,
                           const void *bk, const void *bv, int bdt, float *kc, float *vc,
                           const float *cos_t, const float *sin_t, const struct eng_btok *b,
                           int nh, int nkv, int hd, int L, int layer, int ctx)
{
    int t = blockIdx.x, hh = hd / 2, qd = nh * hd, kvd = nkv * hd;
    int pos = b[t].pos, slot = b[t].slot;
    const float *cs = cos_t + (size_t)pos * hh, *sn = sin_t + (size_t)pos * hh;
    float *qt = q + (size_t)t * qd;
    for (int i = threadIdx.x; i < nh * hh; i += blockDim.x) {
        int h = i / hh, j = i - h * hh, ia = h * hd + j, ib = ia + hh;
        float a = qt[ia], c = qt[ib];
        if (bq) {
            a += wload(bq, bdt, (size_t)ia);
            c += wload(bq, bdt, (size_t)ib);
        }
        qt[ia] = a * cs[j] - c * sn[j];
        qt[ib] = c * cs[j] + a * sn[j];
    }
    size_t at = (((size_t)slot * L + layer) * (size_t)ctx + (size_t)pos) * (size_t)kvd;
    const float *kt = k + (size_t)t * kvd, *vt = v + (size_t)t * kvd;
    for (int i = threadIdx.x; i < nkv * hh; i += blockDim.x) {
        int h = i / hh, j = i - h * hh, ia = h * hd + j, ib = ia + hh;
        float a = kt[ia], c = kt[ib];
        if (bk) {
            a += wload(bk, bdt, (size_t)ia);
            c += wload(bk, bdt, (size_t)ib);
        }
        kc[at + ia] = a * cs[j] - c * sn[j];
        kc[at + ib] = c * cs[j] + a * sn[j];
    }
    for (int i = threadIdx.x; i < kvd; i += blockDim.x)
        vc[at + i] = vt[i] + (bv ? wload(bv, bdt, (size_t)i) : 0.0f);
}

/*
 * Causal attention of one (token, head) per block over keys p0..pos of the
 * token's slot: tiles of ATT_TILE keys are scored into shared memory (one
 * warp per key, lanes over head_dim), then folded into a running max m, sum
 * l and output acc with the usual rescale by exp(m_old - m_new), so any
 * context length fits. Output att[t][h*hd..] = acc / l.
 */
__global__ void __launch_bounds__(ATT_THREADS)
attn_kernel(float *out, const float *q, const float *kc, const float *vc,
            const struct eng_btok *b, int nh, int nkv, int hd, int L, int layer, int ctx,
            int window, float scale)
{
    __shared__ float q_s[ATT_MAX_HD], acc[ATT_MAX_HD], sc[ATT_TILE], red[33];
    int t = blockIdx.x, h = blockIdx.y, kvh = h / (nh / nkv);
    int qd = nh * hd, kvd = nkv * hd;
    int pos = b[t].pos, slot = b[t].slot;
    int p0 = window && pos >= window ? pos - window + 1 : 0;
    size_t base = ((size_t)slot * L + layer) * (size_t)ctx;
    const float *K = kc + base * kvd + (size_t)kvh * hd, *V = vc + base * kvd + (size_t)kvh * hd;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    for (int d = tid; d < hd; d += blockDim.x) {
        q_s[d] = q[(size_t)t * qd + (size_t)h * hd + d];
        acc[d] = 0.0f;
    }
    __syncthreads();
    float m = -INFINITY, l = 0.0f;
    for (int ts = p0; ts <= pos; ts += ATT_TILE) {
        int nt = pos + 1 - ts < ATT_TILE ? pos + 1 - ts : ATT_TILE;
        for (int i = warp; i < nt; i += nw) {
            const float *kp = K + (size_t)(ts + i) * kvd;
            float s = 0.0f;
            for (int d = lane; d < hd; d += 32)
                s += q_s[d] * kp[d];
            s = warp_sum(s);
            if (lane == 0)
                sc[i] = s * scale;
        }
        __syncthreads();
        float lm = -INFINITY;
        for (int i = tid; i < nt; i += blockDim.x)
            lm = fmaxf(lm, sc[i]);
        float mn = fmaxf(m, block_max(lm, red));
        float corr = expf(m - mn); /* 0 on the first tile (m = -inf, mn finite) */
        float ls = 0.0f;
        for (int i = tid; i < nt; i += blockDim.x) {
            float e = expf(sc[i] - mn);
            sc[i] = e;
            ls += e;
        }
        l = l * corr + block_sum(ls, red); /* its barriers publish sc */
        for (int d = tid; d < hd; d += blockDim.x) {
            float a = acc[d] * corr;
            for (int i = 0; i < nt; i++)
                a += sc[i] * V[(size_t)(ts + i) * kvd + d];
            acc[d] = a;
        }
        m = mn;
        __syncthreads(); /* sc is rewritten by the next tile */
    }
    float inv = 1.0f / l;
    for (int d = tid; d < hd; d += blockDim.x)
        out[(size_t)t * qd + (size_t)h * hd + d] = acc[d] * inv;
}

/* a = silu(a) * b, as engine.c: a / (1 + exp(-a)) * b. */
__global__ void silu_mul_kernel(float *a, const float *b, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = a[i];
        a[i] = x / (1.0f + expf(-x)) * b[i];
    }
}

static unsigned grid_for(size_t n)
{
    size_t g = (n + ELT_THREADS - 1) / ELT_THREADS;
    return (unsigned)(g == 0 ? 1 : g < MAX_GRID ? g : MAX_GRID);
}

/* ---------------------------------------------------------------- GEMM */

/*
 * Y = X · W^T in row-major terms: X [n][K] (activations), W [O][K] (a
 * weight as stored: one row per output), Y [n][O], all contiguous.
 *
 * cuBLAS is column-major. A row-major R x C buffer with leading dimension C
 * is, read column-major, the C x R matrix R^T with ld C. So the buffers are,
 * column-major: W' = W^T (K x O, ld K), X' = X^T (K x n, ld K), and the
 * result buffer must hold Y' = Y^T (O x n, ld O). Y^T = (X W^T)^T = W X^T =
 * (W')^T X'. Hence cublasGemmEx(transa = T, transb = N, m = O, n = n, k = K,
 * A = W with lda = K (op(A) = W'^T is O x K; A as stored is K x O), B = X
 * with ldb = K (K x n), C = Y with ldc = O (O x n)). beta 1 accumulates
 * into Y (the residual adds).
 *
 * Types: A and B share a type (F32, F16 or BF16), C is F32, compute
 * CUBLAS_COMPUTE_32F with float alpha/beta - combinations cublasGemmEx
 * lists (BF16/BF16->F32, F16/F16->F32, F32/F32->F32). F32 x F32 with
 * COMPUTE_32F is plain fp32 (no TF32).
 */
static int gemm(struct eng_cuda *c, const void *W, cudaDataType wt, const void *X, float *Y,
                int O, int n, int K, float beta)
{
    const float alpha = 1.0f;
    cublasStatus_t s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, O, n, K, &alpha, W, wt, K,
                                    X, wt, K, &beta, Y, CUDA_R_32F, O, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return THAW_FAIL(THAW_ECUDA, "cublasGemmEx (m=%d n=%d k=%d): %s", O, n, K,
                         cublasGetStatusString(s));
    return 0;
}

/*
 * y[n][w->rows] (+)= x[n][w->cols] · W^T. F32 weights take x as is. 16-bit
 * weights need 16-bit inputs of the same type (cuBLAS has no BF16 x F32):
 * x is split into hi and lo halves stacked as 2n input columns, one GEMM
 * reads the weights once for both, and combine_kernel adds the halves (and
 * the residual). fast_act rounds x once instead (n columns, straight into y).
 */
static int linear(struct eng_cuda *c, const struct dw *w, const float *x, int n, float *y,
                  int accumulate)
{
    int O = w->rows, K = w->cols;
    float beta = accumulate ? 1.0f : 0.0f;
    if (w->dt == THAW_DTYPE_F32)
        return gemm(c, w->p, CUDA_R_32F, x, y, O, n, K, beta);
    cudaDataType t = w->dt == THAW_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    int parts = c->fast_act ? 1 : 2;
    size_t ne = (size_t)n * K;
    split_kernel<<<grid_for(ne), ELT_THREADS, 0, c->st>>>(c->act, x, ne, w->dt, parts);
    LAUNCHED("split_kernel");
    if (parts == 1)
        return gemm(c, w->p, t, c->act, y, O, n, K, beta);
    int rc = gemm(c, w->p, t, c->act, c->split, O, 2 * n, K, 0.0f);
    if (rc)
        return rc;
    size_t no = (size_t)n * O;
    combine_kernel<<<grid_for(no), ELT_THREADS, 0, c->st>>>(y, c->split, no, accumulate);
    LAUNCHED("combine_kernel");
    return 0;
}

/* ---------------------------------------------------------------- set-up */

static int dalloc(void **p, size_t bytes, const char *what)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        *p = NULL;
        return THAW_FAIL(THAW_ECUDA, "cudaMalloc %s (%zu MiB): %s", what, bytes >> 20,
                         cudaGetErrorString(e));
    }
    return 0;
}

/* The device address of a model weight: itself when the model is bound to
 * device memory, else the same offset inside the partition's device copy. */
static int bind_w(struct eng_cuda *c, const struct thaw_model *m, const struct eng_weight *w,
                  struct dw *out)
{
    out->dt = (int)w->dt;
    out->rows = w->rows;
    out->cols = w->cols;
    out->p = NULL;
    if (!w->p)
        return 0;
    if (m->device_ptrs) {
        out->p = w->p;
        return 0;
    }
    uintptr_t p = (uintptr_t)w->p;
    size_t bytes = (size_t)w->rows * (size_t)w->cols * thaw_dtype_size(w->dt);
    for (uint32_t i = 0; i < m->n_parts; i++) {
        uintptr_t b = (uintptr_t)m->parts[i].base;
        if (b && c->owned[i] && p >= b && p - b + bytes <= m->parts[i].bytes) {
            out->p = (const char *)c->owned[i] + (p - b);
            return 0;
        }
    }
    return THAW_FAIL(THAW_EINVAL, "CUDA backend: a weight lies outside every partition");
}

static int bind_layer(struct eng_cuda *c, const struct thaw_model *m, const struct eng_layer *s,
                      struct dlayer *d)
{
    int rc;
    if ((rc = bind_w(c, m, &s->attn_norm, &d->attn_norm)) || (rc = bind_w(c, m, &s->q, &d->q)) ||
        (rc = bind_w(c, m, &s->k, &d->k)) || (rc = bind_w(c, m, &s->v, &d->v)) ||
        (rc = bind_w(c, m, &s->o, &d->o)) || (rc = bind_w(c, m, &s->q_bias, &d->q_bias)) ||
        (rc = bind_w(c, m, &s->k_bias, &d->k_bias)) ||
        (rc = bind_w(c, m, &s->v_bias, &d->v_bias)) ||
        (rc = bind_w(c, m, &s->ffn_norm, &d->ffn_norm)) ||
        (rc = bind_w(c, m, &s->gate, &d->gate)) || (rc = bind_w(c, m, &s->up, &d->up)) ||
        (rc = bind_w(c, m, &s->down, &d->down)))
        return rc;
    /* qkv_kernel reads the three biases with one dtype. */
    if (d->q_bias.p && (d->k_bias.dt != d->q_bias.dt || d->v_bias.dt != d->q_bias.dt ||
                        !d->k_bias.p || !d->v_bias.p))
        return THAW_FAIL(THAW_ENOTSUP, "CUDA backend: q/k/v biases must all be present and "
                         "share one dtype");
    return 0;
}

/* Weights: checked in place, or one copy per host partition. */
static int setup_weights(struct eng_cuda *c, const struct thaw_model *m)
{
    if (m->device_ptrs) {
        cudaPointerAttributes a;
        CU(cudaPointerGetAttributes(&a, m->embed.p));
        if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
            return THAW_FAIL(THAW_EINVAL, "CUDA backend: the model is marked as bound to device "
                             "memory but its weights are not device memory");
        if (a.device != c->device)
            return THAW_FAIL(THAW_EINVAL, "CUDA backend: the weights are on device %d, the "
                             "engine runs on device %d", a.device, c->device);
    } else {
        c->owned = (void **)thaw_calloc(m->n_parts ? m->n_parts : 1, sizeof *c->owned);
        if (!c->owned)
            return -ENOMEM;
        c->n_owned = m->n_parts;
        for (uint32_t i = 0; i < m->n_parts; i++) {
            if (!m->parts[i].base)
                continue;
            int rc = dalloc(&c->owned[i], m->parts[i].bytes, "weights (one partition)");
            if (rc)
                return rc;
            CU(cudaMemcpy(c->owned[i], m->parts[i].base, m->parts[i].bytes,
                          cudaMemcpyHostToDevice));
        }
    }
    int rc;
    if ((rc = bind_w(c, m, &m->embed, &c->embed)) || (rc = bind_w(c, m, &m->norm, &c->norm)) ||
        (rc = bind_w(c, m, &m->lm_head, &c->lm_head)))
        return rc;
    c->layers = (struct dlayer *)thaw_calloc((size_t)c->L, sizeof *c->layers);
    if (!c->layers)
        return -ENOMEM;
    for (int l = 0; l < c->L; l++)
        if ((rc = bind_layer(c, m, &m->layers[l], &c->layers[l])))
            return rc;
    return 0;
}

static int setup(struct eng_cuda *c, const struct thaw_model *m, const struct eng_cuda_opts *o)
{
    const struct thaw_model_config *cfg = &m->cfg;
    c->L = cfg->n_layers;
    c->H = cfg->hidden;
    c->I = cfg->intermediate;
    c->nh = cfg->n_heads;
    c->nkv = cfg->n_kv_heads;
    c->hd = cfg->head_dim;
    c->qd = c->nh * c->hd;
    c->kvd = c->nkv * c->hd;
    c->V = cfg->vocab;
    c->eps = cfg->rms_eps;
    c->window = m->sliding_window;
    c->ctx = o->ctx;
    c->max_seqs = o->max_seqs;
    c->max_tok = o->max_tok;
    c->max_logit_rows = o->max_logit_rows;
    c->fast_act = o->fast_act;
    if (c->hd > ATT_MAX_HD || c->hd % 2 || c->max_tok < 1 || c->max_logit_rows < 1)
        return THAW_FAIL(THAW_EINVAL, "CUDA backend: head_dim %d (even, <= %d) or batch limits "
                         "out of range", c->hd, ATT_MAX_HD);

    CU(cudaSetDevice(c->device));
    cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, c->device));
    snprintf(c->name, sizeof c->name, "cuda (%s)", prop.name);
    CU(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking));
    cublasStatus_t bs = cublasCreate(&c->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        return THAW_FAIL(THAW_ECUDA, "cublasCreate: %s", cublasGetStatusString(bs));
    }
    if ((bs = cublasSetStream(c->blas, c->st)) != CUBLAS_STATUS_SUCCESS)
        return THAW_FAIL(THAW_ECUDA, "cublasSetStream: %s", cublasGetStatusString(bs));

    int rc = setup_weights(c, m);
    if (rc)
        return rc;

    size_t T = (size_t)c->max_tok, R = (size_t)c->max_logit_rows;
    size_t rows = T > R ? T : R; /* most rows any GEMM sees */
    size_t wide = (size_t)c->H; /* widest GEMM input or layer output */
    if ((size_t)c->I > wide)
        wide = (size_t)c->I;
    if ((size_t)c->qd > wide)
        wide = (size_t)c->qd;
    size_t split_out = T * wide > R * (size_t)c->V ? T * wide : R * (size_t)c->V;
    size_t kv = (size_t)c->max_seqs * c->L * (size_t)c->ctx * c->kvd;
    size_t hh = (size_t)c->hd / 2, f = sizeof(float);
    c->stage_bytes = T * sizeof(struct eng_btok) + R * sizeof(int32_t);
    if ((rc = dalloc((void **)&c->kc, kv * f, "K cache")) ||
        (rc = dalloc((void **)&c->vc, kv * f, "V cache")) ||
        (rc = dalloc((void **)&c->cos_t, (size_t)c->ctx * hh * f, "rope cos")) ||
        (rc = dalloc((void **)&c->sin_t, (size_t)c->ctx * hh * f, "rope sin")) ||
        (rc = dalloc((void **)&c->x, T * c->H * f, "x")) ||
        (rc = dalloc((void **)&c->xb, rows * c->H * f, "xb")) ||
        (rc = dalloc((void **)&c->q, T * c->qd * f, "q")) ||
        (rc = dalloc((void **)&c->k, T * c->kvd * f, "k")) ||
        (rc = dalloc((void **)&c->v, T * c->kvd * f, "v")) ||
        (rc = dalloc((void **)&c->att, T * c->qd * f, "att")) ||
        (rc = dalloc((void **)&c->hb, T * c->I * f, "hb")) ||
        (rc = dalloc((void **)&c->hb2, T * c->I * f, "hb2")) ||
        (rc = dalloc(&c->act, 2 * rows * wide * sizeof(uint16_t), "act16")) ||
        (rc = dalloc((void **)&c->split, 2 * split_out * f, "split")) ||
        (rc = dalloc((void **)&c->logits_d, R * c->V * f, "logits")) ||
        (rc = dalloc(&c->stage_d, c->stage_bytes, "batch")))
        return rc;
    c->batch_d = (struct eng_btok *)c->stage_d;
    c->rows_d = (int32_t *)(c->batch_d + T);
    CU(cudaHostAlloc((void **)&c->logits_h, R * c->V * f, cudaHostAllocDefault));
    CU(cudaHostAlloc(&c->stage_h, c->stage_bytes, cudaHostAllocDefault));
    /* Zeroed like the CPU's calloc; nothing reads a position before it is written. */
    CU(cudaMemset(c->kc, 0, kv * f));
    CU(cudaMemset(c->vc, 0, kv * f));
    CU(cudaMemcpy(c->cos_t, o->cos_t, (size_t)c->ctx * hh * f, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(c->sin_t, o->sin_t, (size_t)c->ctx * hh * f, cudaMemcpyHostToDevice));
    CU(cudaDeviceSynchronize());
    THAW_LOG(THAW_LOG_DEBUG, "engine", "cuda_create",
             "device=%d name=\"%s\" weights=%s kv_mib=%zu act=%s", c->device, prop.name,
             m->device_ptrs ? "in-place" : "copied", kv * 2 * f >> 20,
             c->fast_act ? "rounded" : "split");
    return 0;
}

int eng_cuda_create(const struct thaw_model *m, const struct eng_cuda_opts *o,
                    struct eng_cuda **out)
{
    *out = NULL;
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev <= 0) {
        (void)cudaGetLastError(); /* clear the sticky "no device" status */
        return THAW_FAIL(THAW_ENOTSUP, "CUDA backend unavailable: no usable CUDA device (%s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (o->device < 0 || o->device >= n_dev)
        return THAW_FAIL(THAW_ENOTSUP, "CUDA backend unavailable: device %d requested, %d "
                         "present", o->device, n_dev);
    struct eng_cuda *c = (struct eng_cuda *)thaw_calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->device = o->device;
    int rc = setup(c, m, o);
    if (rc) {
        thaw_err_ctx("CUDA backend on device %d", o->device);
        eng_cuda_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

void eng_cuda_destroy(struct eng_cuda *c)
{
    if (!c)
        return;
    (void)cudaSetDevice(c->device);
    if (c->st)
        (void)cudaStreamSynchronize(c->st);
    if (c->blas)
        (void)cublasDestroy(c->blas);
    void *dev[] = { c->kc, c->vc, c->cos_t, c->sin_t, c->x, c->xb, c->q, c->k, c->v, c->att,
                    c->hb, c->hb2, c->act, c->split, c->logits_d, c->stage_d };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i])
            (void)cudaFree(dev[i]);
    for (uint32_t i = 0; c->owned && i < c->n_owned; i++)
        if (c->owned[i])
            (void)cudaFree(c->owned[i]);
    if (c->logits_h)
        (void)cudaFreeHost(c->logits_h);
    if (c->stage_h)
        (void)cudaFreeHost(c->stage_h);
    if (c->st)
        (void)cudaStreamDestroy(c->st);
    thaw_free(c->owned);
    thaw_free(c->layers);
    thaw_free(c);
}

float *eng_cuda_logits(struct eng_cuda *c)
{
    return c->logits_h;
}

const char *eng_cuda_name(const struct eng_cuda *c)
{
    return c->name;
}

/* ---------------------------------------------------------------- forward */

int eng_cuda_forward(struct eng_cuda *c, const struct eng_btok *batch, int n)
{
    if (n <= 0 || n > c->max_tok)
        return THAW_FAIL(THAW_EINVAL, "CUDA forward: %d tokens (1..%d)", n, c->max_tok);
    /* The batch and the map from logits row to batch index, checked here so
     * no kernel indexes out of bounds. */
    struct eng_btok *sb = (struct eng_btok *)c->stage_h;
    int32_t *rows = (int32_t *)(sb + c->max_tok);
    memcpy(sb, batch, (size_t)n * sizeof *batch);
    for (int r = 0; r < c->max_logit_rows; r++)
        rows[r] = -1;
    int nl = 0;
    for (int t = 0; t < n; t++) {
        const struct eng_btok *bt = &batch[t];
        if (bt->tok < 0 || bt->tok >= c->V || bt->pos < 0 || bt->pos >= c->ctx || bt->slot < 0 ||
            bt->slot >= c->max_seqs || bt->logit_row >= c->max_logit_rows)
            return THAW_FAIL(THAW_EINVAL, "CUDA forward: token %d (id %d pos %d slot %d row %d) "
                             "out of range", t, bt->tok, bt->pos, bt->slot, bt->logit_row);
        if (bt->logit_row >= 0) {
            rows[bt->logit_row] = t;
            if (bt->logit_row + 1 > nl)
                nl = bt->logit_row + 1;
        }
    }
    cudaStream_t st = c->st;
    int H = c->H, rc;
    float scale = 1.0f / sqrtf((float)c->hd);
    CU(cudaSetDevice(c->device));
    CU(cudaMemcpyAsync(c->stage_d, c->stage_h, c->stage_bytes, cudaMemcpyHostToDevice, st));
    embed_kernel<<<n, NORM_THREADS, 0, st>>>(c->x, c->embed.p, c->embed.dt, H, c->batch_d);
    LAUNCHED("embed_kernel");
    for (int l = 0; l < c->L; l++) {
        const struct dlayer *Ly = &c->layers[l];
        rmsnorm_kernel<<<n, NORM_THREADS, 0, st>>>(c->xb, c->x, Ly->attn_norm.p,
                                                   Ly->attn_norm.dt, H, c->eps, NULL);
        LAUNCHED("rmsnorm_kernel");
        if ((rc = linear(c, &Ly->q, c->xb, n, c->q, 0)) ||
            (rc = linear(c, &Ly->k, c->xb, n, c->k, 0)) ||
            (rc = linear(c, &Ly->v, c->xb, n, c->v, 0)))
            return rc;
        qkv_kernel<<<n, NORM_THREADS, 0, st>>>(c->q, c->k, c->v, Ly->q_bias.p, Ly->k_bias.p,
                                               Ly->v_bias.p, Ly->q_bias.dt, c->kc, c->vc,
                                               c->cos_t, c->sin_t, c->batch_d, c->nh, c->nkv,
                                               c->hd, c->L, l, c->ctx);
        LAUNCHED("qkv_kernel");
        attn_kernel<<<dim3((unsigned)n, (unsigned)c->nh), ATT_THREADS, 0, st>>>(
            c->att, c->q, c->kc, c->vc, c->batch_d, c->nh, c->nkv, c->hd, c->L, l, c->ctx,
            c->window, scale);
        LAUNCHED("attn_kernel");
        if ((rc = linear(c, &Ly->o, c->att, n, c->x, 1)))
            return rc;
        rmsnorm_kernel<<<n, NORM_THREADS, 0, st>>>(c->xb, c->x, Ly->ffn_norm.p, Ly->ffn_norm.dt,
                                                   H, c->eps, NULL);
        LAUNCHED("rmsnorm_kernel");
        if ((rc = linear(c, &Ly->gate, c->xb, n, c->hb, 0)) ||
            (rc = linear(c, &Ly->up, c->xb, n, c->hb2, 0)))
            return rc;
        size_t ni = (size_t)n * c->I;
        silu_mul_kernel<<<grid_for(ni), ELT_THREADS, 0, st>>>(c->hb, c->hb2, ni);
        LAUNCHED("silu_mul_kernel");
        if ((rc = linear(c, &Ly->down, c->hb, n, c->x, 1)))
            return rc;
    }
    if (nl) {
        /* Final norm of the rows that want logits, packed by logits row. */
        rmsnorm_kernel<<<nl, NORM_THREADS, 0, st>>>(c->xb, c->x, c->norm.p, c->norm.dt, H,
                                                    c->eps, c->rows_d);
        LAUNCHED("rmsnorm_kernel (final)");
        if ((rc = linear(c, &c->lm_head, c->xb, nl, c->logits_d, 0)))
            return rc;
        CU(cudaMemcpyAsync(c->logits_h, c->logits_d, (size_t)nl * c->V * sizeof(float),
                           cudaMemcpyDeviceToHost, st));
    }
    /* Also keeps stage_h (being uploaded) untouched until the copy is done. */
    CU(cudaStreamSynchronize(st));
    return 0;
}
