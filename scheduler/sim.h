/*
 * sim.h - `thaw simulate`: a discrete-event simulator of a GPU cluster that
 * serves LLM requests with the scheduler's own estimator and ranking
 * (thaw_sched_estimate, thaw_sched_rank, thaw_sched_ewma_bw). Workloads come
 * from the public traces (sim_trace.c) or a synthetic generator. Used by
 * cli/cli_simulate.c and tests/scheduler/test_sim.c; these declarations may
 * move into thaw_scheduler.h once the simulator has an outside caller there.
 */
#ifndef THAW_SCHED_SIM_H
#define THAW_SCHED_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "scheduler/thaw_scheduler.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Placement policies, in table order. */
enum thaw_sched_sim_policy {
    THAW_SCHED_SIM_RANDOM,    /* random host among those with room */
    THAW_SCHED_SIM_RR,        /* round-robin over hosts with room */
    THAW_SCHED_SIM_OPENWHISK, /* home invoker = hash(model), step forward when full */
    THAW_SCHED_SIM_SHEPHERD,  /* round-robin + preempt the youngest running instance */
    THAW_SCHED_SIM_SLLM,      /* ServerlessLLM: least estimated startup + live migration */
    THAW_SCHED_SIM_THAW,      /* SLLM + histogram keep-alive, eviction, queueing, staging */
    THAW_SCHED_SIM_N_POLICIES,
};

/* Name of a policy ("random", "rr", "openwhisk", "shepherd", "sllm", "thaw"). */
const char *thaw_sched_sim_policy_name(enum thaw_sched_sim_policy p);

/* The policy called name, or -1. */
int thaw_sched_sim_policy_parse(const char *name);

/* One model of the catalog. */
struct thaw_sched_sim_model {
    double params_b;         /* parameters, billions */
    uint64_t bytes;          /* checkpoint bytes: params * 2 (bf16) */
    int n_gpus;              /* GPUs (= checkpoint partitions) per instance */
    double prefill_tok_s;    /* prefill tokens/s of one instance */
    double decode_s_per_tok; /* seconds per output token */
};

/* One request. */
struct thaw_sched_sim_request {
    double arrival_s; /* seconds from the start of the trace */
    uint32_t model;   /* index into the catalog */
    uint32_t in_tokens;
    uint32_t out_tokens;
};

/* A workload: a catalog and requests sorted by arrival. Owned by whoever
 * built it; released with thaw_sched_sim_workload_free. */
struct thaw_sched_sim_workload {
    char name[64];
    size_t n_models;
    struct thaw_sched_sim_model *models;
    size_t n_reqs;
    struct thaw_sched_sim_request *reqs;
    double duration_s; /* span of the arrivals */
};

/* The cluster; zero means the default (documented in sim.c and simulate.md). */
struct thaw_sched_sim_cluster {
    int n_hosts;         /* default 8 */
    int gpus_per_host;   /* default 8 */
    uint64_t gpu_bytes;  /* default 80 GB (H100) */
    uint64_t dram_bytes; /* checkpoint pool in host DRAM, default 256 GB */
    uint64_t ssd_bytes;  /* checkpoint cache on local NVMe, default 2 TB */
    double ssd_bps;      /* per host, default 6 GB/s */
    double pcie_bps;     /* DRAM -> GPU per GPU, default 25 GB/s (PCIe 4 x16) */
    double nic_bps;      /* per host, default 25 Gb/s */
    double store_bps;    /* remote store aggregate, default 100 Gb/s */
};

/* Parts of the Thaw policy that thaw_off can switch off (ablation). */
#define THAW_SCHED_SIM_OFF_HIST 1u  /* hybrid-histogram keep-alive and pre-warm */
#define THAW_SCHED_SIM_OFF_EVICT 2u /* cost-aware eviction (else LRU) */
#define THAW_SCHED_SIM_OFF_QUEUE 4u /* queue on an instance instead of scaling out */
#define THAW_SCHED_SIM_OFF_TAIL 8u   /* eviction value weighted by reload length (else linear) */
#define THAW_SCHED_SIM_OFF_STAGE 16u /* wait for GPUs on a chosen host, staging into DRAM */
#define THAW_SCHED_SIM_OFF_EVCOST 32u /* placement charged for the idle instances it evicts */

