/*
 * chat.c - chat formats rendered by string concatenation (as llama.cpp's
 * llm_chat_apply_template does): ChatML, Llama 3, Llama 2, Mistral, Zephyr.
 * The format is detected from marker strings in the tokenizer's Jinja chat
 * template, and a default system prompt hard-coded in that template (Qwen2.5,
 * SmolLM2) is extracted from it. Renders match transformers'
 * apply_chat_template(add_generation_prompt=...) for those templates
 * (tests/engine/test_tokenizer.c checks them against goldens).
 */
#include <errno.h>
#include <string.h>

#include "engine/thaw_engine.h"
#include "engine/tok_int.h"

#define CHAT_MAX_BYTES (256u << 20) /* one rendered conversation */

static const char *const FORMAT_NAMES[] = { "auto",   "chatml",  "llama3",
                                            "llama2", "mistral", "zephyr" };

int thaw_chat_format_parse(const char *name, enum thaw_chat_format *out)
{
    if (!name || !out)
        return THAW_FAIL(THAW_EINVAL, "thaw_chat_format_parse: NULL argument");
    for (size_t i = 0; i < sizeof FORMAT_NAMES / sizeof *FORMAT_NAMES; i++) {
        if (strcmp(name, FORMAT_NAMES[i]) == 0) {
            *out = (enum thaw_chat_format)i;
            return 0;
        }
    }
    return THAW_FAIL(THAW_EINVAL,
                     "unknown chat format '%s' (chatml, llama3, llama2, mistral, "
                     "zephyr, auto)",
                     name);
}

const char *thaw_chat_format_name(enum thaw_chat_format f)
{
    if ((size_t)f >= sizeof FORMAT_NAMES / sizeof *FORMAT_NAMES)
        return "unknown";
    return FORMAT_NAMES[f];
}

/*
 * Detection by markers (llama.cpp llm_chat_detect_template): <|im_start|> is
 * ChatML, <|start_header_id|> Llama 3, [INST] with <<SYS>> Llama 2, [INST]
 * alone Mistral, <|user|> Zephyr (TinyLlama writes eos_token as a variable,
 * so </s> is not required).
 */
enum thaw_chat_format thaw_tok_chat_format(const struct thaw_tokenizer *tok)
{
    const char *t = eng_tok_chat_template(tok);
    if (!t)
        return THAW_CHAT_AUTO;
    if (strstr(t, "<|im_start|>"))
        return THAW_CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>"))
        return THAW_CHAT_LLAMA3;
    if (strstr(t, "[INST]"))
        return strstr(t, "<<SYS>>") ? THAW_CHAT_LLAMA2 : THAW_CHAT_MISTRAL;
    if (strstr(t, "<|user|>"))
        return THAW_CHAT_ZEPHYR;
    return THAW_CHAT_AUTO;
}

/* ---------------------------------------------------------------- output */

struct out {
    char *p;
    size_t len, cap;
    int err;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->err)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t c = o->cap ? o->cap : 256;
        while (c < o->len + n + 1)
            c *= 2;
        if (c > CHAT_MAX_BYTES) {
            o->err = THAW_FAIL(THAW_ELIMIT, "chat: rendered conversation exceeds %u bytes",
                               CHAT_MAX_BYTES);
            return;
        }
        char *q = thaw_realloc(o->p, c);
        if (!q) {
            o->err = -ENOMEM;
            return;
        }
        o->p = q;
        o->cap = c;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* s with leading and trailing whitespace removed (Jinja trim / Python strip). */
static void put_trimmed(struct out *o, const char *s)
{
    size_t a = 0, b = strlen(s);
    while (a < b && is_space(s[a]))
        a++;
    while (b > a && is_space(s[b - 1]))
        b--;
    put(o, s + a, b - a);
}

/* ---------------------------------------------------------------- default system */

/*
 * A system message the template writes literally when the conversation has
 * none: the text between "<|im_start|>system" + newline (a real newline or
 * the two characters \n inside a Jinja string literal) and "<|im_end|>",
 * provided it contains no template syntax (quotes, braces, '+': then it is
 * an expression such as messages[0].content, as in Qwen3). Written to o
 * with \n escapes undone; returns whether one was found.
 */
