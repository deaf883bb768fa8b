/*
 * test_scheduler.c - the scheduler library: estimator and ranking tables
 * (pure, run anywhere), the bandwidth EWMA and error tracker, and the schema
 * migrator and thaw-scheduler binary against a real PostgreSQL started in a
 * temporary directory (skipped when PostgreSQL is not installed).
 */
#include <libpq-fe.h>

#include "scheduler/thaw_scheduler.h"
#include "tests/scheduler/pg_harness.h"
#include "tests/thaw_test.h"

#define GB 1000000000ull

/* ---------------------------------------------------------------- estimator */

struct est_case {
    const char *name;
    struct thaw_sched_host h;
    uint64_t ckpt_bytes;
    double want_s;
    enum thaw_sched_tier want_tier;
    int want_migrate;
    const char *reason_has;
};

/* Bandwidths of 10 GB/s DRAM, 2 GB/s SSD, 1 GB/s network make the
 * expected seconds easy to read. */
#define BW .dram_to_gpu_bps = 10e9, .ssd_bps = 2e9, .network_bps = 1e9
#define ROOMY .gpu_free_bytes = 80 * GB

static const struct est_case est_cases[] = {
    { "warm", { BW, ROOMY, .warm = 1, .ckpt_dram_bytes = 20 * GB }, 20 * GB, 0.0,
      THAW_SCHED_TIER_WARM, 0, "warm" },
    { "warm_queue", { BW, ROOMY, .warm = 1, .queue_wait_s = 1.5 }, 20 * GB, 1.5,
      THAW_SCHED_TIER_WARM, 0, "queue 1.5s" },
    { "warm_gpu_full_no_migration", { BW, .warm = 1, .gpu_free_bytes = 0, .running_tokens = 1000 },
      20 * GB, 0.0, THAW_SCHED_TIER_WARM, 0, "warm" },
    { "dram", { BW, ROOMY, .ckpt_dram_bytes = 20 * GB, .ckpt_ssd_bytes = 20 * GB }, 20 * GB, 2.0,
      THAW_SCHED_TIER_DRAM, 0, "dram 2s" },
    { "ssd", { BW, ROOMY, .ckpt_ssd_bytes = 20 * GB }, 20 * GB, 10.0, THAW_SCHED_TIER_SSD, 0,
      "ssd 10s" },
    { "remote", { BW, ROOMY }, 20 * GB, 20.0, THAW_SCHED_TIER_REMOTE, 0, "remote 20s" },
    /* 10 GB in DRAM (1 s) + 6 GB on SSD (3 s) + 4 GB remote (4 s). */
    { "partial_tiers", { BW, ROOMY, .ckpt_dram_bytes = 10 * GB, .ckpt_ssd_bytes = 6 * GB }, 20 * GB,
      8.0, THAW_SCHED_TIER_REMOTE, 0, "remote" },
    { "dram_queue", { BW, ROOMY, .ckpt_dram_bytes = 20 * GB, .queue_wait_s = 0.5 }, 20 * GB, 2.5,
      THAW_SCHED_TIER_DRAM, 0, "queue 0.5s" },
    { "negative_queue_ignored", { BW, ROOMY, .ckpt_dram_bytes = 20 * GB, .queue_wait_s = -3 },
      20 * GB, 2.0, THAW_SCHED_TIER_DRAM, 0, "dram" },
    /* Unmeasured bandwidths fall back to the defaults (20 GB/s DRAM). */
    { "default_bw", { ROOMY, .ckpt_dram_bytes = 20 * GB }, 20 * GB, 1.0, THAW_SCHED_TIER_DRAM, 0,
      "dram 1s" },
    /* GPU full: 2 s of DRAM + migration 25e-6 * 40000 + 0.05 = 1.05 s. */
    { "gpu_full_migrate", { BW, .gpu_free_bytes = 5 * GB, .ckpt_dram_bytes = 20 * GB,
                            .running_tokens = 40000 },
      20 * GB, 3.05, THAW_SCHED_TIER_DRAM, 1, "migrate" },
    /* The GPU frees in 0.3 s by itself: waiting beats migrating. */
    { "gpu_full_wait", { BW, .gpu_free_bytes = 5 * GB, .ckpt_dram_bytes = 20 * GB,
                         .running_tokens = 40000, .gpu_release_s = 0.3 },
      20 * GB, 2.3, THAW_SCHED_TIER_DRAM, 0, "gpu wait" },
    /* Releasing takes longer than migrating: migrate. */
    { "gpu_full_migrate_beats_wait", { BW, .gpu_free_bytes = 0, .ckpt_dram_bytes = 20 * GB,
                                       .running_tokens = 0, .gpu_release_s = 9 },
      20 * GB, 2.05, THAW_SCHED_TIER_DRAM, 1, "migrate" },
};

