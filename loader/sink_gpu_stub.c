/*
 * sink_gpu_stub.c - built without CUDA: GPU loads are not supported.
 */
#include "loader/loader_int.h"

int loader_sink_gpu_create(struct thaw_loader *ld, struct loader_sink **out)
{
    (void)ld, (void)out;
    return THAW_FAIL(THAW_ENOTSUP, "GPU loading needs a CUDA build (THAW_WITH_CUDA)");
}

int loader_gpu_available(void)
{
    return 0;
}
