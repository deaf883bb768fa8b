/*
 * estimate.c - the start-up time estimator (DESIGN.md, Placement): for one
 * host and one checkpoint, how long until the model can run there, and why.
 * Pure functions of the host's state; PostgreSQL supplies that state.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/scheduler_int.h"

const char *thaw_sched_tier_name(enum thaw_sched_tier t)
{
    switch (t) {
    case THAW_SCHED_TIER_WARM: return "warm";
    case THAW_SCHED_TIER_DRAM: return "dram";
    case THAW_SCHED_TIER_SSD: return "ssd";
    case THAW_SCHED_TIER_REMOTE: return "remote";
    }
    return "unknown";
}

/* v when positive and finite, else the default d. */
static double or_default(double v, double d)
{
    return (v > 0 && isfinite(v)) ? v : d;
}

/* Seconds to move bytes at bps (a default already applied, so bps > 0). */
static double xfer_s(uint64_t bytes, double bps)
{
    return bytes ? (double)bytes / bps : 0.0;
}

void scheduler_estimate_reason(struct thaw_sched_estimate *e)
{
    if (e->tier == THAW_SCHED_TIER_WARM)
        snprintf(e->reason, sizeof e->reason, "warm + queue %.3gs", e->queue_s);
    else if (e->gpu_s > 0)
        snprintf(e->reason, sizeof e->reason, "%s %.3gs%s %.3gs + queue %.3gs",
                 thaw_sched_tier_name(e->tier), e->load_s,
                 e->migrate ? " + migrate" : " + gpu wait", e->gpu_s, e->queue_s);
    else
        snprintf(e->reason, sizeof e->reason, "%s %.3gs + queue %.3gs",
                 thaw_sched_tier_name(e->tier), e->load_s, e->queue_s);
}

void thaw_sched_estimate(const struct thaw_sched_host *h, uint64_t ckpt_bytes,
                         const struct thaw_sched_params *p, struct thaw_sched_estimate *out)
{
    scheduler_estimate_numbers(h, ckpt_bytes, p, out);
    scheduler_estimate_reason(out);
}

void scheduler_estimate_numbers(const struct thaw_sched_host *h, uint64_t ckpt_bytes,
                                const struct thaw_sched_params *p,
                                struct thaw_sched_estimate *out)
{
    static const struct thaw_sched_params zero;
    if (!p)
        p = &zero;
    memset(out, 0, sizeof *out);
    /* A negative or NaN wait from a confused reporter must not make a host
     * look better than a warm one. */
    out->queue_s = (h->queue_wait_s > 0 && isfinite(h->queue_wait_s)) ? h->queue_wait_s : 0.0;

    if (h->warm) {
        out->tier = THAW_SCHED_TIER_WARM;
        out->startup_s = out->queue_s;
        return;
    }

    double dram_bps = or_default(h->dram_to_gpu_bps, or_default(p->default_dram_to_gpu_bps,
                                                                THAW_SCHED_DRAM_TO_GPU_BPS));
    double ssd_bps = or_default(h->ssd_bps, or_default(p->default_ssd_bps, THAW_SCHED_SSD_BPS));
    double net_bps = or_default(h->network_bps,
                                or_default(p->default_network_bps, THAW_SCHED_NETWORK_BPS));

    /* The nearest tier supplies what it holds, the next tier the rest. */
    uint64_t from_dram = h->ckpt_dram_bytes < ckpt_bytes ? h->ckpt_dram_bytes : ckpt_bytes;
    uint64_t left = ckpt_bytes - from_dram;
    uint64_t from_ssd = h->ckpt_ssd_bytes < left ? h->ckpt_ssd_bytes : left;
    uint64_t from_net = left - from_ssd;
    out->load_s = xfer_s(from_dram, dram_bps) + xfer_s(from_ssd, ssd_bps) +
                  xfer_s(from_net, net_bps);
    if (from_net)
        out->tier = THAW_SCHED_TIER_REMOTE;
    else if (from_ssd)
        out->tier = THAW_SCHED_TIER_SSD;
    else
        out->tier = THAW_SCHED_TIER_DRAM;

    /* GPU memory for the weights: move the running sequences elsewhere or
     * wait for them to finish, whichever is sooner. */
    if (h->gpu_free_bytes < ckpt_bytes) {
        double a = or_default(p->migrate_s_per_token, THAW_SCHED_MIGRATE_S_PER_TOKEN);
        double b = or_default(p->migrate_base_s, THAW_SCHED_MIGRATE_BASE_S);
        double migrate_s = a * (double)h->running_tokens + b;
        if (h->gpu_release_s > 0 && h->gpu_release_s < migrate_s) {
            out->gpu_s = h->gpu_release_s;
        } else {
            out->gpu_s = migrate_s;
            out->migrate = 1;
        }
    }
    out->startup_s = out->load_s + out->queue_s + out->gpu_s;
}

void thaw_sched_estimate_staged(const struct thaw_sched_host *h, uint64_t ckpt_bytes,
                                const struct thaw_sched_params *p,
                                struct thaw_sched_estimate *out)
{
    static const struct thaw_sched_params zero;
    if (!p)
        p = &zero;
    thaw_sched_estimate(h, ckpt_bytes, p, out);
    if (h->warm || out->gpu_s <= 0 || out->migrate)
        return;
    /* While the GPUs free up, the host agent stages the bytes that are not
     * in DRAM into its pool; only the DRAM -> GPU copy remains after. */
    double dram_bps = or_default(h->dram_to_gpu_bps, or_default(p->default_dram_to_gpu_bps,
                                                                THAW_SCHED_DRAM_TO_GPU_BPS));
    uint64_t from_dram = h->ckpt_dram_bytes < ckpt_bytes ? h->ckpt_dram_bytes : ckpt_bytes;
    double to_gpu_s = xfer_s(ckpt_bytes, dram_bps);
    double stage_s = out->queue_s + out->load_s - xfer_s(from_dram, dram_bps);
    out->startup_s = fmax(out->gpu_s, stage_s) + to_gpu_s;
    snprintf(out->reason, sizeof out->reason,
             "%s staged %.3gs during gpu wait %.3gs + dram->gpu %.3gs",
             thaw_sched_tier_name(out->tier), stage_s, out->gpu_s, to_gpu_s);
}
