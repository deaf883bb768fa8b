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

#endif /* TOK_INT_H */
