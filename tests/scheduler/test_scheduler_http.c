/*
 * test_scheduler_http.c - the thaw-scheduler binary's HTTP server against a
 * real PostgreSQL started in a temporary directory (skipped when PostgreSQL
 * is not installed): health, readiness and metrics, the JSON placement API
 * with its error codes, the kube-scheduler extender verbs (request bodies
 * shaped like shared/data/knative/), PostgreSQL going away, and SIGTERM.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "scheduler/thaw_scheduler.h"
#include "tests/scheduler/pg_harness.h"
#include "tests/thaw_test.h"

static struct pg_harness pg;
static pid_t server_pid = -1;

static void stop_at_exit(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
    pg_harness_stop(&pg);
}

static const char *bin_or_skip(void)
{
    const char *bin = getenv("THAW_BIN");
    if (!bin || !bin[0])
        SKIP("THAW_BIN is not set (ctest sets it to <build>/bin)");
    return bin;
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

static void sql(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "%s: %s\n", q, PQresultErrorMessage(r));
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
}

/* A loopback port nothing listens on right now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

struct body {
    char buf[65536];
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    size_t k = size * n;
    if (k > sizeof b->buf - 1 - b->len)
        k = sizeof b->buf - 1 - b->len;
    memcpy(b->buf + b->len, p, k);
    b->len += k;
    b->buf[b->len] = 0;
    return size * n;
}

static int port;

/* GET (body NULL) or POST path; returns the status, 0 when nothing answers. */
static long http(const char *path, const char *body, struct body *out)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *h = curl_easy_init();
    CHECK(h != NULL);
    out->len = 0;
    out->buf[0] = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    struct curl_slist *hdr = NULL;
    if (body) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    }
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return code;
}

static json_t *parse(const struct body *b)
{
    json_error_t e;
    json_t *j = json_loads(b->buf, 0, &e);
    if (!j)
        fprintf(stderr, "bad JSON (%s): %s\n", e.text, b->buf);
    CHECK(j != NULL);
    return j;
}

/* A JSON error body {"error": "..."} containing sub. */
static void check_error(const struct body *b, const char *sub)
{
    json_t *j = parse(b);
    const char *msg = json_string_value(json_object_get(j, "error"));
    CHECK(msg != NULL);
    if (!strstr(msg, sub))
        fprintf(stderr, "error \"%s\" lacks \"%s\"\n", msg, sub);
    CHECK(strstr(msg, sub) != NULL);
    json_decref(j);
}

static void start_server(const char *bin)
{
    port = free_port();
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    char exe[1024];
    snprintf(exe, sizeof exe, "%s/thaw-scheduler", bin);
    server_pid = fork();
    CHECK(server_pid >= 0);
    if (server_pid == 0) {
        unsetenv("PORT");
        execl(exe, exe, "--port", port_s, "--pg", pg.url, (char *)NULL);
        _exit(127);
    }
    struct body b;
    for (int i = 0; i < 200; i++) {
        if (http("/healthz", NULL, &b) == 200)
            return;
        CHECK(waitpid(server_pid, NULL, WNOHANG) == 0);
        usleep(50 * 1000);
    }
    CHECK(!"thaw-scheduler did not answer /healthz within 10 s");
}

/* SIGTERM the running thaw-scheduler, wait for it, and start a new one. */
static void restart_server(const char *bin)
{
    CHECK_EQ(kill(server_pid, SIGTERM), 0);
    CHECK_EQ(waitpid(server_pid, NULL, 0), server_pid);
    server_pid = -1;
    start_server(bin);
}

/* ExtenderArgs like shared/data/knative/filter-request.json, with the
 * thaw.dev/model annotation when model is not NULL. */
static void extender_args(char *out, size_t n, const char *model)
{
    char ann[256] = "";
    if (model)
        snprintf(ann, sizeof ann, ",\"thaw.dev/model\":\"%s\"", model);
    snprintf(out, n,
             "{\"Pod\":{\"metadata\":{\"name\":\"llm-llama3-8b-00001-deployment-7f9c-abcde\","
             "\"namespace\":\"llm\",\"labels\":{\"serving.knative.dev/service\":\"llm-llama3-8b\"},"
             "\"annotations\":{\"sllm.example.com/model-id\":\"meta-llama/Meta-Llama-3-8B\"%s}},"
             "\"spec\":{\"containers\":[{\"name\":\"llm\",\"image\":\"registry.example.com/w\","
             "\"resources\":{\"limits\":{\"nvidia.com/gpu\":\"1\"}}}]},\"status\":{}},"
             "\"Nodes\":null,\"NodeNames\":[\"gpu-node-a\",\"gpu-node-b\",\"gpu-node-c\","
             "\"gpu-node-stale\",\"gpu-node-unknown\"]}",
             ann);
}

