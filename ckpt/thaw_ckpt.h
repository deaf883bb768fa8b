/*
 * thaw_ckpt.h - the Thaw checkpoint format: dtypes, a strict safetensors
 * reader, the manifest (manifest.json + part-<i>.bin with 4 KiB-aligned
 * tensors and per-chunk xxh3 checksums), the converter and verification.
 */
#ifndef THAW_CKPT_H
#define THAW_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/thaw_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define THAW_CKPT_VERSION 1
#define THAW_CKPT_ALIGN 4096u             /* every tensor and partition size */
#define THAW_CKPT_CHUNK_BYTES (16u << 20) /* default checksum/load chunk */
#define THAW_CKPT_MAX_DIMS 8
#define THAW_ST_MAX_HEADER 100000000u     /* safetensors' own MAX_HEADER_SIZE */

/* Tensor element types Thaw stores. The names are safetensors' dtype strings. */
enum thaw_dtype {
    THAW_DTYPE_BOOL, THAW_DTYPE_U8, THAW_DTYPE_I8, THAW_DTYPE_I16, THAW_DTYPE_U16,
    THAW_DTYPE_F16, THAW_DTYPE_BF16, THAW_DTYPE_I32, THAW_DTYPE_U32, THAW_DTYPE_F32,
    THAW_DTYPE_F64, THAW_DTYPE_I64, THAW_DTYPE_U64,
    THAW_DTYPE_COUNT
};

/* "BF16" etc. Never NULL. */
const char *thaw_dtype_name(enum thaw_dtype t);
/* Bytes per element. */
size_t thaw_dtype_size(enum thaw_dtype t);
/* Parse a safetensors dtype string. THAW_EDTYPE names known-but-unsupported
 * types (F8_*, F4, F6_*, C64) and unknown strings alike. */
int thaw_dtype_parse(const char *s, enum thaw_dtype *out) THAW_MUST_CHECK;
/* Whether t is a floating type the converter can cast (F16, BF16, F32, F64). */
int thaw_dtype_is_float(enum thaw_dtype t);
/* Cast n elements from (src, st) to (dst, dt); both float types. Round to
 * nearest even, NaN stays NaN. */
void thaw_dtype_cast(void *dst, enum thaw_dtype dt, const void *src, enum thaw_dtype st, size_t n);

/* One tensor of a safetensors file or of a Thaw checkpoint. */
struct thaw_tensor_info {
    const char *name;
    enum thaw_dtype dtype;
    int n_dims;
    int64_t shape[THAW_CKPT_MAX_DIMS];
    uint32_t partition; /* Thaw checkpoints only */
    uint64_t offset;    /* bytes: into the data buffer (safetensors) or partition file */
    uint64_t bytes;
};

/* ---------------------------------------------------------------- safetensors */

struct thaw_st;

/*
 * Parse and validate a whole safetensors file held in data[0..len) as
 * strictly as the reference: header size limit, '{' first, string-only
 * __metadata__, no duplicate names, known dtypes, byte sizes that match the
 * shapes, no holes or overlaps, buffer fully covered to end of file.
 * name labels errors. data is borrowed and must outlive *out.
 */
int thaw_st_parse(const void *data, size_t len, const char *name, struct thaw_st **out)
    THAW_MUST_CHECK;
/* mmap path read-only and parse it. The mapping lives until thaw_st_close. */
int thaw_st_open(const char *path, struct thaw_st **out) THAW_MUST_CHECK;
void thaw_st_close(struct thaw_st *st);
size_t thaw_st_n_tensors(const struct thaw_st *st);
/* Tensor i in file order (ascending offset). Borrowed until close. */
const struct thaw_tensor_info *thaw_st_tensor(const struct thaw_st *st, size_t i);
/* Pointer to a tensor's bytes inside the file. Borrowed until close. */
const void *thaw_st_data(const struct thaw_st *st, const struct thaw_tensor_info *t);

/* ---------------------------------------------------------------- manifest */

struct thaw_partition_info {
    const char *file;       /* "part-0.bin" */
    uint64_t bytes;         /* file size, a multiple of THAW_CKPT_ALIGN */
    int first_layer, last_layer; /* -1 when the partition holds no layer */
    uint32_t n_chunks;
    const uint64_t *chunk_xxh3; /* [n_chunks], over chunk_bytes slices */
};

struct thaw_manifest;

/* Parse and validate manifest JSON (version, partitions, tensor bounds,
 * alignment, overlaps). name labels errors. */
int thaw_manifest_parse(const char *json, size_t len, const char *name,
                        struct thaw_manifest **out) THAW_MUST_CHECK;
/* Read DIR/manifest.json and parse it. */
int thaw_manifest_load(const char *ckpt_dir, struct thaw_manifest **out) THAW_MUST_CHECK;
void thaw_manifest_destroy(struct thaw_manifest *m);

uint32_t thaw_manifest_n_partitions(const struct thaw_manifest *m);
const struct thaw_partition_info *thaw_manifest_partition(const struct thaw_manifest *m,
                                                          uint32_t i);
size_t thaw_manifest_n_tensors(const struct thaw_manifest *m);
const struct thaw_tensor_info *thaw_manifest_tensor(const struct thaw_manifest *m, size_t i);
/* Index of a tensor by name, or THAW_ENOTFOUND. */
int64_t thaw_manifest_find(const struct thaw_manifest *m, const char *name);
/* Checksum chunk size in bytes. */
uint64_t thaw_manifest_chunk_bytes(const struct thaw_manifest *m);
/* Sum of partition sizes. */
uint64_t thaw_manifest_total_bytes(const struct thaw_manifest *m);
/* Stable identity: 16 hex digits of xxh3 over the manifest bytes. */
const char *thaw_manifest_id(const struct thaw_manifest *m);
/* Model fields ("architecture", "dtype", ...) as a JSON object string;
 * borrowed until destroy. */
