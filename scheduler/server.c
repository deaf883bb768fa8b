/*
 * server.c - thaw-scheduler's HTTP server on libmicrohttpd, one internal
 * thread that runs every handler and owns the PostgreSQL connection:
 *
 *   GET  /healthz                 200 "ok"
 *   GET  /readyz                  200 when PostgreSQL answers (or, degraded, when
 *                                 hosts are known to place by hash), else 503
 *   GET  /metrics                 Prometheus text
 *   POST /v1/placement            {"model": uri, "expected_tokens": n} -> a reservation
 *   POST /v1/hosts/{name}/report  a host agent's state (README, "Host reports")
 *   POST /v1/usage                one activation's usage, once per activation id
 *   POST /filter                  kube-scheduler extender (ExtenderArgs -> ExtenderFilterResult)
 *   POST /prioritize              kube-scheduler extender (ExtenderArgs -> HostPriorityList)
 *
 * The extender reads the checkpoint from the pod annotation thaw.dev/model
 * and maps a node name to the host whose hosts.name equals it, else the one
 * whose hosts.address does. It
 * answers only with NodeNames (configure the extender nodeCacheCapable).
 *
 * PostgreSQL down is a degraded mode, not an error (DESIGN.md): placement
 * ranks the last known live hosts (cached from PostgreSQL every few seconds,
 * plus hosts that reported since) by rendezvous hashing of the checkpoint
 * and says "degraded": true; the extender passes every node and scores the
 * hash's choice. Reconnection is tried on the next request after an
 * exponential backoff (0.1 s doubling to 2 s); /readyz always tries.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/thaw_common.h"
#include "scheduler/scheduler_int.h"
#include "scheduler/server.h"

#define MAX_BODY_BYTES (1u << 20)
#define MODEL_ANNOTATION "thaw.dev/model"

enum {
    P_HEALTHZ, P_READYZ, P_METRICS, P_PLACEMENT, P_FILTER, P_PRIORITIZE, P_USAGE, P_REPORT,
    P_OTHER, N_PATHS
};
/* P_REPORT is matched by prefix and suffix (REPORT_PREFIX name REPORT_SUFFIX). */
static const char *const path_names[N_PATHS] = { "/healthz", "/readyz", "/metrics",
                                                 "/v1/placement", "/filter", "/prioritize",
                                                 "/v1/usage", "/v1/hosts/{name}/report",
                                                 "other" };
#define REPORT_PREFIX "/v1/hosts/"
#define REPORT_SUFFIX "/report"
static const unsigned codes[] = { 200, 400, 404, 405, 413, 500, 503 };
#define N_CODES (sizeof codes / sizeof codes[0])

enum {
    RES_OK, RES_BAD_REQUEST, RES_NOT_FOUND, RES_NO_HOST, RES_NO_CAPACITY, RES_ERROR, RES_DEGRADED,
    N_RESULTS
};
static const char *const result_names[N_RESULTS] = { "ok", "bad_request", "not_found",
                                                     "no_host", "no_capacity", "error",
                                                     "degraded" };
/* Outcomes of host reports and usage records. */
enum { WR_OK, WR_DUPLICATE, WR_BAD_REQUEST, WR_UNAVAILABLE, WR_ERROR, N_WR };
static const char *const write_names[N_WR] = { "ok", "duplicate", "bad_request",
                                                   "unavailable", "error" };
static const double buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5 };
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

/* Reconnection backoff while PostgreSQL is down, and how often the cached
 * live-host list is refreshed while it is up. */
#define BACKOFF_MIN_S 0.1
#define BACKOFF_MAX_S 2.0
#define HOSTS_REFRESH_S 5.0
/* The most hosts the degraded-mode cache holds. */
#define MAX_KNOWN_HOSTS 100000

struct scheduler_server {
    struct MHD_Daemon *d;
    char *pg_url;
    /* Touched only by the server thread. */
    struct thaw_sched_db *db;
    double retry_at;                   /* no reconnect before this (thaw_now_s) */
    double backoff_s;                  /* current backoff, 0 after a success */
    int degraded;                      /* the last attempt to use PostgreSQL failed */
    char pg_error[512];                /* why, for replies */
    uint64_t reconnects;               /* successful connects after a failure */
    struct thaw_sched_host_ref *known; /* last known live hosts (degraded placement) */
    size_t n_known, cap_known;
    double known_at;                   /* when known was read from PostgreSQL; 0 = never */
    char *state_file;                  /* where known is kept across restarts; NULL: nowhere */
    struct thaw_sched_error_stats load_err; /* estimator vs completed loads */
    uint64_t requests[N_PATHS][N_CODES];
    uint64_t placements[N_RESULTS];
    uint64_t reports[N_WR];
    uint64_t usage[N_WR];
    uint64_t hist[N_BUCKETS];
    uint64_t hist_count;
    double hist_sum;
};

/* One request's body, accumulated across handler calls. */
struct req {
    char *body;
    size_t len;
    int too_big;
};

/* Keep why PostgreSQL is unavailable, on one line and without double
 * quotes (it goes into logfmt lines and JSON). */
static void set_pg_error(struct scheduler_server *s, const char *msg)
{
    snprintf(s->pg_error, sizeof s->pg_error, "%s", msg);
    for (char *p = s->pg_error; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
        else if (*p == '"')
            *p = '\'';
    size_t n = strlen(s->pg_error);
    while (n && s->pg_error[n - 1] == ' ')
        s->pg_error[--n] = 0;
}

/* The open database, connecting if need be. While PostgreSQL is down a
 * connect is tried at most once per backoff period (force: now); a failure
 * doubles the period up to BACKOFF_MAX_S. THAW_EPG when unavailable, with
 * the reason in s->pg_error. */
static int db_get(struct scheduler_server *s, int force, struct thaw_sched_db **out)
{
    if (!s->db) {
        double now = thaw_now_s();
        if (!force && now < s->retry_at)
            return THAW_FAIL(THAW_EPG, "%s (next reconnect in %.1fs)", s->pg_error,
                             s->retry_at - now);
        int rc = thaw_sched_db_open(s->pg_url, &s->db);
        if (rc < 0) {
            set_pg_error(s, thaw_errmsg());
            s->backoff_s = s->backoff_s > 0 ? s->backoff_s * 2 : BACKOFF_MIN_S;
            if (s->backoff_s > BACKOFF_MAX_S)
                s->backoff_s = BACKOFF_MAX_S;
            s->retry_at = now + s->backoff_s;
            if (!s->degraded)
                THAW_LOG(THAW_LOG_WARN, "scheduler", "pg_unavailable",
                         "msg=\"%s\" mode=degraded", s->pg_error);
            s->degraded = 1;
            return rc == -ENOMEM ? rc : THAW_FAIL(THAW_EPG, "%s", s->pg_error);
        }
        if (s->degraded) {
            s->reconnects++;
            THAW_LOG(THAW_LOG_WARN, "scheduler", "pg_reconnected", "after_backoff_s=%.1f",
                     s->backoff_s);
        }
        s->backoff_s = 0;
        s->retry_at = 0;
    }
    s->degraded = 0;
    *out = s->db;
    return 0;
}

/* Drop the connection after a database error: the next db_get reconnects
 * at once (the backoff applies only to failed connects). */
static void db_drop(struct scheduler_server *s, int rc)
{
    if (rc == THAW_EPG && s->db) {
        set_pg_error(s, thaw_errmsg());
        thaw_sched_db_close(s->db);
        s->db = NULL;
        s->degraded = 1;
    }
}

/*
 * The known hosts survive a restart in state_file (JSON, written
 * atomically whenever the list changes), so a scheduler that restarts
 * while PostgreSQL is down still places by hash instead of answering 503.
 * The file is a cache: unreadable or invalid, it is ignored with a warning.
 */
static void known_save(struct scheduler_server *s)
{
    if (!s->state_file)
        return;
    json_t *arr = json_array(), *o = NULL;
    for (size_t i = 0; arr && i < s->n_known; i++)
        json_array_append_new(arr, json_pack("{s:I, s:s}", "id", (json_int_t)s->known[i].host_id,
                                             "address", s->known[i].address));
    if (arr)
        o = json_pack("{s:i, s:o}", "version", 1, "hosts", arr);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text || thaw_write_file_atomic(s->state_file, text, strlen(text)) < 0)
        THAW_LOG(THAW_LOG_WARN, "scheduler", "state_save_failed", "file=%s msg=\"%s\"",
                 s->state_file, text ? thaw_errmsg() : "out of memory");
    free(text); /* json_dumps allocates with malloc */ /* checksrc: allow */
}

