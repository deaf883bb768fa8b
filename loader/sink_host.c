/*
 * sink_host.c - host-memory sink: one page-aligned anonymous mapping per
 * partition (transparent huge pages where the kernel allows), so sources
 * read straight into the final place and a tensor is base + offset.
 *
 * Fresh memory must be faulted in and zeroed by the kernel before a read can
 * land in it; with io_uring that cost would fall on the one submitting
 * thread and can exceed the read itself (on VMs that hand freed memory back
 * to the host it is 1-2 s per GB). So populate threads fault the chunks in
 * ahead of the reads, in plan order, and acquire() waits only for its own
 * chunk.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loader/loader_int.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define MAX_POPULATE_THREADS 4

struct sink_host {
    struct loader_sink base;
    const struct thaw_loader *ld;
    uint32_t n;
    void **part;
    size_t *len;
    /* populate-ahead */
    unsigned char *ready;  /* per plan chunk: faulted in */
    pthread_t th[MAX_POPULATE_THREADS];
    unsigned n_th;
    _Atomic size_t next;   /* next plan chunk to populate */
    _Atomic int stop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

static void populate(char *p, size_t len)
{
    if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
        return;
    /* Older kernels: touch every page (the memory is zero already). */
    long page = sysconf(_SC_PAGESIZE);
    for (size_t off = 0; off < len; off += (size_t)page)
        ((volatile char *)p)[off] = 0;
}

static void *populate_main(void *arg)
{
    struct sink_host *h = arg;
    const struct thaw_loader *ld = h->ld;
    for (;;) {
        size_t i = atomic_fetch_add(&h->next, 1);
        if (i >= ld->n_chunks || atomic_load(&h->stop))
            break;
        const struct loader_chunk *c = &ld->chunks[i];
        populate((char *)h->part[c->part] + c->offset, c->len);
        pthread_mutex_lock(&h->lock);
        h->ready[i] = 1;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
    }
    return NULL;
}

static int host_acquire(struct loader_sink *s, const struct loader_chunk *c, void **buf)
{
    struct sink_host *h = (struct sink_host *)s;
    size_t i = (size_t)(c - h->ld->chunks);
    if (h->n_th > 0 && i < h->ld->n_chunks) {
        pthread_mutex_lock(&h->lock);
        while (!h->ready[i])
            pthread_cond_wait(&h->cond, &h->lock);
        pthread_mutex_unlock(&h->lock);
    }
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

static void join_populate(struct sink_host *h)
{
    atomic_store(&h->stop, 1);
    for (unsigned i = 0; i < h->n_th; i++)
        pthread_join(h->th[i], NULL);
    h->n_th = 0;
}

static int host_finish(struct loader_sink *s)
{
    join_populate((struct sink_host *)s);
    return 0;
}

static void host_destroy(struct loader_sink *s)
{
    struct sink_host *h = (struct sink_host *)s;
    join_populate(h);
    for (uint32_t p = 0; h->part && p < h->n; p++) {
        if (h->part[p])
            munmap(h->part[p], h->len[p]);
    }
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    thaw_free(h->ready);
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
    h->ld = ld;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->n = thaw_manifest_n_partitions(ld->m);
    h->part = thaw_calloc(h->n, sizeof *h->part);
    h->len = thaw_calloc(h->n, sizeof *h->len);
    h->ready = thaw_calloc(ld->n_chunks ? ld->n_chunks : 1, 1);
    if (!h->part || !h->len || !h->ready) {
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
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = cores >= 8 ? MAX_POPULATE_THREADS : 2;
    for (; h->n_th < want; h->n_th++) {
        if (pthread_create(&h->th[h->n_th], NULL, populate_main, h) != 0)
            break;
    }
    if (h->n_th == 0)
        THAW_LOG(THAW_LOG_WARN, "loader", "populate_thread_failed", "fallback=fault_on_read");
    *out = &h->base;
    return 0;
}