static void t_estimate_table(void)
{
    for (size_t i = 0; i < sizeof est_cases / sizeof est_cases[0]; i++) {
        const struct est_case *c = &est_cases[i];
        struct thaw_sched_estimate e;
        thaw_sched_estimate(&c->h, c->ckpt_bytes, NULL, &e);
        fprintf(stderr, "%-28s %8.4fs tier=%-6s reason=\"%s\"\n", c->name, e.startup_s,
                thaw_sched_tier_name(e.tier), e.reason);
        CHECK_NEAR(e.startup_s, c->want_s, 1e-9);
        CHECK_EQ(e.tier, c->want_tier);
        CHECK_EQ(e.migrate, c->want_migrate);
        CHECK_NEAR(e.load_s + e.queue_s + e.gpu_s, e.startup_s, 1e-12);
        CHECK(strstr(e.reason, c->reason_has) != NULL);
    }
}

/* thaw_sched_estimate_staged: a host that must wait for its GPUs stages
 * the bytes that are not in DRAM during the wait; every other case is
 * thaw_sched_estimate's. 20 GB at 10 GB/s DRAM -> GPU is 2 s, from SSD
 * (2 GB/s) 10 s, from the network (1 GB/s) 20 s. */
struct staged_case {
    const char *name;
    struct thaw_sched_host h;
    double want_s;
    int same_as_estimate; /* 1: exactly thaw_sched_estimate's numbers */
    const char *reason_has;
};

static const struct staged_case staged_cases[] = {
    { "warm", { BW, .warm = 1, .gpu_free_bytes = 0, .gpu_release_s = 4 }, 0.0, 1, "warm" },
    { "room", { BW, ROOMY, .ckpt_ssd_bytes = 20 * GB, .queue_wait_s = 1 }, 11.0, 1, "ssd 10s" },
    /* SSD: max(gpu 5 s, queue 1 s + staging 10 s) + DRAM -> GPU 2 s = 13 s
     * (thaw_sched_estimate: 1 + 10 + 5 = 16 s). Migration would cost
     * 25e-6 * 1e6 + 0.05 = 25.05 s, so waiting is the cheaper. */
    { "wait_ssd_staging_longer", { BW, .ckpt_ssd_bytes = 20 * GB, .queue_wait_s = 1,
                                   .running_tokens = 1000000, .gpu_release_s = 5 },
      13.0, 0, "staged" },
    /* Network: max(gpu 30 s, staging 20 s) + 2 s = 32 s (not 50 s). */
    { "wait_remote_gpu_longer", { BW, .running_tokens = 2000000, .gpu_release_s = 30 }, 32.0, 0,
      "staged" },
    /* Already in DRAM: nothing to stage, max(gpu 3 s, 0) + 2 s = 5 s, the
     * same sum as thaw_sched_estimate's (there is nothing to overlap). */
    { "wait_dram", { BW, .ckpt_dram_bytes = 20 * GB, .running_tokens = 1000000,
                     .gpu_release_s = 3 },
      5.0, 0, "staged" },
    /* Half in DRAM: staging is the SSD half (10 GB / 2 GB/s = 5 s);
     * max(gpu 4 s, 5 s) + the whole 20 GB copy 2 s = 7 s. */
    { "wait_partial_dram", { BW, .ckpt_dram_bytes = 10 * GB, .ckpt_ssd_bytes = 20 * GB,
                             .running_tokens = 1000000, .gpu_release_s = 4 },
      7.0, 0, "staged" },
    /* Migrating (25e-6 * 40000 + 0.05 = 1.05 s) beats waiting 9 s: as
     * thaw_sched_estimate, 10 s of SSD + 1.05 s. */
    { "migration_cheaper", { BW, .ckpt_ssd_bytes = 20 * GB, .running_tokens = 40000,
                             .gpu_release_s = 9 },
      11.05, 1, "migrate" },
};

static void t_estimate_staged_table(void)
{
    for (size_t i = 0; i < sizeof staged_cases / sizeof staged_cases[0]; i++) {
        const struct staged_case *c = &staged_cases[i];
        struct thaw_sched_estimate e, plain;
        thaw_sched_estimate_staged(&c->h, 20 * GB, NULL, &e);
        thaw_sched_estimate(&c->h, 20 * GB, NULL, &plain);
        fprintf(stderr, "%-26s %8.4fs (plain %8.4fs) reason=\"%s\"\n", c->name, e.startup_s,
                plain.startup_s, e.reason);
        CHECK_NEAR(e.startup_s, c->want_s, 1e-9);
        CHECK(strstr(e.reason, c->reason_has) != NULL);
        /* The parts are thaw_sched_estimate's either way; only the sum
         * (and the reason) differ when staging applies. */
        CHECK_NEAR(e.load_s, plain.load_s, 1e-12);
        CHECK_NEAR(e.gpu_s, plain.gpu_s, 1e-12);
        CHECK_EQ(e.tier, plain.tier);
        CHECK_EQ(e.migrate, plain.migrate);
        if (c->same_as_estimate) {
            CHECK_NEAR(e.startup_s, plain.startup_s, 1e-12);
            CHECK_STR_EQ(e.reason, plain.reason);
        } else {
            CHECK(e.startup_s <= plain.startup_s);
        }
    }
}

