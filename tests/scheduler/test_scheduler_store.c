/*
 * test_scheduler_store.c - what host agents and runtimes write into the
 * locality store (host reports, the usage ledger) and the degraded-mode
 * pieces (live-host list, rendezvous hashing), against a real PostgreSQL
 * started in a temporary directory (those cases skip without it); plus a
 * small version of bench/sched_scale.sh (100 hosts, 1,000 checkpoints).
 */
#include <inttypes.h>
#include <libpq-fe.h>

#include "scheduler/thaw_scheduler.h"
#include "tests/scheduler/pg_harness.h"
#include "tests/thaw_test.h"

/* ---------------------------------------------------------------- hashing */

static void addr_fill(struct thaw_sched_host_ref *h, size_t n, size_t first)
{
    memset(h, 0, n * sizeof *h);
    for (size_t i = 0; i < n; i++) {
        h[i].host_id = (int64_t)(first + i + 1);
        snprintf(h[i].address, sizeof h[i].address, "gpu-node-%zu:8081", first + i);
    }
}

static void t_hash_rank(void)
{
    enum { N = 20, KEYS = 2000 };
    struct thaw_sched_host_ref hosts[N], shuffled[N];
    addr_fill(hosts, N, 0);
    size_t order[THAW_SCHED_HASH_MAX_ORDER];
    CHECK_EQ(thaw_sched_hash_rank(hosts, 0, "k", order, 4), 0);
    CHECK_EQ(thaw_sched_hash_rank(hosts, N, "k", order, 0), 0);
    CHECK_EQ(thaw_sched_hash_rank(hosts, 3, "k", order, 8), 3);
    CHECK_EQ(thaw_sched_hash_rank(hosts, N, "k", order, 1000), N);

    /* Reversed input: the same hosts, in the same order, for every key. */
    for (size_t i = 0; i < N; i++)
        shuffled[i] = hosts[N - 1 - i];
    size_t count[N] = { 0 };
    int moved = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[64];
        snprintf(key, sizeof key, "s3://models/m-%d", k);
        size_t a[4], b[4], again[4];
        CHECK_EQ(thaw_sched_hash_rank(hosts, N, key, a, 4), 4);
        CHECK_EQ(thaw_sched_hash_rank(shuffled, N, key, b, 4), 4);
        CHECK_EQ(thaw_sched_hash_rank(hosts, N, key, again, 4), 4);
        for (int j = 0; j < 4; j++) {
            CHECK_STR_EQ(hosts[a[j]].address, shuffled[b[j]].address);
            CHECK_EQ(a[j], again[j]);
            for (int m = 0; m < j; m++)
                CHECK(a[m] != a[j]);
        }
        count[a[0]]++;
        /* Remove the last host: a key moves only when that host held it,
         * and then to its runner-up. */
        size_t c[2];
        CHECK_EQ(thaw_sched_hash_rank(hosts, N - 1, key, c, 2), 2);
        if (a[0] == N - 1) {
            CHECK_EQ(c[0], a[1]);
            moved++;
        } else {
            CHECK_EQ(c[0], a[0]);
        }
    }
    /* Spread: each of 20 hosts gets 100 of 2000 keys on average. */
    for (size_t i = 0; i < N; i++) {
        if (count[i] < 50 || count[i] > 160)
            fprintf(stderr, "host %zu got %zu keys\n", i, count[i]);
        CHECK(count[i] >= 50 && count[i] <= 160);
    }
    CHECK_EQ((size_t)moved, count[N - 1]);
}

/* ---------------------------------------------------------------- PostgreSQL */

static struct pg_harness pg;

static void stop_at_exit(void)
{
    pg_harness_stop(&pg);
}

static void pg_start_or_skip(void)
{
    char why[1536];
    int rc = pg_harness_start(&pg, why, sizeof why);
    if (rc == 1)
        SKIP(why);
    if (rc != 0) {
        fprintf(stderr, "pg_harness_start: %s\n", why);
        CHECK(rc == 0);
    }
    atexit(stop_at_exit);
}

