/*
 * server.c - thaw-runtime's HTTP side (libmicrohttpd, a thread per
 * connection so a handler may wait for its tokens):
 *
 *   POST /init, POST /run          the OpenWhisk action contract
 *   GET  /v1/models                OpenAI API (Knative), streaming as SSE
 *   POST /v1/completions
 *   POST /v1/chat/completions
 *   GET  /healthz, /readyz, /metrics
 *
 * OpenWhisk replies always carry Content-Length; user-level errors are 200
 * {"error": ...} so the container and its loaded model stay warm; every
 * /run ends with the log sentinel on stdout and stderr.
 */
#include <ctype.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/runtime_int.h"

#define BODY_MAX (8u << 20)
#define SENTINEL "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"

enum state { ST_EMPTY, ST_LOADING, ST_READY, ST_FAILED };

static struct {
    const struct rt_config *cfg;
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    enum state state;
    int inited;             /* an /init succeeded or is loading (or THAW_MODEL) */
    int cold_pending;       /* the next activation is the cold one */
    struct rt_model *model;
    double init_ms;
    char error[512];
    int draining;
    unsigned inflight;
    pthread_t preload;
    int preloading;
    pthread_mutex_t env_mu; /* setenv of __OW_* per activation */
    pthread_mutex_t out_mu; /* log lines and sentinels stay whole */
} S = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
        .env_mu = PTHREAD_MUTEX_INITIALIZER, .out_mu = PTHREAD_MUTEX_INITIALIZER };

struct conn {
    char *body;
    size_t len, cap;
    int too_big;
};

/* ---------------------------------------------------------------- replies */

static enum MHD_Result reply_buf(struct MHD_Connection *c, int status, const char *ctype,
                                 char *buf, size_t len, const char *api)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (api)
        rt_metrics_request(api, status);
    return ret;
}

/* Reply with j (reference stolen). */
static enum MHD_Result reply_json(struct MHD_Connection *c, int status, json_t *j, const char *api)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(j);
    if (!s)
        return MHD_NO;
    return reply_buf(c, status, "application/json", s, strlen(s), api);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, int status, const char *msg,
                                   const char *api)
{
    return reply_json(c, status, json_pack("{s:s}", "error", msg), api);
}

/* OpenAI's error object. */
static enum MHD_Result reply_oai_error(struct MHD_Connection *c, int status, const char *type,
                                       const char *param, const char *msg)
{
    json_t *e = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", msg, "type", type,
                          "param", param ? json_string(param) : json_null(), "code", json_null());
    return reply_json(c, status, e, "openai");
}

static void sentinels(void)
{
    pthread_mutex_lock(&S.out_mu);
    fputs(SENTINEL "\n", stdout);
    fflush(stdout);
    fputs(SENTINEL "\n", stderr);
    fflush(stderr);
    pthread_mutex_unlock(&S.out_mu);
}

static void log_line(json_t *rec)
{
    char *s = json_dumps(rec, JSON_COMPACT | JSON_REAL_PRECISION(6));
    if (!s)
        return;
    pthread_mutex_lock(&S.out_mu);
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&S.out_mu);
    free(s);
}

/* A JSON string from bytes that should be UTF-8; invalid bytes become
 * U+FFFD rather than making the reply invalid JSON. */
