/*
 * test_gguf.c - ckpt/gguf.c: GGUF files written here by a small independent
 * writer (every supported tensor type with known values, llama and qwen2,
 * tied and untied, a byte-level BPE vocabulary) converted with
 * thaw_gguf_convert and read back through the manifest and part files; the
 * Q/K un-permutation on a 2-head model; and a table of malformed files
 * (truncation at every byte, bad magic, huge counts, tensors past the end,
 * unsupported types and architectures) that must fail with clear errors and
 * leave nothing behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <jansson.h>

#include "ckpt/thaw_ckpt.h"
#include "tests/thaw_test.h"

/* ---------------------------------------------------------------- GGUF writer */

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_Q5_0 = 6, T_BF16 = 30 };
enum { V_U8, V_I8, V_U16, V_I16, V_U32, V_I32, V_F32, V_BOOL, V_STR, V_ARR, V_U64 };

struct gw {
    unsigned char *b;
    size_t n, cap;
};

static void put(struct gw *w, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 256;
        w->b = realloc(w->b, w->cap);
        CHECK(w->b != NULL);
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void put_u32(struct gw *w, uint32_t v)
{
    unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24) };
    put(w, b, 4);
}

static void put_u64(struct gw *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_str(struct gw *w, const char *s)
{
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}

static void kv_str(struct gw *w, const char *k, const char *v)
{
    put_str(w, k);
    put_u32(w, V_STR);
    put_str(w, v);
}

static void kv_u32(struct gw *w, const char *k, uint32_t v)
{
    put_str(w, k);
    put_u32(w, V_U32);
    put_u32(w, v);
}

static void kv_f32(struct gw *w, const char *k, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    put_str(w, k);
    put_u32(w, V_F32);
    put_u32(w, u);
}

static void kv_bool(struct gw *w, const char *k, int v)
{
    unsigned char c = (unsigned char)v;
    put_str(w, k);
    put_u32(w, V_BOOL);
    put(w, &c, 1);
}

static void kv_strs(struct gw *w, const char *k, const char *const *v, size_t n)
{
    put_str(w, k);
    put_u32(w, V_ARR);
    put_u32(w, V_STR);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        put_str(w, v[i]);
}

static void kv_i32s(struct gw *w, const char *k, const int32_t *v, size_t n)
{
    put_str(w, k);
    put_u32(w, V_ARR);
    put_u32(w, V_I32);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        put_u32(w, (uint32_t)v[i]);
}

/* A tensor to write: GGUF dims (ne[0] fastest) and its encoded bytes. */
struct gt {
    char name[64];
    uint32_t type;
    int n_dims;
    uint64_t ne[4];
    unsigned char *data;
    size_t bytes;
    float *ref; /* dequantized values in GGUF order (numel) */
};

static uint16_t f16_bits(float f)
{
    uint16_t h;
    thaw_dtype_cast(&h, THAW_DTYPE_F16, &f, THAW_DTYPE_F32, 1);
    return h;
}

static uint64_t numel(const struct gt *t)
{
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++)
        n *= t->ne[d];
    return n;
}

/*
 * Encode deterministic values for t: exactly representable in every type,
 * with the expected dequantized floats in t->ref, computed from the GGML
 * block definitions independently of ckpt/gguf.c.
 */
static void encode(struct gt *t, uint32_t seed)
{
    uint64_t n = numel(t);
    t->ref = malloc(n * sizeof(float));
    CHECK(t->ref != NULL);
    uint32_t s = seed * 2654435761u + 1;
    switch (t->type) {
    case T_F32:
    case T_F16:
    case T_BF16: {
        size_t es = t->type == T_F32 ? 4 : 2;
        t->bytes = n * es;
        t->data = malloc(t->bytes);
        for (uint64_t i = 0; i < n; i++) {
            s = s * 1103515245u + 12345u;
            float v = (float)((int)(s >> 20 & 0xff) - 128) / 64.0f; /* exact in bf16/f16 */
            t->ref[i] = v;
            if (es == 4)
                memcpy(t->data + 4 * i, &v, 4);
            else
                thaw_dtype_cast(t->data + 2 * i,
                                t->type == T_F16 ? THAW_DTYPE_F16 : THAW_DTYPE_BF16, &v,
                                THAW_DTYPE_F32, 1);
        }
        break;
    }
    case T_Q8_0:
    case T_Q4_0:
    case T_Q4_1: {
        size_t bs = t->type == T_Q8_0 ? 34 : t->type == T_Q4_0 ? 18 : 20;
        t->bytes = n / 32 * bs;
        t->data = calloc(1, t->bytes);
        for (uint64_t b = 0; b < n / 32; b++) {
            unsigned char *blk = t->data + b * bs;
            float d = (float)(1 + b % 4) / 8.0f, m = -(float)(b % 3);
            uint16_t dh = f16_bits(d), mh = f16_bits(m);
            memcpy(blk, &dh, 2);
            for (int j = 0; j < 32; j++) {
                s = s * 1103515245u + 12345u;
                float *r = &t->ref[b * 32 + j];
                if (t->type == T_Q8_0) {
                    int8_t q = (int8_t)(s >> 16);
                    blk[2 + j] = (unsigned char)q;
                    *r = (float)q * d;
                    continue;
                }
                unsigned q = s >> 20 & 0xf;
                unsigned char *qs = blk + (t->type == T_Q4_0 ? 2 : 4);
                /* element j < 16 is the low nibble of byte j, j >= 16 the high of j-16 */
                qs[j % 16] |= (unsigned char)(j < 16 ? q : q << 4);
                *r = t->type == T_Q4_0 ? ((float)q - 8.0f) * d : (float)q * d + m;
            }
            if (t->type == T_Q4_1)
                memcpy(blk + 2, &mh, 2);
        }
        break;
    }
    default: /* an unsupported type: arbitrary bytes of the right size */
        t->bytes = t->type == T_Q5_0 ? n / 32 * 22 : n;
        t->data = calloc(1, t->bytes);
        memset(t->ref, 0, n * sizeof(float));
        break;
    }
}

