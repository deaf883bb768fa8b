/*
 * cli_engine.c - `thaw tokenize`, `thaw generate` and `thaw logits`: the
 * engine from the command line, on a checkpoint loaded by the loader (a
 * directory or any URI the loader takes). --device cuda loads the weights
 * straight into GPU memory (when a device is usable) and runs the CUDA
 * backend on them in place.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "ckpt/thaw_ckpt.h"
#include "engine/thaw_engine.h"
#include "loader/thaw_loader.h"

struct loaded {
    struct thaw_loader *ld;
    struct thaw_model *m;
    struct thaw_tokenizer *tok; /* NULL when the checkpoint has no tokenizer.json */
};

int cli_parse_device(const char *s)
{
    if (strcmp(s, "cpu") == 0)
        return THAW_BACKEND_CPU;
    if (strcmp(s, "cuda") == 0 || strcmp(s, "gpu") == 0)
        return THAW_BACKEND_CUDA;
    return -1;
}

int cli_model_open(const struct thaw_loader *ld, int device_ptrs, struct thaw_model **out)
{
    const struct thaw_manifest *man = thaw_loader_manifest(ld);
    uint32_t n = thaw_manifest_n_partitions(man);
    void **parts = thaw_calloc(n ? n : 1, sizeof *parts);
    if (!parts)
        return -ENOMEM;
    for (uint32_t p = 0; p < n; p++)
        parts[p] = thaw_loader_partition(ld, p, NULL);
    struct thaw_model_source src = { .manifest = man, .partitions = parts,
                                     .device_ptrs = device_ptrs };
    src.config_json = thaw_loader_side_file(ld, "config.json", &src.config_len);
    int rc = thaw_model_open(&src, out);
    thaw_free(parts);
    return rc;
}

static void unload(struct loaded *l)
{
    thaw_tok_destroy(l->tok);
    thaw_model_destroy(l->m);
    thaw_loader_destroy(l->ld);
    memset(l, 0, sizeof *l);
}

/* Load a checkpoint; want: 1 = model, 2 = tokenizer (required), 3 = both
 * with the tokenizer optional. backend CUDA: into GPU memory when a device
 * is usable (else into host memory, and the engine says why CUDA fails). */
static int load(const char *uri, int want, enum thaw_backend backend, struct loaded *l)
{
    memset(l, 0, sizeof *l);
    struct thaw_loader_opts o = { 0 };
    int gpu = backend == THAW_BACKEND_CUDA && (want & 1) && thaw_loader_gpu_available();
    if (gpu)
        o.target = THAW_LOAD_GPU;
    int rc = thaw_loader_load(uri, &o, &l->ld);
    if (rc)
        return cli_error(uri, rc);
    if (want & 1) {
        if ((rc = cli_model_open(l->ld, gpu, &l->m))) {
            unload(l);
            return cli_error(uri, rc);
        }
    }
    size_t tl = 0, cl = 0;
    const char *tj = thaw_loader_side_file(l->ld, "tokenizer.json", &tl);
    const char *cj = thaw_loader_side_file(l->ld, "tokenizer_config.json", &cl);
    if (tj) {
        if ((rc = thaw_tok_load(tj, tl, cj, cl, &l->tok))) {
            unload(l);
            return cli_error("tokenizer.json", rc);
        }
    } else if (want == 2) {
        unload(l);
        fprintf(stderr, "thaw: %s has no tokenizer.json\n", uri);
        return 1;
    }
    return 0;
}

static int parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 16;
    *n = 0;
    *ids = thaw_malloc(cap * sizeof **ids);
    if (!*ids)
        return -ENOMEM;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            THAW_FREE(*ids);
            return THAW_FAIL(THAW_EINVAL, "--ids: expected comma-separated non-negative "
                             "integers, got \"%s\"", s);
        }
        if (*n == cap) {
            int32_t *p = thaw_realloc(*ids, (cap *= 2) * sizeof *p);
            if (!p) {
                THAW_FREE(*ids);
                return -ENOMEM;
            }
            *ids = p;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    if (!*n) {
        THAW_FREE(*ids);
        return THAW_FAIL(THAW_EINVAL, "--ids: empty list");
    }
    return 0;
}