static void t_estimate_params(void)
{
    /* Constants given in params replace the defaults. */
    struct thaw_sched_params p = { .migrate_s_per_token = 1e-3, .migrate_base_s = 1.0,
                                   .default_network_bps = 2e9 };
    struct thaw_sched_host h = { .running_tokens = 1000 };
    struct thaw_sched_estimate e;
    thaw_sched_estimate(&h, 4 * GB, &p, &e);
    CHECK_EQ(e.tier, THAW_SCHED_TIER_REMOTE);
    CHECK_NEAR(e.load_s, 2.0, 1e-9);
    CHECK_NEAR(e.gpu_s, 1e-3 * 1000 + 1.0, 1e-9);
    CHECK_NEAR(e.startup_s, 4.0, 1e-9);
    CHECK_STR_EQ(thaw_sched_tier_name(THAW_SCHED_TIER_SSD), "ssd");
}

/* ---------------------------------------------------------------- ranking */

static void t_rank(void)
{
    struct thaw_sched_host hosts[] = {
        { .address = "remote", BW, ROOMY, .heartbeat_age_s = 1 },                    /* 20 s */
        { .address = "stale-warm", BW, ROOMY, .warm = 1, .heartbeat_age_s = 120 },   /* skipped */
        /* 2 s */
        { .address = "dram", BW, ROOMY, .ckpt_dram_bytes = 20 * GB, .heartbeat_age_s = 2 },
        { .address = "warm-busy", BW, ROOMY, .warm = 1, .queue_wait_s = 3 },         /* 3 s */
        /* 10 s, and fresh only under the default 30 s bound */
        { .address = "ssd", BW, ROOMY, .ckpt_ssd_bytes = 20 * GB, .heartbeat_age_s = 29 },
        { .address = "dram-twin", BW, ROOMY, .ckpt_dram_bytes = 20 * GB },           /* 2 s, tie */
        { .address = "never-seen", BW, ROOMY, .warm = 1, .heartbeat_age_s = NAN },   /* skipped */
    };
    size_t n = sizeof hosts / sizeof hosts[0];
    struct thaw_sched_choice out[sizeof hosts / sizeof hosts[0]];
    size_t got = thaw_sched_rank(hosts, n, 20 * GB, NULL, out);
    static const char *want[] = { "dram", "dram-twin", "warm-busy", "ssd", "remote" };
    CHECK_EQ(got, 5);
    for (size_t i = 0; i < got; i++) {
        fprintf(stderr, "%zu %-10s %6.3fs %s\n", i, hosts[out[i].host].address,
                out[i].est.startup_s, out[i].est.reason);
        CHECK_STR_EQ(hosts[out[i].host].address, want[i]);
    }
    /* A tighter staleness bound drops the 29 s host as well. */
    struct thaw_sched_params p = { .max_heartbeat_age_s = 10 };
    got = thaw_sched_rank(hosts, n, 20 * GB, &p, out);
    CHECK_EQ(got, 4);
    for (size_t i = 0; i < got; i++)
        CHECK(strcmp(hosts[out[i].host].address, "ssd") != 0);
    CHECK_EQ(thaw_sched_rank(hosts, 0, 20 * GB, NULL, out), 0);
}

/* A GPU-full host with a warm copy in DRAM loses to an idle host reading
 * SSD only when the migration costs more than the difference. */
static void t_rank_migration_cost(void)
{
    struct thaw_sched_host hosts[] = {
        { .address = "ssd-idle", BW, ROOMY, .ckpt_ssd_bytes = 20 * GB },            /* 10 s */
        { .address = "dram-full", BW, .gpu_free_bytes = 0, .ckpt_dram_bytes = 20 * GB,
          .running_tokens = 100000 },                                               /* 2+2.55 s */
    };
    struct thaw_sched_choice out[2];
    CHECK_EQ(thaw_sched_rank(hosts, 2, 20 * GB, NULL, out), 2);
    CHECK_STR_EQ(hosts[out[0].host].address, "dram-full");
    CHECK(out[0].est.migrate);
    hosts[1].running_tokens = 1000000; /* 25 s of re-prefill */
    CHECK_EQ(thaw_sched_rank(hosts, 2, 20 * GB, NULL, out), 2);
    CHECK_STR_EQ(hosts[out[0].host].address, "ssd-idle");
}

/* Many hosts: the leaders get the same reason thaw_sched_estimate gives,
 * the rest an empty one, and every host still has its numbers. */
