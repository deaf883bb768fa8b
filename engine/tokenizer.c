/*
 * tokenizer.c - HF tokenizer.json (BPE model) in C: added-token splitting,
 * normalizers, pre-tokenizers (PCRE2 split patterns, ByteLevel, Metaspace,
 * Digits), rank-ordered BPE with byte fallback, post-processors, the decoder
 * chain and a streaming detokenizer. Semantics follow huggingface/tokenizers
 * (see docs/engine.md §3); goldens from the real library are checked by
 * tests/engine/test_tokenizer.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <utf8proc.h>

#include "engine/thaw_engine.h"
#include "engine/tok_int.h"

#define TOK_MAX_FILE_BYTES (512u << 20) /* tokenizer.json read by load_dir */
#define TOK_MAX_CFG_BYTES (64u << 20)
#define TOK_MAX_TEXT_BYTES (1u << 30) /* one encode call */
#define TOK_MAX_IDS (1u << 26)        /* one decode call */
#define TOK_MAX_ID (1 << 28)          /* largest id accepted in tokenizer.json */

/* GPT-2's pre-tokenizer, used by ByteLevel with use_regex:true. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ================================================================ UTF-8 */

/*
 * The sequence at s (n > 0 bytes): its length when valid, else 0 with *sub
 * the length of its maximal ill-formed subpart (Unicode §3.9, what Rust's
 * from_utf8_lossy replaces by one U+FFFD) and *trunc set when that subpart
 * only ended because the input did (more bytes could still complete it).
 */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *sub, int *trunc)
{
    unsigned b = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
    } else if (b == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if (b >= 0xE1 && b <= 0xEF) {
        need = 2;
        if (b == 0xED)
            hi = 0x9F;
    } else if (b == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (b >= 0xF1 && b <= 0xF3) {
        need = 3;
    } else if (b == 0xF4) {
        need = 3;
        hi = 0x8F;
    } else {
        *sub = 1;
        *trunc = 0;
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        if (k >= n) {
            *sub = k;
            *trunc = 1;
            return 0;
        }
        unsigned c = s[k];
        if (c < lo || c > hi) {
            *sub = k;
            *trunc = 0;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

size_t eng_utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, sub;
    int trunc;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, len - i, &sub, &trunc);
        if (k == 0)
            break;
        i += k;
    }
    return i;
}

/* Code point of the valid sequence at s of length k. */
static uint32_t utf8_cp(const unsigned char *s, size_t k)
{
    switch (k) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* Length of the (valid) character starting at s. */
static size_t utf8_len(unsigned char b)
{
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

static size_t utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Rust's char::is_whitespace (Unicode White_Space). */
static int is_ws(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* The character that ends at s[end) (valid UTF-8 before end). */
static size_t utf8_prev(const char *s, size_t end)
{
    size_t i = end;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    return i > 0 ? i - 1 : 0;
}

/* Word characters for single_word added tokens (Rust: alphanumeric or _). */
static int is_word_cp(uint32_t c)
{
    if (c == '_')
        return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* Rust's char::is_numeric (general categories Nd, Nl, No). */
static int is_numeric(uint32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* ================================================================ buffers */

struct buf {
    char *p;
    size_t len, cap;
};

/* Grow an array to hold need elements of size elem (doubling). */
static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    if (c > SIZE_MAX / elem)
        return -ENOMEM;
    void *q = thaw_realloc(*p, c * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int buf_put(struct buf *b, const void *s, size_t n)
{
    /* One spare byte so the owner can NUL-terminate without growing. */
    int rc = grow((void **)&b->p, &b->cap, b->len + n + 1, 1);
    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* Append b->p[off .. off+n) to b itself (the source may move on growth). */
static int buf_put_self(struct buf *b, size_t off, size_t n)
{
    int rc = grow((void **)&b->p, &b->cap, b->len + n + 1, 1);
    if (rc)
        return rc;
    memmove(b->p + b->len, b->p + off, n);
    b->len += n;
    return 0;
}

struct ivec {
    int32_t *p;
    size_t n, cap;
};

static int ivec_push(struct ivec *v, int32_t x)
{
    int rc = grow((void **)&v->p, &v->cap, v->n + 1, sizeof *v->p);
    if (rc)
        return rc;
    v->p[v->n++] = x;
    return 0;
}

/* ================================================================ types */

enum norm_kind { NORM_UNICODE, NORM_PREPEND, NORM_REPLACE, NORM_STRIP };
struct norm_op {
    enum norm_kind kind;
    int u8p_opts; /* NORM_UNICODE: utf8proc options */
    char *a, *b;  /* PREPEND: a; REPLACE: pattern a (string) -> b */
    size_t a_len, b_len;
    pcre2_code *re;  /* REPLACE with a Regex pattern */
    int left, right; /* STRIP */
};

enum pre_kind { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE, PRE_DIGITS };
enum split_behavior {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_PREV,
    SPLIT_MERGED_NEXT,
    SPLIT_CONTIGUOUS
};
enum prepend_scheme { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
struct pre_op {
    enum pre_kind kind;
    pcre2_code *re; /* SPLIT (regex or literal string) */
    enum split_behavior behavior;
    int invert;
    int add_prefix_space; /* BYTELEVEL */
    char repl[8];         /* METASPACE replacement (one char, UTF-8) */
    size_t repl_len;
    enum prepend_scheme scheme;
    int split;      /* METASPACE */
    int individual; /* DIGITS */
};

enum dec_kind { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
struct dec_op {
    enum dec_kind kind;
    char *a, *b; /* REPLACE: a -> b */
    size_t a_len, b_len;
    char ch[8]; /* STRIP content / METASPACE replacement */
    size_t ch_len;
    size_t start, stop; /* STRIP */
    enum prepend_scheme scheme;
};

struct added_tok {
    int32_t id;
    char *content;
    size_t len;
    /* What is matched: content, or for normalized tokens content passed
     * through the normalizer (tokenizers' normalized trie); owned then. */
    char *match;
    size_t match_len;
    uint8_t special, lstrip, rstrip, normalized, single_word;
};

struct thaw_tokenizer {
    /* Model vocabulary: string of id i is m_str + m_off[i] (m_len[i] bytes),
     * m_off[i] == UINT32_MAX when the model has no id i. */
    char *m_str;
    uint32_t *m_off, *m_len;
    int32_t m_n;
    int32_t *vmap; /* open addressing: model string -> id, -1 empty */
    size_t vmap_mask;
    /* Merges: (left id, right id) -> (rank, merged id). */
    uint64_t *mkey; /* (a << 32 | b), UINT64_MAX empty */
    uint64_t *mval; /* (rank << 32 | new id) */
    size_t mmap_mask;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;
    int32_t bf_id[256]; /* "<0xAB>" ids, -1 when absent */

    struct added_tok *added;
    size_t n_added;
    /* Per first byte: indices into added sorted longest first, for the
     * raw-text pass (normalized == 0) and the normalized pass. */
    uint32_t *abucket[2][256];
    uint32_t nbucket[2][256];
    int any_normalized;

    /* id -> token string (added tokens override the model) and flags. */
    int32_t n_ids; /* max id + 1 */
    const char **id_str;
    uint32_t *id_len;
    uint8_t *id_special;
    size_t n_tokens; /* ids with a string */

    struct norm_op *norm;
    size_t n_norm;
    struct pre_op *pre;
    size_t n_pre;
    int byte_level; /* ByteLevel pre-tokenizer: BPE sees mapped bytes */
    struct dec_op *dec;
    size_t n_dec;
    int has_decoder;
    int32_t *pp_prefix, *pp_suffix; /* post-processor ids around $A */
    size_t n_prefix, n_suffix;

    int32_t bos, eos;
    char *bos_text, *eos_text, *chat_template;

    pcre2_general_context *gctx;
    /* ByteLevel: byte -> UTF-8 of its char; char (< 0x144) -> byte or -1. */
    char bl_chr[256][3];
    uint8_t bl_chr_len[256];
    int16_t bl_inv[0x144];
};

/* ================================================================ hashing */

static uint64_t hash_str(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t table_size(size_t n)
{
    size_t c = 64;
    while (c < n * 2)
        c *= 2;
    return c;
}

/* Model id of string s, or -1. */
static int32_t vocab_get(const struct thaw_tokenizer *t, const char *s, size_t n)
{
    if (!t->vmap)
        return -1;
    size_t i = hash_str(s, n) & t->vmap_mask;
    for (;;) {
        int32_t id = t->vmap[i];
        if (id < 0)
            return -1;
        if (t->m_len[id] == n && memcmp(t->m_str + t->m_off[id], s, n) == 0)
            return id;
        i = (i + 1) & t->vmap_mask;
    }
}

static int merge_get(const struct thaw_tokenizer *t, int32_t a, int32_t b, uint32_t *rank,
                     int32_t *new_id)
{
    if (!t->mkey)
        return 0;
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_u64(k) & t->mmap_mask;
    for (;;) {
        if (t->mkey[i] == UINT64_MAX)
            return 0;
        if (t->mkey[i] == k) {
            *rank = (uint32_t)(t->mval[i] >> 32);
            *new_id = (int32_t)(uint32_t)t->mval[i];
            return 1;
        }
        i = (i + 1) & t->mmap_mask;
    }
}

/* ================================================================ PCRE2 */

static void *pcre_alloc(size_t n, void *ud)
{
    (void)ud;
    return thaw_malloc(n);
}

static void pcre_free(void *p, void *ud)
{
    (void)ud;
    thaw_free(p);
}

/* Compile pattern (a regex, or a literal string when literal) for UTF-8
 * with Unicode properties; JIT when the library has it. */
static int re_compile(struct thaw_tokenizer *t, const char *pat, size_t len, int literal,
                      const char *what, pcre2_code **out)
{
    if (!t->gctx) {
        t->gctx = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
        if (!t->gctx)
            return -ENOMEM;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(t->gctx);
    if (!cc)
        return -ENOMEM;
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &err, &off, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        if (err == PCRE2_ERROR_HEAP_FAILED)
            return -ENOMEM;
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s: bad regex at offset %zu: %s", what,
                         (size_t)off, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    *out = re;
    return 0;
}

/* ================================================================ JSON helpers */

/* A string member (*s, *n), or NULL when absent or null. Wrong type fails. */
static int j_str(const json_t *o, const char *key, const char *where, const char **s, size_t *n)
{
    json_t *v = json_object_get(o, key);
    *s = NULL;
    if (n)
        *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s.%s is not a string", where, key);
    *s = json_string_value(v);
    if (n)
        *n = json_string_length(v);
    return 0;
}

static int j_bool(const json_t *o, const char *key, int dflt)
{
    json_t *v = json_object_get(o, key);
    if (json_is_boolean(v))
        return json_is_true(v);
    return dflt;
}

static int j_size(const json_t *o, const char *key, const char *where, size_t dflt, size_t *out)
{
    json_t *v = json_object_get(o, key);
    *out = dflt;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 20))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s.%s is not a small integer", where, key);
    *out = (size_t)json_integer_value(v);
    return 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = thaw_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* The "type" of a component (EFORMAT when missing). */
static int j_type(const json_t *o, const char *where, const char **type)
{
    if (!json_is_object(o))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s is not an object", where);
    const char *s = NULL;
    int rc = j_str(o, "type", where, &s, NULL);
    if (rc)
        return rc;
    if (!s)
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s has no type", where);
    *type = s;
    return 0;
}

/* {"String": s} or {"Regex": r} pattern of Split / Replace. */
static int j_pattern(const json_t *o, const char *where, const char **s, size_t *n, int *is_regex)
{
    json_t *p = json_object_get(o, "pattern");
    if (!json_is_object(p))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s.pattern is not an object", where);
    json_t *v = json_object_get(p, "String");
    *is_regex = 0;
    if (!v) {
        v = json_object_get(p, "Regex");
        *is_regex = 1;
    }
    if (!json_is_string(v))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s.pattern has no String or Regex", where);
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

/* One character (Metaspace replacement, Strip content). */
static int j_char(const json_t *o, const char *key, const char *where, const char *dflt,
                  char out[8], size_t *len)
{
    const char *s;
    size_t n;
    int rc = j_str(o, key, where, &s, &n);
    if (rc)
        return rc;
    if (!s) {
        s = dflt;
        n = strlen(dflt);
    }
    if (n == 0 || n > 4 || eng_utf8_valid_prefix(s, n) != n || utf8_len((unsigned char)s[0]) != n)
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s.%s is not one character", where, key);
    memcpy(out, s, n);
    *len = n;
    return 0;
}

static int j_scheme(const json_t *o, const char *where, enum prepend_scheme *out)
{
    const char *s;
    int rc = j_str(o, "prepend_scheme", where, &s, NULL);
    if (rc)
        return rc;
    if (!s) {
        *out = j_bool(o, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
    } else if (strcmp(s, "always") == 0) {
        *out = PREPEND_ALWAYS;
    } else if (strcmp(s, "first") == 0) {
        *out = PREPEND_FIRST;
    } else if (strcmp(s, "never") == 0) {
        *out = PREPEND_NEVER;
    } else {
        return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: %s.prepend_scheme '%s' is not supported",
                         where, s);
    }
    return 0;
}

/* ================================================================ loading: components */

static int add_norm(struct thaw_tokenizer *t, const json_t *o, size_t *cap)
{
    const char *type = NULL;
    int rc = j_type(o, "normalizer", &type);
    if (rc)
        return rc;
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(o, "normalizers");
        if (!json_is_array(arr))
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: normalizer.normalizers is not a list");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            rc = add_norm(t, json_array_get(arr, i), cap);
            if (rc)
                return rc;
        }
        return 0;
    }
    rc = grow((void **)&t->norm, cap, t->n_norm + 1, sizeof *t->norm);
    if (rc)
        return rc;
    struct norm_op *op = &t->norm[t->n_norm];
    memset(op, 0, sizeof *op);
    if (strcmp(type, "NFC") == 0 || strcmp(type, "NFD") == 0 || strcmp(type, "NFKC") == 0 ||
        strcmp(type, "NFKD") == 0) {
        op->kind = NORM_UNICODE;
        op->u8p_opts = UTF8PROC_STABLE | (type[2] == 'K' ? UTF8PROC_COMPAT : 0) |
                       (type[strlen(type) - 1] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
    } else if (strcmp(type, "Prepend") == 0) {
        const char *s;
        size_t n;
        op->kind = NORM_PREPEND;
        if ((rc = j_str(o, "prepend", "normalizer(Prepend)", &s, &n)))
            return rc;
        if (!s)
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: normalizer(Prepend).prepend missing");
        if (!(op->a = dup_n(s, n)))
            return -ENOMEM;
        op->a_len = n;
    } else if (strcmp(type, "Replace") == 0) {
        const char *s, *c;
        size_t n, cn;
        int is_re;
        op->kind = NORM_REPLACE;
        if ((rc = j_pattern(o, "normalizer(Replace)", &s, &n, &is_re)))
            return rc;
        if ((rc = j_str(o, "content", "normalizer(Replace)", &c, &cn)))
            return rc;
        if (!c)
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: normalizer(Replace).content missing");
        if (!(op->a = dup_n(s, n)) || !(op->b = dup_n(c, cn))) {
            t->n_norm++; /* so destroy frees the half-built op */
            return -ENOMEM;
        }
        op->a_len = n;
        op->b_len = cn;
        if (is_re || n == 0) {
            t->n_norm++;
            return re_compile(t, s, n, !is_re, "normalizer(Replace).pattern", &op->re);
        }
    } else if (strcmp(type, "Strip") == 0) {
        op->kind = NORM_STRIP;
        op->left = j_bool(o, "strip_left", 1);
        op->right = j_bool(o, "strip_right", 1);
    } else {
        return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: normalizer type '%s' is not supported",
                         type);
    }
    t->n_norm++;
    return 0;
}

static int parse_behavior(const json_t *o, const char *where, enum split_behavior *out)
{
    const char *s;
    int rc = j_str(o, "behavior", where, &s, NULL);
    if (rc)
        return rc;
    if (!s)
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s.behavior missing", where);
    static const char *names[] = { "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                   "Contiguous" };
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum split_behavior)i;
            return 0;
        }
    }
    return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: %s.behavior '%s' is not supported", where, s);
}

static int add_pre(struct thaw_tokenizer *t, const json_t *o, size_t *cap)
{
    const char *type = NULL;
    int rc = j_type(o, "pre_tokenizer", &type);
    if (rc)
        return rc;
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(o, "pretokenizers");
        if (!json_is_array(arr))
            return THAW_FAIL(THAW_EFORMAT,
                             "tokenizer.json: pre_tokenizer.pretokenizers is not a list");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            rc = add_pre(t, json_array_get(arr, i), cap);
            if (rc)
                return rc;
        }
        return 0;
    }
    /* ByteLevel's byte mapping is applied when a word reaches the model,
     * so nothing that looks at characters may follow it. */
    if (t->byte_level && strcmp(type, "Digits") != 0)
        return THAW_FAIL(THAW_ENOTSUP,
                         "tokenizer.json: pre_tokenizer '%s' after ByteLevel is "
                         "not supported",
                         type);
    if ((rc = grow((void **)&t->pre, cap, t->n_pre + 2, sizeof *t->pre)))
        return rc;
    struct pre_op *op = &t->pre[t->n_pre];
    memset(op, 0, sizeof *op);
    if (strcmp(type, "Split") == 0) {
        const char *s;
        size_t n;
        int is_re;
        op->kind = PRE_SPLIT;
        if ((rc = j_pattern(o, "pre_tokenizer(Split)", &s, &n, &is_re)))
            return rc;
        if ((rc = parse_behavior(o, "pre_tokenizer(Split)", &op->behavior)))
            return rc;
        op->invert = j_bool(o, "invert", 0);
        t->n_pre++;
        return re_compile(t, s, n, !is_re, "pre_tokenizer(Split).pattern", &op->re);
    } else if (strcmp(type, "ByteLevel") == 0) {
        int use_regex = j_bool(o, "use_regex", 1);
        op->kind = PRE_BYTELEVEL;
        op->add_prefix_space = j_bool(o, "add_prefix_space", 1);
        t->byte_level = 1;
        if (op->add_prefix_space)
            t->n_pre++;
        if (use_regex) {
            op = &t->pre[t->n_pre];
            memset(op, 0, sizeof *op);
            op->kind = PRE_SPLIT;
            op->behavior = SPLIT_ISOLATED;
            t->n_pre++;
            return re_compile(t, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 0, "ByteLevel regex",
                              &op->re);
        }
        return 0;
    } else if (strcmp(type, "Metaspace") == 0) {
        op->kind = PRE_METASPACE;
        if ((rc = j_char(o, "replacement", "pre_tokenizer(Metaspace)", "\xe2\x96\x81", op->repl,
                         &op->repl_len)))
            return rc;
        if ((rc = j_scheme(o, "pre_tokenizer(Metaspace)", &op->scheme)))
            return rc;
        op->split = j_bool(o, "split", 1);
    } else if (strcmp(type, "Digits") == 0) {
        op->kind = PRE_DIGITS;
        op->individual = j_bool(o, "individual_digits", 0);
    } else {
        return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: pre_tokenizer type '%s' is not supported",
                         type);
    }
    t->n_pre++;
    return 0;
}

static int add_dec(struct thaw_tokenizer *t, const json_t *o, size_t *cap)
{
    const char *type = NULL;
    int rc = j_type(o, "decoder", &type);
    if (rc)
        return rc;
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(o, "decoders");
        if (!json_is_array(arr))
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: decoder.decoders is not a list");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            rc = add_dec(t, json_array_get(arr, i), cap);
            if (rc)
                return rc;
        }
        return 0;
    }
    if ((rc = grow((void **)&t->dec, cap, t->n_dec + 1, sizeof *t->dec)))
        return rc;
    struct dec_op *op = &t->dec[t->n_dec];
    memset(op, 0, sizeof *op);
    if (strcmp(type, "ByteLevel") == 0) {
        op->kind = DEC_BYTELEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        op->kind = DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        op->kind = DEC_FUSE;
    } else if (strcmp(type, "Replace") == 0) {
        const char *s, *c;
        size_t n, cn;
        int is_re;
        op->kind = DEC_REPLACE;
        if ((rc = j_pattern(o, "decoder(Replace)", &s, &n, &is_re)))
            return rc;
        if (is_re)
            return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: decoder(Replace) with a Regex "
                                           "pattern is not supported");
        if ((rc = j_str(o, "content", "decoder(Replace)", &c, &cn)))
            return rc;
        if (!c || n == 0)
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: decoder(Replace) needs a pattern "
                                           "and content");
        t->n_dec++;
        if (!(op->a = dup_n(s, n)) || !(op->b = dup_n(c, cn)))
            return -ENOMEM;
        op->a_len = n;
        op->b_len = cn;
        return 0;
    } else if (strcmp(type, "Strip") == 0) {
        op->kind = DEC_STRIP;
        if ((rc = j_char(o, "content", "decoder(Strip)", " ", op->ch, &op->ch_len)))
            return rc;
        if ((rc = j_size(o, "start", "decoder(Strip)", 0, &op->start)))
            return rc;
        if ((rc = j_size(o, "stop", "decoder(Strip)", 0, &op->stop)))
            return rc;
    } else if (strcmp(type, "Metaspace") == 0) {
        op->kind = DEC_METASPACE;
        if ((rc = j_char(o, "replacement", "decoder(Metaspace)", "\xe2\x96\x81", op->ch,
                         &op->ch_len)))
            return rc;
        if ((rc = j_scheme(o, "decoder(Metaspace)", &op->scheme)))
            return rc;
    } else {
        return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: decoder type '%s' is not supported", type);
    }
    t->n_dec++;
    return 0;
}

/* ids of a TemplateProcessing special token name ("<s>"). */
static int tp_special(const json_t *o, const char *name, const json_t **ids)
{
    json_t *sp = json_object_get(o, "special_tokens");
    json_t *e = json_is_object(sp) ? json_object_get(sp, name) : NULL;
    json_t *v = json_is_object(e) ? json_object_get(e, "ids") : NULL;
    if (!json_is_array(v))
        return THAW_FAIL(THAW_EFORMAT,
                         "tokenizer.json: post_processor.special_tokens has no "
                         "ids for '%s'",
                         name);
    *ids = v;
    return 0;
}

static int push_one(int32_t **arr, size_t *n, const json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > TOK_MAX_ID)
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: post_processor has a bad id");
    int32_t *q = thaw_realloc(*arr, (*n + 1) * sizeof **arr);
    if (!q)
        return -ENOMEM;
    *arr = q;
    q[(*n)++] = (int32_t)json_integer_value(v);
    return 0;
}