static void add_tensor(struct gt *ts, int *nt, const char *name, uint32_t type, int n_dims,
                       uint64_t ne0, uint64_t ne1)
{
    struct gt *t = &ts[(*nt)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    encode(t, (uint32_t)(*nt * 7919));
}

/* Header + the caller's KVs (in kvs, count n_kv) + tensor infos + data (32-aligned). */
static void finish(struct gw *out, uint32_t version, const struct gw *kvs, uint64_t n_kv,
                   const struct gt *ts, int nt)
{
    put(out, "GGUF", 4);
    put_u32(out, version);
    put_u64(out, (uint64_t)nt);
    put_u64(out, n_kv);
    put(out, kvs->b, kvs->n);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        put_str(out, ts[i].name);
        put_u32(out, (uint32_t)ts[i].n_dims);
        for (int d = 0; d < ts[i].n_dims; d++)
            put_u64(out, ts[i].ne[d]);
        put_u32(out, ts[i].type);
        put_u64(out, off);
        off = thaw_align_up(off + ts[i].bytes, 32);
    }
    static const unsigned char zero[32];
    put(out, zero, thaw_align_up(out->n, 32) - out->n);
    size_t base = out->n;
    for (int i = 0; i < nt; i++) {
        put(out, ts[i].data, ts[i].bytes);
        put(out, zero, base + thaw_align_up(out->n - base, 32) - out->n);
    }
}

/* Options of the synthetic model. */
struct model_opts {
    const char *arch;  /* "llama" */
    uint32_t types[9]; /* q k v o gate up down embd output; 0 = F32 */
    int untied;        /* write output.weight */
    int biases;        /* q/k/v biases (qwen2) */
    int tokenizer;     /* 1 = gpt2 vocabulary, 2 = SentencePiece "llama", 3 = "t5" */
    int drop;          /* omit blk.0.ffn_up.weight */
    int extra;         /* add an unmappable tensor */
    int q_row_ids;     /* attn_q (F32) element = its GGUF row index */
};

#define HID 64
#define NH 2
#define NKV 1
#define HD 32
#define FF 96
#define VOCAB 8

struct model {
    struct gw file;
    struct gt t[24];
    int nt;
};

