/*
 * cli_bench.c - `thaw bench load CKPT`: load a checkpoint repeatedly (cold
 * or warm), report the median run and its per-tier breakdown, as text or
 * as one JSON object (--json).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli_int.h"
#include "loader/thaw_loader.h"

#define MAX_REPEAT 100

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_stats(const char *uri, const struct thaw_load_stats *s)
{
    char a[32];
    printf("load %s: %s in %.3f s = %.2f GB/s (tier %s, method %s)\n", uri,
           thaw_fmt_bytes(s->bytes, a, sizeof a), s->seconds, s->gbps,
           thaw_tier_name(s->main_tier), s->method ? s->method : "?");
    for (int t = 0; t < THAW_TIER_COUNT; t++) {
        if (!s->tier[t].bytes)
            continue;
        double sec = s->tier[t].seconds;
        printf("  tier %-6s %10s  %.3f s  %.2f GB/s\n", thaw_tier_name((enum thaw_tier)t),
               thaw_fmt_bytes(s->tier[t].bytes, a, sizeof a), sec,
               sec > 0 ? (double)s->tier[t].bytes / sec / 1e9 : 0.0);
    }
    printf("  stages: manifest %.3f s, alloc %.3f s, read %.3f s, verify %.3f s, gpu copy %.3f s, "
           "cache write %.3f s (%s)\n",
           s->manifest_s, s->alloc_s, s->read_s, s->verify_s, s->gpu_copy_s, s->cache_s,
           thaw_fmt_bytes(s->cache_bytes, a, sizeof a));
    if (s->retries || s->cache_error)
        printf("  retries %u, cache error %d\n", s->retries, s->cache_error);
}

int cli_bench(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "engine") == 0)
        return cli_bench_engine(argc, argv);
    if (argc < 3 || strcmp(argv[1], "load") != 0) {
        fprintf(stderr, "usage: thaw bench load CKPT [--to host|gpu] [--cold] [--json] "
                        "[--repeat N] [--verify] [--force-pread] [--force-buffered] "
                        "[--force-direct] [--cache DIR] [--connections N]\n");
        return 2;
    }
    const char *uri = argv[2];
    struct thaw_loader_opts o = { 0 };
    int json = 0, repeat = 1;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--to") == 0 && i + 1 < argc) {
            const char *t = argv[++i];
            if (strcmp(t, "host") == 0)
                o.target = THAW_LOAD_HOST;
            else if (strcmp(t, "gpu") == 0)
                o.target = THAW_LOAD_GPU;
            else {
                fprintf(stderr, "thaw bench: --to must be host or gpu (got '%s')\n", t);
                return 2;
            }
        } else if (strcmp(a, "--cold") == 0) {
            o.cold = 1;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--verify") == 0) {
            o.verify = 1;
        } else if (strcmp(a, "--force-pread") == 0) {
            o.force_pread = 1;
        } else if (strcmp(a, "--force-buffered") == 0) {
            o.force_buffered = 1;
        } else if (strcmp(a, "--force-direct") == 0) {
            o.force_direct = 1;
        } else if (strcmp(a, "--connections") == 0 && i + 1 < argc) {
            long v = strtol(argv[++i], NULL, 10);
            if (v < 1 || v > 64) {
                fprintf(stderr, "thaw bench: --connections must be 1..64\n");
                return 2;
            }
            o.n_connections = (unsigned)v;
        } else if (strcmp(a, "--cache") == 0 && i + 1 < argc) {
            o.cache_dir = argv[++i];
        } else if (strcmp(a, "--repeat") == 0 && i + 1 < argc) {
            repeat = atoi(argv[++i]) > 0 ? (int)strtol(argv[i], NULL, 10) : 0;
            if (repeat < 1 || repeat > MAX_REPEAT) {
                fprintf(stderr, "thaw bench: --repeat must be 1..%d\n", MAX_REPEAT);
                return 2;
            }
        } else {
            fprintf(stderr, "thaw bench: unknown option '%s'\n", a);
            return 2;
        }
    }
    double secs[MAX_REPEAT];
    struct thaw_load_stats runs[MAX_REPEAT];
    for (int r = 0; r < repeat; r++) {
        struct thaw_loader *ld = NULL;
        int rc = thaw_loader_load(uri, &o, &ld);
        if (rc)
            return cli_error("load", rc);
        runs[r] = *thaw_loader_stats(ld);
        secs[r] = runs[r].seconds;
        thaw_loader_destroy(ld);
        if (!json)
            print_stats(uri, &runs[r]);
    }
    double sorted[MAX_REPEAT];
    memcpy(sorted, secs, sizeof(double) * (size_t)repeat);
    qsort(sorted, (size_t)repeat, sizeof(double), cmp_double);
    double med = sorted[repeat / 2];
    int mi = 0;
    for (int r = 0; r < repeat; r++) {
        if (secs[r] == med)
            mi = r;
    }
    if (!json) {
        if (repeat > 1)
            printf("median of %d: %.3f s = %.2f GB/s\n", repeat, med, runs[mi].gbps);
        return 0;
    }
    char *text = thaw_loader_stats_json(&runs[mi]);
    json_error_t jerr;
    json_t *o_json = text ? json_loads(text, 0, &jerr) : NULL;
    thaw_free(text);
    if (!o_json)
        return cli_error("json", -12);
    json_t *all = json_array();
    for (int r = 0; r < repeat; r++)
        json_array_append_new(all, json_real(secs[r]));
    json_object_set_new(o_json, "runs_s", all);
    json_object_set_new(o_json, "target", json_string(o.target == THAW_LOAD_GPU ? "gpu" : "host"));
    json_object_set_new(o_json, "cold", json_boolean(o.cold));
    char *out = json_dumps(o_json, JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("%s\n", out);
    free(out);
    json_decref(o_json);
    return 0;
}