/* Load state_file into known (at start, before any request). */
static void known_load(struct scheduler_server *s)
{
    char *text = NULL;
    size_t len = 0;
    if (!s->state_file || access(s->state_file, F_OK) != 0)
        return;
    if (thaw_read_file(s->state_file, 64u << 20, &text, &len) < 0) {
        THAW_LOG(THAW_LOG_WARN, "scheduler", "state_load_failed", "file=%s msg=\"%s\"",
                 s->state_file, thaw_errmsg());
        return;
    }
    json_error_t err;
    json_t *o = json_loadb(text, len, 0, &err);
    thaw_free(text);
    json_t *hosts = json_object_get(o, "hosts");
    const char *bad = !o ? err.text
                      : json_integer_value(json_object_get(o, "version")) != 1 ? "not version 1"
                      : !json_is_array(hosts) ? "no \"hosts\" array" : NULL;
    size_t n = bad ? 0 : json_array_size(hosts);
    struct thaw_sched_host_ref *known = n ? thaw_calloc(n, sizeof *known) : NULL;
    if (!bad && n && !known)
        bad = "out of memory";
    for (size_t i = 0; !bad && i < n; i++) {
        json_t *h = json_array_get(hosts, i);
        json_t *id = json_object_get(h, "id"), *addr = json_object_get(h, "address");
        if (!json_is_integer(id) || !json_is_string(addr) || !json_string_length(addr) ||
            json_string_length(addr) >= sizeof known[i].address) {
            bad = "a host needs an integer \"id\" and an \"address\" of 1..127 bytes";
            break;
        }
        known[i].host_id = (int64_t)json_integer_value(id);
        snprintf(known[i].address, sizeof known[i].address, "%s", json_string_value(addr));
    }
    if (bad) {
        THAW_LOG(THAW_LOG_WARN, "scheduler", "state_ignored", "file=%s msg=\"%s\"",
                 s->state_file, bad);
        thaw_free(known);
    } else {
        s->known = known;
        s->n_known = s->cap_known = n > MAX_KNOWN_HOSTS ? MAX_KNOWN_HOSTS : n;
        THAW_LOG(THAW_LOG_INFO, "scheduler", "state_loaded", "file=%s known_hosts=%zu",
                 s->state_file, s->n_known);
    }
    json_decref(o);
}

/* Remember address as a known host (a report while PostgreSQL is down). */
static void known_add(struct scheduler_server *s, int64_t id, const char *address)
{
    for (size_t i = 0; i < s->n_known; i++)
        if (strcmp(s->known[i].address, address) == 0) {
            if (id && s->known[i].host_id != id) {
                s->known[i].host_id = id;
                known_save(s);
            }
            return;
        }
    if (s->n_known == s->cap_known) {
        size_t cap = s->cap_known ? s->cap_known * 2 : 64;
        if (cap > MAX_KNOWN_HOSTS)
            cap = MAX_KNOWN_HOSTS;
        if (cap <= s->n_known)
            return; /* full: the host is not remembered, a warn is not worth it */
        struct thaw_sched_host_ref *k = thaw_realloc(s->known, cap * sizeof *k);
        if (!k)
            return;
        s->known = k;
        s->cap_known = cap;
    }
    struct thaw_sched_host_ref *h = &s->known[s->n_known++];
    memset(h, 0, sizeof *h);
    h->host_id = id;
    snprintf(h->address, sizeof h->address, "%s", address);
    known_save(s);
}

/* Refresh the cached live hosts from db when they are older than
 * HOSTS_REFRESH_S. A failure keeps the old list (and is not an error). */
static void known_refresh(struct scheduler_server *s, struct thaw_sched_db *db)
{
    double now = thaw_now_s();
    if (s->known_at > 0 && now - s->known_at < HOSTS_REFRESH_S)
        return;
    struct thaw_sched_host_ref *hosts;
    size_t n;
    int rc = thaw_sched_live_hosts(db, 0, &hosts, &n);
    if (rc < 0) {
        db_drop(s, rc);
        return;
    }
    if (n > MAX_KNOWN_HOSTS)
        n = MAX_KNOWN_HOSTS;
    int changed = n != s->n_known ||
                  (n && memcmp(hosts, s->known, n * sizeof *hosts) != 0);
    thaw_free(s->known);
    s->known = hosts;
    s->n_known = s->cap_known = n;
    s->known_at = now;
    if (changed)
        known_save(s);
}

static void count(struct scheduler_server *s, int path, unsigned code)
{
    for (size_t i = 0; i < N_CODES; i++)
        if (codes[i] == code)
            s->requests[path][i]++;
}

static enum MHD_Result respond(struct scheduler_server *s, struct MHD_Connection *conn, int path,
                               unsigned code, const char *ctype, const char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    count(s, path, code);
    return ret;
}

/* Respond with j (its reference is taken). */
static enum MHD_Result respond_json(struct scheduler_server *s, struct MHD_Connection *conn,
                                    int path, unsigned code, json_t *j)
{
    enum MHD_Result ret = MHD_NO;
    if (!j)
        return MHD_NO;
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    char *buf = n ? thaw_malloc(n + 1) : NULL;
    if (buf) {
        json_dumpb(j, buf, n, JSON_COMPACT);
        buf[n] = '\n';
        ret = respond(s, conn, path, code, "application/json", buf, n + 1);
    }
    thaw_free(buf);
    json_decref(j);
    return ret;
}

THAW_PRINTF(5, 6)
static enum MHD_Result respond_error(struct scheduler_server *s, struct MHD_Connection *conn,
                                     int path, unsigned code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return respond_json(s, conn, path, code, json_pack("{s:s}", "error", msg));
}

/* ---------------------------------------------------------------- metrics */

struct textbuf {
    char *p;
    size_t len, cap;
};

