/*
 * test_sim.c - unit tests of the cluster simulator (scheduler/sim.c,
 * scheduler/sim_trace.c): determinism with a seed, every policy runs and
 * completes every request, conservation of GPU time, startup-optimised
 * placement no worse than random on a locality-heavy workload, the
 * estimator's error with and without EWMA, allocation failures, and (when
 * the shared traces are present) loading each real trace.
 */
#include <errno.h>

#include "scheduler/sim.h"
#include "tests/thaw_test.h"

/* A synthetic workload with fixed 512/128-token requests; no files. */
static struct thaw_sched_sim_workload *synth(double rps, double minutes, size_t n_models,
                                             uint64_t seed)
{
    struct thaw_sched_sim_trace_opts to = {
        .trace = "synthetic",
        .lengths = "fixed",
        .synth_rps = rps,
        .minutes = minutes,
        .n_models = n_models,
        .seed = seed,
    };
    struct thaw_sched_sim_workload *w = NULL;
    CHECK_OK(thaw_sched_sim_workload_load(&to, &w));
    CHECK(w->n_reqs > 0);
    return w;
}

static void check_sane(const struct thaw_sched_sim_workload *w,
                       const struct thaw_sched_sim_result *r)
{
    CHECK_EQ(r->n_requests, w->n_reqs);
    CHECK_EQ(r->n_completed, w->n_reqs);
    CHECK(r->n_warm <= r->n_completed);
    CHECK(r->startup_p50 >= 0 && r->startup_p50 <= r->startup_p99);
    CHECK(r->e2e_p50 > 0 && r->e2e_p50 <= r->e2e_p99);
    CHECK(r->e2e_p99 >= r->startup_p99);
    CHECK(r->busy_gpu_s > 0 && r->busy_gpu_s <= r->gpu_s + 1e-6);
    CHECK(r->sim_end_s >= w->duration_s);
}

static void t_policy_names(void)
{
    for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++)
        CHECK_EQ(thaw_sched_sim_policy_parse(thaw_sched_sim_policy_name(p)), p);
    CHECK_EQ(thaw_sched_sim_policy_parse("nope"), -1);
    CHECK_STR_EQ(thaw_sched_sim_policy_name(THAW_SCHED_SIM_THAW), "thaw");
}

static void t_catalog(void)
{
    struct thaw_sched_sim_model m[10];
    thaw_sched_sim_models_default(m, 10, 0);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(m[i].bytes, (uint64_t)(m[i].params_b * 2e9));
        /* The weights fit their GPUs with 20% to spare. */
        CHECK((double)m[i].bytes <= 0.8 * 80e9 * m[i].n_gpus);
        CHECK(m[i].n_gpus == 1 || (double)m[i].bytes > 0.8 * 80e9 * (m[i].n_gpus / 2));
        CHECK(m[i].decode_s_per_tok > 0 && m[i].prefill_tok_s > 0);
    }
    CHECK_EQ(m[6].params_b, 70);
    CHECK_EQ(m[6].n_gpus, 4);
}

/* Same seed, same numbers; all policies. */
static void t_deterministic(void)
{
    struct thaw_sched_sim_workload *w = synth(3, 5, 16, 7);
    struct thaw_sched_sim_workload *w2 = synth(3, 5, 16, 7);
    CHECK_EQ(w->n_reqs, w2->n_reqs);
    for (size_t i = 0; i < w->n_reqs; i++) { /* field by field: the struct has padding */
        CHECK(w->reqs[i].arrival_s == w2->reqs[i].arrival_s);
        CHECK_EQ(w->reqs[i].model, w2->reqs[i].model);
        CHECK_EQ(w->reqs[i].in_tokens, w2->reqs[i].in_tokens);
        CHECK_EQ(w->reqs[i].out_tokens, w2->reqs[i].out_tokens);
    }
    for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++) {
        struct thaw_sched_sim_opts o = { .policy = p, .seed = 42 };
        o.cluster.n_hosts = 2;
        o.cluster.gpus_per_host = 4;
        struct thaw_sched_sim_result a, b;
        CHECK_OK(thaw_sched_sim_run(w, &o, &a));
        CHECK_OK(thaw_sched_sim_run(w2, &o, &b));
        CHECK_MEM_EQ(&a, &b, sizeof a);
    }
    thaw_sched_sim_workload_free(w);
    thaw_sched_sim_workload_free(w2);
}

