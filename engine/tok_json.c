/*
 * tok_json.c - a fast path through tokenizer.json's two big members.
 *
 * model.vocab (an object of ~50k-150k token -> id) and model.merges (as many
 * "a b" strings or [a, b] pairs) are 95% of a tokenizer.json. Parsed by
 * jansson they cost ~50 ms of CPU for SmolLM2's 3.5 MB (perf: 57% jansson,
 * 25% malloc/free of its ~100k values), all on the cold-start path of
 * thaw-runtime. Here they are located by a strict scan of the text and read
 * straight into the tokenizer's tables, while jansson parses the rest (the
 * text with those two values replaced by {} and []).
 *
 * The scan is strict JSON (RFC 8259, as jansson reads it with
 * JSON_ALLOW_NUL: UTF-8 checked, \u escapes with surrogate pairs, \u0000
 * allowed), except that the model object and the two values are first only
 * bracket-matched: the model's other members are then checked by the walk
 * of the model object, and vocab and merges by their strict readers, which
 * must end exactly where the bracket match did. Anything it does not expect - a key with an escape or twice at
 * the levels it walks, a number that is not a plain integer, any syntax
 * error - makes it give up, and tokenizer.c parses the whole text with
 * jansson as before, with jansson's error messages. So the fast path can
 * only ever agree with the slow one; tests/fuzz/fuzz_tok_json.c checks that.
 */
#include <string.h>

#include "engine/tok_int.h"

#define MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

static void ws(const char *s, size_t n, size_t *i)
{
    while (*i < n && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\n' || s[*i] == '\r'))
        (*i)++;
}

static int hex4(const char *s, size_t n, size_t i, unsigned *out)
{
    if (i + 4 > n)
        return -1;
    unsigned v = 0;
    for (size_t k = i; k < i + 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * The string at s[*i] == '"': checked, *i moved past its closing quote.
 * out (NULL: only check) receives the decoded bytes, at most the raw length,
 * and *out_n their count; *escaped is set when the raw text had a backslash.
 */
static int string(const char *s, size_t n, size_t *i, char *out, size_t *out_n, int *escaped)
{
    size_t k = *i + 1, o = 0;
    if (escaped)
        *escaped = 0;
    for (;;) {
        /* The run up to the next quote, backslash or control byte. */
        size_t run = k;
        while (k < n && s[k] != '"' && s[k] != '\\' && (unsigned char)s[k] >= 0x20)
            k++;
        if (k > run) {
            if (eng_utf8_valid_prefix(s + run, k - run) != k - run) {
                /* A multi-byte character may straddle nothing here: the stop
                 * bytes are ASCII, so an invalid prefix is invalid text. */
                return -1;
            }
            if (out)
                memcpy(out + o, s + run, k - run);
            o += k - run;
        }
        if (k >= n || (unsigned char)s[k] < 0x20)
            return -1;
        if (s[k] == '"')
            break;
        /* A backslash escape. */
        if (escaped)
            *escaped = 1;
        if (k + 1 >= n)
            return -1;
        char e = s[k + 1];
        char c;
        switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(s, n, k + 2, &cp))
                return -1;
            k += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1; /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (k + 1 >= n || s[k] != '\\' || s[k + 1] != 'u' || hex4(s, n, k + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                k += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* At most 4 bytes out for at least 6 in: never past the raw length. */
            char tmp[4];
            size_t m = put_utf8(tmp, cp);
            if (out)
                memcpy(out + o, tmp, m);
            o += m;
            continue;
        }
        default:
            return -1;
        }
        if (out)
            out[o] = c;
        o++;
        k += 2;
    }
    *i = k + 1;
    if (out_n)
        *out_n = o;
    return 0;
}

/* A JSON number at s[*i]; *is_int when it has no fraction or exponent, and
 * then *v its value when it fits 0..INT32_MAX (else *v = -1). */
static int number(const char *s, size_t n, size_t *i, int *is_int, int64_t *v)
{
    size_t k = *i;
    int neg = 0;
    *is_int = 1;
    *v = 0;
    if (k < n && s[k] == '-') {
        neg = 1;
        k++;
    }
    if (k >= n || s[k] < '0' || s[k] > '9')
        return -1;
    if (s[k] == '0') {
        k++;
    } else {
        while (k < n && s[k] >= '0' && s[k] <= '9') {
            if (*v >= 0)
                *v = *v > (INT32_MAX - (s[k] - '0')) / 10 ? -1 : *v * 10 + (s[k] - '0');
            k++;
        }
    }
    if (k < n && s[k] == '.') {
        *is_int = 0;
        k++;
        if (k >= n || s[k] < '0' || s[k] > '9')
            return -1;
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    }
    if (k < n && (s[k] == 'e' || s[k] == 'E')) {
        *is_int = 0;
        k++;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k >= n || s[k] < '0' || s[k] > '9')
            return -1;
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
    }
    if (neg)
        *v = -1;
    *i = k;
    return 0;
}

static int literal(const char *s, size_t n, size_t *i, const char *word)
{
    size_t w = strlen(word);
    if (*i + w > n || memcmp(s + *i, word, w) != 0)
        return -1;
    *i += w;
    return 0;
}

/* Any value at s[*i] (after whitespace), checked and skipped. */
static int value(const char *s, size_t n, size_t *i, int depth)
{
    ws(s, n, i);
    if (*i >= n)
        return -1;
    char c = s[*i];
    if (c == '"')
        return string(s, n, i, NULL, NULL, NULL);
    if (c == '-' || (c >= '0' && c <= '9')) {
        int is_int;
        int64_t v;
        return number(s, n, i, &is_int, &v);
    }
    if (c == 't')
        return literal(s, n, i, "true");
    if (c == 'f')
        return literal(s, n, i, "false");
    if (c == 'n')
        return literal(s, n, i, "null");
    if (c != '{' && c != '[')
        return -1;
    if (depth >= MAX_DEPTH)
        return -1;
    char close = c == '{' ? '}' : ']';
    (*i)++;
    ws(s, n, i);
    if (*i < n && s[*i] == close) {
        (*i)++;
        return 0;
    }
    for (;;) {
        if (c == '{') {
            ws(s, n, i);
            if (*i >= n || s[*i] != '"' || string(s, n, i, NULL, NULL, NULL))
                return -1;
            ws(s, n, i);
            if (*i >= n || s[*i] != ':')
                return -1;
            (*i)++;
        }
        if (value(s, n, i, depth + 1))
            return -1;
        ws(s, n, i);
        if (*i >= n)
            return -1;
        if (s[*i] == close) {
            (*i)++;
            return 0;
        }
        if (s[*i] != ',')
            return -1;
        (*i)++;
    }
}

/*
 * Skip the object or array at s[*i] by its brackets alone, stepping over
 * strings (and their escapes) without checking them: the values this is
 * used for (vocab, merges) are then read by a strict parser that must end
 * exactly where this did, so a wrong end only means the slow path.
 */
static int skip_brackets(const char *s, size_t n, size_t *i)
{
    size_t k = *i, depth = 0;
    while (k < n) {
        char c = s[k];
        if (c == '"') {
            k++;
            for (;;) {
                const char *q = memchr(s + k, '"', n - k);
                if (!q)
                    return -1;
                size_t at = (size_t)(q - s), bs = 0;
                while (at - bs > k && s[at - bs - 1] == '\\')
                    bs++;
                k = at + 1;
                if (bs % 2 == 0)
                    break; /* not escaped */
            }
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > MAX_DEPTH)
                return -1;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return -1;
            if (--depth == 0) {
                *i = k + 1;
                return 0;
            }
        }
        k++;
    }
    return -1;
}

