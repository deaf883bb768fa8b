/*
 * fuzz_manifest.c - libFuzzer target for the manifest validator: the input is
 * manifest.json given to thaw_manifest_parse. On success every accessor is
 * walked (partitions and their checksums, tensors, side files, model JSON,
 * raw bytes, id) and the validator's promises are checked: tensors lie
 * aligned inside their partition, checksum counts match the sizes, names are
 * unique. Built by tests/fuzz/CMakeLists.txt, run by scripts/fuzz.sh.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ckpt/thaw_ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

/* A broken promise is a bug even when no byte is read out of bounds. */
#define FUZZ_CHECK(c) \
    do { \
        if (!(c)) \
            __builtin_trap(); \
    } while (0)

/* Largest last chunk handed to thaw_ckpt_check_chunk (allocated per input). */
#define MAX_CHECK_BYTES (64u << 10)

static uint8_t zeros[MAX_CHECK_BYTES];

static void walk_partitions(const struct thaw_manifest *m)
{
    uint64_t cb = thaw_manifest_chunk_bytes(m);
    uint64_t total = 0;
    uint32_t n = thaw_manifest_n_partitions(m);
    volatile uint64_t sink = 0;
    FUZZ_CHECK(n > 0 && cb > 0 && cb % THAW_CKPT_ALIGN == 0);
    for (uint32_t i = 0; i < n; i++) {
        const struct thaw_partition_info *p = thaw_manifest_partition(m, i);
        FUZZ_CHECK(p != NULL && p->file != NULL && p->file[0] != '\0');
        FUZZ_CHECK(strchr(p->file, '/') == NULL);
        FUZZ_CHECK(p->bytes % THAW_CKPT_ALIGN == 0);
        FUZZ_CHECK(p->n_chunks == (p->bytes + cb - 1) / cb);
        for (uint32_t c = 0; c < p->n_chunks; c++)
            sink ^= p->chunk_xxh3[c];
        total += p->bytes;
        /* The last chunk is the short one; check it when it is small. */
        if (p->n_chunks > 0) {
            uint32_t c = p->n_chunks - 1;
            uint64_t last = p->bytes - (uint64_t)c * cb;
            if (last <= MAX_CHECK_BYTES) {
                int rc = thaw_ckpt_check_chunk(m, i, c, zeros, (size_t)last);
                FUZZ_CHECK(rc == 0 || rc == THAW_ECHECKSUM);
            }
        }
        FUZZ_CHECK(thaw_ckpt_check_chunk(m, i, p->n_chunks, zeros, 0) == THAW_EINVAL);
    }
    FUZZ_CHECK(thaw_manifest_partition(m, n) == NULL);
    FUZZ_CHECK(thaw_manifest_total_bytes(m) == total);
    (void)sink;
}

static void walk_tensors(const struct thaw_manifest *m)
{
    size_t n = thaw_manifest_n_tensors(m);
    for (size_t i = 0; i < n; i++) {
        const struct thaw_tensor_info *t = thaw_manifest_tensor(m, i);
        FUZZ_CHECK(t != NULL && t->name != NULL);
        FUZZ_CHECK((unsigned)t->dtype < THAW_DTYPE_COUNT);
        FUZZ_CHECK(t->n_dims >= 0 && t->n_dims <= THAW_CKPT_MAX_DIMS);
        const struct thaw_partition_info *p = thaw_manifest_partition(m, t->partition);
        FUZZ_CHECK(p != NULL);
        FUZZ_CHECK(t->offset % THAW_CKPT_ALIGN == 0);
        FUZZ_CHECK(t->bytes <= p->bytes && t->offset <= p->bytes - t->bytes);
        /* Names are JSON object keys, duplicates rejected: find returns i. */
        FUZZ_CHECK(thaw_manifest_find(m, t->name) == (int64_t)i);
    }
    FUZZ_CHECK(thaw_manifest_tensor(m, n) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct thaw_manifest *m = NULL;
    int rc = thaw_manifest_parse((const char *)data, len, "fuzz", &m);
    if (rc) {
        /* Errors must be negative and carry a message that can be formatted. */
        FUZZ_CHECK(rc < 0 && m == NULL);
        FUZZ_CHECK(thaw_strerror(rc) != NULL);
        FUZZ_CHECK(strlen(thaw_errmsg()) < 1u << 20);
        return 0;
    }
    walk_partitions(m);
    walk_tensors(m);
    size_t nf = thaw_manifest_n_files(m);
    for (size_t i = 0; i < nf; i++) {
        const char *f = thaw_manifest_file(m, i);
        FUZZ_CHECK(f != NULL && f[0] != '\0' && strchr(f, '/') == NULL);
    }
    FUZZ_CHECK(thaw_manifest_file(m, nf) == NULL);
    int64_t empty = thaw_manifest_find(m, "");
    FUZZ_CHECK(empty == THAW_ENOTFOUND ||
               (empty >= 0 && (size_t)empty < thaw_manifest_n_tensors(m)));
    const char *model = thaw_manifest_model_json(m);
    FUZZ_CHECK(model != NULL);
    volatile size_t model_len = strlen(model);
    (void)model_len;
    FUZZ_CHECK(strlen(thaw_manifest_id(m)) == 16);
    size_t raw_len = 0;
    const char *raw = thaw_manifest_raw(m, &raw_len);
    FUZZ_CHECK(raw_len == len && memcmp(raw, data, len) == 0 && raw[len] == '\0');
    thaw_manifest_destroy(m);
    return 0;
}