static json_t *text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    char *t = thaw_malloc(n * 3 + 1);
    if (!t)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = len && i + (size_t)len <= n;
        for (int k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
        if (ok && json_stringn(s + i, (size_t)len) == NULL)
            ok = 0;
        if (ok) {
            memcpy(t + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(t + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(t, o);
    thaw_free(t);
    return j;
}

/* The last error for a user: the message without the "file.c:123: "
 * locations the library records for operators. */
static const char *user_msg(int rc, char *buf, size_t n)
{
    const char *m = thaw_errmsg();
    size_t o = 0;
    if (!m[0])
        m = thaw_strerror(rc);
    while (*m && o + 1 < n) {
        const char *dot = strstr(m, ".c:");
        if (dot) {
            const char *p = dot + 3;
            while (isdigit((unsigned char)*p))
                p++;
            const char *w = dot;
            while (w > m && (isalnum((unsigned char)w[-1]) || w[-1] == '_'))
                w--;
            if (p > dot + 3 && p[0] == ':' && p[1] == ' ' && (w == m || w[-1] == ' ')) {
                size_t k = (size_t)(w - m);
                if (k > n - 1 - o)
                    k = n - 1 - o;
                memcpy(buf + o, m, k);
                o += k;
                m = p + 2;
                continue;
            }
        }
        size_t k = strlen(m);
        if (k > n - 1 - o)
            k = n - 1 - o;
        memcpy(buf + o, m, k);
        o += k;
        break;
    }
    buf[o] = 0;
    return buf;
}

/* ---------------------------------------------------------------- model state */

/* Wait while a load is running; returns the state after. */
static enum state wait_loaded(void)
{
    pthread_mutex_lock(&S.mu);
    while (S.state == ST_LOADING)
        pthread_cond_wait(&S.cv, &S.mu);
    enum state st = S.state;
    pthread_mutex_unlock(&S.mu);
    return st;
}

/* Load a card and start generation; the state machine moves to READY or
 * FAILED. Called with S.state == ST_LOADING. */
static int load_card(const json_t *card)
{
    double t0 = thaw_now_s();
    struct rt_model *m = NULL;
    int rc = rt_model_load(card, S.cfg, &m);
    if (!rc && (rc = rt_gen_start(m, S.cfg))) {
        rt_model_destroy(m);
        m = NULL;
    }
    pthread_mutex_lock(&S.mu);
    if (rc) {
        THAW_LOG(THAW_LOG_ERROR, "runtime", "load_failed", "err=\"%s\"", thaw_errmsg());
        user_msg(rc, S.error, sizeof S.error);
        S.state = ST_FAILED;
        S.inited = 0;
    } else {
        S.model = m;
        S.state = ST_READY;
        S.cold_pending = 1;
        S.init_ms = (thaw_now_s() - t0) * 1e3;
    }
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    if (!rc)
        rt_metrics_load(m->load_ms / 1e3, 1);
    return rc;
}

static void *preload_main(void *arg)
{
    json_t *card = arg;
    (void)load_card(card);
    json_decref(card);
    return NULL;
}

int rt_server_preload(const char *uri)
{
    json_t *card = NULL;
    const char *card_text = getenv("THAW_MODEL_CARD");
    int rc;
    if (card_text && *card_text) {
        if ((rc = rt_card_parse(card_text, 0, &card)))
            return rc;
    } else {
        card = json_pack("{s:s}", "model", uri);
        const char *name = getenv("THAW_MODEL_NAME");
        if (card && name && *name)
            json_object_set_new(card, "name", json_string(name));
    }
    if (!card)
        return -ENOMEM;
    pthread_mutex_lock(&S.mu);
    S.state = ST_LOADING;
    S.inited = 1;
    pthread_mutex_unlock(&S.mu);
    if ((rc = pthread_create(&S.preload, NULL, preload_main, card))) {
        json_decref(card);
        return THAW_FAIL(-rc, "cannot start the model loading thread");
    }
    S.preloading = 1;
    return 0;
}

/* ---------------------------------------------------------------- requests */

struct gen_in {
    int32_t *ids;
    size_t n;
    struct rt_req_params p;
    char *stop_buf[16];
    int chat;
};

static void gen_in_free(struct gen_in *g)
{
    thaw_free(g->ids);
    for (size_t i = 0; i < g->p.n_stop; i++)
        thaw_free(g->stop_buf[i]);
}

static int num_field(json_t *o, const char *k, double lo, double hi, double *out, int *present)
{
    json_t *v = json_object_get(o, k);
    *present = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return THAW_FAIL(THAW_EINVAL, "\"%s\" must be a number in [%g, %g]", k, lo, hi);
    *out = json_number_value(v);
    *present = 1;
    return 0;
}

/* Read the OpenAI/OpenWhisk generation parameters of o over the model's
 * defaults, and tokenize the prompt or the messages. Errors name the field
 * (THAW_EINVAL) or say the prompt is too long (THAW_ELIMIT). */
static int gen_parse(const struct rt_model *m, json_t *o, int want_chat, struct gen_in *g,
                     const char **param)
{
    memset(g, 0, sizeof *g);
    g->p.max_tokens = m->defaults.max_tokens;
    g->p.sampling = m->defaults.sampling;
    *param = NULL;
    double d;
    int has, rc;
    static const struct { const char *k; double lo, hi; int off; } fields[] = {
        { "temperature", 0, 2, 0 }, { "top_p", 0, 1, 1 }, { "min_p", 0, 1, 2 },
        { "presence_penalty", -2, 2, 3 }, { "frequency_penalty", -2, 2, 4 },
        { "repetition_penalty", 0.01, 10, 5 }, { "top_k", -1, 1e6, 6 }, { "seed", -9.2e18, 9.2e18, 7 },
        { "max_tokens", 1, 1 << 20, 8 }, { "max_completion_tokens", 1, 1 << 20, 8 },
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if ((rc = num_field(o, fields[i].k, fields[i].lo, fields[i].hi, &d, &has))) {
            *param = fields[i].k;
            return rc;
        }
        if (!has)
            continue;
        struct thaw_sampling *s = &g->p.sampling;
        switch (fields[i].off) {
        case 0: s->temperature = (float)d; break;
        case 1: s->top_p = d > 0 ? (float)d : 1e-6f; break;
        case 2: s->min_p = (float)d; break;
        case 3: s->presence_penalty = (float)d; break;
        case 4: s->frequency_penalty = (float)d; break;
        case 5: s->repetition_penalty = (float)d; break;
        case 6: s->top_k = d < 0 ? 0 : (int)d; break;
        case 7: s->seed = (uint64_t)(int64_t)d; break;
        case 8: g->p.max_tokens = (uint32_t)d; break;
        }
    }
    json_t *n = json_object_get(o, "n");
    if (n && !json_is_null(n) && !(json_is_integer(n) && json_integer_value(n) == 1)) {
        *param = "n";
        return THAW_FAIL(THAW_EINVAL, "\"n\" must be 1 (one choice per request)");
    }
    json_t *stop = json_object_get(o, "stop");
    if (stop && !json_is_null(stop)) {
        size_t k = 0;
        json_t *item;
        if (json_is_string(stop)) {
            g->stop_buf[k++] = thaw_strdup(json_string_value(stop));
        } else if (json_is_array(stop) && json_array_size(stop) <= 16) {
            size_t i;
            json_array_foreach(stop, i, item) {
                if (!json_is_string(item) || !json_string_length(item)) {
                    g->p.n_stop = k;
                    *param = "stop";
                    return THAW_FAIL(THAW_EINVAL, "\"stop\" must be a string or a list of up to "
                                     "16 non-empty strings");
                }
                g->stop_buf[k++] = thaw_strdup(json_string_value(item));
            }
        } else {
            *param = "stop";
            return THAW_FAIL(THAW_EINVAL, "\"stop\" must be a string or a list of up to 16 "
                             "non-empty strings");
        }
        g->p.n_stop = k;
        for (size_t i = 0; i < k; i++)
            if (!g->stop_buf[i])
                return -ENOMEM;
        if (k == 1 && !g->stop_buf[0][0])
            g->p.n_stop = 0, thaw_free(g->stop_buf[0]);
        g->p.stop = g->stop_buf;
    }
    json_t *prompt = json_object_get(o, "prompt"), *msgs = json_object_get(o, "messages");
    if (want_chat >= 0 && ((want_chat && !msgs) || (!want_chat && !prompt))) {
        *param = want_chat ? "messages" : "prompt";
        return THAW_FAIL(THAW_EINVAL, "\"%s\" is required", *param);
    }
    if (!prompt && !msgs) {
        *param = "prompt";
        return THAW_FAIL(THAW_EINVAL, "\"prompt\" (a string) or \"messages\" (a list of "
                         "{\"role\", \"content\"}) is required");
    }
    if (msgs && !(want_chat == 0)) {
        g->chat = 1;
        if (!json_is_array(msgs) || !json_array_size(msgs)) {
            *param = "messages";
            return THAW_FAIL(THAW_EINVAL, "\"messages\" must be a non-empty list");
        }
        size_t nm = json_array_size(msgs), k = 0;
        struct thaw_chat_msg *cm = thaw_calloc(nm + 1, sizeof *cm);
        char **owned = thaw_calloc(nm, sizeof *owned);
        if (!cm || !owned) {
            thaw_free(cm);
            thaw_free(owned);
            return -ENOMEM;
        }
        int has_system = 0;
        rc = 0;
        for (size_t i = 0; i < nm && !rc; i++) {
            json_t *mm = json_array_get(msgs, i), *role = json_object_get(mm, "role"),
                   *content = json_object_get(mm, "content");
            if (!json_is_string(role)) {
                rc = THAW_FAIL(THAW_EINVAL, "messages[%zu].role must be a string", i);
                break;
            }
            const char *text = NULL;
            if (json_is_string(content)) {
                text = json_string_value(content);
            } else if (json_is_array(content)) { /* [{"type":"text","text":...}] */
                size_t tot = 0, j;
                json_t *part;
                json_array_foreach(content, j, part)
                    if (json_is_string(json_object_get(part, "text")))
                        tot += json_string_length(json_object_get(part, "text"));
                char *buf = thaw_malloc(tot + 1);
                if (!buf) {
                    rc = -ENOMEM;
                    break;
                }
                size_t at = 0;
                json_array_foreach(content, j, part) {
                    json_t *t = json_object_get(part, "text");
                    if (json_is_string(t)) {
                        memcpy(buf + at, json_string_value(t), json_string_length(t));
                        at += json_string_length(t);
                    }
                }
                buf[at] = 0;
                owned[i] = buf;
                text = buf;
            } else if (json_is_null(content)) {
                text = "";
            } else {
                rc = THAW_FAIL(THAW_EINVAL, "messages[%zu].content must be a string", i);
                break;
            }
            if (strcmp(json_string_value(role), "system") == 0)
                has_system = 1;
            cm[k++] = (struct thaw_chat_msg){ json_string_value(role), text };
        }
        char *rendered = NULL;
        if (!rc && m->system && !has_system) {
            memmove(cm + 1, cm, k * sizeof *cm);
            cm[0] = (struct thaw_chat_msg){ "system", m->system };
            k++;
        }
        if (!rc)
            rc = thaw_chat_render(m->tok, m->chat_format, cm, k, 1, &rendered);
        if (!rc)
            rc = thaw_tok_encode(m->tok, rendered, strlen(rendered), 0, &g->ids, &g->n);
        thaw_free(rendered);
        for (size_t i = 0; i < nm; i++)
            thaw_free(owned[i]);
        thaw_free(owned);
        thaw_free(cm);
        if (rc) {
            *param = "messages";
            return rc;
        }
    } else {
        if (json_is_array(prompt) && json_array_size(prompt) == 1 &&
            json_is_string(json_array_get(prompt, 0)))
            prompt = json_array_get(prompt, 0);
        if (json_is_string(prompt)) {
            rc = thaw_tok_encode(m->tok, json_string_value(prompt), json_string_length(prompt), 1,
                                 &g->ids, &g->n);
        } else if (json_is_array(prompt) && json_array_size(prompt) &&
                   json_is_integer(json_array_get(prompt, 0))) { /* token ids */
            g->n = json_array_size(prompt);
            g->ids = thaw_malloc(g->n * sizeof *g->ids);
            rc = g->ids ? 0 : -ENOMEM;
            for (size_t i = 0; !rc && i < g->n; i++) {
                json_t *v = json_array_get(prompt, i);
                if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                    json_integer_value(v) >= thaw_model_config(m->m)->vocab)
                    rc = THAW_FAIL(THAW_EINVAL, "prompt[%zu] is not a token id", i);
                else
                    g->ids[i] = (int32_t)json_integer_value(v);
            }
        } else {
            rc = THAW_FAIL(THAW_EINVAL, "\"prompt\" must be a string");
        }
        if (rc) {
            *param = "prompt";
            return rc;
        }
    }
    unsigned ctx = S.cfg->ctx;
    int maxpos = thaw_model_config(m->m)->max_pos;
    if (maxpos > 0 && (unsigned)maxpos < ctx)
        ctx = (unsigned)maxpos;
    if (g->n == 0) {
        *param = g->chat ? "messages" : "prompt";
        return THAW_FAIL(THAW_EINVAL, "the prompt is empty");
    }
    if (g->n + 1 > ctx) {
        *param = g->chat ? "messages" : "prompt";
        return THAW_FAIL(THAW_ELIMIT, "the prompt has %zu tokens; this model's context is %u "
                         "tokens (including the reply)", g->n, ctx);
    }
    if (g->p.max_tokens > ctx - g->n)
        g->p.max_tokens = (uint32_t)(ctx - g->n);
    if ((rc = thaw_sampling_validate(&g->p.sampling)))
        return rc;
    return 0;
}

/* Whether the client closed its connection (a non-streamed request has no
 * write to fail, so look: a readable socket with nothing to read is EOF). */
static int client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Wait for the whole reply; a client that goes away cancels its request,
 * so its slot is free at once. */
static int wait_done(struct MHD_Connection *c, struct rt_req *r, struct rt_req_view *v)
{
    size_t have = 0;
    int cancelled = 0;
    char *acc = NULL;
    size_t acc_len = 0;
    for (;;) {
        struct rt_req_view x;
        int rc = rt_req_wait(r, have, 1000, &x);
        if (rc) {
            thaw_free(acc);
            return rc;
        }
        if (x.n_new) {
            char *t = thaw_realloc(acc, acc_len + x.n_new + 1);
            if (!t) {
                thaw_free(x.text);
                thaw_free(acc);
                return -ENOMEM;
            }
            acc = t;
            memcpy(acc + acc_len, x.text, x.n_new);
            acc_len += x.n_new;
            acc[acc_len] = 0;
        }
        thaw_free(x.text);
        have = x.len;
        if (x.finish == RT_RUNNING && !cancelled && client_gone(c)) {
            rt_req_cancel(r);
            cancelled = 1;
        }
        if (x.finish != RT_RUNNING) {
            *v = x;
            v->text = acc ? acc : thaw_strdup("");
            v->n_new = acc_len;
            return v->text ? 0 : -ENOMEM;
        }
    }
}

/* The per-invocation record: cold or warm, load and init time, tiers,
 * queue, time to first token, time per output token. */
static json_t *record(const struct rt_model *m, const struct rt_req_view *v, size_t prompt_tokens,
                      int cold, const char *activation_id)
{
    double per_tok = v->completion_tokens > 1 ? v->decode_ms / (v->completion_tokens - 1) : 0;
    json_t *r = json_pack("{s:b, s:f, s:f, s:f, s:s, s:O, s:I, s:f, s:f, s:f, s:I, s:I}",
                          "cold", cold, "init_ms", cold ? S.init_ms : 0.0, "load_ms",
                          cold ? m->load_ms : 0.0, "load_gbps", cold ? m->load_gbps : 0.0,
                          "load_tier", cold ? m->main_tier : "warm", "tiers", m->tiers,
                          "load_bytes", (json_int_t)(cold ? m->bytes : 0), "queue_ms",
                          v->queue_ms, "ttft_ms", v->ttft_ms, "ms_per_output_token", per_tok,
                          "prompt_tokens", (json_int_t)prompt_tokens, "completion_tokens",
                          (json_int_t)v->completion_tokens);
    if (r && activation_id)
        json_object_set_new(r, "activation_id", json_string(activation_id));
    return r;
}

static int take_cold(void)
{
    pthread_mutex_lock(&S.mu);
    int c = S.cold_pending;
    S.cold_pending = 0;
    pthread_mutex_unlock(&S.mu);
    return c;
}

/* ---------------------------------------------------------------- OpenWhisk */

static json_t *parse_body(const struct conn *cn, json_error_t *je)
{
    const char *b = cn->body ? cn->body : "";
    size_t n = cn->len;
    while (n && isspace((unsigned char)b[n - 1]))
        n--;
    size_t i = 0;
    while (i < n && isspace((unsigned char)b[i]))
        i++;
    if (i == n || (n - i == 4 && memcmp(b + i, "null", 4) == 0))
        return json_object();
    return json_loadb(b + i, n - i, JSON_DECODE_ANY, je);
}

static char *json_to_env(json_t *v)
{
    if (json_is_string(v))
        return thaw_strdup(json_string_value(v));
    if (!v || json_is_null(v))
        return thaw_strdup("");
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *t = s ? thaw_strdup(s) : NULL;
    free(s);
    return t;
}

static enum MHD_Result ow_init(struct MHD_Connection *c, const struct conn *cn)
{
    json_error_t je;
    json_t *body = parse_body(cn, &je);
    if (!body) {
        char msg[300];
        snprintf(msg, sizeof msg, "Error unmarshaling request: %s", je.text);
        sentinels();
        return reply_error(c, 400, msg, "openwhisk");
    }
    json_t *value = json_is_object(body) ? json_object_get(body, "value") : NULL;
    if (!json_is_object(value))
        value = NULL;
    int code_given = value && json_is_string(json_object_get(value, "code")) &&
                     json_string_length(json_object_get(value, "code"));
    pthread_mutex_lock(&S.mu);
    /* One init per container. A container that loads THAW_MODEL itself
     * takes an /init without code (the platform always sends one). */
    if (S.inited && (code_given || !S.preloading)) {
        pthread_mutex_unlock(&S.mu);
        json_decref(body);
        const char *m = "Cannot initialize the action more than once.";
        pthread_mutex_lock(&S.out_mu);
        fprintf(stdout, "%s\n", m);
        fflush(stdout);
        fprintf(stderr, "%s\n", m);
        pthread_mutex_unlock(&S.out_mu);
        return reply_error(c, 403, m, "openwhisk");
    }
    /* env first: the action's configuration is visible before loading. */
    json_t *env = value ? json_object_get(value, "env") : NULL;
    if (json_is_object(env)) {
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v) {
            char *s = json_to_env(v);
            if (s)
                setenv(k, s, 1);
            thaw_free(s);
        }
    }
    json_t *code = value ? json_object_get(value, "code") : NULL;
    int binary = value && json_is_true(json_object_get(value, "binary"));
    if (!json_is_string(code) || !json_string_length(code)) {
        if (S.preloading) { /* the image's THAW_MODEL is the action */
            pthread_mutex_unlock(&S.mu);
            json_decref(body);
            enum state st = wait_loaded();
            if (st == ST_READY)
                return reply_json(c, 200, json_pack("{s:b}", "ok", 1), "openwhisk");
            sentinels();
            return reply_error(c, 502, S.error, "openwhisk");
        }
        pthread_mutex_unlock(&S.mu);
        json_decref(body);
        sentinels();
        return reply_error(c, 403, "Missing main/no code to execute.", "openwhisk");
    }
    S.inited = 1;
    S.state = ST_LOADING;
    pthread_mutex_unlock(&S.mu);
    json_t *card = NULL;
    int rc = rt_card_parse(json_string_value(code), binary, &card);
    json_decref(body);
    if (rc) {
        pthread_mutex_lock(&S.mu);
        user_msg(rc, S.error, sizeof S.error);
        S.state = ST_FAILED;
        S.inited = 0;
        pthread_cond_broadcast(&S.cv);
        pthread_mutex_unlock(&S.mu);
    } else {
        rc = load_card(card);
        json_decref(card);
    }
    if (rc) {
        char msg[600];
        snprintf(msg, sizeof msg, "Initialization has failed due to: %s", S.error);
        pthread_mutex_lock(&S.out_mu);
        fprintf(stderr, "%s\n", msg);
        pthread_mutex_unlock(&S.out_mu);
        sentinels();
        return reply_error(c, 502, msg, "openwhisk");
    }
    return reply_json(c, 200, json_pack("{s:b}", "ok", 1), "openwhisk");
}

/* Export each activation field k as __OW_K (for the duration of the run;
 * concurrent runs see the latest). */
static void export_activation(json_t *body)
{
    const char *k;
    json_t *v;
    pthread_mutex_lock(&S.env_mu);
    json_object_foreach(body, k, v) {
        if (strcmp(k, "value") == 0 || strlen(k) > 64)
            continue;
        char name[80] = "__OW_";
        size_t o = 5;
        for (const char *p = k; *p; p++)
            name[o++] = (char)toupper((unsigned char)*p);
        name[o] = 0;
        char *s = json_to_env(v);
        if (s)
            setenv(name, s, 1);
        thaw_free(s);
    }
    pthread_mutex_unlock(&S.env_mu);
}

static const char *jstr_or(json_t *o, const char *k, const char *def)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : def;
}

