/*
 * tok_int.h - private to engine/: what chat.c needs from the tokenizer
 * (tokenizer.c) — the chat template text and the BOS/EOS token strings —
 * and the UTF-8 helpers both files share.
 */
#ifndef TOK_INT_H
#define TOK_INT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/thaw_engine.h"

/* The chat template (tokenizer_config.json's chat_template, its "default"
 * entry when it is a list, or DIR/chat_template.jinja), NUL-terminated, or
 * NULL when there is none. Borrowed until thaw_tok_destroy. */
const char *eng_tok_chat_template(const struct thaw_tokenizer *tok);

/* The BOS / EOS token text (tokenizer_config.json's bos_token / eos_token,
 * else the text of the BOS / EOS id), or NULL. Borrowed until destroy. */
const char *eng_tok_bos_text(const struct thaw_tokenizer *tok);
const char *eng_tok_eos_text(const struct thaw_tokenizer *tok);

/* Length of the valid UTF-8 prefix of s[0..len) (strict: no overlongs,
 * surrogates or code points above U+10FFFF). */
size_t eng_utf8_valid_prefix(const char *s, size_t len);

/* ---------------------------------------------------------------- tok_json.c */

/* A JSON value's bytes: text[start, end); end 0 when absent. */
struct tokj_span {
    size_t start, end;
};

/*
 * Locate model.vocab (an object) and model.merges (an array) in the text of
 * a tokenizer.json by a strict scan of the whole document. 0 when at least
 * one was found (the other's span is {0, 0}); -1 when the text is not what
 * the fast path handles (invalid JSON, a key with an escape or repeated at
 * the levels scanned, ...): then parse it all with jansson.
 */
int tokj_find(const char *s, size_t n, struct tokj_span *vocab, struct tokj_span *merges);

/* Call fn for each member of the vocab object at sp: the decoded key in
 * scratch (room for the span's length) and its id. -1 on anything but
 * "string": non-negative integer <= INT32_MAX members; fn's non-zero
 * return is passed on. */
int tokj_vocab_each(const char *s, struct tokj_span sp, char *scratch,
                    int (*fn)(void *arg, const char *key, size_t key_n, int64_t id), void *arg);

/* Call fn (may be NULL: count only) for each merge of the array at sp: a
 * "a b" string (pair 0: a is the whole decoded string) or an [a, b] pair
 * (pair 1); *count gets how many. -1 on anything else. */
int tokj_merges_each(const char *s, struct tokj_span sp, char *scratch, size_t *count,
                     int (*fn)(void *arg, size_t idx, const char *a, size_t an, const char *b,
                               size_t bn, int pair),
                     void *arg);

/* Test hook: 0 parses every tokenizer.json wholly with jansson (the fuzz
 * target compares both ways). Not thread-safe; default 1. */
void eng_tok_set_fast_json(int on);

/* A hash of a tokenizer's vocabulary and merges that does not depend on
 * table layout: equal for equal tokenizers (the fuzz target's oracle). */
uint64_t eng_tok_fingerprint(const struct thaw_tokenizer *tok);

#endif /* TOK_INT_H */
