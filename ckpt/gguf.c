/* ckpt/gguf.c - placeholder, being written. */
