/*
 * cache.c - the SSD cache of remote checkpoints. An entry is a checkpoint
 * directory at CACHE/<key>/ whose manifest.json is written last, so an entry
 * with a manifest is complete. A fill goes to CACHE/<key>.tmp.<pid>/ with
 * space reserved up front (fallocate), is fsynced and renamed into place;
 * a failed fill is removed, so nothing partial is ever visible. An flock on
 * CACHE/<key>.lock makes a second concurrent load wait for the first.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader/loader_int.h"

struct loader_cache {
    int lock_fd;
    char root[4096];
    char dir[4200];  /* CACHE/<key> */
    char tmp[4300];  /* CACHE/<key>.tmp.<pid> */
    int began, committed;
    uint32_t n_parts;
    int *fds;
    _Atomic int failed;
    pthread_mutex_t lock;
};

int loader_cache_key(const char *uri, char *key, size_t n)
{
    /* readable tail of the URI + a hash of all of it */
    const char *tail = strrchr(uri, '/');
    tail = tail ? tail + 1 : uri;
    char clean[41];
    size_t k = 0;
    for (size_t i = 0; tail[i] && k < sizeof clean - 1; i++) {
        char ch = tail[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '-' || ch == '_' || ch == '.';
        clean[k++] = ok ? ch : '_';
    }
    clean[k] = '\0';
    if (k == 0 || clean[0] == '.')
        snprintf(clean, sizeof clean, "ckpt");
    snprintf(key, n, "%s-%016" PRIx64, clean, thaw_xxh3(uri, strlen(uri)));
    return 0;
}

int loader_cache_open(const char *cache_dir, const char *uri, struct loader_cache **out, char *dir,
                      size_t n, int *complete)
{
    char key[80], path[4400];
    int rc = thaw_mkdir_p(cache_dir, 0755);
    if (rc)
        return rc;
    struct loader_cache *c = thaw_calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    loader_cache_key(uri, key, sizeof key);
    snprintf(c->root, sizeof c->root, "%s", cache_dir);
    snprintf(c->dir, sizeof c->dir, "%s/%s", cache_dir, key);
    snprintf(c->tmp, sizeof c->tmp, "%s.tmp.%d", c->dir, (int)getpid());
    snprintf(path, sizeof path, "%s.lock", c->dir);
    c->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->lock_fd < 0) {
        rc = THAW_FAIL(-errno, "%s: %s", path, strerror(errno));
        pthread_mutex_destroy(&c->lock);
        thaw_free(c);
        return rc;
    }
    while (flock(c->lock_fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            rc = THAW_FAIL(-errno, "%s: flock: %s", path, strerror(errno));
            close(c->lock_fd);
            pthread_mutex_destroy(&c->lock);
            thaw_free(c);
            return rc;
        }
    }
    snprintf(path, sizeof path, "%s/manifest.json", c->dir);
    struct stat st;
    *complete = stat(path, &st) == 0;
    snprintf(dir, n, "%s", c->dir);
    *out = c;
    return 0;
}

int loader_cache_failed(const struct loader_cache *c)
{
    return atomic_load(&c->failed);
}

static int cache_fail(struct loader_cache *c, int rc)
{
    atomic_store(&c->failed, 1);
    return rc;
}

int loader_cache_begin(struct loader_cache *c, const struct thaw_manifest *m)
{
    int rc = thaw_rm_rf(c->dir); /* a stale, incomplete entry */
    if (rc == 0)
        rc = thaw_rm_rf(c->tmp);
    if (rc)
        return cache_fail(c, rc);
    if (mkdir(c->tmp, 0755) != 0)
        return cache_fail(c, THAW_FAIL(-errno, "%s: mkdir: %s", c->tmp, strerror(errno)));
    c->began = 1;
    c->n_parts = thaw_manifest_n_partitions(m);
    c->fds = thaw_calloc(c->n_parts, sizeof *c->fds);
    if (!c->fds)
        return cache_fail(c, -ENOMEM);
    for (uint32_t p = 0; p < c->n_parts; p++)
        c->fds[p] = -1;
    for (uint32_t p = 0; p < c->n_parts; p++) {
        const struct thaw_partition_info *pi = thaw_manifest_partition(m, p);
        char path[4600];
        snprintf(path, sizeof path, "%s/%s", c->tmp, pi->file);
        c->fds[p] = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (c->fds[p] < 0)
            return cache_fail(c, THAW_FAIL(-errno, "%s: %s", path, strerror(errno)));
        /* Reserve the space now: a full disk fails here, not mid-load. */
        int e = posix_fallocate(c->fds[p], 0, (off_t)pi->bytes);
        if (e != 0 && e != EOPNOTSUPP && e != EINVAL)
            return cache_fail(c, THAW_FAIL(-e, "%s: reserving %" PRIu64 " bytes: %s", path,
                                           pi->bytes, strerror(e)));
    }
    return 0;
}

