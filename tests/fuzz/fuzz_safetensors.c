/*
 * fuzz_safetensors.c - libFuzzer target for the strict safetensors reader:
 * the input is a whole file given to thaw_st_parse. On success every tensor
 * is walked and the first and last byte of its data read, so an accepted
 * file whose tensors point outside the input is caught by ASan, and the
 * reader's promises (ascending, contiguous offsets covering the buffer to
 * EOF) are checked. Built by tests/fuzz/CMakeLists.txt, run by scripts/fuzz.sh.
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

/* Cast up to 16 leading elements of a float tensor to every float type. */
static void cast_head(const void *src, enum thaw_dtype st, uint64_t n_elems)
{
    static const enum thaw_dtype to[] = { THAW_DTYPE_F16, THAW_DTYPE_BF16, THAW_DTYPE_F32,
                                          THAW_DTYPE_F64 };
    double out[16];
    size_t n = n_elems < 16 ? (size_t)n_elems : 16;
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++)
        thaw_dtype_cast(out, to[i], src, st, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct thaw_st *st = NULL;
    int rc = thaw_st_parse(data, len, "fuzz", &st);
    if (rc) {
        /* Errors must be negative and carry a message that can be formatted. */
        FUZZ_CHECK(rc < 0 && st == NULL);
        FUZZ_CHECK(thaw_strerror(rc) != NULL);
        FUZZ_CHECK(strlen(thaw_errmsg()) < 1u << 20);
        return 0;
    }
    FUZZ_CHECK(len >= 8);
    size_t n = thaw_st_n_tensors(st);
    uint64_t covered = 0;
    const uint8_t *end = data + len;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i++) {
        const struct thaw_tensor_info *t = thaw_st_tensor(st, i);
        FUZZ_CHECK(t != NULL && t->name != NULL);
        FUZZ_CHECK((unsigned)t->dtype < THAW_DTYPE_COUNT);
        FUZZ_CHECK(t->n_dims >= 0 && t->n_dims <= THAW_CKPT_MAX_DIMS);
        FUZZ_CHECK(strcmp(t->name, "__metadata__") != 0);
        FUZZ_CHECK(t->offset == covered);
        covered += t->bytes;
        const uint8_t *p = thaw_st_data(st, t);
        FUZZ_CHECK(p >= data && p <= end && t->bytes <= (uint64_t)(end - p));
        if (t->bytes > 0) {
            sink ^= p[0];
            sink ^= p[t->bytes - 1];
            if (thaw_dtype_is_float(t->dtype))
                cast_head(p, t->dtype, t->bytes / thaw_dtype_size(t->dtype));
        }
        sink ^= (uint8_t)strlen(t->name);
        sink ^= (uint8_t)thaw_dtype_name(t->dtype)[0];
    }
    FUZZ_CHECK(thaw_st_tensor(st, n) == NULL);
    /* The tensors start right after the header and end exactly at EOF. */
    if (n > 0) {
        const uint8_t *base = thaw_st_data(st, thaw_st_tensor(st, 0));
        FUZZ_CHECK(base >= data + 10 && covered == (uint64_t)(end - base));
    }
    (void)sink;
    thaw_st_close(st);
    return 0;
}
