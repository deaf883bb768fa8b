/*
 * usage.c - the usage ledger: one row per activation in usage_ledger,
 * written at most once however often the runtime or an invoker retries
 * (INSERT ... ON CONFLICT (activation_id) DO NOTHING).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/scheduler_int.h"

static const char *const load_tiers[] = { "none", "gpu", "dram", "ssd", "peer", "remote" };

int scheduler_one_of(const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return 1;
    return 0;
}

int thaw_sched_usage_record(struct thaw_sched_db *db, const struct thaw_sched_usage *u,
                            int *inserted)
{
    if (!db || !u)
        return THAW_FAIL(THAW_EINVAL, "usage needs a database and a record");
    if (!u->activation_id || !u->activation_id[0])
        return THAW_FAIL(THAW_EINVAL, "\"activation_id\": required, a non-empty string");
    if (strlen(u->activation_id) > 256)
        return THAW_FAIL(THAW_EINVAL, "\"activation_id\": longer than 256 bytes");
    const char *tier = u->load_tier ? u->load_tier : "none";
    if (!scheduler_one_of(tier, load_tiers, sizeof load_tiers / sizeof load_tiers[0]))
        return THAW_FAIL(THAW_EINVAL,
                         "\"load_tier\": \"%s\" is not one of none, gpu, dram, ssd, peer, remote",
                         tier);
    if (u->prompt_tokens > INT32_MAX)
        return THAW_FAIL(THAW_EINVAL, "\"prompt_tokens\": above %d", INT32_MAX);
    if (u->completion_tokens > INT32_MAX)
        return THAW_FAIL(THAW_EINVAL, "\"completion_tokens\": above %d", INT32_MAX);
    if (!(u->load_ms >= 0) || !isfinite(u->load_ms))
        return THAW_FAIL(THAW_EINVAL, "\"load_ms\": want a finite number >= 0");
    if (!(u->gpu_ms >= 0) || !isfinite(u->gpu_ms))
        return THAW_FAIL(THAW_EINVAL, "\"gpu_ms\": want a finite number >= 0");

    char prompt[16], completion[16], load_ms[40], gpu_ms[40];
    snprintf(prompt, sizeof prompt, "%" PRIu32, u->prompt_tokens);
    snprintf(completion, sizeof completion, "%" PRIu32, u->completion_tokens);
    snprintf(load_ms, sizeof load_ms, "%.17g", u->load_ms);
    snprintf(gpu_ms, sizeof gpu_ms, "%.17g", u->gpu_ms);
    const char *params[10] = {
        u->activation_id, u->ns ? u->ns : "", u->action ? u->action : "",
        u->model ? u->model : "", prompt, completion, tier, load_ms, gpu_ms,
        u->cold ? "true" : "false",
    };
    PGresult *r;
    int rc = scheduler_exec(db->conn,
                            "INSERT INTO usage_ledger (activation_id, namespace, action, model,"
                            " prompt_tokens, completion_tokens, load_tier, load_ms, gpu_ms, cold)"
                            " VALUES ($1, $2, $3, $4, $5::integer, $6::integer, $7, $8::float8,"
                            " $9::float8, $10::boolean)"
                            " ON CONFLICT (activation_id) DO NOTHING",
                            10, params, PGRES_COMMAND_OK, "recording usage", &r);
    if (rc < 0)
        return rc;
    /* "INSERT 0 1" when new, "INSERT 0 0" when the activation was there. */
    int is_new = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    if (inserted)
        *inserted = is_new;
    return 0;
}