static void t_rank_reasons(void)
{
    enum { N = THAW_SCHED_RANK_REASONS + 9 };
    struct thaw_sched_host hosts[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "h%d", i);
        /* Distinct SSD bandwidths so the order is known: h0 is slowest. */
        hosts[i] = (struct thaw_sched_host){ .address = names[i], .dram_to_gpu_bps = 10e9,
                                             .network_bps = 1e9, .ckpt_ssd_bytes = 20 * GB,
                                             .ssd_bps = 1e9 * (i + 1),
                                             .gpu_free_bytes = i == 3 ? 0 : 80 * GB };
    }
    struct thaw_sched_choice out[N];
    CHECK_EQ(thaw_sched_rank(hosts, N, 20 * GB, NULL, out), N);
    for (int k = 0; k < N; k++) {
        struct thaw_sched_estimate e;
        thaw_sched_estimate(&hosts[out[k].host], 20 * GB, NULL, &e);
        CHECK_NEAR(out[k].est.startup_s, e.startup_s, 0);
        CHECK_EQ(out[k].est.tier, e.tier);
        CHECK_EQ(out[k].est.migrate, e.migrate);
        if (k < THAW_SCHED_RANK_REASONS)
            CHECK_STR_EQ(out[k].est.reason, e.reason);
        else
            CHECK_STR_EQ(out[k].est.reason, "");
        if (k)
            CHECK(out[k - 1].est.startup_s <= out[k].est.startup_s);
    }
    /* The GPU-full host's reason names the migration (it ranks last). */
    struct thaw_sched_estimate e;
    thaw_sched_estimate(&hosts[3], 20 * GB, NULL, &e);
    CHECK(strstr(e.reason, "+ migrate") != NULL);
}

/* ---------------------------------------------------------------- feedback */

static void t_ewma(void)
{
    /* First sample is taken as is; no-data samples change nothing. */
    double bw = thaw_sched_ewma_bw(0, 10 * GB, 1.0, 0.2);
    CHECK_NEAR(bw, 10e9, 1);
    CHECK_NEAR(thaw_sched_ewma_bw(bw, 0, 1.0, 0.2), bw, 0);
    CHECK_NEAR(thaw_sched_ewma_bw(bw, GB, 0.0, 0.2), bw, 0);
    CHECK_NEAR(thaw_sched_ewma_bw(bw, 20 * GB, 1.0, 0.5), 15e9, 1);
    /* Converges to a new steady bandwidth: after k samples the error is
     * (1 - alpha)^k of the initial gap. */
    for (int k = 1; k <= 40; k++) {
        bw = thaw_sched_ewma_bw(bw, 3 * GB, 1.0, 0.2);
        CHECK_NEAR(bw, 3e9 + 7e9 * pow(0.8, k), 1e-3 * 7e9 * pow(0.8, k) + 1);
    }
    CHECK_NEAR(bw, 3e9, 3e9 * 0.001);
    /* Alpha out of range means the default 0.2. */
    CHECK_NEAR(thaw_sched_ewma_bw(10e9, 20 * GB, 1.0, 7.0), 12e9, 1);
}

static void t_error_stats(void)
{
    struct thaw_sched_error_stats s = { 0 };
    CHECK_NEAR(thaw_sched_error_add(&s, 1.2, 1.0), 0.2, 1e-12);
    CHECK_NEAR(thaw_sched_error_add(&s, 0.6, 1.0), -0.4, 1e-12);
    CHECK_NEAR(thaw_sched_error_add(&s, 3.0, 0.0), 0.0, 0); /* not recorded */
    CHECK_EQ(s.n, 2);
    CHECK_NEAR(s.mean_rel, -0.1, 1e-12);
    CHECK_NEAR(s.mean_abs_rel, 0.3, 1e-12);
    CHECK_NEAR(s.max_abs_rel, 0.4, 1e-12);
}

/* ---------------------------------------------------------------- PostgreSQL */

static struct pg_harness pg;

static void stop_at_exit(void);

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

/* Stop the server when a CHECK exits the case early (the harness ends a
 * passing case with _exit, which skips atexit: each case stops it too). */
