/*
 * thaw_scheduler.h - the public API of Thaw's scheduler library: the schema
 * migrator for the PostgreSQL locality store, the startup-time estimator
 * (pure functions over a host's state, no PostgreSQL), host ranking, and the
 * bandwidth and prediction-error trackers that feed the estimator.
 */
#ifndef THAW_SCHEDULER_H
#define THAW_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "common/thaw_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- migrations */

/* The most migrations one report lists. */
#define THAW_SCHED_MAX_MIGRATIONS 64

/* What thaw_sched_migrate did. */
struct thaw_sched_migrate_report {
    int n_applied;                              /* migrations applied by this call */
    int applied[THAW_SCHED_MAX_MIGRATIONS];     /* their versions, ascending */
    int version;                                /* highest version in the database afterwards */
    int n_known;                                /* migrations built into this binary */
};

/*
 * Apply the migrations built into this binary (schemas/migrations/) that the
 * database at pg_url (a libpq URI or key=value string) lacks. Each runs in its
 * own transaction under a transaction-level advisory lock, so concurrent
 * migrators are safe and a second run is a no-op. rep (may be NULL) receives
 * what was done. Returns 0, or THAW_EPG (connection or SQL error, named in
 * thaw_errmsg) / -ENOMEM. Thread-safe (one connection per call).
 */
int thaw_sched_migrate(const char *pg_url, struct thaw_sched_migrate_report *rep) THAW_MUST_CHECK;

/* ---------------------------------------------------------------- estimator */

/* Where a start-up's bytes come from; the farthest tier used names it. */
enum thaw_sched_tier {
    THAW_SCHED_TIER_WARM,   /* a warm instance serves it: no load */
    THAW_SCHED_TIER_DRAM,   /* host DRAM -> GPU */
    THAW_SCHED_TIER_SSD,    /* local SSD -> GPU */
    THAW_SCHED_TIER_REMOTE, /* network (object store or peer) -> GPU */
};

/* Name of a tier ("warm", "dram", "ssd", "remote"). Never NULL. */
const char *thaw_sched_tier_name(enum thaw_sched_tier t);

/* One host's state, as the estimator sees it for one checkpoint. Strings are
 * borrowed. A bandwidth of 0 means "not measured": the default applies. */
struct thaw_sched_host {
    const char *address;           /* for reports only */
    double dram_to_gpu_bps;        /* measured DRAM -> GPU bandwidth, bytes/s */
    double ssd_bps;                /* measured SSD -> GPU bandwidth, bytes/s */
    double network_bps;            /* measured remote -> GPU bandwidth, bytes/s */
    double queue_wait_s;           /* expected wait before this host starts the request */
    int warm;                      /* a ready instance of the model runs here */
    uint64_t ckpt_dram_bytes;      /* bytes of the checkpoint resident in DRAM */
    uint64_t ckpt_ssd_bytes;       /* bytes of the checkpoint on local SSD */
    uint64_t gpu_free_bytes;       /* free GPU memory */
    uint64_t running_tokens;       /* tokens (in + out) of the sequences to move off the GPU */
    double gpu_release_s;          /* expected time until the GPU frees by itself; 0 = unknown */
    double heartbeat_age_s;        /* seconds since the host's last heartbeat */
};

/*
 * Tunables; zero means the default below. The migration cost model is the
 * re-prefill of the running sequences' KV cache on their new host plus a
 * fixed hand-off: migrate_s = migrate_s_per_token * tokens + migrate_base_s.
 * Defaults: 25 us/token (about 40k tokens/s of prefill for a 7B model on one
 * H100) and 50 ms (stop, ship the token ids, resume). Default bandwidths are
 * conservative: 20 GB/s DRAM -> GPU (PCIe 4 x16), 3 GB/s NVMe, 1.25 GB/s
 * (10 Gb/s) network. Hosts whose heartbeat is older than max_heartbeat_age_s
 * (default 30 s) are not ranked.
 */
struct thaw_sched_params {
    double migrate_s_per_token;
    double migrate_base_s;
    double default_dram_to_gpu_bps;
    double default_ssd_bps;
    double default_network_bps;
    double max_heartbeat_age_s;
};

#define THAW_SCHED_MIGRATE_S_PER_TOKEN 25e-6
#define THAW_SCHED_MIGRATE_BASE_S 0.05
#define THAW_SCHED_DRAM_TO_GPU_BPS 20e9
#define THAW_SCHED_SSD_BPS 3e9
#define THAW_SCHED_NETWORK_BPS 1.25e9
#define THAW_SCHED_MAX_HEARTBEAT_AGE_S 30.0

