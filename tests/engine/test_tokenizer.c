/*
 * test_tokenizer.c - engine/tokenizer.c and engine/chat.c against HF goldens
 * (tests/fixtures/tokenizers/goldens.json, written by make_tok_goldens.py
 * from the tokenizers/transformers libraries): encode ids, decode texts,
 * the streaming detokenizer, chat renders; plus engine.md §6 golden ids,
 * load errors, bad input, allocation failures and an encode speed line.
 * Shared tokenizers come from $THAW_SOURCE_DIR/../shared (SKIP without it).
 */
#include <errno.h>
#include <jansson.h>

#include "engine/thaw_engine.h"
#include "engine/tok_int.h"
#include "tests/thaw_test.h"

/* ---------------------------------------------------------------- helpers */

static const char *src_dir(void)
{
    const char *s = getenv("THAW_SOURCE_DIR");
    if (!s || !s[0])
        SKIP("THAW_SOURCE_DIR is not set");
    return s;
}

/* $THAW_SOURCE_DIR/../shared/data/tokenizers/<name>, or SKIP. */
static void shared_dir(const char *name, char *out, size_t n)
{
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/../shared", src_dir());
    if (access(probe, R_OK) != 0) {
        char why[4200];
        snprintf(why, sizeof why, "%s missing (shared tokenizer data)", probe);
        SKIP(why);
    }
    snprintf(out, n, "%s/../shared/data/tokenizers/%s", src_dir(), name);
}

static struct thaw_tokenizer *load_named(const char *name)
{
    char dir[4096];
    if (strcmp(name, "smollm2") == 0)
        snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizers/smollm2", src_dir());
    else
        shared_dir(name, dir, sizeof dir);
    struct thaw_tokenizer *t = NULL;
    double t0 = thaw_now_s();
    CHECK_OK(thaw_tok_load_dir(dir, &t));
    fprintf(stderr, "  loaded %s in %.0f ms\n", name, (thaw_now_s() - t0) * 1e3);
    return t;
}

static json_t *goldens(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizers/goldens.json", src_dir());
    json_error_t jerr;
    json_t *g = json_load_file(path, 0, &jerr);
    if (!g) {
        fprintf(stderr, "%s: %s\n", path, jerr.text);
        CHECK(g != NULL);
    }
    return g;
}

static json_t *golden_tok(json_t *g, const char *name)
{
    json_t *arr = json_object_get(g, "tokenizers"), *v;
    size_t i;
    json_array_foreach(arr, i, v) {
        if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0)
            return v;
    }
    CHECK(!"tokenizer missing from goldens.json");
    return NULL;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s (%zu):", what, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static void check_ids(const char *text, const int32_t *got, size_t n, json_t *want)
{
    int same = n == json_array_size(want);
    for (size_t i = 0; same && i < n; i++)
        same = got[i] == json_integer_value(json_array_get(want, i));
    if (!same) {
        fprintf(stderr, "encode mismatch for \"%s\"\n", text);
        print_ids("got ", got, n);
        fprintf(stderr, "  want:");
        for (size_t i = 0; i < json_array_size(want); i++)
            fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, i)));
        fprintf(stderr, "\n");
        CHECK(same);
    }
}

static size_t ids_of(json_t *arr, int32_t **out)
{
    size_t n = json_array_size(arr);
    int32_t *v = calloc(n + 1, sizeof *v);
    CHECK(v != NULL);
    for (size_t i = 0; i < n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    *out = v;
    return n;
}

static int utf8_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++) {
            if (((unsigned char)s[i + j] & 0xC0) != 0x80)
                return 0;
        }
        i += k;
    }
    return 1;
}

static void check_decode(struct thaw_tokenizer *t, const int32_t *ids, size_t n, int skip,
                         const char *want)
{
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(thaw_tok_decode(t, ids, n, skip, &text, &len));
    if (strcmp(text, want) != 0 || len != strlen(want)) {
        print_ids("ids", ids, n);
        fprintf(stderr, "  skip=%d\n", skip);
    }
    CHECK_STR_EQ(text, want);
    CHECK_EQ(len, strlen(want));
    thaw_free(text);
}

/* Pushing ids one by one (then flush) gives exactly thaw_tok_decode, and
 * no piece holds half a character. */
static void check_stream(struct thaw_tokenizer *t, const int32_t *ids, size_t n, int skip,
                         const char *want)
{
    struct thaw_detok *d = NULL;
    CHECK_OK(thaw_detok_create(t, skip, &d));
    char *acc = calloc(1, strlen(want) + 64 * (n + 1) + 1);
    size_t al = 0;
    CHECK(acc != NULL);
    for (size_t i = 0; i <= n; i++) {
        const char *p = NULL;
        size_t pl = 0;
        if (i < n)
            CHECK_OK(thaw_detok_push(d, ids[i], &p, &pl));
        else
            CHECK_OK(thaw_detok_flush(d, &p, &pl));
        CHECK(p != NULL);
        CHECK_EQ(strlen(p), pl);
        if (!utf8_ok(p, pl)) {
            print_ids("ids", ids, n);
            fprintf(stderr, "  piece %zu is not whole UTF-8\n", i);
            CHECK(0);
        }
        CHECK(al + pl <= strlen(want) + 64 * (n + 1));
        memcpy(acc + al, p, pl);
        al += pl;
    }
    acc[al] = '\0';
    if (strcmp(acc, want) != 0) {
        print_ids("stream ids", ids, n);
        fprintf(stderr, "  skip=%d\n", skip);
    }
    CHECK_STR_EQ(acc, want);
    free(acc);
    thaw_detok_destroy(d);
}

/* ---------------------------------------------------------------- goldens */