static PGresult *q(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
        CHECK(0);
    }
    return r;
}

static long q_long(PGconn *c, const char *sql)
{
    PGresult *r = q(c, sql);
    if (PQntuples(r) != 1)
        fprintf(stderr, "%s: %d rows\n", sql, PQntuples(r));
    CHECK_EQ(PQntuples(r), 1);
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static double q_double(PGconn *c, const char *sql)
{
    PGresult *r = q(c, sql);
    CHECK_EQ(PQntuples(r), 1);
    double v = strtod(PQgetvalue(r, 0, 0), NULL);
    PQclear(r);
    return v;
}

static void q_str(PGconn *c, const char *sql, char *out, size_t n)
{
    PGresult *r = q(c, sql);
    CHECK_EQ(PQntuples(r), 1);
    snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* A whole-state snapshot of the tables a report writes, for comparing two
 * applications of the same report. */
static void snapshot(PGconn *c, char *out, size_t n)
{
    q_str(c,
          "SELECT concat_ws('|',"
          " (SELECT string_agg(concat_ws(',', id, name, address, n_gpus, gpu_free_bytes,"
          "   gpu_bytes, dram_bytes, dram_used, ssd_bytes, ssd_used, dram_to_gpu_bps, ssd_bps,"
          "   network_bps), ';' ORDER BY id) FROM hosts),"
          " (SELECT string_agg(concat_ws(',', host, checkpoint, tier, state, bytes), ';'"
          "   ORDER BY host, checkpoint, tier) FROM replicas),"
          " (SELECT string_agg(concat_ws(',', id, host, name, model, state, n_running,"
          "   tokens_in, tokens_out), ';' ORDER BY id) FROM instances),"
          " (SELECT string_agg(concat_ws(',', host, id, tier, bytes, ms, predicted_ms,"
          "   bps_after), ';' ORDER BY host, id) FROM load_samples),"
          " (SELECT string_agg(concat_ws(',', id, uri, bytes), ';' ORDER BY id) FROM checkpoints),"
          " (SELECT count(*) FROM reservations))",
          out, n);
}

static const struct thaw_sched_report_gpu two_gpus[] = {
    { .total_bytes = 80000000000ull, .free_bytes = 70000000000ull },
    { .total_bytes = 80000000000ull, .free_bytes = 10000000000ull },
};

static void t_pg_report(void)
{
    pg_start_or_skip();
    CHECK_OK(thaw_sched_migrate(pg.url, NULL));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    struct thaw_sched_db *db = NULL;
    CHECK_OK(thaw_sched_db_open(pg.url, &db));
    PQclear(q(c, "INSERT INTO checkpoints (uri, bytes) VALUES ('s3://m/llama', 16000000000)"));
    /* A reservation the instance below fulfils, on a host created first. */

    struct thaw_sched_report_replica reps[] = {
        { .checkpoint = "s3://m/llama", .tier = "dram", .bytes = 16000000000ull },
        { .checkpoint = "s3://m/llama", .tier = "ssd", .bytes = 16000000000ull },
        { .checkpoint = "s3://m/mistral", .tier = "ssd", .bytes = 14000000000ull },
        { .checkpoint = "s3://m/qwen", .tier = "dram", .state = "loading", .bytes = 1000,
          .checkpoint_bytes = 30000000000ull },
    };
    struct thaw_sched_report_instance insts[] = {
        { .name = "inst-1", .checkpoint = "s3://m/llama", .state = "busy", .n_running = 2,
          .tokens_in = 300, .tokens_out = 50 },
    };
    struct thaw_sched_report_load loads[] = {
        { .id = "load-1", .checkpoint = "s3://m/llama", .tier = "ssd", .bytes = 16000000000ull,
          .ms = 4000 },
        { .id = "load-2", .checkpoint = "s3://m/llama", .tier = "dram", .bytes = 16000000000ull,
          .ms = 800 },
    };
    struct thaw_sched_report rep = {
        .name = "gpu-node-a", .address = "10.0.0.1:8081", .n_gpus = 2, .gpus = two_gpus,
        .dram_bytes = 512ull << 30, .dram_used = 16000000000ull, .ssd_bytes = 4ull << 40,
        .ssd_used = 30000000000ull, .network_bps = 2.5e9,
        .n_replicas = 4, .replicas = reps, .n_instances = 1, .instances = insts,
        .n_loads = 2, .loads = loads,
    };
    struct thaw_sched_error_stats err = { 0 };
    struct thaw_sched_report_result res;
    CHECK_OK(thaw_sched_report_apply(db, &rep, &err, &res));
    CHECK_EQ(res.created, 1);
    CHECK(res.host_id >= 1);
    CHECK_EQ(res.n_loads_new, 2);
    /* First samples are taken as they are: 16 GB / 4 s, 16 GB / 0.8 s. The
     * reported network bandwidth replaces the stored 0. */
    CHECK_NEAR(res.ssd_bps, 4e9, 1);
    CHECK_NEAR(res.dram_to_gpu_bps, 20e9, 1);
    CHECK_NEAR(res.network_bps, 2.5e9, 1);
    /* Predictions came from the defaults (3 GB/s SSD, 20 GB/s DRAM). */
    CHECK_EQ(err.n, 2);
    CHECK_NEAR(q_double(c, "SELECT predicted_ms FROM load_samples WHERE id = 'load-1'"),
               16e9 / 3e9 * 1e3, 1e-6);
    CHECK_NEAR(q_double(c, "SELECT predicted_ms FROM load_samples WHERE id = 'load-2'"), 800,
               1e-6);
    CHECK_EQ(q_long(c, "SELECT n_gpus FROM hosts WHERE name = 'gpu-node-a'"), 2);
    CHECK_EQ(q_long(c, "SELECT gpu_free_bytes FROM hosts WHERE name = 'gpu-node-a'"),
             80000000000L);
    CHECK_EQ(q_long(c, "SELECT gpu_bytes FROM hosts WHERE name = 'gpu-node-a'"), 160000000000L);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM hosts WHERE heartbeat > now() - interval '5 s'"),
             1);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM replicas"), 4);
    /* Unregistered checkpoints were registered: mistral by its ready
     * replica's bytes, qwen by checkpoint_bytes. */
    CHECK_EQ(q_long(c, "SELECT bytes FROM checkpoints WHERE uri = 's3://m/mistral'"),
             14000000000L);
    CHECK_EQ(q_long(c, "SELECT bytes FROM checkpoints WHERE uri = 's3://m/qwen'"),
             30000000000L);
    CHECK_EQ(q_long(c, "SELECT tokens_in + tokens_out FROM instances WHERE name = 'inst-1'"),
             350);

    /* The same report again: the same state, the loads not learned twice. */
    char before[8192], after[8192];
    snapshot(c, before, sizeof before);
    CHECK_OK(thaw_sched_report_apply(db, &rep, &err, &res));
    CHECK_EQ(res.created, 0);
    CHECK_EQ(res.n_loads_new, 0);
    CHECK_EQ(err.n, 2);
    snapshot(c, after, sizeof after);
    CHECK_STR_EQ(after, before);

    /* A placement's reservation, fulfilled by the instance's next report;
     * a new SSD load moves the EWMA: 0.2 * 2 GB/s + 0.8 * 4 GB/s. The
     * mistral and qwen replicas are gone from the report, so from the
     * table; the instance stopped, so it goes too. */
    PQclear(q(c, "INSERT INTO reservations (host, checkpoint, gpu_bytes, expires_at)"
                 " SELECT h.id, k.id, 1, now() + interval '1 minute' FROM hosts h,"
                 " checkpoints k WHERE k.uri = 's3://m/llama'"));
    long rid = q_long(c, "SELECT id FROM reservations");
    struct thaw_sched_report_instance inst2 = {
        .name = "inst-2", .checkpoint = "s3://m/llama", .state = "ready",
        .reservation_id = rid,
    };
    struct thaw_sched_report_load load3 = {
        .id = "load-3", .checkpoint = "s3://m/llama", .tier = "ssd", .bytes = 8000000000ull,
        .ms = 4000,
    };
    rep.n_replicas = 2;
    rep.instances = &inst2;
    rep.loads = &load3;
    rep.n_loads = 1;
    rep.network_bps = 0; /* not measured this time: keep 2.5e9 */
    CHECK_OK(thaw_sched_report_apply(db, &rep, &err, &res));
    CHECK_EQ(res.n_loads_new, 1);
    CHECK_NEAR(res.ssd_bps, 0.2 * 2e9 + 0.8 * 4e9, 1);
    CHECK_NEAR(res.network_bps, 2.5e9, 1);
    CHECK_NEAR(q_double(c, "SELECT ssd_bps FROM hosts"), 0.2 * 2e9 + 0.8 * 4e9, 1);
    /* Predicted with the learned 4 GB/s: 8 GB in 2 s, took 4 s: -50 %. */
    CHECK_NEAR(q_double(c, "SELECT predicted_ms FROM load_samples WHERE id = 'load-3'"), 2000,
               1e-6);
    CHECK_EQ(err.n, 3);
    CHECK_NEAR(err.max_abs_rel, 0.5, 1e-9);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM replicas"), 2);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM instances"), 1);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM instances WHERE name = 'inst-2'"), 1);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM reservations"), 0);

    /* An operator-registered host without a name is adopted by address. */
    PQclear(q(c, "INSERT INTO hosts (address) VALUES ('10.0.0.2:8081')"));
    long pre_id = q_long(c, "SELECT id FROM hosts WHERE address = '10.0.0.2:8081'");
    struct thaw_sched_report b = { .name = "gpu-node-b", .address = "10.0.0.2:8081" };
    CHECK_OK(thaw_sched_report_apply(db, &b, NULL, &res));
    CHECK_EQ(res.created, 0);
    CHECK_EQ(res.host_id, pre_id);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM hosts WHERE name = 'gpu-node-b'"), 1);
    /* A host moving to a new address keeps its row. */
    b.address = "10.0.0.3:8081";
    CHECK_OK(thaw_sched_report_apply(db, &b, NULL, &res));
    CHECK_EQ(res.host_id, pre_id);
    /* But it cannot take another host's address. */
    b.address = "10.0.0.1:8081";
    CHECK_FAILS(thaw_sched_report_apply(db, &b, NULL, &res), THAW_EINVAL);
    CHECK_STR_EQ(res.field, "address");
    CHECK_ERRMSG_HAS("gpu-node-a");

    /* An unknown checkpoint without a size is refused, naming the field,
     * and the transaction leaves nothing behind. */
    snapshot(c, before, sizeof before);
    struct thaw_sched_report_replica unknown = { .checkpoint = "s3://m/nope", .tier = "dram",
                                                 .state = "loading", .bytes = 5 };
    rep.replicas = &unknown;
    rep.n_replicas = 1;
    rep.n_loads = 0;
    CHECK_FAILS(thaw_sched_report_apply(db, &rep, NULL, &res), THAW_EINVAL);
    CHECK_STR_EQ(res.field, "replicas[0].checkpoint_bytes");
    snapshot(c, after, sizeof after);
    CHECK_STR_EQ(after, before);

    thaw_sched_db_close(db);
    PQfinish(c);
    pg_harness_stop(&pg);
}

