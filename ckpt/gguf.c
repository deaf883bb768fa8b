/*
 * gguf.c - GGUF (llama.cpp, v2 and v3) import for `thaw convert MODEL.gguf OUT`.
 * A strict parser for the untrusted file (header, metadata of every type,
 * tensor infos, alignment), dequantization of F32/F16/BF16/Q8_0/Q4_0/Q4_1,
 * the inverse of llama.cpp's Q/K row permutation, and a temporary Hugging
 * Face folder (model.safetensors, config.json, tokenizer files) beside the
 * output that thaw_ckpt_convert turns into a Thaw checkpoint.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_int.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_MAX_DIMS 4   /* GGML_MAX_DIMS */
#define GGUF_MAX_NAME 200 /* tensor names; ggml's own limit is 64 */
#define GGUF_MAX_LAYERS 4096
#define GGUF_DEFAULT_ALIGN 32

/* Metadata value types (gguf_type). */
enum gg_vtype {
    GG_U8,
    GG_I8,
    GG_U16,
    GG_I16,
    GG_U32,
    GG_I32,
    GG_F32,
    GG_BOOL,
    GG_STRING,
    GG_ARRAY,
    GG_U64,
    GG_I64,
    GG_F64,
    GG_VTYPE_COUNT
};

static const uint8_t vtype_size[GG_VTYPE_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

/* Tensor types (ggml_type): name, elements per block, bytes per block. Ids
 * without a name were removed from ggml and are rejected. */
struct gg_ttype {
    const char *name;
    uint32_t blck;
    uint32_t size;
};

enum { GGT_F32 = 0, GGT_F16 = 1, GGT_Q4_0 = 2, GGT_Q4_1 = 3, GGT_Q8_0 = 8, GGT_BF16 = 30 };

static const struct gg_ttype ttypes[] = {
    [0] = { "F32", 1, 4 },         [1] = { "F16", 1, 2 },         [2] = { "Q4_0", 32, 18 },
    [3] = { "Q4_1", 32, 20 },      [6] = { "Q5_0", 32, 22 },      [7] = { "Q5_1", 32, 24 },
    [8] = { "Q8_0", 32, 34 },      [9] = { "Q8_1", 32, 40 },      [10] = { "Q2_K", 256, 84 },
    [11] = { "Q3_K", 256, 110 },   [12] = { "Q4_K", 256, 144 },   [13] = { "Q5_K", 256, 176 },
    [14] = { "Q6_K", 256, 210 },   [15] = { "Q8_K", 256, 292 },   [16] = { "IQ2_XXS", 256, 66 },
    [17] = { "IQ2_XS", 256, 74 },  [18] = { "IQ3_XXS", 256, 98 }, [19] = { "IQ1_S", 256, 50 },
    [20] = { "IQ4_NL", 32, 18 },   [21] = { "IQ3_S", 256, 110 },  [22] = { "IQ2_S", 256, 82 },
    [23] = { "IQ4_XS", 256, 136 }, [24] = { "I8", 1, 1 },         [25] = { "I16", 1, 2 },
    [26] = { "I32", 1, 4 },        [27] = { "I64", 1, 8 },        [28] = { "F64", 1, 8 },
    [29] = { "IQ1_M", 256, 56 },   [30] = { "BF16", 1, 2 },       [34] = { "TQ1_0", 256, 54 },
    [35] = { "TQ2_0", 256, 66 },   [39] = { "MXFP4", 32, 17 },
};
#define N_TTYPES (sizeof ttypes / sizeof ttypes[0])

struct gg_str {
    const char *p; /* into the file, not NUL-terminated */
    uint64_t n;
};

struct gg_kv {
    struct gg_str key;
    uint32_t type;
    /* scalars */
    uint64_t u;
    int64_t i;
    double f;
    struct gg_str str;
    /* arrays */
    uint32_t arr_type;
    uint64_t arr_n;
    const unsigned char *arr; /* first element */
};

struct gg_tensor {
    struct gg_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* fastest-varying first: ne[0] = HF in_features */
    uint32_t type;
    uint64_t offset; /* bytes from the start of the data section */
    uint64_t numel, bytes;
};

struct thaw_gguf {
    const unsigned char *data;
    size_t len;
    void *map; /* when opened from a file */
    size_t map_len;
    char *name;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    struct gg_kv *kv;    /* [n_kv] */
    struct gg_tensor *t; /* [n_tensors] */
    uint64_t alignment;
    uint64_t data_off; /* file offset of the data section */
};

/* ================================================================ parser */

struct rd {
    const unsigned char *p;
    size_t len, pos;
    const char *name;
};

static int need(struct rd *r, uint64_t n, const char *what)
{
    if (n > r->len - r->pos)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s at offset %zu runs past end of file (%zu bytes)",
                         r->name, what, r->pos, r->len);
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *v, const char *what)
{
    int rc = need(r, 4, what);
    if (rc)
        return rc;
    const unsigned char *b = r->p + r->pos;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    r->pos += 4;
    return 0;
}

static uint64_t le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static int rd_u64(struct rd *r, uint64_t *v, const char *what)
{
    int rc = need(r, 8, what);
    if (rc)
        return rc;
    *v = le64(r->p + r->pos);
    r->pos += 8;
    return 0;
}

static int rd_str(struct rd *r, struct gg_str *s, const char *what)
{
    uint64_t n;
    int rc = rd_u64(r, &n, what);
    if (rc == 0)
        rc = need(r, n, what);
    if (rc)
        return rc;
    s->p = (const char *)r->p + r->pos;
    s->n = n;
    r->pos += (size_t)n;
    return 0;
}

static int str_eq(struct gg_str s, const char *c)
{
    size_t n = strlen(c);
    return s.n == n && memcmp(s.p, c, n) == 0;
}

/* Read one scalar of type t into kv (u/i/f, or str). */
static int rd_scalar(struct rd *r, uint32_t t, struct gg_kv *kv, const char *what)
{
    if (t == GG_STRING)
        return rd_str(r, &kv->str, what);
    int rc = need(r, vtype_size[t], what);
    if (rc)
        return rc;
    const unsigned char *b = r->p + r->pos;
    uint64_t u = 0;
    for (int i = vtype_size[t] - 1; i >= 0; i--)
        u = u << 8 | b[i];
    r->pos += vtype_size[t];
    kv->u = u;
    switch (t) {
    case GG_I8: kv->i = (int8_t)u; break;
    case GG_I16: kv->i = (int16_t)u; break;
    case GG_I32: kv->i = (int32_t)u; break;
    case GG_I64: kv->i = (int64_t)u; break;
    case GG_F32: {
        uint32_t w = (uint32_t)u;
        float f;
        memcpy(&f, &w, 4);
        kv->f = f;
        break;
    }
    case GG_F64: memcpy(&kv->f, &u, 8); break;
    default: kv->i = u > INT64_MAX ? -1 : (int64_t)u; break;
    }
    return 0;
}