int loader_cache_write(struct loader_cache *c, const struct loader_chunk *ch, const void *buf)
{
    if (atomic_load(&c->failed))
        return THAW_FAIL(THAW_EIO, "cache fill already failed");
    const char *p = buf;
    size_t left = ch->len;
    uint64_t off = ch->offset;
    while (left > 0) {
        ssize_t w = pwrite(c->fds[ch->part], p, left, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return cache_fail(c, THAW_FAIL(w < 0 ? -errno : THAW_EIO,
                                           "%s/part-%u.bin chunk %u: cache write: %s", c->tmp,
                                           ch->part, ch->index,
                                           w < 0 ? strerror(errno) : "no progress"));
        p += w;
        left -= (size_t)w;
        off += (uint64_t)w;
    }
    /* Start writeback now, so the fsync at commit has little left to wait
     * for; advisory (not a durability point), errors surface at fsync. */
    sync_file_range(c->fds[ch->part], (off_t)ch->offset, (off_t)ch->len, SYNC_FILE_RANGE_WRITE);
    return 0;
}

static int write_new(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return THAW_FAIL(-errno, "%s: %s", path, strerror(errno));
    int rc = thaw_write_all(fd, data, len, path);
    if (rc == 0 && fsync(fd) != 0)
        rc = THAW_FAIL(-errno, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}

int loader_cache_commit(struct loader_cache *c, const struct thaw_loader *ld)
{
    const struct thaw_manifest *m = ld->m;
    char path[4600];
    if (!c->began || atomic_load(&c->failed))
        return THAW_FAIL(THAW_EIO, "cache fill incomplete");
    for (uint32_t p = 0; p < c->n_parts; p++) {
        if (fsync(c->fds[p]) != 0)
            return cache_fail(c, THAW_FAIL(-errno, "%s: fsync part %u: %s", c->tmp, p,
                                           strerror(errno)));
        close(c->fds[p]);
        c->fds[p] = -1;
    }
    for (size_t i = 0; i < thaw_manifest_n_files(m); i++) {
        size_t len = 0;
        const char *data = thaw_loader_side_file(ld, thaw_manifest_file(m, i), &len);
        snprintf(path, sizeof path, "%s/%s", c->tmp, thaw_manifest_file(m, i));
        int rc = data ? write_new(path, data, len) : 0;
        if (rc)
            return cache_fail(c, rc);
    }
    size_t mlen = 0;
    const char *raw = thaw_manifest_raw(m, &mlen);
    snprintf(path, sizeof path, "%s/manifest.json", c->tmp);
    int rc = write_new(path, raw, mlen); /* last: its presence marks a complete entry */
    if (rc == 0)
        rc = thaw_fsync_dir(c->tmp);
    if (rc == 0 && rename(c->tmp, c->dir) != 0)
        rc = THAW_FAIL(-errno, "%s: rename: %s", c->dir, strerror(errno));
    if (rc == 0)
        rc = thaw_fsync_dir(c->root);
    if (rc)
        return cache_fail(c, rc);
    c->committed = 1;
    return 0;
}

void loader_cache_close(struct loader_cache *c)
{
    if (!c)
        return;
    for (uint32_t p = 0; c->fds && p < c->n_parts; p++) {
        if (c->fds[p] >= 0)
            close(c->fds[p]);
    }
    thaw_free(c->fds);
    if (c->began && !c->committed && thaw_rm_rf(c->tmp) != 0)
        THAW_LOG(THAW_LOG_WARN, "loader", "cache_cleanup_failed", "path=%s", c->tmp);
    flock(c->lock_fd, LOCK_UN);
    close(c->lock_fd);
    pthread_mutex_destroy(&c->lock);
    thaw_free(c);
}