static void make_model(struct model *m, const struct model_opts *o)
{
    memset(m, 0, sizeof *m);
    const char *arch = o->arch ? o->arch : "llama";
    struct gw kv = { 0 };
    uint64_t n_kv = 0;
    char k[128];
    kv_str(&kv, "general.architecture", arch), n_kv++;
    kv_str(&kv, "general.name", "tiny"), n_kv++;
#define HP(suffix, v) \
    do { \
        snprintf(k, sizeof k, "%s.%s", arch, suffix); \
        kv_u32(&kv, k, v); \
        n_kv++; \
    } while (0)
    HP("block_count", 1);
    HP("context_length", 256);
    HP("embedding_length", HID);
    HP("feed_forward_length", FF);
    HP("attention.head_count", NH);
    HP("attention.head_count_kv", NKV);
    HP("rope.dimension_count", HD);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", arch);
    kv_f32(&kv, k, 1e-5f), n_kv++;
    snprintf(k, sizeof k, "%s.rope.freq_base", arch);
    kv_f32(&kv, k, 10000.0f), n_kv++;
    if (o->tokenizer) {
        static const char *tok[VOCAB] = { "<|endoftext|>", "<think>",      "a", "b", "ab",
                                          "\xc4\xa0\x61",  "\xe6\x97\xa5", "c" };
        static const int32_t ty[VOCAB] = { 3, 4, 1, 1, 1, 1, 1, 1 };
        static const char *merges[] = { "a b", "\xc4\xa0 a" };
        static const char *model[] = { "", "gpt2", "llama", "t5" };
        kv_str(&kv, "tokenizer.ggml.model", model[o->tokenizer]), n_kv++;
        kv_str(&kv, "tokenizer.ggml.pre", "default"), n_kv++;
        kv_strs(&kv, "tokenizer.ggml.tokens", tok, VOCAB), n_kv++;
        kv_i32s(&kv, "tokenizer.ggml.token_type", ty, VOCAB), n_kv++;
        if (o->tokenizer == 2) { /* SentencePiece: scores, merges recovered from them */
            put_str(&kv, "tokenizer.ggml.scores");
            put_u32(&kv, V_ARR);
            put_u32(&kv, V_F32);
            put_u64(&kv, VOCAB);
            for (int i = 0; i < VOCAB; i++) {
                float f = -(float)i;
                uint32_t u;
                memcpy(&u, &f, 4);
                put_u32(&kv, u);
            }
            n_kv++;
        } else {
            kv_strs(&kv, "tokenizer.ggml.merges", merges, 2), n_kv++;
        }
        kv_u32(&kv, "tokenizer.ggml.bos_token_id", 0), n_kv++;
        kv_u32(&kv, "tokenizer.ggml.eos_token_id", 0), n_kv++;
        kv_bool(&kv, "tokenizer.ggml.add_bos_token", 1), n_kv++;
        kv_str(&kv, "tokenizer.chat_template", "{{ messages }}"), n_kv++;
    }
    const uint32_t *ty = o->types;
    add_tensor(m->t, &m->nt, "token_embd.weight", ty[7], 2, HID, VOCAB);
    add_tensor(m->t, &m->nt, "blk.0.attn_norm.weight", T_F32, 1, HID, 0);
    add_tensor(m->t, &m->nt, "blk.0.attn_q.weight", ty[0], 2, HID, NH * HD);
    if (o->q_row_ids) {
        struct gt *q = &m->t[m->nt - 1];
        CHECK(q->type == T_F32);
        for (uint64_t i = 0; i < numel(q); i++) {
            float v = (float)(i / HID);
            memcpy(q->data + 4 * i, &v, 4);
            q->ref[i] = v;
        }
    }
    add_tensor(m->t, &m->nt, "blk.0.attn_k.weight", ty[1], 2, HID, NKV * HD);
    add_tensor(m->t, &m->nt, "blk.0.attn_v.weight", ty[2], 2, HID, NKV * HD);
    if (o->biases) {
        add_tensor(m->t, &m->nt, "blk.0.attn_q.bias", T_F32, 1, NH * HD, 0);
        add_tensor(m->t, &m->nt, "blk.0.attn_k.bias", T_F32, 1, NKV * HD, 0);
        add_tensor(m->t, &m->nt, "blk.0.attn_v.bias", T_F32, 1, NKV * HD, 0);
    }
    add_tensor(m->t, &m->nt, "blk.0.attn_output.weight", ty[3], 2, NH * HD, HID);
    add_tensor(m->t, &m->nt, "blk.0.ffn_norm.weight", T_F32, 1, HID, 0);
    add_tensor(m->t, &m->nt, "blk.0.ffn_gate.weight", ty[4], 2, HID, FF);
    if (!o->drop)
        add_tensor(m->t, &m->nt, "blk.0.ffn_up.weight", ty[5], 2, HID, FF);
    add_tensor(m->t, &m->nt, "blk.0.ffn_down.weight", ty[6], 2, FF, HID);
    add_tensor(m->t, &m->nt, "output_norm.weight", T_F32, 1, HID, 0);
    if (o->untied)
        add_tensor(m->t, &m->nt, "output.weight", ty[8], 2, HID, VOCAB);
    if (o->extra)
        add_tensor(m->t, &m->nt, "blk.0.ssm_conv.weight", T_F32, 1, HID, 0);
    finish(&m->file, 3, &kv, n_kv, m->t, m->nt);
    free(kv.b);
}

static void free_model(struct model *m)
{
    for (int i = 0; i < m->nt; i++) {
        free(m->t[i].data);
        free(m->t[i].ref);
    }
    free(m->file.b);
}

