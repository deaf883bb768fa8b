/*
 * place.c - placement against the PostgreSQL locality store (DESIGN.md,
 * Placement): read the live hosts and where a checkpoint's replicas sit,
 * rank the hosts with room by estimated start-up time, and reserve GPU
 * memory on the best, all in one transaction. The live hosts' rows are
 * locked FOR UPDATE in id order (no deadlock between placers) before their
 * reservations are summed by a second statement, which under READ COMMITTED
 * sees every reservation committed by a placer that held those locks: two
 * decisions can never book the same GPU bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "scheduler/scheduler_int.h"

struct thaw_sched_db {
    PGconn *conn;
};

/* Every live host's state for one checkpoint; $1 checkpoint id, $2 the
 * locked host ids. The reserved bytes are subtracted here. */
static const char state_sql[] =
    "SELECT h.id, h.address, h.dram_to_gpu_bps, h.ssd_bps, h.network_bps,"
    " (h.gpu_free_bytes - coalesce((SELECT sum(v.gpu_bytes) FROM reservations v"
    "   WHERE v.host = h.id AND v.expires_at > now()), 0))::bigint,"
    " extract(epoch FROM now() - h.heartbeat)::float8,"
    " coalesce((SELECT sum(p.bytes) FROM replicas p WHERE p.host = h.id"
    "   AND p.checkpoint = $1::bigint AND p.tier = 'dram' AND p.state = 'ready'), 0)::bigint,"
    " coalesce((SELECT sum(p.bytes) FROM replicas p WHERE p.host = h.id"
    "   AND p.checkpoint = $1::bigint AND p.tier = 'ssd' AND p.state = 'ready'), 0)::bigint,"
    " EXISTS (SELECT 1 FROM instances i WHERE i.host = h.id AND i.model = $1::bigint"
    "   AND i.state IN ('ready', 'busy'))"
    " FROM hosts h WHERE h.id = ANY($2::bigint[]) ORDER BY h.id";

int thaw_sched_db_open(const char *pg_url, struct thaw_sched_db **out)
{
    int rc;
    if (!pg_url || !pg_url[0])
        return THAW_FAIL(THAW_EINVAL, "no PostgreSQL URL (--pg or THAW_PG_URL)");
    struct thaw_sched_db *db = thaw_calloc(1, sizeof *db);
    if (!db)
        return -ENOMEM;
    db->conn = PQconnectdb(pg_url);
    if (!db->conn) {
        rc = -ENOMEM;
        goto fail;
    }
    if (PQstatus(db->conn) != CONNECTION_OK) {
        rc = THAW_FAIL(THAW_EPG, "connecting to PostgreSQL: %s", PQerrorMessage(db->conn));
        goto fail;
    }
    *out = db;
    return 0;

fail:
    PQfinish(db->conn);
    thaw_free(db);
    return rc;
}

void thaw_sched_db_close(struct thaw_sched_db *db)
{
    if (!db)
        return;
    PQfinish(db->conn);
    thaw_free(db);
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static double col_f64(const PGresult *r, int row, int col)
{
    return strtod(PQgetvalue(r, row, col), NULL);
}

/* Run a parameterised query expecting `ok`; on failure the result is
 * cleared, *res is NULL and THAW_EPG names what failed. */
static int exec_params(PGconn *c, const char *sql, int n, const char *const *params,
                       ExecStatusType ok, const char *what, PGresult **res)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != ok) {
        int rc = THAW_FAIL(THAW_EPG, "%s: %s", what, PQresultErrorMessage(r));
        PQclear(r);
        *res = NULL;
        return rc;
    }
    *res = r;
    return 0;
}

/* The checkpoint registered as uri: its id and bytes, and the GPU bytes of
 * expected_tokens' KV cache. THAW_ENOTFOUND when it is not registered. */
static int read_checkpoint(PGconn *c, const char *uri, uint64_t expected_tokens,
                           const struct thaw_sched_place_opts *o, int64_t *id,
                           uint64_t *ckpt_bytes, uint64_t *kv_bytes)
{
    PGresult *r;
    const char *uri_param[1] = { uri };
    int rc = exec_params(c, "SELECT id, bytes FROM checkpoints WHERE uri = $1", 1, uri_param,
                         PGRES_TUPLES_OK, "reading checkpoint", &r);
    if (rc < 0)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return THAW_FAIL(THAW_ENOTFOUND, "checkpoint %s is not registered", uri);
    }
    *id = col_i64(r, 0, 0);
    *ckpt_bytes = (uint64_t)col_i64(r, 0, 1);
    PQclear(r);

    *kv_bytes = 0;
    if (o->kv_bytes_per_token) {
        if (expected_tokens > (UINT64_MAX - *ckpt_bytes) / o->kv_bytes_per_token ||
            *ckpt_bytes + expected_tokens * o->kv_bytes_per_token > (uint64_t)INT64_MAX)
            return THAW_FAIL(THAW_EINVAL, "%" PRIu64 " expected tokens overflow the GPU bytes",
                             expected_tokens);
        *kv_bytes = expected_tokens * o->kv_bytes_per_token;
    }
    return 0;
}