static int push_ids(int32_t **arr, size_t *n, const json_t *ids)
{
    int rc = 0;
    for (size_t i = 0; i < json_array_size(ids) && !rc; i++)
        rc = push_one(arr, n, json_array_get(ids, i));
    return rc;
}

/* A [token, id] pair (Bert/Roberta cls and sep). */
static int pair_id(const json_t *o, const char *key, const char *where, json_t **id)
{
    json_t *p = json_object_get(o, key);
    if (!json_is_array(p) || json_array_size(p) != 2 || !json_is_integer(json_array_get(p, 1)))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: %s.%s is not [token, id]", where, key);
    *id = json_array_get(p, 1);
    return 0;
}

static int add_post(struct thaw_tokenizer *t, const json_t *o)
{
    const char *type = NULL;
    int rc = j_type(o, "post_processor", &type);
    if (rc)
        return rc;
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(o, "processors");
        if (!json_is_array(arr))
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: post_processor.processors is not "
                                           "a list");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            if ((rc = add_post(t, json_array_get(arr, i))))
                return rc;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0)
        return 0; /* only adjusts offsets */
    if (strcmp(type, "TemplateProcessing") == 0) {
        json_t *single = json_object_get(o, "single");
        if (!json_is_array(single))
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: post_processor.single is not a list");
        int seen_a = 0;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *it = json_array_get(single, i);
            json_t *sp = json_object_get(it, "SpecialToken");
            if (json_object_get(it, "Sequence")) {
                seen_a = 1;
                continue;
            }
            const char *name = json_string_value(json_object_get(sp, "id"));
            const json_t *ids = NULL;
            if (!name)
                return THAW_FAIL(THAW_EFORMAT,
                                 "tokenizer.json: post_processor.single[%zu] is "
                                 "neither Sequence nor SpecialToken",
                                 i);
            if ((rc = tp_special(o, name, &ids)))
                return rc;
            rc = seen_a ? push_ids(&t->pp_suffix, &t->n_suffix, ids)
                        : push_ids(&t->pp_prefix, &t->n_prefix, ids);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
        json_t *cls, *sep;
        if ((rc = pair_id(o, "cls", "post_processor", &cls)) ||
            (rc = pair_id(o, "sep", "post_processor", &sep)))
            return rc;
        if ((rc = push_one(&t->pp_prefix, &t->n_prefix, cls)))
            return rc;
        return push_one(&t->pp_suffix, &t->n_suffix, sep);
    }
    return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: post_processor type '%s' is not supported",
                     type);
}

/* ================================================================ loading: model */

