/* engine/tokenizer.c - placeholder, being written. */
