/*
 * place.c - placement against the PostgreSQL locality store (DESIGN.md,
 * Placement): read the live hosts and where a checkpoint's replicas sit,
 * rank the hosts with room by estimated start-up time, and reserve GPU
 * memory on the best, all in one transaction. Placers serialise on one
 * transaction-level advisory lock taken first; the host state, read by the
 * next statement, therefore sees (under READ COMMITTED) every reservation
 * committed by the placers before it: two decisions can never book the same
 * GPU bytes. (Locking every live host's row FOR UPDATE did the same at
 * 1,000 row locks per decision: bench/reports/scheduler.md.)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "scheduler/scheduler_int.h"

/* Advisory lock key that placers serialise on: "thawPLAC" as a big-endian
 * int64 (the migrator uses "thawSCHM"). */
#define PLACE_LOCK_KEY "8388061471103716419"

/* Every host's state for one checkpoint ($1), one row per host by id: the
 * free GPU bytes less unexpired reservations, the heartbeat's age, the
 * checkpoint's ready bytes in DRAM and on SSD, and whether a ready or busy
 * instance of it runs there. Set-based (one scan of each table, hash
 * joins), where per-host correlated subqueries cost 3 index probes a host
 * (bench/reports/scheduler.md). Folding the checkpoint lookup in as a CTE
 * saved a round trip but cost more in the plan (measured: +0.7 ms p50). */
#define STATE_SQL(where)                                                                       \
    "SELECT h.id, h.address, h.dram_to_gpu_bps, h.ssd_bps, h.network_bps,"                     \
    " (h.gpu_free_bytes - coalesce(v.bytes, 0))::bigint AS avail,"                             \
    " extract(epoch FROM now() - h.heartbeat)::float8 AS age,"                                 \
    " coalesce(p.dram, 0)::bigint AS dram, coalesce(p.ssd, 0)::bigint AS ssd,"                 \
    " w.host IS NOT NULL AS warm, coalesce(h.name, '') AS name"                              \
    " FROM hosts h"                                                                            \
    " LEFT JOIN (SELECT host, sum(gpu_bytes) AS bytes FROM reservations"                       \
    "   WHERE expires_at > now() GROUP BY host) v ON v.host = h.id"                            \
    " LEFT JOIN (SELECT host, sum(bytes) FILTER (WHERE tier = 'dram') AS dram,"                \
    "   sum(bytes) FILTER (WHERE tier = 'ssd') AS ssd FROM replicas"                           \
    "   WHERE checkpoint = $1::bigint AND state = 'ready' AND tier IN ('dram', 'ssd')"         \
    "   GROUP BY host) p ON p.host = h.id"                                                     \
    " LEFT JOIN (SELECT DISTINCT host FROM instances WHERE model = $1::bigint"                 \
    "   AND state IN ('ready', 'busy')) w ON w.host = h.id"                                    \
    where " ORDER BY h.id"

/* A live host (heartbeat within $2 seconds), and host h's GPU bytes held
 * by unexpired reservations (reservations_host_idx). */
#define LIVE_SQL "heartbeat > now() - make_interval(secs => $2::float8)"
#define RESERVED_SQL                                                                           \
    "coalesce((SELECT sum(r.gpu_bytes) FROM reservations r"                                   \
    " WHERE r.host = h.id AND r.expires_at > now()), 0)"
/* A far candidate: live, not near, with room for $3 bytes. */
#define FAR_HOST_OK                                                                            \
    " AND h." LIVE_SQL " AND h.id NOT IN (SELECT host FROM near)"                              \
    " AND h.gpu_free_bytes - " RESERVED_SQL " >= $3::bigint"

/* The statements every decision runs, prepared once per connection (their
 * planning costs about as much as their execution at 1,000 hosts, so the
 * connection asks for generic plans: see prepare()). */