static int default_system(const char *tpl, struct out *o)
{
    static const char head[] = "<|im_start|>system";
    const char *p = tpl;
    while (tpl && (p = strstr(p, head)) != NULL) {
        p += sizeof head - 1;
        const char *s = p;
        if (*s == '\n')
            s++;
        else if (s[0] == '\\' && s[1] == 'n')
            s += 2;
        else
            continue;
        const char *e = strstr(s, "<|im_end|>");
        if (!e || e == s)
            continue;
        int ok = 1;
        for (const char *c = s; c < e && ok; c++)
            ok = !strchr("'\"{}+", *c);
        if (!ok)
            continue;
        for (const char *c = s; c < e; c++) {
            if (c[0] == '\\' && c + 1 < e) {
                char x = c[1] == 'n' ? '\n' : c[1] == 't' ? '\t' : c[1];
                put(o, &x, 1);
                c++;
            } else {
                put(o, c, 1);
            }
        }
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- formats */

static int is_role(const struct thaw_chat_msg *m, const char *role)
{
    return m->role && strcmp(m->role, role) == 0;
}

static const char *content(const struct thaw_chat_msg *m)
{
    return m->content ? m->content : "";
}

static void render_chatml(const struct thaw_tokenizer *tok, const struct thaw_chat_msg *m, size_t n,
                          int gen, struct out *o)
{
    if (n == 0 || !is_role(&m[0], "system")) {
        struct out sys = { 0 };
        if (default_system(eng_tok_chat_template(tok), &sys) && !sys.err) {
            puts_(o, "<|im_start|>system\n");
            put(o, sys.p, sys.len);
            puts_(o, "<|im_end|>\n");
        }
        if (sys.err)
            o->err = sys.err;
        thaw_free(sys.p);
    }
    for (size_t i = 0; i < n; i++) {
        puts_(o, "<|im_start|>");
        puts_(o, m[i].role ? m[i].role : "user");
        puts_(o, "\n");
        puts_(o, content(&m[i]));
        puts_(o, "<|im_end|>\n");
    }
    if (gen)
        puts_(o, "<|im_start|>assistant\n");
}

static void render_llama3(const struct thaw_tokenizer *tok, const struct thaw_chat_msg *m, size_t n,
                          int gen, struct out *o)
{
    const char *bos = eng_tok_bos_text(tok);
    /* The Llama 3 template writes bos_token; a tokenizer without one (or a
     * different one) still gets the real Llama 3 marker. */
    puts_(o, bos && strcmp(bos, "<|begin_of_text|>") == 0 ? bos : "<|begin_of_text|>");
    for (size_t i = 0; i < n; i++) {
        puts_(o, "<|start_header_id|>");
        puts_(o, m[i].role ? m[i].role : "user");
        puts_(o, "<|end_header_id|>\n\n");
        put_trimmed(o, content(&m[i]));
        puts_(o, "<|eot_id|>");
    }
    if (gen)
        puts_(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 2 chat: <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] ... */
static void render_llama2(const struct thaw_tokenizer *tok, const struct thaw_chat_msg *m, size_t n,
                          struct out *o)
{
    const char *bos = eng_tok_bos_text(tok), *eos = eng_tok_eos_text(tok);
    const char *sys = NULL;
    size_t i = 0;
    if (n && is_role(&m[0], "system")) {
        sys = content(&m[0]);
        i = 1;
    }
    for (size_t k = 0; i < n; i++, k++) {
        if (is_role(&m[i], "assistant")) {
            puts_(o, " ");
            put_trimmed(o, content(&m[i]));
            puts_(o, " ");
            puts_(o, eos ? eos : "</s>");
            continue;
        }
        puts_(o, bos ? bos : "<s>");
        puts_(o, "[INST] ");
        if (k == 0 && sys) {
            /* strip() applies to the whole "<<SYS>>..." + content string. */
            struct out c = { 0 };
            puts_(&c, "<<SYS>>\n");
            puts_(&c, sys);
            puts_(&c, "\n<</SYS>>\n\n");
            puts_(&c, content(&m[i]));
            if (c.err)
                o->err = c.err;
            else
                put_trimmed(o, c.p);
            thaw_free(c.p);
        } else {
            put_trimmed(o, content(&m[i]));
        }
        puts_(o, " [/INST]");
    }
}

/*
 * Mistral-7B-Instruct (v0.1/v0.2 template with system support): BOS once,
 * then " [INST] U [/INST]" and " A</s>"; a system message is prepended to
 * the first user message with a blank line. A template that writes "[INST]"
 * without the leading space (the original v0.1 one) renders
 * "<s>[INST] U [/INST]A</s>".
 */
static void render_mistral(const struct thaw_tokenizer *tok, const struct thaw_chat_msg *m,
                           size_t n, struct out *o)
{
    const char *bos = eng_tok_bos_text(tok), *eos = eng_tok_eos_text(tok);
    const char *tpl = eng_tok_chat_template(tok);
    int legacy = tpl && strstr(tpl, "'[INST] '") && !strstr(tpl, "' [INST] '");
    const char *sys = NULL;
    size_t i = 0;
    if (n && is_role(&m[0], "system")) {
        sys = content(&m[0]);
        i = 1;
    }
    puts_(o, bos ? bos : "<s>");
    for (size_t k = 0; i < n; i++, k++) {
        if (is_role(&m[i], "assistant")) {
            if (!legacy)
                puts_(o, " ");
            puts_(o, content(&m[i]));
            puts_(o, eos ? eos : "</s>");
            continue;
        }
        puts_(o, legacy ? "[INST] " : " [INST] ");
        if (k == 0 && sys) {
            puts_(o, sys);
            puts_(o, "\n\n");
        }
        puts_(o, content(&m[i]));
        puts_(o, " [/INST]");
    }
}

/* Zephyr / TinyLlama-Chat: <|role|>\nC</s>\n ... <|assistant|>\n */
static void render_zephyr(const struct thaw_tokenizer *tok, const struct thaw_chat_msg *m, size_t n,
                          int gen, struct out *o)
{
    const char *eos = eng_tok_eos_text(tok);
    for (size_t i = 0; i < n; i++) {
        if (!is_role(&m[i], "user") && !is_role(&m[i], "system") && !is_role(&m[i], "assistant"))
            continue; /* the template renders nothing for other roles */
        puts_(o, "<|");
        puts_(o, m[i].role);
        puts_(o, "|>\n");
        puts_(o, content(&m[i]));
        puts_(o, eos ? eos : "</s>");
        puts_(o, "\n");
    }
    if (gen && n > 0)
        puts_(o, "<|assistant|>\n");
}

int thaw_chat_render(const struct thaw_tokenizer *tok, enum thaw_chat_format fmt,
                     const struct thaw_chat_msg *msgs, size_t n, int add_generation_prompt,
                     char **out)
{
    if (!out || (!msgs && n))
        return THAW_FAIL(THAW_EINVAL, "thaw_chat_render: NULL argument");
    if (fmt == THAW_CHAT_AUTO) {
        fmt = thaw_tok_chat_format(tok);
        if (fmt == THAW_CHAT_AUTO)
            return THAW_FAIL(THAW_ENOTSUP,
                             "chat: %s; pass a format (chatml, llama3, llama2, "
                             "mistral, zephyr)",
                             eng_tok_chat_template(tok)
                                 ? "the tokenizer's chat template is not a known format"
                                 : "the tokenizer has no chat template");
    }
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role)
            return THAW_FAIL(THAW_EINVAL, "chat: message %zu has no role", i);
    }
    struct out o = { 0 };
    switch (fmt) {
    case THAW_CHAT_CHATML: render_chatml(tok, msgs, n, add_generation_prompt, &o); break;
    case THAW_CHAT_LLAMA3: render_llama3(tok, msgs, n, add_generation_prompt, &o); break;
    case THAW_CHAT_LLAMA2: render_llama2(tok, msgs, n, &o); break;
    case THAW_CHAT_MISTRAL: render_mistral(tok, msgs, n, &o); break;
    case THAW_CHAT_ZEPHYR: render_zephyr(tok, msgs, n, add_generation_prompt, &o); break;
    default: return THAW_FAIL(THAW_EINVAL, "chat: unknown format %d", (int)fmt);
    }
    if (!o.err && !o.p)
        put(&o, "", 0);
    if (o.err) {
        thaw_free(o.p);
        return o.err;
    }
    *out = o.p;
    return 0;
}