/* Every policy completes every request on a busy cluster, with the
 * conservation checks of check_sane. */
static void t_all_policies_complete(void)
{
    struct thaw_sched_sim_workload *w = synth(6, 10, 24, 3);
    for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++) {
        struct thaw_sched_sim_opts o = { .policy = p, .seed = 1, .keep_alive_s = 60 };
        o.cluster.n_hosts = 3;
        o.cluster.gpus_per_host = 4;
        struct thaw_sched_sim_result r;
        CHECK_OK(thaw_sched_sim_run(w, &o, &r));
        check_sane(w, &r);
        CHECK_EQ(r.policy, p);
        if (p != THAW_SCHED_SIM_SHEPHERD)
            CHECK_EQ(r.n_preemptions, 0);
        if (p != THAW_SCHED_SIM_SLLM && p != THAW_SCHED_SIM_THAW)
            CHECK_EQ(r.n_migrations, 0);
    }
    thaw_sched_sim_workload_free(w);
}

/* Locality-heavy: many 7B models each staged on one host's SSD, a slow
 * remote store, DRAM that holds most of them. Choosing by estimated startup
 * must not lose to random placement. */
static void t_startup_optimised_beats_random(void)
{
    struct thaw_sched_sim_workload *w = NULL;
    CHECK_OK(thaw_sched_sim_workload_alloc(12, 600, &w));
    for (size_t m = 0; m < w->n_models; m++) {
        w->models[m] = (struct thaw_sched_sim_model){
            .params_b = 7,
            .bytes = 14000000000ull,
            .n_gpus = 1,
            .prefill_tok_s = 10000,
            .decode_s_per_tok = 0.01,
        };
    }
    uint64_t x = 99;
    for (size_t r = 0; r < w->n_reqs; r++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        w->reqs[r] = (struct thaw_sched_sim_request){
            .arrival_s = (double)r * 1.0,
            .model = (uint32_t)((x >> 33) % w->n_models),
            .in_tokens = 256,
            .out_tokens = 64,
        };
    }
    w->duration_s = w->reqs[w->n_reqs - 1].arrival_s;
    double p99[THAW_SCHED_SIM_N_POLICIES], mean[THAW_SCHED_SIM_N_POLICIES];
    for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++) {
        struct thaw_sched_sim_opts o = {
            .policy = p,
            .seed = 5,
            .keep_alive_s = 5,
            .ssd_replicas = 1,
        };
        o.cluster.n_hosts = 4;
        o.cluster.gpus_per_host = 2;
        o.cluster.nic_bps = 1.25e9;
        o.cluster.store_bps = 1.25e9;
        struct thaw_sched_sim_result r;
        CHECK_OK(thaw_sched_sim_run(w, &o, &r));
        check_sane(w, &r);
        p99[p] = r.startup_p99;
        mean[p] = r.startup_mean;
    }
    CHECK(mean[THAW_SCHED_SIM_SLLM] <= mean[THAW_SCHED_SIM_RANDOM]);
    CHECK(p99[THAW_SCHED_SIM_SLLM] <= p99[THAW_SCHED_SIM_RANDOM]);
    CHECK(mean[THAW_SCHED_SIM_THAW] <= mean[THAW_SCHED_SIM_RANDOM]);
    CHECK(p99[THAW_SCHED_SIM_THAW] <= p99[THAW_SCHED_SIM_RANDOM]);
    thaw_sched_sim_workload_free(w);
}

/* ServerlessLLM's live migration: a 2-GPU model arrives while each host
 * has one GPU free and one running a long 1-GPU job; moving one job next to
 * the other frees a host, much sooner than either job ends. */
