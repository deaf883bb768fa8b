/*
 * fuzz_tok_json.c - libFuzzer target for reading tokenizer.json
 * (engine/tokenizer.c, engine/tok_json.c): the input is the text of a
 * tokenizer.json. It is loaded twice, with the fast path through
 * model.vocab / model.merges and with jansson alone. Checked promises: the
 * two agree on success or failure, on the error code, and on the tokenizer
 * they build (eng_tok_fingerprint); nothing leaks or crashes either way.
 * Seeds: tests/fuzz/corpus/tok_json (small tokenizers from the goldens).
 * Built by tests/fuzz/CMakeLists.txt, run by scripts/fuzz.sh.
 */
#include <stddef.h>
#include <stdint.h>

#include "engine/thaw_engine.h"
#include "engine/tok_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

#define FUZZ_CHECK(c) \
    do { \
        if (!(c)) \
            __builtin_trap(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct thaw_tokenizer *fast = NULL, *slow = NULL;
    eng_tok_set_fast_json(1);
    int rf = thaw_tok_load((const char *)data, len, NULL, 0, &fast);
    eng_tok_set_fast_json(0);
    int rs = thaw_tok_load((const char *)data, len, NULL, 0, &slow);
    eng_tok_set_fast_json(1);
    FUZZ_CHECK(rf == rs);
    FUZZ_CHECK((fast == NULL) == (slow == NULL));
    if (fast && slow) {
        FUZZ_CHECK(eng_tok_fingerprint(fast) == eng_tok_fingerprint(slow));
        FUZZ_CHECK(thaw_tok_n_tokens(fast) == thaw_tok_n_tokens(slow));
        FUZZ_CHECK(thaw_tok_bos(fast) == thaw_tok_bos(slow));
        FUZZ_CHECK(thaw_tok_eos(fast) == thaw_tok_eos(slow));
    }
    thaw_tok_destroy(fast);
    thaw_tok_destroy(slow);
    return 0;
}