static void check_names(json_t *arr, const char *const *want, size_t n)
{
    CHECK(json_is_array(arr));
    CHECK_EQ(json_array_size(arr), n);
    for (size_t i = 0; i < n; i++)
        CHECK_STR_EQ(json_string_value(json_array_get(arr, i)), want[i]);
}

static int score_of(json_t *list, const char *host)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        CHECK(json_is_object(e));
        CHECK_EQ(json_object_size(e), 2);
        CHECK(json_is_integer(json_object_get(e, "Score")));
        if (strcmp(json_string_value(json_object_get(e, "Host")), host) == 0)
            return (int)json_integer_value(json_object_get(e, "Score"));
    }
    CHECK(!"host missing from HostPriorityList");
    return -1;
}

static void t_http(void)
{
    const char *bin = bin_or_skip();
    pg_start_or_skip();
    struct thaw_sched_migrate_report rep;
    CHECK_OK(thaw_sched_migrate(pg.url, &rep));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    /* 20 GB checkpoint; a has it in DRAM (2 s), b loads remotely (20 s), c's
     * GPU is full, the stale host has not beaten for an hour. b is known to
     * the extender by its name (as a host agent registers), the others by
     * their address. A full decoy host's address is "gpu-node-b": names
     * win over addresses, so the node gpu-node-b must be b, not the decoy. */
    sql(c, "INSERT INTO checkpoints (uri, bytes) VALUES ('s3://m/llama', 20000000000),"
           " ('s3://m/huge', 900000000000)");
    sql(c, "INSERT INTO hosts (name, address, gpu_free_bytes, dram_to_gpu_bps, ssd_bps,"
           " network_bps, heartbeat) VALUES (NULL, 'gpu-node-a', 80000000000, 10e9, 2e9, 1e9,"
           " now()),"
           " ('gpu-node-b', '10.0.0.2:8081', 80000000000, 10e9, 2e9, 1e9, now()),"
           " (NULL, 'gpu-node-c', 5000000000, 10e9, 2e9, 1e9, now()),"
           " (NULL, 'gpu-node-stale', 80000000000, 10e9, 2e9, 1e9, now() - interval '1 hour'),"
           " ('decoy', 'gpu-node-b', 1000, 10e9, 2e9, 1e9, now())");
    sql(c, "INSERT INTO replicas (host, checkpoint, tier, bytes) SELECT h.id, c.id, 'dram',"
           " c.bytes FROM hosts h, checkpoints c WHERE h.address = 'gpu-node-a'"
           " AND c.uri = 's3://m/llama'");

    start_server(bin);
    struct body b;
    CHECK_EQ(http("/healthz", NULL, &b), 200);
    CHECK(strncmp(b.buf, "ok", 2) == 0);
    CHECK_EQ(http("/readyz", NULL, &b), 200);
    CHECK_EQ(http("/nope", NULL, &b), 404);
    CHECK_EQ(http("/healthz", "{}", &b), 405);

    /* filter: unknown, stale and full nodes fail with a reason. */
    char args[4096];
    extender_args(args, sizeof args, "s3://m/llama");
    CHECK_EQ(http("/filter", args, &b), 200);
    fprintf(stderr, "filter: %s", b.buf);
    json_t *j = parse(&b);
    CHECK(json_is_object(j));
    CHECK(json_is_null(json_object_get(j, "Nodes")));
    static const char *const pass_ab[] = { "gpu-node-a", "gpu-node-b" };
    check_names(json_object_get(j, "NodeNames"), pass_ab, 2);
    json_t *failed = json_object_get(j, "FailedNodes");
    CHECK(json_is_object(failed));
    CHECK_EQ(json_object_size(failed), 3);
    CHECK(strstr(json_string_value(json_object_get(failed, "gpu-node-c")), "GPU memory"));
    CHECK(strstr(json_string_value(json_object_get(failed, "gpu-node-stale")), "stale"));
    CHECK(strstr(json_string_value(json_object_get(failed, "gpu-node-unknown")), "not a"));
    CHECK(json_is_object(json_object_get(j, "FailedAndUnresolvableNodes")));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "Error")), "");
    json_decref(j);

    /* prioritize: a (2 s) scores 10, b (20 s) 10 * 3 / 21 = 1, the rest 0. */
    CHECK_EQ(http("/prioritize", args, &b), 200);
    fprintf(stderr, "prioritize: %s", b.buf);
    j = parse(&b);
    CHECK(json_is_array(j));
    CHECK_EQ(json_array_size(j), 5);
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(j, 0), "Host")), "gpu-node-a");
    CHECK_EQ(score_of(j, "gpu-node-a"), 10);
    CHECK_EQ(score_of(j, "gpu-node-b"), 1);
    CHECK_EQ(score_of(j, "gpu-node-c"), 0);
    CHECK_EQ(score_of(j, "gpu-node-stale"), 0);
    CHECK_EQ(score_of(j, "gpu-node-unknown"), 0);
    json_decref(j);

    /* Read-only: the extender reserved nothing. */
    PGresult *r = PQexec(c, "SELECT count(*) FROM reservations");
    CHECK_STR_EQ(PQgetvalue(r, 0, 0), "0");
    PQclear(r);

    /* A pod without the annotation: every node passes, every score is 0. */
    extender_args(args, sizeof args, NULL);
    CHECK_EQ(http("/filter", args, &b), 200);
    j = parse(&b);
    CHECK_EQ(json_array_size(json_object_get(j, "NodeNames")), 5);
    CHECK_EQ(json_object_size(json_object_get(j, "FailedNodes")), 0);
    json_decref(j);
    CHECK_EQ(http("/prioritize", args, &b), 200);
    j = parse(&b);
    CHECK_EQ(json_array_size(j), 5);
    for (size_t i = 0; i < 5; i++)
        CHECK_EQ(json_integer_value(json_object_get(json_array_get(j, i), "Score")), 0);
    json_decref(j);
    CHECK_EQ(http("/filter", "{\"Pod\":", &b), 400);

    /* Placement. */
    CHECK_EQ(http("/v1/placement", "{\"model\":\"s3://m/llama\",\"expected_tokens\":512}", &b),
             200);
    fprintf(stderr, "placement: %s", b.buf);
    j = parse(&b);
    CHECK(json_is_integer(json_object_get(j, "host")));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "address")), "gpu-node-a");
    CHECK(json_integer_value(json_object_get(j, "reservation_id")) >= 1);
    CHECK_NEAR(json_real_value(json_object_get(j, "estimate_s")), 2.0, 1e-9);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "tier")), "dram");
    CHECK(json_is_string(json_object_get(j, "reason")));
    json_t *cands = json_object_get(j, "candidates");
    CHECK_EQ(json_array_size(cands), 2);
    json_t *c1 = json_array_get(cands, 1);
    CHECK(json_is_integer(json_object_get(c1, "host")));
    CHECK_NEAR(json_real_value(json_object_get(c1, "estimate_s")), 20.0, 1e-9);
    CHECK_STR_EQ(json_string_value(json_object_get(c1, "tier")), "remote");
    CHECK(json_is_string(json_object_get(c1, "reason")));
    json_decref(j);
    r = PQexec(c, "SELECT count(*) FROM reservations");
    CHECK_STR_EQ(PQgetvalue(r, 0, 0), "1");
    PQclear(r);

    CHECK_EQ(http("/v1/placement", "{\"model\":", &b), 400);
    check_error(&b, "invalid JSON");
    CHECK_EQ(http("/v1/placement", "{\"expected_tokens\":5}", &b), 400);
    check_error(&b, "\"model\"");
    CHECK_EQ(http("/v1/placement", "{\"model\":\"s3://m/llama\",\"expected_tokens\":\"x\"}", &b),
             400);
    check_error(&b, "\"expected_tokens\"");
    CHECK_EQ(http("/v1/placement", "{\"model\":\"s3://m/nope\"}", &b), 404);
    check_error(&b, "not registered");
    CHECK_EQ(http("/v1/placement", "{\"model\":\"s3://m/huge\"}", &b), 503);
    check_error(&b, "no capacity");

    /* Metrics. */
    CHECK_EQ(http("/metrics", NULL, &b), 200);
    fprintf(stderr, "%s", b.buf);
    CHECK(strstr(b.buf, "thaw_scheduler_requests_total{path=\"/healthz\",code=\"200\"}"));
    CHECK(strstr(b.buf, "thaw_scheduler_requests_total{path=\"/v1/placement\",code=\"400\"} 3\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_placements_total{result=\"ok\"} 1\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_placements_total{result=\"not_found\"} 1\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_placements_total{result=\"no_capacity\"} 1\n"));
    CHECK(strstr(b.buf, "# TYPE thaw_scheduler_placement_seconds histogram\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_placement_seconds_bucket{le=\"+Inf\"} 1\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_placement_seconds_count 1\n"));

    /* No live host: 503. */
    sql(c, "UPDATE hosts SET heartbeat = now() - interval '1 hour'");
    CHECK_EQ(http("/v1/placement", "{\"model\":\"s3://m/llama\"}", &b), 503);
    check_error(&b, "no live host");
    PQfinish(c);

    /* PostgreSQL goes away for good: still alive, and /readyz says why
     * (test http_degraded covers placement without PostgreSQL). */
    pg_harness_stop(&pg);
    CHECK_EQ(http("/healthz", NULL, &b), 200);
    long code = http("/readyz", NULL, &b);
    CHECK(code == 200 || code == 503);
    CHECK(strstr(b.buf, "PostgreSQL unavailable") != NULL);

    /* SIGTERM: a clean exit 0. */
    CHECK_EQ(kill(server_pid, SIGTERM), 0);
    int st = 0;
    for (int i = 0; i < 100 && waitpid(server_pid, &st, WNOHANG) == 0; i++)
        usleep(50 * 1000);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
    server_pid = -1;
    CHECK_EQ(http("/healthz", NULL, &b), 0);
}