/* Malformed reports: table of one change each and the field named. */
struct bad_report {
    const char *name;
    void (*spoil)(struct thaw_sched_report *r, struct thaw_sched_report_replica *p,
                  struct thaw_sched_report_instance *in, struct thaw_sched_report_load *l,
                  struct thaw_sched_report_gpu *g);
    const char *field;
};

#define SPOIL(fn, body)                                                                        \
    static void fn(struct thaw_sched_report *r, struct thaw_sched_report_replica *p,           \
                   struct thaw_sched_report_instance *in, struct thaw_sched_report_load *l,    \
                   struct thaw_sched_report_gpu *g)                                            \
    {                                                                                          \
        (void)r, (void)p, (void)in, (void)l, (void)g;                                          \
        body;                                                                                  \
    }
SPOIL(no_name, r->name = "")
SPOIL(bad_name, r->name = "a b")
SPOIL(no_address, r->address = NULL)
SPOIL(free_over_total, g[0].free_bytes = g[0].total_bytes + 1)
SPOIL(bad_bw, r->ssd_bps = -1)
SPOIL(nan_bw, r->network_bps = NAN)
SPOIL(bad_tier, p[1].tier = "tape")
SPOIL(bad_state, p[0].state = "gone")
SPOIL(dup_replica, p[1].tier = "dram")
SPOIL(no_ckpt, p[0].checkpoint = "")
SPOIL(huge_bytes, p[1].bytes = UINT64_MAX)
SPOIL(inst_no_id, in[0].name = NULL)
SPOIL(inst_state, in[0].state = "sleeping")
SPOIL(load_tier, l[0].tier = "gpu")
SPOIL(load_ms, l[0].ms = 0)
SPOIL(load_no_id, l[0].id = "")