static const struct {
    const char *name;
    const char *sql;
    int n_params;
} stmts[] = {
    { "thaw_ckpt", "SELECT id, bytes FROM checkpoints WHERE uri = $1", 1 },
    /* Placement: the same columns for the live hosts ($2: max heartbeat
     * age, s) that can win. A host with nothing of the checkpoint and no
     * instance of it can only load it all from the network, so among those
     * with room ($3: the GPU bytes needed) only the $5 with the fastest
     * network ($4: the default for an unmeasured one) can rank among the
     * best $5; the others are not read at all: hosts_network_idx (0004)
     * yields them in network order, and a host's reservations are summed
     * only when it is looked at. (Summing every host's reservations, as
     * thaw_state_all must, cost 4x the CPU at 1,000 hosts:
     * bench/reports/scheduler.md.) Column 12 counts the live hosts. The
     * estimator (estimate.c) must stay consistent with this: with room and
     * no local bytes, a host's estimate is bytes / network. */
    { "thaw_state_place",
      "WITH rep AS (SELECT host, sum(bytes) FILTER (WHERE tier = 'dram') AS dram,"
      "   sum(bytes) FILTER (WHERE tier = 'ssd') AS ssd FROM replicas"
      "   WHERE checkpoint = $1::bigint AND state = 'ready' AND tier IN ('dram', 'ssd')"
      "   GROUP BY host),"
      " warm AS (SELECT DISTINCT host FROM instances WHERE model = $1::bigint"
      "   AND state IN ('ready', 'busy')),"
      " near AS (SELECT host FROM rep UNION SELECT host FROM warm),"
      " far AS ((SELECT h.id FROM hosts h WHERE h.network_bps > 0" FAR_HOST_OK
      "   ORDER BY h.network_bps DESC, h.id LIMIT $5::integer)"
      "  UNION ALL (SELECT h.id FROM hosts h WHERE h.network_bps = 0" FAR_HOST_OK
      "   ORDER BY h.id LIMIT $5::integer)),"
      " far_k AS (SELECT f.id FROM far f JOIN hosts h ON h.id = f.id"
      "   ORDER BY coalesce(nullif(h.network_bps, 0), $4::float8) DESC, f.id LIMIT $5::integer),"
      " cand AS (SELECT host AS id FROM near UNION ALL SELECT id FROM far_k)"
      " SELECT h.id, h.address, h.dram_to_gpu_bps, h.ssd_bps, h.network_bps,"
      " (h.gpu_free_bytes - " RESERVED_SQL ")::bigint AS avail,"
      " extract(epoch FROM now() - h.heartbeat)::float8 AS age,"
      " coalesce(rep.dram, 0)::bigint AS dram, coalesce(rep.ssd, 0)::bigint AS ssd,"
      " w.host IS NOT NULL AS warm, coalesce(h.name, '') AS name,"
      " (SELECT count(*) FROM hosts WHERE " LIVE_SQL ") AS n_live"
      " FROM cand c JOIN hosts h ON h.id = c.id LEFT JOIN rep ON rep.host = h.id"
      " LEFT JOIN warm w ON w.host = h.id WHERE " LIVE_SQL " ORDER BY h.id",
      5 },
    /* Every host: the read-only ranking reports stale ones too. */
    { "thaw_state_all", STATE_SQL(""), 1 },
};

/* Run a multi-statement simple query; *res receives the last result with
 * rows (the caller clears it). Any failed statement fails the call,
 * naming what; the server has then rolled back an open transaction's
 * COMMIT, or left it aborted for the caller's ROLLBACK. */
static int exec_multi(PGconn *c, const char *sql, const char *what, PGresult **res)
{
    int rc = 0;
    *res = NULL;
    if (!PQsendQuery(c, sql))
        return THAW_FAIL(THAW_EPG, "%s: %s", what, PQerrorMessage(c));
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && rc == 0)
            rc = THAW_FAIL(THAW_EPG, "%s: %s", what, PQresultErrorMessage(r));
        if (st == PGRES_TUPLES_OK && rc == 0) {
            PQclear(*res);
            *res = r;
        } else {
            PQclear(r);
        }
    }
    if (rc == 0 && !*res)
        rc = THAW_FAIL(THAW_EPG, "%s: no rows returned", what);
    if (rc < 0) {
        PQclear(*res);
        *res = NULL;
    }
    return rc;
}

/* Prepare stmts on db's connection unless done. */
static int prepare(struct thaw_sched_db *db)
{
    if (db->prepared)
        return 0;
    /* Plan once: with custom plans (PostgreSQL's default for the first
     * executions, and for as long as it judges them cheaper) every decision
     * paid ~1 ms of planning for ~0.5 ms of execution. The statements are
     * index lookups whose best plan does not depend on the values. */
    PGresult *g = PQexec(db->conn, "SET plan_cache_mode = force_generic_plan");
    if (PQresultStatus(g) != PGRES_COMMAND_OK) {
        int rc = THAW_FAIL(THAW_EPG, "setting plan_cache_mode: %s", PQresultErrorMessage(g));
        PQclear(g);
        return rc;
    }
    PQclear(g);
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
        PGresult *r = PQprepare(db->conn, stmts[i].name, stmts[i].sql, stmts[i].n_params, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            int rc = THAW_FAIL(THAW_EPG, "preparing %s: %s", stmts[i].name,
                               PQresultErrorMessage(r));
            PQclear(r);
            return rc;
        }
        PQclear(r);
    }
    db->prepared = 1;
    return 0;
}

