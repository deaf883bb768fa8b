/*
 * test_loader.c - loader/: every path of a load, each checked bytewise
 * against regenerated tensor contents: io_uring O_DIRECT, the forced pread
 * pool, forced buffered reads, page-cache residency, the tmpfs DRAM tier,
 * remote HTTP through a real loopback server (with 500s, resets, corrupt
 * bytes and 404s injected), the SSD cache (fill, hit, concurrent loads, a
 * full disk), local errors (truncated, corrupt, missing), and the GPU sink
 * where a device exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "loader/thaw_loader.h"
#include "tests/ckpt/st_writer.h"
#include "tests/loader/http_server.h"
#include "tests/thaw_test.h"

#if THAW_HAVE_CUDA
#include <cuda_runtime_api.h>
static int copy_from_device(void *dst, const void *src, size_t n)
{
    return cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : -1;
}
#else
static int copy_from_device(void *dst, const void *src, size_t n)
{
    (void)dst, (void)src, (void)n;
    return -1;
}
#endif

struct fixture {
    char *root;  /* temp dir */
    char *hf;    /* HF folder */
    char *ckpt;  /* converted checkpoint */
    struct tw_tensor *t;
    size_t n;
};

static char *join(const char *a, const char *b)
{
    char *p = malloc(strlen(a) + strlen(b) + 2);
    sprintf(p, "%s/%s", a, b);
    return p;
}

/* A 3-layer model, 2 partitions, 64 KiB chunks (many chunks per file). */
static void fx_make_in(struct fixture *f, const char *base)
{
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/thaw-loader-XXXXXX", base);
    char *d = mkdtemp(tmpl);
    CHECK(d != NULL);
    f->root = strdup(d);
    f->hf = join(f->root, "hf");
    f->ckpt = join(f->root, "ckpt");
    CHECK(mkdir(f->hf, 0755) == 0);
    tw_make_model(f->hf, 3, 96, THAW_DTYPE_BF16, 1, &f->t, &f->n);
    struct thaw_convert_opts o = { .n_partitions = 2, .chunk_bytes = 65536 };
    CHECK_OK(thaw_ckpt_convert(f->hf, f->ckpt, &o));
}

static void fx_make(struct fixture *f)
{
    const char *base = getenv("TMPDIR");
    fx_make_in(f, base && base[0] ? base : "/tmp");
}

static void fx_free(struct fixture *f)
{
    CHECK_OK(thaw_rm_rf(f->root));
    tw_free_tensors(f->t, f->n);
    free(f->root), free(f->hf), free(f->ckpt);
}

static int on_tmpfs(const char *path)
{
    struct statfs sf;
    return statfs(path, &sf) == 0 && (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC);
}

/* Every tensor of the loaded checkpoint equals the regenerated source. */
static void check_loaded(struct thaw_loader *ld, const struct fixture *f, int on_gpu)
{
    for (size_t i = 0; i < f->n; i++) {
        const struct thaw_tensor_info *ti = NULL;
        void *p = thaw_loader_tensor(ld, f->t[i].name, &ti);
        CHECK(p != NULL);
        size_t nb;
        void *want = tw_data(&f->t[i], &nb);
        CHECK_EQ(ti->bytes, nb);
        if (on_gpu) {
            void *host = malloc(nb);
            CHECK(copy_from_device(host, p, nb) == 0);
            CHECK_MEM_EQ(host, want, nb);
            free(host);
        } else {
            CHECK_MEM_EQ(p, want, nb);
        }
        free(want);
    }
    size_t len = 0;
    const char *cfg = thaw_loader_side_file(ld, "config.json", &len);
    CHECK(cfg != NULL && len > 0 && strstr(cfg, "LlamaForCausalLM"));
    CHECK(thaw_loader_side_file(ld, "nope.json", NULL) == NULL);
    const struct thaw_load_stats *s = thaw_loader_stats(ld);
    CHECK_EQ(s->bytes, thaw_manifest_total_bytes(thaw_loader_manifest(ld)));
    CHECK(s->seconds > 0);
}