static const struct bad_report bad_reports[] = {
    { "no_name", no_name, "name" },
    { "bad_name", bad_name, "name" },
    { "no_address", no_address, "address" },
    { "free_over_total", free_over_total, "gpus[0].free_bytes" },
    { "bad_bw", bad_bw, "bandwidth_bps.ssd" },
    { "nan_bw", nan_bw, "bandwidth_bps.network" },
    { "bad_tier", bad_tier, "replicas[1].tier" },
    { "bad_state", bad_state, "replicas[0].state" },
    { "dup_replica", dup_replica, "replicas[1]" },
    { "no_ckpt", no_ckpt, "replicas[0].checkpoint" },
    { "huge_bytes", huge_bytes, "replicas[1].bytes" },
    { "inst_no_id", inst_no_id, "instances[0].id" },
    { "inst_state", inst_state, "instances[0].state" },
    { "load_tier", load_tier, "completed_loads[0].tier" },
    { "load_ms", load_ms, "completed_loads[0].ms" },
    { "load_no_id", load_no_id, "completed_loads[0].id" },
};

static void t_report_check(void)
{
    for (size_t i = 0; i < sizeof bad_reports / sizeof bad_reports[0]; i++) {
        struct thaw_sched_report_gpu g[1] = { { 100, 50 } };
        struct thaw_sched_report_replica p[2] = {
            { .checkpoint = "s3://m/a", .tier = "dram", .bytes = 1 },
            { .checkpoint = "s3://m/a", .tier = "ssd", .bytes = 1 },
        };
        struct thaw_sched_report_instance in[1] = {
            { .name = "i", .checkpoint = "s3://m/a", .state = "ready" },
        };
        struct thaw_sched_report_load l[1] = {
            { .id = "l", .checkpoint = "s3://m/a", .tier = "ssd", .bytes = 1, .ms = 1 },
        };
        struct thaw_sched_report r = {
            .name = "h", .address = "h:1", .n_gpus = 1, .gpus = g, .n_replicas = 2,
            .replicas = p, .n_instances = 1, .instances = in, .n_loads = 1, .loads = l,
        };
        struct thaw_sched_report_result res;
        CHECK_OK(thaw_sched_report_check(&r, &res));
        bad_reports[i].spoil(&r, p, in, l, g);
        int rc = thaw_sched_report_check(&r, &res);
        fprintf(stderr, "%-16s %s\n", bad_reports[i].name, thaw_errmsg());
        CHECK_EQ(rc, THAW_EINVAL);
        CHECK_STR_EQ(res.field, bad_reports[i].field);
    }
}