THAW_PRINTF(2, 3)
static void tb_printf(struct textbuf *b, const char *fmt, ...)
{
    if (b->len >= b->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap;
}

static enum MHD_Result serve_metrics(struct scheduler_server *s, struct MHD_Connection *conn)
{
    struct textbuf b = { thaw_malloc(65536), 0, 65536 };
    if (!b.p)
        return MHD_NO;
    tb_printf(&b, "# HELP thaw_scheduler_requests_total HTTP requests answered, by path and"
                  " status code.\n# TYPE thaw_scheduler_requests_total counter\n");
    for (int p = 0; p < N_PATHS; p++)
        for (size_t c = 0; c < N_CODES; c++)
            if (s->requests[p][c])
                tb_printf(&b, "thaw_scheduler_requests_total{path=\"%s\",code=\"%u\"} %" PRIu64
                              "\n", path_names[p], codes[c], s->requests[p][c]);
    tb_printf(&b, "# HELP thaw_scheduler_placements_total Placement requests, by result.\n"
                  "# TYPE thaw_scheduler_placements_total counter\n");
    for (int r = 0; r < N_RESULTS; r++)
        tb_printf(&b, "thaw_scheduler_placements_total{result=\"%s\"} %" PRIu64 "\n",
                  result_names[r], s->placements[r]);
    tb_printf(&b, "# HELP thaw_scheduler_placement_seconds Time to decide and reserve a"
                  " placement.\n# TYPE thaw_scheduler_placement_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += s->hist[i];
        tb_printf(&b, "thaw_scheduler_placement_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                  buckets[i], cum);
    }
    tb_printf(&b, "thaw_scheduler_placement_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
              s->hist_count);
    tb_printf(&b, "thaw_scheduler_placement_seconds_sum %.9g\n", s->hist_sum);
    tb_printf(&b, "thaw_scheduler_placement_seconds_count %" PRIu64 "\n", s->hist_count);
    tb_printf(&b, "# HELP thaw_scheduler_host_reports_total Host agent reports, by result.\n"
                  "# TYPE thaw_scheduler_host_reports_total counter\n");
    for (int w = 0; w < N_WR; w++)
        if (w != WR_DUPLICATE)
            tb_printf(&b, "thaw_scheduler_host_reports_total{result=\"%s\"} %" PRIu64 "\n",
                      write_names[w], s->reports[w]);
    tb_printf(&b, "# HELP thaw_scheduler_usage_records_total Usage ledger writes, by result.\n"
                  "# TYPE thaw_scheduler_usage_records_total counter\n");
    for (int w = 0; w < N_WR; w++)
        tb_printf(&b, "thaw_scheduler_usage_records_total{result=\"%s\"} %" PRIu64 "\n",
                  write_names[w], s->usage[w]);
    tb_printf(&b, "# HELP thaw_scheduler_degraded 1 while PostgreSQL is unavailable and"
                  " placement hashes over the known hosts.\n# TYPE thaw_scheduler_degraded gauge\n"
                  "thaw_scheduler_degraded %d\n", s->degraded);
    tb_printf(&b, "# HELP thaw_scheduler_known_hosts Hosts the degraded mode would hash over.\n"
                  "# TYPE thaw_scheduler_known_hosts gauge\nthaw_scheduler_known_hosts %zu\n",
              s->n_known);
    tb_printf(&b, "# HELP thaw_scheduler_pg_reconnects_total Reconnections to PostgreSQL after"
                  " it was unavailable.\n# TYPE thaw_scheduler_pg_reconnects_total counter\n"
                  "thaw_scheduler_pg_reconnects_total %" PRIu64 "\n", s->reconnects);
    tb_printf(&b, "# HELP thaw_scheduler_load_predictions_total Completed loads compared with"
                  " the estimator's prediction.\n"
                  "# TYPE thaw_scheduler_load_predictions_total counter\n"
                  "thaw_scheduler_load_predictions_total %" PRIu64 "\n", s->load_err.n);
    tb_printf(&b, "# HELP thaw_scheduler_load_prediction_error Relative error of predicted load"
                  " times, (predicted - actual) / actual: mean (bias), mean absolute, worst.\n"
                  "# TYPE thaw_scheduler_load_prediction_error gauge\n"
                  "thaw_scheduler_load_prediction_error{stat=\"mean\"} %.6g\n"
                  "thaw_scheduler_load_prediction_error{stat=\"mean_abs\"} %.6g\n"
                  "thaw_scheduler_load_prediction_error{stat=\"max_abs\"} %.6g\n",
              s->load_err.mean_rel, s->load_err.mean_abs_rel, s->load_err.max_abs_rel);
    enum MHD_Result ret =
        respond(s, conn, P_METRICS, 200, "text/plain; version=0.0.4", b.p, b.len);
    thaw_free(b.p);
    return ret;
}

static void observe(struct scheduler_server *s, double secs)
{
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (secs <= buckets[i]) {
            s->hist[i]++;
            break;
        }
    s->hist_count++;
    s->hist_sum += secs;
}

/* ---------------------------------------------------------------- placement */

static json_t *estimate_json(int64_t host, const char *address,
                             const struct thaw_sched_estimate *e)
{
    return json_pack("{s:I, s:s, s:f, s:s, s:s}", "host", (json_int_t)host, "address", address,
                     "estimate_s", e->startup_s, "tier", thaw_sched_tier_name(e->tier), "reason",
                     e->reason);
}

/* Parse the body as a JSON object; on failure respond 400 and return NULL. */
static json_t *parse_object(struct scheduler_server *s, struct MHD_Connection *conn, int path,
                            const struct req *rq, enum MHD_Result *ret)
{
    json_error_t jerr;
    json_t *in = json_loadb(rq->body ? rq->body : "", rq->len, 0, &jerr);
    if (!in) {
        *ret = respond_error(s, conn, path, 400, "invalid JSON: %s (line %d)", jerr.text,
                             jerr.line);
        return NULL;
    }
    if (!json_is_object(in)) {
        json_decref(in);
        *ret = respond_error(s, conn, path, 400, "invalid JSON: the body must be an object");
        return NULL;
    }
    return in;
}

/* Placement while PostgreSQL is unavailable: rendezvous hashing of the
 * checkpoint over the known hosts. Nothing is reserved and no estimate is
 * made; the reply says so. 503 only when no host is known at all. */
static enum MHD_Result place_degraded(struct scheduler_server *s, struct MHD_Connection *conn,
                                      const char *model)
{
    size_t order[THAW_SCHED_PLACE_MAX_CANDIDATES];
    size_t n = thaw_sched_hash_rank(s->known, s->n_known, model, order,
                                    THAW_SCHED_PLACE_MAX_CANDIDATES);
    if (n == 0) {
        s->placements[RES_ERROR]++;
        json_t *e = json_pack("{s:s+, s:b}", "error",
                              "PostgreSQL unavailable and no host known to place by hash: ",
                              s->pg_error, "degraded", 1);
        return respond_json(s, conn, P_PLACEMENT, 503, e);
    }
    s->placements[RES_DEGRADED]++;
    char reason[768];
    snprintf(reason, sizeof reason,
             "degraded: hash placement over %zu known hosts (PostgreSQL unavailable: %s)",
             s->n_known, s->pg_error);
    json_t *cands = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct thaw_sched_host_ref *h = &s->known[order[i]];
        json_array_append_new(cands, json_pack("{s:o, s:s}", "host",
                                               h->host_id ? json_integer(h->host_id)
                                                          : json_null(),
                                               "address", h->address));
    }
    const struct thaw_sched_host_ref *h = &s->known[order[0]];
    json_t *o = json_pack("{s:o, s:s, s:n, s:s, s:s, s:n, s:b, s:o}", "host",
                          h->host_id ? json_integer(h->host_id) : json_null(), "address",
                          h->address, "estimate_s", "tier", "unknown", "reason", reason,
                          "reservation_id", "degraded", 1, "candidates", cands);
    THAW_LOG(THAW_LOG_WARN, "scheduler", "placed_degraded", "ckpt=%s host=%s known=%zu", model,
             h->address, s->n_known);
    return respond_json(s, conn, P_PLACEMENT, 200, o);
}

static enum MHD_Result serve_placement(struct scheduler_server *s, struct MHD_Connection *conn,
                                       const struct req *rq)
{
    enum MHD_Result ret;
    json_t *in = parse_object(s, conn, P_PLACEMENT, rq, &ret);
    if (!in) {
        s->placements[RES_BAD_REQUEST]++;
        return ret;
    }
    const char *model = json_string_value(json_object_get(in, "model"));
    json_t *et = json_object_get(in, "expected_tokens");
    uint64_t tokens = 0;
    if (!model || !model[0]) {
        s->placements[RES_BAD_REQUEST]++;
        ret = respond_error(s, conn, P_PLACEMENT, 400,
                            "missing or invalid field \"model\": want a checkpoint URI string");
        goto out;
    }
    if (et && !json_is_null(et)) {
        if (!json_is_integer(et) || json_integer_value(et) < 0) {
            s->placements[RES_BAD_REQUEST]++;
            ret = respond_error(s, conn, P_PLACEMENT, 400,
                                "invalid field \"expected_tokens\": want a non-negative integer");
            goto out;
        }
        tokens = (uint64_t)json_integer_value(et);
    }

    struct thaw_sched_db *db = NULL;
    struct thaw_sched_placement pl;
    double t0 = thaw_now_s();
    int rc = db_get(s, 0, &db);
    if (rc == 0) {
        rc = thaw_sched_place(db, model, tokens, NULL, &pl);
        if (rc == THAW_EPG) {
            /* A connection broken since the last request (PostgreSQL
             * restarted): reconnect at once and try again. */
            db_drop(s, rc);
            rc = db_get(s, 0, &db);
            if (rc == 0)
                rc = thaw_sched_place(db, model, tokens, NULL, &pl);
        }
    }
    double dt = thaw_now_s() - t0;
    if (rc == THAW_EPG) {
        db_drop(s, rc);
        ret = place_degraded(s, conn, model);
        goto out;
    }
    if (s->db)
        known_refresh(s, s->db);
    if (rc == 0) {
        observe(s, dt);
        s->placements[RES_OK]++;
        json_t *cands = json_array();
        for (size_t i = 0; i < pl.n_candidates; i++)
            json_array_append_new(cands, estimate_json(pl.candidates[i].host_id,
                                                       pl.candidates[i].address,
                                                       &pl.candidates[i].est));
        json_t *o = estimate_json(pl.host_id, pl.address, &pl.est);
        json_object_set_new(o, "reservation_id", json_integer((json_int_t)pl.reservation_id));
        json_object_set_new(o, "gpu_bytes", json_integer((json_int_t)pl.gpu_bytes));
        json_object_set_new(o, "degraded", json_false());
        json_object_set_new(o, "candidates", cands);
        ret = respond_json(s, conn, P_PLACEMENT, 200, o);
        goto out;
    }
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", thaw_errmsg());
    unsigned code;
    int result;
    if (rc == THAW_ENOTFOUND && strstr(msg, "no live host")) {
        code = 503, result = RES_NO_HOST;
    } else if (rc == THAW_ENOTFOUND) {
        code = 404, result = RES_NOT_FOUND;
    } else if (rc == THAW_ELIMIT) {
        code = 503, result = RES_NO_CAPACITY;
    } else if (rc == THAW_EINVAL) {
        code = 400, result = RES_BAD_REQUEST;
    } else {
        code = 500, result = RES_ERROR;
    }
    s->placements[result]++;
    ret = respond_error(s, conn, P_PLACEMENT, code, "%s", msg);
out:
    json_decref(in);
    return ret;
}

/* ---------------------------------------------------------------- extender */

/* The pod's thaw.dev/model annotation, or NULL. Borrowed from args. */
static const char *pod_model(json_t *args)
{
    json_t *ann = json_object_get(json_object_get(json_object_get(args, "Pod"), "metadata"),
                                  "annotations");
    const char *m = json_string_value(json_object_get(ann, MODEL_ANNOTATION));
    return m && m[0] ? m : NULL;
}

/* The candidate node names: NodeNames, else Nodes.items[].metadata.name.
 * A new reference. */
static json_t *node_names(json_t *args)
{
    json_t *names = json_object_get(args, "NodeNames");
    if (json_is_array(names))
        return json_incref(names);
    json_t *out = json_array();
    json_t *items = json_object_get(json_object_get(args, "Nodes"), "items");
    size_t i;
    json_t *node;
    json_array_foreach(items, i, node) {
        json_t *name = json_object_get(json_object_get(node, "metadata"), "name");
        if (json_is_string(name))
            json_array_append(out, name);
    }
    return out;
}

/*
 * Node name -> host. A Kubernetes node name is matched against hosts.name
 * (what host agents report under, /v1/hosts/{name}/report) first, then
 * against hosts.address (hosts registered by address alone). Both lists
 * are sorted once per request, so a 1,000-node request costs 1,000 binary
 * searches rather than a million string compares.
 */
struct host_index {
    const struct thaw_sched_host_rank **by_name, **by_addr;
    size_t n_name, n_addr;
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const struct thaw_sched_host_rank *const *)a)->c.name,
                  (*(const struct thaw_sched_host_rank *const *)b)->c.name);
}