static void write_file(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(b, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

/* ---------------------------------------------------------------- reading back */

/* Tensor name as float32 (HF layout) from a converted checkpoint; NULL if absent. */
static float *read_back(const char *dir, struct thaw_manifest *m, const char *name,
                        enum thaw_dtype *dt, int64_t *shape0)
{
    int64_t i = thaw_manifest_find(m, name);
    if (i < 0)
        return NULL;
    const struct thaw_tensor_info *t = thaw_manifest_tensor(m, (size_t)i);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, thaw_manifest_partition(m, t->partition)->file);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    void *raw = malloc(t->bytes);
    CHECK(fseek(f, (long)t->offset, SEEK_SET) == 0);
    CHECK(fread(raw, 1, t->bytes, f) == t->bytes);
    fclose(f);
    size_t n = t->bytes / thaw_dtype_size(t->dtype);
    float *out = malloc(n * sizeof *out);
    thaw_dtype_cast(out, THAW_DTYPE_F32, raw, t->dtype, n);
    free(raw);
    *dt = t->dtype;
    *shape0 = t->shape[0];
    return out;
}

/* The HF index of GGUF row g of a permuted q/k with heads of hd rows. */
static uint64_t hf_row(uint64_t g, uint64_t hd)
{
    uint64_t h = g / hd, i = g % hd, j = i / 2, r = i % 2;
    return h * hd + r * (hd / 2) + j;
}

/* Compare every tensor of m with what the checkpoint holds. */
static void check_converted(const char *dir, const struct model *md, int permute,
                            enum thaw_dtype want_float)
{
    struct thaw_manifest *m = NULL;
    CHECK_OK(thaw_manifest_load(dir, &m));
    static const char *map[][2] = {
        { "token_embd.weight", "model.embed_tokens.weight" },
        { "blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight" },
        { "blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight" },
        { "blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight" },
        { "blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight" },
        { "blk.0.attn_q.bias", "model.layers.0.self_attn.q_proj.bias" },
        { "blk.0.attn_k.bias", "model.layers.0.self_attn.k_proj.bias" },
        { "blk.0.attn_v.bias", "model.layers.0.self_attn.v_proj.bias" },
        { "blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight" },
        { "blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight" },
        { "blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight" },
        { "blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight" },
        { "blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight" },
        { "output_norm.weight", "model.norm.weight" },
        { "output.weight", "lm_head.weight" },
    };
    CHECK_EQ(thaw_manifest_n_tensors(m), md->nt);
    for (int i = 0; i < md->nt; i++) {
        const struct gt *t = &md->t[i];
        const char *hf = NULL;
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
            if (strcmp(map[k][0], t->name) == 0)
                hf = map[k][1];
        }
        CHECK(hf != NULL);
        enum thaw_dtype dt;
        int64_t shape0;
        float *got = read_back(dir, m, hf, &dt, &shape0);
        if (!got)
            fprintf(stderr, "missing %s\n", hf);
        CHECK(got != NULL);
        /* HF shape is the GGUF dims reversed */
        CHECK_EQ(shape0, t->ne[t->n_dims - 1]);
        if (want_float != THAW_DTYPE_COUNT) {
            CHECK_EQ(dt, want_float);
        } else { /* keep: 16-bit floats stay, the rest become F32 */
            CHECK_EQ(dt, t->type == T_F16    ? THAW_DTYPE_F16
                         : t->type == T_BF16 ? THAW_DTYPE_BF16
                                             : THAW_DTYPE_F32);
        }
        int qk = strstr(t->name, "attn_q") || strstr(t->name, "attn_k");
        uint64_t cols = t->n_dims == 1 ? 1 : t->ne[0], rows = numel(t) / cols;
        uint64_t hd = HD;
        for (uint64_t r = 0; r < rows; r++) {
            uint64_t hr = permute && qk ? hf_row(r, hd) : r;
            for (uint64_t c = 0; c < cols; c++) {
                float want = t->ref[r * cols + c], have = got[hr * cols + c];
                if (want_float == THAW_DTYPE_BF16 || want_float == THAW_DTYPE_F16) {
                    float w16;
                    uint16_t h;
                    thaw_dtype_cast(&h, want_float, &want, THAW_DTYPE_F32, 1);
                    thaw_dtype_cast(&w16, THAW_DTYPE_F32, &h, want_float, 1);
                    want = w16;
                }
                if (want != have) {
                    fprintf(stderr, "%s row %" PRIu64 " col %" PRIu64 ": %g != %g\n", hf, r, c,
                            have, want);
                    CHECK(0);
                }
            }
        }
        free(got);
    }
    thaw_manifest_destroy(m);
}

static json_t *load_json(const char *dir, const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j)
        fprintf(stderr, "%s: %s\n", path, e.text);
    CHECK(j != NULL);
    return j;
}

/* No leftovers (temp dirs) in dir besides the names listed. */
static void check_clean(const char *dir, int n_expected)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            n++;
            if (strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".gguf-hf."))
                fprintf(stderr, "leftover %s\n", e->d_name);
        }
    }
    closedir(d);
    CHECK_EQ(n, n_expected);
}

/* Write md to dir/m.gguf, convert to dir/out with dtype. */
static int convert_model(const char *dir, const struct model *md, enum thaw_convert_dtype dt,
                         char *out, size_t out_n)
{
    char in[1024];
    snprintf(in, sizeof in, "%s/m.gguf", dir);
    write_file(in, md->file.b, md->file.n);
    snprintf(out, out_n, "%s/out", dir);
    struct thaw_convert_opts o = { .dtype = dt, .force = 1 };
    return thaw_gguf_convert(in, out, &o);
}

/* ---------------------------------------------------------------- cases */

static void t_all_types(void)
{
    struct model md;
    struct model_opts o = { .types = { T_F16, T_BF16, T_Q8_0, T_Q4_0, T_Q4_1, T_F32, T_Q8_0, T_Q4_1,
                                       T_Q4_0 },
                            .untied = 1 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), out[1024];
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_KEEP, out, sizeof out));
    check_converted(out, &md, 1, THAW_DTYPE_COUNT);
    CHECK_OK(thaw_ckpt_verify(out));
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_F32, out, sizeof out));
    check_converted(out, &md, 1, THAW_DTYPE_F32);
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_BF16, out, sizeof out));
    check_converted(out, &md, 1, THAW_DTYPE_BF16);
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_F16, out, sizeof out));
    check_converted(out, &md, 1, THAW_DTYPE_F16);
    check_clean(dir, 2); /* m.gguf, out */
    json_t *c = load_json(out, "config.json");
    CHECK_STR_EQ(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
                 "LlamaForCausalLM");
    CHECK_EQ(json_integer_value(json_object_get(c, "hidden_size")), HID);
    CHECK_EQ(json_integer_value(json_object_get(c, "intermediate_size")), FF);
    CHECK_EQ(json_integer_value(json_object_get(c, "num_attention_heads")), NH);
    CHECK_EQ(json_integer_value(json_object_get(c, "num_key_value_heads")), NKV);
    CHECK_EQ(json_integer_value(json_object_get(c, "head_dim")), HD);
    CHECK_EQ(json_integer_value(json_object_get(c, "vocab_size")), VOCAB);
    CHECK_EQ(json_integer_value(json_object_get(c, "max_position_embeddings")), 256);
    CHECK(json_is_false(json_object_get(c, "tie_word_embeddings")));
    CHECK_NEAR(json_real_value(json_object_get(c, "rms_norm_eps")), 1e-5, 1e-12);
    CHECK_NEAR(json_real_value(json_object_get(c, "rope_theta")), 10000.0, 0);
    CHECK_STR_EQ(json_string_value(json_object_get(c, "torch_dtype")), "float16");
    json_decref(c);
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

