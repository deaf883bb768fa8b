/*
 * metrics.c - Prometheus text exposition of the runtime's counters: requests
 * by API and status, cold starts and load time, time to first token,
 * tokens, and the engine's batch size per step.
 */
#include <stdio.h>
#include <string.h>

#include "runtime/runtime_int.h"

#define MAX_CODES 16

static const double ttft_le[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
#define N_TTFT (sizeof ttft_le / sizeof ttft_le[0])
static const unsigned batch_le[] = { 1, 2, 4, 8, 16, 32, 64, 128 };
#define N_BATCH (sizeof batch_le / sizeof batch_le[0])

static struct {
    pthread_mutex_t mu;
    struct {
        char api[16];
        int code;
        unsigned long long n;
    } req[MAX_CODES];
    unsigned long long cold, loads, prompt_tok, completion_tok;
    double load_s_last, load_s_sum;
    unsigned long long ttft_bucket[N_TTFT], ttft_count;
    double ttft_sum;
    unsigned long long batch_bucket[N_BATCH], batch_count, batch_sum;
} M = { .mu = PTHREAD_MUTEX_INITIALIZER };

void rt_metrics_request(const char *api, int code)
{
    pthread_mutex_lock(&M.mu);
    for (int i = 0; i < MAX_CODES; i++) {
        if (M.req[i].n && M.req[i].code == code && strcmp(M.req[i].api, api) == 0) {
            M.req[i].n++;
            break;
        }
        if (!M.req[i].n) {
            snprintf(M.req[i].api, sizeof M.req[i].api, "%s", api);
            M.req[i].code = code;
            M.req[i].n = 1;
            break;
        }
    }
    pthread_mutex_unlock(&M.mu);
}

void rt_metrics_load(double seconds, int cold)
{
    pthread_mutex_lock(&M.mu);
    M.loads++;
    M.cold += cold != 0;
    M.load_s_last = seconds;
    M.load_s_sum += seconds;
    pthread_mutex_unlock(&M.mu);
}

void rt_metrics_ttft(double s)
{
    pthread_mutex_lock(&M.mu);
    for (size_t i = 0; i < N_TTFT; i++)
        if (s <= ttft_le[i])
            M.ttft_bucket[i]++;
    M.ttft_count++;
    M.ttft_sum += s;
    pthread_mutex_unlock(&M.mu);
}

void rt_metrics_tokens(uint64_t prompt, uint64_t completion)
{
    pthread_mutex_lock(&M.mu);
    M.prompt_tok += prompt;
    M.completion_tok += completion;
    pthread_mutex_unlock(&M.mu);
}

void rt_metrics_batch(unsigned running)
{
    pthread_mutex_lock(&M.mu);
    for (size_t i = 0; i < N_BATCH; i++)
        if (running <= batch_le[i])
            M.batch_bucket[i]++;
    M.batch_count++;
    M.batch_sum += running;
    pthread_mutex_unlock(&M.mu);
}

char *rt_metrics_render(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    unsigned active, cap;
    rt_gen_load(&active, &cap);
    pthread_mutex_lock(&M.mu);
    fprintf(f, "# HELP thaw_runtime_requests_total Requests answered, by API and HTTP status.\n"
               "# TYPE thaw_runtime_requests_total counter\n");
    for (int i = 0; i < MAX_CODES && M.req[i].n; i++)
        fprintf(f, "thaw_runtime_requests_total{api=\"%s\",code=\"%d\"} %llu\n", M.req[i].api,
                M.req[i].code, M.req[i].n);
    fprintf(f, "# HELP thaw_runtime_cold_starts_total Model loads that served a request cold.\n"
               "# TYPE thaw_runtime_cold_starts_total counter\n"
               "thaw_runtime_cold_starts_total %llu\n", M.cold);
    fprintf(f, "# HELP thaw_runtime_load_seconds Time of the last model load.\n"
               "# TYPE thaw_runtime_load_seconds gauge\n"
               "thaw_runtime_load_seconds %.6f\n", M.load_s_last);
    fprintf(f, "# HELP thaw_runtime_loads_total Model loads.\n"
               "# TYPE thaw_runtime_loads_total counter\n"
               "thaw_runtime_loads_total %llu\n", M.loads);
    fprintf(f, "# HELP thaw_runtime_ttft_seconds Time from request to first token.\n"
               "# TYPE thaw_runtime_ttft_seconds histogram\n");
    for (size_t i = 0; i < N_TTFT; i++)
        fprintf(f, "thaw_runtime_ttft_seconds_bucket{le=\"%g\"} %llu\n", ttft_le[i],
                M.ttft_bucket[i]);
    fprintf(f, "thaw_runtime_ttft_seconds_bucket{le=\"+Inf\"} %llu\n"
               "thaw_runtime_ttft_seconds_sum %.6f\nthaw_runtime_ttft_seconds_count %llu\n",
            M.ttft_count, M.ttft_sum, M.ttft_count);
    fprintf(f, "# HELP thaw_runtime_tokens_total Tokens processed.\n"
               "# TYPE thaw_runtime_tokens_total counter\n"
               "thaw_runtime_tokens_total{kind=\"prompt\"} %llu\n"
               "thaw_runtime_tokens_total{kind=\"completion\"} %llu\n",
            M.prompt_tok, M.completion_tok);
    fprintf(f, "# HELP thaw_runtime_batch_size Sequences in each engine step.\n"
               "# TYPE thaw_runtime_batch_size histogram\n");
    for (size_t i = 0; i < N_BATCH; i++)
        fprintf(f, "thaw_runtime_batch_size_bucket{le=\"%u\"} %llu\n", batch_le[i],
                M.batch_bucket[i]);
    fprintf(f, "thaw_runtime_batch_size_bucket{le=\"+Inf\"} %llu\n"
               "thaw_runtime_batch_size_sum %llu\nthaw_runtime_batch_size_count %llu\n",
            M.batch_count, M.batch_sum, M.batch_count);
    pthread_mutex_unlock(&M.mu);
    fprintf(f, "# HELP thaw_runtime_requests_in_flight Requests running or queued.\n"
               "# TYPE thaw_runtime_requests_in_flight gauge\n"
               "thaw_runtime_requests_in_flight %u\n"
               "# HELP thaw_runtime_capacity Requests that may run or wait at once.\n"
               "# TYPE thaw_runtime_capacity gauge\n"
               "thaw_runtime_capacity %u\n", active, cap);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    char *out = thaw_strdup(buf);
    free(buf);
    return out;
}