static void t_bad_port(void)
{
    const char *bin = bin_or_skip();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/thaw-scheduler' --pg x --port 99999 2>/dev/null", bin);
    int st = system(cmd);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 2);
    snprintf(cmd, sizeof cmd, "PORT=abc '%s/thaw-scheduler' --pg x 2>/dev/null", bin);
    st = system(cmd);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 2);
}

/* Seed three live hosts and a checkpoint; returns the connection. */
static PGconn *seed_hosts(void)
{
    struct thaw_sched_migrate_report rep;
    CHECK_OK(thaw_sched_migrate(pg.url, &rep));
    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    sql(c, "INSERT INTO checkpoints (uri, bytes) VALUES ('s3://m/llama', 20000000000),"
           " ('s3://m/qwen', 10000000000)");
    sql(c, "INSERT INTO hosts (address, gpu_free_bytes, heartbeat) VALUES"
           " ('gpu-node-a', 800000000000, now()), ('gpu-node-b', 800000000000, now()),"
           " ('gpu-node-c', 800000000000, now())");
    return c;
}

/* POST a placement for model; returns its parsed reply (status 200). */
static json_t *place(const char *model)
{
    char body[256];
    struct body b;
    snprintf(body, sizeof body, "{\"model\":\"%s\"}", model);
    long code = http("/v1/placement", body, &b);
    if (code != 200)
        fprintf(stderr, "placement %s: %ld %s", model, code, b.buf);
    CHECK_EQ(code, 200);
    return parse(&b);
}

