/*
 * err.c - error codes and the thread-local "file:line: message" that
 * THAW_FAIL records, so a caller can report the reason once, where handled.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/thaw_common.h"

#define ERRMSG_MAX 1024

static _Thread_local char errmsg[ERRMSG_MAX];

const char *thaw_strerror(int code)
{
    switch (code) {
    case THAW_OK: return "success";
    case THAW_EFORMAT: return "malformed data";
    case THAW_ECHECKSUM: return "checksum mismatch";
    case THAW_ECUDA: return "CUDA error";
    case THAW_EHTTP: return "HTTP error";
    case THAW_EPG: return "PostgreSQL error";
    case THAW_ELIMIT: return "limit exceeded";
    case THAW_ENOTSUP: return "not supported";
    case THAW_EINVAL: return "invalid argument";
    case THAW_EDTYPE: return "unsupported dtype";
    case THAW_EVERSION: return "unsupported version";
    case THAW_ENOTFOUND: return "not found";
    case THAW_EIO: return "I/O error";
    default: break;
    }
    if (code < 0 && code > -1000)
        return strerror(-code);
    return "unknown error";
}

int thaw_fail_at(int code, const char *file, int line, const char *fmt, ...)
{
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(errmsg, sizeof errmsg, "%s:%d: ", base, line);
    if (n < 0 || n >= (int)sizeof errmsg)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg + n, sizeof errmsg - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

void thaw_err_ctx(const char *fmt, ...)
{
    char prefix[ERRMSG_MAX];
    char old[ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errmsg, sizeof old);
    snprintf(errmsg, sizeof errmsg, "%s: %s", prefix, old);
}

const char *thaw_errmsg(void)
{
    return errmsg;
}

int thaw_err_restore(int code, const char *msg)
{
    snprintf(errmsg, sizeof errmsg, "%s", msg);
    return code;
}

void thaw_err_clear(void)
{
    errmsg[0] = '\0';
}
