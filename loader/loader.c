/*
 * loader.c - the load orchestrator: resolve the URI, get the manifest (from
 * a directory, the SSD cache or the remote store), build the chunk plan,
 * create the sink, run the source, and account bytes and time per tier.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "loader/loader_int.h"

#define MAX_SIDE_BYTES (512u << 20)
#define MAX_MANIFEST_BYTES (256u << 20)

const char *thaw_tier_name(enum thaw_tier t)
{
    static const char *names[THAW_TIER_COUNT] = { "gpu", "dram", "ssd", "peer", "remote" };
    return (unsigned)t < THAW_TIER_COUNT ? names[t] : "?";
}

int loader_fail(struct thaw_loader *ld, int rc)
{
    pthread_mutex_lock(&ld->lock);
    if (!ld->err) {
        ld->err = rc;
        snprintf(ld->errmsg, sizeof ld->errmsg, "%s", thaw_errmsg());
    }
    pthread_mutex_unlock(&ld->lock);
    atomic_store(&ld->failed, 1);
    return rc;
}

int loader_error(struct thaw_loader *ld)
{
    return thaw_err_restore(ld->err, ld->errmsg);
}

int loader_chunk_verify(struct thaw_loader *ld, const struct loader_chunk *c, const void *buf)
{
    if (!ld->do_verify)
        return 0;
    uint64_t t0 = thaw_now_ns();
    int rc = thaw_ckpt_check_chunk(ld->m, c->part, c->index, buf, c->len);
    atomic_fetch_add(&ld->verify_ns, thaw_now_ns() - t0);
    return rc;
}

int loader_chunk_forward(struct thaw_loader *ld, const struct loader_chunk *c, void *buf)
{
    if (ld->cache && !loader_cache_failed(ld->cache)) {
        uint64_t t0 = thaw_now_ns();
        int rc = loader_cache_write(ld->cache, c, buf);
        atomic_fetch_add(&ld->cache_ns, thaw_now_ns() - t0);
        if (rc == 0) {
            atomic_fetch_add(&ld->cache_bytes, c->len);
        } else if (ld->o.cache_strict) {
            ld->sink->ops->abandon(ld->sink, c, buf);
            return rc;
        } else {
            THAW_LOG(THAW_LOG_WARN, "loader", "cache_fill_failed", "error=\"%s\"", thaw_errmsg());
        }
    }
    return ld->sink->ops->complete(ld->sink, c, buf);
}

int loader_chunk_filled(struct thaw_loader *ld, const struct loader_chunk *c, void *buf)
{
    int rc = loader_chunk_verify(ld, c, buf);
    if (rc) {
        ld->sink->ops->abandon(ld->sink, c, buf);
        return rc;
    }
    return loader_chunk_forward(ld, c, buf);
}

static void apply_defaults(struct thaw_loader_opts *o)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (!o->io_bytes)
        o->io_bytes = 4u << 20;
    o->io_bytes = (size_t)thaw_align_up(o->io_bytes, THAW_CKPT_ALIGN);
    if (!o->queue_depth)
        o->queue_depth = 32;
    if (!o->n_threads)
        o->n_threads = (unsigned)(cores > 0 && cores < 4 ? 2 * cores : 8);
    if (!o->n_connections)
        o->n_connections = 8;
    if (!o->max_retries)
        o->max_retries = 5;
    if (!o->retry_base_ms)
        o->retry_base_ms = 100;
    if (!o->n_streams)
        o->n_streams = 4;
    if (!o->pool_bytes)
        o->pool_bytes = 256u << 20;
    if (!o->cache_dir) {
        const char *env = getenv("THAW_CACHE_DIR");
        o->cache_dir = env && env[0] ? env : NULL;
    }
}

static int build_plan(struct thaw_loader *ld)
{
    uint64_t cb = thaw_manifest_chunk_bytes(ld->m);
    size_t n = 0;
    for (uint32_t p = 0; p < thaw_manifest_n_partitions(ld->m); p++)
        n += thaw_manifest_partition(ld->m, p)->n_chunks;
    ld->chunks = thaw_calloc(n ? n : 1, sizeof *ld->chunks);
    if (!ld->chunks)
        return -ENOMEM;
    for (uint32_t p = 0; p < thaw_manifest_n_partitions(ld->m); p++) {
        const struct thaw_partition_info *pi = thaw_manifest_partition(ld->m, p);
        for (uint32_t c = 0; c < pi->n_chunks; c++) {
            uint64_t off = (uint64_t)c * cb;
            ld->chunks[ld->n_chunks++] = (struct loader_chunk){
                .part = p, .index = c, .offset = off,
                .len = (size_t)(off + cb <= pi->bytes ? cb : pi->bytes - off) };
        }
    }
    return 0;
}

static int add_side(struct thaw_loader *ld, const char *name, char *data, size_t len)
{
    ld->side_name[ld->n_side] = thaw_strdup(name);
    if (!ld->side_name[ld->n_side]) {
        thaw_free(data);
        return -ENOMEM;
    }
    ld->side_data[ld->n_side] = data;
    ld->side_len[ld->n_side] = len;
    ld->n_side++;
    return 0;
}

static int alloc_side(struct thaw_loader *ld)
{
    size_t n = thaw_manifest_n_files(ld->m) + 1;
    ld->side_name = thaw_calloc(n, sizeof(char *));
    ld->side_data = thaw_calloc(n, sizeof(char *));
    ld->side_len = thaw_calloc(n, sizeof(size_t));
    return ld->side_name && ld->side_data && ld->side_len ? 0 : -ENOMEM;
}

static int load_side_local(struct thaw_loader *ld, const char *dir)
{
    int rc = alloc_side(ld);
    for (size_t i = 0; rc == 0 && i < thaw_manifest_n_files(ld->m); i++) {
        char path[4096];
        char *data = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, thaw_manifest_file(ld->m, i));
        rc = thaw_read_file(path, MAX_SIDE_BYTES, &data, &len);
        if (rc == 0)
            rc = add_side(ld, thaw_manifest_file(ld->m, i), data, len);
    }
    return rc;
}

int loader_make_sink(struct thaw_loader *ld)
{
    double t0 = thaw_now_s();
    int rc = ld->o.target == THAW_LOAD_GPU ? loader_sink_gpu_create(ld, &ld->sink)
                                           : loader_sink_host_create(ld, &ld->sink);
    ld->st.alloc_s = thaw_now_s() - t0;
    return rc;
}

static void notify_meta(struct thaw_loader *ld)
{
    if (ld->o.on_meta && !ld->meta_notified) {
        ld->meta_notified = 1;
        ld->o.on_meta(ld->o.on_meta_arg, ld);
    }
}

static int load_local(struct thaw_loader *ld, const char *dir)
{
    double t0 = thaw_now_s();
    int rc = thaw_manifest_load(dir, &ld->m);
    if (rc == 0)
        rc = load_side_local(ld, dir);
    ld->st.manifest_s = thaw_now_s() - t0;
    if (rc == 0)
        notify_meta(ld);
    if (rc == 0)
        rc = build_plan(ld);
    if (rc == 0)
        rc = loader_src_file(ld, dir); /* makes the sink unless it maps DRAM in place */
    return rc;
}

