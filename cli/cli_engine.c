/*
 * cli_engine.c - `thaw tokenize`, `thaw generate`, `thaw logits` (being written).
 */
#include <stdio.h>

#include "cli/cli_int.h"

int cli_tokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "thaw tokenize: not built yet\n"); return 1; }
int cli_generate(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "thaw generate: not built yet\n"); return 1; }
int cli_logits(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "thaw logits: not built yet\n"); return 1; }