static void run_goldens(const char *name)
{
    struct thaw_tokenizer *t = load_named(name);
    json_t *g = goldens();
    json_t *gt = golden_tok(g, name), *c;
    CHECK_EQ(thaw_tok_n_tokens(t), json_integer_value(json_object_get(gt, "n_tokens")));
    CHECK_EQ(thaw_tok_bos(t), json_integer_value(json_object_get(gt, "bos")));
    CHECK_EQ(thaw_tok_eos(t), json_integer_value(json_object_get(gt, "eos")));
    size_t i, n_round = 0;
    json_array_foreach(json_object_get(gt, "cases"), i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t tl = json_string_length(json_object_get(c, "text"));
        for (int sp = 0; sp < 2; sp++) {
            int32_t *ids = NULL;
            size_t n = 0;
            CHECK_OK(thaw_tok_encode(t, text, tl, sp, &ids, &n));
            check_ids(text, ids, n, json_object_get(c, sp ? "ids_special" : "ids"));
            if (!sp && json_is_true(json_object_get(c, "roundtrip"))) {
                check_decode(t, ids, n, 0, text);
                n_round++;
            }
            thaw_free(ids);
        }
        int32_t *ids;
        size_t n = ids_of(json_object_get(c, "ids_special"), &ids);
        const char *dec = json_string_value(json_object_get(c, "decode"));
        const char *dec_skip = json_string_value(json_object_get(c, "decode_skip"));
        check_decode(t, ids, n, 0, dec);
        check_decode(t, ids, n, 1, dec_skip);
        check_stream(t, ids, n, 0, dec);
        check_stream(t, ids, n, 1, dec_skip);
        free(ids);
    }
    json_array_foreach(json_object_get(gt, "decode_only"), i, c) {
        int32_t *ids;
        size_t n = ids_of(json_object_get(c, "ids"), &ids);
        check_decode(t, ids, n, 0, json_string_value(json_object_get(c, "decode")));
        check_decode(t, ids, n, 1, json_string_value(json_object_get(c, "decode_skip")));
        check_stream(t, ids, n, 0, json_string_value(json_object_get(c, "decode")));
        check_stream(t, ids, n, 1, json_string_value(json_object_get(c, "decode_skip")));
        free(ids);
    }
    CHECK(n_round > 10);
    json_decref(g);
    thaw_tok_destroy(t);
}

static void t_goldens_mistral(void)
{
    run_goldens("mistral");
}

static void t_goldens_qwen3(void)
{
    run_goldens("qwen3");
}

static void t_goldens_smollm2(void)
{
    run_goldens("smollm2");
}

/* Trained small tokenizers (goldens.json "tiny"), each re-dressed with one
 * variant of normalizer / pre-tokenizer / decoder / post-processor / added
 * tokens: every Split behaviour, Digits, NFKC/NFD/Strip, Metaspace schemes,
 * lstrip/rstrip/single_word/normalized added tokens, unk without fusing. */
static void t_goldens_tiny(void)
{
    json_t *g = goldens();
    json_t *tiny = json_object_get(g, "tiny"), *v;
    json_t *bases = json_object_get(tiny, "bases");
    size_t i, n_var = 0;
    json_array_foreach(json_object_get(tiny, "variants"), i, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        json_t *doc = json_deep_copy(json_object_get(v, "override"));
        CHECK(doc != NULL);
        json_t *model = json_object_get(bases, json_string_value(json_object_get(v, "base")));
        CHECK(model != NULL);
        CHECK(json_object_set(doc, "model", model) == 0);
        char *txt = json_dumps(doc, JSON_COMPACT);
        CHECK(txt != NULL);
        struct thaw_tokenizer *t = NULL;
        int rc = thaw_tok_load(txt, strlen(txt), NULL, 0, &t);
        if (rc)
            fprintf(stderr, "variant %s\n", name);
        CHECK_OK(rc);
        json_t *c;
        size_t j;
        json_array_foreach(json_object_get(v, "cases"), j, c) {
            const char *text = json_string_value(json_object_get(c, "text"));
            size_t tl = json_string_length(json_object_get(c, "text"));
            for (int sp = 0; sp < 2; sp++) {
                int32_t *ids = NULL;
                size_t n = 0;
                CHECK_OK(thaw_tok_encode(t, text, tl, sp, &ids, &n));
                size_t want_n = json_array_size(json_object_get(c, sp ? "ids_special" : "ids"));
                int same = n == want_n;
                for (size_t k = 0; same && k < n; k++)
                    same = ids[k] ==
                           json_integer_value(
                               json_array_get(json_object_get(c, sp ? "ids_special" : "ids"), k));
                if (!same)
                    fprintf(stderr, "variant %s\n", name);
                check_ids(text, ids, n, json_object_get(c, sp ? "ids_special" : "ids"));
                thaw_free(ids);
            }
            int32_t *ids;
            size_t n = ids_of(json_object_get(c, "ids_special"), &ids);
            for (int skip = 0; skip < 2; skip++) {
                const char *want = json_string_value(
                    json_object_get(c, skip ? "decode_skip" : "decode"));
                char *got = NULL;
                CHECK_OK(thaw_tok_decode(t, ids, n, skip, &got, NULL));
                if (strcmp(got, want) != 0)
                    fprintf(stderr, "variant %s text \"%s\"\n", name, text);
                CHECK_STR_EQ(got, want);
                thaw_free(got);
                check_stream(t, ids, n, skip, want);
            }
            free(ids);
        }
        thaw_tok_destroy(t);
        free(txt);
        json_decref(doc);
        n_var++;
    }
    CHECK(n_var >= 15);
    json_decref(g);
}

/* ---------------------------------------------------------------- engine.md §6 */

struct known {
    const char *tok, *text;
    int32_t ids[12];
    size_t n;
};

static const struct known KNOWN[] = {
    { "mistral", "Hello world", { 1, 22557, 1526 }, 3 },
    { "mistral", " Hello world", { 1, 28705, 22557, 1526 }, 4 },
    { "mistral", "Hello, my dog is cute", { 1, 22557, 28725, 586, 3914, 349, 17949 }, 7 },
    { "mistral",
      "  multiple   spaces\n\nnewline",
      { 1, 259, 5166, 259, 10599, 13, 13, 1095, 1081 },
      9 },
    { "qwen3", "Hello world", { 9707, 1879 }, 2 },
    { "qwen3", " Hello world", { 21927, 1879 }, 2 },
    { "qwen3", "Hello, my dog is cute", { 9707, 11, 847, 5562, 374, 18838 }, 6 },
    { "qwen3", "12345 abc's", { 16, 17, 18, 19, 20, 39022, 594 }, 7 },
    { "qwen3",
      "na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa4\x96",
      { 3376, 37572, 586, 51950, 75402, 21894, 102819, 11162, 97, 244 },
      10 },
    { "qwen3", "  multiple   spaces\n\nnewline", { 220, 5248, 256, 12621, 271, 89202 }, 6 },
    { "qwen3", "<|im_start|>user\nhi<|im_end|>", { 151644, 872, 198, 6023, 151645 }, 5 },
};

