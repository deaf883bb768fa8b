/*
 * verify.c - `thaw verify`: sizes and per-chunk xxh3 checksums of every
 * partition of a checkpoint directory; errors name the file and chunk.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_int.h"

int thaw_ckpt_check_chunk(const struct thaw_manifest *m, uint32_t p, uint32_t c, const void *data,
                          size_t len)
{
    const struct thaw_partition_info *pi = thaw_manifest_partition(m, p);
    if (!pi || c >= pi->n_chunks)
        return THAW_FAIL(THAW_EINVAL, "partition %u chunk %u does not exist", p, c);
    uint64_t cb = thaw_manifest_chunk_bytes(m);
    uint64_t want_len = (uint64_t)c + 1 == pi->n_chunks ? pi->bytes - (uint64_t)c * cb : cb;
    if (len != want_len)
        return THAW_FAIL(THAW_EIO, "%s chunk %u: %zu bytes, expected %" PRIu64, pi->file, c, len,
                         want_len);
    uint64_t h = thaw_xxh3(data, len);
    if (h != pi->chunk_xxh3[c])
        return THAW_FAIL(THAW_ECHECKSUM, "%s chunk %u (bytes %" PRIu64 "-%" PRIu64
                                         "): xxh3 %016" PRIx64 " != manifest %016" PRIx64,
                         pi->file, c, (uint64_t)c * cb, (uint64_t)c * cb + len, h,
                         pi->chunk_xxh3[c]);
    return 0;
}

int thaw_ckpt_verify(const char *ckpt_dir)
{
    struct thaw_manifest *m = NULL;
    int rc = thaw_manifest_load(ckpt_dir, &m);
    if (rc)
        return rc;
    uint64_t cb = thaw_manifest_chunk_bytes(m);
    unsigned char *buf = thaw_malloc((size_t)cb);
    if (!buf) {
        thaw_manifest_destroy(m);
        return -ENOMEM;
    }
    for (uint32_t p = 0; p < thaw_manifest_n_partitions(m) && rc == 0; p++) {
        const struct thaw_partition_info *pi = thaw_manifest_partition(m, p);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", ckpt_dir, pi->file);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = THAW_FAIL(-errno, "%s: %s", path, strerror(errno));
            break;
        }
        struct stat st;
        if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != pi->bytes) {
            rc = THAW_FAIL(THAW_EIO, "%s: %" PRIu64 " bytes, manifest says %" PRIu64, path,
                           (uint64_t)st.st_size, pi->bytes);
            close(fd);
            break;
        }
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        for (uint32_t c = 0; c < pi->n_chunks && rc == 0; c++) {
            uint64_t off = (uint64_t)c * cb;
            size_t len = (size_t)(off + cb <= pi->bytes ? cb : pi->bytes - off);
            size_t got = 0;
            while (got < len) {
                ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0) {
                    rc = THAW_FAIL(r < 0 ? -errno : THAW_EIO, "%s chunk %u: read failed", path, c);
                    break;
                }
                got += (size_t)r;
            }
            if (rc == 0)
                rc = thaw_ckpt_check_chunk(m, p, c, buf, len);
        }
        close(fd);
    }
    thaw_free(buf);
    thaw_manifest_destroy(m);
    return rc;
}
