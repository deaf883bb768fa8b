/*
 * server.c - thaw-scheduler's HTTP server on libmicrohttpd, one internal
 * thread that runs every handler and owns the PostgreSQL connection:
 *
 *   GET  /healthz       200 "ok"
 *   GET  /readyz        200 when PostgreSQL answers, else 503
 *   GET  /metrics       Prometheus text
 *   POST /v1/placement  {"model": uri, "expected_tokens": n} -> a reservation
 *   POST /filter        kube-scheduler extender (ExtenderArgs -> ExtenderFilterResult)
 *   POST /prioritize    kube-scheduler extender (ExtenderArgs -> HostPriorityList)
 *
 * The extender reads the checkpoint from the pod annotation thaw.dev/model
 * and maps a node name to the host whose hosts.address equals it. It
 * answers only with NodeNames (configure the extender nodeCacheCapable).
 * When PostgreSQL is down, placement answers 503: there is no degraded
 * consistent-hash fallback yet.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/thaw_common.h"
#include "scheduler/scheduler_int.h"
#include "scheduler/server.h"

#define MAX_BODY_BYTES (1u << 20)
#define MODEL_ANNOTATION "thaw.dev/model"

enum { P_HEALTHZ, P_READYZ, P_METRICS, P_PLACEMENT, P_FILTER, P_PRIORITIZE, P_OTHER, N_PATHS };
static const char *const path_names[N_PATHS] = { "/healthz", "/readyz", "/metrics",
                                                 "/v1/placement", "/filter", "/prioritize",
                                                 "other" };
static const unsigned codes[] = { 200, 400, 404, 405, 413, 500, 503 };
#define N_CODES (sizeof codes / sizeof codes[0])

enum { RES_OK, RES_BAD_REQUEST, RES_NOT_FOUND, RES_NO_HOST, RES_NO_CAPACITY, RES_ERROR, N_RESULTS };
static const char *const result_names[N_RESULTS] = { "ok", "bad_request", "not_found",
                                                     "no_host", "no_capacity", "error" };
static const double buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5 };
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

struct scheduler_server {
    struct MHD_Daemon *d;
    char *pg_url;
    struct thaw_sched_db *db;
    /* Touched only by the server thread. */
    uint64_t requests[N_PATHS][N_CODES];
    uint64_t placements[N_RESULTS];
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

/* The open database, opening it if need be. */
static int db_get(struct scheduler_server *s, struct thaw_sched_db **out)
{
    if (!s->db) {
        int rc = thaw_sched_db_open(s->pg_url, &s->db);
        if (rc < 0)
            return rc;
    }
    *out = s->db;
    return 0;
}

/* Drop the connection after a database error: the next request reconnects. */
static void db_drop(struct scheduler_server *s, int rc)
{
    if (rc == THAW_EPG) {
        thaw_sched_db_close(s->db);
        s->db = NULL;
    }
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
    struct textbuf b = { thaw_malloc(32768), 0, 32768 };
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

    struct thaw_sched_db *db;
    int rc = db_get(s, &db);
    if (rc < 0) {
        s->placements[RES_ERROR]++;
        ret = respond_error(s, conn, P_PLACEMENT, 503, "PostgreSQL unavailable: %s",
                            thaw_errmsg());
        goto out;
    }
    struct thaw_sched_placement pl;
    double t0 = thaw_now_s();
    rc = thaw_sched_place(db, model, tokens, NULL, &pl);
    double dt = thaw_now_s() - t0;
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
    } else if (rc == THAW_EPG) {
        code = 503, result = RES_ERROR;
        db_drop(s, rc);
    } else {
        code = 500, result = RES_ERROR;
    }
    s->placements[result]++;
    ret = respond_error(s, conn, P_PLACEMENT, code, "%s%s", rc == THAW_EPG ?
                        "PostgreSQL unavailable: " : "", msg);
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

static const struct thaw_sched_host_rank *find_host(const struct thaw_sched_host_rank *hosts,
                                                    size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(hosts[i].c.address, name) == 0)
            return &hosts[i];
    return NULL;
}

/* Rank the hosts for model. Returns 0 (ranked), 1 (the checkpoint is not
 * registered: *hosts NULL) or THAW_EPG / another error with msg set. */
