/*
 * sink_gpu.c - GPU sink (CUDA build). One device allocation per partition;
 * sources read into a pool of pinned chunk buffers; each filled buffer is
 * copied with cudaMemcpyAsync on one of several streams, and an event
 * recorded after the copy returns the buffer to the pool when it fires.
 * Plain C over the CUDA runtime API, so it builds with the host compiler.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "loader/loader_int.h"

#define MAX_STREAMS 16

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_COPYING };

struct sink_gpu {
    struct loader_sink base;
    struct thaw_loader *ld;
    int device;
    uint32_t n_parts;
    void **dev;          /* one device allocation per partition */
    size_t slot_bytes;
    unsigned n_slots;
    char *pool;          /* n_slots * slot_bytes, pinned */
    cudaEvent_t *ev;
    enum slot_state *state;
    uint64_t *seq;       /* copy order, to reclaim the oldest first */
    char *reclaiming;
    uint64_t next_seq;
    cudaStream_t streams[MAX_STREAMS];
    unsigned n_streams;
    double first_copy_s;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

#define CUDA_TRY(call, what)                                                                   \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            rc = THAW_FAIL(THAW_ECUDA, "%s: %s", (what), cudaGetErrorString(e_));             \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

int loader_gpu_available(void)
{
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

static int gpu_acquire(struct loader_sink *s, const struct loader_chunk *c, void **buf)
{
    struct sink_gpu *g = (struct sink_gpu *)s;
    int rc = 0;
    (void)c;
    pthread_mutex_lock(&g->lock);
    for (;;) {
        unsigned oldest = g->n_slots;
        for (unsigned i = 0; i < g->n_slots; i++) {
            if (g->state[i] == SLOT_FREE) {
                g->state[i] = SLOT_FILLING;
                pthread_mutex_unlock(&g->lock);
                *buf = g->pool + (size_t)i * g->slot_bytes;
                return 0;
            }
            if (g->state[i] == SLOT_COPYING && !g->reclaiming[i] &&
                (oldest == g->n_slots || g->seq[i] < g->seq[oldest]))
                oldest = i;
        }
        if (oldest == g->n_slots) {
            pthread_cond_wait(&g->cond, &g->lock);
            continue;
        }
        g->reclaiming[oldest] = 1;
        pthread_mutex_unlock(&g->lock);
        cudaError_t e = cudaEventSynchronize(g->ev[oldest]);
        pthread_mutex_lock(&g->lock);
        g->reclaiming[oldest] = 0;
        g->state[oldest] = SLOT_FREE;
        pthread_cond_broadcast(&g->cond);
        if (e != cudaSuccess) {
            rc = THAW_FAIL(THAW_ECUDA, "waiting for a host-to-device copy: %s",
                           cudaGetErrorString(e));
            break;
        }
    }
    pthread_mutex_unlock(&g->lock);
    return rc;
}

static int gpu_complete(struct loader_sink *s, const struct loader_chunk *c, void *buf)
{
    struct sink_gpu *g = (struct sink_gpu *)s;
    unsigned i = (unsigned)(((char *)buf - g->pool) / (ptrdiff_t)g->slot_bytes);
    cudaStream_t st = g->streams[i % g->n_streams];
    int rc = 0;
    CUDA_TRY(cudaSetDevice(g->device), "cudaSetDevice");
    if (g->first_copy_s == 0)
        g->first_copy_s = thaw_now_s(); /* benign race: any early time will do */
    CUDA_TRY(cudaMemcpyAsync((char *)g->dev[c->part] + c->offset, buf, c->len,
                             cudaMemcpyHostToDevice, st),
             "cudaMemcpyAsync");
    CUDA_TRY(cudaEventRecord(g->ev[i], st), "cudaEventRecord");
    pthread_mutex_lock(&g->lock);
    g->state[i] = SLOT_COPYING;
    g->seq[i] = g->next_seq++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return 0;
fail:
    pthread_mutex_lock(&g->lock);
    g->state[i] = SLOT_FREE;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return rc;
}

static void gpu_abandon(struct loader_sink *s, const struct loader_chunk *c, void *buf)
{
    struct sink_gpu *g = (struct sink_gpu *)s;
    unsigned i = (unsigned)(((char *)buf - g->pool) / (ptrdiff_t)g->slot_bytes);
    (void)c;
    pthread_mutex_lock(&g->lock);
    g->state[i] = SLOT_FREE;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static int gpu_finish(struct loader_sink *s)
{
    struct sink_gpu *g = (struct sink_gpu *)s;
    int rc = 0;
    CUDA_TRY(cudaSetDevice(g->device), "cudaSetDevice");
    for (unsigned k = 0; k < g->n_streams; k++)
        CUDA_TRY(cudaStreamSynchronize(g->streams[k]), "cudaStreamSynchronize");
    if (g->first_copy_s > 0)
        g->ld->st.gpu_copy_s = thaw_now_s() - g->first_copy_s;
    return 0;
fail:
    return rc;
}

static void gpu_destroy(struct loader_sink *s)
{
    struct sink_gpu *g = (struct sink_gpu *)s;
    cudaSetDevice(g->device);
    for (unsigned k = 0; k < g->n_streams; k++) {
        if (g->streams[k])
            cudaStreamDestroy(g->streams[k]);
    }
    for (unsigned i = 0; g->ev && i < g->n_slots; i++) {
        if (g->ev[i])
            cudaEventDestroy(g->ev[i]);
    }
    if (g->pool)
        cudaFreeHost(g->pool);
    for (uint32_t p = 0; g->dev && p < g->n_parts; p++) {
        if (g->dev[p])
            cudaFree(g->dev[p]);
    }
    thaw_free(g->dev);
    thaw_free(g->ev);
    thaw_free(g->state);
    thaw_free(g->seq);
    thaw_free(g->reclaiming);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    thaw_free(g);
}

static void *gpu_partition(struct loader_sink *s, uint32_t p)
{
    struct sink_gpu *g = (struct sink_gpu *)s;
    return p < g->n_parts ? g->dev[p] : NULL;
}

static const struct loader_sink_ops gpu_ops = {
    .name = "gpu",
    .acquire = gpu_acquire,
    .complete = gpu_complete,
    .abandon = gpu_abandon,
    .finish = gpu_finish,
    .destroy = gpu_destroy,
    .partition = gpu_partition,
};

int loader_sink_gpu_create(struct thaw_loader *ld, struct loader_sink **out)
{
    int rc = 0;
    if (!loader_gpu_available())
        return THAW_FAIL(THAW_ENOTSUP, "no CUDA device is available");
    struct sink_gpu *g = thaw_calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->base.ops = &gpu_ops;
    g->ld = ld;
    g->device = ld->o.gpu_device;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->n_parts = thaw_manifest_n_partitions(ld->m);
    g->slot_bytes = (size_t)thaw_manifest_chunk_bytes(ld->m);
    g->n_slots = (unsigned)(ld->o.pool_bytes / g->slot_bytes);
    if (g->n_slots < 4)
        g->n_slots = 4;
    g->n_streams = ld->o.n_streams < MAX_STREAMS ? ld->o.n_streams : MAX_STREAMS;
    g->dev = thaw_calloc(g->n_parts, sizeof *g->dev);
    g->ev = thaw_calloc(g->n_slots, sizeof *g->ev);
    g->state = thaw_calloc(g->n_slots, sizeof *g->state);
    g->seq = thaw_calloc(g->n_slots, sizeof *g->seq);
    g->reclaiming = thaw_calloc(g->n_slots, 1);
    if (!g->dev || !g->ev || !g->state || !g->seq || !g->reclaiming) {
        rc = -ENOMEM;
        goto fail;
    }
    CUDA_TRY(cudaSetDevice(g->device), "cudaSetDevice");
    for (uint32_t p = 0; p < g->n_parts; p++)
        CUDA_TRY(cudaMalloc(&g->dev[p], (size_t)thaw_manifest_partition(ld->m, p)->bytes),
                 "cudaMalloc (one allocation per partition)");
    CUDA_TRY(cudaHostAlloc((void **)&g->pool, (size_t)g->n_slots * g->slot_bytes,
                           cudaHostAllocDefault),
             "cudaHostAlloc (pinned chunk pool)");
    for (unsigned i = 0; i < g->n_slots; i++)
        CUDA_TRY(cudaEventCreateWithFlags(&g->ev[i], cudaEventDisableTiming), "cudaEventCreate");
    for (unsigned k = 0; k < g->n_streams; k++)
        CUDA_TRY(cudaStreamCreateWithFlags(&g->streams[k], cudaStreamNonBlocking),
                 "cudaStreamCreate");
    *out = &g->base;
    return 0;
fail:
    gpu_destroy(&g->base);
    return rc;
}
