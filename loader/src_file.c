/*
 * src_file.c - local-file source. Per load it decides how to read:
 *   - files on tmpfs/ramfs (the DRAM tier) are mapped; host loads use the
 *     mapping in place (zero copy), GPU loads copy from it;
 *   - files mostly resident in the page cache are read buffered by a thread
 *     pool (O_DIRECT would bypass the cache and go to the device again);
 *   - otherwise O_DIRECT through io_uring at queue depth, falling back to a
 *     pread thread pool when io_uring is refused (seccomp, old kernels), and
 *     to buffered reads where O_DIRECT is refused (EINVAL).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "loader/loader_int.h"

#define MAX_THREADS 64

struct pool_job {
    struct thaw_loader *ld;
    const int *fds;
    char **paths;
    _Atomic size_t next;
};

/* Read chunk c of fd into buf; short reads continue, EOF is a truncation. */
static int read_chunk(struct thaw_loader *ld, int fd, const char *path,
                      const struct loader_chunk *c, void *buf)
{
    size_t got = 0;
    while (got < c->len) {
        size_t want = c->len - got;
        if (want > ld->o.io_bytes)
            want = ld->o.io_bytes;
        ssize_t r = pread(fd, (char *)buf + got, want, (off_t)(c->offset + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return THAW_FAIL(-errno, "%s chunk %u: read at byte %" PRIu64 ": %s", path, c->index,
                             c->offset + got, strerror(errno));
        if (r == 0)
            return THAW_FAIL(THAW_EIO, "%s chunk %u: file ends at byte %" PRIu64
                                       " (truncated?)", path, c->index, c->offset + got);
        got += (size_t)r;
    }
    return 0;
}

static void *pool_worker(void *arg)
{
    struct pool_job *j = arg;
    struct thaw_loader *ld = j->ld;
    for (;;) {
        if (atomic_load(&ld->failed))
            break;
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= ld->n_chunks)
            break;
        const struct loader_chunk *c = &ld->chunks[i];
        void *buf = NULL;
        int rc = ld->sink->ops->acquire(ld->sink, c, &buf);
        if (rc == 0) {
            rc = read_chunk(ld, j->fds[c->part], j->paths[c->part], c, buf);
            if (rc == 0)
                rc = loader_chunk_filled(ld, c, buf);
            else
                ld->sink->ops->abandon(ld->sink, c, buf);
        }
        if (rc) {
            loader_fail(ld, rc);
            break;
        }
    }
    return NULL;
}

/* Read every chunk with n_threads pread workers. */
static int pread_pool(struct thaw_loader *ld, const int *fds, char **paths)
{
    struct pool_job j = { .ld = ld, .fds = fds, .paths = paths };
    pthread_t th[MAX_THREADS];
    unsigned n = ld->o.n_threads < MAX_THREADS ? ld->o.n_threads : MAX_THREADS;
    if (n > ld->n_chunks)
        n = ld->n_chunks ? (unsigned)ld->n_chunks : 1;
    unsigned started = 0;
    for (; started < n; started++) {
        if (pthread_create(&th[started], NULL, pool_worker, &j) != 0)
            break;
    }
    if (started == 0)
        pool_worker(&j); /* no threads at all: do it here */
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return atomic_load(&ld->failed) ? loader_error(ld) : 0;
}

static int on_memory_fs(int fd)
{
    struct statfs sf;
    if (fstatfs(fd, &sf) != 0)
        return 0;
    return sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC;
}

int loader_src_file(struct thaw_loader *ld, const char *dir)
{
    uint32_t n = thaw_manifest_n_partitions(ld->m);
    int *fds = thaw_calloc(n, sizeof *fds);
    char **paths = thaw_calloc(n, sizeof *paths);
    int rc = 0, dram = 1, direct = 0;
    uint64_t total = 0, resident = 0;
    if (!fds || !paths) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t p = 0; p < n; p++)
        fds[p] = -1;

    /* Open buffered first: size checks, tier and residency. */
    for (uint32_t p = 0; p < n && rc == 0; p++) {
        const struct thaw_partition_info *pi = thaw_manifest_partition(ld->m, p);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, pi->file);
        paths[p] = thaw_strdup(path);
        if (!paths[p]) {
            rc = -ENOMEM;
            break;
        }
        fds[p] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[p] < 0) {
            rc = THAW_FAIL(-errno, "%s: %s", path, strerror(errno));
            break;
        }
        struct stat st;
        if (fstat(fds[p], &st) != 0 || (uint64_t)st.st_size != pi->bytes) {
            rc = THAW_FAIL(THAW_EIO, "%s: %" PRIu64 " bytes, the manifest says %" PRIu64 "%s",
                           path, (uint64_t)st.st_size, pi->bytes,
                           (uint64_t)st.st_size < pi->bytes ? " (truncated)" : "");
            break;
        }
        if (!on_memory_fs(fds[p]))
            dram = 0;
        if (ld->o.cold)
            posix_fadvise(fds[p], 0, 0, POSIX_FADV_DONTNEED);
        total += pi->bytes;
    }
    if (rc)
        goto out;

    struct thaw_load_stats *s = &ld->st;
    if (dram && ld->o.target == THAW_LOAD_HOST) {
        /* The DRAM tier: map in place, no copy. */
        double t0 = thaw_now_s();
        ld->dram_map = thaw_calloc(n, sizeof(void *));
        ld->dram_len = thaw_calloc(n, sizeof(size_t));
        if (!ld->dram_map || !ld->dram_len) {
            rc = -ENOMEM;
            goto out;
        }
        for (uint32_t p = 0; p < n && rc == 0; p++) {
            size_t len = (size_t)thaw_manifest_partition(ld->m, p)->bytes;
            void *m = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fds[p], 0);
            if (m == MAP_FAILED) {
                rc = THAW_FAIL(-errno, "%s: mmap: %s", paths[p], strerror(errno));
                break;
            }
            ld->dram_map[p] = m;
            ld->dram_len[p] = len;
            for (uint32_t c = 0; ld->do_verify && c < thaw_manifest_partition(ld->m, p)->n_chunks;
                 c++) {
                uint64_t cb = thaw_manifest_chunk_bytes(ld->m), off = c * cb;
                rc = thaw_ckpt_check_chunk(ld->m, p, c, (char *)m + off,
                                           (size_t)(off + cb <= len ? cb : len - off));
                if (rc)
                    break;
            }
        }
        s->read_s = thaw_now_s() - t0;
        s->method = "mmap";
        s->resident_pct = 100;
        s->tier[THAW_TIER_DRAM].bytes = total;
        s->tier[THAW_TIER_DRAM].seconds = s->read_s;
        goto out;
    }

    rc = loader_make_sink(ld);
    if (rc)
        goto out;

    if (!dram && !ld->o.force_direct) {
        for (uint32_t p = 0; p < n; p++)
            resident += (uint64_t)loader_resident_pct(fds[p], thaw_manifest_partition(ld->m, p)->bytes) *
                        thaw_manifest_partition(ld->m, p)->bytes / 100;
        s->resident_pct = total ? (int)(resident * 100 / total) : 100;
    }
    enum thaw_tier tier = THAW_TIER_SSD;
    if (dram || s->resident_pct >= 50)
        tier = THAW_TIER_DRAM;
    direct = !dram && s->resident_pct < 50 && !ld->o.force_buffered;

    /* Reopen with O_DIRECT where wanted; EINVAL means the filesystem refuses it. */
    for (uint32_t p = 0; direct && p < n; p++) {
        int dfd = open(paths[p], O_RDONLY | O_CLOEXEC | O_DIRECT);
        if (dfd < 0) {
            if (errno != EINVAL) {
                rc = THAW_FAIL(-errno, "%s: %s", paths[p], strerror(errno));
                goto out;
            }
            THAW_LOG(THAW_LOG_WARN, "loader", "odirect_refused", "path=%s fallback=buffered",
                     paths[p]);
            direct = 0;
            break;
        }
        close(fds[p]);
        fds[p] = dfd;
    }
    if (!direct) {
        /* Some may already be O_DIRECT: make them all buffered again. */
        for (uint32_t p = 0; p < n; p++) {
            if (fcntl(fds[p], F_GETFL) & O_DIRECT) {
                close(fds[p]);
                fds[p] = open(paths[p], O_RDONLY | O_CLOEXEC);
                if (fds[p] < 0) {
                    rc = THAW_FAIL(-errno, "%s: %s", paths[p], strerror(errno));
                    goto out;
                }
            }
        }
    }

    double t0 = thaw_now_s();
    if (direct && !ld->o.force_pread) {
        s->method = "io_uring";
        rc = loader_uring_read(ld, fds, ld->chunks, ld->n_chunks);
        if (rc == THAW_ENOTSUP) { /* refused at setup: nothing was read yet */
            THAW_LOG(THAW_LOG_WARN, "loader", "io_uring_refused", "error=\"%s\" fallback=pread",
                     thaw_errmsg());
            rc = 0;
            s->method = "pread";
            rc = pread_pool(ld, fds, paths);
        }
    } else {
        s->method = direct ? "pread" : "buffered";
        rc = pread_pool(ld, fds, paths);
    }
    s->read_s = thaw_now_s() - t0;
    s->tier[tier].bytes = total;
    s->tier[tier].seconds = s->read_s;
out:
    for (uint32_t p = 0; fds && p < n; p++) {
        if (fds[p] >= 0)
            close(fds[p]);
    }
    for (uint32_t p = 0; paths && p < n; p++)
        thaw_free(paths[p]);
    thaw_free(paths);
    thaw_free(fds);
    return rc;
}