static int cmp_addr(const void *a, const void *b)
{
    return strcmp((*(const struct thaw_sched_host_rank *const *)a)->c.address,
                  (*(const struct thaw_sched_host_rank *const *)b)->c.address);
}

/* -ENOMEM or 0; an empty index (n 0) is valid. */
static int host_index_build(struct host_index *ix, const struct thaw_sched_host_rank *hosts,
                            size_t n)
{
    memset(ix, 0, sizeof *ix);
    if (!n)
        return 0;
    ix->by_name = thaw_calloc(n, sizeof *ix->by_name);
    ix->by_addr = thaw_calloc(n, sizeof *ix->by_addr);
    if (!ix->by_name || !ix->by_addr) {
        thaw_free(ix->by_name);
        thaw_free(ix->by_addr);
        memset(ix, 0, sizeof *ix);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (hosts[i].c.name[0])
            ix->by_name[ix->n_name++] = &hosts[i];
        ix->by_addr[ix->n_addr++] = &hosts[i];
    }
    qsort(ix->by_name, ix->n_name, sizeof *ix->by_name, cmp_name);
    qsort(ix->by_addr, ix->n_addr, sizeof *ix->by_addr, cmp_addr);
    return 0;
}

static void host_index_free(struct host_index *ix)
{
    thaw_free(ix->by_name);
    thaw_free(ix->by_addr);
    memset(ix, 0, sizeof *ix);
}

static const struct thaw_sched_host_rank *find_host(const struct host_index *ix, const char *name)
{
    struct thaw_sched_host_rank key;
    const struct thaw_sched_host_rank *kp = &key, *const *hit;
    if (strlen(name) >= sizeof key.c.name)
        return NULL; /* longer than any stored name or address */
    snprintf(key.c.name, sizeof key.c.name, "%s", name);
    snprintf(key.c.address, sizeof key.c.address, "%s", name);
    hit = ix->n_name ? bsearch(&kp, ix->by_name, ix->n_name, sizeof *ix->by_name, cmp_name) : NULL;
    if (!hit && ix->n_addr)
        hit = bsearch(&kp, ix->by_addr, ix->n_addr, sizeof *ix->by_addr, cmp_addr);
    return hit ? *hit : NULL;
}

/* Rank the hosts for model. Returns 0 (ranked), 1 (the checkpoint is not
 * registered: *hosts NULL), 2 (PostgreSQL unavailable: degraded, *hosts
 * NULL) or another error with msg set. */
