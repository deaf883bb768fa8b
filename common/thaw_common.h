/*
 * thaw_common.h - the public API of Thaw's common library: error codes and
 * thread-local error messages, logging, allocator hooks, and small helpers
 * (time, aligned buffers, atomic file writes) that every module shares.
 */
#ifndef THAW_COMMON_H
#define THAW_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "thaw_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */

/* Thaw's own error codes; syscall errors are returned as -errno (> -1000). */
enum thaw_err {
    THAW_OK = 0,
    THAW_EFORMAT = -1000,  /* malformed file or message */
    THAW_ECHECKSUM = -1001,/* data does not match its checksum */
    THAW_ECUDA = -1002,    /* CUDA runtime error */
    THAW_EHTTP = -1003,    /* HTTP transfer failed or bad status */
    THAW_EPG = -1004,      /* PostgreSQL error */
    THAW_ELIMIT = -1005,   /* a configured maximum was exceeded */
    THAW_ENOTSUP = -1006,  /* feature not built in or not supported */
    THAW_EINVAL = -1007,   /* invalid argument or option */
    THAW_EDTYPE = -1008,   /* unsupported dtype */
    THAW_EVERSION = -1009, /* unsupported format version */
    THAW_ENOTFOUND = -1010,/* named thing does not exist */
    THAW_EIO = -1011,      /* short read/write or I/O failure */
};

#if defined(__GNUC__)
#define THAW_MUST_CHECK __attribute__((warn_unused_result))
#define THAW_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define THAW_MUST_CHECK
#define THAW_PRINTF(a, b)
#endif

/* Name of an error code (Thaw's or -errno). Never NULL; thread-safe. */
const char *thaw_strerror(int code);

/*
 * Record "file:line: message" as this thread's last error and return code.
 * Use through THAW_FAIL. Thread-safe (thread-local storage).
 */
int thaw_fail_at(int code, const char *file, int line, const char *fmt, ...) THAW_PRINTF(4, 5);
#define THAW_FAIL(code, ...) thaw_fail_at((code), __FILE__, __LINE__, __VA_ARGS__)

/* Prefix this thread's last error message with context ("loading x: ..."). */
void thaw_err_ctx(const char *fmt, ...) THAW_PRINTF(1, 2);

/* This thread's last error message, "" if none. Borrowed until the next
 * THAW_FAIL on this thread. */
const char *thaw_errmsg(void);

/* Set this thread's last error to a message taken verbatim (to carry an
 * error from a worker thread to its caller). Returns code. */
int thaw_err_restore(int code, const char *msg);

/* Clear this thread's last error message. */
void thaw_err_clear(void);

/* ---------------------------------------------------------------- allocation */

/* All allocation goes through these hooks so tests can inject failures. */
void *thaw_malloc(size_t n);
void *thaw_calloc(size_t n, size_t size);
void *thaw_realloc(void *p, size_t n);
void thaw_free(void *p);
char *thaw_strdup(const char *s);
/* 4 KiB-aligned (or `align`) allocation, released with thaw_free_aligned. */
void *thaw_malloc_aligned(size_t align, size_t n);
void thaw_free_aligned(void *p);
#define THAW_FREE(p) do { thaw_free(p); (p) = NULL; } while (0)

/* Make the n-th allocation from now (0 = the next) fail, -1 disables.
 * Test hook; set before threads start. */
void thaw_alloc_fail_after(long n);

/* ---------------------------------------------------------------- logging */

enum thaw_log_level { THAW_LOG_TRACE, THAW_LOG_DEBUG, THAW_LOG_INFO, THAW_LOG_WARN,
                      THAW_LOG_ERROR, THAW_LOG_OFF };

/* Parse THAW_LOG ("info,loader:debug") and THAW_LOG_FORMAT (logfmt|json).
 * Call once before threads start; also called lazily on first use. */
void thaw_log_init(void);
/* Whether a message at level for module would be written. Thread-safe. */
int thaw_log_enabled(int level, const char *mod);
/* Write one log line: ts= level= mod= event= then the logfmt rest. */
void thaw_log_write(int level, const char *mod, const char *event, const char *fmt, ...)
    THAW_PRINTF(4, 5);
#define THAW_LOG(level, mod, event, ...) \
    do { \
        if (thaw_log_enabled((level), (mod))) \
            thaw_log_write((level), (mod), (event), __VA_ARGS__); \
    } while (0)

/* ---------------------------------------------------------------- helpers */

/* Monotonic clock in nanoseconds and in seconds. */
uint64_t thaw_now_ns(void);
double thaw_now_s(void);

/* Parse a size like "16MiB", "4k", "2G", "1048576" into *out. */
int thaw_parse_size(const char *s, uint64_t *out) THAW_MUST_CHECK;
/* Format bytes as "16.0 MiB" into buf. Returns buf. */
const char *thaw_fmt_bytes(uint64_t bytes, char *buf, size_t n);

/* Read a whole (small) file into a NUL-terminated buffer freed with thaw_free.
 * max_bytes bounds the size (THAW_ELIMIT beyond). */
int thaw_read_file(const char *path, size_t max_bytes, char **out, size_t *len) THAW_MUST_CHECK;

/* Write data to path atomically: temp file in the same directory, fsync,
 * rename, fsync of the directory. Nothing partial is ever visible at path. */
int thaw_write_file_atomic(const char *path, const void *data, size_t len) THAW_MUST_CHECK;

/* Write all len bytes to fd (retrying short writes and EINTR); errors name
 * path. */
int thaw_write_all(int fd, const void *buf, size_t len, const char *path) THAW_MUST_CHECK;

/* fsync a directory (after rename/creat inside it). */
int thaw_fsync_dir(const char *dir) THAW_MUST_CHECK;

/* Remove a directory tree (like rm -rf). Missing path is success. */
int thaw_rm_rf(const char *path) THAW_MUST_CHECK;

/* mkdir -p. */
int thaw_mkdir_p(const char *path, unsigned mode) THAW_MUST_CHECK;

/* Round x up to a multiple of a (a power of two). */
static inline uint64_t thaw_align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) & ~(a - 1);
}

/* xxh3-64 of a buffer (through libxxhash). */
uint64_t thaw_xxh3(const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* THAW_COMMON_H */