static int load_vocab(struct thaw_tokenizer *t, const json_t *vocab)
{
    if (!json_is_object(vocab))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: model.vocab is missing or not an object");
    size_t total = 0, count = 0;
    int32_t max_id = -1;
    for (void *it = json_object_iter((json_t *)vocab); it;
         it = json_object_iter_next((json_t *)vocab, it)) {
        json_t *v = json_object_iter_value(it);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > TOK_MAX_ID)
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: model.vocab['%s'] is not a valid id",
                             json_object_iter_key(it));
        if (json_integer_value(v) > max_id)
            max_id = (int32_t)json_integer_value(v);
        total += json_object_iter_key_len(it) + 1;
        count++;
    }
    if (total > UINT32_MAX - 1)
        return THAW_FAIL(THAW_ELIMIT, "tokenizer.json: model.vocab strings exceed 4 GiB");
    t->m_n = max_id + 1;
    t->m_str = thaw_malloc(total ? total : 1);
    t->m_off = thaw_malloc(((size_t)t->m_n + 1) * sizeof *t->m_off);
    t->m_len = thaw_calloc((size_t)t->m_n + 1, sizeof *t->m_len);
    size_t cap = table_size(count);
    t->vmap = thaw_malloc(cap * sizeof *t->vmap);
    if (!t->m_str || !t->m_off || !t->m_len || !t->vmap)
        return -ENOMEM;
    t->vmap_mask = cap - 1;
    memset(t->vmap, 0xff, cap * sizeof *t->vmap);
    memset(t->m_off, 0xff, ((size_t)t->m_n + 1) * sizeof *t->m_off);
    size_t pos = 0;
    for (void *it = json_object_iter((json_t *)vocab); it;
         it = json_object_iter_next((json_t *)vocab, it)) {
        const char *k = json_object_iter_key(it);
        size_t kn = json_object_iter_key_len(it);
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(it));
        if (t->m_off[id] != UINT32_MAX)
            return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: model.vocab has id %d twice", id);
        memcpy(t->m_str + pos, k, kn);
        t->m_str[pos + kn] = '\0';
        t->m_off[id] = (uint32_t)pos;
        t->m_len[id] = (uint32_t)kn;
        pos += kn + 1;
        size_t i = hash_str(k, kn) & t->vmap_mask;
        while (t->vmap[i] >= 0)
            i = (i + 1) & t->vmap_mask;
        t->vmap[i] = id;
    }
    return 0;
}

/* ---------------------------------------------------------------- fast path (tok_json.c) */

/* Returned inside the loader when the fast path meets something it leaves to
 * jansson; thaw_tok_load then starts over on the slow path. */
#define FAST_RETRY 1

static int fast_json = 1;

void eng_tok_set_fast_json(int on)
{
    fast_json = on;
}

/* One vocab entry of the fast path: its key at m_str + pos. */
struct vocab_ent {
    uint32_t pos, len;
    int32_t id;
};

struct vocab_scan {
    struct thaw_tokenizer *t;
    struct vocab_ent *ents;
    size_t n, cap, pos;
    int32_t max_id;
};

static int vocab_take(void *arg, const char *key, size_t key_n, int64_t id)
{
    struct vocab_scan *v = arg;
    if (id > TOK_MAX_ID)
        return FAST_RETRY;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        struct vocab_ent *e = thaw_realloc(v->ents, cap * sizeof *e);
        if (!e)
            return -ENOMEM;
        v->ents = e;
        v->cap = cap;
    }
    /* m_str was sized to the raw span: decoded keys plus NULs never exceed it. */
    memcpy(v->t->m_str + v->pos, key, key_n);
    v->t->m_str[v->pos + key_n] = '\0';
    v->ents[v->n++] = (struct vocab_ent){ (uint32_t)v->pos, (uint32_t)key_n, (int32_t)id };
    v->pos += key_n + 1;
    if (id > v->max_id)
        v->max_id = (int32_t)id;
    return 0;
}

/* load_vocab from the raw text of model.vocab, in one pass; FAST_RETRY when
 * the slow path must decide. */
static int load_vocab_fast(struct thaw_tokenizer *t, const char *text, struct tokj_span sp)
{
    size_t raw = sp.end - sp.start;
    if (raw > UINT32_MAX - 1)
        return FAST_RETRY;
    char *scratch = thaw_malloc(raw + 1);
    t->m_str = thaw_malloc(raw + 1);
    if (!scratch || !t->m_str) {
        thaw_free(scratch);
        return -ENOMEM;
    }
    struct vocab_scan v = { .t = t, .max_id = -1 };
    int rc = tokj_vocab_each(text, sp, scratch, vocab_take, &v);
    thaw_free(scratch);
    if (rc) {
        thaw_free(v.ents);
        return rc < 0 ? FAST_RETRY : rc;
    }
    t->m_n = v.max_id + 1;
    t->m_off = thaw_malloc(((size_t)t->m_n + 1) * sizeof *t->m_off);
    t->m_len = thaw_calloc((size_t)t->m_n + 1, sizeof *t->m_len);
    size_t cap = table_size(v.n);
    t->vmap = thaw_malloc(cap * sizeof *t->vmap);
    if (!t->m_off || !t->m_len || !t->vmap) {
        thaw_free(v.ents);
        return -ENOMEM;
    }
    t->vmap_mask = cap - 1;
    memset(t->vmap, 0xff, cap * sizeof *t->vmap);
    memset(t->m_off, 0xff, ((size_t)t->m_n + 1) * sizeof *t->m_off);
    for (size_t k = 0; k < v.n; k++) {
        const struct vocab_ent *e = &v.ents[k];
        const char *key = t->m_str + e->pos;
        /* A repeated id, or a repeated key (jansson keeps its last value):
         * the slow path decides. */
        if (t->m_off[e->id] != UINT32_MAX || vocab_get(t, key, e->len) >= 0) {
            thaw_free(v.ents);
            return FAST_RETRY;
        }
        t->m_off[e->id] = e->pos;
        t->m_len[e->id] = e->len;
        size_t i = hash_str(key, e->len) & t->vmap_mask;
        while (t->vmap[i] >= 0)
            i = (i + 1) & t->vmap_mask;
        t->vmap[i] = e->id;
    }
    thaw_free(v.ents);
    return 0;
}

uint64_t eng_tok_fingerprint(const struct thaw_tokenizer *t)
{
    /* Sums of per-entry hashes: independent of the order entries were
     * inserted in (table layout, string offsets). */
    uint64_t h = hash_u64((uint64_t)t->m_n) ^ hash_u64((uint64_t)(uint32_t)t->unk_id + 7);
    for (int32_t id = 0; id < t->m_n; id++) {
        if (t->m_off[id] == UINT32_MAX)
            continue;
        h += hash_u64(hash_str(t->m_str + t->m_off[id], t->m_len[id]) ^ (uint64_t)id);
        h += vocab_get(t, t->m_str + t->m_off[id], t->m_len[id]) == id ? 0 : 0x9e3779b9u;
    }
    for (size_t i = 0; t->mkey && i <= t->mmap_mask; i++)
        if (t->mkey[i] != UINT64_MAX)
            h += hash_u64(t->mkey[i] ^ hash_u64(t->mval[i]));
    for (int b = 0; b < 256; b++)
        h += hash_u64(((uint64_t)b << 32) | (uint32_t)t->bf_id[b]);
    return h;
}

/* The ids of a merge (a, b) and of its result ab; THAW_EFORMAT naming the
 * merge when one is not in the vocabulary. */
static int merge_ids(const struct thaw_tokenizer *t, const char *a, size_t an, const char *b,
                     size_t bn, uint32_t rank, struct buf *scratch, int32_t ids[3])
{
    ids[0] = vocab_get(t, a, an);
    ids[1] = vocab_get(t, b, bn);
    scratch->len = 0;
    int rc = buf_put(scratch, a, an);
    if (!rc)
        rc = buf_put(scratch, b, bn);
    if (rc)
        return rc;
    ids[2] = vocab_get(t, scratch->p, scratch->len);
    if (ids[0] < 0 || ids[1] < 0 || ids[2] < 0)
        return THAW_FAIL(THAW_EFORMAT,
                         "tokenizer.json: model.merges[%u] '%.*s %.*s' uses a "
                         "token not in the vocabulary",
                         rank, (int)an, a, (int)bn, b);
    return 0;
}

/* Insert merge (ids[0], ids[1]) -> ids[2] at rank unless the pair has one. */
static void merge_insert(struct thaw_tokenizer *t, const int32_t ids[3], uint32_t rank)
{
    uint64_t k = ((uint64_t)(uint32_t)ids[0] << 32) | (uint32_t)ids[1];
    size_t i = hash_u64(k) & t->mmap_mask;
    while (t->mkey[i] != UINT64_MAX) {
        if (t->mkey[i] == k)
            return; /* a later duplicate never wins: lowest rank kept */
        i = (i + 1) & t->mmap_mask;
    }
    t->mkey[i] = k;
    t->mval[i] = ((uint64_t)rank << 32) | (uint32_t)ids[2];
}

/* One merge (a, b) -> rank. */
static int add_merge(struct thaw_tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                     uint32_t rank, struct buf *scratch)
{
    int32_t ids[3];
    int rc = merge_ids(t, a, an, b, bn, rank, scratch, ids);
    if (rc)
        return rc;
    merge_insert(t, ids, rank);
    return 0;
}

static int load_merges(struct thaw_tokenizer *t, const json_t *merges)
{
    if (!merges || json_is_null(merges))
        return 0;
    if (!json_is_array(merges))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: model.merges is not a list");
    size_t n = json_array_size(merges);
    if (n > UINT32_MAX / 2)
        return THAW_FAIL(THAW_ELIMIT, "tokenizer.json: model.merges too long");
    size_t cap = table_size(n);
    t->mkey = thaw_malloc(cap * sizeof *t->mkey);
    t->mval = thaw_malloc(cap * sizeof *t->mval);
    if (!t->mkey || !t->mval)
        return -ENOMEM;
    memset(t->mkey, 0xff, cap * sizeof *t->mkey);
    t->mmap_mask = cap - 1;
    struct buf scratch = { 0 };
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t sn = json_string_length(m);
            const char *sp = memchr(s, ' ', sn);
            if (!sp || sp == s || sp + 1 == s + sn) {
                rc = THAW_FAIL(THAW_EFORMAT,
                               "tokenizer.json: model.merges[%zu] '%s' is not "
                               "'a b'",
                               i, s);
                break;
            }
            rc = add_merge(t, s, (size_t)(sp - s), sp + 1, sn - (size_t)(sp - s) - 1, (uint32_t)i,
                           &scratch);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            rc = add_merge(t, json_string_value(a), json_string_length(a), json_string_value(b),
                           json_string_length(b), (uint32_t)i, &scratch);
        } else {
            rc = THAW_FAIL(THAW_EFORMAT,
                           "tokenizer.json: model.merges[%zu] is neither 'a b' nor "
                           "[a, b]",
                           i);
        }
    }
    thaw_free(scratch.p);
    return rc;
}

struct merge_scan {
    struct thaw_tokenizer *t;
    struct buf scratch;
    int32_t (*ids)[3];
    size_t n, cap;
};

static int merge_take(void *arg, size_t idx, const char *a, size_t an, const char *b, size_t bn,
                      int pair)
{
    struct merge_scan *m = arg;
    if (!pair) {
        /* As load_merges: split "a b" at its first space. */
        const char *sp = memchr(a, ' ', an);
        if (!sp || sp == a || sp + 1 == a + an)
            return FAST_RETRY;
        b = sp + 1;
        bn = an - (size_t)(sp - a) - 1;
        an = (size_t)(sp - a);
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        int32_t(*x)[3] = thaw_realloc(m->ids, cap * sizeof *x);
        if (!x)
            return -ENOMEM;
        m->ids = x;
        m->cap = cap;
    }
    int rc = merge_ids(m->t, a, an, b, bn, (uint32_t)idx, &m->scratch, m->ids[m->n]);
    if (rc == -ENOMEM)
        return rc;
    if (rc)
        return FAST_RETRY; /* the slow path reports it */
    m->n++;
    return 0;
}

/* load_merges from the raw text of model.merges, in one pass; FAST_RETRY
 * when the slow path must decide. */
static int load_merges_fast(struct thaw_tokenizer *t, const char *text, struct tokj_span sp)
{
    size_t n = 0;
    char *scratch = thaw_malloc(sp.end - sp.start + 1);
    if (!scratch)
        return -ENOMEM;
    struct merge_scan m = { .t = t };
    int rc = tokj_merges_each(text, sp, scratch, &n, merge_take, &m);
    thaw_free(scratch);
    thaw_free(m.scratch.p);
    if (rc || n != m.n || n > UINT32_MAX / 2) {
        thaw_free(m.ids);
        return rc < 0 || !rc ? FAST_RETRY : rc;
    }
    size_t cap = table_size(n);
    t->mkey = thaw_malloc(cap * sizeof *t->mkey);
    t->mval = thaw_malloc(cap * sizeof *t->mval);
    if (!t->mkey || !t->mval) {
        thaw_free(m.ids);
        return -ENOMEM;
    }
    memset(t->mkey, 0xff, cap * sizeof *t->mkey);
    t->mmap_mask = cap - 1;
    for (size_t i = 0; i < n; i++)
        merge_insert(t, m.ids[i], (uint32_t)i);
    thaw_free(m.ids);
    return 0;
}

/* have_vocab / have_merges: the fast path has already read model.vocab /
 * model.merges (m holds {} / [] in their place). */
