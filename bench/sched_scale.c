/*
 * sched_scale.c - the scheduler's decision latency at cluster scale: a
 * private PostgreSQL (tests/scheduler/pg_harness.c) seeded with N hosts,
 * M checkpoints and their replicas over the DRAM and SSD tiers (plus warm
 * instances and stale hosts), then K placements with reservation
 * (thaw_sched_place) and K read-only rankings (thaw_sched_rank_hosts,
 * with the placements' reservations in place), timed one by one. Built and run by
 * bench/sched_scale.sh; not part of CTest.
 *
 *   sched_scale [--hosts N] [--checkpoints M] [--decisions K] [--hold]
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "scheduler/thaw_scheduler.h"
#include "tests/scheduler/pg_harness.h"

static struct pg_harness pg;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "sched_scale: %s: %s\n", what, msg);
    pg_harness_stop(&pg);
    exit(1);
}

static void sql(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(q, PQresultErrorMessage(r));
    PQclear(r);
}

/* Host agents keep their heartbeats fresh; the bench does it for them
 * between timed decisions (the 2 % stale hosts stay stale). */
static void beat(PGconn *c)
{
    sql(c, "UPDATE hosts SET heartbeat = now() WHERE heartbeat > now() - interval '10 minutes'");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

/* With $SCHED_TRACE set, each decision's latency in order ("phase i ms"),
 * to see whether the slow ones follow the periodic work. */
static void trace(const char *phase, const double *ms, size_t n)
{
    const char *path = getenv("SCHED_TRACE");
    FILE *f = path && path[0] ? fopen(path, "a") : NULL;
    if (!f)
        return;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s %zu %.3f\n", phase, i, ms[i]);
    fclose(f);
}

static void report(const char *what, double *ms, size_t n)
{
    trace(what[0] == 'p' ? "place" : "rank", ms, n);
    qsort(ms, n, sizeof ms[0], cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += ms[i];
    printf("%-34s | n %zu | p50 %.2f ms p90 %.2f ms p99 %.2f ms max %.2f ms mean %.2f ms\n", what,
           n, pct(ms, n, 0.50), pct(ms, n, 0.90), pct(ms, n, 0.99), ms[n - 1], sum / (double)n);
}

/* CPU seconds used so far by this process. */
static double self_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CPU seconds used so far by the PostgreSQL server: the postmaster and its
 * children (backends, autovacuum, WAL writer), from /proc. */
static double pg_cpu_s(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/data/postmaster.pid", pg.dir);
    FILE *f = fopen(path, "r");
    long pm = 0;
    if (!f || fscanf(f, "%ld", &pm) != 1) {
        if (f)
            fclose(f);
        return 0;
    }
    fclose(f);
    double ticks = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *sf = fopen(path, "r");
        if (!sf)
            continue;
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, sf);
        fclose(sf);
        buf[n] = 0;
        /* pid (comm) state ppid ... utime(14) stime(15); comm may hold spaces. */
        char *rp = strrchr(buf, ')');
        long pid = strtol(buf, NULL, 10), ppid = 0;
        unsigned long ut = 0, st = 0;
        if (!rp || sscanf(rp + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ppid,
                          &ut, &st) != 3)
            continue;
        if (pid == pm || ppid == pm)
            ticks += (double)(ut + st);
    }
    if (d)
        closedir(d);
    return ticks / (double)sysconf(_SC_CLK_TCK);
}

/* A deterministic spread of checkpoint numbers (1..m) for decision i. */
static long pick(long i, long m)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return 1 + (long)(x % (uint64_t)m);
}

