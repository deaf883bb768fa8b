/*
 * main.c - `thaw-scheduler`: `--migrate` brings the PostgreSQL locality
 * store up to this binary's schema; otherwise it serves the placement API
 * and the kube-scheduler extender over HTTP (scheduler/server.c) on $PORT,
 * else --port, else 8090, until SIGTERM or SIGINT. The OpenWhisk hook comes
 * later.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/thaw_common.h"
#include "scheduler/server.h"
#include "scheduler/thaw_scheduler.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: thaw-scheduler [--port N] [--pg URL] [--state-file PATH]\n"
               "       thaw-scheduler --migrate [--pg URL]\n\n"
               "  --port N     HTTP port when $PORT is not set (default %d)\n"
               "  --migrate    apply pending schema migrations and exit\n"
               "  --pg URL     PostgreSQL connection URI (default: $THAW_PG_URL)\n"
               "  --state-file PATH\n"
               "               keep the known hosts here, so a restart while PostgreSQL\n"
               "               is down still places by hash (default: $THAW_SCHED_STATE_FILE)\n"
               "  -h, --help   this help\n\n"
               "Endpoints: GET /healthz /readyz /metrics, POST /v1/placement,\n"
               "POST /filter /prioritize (kube-scheduler extender; pods name their\n"
               "checkpoint in the annotation thaw.dev/model; a node name is matched to\nhosts.name, else hosts.address).\n"
               "Runs until SIGTERM or SIGINT.\n",
            THAW_SCHED_DEFAULT_PORT);
}

/* A port number 1..65535, or -1. */
static long parse_port(const char *v)
{
    char *end;
    errno = 0;
    long p = v && v[0] ? strtol(v, &end, 10) : -1;
    if (!v || !v[0] || errno || *end || p < 1 || p > 65535)
        return -1;
    return p;
}

/* Serve until SIGTERM or SIGINT; 0 on a clean stop. */
static int serve(long port, const char *pg_url, const char *state_file)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    /* Blocked before the server thread starts, so only sigwait sees them. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct scheduler_server *srv;
    int rc = scheduler_server_start((uint16_t)port, pg_url, state_file, &srv);
    if (rc < 0) {
        fprintf(stderr, "thaw-scheduler: %s: %s\n", thaw_strerror(rc), thaw_errmsg());
        return 1;
    }
    THAW_LOG(THAW_LOG_INFO, "scheduler", "listening", "port=%ld", port);
    int sig = 0;
    sigwait(&set, &sig);
    THAW_LOG(THAW_LOG_INFO, "scheduler", "stopping", "signal=%d", sig);
    scheduler_server_stop(srv);
    return 0;
}

int main(int argc, char **argv)
{
    thaw_log_init();
    int migrate = 0;
    long port = THAW_SCHED_DEFAULT_PORT;
    const char *pg_url = getenv("THAW_PG_URL");
    const char *state_file = getenv("THAW_SCHED_STATE_FILE");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--migrate") == 0) {
            migrate = 1;
        } else if (strcmp(argv[i], "--pg") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "thaw-scheduler: --pg needs a URL\n");
                return 2;
            }
            pg_url = argv[++i];
        } else if (strcmp(argv[i], "--port") == 0 || strncmp(argv[i], "--port=", 7) == 0) {
            const char *v = argv[i][6] == '=' ? argv[i] + 7 : (i + 1 < argc ? argv[++i] : NULL);
            port = parse_port(v);
            if (port < 0) {
                fprintf(stderr, "thaw-scheduler: --port needs a number 1..65535\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--state-file") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "thaw-scheduler: --state-file needs a path\n");
                return 2;
            }
            state_file = argv[++i];
        } else if (strncmp(argv[i], "--state-file=", 13) == 0) {
            state_file = argv[i] + 13;
        } else if (strncmp(argv[i], "--pg=", 5) == 0) {
            pg_url = argv[i] + 5;
        } else {
            fprintf(stderr, "thaw-scheduler: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!pg_url || !pg_url[0]) {
        fprintf(stderr, "thaw-scheduler: no PostgreSQL URL: pass --pg URL or set THAW_PG_URL\n");
        return 2;
    }
    if (!migrate) {
        const char *env_port = getenv("PORT");
        if (env_port && env_port[0]) {
            port = parse_port(env_port);
            if (port < 0) {
                fprintf(stderr, "thaw-scheduler: $PORT must be a number 1..65535\n");
                return 2;
            }
        }
        return serve(port, pg_url, state_file);
    }

    struct thaw_sched_migrate_report rep;
    int rc = thaw_sched_migrate(pg_url, &rep);
    if (rc < 0) {
        const char *msg = thaw_errmsg();
        fprintf(stderr, "thaw-scheduler: migrate: %s%s%s\n", thaw_strerror(rc), msg[0] ? ": " : "",
                msg);
        return 1;
    }
    for (int i = 0; i < rep.n_applied; i++)
        printf("applied %04d\n", rep.applied[i]);
    printf("schema version %d (%d applied, %d known)\n", rep.version, rep.n_applied, rep.n_known);
    return 0;
}