static int extender_rank(struct scheduler_server *s, const char *model,
                         struct thaw_sched_host_rank **hosts, size_t *n, char *msg, size_t msg_len)
{
    struct thaw_sched_db *db = NULL;
    *hosts = NULL;
    *n = 0;
    int rc = db_get(s, 0, &db);
    if (rc == 0) {
        rc = thaw_sched_rank_hosts(db, model, 0, NULL, hosts, n);
        if (rc == THAW_EPG) { /* reconnect at once once, as placement does */
            db_drop(s, rc);
            rc = db_get(s, 0, &db);
            if (rc == 0)
                rc = thaw_sched_rank_hosts(db, model, 0, NULL, hosts, n);
        }
    }
    if (rc == THAW_EPG) {
        db_drop(s, rc);
        THAW_LOG(THAW_LOG_WARN, "scheduler", "extender_degraded", "model=%s msg=\"%s\"", model,
                 s->pg_error);
        snprintf(msg, msg_len, "degraded: PostgreSQL unavailable: %s", s->pg_error);
        return 2;
    }
    if (s->db)
        known_refresh(s, s->db);
    if (rc == THAW_ENOTFOUND) {
        THAW_LOG(THAW_LOG_WARN, "scheduler", "extender_unknown_checkpoint", "model=%s", model);
        return 1;
    }
    if (rc < 0)
        snprintf(msg, msg_len, "%s", thaw_errmsg());
    return rc;
}

static enum MHD_Result serve_filter(struct scheduler_server *s, struct MHD_Connection *conn,
                                    const struct req *rq)
{
    enum MHD_Result ret;
    json_t *in = parse_object(s, conn, P_FILTER, rq, &ret);
    if (!in)
        return ret;
    json_t *names = node_names(in);
    const char *model = pod_model(in);
    struct thaw_sched_host_rank *hosts = NULL;
    size_t n_hosts = 0;
    char msg[1024] = "";
    int rc = model ? extender_rank(s, model, &hosts, &n_hosts, msg, sizeof msg) : 1;
    json_t *pass = json_array(), *failed = json_object();
    unsigned code = 200;
    struct host_index ix = { 0 };
    if (rc == 0 && host_index_build(&ix, hosts, n_hosts) < 0) {
        rc = -ENOMEM;
        snprintf(msg, sizeof msg, "out of memory indexing %zu hosts", n_hosts);
    }
    if (rc < 0) {
        code = 503;
        json_decref(pass);
        pass = json_null();
    } else {
        size_t i;
        json_t *jn;
        json_array_foreach(names, i, jn) {
            const char *name = json_string_value(jn);
            if (!name)
                continue;
            if (rc > 0) { /* no annotation, unknown checkpoint or degraded: no opinion */
                json_array_append(pass, jn);
                continue;
            }
            const struct thaw_sched_host_rank *h = find_host(&ix, name);
            char why[256];
            if (!h) {
                snprintf(why, sizeof why, "thaw: node is not a registered host");
            } else if (h->state == THAW_SCHED_HOST_STALE) {
                snprintf(why, sizeof why, "thaw: host heartbeat is stale (%.0fs old)",
                         h->heartbeat_age_s);
            } else if (h->state == THAW_SCHED_HOST_FULL) {
                snprintf(why, sizeof why,
                         "thaw: not enough free GPU memory (need %" PRIu64 " bytes, %" PRId64
                         " unreserved)", h->need_bytes, h->gpu_avail_bytes);
            } else {
                json_array_append(pass, jn);
                continue;
            }
            json_object_set_new(failed, name, json_string(why));
        }
    }
    /* Degraded is not an error to kube-scheduler (it would fail the pod):
     * Error stays empty and the log says why. */
    json_t *o = json_pack("{s:n, s:o, s:o, s:{}, s:s}", "Nodes", "NodeNames", pass,
                          "FailedNodes", failed, "FailedAndUnresolvableNodes", "Error",
                          rc == 2 ? "" : msg);
    ret = respond_json(s, conn, P_FILTER, code, o);
    host_index_free(&ix);
    thaw_free(hosts);
    json_decref(names);
    json_decref(in);
    return ret;
}

static enum MHD_Result serve_prioritize(struct scheduler_server *s, struct MHD_Connection *conn,
                                        const struct req *rq)
{
    enum MHD_Result ret;
    json_t *in = parse_object(s, conn, P_PRIORITIZE, rq, &ret);
    if (!in)
        return ret;
    json_t *names = node_names(in);
    const char *model = pod_model(in);
    struct thaw_sched_host_rank *hosts = NULL;
    size_t n_hosts = 0;
    char msg[1024] = "";
    int rc = model ? extender_rank(s, model, &hosts, &n_hosts, msg, sizeof msg) : 1;
    struct host_index ix = { 0 };
    if (rc == 0 && host_index_build(&ix, hosts, n_hosts) < 0) {
        rc = -ENOMEM;
        snprintf(msg, sizeof msg, "out of memory indexing %zu hosts", n_hosts);
    }
    if (rc < 0) {
        ret = respond_error(s, conn, P_PRIORITIZE, 503, "%s", msg);
        goto out;
    }
    /* The fastest candidate scores 10, the others 10 * (best + 1s) / (theirs + 1s):
     * relative, and defined for a warm host's 0 s. Unknown, stale or full: 0. */
    double best = INFINITY;
    size_t i;
    json_t *jn;
    json_array_foreach(names, i, jn) {
        const char *name = json_string_value(jn);
        const struct thaw_sched_host_rank *h = name ? find_host(&ix, name) : NULL;
        if (h && h->state == THAW_SCHED_HOST_OK && h->c.est.startup_s < best)
            best = h->c.est.startup_s;
    }
    /* Degraded: the node that rendezvous hashing of the checkpoint picks
     * among the candidates scores 10, the others 0. */
    size_t hashed = SIZE_MAX;
    if (rc == 2) {
        size_t n_names = json_array_size(names);
        struct thaw_sched_host_ref *refs = n_names ? thaw_calloc(n_names, sizeof *refs) : NULL;
        size_t n_refs = 0;
        json_array_foreach(names, i, jn) {
            if (refs && json_is_string(jn)) {
                snprintf(refs[n_refs].address, sizeof refs[n_refs].address, "%s",
                         json_string_value(jn));
                refs[n_refs++].host_id = (int64_t)i; /* its index in names */
            }
        }
        size_t top;
        if (thaw_sched_hash_rank(refs, n_refs, model, &top, 1) == 1)
            hashed = (size_t)refs[top].host_id;
        thaw_free(refs);
    }
    json_t *list = json_array();
    json_array_foreach(names, i, jn) {
        const char *name = json_string_value(jn);
        if (!name)
            continue;
        const struct thaw_sched_host_rank *h = find_host(&ix, name);
        long score = 0;
        if (rc == 2) {
            score = i == hashed ? 10 : 0;
        } else if (h && h->state == THAW_SCHED_HOST_OK) {
            score = lround(10.0 * (best + 1.0) / (h->c.est.startup_s + 1.0));
            score = score < 0 ? 0 : score > 10 ? 10 : score;
        }
        json_array_append_new(list, json_pack("{s:s, s:i}", "Host", name, "Score", (int)score));
    }
    ret = respond_json(s, conn, P_PRIORITIZE, 200, list);
out:
    host_index_free(&ix);
    thaw_free(hosts);
    json_decref(names);
    json_decref(in);
    return ret;
}

/* ---------------------------------------------------------------- dispatch */