/* A PostgreSQL array literal "{1,2,3}" of column 0 of r. */
static int ids_array(const PGresult *r, char **out)
{
    size_t n = (size_t)PQntuples(r);
    size_t ids_len = n * 22 + 3;
    char *ids = thaw_malloc(ids_len);
    if (!ids)
        return -ENOMEM;
    size_t at = 0;
    ids[at++] = '{';
    for (size_t i = 0; i < n; i++)
        at += (size_t)snprintf(ids + at, ids_len - at, "%s%s", i ? "," : "",
                               PQgetvalue(r, (int)i, 0));
    snprintf(ids + at, ids_len - at, "}");
    *out = ids;
    return 0;
}

/* Fill h and m from row `row` of a state_sql result; *need is the GPU
 * bytes the host must have (a warm host needs only the KV cache). Returns
 * 1 when its unreserved GPU memory has room for that, else 0. h->address
 * points into m. */
static int state_row(const PGresult *r, int row, uint64_t ckpt_bytes, uint64_t kv_bytes,
                     struct thaw_sched_host *h, struct thaw_sched_candidate *m, int64_t *avail,
                     uint64_t *need)
{
    *avail = col_i64(r, row, 5);
    int warm = PQgetvalue(r, row, 9)[0] == 't';
    *need = warm ? kv_bytes : ckpt_bytes + kv_bytes;
    memset(h, 0, sizeof *h);
    memset(m, 0, sizeof *m);
    m->host_id = col_i64(r, row, 0);
    snprintf(m->address, sizeof m->address, "%s", PQgetvalue(r, row, 1));
    h->address = m->address;
    h->dram_to_gpu_bps = col_f64(r, row, 2);
    h->ssd_bps = col_f64(r, row, 3);
    h->network_bps = col_f64(r, row, 4);
    h->gpu_free_bytes = *avail < 0 ? 0 : (uint64_t)*avail;
    h->heartbeat_age_s = col_f64(r, row, 6);
    h->ckpt_dram_bytes = (uint64_t)col_i64(r, row, 7);
    h->ckpt_ssd_bytes = (uint64_t)col_i64(r, row, 8);
    h->warm = warm;
    return !(*avail < 0 || (uint64_t)*avail < *need);
}

int thaw_sched_place(struct thaw_sched_db *db, const char *checkpoint_uri,
                     uint64_t expected_tokens, const struct thaw_sched_place_opts *o,
                     struct thaw_sched_placement *out)
{
    static const struct thaw_sched_place_opts zero;
    int rc = 0;
    int in_tx = 0;
    PGresult *r = NULL;
    struct thaw_sched_host *hosts = NULL;
    struct thaw_sched_candidate *meta = NULL;
    struct thaw_sched_choice *ranked = NULL;
    uint64_t *need = NULL;
    char *ids = NULL;
    struct thaw_sched_placement res;

    if (!db || !checkpoint_uri || !checkpoint_uri[0] || !out)
        return THAW_FAIL(THAW_EINVAL, "placement needs a database and a checkpoint URI");
    if (!o)
        o = &zero;
    memset(&res, 0, sizeof res);
    struct thaw_sched_params params = o->params;
    if (!(params.max_heartbeat_age_s > 0))
        params.max_heartbeat_age_s = THAW_SCHED_MAX_HEARTBEAT_AGE_S;
    double ttl_s = o->reservation_ttl_s > 0 ? o->reservation_ttl_s : THAW_SCHED_RESERVATION_TTL_S;
    PGconn *c = db->conn;

    THAW_PG_TRY(PQexec(c, "BEGIN ISOLATION LEVEL READ COMMITTED"), PGRES_COMMAND_OK, "BEGIN");
    in_tx = 1;

    /* The checkpoint. */
    uint64_t ckpt_bytes, kv_bytes;
    rc = read_checkpoint(c, checkpoint_uri, expected_tokens, o, &res.checkpoint_id, &ckpt_bytes,
                         &kv_bytes);
    if (rc < 0)
        goto fail;

    /* Lock the live hosts, in id order so that placers never deadlock. */
    char age[32];
    snprintf(age, sizeof age, "%.17g", params.max_heartbeat_age_s);
    const char *age_param[1] = { age };
    rc = exec_params(c,
                     "SELECT id FROM hosts WHERE heartbeat > now() - make_interval(secs =>"
                     " $1::float8) ORDER BY id FOR UPDATE",
                     1, age_param, PGRES_TUPLES_OK, "locking live hosts", &r);
    if (rc < 0)
        goto fail;
    size_t n_live = (size_t)PQntuples(r);
    if (n_live == 0) {
        rc = THAW_FAIL(THAW_ENOTFOUND, "no live host (none with a heartbeat in the last %gs)",
                       params.max_heartbeat_age_s);
        goto fail;
    }
    rc = ids_array(r, &ids);
    if (rc < 0)
        goto fail;
    PQclear(r);
    r = NULL;