int cli_tokenize(int argc, char **argv)
{
    const char *ckpt = NULL, *text = NULL;
    int special = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-special") == 0)
            special = 0;
        else if (!ckpt)
            ckpt = argv[i];
        else if (!text)
            text = argv[i];
        else
            goto usage;
    }
    if (!ckpt || !text)
        goto usage;
    struct loaded l;
    if (load(ckpt, 2, THAW_BACKEND_CPU, &l))
        return 1;
    int32_t *ids;
    size_t n;
    int rc = thaw_tok_encode(l.tok, text, strlen(text), special, &ids, &n);
    if (rc) {
        unload(&l);
        return cli_error("tokenize", rc);
    }
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    printf("]\n");
    thaw_free(ids);
    unload(&l);
    return 0;
usage:
    fprintf(stderr, "usage: thaw tokenize CKPT TEXT [--no-special]\n");
    return 2;
}

/* ---------------------------------------------------------------- logits */

/* numpy .npy v1.0: magic, header length, a dict padded to 64 bytes. */
static int write_npy(const char *path, const float *data, size_t rows, size_t cols)
{
    char hdr[128];
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, "
                      "'shape': (%zu, %zu), }", rows, cols);
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    size_t bytes = rows * cols * sizeof(float);
    size_t n = 10 + (size_t)hl + (size_t)pad + 1 + bytes;
    unsigned char *buf = thaw_malloc(n);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    uint16_t len = (uint16_t)(hl + pad + 1);
    buf[8] = (unsigned char)(len & 0xff);
    buf[9] = (unsigned char)(len >> 8);
    memcpy(buf + 10, hdr, (size_t)hl);
    memset(buf + 10 + hl, ' ', (size_t)pad);
    buf[10 + hl + pad] = '\n';
    memcpy(buf + 10 + hl + pad + 1, data, bytes);
    int rc = thaw_write_file_atomic(path, buf, n);
    thaw_free(buf);
    return rc;
}

int cli_logits(int argc, char **argv)
{
    const char *ckpt = NULL, *ids_s = NULL, *out = NULL;
    unsigned threads = 0;
    int backend = THAW_BACKEND_CPU;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ids") == 0 && i + 1 < argc)
            ids_s = argv[++i];
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            if ((backend = cli_parse_device(argv[++i])) < 0)
                goto usage;
        }
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = (unsigned)atoi(argv[++i]);
        else if (!ckpt && argv[i][0] != '-')
            ckpt = argv[i];
        else
            goto usage;
    }
    if (!ckpt || !ids_s || !out)
        goto usage;
    int32_t *ids;
    size_t n;
    int rc = parse_ids(ids_s, &ids, &n);
    if (rc)
        return cli_error("logits", rc);
    struct loaded l;
    if (load(ckpt, 1, (enum thaw_backend)backend, &l)) {
        thaw_free(ids);
        return 1;
    }
    struct thaw_engine_opts eo = { .max_seqs = 1, .ctx = (uint32_t)n + 1, .n_threads = threads,
                                   .backend = (enum thaw_backend)backend };
    struct thaw_engine *e = NULL;
    int V = thaw_model_config(l.m)->vocab;
    float *lg = thaw_malloc(n * (size_t)V * sizeof *lg);
    if (!lg)
        rc = -ENOMEM;
    if (!rc)
        rc = thaw_engine_create(l.m, &eo, &e);
    if (!rc)
        rc = thaw_engine_logits(e, ids, n, lg);
    if (!rc)
        rc = write_npy(out, lg, n, (size_t)V);
    thaw_engine_destroy(e);
    thaw_free(lg);
    thaw_free(ids);
    unload(&l);
    if (rc)
        return cli_error("logits", rc);
    return 0;
usage:
    fprintf(stderr, "usage: thaw logits CKPT --ids 1,2,3 --out FILE.npy [--threads N] "
                    "[--device cpu|cuda]\n");
    return 2;
}

/* ---------------------------------------------------------------- generate */

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno || !(d >= lo && d <= hi))
        return THAW_FAIL(THAW_EINVAL, "%s: expected a number in [%g, %g], got \"%s\"", flag, lo,
                         hi, v);
    *out = d;
    return 0;
}