/* deadline: epoch milliseconds as a string or a number → monotonic ns. */
static uint64_t deadline_ns(json_t *body)
{
    json_t *v = json_object_get(body, "deadline");
    double ms = 0;
    if (json_is_string(v))
        ms = strtod(json_string_value(v), NULL);
    else if (json_is_number(v))
        ms = json_number_value(v);
    if (!(ms > 0))
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now_ms = (double)ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    double left = ms - now_ms;
    uint64_t now = thaw_now_ns();
    return left <= 0 ? now : now + (uint64_t)(left * 1e6);
}

static enum MHD_Result ow_run(struct MHD_Connection *c, const struct conn *cn)
{
    json_error_t je;
    json_t *body = parse_body(cn, &je);
    enum MHD_Result ret;
    if (!body || !json_is_object(body)) {
        json_decref(body);
        sentinels();
        return reply_error(c, 400, "The request body must be a JSON object.", "openwhisk");
    }
    json_t *value = json_object_get(body, "value");
    if (!value || json_is_null(value)) {
        value = json_object();
        json_object_set_new(body, "value", value);
    }
    if (!json_is_object(value) && !json_is_array(value)) {
        json_decref(body);
        sentinels();
        return reply_error(c, 404, "The action did not receive a dictionary or array as an "
                                   "argument.", "openwhisk");
    }
    if (wait_loaded() != ST_READY) {
        json_decref(body);
        sentinels();
        pthread_mutex_lock(&S.mu);
        int failed = S.state == ST_FAILED;
        pthread_mutex_unlock(&S.mu);
        return reply_error(c, 403, failed ? S.error : "System not initialized.", "openwhisk");
    }
    export_activation(body);
    const char *act_id = jstr_or(body, "activation_id", "");
    struct rt_model *m = S.model;
    struct gen_in g;
    const char *param;
    json_t *result = NULL;
    int rc = json_is_object(value) ? gen_parse(m, value, -1, &g, &param)
                                   : THAW_FAIL(THAW_EINVAL, "the action takes an object with "
                                               "\"prompt\" or \"messages\"");
    if (!json_is_object(value))
        memset(&g, 0, sizeof g);
    g.p.deadline_ns = deadline_ns(body);
    struct rt_req *r = NULL;
    if (!rc)
        rc = rt_gen_submit(g.ids, g.n, &g.p, &r);
    if (rc) {
        char msg[512];
        result = json_pack("{s:s}", "error", user_msg(rc, msg, sizeof msg));
    } else {
        struct rt_req_view v;
        int cold = 0;
        if ((rc = wait_done(c, r, &v)) == 0) {
            cold = take_cold();
            if (v.finish == RT_ERROR) {
                result = json_pack("{s:s}", "error", v.error);
            } else {
                json_t *text = text_json(v.text, v.n_new);
                const char *fin = rt_finish_name(v.finish);
                result = g.chat ? json_pack("{s:{s:s, s:o}}", "message", "role", "assistant",
                                            "content", text)
                                : json_pack("{s:o}", "text", text);
                json_object_set_new(result, "finish_reason", json_string(fin));
                json_object_set_new(result, "model", json_string(m->name));
                json_object_set_new(result, "usage",
                                    json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)g.n,
                                              "completion_tokens", (json_int_t)v.completion_tokens,
                                              "total_tokens",
                                              (json_int_t)(g.n + v.completion_tokens)));
                json_t *rec = record(m, &v, g.n, cold, act_id);
                json_object_set_new(result, "thaw", rec);
                json_t *line = json_pack("{s:s, s:s, s:s, s:s, s:O}", "event", "activation",
                                         "activation_id", act_id, "namespace",
                                         jstr_or(body, "namespace", ""), "action",
                                         jstr_or(body, "action_name", ""), "thaw", rec);
                if (line) {
                    json_object_set_new(line, "finish_reason", json_string(fin));
                    log_line(line);
                    json_decref(line);
                }
                rt_metrics_tokens(g.n, v.completion_tokens);
                if (v.ttft_ms > 0)
                    rt_metrics_ttft(v.ttft_ms / 1e3);
                struct rt_usage u = { .prompt_tokens = (uint32_t)g.n,
                                      .completion_tokens = v.completion_tokens,
                                      .load_ms = cold ? m->load_ms : 0, .cold = cold };
                snprintf(u.activation_id, sizeof u.activation_id, "%s", act_id);
                snprintf(u.ns, sizeof u.ns, "%s", jstr_or(body, "namespace", ""));
                snprintf(u.action, sizeof u.action, "%s", jstr_or(body, "action_name", ""));
                snprintf(u.model, sizeof u.model, "%s", m->uri);
                snprintf(u.tier, sizeof u.tier, "%s", cold ? m->main_tier : "none");
                if (act_id[0])
                    rt_ledger_add(&u);
            }
            thaw_free(v.text);
        }
        rt_req_put(r);
        if (!result)
            result = json_pack("{s:s}", "error", "out of memory");
    }
    gen_in_free(&g);
    json_decref(body);
    ret = reply_json(c, 200, result, "openwhisk");
    sentinels();
    return ret;
}