/* The members of the object at s[*i] == '{': for each, the raw key (no
 * escapes allowed: -1) and the value's span. want[] names the keys to find
 * (each at most once, else -1); spans[] receive them ({0, 0}: absent).
 * lazy: a wanted object or array value is only bracket-matched
 * (skip_brackets), for a strict reader to check later. */
static int members(const char *s, size_t n, size_t *i, int depth, const char *const *want,
                   size_t n_want, struct tokj_span *spans, int lazy)
{
    for (size_t w = 0; w < n_want; w++)
        spans[w] = (struct tokj_span){ 0, 0 };
    (*i)++;
    ws(s, n, i);
    if (*i < n && s[*i] == '}') {
        (*i)++;
        return 0;
    }
    for (;;) {
        ws(s, n, i);
        if (*i >= n || s[*i] != '"')
            return -1;
        size_t k0 = *i + 1;
        int esc;
        if (string(s, n, i, NULL, NULL, &esc) || esc)
            return -1;
        size_t kn = *i - 1 - k0;
        ws(s, n, i);
        if (*i >= n || s[*i] != ':')
            return -1;
        (*i)++;
        ws(s, n, i);
        size_t v0 = *i;
        int wanted = -1;
        for (size_t w = 0; w < n_want; w++)
            if (strlen(want[w]) == kn && memcmp(s + k0, want[w], kn) == 0)
                wanted = (int)w;
        if (lazy && wanted >= 0 && *i < n && (s[*i] == '{' || s[*i] == '[')) {
            if (skip_brackets(s, n, i))
                return -1;
        } else if (value(s, n, i, depth + 1)) {
            return -1;
        }
        if (wanted >= 0) {
            if (spans[wanted].end)
                return -1; /* twice: jansson keeps the last; leave it to jansson */
            spans[wanted] = (struct tokj_span){ v0, *i };
        }
        ws(s, n, i);
        if (*i >= n)
            return -1;
        if (s[*i] == '}') {
            (*i)++;
            return 0;
        }
        if (s[*i] != ',')
            return -1;
        (*i)++;
    }
}