/* PostgreSQL stops under a running scheduler: every placement still
 * succeeds, degraded, on the same host for the same model; the extender
 * stays up; writes say 503 (agents retry). PostgreSQL starts again: the
 * next requests are normal, with no restart. */
static void t_http_degraded(void)
{
    const char *bin = bin_or_skip();
    pg_start_or_skip();
    PGconn *c = seed_hosts();
    char state[1024];
    snprintf(state, sizeof state, "%s/known-hosts.json", pg.dir);
    CHECK_EQ(setenv("THAW_SCHED_STATE_FILE", state, 1), 0);
    start_server(bin);
    struct body b;

    json_t *j = place("s3://m/llama");
    CHECK(json_is_false(json_object_get(j, "degraded")));
    json_decref(j);
    CHECK_EQ(access(state, F_OK), 0); /* the known hosts are kept on disk */

    CHECK_EQ(pg_harness_server_stop(&pg), 0);
    PQfinish(c);
    const char *want[2] = { NULL, NULL };
    static const char *const models[2] = { "s3://m/llama", "s3://m/qwen" };
    for (int i = 0; i < 20; i++) {
        const char *model = models[i % 2];
        j = place(model);
        if (i < 2)
            fprintf(stderr, "degraded: %s", json_dumps(j, JSON_COMPACT));
        CHECK(json_is_true(json_object_get(j, "degraded")));
        const char *reason = json_string_value(json_object_get(j, "reason"));
        CHECK(reason && strstr(reason, "PostgreSQL unavailable"));
        CHECK(strstr(reason, "3 known hosts"));
        CHECK(json_is_null(json_object_get(j, "reservation_id")));
        CHECK(json_is_integer(json_object_get(j, "host")));
        CHECK_EQ(json_array_size(json_object_get(j, "candidates")), 3);
        const char *addr = json_string_value(json_object_get(j, "address"));
        CHECK(addr && strncmp(addr, "gpu-node-", 9) == 0);
        if (!want[i % 2])
            want[i % 2] = strdup(addr);
        CHECK_STR_EQ(addr, want[i % 2]);
        json_decref(j);
    }
    CHECK_EQ(http("/readyz", NULL, &b), 200);
    CHECK(strncmp(b.buf, "degraded", 8) == 0);
    /* The extender: every node passes, the hash's choice scores 10. */
    char args[4096];
    extender_args(args, sizeof args, "s3://m/llama");
    CHECK_EQ(http("/filter", args, &b), 200);
    j = parse(&b);
    CHECK_EQ(json_array_size(json_object_get(j, "NodeNames")), 5);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "Error")), "");
    json_decref(j);
    CHECK_EQ(http("/prioritize", args, &b), 200);
    j = parse(&b);
    CHECK_EQ(json_array_size(j), 5);
    int tens = 0;
    for (size_t i = 0; i < 5; i++)
        tens += json_integer_value(json_object_get(json_array_get(j, i), "Score")) == 10;
    CHECK_EQ(tens, 1);
    json_decref(j);
    /* Writes cannot be done: 503, and the reporting host becomes known. */
    CHECK_EQ(http("/v1/usage", "{\"activation_id\":\"a1\"}", &b), 503);
    check_error(&b, "PostgreSQL unavailable");
    CHECK_EQ(http("/v1/hosts/gpu-node-d/report", "{\"address\":\"gpu-node-d\"}", &b), 503);
    CHECK_EQ(http("/v1/hosts/gpu-node-d/report", "{\"address\":7}", &b), 400);
    j = place("s3://m/llama");
    CHECK(strstr(json_string_value(json_object_get(j, "reason")), "4 known hosts"));
    json_decref(j);
    CHECK_EQ(http("/metrics", NULL, &b), 200);
    CHECK(strstr(b.buf, "thaw_scheduler_degraded 1\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_placements_total{result=\"degraded\"} 21\n"));

    /* A restart while PostgreSQL is still down: the known hosts come back
     * from the state file, the reporting host included, and the same
     * model hashes to the same host. */
    restart_server(bin);
    CHECK_EQ(http("/readyz", NULL, &b), 200);
    CHECK(strncmp(b.buf, "degraded", 8) == 0);
    j = place("s3://m/llama");
    CHECK(json_is_true(json_object_get(j, "degraded")));
    CHECK(strstr(json_string_value(json_object_get(j, "reason")), "4 known hosts"));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "address")), want[0]);
    json_decref(j);
    /* A damaged state file is ignored (with a warning), not fatal: nothing
     * is known, so not ready. */
    FILE *f = fopen(state, "w");
    CHECK(f != NULL);
    fputs("{\"version\":1,\"hosts\":[{\"id\":1}", f);
    fclose(f);
    restart_server(bin);
    CHECK_EQ(http("/readyz", NULL, &b), 503);
    CHECK(strstr(b.buf, "no host known"));

    /* Back: the next requests are normal, without restarting. */
    char why[1024];
    CHECK_EQ(pg_harness_server_start(&pg, why, sizeof why), 0);
    CHECK_EQ(http("/readyz", NULL, &b), 200);
    CHECK_STR_EQ(b.buf, "ok\n");
    j = place("s3://m/llama");
    CHECK(json_is_false(json_object_get(j, "degraded")));
    CHECK(json_integer_value(json_object_get(j, "reservation_id")) >= 1);
    json_decref(j);
    CHECK_EQ(http("/v1/usage", "{\"activation_id\":\"a1\"}", &b), 200);
    CHECK_EQ(http("/metrics", NULL, &b), 200);
    CHECK(strstr(b.buf, "thaw_scheduler_degraded 0\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_pg_reconnects_total 1\n"));
    /* ...and rewrote the state file from PostgreSQL. */
    char *text;
    size_t len;
    CHECK_OK(thaw_read_file(state, 1 << 20, &text, &len));
    CHECK(strstr(text, "\"address\":\"gpu-node-a\""));
    thaw_free(text);

    /* Stopped again with no readiness probe in between: placements go
     * degraded at once, and come back on their own after the backoff. */
    CHECK_EQ(pg_harness_server_stop(&pg), 0);
    j = place("s3://m/llama");
    CHECK(json_is_true(json_object_get(j, "degraded")));
    json_decref(j);
    CHECK_EQ(pg_harness_server_start(&pg, why, sizeof why), 0);
    int normal = 0;
    for (int i = 0; i < 100 && !normal; i++) {
        j = place("s3://m/llama");
        normal = json_is_false(json_object_get(j, "degraded"));
        json_decref(j);
        if (!normal)
            usleep(50 * 1000);
    }
    CHECK(normal);
    free((void *)want[0]);
    free((void *)want[1]);
    stop_at_exit(); /* a passing case ends with _exit: no atexit */
}