/* ---------------------------------------------------------------- reports and usage */

/* A field that is missing or has the wrong type: its path and why. */
struct field_err {
    char field[96];
    char why[160];
};

THAW_PRINTF(3, 4)
static int field_bad(struct field_err *e, const char *field, const char *fmt, ...)
{
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof e->why, fmt, ap);
    va_end(ap);
    return -1;
}

/* "prefix.key" or "prefix[i].key" paths for error messages. */
static const char *path_of(char *buf, size_t n, const char *prefix, const char *key)
{
    snprintf(buf, n, "%s%s%s", prefix, prefix[0] ? "." : "", key);
    return buf;
}

/* obj[key] as a non-negative integer; absent or null leaves *out. */
static int get_u64(json_t *obj, const char *prefix, const char *key, uint64_t *out,
                   struct field_err *e)
{
    char f[96];
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return field_bad(e, path_of(f, sizeof f, prefix, key), "want a non-negative integer");
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* obj[key] as a finite number >= 0; absent or null leaves *out. */
static int get_f64(json_t *obj, const char *prefix, const char *key, double *out,
                   struct field_err *e)
{
    char f[96];
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v) || !(json_number_value(v) >= 0) || !isfinite(json_number_value(v)))
        return field_bad(e, path_of(f, sizeof f, prefix, key), "want a number >= 0");
    *out = json_number_value(v);
    return 0;
}

/* obj[key] as a string (borrowed from obj); absent or null leaves *out
 * unless required. */
static int get_str(json_t *obj, const char *prefix, const char *key, int required,
                   const char **out, struct field_err *e)
{
    char f[96];
    json_t *v = json_object_get(obj, key);
    if ((!v || json_is_null(v)) && !required)
        return 0;
    if (!json_is_string(v) || (required && !json_string_value(v)[0]))
        return field_bad(e, path_of(f, sizeof f, prefix, key), "want a %sstring",
                         required ? "non-empty " : "");
    *out = json_string_value(v);
    return 0;
}

/* obj[key] as an array (borrowed), NULL when absent or null. */
static int get_array(json_t *obj, const char *key, json_t **out, struct field_err *e)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return field_bad(e, key, "want an array");
    *out = v;
    return 0;
}

/* obj[key] as an object (borrowed), NULL when absent or null. */
static int get_object(json_t *obj, const char *key, json_t **out, struct field_err *e)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return field_bad(e, key, "want an object");
    *out = v;
    return 0;
}

/* arr[i] must be an object. */
static int elem_object(json_t *arr, size_t i, const char *key, char *prefix, size_t n,
                       json_t **out, struct field_err *e)
{
    snprintf(prefix, n, "%s[%zu]", key, i);
    *out = json_array_get(arr, i);
    if (!json_is_object(*out))
        return field_bad(e, prefix, "want an object");
    return 0;
}

/* The arrays a parsed report points into; released with report_free. */
struct parsed_report {
    struct thaw_sched_report rep;
    struct thaw_sched_report_gpu *gpus;
    struct thaw_sched_report_replica *replicas;
    struct thaw_sched_report_instance *instances;
    struct thaw_sched_report_load *loads;
};

static void report_free(struct parsed_report *p)
{
    thaw_free(p->gpus);
    thaw_free(p->replicas);
    thaw_free(p->instances);
    thaw_free(p->loads);
}

/* Allocate n elements of size sz (none when n is 0). */
static int alloc_n(void **out, size_t n, size_t sz)
{
    *out = NULL;
    if (n == 0)
        return 0;
    *out = thaw_calloc(n, sz);
    return *out ? 0 : -ENOMEM;
}

/* Parse a report body (README, "Host reports") into p; strings are
 * borrowed from in. Returns 0, -1 with e set, or -ENOMEM. */
static int parse_report(json_t *in, const char *name, struct parsed_report *p,
                        struct field_err *e)
{
    memset(p, 0, sizeof *p);
    struct thaw_sched_report *r = &p->rep;
    char pre[64];
    json_t *gpus, *dram, *ssd, *bw, *reps, *insts, *loads, *o;
    r->name = name;
    if (get_str(in, "", "address", 1, &r->address, e) || get_array(in, "gpus", &gpus, e) ||
        get_object(in, "dram", &dram, e) || get_object(in, "ssd", &ssd, e) ||
        get_object(in, "bandwidth_bps", &bw, e) || get_array(in, "replicas", &reps, e) ||
        get_array(in, "instances", &insts, e) || get_array(in, "completed_loads", &loads, e))
        return -1;
    if (get_u64(dram, "dram", "capacity_bytes", &r->dram_bytes, e) ||
        get_u64(dram, "dram", "used_bytes", &r->dram_used, e) ||
        get_u64(ssd, "ssd", "capacity_bytes", &r->ssd_bytes, e) ||
        get_u64(ssd, "ssd", "used_bytes", &r->ssd_used, e) ||
        get_f64(bw, "bandwidth_bps", "dram_to_gpu", &r->dram_to_gpu_bps, e) ||
        get_f64(bw, "bandwidth_bps", "ssd", &r->ssd_bps, e) ||
        get_f64(bw, "bandwidth_bps", "network", &r->network_bps, e))
        return -1;

    r->n_gpus = json_array_size(gpus);
    r->n_replicas = json_array_size(reps);
    r->n_instances = json_array_size(insts);
    r->n_loads = json_array_size(loads);
    if (alloc_n((void **)&p->gpus, r->n_gpus, sizeof *p->gpus) ||
        alloc_n((void **)&p->replicas, r->n_replicas, sizeof *p->replicas) ||
        alloc_n((void **)&p->instances, r->n_instances, sizeof *p->instances) ||
        alloc_n((void **)&p->loads, r->n_loads, sizeof *p->loads))
        return -ENOMEM;
    r->gpus = p->gpus;
    r->replicas = p->replicas;
    r->instances = p->instances;
    r->loads = p->loads;

