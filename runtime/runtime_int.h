/*
 * runtime_int.h - private to runtime/: thaw-runtime, the action container.
 *
 *   main.c     configuration, signals, drain and exit
 *   model.c    model cards, loading a checkpoint into a ready-to-serve model
 *   gen.c      the generation service: one engine thread, a bounded queue,
 *              per-request text with stop strings, deadlines, cancellation
 *   server.c   HTTP (libmicrohttpd): OpenWhisk /init /run, OpenAI API,
 *              health, readiness, metrics
 *   metrics.c  Prometheus counters and histograms
 *   ledger.c   per-activation usage rows in PostgreSQL (THAW_PG_URL)
 */
#ifndef RUNTIME_INT_H
#define RUNTIME_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "common/thaw_common.h"
#include "engine/thaw_engine.h"
#include "loader/thaw_loader.h"

/* ---------------------------------------------------------------- config */

struct rt_config {
    int port;
    const char *model_uri;  /* THAW_MODEL: loaded at start-up (Knative) */
    const char *cache_dir;  /* THAW_CACHE_DIR */
    unsigned max_seqs;      /* THAW_MAX_SEQS */
    unsigned queue;         /* THAW_QUEUE: waiting requests beyond running ones */
    unsigned ctx;           /* THAW_CTX */
    unsigned threads;       /* THAW_THREADS */
    double drain_s;         /* THAW_DRAIN_S */
    const char *pg_url;     /* THAW_PG_URL */
};

/* ---------------------------------------------------------------- model */

/* Generation defaults of a model card; any request field overrides. */
struct rt_defaults {
    uint32_t max_tokens;
    struct thaw_sampling sampling;
};

struct rt_model {
    char *uri, *name, *system;
    enum thaw_chat_format chat_format;
    struct rt_defaults defaults;
    struct thaw_loader *ld;
    struct thaw_model *m;
    struct thaw_tokenizer *tok;
    int32_t stop_ids[16];
    size_t n_stop_ids;
    double load_ms, load_gbps;
    json_t *tiers;          /* {"remote": bytes, ...} */
    const char *main_tier;
    uint64_t bytes;
};

/*
 * Parse a model card: JSON text {"model": URI, "name", "chat_format",
 * "system", "defaults": {...}}, or (binary) base64 of a zip holding
 * model.json with that text. *card gets the parsed object.
 */
int rt_card_parse(const char *code, int binary, json_t **card) THAW_MUST_CHECK;

/* Load card's checkpoint (through the loader: remote, SSD cache, memory),
 * bind the model and tokenizer. */
int rt_model_load(const json_t *card, const struct rt_config *cfg, struct rt_model **out)
    THAW_MUST_CHECK;
void rt_model_destroy(struct rt_model *m);

/* ---------------------------------------------------------------- generation */

enum rt_finish { RT_RUNNING, RT_STOP, RT_LENGTH, RT_DEADLINE, RT_CANCEL, RT_ERROR };
const char *rt_finish_name(enum rt_finish f);

struct rt_req;

struct rt_req_params {
    uint32_t max_tokens;
    struct thaw_sampling sampling;
    char **stop;            /* stop strings, copied */
    size_t n_stop;
    uint64_t deadline_ns;   /* thaw_now_ns() clock; 0 = none */
};

/* Start the service on model m (engine thread). */
int rt_gen_start(struct rt_model *m, const struct rt_config *cfg) THAW_MUST_CHECK;
/* Stop the engine thread (in-flight requests are cancelled). */
void rt_gen_stop(void);
/* Queue a request; THAW_ELIMIT when the queue is full (overload). ids are
 * copied. On success *out holds a reference (release with rt_req_put). */
int rt_gen_submit(const int32_t *ids, size_t n, const struct rt_req_params *p,
                  struct rt_req **out) THAW_MUST_CHECK;
void rt_req_put(struct rt_req *r);
/* Ask the engine to stop this request (client gone). */
void rt_req_cancel(struct rt_req *r);

/* What a request has produced so far. */
struct rt_req_view {
    char *text;           /* the visible bytes after `have` (thaw_free it) */
    size_t n_new;         /* their length */
    size_t len;           /* all visible bytes (stop strings, held-back bytes excluded) */
    enum rt_finish finish;
    uint32_t completion_tokens;
    double queue_ms, ttft_ms, decode_ms;
    char error[256];
};
/*
 * Wait until the visible text is longer than `have` bytes or the request
 * ends, or timeout_ms passes (-1 = forever), then snapshot it into *v: the
 * new bytes are copied into v->text (free with thaw_free). Returns 0 or
 * -ENOMEM.
 */
int rt_req_wait(struct rt_req *r, size_t have, int timeout_ms, struct rt_req_view *v);
/* Requests running plus queued, and the configured capacity. */
void rt_gen_load(unsigned *active, unsigned *capacity);

/* ---------------------------------------------------------------- metrics */

void rt_metrics_request(const char *api, int code);
void rt_metrics_load(double seconds, int cold);
void rt_metrics_ttft(double seconds);
void rt_metrics_tokens(uint64_t prompt, uint64_t completion);
void rt_metrics_batch(unsigned running);
/* Prometheus text; free with thaw_free. */
char *rt_metrics_render(void);

/* ---------------------------------------------------------------- ledger */

struct rt_usage {
    char activation_id[128], ns[128], action[256], model[512], tier[16];
    uint32_t prompt_tokens, completion_tokens;
    double load_ms;
    int cold;
};
/* Start the ledger writer when pg_url is set (no-op otherwise). */
int rt_ledger_start(const char *pg_url) THAW_MUST_CHECK;
/* Queue one row (dropped with a WARN when the bounded queue is full). */
void rt_ledger_add(const struct rt_usage *u);
/* Flush what is queued (bounded wait) and stop. */
void rt_ledger_stop(double wait_s);

/* ---------------------------------------------------------------- server */

int rt_server_start(const struct rt_config *cfg) THAW_MUST_CHECK;
/* Stop accepting, wait for in-flight requests (up to drain_s), stop. */
void rt_server_drain_and_stop(double drain_s);
/* Load THAW_MODEL in the background (Knative start-up). */
int rt_server_preload(const char *uri) THAW_MUST_CHECK;

#endif /* RUNTIME_INT_H */
