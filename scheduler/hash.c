/*
 * hash.c - degraded placement (DESIGN.md, Placement: "PostgreSQL down means
 * degraded ranking, never a failed invocation"): the live-host list that
 * thaw-scheduler caches while PostgreSQL answers, and rendezvous hashing of
 * a checkpoint over that list once it does not. Rendezvous hashing needs no
 * ring to build and ranks every host, so the runner-up is the same host
 * that would take the key if the first one left.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler_int.h"

int thaw_sched_live_hosts(struct thaw_sched_db *db, double max_age_s,
                          struct thaw_sched_host_ref **out, size_t *n_out)
{
    if (!db || !out || !n_out)
        return THAW_FAIL(THAW_EINVAL, "live hosts need a database");
    if (!(max_age_s > 0))
        max_age_s = THAW_SCHED_MAX_HEARTBEAT_AGE_S;
    char age[32];
    snprintf(age, sizeof age, "%.17g", max_age_s);
    const char *params[1] = { age };
    PGresult *r;
    int rc = scheduler_exec(db->conn,
                            "SELECT id, address FROM hosts WHERE heartbeat > now() -"
                            " make_interval(secs => $1::float8) ORDER BY id",
                            1, params, PGRES_TUPLES_OK, "reading live hosts", &r);
    if (rc < 0)
        return rc;
    size_t n = (size_t)PQntuples(r);
    struct thaw_sched_host_ref *hosts = NULL;
    if (n) {
        hosts = thaw_calloc(n, sizeof *hosts);
        if (!hosts) {
            PQclear(r);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        hosts[i].host_id = scheduler_col_i64(r, (int)i, 0);
        snprintf(hosts[i].address, sizeof hosts[i].address, "%s", PQgetvalue(r, (int)i, 1));
    }
    PQclear(r);
    *out = hosts;
    *n_out = n;
    return 0;
}

/* Weight of (key, address): xxh3 over "key\0address". Long inputs are
 * hashed in two steps, which is as good a weight and needs no buffer. */
static uint64_t weight(const char *key, size_t key_len, const char *addr)
{
    char buf[512];
    size_t addr_len = strlen(addr);
    if (key_len + 1 + addr_len <= sizeof buf) {
        memcpy(buf, key, key_len);
        buf[key_len] = 0;
        memcpy(buf + key_len + 1, addr, addr_len);
        return thaw_xxh3(buf, key_len + 1 + addr_len);
    }
    uint64_t hk = thaw_xxh3(key, key_len);
    uint64_t ha = thaw_xxh3(addr, addr_len);
    uint64_t both[2] = { hk, ha };
    return thaw_xxh3(both, sizeof both);
}

/* Whether (wa, a) ranks before (wb, b): heavier first; equal weights
 * (improbable) by address, then index, so the order never depends on the
 * input order of distinct hosts. */
static int before(const struct thaw_sched_host_ref *hosts, uint64_t wa, size_t a, uint64_t wb,
                  size_t b)
{
    if (wa != wb)
        return wa > wb;
    int c = strcmp(hosts[a].address, hosts[b].address);
    return c ? c < 0 : a < b;
}

size_t thaw_sched_hash_rank(const struct thaw_sched_host_ref *hosts, size_t n_hosts,
                            const char *key, size_t *order, size_t max_order)
{
    if (!hosts || !n_hosts || !key || !order || !max_order)
        return 0;
    size_t key_len = strlen(key);
    /* Partial selection: keep the cap heaviest sorted in order[] with their
     * weights beside, so this needs no allocation. */
    uint64_t w[THAW_SCHED_HASH_MAX_ORDER];
    size_t cap = max_order < THAW_SCHED_HASH_MAX_ORDER ? max_order : THAW_SCHED_HASH_MAX_ORDER;
    size_t n_top = 0;
    for (size_t i = 0; i < n_hosts; i++) {
        uint64_t wi = weight(key, key_len, hosts[i].address);
        size_t at = n_top;
        while (at > 0 && before(hosts, wi, i, w[at - 1], order[at - 1]))
            at--;
        if (at >= cap)
            continue;
        size_t last = n_top < cap ? n_top : cap - 1; /* the slot that is filled or dropped */
        memmove(&w[at + 1], &w[at], (last - at) * sizeof w[0]);
        memmove(&order[at + 1], &order[at], (last - at) * sizeof order[0]);
        w[at] = wi;
        order[at] = i;
        if (n_top < cap)
            n_top++;
    }
    return n_top;
}