static int parse_kv(struct rd *r, struct gg_kv *kv, uint64_t k)
{
    char what[96];
    snprintf(what, sizeof what, "metadata key %" PRIu64, k);
    int rc = rd_str(r, &kv->key, what);
    if (rc)
        return rc;
    if (kv->key.n == 0 || kv->key.n > 65535)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s has a key of %" PRIu64 " bytes", r->name, what,
                         kv->key.n);
    snprintf(what, sizeof what, "metadata '%.*s'", (int)(kv->key.n > 64 ? 64 : kv->key.n),
             kv->key.p);
    rc = rd_u32(r, &kv->type, what);
    if (rc)
        return rc;
    if (kv->type >= GG_VTYPE_COUNT)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s has unknown value type %u", r->name, what, kv->type);
    if (kv->type != GG_ARRAY)
        return rd_scalar(r, kv->type, kv, what);
    rc = rd_u32(r, &kv->arr_type, what);
    if (rc == 0)
        rc = rd_u64(r, &kv->arr_n, what);
    if (rc)
        return rc;
    if (kv->arr_type >= GG_VTYPE_COUNT || kv->arr_type == GG_ARRAY)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s: array of %s type %u", r->name, what,
                         kv->arr_type == GG_ARRAY ? "nested" : "unknown", kv->arr_type);
    kv->arr = r->p + r->pos;
    if (kv->arr_type != GG_STRING) {
        uint64_t es = vtype_size[kv->arr_type];
        if (kv->arr_n > (r->len - r->pos) / es)
            return THAW_FAIL(THAW_EFORMAT, "%s: %s: %" PRIu64 " elements run past end of file",
                             r->name, what, kv->arr_n);
        r->pos += (size_t)(kv->arr_n * es);
        return 0;
    }
    /* Strings have a length each; every one takes at least 8 bytes. */
    if (kv->arr_n > (r->len - r->pos) / 8)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s: %" PRIu64 " strings run past end of file", r->name,
                         what, kv->arr_n);
    for (uint64_t j = 0; j < kv->arr_n; j++) {
        struct gg_str s;
        rc = rd_str(r, &s, what);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_tensor_info(struct rd *r, struct gg_tensor *t, uint64_t k)
{
    char what[96];
    snprintf(what, sizeof what, "tensor info %" PRIu64, k);
    int rc = rd_str(r, &t->name, what);
    if (rc)
        return rc;
    if (t->name.n == 0 || t->name.n > GGUF_MAX_NAME || memchr(t->name.p, '\0', t->name.n))
        return THAW_FAIL(THAW_EFORMAT, "%s: %s: bad name (%" PRIu64 " bytes)", r->name, what,
                         t->name.n);
    snprintf(what, sizeof what, "tensor '%.*s'", (int)t->name.n, t->name.p);
    rc = rd_u32(r, &t->n_dims, what);
    if (rc)
        return rc;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s has %u dimensions (1..%d)", r->name, what, t->n_dims,
                         GGUF_MAX_DIMS);
    t->numel = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        rc = rd_u64(r, &t->ne[d], what);
        if (rc)
            return rc;
        if (t->ne[d] > INT64_MAX || (t->ne[d] && t->numel > UINT64_MAX / t->ne[d]))
            return THAW_FAIL(THAW_EFORMAT, "%s: %s: element count overflows", r->name, what);
        t->numel *= t->ne[d];
    }
    if (t->numel > INT64_MAX)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s: element count overflows", r->name, what);
    rc = rd_u32(r, &t->type, what);
    if (rc == 0)
        rc = rd_u64(r, &t->offset, what);
    if (rc)
        return rc;
    if (t->type >= N_TTYPES || !ttypes[t->type].name)
        return THAW_FAIL(THAW_EDTYPE, "%s: %s has unknown GGML type %u", r->name, what, t->type);
    const struct gg_ttype *tt = &ttypes[t->type];
    if (t->ne[0] % tt->blck)
        return THAW_FAIL(THAW_EFORMAT,
                         "%s: %s: row of %" PRIu64 " is not a multiple of the %s "
                         "block size %u",
                         r->name, what, t->ne[0], tt->name, tt->blck);
    uint64_t blocks = t->numel / tt->blck;
    if (blocks > UINT64_MAX / tt->size)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s: byte size overflows", r->name, what);
    t->bytes = blocks * tt->size;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    const struct gg_tensor *x = *(const struct gg_tensor *const *)a;
    const struct gg_tensor *y = *(const struct gg_tensor *const *)b;
    size_t n = x->name.n < y->name.n ? (size_t)x->name.n : (size_t)y->name.n;
    int c = memcmp(x->name.p, y->name.p, n);
    return c ? c : (x->name.n > y->name.n) - (x->name.n < y->name.n);
}

static int cmp_offset(const void *a, const void *b)
{
    const struct gg_tensor *x = *(const struct gg_tensor *const *)a;
    const struct gg_tensor *y = *(const struct gg_tensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static const struct gg_kv *find_kv(const struct thaw_gguf *g, const char *key)
{
    for (uint64_t k = 0; k < g->n_kv; k++) {
        if (str_eq(g->kv[k].key, key))
            return &g->kv[k];
    }
    return NULL;
}

/* Tensors: bounds against the data section, alignment, no duplicates or overlaps. */
static int check_tensors(struct thaw_gguf *g)
{
    if (g->n_tensors == 0)
        return 0;
    if (g->data_off > g->len)
        return THAW_FAIL(THAW_EFORMAT, "%s: data section at %" PRIu64 " is past end of file",
                         g->name, g->data_off);
    uint64_t data_len = g->len - g->data_off;
    for (uint64_t k = 0; k < g->n_tensors; k++) {
        const struct gg_tensor *t = &g->t[k];
        if (t->offset % g->alignment)
            return THAW_FAIL(THAW_EFORMAT,
                             "%s: tensor '%.*s': offset %" PRIu64 " is not a "
                             "multiple of the alignment %" PRIu64,
                             g->name, (int)t->name.n, t->name.p, t->offset, g->alignment);
        if (t->offset > data_len || t->bytes > data_len - t->offset)
            return THAW_FAIL(THAW_EFORMAT,
                             "%s: tensor '%.*s': bytes [%" PRIu64 ", +%" PRIu64
                             ") run past end of file",
                             g->name, (int)t->name.n, t->name.p, t->offset, t->bytes);
    }
    const struct gg_tensor **s = thaw_calloc((size_t)g->n_tensors, sizeof *s);
    if (!s)
        return -ENOMEM;
    for (uint64_t k = 0; k < g->n_tensors; k++)
        s[k] = &g->t[k];
    int rc = 0;
    qsort(s, (size_t)g->n_tensors, sizeof *s, cmp_name);
    for (uint64_t k = 1; k < g->n_tensors && rc == 0; k++) {
        if (cmp_name(&s[k - 1], &s[k]) == 0)
            rc = THAW_FAIL(THAW_EFORMAT, "%s: duplicate tensor '%.*s'", g->name, (int)s[k]->name.n,
                           s[k]->name.p);
    }
    qsort(s, (size_t)g->n_tensors, sizeof *s, cmp_offset);
    for (uint64_t k = 1; k < g->n_tensors && rc == 0; k++) {
        if (s[k - 1]->offset + s[k - 1]->bytes > s[k]->offset)
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensors '%.*s' and '%.*s' overlap", g->name,
                           (int)s[k - 1]->name.n, s[k - 1]->name.p, (int)s[k]->name.n,
                           s[k]->name.p);
    }
    thaw_free(s);
    return rc;
}

int thaw_gguf_parse(const void *data, size_t len, const char *name, struct thaw_gguf **out)
{
    struct rd r = { .p = data, .len = len, .name = name ? name : "gguf" };
    struct thaw_gguf *g = thaw_calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    int rc = -ENOMEM;
    g->data = data;
    g->len = len;
    g->name = thaw_strdup(r.name);
    if (!g->name)
        goto fail;
    r.name = g->name;
    if (len < 4 || memcmp(data, GGUF_MAGIC, 4) != 0) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: not a GGUF file (bad magic)", r.name);
        goto fail;
    }
    r.pos = 4;
    rc = rd_u32(&r, &g->version, "header");
    if (rc)
        goto fail;
    if (g->version != 2 && g->version != 3) {
        rc = THAW_FAIL(THAW_EVERSION, "%s: GGUF version %u is not supported (2 or 3%s)", r.name,
                       g->version, g->version > 0xffff ? "; a big-endian file?" : "");
        goto fail;
    }
    rc = rd_u64(&r, &g->n_tensors, "header");
    if (rc == 0)
        rc = rd_u64(&r, &g->n_kv, "header");
    if (rc)
        goto fail;
    /* The smallest KV takes 13 bytes (key length, 1-byte key, type, u8) and the
     * smallest tensor info 33: counts beyond that are lies, not allocations. */
    if (g->n_kv > (len - r.pos) / 13 || g->n_tensors > (len - r.pos) / 33) {
        rc = THAW_FAIL(THAW_EFORMAT,
                       "%s: header claims %" PRIu64 " metadata keys and %" PRIu64
                       " tensors, more than %zu bytes can hold",
                       r.name, g->n_kv, g->n_tensors, len);
        goto fail;
    }
    g->kv = thaw_calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof *g->kv);
    g->t = thaw_calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *g->t);
    if (!g->kv || !g->t) {
        rc = -ENOMEM;
        goto fail;
    }
    for (uint64_t k = 0; k < g->n_kv; k++) {
        rc = parse_kv(&r, &g->kv[k], k);
        if (rc)
            goto fail;
        for (uint64_t j = 0; j < k; j++) {
            if (g->kv[j].key.n == g->kv[k].key.n &&
                memcmp(g->kv[j].key.p, g->kv[k].key.p, g->kv[k].key.n) == 0) {
                rc = THAW_FAIL(THAW_EFORMAT, "%s: duplicate metadata key '%.*s'", r.name,
                               (int)(g->kv[k].key.n > 200 ? 200 : g->kv[k].key.n), g->kv[k].key.p);
                goto fail;
            }
        }
    }
    g->alignment = GGUF_DEFAULT_ALIGN;
    const struct gg_kv *al = find_kv(g, "general.alignment");
    if (al) {
        if (al->type > GG_U64 || al->type == GG_F32 || al->type == GG_BOOL ||
            al->type == GG_STRING || al->type == GG_ARRAY || al->i <= 0 || al->i > (1 << 30) ||
            (al->i & (al->i - 1))) {
            rc = THAW_FAIL(THAW_EFORMAT,
                           "%s: general.alignment must be a power of two integer "
                           "up to 2^30",
                           r.name);
            goto fail;
        }
        g->alignment = (uint64_t)al->i;
    }
    for (uint64_t k = 0; k < g->n_tensors; k++) {
        rc = parse_tensor_info(&r, &g->t[k], k);
        if (rc)
            goto fail;
    }
    g->data_off = thaw_align_up(r.pos, g->alignment);
    rc = check_tensors(g);
    if (rc)
        goto fail;
    *out = g;
    return 0;
