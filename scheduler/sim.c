/*
 * sim.c - the cluster simulator behind `thaw simulate`: hosts with GPUs, a
 * DRAM checkpoint pool, a local SSD cache, a NIC and a shared remote store;
 * requests arrive from a workload and are placed by one of six policies.
 * The startup-optimised policies rank hosts with the scheduler's own
 * thaw_sched_rank/thaw_sched_estimate, fed from the simulated state and from
 * bandwidths learned with thaw_sched_ewma_bw, exactly as thaw-scheduler does.
 *
 * Transfers are fluid flows: flows on one host's SSD (or NIC, or the remote
 * store) share its bandwidth equally, each slowed by its own lognormal noise,
 * and DRAM -> GPU copies run on the instance's own PCIe links.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sim.h"

/* ------------------------------------------------------------- defaults */

#define GB 1e9
#define DEF_HOSTS 8
#define DEF_GPUS 8
#define DEF_GPU_BYTES 80000000000ull
#define DEF_DRAM_BYTES 256000000000ull
#define DEF_SSD_BYTES 2000000000000ull
#define DEF_SSD_BPS (6 * GB)      /* ServerlessLLM: one Gen4 NVMe per server */
#define DEF_PCIE_BPS (25 * GB)    /* ServerlessLLM hard-codes 25e9 (PCIe 4 x16) */
#define DEF_NIC_BPS (25e9 / 8)    /* 25 Gb/s per host */
#define DEF_STORE_BPS (100e9 / 8) /* 100 Gb/s out of the remote store */
#define DEF_BATCH 8
#define DEF_KEEP_ALIVE_S 600.0 /* OpenWhisk's idle container timeout */
#define DEF_NOISE 0.15
#define DEF_REPLICAS 2
#define DEF_ALPHA 0.2
#define MIGRATE_BASE_S 0.05 /* stop, ship token ids, resume */

/* Hybrid histogram ("Serverless in the Wild", ATC'20; DSLab-FaaS values). */
#define HIST_BIN_S 60.0
#define HIST_BINS 240 /* 4 hours */
#define HIST_MIN_SAMPLES 5
#define HIST_HEAD_PCT 0.05
#define HIST_TAIL_PCT 0.99
#define HIST_MARGIN 0.10
#define HIST_CV_THR 2.0
#define HIST_OOB_THR 0.5

#define NONE (-1)

const char *thaw_sched_sim_policy_name(enum thaw_sched_sim_policy p)
{
    static const char *names[] = { "random", "rr", "openwhisk", "shepherd", "sllm", "thaw" };
    return (unsigned)p < THAW_SCHED_SIM_N_POLICIES ? names[p] : "unknown";
}

int thaw_sched_sim_policy_parse(const char *name)
{
    for (int p = 0; p < THAW_SCHED_SIM_N_POLICIES; p++) {
        if (strcmp(name, thaw_sched_sim_policy_name(p)) == 0)
            return p;
    }
    return -1;
}

void thaw_sched_sim_models_default(struct thaw_sched_sim_model *models, size_t n,
                                   uint64_t gpu_bytes)
{
    /* 4:3:2:1 of 7B:13B:34B:70B, interleaved so popularity ranks mix sizes. */
    static const double mix[10] = { 7, 13, 7, 34, 7, 13, 70, 7, 13, 34 };
    if (!gpu_bytes)
        gpu_bytes = DEF_GPU_BYTES;
    for (size_t i = 0; i < n; i++) {
        struct thaw_sched_sim_model *m = &models[i];
        m->params_b = mix[i % 10];
        m->bytes = (uint64_t)(m->params_b * 2e9);
        m->n_gpus = 1;
        while ((double)m->bytes > 0.8 * (double)gpu_bytes * m->n_gpus && m->n_gpus < 64)
            m->n_gpus *= 2;
        /* Decode is memory bound: each GPU streams its share of the weights
         * per token at ~60% of H100 HBM3 (3.35 TB/s). Prefill is compute
         * bound: 2 * params FLOP per token at ~50% of 400 dense TFLOP/s. */
        m->decode_s_per_tok = (double)m->bytes / m->n_gpus / (0.6 * 3.35e12);
        m->prefill_tok_s = m->n_gpus * 0.5 * 400e12 / (2.0 * m->params_b * 1e9);
    }
}

/* ------------------------------------------------------------- state */

enum { R_FUTURE, R_PENDING, R_ATTACHED, R_RUNNING, R_DONE };
enum { I_FREE, I_WAIT_GPU, I_LOADING, I_RESUME, I_READY };
enum { F_LOAD, F_PREFETCH };
enum { EV_DONE, EV_KEEPALIVE, EV_PREWARM, EV_HANDOVER };
enum { RES_NONE, RES_SSD, RES_NET };

struct list {
    int head, tail;
};

struct sreq {
    int state;
    int inst;
    int prev, next;       /* in a pending queue or an instance's list */
    uint32_t gen;         /* bumps cancel its completion event */
    double start_s;       /* start of the current run */
    double first_start_s; /* first token of the first run: startup latency */
    int preempted;
    int warm;
    int how;           /* enum thaw_sched_sim_how of its latest attach */
    double pend_since; /* entered its model's queue */
    double pend_s;     /* total time in that queue */
    double attach_t;   /* given to its current instance */
};

struct sinst {
    int state;
    int model, host;
    int n_gpus, n_have;
    int n_active, n_attached;
    struct list reqs; /* attached and running requests */
    double idle_since;
    double busy_since;
    uint32_t ka_gen;
    int mig_src, mig_dst;   /* migration pair, NONE when not migrating */
    int waiter;             /* instance waiting for these GPUs after a migration */
    int demand;             /* loaded for requests (1) or pre-warmed (0) */
    double place_s, pred_s; /* estimate made when placed */
    double ka_until;        /* Thaw: keep until (0: policy decides at idle) */
    uint32_t mig_stamp;     /* matches the pending hand-over event */
    int tier;               /* where its weights came from */
    double load_start_s;    /* its load began (after any wait for GPUs) */
    double ready_s;         /* it became ready */
    double contention;      /* mean transfers sharing the device during its load */
    int dram_hosts, dram_room; /* DRAM copies of its model when placed (detail only) */
    double gone_s;             /* placed this long after its model's last unload (detail) */
    int gone_why, evicted, free_hosts; /* detail only: see thaw_sched_sim_req_detail */
    int hostwait;   /* Thaw: waits for GPUs on its host, staging into DRAM meanwhile */
    int staged_pin; /* it holds a pin on its staged DRAM copy */
};

struct sflow {
    int used, kind;
    int inst, host, model, tier, res;
    double rem, bytes, eff, cap, rate;
    double t0, dev_bytes; /* bytes the device moved for everyone while this ran */
};

struct sev {
    double t;
    uint64_t seq;
    int type, a;
    uint32_t gen;
};

struct shost {
    int *gpu_owner; /* instance per GPU, NONE when free */
    double *gpu_since;
    double ssd_mult, nic_mult;      /* fixed per-host deviation from nominal */
    double bw_pcie, bw_ssd, bw_net; /* EWMA, 0 = not measured */
    uint64_t dram_used, ssd_used;
    uint8_t *dram, *ssd; /* per model: 0 absent, 1 present, 2 arriving */
    int *dram_pins;
    double *dram_last, *ssd_last, *dram_protect;
};

struct smodel_rt {
    struct list pending;
    int inflight;      /* pending + attached + running */
    double idle_start; /* < 0: never idle yet */
    uint32_t idle_gen;
    uint32_t hist[HIST_BINS];
    uint32_t hist_n, hist_oob;
    double ka_until;
    double gone_t; /* its last instance left the GPUs (< 0: never) */
    int gone_why;  /* enum thaw_sched_sim_gone */
};

struct sim {
    const struct thaw_sched_sim_workload *w;
    struct thaw_sched_sim_opts o;
    struct thaw_sched_sim_cluster c;
    double now;
    uint64_t rng;
    int n_hosts, n_gpus;
    struct shost *hosts;
    struct smodel_rt *mrt;
    struct sreq *reqs;
    struct sinst *insts;
    int n_insts;
    struct sflow *flows;
    int n_flows;
    double flow_t; /* flows advanced up to here */
    struct sev *heap;
    size_t n_heap, cap_heap;
    uint64_t seq;
    uint32_t stamp; /* generation stamps: stale events never match a reused slot */
    int rr_next;
    double *startup, *e2e, *est_err;
    size_t n_startup, n_e2e, n_est, cap_est;
    double est_bias_sum;
    double mean_out_tokens, mean_in_tokens;
    struct thaw_sched_sim_result *res;
};

/* ------------------------------------------------------------- rng */

