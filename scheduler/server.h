/*
 * server.h - thaw-scheduler's HTTP server (libmicrohttpd): health, metrics,
 * the JSON placement API and the kube-scheduler extender verbs. Private to
 * the thaw-scheduler binary.
 */
#ifndef SCHEDULER_SERVER_H
#define SCHEDULER_SERVER_H

#include <stdint.h>

/* The port thaw-scheduler listens on when neither $PORT nor --port is given. */
#define THAW_SCHED_DEFAULT_PORT 8090

struct scheduler_server;

/*
 * Listen on port (all addresses) and serve from one internal thread, which
 * also owns the PostgreSQL connection to pg_url (opened lazily and reopened
 * after an error, so the server starts while PostgreSQL is down and /readyz
 * says 503 unless hosts are known). state_file (NULL or "": none) keeps the
 * known live hosts across restarts for degraded placement; it is read here
 * and rewritten atomically when the list changes. Strings are copied. *out
 * is set only on success. Returns 0, THAW_EINVAL, THAW_EIO (cannot listen)
 * or -ENOMEM.
 */
int scheduler_server_start(uint16_t port, const char *pg_url, const char *state_file,
                           struct scheduler_server **out);

/* Stop serving, wait for the thread, close the database and free s. NULL is
 * a no-op. */
void scheduler_server_stop(struct scheduler_server *s);

#endif /* SCHEDULER_SERVER_H */