fail:
    thaw_gguf_close(g);
    return rc;
}

int thaw_gguf_open(const char *path, struct thaw_gguf **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return THAW_FAIL(-errno, "%s: open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return THAW_FAIL(-e, "%s: stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 4) {
        close(fd);
        return THAW_FAIL(THAW_EFORMAT, "%s: not a GGUF file (%s)", path,
                         S_ISREG(st.st_mode) ? "too short" : "not a regular file");
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return THAW_FAIL(-e, "%s: mmap: %s", path, strerror(e));
    struct thaw_gguf *g = NULL;
    int rc = thaw_gguf_parse(map, len, path, &g);
    if (rc) {
        munmap(map, len);
        return rc;
    }
    g->map = map;
    g->map_len = len;
    *out = g;
    return 0;
}

void thaw_gguf_close(struct thaw_gguf *g)
{
    if (!g)
        return;
    if (g->map)
        munmap(g->map, g->map_len);
    thaw_free(g->kv);
    thaw_free(g->t);
    thaw_free(g->name);
    thaw_free(g);
}

size_t thaw_gguf_n_tensors(const struct thaw_gguf *g)
{
    return (size_t)g->n_tensors;
}

int thaw_gguf_tensor(const struct thaw_gguf *g, size_t i, struct thaw_gguf_tensor *out)
{
    if (i >= g->n_tensors)
        return THAW_ENOTFOUND;
    const struct gg_tensor *t = &g->t[i];
    *out = (struct thaw_gguf_tensor){ .name = t->name.p,
                                      .name_len = (size_t)t->name.n,
                                      .ggml_type = t->type,
                                      .type_name = ttypes[t->type].name,
                                      .n_dims = (int)t->n_dims,
                                      .data = g->data + g->data_off + t->offset,
                                      .bytes = t->bytes };
    memcpy(out->ne, t->ne, sizeof out->ne);
    return 0;
}

/* ================================================================ metadata access */

/* Integer value of key (any integer or bool type). 1 found, 0 absent, <0 wrong type. */
static int kv_int(const struct thaw_gguf *g, const char *key, int64_t *v)
{
    const struct gg_kv *kv = find_kv(g, key);
    if (!kv)
        return 0;
    if (kv->type == GG_F32 || kv->type == GG_F64 || kv->type == GG_STRING || kv->type == GG_ARRAY)
        return THAW_FAIL(kv->type == GG_ARRAY ? THAW_ENOTSUP : THAW_EFORMAT,
                         "%s: %s is %s, expected an integer", g->name, key,
                         kv->type == GG_ARRAY ? "an array (per-layer values are not supported)"
                                              : "not an integer");
    if (kv->i < 0)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s is negative", g->name, key);
    *v = kv->i;
    return 1;
}

static int kv_float(const struct thaw_gguf *g, const char *key, double *v)
{
    const struct gg_kv *kv = find_kv(g, key);
    if (!kv)
        return 0;
    if (kv->type == GG_F32 || kv->type == GG_F64)
        *v = kv->f;
    else if (kv->type == GG_STRING || kv->type == GG_ARRAY || kv->type == GG_BOOL)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s is not a number", g->name, key);
    else
        *v = (double)kv->i;
    return 1;
}

/* A string value, or an empty one with .p == NULL when absent. */
static int kv_str(const struct thaw_gguf *g, const char *key, struct gg_str *s)
{
    const struct gg_kv *kv = find_kv(g, key);
    s->p = NULL;
    s->n = 0;
    if (!kv)
        return 0;
    if (kv->type != GG_STRING)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s is not a string", g->name, key);
    *s = kv->str;
    return 1;
}

/* A required positive integer hyper-parameter "<arch>.<suffix>". */
static int hparam(const struct thaw_gguf *g, const char *arch, const char *suffix, int64_t dflt,
                  int64_t max, int64_t *v)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = kv_int(g, key, v);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (dflt < 0)
            return THAW_FAIL(THAW_EFORMAT, "%s: metadata %s is missing", g->name, key);
        *v = dflt;
    }
    if (*v < 1 || *v > max)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s = %" PRId64 " is out of range (1..%" PRId64 ")",
                         g->name, key, *v, max);
    return 0;
}

