/*
 * feedback.c - what the estimator learns from real loads: an EWMA of each
 * tier's bandwidth, and running statistics of its prediction error.
 */
#include <math.h>

#include "scheduler/scheduler_int.h"

#define DEFAULT_ALPHA 0.2

double thaw_sched_ewma_bw(double cur_bps, uint64_t bytes, double seconds, double alpha)
{
    if (bytes == 0 || !(seconds > 0) || !isfinite(seconds))
        return cur_bps;
    if (!(alpha > 0 && alpha <= 1))
        alpha = DEFAULT_ALPHA;
    double sample = (double)bytes / seconds;
    if (!(cur_bps > 0) || !isfinite(cur_bps))
        return sample;
    return alpha * sample + (1 - alpha) * cur_bps;
}

double thaw_sched_error_add(struct thaw_sched_error_stats *s, double predicted_s, double actual_s)
{
    if (!(actual_s > 0) || !isfinite(actual_s) || !isfinite(predicted_s))
        return 0.0;
    double rel = (predicted_s - actual_s) / actual_s;
    double abs_rel = fabs(rel);
    s->n++;
    /* Incremental means: no sum to overflow or lose precision. */
    s->mean_rel += (rel - s->mean_rel) / (double)s->n;
    s->mean_abs_rel += (abs_rel - s->mean_abs_rel) / (double)s->n;
    if (abs_rel > s->max_abs_rel)
        s->max_abs_rel = abs_rel;
    return rel;
}