/* Rows that carry their own GGUF index make the permutation explicit. */
static void t_permutation(void)
{
    struct model md;
    struct model_opts o = { .q_row_ids = 1 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), out[1024];
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_F32, out, sizeof out));
    struct thaw_manifest *m = NULL;
    CHECK_OK(thaw_manifest_load(out, &m));
    enum thaw_dtype dt;
    int64_t s0;
    float *w = read_back(out, m, "model.layers.0.self_attn.q_proj.weight", &dt, &s0);
    CHECK(w != NULL);
    /* HF row h*hd + r*hd/2 + j holds GGUF row h*hd + 2j + r */
    for (int h = 0; h < NH; h++) {
        for (int r = 0; r < 2; r++) {
            for (int j = 0; j < HD / 2; j++)
                CHECK_EQ(w[(size_t)(h * HD + r * HD / 2 + j) * HID + 5], h * HD + 2 * j + r);
        }
    }
    CHECK_EQ(w[1 * HID], 2);        /* HF row 1 = GGUF row 2 */
    CHECK_EQ(w[(HD / 2) * HID], 1); /* HF row hd/2 = GGUF row 1 */
    CHECK_EQ(w[(HD + 1) * HID], HD + 2);
    free(w);
    thaw_manifest_destroy(m);
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

static void t_qwen2_no_permutation(void)
{
    struct model md;
    struct model_opts o = { .arch = "qwen2", .biases = 1 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), out[1024];
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_KEEP, out, sizeof out));
    check_converted(out, &md, 0, THAW_DTYPE_COUNT);
    json_t *c = load_json(out, "config.json");
    CHECK_STR_EQ(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
                 "Qwen2ForCausalLM");
    CHECK_STR_EQ(json_string_value(json_object_get(c, "model_type")), "qwen2");
    json_decref(c);
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

static void t_llama_biases_permuted(void)
{
    struct model md;
    struct model_opts o = { .biases = 1 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), out[1024];
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_F32, out, sizeof out));
    check_converted(out, &md, 1, THAW_DTYPE_F32); /* q/k biases get the row permutation too */
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

static void t_tied(void)
{
    struct model md;
    struct model_opts o = { 0 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), out[1024];
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_KEEP, out, sizeof out));
    struct thaw_manifest *m = NULL;
    CHECK_OK(thaw_manifest_load(out, &m));
    CHECK_EQ(thaw_manifest_find(m, "lm_head.weight"), THAW_ENOTFOUND);
    CHECK(thaw_manifest_find(m, "model.embed_tokens.weight") >= 0);
    thaw_manifest_destroy(m);
    json_t *c = load_json(out, "config.json");
    CHECK(json_is_true(json_object_get(c, "tie_word_embeddings")));
    CHECK_STR_EQ(json_string_value(json_object_get(c, "torch_dtype")), "float32");
    json_decref(c);
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

static void t_tokenizer(void)
{
    struct model md;
    struct model_opts o = { .tokenizer = 1 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), out[1024];
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_KEEP, out, sizeof out));
    json_t *t = load_json(out, "tokenizer.json");
    json_t *model = json_object_get(t, "model"), *vocab = json_object_get(model, "vocab");
    CHECK_STR_EQ(json_string_value(json_object_get(model, "type")), "BPE");
    CHECK_EQ(json_object_size(vocab), VOCAB);
    CHECK_EQ(json_integer_value(json_object_get(vocab, "ab")), 4);
    CHECK_EQ(json_integer_value(json_object_get(vocab, "\xc4\xa0\x61")), 5); /* "Ġa" */
    /* U+65E5 is outside the byte alphabet: its UTF-8 bytes e6 97 a5 become U+00E6 U+0139 U+00A5 */
    CHECK_EQ(json_integer_value(json_object_get(vocab, "\xc3\xa6\xc4\xb9\xc2\xa5")), 6);
    json_t *merges = json_object_get(model, "merges");
    CHECK_EQ(json_array_size(merges), 2);
    CHECK_STR_EQ(json_string_value(json_array_get(json_array_get(merges, 1), 0)), "\xc4\xa0");
    CHECK_STR_EQ(json_string_value(json_array_get(json_array_get(merges, 1), 1)), "a");
    json_t *added = json_object_get(t, "added_tokens");
    CHECK_EQ(json_array_size(added), 2);
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(added, 0), "content")),
                 "<|endoftext|>");
    CHECK(json_is_true(json_object_get(json_array_get(added, 0), "special")));
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(added, 1), "content")),
                 "<think>");
    CHECK(json_is_false(json_object_get(json_array_get(added, 1), "special")));
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(t, "pre_tokenizer"), "type")),
                 "ByteLevel");
    /* add_bos_token: the post-processor prepends BOS */
    json_t *pp = json_object_get(t, "post_processor");
    CHECK_STR_EQ(json_string_value(json_object_get(
                     json_object_get(json_array_get(json_object_get(pp, "single"), 0),
                                     "SpecialToken"),
                     "id")),
                 "<|endoftext|>");
    json_decref(t);
    json_t *c = load_json(out, "tokenizer_config.json");
    CHECK_STR_EQ(json_string_value(json_object_get(c, "bos_token")), "<|endoftext|>");
    CHECK_STR_EQ(json_string_value(json_object_get(c, "chat_template")), "{{ messages }}");
    CHECK(json_is_true(json_object_get(c, "add_bos_token")));
    json_decref(c);
    c = load_json(out, "config.json");
    CHECK_EQ(json_integer_value(json_object_get(c, "bos_token_id")), 0);
    json_decref(c);
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

