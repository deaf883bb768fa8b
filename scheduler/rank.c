/*
 * rank.c - rank hosts for one checkpoint by estimated start-up time,
 * leaving out hosts whose heartbeat is stale (their state is not to be
 * trusted, and they may be gone).
 */
#include <math.h>
#include <stdlib.h>

#include "scheduler/scheduler_int.h"

/* Ascending estimate; equal estimates keep input order (qsort is not
 * stable, so the index breaks ties). */
static int by_estimate(const void *pa, const void *pb)
{
    const struct thaw_sched_choice *a = pa, *b = pb;
    if (a->est.startup_s < b->est.startup_s)
        return -1;
    if (a->est.startup_s > b->est.startup_s)
        return 1;
    return (a->host > b->host) - (a->host < b->host);
}

size_t thaw_sched_rank(const struct thaw_sched_host *hosts, size_t n_hosts, uint64_t ckpt_bytes,
                       const struct thaw_sched_params *p, struct thaw_sched_choice *out)
{
    double max_age = THAW_SCHED_MAX_HEARTBEAT_AGE_S;
    if (p && p->max_heartbeat_age_s > 0)
        max_age = p->max_heartbeat_age_s;
    size_t n = 0;
    for (size_t i = 0; i < n_hosts; i++) {
        /* NaN age (never seen) counts as stale. */
        if (!(hosts[i].heartbeat_age_s <= max_age))
            continue;
        out[n].host = i;
        scheduler_estimate_numbers(&hosts[i], ckpt_bytes, p, &out[n].est);
        n++;
    }
    if (n > 1)
        qsort(out, n, sizeof out[0], by_estimate);
    /* Reasons are words for people: formatting one for each of 1,000 hosts
     * cost more CPU than the estimates and the sort together (perf of
     * bench/sched_scale.c), so only the leaders get one. */
    for (size_t k = 0; k < n && k < THAW_SCHED_RANK_REASONS; k++)
        scheduler_estimate_reason(&out[k].est);
    return n;
}
