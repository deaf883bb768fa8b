/*
 * cli_simulate.c - `thaw simulate`: build a workload from a public trace,
 * run the cluster simulator (scheduler/sim.c) under each placement policy
 * and print one row per policy (or JSON with --json). Traces are read from
 * --shared DIR, else $THAW_SHARED, else the `shared` folder next to the
 * repository that holds this executable.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_int.h"
#include "common/thaw_common.h"
#include "scheduler/sim.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: thaw simulate [options]\n"
               "  --trace T        azure-conv (default) | azure-code | azure-fn | synthetic\n"
               "  --policy P[,P]   all (default) | random rr openwhisk shepherd sllm thaw\n"
               "  --seed N         random seed (default 1)\n"
               "  --minutes N      only the first N minutes of the trace\n"
               "  --models N       catalog size (default 64; 7B/13B/34B/70B in 4:3:2:1)\n"
               "  --zipf S         model popularity of the LLM traces (default 1.0)\n"
               "  --fn-rps R       azure-fn: requests/s after thinning (default 4)\n"
               "  --fn-sample N    azure-fn: 100 or 500 functions (default 500)\n"
               "  --lengths L      azure-fn/synthetic: sharegpt | gsm8k | fixed\n"
               "  --rps R          synthetic: Poisson rate (default 2)\n"
               "  --hosts N --gpus N --gpu-gb G --dram-gb G --ssd-gb G\n"
               "  --ssd-gbps B --pcie-gbps B (GB/s)  --nic-gbit B --store-gbit B (Gb/s)\n"
               "  --batch N        concurrent requests per instance (default 8)\n"
               "  --keep-alive S   baselines' keep-alive seconds (default 600)\n"
               "  --replicas N     initial SSD copies of each checkpoint (default 2)\n"
               "  --thaw-off BITS  ablation: 1 histogram keep-alive, 2 cost-aware eviction,\n"
               "                   4 queue-before-scale-out, 8 reload-weighted eviction value,\n"
               "                   16 wait for GPUs with DRAM staging, 32 eviction-cost\n"
               "                   placement (OR them)\n"
               "  --noise S        lognormal sigma of transfer speed (default 0.15; <0: none)\n"
               "  --no-ewma        the estimator keeps its default bandwidths\n"
               "  --shared DIR     folder holding data/traces (default $THAW_SHARED or ../shared)\n"
               "  --json           JSON on stdout instead of the table\n"
               "  --details PREFIX write PREFIX-<policy>.csv: where each request's startup went\n");
}

static int is_dir_with_traces(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/data/traces", dir);
    return access(p, R_OK | X_OK) == 0;
}

/* The shared folder: $THAW_SHARED, else <repo>/../shared where <repo> is
 * the nearest ancestor of the executable that has a sibling `shared`. */
static int find_shared(char *out, size_t cap)
{
    const char *env = getenv("THAW_SHARED");
    if (env && env[0]) {
        snprintf(out, cap, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        for (int up = 0; up < 6; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash || slash == exe)
                break;
            *slash = 0;
            char cand[PATH_MAX + 16];
            snprintf(cand, sizeof cand, "%s/../shared", exe);
            if (is_dir_with_traces(cand)) {
                snprintf(out, cap, "%s", cand);
                return 0;
            }
        }
    }
    if (is_dir_with_traces("../shared")) {
        snprintf(out, cap, "../shared");
        return 0;
    }
    return -1;
}

static double arg_num(const char *opt, const char *v, int *bad)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end) {
        fprintf(stderr, "thaw simulate: %s needs a number, got '%s'\n", opt, v);
        *bad = 1;
    }
    return d;
}

/* One CSV row per request: where its startup latency went (sim.h,
 * struct thaw_sched_sim_req_detail), for the tail breakdown. */