static void t_pg_usage(void)
{
    pg_start_or_skip();
    CHECK_OK(thaw_sched_migrate(pg.url, NULL));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    struct thaw_sched_db *db = NULL;
    CHECK_OK(thaw_sched_db_open(pg.url, &db));
    struct thaw_sched_usage u = {
        .activation_id = "act-1", .ns = "guest", .action = "chat", .model = "s3://m/llama",
        .prompt_tokens = 12, .completion_tokens = 34, .load_tier = "ssd", .load_ms = 850.5,
        .gpu_ms = 1200, .cold = 1,
    };
    int inserted = -1;
    CHECK_OK(thaw_sched_usage_record(db, &u, &inserted));
    CHECK_EQ(inserted, 1);
    /* A retry (even with other numbers) changes nothing. */
    u.completion_tokens = 99;
    CHECK_OK(thaw_sched_usage_record(db, &u, &inserted));
    CHECK_EQ(inserted, 0);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM usage_ledger"), 1);
    CHECK_EQ(q_long(c, "SELECT completion_tokens FROM usage_ledger"), 34);
    char row[512];
    q_str(c, "SELECT concat_ws(',', namespace, action, model, prompt_tokens, load_tier, load_ms,"
             " gpu_ms, cold) FROM usage_ledger", row, sizeof row);
    CHECK_STR_EQ(row, "guest,chat,s3://m/llama,12,ssd,850.5,1200,t");
    /* Defaults: empty strings, tier none, warm. */
    struct thaw_sched_usage v = { .activation_id = "act-2" };
    CHECK_OK(thaw_sched_usage_record(db, &v, NULL));
    q_str(c, "SELECT concat_ws(',', namespace, load_tier, cold) FROM usage_ledger"
             " WHERE activation_id = 'act-2'", row, sizeof row);
    CHECK_STR_EQ(row, ",none,f");
    /* Refused, naming the field. */
    v.activation_id = "";
    CHECK_FAILS(thaw_sched_usage_record(db, &v, NULL), THAW_EINVAL);
    CHECK_ERRMSG_HAS("\"activation_id\"");
    v.activation_id = "act-3";
    v.load_tier = "tape";
    CHECK_FAILS(thaw_sched_usage_record(db, &v, NULL), THAW_EINVAL);
    CHECK_ERRMSG_HAS("\"load_tier\"");
    v.load_tier = NULL;
    v.prompt_tokens = 0x80000000u;
    CHECK_FAILS(thaw_sched_usage_record(db, &v, NULL), THAW_EINVAL);
    CHECK_ERRMSG_HAS("\"prompt_tokens\"");
    v.prompt_tokens = 0;
    v.gpu_ms = -1;
    CHECK_FAILS(thaw_sched_usage_record(db, &v, NULL), THAW_EINVAL);
    CHECK_ERRMSG_HAS("\"gpu_ms\"");
    CHECK_EQ(q_long(c, "SELECT count(*) FROM usage_ledger"), 2);
    thaw_sched_db_close(db);
    PQfinish(c);
    pg_harness_stop(&pg);
}