/* Split "s3://bucket/prefix" or "http://host/path" into a base URL with no
 * trailing slash. */
static void trim_slash(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

static int load_remote(struct thaw_loader *ld, const char *uri)
{
    char base[4096], url[4200], cdir[4096];
    struct loader_cache *cache = NULL;
    int complete = 0, rc;
    snprintf(base, sizeof base, "%s", uri);
    trim_slash(base);
    if (ld->o.cache_dir) {
        rc = loader_cache_open(ld->o.cache_dir, base, &cache, cdir, sizeof cdir, &complete);
        if (rc)
            return rc;
        if (complete) {
            /* Another load (maybe concurrent, which we waited for) filled it. */
            loader_cache_close(cache);
            THAW_LOG(THAW_LOG_DEBUG, "loader", "cache_hit", "uri=%s dir=%s", base, cdir);
            rc = load_local(ld, cdir);
            if (rc == 0)
                ld->st.method = "cache";
            return rc;
        }
    }
    double t0 = thaw_now_s();
    char *text = NULL;
    size_t len = 0;
    snprintf(url, sizeof url, "%s/manifest.json", base);
    rc = loader_fetch_small(ld, url, MAX_MANIFEST_BYTES, &text, &len);
    if (rc == 0) {
        rc = thaw_manifest_parse(text, len, url, &ld->m);
        thaw_free(text);
    }
    if (rc == 0)
        rc = alloc_side(ld);
    for (size_t i = 0; rc == 0 && i < thaw_manifest_n_files(ld->m); i++) {
        snprintf(url, sizeof url, "%s/%s", base, thaw_manifest_file(ld->m, i));
        rc = loader_fetch_small(ld, url, MAX_SIDE_BYTES, &text, &len);
        if (rc == 0)
            rc = add_side(ld, thaw_manifest_file(ld->m, i), text, len);
    }
    ld->st.manifest_s = thaw_now_s() - t0;
    if (rc == 0)
        notify_meta(ld);
    if (rc == 0)
        rc = build_plan(ld);
    if (rc == 0)
        rc = loader_make_sink(ld);
    if (rc == 0 && cache) {
        int crc = loader_cache_begin(cache, ld->m);
        if (crc == 0)
            ld->cache = cache;
        else if (ld->o.cache_strict)
            rc = crc;
        else {
            ld->st.cache_error = 1;
            THAW_LOG(THAW_LOG_WARN, "loader", "cache_fill_failed", "error=\"%s\"", thaw_errmsg());
        }
    }
    if (rc == 0) {
        ld->do_verify = ld->o.verify >= 0; /* data crossed a network */
        rc = loader_src_remote(ld, base);
    }
    if (rc == 0 && ld->cache && !loader_cache_failed(ld->cache)) {
        uint64_t c0 = thaw_now_ns();
        int crc = loader_cache_commit(ld->cache, ld);
        atomic_fetch_add(&ld->cache_ns, thaw_now_ns() - c0);
        if (crc && ld->o.cache_strict)
            rc = crc;
        else if (crc)
            THAW_LOG(THAW_LOG_WARN, "loader", "cache_fill_failed", "error=\"%s\"", thaw_errmsg());
    }
    if (ld->cache && loader_cache_failed(ld->cache))
        ld->st.cache_error = 1;
    if (cache) {
        int keep_err = rc;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", thaw_errmsg());
        loader_cache_close(cache);
        ld->cache = NULL;
        if (keep_err)
            thaw_err_restore(keep_err, msg);
    }
    return rc;
}

int thaw_loader_load(const char *uri, const struct thaw_loader_opts *o, struct thaw_loader **out)
{
    struct thaw_loader *ld = thaw_calloc(1, sizeof *ld);
    if (!ld)
        return -ENOMEM;
    if (o)
        ld->o = *o;
    apply_defaults(&ld->o);
    pthread_mutex_init(&ld->lock, NULL);
    double t0 = thaw_now_s();
    int rc;
    if (strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0 ||
        strncmp(uri, "s3://", 5) == 0) {
        rc = load_remote(ld, uri);
    } else {
        const char *dir = strncmp(uri, "file://", 7) == 0 ? uri + 7 : uri;
        ld->do_verify = ld->o.verify > 0;
        rc = load_local(ld, dir);
    }
    if (rc == 0 && ld->sink)
        rc = ld->sink->ops->finish(ld->sink);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", thaw_errmsg());
        thaw_loader_destroy(ld);
        return thaw_err_restore(rc, msg);
    }
    struct thaw_load_stats *s = &ld->st;
    s->seconds = thaw_now_s() - t0;
    s->bytes = thaw_manifest_total_bytes(ld->m);
    s->gbps = s->seconds > 0 ? (double)s->bytes / s->seconds / 1e9 : 0;
    s->verify_s = (double)atomic_load(&ld->verify_ns) * 1e-9;
    s->cache_s = (double)atomic_load(&ld->cache_ns) * 1e-9;
    s->cache_bytes = atomic_load(&ld->cache_bytes);
    s->retries = atomic_load(&ld->retries);
    uint64_t best = 0;
    for (int t = 0; t < THAW_TIER_COUNT; t++) {
        if (s->tier[t].bytes > best) {
            best = s->tier[t].bytes;
            s->main_tier = (enum thaw_tier)t;
        }
    }
    char a[32];
    THAW_LOG(THAW_LOG_DEBUG, "loader", "load_done",
             "uri=%s bytes=%" PRIu64 " seconds=%.3f gbps=%.2f tier=%s method=%s size=\"%s\"", uri,
             s->bytes, s->seconds, s->gbps, thaw_tier_name(s->main_tier),
             s->method ? s->method : "?", thaw_fmt_bytes(s->bytes, a, sizeof a));
    *out = ld;
    return 0;
}