static int load_model(struct thaw_tokenizer *t, const json_t *m, int have_vocab, int have_merges)
{
    const char *type = NULL;
    int rc;
    if (!json_is_object(m))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: model is missing or not an object");
    if ((rc = j_str(m, "type", "model", &type, NULL)))
        return rc;
    /* Older files omit model.type for BPE; a vocab plus merges means BPE. */
    if (!type && json_object_get(m, "merges"))
        type = "BPE";
    if (!type)
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: model.type missing");
    if (strcmp(type, "BPE") != 0)
        return THAW_FAIL(THAW_ENOTSUP,
                         "tokenizer.json: model type '%s' is not supported "
                         "(only BPE)",
                         type);
    const char *pre, *suf;
    if ((rc = j_str(m, "continuing_subword_prefix", "model", &pre, NULL)) ||
        (rc = j_str(m, "end_of_word_suffix", "model", &suf, NULL)))
        return rc;
    if ((pre && pre[0]) || (suf && suf[0]))
        return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: model.continuing_subword_prefix / "
                                       "end_of_word_suffix are not supported");
    json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        return THAW_FAIL(THAW_ENOTSUP, "tokenizer.json: model.dropout is not supported");
    t->byte_fallback = j_bool(m, "byte_fallback", 0);
    t->fuse_unk = j_bool(m, "fuse_unk", 0);
    t->ignore_merges = j_bool(m, "ignore_merges", 0);
    if (!have_vocab && (rc = load_vocab(t, json_object_get(m, "vocab"))))
        return rc;
    if (!have_merges && (rc = load_merges(t, json_object_get(m, "merges"))))
        return rc;
    const char *unk;
    size_t unk_n;
    if ((rc = j_str(m, "unk_token", "model", &unk, &unk_n)))
        return rc;
    t->unk_id = unk ? vocab_get(t, unk, unk_n) : -1;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->bf_id[b] = vocab_get(t, name, 6);
    }
    return 0;
}

/* ================================================================ loading: added tokens */

/* Sort added-token indices longest first (stable; buckets are small). */
static void sort_by_len(const struct thaw_tokenizer *t, uint32_t *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint32_t x = v[i];
        size_t j = i;
        while (j > 0 && t->added[v[j - 1]].match_len < t->added[x].match_len) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static int load_added(struct thaw_tokenizer *t, const json_t *arr)
{
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer.json: added_tokens is not a list");
    size_t n = json_array_size(arr);
    t->added = thaw_calloc(n ? n : 1, sizeof *t->added);
    if (!t->added)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        json_t *id = json_object_get(o, "id");
        const char *s;
        size_t sn;
        int rc = j_str(o, "content", "added_tokens[]", &s, &sn);
        if (rc)
            return rc;
        if (!s || sn == 0 || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > TOK_MAX_ID)
            return THAW_FAIL(THAW_EFORMAT,
                             "tokenizer.json: added_tokens[%zu] needs a content "
                             "and an id",
                             i);
        struct added_tok *a = &t->added[t->n_added];
        if (!(a->content = dup_n(s, sn)))
            return -ENOMEM;
        t->n_added++;
        a->len = sn;
        a->id = (int32_t)json_integer_value(id);
        a->special = (uint8_t)j_bool(o, "special", 0);
        a->lstrip = (uint8_t)j_bool(o, "lstrip", 0);
        a->rstrip = (uint8_t)j_bool(o, "rstrip", 0);
        a->single_word = (uint8_t)j_bool(o, "single_word", 0);
        a->normalized = (uint8_t)j_bool(o, "normalized", !a->special);
        if (a->normalized)
            t->any_normalized = 1;
    }
    return 0;
}

/* The id -> string table over the model and the added tokens. */
static int build_ids(struct thaw_tokenizer *t)
{
    int32_t n = t->m_n;
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].id + 1 > n)
            n = t->added[i].id + 1;
    }
    t->n_ids = n;
    t->id_str = thaw_calloc((size_t)n + 1, sizeof *t->id_str);
    t->id_len = thaw_calloc((size_t)n + 1, sizeof *t->id_len);
    t->id_special = thaw_calloc((size_t)n + 1, 1);
    if (!t->id_str || !t->id_len || !t->id_special)
        return -ENOMEM;
    for (int32_t i = 0; i < t->m_n; i++) {
        if (t->m_off[i] != UINT32_MAX) {
            t->id_str[i] = t->m_str + t->m_off[i];
            t->id_len[i] = t->m_len[i];
        }
    }
    for (size_t i = 0; i < t->n_added; i++) {
        struct added_tok *a = &t->added[i];
        t->id_str[a->id] = a->content;
        t->id_len[a->id] = (uint32_t)a->len;
        t->id_special[a->id] = a->special;
    }
    for (int32_t i = 0; i < n; i++)
        t->n_tokens += t->id_str[i] != NULL;
    return 0;
}

/* ================================================================ loading: config */

int32_t thaw_tok_find(const struct thaw_tokenizer *tok, const char *token)
{
    if (!tok || !token)
        return -1;
    size_t n = strlen(token);
    for (size_t i = 0; i < tok->n_added; i++) {
        if (tok->added[i].len == n && memcmp(tok->added[i].content, token, n) == 0)
            return tok->added[i].id;
    }
    return vocab_get(tok, token, n);
}

/* bos_token / eos_token: a string or {"content": ...}. *present: the key
 * exists (null counts: "this model has none"). */
static int cfg_token(const json_t *cfg, const char *key, char **out, int *present)
{
    json_t *v = json_object_get(cfg, key);
    *present = v != NULL;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return THAW_FAIL(THAW_EFORMAT, "tokenizer_config.json: %s is not a string", key);
    if (!(*out = dup_n(json_string_value(v), json_string_length(v))))
        return -ENOMEM;
    return 0;
}

static int set_template(struct thaw_tokenizer *t, const char *s, size_t n)
{
    char *p = dup_n(s, n);
    if (!p)
        return -ENOMEM;
    thaw_free(t->chat_template);
    t->chat_template = p;
    return 0;
}

static int load_cfg(struct thaw_tokenizer *t, const char *cfg, size_t cfg_len)
{
    int bos_present = 0, eos_present = 0, rc = 0;
    json_t *root = NULL;
    if (cfg) {
        json_error_t jerr;
        /* model_max_length is often 1e30 written as an integer. */
        root = json_loadb(cfg, cfg_len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
        if (!root)
            return THAW_FAIL(THAW_EFORMAT, "tokenizer_config.json: line %d: %s", jerr.line,
                             jerr.text);
        if (!json_is_object(root)) {
            rc = THAW_FAIL(THAW_EFORMAT, "tokenizer_config.json: not an object");
            goto out;
        }
        if ((rc = cfg_token(root, "bos_token", &t->bos_text, &bos_present)) ||
            (rc = cfg_token(root, "eos_token", &t->eos_text, &eos_present)))
            goto out;
        json_t *ct = json_object_get(root, "chat_template");
        if (json_is_string(ct)) {
            rc = set_template(t, json_string_value(ct), json_string_length(ct));
        } else if (json_is_array(ct)) {
            json_t *pick = NULL;
            for (size_t i = 0; i < json_array_size(ct); i++) {
                json_t *e = json_array_get(ct, i);
                const char *name = json_string_value(json_object_get(e, "name"));
                if (name && strcmp(name, "default") == 0)
                    pick = json_object_get(e, "template");
            }
            if (json_is_string(pick))
                rc = set_template(t, json_string_value(pick), json_string_length(pick));
        }
        if (rc)
            goto out;
        /* transformers (LlamaTokenizerFast.update_post_processor) lets
         * add_bos_token / add_eos_token override the template. */
        json_t *ab = json_object_get(root, "add_bos_token");
        json_t *ae = json_object_get(root, "add_eos_token");
        int32_t bos = t->bos_text ? thaw_tok_find(t, t->bos_text) : -1;
        int32_t eos = t->eos_text ? thaw_tok_find(t, t->eos_text) : -1;
        if (json_is_true(ab) && bos >= 0 && !(t->n_prefix && t->pp_prefix[0] == bos)) {
            int32_t *q = thaw_realloc(t->pp_prefix, (t->n_prefix + 1) * sizeof *q);
            if (!q) {
                rc = -ENOMEM;
                goto out;
            }
            memmove(q + 1, q, t->n_prefix * sizeof *q);
            q[0] = bos;
            t->pp_prefix = q;
            t->n_prefix++;
        } else if (json_is_false(ab) && bos >= 0 && t->n_prefix && t->pp_prefix[0] == bos) {
            memmove(t->pp_prefix, t->pp_prefix + 1, --t->n_prefix * sizeof *t->pp_prefix);
        }
        if (json_is_true(ae) && eos >= 0 &&
            !(t->n_suffix && t->pp_suffix[t->n_suffix - 1] == eos)) {
            int32_t *q = thaw_realloc(t->pp_suffix, (t->n_suffix + 1) * sizeof *q);
            if (!q) {
                rc = -ENOMEM;
                goto out;
            }
            q[t->n_suffix++] = eos;
            t->pp_suffix = q;
        }
    }
    /* Without a config: BOS is the template's first special token, EOS the
     * first of the usual end-of-text tokens the vocabulary has. */
    t->bos = t->bos_text ? thaw_tok_find(t, t->bos_text) : -1;
    t->eos = t->eos_text ? thaw_tok_find(t, t->eos_text) : -1;
    if (!bos_present && t->n_prefix)
        t->bos = t->pp_prefix[0];
    if (!eos_present) {
        static const char *cands[] = { "</s>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>" };
        for (size_t i = 0; i < sizeof cands / sizeof *cands && t->eos < 0; i++)
            t->eos = thaw_tok_find(t, cands[i]);
    }
    if (!t->bos_text && t->bos >= 0 && !(t->bos_text = dup_n(t->id_str[t->bos], t->id_len[t->bos])))
        rc = -ENOMEM;
    if (!rc && !t->eos_text && t->eos >= 0 &&
        !(t->eos_text = dup_n(t->id_str[t->eos], t->id_len[t->eos])))
        rc = -ENOMEM;
out:
    json_decref(root);
    return rc;
}

/* ================================================================ load / destroy */

static void init_byte_level(struct thaw_tokenizer *t)
{
    /* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves,
     * the other 68 to U+0100.. in byte order. */
    uint32_t next = 0x100;
    for (int i = 0; i < 0x144; i++)
        t->bl_inv[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t cp = keep ? (uint32_t)b : next++;
        t->bl_chr_len[b] = (uint8_t)utf8_put(t->bl_chr[b], cp);
        t->bl_inv[cp] = (int16_t)b;
    }
}

static int build_buckets(struct thaw_tokenizer *t);

void thaw_tok_destroy(struct thaw_tokenizer *t)
{
    if (!t)
        return;
    thaw_free(t->m_str);
    thaw_free(t->m_off);
    thaw_free(t->m_len);
    thaw_free(t->vmap);
    thaw_free(t->mkey);
    thaw_free(t->mval);
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].match != t->added[i].content)
            thaw_free(t->added[i].match);
        thaw_free(t->added[i].content);
    }
    thaw_free(t->added);
    for (int p = 0; p < 2; p++) {
        for (int b = 0; b < 256; b++)
            thaw_free(t->abucket[p][b]);
    }
    thaw_free(t->id_str);
    thaw_free(t->id_len);
    thaw_free(t->id_special);
    for (size_t i = 0; i < t->n_norm; i++) {
        thaw_free(t->norm[i].a);
        thaw_free(t->norm[i].b);
        pcre2_code_free(t->norm[i].re);
    }
    thaw_free(t->norm);
    for (size_t i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].re);
    thaw_free(t->pre);
    for (size_t i = 0; i < t->n_dec; i++) {
        thaw_free(t->dec[i].a);
        thaw_free(t->dec[i].b);
    }
    thaw_free(t->dec);
    thaw_free(t->pp_prefix);
    thaw_free(t->pp_suffix);
    thaw_free(t->bos_text);
    thaw_free(t->eos_text);
    thaw_free(t->chat_template);
    pcre2_general_context_free(t->gctx);
    thaw_free(t);
}

/*
 * The text with model.vocab and model.merges (the spans) replaced by {} and
 * [], for jansson to parse the rest. NULL when out of memory.
 */
static char *without_spans(const char *s, size_t n, struct tokj_span a, struct tokj_span b,
                           size_t *out_n)
{
    if (a.end && b.end && b.start < a.start) {
        struct tokj_span x = a;
        a = b;
        b = x;
    }
    char *o = thaw_malloc(n + 5);
    if (!o)
        return NULL;
    size_t k = 0, at = 0;
    struct tokj_span sp[2] = { a, b };
    for (int i = 0; i < 2; i++) {
        if (!sp[i].end)
            continue;
        memcpy(o + k, s + at, sp[i].start - at);
        k += sp[i].start - at;
        o[k++] = s[sp[i].start];                        /* { or [ */
        o[k++] = s[sp[i].start] == '{' ? '}' : ']';
        at = sp[i].end;
    }
    memcpy(o + k, s + at, n - at);
    k += n - at;
    o[k] = 0;
    *out_n = k;
    return o;
}