static int extender_rank(struct scheduler_server *s, const char *model,
                         struct thaw_sched_host_rank **hosts, size_t *n, char *msg, size_t msg_len)
{
    struct thaw_sched_db *db;
    int rc = db_get(s, &db);
    if (rc == 0)
        rc = thaw_sched_rank_hosts(db, model, 0, NULL, hosts, n);
    if (rc == THAW_ENOTFOUND) {
        THAW_LOG(THAW_LOG_WARN, "scheduler", "extender_unknown_checkpoint", "model=%s", model);
        *hosts = NULL;
        *n = 0;
        return 1;
    }
    if (rc < 0) {
        snprintf(msg, msg_len, "%s%s", rc == THAW_EPG ? "PostgreSQL unavailable: " : "",
                 thaw_errmsg());
        db_drop(s, rc);
    }
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
            if (rc == 1) { /* no annotation or unknown checkpoint: no opinion */
                json_array_append(pass, jn);
                continue;
            }
            const struct thaw_sched_host_rank *h = find_host(hosts, n_hosts, name);
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
    json_t *o = json_pack("{s:n, s:o, s:o, s:{}, s:s}", "Nodes", "NodeNames", pass,
                          "FailedNodes", failed, "FailedAndUnresolvableNodes", "Error", msg);
    ret = respond_json(s, conn, P_FILTER, code, o);
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
        const struct thaw_sched_host_rank *h = name ? find_host(hosts, n_hosts, name) : NULL;
        if (h && h->state == THAW_SCHED_HOST_OK && h->c.est.startup_s < best)
            best = h->c.est.startup_s;
    }
    json_t *list = json_array();
    json_array_foreach(names, i, jn) {
        const char *name = json_string_value(jn);
        if (!name)
            continue;
        const struct thaw_sched_host_rank *h = find_host(hosts, n_hosts, name);
        long score = 0;
        if (h && h->state == THAW_SCHED_HOST_OK) {
            score = lround(10.0 * (best + 1.0) / (h->c.est.startup_s + 1.0));
            score = score < 0 ? 0 : score > 10 ? 10 : score;
        }
        json_array_append_new(list, json_pack("{s:s, s:i}", "Host", name, "Score", (int)score));
    }
    ret = respond_json(s, conn, P_PRIORITIZE, 200, list);
out:
    thaw_free(hosts);
    json_decref(names);
    json_decref(in);
    return ret;
}

/* ---------------------------------------------------------------- dispatch */

static enum MHD_Result serve_readyz(struct scheduler_server *s, struct MHD_Connection *conn)
{
    struct thaw_sched_db *db;
    int rc = db_get(s, &db);
    if (rc == 0)
        rc = scheduler_db_ping(db);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "not ready: PostgreSQL unavailable: %s\n", thaw_errmsg());
        db_drop(s, THAW_EPG);
        return respond(s, conn, P_READYZ, 503, "text/plain", msg, strlen(msg));
    }
    return respond(s, conn, P_READYZ, 200, "text/plain", "ok\n", 3);
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
    for (int p = 0; p < P_OTHER; p++)
        if (strcmp(url, path_names[p]) == 0)
            path = p;
    if (path == P_OTHER)
        return respond_error(s, conn, path, 404, "no such endpoint: %s", url);
    int want_post = path == P_PLACEMENT || path == P_FILTER || path == P_PRIORITIZE;
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

int scheduler_server_start(uint16_t port, const char *pg_url, struct scheduler_server **out)
{
    if (!pg_url || !pg_url[0])
        return THAW_FAIL(THAW_EINVAL, "no PostgreSQL URL (--pg or THAW_PG_URL)");
    struct scheduler_server *s = thaw_calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    size_t n = strlen(pg_url) + 1;
    s->pg_url = thaw_malloc(n);
    if (!s->pg_url) {
        thaw_free(s);
        return -ENOMEM;
    }
    memcpy(s->pg_url, pg_url, n);
    s->d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, port, NULL, NULL, handle, s,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
    if (!s->d) {
        int rc = THAW_FAIL(THAW_EIO, "cannot listen on port %u", (unsigned)port);
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
    thaw_free(s->pg_url);
    thaw_free(s);
}