/* A report as an agent sends it: two GPUs, DRAM and SSD, one replica,
 * one instance with two sequences, one completed load. */
static const char report_body[] =
    "{\"address\":\"10.0.0.9:8081\","
    "\"gpus\":[{\"total_bytes\":85899345920,\"free_bytes\":80000000000},"
    "{\"total_bytes\":85899345920,\"free_bytes\":5000000000}],"
    "\"dram\":{\"capacity_bytes\":549755813888,\"used_bytes\":20000000000},"
    "\"ssd\":{\"capacity_bytes\":3840000000000,\"used_bytes\":120000000000},"
    "\"bandwidth_bps\":{\"dram_to_gpu\":2.2e10,\"ssd\":6.5e9,\"network\":1.25e9},"
    "\"replicas\":[{\"checkpoint\":\"s3://m/llama\",\"tier\":\"dram\",\"bytes\":20000000000,"
    "\"state\":\"ready\"},{\"checkpoint\":\"s3://m/new\",\"tier\":\"ssd\",\"bytes\":7000000000,"
    "\"checkpoint_bytes\":7000000000}],"
    "\"instances\":[{\"id\":\"llama-1\",\"checkpoint\":\"s3://m/llama\",\"state\":\"busy\","
    "\"sequences\":[{\"tokens_in\":512,\"tokens_out\":100},{\"tokens_in\":20,\"tokens_out\":3}]}],"
    "\"completed_loads\":[{\"id\":\"l-1\",\"checkpoint\":\"s3://m/llama\",\"tier\":\"ssd\","
    "\"bytes\":20000000000,\"ms\":4000}]}";

