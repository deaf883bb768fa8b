/*
 * report.c - a host agent's report (POST /v1/hosts/{name}/report) applied
 * to the locality store in one transaction: the host row (created when
 * unknown), its replicas and instances (upserted; rows it no longer lists
 * deleted), and its completed loads, each recorded once in load_samples and
 * folded into the tier's bandwidth EWMA. The report is the host's whole
 * state, so applying it twice leaves the same rows; a load already recorded
 * is skipped, so a retried report does not count it twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler_int.h"

/* EWMA weight of a new load against the stored bandwidth. */
#define LOAD_ALPHA 0.2
#define MAX_NAME_BYTES 128
#define MAX_ADDRESS_BYTES 127 /* fits thaw_sched_candidate.address */
#define MAX_STRING_BYTES 1024

static const char *const replica_tiers[] = { "gpu", "dram", "ssd" };
static const char *const replica_states[] = { "loading", "ready", "evicting" };
static const char *const instance_states[] = { "starting", "ready", "busy", "migrating",
                                               "stopping" };
static const char *const load_tiers[] = { "dram", "ssd", "peer", "remote" };
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- validation */

/* Fail with THAW_EINVAL, naming the field in res->field and the message. */
THAW_PRINTF(3, 4)
static int bad(struct thaw_sched_report_result *res, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(res->field, sizeof res->field, "%s", field);
    return THAW_FAIL(THAW_EINVAL, "\"%s\": %s", field, msg);
}

static int fits_i64(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX;
}

static int ok_string(const char *s, size_t max)
{
    return s && s[0] && strlen(s) <= max;
}

static int ok_name(const char *s)
{
    if (!ok_string(s, MAX_NAME_BYTES))
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == ':' || *p == '-'))
            return 0;
    return 1;
}

static int ok_bps(double v)
{
    return v >= 0 && isfinite(v);
}