/* ---------------------------------------------------------------- OpenAI */

struct sse {
    struct rt_req *r;
    int chat, include_usage, done, role_sent;
    size_t have, prompt_tokens;
    char id[40], model[128];
    long created;
    char *out;
    size_t out_len, out_off;
    double t0;
};

static int sse_add(struct sse *s, json_t *chunk)
{
    char *j = json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (!j)
        return -ENOMEM;
    size_t n = strlen(j);
    char *t = thaw_realloc(s->out, s->out_len + n + 9);
    if (!t) {
        free(j);
        return -ENOMEM;
    }
    s->out = t;
    memcpy(s->out + s->out_len, "data: ", 6);
    memcpy(s->out + s->out_len + 6, j, n);
    memcpy(s->out + s->out_len + 6 + n, "\n\n", 2);
    s->out_len += n + 8;
    free(j);
    return 0;
}

static json_t *oai_chunk(struct sse *s, json_t *choice)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", s->id, "object",
                     s->chat ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)s->created, "model", s->model, "choices", choice);
}

static json_t *usage_obj(size_t prompt, size_t completion)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct sse *s = cls;
    while (s->out_off == s->out_len) {
        s->out_len = s->out_off = 0;
        if (s->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (s->chat && !s->role_sent) {
            s->role_sent = 1;
            if (sse_add(s, oai_chunk(s, json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", 0,
                                                  "delta", "role", "assistant", "content", "",
                                                  "logprobs", "finish_reason"))))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        struct rt_req_view v;
        if (rt_req_wait(s->r, s->have, 15000, &v))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        int rc = 0;
        if (v.n_new) {
            json_t *t = text_json(v.text, v.n_new);
            json_t *ch = s->chat ? json_pack("{s:i, s:{s:o}, s:n, s:n}", "index", 0, "delta",
                                             "content", t, "logprobs", "finish_reason")
                                 : json_pack("{s:i, s:o, s:n, s:n}", "index", 0, "text", t,
                                             "logprobs", "finish_reason");
            rc = sse_add(s, oai_chunk(s, ch));
        }
        s->have = v.len;
        if (!rc && v.finish != RT_RUNNING) {
            const char *fin = v.finish == RT_ERROR ? "error" : rt_finish_name(v.finish);
            json_t *ch = s->chat ? json_pack("{s:i, s:{}, s:n, s:s}", "index", 0, "delta",
                                             "logprobs", "finish_reason", fin)
                                 : json_pack("{s:i, s:s, s:n, s:s}", "index", 0, "text", "",
                                             "logprobs", "finish_reason", fin);
            rc = sse_add(s, oai_chunk(s, ch));
            if (!rc && s->include_usage) {
                json_t *u = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", s->id, "object",
                                      s->chat ? "chat.completion.chunk" : "text_completion",
                                      "created", (json_int_t)s->created, "model", s->model,
                                      "choices", "usage",
                                      usage_obj(s->prompt_tokens, v.completion_tokens));
                rc = sse_add(s, u);
            }
            if (!rc) {
                char *t = thaw_realloc(s->out, s->out_len + 15);
                if (!t) {
                    rc = -ENOMEM;
                } else {
                    s->out = t;
                    memcpy(s->out + s->out_len, "data: [DONE]\n\n", 14);
                    s->out_len += 14;
                }
            }
            s->done = 1;
            rt_metrics_tokens(s->prompt_tokens, v.completion_tokens);
            if (v.ttft_ms > 0)
                rt_metrics_ttft(v.ttft_ms / 1e3);
            json_t *line = json_pack("{s:s, s:s, s:O}", "event", "request", "api",
                                     s->chat ? "chat.completions" : "completions", "thaw",
                                     json_null());
            if (line) {
                json_object_set_new(line, "thaw", record(S.model, &v, s->prompt_tokens,
                                                         take_cold(), s->id));
                json_object_set_new(line, "finish_reason", json_string(fin));
                log_line(line);
                json_decref(line);
            }
        } else if (!rc && !v.n_new) {
            /* Nothing new for a while: an SSE comment keeps proxies from
             * timing the connection out. */
            char *t = thaw_realloc(s->out, s->out_len + 14);
            if (!t) {
                rc = -ENOMEM;
            } else {
                s->out = t;
                memcpy(s->out + s->out_len, ": keep-alive\n\n", 14);
                s->out_len += 14;
            }
        }
        thaw_free(v.text);
        if (rc)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->out_len - s->out_off;
    if (n > max)
        n = max;
    memcpy(buf, s->out + s->out_off, n);
    s->out_off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    struct sse *s = cls;
    if (!s->done)
        rt_req_cancel(s->r); /* the client went away */
    rt_req_put(s->r);
    thaw_free(s->out);
    thaw_free(s);
}