static void t_migration(void)
{
    struct thaw_sched_sim_workload *w = NULL;
    CHECK_OK(thaw_sched_sim_workload_alloc(3, 3, &w));
    for (size_t m = 0; m < 3; m++) {
        int big = m == 2;
        w->models[m] = (struct thaw_sched_sim_model){
            .params_b = big ? 34 : 7,
            .bytes = big ? 68000000000ull : 14000000000ull,
            .n_gpus = big ? 2 : 1,
            .prefill_tok_s = 10000,
            .decode_s_per_tok = 0.01,
        };
    }
    /* With one SSD replica, models 0 and 2 sit on host 0, model 1 on host 1. */
    w->reqs[0] = (struct thaw_sched_sim_request){ 0.0, 0, 100, 10000 };
    w->reqs[1] = (struct thaw_sched_sim_request){ 1.0, 1, 100, 10000 };
    w->reqs[2] = (struct thaw_sched_sim_request){ 30.0, 2, 100, 10 };
    w->duration_s = 30;
    for (int p = THAW_SCHED_SIM_SLLM; p <= THAW_SCHED_SIM_THAW; p++) {
        struct thaw_sched_sim_opts o = { .policy = p, .seed = 1, .ssd_replicas = 1 };
        o.cluster.n_hosts = 2;
        o.cluster.gpus_per_host = 2;
        struct thaw_sched_sim_result r;
        CHECK_OK(thaw_sched_sim_run(w, &o, &r));
        check_sane(w, &r);
        CHECK_EQ(r.n_migrations, 1);
        /* The jobs run ~100 s; the 34B starts after a migration and a load. */
        CHECK(r.startup_p99 < 60);
        CHECK(r.e2e_p99 < 115);
    }
    /* Random never migrates (it may or may not put both jobs on one host). */
    struct thaw_sched_sim_opts o = { .policy = THAW_SCHED_SIM_RANDOM,
                                     .seed = 1,
                                     .ssd_replicas = 1 };
    o.cluster.n_hosts = 2;
    o.cluster.gpus_per_host = 2;
    struct thaw_sched_sim_result r;
    CHECK_OK(thaw_sched_sim_run(w, &o, &r));
    check_sane(w, &r);
    CHECK_EQ(r.n_migrations, 0);
    thaw_sched_sim_workload_free(w);
}

/* Without noise and with EWMA, the estimator's prediction of each load is
 * close; with its default bandwidths (no EWMA) it is far off, because the
 * simulated devices are faster than those defaults. */
static void t_estimator_error(void)
{
    struct thaw_sched_sim_workload *w = synth(1, 20, 32, 11);
    struct thaw_sched_sim_opts o = { .policy = THAW_SCHED_SIM_SLLM, .seed = 3, .noise_sigma = -1 };
    o.cluster.n_hosts = 4;
    o.cluster.gpus_per_host = 4;
    struct thaw_sched_sim_result learned, fixed;
    CHECK_OK(thaw_sched_sim_run(w, &o, &learned));
    o.no_ewma = 1;
    CHECK_OK(thaw_sched_sim_run(w, &o, &fixed));
    CHECK(learned.est_n > 20);
    CHECK(learned.est_mdape < 0.15);
    CHECK(fixed.est_mdape > learned.est_mdape);
    thaw_sched_sim_workload_free(w);
}

/* Thaw's reload-weighted eviction value (THAW_SCHED_SIM_OFF_TAIL): on a
 * mixed 7B-70B catalog it keeps the 70B checkpoints in DRAM, so far fewer
 * of their requests wait for a ~23 s SSD load, and the P99 drops. The
 * per-request detail says which tier each request's load came from. */