static int validate(const struct thaw_sched_report *rep, struct thaw_sched_report_result *res)
{
    char f[96];
    if (!ok_name(rep->name))
        return bad(res, "name", "want 1..%d characters of [A-Za-z0-9._:-]", MAX_NAME_BYTES);
    if (!ok_string(rep->address, MAX_ADDRESS_BYTES))
        return bad(res, "address", "want a non-empty string of at most %d bytes",
                   MAX_ADDRESS_BYTES);
    if (rep->n_gpus && !rep->gpus)
        return bad(res, "gpus", "missing");
    uint64_t free_sum = 0, total_sum = 0;
    for (size_t i = 0; i < rep->n_gpus; i++) {
        const struct thaw_sched_report_gpu *g = &rep->gpus[i];
        snprintf(f, sizeof f, "gpus[%zu].free_bytes", i);
        if (!fits_i64(g->free_bytes) || !fits_i64(g->total_bytes))
            return bad(res, f, "above %" PRId64, INT64_MAX);
        if (g->total_bytes && g->free_bytes > g->total_bytes)
            return bad(res, f, "%" PRIu64 " exceeds total_bytes %" PRIu64, g->free_bytes,
                       g->total_bytes);
        free_sum += g->free_bytes;
        total_sum += g->total_bytes;
        if (!fits_i64(free_sum) || !fits_i64(total_sum))
            return bad(res, f, "the GPUs' sum is above %" PRId64, INT64_MAX);
    }
    if (!fits_i64(rep->dram_bytes) || !fits_i64(rep->dram_used))
        return bad(res, "dram", "above %" PRId64 " bytes", INT64_MAX);
    if (!fits_i64(rep->ssd_bytes) || !fits_i64(rep->ssd_used))
        return bad(res, "ssd", "above %" PRId64 " bytes", INT64_MAX);
    if (!ok_bps(rep->dram_to_gpu_bps))
        return bad(res, "bandwidth_bps.dram_to_gpu", "want a finite number >= 0");
    if (!ok_bps(rep->ssd_bps))
        return bad(res, "bandwidth_bps.ssd", "want a finite number >= 0");
    if (!ok_bps(rep->network_bps))
        return bad(res, "bandwidth_bps.network", "want a finite number >= 0");

    if (rep->n_replicas && !rep->replicas)
        return bad(res, "replicas", "missing");
    for (size_t i = 0; i < rep->n_replicas; i++) {
        const struct thaw_sched_report_replica *p = &rep->replicas[i];
        snprintf(f, sizeof f, "replicas[%zu].checkpoint", i);
        if (!ok_string(p->checkpoint, MAX_STRING_BYTES))
            return bad(res, f, "want a checkpoint URI");
        snprintf(f, sizeof f, "replicas[%zu].tier", i);
        if (!p->tier || !scheduler_one_of(p->tier, replica_tiers, N_OF(replica_tiers)))
            return bad(res, f, "want one of gpu, dram, ssd");
        snprintf(f, sizeof f, "replicas[%zu].state", i);
        if (p->state && !scheduler_one_of(p->state, replica_states, N_OF(replica_states)))
            return bad(res, f, "want one of loading, ready, evicting");
        snprintf(f, sizeof f, "replicas[%zu].bytes", i);
        if (!fits_i64(p->bytes) || !fits_i64(p->checkpoint_bytes))
            return bad(res, f, "above %" PRId64, INT64_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(rep->replicas[j].checkpoint, p->checkpoint) == 0 &&
                strcmp(rep->replicas[j].tier, p->tier) == 0) {
                snprintf(f, sizeof f, "replicas[%zu]", i);
                return bad(res, f, "repeats replicas[%zu] (same checkpoint and tier)", j);
            }
    }

    if (rep->n_instances && !rep->instances)
        return bad(res, "instances", "missing");
    for (size_t i = 0; i < rep->n_instances; i++) {
        const struct thaw_sched_report_instance *in = &rep->instances[i];
        snprintf(f, sizeof f, "instances[%zu].id", i);
        if (!ok_string(in->name, MAX_STRING_BYTES))
            return bad(res, f, "want a non-empty string");
        for (size_t j = 0; j < i; j++)
            if (strcmp(rep->instances[j].name, in->name) == 0)
                return bad(res, f, "repeats instances[%zu]", j);
        snprintf(f, sizeof f, "instances[%zu].checkpoint", i);
        if (!ok_string(in->checkpoint, MAX_STRING_BYTES))
            return bad(res, f, "want a checkpoint URI");
        snprintf(f, sizeof f, "instances[%zu].state", i);
        if (!in->state || !scheduler_one_of(in->state, instance_states, N_OF(instance_states)))
            return bad(res, f, "want one of starting, ready, busy, migrating, stopping");
        snprintf(f, sizeof f, "instances[%zu].sequences", i);
        if (in->n_running > INT32_MAX || !fits_i64(in->tokens_in) || !fits_i64(in->tokens_out))
            return bad(res, f, "too many sequences or tokens");
        snprintf(f, sizeof f, "instances[%zu].checkpoint_bytes", i);
        if (!fits_i64(in->checkpoint_bytes))
            return bad(res, f, "above %" PRId64, INT64_MAX);
        snprintf(f, sizeof f, "instances[%zu].reservation_id", i);
        if (in->reservation_id < 0)
            return bad(res, f, "want a positive integer");
    }

    if (rep->n_loads && !rep->loads)
        return bad(res, "completed_loads", "missing");
    for (size_t i = 0; i < rep->n_loads; i++) {
        const struct thaw_sched_report_load *l = &rep->loads[i];
        snprintf(f, sizeof f, "completed_loads[%zu].id", i);
        if (!ok_string(l->id, MAX_STRING_BYTES))
            return bad(res, f, "want a non-empty string");
        snprintf(f, sizeof f, "completed_loads[%zu].checkpoint", i);
        if (!ok_string(l->checkpoint, MAX_STRING_BYTES))
            return bad(res, f, "want a checkpoint URI");
        snprintf(f, sizeof f, "completed_loads[%zu].tier", i);
        if (!l->tier || !scheduler_one_of(l->tier, load_tiers, N_OF(load_tiers)))
            return bad(res, f, "want one of dram, ssd, peer, remote");
        snprintf(f, sizeof f, "completed_loads[%zu].bytes", i);
        if (!fits_i64(l->bytes))
            return bad(res, f, "above %" PRId64, INT64_MAX);
        snprintf(f, sizeof f, "completed_loads[%zu].ms", i);
        if (!(l->ms > 0) || !isfinite(l->ms))
            return bad(res, f, "want a finite number > 0");
    }
    return 0;
}

