/*
 * thaw_engine.h - the inference engine: LLaMA-family models run straight on
 * the loader's buffers (CPU backend, or CUDA with cuBLAS in a CUDA build),
 * the tokenizer (tokenizer.json), chat formats, the sampler and continuous
 * batching of many sequences.
 *
 * Threading: a tokenizer is immutable after load and may be shared by
 * threads. An engine is driven by one thread at a time (submit, step,
 * cancel, export); it runs its own worker threads inside thaw_engine_step.
 */
#ifndef THAW_ENGINE_H
#define THAW_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/thaw_common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct thaw_manifest;

/* ================================================================ tokenizer */

struct thaw_tokenizer;

/*
 * Build a tokenizer from the text of tokenizer.json (required) and
 * tokenizer_config.json (may be NULL: then BOS/EOS come from tokenizer.json's
 * post-processor and added tokens alone). Supports the BPE model with
 * byte-level pre-tokenization (GPT-2, Llama 3, Qwen2 split patterns) and
 * SentencePiece-style BPE with byte fallback (Llama 2, Mistral, TinyLlama).
 * Unknown model types, normalizers, pre-tokenizers or decoders fail with
 * THAW_ENOTSUP naming the type.
 */
int thaw_tok_load(const char *tok_json, size_t tok_len, const char *cfg_json, size_t cfg_len,
                  struct thaw_tokenizer **out) THAW_MUST_CHECK;
/* Read DIR/tokenizer.json and DIR/tokenizer_config.json (the latter optional). */
int thaw_tok_load_dir(const char *dir, struct thaw_tokenizer **out) THAW_MUST_CHECK;
void thaw_tok_destroy(struct thaw_tokenizer *tok);

/*
 * Encode UTF-8 text (len bytes, need not be NUL-terminated) to ids. Added and
 * special tokens in the text are split out first (as HF does by default).
 * add_special: apply the post-processor (e.g. prepend BOS), as HF's
 * add_special_tokens=True. *ids is allocated with thaw_malloc (free with
 * thaw_free); *n may be 0. Invalid UTF-8 is an error (THAW_EINVAL).
 */
int thaw_tok_encode(const struct thaw_tokenizer *tok, const char *text, size_t len,
                    int add_special, int32_t **ids, size_t *n) THAW_MUST_CHECK;
/*
 * Decode ids to UTF-8 as HF's decode(ids, skip_special_tokens=skip_special).
 * Ids without a token string (vocab padding rows) decode to nothing; ids <0
 * are THAW_EINVAL. *text is NUL-terminated, freed with thaw_free.
 */
int thaw_tok_decode(const struct thaw_tokenizer *tok, const int32_t *ids, size_t n,
                    int skip_special, char **text, size_t *len) THAW_MUST_CHECK;

/* Number of ids with a token string (base vocabulary + added tokens). */
size_t thaw_tok_n_tokens(const struct thaw_tokenizer *tok);
/* BOS / EOS ids, -1 when the tokenizer has none. */
int32_t thaw_tok_bos(const struct thaw_tokenizer *tok);
int32_t thaw_tok_eos(const struct thaw_tokenizer *tok);
/* Id of an exact token string ("<|im_end|>"), or -1. */
int32_t thaw_tok_find(const struct thaw_tokenizer *tok, const char *token);
/* The token string of id (raw vocabulary form, e.g. "Ġhello"), or NULL. */
const char *thaw_tok_token(const struct thaw_tokenizer *tok, int32_t id);
int thaw_tok_is_special(const struct thaw_tokenizer *tok, int32_t id);
/* Ids that end a generation: EOS plus the chat end markers the vocabulary
 * has (<|im_end|>, <|eot_id|>, <|end_of_text|>, </s>, <|endoftext|>,
 * <|end|>) as added tokens (plain BPE pieces spelling them are text), EOS
 * first, deduplicated. Writes up to cap ids, returns how many there are. */
size_t thaw_tok_stop_ids(const struct thaw_tokenizer *tok, int32_t *out, size_t cap);

/*
 * Incremental detokenizer for streaming: push ids one by one and get the
 * text they complete. Never returns half a UTF-8 character; the
 * concatenation of all pieces (plus flush) equals thaw_tok_decode of all ids.
 */
struct thaw_detok;
int thaw_detok_create(const struct thaw_tokenizer *tok, int skip_special,
                      struct thaw_detok **out) THAW_MUST_CHECK;
/* Sets piece and len to the new text, borrowed until the next call on d
 * (may be empty). */
int thaw_detok_push(struct thaw_detok *d, int32_t id, const char **piece, size_t *len)
    THAW_MUST_CHECK;