static void t_known_ids(void)
{
    struct thaw_tokenizer *m = load_named("mistral"), *q = load_named("qwen3");
    for (size_t k = 0; k < sizeof KNOWN / sizeof *KNOWN; k++) {
        struct thaw_tokenizer *t = strcmp(KNOWN[k].tok, "mistral") == 0 ? m : q;
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(thaw_tok_encode(t, KNOWN[k].text, strlen(KNOWN[k].text), 1, &ids, &n));
        if (n != KNOWN[k].n || memcmp(ids, KNOWN[k].ids, n * sizeof *ids) != 0) {
            fprintf(stderr, "%s \"%s\"\n", KNOWN[k].tok, KNOWN[k].text);
            print_ids("got", ids, n);
            print_ids("want", KNOWN[k].ids, KNOWN[k].n);
            CHECK(0);
        }
        thaw_free(ids);
    }
    /* Token strings, specials, lookups. */
    CHECK_STR_EQ(thaw_tok_token(q, 151645), "<|im_end|>");
    CHECK_STR_EQ(thaw_tok_token(q, 220), "\xc4\xa0"); /* "Ġ" */
    CHECK_EQ(thaw_tok_find(q, "<|im_start|>"), 151644);
    CHECK_EQ(thaw_tok_find(q, "no such token"), -1);
    CHECK(thaw_tok_is_special(q, 151645));
    CHECK(!thaw_tok_is_special(q, 151668)); /* </think> is special:false */
    CHECK(!thaw_tok_is_special(q, 9707));
    CHECK(thaw_tok_token(q, 151669) == NULL);
    CHECK(thaw_tok_token(q, -1) == NULL);
    CHECK_STR_EQ(thaw_tok_token(m, 28705), "\xe2\x96\x81");
    CHECK_STR_EQ(thaw_tok_token(m, 13), "<0x0A>");
    thaw_tok_destroy(m);
    thaw_tok_destroy(q);
}

static void t_stop_ids(void)
{
    int32_t ids[16];
    struct thaw_tokenizer *q = load_named("qwen3");
    size_t n = thaw_tok_stop_ids(q, ids, 16);
    CHECK_EQ(n, 2);
    CHECK_EQ(ids[0], 151645);
    CHECK_EQ(ids[1], 151643);
    CHECK_EQ(thaw_tok_stop_ids(q, ids, 1), 2); /* count even when cap is smaller */
    thaw_tok_destroy(q);
    struct thaw_tokenizer *m = load_named("mistral");
    n = thaw_tok_stop_ids(m, ids, 16);
    CHECK_EQ(n, 1);
    CHECK_EQ(ids[0], 2);
    thaw_tok_destroy(m);
    struct thaw_tokenizer *s = load_named("smollm2");
    n = thaw_tok_stop_ids(s, ids, 16);
    CHECK_EQ(n, 2);
    CHECK_EQ(ids[0], 2); /* <|im_end|> is EOS */
    CHECK_EQ(ids[1], 0); /* <|endoftext|> */
    thaw_tok_destroy(s);
}

/* ---------------------------------------------------------------- chat */

/* The tokenizer of directory name with tokenizer_config.json replaced by
 * one carrying chat_template tpl (and <s> / </s> as BOS / EOS). */
