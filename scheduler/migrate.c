/*
 * migrate.c - apply the embedded schema migrations to PostgreSQL. Each
 * pending migration runs in its own transaction that first takes a
 * transaction-level advisory lock, so concurrent migrators serialise and the
 * loser sees the version already recorded and skips it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "scheduler/scheduler_int.h"

/* Advisory lock key of the migrator: "thawSCHM" as a big-endian int64. */
#define MIGRATE_LOCK_KEY "8388061471103469645"

/* Created inside each migration's locked transaction, so two migrators on an
 * empty database cannot race on CREATE TABLE. */
static const char create_versions_sql[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                          " version integer PRIMARY KEY,"
                                          " name text NOT NULL DEFAULT '',"
                                          " applied_at timestamptz NOT NULL DEFAULT now())";

/* Notices ("relation exists, skipping") are not errors: log them at debug. */
static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    THAW_LOG(THAW_LOG_DEBUG, "scheduler", "pg_notice", "msg=\"%.*s\"", (int)strcspn(msg, "\n"),
             msg);
}

/* Apply migration m unless present. Sets *applied to 1 when it ran. */
static int apply_one(PGconn *c, const struct scheduler_migration *m, int *applied)
{
    int rc = 0;
    char ver[16];
    const char *params[2] = { ver, m->name };

    *applied = 0;
    snprintf(ver, sizeof ver, "%d", m->version);
    THAW_PG_TRY(PQexec(c, "BEGIN"), PGRES_COMMAND_OK, "BEGIN");
    THAW_PG_TRY(PQexec(c, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")"), PGRES_TUPLES_OK,
                "advisory lock");
    THAW_PG_TRY(PQexec(c, create_versions_sql), PGRES_COMMAND_OK, "create schema_migrations");

    PGresult *r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1::integer", 1,
                               NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = THAW_FAIL(THAW_EPG, "reading schema_migrations: %s", PQresultErrorMessage(r));
        PQclear(r);
        goto fail;
    }
    int present = PQntuples(r) > 0;
    PQclear(r);
    if (!present) {
        /* A multi-statement script runs as one simple query; the result is
         * that of its last statement, and the first error aborts it. */
        r = PQexec(c, m->sql);
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            rc = THAW_FAIL(THAW_EPG, "migration %s: %s", m->name, PQresultErrorMessage(r));
            PQclear(r);
            goto fail;
        }
        PQclear(r);
        THAW_PG_TRY(PQexecParams(c,
                                 "INSERT INTO schema_migrations (version, name)"
                                 " VALUES ($1::integer, $2)",
                                 2, NULL, params, NULL, NULL, 0),
                    PGRES_COMMAND_OK, "recording migration");
    }
    THAW_PG_TRY(PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "COMMIT");
    *applied = !present;
    return 0;

fail:
    PQclear(PQexec(c, "ROLLBACK"));
    return rc;
}

int thaw_sched_migrate(const char *pg_url, struct thaw_sched_migrate_report *rep)
{
    int rc = 0;
    struct thaw_sched_migrate_report local;
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    rep->n_known = (int)scheduler_n_migrations;
    if (!pg_url || !pg_url[0])
        return THAW_FAIL(THAW_EINVAL, "no PostgreSQL URL (--pg or THAW_PG_URL)");

    PGconn *c = PQconnectdb(pg_url);
    if (!c)
        return -ENOMEM;
    if (PQstatus(c) != CONNECTION_OK) {
        rc = THAW_FAIL(THAW_EPG, "connecting to PostgreSQL: %s", PQerrorMessage(c));
        goto fail;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);

    for (size_t i = 0; i < scheduler_n_migrations; i++) {
        const struct scheduler_migration *m = &scheduler_migrations[i];
        int applied = 0;
        rc = apply_one(c, m, &applied);
        if (rc < 0)
            goto fail;
        if (applied && rep->n_applied < THAW_SCHED_MAX_MIGRATIONS) {
            rep->applied[rep->n_applied++] = m->version;
            THAW_LOG(THAW_LOG_DEBUG, "scheduler", "migration_applied", "version=%d name=%s",
                     m->version, m->name);
        }
    }

    /* The database may be newer than this binary (a later migrator ran):
     * that is not an error, and the report says so. */
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = THAW_FAIL(THAW_EPG, "reading schema version: %s", PQresultErrorMessage(r));
        PQclear(r);
        goto fail;
    }
    rep->version = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);

fail:
    PQfinish(c);
    return rc;
}