/* ---------------------------------------------------------------- errors */

/* A minimal valid file: one KV, one F32 tensor of 8 elements. */
static void tiny(struct gw *f, uint32_t version)
{
    struct gw kv = { 0 };
    kv_str(&kv, "general.architecture", "llama");
    struct gt t = { .name = "x", .type = T_F32, .n_dims = 1, .ne = { 8 } };
    encode(&t, 1);
    finish(f, version, &kv, 1, &t, 1);
    free(kv.b);
    free(t.data);
    free(t.ref);
}

static void t_parse_valid(void)
{
    for (uint32_t v = 2; v <= 3; v++) {
        struct gw f = { 0 };
        tiny(&f, v);
        struct thaw_gguf *g = NULL;
        CHECK_OK(thaw_gguf_parse(f.b, f.n, "tiny", &g));
        CHECK_EQ(thaw_gguf_n_tensors(g), 1);
        struct thaw_gguf_tensor t;
        CHECK_OK(thaw_gguf_tensor(g, 0, &t));
        CHECK_EQ(t.name_len, 1);
        CHECK(t.name[0] == 'x');
        CHECK_STR_EQ(t.type_name, "F32");
        CHECK_EQ(t.n_dims, 1);
        CHECK_EQ(t.ne[0], 8);
        CHECK_EQ(t.bytes, 32);
        CHECK((const unsigned char *)t.data == f.b + 128); /* data section 32-aligned */
        CHECK_FAILS(thaw_gguf_tensor(g, 1, &t), THAW_ENOTFOUND);
        thaw_gguf_close(g);
        free(f.b);
    }
    thaw_gguf_close(NULL);
}

/* Every proper prefix of a valid file is rejected, never read past. */
static void t_truncated(void)
{
    struct model md;
    struct model_opts o = { .tokenizer = 1 };
    make_model(&md, &o);
    struct thaw_gguf *g = NULL;
    CHECK_OK(thaw_gguf_parse(md.file.b, md.file.n, "m", &g));
    thaw_gguf_close(g);
    for (size_t n = 0; n < md.file.n; n++) {
        unsigned char *copy = malloc(n ? n : 1); /* exact size: ASan sees any over-read */
        memcpy(copy, md.file.b, n);
        g = NULL;
        int rc = thaw_gguf_parse(copy, n, "m", &g);
        if (rc == 0)
            fprintf(stderr, "prefix of %zu bytes parsed\n", n);
        CHECK(rc == THAW_EFORMAT);
        CHECK(g == NULL);
        free(copy);
    }
    free_model(&md);
}

struct bad_case {
    const char *name;
    size_t at; /* patch offset */
    const char *bytes;
    size_t n;
    int code;
    const char *msg;
};