static void new_id(char *out, size_t n, const char *prefix)
{
    static _Atomic uint64_t ctr;
    uint64_t x = thaw_now_ns() ^ ((uint64_t)getpid() << 40) ^ (atomic_fetch_add(&ctr, 1) * 0x9e3779b97f4a7c15ull);
    snprintf(out, n, "%s%016llx%08llx", prefix, (unsigned long long)x,
             (unsigned long long)(atomic_load(&ctr) & 0xffffffffu));
}

static enum MHD_Result oai_generate(struct MHD_Connection *c, const struct conn *cn, int chat)
{
    if (wait_loaded() != ST_READY)
        return reply_oai_error(c, 503, "service_unavailable", NULL, "no model is loaded");
    json_error_t je;
    json_t *body = parse_body(cn, &je);
    if (!body || !json_is_object(body)) {
        json_decref(body);
        return reply_oai_error(c, 400, "invalid_request_error", NULL,
                               "the request body must be a JSON object");
    }
    struct rt_model *m = S.model;
    json_t *model = json_object_get(body, "model");
    if (json_is_string(model) && strcmp(json_string_value(model), m->name) != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "The model `%s` does not exist.", json_string_value(model));
        json_decref(body);
        return reply_oai_error(c, 404, "NotFoundError", "model", msg);
    }
    struct gen_in g;
    const char *param = NULL;
    int rc = gen_parse(m, body, chat, &g, &param);
    int stream = json_is_true(json_object_get(body, "stream"));
    json_t *so = json_object_get(body, "stream_options");
    int include_usage = json_is_true(json_object_get(so, "include_usage"));
    json_decref(body);
    struct rt_req *r = NULL;
    if (!rc)
        rc = rt_gen_submit(g.ids, g.n, &g.p, &r);
    if (rc) {
        gen_in_free(&g);
        char mbuf[512];
        const char *msg = user_msg(rc, mbuf, sizeof mbuf);
        if (rc == THAW_ELIMIT && !param)
            return reply_oai_error(c, 429, "rate_limit_error", NULL, msg);
        return reply_oai_error(c, 400, "invalid_request_error", param, msg);
    }
    char id[40];
    new_id(id, sizeof id, chat ? "chatcmpl-" : "cmpl-");
    long created = (long)time(NULL);
    if (stream) {
        struct sse *s = thaw_calloc(1, sizeof *s);
        if (!s) {
            rt_req_cancel(r);
            rt_req_put(r);
            gen_in_free(&g);
            return MHD_NO;
        }
        s->r = r;
        s->chat = chat;
        s->include_usage = include_usage;
        s->prompt_tokens = g.n;
        s->created = created;
        snprintf(s->id, sizeof s->id, "%s", id);
        snprintf(s->model, sizeof s->model, "%s", m->name);
        gen_in_free(&g);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, s, sse_free);
        if (!resp) {
            sse_free(s);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        rt_metrics_request("openai", 200);
        return ret;
    }
    struct rt_req_view v;
    rc = wait_done(c, r, &v);
    rt_req_put(r);
    if (rc) {
        gen_in_free(&g);
        return reply_oai_error(c, 500, "internal_error", NULL, "out of memory");
    }
    int cold = take_cold();
    if (v.finish == RT_ERROR) {
        thaw_free(v.text);
        gen_in_free(&g);
        return reply_oai_error(c, 500, "internal_error", NULL, v.error);
    }
    json_t *text = text_json(v.text, v.n_new);
    const char *fin = rt_finish_name(v.finish);
    json_t *choice = chat ? json_pack("{s:i, s:{s:s, s:o}, s:n, s:s}", "index", 0, "message",
                                      "role", "assistant", "content", text, "logprobs",
                                      "finish_reason", fin)
                          : json_pack("{s:i, s:o, s:n, s:s}", "index", 0, "text", text,
                                      "logprobs", "finish_reason", fin);
    json_t *rec = record(m, &v, g.n, cold, id);
    json_t *out = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o, s:O}", "id", id, "object",
                            chat ? "chat.completion" : "text_completion", "created",
                            (json_int_t)created, "model", m->name, "choices", choice, "usage",
                            usage_obj(g.n, v.completion_tokens), "thaw", rec);
    json_t *line = json_pack("{s:s, s:s, s:O}", "event", "request", "api",
                             chat ? "chat.completions" : "completions", "thaw", rec);
    if (line) {
        json_object_set_new(line, "finish_reason", json_string(fin));
        log_line(line);
        json_decref(line);
    }
    json_decref(rec);
    rt_metrics_tokens(g.n, v.completion_tokens);
    if (v.ttft_ms > 0)
        rt_metrics_ttft(v.ttft_ms / 1e3);
    thaw_free(v.text);
    gen_in_free(&g);
    return reply_json(c, 200, out, "openai");
}

