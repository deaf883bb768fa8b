/*
 * pg_harness.h - a throwaway PostgreSQL server for tests: initdb in a fresh
 * temporary directory, listening only on a Unix socket in that directory.
 * As root the server runs as the `postgres` user (PostgreSQL refuses root).
 */
#ifndef PG_HARNESS_H
#define PG_HARNESS_H

#include <stddef.h>

struct pg_harness {
    char dir[256];     /* temporary directory: data/, the socket, server.log */
    char bindir[256];  /* PostgreSQL server binaries (initdb, pg_ctl) */
    char user[64];     /* OS user running the server, also the database superuser */
    char url[512];     /* libpq URI: postgresql:///postgres?host=<dir>&port=<port>&user=<user> */
    int port;          /* names the socket file only; nothing listens on TCP */
    int running;
};

/*
 * Start a server. Returns 0 (h->url connects), 1 when PostgreSQL is not
 * available here (why says what is missing: the caller SKIPs), or -1 on a
 * failure (why says what, including the tail of the server log). Set
 * THAW_PG_BIN to choose the binaries; otherwise the newest
 * /usr/lib/postgresql/N/bin, then PATH.
 */
int pg_harness_start(struct pg_harness *h, char *why, size_t why_len);

/* Stop the server with `pg_ctl stop -m fast` (clients are disconnected),
 * keeping its data: pg_harness_server_start starts it again on the same
 * socket, so h->url connects again. 0 or -1. */
int pg_harness_server_stop(struct pg_harness *h);

/* Start a server stopped by pg_harness_server_stop (used by
 * pg_harness_start too). 0, or -1 with why set. */
int pg_harness_server_start(struct pg_harness *h, char *why, size_t why_len);

/* Stop the server (immediate) and remove its directory. No-op when not
 * started; safe to call twice. */
void pg_harness_stop(struct pg_harness *h);

#endif /* PG_HARNESS_H */
