/*
 * uring.c - O_DIRECT reads through io_uring at a fixed queue depth. Each
 * chunk is split into io_bytes requests; a chunk is handed on when its last
 * request completes. One thread submits and reaps, so the device sees a
 * steady queue without a thread per request. A refused io_uring (seccomp,
 * old kernel) returns THAW_ENOTSUP before anything is read.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <liburing.h>

#include "loader/loader_int.h"

struct io_req {
    size_t chunk;    /* index into chunks */
    uint64_t off;    /* file offset of what is left */
    char *buf;
    size_t len;
    int busy;
};

struct chunk_state {
    void *buf;
    unsigned pending; /* requests not yet complete */
    size_t next_off;  /* next byte of the chunk to request */
};

int loader_uring_read(struct thaw_loader *ld, const int *fds, const struct loader_chunk *chunks,
                      size_t n)
{
    unsigned qd = ld->o.queue_depth;
    struct io_uring ring;
    int rc = io_uring_queue_init(qd, &ring, 0);
    if (rc < 0)
        return THAW_FAIL(THAW_ENOTSUP, "io_uring_queue_init: %s", strerror(-rc));
    struct io_req *reqs = thaw_calloc(qd, sizeof *reqs);
    struct chunk_state *cs = thaw_calloc(n ? n : 1, sizeof *cs);
    if (!reqs || !cs) {
        rc = -ENOMEM;
        goto out;
    }
    size_t cur = 0;       /* chunk being split into requests */
    size_t done = 0;      /* chunks handed on */
    unsigned inflight = 0;
    rc = 0;
    while (done < n && rc == 0) {
        /* Fill the queue. */
        unsigned queued = 0;
        while (inflight < qd && cur < n && rc == 0) {
            const struct loader_chunk *c = &chunks[cur];
            if (!cs[cur].buf) {
                rc = ld->sink->ops->acquire(ld->sink, c, &cs[cur].buf);
                if (rc)
                    break;
            }
            unsigned slot = 0;
            while (reqs[slot].busy)
                slot++;
            size_t len = c->len - cs[cur].next_off;
            if (len > ld->o.io_bytes)
                len = ld->o.io_bytes;
            struct io_req *r = &reqs[slot];
            *r = (struct io_req){ .chunk = cur, .off = c->offset + cs[cur].next_off,
                                  .buf = (char *)cs[cur].buf + cs[cur].next_off, .len = len,
                                  .busy = 1 };
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_read(sqe, fds[c->part], r->buf, (unsigned)r->len, r->off);
            io_uring_sqe_set_data(sqe, r);
            cs[cur].pending++;
            cs[cur].next_off += len;
            inflight++;
            queued++;
            if (cs[cur].next_off == c->len)
                cur++;
        }
        if (rc)
            break;
        if (queued) {
            int s = io_uring_submit(&ring);
            if (s < 0) {
                rc = THAW_FAIL(s, "io_uring_submit: %s", strerror(-s));
                break;
            }
        }
        /* Reap at least one completion, then whatever else is ready. */
        struct io_uring_cqe *cqe;
        int w = io_uring_wait_cqe(&ring, &cqe);
        if (w == -EINTR)
            continue;
        if (w < 0) {
            rc = THAW_FAIL(w, "io_uring_wait_cqe: %s", strerror(-w));
            break;
        }
        do {
            struct io_req *r = io_uring_cqe_get_data(cqe);
            int res = cqe->res;
            io_uring_cqe_seen(&ring, cqe);
            const struct loader_chunk *c = &chunks[r->chunk];
            const struct thaw_partition_info *pi = thaw_manifest_partition(ld->m, c->part);
            if (res == -EAGAIN || res == -EINTR) {
                res = 0; /* resubmit as is */
            } else if (res < 0) {
                rc = THAW_FAIL(res, "%s chunk %u: read at byte %" PRIu64 ": %s", pi->file,
                               c->index, r->off, strerror(-res));
                break;
            } else if (res == 0) {
                rc = THAW_FAIL(THAW_EIO, "%s chunk %u: file ends at byte %" PRIu64 " (truncated?)",
                               pi->file, c->index, r->off);
                break;
            }
            if ((size_t)res < r->len) {
                /* Short read: ask again for the rest. */
                r->off += (uint64_t)res;
                r->buf += res;
                r->len -= (size_t)res;
                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                io_uring_prep_read(sqe, fds[c->part], r->buf, (unsigned)r->len, r->off);
                io_uring_sqe_set_data(sqe, r);
                io_uring_submit(&ring);
                continue;
            }
            r->busy = 0;
            inflight--;
            struct chunk_state *st = &cs[r->chunk];
            if (--st->pending == 0 && st->next_off == c->len) {
                rc = loader_chunk_filled(ld, c, st->buf);
                done++;
            }
        } while (rc == 0 && io_uring_peek_cqe(&ring, &cqe) == 0);
    }
    if (rc) {
        /* Let requests still in flight land before their buffers go away. */
        while (inflight > 0) {
            struct io_uring_cqe *cqe;
            if (io_uring_wait_cqe(&ring, &cqe) < 0)
                break;
            struct io_req *r = io_uring_cqe_get_data(cqe);
            io_uring_cqe_seen(&ring, cqe);
            if (r->busy && (cqe->res <= 0 || (size_t)cqe->res >= r->len)) {
                r->busy = 0;
                inflight--;
            } else if (r->busy) {
                r->busy = 0; /* short read during shutdown: nothing else is pending for it */
                inflight--;
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (cs[i].buf && (cs[i].pending > 0 || cs[i].next_off < chunks[i].len))
                ld->sink->ops->abandon(ld->sink, &chunks[i], cs[i].buf);
        }
    }
out:
    thaw_free(reqs);
    thaw_free(cs);
    io_uring_queue_exit(&ring);
    return rc;
}