static void stop_at_exit(void)
{
    pg_harness_stop(&pg);
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
    CHECK_EQ(PQntuples(r), 1);
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static void t_pg_migrate(void)
{
    pg_start_or_skip();

    struct thaw_sched_migrate_report rep;
    CHECK_OK(thaw_sched_migrate(pg.url, &rep));
    CHECK_EQ(rep.n_applied, rep.n_known);
    CHECK(rep.n_known >= 1);
    CHECK_EQ(rep.applied[0], 1);
    CHECK_EQ(rep.version, rep.applied[rep.n_applied - 1]);
    int version = rep.version;

    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    static const char *tables[] = { "hosts", "checkpoints", "replicas", "instances",
                                    "reservations", "usage_ledger", "schema_migrations" };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const char *params[1] = { tables[i] };
        PGresult *r = PQexecParams(c, "SELECT count(*) FROM information_schema.tables"
                                      " WHERE table_schema = 'public' AND table_name = $1",
                                   1, NULL, params, NULL, NULL, 0);
        CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
        if (strcmp(PQgetvalue(r, 0, 0), "1") != 0)
            fprintf(stderr, "table %s missing\n", tables[i]);
        CHECK_STR_EQ(PQgetvalue(r, 0, 0), "1");
        PQclear(r);
    }
    /* hosts_heartbeat_idx (0001) was dropped by 0003 for HOT heartbeats. */
    CHECK_EQ(q_long(c, "SELECT count(*) FROM pg_indexes WHERE indexname IN "
                       "('replicas_checkpoint_idx', 'reservations_expires_idx')"), 2);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM pg_indexes WHERE indexname ="
                       " 'hosts_heartbeat_idx'"), 0);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM information_schema.columns WHERE table_name = "
                       "'hosts' AND column_name IN ('dram_to_gpu_bps', 'ssd_bps', "
                       "'network_bps', 'heartbeat')"), 4);
    PGresult *r = q(c, "SELECT string_agg(version || '@' || applied_at, ',' ORDER BY version)"
                       " FROM schema_migrations");
    char *before = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);

    /* Again: a no-op, the recorded versions and times unchanged. */
    CHECK_OK(thaw_sched_migrate(pg.url, &rep));
    CHECK_EQ(rep.n_applied, 0);
    CHECK_EQ(rep.version, version);
    r = q(c, "SELECT string_agg(version || '@' || applied_at, ',' ORDER BY version)"
             " FROM schema_migrations");
    CHECK_STR_EQ(PQgetvalue(r, 0, 0), before);
    PQclear(r);
    free(before);

    /* The usage ledger is idempotent on activation_id. */
    for (int i = 0; i < 2; i++) {
        PQclear(q(c, "INSERT INTO usage_ledger (activation_id, namespace, action, model,"
                     " prompt_tokens, completion_tokens, load_tier, load_ms, gpu_ms, cold)"
                     " VALUES ('act-1', 'guest', 'chat', 's3://m/llama', 12, 34, 'dram', 850.5,"
                     " 1200, true) ON CONFLICT (activation_id) DO NOTHING"));
    }
    CHECK_EQ(q_long(c, "SELECT count(*) FROM usage_ledger"), 1);
    CHECK_EQ(q_long(c, "SELECT completion_tokens FROM usage_ledger WHERE activation_id = 'act-1'"),
             34);
    /* The constraints hold: an unknown tier is refused. */
    r = PQexec(c, "INSERT INTO replicas (host, checkpoint, tier) VALUES (1, 1, 'tape')");
    CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR);
    PQclear(r);
    PQfinish(c);
    pg_harness_stop(&pg);
}

/* Several migrators on an empty database at once: the advisory lock lets
 * exactly one apply each version, and all succeed. */
static void t_pg_migrate_concurrent(void)
{
    pg_start_or_skip();
    enum { N = 6 };
    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            struct thaw_sched_migrate_report rep;
            int rc = thaw_sched_migrate(pg.url, &rep);
            if (rc < 0)
                fprintf(stderr, "migrator %d: %s: %s\n", i, thaw_strerror(rc), thaw_errmsg());
            _exit(rc < 0 ? 1 : 10 + rep.n_applied);
        }
    }
    int total_applied = 0;
    for (int i = 0; i < N; i++) {
        int st = 0;
        CHECK(waitpid(kids[i], &st, 0) == kids[i]);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) >= 10);
        total_applied += WEXITSTATUS(st) - 10;
    }
    struct thaw_sched_migrate_report rep;
    CHECK_OK(thaw_sched_migrate(pg.url, &rep));
    CHECK_EQ(total_applied, rep.n_known);
    CHECK_EQ(rep.n_applied, 0);
    pg_harness_stop(&pg);
}

static void t_migrate_no_server(void)
{
    CHECK_FAILS(thaw_sched_migrate("postgresql:///postgres?host=/nonexistent-thaw-dir"
                                   "&connect_timeout=2", NULL),
                THAW_EPG);
    CHECK_ERRMSG_HAS("connecting to PostgreSQL");
    CHECK_FAILS(thaw_sched_migrate("", NULL), THAW_EINVAL);
}

/* ---------------------------------------------------------------- placement */

/* Empty the store between cases; the schema stays. */
static void pg_reset(PGconn *c)
{
    PQclear(q(c, "TRUNCATE hosts, checkpoints, replicas, instances, reservations"
                 " RESTART IDENTITY CASCADE"));
}

/* A 20 GB checkpoint, bandwidths of 10 GB/s DRAM, 2 GB/s SSD, 1 GB/s network
 * and 80 GB of free GPU memory unless a case says otherwise. */
#define PL_CKPT "INSERT INTO checkpoints (uri, bytes) VALUES ('s3://m/llama', 20000000000);"
#define PL_HOST(addr, extra)                                                                   \
    "INSERT INTO hosts (address, gpu_free_bytes, dram_to_gpu_bps, ssd_bps, network_bps"       \
    extra ") VALUES ('" addr "', 80000000000, 10e9, 2e9, 1e9"
#define PL_REPLICA(addr, tier)                                                                 \
    "INSERT INTO replicas (host, checkpoint, tier, bytes) SELECT h.id, c.id, '" tier          \
    "', c.bytes FROM hosts h, checkpoints c WHERE h.address = '" addr "';"