static void t_file_uring(void)
{
    struct fixture f;
    fx_make(&f);
    if (on_tmpfs(f.ckpt)) {
        fx_free(&f);
        SKIP("temp dir is tmpfs: no O_DIRECT there");
    }
    struct thaw_loader_opts o = { .force_direct = 1, .cold = 1, .io_bytes = 16384 };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(f.ckpt, &o, &ld));
    check_loaded(ld, &f, 0);
    const struct thaw_load_stats *s = thaw_loader_stats(ld);
    CHECK_STR_EQ(s->method, THAW_HAVE_URING ? "io_uring" : "pread");
    CHECK_EQ(s->main_tier, THAW_TIER_SSD);
    CHECK_EQ(s->tier[THAW_TIER_SSD].bytes, s->bytes);
    char *js = thaw_loader_stats_json(s);
    CHECK(js && strstr(js, "\"by_tier\":{\"ssd\""));
    thaw_free(js);
    thaw_loader_destroy(ld);
    fx_free(&f);
}

static void t_file_pread_forced(void)
{
    struct fixture f;
    fx_make(&f);
    struct thaw_loader_opts o = { .force_direct = 1, .force_pread = 1, .n_threads = 3 };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(f.ckpt, &o, &ld));
    check_loaded(ld, &f, 0);
    if (!on_tmpfs(f.ckpt))
        CHECK_STR_EQ(thaw_loader_stats(ld)->method, "pread");
    thaw_loader_destroy(ld);
    fx_free(&f);
}

static void t_file_buffered_forced(void)
{
    struct fixture f;
    fx_make(&f);
    struct thaw_loader_opts o = { .force_buffered = 1, .force_direct = 1, .verify = 1 };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(f.ckpt, &o, &ld));
    check_loaded(ld, &f, 0);
    if (!on_tmpfs(f.ckpt))
        CHECK_STR_EQ(thaw_loader_stats(ld)->method, "buffered");
    thaw_loader_destroy(ld);
    fx_free(&f);
}

static void t_file_page_cache(void)
{
    struct fixture f;
    fx_make(&f);
    if (on_tmpfs(f.ckpt)) {
        fx_free(&f);
        SKIP("temp dir is tmpfs");
    }
    /* The converter just wrote the files: they are resident. */
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(f.ckpt, NULL, &ld));
    check_loaded(ld, &f, 0);
    const struct thaw_load_stats *s = thaw_loader_stats(ld);
    CHECK(s->resident_pct >= 50);
    CHECK_STR_EQ(s->method, "buffered");
    CHECK_EQ(s->main_tier, THAW_TIER_DRAM);
    thaw_loader_destroy(ld);
    /* cold: evicted first, so the load goes to the device */
    struct thaw_loader_opts o = { .cold = 1 };
    CHECK_OK(thaw_loader_load(f.ckpt, &o, &ld));
    check_loaded(ld, &f, 0);
    CHECK(thaw_loader_stats(ld)->resident_pct < 50);
    CHECK_EQ(thaw_loader_stats(ld)->main_tier, THAW_TIER_SSD);
    thaw_loader_destroy(ld);
    fx_free(&f);
}

static void t_dram_tmpfs(void)
{
    if (!on_tmpfs("/dev/shm"))
        SKIP("/dev/shm is not tmpfs here");
    struct fixture f;
    fx_make_in(&f, "/dev/shm");
    struct thaw_loader_opts o = { .verify = 1 };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(f.ckpt, &o, &ld));
    check_loaded(ld, &f, 0);
    const struct thaw_load_stats *s = thaw_loader_stats(ld);
    CHECK_STR_EQ(s->method, "mmap");
    CHECK_EQ(s->main_tier, THAW_TIER_DRAM);
    /* zero copy: a write through the file shows in the loaded view */
    size_t len;
    unsigned char *base = thaw_loader_partition(ld, 0, &len);
    char *part = join(f.ckpt, "part-0.bin");
    int fd = open(part, O_RDWR);
    unsigned char b = (unsigned char)(base[0] ^ 0xff);
    CHECK(pwrite(fd, &b, 1, 0) == 1);
    close(fd);
    CHECK_EQ(base[0], b);
    free(part);
    thaw_loader_destroy(ld);
    fx_free(&f);
}

/* The DRAM tier as the host agent will hand it over: memfds. A checkpoint
 * directory whose part files are links to /proc/self/fd/N loads in place. */