static struct thaw_tokenizer *load_with_template(const char *name, const char *tpl)
{
    char dir[4096], path[4200];
    if (strcmp(name, "smollm2") == 0)
        snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizers/smollm2", src_dir());
    else
        shared_dir(name, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *tj = NULL;
    size_t tn = 0;
    CHECK_OK(thaw_read_file(path, 64u << 20, &tj, &tn));
    json_t *cfg = json_pack("{s:s, s:s, s:s}", "bos_token", "<s>", "eos_token", "</s>",
                            "chat_template", tpl);
    char *cj = json_dumps(cfg, 0);
    struct thaw_tokenizer *t = NULL;
    CHECK_OK(thaw_tok_load(tj, tn, cj, strlen(cj), &t));
    free(cj);
    json_decref(cfg);
    thaw_free(tj);
    return t;
}

static void t_chat_goldens(void)
{
    json_t *g = goldens(), *c;
    struct thaw_tokenizer *toks[3] = { load_named("mistral"), load_named("qwen3"),
                                       load_named("smollm2") };
    const char *names[3] = { "mistral", "qwen3", "smollm2" };
    CHECK_EQ(thaw_tok_chat_format(toks[0]), THAW_CHAT_AUTO); /* no template in this config */
    CHECK_EQ(thaw_tok_chat_format(toks[1]), THAW_CHAT_CHATML);
    CHECK_EQ(thaw_tok_chat_format(toks[2]), THAW_CHAT_CHATML);
    size_t i, n_checked = 0;
    json_array_foreach(json_object_get(g, "chats"), i, c) {
        const char *tn = json_string_value(json_object_get(c, "tokenizer"));
        struct thaw_tokenizer *t = NULL;
        for (int k = 0; k < 3; k++) {
            if (strcmp(tn, names[k]) == 0)
                t = toks[k];
        }
        CHECK(t != NULL);
        enum thaw_chat_format f;
        CHECK_OK(thaw_chat_format_parse(json_string_value(json_object_get(c, "format")), &f));
        json_t *msgs = json_object_get(c, "messages"), *m;
        struct thaw_chat_msg mv[8];
        size_t nm = 0, j;
        json_array_foreach(msgs, j, m) {
            CHECK(nm < 8);
            mv[nm].role = json_string_value(json_object_get(m, "role"));
            mv[nm].content = json_string_value(json_object_get(m, "content"));
            nm++;
        }
        char *out = NULL;
        const char *tpl = json_string_value(json_object_get(c, "template"));
        const char *want = json_string_value(json_object_get(c, "render"));
        if (tpl && strcmp(tn, "mistral") == 0) {
            /* The same render from the template's own format detection. */
            struct thaw_tokenizer *tt = load_with_template(tn, tpl);
            CHECK_EQ(thaw_tok_chat_format(tt), f);
            CHECK_OK(thaw_chat_render(tt, THAW_CHAT_AUTO, mv, nm, 1, &out));
            if (strcmp(out, want) != 0)
                fprintf(stderr, "chat (template) %s/%s, %zu messages\n", tn,
                        thaw_chat_format_name(f), nm);
            CHECK_STR_EQ(out, want);
            thaw_free(out);
            thaw_tok_destroy(tt);
            if (strstr(tpl, "'[INST] '"))
                continue; /* v0.1 spacing needs its template; checked above */
        }
        CHECK_OK(thaw_chat_render(t, f, mv, nm, 1, &out));
        if (strcmp(out, want) != 0)
            fprintf(stderr, "chat %s/%s, %zu messages\n", tn, thaw_chat_format_name(f), nm);
        CHECK_STR_EQ(out, want);
        /* The render encodes without post-processing: specials split out. */
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(thaw_tok_encode(t, out, strlen(out), 0, &ids, &n));
        CHECK(n > 0);
        thaw_free(ids);
        thaw_free(out);
        n_checked++;
    }
    CHECK(n_checked >= 20);
    /* AUTO without a template is ENOTSUP; names round trip. */
    struct thaw_chat_msg u = { "user", "hi" };
    char *out = NULL;
    CHECK_FAILS(thaw_chat_render(toks[0], THAW_CHAT_AUTO, &u, 1, 1, &out), THAW_ENOTSUP);
    CHECK_ERRMSG_HAS("no chat template");
    enum thaw_chat_format f;
    CHECK_FAILS(thaw_chat_format_parse("vicuna", &f), THAW_EINVAL);
    for (int k = THAW_CHAT_AUTO; k <= THAW_CHAT_ZEPHYR; k++) {
        CHECK_OK(thaw_chat_format_parse(thaw_chat_format_name((enum thaw_chat_format)k), &f));
        CHECK_EQ(f, k);
    }
    /* Without a generation prompt ChatML stops after the last message. */
    CHECK_OK(thaw_chat_render(toks[1], THAW_CHAT_AUTO, &u, 1, 0, &out));
    CHECK_STR_EQ(out, "<|im_start|>user\nhi<|im_end|>\n");
    thaw_free(out);
    for (int k = 0; k < 3; k++)
        thaw_tok_destroy(toks[k]);
    json_decref(g);
}

/* Qwen2.5's template writes its default system prompt inside a Jinja
 * string literal with \n escapes; Qwen3's only writes messages[0]. */
static void t_chat_default_system(void)
{
    static const char tok_json[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
        "\"added_tokens\":[{\"id\":1,\"content\":\"<|im_end|>\",\"special\":true}]}";
    static const char qwen25_cfg[] =
        "{\"eos_token\":\"<|im_end|>\",\"chat_template\":\"{%- if messages[0]['role'] == 'system' "
        "%}\\n{{- '<|im_start|>system\\\\n' + messages[0]['content'] + '<|im_end|>\\\\n' }}\\n"
        "{%- else %}\\n{{- '<|im_start|>system\\\\nYou are Qwen, created by Alibaba Cloud. You "
        "are a helpful assistant.<|im_end|>\\\\n' }}\\n{%- endif %}\"}";
    struct thaw_tokenizer *t = NULL;
    CHECK_OK(thaw_tok_load(tok_json, strlen(tok_json), qwen25_cfg, strlen(qwen25_cfg), &t));
    struct thaw_chat_msg m[2] = { { "user", "U" }, { "assistant", "A" } };
    char *out = NULL;
    CHECK_OK(thaw_chat_render(t, THAW_CHAT_AUTO, m, 1, 1, &out));
    CHECK_STR_EQ(out, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                      "helpful assistant.<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                      "<|im_start|>assistant\n");
    thaw_free(out);
    struct thaw_chat_msg s[2] = { { "system", "S" }, { "user", "U" } };
    CHECK_OK(thaw_chat_render(t, THAW_CHAT_CHATML, s, 2, 1, &out));
    CHECK_STR_EQ(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                      "<|im_start|>assistant\n");
    thaw_free(out);
    /* Llama 2 single turn and the tokenizer's eos in Zephyr. */
    CHECK_OK(thaw_chat_render(t, THAW_CHAT_LLAMA2, s, 2, 1, &out));
    CHECK_STR_EQ(out, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]");
    thaw_free(out);
    CHECK_OK(thaw_chat_render(t, THAW_CHAT_ZEPHYR, m, 2, 1, &out));
    CHECK_STR_EQ(out, "<|user|>\nU<|im_end|>\n<|assistant|>\nA<|im_end|>\n<|assistant|>\n");
    thaw_free(out);
    thaw_tok_destroy(t);
    /* chat_template as a list of named templates: "default" is used. */
    static const char list_cfg[] =
        "{\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"[INST]\"},"
        "{\"name\":\"default\",\"template\":\"<|user|>{{ eos_token }}\"}]}";
    CHECK_OK(thaw_tok_load(tok_json, strlen(tok_json), list_cfg, strlen(list_cfg), &t));
    CHECK_EQ(thaw_tok_chat_format(t), THAW_CHAT_ZEPHYR);
    thaw_tok_destroy(t);
    /* Llama 3 detection; its render always starts with <|begin_of_text|>. */
    static const char l3_cfg[] = "{\"bos_token\":null,\"chat_template\":\"{{ bos_token }}"
                                 "<|start_header_id|>{{ m }}<|end_header_id|>\"}";
    CHECK_OK(thaw_tok_load(tok_json, strlen(tok_json), l3_cfg, strlen(l3_cfg), &t));
    CHECK_EQ(thaw_tok_chat_format(t), THAW_CHAT_LLAMA3);
    CHECK_EQ(thaw_tok_bos(t), -1);
    struct thaw_chat_msg w = { "user", "  padded\n" };
    CHECK_OK(thaw_chat_render(t, THAW_CHAT_AUTO, &w, 1, 0, &out));
    CHECK_STR_EQ(out,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|>");
    thaw_free(out);
    thaw_tok_destroy(t);
}

/* ---------------------------------------------------------------- errors */

struct bad_case {
    const char *json;
    int code;
    const char *msg;
};

#define TINY_MODEL \
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"

static const struct bad_case BAD[] = {
    { "{", THAW_EFORMAT, "tokenizer.json: line" },
    { "[1,2]", THAW_EFORMAT, "not an object" },
    { "{}", THAW_EFORMAT, "model is missing" },
    { "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", THAW_ENOTSUP, "'WordPiece'" },
    { "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", THAW_ENOTSUP, "'Unigram'" },
    { "{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", THAW_EFORMAT, "model.vocab" },
    { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", THAW_EFORMAT,
      "model.vocab['a']" },
    { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a c\"]}}", THAW_EFORMAT,
      "model.merges[0]" },
    { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"ac\"]}}", THAW_EFORMAT,
      "model.merges[0]" },
    { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}", THAW_EFORMAT,
      "model.merges[0]" },
    { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", THAW_EFORMAT,
      "model.merges" },
    { "{" TINY_MODEL ",\"normalizer\":{\"type\":\"BertNormalizer\"}}", THAW_ENOTSUP,
      "normalizer type 'BertNormalizer'" },
    { "{" TINY_MODEL ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},"
      "{\"type\":\"Lowercase2\"}]}}",
      THAW_ENOTSUP, "'Lowercase2'" },
    { "{" TINY_MODEL ",\"pre_tokenizer\":{\"type\":\"Whitespace\"}}", THAW_ENOTSUP,
      "pre_tokenizer type 'Whitespace'" },
    { "{" TINY_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
      "\"behavior\":\"Isolated\"}}",
      THAW_EFORMAT, "bad regex" },
    { "{" TINY_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
      "\"behavior\":\"Sideways\"}}",
      THAW_ENOTSUP, "'Sideways'" },
    { "{" TINY_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{}}}", THAW_EFORMAT,
      "pattern has no String or Regex" },
    { "{" TINY_MODEL ",\"decoder\":{\"type\":\"WordPiece\"}}", THAW_ENOTSUP,
      "decoder type 'WordPiece'" },
    { "{" TINY_MODEL ",\"post_processor\":{\"type\":\"Fancy\"}}", THAW_ENOTSUP,
      "post_processor type 'Fancy'" },
    { "{" TINY_MODEL ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":"
      "[{\"SpecialToken\":{\"id\":\"<s>\"}}],\"special_tokens\":{}}}",
      THAW_EFORMAT, "'<s>'" },
    { "{" TINY_MODEL ",\"added_tokens\":[{\"id\":5}]}", THAW_EFORMAT, "added_tokens[0]" },
    { "{" TINY_MODEL ",\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"}}}",
      THAW_EFORMAT, "content missing" },
    { "{" TINY_MODEL ",\"normalizer\":5}", THAW_EFORMAT, "normalizer is not an object" },
    { "{" TINY_MODEL ",\"decoder\":{\"decoders\":[]}}", THAW_EFORMAT, "decoder has no type" },
};