static void t_tail_weighted_eviction(void)
{
    struct thaw_sched_sim_workload *w = synth(3, 20, 64, 1);
    struct thaw_sched_sim_req_detail *d = thaw_calloc(w->n_reqs, sizeof *d);
    CHECK(d != NULL);
    size_t ssd70[2];
    double p99[2];
    for (int off = 0; off < 2; off++) {
        struct thaw_sched_sim_opts o = { .policy = THAW_SCHED_SIM_THAW, .seed = 1, .details = d };
        /* Part 4 alone: the eviction-cost placement (part 6) also keeps
         * big models on their GPUs and would blur the comparison. */
        o.thaw_off = THAW_SCHED_SIM_OFF_EVCOST | (off ? THAW_SCHED_SIM_OFF_TAIL : 0);
        struct thaw_sched_sim_result r;
        CHECK_OK(thaw_sched_sim_run(w, &o, &r));
        check_sane(w, &r);
        fprintf(stderr, "off=%d p99 %.2f s\n", off, r.startup_p99);
        ssd70[off] = 0;
        for (size_t i = 0; i < w->n_reqs; i++) {
            CHECK(d[i].startup_s >= 0 && d[i].pending_s <= d[i].startup_s + 1e-9);
            CHECK(d[i].load_s <= d[i].startup_s + 1e-9);
            if (w->models[w->reqs[i].model].params_b == 70 && d[i].load_s > 0 &&
                d[i].tier == THAW_SCHED_TIER_SSD)
                ssd70[off]++;
        }
        p99[off] = r.startup_p99;
    }
    fprintf(stderr, "70B loads from SSD: %zu with part 4, %zu without\n", ssd70[0], ssd70[1]);
    CHECK(2 * ssd70[0] < ssd70[1]);
    CHECK(p99[0] < p99[1]);
    thaw_free(d);
    thaw_sched_sim_workload_free(w);
}

/* Thaw's wait-and-stage (THAW_SCHED_SIM_OFF_STAGE). Model X's checkpoint
 * is on host 0's SSD only; host 0's GPU runs model K for a few more
 * seconds, host 1 is idle but would fetch X over a slow network. Thaw
 * waits for host 0's GPU and stages X from SSD into DRAM meanwhile, then
 * copies DRAM -> GPU; sllm and Thaw without staging load X remotely. */
static void t_wait_and_stage(void)
{
    struct thaw_sched_sim_workload *w = NULL;
    CHECK_OK(thaw_sched_sim_workload_alloc(3, 3, &w));
    for (size_t m = 0; m < 3; m++) {
        w->models[m] = (struct thaw_sched_sim_model){
            .params_b = 7,
            .bytes = 14000000000ull,
            .n_gpus = 1,
            .prefill_tok_s = 10000,
            .decode_s_per_tok = 0.01,
        };
    }
    /* One SSD replica: models 0 (X) and 2 (K) on host 0, model 1 (J) on
     * host 1. J ends at ~2.5 s and leaves host 1 idle; K runs to ~7.5 s. */
    w->reqs[0] = (struct thaw_sched_sim_request){ 0.0, 2, 100, 500 };
    w->reqs[1] = (struct thaw_sched_sim_request){ 0.0, 1, 100, 10 };
    w->reqs[2] = (struct thaw_sched_sim_request){ 4.0, 0, 100, 500 };
    w->duration_s = 4;
    struct thaw_sched_sim_req_detail d[3];
    double x_startup[3];
    for (int v = 0; v < 3; v++) {
        struct thaw_sched_sim_opts o = {
            .policy = v == 0 ? THAW_SCHED_SIM_SLLM : THAW_SCHED_SIM_THAW,
            .seed = 1,
            .ssd_replicas = 1,
            .noise_sigma = -1,
            .details = d,
        };
        o.thaw_off = v == 1 ? THAW_SCHED_SIM_OFF_STAGE : 0;
        o.cluster.n_hosts = 2;
        o.cluster.gpus_per_host = 1;
        o.cluster.nic_bps = 0.5e9;
        o.cluster.store_bps = 0.5e9;
        struct thaw_sched_sim_result r;
        CHECK_OK(thaw_sched_sim_run(w, &o, &r));
        check_sane(w, &r);
        x_startup[v] = d[2].startup_s;
        CHECK_EQ(r.n_staged, v == 2 ? 1 : 0);
        CHECK_EQ(r.n_migrations, 0);
        if (v == 2) {
            CHECK_EQ(d[2].how, THAW_SCHED_SIM_HOW_STAGED);
            CHECK_EQ(d[2].tier, THAW_SCHED_TIER_DRAM);
            CHECK(d[2].gpu_wait_s > 2.5);
        } else {
            CHECK_EQ(d[2].tier, THAW_SCHED_TIER_REMOTE);
        }
    }
    /* Remote: 14 GB at 0.5 GB/s = 28 s. Staged: K's ~3.5 s + 0.56 s. */
    CHECK(x_startup[0] > 20 && x_startup[1] > 20);
    CHECK(x_startup[2] < 6);
    thaw_sched_sim_workload_free(w);
}