/* Whatever is still held (an incomplete UTF-8 tail becomes U+FFFD). */
int thaw_detok_flush(struct thaw_detok *d, const char **piece, size_t *len) THAW_MUST_CHECK;
void thaw_detok_destroy(struct thaw_detok *d);

/* ================================================================ chat */

enum thaw_chat_format {
    THAW_CHAT_AUTO,    /* detect from tokenizer_config.json's chat_template */
    THAW_CHAT_CHATML,  /* Qwen2/2.5, SmolLM/SmolLM2 */
    THAW_CHAT_LLAMA3,
    THAW_CHAT_LLAMA2,
    THAW_CHAT_MISTRAL,
    THAW_CHAT_ZEPHYR,  /* also TinyLlama-Chat */
};

struct thaw_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
};

/* "chatml", "llama3", "llama2", "mistral", "zephyr", "auto". */
int thaw_chat_format_parse(const char *name, enum thaw_chat_format *out) THAW_MUST_CHECK;
const char *thaw_chat_format_name(enum thaw_chat_format f);
/* The format recognised from the tokenizer's chat template (THAW_CHAT_AUTO
 * when there is none or it is not recognised). */
enum thaw_chat_format thaw_tok_chat_format(const struct thaw_tokenizer *tok);
/*
 * Render messages as the model's chat template would with
 * add_generation_prompt, including the template's default system prompt
 * (Qwen2.5, SmolLM2) when no system message is given and BOS text where the
 * template writes it. Encode the result with add_special = 0.
 * fmt AUTO uses thaw_tok_chat_format; still AUTO → THAW_ENOTSUP.
 * *out is NUL-terminated, freed with thaw_free.
 */
int thaw_chat_render(const struct thaw_tokenizer *tok, enum thaw_chat_format fmt,
                     const struct thaw_chat_msg *msgs, size_t n, int add_generation_prompt,
                     char **out) THAW_MUST_CHECK;

/* ================================================================ model */

enum thaw_rope_type { THAW_ROPE_DEFAULT, THAW_ROPE_LINEAR, THAW_ROPE_LLAMA3 };

struct thaw_model_config {
    char architecture[64]; /* "LlamaForCausalLM", "Qwen2ForCausalLM", ... */
    int n_layers, hidden, intermediate, n_heads, n_kv_heads, head_dim, vocab;
    int max_pos;
    float rms_eps, rope_theta;
    enum thaw_rope_type rope_type;
    float rope_factor, rope_low_freq, rope_high_freq;
    int rope_orig_max_pos;
    int tied_embeddings, qkv_bias;
    int32_t bos_id, eos_id; /* from config.json, -1 when absent */
};

struct thaw_model;

/* Where a checkpoint's weights are: its manifest, the base address of each
 * partition (as the loader placed them) and config.json. */
struct thaw_model_source {
    const struct thaw_manifest *manifest;
    void *const *partitions;  /* [thaw_manifest_n_partitions] */
    const char *config_json;  /* NULL: the manifest's model fields */
    size_t config_len;
    int device_ptrs;          /* partitions are CUDA device pointers (loader target GPU):
                               * only the CUDA backend can run the model */
};

/*
 * Bind a model to loaded weights: parse its config (HF field names and
 * defaults), check that every tensor exists with the right shape and a float
 * dtype (BF16/F16/F32), and keep pointers into the partitions (never
 * copied). The source's memory must outlive the model.
 */
int thaw_model_open(const struct thaw_model_source *src, struct thaw_model **out)
    THAW_MUST_CHECK;
void thaw_model_destroy(struct thaw_model *m);
const struct thaw_model_config *thaw_model_config(const struct thaw_model *m);
/* Bytes of weights read per decoded token (for bandwidth bounds). */
uint64_t thaw_model_weight_bytes(const struct thaw_model *m);

/* ================================================================ sampler */

struct thaw_sampling {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float presence_penalty;   /* OpenAI semantics, 0 = off */
    float frequency_penalty;  /* OpenAI semantics, 0 = off */
    float repetition_penalty; /* HF/CTRL semantics, 1 = off */
    uint64_t seed;
};
/* Greedy, all filters off. */
void thaw_sampling_defaults(struct thaw_sampling *s);
int thaw_sampling_validate(const struct thaw_sampling *s) THAW_MUST_CHECK;

/* ================================================================ engine */

enum thaw_backend {
    THAW_BACKEND_CPU,  /* threads + AVX2/FMA (scalar fallback) */
    THAW_BACKEND_CUDA, /* cuBLAS GEMMs + own kernels; KV cache in GPU memory */
};

