/*
 * sink_host.c - host-memory sink: one page-aligned anonymous mapping per
 * partition (transparent huge pages where the kernel allows), so sources
 * read straight into the final place and a tensor is base + offset.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "loader/loader_int.h"

struct sink_host {
    struct loader_sink base;
    uint32_t n;
    void **part;
    size_t *len;
};

static int host_acquire(struct loader_sink *s, const struct loader_chunk *c, void **buf)
{
    struct sink_host *h = (struct sink_host *)s;
    *buf = (char *)h->part[c->part] + c->offset;
    return 0;
}

static int host_complete(struct loader_sink *s, const struct loader_chunk *c, void *buf)
{
    (void)s, (void)c, (void)buf;
    return 0;
}

static void host_abandon(struct loader_sink *s, const struct loader_chunk *c, void *buf)
{
    (void)s, (void)c, (void)buf;
}

static int host_finish(struct loader_sink *s)
{
    (void)s;
    return 0;
}

static void host_destroy(struct loader_sink *s)
{
    struct sink_host *h = (struct sink_host *)s;
    for (uint32_t p = 0; h->part && p < h->n; p++) {
        if (h->part[p])
            munmap(h->part[p], h->len[p]);
    }
    thaw_free(h->part);
    thaw_free(h->len);
    thaw_free(h);
}

static void *host_partition(struct loader_sink *s, uint32_t p)
{
    struct sink_host *h = (struct sink_host *)s;
    return p < h->n ? h->part[p] : NULL;
}

static const struct loader_sink_ops host_ops = {
    .name = "host",
    .acquire = host_acquire,
    .complete = host_complete,
    .abandon = host_abandon,
    .finish = host_finish,
    .destroy = host_destroy,
    .partition = host_partition,
};

int loader_sink_host_create(struct thaw_loader *ld, struct loader_sink **out)
{
    struct sink_host *h = thaw_calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->base.ops = &host_ops;
    h->n = thaw_manifest_n_partitions(ld->m);
    h->part = thaw_calloc(h->n, sizeof *h->part);
    h->len = thaw_calloc(h->n, sizeof *h->len);
    if (!h->part || !h->len) {
        host_destroy(&h->base);
        return -ENOMEM;
    }
    for (uint32_t p = 0; p < h->n; p++) {
        size_t len = (size_t)thaw_manifest_partition(ld->m, p)->bytes;
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            int e = -errno;
            host_destroy(&h->base);
            return THAW_FAIL(e, "allocating %zu bytes for partition %u: %s", len, p,
                             strerror(-e));
        }
        madvise(m, len, MADV_HUGEPAGE); /* fewer faults while reads land; advisory */
        h->part[p] = m;
        h->len[p] = len;
    }
    *out = &h->base;
    return 0;
}