static enum MHD_Result oai_models(struct MHD_Connection *c)
{
    pthread_mutex_lock(&S.mu);
    json_t *data = json_array();
    if (S.state == ST_READY)
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:I}", "id", S.model->name,
                                              "object", "model", "created", (json_int_t)time(NULL),
                                              "owned_by", "thaw", "max_model_len",
                                              (json_int_t)S.cfg->ctx));
    pthread_mutex_unlock(&S.mu);
    return reply_json(c, 200, json_pack("{s:s, s:o}", "object", "list", "data", data), "openai");
}

/* ---------------------------------------------------------------- routing */

static enum MHD_Result route(struct MHD_Connection *c, const char *method, const char *url,
                             struct conn *cn)
{
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/healthz") == 0 && get)
        return reply_json(c, 200, json_pack("{s:s}", "status", "ok"), NULL);
    if (strcmp(url, "/readyz") == 0 && get) {
        pthread_mutex_lock(&S.mu);
        enum state st = S.state;
        int draining = S.draining;
        json_t *j = json_pack("{s:s}", "status",
                              draining ? "draining" : st == ST_READY ? "ready"
                              : st == ST_LOADING ? "loading" : st == ST_FAILED ? "failed" : "empty");
        if (st == ST_READY)
            json_object_set_new(j, "model", json_string(S.model->name));
        if (st == ST_FAILED)
            json_object_set_new(j, "error", json_string(S.error));
        pthread_mutex_unlock(&S.mu);
        return reply_json(c, st == ST_READY && !draining ? 200 : 503, j, NULL);
    }
    if (strcmp(url, "/metrics") == 0 && get) {
        char *m = rt_metrics_render();
        if (!m)
            return MHD_NO;
        char *copy = strdup(m); /* MHD frees with free() */
        thaw_free(m);
        if (!copy)
            return MHD_NO;
        return reply_buf(c, 200, "text/plain; version=0.0.4", copy, strlen(copy), NULL);
    }
    if (cn->too_big) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body larger than %u bytes", BODY_MAX);
        if (strncmp(url, "/v1/", 4) == 0)
            return reply_oai_error(c, 413, "invalid_request_error", NULL, msg);
        sentinels();
        return reply_error(c, 413, msg, "openwhisk");
    }
    pthread_mutex_lock(&S.mu);
    int draining = S.draining;
    pthread_mutex_unlock(&S.mu);
    if (strcmp(url, "/init") == 0 && post)
        return ow_init(c, cn);
    if (strcmp(url, "/run") == 0 && post) {
        if (draining) {
            sentinels();
            return reply_error(c, 503, "The action container is shutting down.", "openwhisk");
        }
        return ow_run(c, cn);
    }
    if (strncmp(url, "/v1/", 4) == 0) {
        if (draining)
            return reply_oai_error(c, 503, "service_unavailable", NULL, "shutting down");
        if (strcmp(url, "/v1/models") == 0 && get)
            return oai_models(c);
        if (strcmp(url, "/v1/completions") == 0 && post)
            return oai_generate(c, cn, 0);
        if (strcmp(url, "/v1/chat/completions") == 0 && post)
            return oai_generate(c, cn, 1);
        return reply_oai_error(c, 404, "NotFoundError", NULL, "unknown endpoint");
    }
    return reply_error(c, 404, "not found", "other");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct conn *cn = *con_cls;
    if (!cn) {
        cn = thaw_calloc(1, sizeof *cn);
        if (!cn)
            return MHD_NO;
        *con_cls = cn;
        pthread_mutex_lock(&S.mu);
        S.inflight++;
        pthread_mutex_unlock(&S.mu);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cn->too_big && cn->len + *upload_size <= BODY_MAX) {
            if (cn->len + *upload_size + 1 > cn->cap) {
                size_t nc = cn->cap ? cn->cap : 4096;
                while (nc < cn->len + *upload_size + 1)
                    nc *= 2;
                char *b = thaw_realloc(cn->body, nc);
                if (!b)
                    return MHD_NO;
                cn->body = b;
                cn->cap = nc;
            }
            memcpy(cn->body + cn->len, upload, *upload_size);
            cn->len += *upload_size;
            cn->body[cn->len] = 0;
        } else {
            cn->too_big = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return route(c, method, url, cn);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct conn *cn = *con_cls;
    if (!cn)
        return;
    thaw_free(cn->body);
    thaw_free(cn);
    *con_cls = NULL;
    pthread_mutex_lock(&S.mu);
    S.inflight--;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

int rt_server_start(const struct rt_config *cfg)
{
    S.cfg = cfg;
    S.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                               MHD_USE_ITC | MHD_USE_ERROR_LOG,
                           (uint16_t)cfg->port, NULL, NULL, handle, NULL,
                           MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                           MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024,
                           MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0, MHD_OPTION_END);
    if (!S.d)
        return THAW_FAIL(THAW_EIO, "cannot listen on port %d", cfg->port);
    THAW_LOG(THAW_LOG_INFO, "runtime", "listening", "port=%d", cfg->port);
    return 0;
}