static void t_pg_live_hosts(void)
{
    pg_start_or_skip();
    CHECK_OK(thaw_sched_migrate(pg.url, NULL));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    struct thaw_sched_db *db = NULL;
    CHECK_OK(thaw_sched_db_open(pg.url, &db));
    struct thaw_sched_host_ref *hosts = NULL;
    size_t n = 99;
    CHECK_OK(thaw_sched_live_hosts(db, 0, &hosts, &n));
    CHECK_EQ(n, 0);
    CHECK(hosts == NULL);
    PQclear(q(c, "INSERT INTO hosts (address, heartbeat) VALUES ('a', now()),"
                 " ('stale', now() - interval '1 hour'), ('b', now() - interval '10 s')"));
    CHECK_OK(thaw_sched_live_hosts(db, 0, &hosts, &n));
    CHECK_EQ(n, 2);
    CHECK_STR_EQ(hosts[0].address, "a");
    CHECK_STR_EQ(hosts[1].address, "b");
    CHECK(hosts[0].host_id < hosts[1].host_id);
    thaw_free(hosts);
    CHECK_OK(thaw_sched_live_hosts(db, 5, &hosts, &n));
    CHECK_EQ(n, 1);
    thaw_free(hosts);
    thaw_sched_db_close(db);
    PQfinish(c);
    pg_harness_stop(&pg);
}