static void t_dram_memfd(void)
{
    struct fixture f;
    fx_make(&f);
    char *dir = join(f.root, "memfd-ckpt");
    CHECK(mkdir(dir, 0755) == 0);
    const char *copy[] = { "manifest.json", "config.json", "tokenizer.json" };
    for (int i = 0; i < 3; i++) {
        char *a = join(f.ckpt, copy[i]), *b = join(dir, copy[i]);
        CHECK(link(a, b) == 0);
        free(a), free(b);
    }
    for (int p = 0; p < 2; p++) {
        char name[32], link_to[64];
        snprintf(name, sizeof name, "part-%d.bin", p);
        char *src = join(f.ckpt, name), *dst = join(dir, name);
        int mfd = memfd_create(name, MFD_CLOEXEC);
        CHECK(mfd >= 0);
        char *data;
        size_t len;
        CHECK_OK(thaw_read_file(src, 1u << 30, &data, &len));
        CHECK(write(mfd, data, len) == (ssize_t)len);
        thaw_free(data);
        snprintf(link_to, sizeof link_to, "/proc/self/fd/%d", mfd);
        CHECK(symlink(link_to, dst) == 0);
        free(src), free(dst);
    }
    struct thaw_loader_opts o = { .verify = 1 };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(dir, &o, &ld));
    check_loaded(ld, &f, 0);
    CHECK_STR_EQ(thaw_loader_stats(ld)->method, "mmap");
    CHECK_EQ(thaw_loader_stats(ld)->main_tier, THAW_TIER_DRAM);
    thaw_loader_destroy(ld);
    free(dir);
    fx_free(&f);
}

static void t_local_errors(void)
{
    struct fixture f;
    fx_make(&f);
    struct thaw_loader *ld = NULL;
    char *missing = join(f.root, "nope");
    CHECK_FAILS(thaw_loader_load(missing, NULL, &ld), -ENOENT);
    CHECK_ERRMSG_HAS("nope/manifest.json");
    /* corrupt byte: found when verifying, named by file and chunk */
    char *part = join(f.ckpt, "part-1.bin");
    int fd = open(part, O_RDWR);
    unsigned char b;
    CHECK(pread(fd, &b, 1, 65536 * 2 + 5) == 1);
    b ^= 1;
    CHECK(pwrite(fd, &b, 1, 65536 * 2 + 5) == 1);
    struct thaw_loader_opts o = { .verify = 1, .force_direct = 1 };
    CHECK_FAILS(thaw_loader_load(f.ckpt, &o, &ld), THAW_ECHECKSUM);
    CHECK_ERRMSG_HAS("part-1.bin chunk 2");
    struct thaw_loader_opts o2 = { .verify = 1, .force_direct = 1, .force_pread = 1 };
    CHECK_FAILS(thaw_loader_load(f.ckpt, &o2, &ld), THAW_ECHECKSUM);
    CHECK_ERRMSG_HAS("part-1.bin chunk 2");
    /* truncated */
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    CHECK(ftruncate(fd, st.st_size - 4096) == 0);
    close(fd);
    CHECK_FAILS(thaw_loader_load(f.ckpt, NULL, &ld), THAW_EIO);
    CHECK_ERRMSG_HAS("part-1.bin");
    CHECK_ERRMSG_HAS("truncated");
    /* missing partition file */
    unlink(part);
    CHECK_FAILS(thaw_loader_load(f.ckpt, NULL, &ld), -ENOENT);
    CHECK_ERRMSG_HAS("part-1.bin");
    /* unsupported manifest version */
    char *man = join(f.ckpt, "manifest.json");
    tw_write_text(man, "{\"format\":\"thaw\",\"version\":9}");
    CHECK_FAILS(thaw_loader_load(f.ckpt, NULL, &ld), THAW_EVERSION);
    CHECK_ERRMSG_HAS("manifest.json");
    free(man), free(part), free(missing);
    fx_free(&f);
}

static void t_alloc_fail(void)
{
    struct fixture f;
    fx_make(&f);
    for (long n = 0;; n++) {
        struct thaw_loader *ld = NULL;
        struct thaw_loader_opts o = { .force_direct = 1, .force_pread = 1 };
        thaw_alloc_fail_after(n);
        int rc = thaw_loader_load(f.ckpt, &o, &ld);
        thaw_alloc_fail_after(-1);
        if (rc == 0) {
            check_loaded(ld, &f, 0);
            thaw_loader_destroy(ld);
            CHECK(n > 5);
            break;
        }
        CHECK_EQ(rc, -ENOMEM);
    }
    fx_free(&f);
}

/* ---------------------------------------------------------------- remote */

static char *url_of(int port, const char *path)
{
    char *u = malloc(256);
    snprintf(u, 256, "http://127.0.0.1:%d/%s", port, path);
    return u;
}