struct thaw_engine_opts {
    uint32_t max_seqs;      /* concurrent sequences (KV slots); 0 = 8 */
    uint32_t ctx;           /* KV capacity per sequence in tokens; 0 = min(max_pos, 4096) */
    uint32_t n_threads;     /* 0 = all online CPUs (CPU backend) */
    uint32_t prefill_chunk; /* max prompt tokens per sequence per step; 0 = 512 */
    enum thaw_backend backend;
    int gpu_device;         /* CUDA device ordinal (CUDA backend) */
    /* CUDA with 16-bit weights: GEMM inputs are the f32 activations split
     * into two 16-bit halves (hi + lo, near-f32 results; decode reads the
     * weights once either way). 1: round them once to 16 bits (half the
     * prefill FLOPs, ~1e-2 relative logit error). */
    int gpu_fast_act;
};

enum thaw_finish {
    THAW_FINISH_NONE,   /* still running */
    THAW_FINISH_STOP,   /* stop id or stop string */
    THAW_FINISH_LENGTH, /* max_tokens or context full */
    THAW_FINISH_CANCEL,
};
const char *thaw_finish_name(enum thaw_finish f); /* "stop", "length", ... */

struct thaw_seq_params {
    struct thaw_sampling sampling;
    uint32_t max_tokens;     /* 0 = until the context is full */
    const int32_t *stop_ids; /* copied; NULL = none */
    size_t n_stop_ids;
    int logprobs;            /* report log-probabilities of chosen tokens */
};

/* One event per running sequence per step that produced a token. */
struct thaw_event {
    uint64_t seq;
    int32_t token;     /* -1 when the event only reports a finish */
    float logprob;     /* of token under the (penalised, tempered) distribution */
    enum thaw_finish finish;
};

struct thaw_engine;

/*
 * Create an engine for m (borrowed; must outlive the engine). The CUDA
 * backend fails with THAW_ENOTSUP when the build has no CUDA or no device is
 * usable; a model bound with device_ptrs needs the CUDA backend (THAW_EINVAL
 * otherwise). Weights in host memory are copied to the GPU once per engine.
 */
int thaw_engine_create(struct thaw_model *m, const struct thaw_engine_opts *o,
                       struct thaw_engine **out) THAW_MUST_CHECK;
void thaw_engine_destroy(struct thaw_engine *e);
/* "cpu" or "cuda"; with CUDA, the device's name follows ("cuda (NVIDIA
 * H100 80GB HBM3)"). Borrowed until destroy. */
const char *thaw_engine_backend_name(const struct thaw_engine *e);

/* Queue a sequence. Fails with THAW_ELIMIT when the prompt (plus one token)
 * does not fit the context, THAW_EINVAL for ids outside the vocabulary or an
 * empty prompt. The sequence starts in a later step when a slot is free. */
int thaw_engine_submit(struct thaw_engine *e, const int32_t *prompt, size_t n,
                       const struct thaw_seq_params *p, uint64_t *seq) THAW_MUST_CHECK;
/*
 * Run one forward pass over every running sequence (prefill chunks and one
 * decode token each, in one batch) and sample. *ev (borrowed until the next
 * step) gets one event per sequence that produced a token or finished;
 * finished sequences release their slot. *n_ev = 0 when idle.
 */
int thaw_engine_step(struct thaw_engine *e, const struct thaw_event **ev, size_t *n_ev)
    THAW_MUST_CHECK;
/* Finish a sequence now (its next step reports THAW_FINISH_CANCEL).
 * THAW_ENOTFOUND if unknown or already finished. */
int thaw_engine_cancel(struct thaw_engine *e, uint64_t seq) THAW_MUST_CHECK;
/* Sequences queued or running. */
size_t thaw_engine_active(const struct thaw_engine *e);

/*
 * Live migration, token based: export a running sequence as JSON (all
 * tokens, prompt length, params, sampler RNG state, tokens generated) and
 * import it on another engine with the same model, which re-prefills the
 * tokens and continues exactly where the source stopped. The exported
 * sequence stays on the source until cancelled.
 */
int thaw_engine_export(struct thaw_engine *e, uint64_t seq, char **json) THAW_MUST_CHECK;
int thaw_engine_import(struct thaw_engine *e, const char *json, size_t len, uint64_t *seq)
    THAW_MUST_CHECK;

/*
 * Logits at every position of ids as one fresh sequence: out is
 * [n][vocab] float32. Uses the engine's batched forward; no sampling.
 */
int thaw_engine_logits(struct thaw_engine *e, const int32_t *ids, size_t n, float *out)
    THAW_MUST_CHECK;

#ifdef __cplusplus
}
#endif

#endif /* THAW_ENGINE_H */
