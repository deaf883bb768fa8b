/*
 * main.c - `thaw`, the command-line tool: dispatch to one verb.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli_int.h"
#include "common/thaw_common.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} verbs[] = {
    { "convert", cli_convert, "HF_DIR|MODEL.gguf OUT_DIR [--dtype keep|bf16|f16|f32]" },
    { "inspect", cli_inspect, "CKPT                  JSON summary of a checkpoint" },
    { "verify", cli_verify, "CKPT                   check sizes and chunk checksums" },
    { "bench", cli_bench, "load CKPT [--to host|gpu] [--cold] [--json] | engine CKPT [--batch N]" },
    { "tokenize", cli_tokenize, "CKPT TEXT [--no-special]   JSON array of token ids" },
    { "generate", cli_generate, "CKPT --prompt TEXT [--chat] [--max-tokens N] [--temperature T]" },
    { "logits", cli_logits, "CKPT --ids 1,2,3 --out FILE.npy   logits at every position" },
    { "simulate", cli_simulate, "[--trace NAME] [--policy P] ...   cluster simulator" },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: thaw <verb> [args]\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        fprintf(f, "  %-8s %s\n", verbs[i].name, verbs[i].help);
}

int cli_error(const char *what, int rc)
{
    const char *msg = thaw_errmsg();
    fprintf(stderr, "thaw: %s: %s%s%s\n", what, thaw_strerror(rc), msg[0] ? ": " : "", msg);
    return 1;
}

int main(int argc, char **argv)
{
    thaw_log_init();
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("thaw %s (cuda=%d io_uring=%d ibverbs=%d)\n", THAW_VERSION, THAW_HAVE_CUDA,
               THAW_HAVE_URING, THAW_HAVE_IBVERBS);
        return 0;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(argv[1], verbs[i].name) == 0)
            return verbs[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "thaw: unknown verb '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