static int tok_load(const char *tok_json, size_t tok_len, const char *cfg_json, size_t cfg_len,
                    int fast, struct thaw_tokenizer **out);

int thaw_tok_load(const char *tok_json, size_t tok_len, const char *cfg_json, size_t cfg_len,
                  struct thaw_tokenizer **out)
{
    if (!tok_json || !out)
        return THAW_FAIL(THAW_EINVAL, "thaw_tok_load: NULL argument");
    int rc = fast_json ? tok_load(tok_json, tok_len, cfg_json, cfg_len, 1, out) : FAST_RETRY;
    if (rc == FAST_RETRY)
        rc = tok_load(tok_json, tok_len, cfg_json, cfg_len, 0, out);
    return rc;
}

static int tok_load(const char *tok_json, size_t tok_len, const char *cfg_json, size_t cfg_len,
                    int fast, struct thaw_tokenizer **out)
{
    json_error_t jerr;
    json_t *root = NULL;
    struct tokj_span vsp = { 0, 0 }, msp = { 0, 0 };
    int rc = 0;
    size_t cap_norm = 0, cap_pre = 0, cap_dec = 0;
    struct thaw_tokenizer *t = thaw_calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->unk_id = -1;
    init_byte_level(t);
    if (fast) {
        size_t rest_n;
        char *rest;
        if (tokj_find(tok_json, tok_len, &vsp, &msp) != 0) {
            rc = FAST_RETRY;
            goto fail;
        }
        /* The two big values first: whatever is wrong in them is for the slow
         * path to report, ahead of every other check, as it would. */
        if ((vsp.end && (rc = load_vocab_fast(t, tok_json, vsp))) ||
            (msp.end && (rc = load_merges_fast(t, tok_json, msp))))
            goto fail;
        if (!(rest = without_spans(tok_json, tok_len, vsp, msp, &rest_n))) {
            rc = -ENOMEM;
            goto fail;
        }
        root = json_loadb(rest, rest_n, JSON_ALLOW_NUL, &jerr);
        thaw_free(rest);
        if (!root) {
            rc = FAST_RETRY; /* jansson's own message comes from the slow path */
            goto fail;
        }
    } else {
        root = json_loadb(tok_json, tok_len, JSON_ALLOW_NUL, &jerr);
        if (!root) {
            rc = THAW_FAIL(THAW_EFORMAT, "tokenizer.json: line %d column %d: %s", jerr.line,
                           jerr.column, jerr.text);
            goto fail;
        }
    }
    if (!json_is_object(root)) {
        rc = THAW_FAIL(THAW_EFORMAT, "tokenizer.json: not an object");
        goto fail;
    }
    if ((rc = load_model(t, json_object_get(root, "model"), vsp.end != 0, msp.end != 0)))
        goto fail;
    if ((rc = load_added(t, json_object_get(root, "added_tokens"))))
        goto fail;
    if ((rc = build_ids(t)))
        goto fail;
    json_t *c = json_object_get(root, "normalizer");
    if (c && !json_is_null(c) && (rc = add_norm(t, c, &cap_norm)))
        goto fail;
    c = json_object_get(root, "pre_tokenizer");
    if (c && !json_is_null(c) && (rc = add_pre(t, c, &cap_pre)))
        goto fail;
    c = json_object_get(root, "post_processor");
    if (c && !json_is_null(c) && (rc = add_post(t, c)))
        goto fail;
    c = json_object_get(root, "decoder");
    if (c && !json_is_null(c)) {
        t->has_decoder = 1;
        if ((rc = add_dec(t, c, &cap_dec)))
            goto fail;
    }
    if ((rc = build_buckets(t)))
        goto fail;
    for (size_t i = 0; i < t->n_prefix + t->n_suffix; i++) {
        int32_t id = i < t->n_prefix ? t->pp_prefix[i] : t->pp_suffix[i - t->n_prefix];
        if (id >= t->n_ids || !t->id_str[id]) {
            rc = THAW_FAIL(THAW_EFORMAT,
                           "tokenizer.json: post_processor adds id %d, which has "
                           "no token",
                           id);
            goto fail;
        }
    }
    if ((rc = load_cfg(t, cfg_json, cfg_len)))
        goto fail;
    json_decref(root);
    *out = t;
    return 0;
fail:
    thaw_tok_destroy(t);
    json_decref(root);
    return rc;
}

static int read_opt(const char *dir, const char *name, size_t max, char **out, size_t *len)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return THAW_FAIL(THAW_EINVAL, "path too long: %s/%s", dir, name);
    int rc = thaw_read_file(path, max, out, len);
    if (rc == -ENOENT) {
        *out = NULL;
        *len = 0;
        return 0;
    }
    return rc;
}

int thaw_tok_load_dir(const char *dir, struct thaw_tokenizer **out)
{
    char *tj = NULL, *cj = NULL, *tpl = NULL;
    size_t tn = 0, cn = 0, pn = 0;
    struct thaw_tokenizer *t = NULL;
    char path[4096];
    if (!dir || !out)
        return THAW_FAIL(THAW_EINVAL, "thaw_tok_load_dir: NULL argument");
    if ((size_t)snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= sizeof path)
        return THAW_FAIL(THAW_EINVAL, "path too long: %s", dir);
    int rc = thaw_read_file(path, TOK_MAX_FILE_BYTES, &tj, &tn);
    if (rc)
        goto out;
    if ((rc = read_opt(dir, "tokenizer_config.json", TOK_MAX_CFG_BYTES, &cj, &cn)))
        goto out;
    if ((rc = read_opt(dir, "chat_template.jinja", TOK_MAX_CFG_BYTES, &tpl, &pn)))
        goto out;
    if ((rc = thaw_tok_load(tj, tn, cj, cn, &t)))
        goto out;
    if (tpl && (rc = set_template(t, tpl, pn))) {
        thaw_tok_destroy(t);
        goto out;
    }
    *out = t;
out:
    if (rc)
        thaw_err_ctx("loading tokenizer from %s", dir);
    thaw_free(tj);
    thaw_free(cj);
    thaw_free(tpl);
    return rc;
}

/* ================================================================ encode */

struct piece {
    size_t off, len; /* in enc.work */
    int first;       /* starts at offset 0 of the original text (Metaspace "first") */
};

struct span {
    size_t s, e;
    int match;
};

struct sym {
    int32_t id, prev, next;
    uint32_t len; /* 0 = merged away */
};

struct hent {
    uint32_t rank, pos;
    int32_t new_id;
};

/* Scratch of one encode call (the tokenizer itself stays immutable). */
struct enc {
    const struct thaw_tokenizer *t;
    pcre2_match_data *md;
    struct buf work, na, nb, word;
    struct piece *pa, *pb;
    size_t npa, npb, cap_pa, cap_pb;
    struct span *sp;
    size_t nsp, cap_sp;
    struct sym *sym;
    size_t cap_sym;
    struct hent *heap;
    size_t nheap, cap_heap;
    int32_t *u32;
    size_t cap_u32;
    struct ivec ids;
};

static int push_piece(struct enc *e, size_t off, size_t len, int first)
{
    if (len == 0)
        return 0;
    int rc = grow((void **)&e->pb, &e->cap_pb, e->npb + 1, sizeof *e->pb);
    if (rc)
        return rc;
    e->pb[e->npb++] = (struct piece){ off, len, first };
    return 0;
}

static int push_span(struct enc *e, size_t s, size_t end, int match)
{
    int rc = grow((void **)&e->sp, &e->cap_sp, e->nsp + 1, sizeof *e->sp);
    if (rc)
        return rc;
    e->sp[e->nsp++] = (struct span){ s, end, match };
    return 0;
}

/* Matches of re in s[0..n) as spans covering s (tokenizers' find_matches). */
static int regex_spans(struct enc *e, const pcre2_code *re, const char *s, size_t n)
{
    size_t pos = 0, prev = 0;
    e->nsp = 0;
    while (pos <= n) {
        int r = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH)
            break;
        if (r < 0) {
            if (r == PCRE2_ERROR_NOMEMORY || r == PCRE2_ERROR_HEAPLIMIT)
                return -ENOMEM;
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(r, msg, sizeof msg);
            return THAW_FAIL(THAW_ELIMIT, "tokenizer: split pattern failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character */
            if (ms >= n)
                break;
            pos = ms + utf8_len((unsigned char)s[ms]);
            continue;
        }
        int rc = 0;
        if (ms > prev)
            rc = push_span(e, prev, ms, 0);
        if (!rc)
            rc = push_span(e, ms, me, 1);
        if (rc)
            return rc;
        prev = pos = me;
    }
    if (prev < n)
        return push_span(e, prev, n, 0);
    return 0;
}

/* Apply a split behaviour to e->sp and emit the pieces (tokenizers'
 * NormalizedString::split). */
static int split_emit(struct enc *e, const struct piece *p, enum split_behavior b, int invert)
{
    int rc = 0, prev_match = 0;
    size_t cur_s = 0, cur_e = 0;
    int have = 0;
    for (size_t i = 0; i < e->nsp; i++) {
        struct span sp = e->sp[i];
        int m = invert ? !sp.match : sp.match;
        switch (b) {
        case SPLIT_REMOVED:
            if (!m)
                rc = push_piece(e, p->off + sp.s, sp.e - sp.s, p->first && sp.s == 0);
            break;
        case SPLIT_ISOLATED:
            rc = push_piece(e, p->off + sp.s, sp.e - sp.s, p->first && sp.s == 0);
            break;
        case SPLIT_CONTIGUOUS:
        case SPLIT_MERGED_PREV:
            if (have && ((b == SPLIT_CONTIGUOUS && m == prev_match) ||
                         (b == SPLIT_MERGED_PREV && m && !prev_match))) {
                cur_e = sp.e;
            } else {
                if (have)
                    rc = push_piece(e, p->off + cur_s, cur_e - cur_s, p->first && cur_s == 0);
                cur_s = sp.s;
                cur_e = sp.e;
                have = 1;
            }
            prev_match = m;
            break;
        case SPLIT_MERGED_NEXT: /* split_merged_next */ break;
        }
        if (rc)
            return rc;
    }
    if (have && b != SPLIT_REMOVED && b != SPLIT_ISOLATED)
        rc = push_piece(e, p->off + cur_s, cur_e - cur_s, p->first && cur_s == 0);
    return rc;
}

/* MergedWithNext, a literal port of tokenizers' fold, which walks the
 * spans right to left: a match directly left of a non-match piece extends
 * that piece to start at the match. */
static int split_merged_next(struct enc *e, const struct piece *p, int invert)
{
    size_t n = e->nsp;
    int rc = grow((void **)&e->sp, &e->cap_sp, 2 * n + 1, sizeof *e->sp);
    if (rc)
        return rc;
    struct span *outv = e->sp + n; /* second half as output stack */
    size_t no = 0;
    int prev_match = 0;
    for (size_t k = n; k-- > 0;) {
        struct span sp = e->sp[k];
        int m = invert ? !sp.match : sp.match;
        if (m && !prev_match && no > 0) {
            outv[no - 1].s = sp.s;
        } else {
            outv[no++] = (struct span){ sp.s, sp.e, 0 };
        }
        prev_match = m;
    }
    for (size_t k = no; k-- > 0;) {
        rc = push_piece(e, p->off + outv[k].s, outv[k].e - outv[k].s, p->first && outv[k].s == 0);
        if (rc)
            return rc;
    }
    return 0;
}