/* How a request got the instance it first ran on (per-request detail). */
enum thaw_sched_sim_how {
    THAW_SCHED_SIM_HOW_WARM,    /* a ready instance had a free slot on arrival */
    THAW_SCHED_SIM_HOW_SLOT,    /* waited for a slot of a ready instance */
    THAW_SCHED_SIM_HOW_JOIN,    /* joined an instance loading for earlier requests */
    THAW_SCHED_SIM_HOW_COLD,    /* its own new instance */
    THAW_SCHED_SIM_HOW_QUEUE,   /* Thaw: queued on an instance instead of scaling out */
    THAW_SCHED_SIM_HOW_MIGRATE, /* a new instance on GPUs freed by a live migration */
    THAW_SCHED_SIM_HOW_PREWARM, /* an instance loaded ahead by the keep-alive policy */
    THAW_SCHED_SIM_HOW_STAGED,  /* Thaw: a new instance that waited for GPUs, staging into DRAM */
    THAW_SCHED_SIM_N_HOW,
};

/* Why the model's previous instance left its GPUs (per-request detail). */
enum thaw_sched_sim_gone {
    THAW_SCHED_SIM_GONE_NONE,      /* no instance of the model had been unloaded yet */
    THAW_SCHED_SIM_GONE_KEEPALIVE, /* its keep-alive window ended */
    THAW_SCHED_SIM_GONE_EVICTED,   /* idle, and its GPUs were taken for another model */
    THAW_SCHED_SIM_GONE_RELEASED,  /* Thaw: released at idle until its pre-warm time */
    THAW_SCHED_SIM_GONE_PREEMPTED, /* Shepherd: preempted */
    THAW_SCHED_SIM_GONE_MIGRATED,  /* moved away by a live migration */
    THAW_SCHED_SIM_N_GONE,
};

/* Where one request's startup latency went, for tail analysis. Seconds. */
struct thaw_sched_sim_req_detail {
    double startup_s;
    double pending_s;  /* in the model's queue: no host had room for a new instance */
    double attach_s;   /* arrival -> given to the instance it first ran on */
    double gpu_wait_s; /* after attach: that instance waiting for GPUs (migration) */
    double load_s;     /* after attach: that instance loading */
    double load_total_s; /* that instance's whole load (0 if it never loaded) */
    double contention; /* mean transfers sharing the device during that load */
    int how;           /* enum thaw_sched_sim_how */
    int tier;          /* enum thaw_sched_tier of that instance's load */
    int dram_hosts;    /* hosts holding the checkpoint in DRAM when that instance was placed */
    int dram_room;     /* of those, hosts that had GPU room for it then */
    double gone_s;     /* placement - the model's last unload from GPUs (-1: none yet) */
    int gone_why;      /* enum thaw_sched_sim_gone of that unload */
    int evicted;       /* idle instances of other models whose GPUs the placement took */
    int free_hosts;    /* hosts that had enough unowned GPUs for it then */
};

/* Options of one run; zero means default. */
struct thaw_sched_sim_opts {
    struct thaw_sched_sim_cluster cluster;
    enum thaw_sched_sim_policy policy;
    uint64_t seed;
    int max_batch;       /* concurrent requests per instance, default 8 */
    double keep_alive_s; /* fixed keep-alive of the baselines, default 600 */
    int ssd_replicas;    /* initial checkpoint copies on local SSDs, default 2 */
    double noise_sigma;  /* lognormal sigma of each transfer's speed, default 0.15 */
    int no_ewma;         /* 1: the estimator keeps its default bandwidths */
    double ewma_alpha;   /* default 0.2 */
    unsigned thaw_off;   /* THAW_SCHED_SIM_OFF_* bits, for ablation */
    struct thaw_sched_sim_req_detail *details; /* NULL, or n_reqs entries the run fills;
                                                  borrowed */
};