/* Thaw's eviction-cost placement (THAW_SCHED_SIM_OFF_EVCOST). Two hosts
 * of one GPU hold every checkpoint on SSD. Model A runs on host 0 and goes
 * idle (kept alive). Model B arrives: both hosts would load it from SSD in
 * the same estimated time, host 0 by evicting idle A, host 1 on its free
 * GPU. Without the eviction cost the tie goes to host 0, and A's next
 * request must reload; with it B goes to host 1 and A's request is warm.
 * The per-request detail names the eviction and when it happened. */
static void t_evict_cost_placement(void)
{
    struct thaw_sched_sim_workload *w = NULL;
    CHECK_OK(thaw_sched_sim_workload_alloc(2, 3, &w));
    for (size_t m = 0; m < 2; m++) {
        w->models[m] = (struct thaw_sched_sim_model){
            .params_b = 7,
            .bytes = 14000000000ull,
            .n_gpus = 1,
            .prefill_tok_s = 10000,
            .decode_s_per_tok = 0.01,
        };
    }
    w->reqs[0] = (struct thaw_sched_sim_request){ 0.0, 0, 100, 10 };
    w->reqs[1] = (struct thaw_sched_sim_request){ 10.0, 1, 100, 10 };
    w->reqs[2] = (struct thaw_sched_sim_request){ 20.0, 0, 100, 10 };
    w->duration_s = 20;
    struct thaw_sched_sim_req_detail d[3];
    for (int v = 0; v < 3; v++) {
        struct thaw_sched_sim_opts o = {
            .policy = v == 0 ? THAW_SCHED_SIM_SLLM : THAW_SCHED_SIM_THAW,
            .seed = 1,
            .noise_sigma = -1,
            .no_ewma = 1, /* both hosts priced at the estimator's defaults: a tie */
            .details = d,
        };
        o.thaw_off = v == 1 ? THAW_SCHED_SIM_OFF_EVCOST : 0;
        o.cluster.n_hosts = 2;
        o.cluster.gpus_per_host = 1;
        struct thaw_sched_sim_result r;
        CHECK_OK(thaw_sched_sim_run(w, &o, &r));
        check_sane(w, &r);
        CHECK_EQ(d[1].free_hosts, 1);
        if (v == 2) {
            CHECK_EQ(r.n_cold_starts, 2);
            CHECK_EQ(d[1].evicted, 0);
            CHECK_EQ(d[2].how, THAW_SCHED_SIM_HOW_WARM);
            CHECK(d[2].startup_s == 0);
        } else {
            CHECK_EQ(r.n_cold_starts, 3);
            CHECK_EQ(d[1].evicted, 1);
            CHECK_EQ(d[2].how, THAW_SCHED_SIM_HOW_COLD);
            CHECK_EQ(d[2].gone_why, THAW_SCHED_SIM_GONE_EVICTED);
            CHECK_NEAR(d[2].gone_s, 10.0, 1e-6);
            CHECK(d[2].startup_s > 0.5); /* 14 GB DRAM -> GPU at 25 GB/s */
        }
        CHECK_EQ(d[0].gone_why, THAW_SCHED_SIM_GONE_NONE);
        CHECK(d[0].gone_s < 0);
    }
    thaw_sched_sim_workload_free(w);
}

/* A model that needs more GPUs than a host has is refused. */
static void t_too_big(void)
{
    struct thaw_sched_sim_workload *w = synth(1, 1, 8, 1);
    struct thaw_sched_sim_opts o = { .policy = THAW_SCHED_SIM_RANDOM };
    o.cluster.gpus_per_host = 2; /* model 6 is a 70B on 4 GPUs */
    struct thaw_sched_sim_result r;
    CHECK_FAILS(thaw_sched_sim_run(w, &o, &r), THAW_EINVAL);
    thaw_sched_sim_workload_free(w);
}