/* An estimate of the time until a request's first token can start. */
struct thaw_sched_estimate {
    double startup_s;              /* load_s + queue_s + gpu_s */
    double load_s;                 /* moving the checkpoint into the GPU */
    double queue_s;                /* the host's queue wait */
    double gpu_s;                  /* freeing GPU memory: migration or waiting, 0 if free */
    enum thaw_sched_tier tier;     /* farthest tier the bytes come from */
    int migrate;                   /* 1: gpu_s is a migration of running sequences */
    char reason[128];              /* e.g. "dram 14.0 GiB/20.0 GB/s + queue 0.5s" */
};

/*
 * Estimate the start-up time of a checkpoint of ckpt_bytes on host h. Bytes
 * come from the nearest tier that holds them: DRAM first, then SSD, the rest
 * from the network, and the tiers are summed (a conservative, sequential
 * model). A warm host loads nothing and needs no GPU memory. When GPU free
 * memory is below ckpt_bytes, the cheaper of migrating the running sequences
 * and waiting for the GPU (gpu_release_s, when known) is added. p may be
 * NULL (all defaults). Pure; thread-safe.
 */
void thaw_sched_estimate(const struct thaw_sched_host *h, uint64_t ckpt_bytes,
                         const struct thaw_sched_params *p, struct thaw_sched_estimate *out);

/*
 * Like thaw_sched_estimate, for a host that must first wait for its GPUs
 * (gpu_free_bytes < ckpt_bytes, gpu_release_s known and cheaper than a
 * migration): the host agent stages the bytes that are not in DRAM into its
 * DRAM pool during the wait, so startup_s = max(gpu_s, queue_s + staging)
 * + the whole checkpoint's DRAM -> GPU copy, instead of the sum. Any other
 * case is thaw_sched_estimate's. p may be NULL. Pure; thread-safe.
 */
void thaw_sched_estimate_staged(const struct thaw_sched_host *h, uint64_t ckpt_bytes,
                                const struct thaw_sched_params *p,
                                struct thaw_sched_estimate *out);

/* One ranked host: its index in the input array and its estimate. */
struct thaw_sched_choice {
    size_t host;
    struct thaw_sched_estimate est;
};

/*
 * Rank n_hosts hosts for a checkpoint of ckpt_bytes: estimate each, skip
 * those with a stale heartbeat, and write the rest into out (room for
 * n_hosts) sorted by startup_s, ties by input order. The first
 * THAW_SCHED_RANK_REASONS get their est.reason; the reason of the others
 * is "" (their numbers are all set). Returns the number written. Pure;
 * thread-safe.
 */
#define THAW_SCHED_RANK_REASONS 16

size_t thaw_sched_rank(const struct thaw_sched_host *hosts, size_t n_hosts, uint64_t ckpt_bytes,
                       const struct thaw_sched_params *p, struct thaw_sched_choice *out);

/* ---------------------------------------------------------------- feedback */

/*
 * Exponentially weighted moving average of a tier's bandwidth after a load
 * that moved bytes in seconds: alpha * (bytes / seconds) + (1 - alpha) * cur.
 * alpha outside (0, 1] means 0.2. A first sample (cur <= 0) is taken as is;
 * a sample with no bytes or no time leaves cur unchanged. Returns bytes/s.
 */
double thaw_sched_ewma_bw(double cur_bps, uint64_t bytes, double seconds, double alpha);

/* Running accuracy of the estimator. Zero-initialise. */
struct thaw_sched_error_stats {
    uint64_t n;                    /* samples */
    double mean_rel;               /* mean of (predicted - actual) / actual: bias */
    double mean_abs_rel;           /* mean of |relative error| */
    double max_abs_rel;            /* worst |relative error| */
};

/*
 * Record one prediction against its measured outcome (both seconds) and
 * return the relative error (predicted - actual) / actual. An actual <= 0 is
 * not recorded and returns 0. Owner thread.
 */
double thaw_sched_error_add(struct thaw_sched_error_stats *s, double predicted_s, double actual_s);

/* ---------------------------------------------------------------- placement */

/* A connection to the PostgreSQL locality store. Opaque. */
struct thaw_sched_db;