struct bad_body {
    const char *body;
    const char *field;
};

static const struct bad_body bad_bodies[] = {
    { "{}", "address" },
    { "{\"address\":\"\"}", "address" },
    { "{\"address\":\"x\",\"gpus\":{}}", "gpus" },
    { "{\"address\":\"x\",\"gpus\":[{\"free_bytes\":-1}]}", "gpus[0].free_bytes" },
    { "{\"address\":\"x\",\"gpus\":[{\"free_bytes\":9,\"total_bytes\":8}]}",
      "gpus[0].free_bytes" },
    { "{\"address\":\"x\",\"dram\":{\"capacity_bytes\":\"big\"}}", "dram.capacity_bytes" },
    { "{\"address\":\"x\",\"bandwidth_bps\":{\"ssd\":-3}}", "bandwidth_bps.ssd" },
    { "{\"address\":\"x\",\"replicas\":[3]}", "replicas[0]" },
    { "{\"address\":\"x\",\"replicas\":[{\"checkpoint\":\"s3://m/llama\",\"tier\":\"tape\"}]}",
      "replicas[0].tier" },
    { "{\"address\":\"x\",\"replicas\":[{\"checkpoint\":\"s3://m/unknown\",\"tier\":\"ssd\","
      "\"state\":\"loading\",\"bytes\":5}]}", "replicas[0].checkpoint_bytes" },
    { "{\"address\":\"x\",\"instances\":[{\"id\":\"i\",\"checkpoint\":\"s3://m/llama\"}]}",
      "instances[0].state" },
    { "{\"address\":\"x\",\"instances\":[{\"id\":\"i\",\"checkpoint\":\"s3://m/llama\","
      "\"state\":\"ready\",\"sequences\":[{\"tokens_in\":-5}]}]}",
      "instances[0].sequences[0].tokens_in" },
    { "{\"address\":\"x\",\"completed_loads\":[{\"id\":\"l\",\"checkpoint\":\"c\","
      "\"tier\":\"ssd\",\"bytes\":1,\"ms\":0}]}", "completed_loads[0].ms" },
    { "{\"address\":\"x\",\"completed_loads\":[{\"checkpoint\":\"c\"}]}",
      "completed_loads[0].id" },
};