int main(int argc, char **argv)
{
    long n_hosts = 1000, n_ckpts = 10000, n_dec = 2000;
    int hold = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--hosts") == 0 && i + 1 < argc)
            n_hosts = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--checkpoints") == 0 && i + 1 < argc)
            n_ckpts = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--decisions") == 0 && i + 1 < argc)
            n_dec = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--hold") == 0)
            hold = 1;
        else {
            fprintf(stderr, "usage: sched_scale [--hosts N] [--checkpoints M] [--decisions K]"
                            " [--hold]\n");
            return 2;
        }
    }
    if (n_hosts < 10 || n_ckpts < 10 || n_dec < 10) {
        fprintf(stderr, "sched_scale: want at least 10 of each\n");
        return 2;
    }
    thaw_log_init();
    char why[1536];
    if (pg_harness_start(&pg, why, sizeof why) != 0) {
        fprintf(stderr, "sched_scale: PostgreSQL: %s\n", why);
        return 77;
    }
    struct thaw_sched_migrate_report mig;
    if (thaw_sched_migrate(pg.url, &mig) < 0)
        die("migrate", thaw_errmsg());
    PGconn *c = PQconnectdb(pg.url);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    PGresult *vr = PQexec(c, "SHOW server_version");
    struct utsname u;
    uname(&u);
    printf("# sched_scale: %s %s, %ld online CPUs, PostgreSQL %s (fsync off, Unix socket),"
           " schema version %d\n", u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN),
           PQgetvalue(vr, 0, 0), mig.version);
    PQclear(vr);

    /* Seed: hosts with 8 x 80 GB GPUs (2 % stale), checkpoints of 1-70 GB,
     * each in DRAM on 2 hosts and on SSD on 3, and warm instances of 1 in 5
     * checkpoints. Bandwidths vary per host so that ranking has work. */
    double t0 = thaw_now_s();
    char q[2048];
    snprintf(q, sizeof q,
             "INSERT INTO hosts (name, address, n_gpus, gpu_free_bytes, gpu_bytes, dram_bytes,"
             " ssd_bytes, dram_to_gpu_bps, ssd_bps, network_bps, heartbeat)"
             " SELECT 'host-' || g, 'host-' || g || ':8081', 8, 640000000000, 640000000000,"
             " 1099511627776, 7680000000000, 15e9 + (g %% 7) * 1e9, 2e9 + (g %% 5) * 5e8,"
             " 1.25e9 + (g %% 3) * 1e9,"
             " CASE WHEN g %% 50 = 0 THEN now() - interval '1 hour' ELSE now() END"
             " FROM generate_series(1, %ld) g", n_hosts);
    sql(c, q);
    snprintf(q, sizeof q,
             "INSERT INTO checkpoints (uri, bytes) SELECT 's3://models/m-' || g,"
             " 1000000000::bigint + (g * 7919 %% 69) * 1000000000::bigint"
             " FROM generate_series(1, %ld) g",
             n_ckpts);
    sql(c, q);
    snprintf(q, sizeof q,
             "INSERT INTO replicas (host, checkpoint, tier, bytes)"
             " SELECT DISTINCT ON (h, c.id, t) h, c.id, t, c.bytes FROM checkpoints c,"
             " LATERAL (SELECT 1 + ((c.id * 104729 + k * 7907) %% %ld) AS h,"
             "   CASE WHEN k < 2 THEN 'dram' ELSE 'ssd' END AS t"
             "   FROM generate_series(0, 4) k) x",
             n_hosts);
    sql(c, q);
    snprintf(q, sizeof q,
             "INSERT INTO instances (host, model, state, n_running, tokens_in, tokens_out)"
             " SELECT 1 + ((c.id * 15485863) %% %ld), c.id,"
             " CASE WHEN c.id %% 2 = 0 THEN 'busy' ELSE 'ready' END, 2, 1000, 200"
             " FROM checkpoints c WHERE c.id %% 5 = 0",
             n_hosts);
    sql(c, q);
    sql(c, "VACUUM ANALYZE");
    PGresult *cnt = PQexec(c, "SELECT (SELECT count(*) FROM hosts), (SELECT count(*) FROM"
                              " checkpoints), (SELECT count(*) FROM replicas), (SELECT count(*)"
                              " FROM instances)");
    printf("# seeded %s hosts, %s checkpoints, %s replicas, %s instances in %.1f s\n",
           PQgetvalue(cnt, 0, 0), PQgetvalue(cnt, 0, 1), PQgetvalue(cnt, 0, 2),
           PQgetvalue(cnt, 0, 3), thaw_now_s() - t0);
    PQclear(cnt);

    struct thaw_sched_db *db;
    if (thaw_sched_db_open(pg.url, &db) < 0)
        die("open", thaw_errmsg());
    double *ms = calloc((size_t)n_dec, sizeof *ms);
    if (!ms)
        die("calloc", "out of memory");

    /* Warm up both paths (plans cached, pages in shared buffers), and
     * check that the answer is right: the best host holds the checkpoint
     * (or runs it) whenever a live holder exists. */
    long wrong = 0;
    for (long i = 0; i < 100; i++) {
        char uri[64];
        snprintf(uri, sizeof uri, "s3://models/m-%ld", pick(i + 1000000, n_ckpts));
        struct thaw_sched_host_rank *hr;
        size_t n;
        if (thaw_sched_rank_hosts(db, uri, 0, NULL, &hr, &n) < 0)
            die("rank", thaw_errmsg());
        if (n != (size_t)n_hosts || hr[0].state != THAW_SCHED_HOST_OK ||
            hr[0].c.est.tier == THAW_SCHED_TIER_REMOTE)
            wrong++;
        thaw_free(hr);
    }
    if (wrong)
        die("validate", "a ranking put a host without the checkpoint first");

    char label[96];
    beat(c);
    for (long i = 0; i < 100; i++) {
        struct thaw_sched_placement pl;
        char uri[64];
        snprintf(uri, sizeof uri, "s3://models/m-%ld", pick(i + 2000000, n_ckpts));
        if (thaw_sched_place(db, uri, 0, NULL, &pl) < 0)
            die("place", thaw_errmsg());
    }
    double c0 = self_cpu_s(), p0 = pg_cpu_s(), beats = 0;
    for (long i = 0; i < n_dec; i++) {
        struct thaw_sched_placement pl;
        char uri[64];
        if (i % 200 == 0) {
            double b0 = pg_cpu_s();
            beat(c);
            beats += pg_cpu_s() - b0;
        }
        snprintf(uri, sizeof uri, "s3://models/m-%ld", pick(i, n_ckpts));
        double t = thaw_now_s();
        if (thaw_sched_place(db, uri, 0, NULL, &pl) < 0)
            die("place", thaw_errmsg());
        ms[i] = (thaw_now_s() - t) * 1e3;
    }
    snprintf(label, sizeof label, "place (reserve), %ld hosts", n_hosts);
    report(label, ms, (size_t)n_dec);
    printf("%-34s | client %.2f ms, PostgreSQL %.2f ms (heartbeat updates excluded)\n",
           "  cpu per placement", (self_cpu_s() - c0) * 1e3 / (double)n_dec,
           (pg_cpu_s() - p0 - beats) * 1e3 / (double)n_dec);
    c0 = self_cpu_s(), p0 = pg_cpu_s(), beats = 0;
    for (long i = 0; i < n_dec; i++) {
        char uri[64];
        if (i % 200 == 0) {
            double b0 = pg_cpu_s();
            beat(c);
            beats += pg_cpu_s() - b0;
        }
        snprintf(uri, sizeof uri, "s3://models/m-%ld", pick(i, n_ckpts));
        struct thaw_sched_host_rank *hr;
        size_t n;
        double t = thaw_now_s();
        if (thaw_sched_rank_hosts(db, uri, 0, NULL, &hr, &n) < 0)
            die("rank", thaw_errmsg());
        ms[i] = (thaw_now_s() - t) * 1e3;
        thaw_free(hr);
    }
    snprintf(label, sizeof label, "rank (read-only), %ld hosts", n_hosts);
    report(label, ms, (size_t)n_dec);
    printf("%-34s | client %.2f ms, PostgreSQL %.2f ms (heartbeat updates excluded)\n",
           "  cpu per ranking", (self_cpu_s() - c0) * 1e3 / (double)n_dec,
           (pg_cpu_s() - p0 - beats) * 1e3 / (double)n_dec);

    PGresult *rr = PQexec(c, "SELECT count(*) FROM reservations");
    printf("# %s reservations held at the end\n", PQgetvalue(rr, 0, 0));
    PQclear(rr);

    if (hold) {
        /* Keep the seeded database up for EXPLAIN ANALYZE by hand. */
        printf("# holding: psql '%s' (Ctrl-C or SIGTERM ends)\n", pg.url);
        fflush(stdout);
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        while (!stop)
            pause();
    }
    free(ms);
    thaw_sched_db_close(db);
    PQfinish(c);
    pg_harness_stop(&pg);
    return 0;
}