/* Run the pre-tokenizers over e->pa (pieces of e->work); result in e->pa. */
static int pre_tokenize(struct enc *e)
{
    const struct thaw_tokenizer *t = e->t;
    int rc = 0;
    for (size_t k = 0; k < t->n_pre; k++) {
        const struct pre_op *op = &t->pre[k];
        e->npb = 0;
        for (size_t i = 0; i < e->npa && !rc; i++) {
            struct piece p = e->pa[i];
            const char *s = e->work.p + p.off;
            switch (op->kind) {
            case PRE_SPLIT:
                rc = regex_spans(e, op->re, e->work.p + p.off, p.len);
                if (!rc) {
                    rc = op->behavior == SPLIT_MERGED_NEXT
                             ? split_merged_next(e, &p, op->invert)
                             : split_emit(e, &p, op->behavior, op->invert);
                }
                break;
            case PRE_BYTELEVEL: /* add_prefix_space */
                if (s[0] == ' ') {
                    rc = push_piece(e, p.off, p.len, p.first);
                } else {
                    size_t off = e->work.len;
                    rc = buf_put(&e->work, " ", 1);
                    if (!rc)
                        rc = buf_put_self(&e->work, p.off, p.len);
                    if (!rc)
                        rc = push_piece(e, off, p.len + 1, p.first);
                }
                break;
            case PRE_DIGITS: {
                /* char::is_numeric: each numeric char is a match; Isolated
                 * (individual_digits) or Contiguous runs. */
                e->nsp = 0;
                size_t j = 0, run = 0;
                while (j < p.len && !rc) {
                    size_t cl = utf8_len((unsigned char)s[j]);
                    if (is_numeric(utf8_cp((const unsigned char *)s + j, cl))) {
                        if (run < j)
                            rc = push_span(e, run, j, 0);
                        if (!rc)
                            rc = push_span(e, j, j + cl, 1);
                        run = j + cl;
                    }
                    j += cl;
                }
                if (!rc && run < p.len)
                    rc = push_span(e, run, p.len, 0);
                if (!rc)
                    rc = split_emit(e, &p, op->individual ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, 0);
                break;
            }
            case PRE_METASPACE: {
                /* Replace ' ' by the replacement, prepend per scheme, then
                 * split before each replacement (MergedWithNext). */
                size_t off = e->work.len;
                int starts = p.len >= op->repl_len && memcmp(s, op->repl, op->repl_len) == 0;
                if (!starts && s[0] == ' ')
                    starts = 1; /* the space becomes the replacement */
                if (!starts &&
                    (op->scheme == PREPEND_ALWAYS || (op->scheme == PREPEND_FIRST && p.first)))
                    rc = buf_put(&e->work, op->repl, op->repl_len);
                for (size_t j = 0; j < p.len && !rc; j++) {
                    char c = e->work.p[p.off + j]; /* copied: work may move */
                    rc = c == ' ' ? buf_put(&e->work, op->repl, op->repl_len)
                                  : buf_put(&e->work, &c, 1);
                }
                if (rc)
                    break;
                size_t len = e->work.len - off;
                if (!op->split) {
                    rc = push_piece(e, off, len, p.first);
                    break;
                }
                const char *w = e->work.p + off;
                size_t st = 0;
                for (size_t j = 1; j + op->repl_len <= len && !rc; j++) {
                    if (memcmp(w + j, op->repl, op->repl_len) == 0 && j > st) {
                        rc = push_piece(e, off + st, j - st, p.first && st == 0);
                        st = j;
                    }
                }
                if (!rc)
                    rc = push_piece(e, off + st, len - st, p.first && st == 0);
                break;
            }
            }
        }
        if (rc)
            return rc;
        struct piece *tp = e->pa;
        size_t tc = e->cap_pa;
        e->pa = e->pb;
        e->cap_pa = e->cap_pb;
        e->npa = e->npb;
        e->pb = tp;
        e->cap_pb = tc;
    }
    return 0;
}

/* ---------------------------------------------------------------- normalize */

static int norm_unicode(struct enc *e, int opts, const char *s, size_t n, struct buf *out)
{
    int fast = 1;
    for (size_t i = 0; i < n && fast; i++)
        fast = (unsigned char)s[i] < (opts == (UTF8PROC_STABLE | UTF8PROC_COMPOSE) ? 0xCC : 0x80);
    if (fast) /* NFC leaves every character below U+0300 alone; the others ASCII */
        return buf_put(out, s, n);
    utf8proc_ssize_t need = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n,
                                               NULL, 0, (utf8proc_option_t)opts);
    if (need < 0)
        return THAW_FAIL(THAW_EINVAL, "tokenizer: normalization failed: %s", utf8proc_errmsg(need));
    int rc = grow((void **)&e->u32, &e->cap_u32, (size_t)need + 1, sizeof *e->u32);
    if (rc)
        return rc;
    need = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, e->u32, need,
                              (utf8proc_option_t)opts);
    utf8proc_ssize_t bytes = need < 0 ? need
                                      : utf8proc_reencode(e->u32, need, (utf8proc_option_t)opts);
    if (bytes < 0)
        return THAW_FAIL(THAW_EINVAL, "tokenizer: normalization failed: %s",
                         utf8proc_errmsg(bytes));
    return buf_put(out, e->u32, (size_t)bytes);
}

/* Normalize s[0..n) into e->na (NUL-free; its own buffer). */
static int normalize(struct enc *e, const char *s, size_t n)
{
    const struct thaw_tokenizer *t = e->t;
    e->na.len = 0;
    int rc = buf_put(&e->na, s, n);
    for (size_t k = 0; k < t->n_norm && !rc; k++) {
        const struct norm_op *op = &t->norm[k];
        struct buf *in = &e->na, *out = &e->nb;
        out->len = 0;
        switch (op->kind) {
        case NORM_UNICODE: rc = norm_unicode(e, op->u8p_opts, in->p, in->len, out); break;
        case NORM_PREPEND:
            if (in->len)
                rc = buf_put(out, op->a, op->a_len);
            if (!rc)
                rc = buf_put(out, in->p, in->len);
            break;
        case NORM_REPLACE:
            if (op->re) {
                rc = regex_spans(e, op->re, in->p, in->len);
                for (size_t i = 0; i < e->nsp && !rc; i++) {
                    rc = e->sp[i].match ? buf_put(out, op->b, op->b_len)
                                        : buf_put(out, in->p + e->sp[i].s, e->sp[i].e - e->sp[i].s);
                }
            } else {
                size_t i = 0;
                while (i < in->len && !rc) {
                    if (in->len - i >= op->a_len && memcmp(in->p + i, op->a, op->a_len) == 0) {
                        rc = buf_put(out, op->b, op->b_len);
                        i += op->a_len;
                    } else {
                        rc = buf_put(out, in->p + i, 1);
                        i++;
                    }
                }
            }
            break;
        case NORM_STRIP: {
            size_t a = 0, b = in->len;
            while (op->left && a < b) {
                size_t k2 = utf8_len((unsigned char)in->p[a]);
                if (!is_ws(utf8_cp((const unsigned char *)in->p + a, k2)))
                    break;
                a += k2;
            }
            while (op->right && b > a) {
                size_t st = utf8_prev(in->p, b);
                if (!is_ws(utf8_cp((const unsigned char *)in->p + st, b - st)))
                    break;
                b = st;
            }
            rc = buf_put(out, in->p + a, b - a);
            break;
        }
        }
        struct buf tmp = e->na;
        e->na = e->nb;
        e->nb = tmp;
    }
    return rc;
}

/* ---------------------------------------------------------------- BPE */