static void check_field(const struct body *b, const char *field)
{
    json_t *j = parse(b);
    const char *f = json_string_value(json_object_get(j, "field"));
    if (!f || strcmp(f, field) != 0)
        fprintf(stderr, "want field %s: %s", field, b->buf);
    CHECK_STR_EQ(f, field);
    CHECK(strstr(json_string_value(json_object_get(j, "error")), field) != NULL);
    json_decref(j);
}

static void t_http_report_usage(void)
{
    const char *bin = bin_or_skip();
    pg_start_or_skip();
    PGconn *c = seed_hosts();
    start_server(bin);
    struct body b;

    CHECK_EQ(http("/v1/hosts/gpu-node-z/report", report_body, &b), 200);
    fprintf(stderr, "report: %s", b.buf);
    json_t *j = parse(&b);
    CHECK(json_is_true(json_object_get(j, "created")));
    CHECK_EQ(json_integer_value(json_object_get(j, "loads_new")), 1);
    /* The reported 6.5 GB/s, then the load's 5 GB/s: 0.2 * 5 + 0.8 * 6.5. */
    json_t *bw = json_object_get(j, "bandwidth_bps");
    CHECK_NEAR(json_real_value(json_object_get(bw, "ssd")), 6.2e9, 1);
    CHECK_NEAR(json_real_value(json_object_get(bw, "dram_to_gpu")), 2.2e10, 1);
    long id = (long)json_integer_value(json_object_get(j, "host_id"));
    json_decref(j);
    PGresult *r = PQexec(c, "SELECT id, address, n_gpus, gpu_free_bytes, dram_used, ssd_bytes,"
                            " (SELECT count(*) FROM replicas WHERE host = h.id),"
                            " (SELECT tokens_in + tokens_out FROM instances WHERE host = h.id),"
                            " (SELECT n_running FROM instances WHERE host = h.id)"
                            " FROM hosts h WHERE name = 'gpu-node-z'");
    CHECK_EQ(PQntuples(r), 1);
    CHECK_EQ(strtol(PQgetvalue(r, 0, 0), NULL, 10), id);
    CHECK_STR_EQ(PQgetvalue(r, 0, 1), "10.0.0.9:8081");
    CHECK_STR_EQ(PQgetvalue(r, 0, 2), "2");
    CHECK_STR_EQ(PQgetvalue(r, 0, 3), "85000000000");
    CHECK_STR_EQ(PQgetvalue(r, 0, 4), "20000000000");
    CHECK_STR_EQ(PQgetvalue(r, 0, 5), "3840000000000");
    CHECK_STR_EQ(PQgetvalue(r, 0, 6), "2");
    CHECK_STR_EQ(PQgetvalue(r, 0, 7), "635");
    CHECK_STR_EQ(PQgetvalue(r, 0, 8), "2");
    PQclear(r);

    /* Retried: same host, nothing learned twice. */
    CHECK_EQ(http("/v1/hosts/gpu-node-z/report", report_body, &b), 200);
    j = parse(&b);
    CHECK(json_is_false(json_object_get(j, "created")));
    CHECK_EQ(json_integer_value(json_object_get(j, "host_id")), id);
    CHECK_EQ(json_integer_value(json_object_get(j, "loads_new")), 0);
    json_decref(j);
    r = PQexec(c, "SELECT count(*) FROM load_samples");
    CHECK_STR_EQ(PQgetvalue(r, 0, 0), "1");
    PQclear(r);

    /* The reported busy instance makes gpu-node-z warm for llama: the best. */
    j = place("s3://m/llama");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "address")), "10.0.0.9:8081");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "tier")), "warm");
    json_decref(j);

    for (size_t i = 0; i < sizeof bad_bodies / sizeof bad_bodies[0]; i++) {
        long code = http("/v1/hosts/gpu-node-y/report", bad_bodies[i].body, &b);
        if (code != 400)
            fprintf(stderr, "%s -> %ld %s", bad_bodies[i].body, code, b.buf);
        CHECK_EQ(code, 400);
        check_field(&b, bad_bodies[i].field);
    }
    CHECK_EQ(http("/v1/hosts/bad!name/report", "{\"address\":\"x\"}", &b), 400);
    check_field(&b, "name");
    CHECK_EQ(http("/v1/hosts/gpu-node-y/report", "{\"address\":\"10.0.0.9:8081\"}", &b), 400);
    check_field(&b, "address");
    CHECK_EQ(http("/v1/hosts/gpu-node-y/report", "[1]", &b), 400);
    check_error(&b, "invalid JSON");
    CHECK_EQ(http("/v1/hosts//report", "{}", &b), 404);
    CHECK_EQ(http("/v1/hosts/gpu-node-y/report", NULL, &b), 405);
    r = PQexec(c, "SELECT count(*) FROM hosts WHERE name = 'gpu-node-y'");
    CHECK_STR_EQ(PQgetvalue(r, 0, 0), "0");
    PQclear(r);

    /* Usage: recorded once per activation. */
    static const char usage[] =
        "{\"activation_id\":\"act-9\",\"namespace\":\"guest\",\"action\":\"chat\","
        "\"model\":\"s3://m/llama\",\"prompt_tokens\":40,\"completion_tokens\":60,"
        "\"load_tier\":\"dram\",\"load_ms\":950.5,\"gpu_ms\":2100,\"cold\":true}";
    CHECK_EQ(http("/v1/usage", usage, &b), 200);
    j = parse(&b);
    CHECK(json_is_true(json_object_get(j, "inserted")));
    json_decref(j);
    CHECK_EQ(http("/v1/usage", usage, &b), 200);
    j = parse(&b);
    CHECK(json_is_false(json_object_get(j, "inserted")));
    json_decref(j);
    r = PQexec(c, "SELECT count(*), sum(completion_tokens), bool_and(cold) FROM usage_ledger");
    CHECK_STR_EQ(PQgetvalue(r, 0, 0), "1");
    CHECK_STR_EQ(PQgetvalue(r, 0, 1), "60");
    CHECK_STR_EQ(PQgetvalue(r, 0, 2), "t");
    PQclear(r);
    CHECK_EQ(http("/v1/usage", "{\"namespace\":\"x\"}", &b), 400);
    check_field(&b, "activation_id");
    CHECK_EQ(http("/v1/usage", "{\"activation_id\":\"a\",\"load_tier\":\"tape\"}", &b), 400);
    check_field(&b, "load_tier");
    CHECK_EQ(http("/v1/usage", "{\"activation_id\":\"a\",\"prompt_tokens\":-1}", &b), 400);
    check_field(&b, "prompt_tokens");
    CHECK_EQ(http("/v1/usage", "{\"activation_id\":\"a\",\"cold\":1}", &b), 400);
    check_field(&b, "cold");

    CHECK_EQ(http("/metrics", NULL, &b), 200);
    CHECK(strstr(b.buf, "thaw_scheduler_host_reports_total{result=\"ok\"} 2\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_usage_records_total{result=\"ok\"} 1\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_usage_records_total{result=\"duplicate\"} 1\n"));
    CHECK(strstr(b.buf, "thaw_scheduler_load_predictions_total 1\n"));
    /* Predicted 20 GB at the reported 6.5 GB/s (3.08 s); took 4 s. */
    CHECK(strstr(b.buf, "thaw_scheduler_load_prediction_error{stat=\"mean\"} -0.2307"));
    CHECK(strstr(b.buf, "thaw_scheduler_requests_total{path=\"/v1/hosts/{name}/report\","
                        "code=\"400\"}"));
    PQfinish(c);
    stop_at_exit(); /* a passing case ends with _exit: no atexit */
}

static const struct test_case cases[] = {
    { "bad_port", t_bad_port },
    { "http", t_http },
    { "http_degraded", t_http_degraded },
    { "http_report_usage", t_http_report_usage },
};

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