/* ================================================================ dequantization */

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | man << 13;
    } else if (exp) {
        u = sign | (exp + 112) << 23 | man << 13;
    } else if (man) { /* subnormal: normalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        u = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ff) << 13;
    } else {
        u = sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t rd16(const unsigned char *b)
{
    return (uint16_t)(b[0] | b[1] << 8);
}

/* Dequantize tensor t (bytes at src) into n = t->numel floats, in GGUF order. */
static void dequantize(const struct gg_tensor *t, const unsigned char *src, float *dst)
{
    uint64_t n = t->numel;
    switch (t->type) {
    case GGT_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GGT_F16: thaw_dtype_cast(dst, THAW_DTYPE_F32, src, THAW_DTYPE_F16, (size_t)n); break;
    case GGT_BF16: thaw_dtype_cast(dst, THAW_DTYPE_F32, src, THAW_DTYPE_BF16, (size_t)n); break;
    case GGT_Q8_0: /* f16 d, int8 q[32]: x = q*d */
        for (uint64_t b = 0; b < n / 32; b++, src += 34, dst += 32) {
            float d = f16_to_f32(rd16(src));
            for (int j = 0; j < 32; j++)
                dst[j] = (float)(int8_t)src[2 + j] * d;
        }
        break;
    case GGT_Q4_0: /* f16 d, 16 bytes: low nibbles are x[0..15], high x[16..31]; x = (q-8)*d */
        for (uint64_t b = 0; b < n / 32; b++, src += 18, dst += 32) {
            float d = f16_to_f32(rd16(src));
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((src[2 + j] & 0x0f) - 8) * d;
                dst[j + 16] = (float)((src[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    case GGT_Q4_1: /* f16 d, f16 m, 16 bytes of nibbles: x = q*d + m */
        for (uint64_t b = 0; b < n / 32; b++, src += 20, dst += 32) {
            float d = f16_to_f32(rd16(src)), m = f16_to_f32(rd16(src + 2));
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)(src[4 + j] & 0x0f) * d + m;
                dst[j + 16] = (float)(src[4 + j] >> 4) * d + m;
            }
        }
        break;
    default: /* plan() admits only the types above */ break;
    }
}

static int type_supported(uint32_t type)
{
    return type == GGT_F32 || type == GGT_F16 || type == GGT_BF16 || type == GGT_Q8_0 ||
           type == GGT_Q4_0 || type == GGT_Q4_1;
}

/*
 * llama.cpp's convert_hf_to_gguf.py permutes the rows of q_proj (n_head) and
 * k_proj (n_head_kv) of llama models so that RoPE rotates adjacent pairs.
 * Undo it: within each head of hd rows, GGUF row 2j+r is HF row r*hd/2 + j
 * (transformers' reverse_permute). cols is the row length (1 for a bias).
 */
static void unpermute(float *w, uint64_t rows, uint64_t cols, uint64_t n_head, float *tmp)
{
    uint64_t hd = rows / n_head, half = hd / 2;
    for (uint64_t h = 0; h < n_head; h++) {
        float *head = w + h * hd * cols;
        memcpy(tmp, head, (size_t)(hd * cols) * sizeof *tmp);
        for (uint64_t r = 0; r < 2; r++) {
            for (uint64_t j = 0; j < half; j++)
                memcpy(head + (r * half + j) * cols, tmp + (2 * j + r) * cols,
                       (size_t)cols * sizeof *tmp);
        }
    }
}

/* ================================================================ the plan */

enum { ROLE_OTHER, ROLE_Q, ROLE_K };

/* Required tensors of each layer, as bits of struct gg_plan.have[]. */
static const char *layer_names[][2] = {
    { "attn_norm.weight", "input_layernorm.weight" },
    { "attn_q.weight", "self_attn.q_proj.weight" },
    { "attn_k.weight", "self_attn.k_proj.weight" },
    { "attn_v.weight", "self_attn.v_proj.weight" },
    { "attn_output.weight", "self_attn.o_proj.weight" },
    { "ffn_norm.weight", "post_attention_layernorm.weight" },
    { "ffn_gate.weight", "mlp.gate_proj.weight" },
    { "ffn_up.weight", "mlp.up_proj.weight" },
    { "ffn_down.weight", "mlp.down_proj.weight" },
    /* optional from here */
    { "attn_q.bias", "self_attn.q_proj.bias" },
    { "attn_k.bias", "self_attn.k_proj.bias" },
    { "attn_v.bias", "self_attn.v_proj.bias" },
    { "attn_output.bias", "self_attn.o_proj.bias" },
};
#define N_REQUIRED 9
#define N_LAYER_NAMES (sizeof layer_names / sizeof layer_names[0])

struct gg_out {
    const struct gg_tensor *src;
    char name[GGUF_MAX_NAME + 64]; /* HF name */
    int role;
    enum thaw_dtype dtype;
    int n_dims;
    int64_t shape[GGUF_MAX_DIMS]; /* HF order: slowest first */
    uint64_t bytes;
};

struct gg_hp {
    char arch[32];
    int permute; /* llama: undo the Q/K permutation (Mistral GGUFs say "llama" too) */
    int64_t n_layers, hidden, ff, n_head, n_kv, head_dim, ctx;
    double eps, theta;
    int tied;
    int64_t vocab;
};

struct gg_plan {
    struct gg_hp hp;
    struct gg_out *t;
    size_t n;
};

/* Map a GGUF tensor name to its HF name. Returns 0, or ENOTSUP/EFORMAT. */
static int map_name(const struct thaw_gguf *g, const struct gg_hp *hp, const struct gg_tensor *t,
                    struct gg_out *o, uint32_t *have)
{
    char nm[GGUF_MAX_NAME + 1];
    memcpy(nm, t->name.p, (size_t)t->name.n);
    nm[t->name.n] = '\0';
    o->role = ROLE_OTHER;
    if (strcmp(nm, "token_embd.weight") == 0) {
        snprintf(o->name, sizeof o->name, "model.embed_tokens.weight");
        return 0;
    }
    if (strcmp(nm, "output_norm.weight") == 0) {
        snprintf(o->name, sizeof o->name, "model.norm.weight");
        return 0;
    }
    if (strcmp(nm, "output.weight") == 0) {
        snprintf(o->name, sizeof o->name, "lm_head.weight");
        return 0;
    }
    if (strcmp(nm, "rope_freqs.weight") == 0)
        return THAW_FAIL(THAW_ENOTSUP,
                         "%s: rope_freqs.weight (llama3 RoPE scaling) is not "
                         "supported",
                         g->name);
    if (strncmp(nm, "blk.", 4) == 0 && nm[4] >= '0' && nm[4] <= '9') {
        const char *p = nm + 4;
        int64_t l = 0;
        while (*p >= '0' && *p <= '9' && l <= GGUF_MAX_LAYERS)
            l = l * 10 + (*p++ - '0');
        if (*p == '.' && l < hp->n_layers && !(nm[4] == '0' && p != nm + 5)) {
            for (size_t k = 0; k < N_LAYER_NAMES; k++) {
                if (strcmp(p + 1, layer_names[k][0]) != 0)
                    continue;
                snprintf(o->name, sizeof o->name, "model.layers.%d.%s", (int)l, layer_names[k][1]);
                if (k == 1 || k == 9)
                    o->role = ROLE_Q;
                else if (k == 2 || k == 10)
                    o->role = ROLE_K;
                have[l] |= 1u << k;
                return 0;
            }
        } else if (*p == '.' && l >= hp->n_layers) {
            return THAW_FAIL(THAW_EFORMAT,
                             "%s: tensor '%s': layer %" PRId64 " but block_count "
                             "is %" PRId64,
                             g->name, nm, l, hp->n_layers);
        }
    }
    return THAW_FAIL(THAW_ENOTSUP, "%s: tensor '%s' has no Hugging Face %s equivalent", g->name, nm,
                     hp->arch);
}

static int read_hparams(const struct thaw_gguf *g, struct gg_hp *hp)
{
    struct gg_str arch;
    int rc = kv_str(g, "general.architecture", &arch);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return THAW_FAIL(THAW_EFORMAT, "%s: no general.architecture", g->name);
    if (str_eq(arch, "llama")) {
        hp->permute = 1;
    } else if (str_eq(arch, "qwen2")) {
        hp->permute = 0;
    } else {
        return THAW_FAIL(THAW_ENOTSUP, "%s: architecture '%.*s' is not supported (llama, qwen2)",
                         g->name, (int)(arch.n > 64 ? 64 : arch.n), arch.p);
    }
    snprintf(hp->arch, sizeof hp->arch, "%.*s", (int)arch.n, arch.p);
    const char *a = hp->arch;
    if ((rc = hparam(g, a, "block_count", -1, GGUF_MAX_LAYERS, &hp->n_layers)) ||
        (rc = hparam(g, a, "embedding_length", -1, 1 << 20, &hp->hidden)) ||
        (rc = hparam(g, a, "feed_forward_length", -1, 1 << 22, &hp->ff)) ||
        (rc = hparam(g, a, "attention.head_count", -1, 1 << 14, &hp->n_head)) ||
        (rc = hparam(g, a, "attention.head_count_kv", hp->n_head, hp->n_head, &hp->n_kv)) ||
        (rc = hparam(g, a, "context_length", 2048, INT32_MAX, &hp->ctx)))
        return rc;
    if (hp->n_head % hp->n_kv)
        return THAW_FAIL(THAW_EFORMAT,
                         "%s: head_count %" PRId64 " is not a multiple of "
                         "head_count_kv %" PRId64,
                         g->name, hp->n_head, hp->n_kv);
    int64_t rot = 0;
    if ((rc = hparam(g, a, "attention.key_length", hp->hidden / hp->n_head, 1 << 16,
                     &hp->head_dim)) ||
        (rc = hparam(g, a, "rope.dimension_count", hp->head_dim, 1 << 16, &rot)))
        return rc;
    if (rot != hp->head_dim)
        return THAW_FAIL(THAW_ENOTSUP,
                         "%s: partial rotary embedding (%" PRId64 " of %" PRId64
                         " dims) is not supported",
                         g->name, rot, hp->head_dim);
    char key[128];
    hp->eps = 1e-5;
    hp->theta = 10000.0;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    if ((rc = kv_float(g, key, &hp->eps)) < 0)
        return rc;
    snprintf(key, sizeof key, "%s.rope.freq_base", a);
    if ((rc = kv_float(g, key, &hp->theta)) < 0)
        return rc;
    if (!(hp->eps > 0 && hp->eps < 1) || !(hp->theta > 0 && hp->theta < 1e12))
        return THAW_FAIL(THAW_EFORMAT, "%s: rms epsilon %g or rope base %g out of range", g->name,
                         hp->eps, hp->theta);
    struct gg_str st;
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if ((rc = kv_str(g, key, &st)) < 0)
        return rc;
    if (rc == 1 && !str_eq(st, "none"))
        return THAW_FAIL(THAW_ENOTSUP, "%s: RoPE scaling '%.*s' is not supported", g->name,
                         (int)(st.n > 32 ? 32 : st.n), st.p);
    return 0;
}

static const struct gg_tensor *find_tensor(const struct thaw_gguf *g, const char *name)
{
    for (uint64_t k = 0; k < g->n_tensors; k++) {
        if (str_eq(g->t[k].name, name))
            return &g->t[k];
    }
    return NULL;
}

/* Check and map every tensor; pick output dtypes. */
static int plan(const struct thaw_gguf *g, enum thaw_convert_dtype want, struct gg_plan *p)
{
    int rc = read_hparams(g, &p->hp);
    if (rc)
        return rc;
    struct gg_hp *hp = &p->hp;
    const struct gg_tensor *embd = find_tensor(g, "token_embd.weight");
    if (!embd || embd->n_dims != 2 || (int64_t)embd->ne[0] != hp->hidden)
        return THAW_FAIL(THAW_EFORMAT, "%s: token_embd.weight is %s", g->name,
                         embd ? "not [hidden, vocab]" : "missing");
    hp->vocab = (int64_t)embd->ne[1];
    hp->tied = find_tensor(g, "output.weight") == NULL;
    p->t = thaw_calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *p->t);
    uint32_t *have = thaw_calloc((size_t)hp->n_layers, sizeof *have);
    if (!p->t || !have) {
        thaw_free(have);
        return -ENOMEM;
    }
    for (uint64_t k = 0; k < g->n_tensors && rc == 0; k++) {
        const struct gg_tensor *t = &g->t[k];
        struct gg_out *o = &p->t[p->n];
        o->src = t;
        rc = map_name(g, hp, t, o, have);
        if (rc)
            break;
        if (!type_supported(t->type)) {
            rc = THAW_FAIL(THAW_EDTYPE,
                           "%s: tensor '%.*s' has type %s (supported: F32, F16, "
                           "BF16, Q8_0, Q4_0, Q4_1)",
                           g->name, (int)t->name.n, t->name.p, ttypes[t->type].name);
            break;
        }
        o->n_dims = (int)t->n_dims;
        for (uint32_t d = 0; d < t->n_dims; d++)
            o->shape[d] = (int64_t)t->ne[t->n_dims - 1 - d];
        if (o->role != ROLE_OTHER) {
            uint64_t heads = (uint64_t)(o->role == ROLE_Q ? hp->n_head : hp->n_kv);
            uint64_t rows = t->n_dims == 1 ? t->ne[0] : t->ne[1];
            if (t->n_dims > 2 || rows != heads * (uint64_t)hp->head_dim ||
                (t->n_dims == 2 && (int64_t)t->ne[0] != hp->hidden) || hp->head_dim % 2) {
                rc = THAW_FAIL(THAW_EFORMAT,
                               "%s: tensor '%.*s' is not [%" PRId64 " heads x %" PRId64
                               "] rows of %" PRId64,
                               g->name, (int)t->name.n, t->name.p, (int64_t)heads, hp->head_dim,
                               hp->hidden);
                break;
            }
        }
        if (want == THAW_CONVERT_KEEP)
            o->dtype = t->type == GGT_F16    ? THAW_DTYPE_F16
                       : t->type == GGT_BF16 ? THAW_DTYPE_BF16
                                             : THAW_DTYPE_F32;
        else
            o->dtype = want == THAW_CONVERT_BF16  ? THAW_DTYPE_BF16
                       : want == THAW_CONVERT_F16 ? THAW_DTYPE_F16
                                                  : THAW_DTYPE_F32;
        o->bytes = t->numel * thaw_dtype_size(o->dtype);
        p->n++;
    }
    for (int64_t l = 0; l < hp->n_layers && rc == 0; l++) {
        for (int k = 0; k < N_REQUIRED; k++) {
            if (!(have[l] & (1u << k))) {
                rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor blk.%d.%s is missing", g->name, (int)l,
                               layer_names[k][0]);
                break;
            }
        }
    }
    thaw_free(have);
    return rc;
}

/* ================================================================ the HF folder */

static int write_json(const char *dir, const char *file, json_t *j)
{
    if (!j)
        return -ENOMEM;
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return -ENOMEM;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int rc = thaw_write_file_atomic(path, text, strlen(text));
    free(text); /* jansson allocated it */ /* checksrc: allow */
    return rc;
}

static json_t *config_json(const struct gg_plan *p, int64_t bos, int64_t eos)
{
    const struct gg_hp *hp = &p->hp;
    int qwen = strcmp(hp->arch, "qwen2") == 0;
    enum thaw_dtype dt = THAW_DTYPE_F32;
    uint64_t best = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->t[i].bytes >= best) {
            best = p->t[i].bytes;
            dt = p->t[i].dtype;
        }
    }
    json_t *c = json_object();
    if (!c)
        return NULL;
    json_object_set_new(c, "architectures",
                        json_pack("[s]", qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
    json_object_set_new(c, "model_type", json_string(hp->arch));
    json_object_set_new(c, "hidden_size", json_integer(hp->hidden));
    json_object_set_new(c, "intermediate_size", json_integer(hp->ff));
    json_object_set_new(c, "num_hidden_layers", json_integer(hp->n_layers));
    json_object_set_new(c, "num_attention_heads", json_integer(hp->n_head));
    json_object_set_new(c, "num_key_value_heads", json_integer(hp->n_kv));
    json_object_set_new(c, "head_dim", json_integer(hp->head_dim));
    json_object_set_new(c, "max_position_embeddings", json_integer(hp->ctx));
    json_object_set_new(c, "rms_norm_eps", json_real(hp->eps));
    json_object_set_new(c, "rope_theta", json_real(hp->theta));
    json_object_set_new(c, "rope_scaling", json_null());
    json_object_set_new(c, "vocab_size", json_integer(hp->vocab));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(hp->tied));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    if (!qwen) {
        json_object_set_new(c, "attention_bias", json_false());
        json_object_set_new(c, "mlp_bias", json_false());
    } else {
        json_object_set_new(c, "use_sliding_window", json_false());
        json_object_set_new(c, "max_window_layers", json_integer(hp->n_layers));
    }
    if (bos >= 0)
        json_object_set_new(c, "bos_token_id", json_integer(bos));
    if (eos >= 0)
        json_object_set_new(c, "eos_token_id", json_integer(eos));
    json_object_set_new(c, "torch_dtype",
                        json_string(dt == THAW_DTYPE_BF16  ? "bfloat16"
                                    : dt == THAW_DTYPE_F16 ? "float16"
                                                           : "float32"));
    return c;
}

