/*
 * uring_stub.c - built when liburing is absent: io_uring reads are not
 * supported, and the file source falls back to its pread pool.
 */
#include "loader/loader_int.h"

int loader_uring_read(struct thaw_loader *ld, const int *fds, const struct loader_chunk *chunks,
                      size_t n)
{
    (void)ld, (void)fds, (void)chunks, (void)n;
    return THAW_FAIL(THAW_ENOTSUP, "built without liburing");
}