/* ---------------------------------------------------------------- scale (small) */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* bench/sched_scale.sh in small: 100 hosts, 1,000 checkpoints, 3 replicas
 * each; 200 read-only rankings and 200 placements, all correct, and a
 * lenient bound on their P99 (the bench has the real numbers). */
static void t_pg_scale_small(void)
{
    pg_start_or_skip();
    CHECK_OK(thaw_sched_migrate(pg.url, NULL));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    PQclear(q(c, "INSERT INTO hosts (address, name, n_gpus, gpu_free_bytes, gpu_bytes,"
                 " dram_to_gpu_bps, ssd_bps, network_bps)"
                 " SELECT 'host-' || g || ':8081', 'host-' || g, 8, 640000000000000,"
                 " 640000000000000, 20e9 + g * 1e6, 3e9, 1.25e9 FROM generate_series(1, 100) g"));
    PQclear(q(c, "INSERT INTO checkpoints (uri, bytes) SELECT 's3://m/' || g,"
                 " 1000000000 + g * 1000000 FROM generate_series(1, 1000) g"));
    PQclear(q(c, "INSERT INTO replicas (host, checkpoint, tier, bytes)"
                 " SELECT 1 + (c.id * 7 + k * 31) % 100, c.id,"
                 " (ARRAY['gpu','dram','ssd'])[1 + k], c.bytes"
                 " FROM checkpoints c, generate_series(0, 2) k"));
    PQclear(q(c, "ANALYZE"));
    struct thaw_sched_db *db = NULL;
    CHECK_OK(thaw_sched_db_open(pg.url, &db));
    enum { N = 200 };
    double rank_ms[N], place_ms[N];
    for (int i = 0; i < N; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "s3://m/%d", 1 + (i * 37) % 1000);
        struct thaw_sched_host_rank *hr = NULL;
        size_t n = 0;
        double t0 = thaw_now_s();
        CHECK_OK(thaw_sched_rank_hosts(db, uri, 0, NULL, &hr, &n));
        rank_ms[i] = (thaw_now_s() - t0) * 1e3;
        CHECK_EQ(n, 100);
        /* The DRAM holder is the best: 20 GB/s beats SSD's 3 GB/s. */
        CHECK_EQ(hr[0].state, THAW_SCHED_HOST_OK);
        CHECK_EQ(hr[0].c.est.tier, THAW_SCHED_TIER_DRAM);
        thaw_free(hr);
        struct thaw_sched_placement pl;
        t0 = thaw_now_s();
        CHECK_OK(thaw_sched_place(db, uri, 0, NULL, &pl));
        place_ms[i] = (thaw_now_s() - t0) * 1e3;
        CHECK_EQ(pl.est.tier, THAW_SCHED_TIER_DRAM);
    }
    qsort(rank_ms, N, sizeof rank_ms[0], cmp_double);
    qsort(place_ms, N, sizeof place_ms[0], cmp_double);
    fprintf(stderr, "100 hosts: rank p50 %.2f ms p99 %.2f ms; place p50 %.2f ms p99 %.2f ms\n",
            rank_ms[N / 2], rank_ms[N * 99 / 100], place_ms[N / 2], place_ms[N * 99 / 100]);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM reservations"), N);
    /* Lenient: a shared CI machine, sanitizers. */
    CHECK(rank_ms[N * 99 / 100] < 250);
    CHECK(place_ms[N * 99 / 100] < 250);
    thaw_sched_db_close(db);
    PQfinish(c);
    pg_harness_stop(&pg);
}

/* Placement reads only the hosts that can win (holders, warm hosts, the
 * fastest-network few with room); the read-only ranking reads them all.
 * On a mixed cluster (unmeasured networks, full, reserved and stale hosts,
 * warm instances) both must pick the same host for every checkpoint. */
