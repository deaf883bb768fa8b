/*
 * fuzz_tokenizer.c - libFuzzer target for engine/tokenizer.c: the input is
 * text to encode with two small tokenizers built once at start-up (GPT-2
 * style byte-level BPE with every byte in the vocabulary, merges and added
 * tokens; SentencePiece style with Prepend/Replace normalizer, byte fallback
 * and the Llama 2 decoder chain), and the same bytes read as ids to decode.
 * Checked promises: invalid UTF-8 is THAW_EINVAL and nothing else fails;
 * ids are in range; byte-level decode(encode(x)) == x; the streaming
 * detokenizer's pieces are whole UTF-8 and add up to thaw_tok_decode.
 * Built by tests/fuzz/CMakeLists.txt, run by scripts/fuzz.sh.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine/thaw_engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

#define FUZZ_CHECK(c) \
    do { \
        if (!(c)) \
            __builtin_trap(); \
    } while (0)

/* ---------------------------------------------------------------- tokenizers */

static char json_bl[64 << 10], json_sp[64 << 10];

static size_t put_str(char *out, size_t at, const char *s)
{
    size_t n = strlen(s);
    memcpy(out + at, s, n);
    return at + n;
}

/* GPT-2 bytes_to_unicode of byte b, UTF-8, JSON-escaped where needed. */
static void byte_char(int b, char out[8])
{
    int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    unsigned cp = (unsigned)b;
    if (!keep) {
        int k = 0;
        for (int x = 0; x < b; x++) {
            if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE))
                k++;
        }
        cp = 0x100u + (unsigned)k;
    }
    if (cp == '"' || cp == '\\') {
        snprintf(out, 8, "\\%c", (char)cp);
    } else if (cp < 0x80) {
        snprintf(out, 8, "%c", (char)cp);
    } else {
        snprintf(out, 8, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
    }
}

static void build_json(void)
{
    char c[8], line[128];
    size_t at = 0;
    /* Byte-level: ids 0..255 are the byte chars, then merged tokens. */
    at = put_str(json_bl, at,
                 "{\"added_tokens\":["
                 "{\"id\":300,\"content\":\"<|im_end|>\",\"special\":true,\"normalized\":false},"
                 "{\"id\":301,\"content\":\"<tool>\",\"special\":false,"
                 "\"normalized\":false}],"
                 "\"normalizer\":{\"type\":\"NFC\"},"
                 "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                 "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|"
                 "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+"
                 "[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                 "\"behavior\":\"Isolated\",\"invert\":false},"
                 "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
                 "\"post_processor\":{\"type\":\"ByteLevel\"},"
                 "\"decoder\":{\"type\":\"ByteLevel\"},"
                 "\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        byte_char(b, c);
        snprintf(line, sizeof line, "%s\"%s\":%d", b ? "," : "", c, b);
        at = put_str(json_bl, at, line);
    }
    at = put_str(json_bl, at,
                 ",\"\xc4\xa0t\":256,\"he\":257,\"\xc4\xa0the\":258,\"in\":259,"
                 "\"\xc4\xa0\xc4\xa0\":260},"
                 "\"merges\":[\"\xc4\xa0 t\",[\"h\",\"e\"],\"\xc4\xa0t he\",\"i n\","
                 "\"\xc4\xa0 \xc4\xa0\"]}}");
    json_bl[at] = '\0';

    /* SentencePiece: <unk> <s> </s>, <0x00>..<0xFF> at 3.., then pieces. */
    at = 0;
    at = put_str(
        json_sp, at,
        "{\"added_tokens\":["
        "{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
        "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false}],"
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
        "{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},"
        "\"pre_tokenizer\":null,"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
        "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\","
        "\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],"
        "\"tokens\":[\"<s>\"]}}},"
        "\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},"
        "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
        "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,"
        "\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int b = 0; b < 256; b++) {
        snprintf(line, sizeof line, ",\"<0x%02X>\":%d", b, 3 + b);
        at = put_str(json_sp, at, line);
    }
    at = put_str(json_sp, at,
                 ",\"\xe2\x96\x81\":259,\"a\":260,\"b\":261,\"ab\":262,"
                 "\"\xe2\x96\x81"
                 "ab\":263,\"\xc3\xa9\":264},"
                 "\"merges\":[\"a b\",\"\xe2\x96\x81 ab\"]}}");
    json_sp[at] = '\0';
}