struct place_case {
    const char *name;
    const char *setup_sql;
    const char *uri;
    int want_rc;
    const char *want_host;      /* or the error message's substring */
    enum thaw_sched_tier want_tier;
    double want_s;
    size_t want_candidates;
};

static const struct place_case place_cases[] = {
    { "warm_beats_all",
      PL_CKPT PL_HOST("remote", "") ");" PL_HOST("dram", "") ");" PL_REPLICA("dram", "dram")
      PL_HOST("warm", "") ");"
      "INSERT INTO instances (host, model, state) SELECT h.id, c.id, 'ready'"
      " FROM hosts h, checkpoints c WHERE h.address = 'warm';",
      "s3://m/llama", 0, "warm", THAW_SCHED_TIER_WARM, 0.0, 3 },
    { "dram_beats_ssd_and_remote",
      PL_CKPT PL_HOST("remote", "") ");" PL_HOST("ssd", "") ");" PL_REPLICA("ssd", "ssd")
      PL_HOST("dram", "") ");" PL_REPLICA("dram", "dram"),
      "s3://m/llama", 0, "dram", THAW_SCHED_TIER_DRAM, 2.0, 3 },
    { "ssd_beats_remote",
      PL_CKPT PL_HOST("remote", "") ");" PL_HOST("ssd", "") ");" PL_REPLICA("ssd", "ssd"),
      "s3://m/llama", 0, "ssd", THAW_SCHED_TIER_SSD, 10.0, 2 },
    { "remote_only", PL_CKPT PL_HOST("remote", "") ");", "s3://m/llama", 0, "remote",
      THAW_SCHED_TIER_REMOTE, 20.0, 1 },
    /* The stale host holds the checkpoint in DRAM but is not ranked. */
    { "stale_host_skipped",
      PL_CKPT PL_HOST("stale", ", heartbeat") ", now() - interval '1 hour');"
      PL_REPLICA("stale", "dram") PL_HOST("remote", "") ");",
      "s3://m/llama", 0, "remote", THAW_SCHED_TIER_REMOTE, 20.0, 1 },
    /* A replica still loading does not count. */
    { "loading_replica_ignored",
      PL_CKPT PL_HOST("ssd", "") ");" PL_REPLICA("ssd", "ssd")
      PL_HOST("loading", "") ");" PL_REPLICA("loading", "dram")
      "UPDATE replicas SET state = 'loading' WHERE tier = 'dram';",
      "s3://m/llama", 0, "ssd", THAW_SCHED_TIER_SSD, 10.0, 2 },
    /* The DRAM host's GPU is booked by a live reservation; an expired one
     * on the SSD host frees nothing less. */
    { "reserved_gpu_skipped",
      PL_CKPT PL_HOST("dram", "") ");" PL_REPLICA("dram", "dram")
      PL_HOST("ssd", "") ");" PL_REPLICA("ssd", "ssd")
      "INSERT INTO reservations (host, checkpoint, gpu_bytes, expires_at) SELECT h.id, c.id,"
      " 70000000000, now() + interval '1 minute' FROM hosts h, checkpoints c"
      " WHERE h.address = 'dram';"
      "INSERT INTO reservations (host, checkpoint, gpu_bytes, expires_at) SELECT h.id, c.id,"
      " 70000000000, now() - interval '1 minute' FROM hosts h, checkpoints c"
      " WHERE h.address = 'ssd';",
      "s3://m/llama", 0, "ssd", THAW_SCHED_TIER_SSD, 10.0, 1 },
    { "unknown_checkpoint", PL_CKPT PL_HOST("remote", "") ");", "s3://m/nope", THAW_ENOTFOUND,
      "s3://m/nope is not registered", THAW_SCHED_TIER_WARM, 0, 0 },
    { "no_live_host",
      PL_CKPT PL_HOST("stale", ", heartbeat") ", now() - interval '1 hour');",
      "s3://m/llama", THAW_ENOTFOUND, "no live host", THAW_SCHED_TIER_WARM, 0, 0 },
    { "no_capacity",
      PL_CKPT PL_HOST("small", "") ");" "UPDATE hosts SET gpu_free_bytes = 19000000000;",
      "s3://m/llama", THAW_ELIMIT, "no capacity", THAW_SCHED_TIER_WARM, 0, 0 },
};

