/*
 * fuzz_gguf.c - libFuzzer target for the GGUF parser (ckpt/gguf.c): the
 * input is a whole file given to thaw_gguf_parse, which writes nothing. On
 * success every tensor is walked and the first and last byte of its data
 * read, so an accepted file whose tensors point outside the input is caught
 * by ASan, and the parser's promises (sizes, dims, alignment) are checked.
 * Built by tests/fuzz/CMakeLists.txt, run by scripts/fuzz.sh.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ckpt/thaw_ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

#define FUZZ_CHECK(c) \
    do { \
        if (!(c)) \
            __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct thaw_gguf *g = NULL;
    int rc = thaw_gguf_parse(data, len, "fuzz", &g);
    if (rc) {
        FUZZ_CHECK(rc < 0 && g == NULL);
        FUZZ_CHECK(thaw_strerror(rc) != NULL);
        FUZZ_CHECK(strlen(thaw_errmsg()) < 1u << 20);
        return 0;
    }
    FUZZ_CHECK(len >= 24);
    const uint8_t *end = data + len;
    volatile uint8_t sink = 0;
    size_t n = thaw_gguf_n_tensors(g);
    for (size_t i = 0; i < n; i++) {
        struct thaw_gguf_tensor t;
        FUZZ_CHECK(thaw_gguf_tensor(g, i, &t) == 0);
        FUZZ_CHECK(t.name_len > 0 && t.type_name != NULL);
        FUZZ_CHECK(t.n_dims >= 1 && t.n_dims <= 4);
        FUZZ_CHECK((const uint8_t *)t.name >= data && (const uint8_t *)t.name + t.name_len <= end);
        const uint8_t *p = t.data;
        FUZZ_CHECK(p >= data && p <= end && t.bytes <= (uint64_t)(end - p));
        if (t.bytes > 0) {
            sink ^= p[0];
            sink ^= p[t.bytes - 1];
        }
        sink ^= (uint8_t)t.name[0];
    }
    struct thaw_gguf_tensor t;
    FUZZ_CHECK(thaw_gguf_tensor(g, n, &t) == THAW_ENOTFOUND);
    (void)sink;
    thaw_gguf_close(g);
    return 0;
}