static void t_remote_http(void)
{
    struct fixture f;
    fx_make(&f);
    struct ts_http_opts so = { .root = f.root };
    int port;
    struct ts_http *srv = ts_http_start(&so, &port);
    char *url = url_of(port, "ckpt/");
    struct thaw_loader *ld;
    struct thaw_loader_opts o = { .n_connections = 4 };
    CHECK_OK(thaw_loader_load(url, &o, &ld));
    check_loaded(ld, &f, 0);
    const struct thaw_load_stats *s = thaw_loader_stats(ld);
    CHECK_STR_EQ(s->method, "http");
    CHECK_EQ(s->main_tier, THAW_TIER_REMOTE);
    CHECK_EQ(s->retries, 0);
    CHECK(s->verify_s > 0); /* data that crossed a network is verified */
    size_t n_chunks = 0;
    for (uint32_t p = 0; p < thaw_manifest_n_partitions(thaw_loader_manifest(ld)); p++)
        n_chunks += thaw_manifest_partition(thaw_loader_manifest(ld), p)->n_chunks;
    CHECK_EQ(ts_http_bin_requests(srv), (int)n_chunks); /* one range request per chunk */
    thaw_loader_destroy(ld);
    ts_http_stop(srv);
    free(url);
    fx_free(&f);
}

/* on_meta: called once with the manifest and side files, before any weight
 * is fetched, for local and remote loads. */
struct meta_seen {
    int calls, bin_requests;
    struct ts_http *srv;
    size_t cfg_len;
};

static void meta_cb(void *arg, const struct thaw_loader *ld)
{
    struct meta_seen *m = arg;
    m->calls++;
    CHECK(thaw_loader_manifest(ld) != NULL);
    CHECK(thaw_loader_side_file(ld, "config.json", &m->cfg_len) != NULL);
    m->bin_requests = m->srv ? ts_http_bin_requests(m->srv) : -1;
}

static void t_on_meta(void)
{
    struct fixture f;
    fx_make(&f);
    struct meta_seen seen = { 0 };
    struct thaw_loader_opts o = { .on_meta = meta_cb, .on_meta_arg = &seen };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(f.ckpt, &o, &ld));
    CHECK_EQ(seen.calls, 1);
    CHECK(seen.cfg_len > 0);
    thaw_loader_destroy(ld);
    struct ts_http_opts so = { .root = f.root };
    int port;
    memset(&seen, 0, sizeof seen);
    seen.srv = ts_http_start(&so, &port);
    char *url = url_of(port, "ckpt/");
    CHECK_OK(thaw_loader_load(url, &o, &ld));
    CHECK_EQ(seen.calls, 1);
    CHECK_EQ(seen.bin_requests, 0); /* no weight requested yet */
    check_loaded(ld, &f, 0);
    thaw_loader_destroy(ld);
    ts_http_stop(seen.srv);
    free(url);
    fx_free(&f);
}

static void t_remote_faults(void)
{
    struct fixture f;
    fx_make(&f);
    struct ts_http_opts so = { .root = f.root, .n_500 = 2, .n_reset = 3, .n_corrupt = 2 };
    int port;
    struct ts_http *srv = ts_http_start(&so, &port);
    char *url = url_of(port, "ckpt");
    struct thaw_loader *ld;
    struct thaw_loader_opts o = { .n_connections = 3, .retry_base_ms = 1, .max_retries = 8 };
    CHECK_OK(thaw_loader_load(url, &o, &ld));
    check_loaded(ld, &f, 0);
    CHECK(thaw_loader_stats(ld)->retries >= 7); /* 2 + 3 + 2 faults, each retried */
    thaw_loader_destroy(ld);
    ts_http_stop(srv);
    free(url);
    fx_free(&f);
}