static void t_pg_place_matches_rank(void)
{
    pg_start_or_skip();
    CHECK_OK(thaw_sched_migrate(pg.url, NULL));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    PQclear(q(c, "INSERT INTO hosts (address, n_gpus, gpu_free_bytes, gpu_bytes,"
                 " dram_to_gpu_bps, ssd_bps, network_bps, heartbeat)"
                 " SELECT 'h-' || g, 8, CASE WHEN g % 9 = 0 THEN 1000000000 ELSE 400000000000 END,"
                 " 400000000000, 10e9 + (g % 4) * 1e9, 2e9 + (g % 3) * 1e9,"
                 " CASE WHEN g % 5 = 0 THEN 0 ELSE 1e9 + (g % 7) * 5e8 END,"
                 " CASE WHEN g % 13 = 0 THEN now() - interval '1 hour' ELSE now() END"
                 " FROM generate_series(1, 60) g"));
    PQclear(q(c, "INSERT INTO checkpoints (uri, bytes) SELECT 's3://x/' || g,"
                 " 5000000000 + (g % 11) * 3000000000 FROM generate_series(1, 200) g"));
    PQclear(q(c, "INSERT INTO replicas (host, checkpoint, tier, bytes)"
                 " SELECT DISTINCT ON (h, c.id) h, c.id, (ARRAY['dram','ssd'])[1 + k % 2], c.bytes"
                 " FROM checkpoints c, generate_series(0, 2) k,"
                 " LATERAL (SELECT 1 + (c.id * 17 + k * 23) % 60 AS h) x WHERE c.id % 4 <> 0"));
    PQclear(q(c, "INSERT INTO instances (host, model, state, n_running, tokens_in, tokens_out)"
                 " SELECT 1 + (c.id * 29) % 60, c.id, 'busy', 1, 100, 10 FROM checkpoints c"
                 " WHERE c.id % 10 = 3"));
    /* Fast unmeasured-looking hosts are full of reservations. */
    PQclear(q(c, "INSERT INTO reservations (host, checkpoint, gpu_bytes, estimate_ms, reason,"
                 " expires_at) SELECT h.id, 1, 399000000000, 1, 'test', now() + interval '1 hour'"
                 " FROM hosts h WHERE h.id % 7 = 6"));
    PQclear(q(c, "ANALYZE"));
    struct thaw_sched_db *db = NULL;
    CHECK_OK(thaw_sched_db_open(pg.url, &db));
    struct thaw_sched_place_opts o = { .reservation_ttl_s = 3600 };
    for (int i = 1; i <= 200; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "s3://x/%d", i);
        struct thaw_sched_host_rank *hr = NULL;
        size_t n = 0;
        CHECK_OK(thaw_sched_rank_hosts(db, uri, 0, &o, &hr, &n));
        CHECK_EQ(n, 60);
        struct thaw_sched_placement pl;
        int rc = thaw_sched_place(db, uri, 0, &o, &pl);
        if (hr[0].state != THAW_SCHED_HOST_OK) {
            CHECK_EQ(rc, THAW_ELIMIT);
        } else {
            CHECK_OK(rc);
            if (pl.host_id != hr[0].c.host_id)
                fprintf(stderr, "%s: place chose %" PRId64 " (%.6fs), rank %" PRId64 " (%.6fs)\n",
                        uri, pl.host_id, pl.est.startup_s, hr[0].c.host_id,
                        hr[0].c.est.startup_s);
            CHECK_EQ(pl.host_id, hr[0].c.host_id);
            CHECK_NEAR(pl.est.startup_s, hr[0].c.est.startup_s, 1e-9);
            /* The candidates are the ranking's leaders, in order. */
            for (size_t k = 0; k < pl.n_candidates; k++)
                CHECK_NEAR(pl.candidates[k].est.startup_s, hr[k].c.est.startup_s, 1e-9);
        }
        thaw_free(hr);
    }
    thaw_sched_db_close(db);
    PQfinish(c);
    pg_harness_stop(&pg);
}

static const struct test_case cases[] = {
    { "hash_rank", t_hash_rank },
    { "report_check", t_report_check },
    { "pg_report", t_pg_report },
    { "pg_usage", t_pg_usage },
    { "pg_live_hosts", t_pg_live_hosts },
    { "pg_scale_small", t_pg_scale_small },
    { "pg_place_matches_rank", t_pg_place_matches_rank },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
