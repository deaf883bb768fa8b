/*
 * ledger.c - one usage row per activation in PostgreSQL (THAW_PG_URL), for
 * billing. A writer thread drains a bounded queue so a slow or absent
 * database never delays a reply; rows are idempotent on the activation id
 * (the scheduler library's insert), so a retry after a lost reply is safe.
 */
#include <string.h>

#include "runtime/runtime_int.h"
#include "scheduler/thaw_scheduler.h"

#define LEDGER_QUEUE 1024

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int on, stop;
    char *url;
    struct rt_usage q[LEDGER_QUEUE];
    unsigned head, n;
} L = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static int write_row(struct thaw_sched_db **db, const struct rt_usage *u)
{
    int rc = 0;
    if (!*db && (rc = thaw_sched_db_open(L.url, db)))
        return rc;
    struct thaw_sched_usage su = {
        .activation_id = u->activation_id, .ns = u->ns, .action = u->action, .model = u->model,
        .prompt_tokens = u->prompt_tokens, .completion_tokens = u->completion_tokens,
        .load_tier = u->tier[0] ? u->tier : NULL, .load_ms = u->load_ms, .cold = u->cold,
    };
    int inserted = 0;
    rc = thaw_sched_usage_record(*db, &su, &inserted);
    if (rc == THAW_EPG) { /* connection may be gone: reconnect next time */
        thaw_sched_db_close(*db);
        *db = NULL;
    }
    return rc;
}

static void *ledger_main(void *arg)
{
    (void)arg;
    struct thaw_sched_db *db = NULL;
    unsigned backoff_ms = 100;
    pthread_mutex_lock(&L.mu);
    for (;;) {
        while (!L.n && !L.stop)
            pthread_cond_wait(&L.cv, &L.mu);
        if (!L.n)
            break;
        struct rt_usage u = L.q[L.head];
        pthread_mutex_unlock(&L.mu);
        int rc = write_row(&db, &u);
        pthread_mutex_lock(&L.mu);
        if (rc == 0 || rc == THAW_EINVAL) {
            if (rc)
                THAW_LOG(THAW_LOG_WARN, "ledger", "row_rejected", "activation=%s err=\"%s\"",
                         u.activation_id, thaw_errmsg());
            L.head = (L.head + 1) % LEDGER_QUEUE;
            L.n--;
            backoff_ms = 100;
        } else {
            THAW_LOG(THAW_LOG_WARN, "ledger", "write_failed", "activation=%s retry_ms=%u err=\"%s\"",
                     u.activation_id, backoff_ms, thaw_errmsg());
            if (L.stop)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += backoff_ms / 1000;
            ts.tv_nsec += (long)(backoff_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&L.cv, &L.mu, &ts);
            if (backoff_ms < 5000)
                backoff_ms *= 2;
        }
    }
    pthread_mutex_unlock(&L.mu);
    thaw_sched_db_close(db);
    return NULL;
}

int rt_ledger_start(const char *pg_url)
{
    if (!pg_url || !*pg_url)
        return 0;
    L.url = thaw_strdup(pg_url);
    if (!L.url)
        return -ENOMEM;
    int rc = pthread_create(&L.thread, NULL, ledger_main, NULL);
    if (rc) {
        THAW_FREE(L.url);
        return THAW_FAIL(-rc, "cannot start the ledger thread");
    }
    L.on = 1;
    return 0;
}

void rt_ledger_add(const struct rt_usage *u)
{
    if (!L.on)
        return;
    pthread_mutex_lock(&L.mu);
    if (L.n == LEDGER_QUEUE) {
        THAW_LOG(THAW_LOG_WARN, "ledger", "queue_full", "activation=%s dropped=1", u->activation_id);
    } else {
        L.q[(L.head + L.n) % LEDGER_QUEUE] = *u;
        L.n++;
        pthread_cond_signal(&L.cv);
    }
    pthread_mutex_unlock(&L.mu);
}

void rt_ledger_stop(double wait_s)
{
    if (!L.on)
        return;
    double until = thaw_now_s() + wait_s;
    pthread_mutex_lock(&L.mu);
    while (L.n && thaw_now_s() < until) {
        pthread_mutex_unlock(&L.mu);
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&L.mu);
    }
    if (L.n)
        THAW_LOG(THAW_LOG_WARN, "ledger", "unwritten_at_exit", "rows=%u", L.n);
    L.n = 0;
    L.stop = 1;
    pthread_cond_signal(&L.cv);
    pthread_mutex_unlock(&L.mu);
    pthread_join(L.thread, NULL);
    THAW_FREE(L.url);
    L.on = 0;
}
