/*
 * thaw_loader.h - the tiered loading pipeline. A load is a plan over chunks
 * (default 16 MiB) of each partition of a Thaw checkpoint. Sources: a local
 * directory (O_DIRECT + io_uring, a pread pool when io_uring is refused,
 * buffered reads when O_DIRECT is refused or the data sits in the page
 * cache), memory (tmpfs files or memfds: the DRAM tier, zero-copy for host
 * loads), and http(s):// or s3:// through libcurl (parallel range requests,
 * retry with resume, written through to an SSD cache). Sinks: host memory
 * (one aligned allocation per partition, read straight into place) and, in
 * the CUDA build, GPU memory through a pinned chunk pool and several streams.
 */
#ifndef THAW_LOADER_H
#define THAW_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt/thaw_ckpt.h"
#include "common/thaw_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where bytes came from, fastest first. */
enum thaw_tier {
    THAW_TIER_GPU,    /* already resident in GPU memory */
    THAW_TIER_DRAM,   /* DRAM cache (tmpfs/memfd) or the OS page cache */
    THAW_TIER_SSD,    /* local file read with O_DIRECT (or buffered, not resident) */
    THAW_TIER_PEER,   /* another host */
    THAW_TIER_REMOTE, /* object store over HTTP(S)/S3 */
    THAW_TIER_COUNT
};

/* "gpu", "dram", "ssd", "peer", "remote". */
const char *thaw_tier_name(enum thaw_tier t);

enum thaw_load_target { THAW_LOAD_HOST, THAW_LOAD_GPU };

struct thaw_loader;

/* Zero means default for every field. */
struct thaw_loader_opts {
    /* The pipeline unit is the checkpoint's checksum chunk (manifest
     * chunk_bytes, 16 MiB by default), so every chunk can be verified alone. */
    size_t io_bytes;        /* one read request; default 4 MiB (4 KiB multiple) */
    unsigned queue_depth;   /* io_uring reads in flight; default 32 */
    unsigned n_threads;     /* pread/copy threads; default min(8, 2 * cores) */
    unsigned n_connections; /* parallel HTTP range requests; default 8 */
    unsigned max_retries;   /* per chunk for remote sources; default 5 */
    unsigned retry_base_ms; /* first backoff; doubles per retry; default 100 */
    enum thaw_load_target target;
    int gpu_device;
    unsigned n_streams;     /* GPU copy streams; default 4 */
    size_t pool_bytes;      /* pinned staging pool for GPU loads; default 256 MiB */
    const char *cache_dir;  /* SSD cache for remote checkpoints; NULL: $THAW_CACHE_DIR or none */
    int verify;             /* 0: when data crossed a network or filled a cache; 1: always; -1: never */
    int cache_strict;       /* a failed cache fill fails the load (default: WARN and go on) */
    int force_pread;        /* test hook: behave as if io_uring were refused */
    int force_buffered;     /* test hook: behave as if O_DIRECT were refused */
    int force_direct;       /* ignore page-cache residency: always O_DIRECT */
    int cold;               /* drop the files' pages from the page cache first (benchmarks) */
    /* Called once when the manifest and side files are in, before any weight
     * is read, on the loading thread: start work that needs only them (parse
     * the tokenizer) so it overlaps the load. thaw_loader_manifest and
     * thaw_loader_side_file work on ld during the call; if the load then
     * fails, ld is freed, so copy what a background task keeps. */
    void (*on_meta)(void *arg, const struct thaw_loader *ld);
    void *on_meta_arg;
};

struct thaw_tier_stats {
    uint64_t bytes;
    double seconds; /* wall time during which this tier delivered data */
};

/* What one load did. Seconds are wall-clock. */
struct thaw_load_stats {
    uint64_t bytes;
    double seconds;   /* whole load, manifest to last byte in place */
    double gbps;      /* bytes / seconds / 1e9 */
    struct thaw_tier_stats tier[THAW_TIER_COUNT];
    enum thaw_tier main_tier; /* the tier that delivered most bytes */
    const char *method;       /* "io_uring", "pread", "buffered", "mmap", "http", "cache" */
    double manifest_s;        /* fetch + parse manifest and side files */
    double alloc_s;           /* destination allocation (host or device) */
    double read_s;            /* source reads */
    double verify_s;          /* checksum time, summed over threads */
    double gpu_copy_s;        /* host->device copies, until the last completes */
    double cache_s;           /* writing through to the SSD cache, summed */
    uint64_t cache_bytes;     /* bytes written to the SSD cache */
    int cache_error;          /* a cache fill failed (load went on) */
    unsigned retries;         /* remote chunk retries */
    int resident_pct;         /* page-cache residency measured before a file load */
};


/*
 * Load the checkpoint at uri (a directory path, file://DIR, http(s)://URL/
 * or s3://BUCKET/PREFIX) into the target. On success *out owns the loaded
 * partitions and the manifest. Errors name the file (and chunk).
 * Thread-safe (separate loads share nothing but the SSD cache, which is
 * locked so a second concurrent load of one URI waits for the first).
 */
int thaw_loader_load(const char *uri, const struct thaw_loader_opts *o, struct thaw_loader **out)
    THAW_MUST_CHECK;

/* Release the loaded memory. NULL is a no-op. */
void thaw_loader_destroy(struct thaw_loader *ld);

/* The manifest; borrowed until destroy. */
const struct thaw_manifest *thaw_loader_manifest(const struct thaw_loader *ld);

/* Stats of the load; borrowed until destroy. */
const struct thaw_load_stats *thaw_loader_stats(const struct thaw_loader *ld);

/* Base of partition p (host or device pointer, per the target) and its
 * size; NULL if p is out of range. Borrowed until destroy. */
void *thaw_loader_partition(const struct thaw_loader *ld, uint32_t p, size_t *bytes);

/* Pointer to a tensor's bytes (base + offset, no copy), NULL if absent;
 * *info (if non-NULL) gets its description. Borrowed until destroy. */
void *thaw_loader_tensor(const struct thaw_loader *ld, const char *name,
                         const struct thaw_tensor_info **info);

/* Bytes of a side file (config.json, tokenizer.json, ...), NULL if the
 * checkpoint has none. Borrowed until destroy. */
const char *thaw_loader_side_file(const struct thaw_loader *ld, const char *name, size_t *len);

/* Whether GPU loading is built in and a device is usable (0 or 1). */
int thaw_loader_gpu_available(void);

/* The stats as one JSON object (bytes, seconds, gbps, method, by_tier, stages).
 * Caller frees with thaw_free. */
char *thaw_loader_stats_json(const struct thaw_load_stats *s);

#ifdef __cplusplus
}
#endif
#endif /* THAW_LOADER_H */