static void t_pg_place(void)
{
    pg_start_or_skip();
    CHECK_OK(thaw_sched_migrate(pg.url, NULL));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    struct thaw_sched_db *db = NULL;
    CHECK_OK(thaw_sched_db_open(pg.url, &db));

    for (size_t i = 0; i < sizeof place_cases / sizeof place_cases[0]; i++) {
        const struct place_case *pc = &place_cases[i];
        pg_reset(c);
        PQclear(q(c, pc->setup_sql));
        struct thaw_sched_placement pl;
        int rc = thaw_sched_place(db, pc->uri, 100, NULL, &pl);
        fprintf(stderr, "%-26s rc=%d %s\n", pc->name, rc,
                rc == 0 ? pl.est.reason : thaw_errmsg());
        CHECK_EQ(rc, pc->want_rc);
        if (rc < 0) {
            CHECK_ERRMSG_HAS(pc->want_host);
            /* A failed placement reserves nothing. */
            CHECK_EQ(q_long(c, "SELECT count(*) FROM reservations"), 0);
            continue;
        }
        CHECK_STR_EQ(pl.address, pc->want_host);
        CHECK_EQ(pl.est.tier, pc->want_tier);
        CHECK_NEAR(pl.est.startup_s, pc->want_s, 1e-6);
        CHECK_EQ(pl.n_candidates, pc->want_candidates);
        CHECK_EQ(pl.candidates[0].host_id, pl.host_id);
        for (size_t k = 1; k < pl.n_candidates; k++)
            CHECK(pl.candidates[k - 1].est.startup_s <= pl.candidates[k].est.startup_s);
        /* The reservation row holds the checkpoint's bytes on the winner
         * (a warm host needs none). */
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT gpu_bytes FROM reservations WHERE id = %lld AND host = %lld"
                 " AND expires_at > now() AND reason <> ''",
                 (long long)pl.reservation_id, (long long)pl.host_id);
        long want_bytes = pc->want_tier == THAW_SCHED_TIER_WARM ? 0 : 20000000000L;
        CHECK_EQ(q_long(c, sql), want_bytes);
        CHECK_EQ(pl.gpu_bytes, (uint64_t)want_bytes);
    }

    /* The first placement on a connection deletes reservations that
     * expired over an hour ago, and keeps recently expired ones. */
    {
        pg_reset(c);
        PQclear(q(c, PL_CKPT PL_HOST("remote", "") ");"
                     "INSERT INTO reservations (host, checkpoint, gpu_bytes, expires_at)"
                     " SELECT 1, 1, 1, now() - interval '2 hours' UNION ALL"
                     " SELECT 1, 1, 1, now() - interval '1 minute'"));
        struct thaw_sched_db *fresh = NULL;
        CHECK_OK(thaw_sched_db_open(pg.url, &fresh));
        struct thaw_sched_placement pl;
        CHECK_OK(thaw_sched_place(fresh, "s3://m/llama", 0, NULL, &pl));
        CHECK_EQ(q_long(c, "SELECT count(*) FROM reservations"), 2);
        CHECK_EQ(q_long(c, "SELECT count(*) FROM reservations WHERE expires_at <"
                           " now() - interval '1 hour'"), 0);
        thaw_sched_db_close(fresh);
    }

    /* KV cache bytes per expected token are reserved too, and the bad
     * arguments are refused. */
    pg_reset(c);
    PQclear(q(c, PL_CKPT PL_HOST("remote", "") ");"));
    struct thaw_sched_place_opts o = { .kv_bytes_per_token = 1000, .reservation_ttl_s = 5 };
    struct thaw_sched_placement pl;
    CHECK_OK(thaw_sched_place(db, "s3://m/llama", 4096, &o, &pl));
    CHECK_EQ(pl.gpu_bytes, 20000000000ull + 4096000);
    CHECK_EQ(q_long(c, "SELECT gpu_bytes FROM reservations"), 20004096000L);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM reservations WHERE expires_at < now() +"
                       " interval '6 seconds'"), 1);
    CHECK_FAILS(thaw_sched_place(db, "", 0, NULL, &pl), THAW_EINVAL);
    o.kv_bytes_per_token = UINT64_MAX / 2;
    CHECK_FAILS(thaw_sched_place(db, "s3://m/llama", 4, &o, &pl), THAW_EINVAL);
    /* The connection survives the failures. */
    o.kv_bytes_per_token = 0;
    CHECK_OK(thaw_sched_place(db, "s3://m/llama", 0, &o, &pl));
    CHECK_FAILS(thaw_sched_db_open("", &db), THAW_EINVAL);

    thaw_sched_db_close(db);
    thaw_sched_db_close(NULL);
    PQfinish(c);
    pg_harness_stop(&pg);
}

/* 100 placements at once onto hosts with room for one checkpoint each:
 * exactly one reservation per host, and the rest fail with "no capacity". */