const char *thaw_manifest_model_json(const struct thaw_manifest *m);
/* Number of side files (config.json, tokenizer.json, ...) and their names. */
size_t thaw_manifest_n_files(const struct thaw_manifest *m);
const char *thaw_manifest_file(const struct thaw_manifest *m, size_t i);
/* The exact manifest bytes (for caches and peers). Borrowed until destroy. */
const char *thaw_manifest_raw(const struct thaw_manifest *m, size_t *len);

/* ---------------------------------------------------------------- convert / verify */

enum thaw_convert_dtype { THAW_CONVERT_KEEP, THAW_CONVERT_BF16, THAW_CONVERT_F16, THAW_CONVERT_F32 };

struct thaw_convert_opts {
    enum thaw_convert_dtype dtype; /* float tensors are cast to it; others kept */
    uint32_t n_partitions; /* 0 = 1 */
    size_t chunk_bytes;    /* 0 = THAW_CKPT_CHUNK_BYTES; multiple of THAW_CKPT_ALIGN */
    int force;             /* replace an existing out_dir */
    int progress;          /* print progress lines to stderr */
};

/*
 * Convert a Hugging Face folder (model.safetensors, or shards listed in
 * model.safetensors.index.json, plus config.json and tokenizer files) into a
 * Thaw checkpoint at out_dir, written atomically: a temp directory beside
 * out_dir is filled, fsynced and renamed. Nothing is left on failure.
 */
int thaw_ckpt_convert(const char *hf_dir, const char *out_dir, const struct thaw_convert_opts *o)
    THAW_MUST_CHECK;

/* Check sizes and every chunk checksum of every partition of ckpt_dir.
 * Errors name the file and chunk. */
int thaw_ckpt_verify(const char *ckpt_dir) THAW_MUST_CHECK;

/* Check one chunk of partition p held in memory (chunk index c). */
int thaw_ckpt_check_chunk(const struct thaw_manifest *m, uint32_t p, uint32_t c,
                          const void *data, size_t len) THAW_MUST_CHECK;

/* ---------------------------------------------------------------- GGUF import */

struct thaw_gguf;

/*
 * Parse and validate a whole GGUF file (llama.cpp, versions 2 and 3) held in
 * data[0..len): header, metadata keys of every type (arrays included, no
 * nesting), tensor infos (at most 4 dims, known GGML types, sizes that fit
 * the file, offsets aligned to general.alignment, no duplicates or overlaps).
 * Every count, length and offset is checked against len; errors are
 * THAW_EFORMAT (THAW_EVERSION, THAW_EDTYPE for unknown tensor types) with a
 * message naming the field. name labels errors. data is borrowed and must
 * outlive *out. Writes nothing. Thread-safe (no shared state).
 */
int thaw_gguf_parse(const void *data, size_t len, const char *name,
                    struct thaw_gguf **out) THAW_MUST_CHECK;
/* mmap path read-only and parse it; the mapping lives until thaw_gguf_close. */
int thaw_gguf_open(const char *path, struct thaw_gguf **out) THAW_MUST_CHECK;
/* Release a parsed file (NULL is a no-op). */
void thaw_gguf_close(struct thaw_gguf *g);

/* One tensor of a parsed GGUF file; pointers borrowed until thaw_gguf_close. */
struct thaw_gguf_tensor {
    const char *name; /* not NUL-terminated: name_len bytes */
    size_t name_len;
    uint32_t ggml_type;    /* ggml_type id (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 30 BF16...) */
    const char *type_name; /* "Q4_1" */
    int n_dims;
    uint64_t ne[4];   /* GGUF order, fastest first: ne[0] = HF in_features */
    const void *data; /* inside the file */
    uint64_t bytes;
};

size_t thaw_gguf_n_tensors(const struct thaw_gguf *g);
/* Tensor i in file order, or THAW_ENOTFOUND past the end. */
int thaw_gguf_tensor(const struct thaw_gguf *g, size_t i,
                     struct thaw_gguf_tensor *out) THAW_MUST_CHECK;

/*
 * Convert a GGUF model (architectures llama and qwen2; tensor types F32,
 * F16, BF16, Q8_0, Q4_0, Q4_1, dequantized) into a Thaw checkpoint at
 * out_dir. A Hugging Face folder is written beside out_dir (HF tensor names,
 * llama's Q/K rows un-permuted back to HF's rotate_half layout, config.json,
 * generation_config.json, and tokenizer.json / tokenizer_config.json rebuilt
 * as transformers' GGUF import does from a byte-level BPE ("gpt2") or
 * SentencePiece ("llama") vocabulary), handed to thaw_ckpt_convert with o
 * (o->dtype keep: F16/BF16 stay, quantized and F32 tensors become F32) and
 * removed, also on failure. Unsupported tensor types fail with THAW_EDTYPE
 * naming the tensor; other architectures, tokenizer models and RoPE
 * scalings with THAW_ENOTSUP. Nothing is left at out_dir on failure.
 */
int thaw_gguf_convert(const char *gguf_path, const char *out_dir,
                      const struct thaw_convert_opts *o) THAW_MUST_CHECK;

#ifdef __cplusplus
}
#endif
#endif /* THAW_CKPT_H */