/* Run prepared statement `name` expecting tuples; as scheduler_exec.
 * binary: results in PostgreSQL's binary format (see state_check). */
static int exec_prepared(PGconn *c, const char *name, int n, const char *const *params,
                         int binary, const char *what, PGresult **res)
{
    PGresult *r = PQexecPrepared(c, name, n, params, NULL, NULL, binary);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = THAW_FAIL(THAW_EPG, "%s: %s", what, PQresultErrorMessage(r));
        PQclear(r);
        *res = NULL;
        return rc;
    }
    *res = r;
    return 0;
}

int thaw_sched_db_open(const char *pg_url, struct thaw_sched_db **out)
{
    int rc;
    if (!pg_url || !pg_url[0])
        return THAW_FAIL(THAW_EINVAL, "no PostgreSQL URL (--pg or THAW_PG_URL)");
    struct thaw_sched_db *db = thaw_calloc(1, sizeof *db);
    if (!db)
        return -ENOMEM;
    /* A bounded connect: while PostgreSQL is unreachable, the server places
     * by hash instead of hanging. A connect_timeout in pg_url wins (later
     * keywords override earlier ones). */
    static const char *const keys[] = { "connect_timeout", "dbname", NULL };
    const char *const vals[] = { "2", pg_url, NULL };
    db->conn = PQconnectdbParams(keys, vals, 1);
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

int64_t scheduler_col_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

double scheduler_col_f64(const PGresult *r, int row, int col)
{
    return strtod(PQgetvalue(r, row, col), NULL);
}

int scheduler_exec(PGconn *c, const char *sql, int n, const char *const *params,
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

/*
 * The state rows come in PostgreSQL's binary format: at 1,000 hosts,
 * printing and parsing 4,000 float8s as text cost more CPU (server and
 * client together) than the rest of a ranking's row handling (perf:
 * double_to_shortest_decimal, strtod). Binary int8/float8 are 8 bytes,
 * big-endian; bool is one byte. The column types are checked once per
 * result, so a schema change fails loudly instead of misreading bytes.
 */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_TEXT 25
#define OID_FLOAT8 701

static const unsigned state_types[] = { OID_INT8, OID_TEXT, OID_FLOAT8, OID_FLOAT8,
                                        OID_FLOAT8, OID_INT8, OID_FLOAT8, OID_INT8,
                                        OID_INT8, OID_BOOL, OID_TEXT, OID_INT8 };

static int state_check(const PGresult *r)
{
    int n = PQnfields(r);
    for (int i = 0; i < n; i++) {
        if (i >= (int)(sizeof state_types / sizeof state_types[0]) ||
            PQftype(r, i) != state_types[i] || PQfformat(r, i) != 1)
            return THAW_FAIL(THAW_EPG, "host state column %d (%s) has type %u, format %d;"
                             " the schema and this build disagree", i, PQfname(r, i),
                             PQftype(r, i), PQfformat(r, i));
    }
    if (n < 11)
        return THAW_FAIL(THAW_EPG, "host state has %d columns, want 11 or 12", n);
    return 0;
}

static uint64_t bin_u64(const PGresult *r, int row, int col)
{
    const unsigned char *b = (const unsigned char *)PQgetvalue(r, row, col);
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

static int64_t bin_i64(const PGresult *r, int row, int col)
{
    return (int64_t)bin_u64(r, row, col);
}

static double bin_f64(const PGresult *r, int row, int col)
{
    uint64_t u = bin_u64(r, row, col);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static int bin_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetlength(r, row, col) == 1 &&
           PQgetvalue(r, row, col)[0] != 0;
}

/* A binary text column into dst (truncated to dst_len - 1 bytes): its
 * bytes by length (libpq also NUL-terminates, but the format does not). */
static void bin_text(char *dst, size_t dst_len, const PGresult *r, int row, int col)
{
    size_t n = (size_t)PQgetlength(r, row, col);
    if (n >= dst_len)
        n = dst_len - 1;
    memcpy(dst, PQgetvalue(r, row, col), n);
    dst[n] = 0;
}

/* The checkpoint registered as uri (*id, *ckpt_bytes), then state statement
 * `stmt` for it (age: the heartbeat bound, for thaw_state_place) into *r,
 * one row per host (*n_hosts); *kv_bytes is the GPU bytes of
 * expected_tokens' KV cache. THAW_ENOTFOUND when the checkpoint is not
 * registered. */
static int read_state(PGconn *c, const char *stmt, const char *uri, const char *age,
                      uint64_t expected_tokens, const struct thaw_sched_place_opts *o,
                      PGresult **r, size_t *n_hosts, int64_t *id, uint64_t *ckpt_bytes,
                      uint64_t *kv_bytes)
{
    const char *uri_param[1] = { uri };
    int rc = exec_prepared(c, "thaw_ckpt", 1, uri_param, 0, "reading checkpoint", r);
    if (rc < 0)
        return rc;
    if (PQntuples(*r) != 1) {
        PQclear(*r);
        *r = NULL;
        return THAW_FAIL(THAW_ENOTFOUND, "checkpoint %s is not registered", uri);
    }
    *id = scheduler_col_i64(*r, 0, 0);
    *ckpt_bytes = (uint64_t)scheduler_col_i64(*r, 0, 1);
    PQclear(*r);
    *r = NULL;
    *kv_bytes = 0;
    if (o->kv_bytes_per_token) {
        if (expected_tokens > (UINT64_MAX - *ckpt_bytes) / o->kv_bytes_per_token ||
            *ckpt_bytes + expected_tokens * o->kv_bytes_per_token > (uint64_t)INT64_MAX)
            return THAW_FAIL(THAW_EINVAL, "%" PRIu64 " expected tokens overflow the GPU bytes",
                             expected_tokens);
        *kv_bytes = expected_tokens * o->kv_bytes_per_token;
    }

    /* thaw_state_place: also the bytes a host needs, the default network
     * bandwidth and how many hosts that hold nothing to send. */
    char ckpt_id[24], need[24], net[40], k[16];
    snprintf(ckpt_id, sizeof ckpt_id, "%" PRId64, *id);
    snprintf(need, sizeof need, "%" PRIu64, *ckpt_bytes + *kv_bytes);
    double net_bps = o->params.default_network_bps > 0 ? o->params.default_network_bps
                                                       : THAW_SCHED_NETWORK_BPS;
    snprintf(net, sizeof net, "%.17g", net_bps);
    snprintf(k, sizeof k, "%d", THAW_SCHED_PLACE_MAX_CANDIDATES);
    const char *params[5] = { ckpt_id, age, need, net, k };
    rc = exec_prepared(c, stmt, age ? 5 : 1, params, 1, "reading host state", r);
    if (rc < 0)
        return rc;
    if ((rc = state_check(*r)) < 0) {
        PQclear(*r);
        *r = NULL;
        return rc;
    }
    *n_hosts = (size_t)PQntuples(*r);
    return 0;
}

/* Fill h and m from row `row` of a STATE_SQL result; *need is the GPU
 * bytes the host must have (a warm host needs only the KV cache). Returns
 * 1 when its unreserved GPU memory has room for that, else 0. h->address
 * points into m. */
static int state_row(const PGresult *r, int row, uint64_t ckpt_bytes, uint64_t kv_bytes,
                     struct thaw_sched_host *h, struct thaw_sched_candidate *m, int64_t *avail,
                     uint64_t *need)
{
    const int k = 0; /* the first host column */
    *avail = bin_i64(r, row, k + 5);
    int warm = bin_bool(r, row, k + 9);
    *need = warm ? kv_bytes : ckpt_bytes + kv_bytes;
    memset(h, 0, sizeof *h);
    memset(m, 0, sizeof *m);
    m->host_id = bin_i64(r, row, k);
    bin_text(m->address, sizeof m->address, r, row, k + 1);
    bin_text(m->name, sizeof m->name, r, row, k + 10);
    h->address = m->address;
    h->dram_to_gpu_bps = bin_f64(r, row, k + 2);
    h->ssd_bps = bin_f64(r, row, k + 3);
    h->network_bps = bin_f64(r, row, k + 4);
    h->gpu_free_bytes = *avail < 0 ? 0 : (uint64_t)*avail;
    h->heartbeat_age_s = bin_f64(r, row, k + 6);
    h->ckpt_dram_bytes = (uint64_t)bin_i64(r, row, k + 7);
    h->ckpt_ssd_bytes = (uint64_t)bin_i64(r, row, k + 8);
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

    rc = prepare(db);
    if (rc < 0)
        goto fail;
    /* One round trip: the result is the lock's. */
    THAW_PG_TRY(PQexec(c, "BEGIN ISOLATION LEVEL READ COMMITTED;"
                          " SELECT pg_advisory_xact_lock(" PLACE_LOCK_KEY ")"),
                PGRES_TUPLES_OK, "BEGIN and lock");
    in_tx = 1;

    /* The checkpoint and the live hosts' state, read after the lock: a
     * fresh snapshot. */
    char age[32];
    snprintf(age, sizeof age, "%.17g", params.max_heartbeat_age_s);
    uint64_t ckpt_bytes = 0, kv_bytes = 0;
    size_t n_live;
    size_t n_rows = 0;
    rc = read_state(c, "thaw_state_place", checkpoint_uri, age, expected_tokens, o, &r, &n_rows,
                    &res.checkpoint_id, &ckpt_bytes, &kv_bytes);
    if (rc < 0)
        goto fail;
    if (n_rows > 0) {
        n_live = (size_t)bin_i64(r, 0, 11); /* column 12 */
    } else {
        /* Nothing sent: no live host, or none with room. Which? */
        PQclear(r);
        const char *age_param[1] = { age };
        rc = scheduler_exec(c,
                            "SELECT count(*) FROM hosts WHERE heartbeat > now() -"
                            " make_interval(secs => $1::float8)",
                            1, age_param, PGRES_TUPLES_OK, "counting live hosts", &r);
        if (rc < 0)
            goto fail;
        n_live = (size_t)scheduler_col_i64(r, 0, 0);
    }
    if (n_live == 0) {
        rc = THAW_FAIL(THAW_ENOTFOUND, "no live host (none with a heartbeat in the last %gs)",
                       params.max_heartbeat_age_s);
        goto fail;
    }
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
    /* INSERT and COMMIT in one round trip: a simple query of both, the
     * reason as an escaped literal (the rest are numbers we printed). */
    char *reason = PQescapeLiteral(c, best->est.reason, strlen(best->est.reason));
    if (!reason) {
        rc = THAW_FAIL(THAW_EPG, "escaping the reason: %s", PQerrorMessage(c));
        goto fail;
    }
    char ins[1024];
    /* The first placement on a connection and every 256th after it also
     * delete reservations that expired over an hour ago: they count for
     * nothing, and the table would otherwise only grow. */
    snprintf(ins, sizeof ins,
             "INSERT INTO reservations (host, checkpoint, gpu_bytes, estimate_ms, reason,"
             " expires_at) VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
             " RETURNING id;%s COMMIT",
             host_id, ckpt_param, bytes, est_ms, reason, ttl,
             db->n_placed % 256 == 0 ? " DELETE FROM reservations WHERE expires_at < now() -"
                                       " interval '1 hour';" : "");
    PQfreemem(reason);
    rc = exec_multi(c, ins, "inserting reservation", &r);
    if (rc < 0)
        goto fail;
    in_tx = 0; /* committed, or (on a failed COMMIT) rolled back */
    db->n_placed++;
    res.reservation_id = scheduler_col_i64(r, 0, 0);
    PQclear(r);
    r = NULL;

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
    PGresult *r = NULL;
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

    rc = prepare(db);
    if (rc < 0)
        goto fail;
    /* No transaction: the state is one statement, so one snapshot; the
     * checkpoint row before it does not change under a ranking. Nothing is
     * locked or written. */
    int64_t ckpt_id_v = 0;
    uint64_t ckpt_bytes = 0, kv_bytes = 0;
    size_t n_rows = 0;
    rc = read_state(c, "thaw_state_all", checkpoint_uri, NULL, expected_tokens, o, &r, &n_rows,
                    &ckpt_id_v, &ckpt_bytes, &kv_bytes);
    if (rc < 0)
        goto fail;
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
    thaw_free(slot);
    thaw_free(ranked);
    thaw_free(all);
    thaw_free(hosts);
    return rc;
}

int scheduler_db_ping(struct thaw_sched_db *db)
{
    int rc = 0;
    THAW_PG_TRY(PQexec(db->conn, "SELECT 1"), PGRES_TUPLES_OK, "ping");
fail:
    return rc;
}