/* ---------------------------------------------------------------- tokenizer */

/* GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the
 * other 68 map to U+0100.. in byte order. */
static void byte_alphabet(uint32_t cp_of[256])
{
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        cp_of[b] = printable ? b : 256 + n++;
    }
}

static int in_alphabet(uint32_t cp)
{
    return (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 323);
}

/* Decode one UTF-8 sequence at s (n bytes left); 0 on invalid. */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int len = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || (size_t)len > n)
        return 0;
    uint32_t c = s[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* Whether every character of s is in the byte-level alphabet (invalid UTF-8 is not). */
static int all_in_alphabet(struct gg_str s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        int k = utf8_next(p + i, (size_t)(s.n - i), &cp);
        if (!k || !in_alphabet(cp))
            return 0;
        i += (size_t)k;
    }
    return 1;
}

/* s spelled in the byte-level alphabet: each byte becomes its code point, as
 * UTF-8, into buf (room for 2 bytes per input byte). */
static size_t respell(struct gg_str s, const uint32_t cp_of[256], char *buf)
{
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        uint32_t c = cp_of[(unsigned char)s.p[i]];
        if (c < 0x80) {
            buf[o++] = (char)c;
        } else {
            buf[o++] = (char)(0xc0 | c >> 6);
            buf[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    return o;
}

/* The string elements of an array KV as a table. */
static int str_array(const struct thaw_gguf *g, const char *key, struct gg_str **out, uint64_t *n)
{
    const struct gg_kv *kv = find_kv(g, key);
    *out = NULL;
    *n = 0;
    if (!kv)
        return 0;
    if (kv->type != GG_ARRAY || kv->arr_type != GG_STRING)
        return THAW_FAIL(THAW_EFORMAT, "%s: %s is not an array of strings", g->name, key);
    struct gg_str *s = thaw_calloc(kv->arr_n ? (size_t)kv->arr_n : 1, sizeof *s);
    if (!s)
        return -ENOMEM;
    const unsigned char *p = kv->arr; /* bounds were checked by the parser */
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        s[i].n = le64(p);
        s[i].p = (const char *)p + 8;
        p += 8 + s[i].n;
    }
    *out = s;
    *n = kv->arr_n;
    return 1;
}

static json_t *jstr(struct gg_str s)
{
    return json_stringn(s.p ? s.p : "", (size_t)s.n); /* NULL when not UTF-8 */
}

/* Pre-tokenizer split regexes by tokenizer.ggml.pre, as transformers' GGUF
 * import sets them (gguf_tokenizer_mapping.py); other values keep GPT-2's
 * ByteLevel regex. */
#define LLAMA3_SPLIT \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_SPLIT \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *pre_splits[][2] = {
    { "llama3", LLAMA3_SPLIT },    { "llama-v3", LLAMA3_SPLIT },
    { "llama-bpe", LLAMA3_SPLIT }, { "falcon3", LLAMA3_SPLIT },
    { "dbrx", LLAMA3_SPLIT },      { "smaug-bpe", LLAMA3_SPLIT },
    { "qwen2", QWEN2_SPLIT },      { "deepseek-r1-qwen", QWEN2_SPLIT },
};