static int heap_less(const struct hent *a, const struct hent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(struct enc *e, struct hent h)
{
    int rc = grow((void **)&e->heap, &e->cap_heap, e->nheap + 1, sizeof *e->heap);
    if (rc)
        return rc;
    size_t i = e->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&h, &e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = h;
    return 0;
}

static struct hent heap_pop(struct enc *e)
{
    struct hent top = e->heap[0], last = e->heap[--e->nheap];
    size_t i = 0, n = e->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!heap_less(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = last;
    return top;
}

static int add_sym(struct enc *e, size_t *n, int32_t id, size_t len)
{
    int rc = grow((void **)&e->sym, &e->cap_sym, *n + 1, sizeof *e->sym);
    if (rc)
        return rc;
    e->sym[*n] = (struct sym){ id, (int32_t)*n - 1, (int32_t)*n + 1, (uint32_t)len };
    (*n)++;
    return 0;
}

/* BPE of one word w[0..n) (model form: byte-level mapped if ByteLevel),
 * ids appended to e->ids (tokenizers' BPE::merge_word + Word::merge_all). */
static int bpe_word(struct enc *e, const char *w, size_t n)
{
    const struct thaw_tokenizer *t = e->t;
    int rc;
    if (n == 0)
        return 0;
    if (t->ignore_merges) {
        int32_t id = vocab_get(t, w, n);
        if (id >= 0)
            return ivec_push(&e->ids, id);
    }
    size_t ns = 0, i = 0;
    int32_t unk = -1;
    size_t unk_len = 0;
    while (i < n) {
        size_t cl = utf8_len((unsigned char)w[i]);
        int32_t id = vocab_get(t, w + i, cl);
        if (id >= 0) {
            if (unk >= 0 && (rc = add_sym(e, &ns, unk, unk_len)))
                return rc;
            unk = -1;
            rc = add_sym(e, &ns, id, cl);
        } else {
            int all = t->byte_fallback;
            for (size_t k = 0; k < cl && all; k++)
                all = t->bf_id[(unsigned char)w[i + k]] >= 0;
            if (all) {
                /* As tokenizers does, a pending unk is not flushed here. */
                rc = 0;
                for (size_t k = 0; k < cl && !rc; k++)
                    rc = add_sym(e, &ns, t->bf_id[(unsigned char)w[i + k]], 1);
            } else if (t->unk_id >= 0) {
                rc = 0;
                if (unk >= 0 && t->fuse_unk) {
                    unk_len += cl;
                } else {
                    if (unk >= 0)
                        rc = add_sym(e, &ns, unk, unk_len);
                    unk = t->unk_id;
                    unk_len = cl;
                }
            } else {
                rc = 0; /* no unk token: the character is dropped */
            }
        }
        if (rc)
            return rc;
        i += cl;
    }
    if (unk >= 0 && (rc = add_sym(e, &ns, unk, unk_len)))
        return rc;
    if (ns == 0)
        return 0;
    e->sym[ns - 1].next = -1;
    e->nheap = 0;
    for (size_t k = 0; k + 1 < ns; k++) {
        uint32_t rank;
        int32_t nid;
        if (merge_get(t, e->sym[k].id, e->sym[k + 1].id, &rank, &nid) &&
            (rc = heap_push(e, (struct hent){ rank, (uint32_t)k, nid })))
            return rc;
    }
    while (e->nheap) {
        struct hent top = heap_pop(e);
        struct sym *cur = &e->sym[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        struct sym *right = &e->sym[cur->next];
        uint32_t rank;
        int32_t nid;
        if (!merge_get(t, cur->id, right->id, &rank, &nid) || nid != top.new_id)
            continue; /* stale entry */
        cur->id = top.new_id;
        cur->len += right->len;
        right->len = 0;
        cur->next = right->next;
        if (cur->next >= 0)
            e->sym[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0 && merge_get(t, e->sym[cur->prev].id, cur->id, &rank, &nid) &&
            (rc = heap_push(e, (struct hent){ rank, (uint32_t)cur->prev, nid })))
            return rc;
        cur = &e->sym[top.pos]; /* heap_push never moves sym, but keep it obvious */
        if (cur->next >= 0 && merge_get(t, cur->id, e->sym[cur->next].id, &rank, &nid) &&
            (rc = heap_push(e, (struct hent){ rank, top.pos, nid })))
            return rc;
    }
    for (int32_t k = 0; k >= 0; k = e->sym[k].next) {
        if ((rc = ivec_push(&e->ids, e->sym[k].id)))
            return rc;
    }
    return 0;
}

/* Model form of a pre-token (byte-level mapping) and its BPE. */
static int encode_word(struct enc *e, const char *s, size_t n)
{
    const struct thaw_tokenizer *t = e->t;
    if (!t->byte_level)
        return bpe_word(e, s, n);
    e->word.len = 0;
    int rc = grow((void **)&e->word.p, &e->word.cap, 2 * n + 1, 1);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        memcpy(e->word.p + e->word.len, t->bl_chr[b], t->bl_chr_len[b]);
        e->word.len += t->bl_chr_len[b];
    }
    return bpe_word(e, e->word.p, e->word.len);
}

/* Normalize, pre-tokenize and BPE one text segment between added tokens. */
static int encode_text(struct enc *e, const char *s, size_t n, int first);

/* Split s[0..n) on added tokens of pass (0: raw text, 1: normalized), the
 * text between them going to text_fn. tokenizers' AddedVocabulary
 * find_matches with leftmost-longest matching and lstrip/rstrip. */
static int split_added(struct enc *e, int pass, const char *s, size_t n, int first,
                       int (*text_fn)(struct enc *, const char *, size_t, int))
{
    const struct thaw_tokenizer *t = e->t;
    size_t seg = 0, i = 0;
    int rc;
    while (i < n) {
        unsigned char b = (unsigned char)s[i];
        uint32_t nb = t->nbucket[pass][b];
        const struct added_tok *hit = NULL;
        for (uint32_t k = 0; k < nb; k++) {
            const struct added_tok *a = &t->added[t->abucket[pass][b][k]];
            if (a->match_len <= n - i && memcmp(s + i, a->match, a->match_len) == 0) {
                hit = a;
                break;
            }
        }
        if (hit && hit->single_word) {
            int before = 0, after = 0;
            if (i > 0) {
                size_t ps = utf8_prev(s, i);
                before = is_word_cp(utf8_cp((const unsigned char *)s + ps, i - ps));
            }
            if (i + hit->match_len < n) {
                size_t k2 = utf8_len((unsigned char)s[i + hit->match_len]);
                after = is_word_cp(utf8_cp((const unsigned char *)s + i + hit->match_len, k2));
            }
            if (before || after)
                hit = NULL;
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t st = i, en = i + hit->match_len;
        if (hit->lstrip) {
            while (st > seg) {
                size_t ps = utf8_prev(s, st);
                if (!is_ws(utf8_cp((const unsigned char *)s + ps, st - ps)))
                    break;
                st = ps;
            }
        }
        if (hit->rstrip) {
            while (en < n) {
                size_t k2 = utf8_len((unsigned char)s[en]);
                if (!is_ws(utf8_cp((const unsigned char *)s + en, k2)))
                    break;
                en += k2;
            }
        }
        if (st > seg && (rc = text_fn(e, s + seg, st - seg, first && seg == 0)))
            return rc;
        if ((rc = ivec_push(&e->ids, hit->id)))
            return rc;
        seg = i = en;
    }
    if (seg < n)
        return text_fn(e, s + seg, n - seg, first && seg == 0);
    return 0;
}

/* A piece of normalized text (after the normalized added tokens): into
 * e->work as one piece, pre-tokenized, then BPE. */
static int encode_normalized(struct enc *e, const char *s, size_t n, int first)
{
    e->work.len = 0;
    int rc = buf_put(&e->work, s, n);
    if (rc)
        return rc;
    e->npa = 0;
    e->npb = 0;
    if ((rc = push_piece(e, 0, n, first)))
        return rc;
    struct piece *tp = e->pa;
    size_t tc = e->cap_pa;
    e->pa = e->pb;
    e->cap_pa = e->cap_pb;
    e->npa = e->npb;
    e->pb = tp;
    e->cap_pb = tc;
    if ((rc = pre_tokenize(e)))
        return rc;
    for (size_t i = 0; i < e->npa; i++) {
        if ((rc = encode_word(e, e->work.p + e->pa[i].off, e->pa[i].len)))
            return rc;
    }
    return 0;
}

static int encode_text(struct enc *e, const char *s, size_t n, int first)
{
    int rc = normalize(e, s, n);
    if (rc)
        return rc;
    if (!e->t->any_normalized)
        return encode_normalized(e, e->na.p, e->na.len, first);
    /* split_added reads e->na while encode_normalized reuses na/nb via
     * nothing (it only touches work), so the text stays valid. */
    return split_added(e, 1, e->na.p, e->na.len, first, encode_normalized);
}

static void enc_free(struct enc *e)
{
    pcre2_match_data_free(e->md);
    thaw_free(e->work.p);
    thaw_free(e->na.p);
    thaw_free(e->nb.p);
    thaw_free(e->word.p);
    thaw_free(e->pa);
    thaw_free(e->pb);
    thaw_free(e->sp);
    thaw_free(e->sym);
    thaw_free(e->heap);
    thaw_free(e->u32);
}

/*
 * First-byte buckets of added tokens, longest first (leftmost-longest
 * matching), for the raw-text pass and the normalized pass. Normalized
 * tokens are matched in their normalized form.
 */
static int build_buckets(struct thaw_tokenizer *t)
{
    struct enc e = { .t = t };
    int rc = 0;
    if (t->gctx && !(e.md = pcre2_match_data_create(4, t->gctx)))
        return -ENOMEM;
    for (size_t i = 0; i < t->n_added && !rc; i++) {
        struct added_tok *a = &t->added[i];
        if (!a->normalized) {
            a->match = a->content;
            a->match_len = a->len;
            continue;
        }
        rc = normalize(&e, a->content, a->len);
        if (!rc && !(a->match = dup_n(e.na.p ? e.na.p : "", e.na.len)))
            rc = -ENOMEM;
        if (!rc && e.na.len) {
            /* tokenizers also decodes such a token as its normalized form. */
            a->match_len = e.na.len;
            t->id_str[a->id] = a->match;
            t->id_len[a->id] = (uint32_t)a->match_len;
        }
    }
    enc_free(&e);
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (size_t i = 0; i < t->n_added; i++) {
            if (t->added[i].normalized == pass && t->added[i].match_len)
                t->nbucket[pass][(unsigned char)t->added[i].match[0]]++;
        }
        for (int b = 0; b < 256; b++) {
            if (!t->nbucket[pass][b])
                continue;
            t->abucket[pass][b] = thaw_malloc(t->nbucket[pass][b] * sizeof(uint32_t));
            if (!t->abucket[pass][b])
                return -ENOMEM;
            t->nbucket[pass][b] = 0;
        }
        for (size_t i = 0; i < t->n_added; i++) {
            const struct added_tok *a = &t->added[i];
            if (a->normalized == pass && a->match_len) {
                unsigned char b = (unsigned char)a->match[0];
                t->abucket[pass][b][t->nbucket[pass][b]++] = (uint32_t)i;
            }
        }
        for (int b = 0; b < 256; b++)
            sort_by_len(t, t->abucket[pass][b], t->nbucket[pass][b]);
    }
    return rc;
}

int thaw_tok_encode(const struct thaw_tokenizer *tok, const char *text, size_t len, int add_special,
                    int32_t **ids, size_t *n)
{
    if (!tok || (!text && len) || !ids || !n)
        return THAW_FAIL(THAW_EINVAL, "thaw_tok_encode: NULL argument");
    if (len > TOK_MAX_TEXT_BYTES)
        return THAW_FAIL(THAW_ELIMIT, "tokenizer: text of %zu bytes exceeds %u", len,
                         TOK_MAX_TEXT_BYTES);
    size_t ok = eng_utf8_valid_prefix(text, len);
    if (ok != len)
        return THAW_FAIL(THAW_EINVAL, "tokenizer: invalid UTF-8 at byte %zu", ok);
    struct enc e = { .t = tok };
    int rc = 0;
    if (tok->gctx && !(e.md = pcre2_match_data_create(4, tok->gctx))) {
        rc = -ENOMEM;
        goto out;
    }
    if (add_special) {
        for (size_t i = 0; i < tok->n_prefix && !rc; i++)
            rc = ivec_push(&e.ids, tok->pp_prefix[i]);
    }
    if (!rc && len)
        rc = split_added(&e, 0, text, len, 1, encode_text);
    if (add_special) {
        for (size_t i = 0; i < tok->n_suffix && !rc; i++)
            rc = ivec_push(&e.ids, tok->pp_suffix[i]);
    }
    if (rc)
        goto out;
    if (!e.ids.p && !(e.ids.p = thaw_malloc(sizeof(int32_t)))) {
        rc = -ENOMEM;
        goto out;
    }
    *ids = e.ids.p;
    *n = e.ids.n;
    e.ids.p = NULL;
out:
    thaw_free(e.ids.p);
    enc_free(&e);
    return rc;
}

/* ================================================================ decode */

/* A list of token strings: token i is b.p[end[i-1] .. end[i]). */
struct tlist {
    struct buf b;
    size_t *end;
    size_t n, cap;
};

static int tl_new(struct tlist *l, const char *s, size_t n)
{
    int rc = grow((void **)&l->end, &l->cap, l->n + 1, sizeof *l->end);
    if (!rc)
        rc = buf_put(&l->b, s, n);
    if (rc)
        return rc;
    l->end[l->n++] = l->b.len;
    return 0;
}

/* Append to the last token. */
static int tl_add(struct tlist *l, const char *s, size_t n)
{
    int rc = buf_put(&l->b, s, n);
    if (!rc)
        l->end[l->n - 1] = l->b.len;
    return rc;
}

static const char *tl_tok(const struct tlist *l, size_t i, size_t *n)
{
    size_t s = i ? l->end[i - 1] : 0;
    *n = l->end[i] - s;
    return l->b.p + s;
}

static const char FFFD[] = "\xef\xbf\xbd";

/* s[0..n) as UTF-8 with each maximal ill-formed subpart replaced by U+FFFD
 * (Rust's from_utf8_lossy). With hold, a trailing incomplete sequence is
 * left out and *held set. */
static int lossy_put(struct tlist *l, const char *s, size_t n, int hold, int *held)
{
    size_t i = 0, run = 0, sub;
    int trunc, rc = 0;
    if (n == 0)
        return 0;
    while (i < n && !rc) {
        size_t k = (unsigned char)s[i] < 0x80
                       ? 1
                       : utf8_seq((const unsigned char *)s + i, n - i, &sub, &trunc);
        if (k) {
            i += k;
            continue;
        }
        rc = tl_add(l, s + run, i - run);
        if (!rc && trunc && hold) {
            *held = 1;
            return 0;
        }
        if (!rc)
            rc = tl_add(l, FFFD, 3);
        i += sub;
        run = i;
    }
    if (!rc)
        rc = tl_add(l, s + run, n - run);
    return rc;
}

struct dec_state {
    struct tlist a, b;
    struct buf raw; /* ByteLevel: the bytes before lossy UTF-8 */
};

static void dec_state_free(struct dec_state *d)
{
    thaw_free(d->a.b.p);
    thaw_free(d->a.end);
    thaw_free(d->b.b.p);
    thaw_free(d->b.end);
    thaw_free(d->raw.p);
}

static int is_byte_tok(const char *s, size_t n, unsigned *v)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return 0;
    unsigned x = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return 0;
        x = x * 16 + (unsigned)d;
    }
    *v = x;
    return 1;
}

/*
 * The decoder chain over ids (tokenizers' Tokenizer::decode): token strings
 * of the ids (special ones dropped when skip), each decoder's decode_chain
 * in turn, then concatenation; into d->a as one string (d->a.b).
 *
 * For the streaming detokenizer: at_start says ids[0] is the first id of
 * the whole text (the Strip-after-Fuse and Metaspace first-token rules only
 * apply there); stream holds back text that later ids could still change
 * (an unfinished run of byte-fallback tokens, a trailing incomplete UTF-8
 * sequence) and sets *held.
 */
static int decode_chain(const struct thaw_tokenizer *t, const int32_t *ids, size_t n, int skip,
                        int at_start, int stream, struct dec_state *d, int *held)
{
    struct tlist *in = &d->a, *out = &d->b;
    int rc = 0, fused = 0;
    *held = 0;
    in->n = 0;
    in->b.len = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0)
            return THAW_FAIL(THAW_EINVAL, "tokenizer: negative id %d", id);
        if (id >= t->n_ids || !t->id_str[id] || (skip && t->id_special[id]))
            continue;
        rc = tl_new(in, t->id_str[id], t->id_len[id]);
    }
    for (size_t k = 0; k < t->n_dec && !rc; k++) {
        const struct dec_op *op = &t->dec[k];
        out->n = 0;
        out->b.len = 0;
        switch (op->kind) {
        case DEC_REPLACE:
            for (size_t i = 0; i < in->n && !rc; i++) {
                size_t tn, j = 0;
                const char *s = tl_tok(in, i, &tn);
                rc = tl_new(out, "", 0);
                while (j < tn && !rc) {
                    /* Copy up to the next occurrence, then the replacement. */
                    const char *hit = memmem(s + j, tn - j, op->a, op->a_len);
                    size_t upto = hit ? (size_t)(hit - s) : tn;
                    rc = tl_add(out, s + j, upto - j);
                    if (!rc && hit)
                        rc = tl_add(out, op->b, op->b_len);
                    j = hit ? upto + op->a_len : tn;
                }
            }
            break;
        case DEC_BYTEFALLBACK: {
            size_t i = 0;
            while (i < in->n && !rc) {
                size_t tn;
                unsigned v;
                const char *s = tl_tok(in, i, &tn);
                if (!is_byte_tok(s, tn, &v)) {
                    rc = tl_new(out, s, tn);
                    i++;
                    continue;
                }
                size_t j = i;
                char bytes[64];
                size_t nb = 0, total = 0;
                while (j < in->n && is_byte_tok(tl_tok(in, j, &tn), tn, &v))
                    j++;
                if (j == in->n && stream) {
                    *held = 1;
                    i = j;
                    break;
                }
                /* Valid as a whole: one string; else one U+FFFD per byte. */
                total = j - i;
                int valid = 1;
                rc = tl_new(out, "", 0);
                size_t mark = out->b.len;
                for (size_t q = i; q < j && !rc; q++) {
                    s = tl_tok(in, q, &tn);
                    (void)is_byte_tok(s, tn, &v);
                    bytes[nb++] = (char)v;
                    if (nb == sizeof bytes || q + 1 == j) {
                        rc = tl_add(out, bytes, nb);
                        nb = 0;
                    }
                }
                if (!rc) {
                    valid = eng_utf8_valid_prefix(out->b.p + mark, out->b.len - mark) ==
                            out->b.len - mark;
                    if (!valid) {
                        out->b.len = mark;
                        out->end[out->n - 1] = mark;
                        for (size_t q = 0; q < total && !rc; q++)
                            rc = q ? tl_new(out, FFFD, 3) : tl_add(out, FFFD, 3);
                    }
                }
                i = j;
            }
            break;
        }
        case DEC_FUSE:
            rc = tl_new(out, in->b.p, in->b.len);
            fused = 1;
            break;
        case DEC_STRIP:
            for (size_t i = 0; i < in->n && !rc; i++) {
                size_t tn, a = 0, z;
                const char *s = tl_tok(in, i, &tn);
                z = tn;
                /* A fused string that continues earlier text is not a
                 * token start. */
                if (!(i == 0 && fused && !at_start)) {
                    for (size_t c = 0; c < op->start && a + op->ch_len <= tn &&
                                       memcmp(s + a, op->ch, op->ch_len) == 0;
                         c++)
                        a += op->ch_len;
                }
                for (size_t c = 0; c < op->stop && z >= a + op->ch_len &&
                                   memcmp(s + z - op->ch_len, op->ch, op->ch_len) == 0;
                     c++)
                    z -= op->ch_len;
                rc = tl_new(out, s + a, z - a);
            }
            break;
        case DEC_METASPACE:
            for (size_t i = 0; i < in->n && !rc; i++) {
                size_t tn, j = 0;
                const char *s = tl_tok(in, i, &tn);
                int drop = i == 0 && at_start && op->scheme != PREPEND_NEVER;
                rc = tl_new(out, "", 0);
                while (j < tn && !rc) {
                    if (tn - j >= op->ch_len && memcmp(s + j, op->ch, op->ch_len) == 0) {
                        if (!drop)
                            rc = tl_add(out, " ", 1);
                        j += op->ch_len;
                    } else {
                        rc = tl_add(out, s + j, 1);
                        j++;
                    }
                }
            }
            break;
        case DEC_BYTELEVEL: {
            /* Per token: its chars mapped back to bytes when all map, else
             * its raw bytes; then lossy UTF-8 over the whole. */
            struct buf *raw = &d->raw;
            raw->len = 0;
            for (size_t i = 0; i < in->n && !rc; i++) {
                size_t tn, j = 0, mark = raw->len;
                const char *s = tl_tok(in, i, &tn);
                int all = 1;
                while (j < tn && all && !rc) {
                    size_t cl = utf8_len((unsigned char)s[j]);
                    uint32_t cp = utf8_cp((const unsigned char *)s + j, cl);
                    all = cp < 0x144 && t->bl_inv[cp] >= 0;
                    if (all) {
                        char c = (char)t->bl_inv[cp];
                        rc = buf_put(raw, &c, 1);
                    }
                    j += cl;
                }
                if (!rc && !all) {
                    raw->len = mark;
                    rc = buf_put(raw, s, tn);
                }
            }
            if (!rc)
                rc = tl_new(out, "", 0);
            if (!rc)
                rc = lossy_put(out, raw->p, raw->len, stream, held);
            break;
        }
        }
        struct tlist tmp = *in;
        *in = *out;
        *out = tmp;
    }
    if (rc)
        return rc;
    if (!t->has_decoder) {
        /* No decoder: tokens joined by single spaces. */
        out->n = 0;
        out->b.len = 0;
        rc = tl_new(out, "", 0);
        for (size_t i = 0; i < in->n && !rc; i++) {
            size_t tn;
            const char *s = tl_tok(in, i, &tn);
            if (i > 0 || !at_start)
                rc = tl_add(out, " ", 1);
            if (!rc)
                rc = tl_add(out, s, tn);
        }
        struct tlist tmp = *in;
        *in = *out;
        *out = tmp;
    }
    if (!rc && d->a.n == 0)
        rc = buf_put(&d->a.b, "", 0); /* so the buffer exists */
    return rc;
}