/* The outcome of one run. Latencies are seconds. */
struct thaw_sched_sim_result {
    enum thaw_sched_sim_policy policy;
    size_t n_requests;
    size_t n_completed;
    size_t n_warm;        /* requests served by an instance that was ready */
    size_t n_cold_starts; /* instance loads started for waiting requests */
    size_t n_prewarms;    /* loads started by the keep-alive policy */
    size_t n_prefetches;  /* SSD/remote -> DRAM prefetches */
    size_t n_migrations;
    size_t n_preemptions; /* requests restarted */
    size_t n_queued;      /* Thaw: queued on an instance instead of scaling out */
    size_t n_staged;      /* Thaw: new instances that waited for GPUs, staging into DRAM */
    size_t tier_loads[4]; /* demand loads by thaw_sched_tier */
    double startup_p50, startup_p99, startup_mean;
    double e2e_p50, e2e_p99;
    double gpu_s;      /* GPU-seconds held by instances (loading, busy, idle) */
    double busy_gpu_s; /* GPU-seconds with at least one running request */
    size_t est_n;      /* loads compared with their estimate */
    double est_mdape;  /* median |predicted - actual| / actual */
    double est_bias;   /* mean (predicted - actual) / actual */
    double sim_end_s;
};

/*
 * Simulate workload w under o and fill *out. Deterministic for a given seed.
 * Returns 0, THAW_EINVAL (a model needs more GPUs than a host has) or -ENOMEM.
 * Thread-safe (no shared state).
 */
int thaw_sched_sim_run(const struct thaw_sched_sim_workload *w, const struct thaw_sched_sim_opts *o,
                       struct thaw_sched_sim_result *out) THAW_MUST_CHECK;

/*
 * Fill models[0..n) with the default catalog: 7B, 13B, 34B and 70B models in
 * a 4:3:2:1 mix, bytes = params * 2, the fewest power-of-two GPUs of
 * gpu_bytes (0: 80 GB) that hold the weights with 20% left for the KV cache,
 * and H100-like speeds.
 */
void thaw_sched_sim_models_default(struct thaw_sched_sim_model *models, size_t n,
                                   uint64_t gpu_bytes);

/* Where a trace-based workload comes from. */
struct thaw_sched_sim_trace_opts {
    const char *shared_dir; /* holds data/traces/ */
    const char *trace;      /* azure-code | azure-conv | azure-fn | synthetic */
    double minutes;         /* keep arrivals before this (0: all) */
    size_t n_models;        /* catalog size, default 64 */
    double zipf_s;          /* model popularity for the LLM traces, default 1.0 */
    double fn_rps;          /* azure-fn: target mean requests/s after thinning, default 4 */
    int fn_sample;          /* azure-fn: 100 or 500 functions, default 500 */
    const char *lengths;    /* azure-fn, synthetic: sharegpt (default) | gsm8k | fixed */
    double synth_rps;       /* synthetic: Poisson rate, default 2 */
    uint64_t seed;
    uint64_t gpu_bytes; /* for the catalog's GPU counts, 0: 80 GB */
};

/*
 * Build a workload from o (reads CSVs under o->shared_dir/data/traces unless
 * the trace is synthetic with fixed lengths). *out is set only on success
 * and released with thaw_sched_sim_workload_free. Returns 0, THAW_EINVAL,
 * THAW_EFORMAT, -errno from open, or -ENOMEM.
 */
int thaw_sched_sim_workload_load(const struct thaw_sched_sim_trace_opts *o,
                                 struct thaw_sched_sim_workload **out) THAW_MUST_CHECK;

/* Allocate an empty workload for n_models and n_reqs (filled by the caller). */
int thaw_sched_sim_workload_alloc(size_t n_models, size_t n_reqs,
                                  struct thaw_sched_sim_workload **out) THAW_MUST_CHECK;

/* Free a workload. NULL is a no-op. */
void thaw_sched_sim_workload_free(struct thaw_sched_sim_workload *w);

#ifdef __cplusplus
}
#endif
#endif /* THAW_SCHED_SIM_H */