static int write_details(const char *prefix, const char *policy,
                         const struct thaw_sched_sim_workload *w,
                         const struct thaw_sched_sim_req_detail *d)
{
    static const char *how[] = { "warm", "slot", "join", "cold", "queue", "migrate", "prewarm",
                                 "staged" };
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s-%s.csv", prefix, policy);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "thaw simulate: cannot write %s\n", path);
        return -1;
    }
    static const char *gone[] = { "none", "keepalive", "evicted", "released", "preempted",
                                  "migrated" };
    fprintf(f, "req,arrival_s,model,params_b,n_gpus,startup_s,pending_s,attach_s,gpu_wait_s,"
               "load_s,load_total_s,contention,how,tier,dram_hosts,dram_room,gone_s,gone_why,"
               "evicted,free_hosts\n");
    for (size_t r = 0; r < w->n_reqs; r++) {
        const struct thaw_sched_sim_request *q = &w->reqs[r];
        const struct thaw_sched_sim_model *m = &w->models[q->model];
        const struct thaw_sched_sim_req_detail *x = &d[r];
        fprintf(f, "%zu,%.3f,%u,%g,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.3f,%s,%s,%d,%d,%.1f,%s,%d,%d\n",
                r, q->arrival_s, q->model, m->params_b, m->n_gpus, x->startup_s, x->pending_s,
                x->attach_s, x->gpu_wait_s, x->load_s, x->load_total_s, x->contention,
                (unsigned)x->how < THAW_SCHED_SIM_N_HOW ? how[x->how] : "?",
                thaw_sched_tier_name(x->tier), x->dram_hosts, x->dram_room, x->gone_s,
                (unsigned)x->gone_why < THAW_SCHED_SIM_N_GONE ? gone[x->gone_why] : "?",
                x->evicted, x->free_hosts);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static void print_json(const struct thaw_sched_sim_workload *w,
                       const struct thaw_sched_sim_trace_opts *to,
                       const struct thaw_sched_sim_opts *so, const struct thaw_sched_sim_result *r,
                       const double *wall, size_t n)
{
    const struct thaw_sched_sim_cluster *c = &so->cluster;
    printf("{\"trace\":\"%s\",\"requests\":%zu,\"duration_s\":%.1f,\"models\":%zu,"
           "\"seed\":%llu,\"minutes\":%g,\"zipf\":%g,\"cluster\":{\"hosts\":%d,"
           "\"gpus_per_host\":%d,\"gpu_gb\":%.0f,\"dram_gb\":%.0f,\"ssd_gb\":%.0f,"
           "\"ssd_gbps\":%.2f,\"pcie_gbps\":%.1f,\"nic_gbit\":%.1f,\"store_gbit\":%.1f},"
           "\"batch\":%d,\"keep_alive_s\":%g,\"noise\":%g,\"ewma\":%s,\"replicas\":%d,"
           "\"thaw_off\":%u,\"policies\":[",
           w->name, w->n_reqs, w->duration_s, w->n_models, (unsigned long long)so->seed,
           to->minutes, to->zipf_s, c->n_hosts, c->gpus_per_host, c->gpu_bytes / 1e9,
           c->dram_bytes / 1e9, c->ssd_bytes / 1e9, c->ssd_bps / 1e9, c->pcie_bps / 1e9,
           c->nic_bps * 8 / 1e9, c->store_bps * 8 / 1e9, so->max_batch, so->keep_alive_s,
           so->noise_sigma, so->no_ewma ? "false" : "true", so->ssd_replicas, so->thaw_off);
    for (size_t i = 0; i < n; i++) {
        const struct thaw_sched_sim_result *x = &r[i];
        printf("%s{\"policy\":\"%s\",\"completed\":%zu,\"warm\":%zu,\"cold_starts\":%zu,"
               "\"prewarms\":%zu,\"prefetches\":%zu,\"migrations\":%zu,\"preemptions\":%zu,"
               "\"queued\":%zu,\"staged\":%zu,"
               "\"loads_dram\":%zu,\"loads_ssd\":%zu,\"loads_remote\":%zu,"
               "\"startup_p50_s\":%.4f,\"startup_p99_s\":%.4f,\"startup_mean_s\":%.4f,"
               "\"e2e_p50_s\":%.4f,\"e2e_p99_s\":%.4f,\"gpu_s\":%.1f,\"busy_gpu_s\":%.1f,"
               "\"est_n\":%zu,\"est_mdape\":%.4f,\"est_bias\":%.4f,\"sim_end_s\":%.1f,"
               "\"wall_s\":%.3f}",
               i ? "," : "", thaw_sched_sim_policy_name(x->policy), x->n_completed, x->n_warm,
               x->n_cold_starts, x->n_prewarms, x->n_prefetches, x->n_migrations, x->n_preemptions,
               x->n_queued, x->n_staged, x->tier_loads[THAW_SCHED_TIER_DRAM],
               x->tier_loads[THAW_SCHED_TIER_SSD], x->tier_loads[THAW_SCHED_TIER_REMOTE], x->startup_p50, x->startup_p99,
               x->startup_mean, x->e2e_p50, x->e2e_p99, x->gpu_s, x->busy_gpu_s, x->est_n,
               x->est_mdape, x->est_bias, x->sim_end_s, wall[i]);
    }
    printf("]}\n");
}

int cli_simulate(int argc, char **argv)
{
    struct thaw_sched_sim_trace_opts to = { .trace = "azure-conv", .seed = 1 };
    struct thaw_sched_sim_opts so = { .seed = 1 };
    const char *policies = "all";
    const char *shared = NULL;
    const char *details = NULL;
    int json = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--no-ewma") == 0) {
            so.no_ewma = 1;
        } else if (!v) {
            fprintf(stderr, "thaw simulate: %s needs a value\n", a);
            return 2;
        } else {
            i++;
            if (strcmp(a, "--trace") == 0)
                to.trace = v;
            else if (strcmp(a, "--policy") == 0)
                policies = v;
            else if (strcmp(a, "--shared") == 0)
                shared = v;
            else if (strcmp(a, "--details") == 0)
                details = v;
            else if (strcmp(a, "--lengths") == 0)
                to.lengths = v;
            else if (strcmp(a, "--seed") == 0)
                so.seed = to.seed = (uint64_t)arg_num(a, v, &bad);
            else if (strcmp(a, "--minutes") == 0)
                to.minutes = arg_num(a, v, &bad);
            else if (strcmp(a, "--models") == 0)
                to.n_models = (size_t)arg_num(a, v, &bad);
            else if (strcmp(a, "--zipf") == 0)
                to.zipf_s = arg_num(a, v, &bad);
            else if (strcmp(a, "--fn-rps") == 0)
                to.fn_rps = arg_num(a, v, &bad);
            else if (strcmp(a, "--fn-sample") == 0)
                to.fn_sample = (int)arg_num(a, v, &bad);
            else if (strcmp(a, "--rps") == 0)
                to.synth_rps = arg_num(a, v, &bad);
            else if (strcmp(a, "--hosts") == 0)
                so.cluster.n_hosts = (int)arg_num(a, v, &bad);
            else if (strcmp(a, "--gpus") == 0)
                so.cluster.gpus_per_host = (int)arg_num(a, v, &bad);
            else if (strcmp(a, "--gpu-gb") == 0)
                so.cluster.gpu_bytes = (uint64_t)(arg_num(a, v, &bad) * 1e9);
            else if (strcmp(a, "--dram-gb") == 0)
                so.cluster.dram_bytes = (uint64_t)(arg_num(a, v, &bad) * 1e9);
            else if (strcmp(a, "--ssd-gb") == 0)
                so.cluster.ssd_bytes = (uint64_t)(arg_num(a, v, &bad) * 1e9);
            else if (strcmp(a, "--ssd-gbps") == 0)
                so.cluster.ssd_bps = arg_num(a, v, &bad) * 1e9;
            else if (strcmp(a, "--pcie-gbps") == 0)
                so.cluster.pcie_bps = arg_num(a, v, &bad) * 1e9;
            else if (strcmp(a, "--nic-gbit") == 0)
                so.cluster.nic_bps = arg_num(a, v, &bad) * 1e9 / 8;
            else if (strcmp(a, "--store-gbit") == 0)
                so.cluster.store_bps = arg_num(a, v, &bad) * 1e9 / 8;
            else if (strcmp(a, "--batch") == 0)
                so.max_batch = (int)arg_num(a, v, &bad);
            else if (strcmp(a, "--keep-alive") == 0)
                so.keep_alive_s = arg_num(a, v, &bad);
            else if (strcmp(a, "--replicas") == 0)
                so.ssd_replicas = (int)arg_num(a, v, &bad);
            else if (strcmp(a, "--thaw-off") == 0)
                so.thaw_off = (unsigned)arg_num(a, v, &bad);
            else if (strcmp(a, "--noise") == 0)
                so.noise_sigma = arg_num(a, v, &bad);
            else {
                fprintf(stderr, "thaw simulate: unknown option %s\n", a);
                usage(stderr);
                return 2;
            }
        }
        if (bad)
            return 2;
    }

    int want[THAW_SCHED_SIM_N_POLICIES] = { 0 };
    if (strcmp(policies, "all") == 0) {
        for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++)
            want[p] = 1;
    } else {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", policies);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int p = thaw_sched_sim_policy_parse(tok);
            if (p < 0) {
                fprintf(stderr, "thaw simulate: unknown policy '%s'\n", tok);
                return 2;
            }
            want[p] = 1;
        }
    }

    char shared_buf[PATH_MAX];
    if (!shared && strcmp(to.trace, "synthetic") != 0) {
        if (find_shared(shared_buf, sizeof shared_buf) < 0) {
            fprintf(stderr, "thaw simulate: cannot find data/traces; use --shared DIR or "
                            "THAW_SHARED\n");
            return 1;
        }
        shared = shared_buf;
    }
    to.shared_dir = shared;
    to.gpu_bytes = so.cluster.gpu_bytes;

    struct thaw_sched_sim_workload *w = NULL;
    int rc = thaw_sched_sim_workload_load(&to, &w);
    if (rc < 0)
        return cli_error("loading the workload", rc);

    struct thaw_sched_sim_result res[THAW_SCHED_SIM_N_POLICIES];
    double wall[THAW_SCHED_SIM_N_POLICIES];
    size_t n = 0;
    if (details) {
        so.details = thaw_calloc(w->n_reqs ? w->n_reqs : 1, sizeof *so.details);
        if (!so.details) {
            thaw_sched_sim_workload_free(w);
            return cli_error("allocating", -ENOMEM);
        }
    }
    for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++) {
        if (!want[p])
            continue;
        so.policy = p;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = thaw_sched_sim_run(w, &so, &res[n]);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc < 0) {
            thaw_free(so.details);
            thaw_sched_sim_workload_free(w);
            return cli_error("simulating", rc);
        }
        if (details && write_details(details, thaw_sched_sim_policy_name(p), w, so.details) < 0) {
            thaw_free(so.details);
            thaw_sched_sim_workload_free(w);
            return 1;
        }
        wall[n] = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (res[n].n_completed != res[n].n_requests)
            fprintf(stderr, "thaw simulate: warning: %s completed %zu of %zu requests\n",
                    thaw_sched_sim_policy_name(res[n].policy), res[n].n_completed,
                    res[n].n_requests);
        n++;
    }

    /* Report the effective configuration (defaults filled in). */
    thaw_free(so.details);
    so.details = NULL;
    struct thaw_sched_sim_opts eff = so;
    struct thaw_sched_sim_cluster *c = &eff.cluster;
    if (!c->n_hosts)
        c->n_hosts = 8;
    if (!c->gpus_per_host)
        c->gpus_per_host = 8;
    if (!c->gpu_bytes)
        c->gpu_bytes = 80000000000ull;
    if (!c->dram_bytes)
        c->dram_bytes = 256000000000ull;
    if (!c->ssd_bytes)
        c->ssd_bytes = 2000000000000ull;
    if (!c->ssd_bps)
        c->ssd_bps = 6e9;
    if (!c->pcie_bps)
        c->pcie_bps = 25e9;
    if (!c->nic_bps)
        c->nic_bps = 25e9 / 8;
    if (!c->store_bps)
        c->store_bps = 100e9 / 8;
    if (!eff.max_batch)
        eff.max_batch = 8;
    if (!eff.keep_alive_s)
        eff.keep_alive_s = 600;
    if (!eff.noise_sigma)
        eff.noise_sigma = 0.15;
    if (eff.noise_sigma < 0)
        eff.noise_sigma = 0;
    if (!eff.ssd_replicas)
        eff.ssd_replicas = 2;
    if (!to.zipf_s)
        to.zipf_s = 1.0;

    if (json) {
        print_json(w, &to, &eff, res, wall, n);
    } else {
        printf("trace=%s requests=%zu span=%.0fs models=%zu hosts=%dx%d GPUs seed=%llu\n", w->name,
               w->n_reqs, w->duration_s, w->n_models, c->n_hosts, c->gpus_per_host,
               (unsigned long long)so.seed);
        printf("%-10s %9s %9s %9s %9s %6s %6s %5s %5s %9s %6s %6s %7s\n", "policy", "start.p50",
               "start.p99", "e2e.p50", "e2e.p99", "cold", "warm%", "migr", "preem", "GPU-s",
               "prewrm", "est.n", "est.err");
        for (size_t i = 0; i < n; i++) {
            const struct thaw_sched_sim_result *x = &res[i];
            printf("%-10s %8.2fs %8.2fs %8.2fs %8.2fs %6zu %5.1f%% %5zu %5zu %9.0f %6zu %6zu "
                   "%6.1f%%\n",
                   thaw_sched_sim_policy_name(x->policy), x->startup_p50, x->startup_p99,
                   x->e2e_p50, x->e2e_p99, x->n_cold_starts,
                   x->n_completed ? 100.0 * x->n_warm / x->n_completed : 0, x->n_migrations,
                   x->n_preemptions, x->gpu_s, x->n_prewarms, x->est_n, 100 * x->est_mdape);
        }
    }
    thaw_sched_sim_workload_free(w);
    return 0;
}