/* Every allocation can fail: -ENOMEM, no crash (ASan checks leaks). */
static void t_alloc_failures(void)
{
    struct thaw_sched_sim_workload *w = synth(2, 2, 8, 1);
    for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++) {
        struct thaw_sched_sim_opts o = { .policy = p, .seed = 1 };
        o.cluster.n_hosts = 2;
        o.cluster.gpus_per_host = 4;
        for (long n = 0;; n++) {
            struct thaw_sched_sim_result r;
            thaw_alloc_fail_after(n);
            int rc = thaw_sched_sim_run(w, &o, &r);
            thaw_alloc_fail_after(-1);
            if (rc == 0) {
                check_sane(w, &r);
                break;
            }
            CHECK_EQ(rc, -ENOMEM);
            CHECK(n < 10000);
        }
    }
    for (long n = 0;; n++) {
        struct thaw_sched_sim_workload *x = NULL;
        struct thaw_sched_sim_trace_opts to = {
            .trace = "synthetic",
            .lengths = "fixed",
            .minutes = 1,
            .seed = 1,
        };
        thaw_alloc_fail_after(n);
        int rc = thaw_sched_sim_workload_load(&to, &x);
        thaw_alloc_fail_after(-1);
        if (rc == 0) {
            thaw_sched_sim_workload_free(x);
            break;
        }
        CHECK_EQ(rc, -ENOMEM);
        CHECK(x == NULL);
    }
    thaw_sched_sim_workload_free(w);
}

/* The real traces, when <repo>/../shared/data/traces is there. */
static void t_real_traces(void)
{
    const char *src = getenv("THAW_SOURCE_DIR");
    const char *env = getenv("THAW_SHARED");
    char shared[4096];
    if (env && env[0])
        snprintf(shared, sizeof shared, "%s", env);
    else if (src && src[0])
        snprintf(shared, sizeof shared, "%s/../shared", src);
    else
        snprintf(shared, sizeof shared, "../shared");
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/data/traces/azure_llm_2023", shared);
    if (access(probe, R_OK) != 0)
        SKIP("no shared traces (set THAW_SHARED)");
    static const char *traces[] = { "azure-code", "azure-conv", "azure-fn" };
    for (size_t i = 0; i < 3; i++) {
        struct thaw_sched_sim_trace_opts to = {
            .shared_dir = shared,
            .trace = traces[i],
            .minutes = 5,
            .seed = 1,
        };
        struct thaw_sched_sim_workload *w = NULL;
        CHECK_OK(thaw_sched_sim_workload_load(&to, &w));
        CHECK(w->n_reqs > 50);
        CHECK(w->duration_s < 300);
        for (size_t r = 1; r < w->n_reqs; r++)
            CHECK(w->reqs[r].arrival_s >= w->reqs[r - 1].arrival_s);
        struct thaw_sched_sim_opts o = { .policy = THAW_SCHED_SIM_THAW, .seed = 1 };
        struct thaw_sched_sim_result r;
        CHECK_OK(thaw_sched_sim_run(w, &o, &r));
        check_sane(w, &r);
        thaw_sched_sim_workload_free(w);
    }
    struct thaw_sched_sim_trace_opts bad = { .shared_dir = shared, .trace = "nope" };
    struct thaw_sched_sim_workload *w = NULL;
    CHECK_FAILS(thaw_sched_sim_workload_load(&bad, &w), THAW_EINVAL);
}

static const struct test_case cases[] = {
    { "policy_names", t_policy_names },
    { "catalog", t_catalog },
    { "deterministic", t_deterministic },
    { "all_policies_complete", t_all_policies_complete },
    { "startup_optimised_beats_random", t_startup_optimised_beats_random },
    { "migration", t_migration },
    { "tail_weighted_eviction", t_tail_weighted_eviction },
    { "wait_and_stage", t_wait_and_stage },
    { "evict_cost_placement", t_evict_cost_placement },
    { "estimator_error", t_estimator_error },
    { "too_big", t_too_big },
    { "alloc_failures", t_alloc_failures },
    { "real_traces", t_real_traces },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