static void t_pg_place_concurrent(void)
{
    pg_start_or_skip();
    CHECK_OK(thaw_sched_migrate(pg.url, NULL));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    enum { N_HOSTS = 10, N = 100 };
    PQclear(q(c, PL_CKPT));
    /* 30 GB free, 20 GB each: room for one only. */
    PQclear(q(c, "INSERT INTO hosts (address, gpu_free_bytes) SELECT 'h' || g, 30000000000"
                 " FROM generate_series(1, 10) g"));
    PQclear(q(c, "INSERT INTO replicas (host, checkpoint, tier, bytes) SELECT h.id, c.id, 'dram',"
                 " c.bytes FROM hosts h, checkpoints c WHERE h.id % 3 = 0"));

    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            struct thaw_sched_db *db = NULL;
            int rc = thaw_sched_db_open(pg.url, &db);
            struct thaw_sched_placement pl;
            if (rc == 0)
                rc = thaw_sched_place(db, "s3://m/llama", 0, NULL, &pl);
            if (rc < 0 && rc != THAW_ELIMIT)
                fprintf(stderr, "placer %d: %s: %s\n", i, thaw_strerror(rc), thaw_errmsg());
            if (rc == THAW_ELIMIT && !strstr(thaw_errmsg(), "no capacity"))
                rc = -1;
            thaw_sched_db_close(db);
            _exit(rc == 0 ? 0 : rc == THAW_ELIMIT ? 1 : 2);
        }
    }
    int ok = 0, full = 0, other = 0;
    for (int i = 0; i < N; i++) {
        int st = 0;
        CHECK(waitpid(kids[i], &st, 0) == kids[i]);
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 3;
        ok += code == 0;
        full += code == 1;
        other += code > 1;
    }
    fprintf(stderr, "placed %d, no capacity %d, other %d\n", ok, full, other);
    CHECK_EQ(other, 0);
    CHECK_EQ(ok, N_HOSTS);
    CHECK_EQ(full, N - N_HOSTS);
    CHECK_EQ(q_long(c, "SELECT count(*) FROM reservations"), N_HOSTS);
    CHECK_EQ(q_long(c, "SELECT count(DISTINCT host) FROM reservations"), N_HOSTS);
    CHECK_EQ(q_long(c, "SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM reservations"
                       " GROUP BY host) x"), 1);
    /* No host is booked beyond its free GPU memory. */
    CHECK_EQ(q_long(c, "SELECT count(*) FROM hosts h WHERE h.gpu_free_bytes < (SELECT"
                       " coalesce(sum(gpu_bytes), 0) FROM reservations r WHERE r.host = h.id)"),
             0);
    PQfinish(c);
    pg_harness_stop(&pg);
}

/* ---------------------------------------------------------------- the binary */

/* Run a shell command, capture stdout into out; returns the exit status. */
static int run_cmd(const char *cmd, char *out, size_t n)
{
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL);
    size_t got = fread(out, 1, n - 1, f);
    out[got] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *bin_or_skip(void)
{
    const char *bin = getenv("THAW_BIN");
    if (!bin || !bin[0])
        SKIP("THAW_BIN is not set (ctest sets it to <build>/bin)");
    return bin;
}

static void t_cli_usage(void)
{
    const char *bin = bin_or_skip();
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "'%s/thaw-scheduler' --help", bin);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 0);
    CHECK(strstr(out, "--migrate") != NULL);
    snprintf(cmd, sizeof cmd, "'%s/thaw-scheduler' --bogus 2>&1", bin);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 2);
    CHECK(strstr(out, "unknown option '--bogus'") != NULL);
    snprintf(cmd, sizeof cmd, "env -u THAW_PG_URL '%s/thaw-scheduler' --migrate 2>&1", bin);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 2);
    CHECK(strstr(out, "THAW_PG_URL") != NULL);
}

static void t_cli_migrate(void)
{
    const char *bin = bin_or_skip();
    pg_start_or_skip();
    char cmd[2048], out[4096];
    snprintf(cmd, sizeof cmd, "'%s/thaw-scheduler' --migrate --pg '%s'", bin, pg.url);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 0);
    fprintf(stderr, "%s", out);
    CHECK(strstr(out, "applied 0001\n") != NULL);
    /* Second run through THAW_PG_URL: nothing to apply. */
    snprintf(cmd, sizeof cmd, "THAW_PG_URL='%s' '%s/thaw-scheduler' --migrate", pg.url, bin);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 0);
    fprintf(stderr, "%s", out);
    CHECK(strstr(out, "applied 0001") == NULL);
    CHECK(strstr(out, "(0 applied") != NULL);
    /* A server that is not there: exit 1 with the reason. */
    snprintf(cmd, sizeof cmd, "'%s/thaw-scheduler' --migrate --pg "
                              "'postgresql:///x?host=/nonexistent-thaw-dir' 2>&1", bin);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 1);
    CHECK(strstr(out, "connecting to PostgreSQL") != NULL);
    pg_harness_stop(&pg);
}

static const struct test_case cases[] = {
    { "estimate_table", t_estimate_table },
    { "estimate_staged_table", t_estimate_staged_table },
    { "estimate_params", t_estimate_params },
    { "rank", t_rank },
    { "rank_migration_cost", t_rank_migration_cost },
    { "rank_reasons", t_rank_reasons },
    { "ewma", t_ewma },
    { "error_stats", t_error_stats },
    { "migrate_no_server", t_migrate_no_server },
    { "cli_usage", t_cli_usage },
    { "pg_migrate", t_pg_migrate },
    { "pg_migrate_concurrent", t_pg_migrate_concurrent },
    { "cli_migrate", t_cli_migrate },
    { "pg_place", t_pg_place },
    { "pg_place_concurrent", t_pg_place_concurrent },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