void thaw_loader_destroy(struct thaw_loader *ld)
{
    if (!ld)
        return;
    if (ld->sink)
        ld->sink->ops->destroy(ld->sink);
    if (ld->dram_map) {
        for (uint32_t p = 0; p < thaw_manifest_n_partitions(ld->m); p++) {
            if (ld->dram_map[p])
                munmap(ld->dram_map[p], ld->dram_len[p]);
        }
    }
    thaw_free(ld->dram_map);
    thaw_free(ld->dram_len);
    for (size_t i = 0; i < ld->n_side; i++) {
        thaw_free(ld->side_name[i]);
        thaw_free(ld->side_data[i]);
    }
    thaw_free(ld->side_name);
    thaw_free(ld->side_data);
    thaw_free(ld->side_len);
    thaw_free(ld->chunks);
    thaw_manifest_destroy(ld->m);
    pthread_mutex_destroy(&ld->lock);
    thaw_free(ld);
}

const struct thaw_manifest *thaw_loader_manifest(const struct thaw_loader *ld)
{
    return ld->m;
}

const struct thaw_load_stats *thaw_loader_stats(const struct thaw_loader *ld)
{
    return &ld->st;
}

void *thaw_loader_partition(const struct thaw_loader *ld, uint32_t p, size_t *bytes)
{
    const struct thaw_partition_info *pi = thaw_manifest_partition(ld->m, p);
    if (!pi)
        return NULL;
    if (bytes)
        *bytes = (size_t)pi->bytes;
    if (ld->dram_map && ld->dram_map[p])
        return ld->dram_map[p];
    return ld->sink ? ld->sink->ops->partition(ld->sink, p) : NULL;
}

