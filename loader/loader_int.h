/*
 * loader_int.h - private to loader/: the chunk plan, the sink vtable that
 * sources fill, and the source/sink/cache entry points.
 */
#ifndef LOADER_INT_H
#define LOADER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "loader/thaw_loader.h"

/* One pipeline unit: bytes [offset, offset+len) of partition part. */
struct loader_chunk {
    uint32_t part;
    uint32_t index; /* chunk number within the partition (checksum index) */
    uint64_t offset;
    size_t len;
};

struct loader_sink;

/*
 * A sink receives chunks. acquire() returns the buffer a source reads chunk c
 * into (the final destination for host loads, a pinned staging buffer for
 * GPU loads) and may block until one is free; complete() hands the filled
 * buffer back. Both are called from several threads at once.
 */
struct loader_sink_ops {
    const char *name;
    int (*acquire)(struct loader_sink *s, const struct loader_chunk *c, void **buf);
    int (*complete)(struct loader_sink *s, const struct loader_chunk *c, void *buf);
    /* Return a buffer unused (the source failed before filling it). */
    void (*abandon)(struct loader_sink *s, const struct loader_chunk *c, void *buf);
    int (*finish)(struct loader_sink *s); /* wait for outstanding work */
    void (*destroy)(struct loader_sink *s);
    void *(*partition)(struct loader_sink *s, uint32_t p);
};

struct loader_sink {
    const struct loader_sink_ops *ops;
};

struct loader_cache;

struct thaw_loader {
    struct thaw_loader_opts o;
    int meta_notified;              /* o.on_meta was called */
    struct thaw_manifest *m;
    struct thaw_load_stats st;
    struct loader_sink *sink;       /* NULL for zero-copy DRAM host loads */
    void **dram_map;                /* per partition: mapping of a DRAM-tier file, or NULL */
    size_t *dram_len;
    struct loader_chunk *chunks;    /* the plan */
    size_t n_chunks;
    char **side_name;               /* side files held in memory */
    char **side_data;
    size_t *side_len;
    size_t n_side;
    struct loader_cache *cache;     /* write-through target while fetching remote */
    int do_verify;
    /* accounting shared by worker threads */
    _Atomic uint64_t verify_ns, cache_ns, cache_bytes;
    _Atomic unsigned retries;
    pthread_mutex_t lock;
    _Atomic int failed;             /* set by the first failing worker */
    int err;                        /* its code and message (under lock) */
    char errmsg[1024];
};

/* Record the first error of a worker thread (code + this thread's message)
 * and tell the others to stop. Returns rc. Thread-safe. */
int loader_fail(struct thaw_loader *ld, int rc);
/* In the calling thread: the recorded error as THAW_FAIL would leave it. */
int loader_error(struct thaw_loader *ld);

/* Check chunk c against the manifest when this load verifies. Thread-safe. */
int loader_chunk_verify(struct thaw_loader *ld, const struct loader_chunk *c, const void *buf);

/* Write chunk c through to the cache (when filling one) and hand it to the
 * sink; on failure the buffer has been abandoned. Thread-safe. */
int loader_chunk_forward(struct thaw_loader *ld, const struct loader_chunk *c, void *buf);

/* Called by a source when chunk c sits in buf: verify (when asked), write
 * through to the cache, then hand to the sink. On failure the buffer has
 * been abandoned to the sink. Thread-safe. */
int loader_chunk_filled(struct thaw_loader *ld, const struct loader_chunk *c, void *buf);

/* Create ld->sink for ld->o.target (timed as the alloc stage). */
int loader_make_sink(struct thaw_loader *ld);

/* Sinks. */
int loader_sink_host_create(struct thaw_loader *ld, struct loader_sink **out);
int loader_sink_gpu_create(struct thaw_loader *ld, struct loader_sink **out);
int loader_gpu_available(void);

/* Sources. Each loads every chunk of ld->chunks whose partition file is
 * under dir (local) or base (remote). */
int loader_src_file(struct thaw_loader *ld, const char *dir);
int loader_src_remote(struct thaw_loader *ld, const char *url);
/* Fetch a small object (manifest, side file) in full. */
int loader_fetch_small(struct thaw_loader *ld, const char *url, size_t max_bytes, char **out,
                       size_t *len);

/* io_uring reads of a set of chunks (uring.c, or uring_stub.c -> THAW_ENOTSUP). */
int loader_uring_read(struct thaw_loader *ld, const int *fds, const struct loader_chunk *chunks,
                      size_t n);

/* Page-cache residency of the first bytes of fd, in percent. */
int loader_resident_pct(int fd, uint64_t bytes);

/* SSD cache for remote checkpoints (cache.c). */
int loader_cache_key(const char *uri, char *key, size_t n);
/* Take the cache entry's lock for uri (blocks while another load fills it).
 * *dir gets the complete entry's directory when one exists. */
int loader_cache_open(const char *cache_dir, const char *uri, struct loader_cache **out,
                      char *dir, size_t n, int *complete);
/* Start a fill: temp dir with sized partition files. */
int loader_cache_begin(struct loader_cache *c, const struct thaw_manifest *m);
int loader_cache_write(struct loader_cache *c, const struct loader_chunk *ch, const void *buf);
/* Write manifest + side files, fsync, rename into place. */
int loader_cache_commit(struct loader_cache *c, const struct thaw_loader *ld);
/* Drop the lock; remove an uncommitted fill. */
void loader_cache_close(struct loader_cache *c);
int loader_cache_failed(const struct loader_cache *c);

#endif /* LOADER_INT_H */
