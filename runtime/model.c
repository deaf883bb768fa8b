/*
 * model.c - model cards and loading. A card names a checkpoint and the
 * generation defaults of the action; loading goes through the tiered loader
 * (remote object store or peer, SSD cache, memory) and binds the engine's
 * model and the tokenizer to the loaded buffers.
 */
#include <ctype.h>
#include <string.h>
#include <zip.h>

#include "ckpt/thaw_ckpt.h"
#include "runtime/runtime_int.h"

#define CARD_MAX (1u << 20)

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Decode base64 (standard or URL alphabet, whitespace ignored). */
static int b64_decode(const char *s, unsigned char **out, size_t *n)
{
    size_t len = strlen(s);
    unsigned char *buf = thaw_malloc(len / 4 * 3 + 3);
    if (!buf)
        return -ENOMEM;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (isspace(c))
            continue;
        if (c == '=')
            break;
        int v = b64val(c);
        if (v < 0) {
            thaw_free(buf);
            return THAW_FAIL(THAW_EFORMAT, "code: invalid base64 character at offset %zu", i);
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits);
        }
    }
    *out = buf;
    *n = o;
    return 0;
}

/* model.json from a zip archive held in memory (libzip). */
static int card_from_zip(const unsigned char *data, size_t n, char **text)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(data, n, 0, &ze);
    if (!src) {
        zip_error_fini(&ze);
        return -ENOMEM;
    }
    zip_t *z = zip_open_from_source(src, ZIP_RDONLY, &ze);
    if (!z) {
        int rc = THAW_FAIL(THAW_EFORMAT, "code: binary action is not a zip archive: %s",
                           zip_error_strerror(&ze));
        zip_source_free(src);
        zip_error_fini(&ze);
        return rc;
    }
    zip_stat_t st;
    int rc = 0;
    if (zip_stat(z, "model.json", 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        rc = THAW_FAIL(THAW_ENOTFOUND, "code: the zip archive has no model.json");
    } else if (st.size > CARD_MAX) {
        rc = THAW_FAIL(THAW_ELIMIT, "code: model.json is larger than %u bytes", CARD_MAX);
    } else {
        zip_file_t *f = zip_fopen(z, "model.json", 0);
        char *buf = thaw_malloc(st.size + 1);
        zip_int64_t got = f && buf ? zip_fread(f, buf, st.size) : -1;
        if (f)
            zip_fclose(f);
        if (got != (zip_int64_t)st.size) {
            thaw_free(buf);
            rc = buf ? THAW_FAIL(THAW_EFORMAT, "code: cannot read model.json from the zip") : -ENOMEM;
        } else {
            buf[st.size] = 0;
            *text = buf;
        }
    }
    zip_close(z); /* frees src */
    zip_error_fini(&ze);
    return rc;
}

int rt_card_parse(const char *code, int binary, json_t **card)
{
    *card = NULL;
    char *text = NULL;
    int rc = 0;
    if (binary) {
        unsigned char *raw = NULL;
        size_t n = 0;
        if ((rc = b64_decode(code, &raw, &n)))
            return rc;
        rc = card_from_zip(raw, n, &text);
        thaw_free(raw);
        if (rc)
            return rc;
        code = text;
    }
    json_error_t je;
    json_t *j = json_loads(code, 0, &je);
    thaw_free(text);
    if (!j)
        return THAW_FAIL(THAW_EFORMAT, "model card: not JSON (line %d: %s); expected "
                         "{\"model\": \"<checkpoint URI>\", ...}", je.line, je.text);
    if (!json_is_object(j) || !json_is_string(json_object_get(j, "model"))) {
        json_decref(j);
        return THAW_FAIL(THAW_EINVAL, "model card: \"model\" (the checkpoint URI) is required");
    }
    json_t *d = json_object_get(j, "defaults");
    if (d && !json_is_object(d)) {
        json_decref(j);
        return THAW_FAIL(THAW_EINVAL, "model card: \"defaults\" must be an object");
    }
    *card = j;
    return 0;
}