int thaw_tok_decode(const struct thaw_tokenizer *tok, const int32_t *ids, size_t n,
                    int skip_special, char **text, size_t *len)
{
    if (!tok || (!ids && n) || !text)
        return THAW_FAIL(THAW_EINVAL, "thaw_tok_decode: NULL argument");
    if (n > TOK_MAX_IDS)
        return THAW_FAIL(THAW_ELIMIT, "tokenizer: %zu ids exceed %u", n, TOK_MAX_IDS);
    struct dec_state d;
    memset(&d, 0, sizeof d);
    int held;
    int rc = decode_chain(tok, ids, n, skip_special, 1, 0, &d, &held);
    if (rc) {
        dec_state_free(&d);
        return rc;
    }
    char *s = d.a.b.p;
    if (!s && !(s = thaw_malloc(1))) {
        dec_state_free(&d);
        return -ENOMEM;
    }
    s[d.a.b.len] = '\0';
    *text = s;
    if (len)
        *len = d.a.b.len;
    d.a.b.p = NULL;
    dec_state_free(&d);
    return 0;
}

/* ================================================================ streaming */

/*
 * Re-decode a window of ids each push: ids[w..n) decoded (with the
 * "continues earlier text" rules when w > 0) gives the text after what
 * ids[0..w) decoded to. Only text later ids cannot change is emitted; the
 * window moves to n once nothing is held back and some text has been
 * emitted (so first-token rules — Llama 2's leading-space Strip, Metaspace —
 * are settled).
 */
struct thaw_detok {
    const struct thaw_tokenizer *tok;
    int skip;
    struct ivec ids;
    size_t w;       /* window start in ids */
    size_t emitted; /* bytes of the window's text already returned */
    size_t total;   /* bytes returned so far */
    struct dec_state d;
    struct buf piece; /* what the last push/flush returned */
};

int thaw_detok_create(const struct thaw_tokenizer *tok, int skip_special, struct thaw_detok **out)
{
    if (!tok || !out)
        return THAW_FAIL(THAW_EINVAL, "thaw_detok_create: NULL argument");
    struct thaw_detok *d = thaw_calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->tok = tok;
    d->skip = skip_special;
    *out = d;
    return 0;
}

void thaw_detok_destroy(struct thaw_detok *d)
{
    if (!d)
        return;
    thaw_free(d->ids.p);
    dec_state_free(&d->d);
    thaw_free(d->piece.p);
    thaw_free(d);
}

#define DETOK_LONG_WINDOW 16 /* ids held back before looking for a split */

/* Whether id is a "<0xAB>" byte token (ByteFallback groups them). */
static int id_is_byte(const struct thaw_tokenizer *t, int32_t id)
{
    unsigned v;
    return id >= 0 && id < t->n_ids && t->id_str[id] &&
           is_byte_tok(t->id_str[id], t->id_len[id], &v);
}

/* Whether id adds a token string to the decoder's list. */
static int id_counts(const struct thaw_tokenizer *t, int32_t id, int skip)
{
    return id >= 0 && id < t->n_ids && t->id_str[id] && !(skip && t->id_special[id]);
}

/*
 * The window only moves when nothing is held back, so a stream that keeps
 * ending in an incomplete UTF-8 sequence (stray lead bytes) or in a run of
 * byte-fallback tokens would re-decode a growing window. Then look for a
 * split m where decoding ids[w..m) and ids[m..n) apart gives the same text
 * as together, with ids[m..n) adding text: the ids from m on have decided
 * everything before m for good. With ByteFallback the only candidate is the
 * start of the trailing byte-token run (a later byte token could still
 * invalidate a group that spans m); otherwise the last few ids are tried.
 */
static int detok_split(struct thaw_detok *d)
{
    const struct thaw_tokenizer *t = d->tok;
    const int32_t *ids = d->ids.p;
    size_t n = d->ids.n, w = d->w, lo = n > w + 4 ? n - 4 : w + 1, hi = n - 1;
    for (size_t k = 0; k < t->n_dec; k++) {
        if (t->dec[k].kind != DEC_BYTEFALLBACK)
            continue;
        size_t r = n;
        while (r > w && (id_is_byte(t, ids[r - 1]) || !id_counts(t, ids[r - 1], d->skip)))
            r--;
        while (r < n && !id_counts(t, ids[r], d->skip))
            r++; /* the run starts at its first byte token */
        if (r <= w || r >= n)
            return 0;
        lo = hi = r;
        break;
    }
    struct dec_state a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int held, rc = decode_chain(t, ids + w, n - w, d->skip, w == 0, 0, &a, &held);
    for (size_t m = hi; !rc && m >= lo && m > w; m--) {
        rc = decode_chain(t, ids + m, n - m, d->skip, 0, 0, &b, &held);
        size_t sl = b.a.b.len;
        if (rc || sl == 0 || sl >= a.a.b.len)
            continue;
        size_t pl = a.a.b.len - sl; /* what ids[w..m) must decode to */
        if (pl > d->emitted || memcmp(a.a.b.p + pl, b.a.b.p, sl) != 0)
            continue;
        rc = decode_chain(t, ids + w, m - w, d->skip, w == 0, 0, &b, &held);
        if (rc || b.a.b.len != pl || (pl && memcmp(a.a.b.p, b.a.b.p, pl) != 0) ||
            (pl == 0 && w == 0))
            continue;
        d->w = m;
        d->emitted -= pl;
        break;
    }
    dec_state_free(&a);
    dec_state_free(&b);
    return rc;
}

static int detok_step(struct thaw_detok *d, int final, const char **piece, size_t *len)
{
    int held;
    const int32_t *ids = d->ids.p ? d->ids.p + d->w : NULL;
    int rc = decode_chain(d->tok, ids, d->ids.n - d->w, d->skip, d->w == 0, !final, &d->d, &held);
    if (rc)
        return rc;
    const char *s = d->d.a.b.p ? d->d.a.b.p : "";
    size_t n = d->d.a.b.len;
    d->piece.len = 0;
    if (n > d->emitted && (rc = buf_put(&d->piece, s + d->emitted, n - d->emitted)))
        return rc;
    if (n > d->emitted) {
        d->total += n - d->emitted;
        d->emitted = n;
    }
    if ((!held && d->total > 0) || final) {
        d->w = d->ids.n;
        d->emitted = 0;
    } else if (held && d->ids.n - d->w > DETOK_LONG_WINDOW && (rc = detok_split(d))) {
        return rc;
    }
    if (!d->piece.p && (rc = buf_put(&d->piece, "", 0)))
        return rc;
    d->piece.p[d->piece.len] = '\0';
    *piece = d->piece.p;
    *len = d->piece.len;
    return 0;
}

int thaw_detok_push(struct thaw_detok *d, int32_t id, const char **piece, size_t *len)
{
    if (!d || !piece || !len)
        return THAW_FAIL(THAW_EINVAL, "thaw_detok_push: NULL argument");
    if (id < 0)
        return THAW_FAIL(THAW_EINVAL, "tokenizer: negative id %d", id);
    if (d->ids.n >= TOK_MAX_IDS)
        return THAW_FAIL(THAW_ELIMIT, "detokenizer: more than %u ids", TOK_MAX_IDS);
    int rc = ivec_push(&d->ids, id);
    if (rc)
        return rc;
    rc = detok_step(d, 0, piece, len);
    if (rc)
        d->ids.n--; /* the id was not taken */
    return rc;
}

int thaw_detok_flush(struct thaw_detok *d, const char **piece, size_t *len)
{
    if (!d || !piece || !len)
        return THAW_FAIL(THAW_EINVAL, "thaw_detok_flush: NULL argument");
    return detok_step(d, 1, piece, len);
}

/* ================================================================ accessors */

size_t thaw_tok_n_tokens(const struct thaw_tokenizer *tok)
{
    return tok ? tok->n_tokens : 0;
}

int32_t thaw_tok_bos(const struct thaw_tokenizer *tok)
{
    return tok ? tok->bos : -1;
}

int32_t thaw_tok_eos(const struct thaw_tokenizer *tok)
{
    return tok ? tok->eos : -1;
}

const char *thaw_tok_token(const struct thaw_tokenizer *tok, int32_t id)
{
    if (!tok || id < 0 || id >= tok->n_ids)
        return NULL;
    return tok->id_str[id];
}

int thaw_tok_is_special(const struct thaw_tokenizer *tok, int32_t id)
{
    if (!tok || id < 0 || id >= tok->n_ids)
        return 0;
    return tok->id_special[id];
}

size_t thaw_tok_stop_ids(const struct thaw_tokenizer *tok, int32_t *out, size_t cap)
{
    static const char *marks[] = { "<|im_end|>",    "<|eot_id|>", "<|end_of_text|>",
                                   "<|endoftext|>", "</s>",       "<|end|>" };
    int32_t found[1 + sizeof marks / sizeof *marks];
    size_t n = 0;
    if (!tok)
        return 0;
    if (tok->eos >= 0)
        found[n++] = tok->eos;
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++) {
        /* Only added tokens: "</s>" in a byte-level vocabulary (Qwen) is
         * ordinary text, not an end marker. */
        int32_t id = -1;
        for (size_t k = 0; k < tok->n_added && id < 0; k++) {
            if (strcmp(tok->added[k].content, marks[i]) == 0)
                id = tok->added[k].id;
        }
        int dup = id < 0;
        for (size_t k = 0; k < n && !dup; k++)
            dup = found[k] == id;
        if (!dup)
            found[n++] = id;
    }
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = found[i];
    return n;
}

const char *eng_tok_chat_template(const struct thaw_tokenizer *tok)
{
    return tok ? tok->chat_template : NULL;
}

const char *eng_tok_bos_text(const struct thaw_tokenizer *tok)
{
    return tok ? tok->bos_text : NULL;
}

const char *eng_tok_eos_text(const struct thaw_tokenizer *tok)
{
    return tok ? tok->eos_text : NULL;
}