void rt_server_drain_and_stop(double drain_s)
{
    pthread_mutex_lock(&S.mu);
    S.draining = 1;
    pthread_mutex_unlock(&S.mu);
    /* Stop accepting: close the listening socket, keep the connections. */
    MHD_socket ls = MHD_quiesce_daemon(S.d);
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    double until = thaw_now_s() + drain_s;
    pthread_mutex_lock(&S.mu);
    while (S.inflight > 0 && thaw_now_s() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&S.cv, &S.mu, &ts);
    }
    unsigned left = S.inflight;
    pthread_mutex_unlock(&S.mu);
    if (left)
        THAW_LOG(THAW_LOG_WARN, "runtime", "drain_timeout", "in_flight=%u", left);
    /* A start-up load still running gets the rest of the drain time; it
     * cannot be interrupted, so past that it is left to the process exit
     * (the SSD cache only ever shows complete entries). */
    int loading = 0;
    pthread_mutex_lock(&S.mu);
    while (S.state == ST_LOADING && thaw_now_s() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&S.cv, &S.mu, &ts);
    }
    loading = S.state == ST_LOADING;
    pthread_mutex_unlock(&S.mu);
    rt_gen_stop(); /* wakes any handler still waiting (cancelled) */
    if (loading) {
        THAW_LOG(THAW_LOG_WARN, "runtime", "exit_while_loading", "drain_s=%.0f", drain_s);
        return; /* the process exits; the loading thread with it */
    }
    MHD_stop_daemon(S.d);
    S.d = NULL;
    if (S.preloading) {
        pthread_join(S.preload, NULL);
        S.preloading = 0;
    }
    rt_model_destroy(S.model);
    S.model = NULL;
}