int tokj_find(const char *s, size_t n, struct tokj_span *vocab, struct tokj_span *merges)
{
    static const char *const top_keys[] = { "model" };
    static const char *const model_keys[] = { "vocab", "merges" };
    struct tokj_span model, in_model[2];
    size_t i = 0;
    ws(s, n, &i);
    /* The model object is bracket-matched here, then walked below. */
    if (i >= n || s[i] != '{' || members(s, n, &i, 0, top_keys, 1, &model, 1))
        return -1;
    ws(s, n, &i);
    if (i != n || !model.end || s[model.start] != '{')
        return -1;
    size_t j = model.start;
    if (members(s, n, &j, 1, model_keys, 2, in_model, 1) || j != model.end)
        return -1;
    *vocab = in_model[0];
    *merges = in_model[1];
    if (vocab->end && s[vocab->start] != '{')
        vocab->start = vocab->end = 0; /* not an object: jansson reports it */
    if (merges->end && s[merges->start] != '[')
        merges->start = merges->end = 0;
    return vocab->end || merges->end ? 0 : -1;
}

int tokj_vocab_each(const char *s, struct tokj_span sp, char *scratch,
                    int (*fn)(void *arg, const char *key, size_t key_n, int64_t id), void *arg)
{
    size_t i = sp.start + 1, n = sp.end;
    ws(s, n, &i);
    if (i < n && s[i] == '}')
        return i + 1 == n ? 0 : -1;
    for (;;) {
        ws(s, n, &i);
        size_t kn;
        if (i >= n || s[i] != '"' || string(s, n, &i, scratch, &kn, NULL))
            return -1;
        if (memchr(scratch, 0, kn))
            return -1; /* jansson refuses NUL in an object key */
        ws(s, n, &i);
        if (i >= n || s[i] != ':')
            return -1;
        i++;
        ws(s, n, &i);
        int is_int;
        int64_t id;
        if (number(s, n, &i, &is_int, &id) || !is_int || id < 0)
            return -1;
        int rc = fn(arg, scratch, kn, id);
        if (rc)
            return rc;
        ws(s, n, &i);
        if (i >= n)
            return -1;
        if (s[i] == '}')
            return i + 1 == n ? 0 : -1;
        if (s[i] != ',')
            return -1;
        i++;
    }
}

int tokj_merges_each(const char *s, struct tokj_span sp, char *scratch, size_t *count,
                     int (*fn)(void *arg, size_t idx, const char *a, size_t an, const char *b,
                               size_t bn, int pair),
                     void *arg)
{
    size_t i = sp.start + 1, n = sp.end, idx = 0;
    ws(s, n, &i);
    if (i < n && s[i] == ']') {
        *count = 0;
        return i + 1 == n ? 0 : -1;
    }
    for (;;) {
        ws(s, n, &i);
        if (i >= n)
            return -1;
        int rc;
        if (s[i] == '"') {
            size_t mn;
            if (string(s, n, &i, scratch, &mn, NULL))
                return -1;
            rc = fn ? fn(arg, idx, scratch, mn, NULL, 0, 0) : 0;
        } else if (s[i] == '[') {
            size_t an, bn;
            i++;
            ws(s, n, &i);
            if (i >= n || s[i] != '"' || string(s, n, &i, scratch, &an, NULL))
                return -1;
            ws(s, n, &i);
            if (i >= n || s[i] != ',')
                return -1;
            i++;
            ws(s, n, &i);
            /* The second string goes after the first in scratch: the two
             * decoded lengths together never exceed the span's length. */
            if (i >= n || s[i] != '"' || string(s, n, &i, scratch + an, &bn, NULL))
                return -1;
            ws(s, n, &i);
            if (i >= n || s[i] != ']')
                return -1;
            i++;
            rc = fn ? fn(arg, idx, scratch, an, scratch + an, bn, 1) : 0;
        } else {
            return -1; /* neither "a b" nor [a, b]: jansson names it */
        }
        if (rc)
            return rc;
        idx++;
        ws(s, n, &i);
        if (i >= n)
            return -1;
        if (s[i] == ']') {
            *count = idx;
            return i + 1 == n ? 0 : -1;
        }
        if (s[i] != ',')
            return -1;
        i++;
    }
}