void *thaw_loader_tensor(const struct thaw_loader *ld, const char *name,
                         const struct thaw_tensor_info **info)
{
    int64_t i = thaw_manifest_find(ld->m, name);
    if (i < 0)
        return NULL;
    const struct thaw_tensor_info *t = thaw_manifest_tensor(ld->m, (size_t)i);
    if (info)
        *info = t;
    char *base = thaw_loader_partition(ld, t->partition, NULL);
    return base ? base + t->offset : NULL;
}

const char *thaw_loader_side_file(const struct thaw_loader *ld, const char *name, size_t *len)
{
    for (size_t i = 0; i < ld->n_side; i++) {
        if (strcmp(ld->side_name[i], name) == 0) {
            if (len)
                *len = ld->side_len[i];
            return ld->side_data[i];
        }
    }
    return NULL;
}

int thaw_loader_gpu_available(void)
{
    return loader_gpu_available();
}

char *thaw_loader_stats_json(const struct thaw_load_stats *s)
{
    json_t *by = json_object();
    for (int t = 0; t < THAW_TIER_COUNT; t++) {
        if (!s->tier[t].bytes)
            continue;
        double sec = s->tier[t].seconds;
        json_object_set_new(by, thaw_tier_name((enum thaw_tier)t),
                            json_pack("{s:I, s:f, s:f}", "bytes", (json_int_t)s->tier[t].bytes,
                                      "seconds", sec, "gbps",
                                      sec > 0 ? (double)s->tier[t].bytes / sec / 1e9 : 0.0));
    }
    json_t *o = json_pack("{s:I, s:f, s:f, s:s, s:s, s:o, s:{s:f, s:f, s:f, s:f, s:f, s:f}, "
                          "s:I, s:b, s:i, s:i}",
                          "bytes", (json_int_t)s->bytes, "seconds", s->seconds, "gbps", s->gbps,
                          "tier", thaw_tier_name(s->main_tier), "method",
                          s->method ? s->method : "none", "by_tier", by, "stages", "manifest_s",
                          s->manifest_s, "alloc_s", s->alloc_s, "read_s", s->read_s, "verify_s",
                          s->verify_s, "gpu_copy_s", s->gpu_copy_s, "cache_s", s->cache_s,
                          "cache_bytes", (json_int_t)s->cache_bytes, "cache_error",
                          s->cache_error, "retries", (int)s->retries, "resident_pct",
                          s->resident_pct);
    if (!o)
        return NULL;
    char *j = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    char *text = j ? thaw_strdup(j) : NULL;
    free(j); /* jansson allocated it */ /* checksrc: allow */
    return text;
}