static uint64_t rng_next(struct sim *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(struct sim *s)
{
    return ((double)(rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_normal(struct sim *s)
{
    double u = rng_unit(s), v = rng_unit(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------- lists */

static void list_push(struct sim *s, struct list *l, int r, int front)
{
    struct sreq *q = &s->reqs[r];
    if (front) {
        q->prev = NONE;
        q->next = l->head;
        if (l->head != NONE)
            s->reqs[l->head].prev = r;
        else
            l->tail = r;
        l->head = r;
    } else {
        q->next = NONE;
        q->prev = l->tail;
        if (l->tail != NONE)
            s->reqs[l->tail].next = r;
        else
            l->head = r;
        l->tail = r;
    }
}

static void list_remove(struct sim *s, struct list *l, int r)
{
    struct sreq *q = &s->reqs[r];
    if (q->prev != NONE)
        s->reqs[q->prev].next = q->next;
    else
        l->head = q->next;
    if (q->next != NONE)
        s->reqs[q->next].prev = q->prev;
    else
        l->tail = q->prev;
    q->prev = q->next = NONE;
}

/* Request r of model m joins (leaves) its model's queue; the time inside
 * is kept for the per-request detail. */
static void pend_push(struct sim *s, int m, int r, int front)
{
    struct sreq *q = &s->reqs[r];
    q->state = R_PENDING;
    q->inst = NONE;
    q->pend_since = s->now;
    list_push(s, &s->mrt[m].pending, r, front);
}

static void pend_remove(struct sim *s, int m, int r)
{
    list_remove(s, &s->mrt[m].pending, r);
    s->reqs[r].pend_s += s->now - s->reqs[r].pend_since;
}

/* ------------------------------------------------------------- events */

static int ev_less(const struct sev *a, const struct sev *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static int ev_push(struct sim *s, double t, int type, int a, uint32_t gen)
{
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? 2 * s->cap_heap : 1024;
        struct sev *h = thaw_realloc(s->heap, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        s->heap = h;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    struct sev e = { .t = t, .seq = s->seq++, .type = type, .a = a, .gen = gen };
    while (i > 0 && ev_less(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
    return 0;
}

static struct sev ev_pop(struct sim *s)
{
    struct sev top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_heap)
            break;
        if (c + 1 < s->n_heap && ev_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!ev_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap)
        s->heap[i] = last;
    return top;
}

/* ------------------------------------------------------------- helpers */

static const struct thaw_sched_sim_model *model_of(const struct sim *s, int m)
{
    return &s->w->models[m];
}

static double service_s(const struct sim *s, int r)
{
    const struct thaw_sched_sim_request *q = &s->w->reqs[r];
    const struct thaw_sched_sim_model *m = model_of(s, (int)q->model);
    return q->in_tokens / m->prefill_tok_s + q->out_tokens * m->decode_s_per_tok;
}

/* Tokens (prompt + generated so far) of a running request: what a
 * migration must re-prefill on the new host. */
static double req_tokens(const struct sim *s, int r)
{
    const struct thaw_sched_sim_request *q = &s->w->reqs[r];
    const struct thaw_sched_sim_model *m = model_of(s, (int)q->model);
    double gen = (s->now - s->reqs[r].start_s - q->in_tokens / m->prefill_tok_s) /
                 m->decode_s_per_tok;
    if (gen < 0)
        gen = 0;
    if (gen > q->out_tokens)
        gen = q->out_tokens;
    return q->in_tokens + gen;
}

static int is_thaw(const struct sim *s)
{
    return s->o.policy == THAW_SCHED_SIM_THAW;
}

static int uses_estimator(const struct sim *s)
{
    return s->o.policy == THAW_SCHED_SIM_SLLM || s->o.policy == THAW_SCHED_SIM_THAW;
}

/* An idle instance: ready, nothing running, not part of a migration. Its
 * GPUs can be taken at no cost (the weights stay in the DRAM pool). */
static int inst_idle(const struct sinst *in)
{
    return in->state == I_READY && in->n_active == 0 && in->n_attached == 0 &&
           in->mig_dst == NONE && in->mig_src == NONE;
}

/* GPUs a new instance could have on host h now: free ones plus idle ones. */
static int host_room(const struct sim *s, int h)
{
    const struct shost *H = &s->hosts[h];
    int n = 0;
    for (int g = 0; g < s->n_gpus; g++) {
        int o = H->gpu_owner[g];
        if (o == NONE || inst_idle(&s->insts[o]))
            n++;
    }
    return n;
}

static int host_free_gpus(const struct sim *s, int h)
{
    int n = 0;
    for (int g = 0; g < s->n_gpus; g++)
        n += s->hosts[h].gpu_owner[g] == NONE;
    return n;
}

/* Predicted time of the next request for model m (Thaw's eviction order):
 * now when it is in use, else idle start + median idle gap. */
static double predicted_next(const struct sim *s, int m)
{
    const struct smodel_rt *mr = &s->mrt[m];
    if (mr->inflight > 0)
        return s->now;
    double gap = s->o.keep_alive_s;
    if (mr->hist_n >= HIST_MIN_SAMPLES) {
        uint32_t want = (mr->hist_n + 1) / 2, acc = 0;
        gap = HIST_BINS * HIST_BIN_S;
        for (int b = 0; b < HIST_BINS; b++) {
            acc += mr->hist[b];
            if (acc >= want) {
                gap = (b + 0.5) * HIST_BIN_S;
                break;
            }
        }
    }
    double base = mr->idle_start >= 0 ? mr->idle_start : 0;
    return base + gap;
}

/* ------------------------------------------------------------- GPU accounting */

static void gpu_take(struct sim *s, int h, int g, int inst)
{
    s->hosts[h].gpu_owner[g] = inst;
    s->hosts[h].gpu_since[g] = s->now;
    s->insts[inst].n_have++;
}

static void gpu_release_all(struct sim *s, int inst)
{
    struct sinst *in = &s->insts[inst];
    struct shost *H = &s->hosts[in->host];
    for (int g = 0; g < s->n_gpus; g++) {
        if (H->gpu_owner[g] == inst) {
            s->res->gpu_s += s->now - H->gpu_since[g];
            H->gpu_owner[g] = NONE;
        }
    }
    in->n_have = 0;
}

/* Instance inst leaves its GPUs for reason why (enum thaw_sched_sim_gone);
 * the per-request detail reports how long before a reload that was. */
static void inst_free(struct sim *s, int inst, int why)
{
    struct sinst *in = &s->insts[inst];
    gpu_release_all(s, inst);
    in->state = I_FREE;
    if (in->mig_src == NONE) {
        s->mrt[in->model].gone_t = s->now;
        s->mrt[in->model].gone_why = why;
    }
}

static void set_active(struct sim *s, struct sinst *in, int delta)
{
    if (in->n_active == 0 && delta > 0)
        in->busy_since = s->now;
    in->n_active += delta;
    if (in->n_active == 0 && delta < 0)
        s->res->busy_gpu_s += (s->now - in->busy_since) * in->n_gpus;
}

/* ------------------------------------------------------------- caches */

/* Seconds to bring model m back after evicting it from host h's GPUs
 * (from_gpu) or from its DRAM pool: from the next tier down that holds it. */
static double reload_s(const struct sim *s, int h, int m, int from_gpu)
{
    const struct shost *H = &s->hosts[h];
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    if (from_gpu && H->dram[m] == 1)
        return (double)mo->bytes / (s->c.pcie_bps * mo->n_gpus);
    if (H->ssd[m] == 1)
        return (double)mo->bytes / s->c.ssd_bps;
    return (double)mo->bytes / s->c.nic_bps;
}

/* Thaw's keep value of model m's copy on host h: reload seconds saved per
 * second of holding it until its predicted next request, per GPU (or per
 * byte of DRAM, where the reload time is proportional to size anyway). */
static double keep_value(const struct sim *s, int h, int m, int from_gpu)
{
    double gap = predicted_next(s, m) - s->now;
    if (gap < 1.0)
        gap = 1.0;
    double rl = reload_s(s, h, m, from_gpu);
    double v = rl / gap;
    /* A reload costs more than its own seconds: every request that arrives
     * while it runs waits too, so the waiting grows with the square of its
     * length, and the long reloads (a 70B model from SSD: ~23 s) are the
     * ones that make the P99. Weight by the reload time once more. */
    if (!(s->o.thaw_off & THAW_SCHED_SIM_OFF_TAIL))
        v *= rl;
    return from_gpu ? v / model_of(s, m)->n_gpus : v / (double)model_of(s, m)->bytes;
}

static int dram_victim(const struct sim *s, int h)
{
    const struct shost *H = &s->hosts[h];
    int best = NONE;
    double best_key = 0;
    int best_prot = 1;
    for (size_t m = 0; m < s->w->n_models; m++) {
        if (H->dram[m] != 1 || H->dram_pins[m] > 0)
            continue;
        int prot = 0;
        double key;
        if (is_thaw(s) && !(s->o.thaw_off & THAW_SCHED_SIM_OFF_EVICT)) {
            /* Evict the copy worth least, and never one inside its
             * pre-warm window while another will do. */
            prot = H->dram_protect[m] > s->now;
            key = -keep_value(s, h, (int)m, 0);
        } else {
            key = -H->dram_last[m]; /* LRU */
        }
        if (best == NONE || prot < best_prot || (prot == best_prot && key > best_key)) {
            best = (int)m;
            best_key = key;
            best_prot = prot;
        }
    }
    return best;
}

/* Make model m resident in host h's DRAM pool. Returns 0, or -1 when every
 * resident model is pinned (the load still streams through; it is just
 * not kept). */
static int dram_insert(struct sim *s, int h, int m)
{
    struct shost *H = &s->hosts[h];
    uint64_t bytes = model_of(s, m)->bytes;
    H->dram_last[m] = s->now;
    if (H->dram[m] == 1)
        return 0;
    if (bytes > s->c.dram_bytes) {
        H->dram[m] = 0;
        return -1;
    }
    while (H->dram_used + bytes > s->c.dram_bytes) {
        int v = dram_victim(s, h);
        if (v == NONE) {
            H->dram[m] = 0;
            return -1;
        }
        H->dram[v] = 0;
        H->dram_used -= model_of(s, v)->bytes;
    }
    H->dram[m] = 1;
    H->dram_used += bytes;
    return 0;
}

static void ssd_insert(struct sim *s, int h, int m)
{
    struct shost *H = &s->hosts[h];
    uint64_t bytes = model_of(s, m)->bytes;
    H->ssd_last[m] = s->now;
    if (H->ssd[m])
        return;
    while (H->ssd_used + bytes > s->c.ssd_bytes) {
        int v = NONE;
        for (size_t i = 0; i < s->w->n_models; i++) {
            if (H->ssd[i] && (v == NONE || H->ssd_last[i] < H->ssd_last[v]))
                v = (int)i;
        }
        if (v == NONE)
            return;
        H->ssd[v] = 0;
        H->ssd_used -= model_of(s, v)->bytes;
    }
    H->ssd[m] = 1;
    H->ssd_used += bytes;
}

/* ------------------------------------------------------------- flows */

/* Advance every flow's progress to now. */
static void flows_advance(struct sim *s)
{
    double dt = s->now - s->flow_t;
    if (dt > 0) {
        for (int f = 0; f < s->n_flows; f++) {
            struct sflow *F = &s->flows[f];
            if (!F->used)
                continue;
            F->rem -= F->rate * dt;
            /* Device-level throughput while F ran, as iostat would see it. */
            double dev = 0;
            if (F->res == RES_NONE) {
                dev = F->rate;
            } else {
                for (int g = 0; g < s->n_flows; g++) {
                    const struct sflow *G = &s->flows[g];
                    if (G->used && G->host == F->host && G->res == F->res)
                        dev += G->rate;
                }
            }
            F->dev_bytes += dev * dt;
        }
    }
    s->flow_t = s->now;
}

/* Recompute the rates: equal shares of each shared device, each scaled by
 * the flow's own noise, capped by its PCIe links. */
static void flows_rerate(struct sim *s)
{
    int n_store = 0;
    for (int f = 0; f < s->n_flows; f++)
        n_store += s->flows[f].used && s->flows[f].res == RES_NET;
    for (int f = 0; f < s->n_flows; f++) {
        struct sflow *F = &s->flows[f];
        if (!F->used)
            continue;
        const struct shost *H = &s->hosts[F->host];
        double r = F->cap;
        if (F->res != RES_NONE) {
            int n = 0;
            for (int g = 0; g < s->n_flows; g++) {
                const struct sflow *G = &s->flows[g];
                n += G->used && G->host == F->host && G->res == F->res;
            }
            double share;
            if (F->res == RES_SSD) {
                share = s->c.ssd_bps * H->ssd_mult / n;
            } else {
                share = s->c.nic_bps * H->nic_mult / n;
                double st = s->c.store_bps / n_store;
                if (st < share)
                    share = st;
            }
            if (share < r)
                r = share;
        }
        F->rate = r * F->eff;
    }
}

static double flows_next_t(const struct sim *s)
{
    double t = INFINITY;
    for (int f = 0; f < s->n_flows; f++) {
        const struct sflow *F = &s->flows[f];
        if (F->used && F->rate > 0) {
            double d = s->flow_t + (F->rem > 0 ? F->rem / F->rate : 0);
            if (d < t)
                t = d;
        }
    }
    return t;
}

static int flow_start(struct sim *s, int kind, int inst, int h, int m, int tier)
{
    int f;
    for (f = 0; f < s->n_flows; f++) {
        if (!s->flows[f].used)
            break;
    }
    if (f == s->n_flows) {
        struct sflow *nf = thaw_realloc(s->flows, (size_t)(s->n_flows + 16) * sizeof *nf);
        if (!nf)
            return -ENOMEM;
        memset(nf + s->n_flows, 0, 16 * sizeof *nf);
        s->flows = nf;
        s->n_flows += 16;
    }
    flows_advance(s);
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    struct sflow *F = &s->flows[f];
    memset(F, 0, sizeof *F);
    F->used = 1;
    F->kind = kind;
    F->inst = inst;
    F->host = h;
    F->model = m;
    F->tier = tier;
    F->bytes = F->rem = (double)mo->bytes;
    F->t0 = s->now;
    double e = exp(s->o.noise_sigma * rng_normal(s));
    F->eff = e < 0.3 ? 0.3 : (e > 3 ? 3 : e);
    /* Into GPUs: every partition has its own x16 link. Into DRAM only: the
     * device is the limit. */
    F->cap = kind == F_LOAD ? s->c.pcie_bps * mo->n_gpus : INFINITY;
    F->res = tier == THAW_SCHED_TIER_SSD      ? RES_SSD
             : tier == THAW_SCHED_TIER_REMOTE ? RES_NET
                                              : RES_NONE;
    if (F->res == RES_NONE && kind == F_PREFETCH)
        F->cap = s->c.pcie_bps; /* not used: DRAM prefetch of a DRAM model is a no-op */
    if (tier == THAW_SCHED_TIER_DRAM)
        s->hosts[h].dram_pins[m]++;
    flows_rerate(s);
    return 0;
}

/* ------------------------------------------------------------- estimator glue */

/* Bytes/s the estimator would be told for tier res on host h (learned, or 0
 * to let it use its defaults). */
static double learned_bps(const struct sim *s, int h, int res)
{
    if (s->o.no_ewma)
        return 0;
    return res == RES_SSD ? s->hosts[h].bw_ssd : s->hosts[h].bw_net;
}

/* Fill what the estimator needs to know about host h for model m, from the
 * simulated state. room: the host can give the model its GPUs now. */
static void fill_host(const struct sim *s, int h, int m, int room, struct thaw_sched_host *out)
{
    const struct shost *H = &s->hosts[h];
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    memset(out, 0, sizeof *out);
    double pcie = (!s->o.no_ewma && H->bw_pcie > 0) ? H->bw_pcie : THAW_SCHED_DRAM_TO_GPU_BPS;
    out->dram_to_gpu_bps = pcie * mo->n_gpus;
    out->ssd_bps = learned_bps(s, h, RES_SSD);
    out->network_bps = learned_bps(s, h, RES_NET);
    out->ckpt_dram_bytes = H->dram[m] == 1 ? mo->bytes : 0;
    out->ckpt_ssd_bytes = H->ssd[m] == 1 ? mo->bytes : 0;
    out->gpu_free_bytes = room ? mo->bytes : 0;
    out->heartbeat_age_s = room ? 0.0 : INFINITY;
    /* Queue wait under fair sharing: each flow already on the device delays
     * this load by min(its remaining bytes, ours) / bandwidth. */
    int res = out->ckpt_dram_bytes ? RES_NONE : out->ckpt_ssd_bytes ? RES_SSD : RES_NET;
    if (res != RES_NONE) {
        double bps = learned_bps(s, h, res);
        if (!(bps > 0))
            bps = res == RES_SSD ? THAW_SCHED_SSD_BPS : THAW_SCHED_NETWORK_BPS;
        double wait_bytes = 0;
        for (int f = 0; f < s->n_flows; f++) {
            const struct sflow *F = &s->flows[f];
            if (F->used && F->host == h && F->res == res)
                wait_bytes += F->rem < (double)mo->bytes ? F->rem : (double)mo->bytes;
        }
        out->queue_wait_s = wait_bytes / bps;
    }
}

/* ------------------------------------------------------------- instances */

static int inst_new(struct sim *s, int m, int h)
{
    int i;
    for (i = 0; i < s->n_insts; i++) {
        if (s->insts[i].state == I_FREE)
            break;
    }
    if (i == s->n_insts)
        return NONE; /* cannot happen: one GPU or more per live instance */
    struct sinst *in = &s->insts[i];
    memset(in, 0, sizeof *in);
    in->state = I_WAIT_GPU;
    in->model = m;
    in->host = h;
    in->n_gpus = model_of(s, m)->n_gpus;
    in->reqs.head = in->reqs.tail = NONE;
    in->mig_src = in->mig_dst = in->waiter = NONE;
    in->demand = 1;
    in->ka_gen = ++s->stamp;
    in->gone_s = -1;
    return i;
}

/* Take up to n GPUs on the instance's host: free ones first, then those of
 * idle instances (least recently used; Thaw: needed furthest ahead). */
static void inst_grab_gpus(struct sim *s, int inst, int n)
{
    struct sinst *in = &s->insts[inst];
    struct shost *H = &s->hosts[in->host];
    for (int g = 0; g < s->n_gpus && n > 0; g++) {
        if (H->gpu_owner[g] == NONE) {
            gpu_take(s, in->host, g, inst);
            n--;
        }
    }
    while (n > 0) {
        int v = NONE;
        double best = 0;
        for (int g = 0; g < s->n_gpus; g++) {
            int o = H->gpu_owner[g];
            if (o == NONE || o == inst || !inst_idle(&s->insts[o]))
                continue;
            double key = is_thaw(s) && !(s->o.thaw_off & THAW_SCHED_SIM_OFF_EVICT)
                             ? -keep_value(s, in->host, s->insts[o].model, 1)
                             : -s->insts[o].idle_since;
            if (v == NONE || key > best) {
                v = o;
                best = key;
            }
        }
        if (v == NONE)
            return;
        s->insts[v].ka_gen = ++s->stamp;
        inst_free(s, v, THAW_SCHED_SIM_GONE_EVICTED);
        in->evicted++;
        for (int g = 0; g < s->n_gpus && n > 0; g++) {
            if (H->gpu_owner[g] == NONE) {
                gpu_take(s, in->host, g, inst);
                n--;
            }
        }
    }
}

static int tier_of(const struct sim *s, int h, int m)
{
    if (s->hosts[h].dram[m] == 1)
        return THAW_SCHED_TIER_DRAM;
    if (s->hosts[h].ssd[m] == 1)
        return THAW_SCHED_TIER_SSD;
    return THAW_SCHED_TIER_REMOTE;
}

static int inst_start_load(struct sim *s, int inst)
{
    struct sinst *in = &s->insts[inst];
    in->state = I_LOADING;
    in->load_start_s = s->now;
    int tier = tier_of(s, in->host, in->model);
    in->tier = tier;
    if (in->demand && in->mig_src == NONE)
        s->res->tier_loads[tier]++;
    return flow_start(s, F_LOAD, inst, in->host, in->model, tier);
}

/* Record where request r's startup went, as it first runs on inst. */
static void detail_fill(struct sim *s, int r, int inst)
{
    if (!s->o.details)
        return;
    const struct sreq *q = &s->reqs[r];
    const struct sinst *in = &s->insts[inst];
    struct thaw_sched_sim_req_detail *d = &s->o.details[r];
    double arr = s->w->reqs[r].arrival_s;
    double a = q->attach_t;
    d->startup_s = s->now - arr;
    d->pending_s = q->pend_s;
    d->attach_s = a - arr;
    d->gpu_wait_s = fmax(0, fmin(in->load_start_s, s->now) - fmax(a, in->place_s));
    d->load_s = fmax(0, fmin(in->ready_s, s->now) - fmax(a, in->load_start_s));
    d->load_total_s = in->ready_s - in->load_start_s;
    d->contention = in->contention;
    d->how = q->how;
    d->tier = in->tier;
    d->dram_hosts = in->dram_hosts;
    d->dram_room = in->dram_room;
    d->gone_s = in->gone_s;
    d->gone_why = in->gone_why;
    d->evicted = in->evicted;
    d->free_hosts = in->free_hosts;
}

/* Start request r on instance inst now (it is ready). */
static int req_run(struct sim *s, int r, int inst, int warm)
{
    struct sreq *q = &s->reqs[r];
    struct sinst *in = &s->insts[inst];
    if (q->state == R_ATTACHED) {
        in->n_attached--;
    } else {
        list_push(s, &in->reqs, r, 0);
        q->attach_t = s->now;
        q->how = warm ? THAW_SCHED_SIM_HOW_WARM : THAW_SCHED_SIM_HOW_SLOT;
    }
    q->state = R_RUNNING;
    q->inst = inst;
    q->start_s = s->now;
    if (q->first_start_s < 0) {
        q->first_start_s = s->now;
        q->warm = warm;
        detail_fill(s, r, inst);
    }
    set_active(s, in, +1);
    return ev_push(s, s->now + service_s(s, r), EV_DONE, r, q->gen);
}

static void req_attach(struct sim *s, int r, int inst, int how)
{
    struct sreq *q = &s->reqs[r];
    struct sinst *in = &s->insts[inst];
    q->state = R_ATTACHED;
    q->inst = inst;
    q->attach_t = s->now;
    q->how = how;
    in->n_attached++;
    list_push(s, &in->reqs, r, 0);
}

/* ------------------------------------------------------------- placement */

/* Thaw's part 6: a host with room is charged for the idle instances its
 * placement evicts. */
static int uses_evict_cost(const struct sim *s)
{
    return is_thaw(s) && !(s->o.thaw_off & THAW_SCHED_SIM_OFF_EVCOST);
}

/* Seconds of reloading that taking n GPUs on host h would cost the idle
 * instances it evicts (those inst_grab_gpus would pick), each charged the
 * reload of its model from the next tier down on that host. */
static double evict_cost_s(const struct sim *s, int h, int n)
{
    const struct shost *H = &s->hosts[h];
    n -= host_free_gpus(s, h);
    uint8_t taken[256] = { 0 };
    double cost = 0;
    while (n > 0) {
        int v = NONE;
        double best = 0;
        for (int g = 0; g < s->n_gpus && g < 256; g++) {
            int o = H->gpu_owner[g];
            if (o == NONE || taken[g] || !inst_idle(&s->insts[o]))
                continue;
            double key = !(s->o.thaw_off & THAW_SCHED_SIM_OFF_EVICT)
                             ? -keep_value(s, h, s->insts[o].model, 1)
                             : -s->insts[o].idle_since;
            if (v == NONE || key > best) {
                v = o;
                best = key;
            }
        }
        if (v == NONE)
            return INFINITY;
        for (int g = 0; g < s->n_gpus && g < 256; g++) {
            if (H->gpu_owner[g] == v) {
                taken[g] = 1;
                n--;
            }
        }
        cost += reload_s(s, h, s->insts[v].model, 1);
    }
    return cost;
}

/* Hosts that have room for model m, chosen by the policy; NONE if none. */
static int choose_host(struct sim *s, int m, struct thaw_sched_estimate *est)
{
    int n = model_of(s, m)->n_gpus;
    int nh = s->n_hosts;
    int room[256];
    int any = 0;
    for (int h = 0; h < nh; h++) {
        room[h] = host_room(s, h) >= n;
        any |= room[h];
    }
    if (!any)
        return NONE;
    int pick = NONE;
    switch (s->o.policy) {
    case THAW_SCHED_SIM_RANDOM: {
        int k = 0;
        for (int h = 0; h < nh; h++)
            k += room[h];
        int j = (int)(rng_next(s) % (uint64_t)k);
        for (int h = 0; h < nh; h++) {
            if (room[h] && j-- == 0) {
                pick = h;
                break;
            }
        }
        break;
    }
    case THAW_SCHED_SIM_RR:
    case THAW_SCHED_SIM_SHEPHERD:
        for (int i = 0; i < nh; i++) {
            int h = (s->rr_next + i) % nh;
            if (room[h]) {
                pick = h;
                s->rr_next = (h + 1) % nh;
                break;
            }
        }
        break;
    case THAW_SCHED_SIM_OPENWHISK: {
        /* OpenWhisk's ShardingContainerPoolBalancer: home invoker from the
         * action's hash, then step by a size coprime with the pool. */
        uint64_t hsh = (uint64_t)m * 0x9e3779b97f4a7c15ull;
        hsh ^= hsh >> 29;
        int home = (int)(hsh % (uint64_t)nh);
        int step = 1;
        for (int c = (int)((hsh >> 32) % (uint64_t)nh) + 1; c <= nh; c++) {
            int a = c, b = nh;
            while (b) {
                int t = a % b;
                a = b;
                b = t;
            }
            if (a == 1) {
                step = c;
                break;
            }
        }
        for (int i = 0; i < nh; i++) {
            int h = (home + i * step) % nh;
            if (room[h]) {
                pick = h;
                break;
            }
        }
        break;
    }
    default: {
        struct thaw_sched_host hosts[256];
        struct thaw_sched_choice ch[256];
        for (int h = 0; h < nh; h++)
            fill_host(s, h, m, room[h], &hosts[h]);
        size_t k = thaw_sched_rank(hosts, (size_t)nh, model_of(s, m)->bytes, NULL, ch);
        if (k == 0)
            return NONE;
        size_t best = 0;
        if (uses_evict_cost(s)) {
            /* Thaw: the startup of this request plus the reloads its
             * evictions will cost the models it pushes off the GPUs. */
            double best_c = INFINITY;
            for (size_t i = 0; i < k; i++) {
                double c = ch[i].est.startup_s + evict_cost_s(s, (int)ch[i].host, n);
                if (c < best_c) {
                    best_c = c;
                    best = i;
                }
            }
        }
        *est = ch[best].est;
        return (int)ch[best].host;
    }
    }
    /* Baselines do not use the estimator to choose, but their loads are
     * still compared with its prediction. */
    struct thaw_sched_host hh;
    fill_host(s, pick, m, 1, &hh);
    thaw_sched_estimate(&hh, model_of(s, m)->bytes, NULL, est);
    return pick;
}

/* For the per-request detail: where the model of a new instance sat in
 * DRAM when it was placed, and whether those hosts had room for it. */
static void note_dram_copies(struct sim *s, int inst)
{
    struct sinst *in = &s->insts[inst];
    const struct smodel_rt *mr = &s->mrt[in->model];
    for (int x = 0; x < s->n_hosts; x++) {
        if (s->hosts[x].dram[in->model] == 1) {
            in->dram_hosts++;
            in->dram_room += host_room(s, x) >= in->n_gpus;
        }
        in->free_hosts += host_free_gpus(s, x) >= in->n_gpus;
    }
    in->gone_s = mr->gone_t >= 0 ? s->now - mr->gone_t : -1;
    in->gone_why = mr->gone_t >= 0 ? mr->gone_why : THAW_SCHED_SIM_GONE_NONE;
}

/* A new instance of m on host h with room, request r attached (r may be
 * NONE: a pre-warm). */
static int place_on(struct sim *s, int m, int h, int r, const struct thaw_sched_estimate *est)
{
    int inst = inst_new(s, m, h);
    if (inst == NONE)
        return -ENOMEM;
    struct sinst *in = &s->insts[inst];
    note_dram_copies(s, inst);
    inst_grab_gpus(s, inst, in->n_gpus);
    in->place_s = s->now;
    in->pred_s = est->startup_s;
    in->demand = r != NONE;
    if (r != NONE) {
        req_attach(s, r, inst, THAW_SCHED_SIM_HOW_COLD);
        s->res->n_cold_starts++;
    }
    return inst_start_load(s, inst);
}

/* Expected seconds until instance v frees its GPUs by itself: its requests
 * are assumed to produce the trace's mean output length (or 10% more than
 * they already have), as a scheduler that cannot see the future would. */
static double expected_release_s(const struct sim *s, int v)
{
    double t = 0;
    for (int r = s->insts[v].reqs.head; r != NONE; r = s->reqs[r].next) {
        const struct thaw_sched_sim_request *q = &s->w->reqs[r];
        const struct thaw_sched_sim_model *mo = model_of(s, (int)q->model);
        double gen = req_tokens(s, r) - q->in_tokens;
        double out = s->mean_out_tokens > gen * 1.1 ? s->mean_out_tokens : gen * 1.1 + 1;
        double end = s->reqs[r].start_s + q->in_tokens / mo->prefill_tok_s +
                     out * mo->decode_s_per_tok;
        if (end - s->now > t)
            t = end - s->now;
    }
    return t;
}

/* ServerlessLLM's live migration: make room for m on some host by moving
 * one running instance elsewhere, when the estimator prefers that to
 * waiting, and the start is expected before max_s. Returns 1 when a
 * migration started. */
static int try_migrate(struct sim *s, int m, int r, double max_s)
{
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    int nh = s->n_hosts;
    double best_s = max_s;
    int best_h = NONE, best_v = NONE, best_d = NONE;
    struct thaw_sched_estimate best_est;
    memset(&best_est, 0, sizeof best_est);
    for (int h = 0; h < nh; h++) {
        int shortfall = mo->n_gpus - host_room(s, h);
        if (shortfall <= 0)
            continue;
        for (int g = 0; g < s->n_gpus; g++) {
            int v = s->hosts[h].gpu_owner[g];
            if (v == NONE)
                continue;
            const struct sinst *V = &s->insts[v];
            if (V->state != I_READY || V->mig_dst != NONE || V->mig_src != NONE ||
                V->n_active == 0 || V->n_attached || V->n_gpus < shortfall || V->model == m ||
                V->waiter != NONE)
                continue;
            /* Where would v go: the best other host with room for it. */
            struct thaw_sched_host hosts[256];
            struct thaw_sched_choice ch[256];
            int vn = model_of(s, V->model)->n_gpus;
            for (int d = 0; d < nh; d++)
                fill_host(s, d, V->model, d != h && host_room(s, d) >= vn, &hosts[d]);
            size_t k = thaw_sched_rank(hosts, (size_t)nh, model_of(s, V->model)->bytes, NULL, ch);
            if (k == 0)
                continue;
            double tokens = 0;
            for (int q = V->reqs.head; q != NONE; q = s->reqs[q].next)
                tokens += req_tokens(s, q);
            /* The estimator's migrate term is a * tokens + b; b carries the
             * destination's load time, as in ServerlessLLM's cost. */
            struct thaw_sched_params p = {
                .migrate_s_per_token = 1.0 / model_of(s, V->model)->prefill_tok_s,
                .migrate_base_s = MIGRATE_BASE_S + ch[0].est.startup_s,
            };
            struct thaw_sched_host hh;
            fill_host(s, h, m, 0, &hh);
            hh.heartbeat_age_s = 0;
            hh.running_tokens = (uint64_t)tokens;
            hh.gpu_release_s = expected_release_s(s, v);
            struct thaw_sched_estimate e;
            thaw_sched_estimate(&hh, mo->bytes, &p, &e);
            if (e.migrate && e.startup_s < best_s) {
                best_s = e.startup_s;
                best_h = h;
                best_v = v;
                best_d = (int)ch[0].host;
                best_est = e;
            }
        }
    }
    if (best_h == NONE)
        return 0;
    /* The destination instance of the migrated model. */
    int d = inst_new(s, s->insts[best_v].model, best_d);
    if (d == NONE)
        return 0;
    struct sinst *D = &s->insts[d];
    inst_grab_gpus(s, d, D->n_gpus);
    D->mig_src = best_v;
    D->demand = 0;
    D->place_s = s->now;
    D->pred_s = 0;
    s->insts[best_v].mig_dst = d;
    if (inst_start_load(s, d) < 0)
        return -ENOMEM;
    /* The new instance takes the host's room now and the victim's GPUs at
     * hand-over. */
    int n = inst_new(s, m, best_h);
    if (n == NONE)
        return 0;
    struct sinst *N = &s->insts[n];
    note_dram_copies(s, n);
    inst_grab_gpus(s, n, host_room(s, best_h) < N->n_gpus ? host_room(s, best_h) : N->n_gpus);
    N->place_s = s->now;
    N->pred_s = best_est.startup_s;
    s->insts[best_v].waiter = n;
    req_attach(s, r, n, THAW_SCHED_SIM_HOW_MIGRATE);
    s->res->n_cold_starts++;
    s->res->n_migrations++;
    return 1;
}

/* Shepherd*: preempt the running instance whose requests have done the
 * least work (and were never preempted) on a host where that makes room. */
static int try_preempt(struct sim *s, int m, int r)
{
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    double best_w = INFINITY;
    int best_v = NONE;
    for (int h = 0; h < s->n_hosts; h++) {
        int shortfall = mo->n_gpus - host_room(s, h);
        if (shortfall <= 0)
            continue;
        for (int g = 0; g < s->n_gpus; g++) {
            int v = s->hosts[h].gpu_owner[g];
            if (v == NONE)
                continue;
            const struct sinst *V = &s->insts[v];
            if (V->state != I_READY || V->n_gpus < shortfall || V->model == m ||
                V->mig_dst != NONE || V->n_attached)
                continue;
            double work = 0;
            int ok = 1;
            for (int q = V->reqs.head; q != NONE; q = s->reqs[q].next) {
                if (s->reqs[q].preempted)
                    ok = 0;
                work += s->now - s->reqs[q].start_s;
            }
            if (ok && work < best_w) {
                best_w = work;
                best_v = v;
            }
        }
    }
    if (best_v == NONE)
        return 0;
    struct sinst *V = &s->insts[best_v];
    int vm = V->model;
    /* Its requests restart from scratch when the model runs again. Push
     * them to the front of their queue, oldest first. */
    while (V->reqs.tail != NONE) {
        int q = V->reqs.tail;
        list_remove(s, &V->reqs, q);
        s->reqs[q].gen++;
        s->reqs[q].preempted++;
        set_active(s, V, -1);
        pend_push(s, vm, q, 1);
        s->res->n_preemptions++;
    }
    V->ka_gen = ++s->stamp;
    inst_free(s, best_v, THAW_SCHED_SIM_GONE_PREEMPTED);
    int h = V->host;
    struct thaw_sched_host hh;
    fill_host(s, h, m, 1, &hh);
    struct thaw_sched_estimate e;
    thaw_sched_estimate(&hh, mo->bytes, NULL, &e);
    return place_on(s, m, h, r, &e) < 0 ? -ENOMEM : 1;
}

/* Thaw: the instance of model m with the shortest expected wait for a
 * slot, counting its remaining load and the requests queued ahead in
 * rounds of one mean service time (the mean lengths seen so far). */
static int best_queue(const struct sim *s, int m, double *wait_out)
{
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    double svc = s->mean_in_tokens / mo->prefill_tok_s + s->mean_out_tokens * mo->decode_s_per_tok;
    int best = NONE;
    double best_w = INFINITY;
    for (int i = 0; i < s->n_insts; i++) {
        const struct sinst *in = &s->insts[i];
        if (in->model != m || in->mig_src != NONE || in->mig_dst != NONE ||
            (in->state != I_READY && in->state != I_LOADING))
            continue;
        double load = 0;
        if (in->state == I_LOADING) {
            for (int f = 0; f < s->n_flows; f++) {
                const struct sflow *F = &s->flows[f];
                if (F->used && F->kind == F_LOAD && F->inst == i && F->rate > 0)
                    load = F->rem / F->rate;
            }
        }
        int ahead = in->n_active + in->n_attached + 1 - s->o.max_batch;
        double w = load + (ahead > 0 ? ceil((double)ahead / s->o.max_batch) * svc : 0);
        if (w < best_w) {
            best_w = w;
            best = i;
        }
    }
    *wait_out = best_w;
    return best;
}

/* ------------------------------------------------------------- waiting for GPUs */

static int uses_staging(const struct sim *s)
{
    return is_thaw(s) && !(s->o.thaw_off & THAW_SCHED_SIM_OFF_STAGE);
}

/* The instance waiting for GPUs on host h, or NONE (at most one per host). */
static int host_waiter(const struct sim *s, int h)
{
    for (int i = 0; i < s->n_insts; i++) {
        const struct sinst *in = &s->insts[i];
        if (in->state == I_WAIT_GPU && in->hostwait && in->host == h)
            return i;
    }
    return NONE;
}

/* Expected seconds until n GPUs of host h are free or idle: now for those
 * that are, the expected end of its requests (expected_release_s) for a
 * GPU of a running instance, unknown (infinite) for one that is loading,
 * migrating or has requests queued on it. */
static double host_gpus_free_s(const struct sim *s, int h, int n)
{
    double t[256];
    int k = 0;
    const struct shost *H = &s->hosts[h];
    for (int g = 0; g < s->n_gpus && k < 256; g++) {
        int o = H->gpu_owner[g];
        const struct sinst *in = o == NONE ? NULL : &s->insts[o];
        if (!in || inst_idle(in))
            t[k++] = 0;
        else if (in->state == I_READY && in->mig_src == NONE && in->mig_dst == NONE &&
                 in->n_attached == 0 && s->mrt[in->model].pending.head == NONE)
            t[k++] = expected_release_s(s, o);
        else
            t[k++] = INFINITY;
    }
    if (k < n)
        return INFINITY;
    qsort(t, (size_t)k, sizeof t[0], cmp_double);
    return t[n - 1];
}

/* Thaw: the host without room where model m would start soonest if its
 * instance waited there for GPUs while the host agent stages the
 * checkpoint into DRAM (thaw_sched_estimate_staged); NONE if none. */
static int choose_wait_host(struct sim *s, int m, struct thaw_sched_estimate *est)
{
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    /* No migration on this path: waiting is what is being priced. */
    struct thaw_sched_params p = { .migrate_base_s = 1e30 };
    int best = NONE;
    for (int h = 0; h < s->n_hosts; h++) {
        if (host_room(s, h) >= mo->n_gpus || host_waiter(s, h) != NONE)
            continue;
        double t = host_gpus_free_s(s, h, mo->n_gpus);
        if (!(t > 0) || t == INFINITY)
            continue;
        struct thaw_sched_host hh;
        fill_host(s, h, m, 0, &hh);
        hh.heartbeat_age_s = 0;
        hh.gpu_release_s = t;
        struct thaw_sched_estimate e;
        thaw_sched_estimate_staged(&hh, mo->bytes, &p, &e);
        if (best == NONE || e.startup_s < est->startup_s) {
            best = h;
            *est = e;
        }
    }
    return best;
}

/* Start waiter inst's load once it has all its GPUs and its staging (if
 * any) has landed in DRAM. */
static int waiter_try(struct sim *s, int inst)
{
    struct sinst *in = &s->insts[inst];
    struct shost *H = &s->hosts[in->host];
    if (in->n_have < in->n_gpus || H->dram[in->model] == 2)
        return 0;
    if (in->staged_pin) {
        H->dram_pins[in->model]--;
        in->staged_pin = 0;
    }
    in->hostwait = 0;
    return inst_start_load(s, inst);
}

/* Give waiting instances the GPUs that have come free on their hosts. */
static int serve_waiters(struct sim *s)
{
    for (int i = 0; i < s->n_insts; i++) {
        struct sinst *in = &s->insts[i];
        if (in->state != I_WAIT_GPU || !in->hostwait || in->n_have >= in->n_gpus)
            continue;
        int room = host_room(s, in->host);
        int need = in->n_gpus - in->n_have;
        inst_grab_gpus(s, i, room < need ? room : need);
        int rc = waiter_try(s, i);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A new instance of m on host h (without room now), request r attached:
 * it takes the host's free and idle GPUs now and the rest as they free
 * up, and the host stages the checkpoint into DRAM in the meantime. */
static int place_wait(struct sim *s, int m, int h, int r, const struct thaw_sched_estimate *est)
{
    int inst = inst_new(s, m, h);
    if (inst == NONE)
        return -ENOMEM;
    struct sinst *in = &s->insts[inst];
    in->hostwait = 1;
    note_dram_copies(s, inst);
    int room = host_room(s, h);
    inst_grab_gpus(s, inst, room < in->n_gpus ? room : in->n_gpus);
    in->place_s = s->now;
    in->pred_s = est->startup_s;
    req_attach(s, r, inst, THAW_SCHED_SIM_HOW_STAGED);
    s->res->n_cold_starts++;
    s->res->n_staged++;
    struct shost *H = &s->hosts[h];
    if (H->dram[m] == 0) {
        H->dram[m] = 2;
        int rc = flow_start(s, F_PREFETCH, inst, h, m, tier_of(s, h, m));
        if (rc < 0)
            return rc;
    }
    return waiter_try(s, inst);
}

/* Serve request r of model m without waiting for anything to finish:
 * a ready instance with a free slot, a loading one with a free slot, or
 * a new instance on a host with room. Returns 1 when placed, 0 if not. */
static int dispatch_now(struct sim *s, int r, int m)
{
    int best = NONE;
    for (int i = 0; i < s->n_insts; i++) {
        const struct sinst *in = &s->insts[i];
        if (in->state != I_READY || in->model != m || in->mig_src != NONE)
            continue;
        if (in->n_active + in->n_attached >= s->o.max_batch)
            continue;
        if (best == NONE || in->n_active < s->insts[best].n_active)
            best = i;
    }
    if (best != NONE) {
        s->insts[best].ka_gen = ++s->stamp;
        int warm = s->reqs[r].first_start_s < 0 && s->now == s->w->reqs[r].arrival_s;
        return req_run(s, r, best, warm) < 0 ? -ENOMEM : 1;
    }
    for (int i = 0; i < s->n_insts; i++) {
        const struct sinst *in = &s->insts[i];
        if ((in->state == I_LOADING || in->state == I_WAIT_GPU) && in->model == m &&
            in->mig_src == NONE && in->n_active + in->n_attached < s->o.max_batch) {
            req_attach(s, r, i, in->demand ? THAW_SCHED_SIM_HOW_JOIN : THAW_SCHED_SIM_HOW_PREWARM);
            return 1;
        }
    }
    struct thaw_sched_estimate est, west;
    memset(&est, 0, sizeof est);
    memset(&west, 0, sizeof west);
    int h = choose_host(s, m, &est);
    /* Thaw: a host that must first wait for GPUs may still be sooner, when
     * it holds the checkpoint nearer (DRAM or SSD against the network). */
    int wh = uses_staging(s) ? choose_wait_host(s, m, &west) : NONE;
    if (wh != NONE && h != NONE && west.startup_s >= est.startup_s)
        wh = NONE;
    if (h == NONE && wh == NONE)
        return 0;
    if (is_thaw(s) && !(s->o.thaw_off & THAW_SCHED_SIM_OFF_QUEUE)) {
        /* Scale out only when a new instance is expected to start sooner
         * than a place in the queue of one that exists. */
        double wait;
        int q = best_queue(s, m, &wait);
        if (q != NONE && wait < (wh != NONE ? west.startup_s : est.startup_s)) {
            req_attach(s, r, q, THAW_SCHED_SIM_HOW_QUEUE);
            s->res->n_queued++;
            return 1;
        }
    }
    if (wh != NONE) {
        /* Moving a running instance away may free GPUs sooner still. */
        int rc = try_migrate(s, m, r, west.startup_s);
        if (rc != 0)
            return rc;
        return place_wait(s, m, wh, r, &west) < 0 ? -ENOMEM : 1;
    }
    return place_on(s, m, h, r, &est) < 0 ? -ENOMEM : 1;
}

/* Place pending requests, oldest first, while they fit. */
static int drain_pending(struct sim *s)
{
    size_t nm = s->w->n_models;
    if (uses_staging(s)) {
        int rc = serve_waiters(s);
        if (rc < 0)
            return rc;
    }
    uint8_t stuck[1024];
    memset(stuck, 0, nm < sizeof stuck ? nm : sizeof stuck);
    for (;;) {
        int m = NONE;
        for (size_t i = 0; i < nm; i++) {
            int head = s->mrt[i].pending.head;
            if (head == NONE || stuck[i])
                continue;
            if (m == NONE ||
                s->w->reqs[head].arrival_s < s->w->reqs[s->mrt[m].pending.head].arrival_s)
                m = (int)i;
        }
        if (m == NONE)
            return 0;
        int r = s->mrt[m].pending.head;
        pend_remove(s, m, r);
        int rc = dispatch_now(s, r, m);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            pend_push(s, m, r, 1);
            stuck[m] = 1;
        }
    }
}

/* ------------------------------------------------------------- keep-alive */

/* The hybrid-histogram decision for model m: how long after going idle to
 * bring it back into DRAM (pre-warm, 0: never leave) and how long to keep
 * it. */
static void hist_policy(const struct sim *s, int m, double *prewarm_s, double *keep_s)
{
    const struct smodel_rt *mr = &s->mrt[m];
    *prewarm_s = 0;
    *keep_s = s->o.keep_alive_s;
    if (mr->hist_n < HIST_MIN_SAMPLES)
        return;
    if ((double)mr->hist_oob / mr->hist_n >= HIST_OOB_THR)
        return; /* the paper forecasts with ARIMA here; we keep the default */
    uint32_t n_in = mr->hist_n - mr->hist_oob;
    double mean = (double)n_in / HIST_BINS, var = 0;
    for (int b = 0; b < HIST_BINS; b++)
        var += (mr->hist[b] - mean) * (mr->hist[b] - mean);
    double cv = sqrt(var / HIST_BINS) / (mean > 0 ? mean : 1);
    if (cv < HIST_CV_THR) {
        *keep_s = HIST_BINS * HIST_BIN_S; /* no clear pattern: keep for the range */
        return;
    }
    double head = 0, tail = HIST_BINS * HIST_BIN_S;
    uint32_t acc = 0;
    int have_head = 0;
    for (int b = 0; b < HIST_BINS; b++) {
        acc += mr->hist[b];
        if (!have_head && acc >= HIST_HEAD_PCT * n_in) {
            head = b * HIST_BIN_S;
            have_head = 1;
        }
        if (acc >= HIST_TAIL_PCT * n_in) {
            tail = (b + 1) * HIST_BIN_S;
            break;
        }
    }
    *prewarm_s = head * (1 - HIST_MARGIN);
    *keep_s = tail * (1 + HIST_MARGIN);
}

static void unload(struct sim *s, int inst, int why)
{
    s->insts[inst].ka_gen = ++s->stamp;
    inst_free(s, inst, why);
}

/* Instance inst has nothing left to run. */
static int inst_went_idle(struct sim *s, int inst)
{
    struct sinst *in = &s->insts[inst];
    in->idle_since = s->now;
    in->ka_gen = ++s->stamp;
    int m = in->model;
    double keep = s->o.keep_alive_s, prewarm = 0;
    if (is_thaw(s) && !(s->o.thaw_off & THAW_SCHED_SIM_OFF_HIST)) {
        hist_policy(s, m, &prewarm, &keep);
        if (in->ka_until > s->now) {
            keep = in->ka_until - s->now;
            prewarm = 0;
        }
        if (prewarm > 0 && s->mrt[m].inflight == 0) {
            /* The next request is not expected before the pre-warm time:
             * free the GPUs now and bring the weights back to DRAM then. */
            unload(s, inst, THAW_SCHED_SIM_GONE_RELEASED);
            s->mrt[m].ka_until = s->now + keep;
            int rc = ev_push(s, s->now + prewarm, EV_PREWARM, m, s->mrt[m].idle_gen);
            return rc < 0 ? rc : drain_pending(s);
        }
    }
    int rc = ev_push(s, s->now + keep, EV_KEEPALIVE, inst, in->ka_gen);
    /* Its GPUs are now room for queued requests of other models. */
    return rc < 0 ? rc : drain_pending(s);
}

/* Thaw's pre-warm: model m is expected soon. Make sure a host has it in
 * DRAM (protected until the keep-alive window ends) and, when a host has
 * GPUs nobody uses, load it there. */
static int prewarm(struct sim *s, int m)
{
    const struct thaw_sched_sim_model *mo = model_of(s, m);
    double until = s->mrt[m].ka_until;
    for (int i = 0; i < s->n_insts; i++) {
        if (s->insts[i].state != I_FREE && s->insts[i].model == m)
            return 0;
    }
    struct thaw_sched_host hosts[256];
    struct thaw_sched_choice ch[256];
    for (int h = 0; h < s->n_hosts; h++)
        fill_host(s, h, m, host_free_gpus(s, h) >= mo->n_gpus, &hosts[h]);
    size_t k = thaw_sched_rank(hosts, (size_t)s->n_hosts, mo->bytes, NULL, ch);
    if (k > 0) {
        int inst = inst_new(s, m, (int)ch[0].host);
        if (inst == NONE)
            return 0;
        struct sinst *in = &s->insts[inst];
        note_dram_copies(s, inst);
        inst_grab_gpus(s, inst, in->n_gpus);
        in->demand = 0;
        in->place_s = s->now;
        in->pred_s = ch[0].est.startup_s;
        in->ka_until = until;
        s->res->n_prewarms++;
        return inst_start_load(s, inst);
    }
    /* No free GPUs: DRAM only, on the host that would load it fastest. */
    for (int h = 0; h < s->n_hosts; h++) {
        if (s->hosts[h].dram[m] == 1) {
            s->hosts[h].dram_protect[m] = until;
            return 0;
        }
        if (s->hosts[h].dram[m] == 2)
            return 0;
    }
    for (int h = 0; h < s->n_hosts; h++)
        fill_host(s, h, m, 1, &hosts[h]);
    k = thaw_sched_rank(hosts, (size_t)s->n_hosts, mo->bytes, NULL, ch);
    if (k == 0)
        return 0;
    int h = (int)ch[0].host;
    s->hosts[h].dram[m] = 2;
    s->hosts[h].dram_protect[m] = until;
    s->res->n_prefetches++;
    return flow_start(s, F_PREFETCH, NONE, h, m, tier_of(s, h, m));
}

/* ------------------------------------------------------------- handlers */

static int handover(struct sim *s, int v);

static int on_arrival(struct sim *s, int r)
{
    int m = (int)s->w->reqs[r].model;
    struct smodel_rt *mr = &s->mrt[m];
    if (mr->inflight == 0 && mr->idle_start >= 0) {
        double gap = s->now - mr->idle_start;
        int b = (int)(gap / HIST_BIN_S);
        if (b >= HIST_BINS)
            mr->hist_oob++;
        else
            mr->hist[b]++;
        mr->hist_n++;
    }
    mr->inflight++;
    mr->idle_gen++;
    if (mr->pending.head != NONE) {
        pend_push(s, m, r, 0);
        return drain_pending(s);
    }
    int rc = dispatch_now(s, r, m);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    if (uses_estimator(s))
        rc = try_migrate(s, m, r, INFINITY);
    else if (s->o.policy == THAW_SCHED_SIM_SHEPHERD)
        rc = try_preempt(s, m, r);
    if (rc < 0)
        return rc;
    if (rc == 0)
        pend_push(s, m, r, 0);
    return 0;
}

static int on_done(struct sim *s, int r)
{
    struct sreq *q = &s->reqs[r];
    int inst = q->inst;
    struct sinst *in = &s->insts[inst];
    int m = in->model;
    list_remove(s, &in->reqs, r);
    set_active(s, in, -1);
    q->state = R_DONE;
    q->inst = NONE;
    const struct thaw_sched_sim_request *wr = &s->w->reqs[r];
    s->startup[s->n_startup++] = q->first_start_s - wr->arrival_s;
    s->e2e[s->n_e2e++] = s->now - wr->arrival_s;
    s->res->n_completed++;
    s->res->n_warm += q->warm;
    struct smodel_rt *mr = &s->mrt[m];
    mr->inflight--;
    if (mr->inflight == 0) {
        mr->idle_start = s->now;
        mr->idle_gen++;
    }
    /* The freed slot goes to a request queued on this instance, then to
     * the model's queue. */
    if (in->n_attached > 0 && in->state == I_READY) {
        for (int x = in->reqs.head; x != NONE; x = s->reqs[x].next) {
            if (s->reqs[x].state == R_ATTACHED)
                return req_run(s, x, inst, 0);
        }
    }
    if (mr->pending.head != NONE && in->mig_dst == NONE) {
        int p = mr->pending.head;
        pend_remove(s, m, p);
        return req_run(s, p, inst, 0);
    }
    if (in->n_active == 0 && in->n_attached == 0) {
        if (in->mig_dst != NONE)
            return handover(s, inst);
        return inst_went_idle(s, inst);
    }
    return 0;
}

/* Give the GPUs of instance v (leaving) to the instance that waits for
 * them, and start its load when it has them all. */
static int give_gpus(struct sim *s, int v)
{
    int n = s->insts[v].waiter;
    int h = s->insts[v].host;
    inst_free(s, v, THAW_SCHED_SIM_GONE_MIGRATED);
    s->insts[v].waiter = NONE;
    if (n == NONE)
        return drain_pending(s);
    struct sinst *N = &s->insts[n];
    N->host = h;
    inst_grab_gpus(s, n, N->n_gpus - N->n_have);
    if (N->n_have < N->n_gpus) {
        /* Defensive: if the GPUs went elsewhere, its requests queue again
         * rather than wait for GPUs nobody will hand over. */
        int m = N->model;
        while (N->reqs.tail != NONE) {
            int q = N->reqs.tail;
            list_remove(s, &N->reqs, q);
            pend_push(s, m, q, 1);
        }
        N->n_attached = 0;
        unload(s, n, THAW_SCHED_SIM_GONE_EVICTED);
        return drain_pending(s);
    }
    int rc = inst_start_load(s, n);
    return rc < 0 ? rc : drain_pending(s);
}

/* Migration hand-over: the destination has loaded and re-prefilled; the
 * source's requests continue there after MIGRATE_BASE_S. */
static int handover(struct sim *s, int v)
{
    struct sinst *V = &s->insts[v];
    int d = V->mig_dst;
    struct sinst *D = &s->insts[d];
    V->mig_dst = NONE;
    D->mig_src = NONE;
    if (D->state == I_RESUME || D->state == I_READY) {
        D->state = I_READY;
        D->ready_s = s->now;
        while (V->reqs.head != NONE) {
            int q = V->reqs.head;
            list_remove(s, &V->reqs, q);
            set_active(s, V, -1);
            struct sreq *Q = &s->reqs[q];
            /* Finish time is unchanged apart from the hand-over pause. */
            double left = Q->start_s + service_s(s, q) - s->now;
            Q->gen++;
            Q->start_s += MIGRATE_BASE_S;
            Q->inst = d;
            list_push(s, &D->reqs, q, 0);
            set_active(s, D, +1);
            if (ev_push(s, s->now + left + MIGRATE_BASE_S, EV_DONE, q, Q->gen) < 0)
                return -ENOMEM;
        }
        /* Free the source first: while it lingers with nothing to run it
         * would look idle, and a placement could take its GPUs from under
         * the instance that waits for them. */
        int rc = give_gpus(s, v);
        if (rc < 0 || D->n_active > 0)
            return rc;
        return inst_went_idle(s, d);
    }
    /* Else the source finished on its own first: the destination goes on
     * loading and becomes an ordinary instance. */
    return give_gpus(s, v);
}

static int on_load_done(struct sim *s, struct sflow *F)
{
    const struct thaw_sched_sim_model *mo = model_of(s, F->model);
    struct shost *H = &s->hosts[F->host];
    double dur = s->now - F->t0;
    /* What the host agent reports: device throughput while the load ran. */
    if (dur > 0) {
        double dev_bps = F->dev_bytes / dur;
        double a = s->o.ewma_alpha;
        if (F->res == RES_SSD)
            H->bw_ssd = thaw_sched_ewma_bw(H->bw_ssd, (uint64_t)dev_bps, 1.0, a);
        else if (F->res == RES_NET)
            H->bw_net = thaw_sched_ewma_bw(H->bw_net, (uint64_t)dev_bps, 1.0, a);
        else if (F->kind == F_LOAD)
            H->bw_pcie = thaw_sched_ewma_bw(H->bw_pcie, (uint64_t)(dev_bps / mo->n_gpus), 1.0, a);
    }
    if (F->tier == THAW_SCHED_TIER_DRAM)
        H->dram_pins[F->model]--;
    if (F->tier == THAW_SCHED_TIER_REMOTE)
        ssd_insert(s, F->host, F->model);
    dram_insert(s, F->host, F->model);
    if (F->kind == F_PREFETCH) {
        if (F->inst == NONE)
            return 0;
        /* Staged for an instance that waits for GPUs: keep the copy until
         * they come. */
        struct sinst *w = &s->insts[F->inst];
        if (w->state != I_WAIT_GPU || !w->hostwait || w->host != F->host || w->model != F->model)
            return 0;
        if (H->dram[F->model] == 1 && w->n_have < w->n_gpus) {
            H->dram_pins[F->model]++;
            w->staged_pin = 1;
        }
        return waiter_try(s, F->inst);
    }

    int inst = F->inst;
    struct sinst *in = &s->insts[inst];
    double actual = s->now - in->place_s;
    in->contention = F->res == RES_NONE ? 1.0 : F->dev_bytes / F->bytes;
    if (in->demand && in->pred_s > 0) {
        struct thaw_sched_error_stats st = { 0 };
        double rel = thaw_sched_error_add(&st, in->pred_s, actual);
        if (s->n_est < s->cap_est) {
            s->est_err[s->n_est++] = fabs(rel);
            s->est_bias_sum += rel;
        }
    }
    if (in->mig_src != NONE) {
        /* Re-prefill the migrating sequences' tokens, then hand over. */
        in->state = I_RESUME;
        double tokens = 0;
        const struct sinst *V = &s->insts[in->mig_src];
        for (int q = V->reqs.head; q != NONE; q = s->reqs[q].next)
            tokens += req_tokens(s, q);
        double resume = tokens / mo->prefill_tok_s;
        s->insts[in->mig_src].mig_stamp = ++s->stamp;
        return ev_push(s, s->now + resume, EV_HANDOVER, in->mig_src,
                       s->insts[in->mig_src].mig_stamp);
    }
    in->state = I_READY;
    in->ready_s = s->now;
    while (in->n_attached > 0 && in->n_active < s->o.max_batch) {
        int q = NONE;
        for (int x = in->reqs.head; x != NONE; x = s->reqs[x].next) {
            if (s->reqs[x].state == R_ATTACHED) {
                q = x;
                break;
            }
        }
        if (q == NONE)
            break;
        if (req_run(s, q, inst, 0) < 0)
            return -ENOMEM;
    }
    /* Fill the remaining slots from the model's queue. */
    struct smodel_rt *mr = &s->mrt[in->model];
    while (mr->pending.head != NONE && in->n_active < s->o.max_batch) {
        int p = mr->pending.head;
        pend_remove(s, in->model, p);
        if (req_run(s, p, inst, 0) < 0)
            return -ENOMEM;
    }
    if (in->n_active == 0)
        return inst_went_idle(s, inst);
    return 0;
}

static int on_keepalive(struct sim *s, int inst, uint32_t gen)
{
    struct sinst *in = &s->insts[inst];
    if (in->state == I_FREE || in->ka_gen != gen || !inst_idle(in))
        return 0;
    unload(s, inst, THAW_SCHED_SIM_GONE_KEEPALIVE);
    return drain_pending(s);
}

/* ------------------------------------------------------------- run */

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p * (double)n) - 1;
    if (p <= 0 || i >= n)
        i = p <= 0 ? 0 : n - 1;
    return v[i];
}

static void sim_free(struct sim *s)
{
    if (s->hosts) {
        for (int h = 0; h < s->n_hosts; h++) {
            struct shost *H = &s->hosts[h];
            thaw_free(H->gpu_owner);
            thaw_free(H->gpu_since);
            thaw_free(H->dram);
            thaw_free(H->ssd);
            thaw_free(H->dram_pins);
            thaw_free(H->dram_last);
            thaw_free(H->ssd_last);
            thaw_free(H->dram_protect);
        }
    }
    thaw_free(s->hosts);
    thaw_free(s->mrt);
    thaw_free(s->reqs);
    thaw_free(s->insts);
    thaw_free(s->flows);
    thaw_free(s->heap);
    thaw_free(s->startup);
    thaw_free(s->e2e);
    thaw_free(s->est_err);
}

static void apply_defaults(struct sim *s, const struct thaw_sched_sim_opts *o)
{
    s->o = *o;
    struct thaw_sched_sim_cluster *c = &s->c;
    *c = o->cluster;
    if (c->n_hosts <= 0)
        c->n_hosts = DEF_HOSTS;
    if (c->gpus_per_host <= 0)
        c->gpus_per_host = DEF_GPUS;
    if (!c->gpu_bytes)
        c->gpu_bytes = DEF_GPU_BYTES;
    if (!c->dram_bytes)
        c->dram_bytes = DEF_DRAM_BYTES;
    if (!c->ssd_bytes)
        c->ssd_bytes = DEF_SSD_BYTES;
    if (!(c->ssd_bps > 0))
        c->ssd_bps = DEF_SSD_BPS;
    if (!(c->pcie_bps > 0))
        c->pcie_bps = DEF_PCIE_BPS;
    if (!(c->nic_bps > 0))
        c->nic_bps = DEF_NIC_BPS;
    if (!(c->store_bps > 0))
        c->store_bps = DEF_STORE_BPS;
    if (s->o.max_batch <= 0)
        s->o.max_batch = DEF_BATCH;
    if (!(s->o.keep_alive_s > 0))
        s->o.keep_alive_s = DEF_KEEP_ALIVE_S;
    if (s->o.ssd_replicas <= 0)
        s->o.ssd_replicas = DEF_REPLICAS;
    if (s->o.noise_sigma < 0)
        s->o.noise_sigma = 0;
    else if (s->o.noise_sigma == 0)
        s->o.noise_sigma = DEF_NOISE;
    if (!(s->o.ewma_alpha > 0 && s->o.ewma_alpha <= 1))
        s->o.ewma_alpha = DEF_ALPHA;
}

static int sim_init(struct sim *s, const struct thaw_sched_sim_workload *w)
{
    size_t nm = w->n_models, nr = w->n_reqs;
    s->w = w;
    s->n_hosts = s->c.n_hosts;
    s->n_gpus = s->c.gpus_per_host;
    if (s->n_hosts > 256 || nm > 1024)
        return THAW_FAIL(THAW_EINVAL, "simulate: at most 256 hosts and 1024 models");
    for (size_t m = 0; m < nm; m++) {
        if (w->models[m].n_gpus > s->n_gpus)
            return THAW_FAIL(THAW_EINVAL, "simulate: model %zu needs %d GPUs, hosts have %d", m,
                             w->models[m].n_gpus, s->n_gpus);
    }
    s->rng = s->o.seed ^ 0x5eed5eed5eedull;
    s->hosts = thaw_calloc((size_t)s->n_hosts, sizeof *s->hosts);
    s->mrt = thaw_calloc(nm ? nm : 1, sizeof *s->mrt);
    s->reqs = thaw_calloc(nr ? nr : 1, sizeof *s->reqs);
    s->n_insts = s->n_hosts * s->n_gpus * 2 + 8;
    s->insts = thaw_calloc((size_t)s->n_insts, sizeof *s->insts);
    s->startup = thaw_malloc((nr ? nr : 1) * sizeof(double));
    s->e2e = thaw_malloc((nr ? nr : 1) * sizeof(double));
    s->cap_est = 2 * nr + 1024;
    s->est_err = thaw_malloc(s->cap_est * sizeof(double));
    if (!s->hosts || !s->mrt || !s->reqs || !s->insts || !s->startup || !s->e2e || !s->est_err)
        return -ENOMEM;
    for (int h = 0; h < s->n_hosts; h++) {
        struct shost *H = &s->hosts[h];
        H->gpu_owner = thaw_malloc((size_t)s->n_gpus * sizeof(int));
        H->gpu_since = thaw_calloc((size_t)s->n_gpus, sizeof(double));
        H->dram = thaw_calloc(nm ? nm : 1, 1);
        H->ssd = thaw_calloc(nm ? nm : 1, 1);
        H->dram_pins = thaw_calloc(nm ? nm : 1, sizeof(int));
        H->dram_last = thaw_calloc(nm ? nm : 1, sizeof(double));
        H->ssd_last = thaw_calloc(nm ? nm : 1, sizeof(double));
        H->dram_protect = thaw_calloc(nm ? nm : 1, sizeof(double));
        if (!H->gpu_owner || !H->gpu_since || !H->dram || !H->ssd || !H->dram_pins ||
            !H->dram_last || !H->ssd_last || !H->dram_protect)
            return -ENOMEM;
        for (int g = 0; g < s->n_gpus; g++)
            H->gpu_owner[g] = NONE;
        /* Hosts are not identical: +-15% on the SSD and NIC, fixed per
         * host, which only the EWMA can learn. */
        H->ssd_mult = 0.85 + 0.3 * rng_unit(s);
        H->nic_mult = 0.85 + 0.3 * rng_unit(s);
    }
    /* Checkpoints start on the local SSD of ssd_replicas hosts (placed
     * round-robin, as ServerlessLLM registers them), nowhere in DRAM. */
    for (size_t m = 0; m < nm; m++) {
        for (int k = 0; k < s->o.ssd_replicas && k < s->n_hosts; k++)
            ssd_insert(s, (int)((m + (size_t)k) % (size_t)s->n_hosts), (int)m);
        s->mrt[m].pending.head = s->mrt[m].pending.tail = NONE;
        s->mrt[m].idle_start = -1;
        s->mrt[m].gone_t = -1;
    }
    double out = 0, in = 0;
    for (size_t r = 0; r < nr; r++) {
        in += w->reqs[r].in_tokens;
        s->reqs[r].prev = s->reqs[r].next = s->reqs[r].inst = NONE;
        s->reqs[r].first_start_s = -1;
        out += w->reqs[r].out_tokens;
    }
    if (s->o.details && nr)
        memset(s->o.details, 0, nr * sizeof *s->o.details);
    s->mean_out_tokens = nr ? out / (double)nr : 0;
    s->mean_in_tokens = nr ? in / (double)nr : 0;
    return 0;
}

int thaw_sched_sim_run(const struct thaw_sched_sim_workload *w, const struct thaw_sched_sim_opts *o,
                       struct thaw_sched_sim_result *out)
{
    struct sim s;
    memset(&s, 0, sizeof s);
    struct thaw_sched_sim_result res;
    memset(&res, 0, sizeof res);
    s.res = &res;
    apply_defaults(&s, o);
    res.policy = s.o.policy;
    res.n_requests = w->n_reqs;
    int rc = sim_init(&s, w);
    if (rc < 0)
        goto out;

    size_t next_arrival = 0;
    for (;;) {
        double t_arr = next_arrival < w->n_reqs ? w->reqs[next_arrival].arrival_s : INFINITY;
        double t_ev = s.n_heap ? s.heap[0].t : INFINITY;
        double t_fl = flows_next_t(&s);
        double t = fmin(t_arr, fmin(t_ev, t_fl));
        /* The run ends with the last completion: keep-alive timers that
         * would fire later do not change any request. */
        if (t == INFINITY || res.n_completed == w->n_reqs)
            break;
        if (t > s.now)
            s.now = t;
        if (t_fl <= t) {
            flows_advance(&s);
            /* Finish every flow that is (numerically) done. */
            for (int f = 0; f < s.n_flows; f++) {
                struct sflow *F = &s.flows[f];
                if (!F->used || F->rem > 1e3 + F->rate * 1e-9)
                    continue;
                struct sflow done = *F;
                F->used = 0;
                flows_rerate(&s);
                rc = on_load_done(&s, &done);
                if (rc < 0)
                    goto out;
            }
            flows_rerate(&s);
            continue;
        }
        if (t_ev <= t) {
            struct sev e = ev_pop(&s);
            flows_advance(&s);
            switch (e.type) {
            case EV_DONE:
                if (s.reqs[e.a].gen == e.gen && s.reqs[e.a].state == R_RUNNING)
                    rc = on_done(&s, e.a);
                break;
            case EV_KEEPALIVE: rc = on_keepalive(&s, e.a, e.gen); break;
            case EV_PREWARM:
                if (s.mrt[e.a].idle_gen == e.gen && s.mrt[e.a].inflight == 0)
                    rc = prewarm(&s, e.a);
                break;
            case EV_HANDOVER:
                if (s.insts[e.a].state != I_FREE && s.insts[e.a].mig_dst != NONE &&
                    s.insts[e.a].mig_stamp == e.gen)
                    rc = handover(&s, e.a);
                break;
            }
            if (rc < 0)
                goto out;
            continue;
        }
        flows_advance(&s);
        rc = on_arrival(&s, (int)next_arrival++);
        if (rc < 0)
            goto out;
    }

    /* Close the books: GPUs still held count until the end. */
    for (int i = 0; i < s.n_insts; i++) {
        if (s.insts[i].state != I_FREE) {
            if (s.insts[i].n_active > 0)
                res.busy_gpu_s += (s.now - s.insts[i].busy_since) * s.insts[i].n_gpus;
            gpu_release_all(&s, i);
        }
    }
    res.sim_end_s = s.now;
    qsort(s.startup, s.n_startup, sizeof(double), cmp_double);
    qsort(s.e2e, s.n_e2e, sizeof(double), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < s.n_startup; i++)
        sum += s.startup[i];
    res.startup_mean = s.n_startup ? sum / (double)s.n_startup : 0;
    res.startup_p50 = pct(s.startup, s.n_startup, 0.50);
    res.startup_p99 = pct(s.startup, s.n_startup, 0.99);
    res.e2e_p50 = pct(s.e2e, s.n_e2e, 0.50);
    res.e2e_p99 = pct(s.e2e, s.n_e2e, 0.99);
    res.est_n = s.n_est;
    if (s.n_est) {
        res.est_bias = s.est_bias_sum / (double)s.n_est;
        qsort(s.est_err, s.n_est, sizeof(double), cmp_double);
        res.est_mdape = pct(s.est_err, s.n_est, 0.50);
    }
    *out = res;
    rc = 0;
out:
    sim_free(&s);
    return rc;
}
