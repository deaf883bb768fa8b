/*
 * st_writer.h - test helper: write safetensors files and small Hugging Face
 * model folders with deterministic tensor contents, so tests can compare
 * loaded bytes with regenerated ones (independent of Thaw's reader).
 */
#ifndef ST_WRITER_H
#define ST_WRITER_H

#include "ckpt/thaw_ckpt.h"

struct tw_tensor {
    const char *name;
    enum thaw_dtype dtype;
    int n_dims;
    int64_t shape[4];
};

/* Deterministic bytes for a tensor: a PRNG seeded by its name. Float types
 * get finite values in [-1, 1). Caller frees with free(). */
void *tw_data(const struct tw_tensor *t, size_t *bytes);
size_t tw_bytes(const struct tw_tensor *t);

/* Write a safetensors file holding tensors t[0..n) in that order. */
void tw_write_st(const char *path, const struct tw_tensor *t, size_t n);

/* A llama-shaped HF folder: embed, n_layers x (q,k,v,o,gate,up,down, 2 norms),
 * final norm, lm_head; config.json, tokenizer.json. shards > 1 writes
 * model-0000i-of-0000n.safetensors + model.safetensors.index.json. Tensor
 * descriptions go to *out (malloc'd array, names malloc'd), count in *n. */
void tw_make_model(const char *dir, int n_layers, int hidden, enum thaw_dtype dt, int shards,
                   struct tw_tensor **out, size_t *n);
void tw_free_tensors(struct tw_tensor *t, size_t n);

/* Write text to path (test setup). */
void tw_write_text(const char *path, const char *text);

#endif /* ST_WRITER_H */