static void t_load_errors(void)
{
    for (size_t k = 0; k < sizeof BAD / sizeof *BAD; k++) {
        struct thaw_tokenizer *t = (struct thaw_tokenizer *)&t; /* must stay untouched */
        struct thaw_tokenizer *keep = t;
        int rc = thaw_tok_load(BAD[k].json, strlen(BAD[k].json), NULL, 0, &t);
        if (rc != BAD[k].code || !strstr(thaw_errmsg(), BAD[k].msg)) {
            fprintf(stderr, "case %zu: %s\n  rc %d (%s) msg \"%s\", want %d and \"%s\"\n", k,
                    BAD[k].json, rc, thaw_strerror(rc), thaw_errmsg(), BAD[k].code, BAD[k].msg);
            CHECK(0);
        }
        CHECK(t == keep);
    }
    /* Bad tokenizer_config.json; a missing directory. */
    struct thaw_tokenizer *t = NULL;
    const char *tj = "{" TINY_MODEL "}";
    CHECK_FAILS(thaw_tok_load(tj, strlen(tj), "{\"bos_token\":", 13, &t), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("tokenizer_config.json");
    CHECK_FAILS(thaw_tok_load(tj, strlen(tj), "{\"bos_token\":5}", 15, &t), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("bos_token");
    CHECK_FAILS(thaw_tok_load_dir("/nonexistent/tokenizer/dir", &t), -ENOENT);
    CHECK_ERRMSG_HAS("/nonexistent/tokenizer/dir");
    CHECK(t == NULL);
}

static void t_bad_input(void)
{
    struct thaw_tokenizer *t = load_named("qwen3");
    int32_t *ids = NULL;
    size_t n = 0;
    static const char *bad[] = { "\xff",         "abc\xc3",          "\xc0\xaf",
                                 "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok \xe2\x82" };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        CHECK_FAILS(thaw_tok_encode(t, bad[k], strlen(bad[k]), 0, &ids, &n), THAW_EINVAL);
        CHECK_ERRMSG_HAS("invalid UTF-8");
    }
    /* Embedded NUL is valid text. */
    CHECK_OK(thaw_tok_encode(t, "a\0b", 3, 0, &ids, &n));
    CHECK_EQ(n, 3);
    thaw_free(ids);
    char *text = NULL;
    int32_t neg[] = { 9707, -5 };
    CHECK_FAILS(thaw_tok_decode(t, neg, 2, 0, &text, NULL), THAW_EINVAL);
    /* Ids past the tokenizer (vocab padding rows) decode to nothing. */
    int32_t pad[] = { 9707, 151700, 151935, 1879, INT32_MAX };
    CHECK_OK(thaw_tok_decode(t, pad, 5, 0, &text, NULL));
    CHECK_STR_EQ(text, "Hello world");
    thaw_free(text);
    struct thaw_detok *d = NULL;
    const char *p;
    size_t pl;
    CHECK_OK(thaw_detok_create(t, 0, &d));
    CHECK_FAILS(thaw_detok_push(d, -1, &p, &pl), THAW_EINVAL);
    CHECK_OK(thaw_detok_push(d, 151700, &p, &pl));
    CHECK_EQ(pl, 0);
    /* Half an emoji is held back; flush turns it into U+FFFD. */
    CHECK_OK(thaw_detok_push(d, 11162, &p, &pl)); /* " \xf0\x9f\xa4" */
    CHECK_STR_EQ(p, " ");
    CHECK_OK(thaw_detok_flush(d, &p, &pl));
    CHECK_STR_EQ(p, "\xef\xbf\xbd");
    thaw_detok_destroy(d);
    /* A stream of stray lead bytes (always an incomplete tail) and mixed
     * partial sequences: streaming still adds up, in bounded time. */
    int32_t lead = thaw_tok_find(t, "\xc3\xa3"), cont = thaw_tok_find(t, "\xc4\xa3"); /* 0x81 */
    CHECK(lead >= 0 && cont >= 0);
    int32_t *many = malloc(3000 * sizeof *many);
    CHECK(many != NULL);
    for (size_t k = 0; k < 3000; k++)
        many[k] = k < 2000 ? lead : (k % 3 == 0 ? lead : k % 3 == 1 ? cont : 9707);
    char *all = NULL;
    CHECK_OK(thaw_tok_decode(t, many, 3000, 0, &all, NULL));
    double t0 = thaw_now_s();
    check_stream(t, many, 3000, 0, all);
    printf("  3000 ids of broken UTF-8 streamed in %.3f s\n", thaw_now_s() - t0);
    thaw_free(all);
    free(many);
    thaw_detok_destroy(NULL);
    thaw_tok_destroy(NULL);
    /* Empty text: no ids, add_special adds none for Qwen. */
    CHECK_OK(thaw_tok_encode(t, "", 0, 1, &ids, &n));
    CHECK_EQ(n, 0);
    thaw_free(ids);
    thaw_tok_destroy(t);
}

/* ---------------------------------------------------------------- tiny tokenizers */

/* Byte-level BPE with added tokens carrying lstrip/rstrip/single_word. */
static const char TINY_BL[] =
    "{\"added_tokens\":["
    "{\"id\":300,\"content\":\"<|x|>\",\"special\":true,\"lstrip\":true,\"rstrip\":false,"
    "\"single_word\":false,\"normalized\":false},"
    "{\"id\":301,\"content\":\"[R]\",\"special\":false,\"lstrip\":false,\"rstrip\":true,"
    "\"single_word\":false,\"normalized\":false},"
    "{\"id\":302,\"content\":\"cat\",\"special\":false,\"lstrip\":false,\"rstrip\":false,"
    "\"single_word\":true,\"normalized\":false}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"post_processor\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"t\":3,\"\xc4\xa0\":4,"
    "\"ab\":5,\"\xc4\xa0"
    "a\":6,\"\xc4\xa0"
    "ab\":7,\"x\":8,\"\xc3\xa3\":9},"
    "\"merges\":[[\"a\",\"b\"],\"\xc4\xa0 a\",[\"\xc4\xa0"
    "a\",\"b\"]]}}";

static void t_tiny_byte_level(void)
{
    struct thaw_tokenizer *t = NULL;
    CHECK_OK(thaw_tok_load(TINY_BL, strlen(TINY_BL), NULL, 0, &t));
    struct {
        const char *text;
        int32_t ids[12];
        size_t n;
    } cases[] = {
        { "ab ab", { 5, 4, 5 }, 3 },                      /* (a,b) outranks (Ġ,a) */
        { "a  <|x|>b", { 0, 300, 1 }, 3 },                /* lstrip eats the spaces */
        { "[R]   ab", { 301, 5 }, 2 },                    /* rstrip eats them after */
        { "cat concat cat.", { 302, 4, 2, 2, 0, 3 }, 6 }, /* single_word: only whole words */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(thaw_tok_encode(t, cases[k].text, strlen(cases[k].text), 1, &ids, &n));
        if (k < 3 && (n != cases[k].n || memcmp(ids, cases[k].ids, n * 4) != 0)) {
            print_ids(cases[k].text, ids, n);
            CHECK(0);
        }
        thaw_free(ids);
    }
    /* Bytes without a vocabulary entry are dropped (no unk token); ids
     * decode back through the byte map, a lone "ã" byte half included. */
    int32_t ids[] = { 6, 9 };
    char *text = NULL;
    CHECK_OK(thaw_tok_decode(t, ids, 2, 0, &text, NULL));
    CHECK_STR_EQ(text, " a\xef\xbf\xbd");
    thaw_free(text);
    CHECK_EQ(thaw_tok_bos(t), -1);
    CHECK_EQ(thaw_tok_eos(t), -1);
    thaw_tok_destroy(t);
}

/* SentencePiece style: Metaspace pre-tokenizer, byte fallback, fused unk. */
#define SPF "\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false"
static const char TINY_SP[] =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true," SPF "},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true," SPF "},"
    "{\"id\":2,\"content\":\"</s>\",\"special\":true," SPF "}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
    "\"prepend_scheme\":\"first\",\"split\":false},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
    "\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":"
    "{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
    "{\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},"
    "{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0xC3>\":3,\"<0xA9>\":4,\"\xe2\x96\x81\":5,"
    "\"h\":6,\"i\":7,\"hi\":8,\"\xe2\x96\x81hi\":9},"
    "\"merges\":[\"h i\",\"\xe2\x96\x81 hi\"]}}";