    /* Their state, read after the locks: a fresh snapshot. */
    char ckpt_id[24];
    snprintf(ckpt_id, sizeof ckpt_id, "%" PRId64, res.checkpoint_id);
    const char *state_params[2] = { ckpt_id, ids };
    rc = exec_params(c, state_sql, 2, state_params, PGRES_TUPLES_OK, "reading host state", &r);
    if (rc < 0)
        goto fail;
    size_t n_rows = (size_t)PQntuples(r);
    hosts = thaw_calloc(n_rows + 1, sizeof *hosts);
    meta = thaw_calloc(n_rows + 1, sizeof *meta);
    ranked = thaw_calloc(n_rows + 1, sizeof *ranked);
    need = thaw_calloc(n_rows + 1, sizeof *need);
    if (!hosts || !meta || !ranked || !need) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t n_room = 0;
    for (size_t i = 0; i < n_rows; i++) {
        int64_t avail;
        uint64_t want;
        if (!state_row(r, (int)i, ckpt_bytes, kv_bytes, &hosts[n_room], &meta[n_room], &avail,
                       &want))
            continue; /* no room left on its GPU */
        need[n_room] = want;
        n_room++;
    }
    PQclear(r);
    r = NULL;

    size_t n_ranked = thaw_sched_rank(hosts, n_room, ckpt_bytes, &params, ranked);
    if (n_ranked == 0) {
        rc = THAW_FAIL(THAW_ELIMIT,
                       "no capacity: none of %zu live hosts has %" PRIu64 " GPU bytes unreserved",
                       n_live, ckpt_bytes + kv_bytes);
        goto fail;
    }

    /* Reserve on the best. */
    const struct thaw_sched_choice *best = &ranked[0];
    char host_id[24], ckpt_param[24], bytes[24], est_ms[40], ttl[40];
    snprintf(host_id, sizeof host_id, "%" PRId64, meta[best->host].host_id);
    snprintf(ckpt_param, sizeof ckpt_param, "%" PRId64, res.checkpoint_id);
    snprintf(bytes, sizeof bytes, "%" PRIu64, need[best->host]);
    snprintf(est_ms, sizeof est_ms, "%.17g", best->est.startup_s * 1e3);
    snprintf(ttl, sizeof ttl, "%.17g", ttl_s);
    const char *ins_params[6] = { host_id, ckpt_param, bytes, est_ms, best->est.reason, ttl };
    rc = exec_params(c,
                     "INSERT INTO reservations (host, checkpoint, gpu_bytes, estimate_ms, reason,"
                     " expires_at) VALUES ($1::bigint, $2::bigint, $3::bigint, $4::float8, $5,"
                     " now() + make_interval(secs => $6::float8)) RETURNING id",
                     6, ins_params, PGRES_TUPLES_OK, "inserting reservation", &r);
    if (rc < 0)
        goto fail;
    res.reservation_id = col_i64(r, 0, 0);
    PQclear(r);
    r = NULL;
    THAW_PG_TRY(PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "COMMIT");
    in_tx = 0;

    res.host_id = meta[best->host].host_id;
    snprintf(res.address, sizeof res.address, "%s", meta[best->host].address);
    res.gpu_bytes = need[best->host];
    res.est = best->est;
    res.n_live = n_live;
    for (size_t i = 0; i < n_ranked && i < THAW_SCHED_PLACE_MAX_CANDIDATES; i++) {
        res.candidates[i] = meta[ranked[i].host];
        res.candidates[i].est = ranked[i].est;
        res.n_candidates++;
    }
    *out = res;
    THAW_LOG(THAW_LOG_DEBUG, "scheduler", "placed",
             "ckpt=%s host=%s tier=%s estimate_s=%.3f reservation=%" PRId64, checkpoint_uri,
             res.address, thaw_sched_tier_name(res.est.tier), res.est.startup_s,
             res.reservation_id);

fail:
    PQclear(r);
    if (in_tx)
        PQclear(PQexec(c, "ROLLBACK"));
    thaw_free(need);
    thaw_free(ranked);
    thaw_free(meta);
    thaw_free(hosts);
    thaw_free(ids);
    return rc;
}

static int by_state_then_order(const void *pa, const void *pb)
{
    const struct thaw_sched_host_rank *a = pa, *b = pb;
    if (a->state != b->state)
        return (a->state > b->state) - (a->state < b->state);
    if (a->state == THAW_SCHED_HOST_OK)
        return (a->order > b->order) - (a->order < b->order);
    return (a->c.host_id > b->c.host_id) - (a->c.host_id < b->c.host_id);
}

