/*
 * util.c - small shared helpers: clocks, size parsing, whole-file reads,
 * atomic file writes (temp + fsync + rename + dir fsync), rm -rf, mkdir -p.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/thaw_common.h"

uint64_t thaw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double thaw_now_s(void)
{
    return (double)thaw_now_ns() * 1e-9;
}

uint64_t thaw_xxh3(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

int thaw_parse_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return THAW_FAIL(THAW_EINVAL, "bad size '%s'", s);
    uint64_t mul = 1;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    default: return THAW_FAIL(THAW_EINVAL, "bad size suffix in '%s'", s);
    }
    if (mul > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0 || strcmp(end, "ib") == 0))
        end += strlen(end);
    if (*end)
        return THAW_FAIL(THAW_EINVAL, "bad size '%s'", s);
    if (v > UINT64_MAX / mul)
        return THAW_FAIL(THAW_EINVAL, "size '%s' overflows", s);
    *out = v * mul;
    return 0;
}

const char *thaw_fmt_bytes(uint64_t bytes, char *buf, size_t n)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

int thaw_read_file(const char *path, size_t max_bytes, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return THAW_FAIL(-errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = -errno;
        close(fd);
        return THAW_FAIL(e, "%s: stat: %s", path, strerror(-e));
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return THAW_FAIL(THAW_ELIMIT, "%s: %" PRIu64 " bytes exceeds the limit of %zu", path,
                         (uint64_t)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = thaw_malloc(n + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? -errno : THAW_EIO;
            thaw_free(buf);
            close(fd);
            return THAW_FAIL(e, "%s: read failed at byte %zu", path, got);
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

int thaw_write_all(int fd, const void *buf, size_t len, const char *path)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return THAW_FAIL(-errno, "%s: write: %s", path, strerror(errno));
        if (w == 0)
            return THAW_FAIL(THAW_EIO, "%s: write made no progress", path);
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int thaw_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return THAW_FAIL(-errno, "%s: open dir: %s", dir, strerror(errno));
    int rc = 0;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = THAW_FAIL(-errno, "%s: fsync dir: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

static void dirname_of(const char *path, char *dir, size_t n)
{
    snprintf(dir, n, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, n, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
}

int thaw_write_file_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    char dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return THAW_FAIL(THAW_EINVAL, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return THAW_FAIL(-errno, "%s: create: %s", tmp, strerror(errno));
    int rc = thaw_write_all(fd, data, len, path);
    if (rc) {
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (fsync(fd) != 0) {
        int e = -errno;
        close(fd);
        unlink(tmp);
        return THAW_FAIL(e, "%s: fsync: %s", path, strerror(-e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = -errno;
        unlink(tmp);
        return THAW_FAIL(e, "%s: rename: %s", path, strerror(-e));
    }
    dirname_of(path, dir, sizeof dir);
    return thaw_fsync_dir(dir);
}

int thaw_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : THAW_FAIL(-errno, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0)
            return THAW_FAIL(-errno, "%s: unlink: %s", path, strerror(errno));
        return 0;
    }
    DIR *d = opendir(path);
    if (!d)
        return THAW_FAIL(-errno, "%s: opendir: %s", path, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char child[4096];
        if (snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= (int)sizeof child) {
            rc = THAW_FAIL(THAW_EINVAL, "path too long under %s", path);
            break;
        }
        rc = thaw_rm_rf(child);
    }
    closedir(d);
    if (rc == 0 && rmdir(path) != 0)
        rc = THAW_FAIL(-errno, "%s: rmdir: %s", path, strerror(errno));
    return rc;
}

int thaw_mkdir_p(const char *path, unsigned mode)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return THAW_FAIL(THAW_EINVAL, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return THAW_FAIL(-errno, "%s: mkdir: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return THAW_FAIL(-errno, "%s: mkdir: %s", buf, strerror(errno));
    return 0;
}