/*
 * Connect to the locality store at pg_url (a libpq URI or key=value
 * string). *out is set only on success and is released with
 * thaw_sched_db_close. Returns 0, THAW_EINVAL (empty URL), THAW_EPG (cannot
 * connect, named in thaw_errmsg) or -ENOMEM. Thread-safe; the handle itself
 * is used by one thread at a time (one connection).
 */
int thaw_sched_db_open(const char *pg_url, struct thaw_sched_db **out) THAW_MUST_CHECK;

/* Disconnect and free db. NULL is a no-op. */
void thaw_sched_db_close(struct thaw_sched_db *db);

/* The most ranked candidates one placement reports. */
#define THAW_SCHED_PLACE_MAX_CANDIDATES 8

/* Default lifetime of a reservation: the instance should start by then. */
#define THAW_SCHED_RESERVATION_TTL_S 60.0

/* Placement tunables; zero means the default. */
struct thaw_sched_place_opts {
    struct thaw_sched_params params;   /* estimator constants and staleness bound */
    double reservation_ttl_s;          /* reservation lifetime, default 60 s */
    uint64_t kv_bytes_per_token;       /* GPU bytes per expected token (KV cache), default 0 */
};

/* One ranked host. */
struct thaw_sched_candidate {
    int64_t host_id;                   /* hosts.id */
    char address[128];                 /* hosts.address, truncated if longer */
    char name[128];                    /* hosts.name ("" when unnamed), truncated */
    struct thaw_sched_estimate est;
};

/* The outcome of a placement. */
struct thaw_sched_placement {
    int64_t host_id;                   /* the chosen host (candidates[0]) */
    char address[128];
    int64_t reservation_id;            /* reservations.id held for it */
    int64_t checkpoint_id;             /* checkpoints.id */
    uint64_t gpu_bytes;                /* GPU memory reserved on the host */
    struct thaw_sched_estimate est;    /* its estimate: startup_s, tier, reason */
    size_t n_live;                     /* live hosts considered */
    size_t n_candidates;               /* hosts with room, best first (at most the max) */
    struct thaw_sched_candidate candidates[THAW_SCHED_PLACE_MAX_CANDIDATES];
};

/*
 * Choose a host for the checkpoint registered as checkpoint_uri and
 * reserve GPU memory on it, all in one transaction. Placements serialise on
 * one transaction-level advisory lock, so they never double-book a GPU;
 * then it reads the live hosts (heartbeat within
 * o->params.max_heartbeat_age_s) and, for each host, GPU free bytes less
 * its unexpired reservations, and the checkpoint's ready replicas in DRAM
 * and on SSD (a ready or busy instance of it makes the host warm). Hosts
 * without room for the checkpoint plus expected_tokens *
 * o->kv_bytes_per_token (a warm host needs only the latter) are left out;
 * the rest are ranked with thaw_sched_rank and the best gets a reservation
 * row that expires after o->reservation_ttl_s.
 * Migrating running sequences to make room is not done here.
 * o may be NULL (defaults). *out is filled only on success.
 * Returns 0; THAW_ENOTFOUND when the checkpoint is not registered or no host
 * is live; THAW_ELIMIT when live hosts exist but none has room ("no
 * capacity"); THAW_EPG on a database error; THAW_EINVAL. Owner thread of db.
 */
int thaw_sched_place(struct thaw_sched_db *db, const char *checkpoint_uri,
                     uint64_t expected_tokens, const struct thaw_sched_place_opts *o,
                     struct thaw_sched_placement *out) THAW_MUST_CHECK;

/* Why a host can or cannot take a checkpoint, best first. */
enum thaw_sched_host_state {
    THAW_SCHED_HOST_OK,    /* live, with room: ranked */
    THAW_SCHED_HOST_FULL,  /* live, but not enough unreserved GPU memory */
    THAW_SCHED_HOST_STALE, /* heartbeat older than params.max_heartbeat_age_s */
};

/* One registered host, as thaw_sched_rank_hosts sees it. */
struct thaw_sched_host_rank {
    struct thaw_sched_candidate c;     /* id, address; c.est is valid only when OK */
    enum thaw_sched_host_state state;
    size_t order;                      /* rank among the OK hosts, 0 = best */
    double heartbeat_age_s;
    int64_t gpu_avail_bytes;           /* free GPU bytes less unexpired reservations */
    uint64_t need_bytes;               /* GPU bytes the checkpoint plus KV cache needs there */
};

