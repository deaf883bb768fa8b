/*
 * scheduler_int.h - private to the scheduler library: the table of
 * migrations that CMake generates from the .sql files in schemas/migrations/
 * (cmake/embed_sql.cmake), and the libpq error helper.
 */
#ifndef SCHEDULER_INT_H
#define SCHEDULER_INT_H

#include <stddef.h>

#include "scheduler/thaw_scheduler.h"

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

/* Run "SELECT 1" on db: 0 when PostgreSQL answers, else THAW_EPG. Owner
 * thread of db. */
int scheduler_db_ping(struct thaw_sched_db *db);

#endif /* SCHEDULER_INT_H */