static const char *jstr(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A short model id: the card's name, else the URI's last path element. */
static char *model_name(const char *name, const char *uri)
{
    if (name)
        return thaw_strdup(name);
    size_t n = strlen(uri);
    while (n && uri[n - 1] == '/')
        n--;
    size_t b = n;
    while (b && uri[b - 1] != '/')
        b--;
    char *s = thaw_malloc(n - b + 1);
    if (!s)
        return NULL;
    memcpy(s, uri + b, n - b);
    s[n - b] = 0;
    return s;
}

static int parse_defaults(const json_t *d, struct rt_defaults *out)
{
    out->max_tokens = 256;
    thaw_sampling_defaults(&out->sampling);
    out->sampling.temperature = 0.7f;
    if (!d)
        return 0;
    static const char *const nums[] = { "temperature", "top_p", "min_p", "presence_penalty",
                                        "frequency_penalty", "repetition_penalty" };
    float *dst[] = { &out->sampling.temperature, &out->sampling.top_p, &out->sampling.min_p,
                     &out->sampling.presence_penalty, &out->sampling.frequency_penalty,
                     &out->sampling.repetition_penalty };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        json_t *v = json_object_get(d, nums[i]);
        if (!v)
            continue;
        if (!json_is_number(v))
            return THAW_FAIL(THAW_EINVAL, "model card: defaults.%s must be a number", nums[i]);
        *dst[i] = (float)json_number_value(v);
    }
    json_t *v = json_object_get(d, "max_tokens");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 20)
            return THAW_FAIL(THAW_EINVAL, "model card: defaults.max_tokens must be an integer >= 1");
        out->max_tokens = (uint32_t)json_integer_value(v);
    }
    if ((v = json_object_get(d, "top_k"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return THAW_FAIL(THAW_EINVAL, "model card: defaults.top_k must be an integer >= 0");
        out->sampling.top_k = (int)json_integer_value(v);
    }
    int rc = thaw_sampling_validate(&out->sampling);
    if (rc)
        thaw_err_ctx("model card defaults");
    return rc;
}

/* The tokenizer is parsed on its own thread while the weights load: the
 * loader hands over the side files before it reads any weight. */
struct tok_job {
    pthread_t th;
    int started, rc;
    char *tj, *cj, err[512];
    size_t tl, cl;
    struct thaw_tokenizer *tok;
    double ms;
};

static void *tok_main(void *arg)
{
    struct tok_job *j = arg;
    double t0 = thaw_now_s();
    j->rc = thaw_tok_load(j->tj, j->tl, j->cj, j->cl, &j->tok);
    if (j->rc)
        snprintf(j->err, sizeof j->err, "%s", thaw_errmsg());
    j->ms = (thaw_now_s() - t0) * 1e3;
    return NULL;
}

static void on_meta(void *arg, const struct thaw_loader *ld)
{
    struct tok_job *j = arg;
    const char *tj = thaw_loader_side_file(ld, "tokenizer.json", &j->tl);
    const char *cj = thaw_loader_side_file(ld, "tokenizer_config.json", &j->cl);
    if (!tj)
        return; /* reported after the load */
    /* Copies: if the load fails, the loader frees its side files. */
    j->tj = thaw_malloc(j->tl + 1);
    j->cj = cj ? thaw_malloc(j->cl + 1) : NULL;
    if (!j->tj || (cj && !j->cj))
        return;
    memcpy(j->tj, tj, j->tl);
    j->tj[j->tl] = 0;
    if (cj) {
        memcpy(j->cj, cj, j->cl);
        j->cj[j->cl] = 0;
    }
    j->started = pthread_create(&j->th, NULL, tok_main, j) == 0;
}

static void tok_job_join(struct tok_job *j)
{
    if (j->started) {
        pthread_join(j->th, NULL);
        j->started = 0;
    }
    THAW_FREE(j->tj);
    THAW_FREE(j->cj);
}

int rt_model_load(const json_t *card, const struct rt_config *cfg, struct rt_model **out)
{
    *out = NULL;
    struct rt_model *m = thaw_calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    const char *uri = jstr(card, "model"), *fmt = jstr(card, "chat_format"),
               *sys = jstr(card, "system");
    int rc = parse_defaults(json_object_get(card, "defaults"), &m->defaults);
    if (rc)
        goto fail;
    m->chat_format = THAW_CHAT_AUTO;
    if (fmt && (rc = thaw_chat_format_parse(fmt, &m->chat_format))) {
        thaw_err_ctx("model card: chat_format");
        goto fail;
    }
    m->uri = thaw_strdup(uri);
    m->name = model_name(jstr(card, "name"), uri);
    m->system = sys ? thaw_strdup(sys) : NULL;
    m->tiers = json_object();
    if (!m->uri || !m->name || (sys && !m->system) || !m->tiers) {
        rc = -ENOMEM;
        goto fail;
    }
    struct tok_job tj = { 0 };
    struct thaw_loader_opts lo = { .cache_dir = cfg->cache_dir, .on_meta = on_meta,
                                   .on_meta_arg = &tj };
    double t0 = thaw_now_s();
    if ((rc = thaw_loader_load(uri, &lo, &m->ld))) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", thaw_errmsg());
        tok_job_join(&tj);
        thaw_tok_destroy(tj.tok);
        thaw_err_restore(rc, msg);
        thaw_err_ctx("loading %s", uri);
        goto fail;
    }
    double t_loaded = thaw_now_s();
    {
        const struct thaw_manifest *man = thaw_loader_manifest(m->ld);
        uint32_t np = thaw_manifest_n_partitions(man);
        void **parts = thaw_calloc(np ? np : 1, sizeof *parts);
        if (!parts) {
            rc = -ENOMEM;
        } else {
            for (uint32_t p = 0; p < np; p++)
                parts[p] = thaw_loader_partition(m->ld, p, NULL);
            struct thaw_model_source src = { .manifest = man, .partitions = parts };
            src.config_json = thaw_loader_side_file(m->ld, "config.json", &src.config_len);
            rc = thaw_model_open(&src, &m->m);
            thaw_free(parts);
        }
    }
    double t_tok = thaw_now_s();
    tok_job_join(&tj); /* usually done already */
    m->tok = tj.tok;
    if (rc) {
        thaw_err_ctx("%s", uri);
        goto fail;
    }
    if (!thaw_loader_side_file(m->ld, "tokenizer.json", NULL)) {
        rc = THAW_FAIL(THAW_ENOTFOUND, "%s: the checkpoint has no tokenizer.json", uri);
        goto fail;
    }
    if (tj.rc || !m->tok) {
        rc = tj.rc ? thaw_err_restore(tj.rc, tj.err) : -ENOMEM;
        thaw_err_ctx("%s: tokenizer.json", uri);
        goto fail;
    }
    m->n_stop_ids = thaw_tok_stop_ids(m->tok, m->stop_ids, 16);
    if (m->n_stop_ids > 16)
        m->n_stop_ids = 16;
    if (!m->n_stop_ids && thaw_model_config(m->m)->eos_id >= 0)
        m->stop_ids[m->n_stop_ids++] = thaw_model_config(m->m)->eos_id;
    m->load_ms = (thaw_now_s() - t0) * 1e3;
    const struct thaw_load_stats *st = thaw_loader_stats(m->ld);
    m->bytes = st->bytes;
    m->load_gbps = st->gbps;
    m->main_tier = thaw_tier_name(st->main_tier);
    for (int t = 0; t < THAW_TIER_COUNT; t++)
        if (st->tier[t].bytes)
            json_object_set_new(m->tiers, thaw_tier_name((enum thaw_tier)t),
                                json_integer((json_int_t)st->tier[t].bytes));
    THAW_LOG(THAW_LOG_INFO, "runtime", "model_loaded",
             "uri=%s name=%s bytes=%llu load_ms=%.1f loader_ms=%.1f bind_ms=%.1f tokenizer_ms=%.1f "
             "tokenizer_wait_ms=%.1f gbps=%.2f tier=%s method=%s", uri, m->name,
             (unsigned long long)m->bytes, m->load_ms, (t_loaded - t0) * 1e3,
             (t_tok - t_loaded) * 1e3, tj.ms, (thaw_now_s() - t_tok) * 1e3,
             m->load_gbps, m->main_tier, st->method ? st->method : "?");
    *out = m;
    return 0;
fail:
    rt_model_destroy(m);
    return rc;
}

void rt_model_destroy(struct rt_model *m)
{
    if (!m)
        return;
    thaw_tok_destroy(m->tok);
    thaw_model_destroy(m->m);
    thaw_loader_destroy(m->ld);
    json_decref(m->tiers);
    thaw_free(m->uri);
    thaw_free(m->name);
    thaw_free(m->system);
    thaw_free(m);
}