static void t_malformed(void)
{
    struct gw f = { 0 };
    tiny(&f, 3);
    /* Layout: magic 0, version 4, n_tensors 8, n_kv 16, key len 24, key 32 ("general.
     * architecture", 20 bytes), type 52, value len 56, "llama" 64, tensor name len 69,
     * "x" 77, n_dims 78, ne0 82, type 90, offset 94, end of infos 102, data at 128. */
    static const struct bad_case cases[] = {
        { "bad magic", 0, "GGUG", 4, THAW_EFORMAT, "bad magic" },
        { "version 1", 4, "\1\0\0\0", 4, THAW_EVERSION, "version 1" },
        { "big endian", 4, "\0\0\0\3", 4, THAW_EVERSION, "big-endian" },
        { "huge n_tensors", 8, "\xff\xff\xff\xff\xff\xff\xff\x7f", 8, THAW_EFORMAT, "more than" },
        { "huge n_kv", 16, "\0\0\0\0\0\0\0\x10", 8, THAW_EFORMAT, "more than" },
        { "huge key", 24, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, THAW_EFORMAT, "past end of file" },
        { "bad value type", 52, "\x63\0\0\0", 4, THAW_EFORMAT, "unknown value type 99" },
        { "huge string", 56, "\0\0\0\0\0\0\x01\0", 8, THAW_EFORMAT, "past end of file" },
        { "five dims", 78, "\5\0\0\0", 4, THAW_EFORMAT, "5 dimensions" },
        { "zero dims", 78, "\0\0\0\0", 4, THAW_EFORMAT, "0 dimensions" },
        { "past eof", 82, "\0\0\0\0\0\1\0\0", 8, THAW_EFORMAT, "run past end of file" },
        { "numel overflow", 82, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, THAW_EFORMAT, "overflows" },
        { "unknown type", 90, "\x04\0\0\0", 4, THAW_EDTYPE, "unknown GGML type 4" },
        { "block size", 90, "\x02\0\0\0", 4, THAW_EFORMAT, "block size 32" },
        { "misaligned", 94, "\x04\0\0\0\0\0\0\0", 8, THAW_EFORMAT, "alignment" },
        { "offset past eof", 94, "\0\x10\0\0\0\0\0\0", 8, THAW_EFORMAT, "past end of file" },
    };
    CHECK(memcmp(f.b + 69, "\1\0\0\0\0\0\0\0x", 9) == 0); /* the layout above */
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct bad_case *c = &cases[k];
        unsigned char *b = malloc(f.n);
        memcpy(b, f.b, f.n);
        memcpy(b + c->at, c->bytes, c->n);
        struct thaw_gguf *g = NULL;
        int rc = thaw_gguf_parse(b, f.n, "bad.gguf", &g);
        if (rc != c->code || !strstr(thaw_errmsg(), c->msg)) {
            fprintf(stderr, "case '%s': rc %d (%s) msg \"%s\", want %d \"%s\"\n", c->name, rc,
                    thaw_strerror(rc), thaw_errmsg(), c->code, c->msg);
            CHECK(0);
        }
        CHECK(strstr(thaw_errmsg(), "bad.gguf") != NULL);
        free(b);
    }
    free(f.b);
}