    for (size_t i = 0; i < r->n_gpus; i++) {
        struct thaw_sched_report_gpu *g = &p->gpus[i];
        if (elem_object(gpus, i, "gpus", pre, sizeof pre, &o, e) ||
            get_u64(o, pre, "total_bytes", &g->total_bytes, e) ||
            get_u64(o, pre, "free_bytes", &g->free_bytes, e))
            return -1;
    }
    for (size_t i = 0; i < r->n_replicas; i++) {
        struct thaw_sched_report_replica *q = &p->replicas[i];
        if (elem_object(reps, i, "replicas", pre, sizeof pre, &o, e) ||
            get_str(o, pre, "checkpoint", 1, &q->checkpoint, e) ||
            get_str(o, pre, "tier", 1, &q->tier, e) ||
            get_str(o, pre, "state", 0, &q->state, e) || get_u64(o, pre, "bytes", &q->bytes, e) ||
            get_u64(o, pre, "checkpoint_bytes", &q->checkpoint_bytes, e))
            return -1;
    }
    for (size_t i = 0; i < r->n_instances; i++) {
        struct thaw_sched_report_instance *q = &p->instances[i];
        uint64_t rid = 0;
        json_t *seqs;
        if (elem_object(insts, i, "instances", pre, sizeof pre, &o, e) ||
            get_str(o, pre, "id", 1, &q->name, e) ||
            get_str(o, pre, "checkpoint", 1, &q->checkpoint, e) ||
            get_str(o, pre, "state", 1, &q->state, e) ||
            get_u64(o, pre, "checkpoint_bytes", &q->checkpoint_bytes, e) ||
            get_u64(o, pre, "reservation_id", &rid, e))
            return -1;
        q->reservation_id = rid > (uint64_t)INT64_MAX ? -1 : (int64_t)rid;
        char f[96];
        seqs = json_object_get(o, "sequences");
        if (seqs && !json_is_null(seqs) && !json_is_array(seqs))
            return field_bad(e, path_of(f, sizeof f, pre, "sequences"), "want an array");
        size_t n_seq = json_array_size(seqs);
        if (n_seq > INT32_MAX)
            return field_bad(e, path_of(f, sizeof f, pre, "sequences"), "too many");
        q->n_running = (uint32_t)n_seq;
        for (size_t k = 0; k < n_seq; k++) {
            char spre[128];
            json_t *so;
            uint64_t tin = 0, tout = 0;
            snprintf(spre, sizeof spre, "%s.sequences[%zu]", pre, k);
            so = json_array_get(seqs, k);
            if (!json_is_object(so))
                return field_bad(e, spre, "want an object");
            if (get_u64(so, spre, "tokens_in", &tin, e) ||
                get_u64(so, spre, "tokens_out", &tout, e))
                return -1;
            if (tin > UINT64_MAX / 4 - q->tokens_in || tout > UINT64_MAX / 4 - q->tokens_out)
                return field_bad(e, spre, "too many tokens");
            q->tokens_in += tin;
            q->tokens_out += tout;
        }
    }
    for (size_t i = 0; i < r->n_loads; i++) {
        struct thaw_sched_report_load *q = &p->loads[i];
        if (elem_object(loads, i, "completed_loads", pre, sizeof pre, &o, e) ||
            get_str(o, pre, "id", 1, &q->id, e) ||
            get_str(o, pre, "checkpoint", 1, &q->checkpoint, e) ||
            get_str(o, pre, "tier", 1, &q->tier, e) || get_u64(o, pre, "bytes", &q->bytes, e) ||
            get_f64(o, pre, "ms", &q->ms, e))
            return -1;
    }
    return 0;
}

/* 400 naming the field: {"error": "invalid field \"f\": why", "field": f}. */
static enum MHD_Result respond_field(struct scheduler_server *s, struct MHD_Connection *conn,
                                     int path, const char *field, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "invalid field \"%s\": %s", field, why);
    return respond_json(s, conn, path, 400,
                        json_pack("{s:s, s:s}", "error", msg, "field", field));
}

static enum MHD_Result serve_report(struct scheduler_server *s, struct MHD_Connection *conn,
                                    const char *name, const struct req *rq)
{
    enum MHD_Result ret;
    json_t *in = parse_object(s, conn, P_REPORT, rq, &ret);
    if (!in) {
        s->reports[WR_BAD_REQUEST]++;
        return ret;
    }
    struct parsed_report p;
    struct field_err fe;
    struct thaw_sched_report_result res;
    int rc = parse_report(in, name, &p, &fe);
    if (rc == -1) {
        s->reports[WR_BAD_REQUEST]++;
        ret = respond_field(s, conn, P_REPORT, fe.field, fe.why);
        goto out;
    }
    if (rc < 0) {
        s->reports[WR_ERROR]++;
        ret = respond_error(s, conn, P_REPORT, 500, "out of memory");
        goto out;
    }
    rc = thaw_sched_report_check(&p.rep, &res);
    if (rc == 0) {
        struct thaw_sched_db *db = NULL;
        rc = db_get(s, 0, &db);
        if (rc == 0) {
            rc = thaw_sched_report_apply(db, &p.rep, &s->load_err, &res);
            if (rc == THAW_EPG) {
                db_drop(s, rc);
                rc = db_get(s, 0, &db);
                if (rc == 0)
                    rc = thaw_sched_report_apply(db, &p.rep, &s->load_err, &res);
            }
        }
    }
    if (rc == THAW_EINVAL) {
        s->reports[WR_BAD_REQUEST]++;
        /* The library's message is "\"field\": why". */
        const char *msg = thaw_errmsg();
        const char *why = strstr(msg, "\": ");
        ret = respond_field(s, conn, P_REPORT, res.field[0] ? res.field : "?",
                            why ? why + 3 : msg);
        goto out;
    }
    if (rc == THAW_EPG) {
        /* Not applied, but the host is alive: hash placement may use it. */
        db_drop(s, rc);
        known_add(s, 0, p.rep.address);
        s->reports[WR_UNAVAILABLE]++;
        ret = respond_json(s, conn, P_REPORT, 503,
                           json_pack("{s:s+, s:b}", "error", "PostgreSQL unavailable: ",
                                     s->pg_error, "degraded", 1));
        goto out;
    }
    if (rc < 0) {
        s->reports[WR_ERROR]++;
        ret = respond_error(s, conn, P_REPORT, 500, "%s", thaw_errmsg());
        goto out;
    }
    s->reports[WR_OK]++;
    known_add(s, res.host_id, p.rep.address);
    if (s->db)
        known_refresh(s, s->db);
    ret = respond_json(s, conn, P_REPORT, 200,
                       json_pack("{s:I, s:s, s:b, s:i, s:{s:f, s:f, s:f}}", "host_id",
                                 (json_int_t)res.host_id, "name", name, "created", res.created,
                                 "loads_new", (int)res.n_loads_new, "bandwidth_bps",
                                 "dram_to_gpu", res.dram_to_gpu_bps, "ssd", res.ssd_bps,
                                 "network", res.network_bps));
out:
    report_free(&p);
    json_decref(in);
    return ret;
}

static enum MHD_Result serve_usage(struct scheduler_server *s, struct MHD_Connection *conn,
                                   const struct req *rq)
{
    enum MHD_Result ret;
    json_t *in = parse_object(s, conn, P_USAGE, rq, &ret);
    if (!in) {
        s->usage[WR_BAD_REQUEST]++;
        return ret;
    }
    struct thaw_sched_usage u;
    memset(&u, 0, sizeof u);
    struct field_err fe;
    uint64_t prompt = 0, completion = 0;
    json_t *cold = json_object_get(in, "cold");
    int rc = 0;
    if (get_str(in, "", "activation_id", 1, &u.activation_id, &fe) ||
        get_str(in, "", "namespace", 0, &u.ns, &fe) ||
        get_str(in, "", "action", 0, &u.action, &fe) ||
        get_str(in, "", "model", 0, &u.model, &fe) ||
        get_u64(in, "", "prompt_tokens", &prompt, &fe) ||
        get_u64(in, "", "completion_tokens", &completion, &fe) ||
        get_str(in, "", "load_tier", 0, &u.load_tier, &fe) ||
        get_f64(in, "", "load_ms", &u.load_ms, &fe) || get_f64(in, "", "gpu_ms", &u.gpu_ms, &fe))
        rc = -1;
    else if (prompt > INT32_MAX)
        rc = field_bad(&fe, "prompt_tokens", "above %d", INT32_MAX);
    else if (completion > INT32_MAX)
        rc = field_bad(&fe, "completion_tokens", "above %d", INT32_MAX);
    else if (cold && !json_is_null(cold) && !json_is_boolean(cold))
        rc = field_bad(&fe, "cold", "want true or false");
    if (rc < 0) {
        s->usage[WR_BAD_REQUEST]++;
        ret = respond_field(s, conn, P_USAGE, fe.field, fe.why);
        goto out;
    }
    u.prompt_tokens = (uint32_t)prompt;
    u.completion_tokens = (uint32_t)completion;
    u.cold = json_is_true(cold);

    struct thaw_sched_db *db = NULL;
    int inserted = 0;
    rc = db_get(s, 0, &db);
    if (rc == 0) {
        rc = thaw_sched_usage_record(db, &u, &inserted);
        if (rc == THAW_EPG) {
            db_drop(s, rc);
            rc = db_get(s, 0, &db);
            if (rc == 0)
                rc = thaw_sched_usage_record(db, &u, &inserted);
        }
    }
    if (rc == THAW_EINVAL) {
        s->usage[WR_BAD_REQUEST]++;
        const char *msg = thaw_errmsg();
        const char *q1 = strchr(msg, '"'), *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
        char field[64] = "?";
        if (q2 && (size_t)(q2 - q1 - 1) < sizeof field)
            snprintf(field, sizeof field, "%.*s", (int)(q2 - q1 - 1), q1 + 1);
        ret = respond_field(s, conn, P_USAGE, field, q2 && q2[1] == ':' ? q2 + 3 : msg);
        goto out;
    }
    if (rc == THAW_EPG) {
        /* Nothing is lost: the caller retries, and the ledger is idempotent. */
        db_drop(s, rc);
        s->usage[WR_UNAVAILABLE]++;
        ret = respond_json(s, conn, P_USAGE, 503,
                           json_pack("{s:s+, s:b}", "error", "PostgreSQL unavailable: ",
                                     s->pg_error, "degraded", 1));
        goto out;
    }
    if (rc < 0) {
        s->usage[WR_ERROR]++;
        ret = respond_error(s, conn, P_USAGE, 500, "%s", thaw_errmsg());
        goto out;
    }
    s->usage[inserted ? WR_OK : WR_DUPLICATE]++;
    ret = respond_json(s, conn, P_USAGE, 200,
                       json_pack("{s:s, s:b}", "activation_id", u.activation_id, "inserted",
                                 inserted));
out:
    json_decref(in);
    return ret;
}