int thaw_sched_report_check(const struct thaw_sched_report *rep,
                            struct thaw_sched_report_result *res)
{
    struct thaw_sched_report_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!rep)
        return THAW_FAIL(THAW_EINVAL, "no report");
    return validate(rep, res);
}

/* ---------------------------------------------------------------- apply */

/* An int64 or double as a query parameter. */
struct num {
    char s[40];
};

static const char *i64s(struct num *n, int64_t v)
{
    snprintf(n->s, sizeof n->s, "%" PRId64, v);
    return n->s;
}

static const char *f64s(struct num *n, double v)
{
    snprintf(n->s, sizeof n->s, "%.17g", v);
    return n->s;
}

/* A growable PostgreSQL array literal of integers or simple words (tier
 * names: no quoting needed). */
struct arr {
    char *p;
    size_t len, cap;
};

static int arr_add(struct arr *a, const char *item)
{
    size_t n = strlen(item);
    if (a->len + n + 3 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        while (cap < a->len + n + 3)
            cap *= 2;
        char *p = thaw_realloc(a->p, cap);
        if (!p)
            return -ENOMEM;
        a->p = p;
        a->cap = cap;
    }
    if (a->len == 0)
        a->p[a->len++] = '{';
    else
        a->p[a->len++] = ',';
    memcpy(a->p + a->len, item, n);
    a->len += n;
    return 0;
}

/* The literal, closed; "{}" when empty. Valid until the next arr_add. */
static const char *arr_str(struct arr *a)
{
    if (arr_add(a, "") < 0)
        return NULL;
    a->len--; /* drop the separator just added: it becomes the '}' */
    a->p[a->len] = '}';
    a->p[a->len + 1] = 0;
    if (a->len == 0) {
        a->p[0] = '{';
        a->p[1] = '}';
        a->p[2] = 0;
    }
    return a->p;
}

/* The id of checkpoint uri, registering it with `bytes` when unknown and
 * bytes > 0. 0 when unknown and not registered. */
static int checkpoint_id(PGconn *c, const char *uri, uint64_t bytes, int64_t *id)
{
    struct num b;
    const char *params[2] = { uri, i64s(&b, (int64_t)bytes) };
    PGresult *r;
    int rc = scheduler_exec(c,
                            "WITH ins AS (INSERT INTO checkpoints (uri, bytes) SELECT $1,"
                            " $2::bigint WHERE $2::bigint > 0 ON CONFLICT (uri) DO NOTHING"
                            " RETURNING id)"
                            " SELECT id FROM ins UNION ALL"
                            " SELECT id FROM checkpoints WHERE uri = $1",
                            2, params, PGRES_TUPLES_OK, "registering checkpoint", &r);
    if (rc < 0)
        return rc;
    *id = PQntuples(r) > 0 ? scheduler_col_i64(r, 0, 0) : 0;
    PQclear(r);
    return 0;
}

/* The host row for rep, locked; created (*created = 1) when unknown. cur
 * receives its stored bandwidths (dram, ssd, network). */
static int lock_host(PGconn *c, const struct thaw_sched_report *rep,
                     struct thaw_sched_report_result *res, double cur[3])
{
    const char *params[2] = { rep->name, rep->address };
    PGresult *r;
    int rc = scheduler_exec(c,
                            "SELECT id, name, dram_to_gpu_bps, ssd_bps, network_bps FROM hosts"
                            " WHERE name = $1 OR address = $2 ORDER BY id FOR UPDATE",
                            2, params, PGRES_TUPLES_OK, "reading host", &r);
    if (rc < 0)
        return rc;
    int by_name = -1, by_addr = -1;
    for (int i = 0; i < PQntuples(r); i++) {
        if (!PQgetisnull(r, i, 1) && strcmp(PQgetvalue(r, i, 1), rep->name) == 0)
            by_name = i;
        else
            by_addr = i;
    }
    if (by_addr >= 0 && (by_name >= 0 || !PQgetisnull(r, by_addr, 1))) {
        rc = bad(res, "address", "%s is the address of another host (%s)", rep->address,
                 PQgetisnull(r, by_addr, 1) ? "unnamed" : PQgetvalue(r, by_addr, 1));
        PQclear(r);
        return rc;
    }
    int row = by_name >= 0 ? by_name : by_addr; /* an unnamed row with our address is adopted */
    if (row >= 0) {
        res->host_id = scheduler_col_i64(r, row, 0);
        for (int t = 0; t < 3; t++)
            cur[t] = scheduler_col_f64(r, row, 2 + t);
        PQclear(r);
        return 0;
    }
    PQclear(r);
    rc = scheduler_exec(c, "INSERT INTO hosts (name, address) VALUES ($1, $2) RETURNING id", 2,
                        params, PGRES_TUPLES_OK, "registering host", &r);
    if (rc < 0)
        return rc;
    res->host_id = scheduler_col_i64(r, 0, 0);
    res->created = 1;
    cur[0] = cur[1] = cur[2] = 0;
    PQclear(r);
    return 0;
}

