/*
 * pg_harness.c - start and stop a private PostgreSQL for tests (see
 * pg_harness.h). Commands run through the shell, as `postgres` via runuser
 * when we are root; the socket directory sits under /tmp so that its path
 * stays below the 107-byte Unix socket limit and `postgres` can reach it.
 */
#include <errno.h>
#include <glob.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/scheduler/pg_harness.h"

static int is_exec(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, X_OK) == 0;
}

/* Find a directory holding initdb, pg_ctl and postgres. */
static int find_bindir(char *out, size_t n)
{
    const char *env = getenv("THAW_PG_BIN");
    if (env && env[0]) {
        snprintf(out, n, "%s", env);
        return is_exec(out, "initdb") && is_exec(out, "pg_ctl") ? 0 : -1;
    }
    glob_t g;
    int found = -1;
    /* Sorted by name; take the last that is complete (newest major, for
     * versions of equal digit count). */
    if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
        for (size_t i = g.gl_pathc; i-- > 0;) {
            if (is_exec(g.gl_pathv[i], "initdb") && is_exec(g.gl_pathv[i], "pg_ctl") &&
                is_exec(g.gl_pathv[i], "postgres")) {
                snprintf(out, n, "%s", g.gl_pathv[i]);
                found = 0;
                break;
            }
        }
        globfree(&g);
    }
    if (found == 0)
        return 0;
    const char *path = getenv("PATH");
    if (!path)
        return -1;
    char *copy = strdup(path), *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (is_exec(d, "initdb") && is_exec(d, "pg_ctl")) {
            snprintf(out, n, "%s", d);
            found = 0;
            break;
        }
    }
    free(copy);
    return found;
}

/* Run a shell command as the server's user; returns its exit status. */
static int run_as(const struct pg_harness *h, const char *fmt, ...)
{
    char cmd[2048], full[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (geteuid() == 0)
        snprintf(full, sizeof full, "runuser -u %s -- sh -c '%s'", h->user, cmd);
    else
        snprintf(full, sizeof full, "sh -c '%s'", cmd);
    int st = system(full);
    return st == -1 ? -1 : WEXITSTATUS(st);
}

/* Append the last lines of the server log to why. */
static void log_tail(const struct pg_harness *h, char *why, size_t why_len)
{
    char p[512], buf[1024];
    snprintf(p, sizeof p, "%s/server.log", h->dir);
    FILE *f = fopen(p, "r");
    if (!f)
        return;
    long sz = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : 0;
    fseek(f, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    size_t used = strlen(why);
    snprintf(why + used, why_len - used, "; server.log tail: %s", buf);
}

int pg_harness_start(struct pg_harness *h, char *why, size_t why_len)
{
    memset(h, 0, sizeof *h);
    why[0] = 0;
    if (find_bindir(h->bindir, sizeof h->bindir) < 0) {
        snprintf(why, why_len,
                 "no PostgreSQL server binaries (initdb, pg_ctl): install "
                 "postgresql or set THAW_PG_BIN");
        return 1;
    }
    struct passwd *pw = NULL;
    if (geteuid() == 0) {
        pw = getpwnam("postgres");
        if (!pw) {
            snprintf(why, why_len,
                     "running as root and there is no `postgres` user to run "
                     "the server as");
            return 1;
        }
        if (access("/usr/sbin/runuser", X_OK) != 0 && access("/sbin/runuser", X_OK) != 0 &&
            access("/usr/bin/runuser", X_OK) != 0) {
            snprintf(why, why_len, "running as root and runuser is missing");
            return 1;
        }
    } else {
        pw = getpwuid(geteuid());
        if (!pw) {
            snprintf(why, why_len, "no passwd entry for uid %u", (unsigned)geteuid());
            return 1;
        }
    }
    snprintf(h->user, sizeof h->user, "%s", pw->pw_name);

    snprintf(h->dir, sizeof h->dir, "/tmp/thaw-pg-XXXXXX");
    if (!mkdtemp(h->dir)) {
        snprintf(why, why_len, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    if (geteuid() == 0 && chown(h->dir, pw->pw_uid, pw->pw_gid) != 0) {
        snprintf(why, why_len, "chown %s: %s", h->dir, strerror(errno));
        goto fail;
    }
    h->port = 5432; /* the socket lives in our own directory, so no clash */

    if (run_as(h,
               "\"%s/initdb\" -D \"%s/data\" -A trust -U \"%s\" -E UTF8 --locale=C "
               "--no-sync >\"%s/initdb.log\" 2>&1",
               h->bindir, h->dir, h->user, h->dir) != 0) {
        snprintf(why, why_len, "initdb failed (see %s/initdb.log)", h->dir);
        return -1; /* keep the directory for the log */
    }
    if (pg_harness_server_start(h, why, why_len) != 0)
        goto fail;
    snprintf(h->url, sizeof h->url, "postgresql:///postgres?host=%s&port=%d&user=%s", h->dir,
             h->port, h->user);
    return 0;

fail:
    pg_harness_stop(h);
    return -1;
}

int pg_harness_server_start(struct pg_harness *h, char *why, size_t why_len)
{
    if (h->running)
        return 0;
    if (run_as(h,
               "\"%s/pg_ctl\" -D \"%s/data\" -l \"%s/server.log\" -w -t 60 -s "
               "-o \"-k %s -p %d -c listen_addresses= -c fsync=off "
               "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200\" start",
               h->bindir, h->dir, h->dir, h->dir, h->port) != 0) {
        snprintf(why, why_len, "pg_ctl start failed");
        log_tail(h, why, why_len);
        return -1;
    }
    h->running = 1;
    return 0;
}

int pg_harness_server_stop(struct pg_harness *h)
{
    if (!h->running)
        return 0;
    int rc = run_as(h, "\"%s/pg_ctl\" -D \"%s/data\" -m fast -w -t 60 -s stop >/dev/null 2>&1",
                    h->bindir, h->dir);
    if (rc != 0)
        return -1;
    h->running = 0;
    return 0;
}

void pg_harness_stop(struct pg_harness *h)
{
    if (!h->dir[0])
        return;
    if (h->running) {
        if (run_as(h, "\"%s/pg_ctl\" -D \"%s/data\" -m immediate -w -s stop >/dev/null 2>&1",
                   h->bindir, h->dir) != 0)
            fprintf(stderr, "pg_harness: pg_ctl stop failed in %s\n", h->dir);
        h->running = 0;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "pg_harness: could not remove %s\n", h->dir);
    h->dir[0] = 0;
}