/* ---------------------------------------------------------------- dispatch */

/* 200 "ok" when PostgreSQL answers (a connect is always tried, whatever the
 * backoff: probes are rare); 200 "degraded: ..." when it does not but hosts
 * are known, so placements still succeed by hash; 503 when neither. */
static enum MHD_Result serve_readyz(struct scheduler_server *s, struct MHD_Connection *conn)
{
    struct thaw_sched_db *db = NULL;
    int rc = db_get(s, 1, &db);
    if (rc == 0) {
        rc = scheduler_db_ping(db);
        if (rc < 0) {
            db_drop(s, rc);
            rc = db_get(s, 1, &db);
            if (rc == 0)
                rc = scheduler_db_ping(db);
        }
    }
    if (rc == 0) {
        known_refresh(s, db);
        return respond(s, conn, P_READYZ, 200, "text/plain", "ok\n", 3);
    }
    db_drop(s, THAW_EPG);
    s->degraded = 1;
    char msg[1024];
    if (s->n_known) {
        snprintf(msg, sizeof msg,
                 "degraded: PostgreSQL unavailable: %s; placing by hash over %zu known hosts\n",
                 s->pg_error, s->n_known);
        return respond(s, conn, P_READYZ, 200, "text/plain", msg, strlen(msg));
    }
    snprintf(msg, sizeof msg, "not ready: PostgreSQL unavailable: %s; no host known\n",
             s->pg_error);
    return respond(s, conn, P_READYZ, 503, "text/plain", msg, strlen(msg));
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct scheduler_server *s = cls;
    struct req *rq = *con_cls;
    (void)version;
    if (!rq) {
        rq = thaw_calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rq->too_big || rq->len + n > MAX_BODY_BYTES) {
            rq->too_big = 1;
            return MHD_YES;
        }
        char *nb = thaw_realloc(rq->body, rq->len + n + 1);
        if (!nb)
            return MHD_NO;
        memcpy(nb + rq->len, upload_data, n);
        rq->body = nb;
        rq->len += n;
        rq->body[rq->len] = 0;
        return MHD_YES;
    }

    int path = P_OTHER;
    char host_name[256] = "";
    for (int p = 0; p < P_OTHER; p++)
        if (strcmp(url, path_names[p]) == 0)
            path = p;
    size_t url_len = strlen(url), pre_len = strlen(REPORT_PREFIX), suf_len = strlen(REPORT_SUFFIX);
    if (path == P_OTHER && url_len > pre_len + suf_len &&
        strncmp(url, REPORT_PREFIX, pre_len) == 0 &&
        strcmp(url + url_len - suf_len, REPORT_SUFFIX) == 0 &&
        url_len - pre_len - suf_len < sizeof host_name) {
        path = P_REPORT;
        snprintf(host_name, sizeof host_name, "%.*s", (int)(url_len - pre_len - suf_len),
                 url + pre_len);
    }
    if (path == P_OTHER || (path == P_REPORT && !host_name[0]))
        return respond_error(s, conn, P_OTHER, 404, "no such endpoint: %s", url);
    int want_post = path == P_PLACEMENT || path == P_FILTER || path == P_PRIORITIZE ||
                    path == P_USAGE || path == P_REPORT;
    if (strcmp(method, want_post ? "POST" : "GET") != 0)
        return respond_error(s, conn, path, 405, "%s wants %s", path_names[path],
                             want_post ? "POST" : "GET");
    if (rq->too_big)
        return respond_error(s, conn, path, 413, "body larger than %u bytes", MAX_BODY_BYTES);
    switch (path) {
    case P_HEALTHZ:
        return respond(s, conn, path, 200, "text/plain", "ok\n", 3);
    case P_READYZ:
        return serve_readyz(s, conn);
    case P_METRICS:
        return serve_metrics(s, conn);
    case P_PLACEMENT:
        return serve_placement(s, conn, rq);
    case P_FILTER:
        return serve_filter(s, conn, rq);
    case P_USAGE:
        return serve_usage(s, conn, rq);
    case P_REPORT:
        return serve_report(s, conn, host_name, rq);
    default:
        return serve_prioritize(s, conn, rq);
    }
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    struct req *rq = *con_cls;
    if (rq) {
        thaw_free(rq->body);
        thaw_free(rq);
        *con_cls = NULL;
    }
}

static char *dup_str(const char *v)
{
    size_t n = strlen(v) + 1;
    char *p = thaw_malloc(n);
    if (p)
        memcpy(p, v, n);
    return p;
}

int scheduler_server_start(uint16_t port, const char *pg_url, const char *state_file,
                           struct scheduler_server **out)
{
    if (!pg_url || !pg_url[0])
        return THAW_FAIL(THAW_EINVAL, "no PostgreSQL URL (--pg or THAW_PG_URL)");
    struct scheduler_server *s = thaw_calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->pg_url = dup_str(pg_url);
    s->state_file = state_file && state_file[0] ? dup_str(state_file) : NULL;
    if (!s->pg_url || (state_file && state_file[0] && !s->state_file)) {
        thaw_free(s->pg_url);
        thaw_free(s->state_file);
        thaw_free(s);
        return -ENOMEM;
    }
    known_load(s);
    s->d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, port, NULL, NULL, handle, s,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
    if (!s->d) {
        int rc = THAW_FAIL(THAW_EIO, "cannot listen on port %u", (unsigned)port);
        thaw_free(s->known);
        thaw_free(s->state_file);
        thaw_free(s->pg_url);
        thaw_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void scheduler_server_stop(struct scheduler_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->d);
    thaw_sched_db_close(s->db);
    thaw_free(s->known);
    thaw_free(s->state_file);
    thaw_free(s->pg_url);
    thaw_free(s);
}
