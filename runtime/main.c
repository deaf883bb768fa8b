/*
 * main.c - thaw-runtime: the action container. Reads its configuration
 * from the environment (and a few flags), serves HTTP, loads THAW_MODEL at
 * start-up when set (Knative), and on SIGTERM/SIGINT stops accepting,
 * lets in-flight requests finish (up to THAW_DRAIN_S) and exits 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime_int.h"

static int env_uint(const char *name, unsigned def, unsigned lo, unsigned hi, unsigned *out)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (*end || x < lo || x > hi)
        return THAW_FAIL(THAW_EINVAL, "%s=\"%s\": expected an integer in [%u, %u]", name, v, lo, hi);
    *out = (unsigned)x;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: thaw-runtime [--port N]\n\n"
               "Environment: PORT (8080), THAW_MODEL (checkpoint URI loaded at start),\n"
               "THAW_MODEL_NAME, THAW_MODEL_CARD (JSON model card), THAW_CACHE_DIR,\n"
               "THAW_MAX_SEQS (4), THAW_QUEUE (64), THAW_CTX (2048), THAW_THREADS (all CPUs),\n"
               "THAW_DRAIN_S (30), THAW_PG_URL (usage ledger), THAW_LOG, THAW_LOG_FORMAT.\n");
}

int main(int argc, char **argv)
{
    thaw_log_init();
    struct rt_config cfg = { 0 };
    unsigned port, drain;
    int rc;
    if ((rc = env_uint("PORT", 8080, 1, 65535, &port)) ||
        (rc = env_uint("THAW_MAX_SEQS", 4, 1, 256, &cfg.max_seqs)) ||
        (rc = env_uint("THAW_QUEUE", 64, 0, 100000, &cfg.queue)) ||
        (rc = env_uint("THAW_CTX", 2048, 16, 1 << 20, &cfg.ctx)) ||
        (rc = env_uint("THAW_THREADS", 0, 0, 1024, &cfg.threads)) ||
        (rc = env_uint("THAW_DRAIN_S", 30, 0, 3600, &drain))) {
        fprintf(stderr, "thaw-runtime: %s\n", thaw_errmsg());
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            unsigned long p = strtoul(argv[++i], &end, 10);
            if (*end || p < 1 || p > 65535) {
                fprintf(stderr, "thaw-runtime: --port: expected 1..65535\n");
                return 2;
            }
            port = (unsigned)p;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    cfg.port = (int)port;
    cfg.drain_s = drain;
    cfg.model_uri = getenv("THAW_MODEL");
    if (cfg.model_uri && !*cfg.model_uri)
        cfg.model_uri = NULL;
    cfg.cache_dir = getenv("THAW_CACHE_DIR");
    cfg.pg_url = getenv("THAW_PG_URL");
    if (getenv("THAW_MODEL_CARD") && *getenv("THAW_MODEL_CARD") && !cfg.model_uri)
        cfg.model_uri = "(card)";

    /* Signals go to the main thread only: block them before any thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((rc = rt_ledger_start(cfg.pg_url)) || (rc = rt_server_start(&cfg)) ||
        (cfg.model_uri && (rc = rt_server_preload(cfg.model_uri)))) {
        fprintf(stderr, "thaw-runtime: %s\n", thaw_errmsg());
        return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    THAW_LOG(THAW_LOG_INFO, "runtime", "draining", "signal=%d drain_s=%u", sig, drain);
    rt_server_drain_and_stop(cfg.drain_s);
    rt_ledger_stop(5);
    THAW_LOG(THAW_LOG_INFO, "runtime", "exit", "code=0");
    return 0;
}