static void t_remote_errors(void)
{
    struct fixture f;
    fx_make(&f);
    struct ts_http_opts so = { .root = f.root };
    int port;
    struct ts_http *srv = ts_http_start(&so, &port);
    struct thaw_loader *ld = NULL;
    struct thaw_loader_opts o = { .retry_base_ms = 1, .max_retries = 2 };
    char *url = url_of(port, "missing");
    CHECK_FAILS(thaw_loader_load(url, &o, &ld), THAW_EHTTP);
    CHECK_ERRMSG_HAS("missing/manifest.json: HTTP 404");
    free(url);
    /* a partition that is not there: 404 names the file and chunk */
    char *part = join(f.ckpt, "part-1.bin");
    char *moved = join(f.root, "part-1.bin");
    CHECK(rename(part, moved) == 0);
    url = url_of(port, "ckpt");
    CHECK_FAILS(thaw_loader_load(url, &o, &ld), THAW_EHTTP);
    CHECK_ERRMSG_HAS("part-1.bin chunk ");
    CHECK_ERRMSG_HAS(": HTTP 404");
    CHECK(rename(moved, part) == 0);
    ts_http_stop(srv);
    /* persistent 500s: retries run out */
    struct ts_http_opts bad = { .root = f.root, .n_500 = 1000 };
    srv = ts_http_start(&bad, &port);
    free(url);
    url = url_of(port, "ckpt");
    CHECK_FAILS(thaw_loader_load(url, &o, &ld), THAW_EHTTP);
    CHECK_ERRMSG_HAS("HTTP 500 (after 3 attempts)");
    ts_http_stop(srv);
    /* a server that ignores Range */
    struct ts_http_opts nr = { .root = f.root, .ignore_range = 1 };
    srv = ts_http_start(&nr, &port);
    free(url);
    url = url_of(port, "ckpt");
    CHECK_FAILS(thaw_loader_load(url, &o, &ld), THAW_EHTTP);
    ts_http_stop(srv);
    /* nothing listening */
    CHECK_FAILS(thaw_loader_load("http://127.0.0.1:1/ckpt", &o, &ld), THAW_EHTTP);
    CHECK_ERRMSG_HAS("127.0.0.1:1/ckpt/manifest.json");
    free(url), free(part), free(moved);
    fx_free(&f);
}

static int count_entries(const char *dir, const char *needle)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c -- '%s'", dir, needle);
    FILE *p = popen(cmd, "r");
    int n = 0;
    CHECK(fscanf(p, "%d", &n) == 1);
    pclose(p);
    return n;
}

static void t_remote_cache(void)
{
    struct fixture f;
    fx_make(&f);
    struct ts_http_opts so = { .root = f.root };
    int port;
    struct ts_http *srv = ts_http_start(&so, &port);
    char *url = url_of(port, "ckpt");
    char *cache = join(f.root, "cache");
    struct thaw_loader_opts o = { .cache_dir = cache };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(url, &o, &ld));
    check_loaded(ld, &f, 0);
    const struct thaw_load_stats *s = thaw_loader_stats(ld);
    CHECK_EQ(s->cache_bytes, s->bytes);
    CHECK_EQ(s->cache_error, 0);
    thaw_loader_destroy(ld);
    int fetched = ts_http_requests(srv);
    /* the entry is a complete, valid checkpoint */
    CHECK_EQ(count_entries(cache, "\\.tmp\\."), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls -d '%s'/ckpt-*[0-9a-f] > /dev/null", cache);
    CHECK(system(cmd) == 0);
    /* second load: from the cache, the server is not asked */
    CHECK_OK(thaw_loader_load(url, &o, &ld));
    check_loaded(ld, &f, 0);
    CHECK_STR_EQ(thaw_loader_stats(ld)->method, "cache");
    CHECK(thaw_loader_stats(ld)->tier[THAW_TIER_REMOTE].bytes == 0);
    CHECK_EQ(ts_http_requests(srv), fetched);
    thaw_loader_destroy(ld);
    ts_http_stop(srv);
    free(url), free(cache);
    fx_free(&f);
}

struct conc {
    const char *url;
    struct thaw_loader_opts o;
    int rc;
    const char *method;
    struct fixture *f;
};

static void *conc_load(void *arg)
{
    struct conc *c = arg;
    struct thaw_loader *ld = NULL;
    c->rc = thaw_loader_load(c->url, &c->o, &ld);
    if (c->rc == 0) {
        check_loaded(ld, c->f, 0);
        c->method = thaw_loader_stats(ld)->method;
        thaw_loader_destroy(ld);
    }
    return NULL;
}