static void t_tiny_sentencepiece(void)
{
    struct thaw_tokenizer *t = NULL;
    CHECK_OK(thaw_tok_load(TINY_SP, strlen(TINY_SP), NULL, 0, &t));
    CHECK_EQ(thaw_tok_bos(t), 1);
    CHECK_EQ(thaw_tok_eos(t), 2);
    int32_t *ids = NULL;
    size_t n = 0;
    /* "hi hi é xyz": ▁hi ▁hi ▁ <0xC3><0xA9> ▁ then one fused unk for xyz. */
    const char *text = "hi hi \xc3\xa9 xyz";
    CHECK_OK(thaw_tok_encode(t, text, strlen(text), 1, &ids, &n));
    int32_t want[] = { 1, 9, 9, 5, 3, 4, 5, 0 };
    if (n != 8 || memcmp(ids, want, sizeof want) != 0) {
        print_ids("got", ids, n);
        CHECK(0);
    }
    char *out = NULL;
    CHECK_OK(thaw_tok_decode(t, ids, n, 1, &out, NULL));
    CHECK_STR_EQ(out, "hi hi \xc3\xa9 "); /* <unk> is special: skipped */
    thaw_free(out);
    check_stream(t, ids, n, 1, "hi hi \xc3\xa9 ");
    check_stream(t, ids, n, 0, "<s> hi hi \xc3\xa9 <unk>");
    /* After </s> (not at offset 0) the "first" scheme adds no ▁. */
    thaw_free(ids);
    CHECK_OK(thaw_tok_encode(t, "</s>hi", 6, 0, &ids, &n));
    CHECK_EQ(n, 2);
    CHECK_EQ(ids[1], 8);
    /* A lone continuation byte token decodes to U+FFFD, streaming too. */
    int32_t b[] = { 9, 4, 9, 3 };
    CHECK_OK(thaw_tok_decode(t, b, 4, 0, &out, NULL));
    CHECK_STR_EQ(out, "hi\xef\xbf\xbd hi\xef\xbf\xbd");
    check_stream(t, b, 4, 0, out);
    thaw_free(out);
    /* Long byte-fallback runs (valid, then broken by a stray byte) mixed
     * with pieces and unknown ids. */
    int32_t *run = malloc(1200 * sizeof *run);
    CHECK(run != NULL);
    for (size_t k = 0; k < 1200; k++)
        run[k] = k % 400 == 399 ? 9 : k % 97 == 50 ? 4 : k % 41 == 7 ? 5000 : (k % 2 ? 4 : 3);
    CHECK_OK(thaw_tok_decode(t, run, 1200, 0, &out, NULL));
    check_stream(t, run, 1200, 0, out);
    thaw_free(out);
    free(run);
    thaw_free(ids);
    thaw_tok_destroy(t);
}

