/*
 * http_server.h - test helper: a small real HTTP/1.1 server on loopback
 * (keep-alive, Range requests) that serves a directory and can inject the
 * faults the remote loader must survive: 500s, connections reset mid-body,
 * corrupted bytes, 404s.
 */
#ifndef TEST_HTTP_SERVER_H
#define TEST_HTTP_SERVER_H

struct ts_http_opts {
    const char *root;   /* directory served at / */
    int n_500;          /* the first n_500 requests for *.bin get HTTP 500 */
    int n_reset;        /* the first n_reset *.bin responses stop halfway and close */
    int n_corrupt;      /* the first n_corrupt *.bin responses have one byte flipped */
    int ignore_range;   /* answer 200 with the whole file */
};

struct ts_http;

/* Start serving; *port gets the loopback port. Aborts the test on failure. */
struct ts_http *ts_http_start(const struct ts_http_opts *o, int *port);
void ts_http_stop(struct ts_http *s);
/* Requests seen for paths ending in .bin / in total. */
int ts_http_bin_requests(struct ts_http *s);
int ts_http_requests(struct ts_http *s);

#endif