static json_t *byte_level(int use_regex, int prefix)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", prefix,
                     "trim_offsets", 1, "use_regex", use_regex);
}

static json_t *pre_tokenizer(struct gg_str pre)
{
    for (size_t k = 0; k < sizeof pre_splits / sizeof pre_splits[0]; k++) {
        if (pre.p && str_eq(pre, pre_splits[k][0]))
            return json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                             "pretokenizers", "type", "Split", "pattern", "Regex", pre_splits[k][1],
                             "behavior", "Isolated", "invert", 0, byte_level(0, 0));
    }
    return byte_level(1, 0);
}

static json_t *post_processor(const char *bos, int64_t bos_id)
{
    if (!bos)
        return json_pack("{s:s, s:[{s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{}}",
                         "type", "TemplateProcessing", "single", "Sequence", "id", "A", "type_id",
                         0, "pair", "Sequence", "id", "A", "type_id", 0, "Sequence", "id", "B",
                         "type_id", 1, "special_tokens");
    return json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                     " s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                     " s:{s:{s:s, s:[I], s:[s]}}}",
                     "type", "TemplateProcessing", "single", "SpecialToken", "id", bos, "type_id",
                     0, "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", bos,
                     "type_id", 0, "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", bos,
                     "type_id", 1, "Sequence", "id", "B", "type_id", 1, "special_tokens", bos, "id",
                     bos, "ids", (json_int_t)bos_id, "tokens", bos);
}

/* A token string -> id table (open addressing over xxh3) for SentencePiece
 * merges. A repeated token maps to its last id, as a Python dict would. */
struct vmap {
    const struct gg_str *tokens;
    uint32_t *slot; /* token id + 1; 0 = empty */
    size_t mask;
};

static int vmap_init(struct vmap *m, const struct gg_str *tokens, uint64_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    m->slot = thaw_calloc(cap, sizeof *m->slot);
    if (!m->slot)
        return -ENOMEM;
    m->mask = cap - 1;
    m->tokens = tokens;
    for (uint64_t i = 0; i < n; i++) {
        size_t h = (size_t)thaw_xxh3(tokens[i].p, (size_t)tokens[i].n) & m->mask;
        while (m->slot[h]) {
            const struct gg_str *t = &tokens[m->slot[h] - 1];
            if (t->n == tokens[i].n && memcmp(t->p, tokens[i].p, (size_t)t->n) == 0)
                break;
            h = (h + 1) & m->mask;
        }
        m->slot[h] = (uint32_t)i + 1;
    }
    return 0;
}

static int64_t vmap_get(const struct vmap *m, const char *p, size_t n)
{
    size_t h = (size_t)thaw_xxh3(p, n) & m->mask;
    while (m->slot[h]) {
        const struct gg_str *t = &m->tokens[m->slot[h] - 1];
        if (t->n == n && memcmp(t->p, p, n) == 0)
            return (int64_t)m->slot[h] - 1;
        h = (h + 1) & m->mask;
    }
    return -1;
}

struct merge {
    uint32_t l, r;         /* token ids of the halves */
    float score;           /* of the merged token */
    uint32_t len_l, len_r; /* in code points */
    uint32_t seq;          /* order of discovery, for a stable sort */
};

static int cmp_local(const void *a, const void *b)
{
    const struct merge *x = a, *y = b;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

static int cmp_merge(const void *a, const void *b)
{
    const struct merge *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->len_l != y->len_l)
        return x->len_l > y->len_l ? -1 : 1;
    if (x->len_r != y->len_r)
        return x->len_r > y->len_r ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Code points in s[0..n) (bytes that do not start a valid sequence count one each). */
static uint32_t cp_len(const char *s, size_t n)
{
    uint32_t k = 0;
    for (size_t i = 0; i < n; k++) {
        uint32_t cp;
        int step = utf8_next((const unsigned char *)s + i, n - i, &cp);
        i += step ? (size_t)step : 1;
    }
    return k;
}

/*
 * Merges implied by a SentencePiece vocabulary (transformers'
 * generate_merges with scores): every split of a token into two tokens of
 * the vocabulary is a merge ranked by the merged token's score, then by
 * the lengths of the halves (longer first), then by discovery order; the
 * splits of one token are ordered by (left id, right id).
 */
static int spm_merges(const struct thaw_gguf *g, const struct gg_str *tokens, uint64_t n,
                      const unsigned char *scores, json_t *out)
{
    struct vmap vm;
    int rc = vmap_init(&vm, tokens, n);
    if (rc)
        return rc;
    struct merge *m = NULL;
    size_t nm = 0, cap = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        const struct gg_str *t = &tokens[i];
        if (vmap_get(&vm, t->p, (size_t)t->n) != (int64_t)i)
            continue; /* a repeated token: its last id stands for it */
        size_t first = nm;
        for (size_t k = 1; k < t->n; k++) {
            if (((unsigned char)t->p[k] & 0xc0) == 0x80)
                continue; /* split between code points only */
            int64_t l = vmap_get(&vm, t->p, k), r = vmap_get(&vm, t->p + k, (size_t)t->n - k);
            if (l < 0 || r < 0)
                continue;
            if (nm == cap) {
                cap = cap ? 2 * cap : 1024;
                struct merge *nmv = thaw_realloc(m, cap * sizeof *m);
                if (!nmv) {
                    rc = -ENOMEM;
                    break;
                }
                m = nmv;
            }
            float score;
            memcpy(&score, scores + 4 * i, 4); /* unaligned in the file; little-endian host */
            m[nm++] = (struct merge){ .l = (uint32_t)l,
                                      .r = (uint32_t)r,
                                      .score = score,
                                      .len_l = cp_len(t->p, k),
                                      .len_r = cp_len(t->p + k, (size_t)t->n - k) };
        }
        if (nm - first > 1)
            qsort(m + first, nm - first, sizeof *m, cmp_local);
    }
    for (size_t k = 0; k < nm; k++)
        m[k].seq = (uint32_t)k;
    if (rc == 0 && nm)
        qsort(m, nm, sizeof *m, cmp_merge);
    for (size_t k = 0; k < nm && rc == 0; k++) {
        json_t *pair = json_pack("[s%, s%]", tokens[m[k].l].p, (size_t)tokens[m[k].l].n,
                                 tokens[m[k].r].p, (size_t)tokens[m[k].r].n);
        if (!pair || json_array_append_new(out, pair) != 0)
            rc = pair ? -ENOMEM
                      : THAW_FAIL(THAW_EFORMAT, "%s: token %u is not valid UTF-8", g->name, m[k].l);
    }
    thaw_free(m);
    thaw_free(vm.slot);
    return rc;
}

/* GGUF-stated merges "a b" as [a, b] pairs. */
static int file_merges(const struct thaw_gguf *g, const struct gg_str *merges, uint64_t n,
                       json_t *out)
{
    for (uint64_t i = 0; i < n; i++) {
        const char *sp = memchr(merges[i].p, ' ', (size_t)merges[i].n);
        if (!sp || sp == merges[i].p || sp == merges[i].p + merges[i].n - 1)
            return THAW_FAIL(THAW_EFORMAT, "%s: merge %" PRIu64 " is not \"a b\"", g->name, i);
        size_t a = (size_t)(sp - merges[i].p);
        json_t *pair = json_pack("[s%, s%]", merges[i].p, a, sp + 1, (size_t)merges[i].n - a - 1);
        if (!pair || json_array_append_new(out, pair) != 0)
            return pair ? -ENOMEM
                        : THAW_FAIL(THAW_EFORMAT, "%s: merge %" PRIu64 " is not valid UTF-8",
                                    g->name, i);
    }
    return 0;
}

/* tokenizers' SentencePiece-style pieces: "\xe2\x96\x81" (U+2581) stands for a space. */
#define SPM_SPACE "\xe2\x96\x81"

static json_t *spm_decoder(int strip)
{
    json_t *d = json_pack("[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]", "type", "Replace", "pattern",
                          "String", SPM_SPACE, "content", " ", "type", "ByteFallback", "type",
                          "Fuse");
    if (d && strip)
        json_array_append_new(d, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ",
                                           "start", 1, "stop", 0));
    return json_pack("{s:s, s:o}", "type", "Sequence", "decoders", d);
}

struct gg_tok {
    json_t *tokenizer, *config;
    int64_t bos, eos;
    char *chat_template; /* NUL-terminated copy, or NULL */
};

