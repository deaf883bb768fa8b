/*
 * alloc.c - allocation hooks. Every allocation in Thaw goes through here so
 * tests can make the n-th allocation fail (libuv's replace_allocator, curl's
 * torture tests) and check that constructors return -ENOMEM without leaking.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/thaw_common.h"

/* -1: never fail. Otherwise the number of allocations still allowed. */
static _Atomic long fail_after = -1;

static int should_fail(void)
{
    long n = atomic_load_explicit(&fail_after, memory_order_relaxed);
    if (n < 0)
        return 0;
    if (n == 0)
        return 1;
    atomic_fetch_sub(&fail_after, 1);
    return 0;
}

void thaw_alloc_fail_after(long n)
{
    atomic_store(&fail_after, n);
}

void *thaw_malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n ? n : 1);
}

void *thaw_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1);
}

void *thaw_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n ? n : 1);
}

void thaw_free(void *p)
{
    free(p);
}

char *thaw_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = thaw_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void *thaw_malloc_aligned(size_t align, size_t n)
{
    void *p = NULL;
    if (should_fail())
        return NULL;
    if (posix_memalign(&p, align, n ? n : align) != 0)
        return NULL;
    return p;
}

void thaw_free_aligned(void *p)
{
    free(p);
}