int thaw_sched_rank_hosts(struct thaw_sched_db *db, const char *checkpoint_uri,
                          uint64_t expected_tokens, const struct thaw_sched_place_opts *o,
                          struct thaw_sched_host_rank **out, size_t *n_out)
{
    static const struct thaw_sched_place_opts zero;
    int rc = 0;
    int in_tx = 0;
    PGresult *r = NULL;
    char *ids = NULL;
    struct thaw_sched_host *hosts = NULL;
    struct thaw_sched_host_rank *all = NULL;
    struct thaw_sched_choice *ranked = NULL;
    size_t *slot = NULL;

    if (!db || !checkpoint_uri || !checkpoint_uri[0] || !out || !n_out)
        return THAW_FAIL(THAW_EINVAL, "ranking needs a database and a checkpoint URI");
    if (!o)
        o = &zero;
    struct thaw_sched_params params = o->params;
    if (!(params.max_heartbeat_age_s > 0))
        params.max_heartbeat_age_s = THAW_SCHED_MAX_HEARTBEAT_AGE_S;
    PGconn *c = db->conn;

    /* One snapshot, no locks, nothing written. */
    THAW_PG_TRY(PQexec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"), PGRES_COMMAND_OK,
                "BEGIN");
    in_tx = 1;
    int64_t ckpt_id_v;
    uint64_t ckpt_bytes, kv_bytes;
    rc = read_checkpoint(c, checkpoint_uri, expected_tokens, o, &ckpt_id_v, &ckpt_bytes,
                         &kv_bytes);
    if (rc < 0)
        goto fail;
    rc = exec_params(c, "SELECT id FROM hosts ORDER BY id", 0, NULL, PGRES_TUPLES_OK,
                     "reading hosts", &r);
    if (rc < 0)
        goto fail;
    rc = ids_array(r, &ids);
    if (rc < 0)
        goto fail;
    PQclear(r);
    r = NULL;
    char ckpt_id[24];
    snprintf(ckpt_id, sizeof ckpt_id, "%" PRId64, ckpt_id_v);
    const char *state_params[2] = { ckpt_id, ids };
    rc = exec_params(c, state_sql, 2, state_params, PGRES_TUPLES_OK, "reading host state", &r);
    if (rc < 0)
        goto fail;
    size_t n_rows = (size_t)PQntuples(r);
    hosts = thaw_calloc(n_rows + 1, sizeof *hosts);
    all = thaw_calloc(n_rows + 1, sizeof *all);
    ranked = thaw_calloc(n_rows + 1, sizeof *ranked);
    slot = thaw_calloc(n_rows + 1, sizeof *slot);
    if (!hosts || !all || !ranked || !slot) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t n_ok = 0;
    for (size_t i = 0; i < n_rows; i++) {
        struct thaw_sched_host h;
        struct thaw_sched_host_rank *a = &all[i];
        int64_t avail;
        int room = state_row(r, (int)i, ckpt_bytes, kv_bytes, &h, &a->c, &avail, &a->need_bytes);
        a->gpu_avail_bytes = avail;
        a->heartbeat_age_s = h.heartbeat_age_s;
        if (!(h.heartbeat_age_s <= params.max_heartbeat_age_s)) {
            a->state = THAW_SCHED_HOST_STALE;
        } else if (!room) {
            a->state = THAW_SCHED_HOST_FULL;
        } else {
            a->state = THAW_SCHED_HOST_OK;
            hosts[n_ok] = h;
            hosts[n_ok].address = a->c.address;
            slot[n_ok++] = i;
        }
    }
    PQclear(r);
    r = NULL;
    THAW_PG_TRY(PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "COMMIT");
    in_tx = 0;

    size_t n_ranked = thaw_sched_rank(hosts, n_ok, ckpt_bytes, &params, ranked);
    for (size_t k = 0; k < n_ranked; k++) {
        struct thaw_sched_host_rank *a = &all[slot[ranked[k].host]];
        a->c.est = ranked[k].est;
        a->order = k;
    }
    qsort(all, n_rows, sizeof all[0], by_state_then_order);
    *out = all;
    *n_out = n_rows;
    all = NULL;

fail:
    PQclear(r);
    if (in_tx)
        PQclear(PQexec(c, "ROLLBACK"));
    thaw_free(slot);
    thaw_free(ranked);
    thaw_free(all);
    thaw_free(hosts);
    thaw_free(ids);
    return rc;
}

int scheduler_db_ping(struct thaw_sched_db *db)
{
    int rc = 0;
    THAW_PG_TRY(PQexec(db->conn, "SELECT 1"), PGRES_TUPLES_OK, "ping");
fail:
    return rc;
}
