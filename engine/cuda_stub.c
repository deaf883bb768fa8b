/*
 * cuda_stub.c - built without CUDA: the CUDA backend is not available and
 * thaw_engine_create with THAW_BACKEND_CUDA fails with THAW_ENOTSUP.
 */
#include "engine/eng_cuda.h"

int eng_cuda_create(const struct thaw_model *m, const struct eng_cuda_opts *o,
                    struct eng_cuda **out)
{
    (void)m, (void)o;
    *out = NULL;
    return THAW_FAIL(THAW_ENOTSUP, "CUDA backend unavailable: this build has no CUDA "
                     "(configure with -DTHAW_WITH_CUDA=ON on a machine with nvcc and cuBLAS)");
}

void eng_cuda_destroy(struct eng_cuda *c)
{
    (void)c;
}

float *eng_cuda_logits(struct eng_cuda *c)
{
    (void)c;
    return NULL;
}

const char *eng_cuda_name(const struct eng_cuda *c)
{
    (void)c;
    return "cuda";
}

int eng_cuda_forward(struct eng_cuda *c, const struct eng_btok *batch, int n)
{
    (void)c, (void)batch, (void)n;
    return THAW_FAIL(THAW_ENOTSUP, "CUDA backend unavailable: this build has no CUDA");
}