static void t_metadata_errors(void)
{
    /* nested array, huge array count, duplicate key, duplicate tensor, bad alignment */
    struct gw kv = { 0 };
    put_str(&kv, "a");
    put_u32(&kv, V_ARR);
    put_u32(&kv, V_ARR);
    put_u64(&kv, 0);
    struct gw f = { 0 };
    finish(&f, 3, &kv, 1, NULL, 0);
    struct thaw_gguf *g = NULL;
    CHECK_FAILS(thaw_gguf_parse(f.b, f.n, "n", &g), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("nested");
    free(kv.b), free(f.b);

    memset(&kv, 0, sizeof kv), memset(&f, 0, sizeof f);
    put_str(&kv, "a");
    put_u32(&kv, V_ARR);
    put_u32(&kv, V_U64);
    put_u64(&kv, UINT64_MAX / 4);
    finish(&f, 3, &kv, 1, NULL, 0);
    CHECK_FAILS(thaw_gguf_parse(f.b, f.n, "n", &g), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("elements run past end of file");
    free(kv.b), free(f.b);

    memset(&kv, 0, sizeof kv), memset(&f, 0, sizeof f);
    kv_u32(&kv, "k", 1);
    kv_u32(&kv, "k", 2);
    finish(&f, 3, &kv, 2, NULL, 0);
    CHECK_FAILS(thaw_gguf_parse(f.b, f.n, "n", &g), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("duplicate metadata key 'k'");
    free(kv.b), free(f.b);

    memset(&kv, 0, sizeof kv), memset(&f, 0, sizeof f);
    kv_u32(&kv, "general.alignment", 48);
    finish(&f, 3, &kv, 1, NULL, 0);
    CHECK_FAILS(thaw_gguf_parse(f.b, f.n, "n", &g), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("general.alignment");
    free(kv.b), free(f.b);

    memset(&kv, 0, sizeof kv), memset(&f, 0, sizeof f);
    struct gt t[2] = { { .name = "x", .type = T_F32, .n_dims = 1, .ne = { 8 } },
                       { .name = "x", .type = T_F32, .n_dims = 1, .ne = { 8 } } };
    encode(&t[0], 1), encode(&t[1], 2);
    finish(&f, 3, &kv, 0, t, 2);
    CHECK_FAILS(thaw_gguf_parse(f.b, f.n, "n", &g), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("duplicate tensor 'x'");
    free(f.b);
    /* overlapping tensors: point the second at the first one's offset */
    memset(&f, 0, sizeof f);
    snprintf(t[1].name, sizeof t[1].name, "y");
    finish(&f, 3, &kv, 0, t, 2);
    size_t off2 = 24 + 8 + 1 + 4 + 8 + 4 + 8 + 8 + 1 + 4 + 8 + 4;
    CHECK_EQ(f.b[off2], 32);
    f.b[off2] = 0;
    CHECK_FAILS(thaw_gguf_parse(f.b, f.n, "n", &g), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("overlap");
    free(f.b), free(kv.b);
    for (int i = 0; i < 2; i++)
        free(t[i].data), free(t[i].ref);
}

static void check_convert_fails(const struct model_opts *o, int code, const char *msg)
{
    struct model md;
    make_model(&md, o);
    char *dir = test_tmpdir(), out[1024];
    int rc = convert_model(dir, &md, THAW_CONVERT_KEEP, out, sizeof out);
    if (rc != code || !strstr(thaw_errmsg(), msg)) {
        fprintf(stderr, "rc %d (%s) msg \"%s\", want %d \"%s\"\n", rc, thaw_strerror(rc),
                thaw_errmsg(), code, msg);
        CHECK(0);
    }
    check_clean(dir, 1); /* only m.gguf: no out, no temp folder */
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

static void t_convert_errors(void)
{
    struct model_opts o = { .types = { [5] = T_Q5_0 } };
    check_convert_fails(&o, THAW_EDTYPE, "tensor 'blk.0.ffn_up.weight' has type Q5_0");
    struct model_opts arch = { .arch = "gpt2" };
    check_convert_fails(&arch, THAW_ENOTSUP, "architecture 'gpt2' is not supported");
    struct model_opts drop = { .drop = 1 };
    check_convert_fails(&drop, THAW_EFORMAT, "blk.0.ffn_up.weight is missing");
    struct model_opts extra = { .extra = 1 };
    check_convert_fails(&extra, THAW_ENOTSUP, "'blk.0.ssm_conv.weight' has no Hugging Face");
    /* a bad file through the converter: nothing written */
    char *dir = test_tmpdir(), in[1024], out[1024];
    snprintf(in, sizeof in, "%s/x.gguf", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    write_file(in, "GGUF\3\0\0\0", 8);
    CHECK_FAILS(thaw_gguf_convert(in, out, NULL), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("x.gguf");
    check_clean(dir, 1);
    snprintf(in, sizeof in, "%s/missing.gguf", dir);
    CHECK_FAILS(thaw_gguf_convert(in, out, NULL), -ENOENT);
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
}

static void t_sentencepiece(void)
{
    struct model md;
    struct model_opts o = { .tokenizer = 2 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), out[1024];
    CHECK_OK(convert_model(dir, &md, THAW_CONVERT_KEEP, out, sizeof out));
    json_t *t = load_json(out, "tokenizer.json");
    json_t *model = json_object_get(t, "model"), *vocab = json_object_get(model, "vocab");
    CHECK(json_is_true(json_object_get(model, "byte_fallback")));
    CHECK(json_is_true(json_object_get(model, "fuse_unk")));
    /* pieces are kept as they are (no byte-level respelling) */
    CHECK_EQ(json_integer_value(json_object_get(vocab, "\xe6\x97\xa5")), 6);
    /* the only split of a token into two tokens: "ab" = "a" + "b" */
    json_t *merges = json_object_get(model, "merges");
    CHECK_EQ(json_array_size(merges), 1);
    CHECK_STR_EQ(json_string_value(json_array_get(json_array_get(merges, 0), 0)), "a");
    CHECK_STR_EQ(json_string_value(json_array_get(json_array_get(merges, 0), 1)), "b");
    json_t *pre = json_object_get(t, "pre_tokenizer");
    CHECK_STR_EQ(json_string_value(json_object_get(pre, "type")), "Metaspace");
    CHECK_STR_EQ(json_string_value(json_object_get(pre, "prepend_scheme")), "first");
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(t, "decoder"), "type")),
                 "Sequence");
    CHECK_EQ(json_array_size(json_object_get(t, "added_tokens")), 2);
    json_decref(t);
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);

    struct model_opts t5 = { .tokenizer = 3 };
    check_convert_fails(&t5, THAW_ENOTSUP, "tokenizer.ggml.model 't5' is not supported");
}

static void t_out_exists(void)
{
    struct model md;
    struct model_opts o = { 0 };
    make_model(&md, &o);
    char *dir = test_tmpdir(), in[1024], out[1024];
    snprintf(in, sizeof in, "%s/m.gguf", dir);
    write_file(in, md.file.b, md.file.n);
    snprintf(out, sizeof out, "%s/out", dir);
    CHECK(mkdir(out, 0755) == 0);
    CHECK_FAILS(thaw_gguf_convert(in, out, NULL), -EEXIST);
    CHECK_ERRMSG_HAS("--force");
    CHECK_OK(thaw_rm_rf(dir));
    free(dir);
    free_model(&md);
}

/* Allocation failures in the parser return -ENOMEM and leak nothing. */
static void t_parse_oom(void)
{
    struct model md;
    struct model_opts o = { .tokenizer = 1 };
    make_model(&md, &o);
    for (long n = 0;; n++) {
        struct thaw_gguf *g = NULL;
        thaw_alloc_fail_after(n);
        int rc = thaw_gguf_parse(md.file.b, md.file.n, "m", &g);
        thaw_alloc_fail_after(-1);
        if (rc == 0) {
            thaw_gguf_close(g);
            CHECK(n > 0);
            break;
        }
        CHECK_EQ(rc, -ENOMEM);
        CHECK(n < 100);
    }
    free_model(&md);
}

static const struct test_case cases[] = {
    { "parse_valid", t_parse_valid },
    { "all_types", t_all_types },
    { "permutation", t_permutation },
    { "llama_biases_permuted", t_llama_biases_permuted },
    { "qwen2_no_permutation", t_qwen2_no_permutation },
    { "tied", t_tied },
    { "tokenizer", t_tokenizer },
    { "truncated", t_truncated },
    { "malformed", t_malformed },
    { "metadata_errors", t_metadata_errors },
    { "convert_errors", t_convert_errors },
    { "sentencepiece", t_sentencepiece },
    { "out_exists", t_out_exists },
    { "parse_oom", t_parse_oom },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