#define ALLOC_TEXT "ab hi <|x|> \xc3\xa9 cat"

/* Every allocation failure during load and encode is -ENOMEM, no leak
 * (ASan in CI). */
static void t_alloc_failures(void)
{
    const char *jsons[2] = { TINY_BL, TINY_SP };
    for (int k = 0; k < 2; k++) {
        int ok = 0;
        for (long n = 0; n < 10000 && !ok; n++) {
            struct thaw_tokenizer *t = NULL;
            thaw_alloc_fail_after(n);
            int rc = thaw_tok_load(jsons[k], strlen(jsons[k]), "{\"eos_token\":\"</s>\"}", 20, &t);
            if (rc == 0) {
                int32_t *ids = NULL;
                size_t nid = 0;
                char *text = NULL;
                rc = thaw_tok_encode(t, ALLOC_TEXT, strlen(ALLOC_TEXT), 1, &ids, &nid);
                if (rc == 0) {
                    rc = thaw_tok_decode(t, ids, nid, 0, &text, NULL);
                    thaw_free(text);
                }
                if (rc == 0) {
                    struct thaw_detok *d = NULL;
                    rc = thaw_detok_create(t, 0, &d);
                    for (size_t i = 0; i < nid && rc == 0; i++) {
                        const char *p;
                        size_t pl;
                        rc = thaw_detok_push(d, ids[i], &p, &pl);
                    }
                    thaw_detok_destroy(d);
                }
                if (rc == 0) {
                    char *out = NULL;
                    struct thaw_chat_msg m = { "user", "hi" };
                    rc = thaw_chat_render(t, THAW_CHAT_CHATML, &m, 1, 1, &out);
                    thaw_free(out);
                }
                thaw_free(ids);
                thaw_tok_destroy(t);
                ok = rc == 0;
            } else {
                CHECK(t == NULL);
            }
            thaw_alloc_fail_after(-1);
            if (!ok && rc != -ENOMEM) {
                fprintf(stderr, "fail_after(%ld): %d %s\n", n, rc, thaw_errmsg());
                CHECK_EQ(rc, -ENOMEM);
            }
        }
        CHECK(ok);
    }
}

/* ---------------------------------------------------------------- speed */

static void t_speed(void)
{
    static const char *names[] = { "qwen3", "mistral", "smollm2" };
    static const char para[] =
        "The quick brown fox jumps over the lazy dog; numbers 1234567 and 3.14. "
        "Caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa4\x96\n"
        "def f(x):\n    return x * 2  # it's fine, we'll see\n\n";
    size_t target = 1u << 20, pl = strlen(para);
    char *text = malloc(target + pl);
    CHECK(text != NULL);
    size_t len = 0;
    while (len < target) {
        memcpy(text + len, para, pl);
        len += pl;
    }
    for (size_t k = 0; k < 3; k++) {
        struct thaw_tokenizer *t = load_named(names[k]);
        int32_t *ids = NULL;
        size_t n = 0;
        double t0 = thaw_now_s();
        CHECK_OK(thaw_tok_encode(t, text, len, 0, &ids, &n));
        double dt = thaw_now_s() - t0;
        char *back = NULL;
        t0 = thaw_now_s();
        CHECK_OK(thaw_tok_decode(t, ids, n, 0, &back, NULL));
        double dd = thaw_now_s() - t0;
        if (strcmp(names[k], "mistral") != 0)
            CHECK(strlen(back) == len && memcmp(back, text, len) == 0);
        printf("  %-8s encode %zu bytes -> %zu tokens in %.3f s (%.0f tokens/s), decode %.3f s\n",
               names[k], len, n, dt, n / dt, dd);
        thaw_free(back);
        thaw_free(ids);
        thaw_tok_destroy(t);
    }
    free(text);
}

/* Long runs of one character class (one huge pre-token or regex match):
 * no stack or JIT limit is hit, the result round-trips. */