/* What the estimator predicts for a load of l->bytes from l->tier at the
 * bandwidths bw (0 = default), seconds. */
static double predict_s(const struct thaw_sched_report_load *l, const double bw[3])
{
    struct thaw_sched_host h;
    memset(&h, 0, sizeof h);
    h.dram_to_gpu_bps = bw[0];
    h.ssd_bps = bw[1];
    h.network_bps = bw[2];
    h.gpu_free_bytes = UINT64_MAX;
    if (strcmp(l->tier, "dram") == 0)
        h.ckpt_dram_bytes = l->bytes;
    else if (strcmp(l->tier, "ssd") == 0)
        h.ckpt_ssd_bytes = l->bytes;
    struct thaw_sched_estimate e;
    thaw_sched_estimate(&h, l->bytes, NULL, &e);
    return e.load_s;
}

/* Which stored bandwidth a load tier teaches: 0 dram, 1 ssd, 2 network. */
static int bw_slot(const char *tier)
{
    if (strcmp(tier, "dram") == 0)
        return 0;
    if (strcmp(tier, "ssd") == 0)
        return 1;
    return 2;
}

int thaw_sched_report_apply(struct thaw_sched_db *db, const struct thaw_sched_report *rep,
                            struct thaw_sched_error_stats *err,
                            struct thaw_sched_report_result *res)
{
    struct thaw_sched_report_result local;
    int rc = 0, in_tx = 0;
    PGresult *r = NULL;
    struct arr rep_ckpts = { 0 }, rep_tiers = { 0 }, inst_ids = { 0 };
    double *pred_s = NULL;
    size_t n_new = 0;

    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!db || !rep)
        return THAW_FAIL(THAW_EINVAL, "a report needs a database and a report");
    rc = validate(rep, res);
    if (rc < 0)
        return rc;
    if (rep->n_loads) {
        pred_s = thaw_calloc(rep->n_loads, sizeof *pred_s);
        if (!pred_s)
            return -ENOMEM;
    }
    size_t *new_loads = rep->n_loads ? thaw_calloc(rep->n_loads, sizeof *new_loads) : NULL;
    if (rep->n_loads && !new_loads) {
        thaw_free(pred_s);
        return -ENOMEM;
    }
    PGconn *c = db->conn;
    struct num hid;

    THAW_PG_TRY(PQexec(c, "BEGIN ISOLATION LEVEL READ COMMITTED"), PGRES_COMMAND_OK, "BEGIN");
    in_tx = 1;
    double bw[3];
    rc = lock_host(c, rep, res, bw);
    if (rc < 0)
        goto fail;
    i64s(&hid, res->host_id);

    /* The agent's own measurements replace the stored values; loads then
     * refine them. */
    const double reported[3] = { rep->dram_to_gpu_bps, rep->ssd_bps, rep->network_bps };
    for (int t = 0; t < 3; t++)
        if (reported[t] > 0)
            bw[t] = reported[t];

    /* Completed loads: each recorded once, then learned from. */
    for (size_t i = 0; i < rep->n_loads; i++) {
        const struct thaw_sched_report_load *l = &rep->loads[i];
        int t = bw_slot(l->tier);
        double p = predict_s(l, bw);
        double after = thaw_sched_ewma_bw(bw[t], l->bytes, l->ms / 1e3, LOAD_ALPHA);
        struct num b, ms, pms, aft;
        const char *params[8] = { hid.s, l->id, l->checkpoint, l->tier,
                                  i64s(&b, (int64_t)l->bytes), f64s(&ms, l->ms),
                                  f64s(&pms, p * 1e3), f64s(&aft, after) };
        rc = scheduler_exec(c,
                            "INSERT INTO load_samples (host, id, checkpoint, tier, bytes, ms,"
                            " predicted_ms, bps_after) VALUES ($1::bigint, $2, $3, $4,"
                            " $5::bigint, $6::float8, $7::float8, $8::float8)"
                            " ON CONFLICT (host, id) DO NOTHING",
                            8, params, PGRES_COMMAND_OK, "recording load", &r);
        if (rc < 0)
            goto fail;
        int is_new = strcmp(PQcmdTuples(r), "1") == 0;
        PQclear(r);
        r = NULL;
        if (!is_new)
            continue;
        bw[t] = after;
        pred_s[n_new] = p;
        new_loads[n_new++] = i;
    }

    /* Replicas: upsert each, then delete the host's others. */
    for (size_t i = 0; i < rep->n_replicas; i++) {
        const struct thaw_sched_report_replica *p = &rep->replicas[i];
        const char *state = p->state ? p->state : "ready";
        uint64_t reg = p->checkpoint_bytes;
        if (!reg && strcmp(state, "ready") == 0)
            reg = p->bytes;
        int64_t cid;
        rc = checkpoint_id(c, p->checkpoint, reg, &cid);
        if (rc < 0)
            goto fail;
        if (!cid) {
            char f[96];
            snprintf(f, sizeof f, "replicas[%zu].checkpoint_bytes", i);
            rc = bad(res, f, "checkpoint %s is not registered: give its size", p->checkpoint);
            goto fail;
        }
        struct num cs, bs;
        const char *params[5] = { hid.s, i64s(&cs, cid), p->tier, state,
                                  i64s(&bs, (int64_t)p->bytes) };
        THAW_PG_TRY(PQexecParams(c,
                                 "INSERT INTO replicas (host, checkpoint, tier, state, bytes)"
                                 " VALUES ($1::bigint, $2::bigint, $3, $4, $5::bigint)"
                                 " ON CONFLICT (host, checkpoint, tier) DO UPDATE SET"
                                 " state = EXCLUDED.state, bytes = EXCLUDED.bytes",
                                 5, NULL, params, NULL, NULL, 0),
                    PGRES_COMMAND_OK, "upserting replica");
        if (arr_add(&rep_ckpts, cs.s) < 0 || arr_add(&rep_tiers, p->tier) < 0) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    {
        const char *ck = arr_str(&rep_ckpts), *ti = ck ? arr_str(&rep_tiers) : NULL;
        if (!ti) {
            rc = -ENOMEM;
            goto fail;
        }
        const char *params[3] = { hid.s, ck, ti };
        THAW_PG_TRY(PQexecParams(c,
                                 "DELETE FROM replicas WHERE host = $1::bigint AND"
                                 " (checkpoint, tier) NOT IN"
                                 " (SELECT * FROM unnest($2::bigint[], $3::text[]))",
                                 3, NULL, params, NULL, NULL, 0),
                    PGRES_COMMAND_OK, "deleting replicas no longer reported");
    }

    /* Instances: upsert by name, then delete the host's others. */
    for (size_t i = 0; i < rep->n_instances; i++) {
        const struct thaw_sched_report_instance *in = &rep->instances[i];
        int64_t cid;
        rc = checkpoint_id(c, in->checkpoint, in->checkpoint_bytes, &cid);
        if (rc < 0)
            goto fail;
        if (!cid) {
            char f[96];
            snprintf(f, sizeof f, "instances[%zu].checkpoint_bytes", i);
            rc = bad(res, f, "checkpoint %s is not registered: give its size", in->checkpoint);
            goto fail;
        }
        struct num cs, nr, ti, to;
        const char *params[7] = { hid.s, in->name, i64s(&cs, cid), in->state,
                                  i64s(&nr, (int64_t)in->n_running),
                                  i64s(&ti, (int64_t)in->tokens_in),
                                  i64s(&to, (int64_t)in->tokens_out) };
        rc = scheduler_exec(c,
                            "INSERT INTO instances (host, name, model, state, n_running,"
                            " tokens_in, tokens_out) VALUES ($1::bigint, $2, $3::bigint, $4,"
                            " $5::integer, $6::bigint, $7::bigint)"
                            " ON CONFLICT (host, name) DO UPDATE SET model = EXCLUDED.model,"
                            " state = EXCLUDED.state, n_running = EXCLUDED.n_running,"
                            " tokens_in = EXCLUDED.tokens_in, tokens_out = EXCLUDED.tokens_out,"
                            " updated_at = now() RETURNING id",
                            7, params, PGRES_TUPLES_OK, "upserting instance", &r);
        if (rc < 0)
            goto fail;
        rc = arr_add(&inst_ids, PQgetvalue(r, 0, 0));
        PQclear(r);
        r = NULL;
        if (rc < 0)
            goto fail;
        if (in->reservation_id > 0) {
            struct num rid;
            const char *dparams[2] = { i64s(&rid, in->reservation_id), hid.s };
            THAW_PG_TRY(PQexecParams(c,
                                     "DELETE FROM reservations WHERE id = $1::bigint"
                                     " AND host = $2::bigint",
                                     2, NULL, dparams, NULL, NULL, 0),
                        PGRES_COMMAND_OK, "releasing reservation");
        }
    }
    {
        const char *ids = arr_str(&inst_ids);
        if (!ids) {
            rc = -ENOMEM;
            goto fail;
        }
        const char *params[2] = { hid.s, ids };
        THAW_PG_TRY(PQexecParams(c,
                                 "DELETE FROM instances WHERE host = $1::bigint AND"
                                 " id <> ALL($2::bigint[])",
                                 2, NULL, params, NULL, NULL, 0),
                    PGRES_COMMAND_OK, "deleting instances no longer reported");
    }

    /* The host row last: capacities, bandwidths, heartbeat. */
    {
        uint64_t free_sum = 0, total_sum = 0;
        for (size_t i = 0; i < rep->n_gpus; i++) {
            free_sum += rep->gpus[i].free_bytes;
            total_sum += rep->gpus[i].total_bytes;
        }
        struct num ng, gf, gt, db_, du, sb, su, b0, b1, b2;
        const char *params[13] = { hid.s, rep->name, rep->address,
                                   i64s(&ng, (int64_t)rep->n_gpus),
                                   i64s(&gf, (int64_t)free_sum), i64s(&gt, (int64_t)total_sum),
                                   i64s(&db_, (int64_t)rep->dram_bytes),
                                   i64s(&du, (int64_t)rep->dram_used),
                                   i64s(&sb, (int64_t)rep->ssd_bytes),
                                   i64s(&su, (int64_t)rep->ssd_used), f64s(&b0, bw[0]),
                                   f64s(&b1, bw[1]), f64s(&b2, bw[2]) };
        THAW_PG_TRY(PQexecParams(c,
                                 "UPDATE hosts SET name = $2, address = $3,"
                                 " n_gpus = $4::integer, gpu_free_bytes = $5::bigint,"
                                 " gpu_bytes = $6::bigint, dram_bytes = $7::bigint,"
                                 " dram_used = $8::bigint, ssd_bytes = $9::bigint,"
                                 " ssd_used = $10::bigint, dram_to_gpu_bps = $11::float8,"
                                 " ssd_bps = $12::float8, network_bps = $13::float8,"
                                 " heartbeat = now() WHERE id = $1::bigint",
                                 13, NULL, params, NULL, NULL, 0),
                    PGRES_COMMAND_OK, "updating host");
    }
    THAW_PG_TRY(PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "COMMIT");
    in_tx = 0;

    res->n_loads_new = n_new;
    res->dram_to_gpu_bps = bw[0];
    res->ssd_bps = bw[1];
    res->network_bps = bw[2];
    if (err)
        for (size_t k = 0; k < n_new; k++)
            thaw_sched_error_add(err, pred_s[k], rep->loads[new_loads[k]].ms / 1e3);
    THAW_LOG(THAW_LOG_DEBUG, "scheduler", "host_report",
             "host=%s id=%" PRId64 " created=%d replicas=%zu instances=%zu loads_new=%zu",
             rep->name, res->host_id, res->created, rep->n_replicas, rep->n_instances, n_new);

fail:
    PQclear(r);
    if (in_tx)
        PQclear(PQexec(c, "ROLLBACK"));
    thaw_free(rep_ckpts.p);
    thaw_free(rep_tiers.p);
    thaw_free(inst_ids.p);
    thaw_free(new_loads);
    thaw_free(pred_s);
    return rc;
}