/*
 * The read-only twin of thaw_sched_place, for the kube-scheduler extender:
 * every row of `hosts` with its state for the checkpoint registered as
 * checkpoint_uri (same liveness, room and estimate rules as placement, the
 * hosts read by one statement, so in one snapshot; nothing is locked or
 * reserved).
 * *out (released with thaw_free) holds *n_out entries: the OK hosts ranked
 * best first, then the FULL, then the STALE ones, each by id. Both are set
 * only on success. o may be NULL. Returns 0; THAW_ENOTFOUND when the
 * checkpoint is not registered; THAW_EPG; THAW_EINVAL; -ENOMEM. Owner
 * thread of db.
 */
int thaw_sched_rank_hosts(struct thaw_sched_db *db, const char *checkpoint_uri,
                          uint64_t expected_tokens, const struct thaw_sched_place_opts *o,
                          struct thaw_sched_host_rank **out, size_t *n_out) THAW_MUST_CHECK;

/* ---------------------------------------------------------------- host reports */

/* One GPU of a reporting host. */
struct thaw_sched_report_gpu {
    uint64_t total_bytes;
    uint64_t free_bytes;
};

/* A checkpoint's replica on the host. Strings are borrowed. */
struct thaw_sched_report_replica {
    const char *checkpoint;            /* checkpoint URI */
    uint64_t checkpoint_bytes;         /* its full size, to register it; 0 = unknown */
    const char *tier;                  /* "gpu", "dram" or "ssd" */
    const char *state;                 /* "loading", "ready", "evicting"; NULL = "ready" */
    uint64_t bytes;                    /* resident so far */
};

/* A running instance on the host, named by its agent. */
struct thaw_sched_report_instance {
    const char *name;                  /* unique on the host */
    const char *checkpoint;            /* the model's checkpoint URI */
    uint64_t checkpoint_bytes;         /* to register it; 0 = unknown */
    const char *state;                 /* starting, ready, busy, migrating, stopping */
    uint32_t n_running;                /* running sequences */
    uint64_t tokens_in;                /* summed over the running sequences */
    uint64_t tokens_out;
    int64_t reservation_id;            /* the placement it fulfils (deleted); 0 = none */
};

/* A load the host completed since its last report. */
struct thaw_sched_report_load {
    const char *id;                    /* the agent's load id: a retried report skips it */
    const char *checkpoint;            /* checkpoint URI */
    const char *tier;                  /* where the bytes came from: dram, ssd, peer, remote */
    uint64_t bytes;
    double ms;                         /* wall time of the load, > 0 */
};

/*
 * A host agent's report of its whole state. Replicas and instances are the
 * complete lists: rows of this host not listed are deleted. A bandwidth of
 * 0 keeps the stored value (the agent did not measure it). Strings and
 * arrays are borrowed.
 */
struct thaw_sched_report {
    const char *name;                  /* the host's identity (hosts.name), [A-Za-z0-9._:-]+ */
    const char *address;               /* hosts.address: host:port of its agent */
    size_t n_gpus;
    const struct thaw_sched_report_gpu *gpus;
    uint64_t dram_bytes, dram_used;    /* DRAM cache capacity and use */
    uint64_t ssd_bytes, ssd_used;      /* SSD cache capacity and use */
    double dram_to_gpu_bps, ssd_bps, network_bps;  /* the agent's own measurements */
    size_t n_replicas;
    const struct thaw_sched_report_replica *replicas;
    size_t n_instances;
    const struct thaw_sched_report_instance *instances;
    size_t n_loads;
    const struct thaw_sched_report_load *loads;
};

/* What a report changed. */
struct thaw_sched_report_result {
    int64_t host_id;
    int created;                       /* 1: the host was not registered before */
    size_t n_loads_new;                /* loads learned from (the others were seen before) */
    double dram_to_gpu_bps, ssd_bps, network_bps;  /* stored bandwidths afterwards */
    char field[96];                    /* on THAW_EINVAL: the field, e.g. "replicas[2].tier" */
};

