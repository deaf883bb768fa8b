/*
 * cli_int.h - private to cli/: one function per verb of `thaw`.
 */
#ifndef CLI_INT_H
#define CLI_INT_H

int cli_convert(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_verify(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_bench_engine(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_logits(int argc, char **argv);
int cli_simulate(int argc, char **argv);

struct thaw_loader;
struct thaw_model;
/* Bind the engine's model to a loaded checkpoint (its partitions and
 * config.json); device_ptrs: it was loaded with target GPU. */
int cli_model_open(const struct thaw_loader *ld, int device_ptrs, struct thaw_model **out);
/* "cpu" -> 0, "cuda" -> 1 (a thaw_backend); -1 for anything else. */
int cli_parse_device(const char *s);

/* Print "thaw: <msg>" with the last error's message to stderr; returns 1. */
int cli_error(const char *what, int rc);

#endif /* CLI_INT_H */