/* Special token id key -> its string (NULL if absent or out of range). */
static int special(const struct thaw_gguf *g, const char *key, const struct gg_str *tokens,
                   uint64_t n_tokens, int64_t *id, json_t **s)
{
    *id = -1;
    *s = NULL;
    int rc = kv_int(g, key, id);
    if (rc <= 0) {
        *id = -1;
        return rc;
    }
    if ((uint64_t)*id >= n_tokens)
        return THAW_FAIL(THAW_EFORMAT,
                         "%s: %s = %" PRId64 " is not a token id (%" PRIu64 " tokens)", g->name,
                         key, *id, n_tokens);
    *s = jstr(tokens[*id]);
    if (!*s)
        return THAW_FAIL(THAW_EFORMAT, "%s: token %" PRId64 " is not valid UTF-8", g->name, *id);
    return 0;
}

/*
 * tokenizer.json and tokenizer_config.json from tokenizer.ggml.* the way
 * transformers' GGUF import builds them (gguf_tokenizer_mapping.py):
 *  - "gpt2", byte-level BPE: the vocabulary in the byte alphabet (tokens
 *    outside it respelled byte by byte), the file's merges, a pre-tokenizer
 *    chosen by tokenizer.ggml.pre;
 *  - "llama", SentencePiece: the vocabulary as is, merges recovered from the
 *    scores (unless the file has merges), byte fallback, Metaspace.
 * CONTROL tokens (type 3; for byte-level only those in the alphabet) and the
 * bos/eos/unk/pad tokens become special added tokens, USER_DEFINED (4)
 * plain added tokens. Unlike transformers, tokenizer.ggml.add_space_prefix
 * = false is honoured (no prefix space), as llama.cpp does.
 */
static int build_tokenizer(const struct thaw_gguf *g, const struct gg_hp *hp, struct gg_tok *tk)
{
    struct gg_str model, pre, tmpl;
    struct gg_str *tokens = NULL, *merges = NULL;
    uint64_t n_tokens = 0, n_merges = 0;
    json_t *tok = NULL, *cfg = NULL, *vocab = NULL, *jm = NULL, *added = NULL;
    json_t *bos = NULL, *eos = NULL, *unk = NULL, *pad = NULL;
    char *buf = NULL;
    int rc;
    tk->bos = tk->eos = -1;
    if ((rc = kv_str(g, "tokenizer.ggml.model", &model)) < 0)
        return rc;
    if (rc == 0)
        return 0; /* weights only */
    int spm = str_eq(model, "llama");
    if (!spm && !str_eq(model, "gpt2"))
        return THAW_FAIL(THAW_ENOTSUP,
                         "%s: tokenizer.ggml.model '%.*s' is not supported "
                         "(byte-level BPE 'gpt2' and SentencePiece 'llama' are)",
                         g->name, (int)(model.n > 32 ? 32 : model.n), model.p);
    if ((rc = kv_str(g, "tokenizer.ggml.pre", &pre)) < 0 ||
        (rc = kv_str(g, "tokenizer.chat_template", &tmpl)) < 0 ||
        (rc = str_array(g, "tokenizer.ggml.tokens", &tokens, &n_tokens)) < 0 ||
        (rc = str_array(g, "tokenizer.ggml.merges", &merges, &n_merges)) < 0)
        goto out;
    if (n_tokens == 0 || n_tokens > (uint64_t)hp->vocab || n_tokens >= UINT32_MAX) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: %" PRIu64 " tokens for %" PRId64 " embedding rows",
                       g->name, n_tokens, hp->vocab);
        goto out;
    }
    const struct gg_kv *types = find_kv(g, "tokenizer.ggml.token_type");
    if (types && (types->type != GG_ARRAY || types->arr_n != n_tokens ||
                  (types->arr_type != GG_I32 && types->arr_type != GG_U32))) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: tokenizer.ggml.token_type is not %" PRIu64 " int32s",
                       g->name, n_tokens);
        goto out;
    }
    const struct gg_kv *scores = find_kv(g, "tokenizer.ggml.scores");
    if (spm && !merges &&
        (!scores || scores->type != GG_ARRAY || scores->arr_type != GG_F32 ||
         scores->arr_n != n_tokens)) {
        rc = THAW_FAIL(THAW_EFORMAT,
                       "%s: a SentencePiece vocabulary needs merges or %" PRIu64
                       " float32 tokenizer.ggml.scores",
                       g->name, n_tokens);
        goto out;
    }
    int64_t unk_id, pad_id;
    if ((rc = special(g, "tokenizer.ggml.bos_token_id", tokens, n_tokens, &tk->bos, &bos)) ||
        (rc = special(g, "tokenizer.ggml.eos_token_id", tokens, n_tokens, &tk->eos, &eos)) ||
        (rc = special(g, "tokenizer.ggml.unknown_token_id", tokens, n_tokens, &unk_id, &unk)) ||
        (rc = special(g, "tokenizer.ggml.padding_token_id", tokens, n_tokens, &pad_id, &pad)))
        goto out;
    /* llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise. */
    int64_t add_bos = spm, add_eos = 0, prefix = 1;
    if ((rc = kv_int(g, "tokenizer.ggml.add_bos_token", &add_bos)) < 0 ||
        (rc = kv_int(g, "tokenizer.ggml.add_eos_token", &add_eos)) < 0 ||
        (rc = kv_int(g, "tokenizer.ggml.add_space_prefix", &prefix)) < 0)
        goto out;

    uint32_t cp_of[256];
    byte_alphabet(cp_of);
    size_t maxlen = 0;
    for (uint64_t i = 0; i < n_tokens; i++)
        maxlen = tokens[i].n > maxlen ? (size_t)tokens[i].n : maxlen;
    buf = thaw_malloc(2 * maxlen + 1);
    vocab = json_object();
    jm = json_array();
    added = json_array();
    if (!buf || !vocab || !jm || !added) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint64_t i = 0; i < n_tokens; i++) {
        struct gg_str s = tokens[i];
        int ok = spm || all_in_alphabet(s);
        if (!ok) {
            s.n = respell(s, cp_of, buf);
            s.p = buf;
        }
        /* json_object_setn_new checks the key is UTF-8 and releases v if not */
        if (json_object_setn_new(vocab, s.p, (size_t)s.n, json_integer((json_int_t)i)) != 0) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: token %" PRIu64 " is not valid UTF-8", g->name, i);
            goto out;
        }
        int32_t ty = 1;
        if (types)
            memcpy(&ty, types->arr + 4 * i, 4); /* little-endian host */
        int is_special = (ty == 3 && ok) || (int64_t)i == tk->bos || (int64_t)i == tk->eos ||
                         (int64_t)i == unk_id || (int64_t)i == pad_id;
        if (is_special || (ok && ty == 4)) {
            json_t *at = json_pack("{s:I, s:o, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i,
                                   "content", jstr(tokens[i]), "single_word", 0, "lstrip", 0,
                                   "rstrip", 0, "normalized", 0, "special", is_special);
            if (!at || json_array_append_new(added, at) != 0) {
                rc = at ? -ENOMEM
                        : THAW_FAIL(THAW_EFORMAT, "%s: token %" PRIu64 " is not valid UTF-8",
                                    g->name, i);
                goto out;
            }
        }
    }
    if (merges)
        rc = file_merges(g, merges, n_merges, jm);
    else if (spm)
        rc = spm_merges(g, tokens, n_tokens, scores->arr, jm);
    if (rc)
        goto out;
    json_t *bpe;
    if (spm)
        bpe = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                        "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                        "fuse_unk", 1, "byte_fallback", 1, "ignore_merges", 0, "vocab", vocab,
                        "merges", jm);
    else
        bpe = json_pack("{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                        "dropout", "unk_token", "continuing_subword_prefix", "",
                        "end_of_word_suffix", "", "fuse_unk", 0, "byte_fallback", 0,
                        "ignore_merges", 0, "vocab", vocab, "merges", jm);
    vocab = jm = NULL;
    const char *bos_s = add_bos && bos ? json_string_value(bos) : NULL;
    json_t *pretok = spm ? json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                                     SPM_SPACE, "prepend_scheme", prefix ? "first" : "never",
                                     "split", 0)
                         : pre_tokenizer(pre);
    tok = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:o, s:o}", "version", "1.0", "truncation",
                    "padding", "added_tokens", added, "normalizer", "pre_tokenizer", pretok,
                    "post_processor", post_processor(bos_s, tk->bos), "decoder",
                    spm ? spm_decoder((int)prefix) : byte_level(1, 1), "model", bpe);
    added = NULL;
    cfg = json_object();
    if (!tok || !cfg) {
        rc = -ENOMEM;
        goto out;
    }
    json_object_set_new(cfg, "add_bos_token", json_boolean(add_bos));
    json_object_set_new(cfg, "add_eos_token", json_boolean(add_eos));
    json_object_set_new(cfg, "bos_token", bos ? json_incref(bos) : json_null());
    json_object_set_new(cfg, "eos_token", eos ? json_incref(eos) : json_null());
    json_object_set_new(cfg, "unk_token", unk ? json_incref(unk) : json_null());
    json_object_set_new(cfg, "pad_token", pad ? json_incref(pad) : json_null());
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(cfg, "model_max_length", json_integer(hp->ctx));
    json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    if (tmpl.p) {
        json_t *t = jstr(tmpl);
        tk->chat_template = thaw_malloc((size_t)tmpl.n + 1);
        if (!t || !tk->chat_template) {
            json_decref(t);
            rc = t ? -ENOMEM : THAW_FAIL(THAW_EFORMAT, "%s: chat template is not UTF-8", g->name);
            goto out;
        }
        memcpy(tk->chat_template, tmpl.p, (size_t)tmpl.n);
        tk->chat_template[tmpl.n] = '\0';
        json_object_set_new(cfg, "chat_template", t);
    }
    tk->tokenizer = tok;
    tk->config = cfg;
    tok = cfg = NULL;
    rc = 0;