static void t_long_runs(void)
{
    static const char *names[] = { "qwen3", "mistral", "smollm2" };
    static const char *units[] = { " ", "a", "7", "\n", "\xf0\x9f\xa4\x96", "\xe6\x97\xa5", "!?" };
    size_t target = 256u << 10;
    char *text = malloc(target + 8);
    CHECK(text != NULL);
    for (size_t k = 0; k < 3; k++) {
        struct thaw_tokenizer *t = load_named(names[k]);
        for (size_t u = 0; u < sizeof units / sizeof *units; u++) {
            size_t ul = strlen(units[u]), len = 0;
            while (len + ul <= target) {
                memcpy(text + len, units[u], ul);
                len += ul;
            }
            int32_t *ids = NULL;
            size_t n = 0;
            double t0 = thaw_now_s();
            CHECK_OK(thaw_tok_encode(t, text, len, 0, &ids, &n));
            double dt = thaw_now_s() - t0;
            char *back = NULL;
            size_t bl = 0;
            CHECK_OK(thaw_tok_decode(t, ids, n, 0, &back, &bl));
            /* Mistral's Prepend adds a leading ▁ that Strip removes again. */
            CHECK_EQ(bl, len);
            CHECK(memcmp(back, text, len) == 0);
            if (dt > 0.5)
                printf("  %s: %zu bytes of '%s' took %.2f s\n", names[k], len, units[u], dt);
            thaw_free(back);
            thaw_free(ids);
        }
        thaw_tok_destroy(t);
    }
    free(text);
}

/* Load text both ways (fast path through vocab/merges, and jansson alone):
 * same result code, and equal tokenizers when both succeed. Returns the
 * code. */
static int both_ways(const char *text, size_t len)
{
    struct thaw_tokenizer *a = NULL, *b = NULL;
    int ra = thaw_tok_load(text, len, NULL, 0, &a);
    eng_tok_set_fast_json(0);
    int rb = thaw_tok_load(text, len, NULL, 0, &b);
    eng_tok_set_fast_json(1);
    if (ra != rb)
        fprintf(stderr, "fast %d slow %d: %.200s\n", ra, rb, text);
    CHECK_EQ(ra, rb);
    CHECK_EQ(a == NULL, b == NULL);
    if (a && b)
        CHECK(eng_tok_fingerprint(a) == eng_tok_fingerprint(b));
    thaw_tok_destroy(a);
    thaw_tok_destroy(b);
    return ra;
}

/* The fast path through model.vocab / model.merges (tok_json.c) is taken on
 * real tokenizers and gives what jansson alone gives; on everything it does
 * not handle it steps aside, and the result is still jansson's. */
static void t_fast_json(void)
{
    /* Real files: the fast path applies and agrees. */
    static const char *const real[] = { "smollm2", "mistral", "qwen3" };
    for (size_t k = 0; k < sizeof real / sizeof *real; k++) {
        char dir[4096], path[4200];
        if (k == 0)
            snprintf(dir, sizeof dir, "%s/tests/fixtures/tokenizers/smollm2", src_dir());
        else
            shared_dir(real[k], dir, sizeof dir);
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        char *text;
        size_t len;
        CHECK_OK(thaw_read_file(path, 64u << 20, &text, &len));
        struct tokj_span v, m;
        CHECK_EQ(tokj_find(text, len, &v, &m), 0);
        CHECK(v.end > v.start && m.end > m.start);
        double t0 = thaw_now_s();
        struct thaw_tokenizer *t;
        CHECK_OK(thaw_tok_load(text, len, NULL, 0, &t));
        double t1 = thaw_now_s();
        thaw_tok_destroy(t);
        fprintf(stderr, "  %s: fast %.1f ms\n", real[k], (t1 - t0) * 1e3);
        CHECK_OK(both_ways(text, len));
        thaw_free(text);
    }
    /* Edge cases: each agrees with jansson, whichever path serves it. */
    static const char *const docs[] = {
        "{" TINY_MODEL "}",
        /* escapes in keys and merges, a surrogate pair, "/" */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u0061\":0,\"b\\/\":1,\"ab\\/\":2,"
        "\"\\ud83d\\ude00\":3},\"merges\":[\"a b\\/\",[\"\\u0061\",\"b/\"]]}}",
        /* NUL in a merge (allowed, but not a token here), in a vocab key (refused) */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a\\u0000 b\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u0000\":0},\"merges\":[]}}",
        /* a repeated vocab key: jansson keeps the last value */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"a\":2},\"merges\":[]}}",
        /* a repeated id */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}",
        /* ids that are not plain integers */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-0,\"b\":1},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1.0,\"b\":1},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1e0},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999999},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":01},\"merges\":[]}}",
        /* a lone surrogate, invalid UTF-8, a raw control byte */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\ud800\":0},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xc3\":0},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\x01\":0},\"merges\":[]}}",
        /* bad merges: no space, unknown token, neither form, a triple */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"ab\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a c\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[7]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
        "\"merges\":[[\"a\",\"b\",\"c\"]]}}",
        /* a repeated merge: the first rank stays */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
        "\"merges\":[\"a b\",\"a b\"]}}",
        /* "model" twice, an escaped "model" key, vocab twice */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{}},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
        "\"merges\":[]}}",
        "{\"mod\\u0065l\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"b\":0},\"vocab\":{\"a\":0},\"merges\":[]}}",
        /* brackets and quotes inside strings; whitespace everywhere */
        " { \"x\" : \"}]\\\"{[\" , \"model\" : { \"vocab\" : { \"]\" : 0 , \"}\" : 1 , \"]}\" : 2 } ,"
        " \"merges\" : [ \"] }\" ] , \"type\" : \"BPE\" } } ",
        /* vocab or merges of the wrong type, null merges, trailing junk */
        "{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":null}}",
        "{" TINY_MODEL "} x",
        "{" TINY_MODEL ",}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\",]}}",
    };
    int ok = 0;
    for (size_t k = 0; k < sizeof docs / sizeof *docs; k++)
        ok += both_ways(docs[k], strlen(docs[k])) == 0;
    CHECK(ok >= 4); /* some succeed (the others must fail alike) */
}

static const struct test_case cases[] = {
    { "goldens_mistral", t_goldens_mistral },
    { "goldens_qwen3", t_goldens_qwen3 },
    { "goldens_smollm2", t_goldens_smollm2 },
    { "goldens_tiny", t_goldens_tiny },
    { "known_ids", t_known_ids },
    { "stop_ids", t_stop_ids },
    { "chat_goldens", t_chat_goldens },
    { "chat_default_system", t_chat_default_system },
    { "load_errors", t_load_errors },
    { "fast_json", t_fast_json },
    { "bad_input", t_bad_input },
    { "tiny_byte_level", t_tiny_byte_level },
    { "tiny_sentencepiece", t_tiny_sentencepiece },
    { "alloc_failures", t_alloc_failures },
    { "long_runs", t_long_runs },
    { "speed", t_speed },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof *cases);
}