static void t_remote_cache_concurrent(void)
{
    struct fixture f;
    fx_make(&f);
    struct ts_http_opts so = { .root = f.root };
    int port;
    struct ts_http *srv = ts_http_start(&so, &port);
    char *url = url_of(port, "ckpt");
    char *cache = join(f.root, "cache");
    struct conc c[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        c[i] = (struct conc){ .url = url, .o = { .cache_dir = cache }, .f = &f };
        CHECK(pthread_create(&th[i], NULL, conc_load, &c[i]) == 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_OK(c[0].rc);
    CHECK_OK(c[1].rc);
    /* exactly one fetched; the other waited and read the cache */
    CHECK(strcmp(c[0].method, "http") == 0 || strcmp(c[1].method, "http") == 0);
    CHECK(strcmp(c[0].method, "cache") == 0 || strcmp(c[1].method, "cache") == 0);
    struct thaw_manifest *m;
    CHECK_OK(thaw_manifest_load(f.ckpt, &m));
    int n_chunks = 0;
    for (uint32_t p = 0; p < thaw_manifest_n_partitions(m); p++)
        n_chunks += (int)thaw_manifest_partition(m, p)->n_chunks;
    thaw_manifest_destroy(m);
    CHECK_EQ(ts_http_bin_requests(srv), n_chunks);
    ts_http_stop(srv);
    free(url), free(cache);
    fx_free(&f);
}

static void t_remote_cache_disk_full(void)
{
    struct fixture f;
    fx_make(&f);
    struct ts_http_opts so = { .root = f.root };
    int port;
    struct ts_http *srv = ts_http_start(&so, &port);
    char *url = url_of(port, "ckpt");
    char *cache = join(f.root, "cache");
    /* A file-size limit below a partition's size: writes fail with EFBIG,
     * as on a full disk (we run in a forked child, so the limit dies with it). */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = { 100000, 100000 };
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    struct thaw_loader *ld;
    struct thaw_loader_opts o = { .cache_dir = cache };
    CHECK_OK(thaw_loader_load(url, &o, &ld)); /* the load itself goes on */
    check_loaded(ld, &f, 0);
    CHECK_EQ(thaw_loader_stats(ld)->cache_error, 1);
    thaw_loader_destroy(ld);
    /* nothing partial is visible: only the lock file */
    CHECK_EQ(count_entries(cache, "ckpt-"), 1);
    CHECK_EQ(count_entries(cache, "\\.lock$"), 1);
    /* strict: the cache failure is the load's failure, with the file named */
    struct thaw_loader_opts strict = { .cache_dir = cache, .cache_strict = 1 };
    CHECK_FAILS(thaw_loader_load(url, &strict, &ld), -EFBIG);
    CHECK_ERRMSG_HAS("part-");
    CHECK_EQ(count_entries(cache, "ckpt-"), 1);
    ts_http_stop(srv);
    free(url), free(cache);
    fx_free(&f);
}

/* ---------------------------------------------------------------- GPU */

static void t_gpu(void)
{
    if (!THAW_HAVE_CUDA)
        SKIP("built without CUDA");
    if (!thaw_loader_gpu_available())
        SKIP("no CUDA device on this machine");
    struct fixture f;
    fx_make(&f);
    struct thaw_loader_opts o = { .target = THAW_LOAD_GPU, .pool_bytes = 4 * 65536,
                                  .n_streams = 2, .cold = 1 };
    struct thaw_loader *ld;
    CHECK_OK(thaw_loader_load(f.ckpt, &o, &ld));
    check_loaded(ld, &f, 1);
    thaw_loader_destroy(ld);
    fx_free(&f);
}

static void t_gpu_absent(void)
{
    if (thaw_loader_gpu_available())
        SKIP("a GPU is present: the error path is not reachable");
    struct fixture f;
    fx_make(&f);
    struct thaw_loader_opts o = { .target = THAW_LOAD_GPU };
    struct thaw_loader *ld;
    CHECK_FAILS(thaw_loader_load(f.ckpt, &o, &ld), THAW_ENOTSUP);
    fx_free(&f);
}

static const struct test_case cases[] = {
    { "on_meta", t_on_meta },
    { "file_uring", t_file_uring },
    { "file_pread_forced", t_file_pread_forced },
    { "file_buffered_forced", t_file_buffered_forced },
    { "file_page_cache", t_file_page_cache },
    { "dram_tmpfs", t_dram_tmpfs },
    { "dram_memfd", t_dram_memfd },
    { "local_errors", t_local_errors },
    { "alloc_fail", t_alloc_fail },
    { "remote_http", t_remote_http },
    { "remote_faults", t_remote_faults },
    { "remote_errors", t_remote_errors },
    { "remote_cache", t_remote_cache },
    { "remote_cache_concurrent", t_remote_cache_concurrent },
    { "remote_cache_disk_full", t_remote_cache_disk_full },
    { "gpu", t_gpu },
    { "gpu_absent", t_gpu_absent },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