static struct thaw_tokenizer *tok_bl, *tok_sp;

static void init(void)
{
    if (tok_bl)
        return;
    build_json();
    if (thaw_tok_load(json_bl, strlen(json_bl), NULL, 0, &tok_bl) != 0 ||
        thaw_tok_load(json_sp, strlen(json_sp), NULL, 0, &tok_sp) != 0) {
        fprintf(stderr, "fuzz_tokenizer: built-in tokenizer failed to load: %s\n", thaw_errmsg());
        __builtin_trap();
    }
}

/* ---------------------------------------------------------------- checks */

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF),
 * written independently of the tokenizer's validator. */
static int whole_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n)
            return 0;
        uint32_t cp = k == 1 ? c : k == 2 ? (c & 0x1Fu) : k == 3 ? (c & 0x0Fu) : (c & 0x07u);
        for (size_t j = 1; j < k; j++) {
            if (((unsigned char)s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3Fu);
        }
        static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

/* Stream ids through a detokenizer; the pieces must add up to decode. */
static void check_stream(const struct thaw_tokenizer *t, const int32_t *ids, size_t n, int skip)
{
    char *want = NULL;
    size_t wl = 0;
    if (thaw_tok_decode(t, ids, n, skip, &want, &wl) != 0)
        return; /* a negative id: checked by the caller */
    struct thaw_detok *d = NULL;
    FUZZ_CHECK(thaw_detok_create(t, skip, &d) == 0);
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *p = NULL;
        size_t pl = 0;
        int rc = i < n ? thaw_detok_push(d, ids[i], &p, &pl) : thaw_detok_flush(d, &p, &pl);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(whole_utf8(p, pl));
        FUZZ_CHECK(at + pl <= wl && memcmp(want + at, p, pl) == 0);
        at += pl;
    }
    FUZZ_CHECK(at == wl);
    thaw_detok_destroy(d);
    thaw_free(want);
}

static void fuzz_text(const struct thaw_tokenizer *t, const uint8_t *data, size_t len,
                      int roundtrip)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = thaw_tok_encode(t, (const char *)data, len, 1, &ids, &n);
    FUZZ_CHECK(rc == 0 || rc == THAW_EINVAL);
    FUZZ_CHECK((rc == 0) == whole_utf8((const char *)data, len));
    if (rc)
        return;
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < thaw_tok_n_tokens(t) + 64 &&
                   thaw_tok_token(t, ids[i]) != NULL);
    char *text = NULL;
    size_t tl = 0;
    FUZZ_CHECK(thaw_tok_decode(t, ids, n, 0, &text, &tl) == 0);
    FUZZ_CHECK(strlen(text) <= tl && whole_utf8(text, tl));
    /* Byte-level with every byte in the vocabulary loses nothing, except
     * that NFC may recompose the text. */
    if (roundtrip && !(tl == len && memcmp(text, data, len) == 0)) {
        int ascii = 1;
        for (size_t i = 0; i < len && ascii; i++)
            ascii = data[i] < 0x80;
        FUZZ_CHECK(!ascii);
    }
    thaw_free(text);
    check_stream(t, ids, n, 0);
    check_stream(t, ids, n, 1);
    thaw_free(ids);
}

/* The input read as little-endian 16-bit ids (some past the vocabulary,
 * which decode to nothing), decoded and streamed. */
static void fuzz_ids(const struct thaw_tokenizer *t, const uint8_t *data, size_t len)
{
    size_t n = len / 2;
    int32_t ids[512];
    if (n > 512)
        n = 512;
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)(data[2 * i] | (data[2 * i + 1] & 0x01) << 8);
    check_stream(t, ids, n, 0);
    check_stream(t, ids, n, 1);
    if (n) {
        char *text = NULL;
        ids[n - 1] = -1 - ids[n - 1];
        FUZZ_CHECK(thaw_tok_decode(t, ids, n, 0, &text, NULL) == THAW_EINVAL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    init();
    if (len > (64u << 10))
        return 0;
    fuzz_text(tok_bl, data, len, 1);
    fuzz_text(tok_sp, data, len, 0);
    fuzz_ids(tok_bl, data, len);
    fuzz_ids(tok_sp, data, len);
    return 0;
}