/*
 * Apply a host's report in one transaction: upsert the host by name (a row
 * without a name but with this address is adopted; an unknown host is
 * created), set its GPUs (n_gpus, summed free and total memory), DRAM and
 * SSD use and the reported bandwidths, refresh its heartbeat, upsert its
 * replicas and instances and delete those no longer listed, delete the
 * reservations its instances fulfil, and fold each new completed load into
 * the tier's bandwidth EWMA (thaw_sched_ewma_bw, alpha 0.2; dram ->
 * dram_to_gpu_bps, ssd -> ssd_bps, peer and remote -> network_bps) after
 * recording it with the load time the estimator predicted before it. A
 * checkpoint not yet registered is registered with its checkpoint_bytes (a
 * ready replica's bytes when 0). Applying the same report twice leaves the
 * same state. err (may be NULL) receives each new load's prediction error
 * once the transaction commits. res may be NULL.
 * Returns 0; THAW_EINVAL naming the field (also in res->field) when the
 * report is malformed or names an unregistered checkpoint without its size,
 * or its address belongs to another host; THAW_EPG; -ENOMEM. Owner thread
 * of db.
 */
int thaw_sched_report_apply(struct thaw_sched_db *db, const struct thaw_sched_report *rep,
                            struct thaw_sched_error_stats *err,
                            struct thaw_sched_report_result *res) THAW_MUST_CHECK;

/*
 * Check rep without a database: the validation thaw_sched_report_apply does
 * first (a server answers 400 with it while PostgreSQL is down). Returns 0
 * or THAW_EINVAL with the field in res->field (res may be NULL). Pure;
 * thread-safe.
 */
int thaw_sched_report_check(const struct thaw_sched_report *rep,
                            struct thaw_sched_report_result *res) THAW_MUST_CHECK;

/* ---------------------------------------------------------------- usage ledger */

/* One activation's usage. Strings are borrowed; NULL means "". */
struct thaw_sched_usage {
    const char *activation_id;         /* required, the ledger's key */
    const char *ns;                    /* the platform namespace (OpenWhisk) */
    const char *action;
    const char *model;                 /* checkpoint URI */
    uint32_t prompt_tokens;            /* at most INT32_MAX */
    uint32_t completion_tokens;        /* at most INT32_MAX */
    const char *load_tier;             /* none, gpu, dram, ssd, peer, remote; NULL = "none" */
    double load_ms;                    /* time to load the model, >= 0 */
    double gpu_ms;                     /* GPU time of the activation, >= 0 */
    int cold;                          /* 1: the activation started the instance */
};

/*
 * Record one activation in usage_ledger, once: a second call with the same
 * activation_id changes nothing (INSERT ... ON CONFLICT DO NOTHING). *inserted
 * (may be NULL) is 1 when the row is new, 0 when it existed. The runtime
 * calls this when THAW_PG_URL is set, on a handle from thaw_sched_db_open,
 * after each activation (a retry is harmless). Returns 0, THAW_EINVAL
 * (naming the field), THAW_EPG. Owner thread of db.
 */
int thaw_sched_usage_record(struct thaw_sched_db *db, const struct thaw_sched_usage *u,
                            int *inserted) THAW_MUST_CHECK;

/* ---------------------------------------------------------------- degraded placement */

/* A host known to the scheduler, for hash placement while PostgreSQL is down. */
struct thaw_sched_host_ref {
    int64_t host_id;                   /* hosts.id, 0 when known only from a report */
    char address[128];
};

/*
 * The live hosts (heartbeat within max_age_s; <= 0 means the default 30 s)
 * by id: the list thaw-scheduler caches to place by hash when PostgreSQL is
 * unreachable. *out (released with thaw_free; NULL when *n_out is 0) and
 * *n_out are set only on success. Returns 0, THAW_EPG, -ENOMEM. Owner thread
 * of db.
 */
int thaw_sched_live_hosts(struct thaw_sched_db *db, double max_age_s,
                          struct thaw_sched_host_ref **out, size_t *n_out) THAW_MUST_CHECK;

/*
 * Rank n_hosts hosts for key (a checkpoint URI) by rendezvous (highest
 * random weight) hashing: host i's weight is xxh3(key, NUL, address), and
 * order[] receives min(n_hosts, max_order, THAW_SCHED_HASH_MAX_ORDER) host
 * indices, heaviest first. A
 * key keeps its host while that host stays in the list, whatever its
 * position; removing a host moves only the keys it held. Returns the number
 * written. Pure; thread-safe.
 */
#define THAW_SCHED_HASH_MAX_ORDER 64

size_t thaw_sched_hash_rank(const struct thaw_sched_host_ref *hosts, size_t n_hosts,
                            const char *key, size_t *order, size_t max_order);

#ifdef __cplusplus
}
#endif
#endif /* THAW_SCHEDULER_H */
