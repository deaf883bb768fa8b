/*
 * main.c - `thaw-scheduler`: for now only `--migrate`, which brings the
 * PostgreSQL locality store up to this binary's schema. The placement API,
 * extender and OpenWhisk hook come later.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/thaw_common.h"
#include "scheduler/thaw_scheduler.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: thaw-scheduler --migrate [--pg URL]\n\n"
               "  --migrate    apply pending schema migrations and exit\n"
               "  --pg URL     PostgreSQL connection URI (default: $THAW_PG_URL)\n"
               "  -h, --help   this help\n");
}

int main(int argc, char **argv)
{
    thaw_log_init();
    int migrate = 0;
    const char *pg_url = getenv("THAW_PG_URL");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--migrate") == 0) {
            migrate = 1;
        } else if (strcmp(argv[i], "--pg") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "thaw-scheduler: --pg needs a URL\n");
                return 2;
            }
            pg_url = argv[++i];
        } else if (strncmp(argv[i], "--pg=", 5) == 0) {
            pg_url = argv[i] + 5;
        } else {
            fprintf(stderr, "thaw-scheduler: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!migrate) {
        fprintf(stderr, "thaw-scheduler: nothing to do (the placement API is not built yet)\n");
        usage(stderr);
        return 2;
    }
    if (!pg_url || !pg_url[0]) {
        fprintf(stderr, "thaw-scheduler: no PostgreSQL URL: pass --pg URL or set THAW_PG_URL\n");
        return 2;
    }

    struct thaw_sched_migrate_report rep;
    int rc = thaw_sched_migrate(pg_url, &rep);
    if (rc < 0) {
        const char *msg = thaw_errmsg();
        fprintf(stderr, "thaw-scheduler: migrate: %s%s%s\n", thaw_strerror(rc), msg[0] ? ": " : "",
                msg);
        return 1;
    }
    for (int i = 0; i < rep.n_applied; i++)
        printf("applied %04d\n", rep.applied[i]);
    printf("schema version %d (%d applied, %d known)\n", rep.version, rep.n_applied, rep.n_known);
    return 0;
}
