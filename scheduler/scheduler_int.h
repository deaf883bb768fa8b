/*
 * scheduler_int.h - private to the scheduler library: the table of
 * migrations that CMake generates from the .sql files in schemas/migrations/
 * (cmake/embed_sql.cmake), and the libpq error helper.
 */
#ifndef SCHEDULER_INT_H
#define SCHEDULER_INT_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "scheduler/thaw_scheduler.h"

/* One connection to the locality store (thaw_sched_db_open). */
struct thaw_sched_db {
    PGconn *conn;
    int prepared;       /* the decision statements are prepared on conn (place.c) */
    uint64_t n_placed;  /* placements committed on conn: paces the expired-row cleanup */
};

/* One embedded migration: version from its NNNN_ prefix, ascending. */
struct scheduler_migration {
    int version;
    const char *name; /* file name without .sql, e.g. "0001_init" */
    const char *sql;  /* NUL-terminated script, run as one simple query */
};

extern const struct scheduler_migration scheduler_migrations[];
extern const size_t scheduler_n_migrations;

/* Turn a libpq result that is not `ok` into THAW_FAIL(THAW_EPG) naming what
 * failed, clear it, and goto fail. The result is cleared on success too. */
#define THAW_PG_TRY(res, ok, what)                                                             \
    do {                                                                                       \
        PGresult *r_ = (res);                                                                  \
        if (PQresultStatus(r_) != (ok)) {                                                      \
            rc = THAW_FAIL(THAW_EPG, "%s: %s", (what), PQresultErrorMessage(r_));              \
            PQclear(r_);                                                                       \
            goto fail;                                                                         \
        }                                                                                      \
        PQclear(r_);                                                                           \
    } while (0)

/* Run a parameterised query (text parameters and results) expecting `ok`;
 * on failure the result is cleared, *res is NULL and THAW_EPG names what
 * failed. */
int scheduler_exec(PGconn *c, const char *sql, int n, const char *const *params,
                   ExecStatusType ok, const char *what, PGresult **res);

/* Column col of row `row` as an integer or a double (text results). */
int64_t scheduler_col_i64(const PGresult *r, int row, int col);
double scheduler_col_f64(const PGresult *r, int row, int col);

/* 1 when s equals one of names[0..n), else 0. */
int scheduler_one_of(const char *s, const char *const *names, size_t n);

/* Run "SELECT 1" on db: 0 when PostgreSQL answers, else THAW_EPG. Owner
 * thread of db. */
int scheduler_db_ping(struct thaw_sched_db *db);

/* thaw_sched_estimate in two halves: the numbers (reason left empty), and
 * the reason from the numbers (rank.c formats it only for the leaders). */
void scheduler_estimate_numbers(const struct thaw_sched_host *h, uint64_t ckpt_bytes,
                                const struct thaw_sched_params *p,
                                struct thaw_sched_estimate *out);
void scheduler_estimate_reason(struct thaw_sched_estimate *e);

#endif /* SCHEDULER_INT_H */