int cli_generate(int argc, char **argv)
{
    const char *ckpt = NULL, *prompt = NULL, *ids_s = NULL, *system = NULL, *fmt_s = "auto";
    int chat = 0, json = 0, backend = THAW_BACKEND_CPU;
    double max_tokens = 256, threads = 0, ctx = 0;
    struct thaw_sampling sp;
    thaw_sampling_defaults(&sp);
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d = 0;
        if (strcmp(a, "--chat") == 0) {
            chat = 1;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (!v && a[0] == '-') {
            goto usage;
        } else if (strcmp(a, "--prompt") == 0) {
            prompt = argv[++i];
        } else if (strcmp(a, "--ids") == 0) {
            ids_s = argv[++i];
        } else if (strcmp(a, "--system") == 0) {
            system = argv[++i];
        } else if (strcmp(a, "--chat-format") == 0) {
            fmt_s = argv[++i];
        } else if (strcmp(a, "--device") == 0) {
            if ((backend = cli_parse_device(argv[++i])) < 0)
                goto usage;
        } else if (strcmp(a, "--max-tokens") == 0) {
            rc = parse_num(a, argv[++i], 1, 1 << 20, &max_tokens);
        } else if (strcmp(a, "--threads") == 0) {
            rc = parse_num(a, argv[++i], 0, 1024, &threads);
        } else if (strcmp(a, "--ctx") == 0) {
            rc = parse_num(a, argv[++i], 2, 1 << 20, &ctx);
        } else if (strcmp(a, "--temperature") == 0) {
            rc = parse_num(a, argv[++i], 0, 100, &d);
            sp.temperature = (float)d;
        } else if (strcmp(a, "--top-p") == 0) {
            rc = parse_num(a, argv[++i], 0, 1, &d);
            sp.top_p = (float)d;
        } else if (strcmp(a, "--top-k") == 0) {
            rc = parse_num(a, argv[++i], 0, 1 << 30, &d);
            sp.top_k = (int)d;
        } else if (strcmp(a, "--min-p") == 0) {
            rc = parse_num(a, argv[++i], 0, 1, &d);
            sp.min_p = (float)d;
        } else if (strcmp(a, "--repetition-penalty") == 0) {
            rc = parse_num(a, argv[++i], 0, 10, &d);
            sp.repetition_penalty = (float)d;
        } else if (strcmp(a, "--seed") == 0) {
            rc = parse_num(a, argv[++i], 0, 9007199254740992.0, &d);
            sp.seed = (uint64_t)d;
        } else if (!ckpt && a[0] != '-') {
            ckpt = a;
        } else {
            goto usage;
        }
        if (rc)
            return cli_error("generate", rc);
    }
    if (!ckpt || (!prompt == !ids_s))
        goto usage;
    if ((rc = thaw_sampling_validate(&sp)))
        return cli_error("generate", rc);
    enum thaw_chat_format fmt;
    if ((rc = thaw_chat_format_parse(fmt_s, &fmt)))
        return cli_error("generate", rc);

    double t0 = thaw_now_s();
    struct loaded l;
    if (load(ckpt, prompt ? 3 : 1, (enum thaw_backend)backend, &l))
        return 1;
    if (prompt && !l.tok) {
        unload(&l);
        fprintf(stderr, "thaw: %s has no tokenizer.json; use --ids\n", ckpt);
        return 1;
    }
    double t_load = thaw_now_s() - t0;
    int32_t *ids = NULL;
    size_t n = 0;
    char *rendered = NULL;
    struct thaw_engine *e = NULL;
    struct thaw_detok *dt = NULL;
    int32_t *gen = NULL;
    size_t n_gen = 0;
    json_t *text_acc = NULL;
    const char *finish = "length";
    if (ids_s) {
        rc = parse_ids(ids_s, &ids, &n);
    } else if (chat) {
        struct thaw_chat_msg msgs[2];
        size_t nm = 0;
        if (system)
            msgs[nm++] = (struct thaw_chat_msg){ "system", system };
        msgs[nm++] = (struct thaw_chat_msg){ "user", prompt };
        rc = thaw_chat_render(l.tok, fmt, msgs, nm, 1, &rendered);
        if (!rc)
            rc = thaw_tok_encode(l.tok, rendered, strlen(rendered), 0, &ids, &n);
    } else {
        rc = thaw_tok_encode(l.tok, prompt, strlen(prompt), 1, &ids, &n);
    }
    if (rc)
        goto out;
    struct thaw_engine_opts eo = { .max_seqs = 1, .ctx = (uint32_t)ctx,
                                   .n_threads = (uint32_t)threads,
                                   .backend = (enum thaw_backend)backend };
    if ((rc = thaw_engine_create(l.m, &eo, &e)))
        goto out;
    int32_t stops[16];
    size_t ns = 0;
    if (l.tok) {
        ns = thaw_tok_stop_ids(l.tok, stops, 16);
        if (ns > 16)
            ns = 16;
    }
    if (!ns && thaw_model_config(l.m)->eos_id >= 0)
        stops[ns++] = thaw_model_config(l.m)->eos_id;
    struct thaw_seq_params p = { .sampling = sp, .max_tokens = (uint32_t)max_tokens,
                                 .stop_ids = stops, .n_stop_ids = ns };
    uint64_t sid;
    if ((rc = thaw_engine_submit(e, ids, n, &p, &sid)))
        goto out;
    if (l.tok && (rc = thaw_detok_create(l.tok, 1, &dt)))
        goto out;
    gen = thaw_malloc(((size_t)max_tokens + 1) * sizeof *gen);
    text_acc = json_string("");
    if (!gen || !text_acc) {
        rc = -ENOMEM;
        goto out;
    }
    double t_start = thaw_now_s(), t_first = 0;
    while (thaw_engine_active(e)) {
        const struct thaw_event *ev;
        size_t nev;
        if ((rc = thaw_engine_step(e, &ev, &nev)))
            goto out;
        for (size_t k = 0; k < nev; k++) {
            if (!t_first)
                t_first = thaw_now_s();
            if (ev[k].token >= 0)
                gen[n_gen++] = ev[k].token;
            if (ev[k].finish)
                finish = thaw_finish_name(ev[k].finish);
            if (dt && ev[k].token >= 0 && ev[k].finish != THAW_FINISH_STOP) {
                const char *piece;
                size_t pl;
                if ((rc = thaw_detok_push(dt, ev[k].token, &piece, &pl)))
                    goto out;
                if (json) {
                    char *cat = NULL;
                    if (asprintf(&cat, "%s%.*s", json_string_value(text_acc), (int)pl, piece) < 0) {
                        rc = -ENOMEM;
                        goto out;
                    }
                    json_string_set(text_acc, cat);
                    free(cat);
                } else {
                    fwrite(piece, 1, pl, stdout);
                    fflush(stdout);
                }
            }
        }
    }
    if (dt) {
        const char *piece;
        size_t pl;
        if ((rc = thaw_detok_flush(dt, &piece, &pl)))
            goto out;
        if (!json)
            fwrite(piece, 1, pl, stdout);
    }
    double t_end = thaw_now_s();
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n_gen; i++)
            json_array_append_new(arr, json_integer(gen[i]));
        json_t *o = json_pack("{s:o, s:O, s:s, s:I, s:I}", "ids", arr, "text",
                              dt ? text_acc : json_null(), "finish_reason", finish,
                              "prompt_tokens", (json_int_t)n, "completion_tokens",
                              (json_int_t)n_gen);
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", s ? s : "null");
        free(s);
        json_decref(o);
    } else {
        putchar('\n');
    }
    fflush(stdout);
    double decode_s = t_end - t_first;
    fprintf(stderr, "thaw: load %.2f s, prompt %zu tokens in %.3f s (%.1f tok/s), %zu tokens "
            "generated at %.1f tok/s (%s, %s, %s)\n", t_load, n, t_first - t_start,
            (double)n / (t_first - t_start + 1e-9), n_gen,
            n_gen > 1 ? (double)(n_gen - 1) / (decode_s + 1e-9) : 0.0, finish,
            thaw_model_config(l.m)->architecture, thaw_engine_backend_name(e));
out:
    json_decref(text_acc);
    thaw_free(gen);
    thaw_detok_destroy(dt);
    thaw_engine_destroy(e);
    thaw_free(rendered);
    thaw_free(ids);
    unload(&l);
    if (rc)
        return cli_error("generate", rc);
    return 0;
usage:
    fprintf(stderr,
            "usage: thaw generate CKPT (--prompt TEXT | --ids 1,2,3) [--chat] [--system TEXT]\n"
            "         [--chat-format auto|chatml|llama3|llama2|mistral|zephyr] [--max-tokens N]\n"
            "         [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
            "         [--repetition-penalty R] [--seed S] [--ctx N] [--threads N] [--json]\n"
            "         [--device cpu|cuda]\n");
    return 2;
}