out:
    json_decref(tok);
    json_decref(cfg);
    json_decref(vocab);
    json_decref(jm);
    json_decref(added);
    json_decref(bos);
    json_decref(eos);
    json_decref(unk);
    json_decref(pad);
    thaw_free(buf);
    thaw_free(tokens);
    thaw_free(merges);
    return rc;
}

/* ---------------------------------------------------------------- model.safetensors */

static int write_safetensors(const struct thaw_gguf *g, const struct gg_plan *p,
                             const struct gg_hp *hp, const char *path)
{
    json_t *h = json_object();
    if (!h)
        return -ENOMEM;
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct gg_out *o = &p->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < o->n_dims; d++)
            json_array_append_new(shape, json_integer(o->shape[d]));
        json_object_set_new(h, o->name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", thaw_dtype_name(o->dtype),
                                      "shape", shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + o->bytes)));
        off += o->bytes;
    }
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!text)
        return -ENOMEM;
    size_t hl = strlen(text), padded = (size_t)thaw_align_up(hl, 8);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        free(text); /* checksrc: allow */
        return THAW_FAIL(-e, "%s: create: %s", path, strerror(e));
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; i++)
        n8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int rc = thaw_write_all(fd, n8, 8, path);
    if (rc == 0)
        rc = thaw_write_all(fd, text, hl, path);
    for (size_t k = hl; k < padded && rc == 0; k++)
        rc = thaw_write_all(fd, " ", 1, path);
    free(text); /* checksrc: allow */
    float *f = NULL, *tmp = NULL;
    void *cast = NULL;
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        const struct gg_out *o = &p->t[i];
        const struct gg_tensor *t = o->src;
        size_t n = (size_t)t->numel;
        f = thaw_malloc(n ? n * sizeof *f : 1);
        cast = o->dtype == THAW_DTYPE_F32 ? NULL : thaw_malloc(n ? (size_t)o->bytes : 1);
        if (!f || (o->dtype != THAW_DTYPE_F32 && !cast)) {
            rc = -ENOMEM;
            break;
        }
        dequantize(t, g->data + g->data_off + t->offset, f);
        if (hp->permute && o->role != ROLE_OTHER) {
            uint64_t heads = (uint64_t)(o->role == ROLE_Q ? hp->n_head : hp->n_kv);
            uint64_t cols = t->n_dims == 1 ? 1 : t->ne[0];
            tmp = thaw_malloc((size_t)((uint64_t)hp->head_dim * cols) * sizeof *tmp);
            if (!tmp) {
                rc = -ENOMEM;
                break;
            }
            unpermute(f, t->n_dims == 1 ? t->ne[0] : t->ne[1], cols, heads, tmp);
            THAW_FREE(tmp);
        }
        if (cast)
            thaw_dtype_cast(cast, o->dtype, f, THAW_DTYPE_F32, n);
        rc = thaw_write_all(fd, cast ? cast : (void *)f, (size_t)o->bytes, path);
        THAW_FREE(f);
        THAW_FREE(cast);
    }
    thaw_free(f);
    thaw_free(cast);
    thaw_free(tmp);
    if (close(fd) != 0 && rc == 0)
        rc = THAW_FAIL(-errno, "%s: close: %s", path, strerror(errno));
    return rc;
}

/* ================================================================ convert */

int thaw_gguf_convert(const char *gguf_path, const char *out_dir, const struct thaw_convert_opts *o)
{
    struct thaw_convert_opts opts = { 0 };
    if (o)
        opts = *o;
    if ((unsigned)opts.dtype > THAW_CONVERT_F32)
        return THAW_FAIL(THAW_EINVAL, "unknown target dtype %d", (int)opts.dtype);
    struct stat st;
    if (stat(out_dir, &st) == 0 && !opts.force)
        return THAW_FAIL(-EEXIST, "%s already exists (use --force to replace it)", out_dir);
    struct thaw_gguf *g = NULL;
    struct gg_plan p = { 0 };
    struct gg_tok tk = { 0 };
    json_t *cfg = NULL, *gen = NULL;
    char tmp[3968], path[4096]; /* tmp + a file name fits path */
    int rc, tmp_made = 0;
    double t0 = thaw_now_s();
    rc = thaw_gguf_open(gguf_path, &g);
    if (rc)
        return rc;
    rc = plan(g, opts.dtype, &p);
    if (rc == 0)
        rc = build_tokenizer(g, &p.hp, &tk);
    if (rc)
        goto out;
    cfg = config_json(&p, tk.bos, tk.eos);
    gen = json_object();
    if (!cfg || !gen) {
        rc = -ENOMEM;
        goto out;
    }
    if (tk.bos >= 0)
        json_object_set_new(gen, "bos_token_id", json_integer(tk.bos));
    if (tk.eos >= 0)
        json_object_set_new(gen, "eos_token_id", json_integer(tk.eos));

    /* The HF folder lives beside out_dir (same file system, cleaned up always). */
    if (snprintf(tmp, sizeof tmp, "%s.gguf-hf.%d", out_dir, (int)getpid()) >= (int)sizeof tmp) {
        rc = THAW_FAIL(THAW_EINVAL, "%s: path too long", out_dir);
        goto out;
    }
    if (thaw_rm_rf(tmp) != 0 || mkdir(tmp, 0755) != 0) {
        rc = THAW_FAIL(-errno, "%s: mkdir: %s", tmp, strerror(errno));
        goto out;
    }
    tmp_made = 1;
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    rc = write_safetensors(g, &p, &p.hp, path);
    if (rc == 0)
        rc = write_json(tmp, "config.json", cfg);
    if (rc == 0)
        rc = write_json(tmp, "generation_config.json", gen);
    if (rc == 0 && tk.tokenizer)
        rc = write_json(tmp, "tokenizer.json", tk.tokenizer);
    if (rc == 0 && tk.config)
        rc = write_json(tmp, "tokenizer_config.json", tk.config);
    if (rc == 0 && tk.chat_template) {
        snprintf(path, sizeof path, "%s/chat_template.jinja", tmp);
        rc = thaw_write_file_atomic(path, tk.chat_template, strlen(tk.chat_template));
    }
    if (rc)
        goto out;
    if (opts.progress)
        fprintf(stderr, "convert: %s: %zu tensors dequantized in %.2f s\n", gguf_path, p.n,
                thaw_now_s() - t0);
    /* Already in the target dtype: keep it. */
    opts.dtype = THAW_CONVERT_KEEP;
    rc = thaw_ckpt_convert(tmp, out_dir, &opts);
out:
    if (rc)
        thaw_err_ctx("converting %s", gguf_path);
    if (tmp_made && thaw_rm_rf(tmp) != 0)
        THAW_LOG(THAW_LOG_WARN, "ckpt", "cleanup_failed", "path=%s", tmp);
    json_decref(cfg);
    json_decref(gen);
    json_decref(tk.tokenizer);
    json_decref(tk.config);
    thaw_free(tk.chat_template);
    thaw_free(p.t);
    thaw_gguf_close(g);
    return rc;
}
