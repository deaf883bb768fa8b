/*
 * eng_cuda.h - private to engine/: the CUDA backend (engine/cuda.cu in a
 * CUDA build, engine/cuda_stub.c otherwise). engine.c keeps the batching,
 * sampling and sequences; the backend runs one batched forward pass on the
 * GPU and leaves the requested logits rows in host memory.
 */
#ifndef ENG_CUDA_H
#define ENG_CUDA_H

#include "engine/engine_int.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_cuda;

struct eng_cuda_opts {
    int device;          /* CUDA ordinal */
    int max_seqs, ctx;   /* KV slots and positions per slot */
    int max_tok;         /* most tokens in one forward */
    int max_logit_rows;  /* most logits rows in one forward */
    int fast_act;        /* thaw_engine_opts.gpu_fast_act */
    const float *cos_t, *sin_t; /* host RoPE tables [ctx][head_dim / 2], copied */
};

/*
 * Set up the backend for m: check the device, bind the weights (in place when
 * m->device_ptrs, else one device copy per partition), allocate the KV cache
 * and activations. THAW_ENOTSUP (message starting "CUDA backend unavailable")
 * when the build has no CUDA or no device is usable.
 */
int eng_cuda_create(const struct thaw_model *m, const struct eng_cuda_opts *o,
                    struct eng_cuda **out) THAW_MUST_CHECK;
void eng_cuda_destroy(struct eng_cuda *c);

/* Pinned host buffer of [max_logit_rows][vocab] floats that eng_cuda_forward
 * fills; owned by c (the caller may modify rows: the sampler does). */
float *eng_cuda_logits(struct eng_cuda *c);

/* "cuda (<device name>)". */
const char *eng_cuda_name(const struct eng_cuda *c);

/*
 * The forward pass of engine.c's CPU path on the GPU for batch[0..n): K/V of
 * every token stored at (slot, pos), causal attention of each token over
 * positions <= pos of its slot, and logits of the rows with logit_row >= 0
 * copied to eng_cuda_logits (row r at r * vocab). Synchronous: returns when
 * the logits are in host memory. Owner thread.
 */
int eng_cuda_forward(struct eng_cuda *c, const struct eng_btok *batch, int n) THAW_MUST_CHECK;

#ifdef __cplusplus
}
#endif

#endif /* ENG_CUDA_H */
