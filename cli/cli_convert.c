/*
 * cli_convert.c - `thaw convert`, `thaw inspect` and `thaw verify`.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ckpt/thaw_ckpt.h"
#include "cli/cli_int.h"

int cli_convert(int argc, char **argv)
{
    struct thaw_convert_opts o = { .progress = 1 };
    const char *pos[2] = { NULL, NULL };
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dtype") == 0 && i + 1 < argc) {
            const char *d = argv[++i];
            if (strcmp(d, "keep") == 0)
                o.dtype = THAW_CONVERT_KEEP;
            else if (strcmp(d, "bf16") == 0)
                o.dtype = THAW_CONVERT_BF16;
            else if (strcmp(d, "f16") == 0)
                o.dtype = THAW_CONVERT_F16;
            else if (strcmp(d, "f32") == 0)
                o.dtype = THAW_CONVERT_F32;
            else {
                fprintf(stderr, "thaw convert: --dtype must be keep, bf16, f16 or f32 (got '%s')\n",
                        d);
                return 2;
            }
        } else if (strcmp(a, "--partitions") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1024) {
                fprintf(stderr, "thaw convert: --partitions must be 1..1024 (got '%s')\n", argv[i]);
                return 2;
            }
            o.n_partitions = (uint32_t)v;
        } else if (strcmp(a, "--chunk") == 0 && i + 1 < argc) {
            uint64_t v;
            if (thaw_parse_size(argv[++i], &v) != 0)
                return cli_error("--chunk", THAW_EINVAL);
            o.chunk_bytes = (size_t)v;
        } else if (strcmp(a, "--force") == 0) {
            o.force = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            o.progress = 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "thaw convert: unknown option '%s'\n", a);
            return 2;
        } else if (n_pos < 2) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "thaw convert: too many arguments\n");
            return 2;
        }
    }
    if (n_pos != 2) {
        fprintf(stderr, "usage: thaw convert HF_DIR|MODEL.gguf OUT_DIR "
                        "[--dtype keep|bf16|f16|f32] [--partitions N] [--chunk SIZE]\n"
                        "       [--force] [--quiet]\n"
                        "  A .gguf file (llama, qwen2; F32, F16, BF16, Q8_0, Q4_0, Q4_1)\n"
                        "  is dequantized first; --dtype keep stores quantized tensors as F32.\n");
        return 2;
    }
    size_t in_len = strlen(pos[0]);
    int is_gguf = in_len > 5 && strcmp(pos[0] + in_len - 5, ".gguf") == 0;
    int rc = is_gguf ? thaw_gguf_convert(pos[0], pos[1], &o)
                     : thaw_ckpt_convert(pos[0], pos[1], &o);
    return rc ? cli_error("convert", rc) : 0;
}

int cli_inspect(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: thaw inspect CKPT\n");
        return 2;
    }
    struct thaw_manifest *m = NULL;
    int rc = thaw_manifest_load(argv[1], &m);
    if (rc)
        return cli_error("inspect", rc);
    json_error_t jerr;
    json_t *model = json_loads(thaw_manifest_model_json(m), 0, &jerr);
    json_t *parts = json_array(), *files = json_array(), *dtypes = json_object();
    for (uint32_t p = 0; p < thaw_manifest_n_partitions(m); p++) {
        const struct thaw_partition_info *pi = thaw_manifest_partition(m, p);
        json_t *jp = json_pack("{s:s, s:I, s:i, s:[i,i]}", "file", pi->file, "bytes",
                               (json_int_t)pi->bytes, "chunks", (int)pi->n_chunks, "layers",
                               pi->first_layer, pi->last_layer);
        json_t *nt = json_integer(0);
        json_object_set_new(jp, "tensors", nt);
        json_array_append_new(parts, jp);
    }
    for (size_t i = 0; i < thaw_manifest_n_tensors(m); i++) {
        const struct thaw_tensor_info *t = thaw_manifest_tensor(m, i);
        json_t *jp = json_array_get(parts, t->partition);
        json_object_set_new(jp, "tensors",
                            json_integer(json_integer_value(json_object_get(jp, "tensors")) + 1));
        const char *dn = thaw_dtype_name(t->dtype);
        json_object_set_new(dtypes, dn,
                            json_integer(json_integer_value(json_object_get(dtypes, dn)) + 1));
    }
    for (size_t i = 0; i < thaw_manifest_n_files(m); i++)
        json_array_append_new(files, json_string(thaw_manifest_file(m, i)));
    json_t *o = json_pack("{s:s, s:o, s:I, s:I, s:i, s:o, s:o, s:o}", "id", thaw_manifest_id(m),
                          "model", model ? model : json_object(), "bytes",
                          (json_int_t)thaw_manifest_total_bytes(m), "chunk_bytes",
                          (json_int_t)thaw_manifest_chunk_bytes(m), "tensors",
                          (int)thaw_manifest_n_tensors(m), "dtypes", dtypes, "partitions", parts,
                          "files", files);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", text);
    free(text);
    json_decref(o);
    thaw_manifest_destroy(m);
    return 0;
}

int cli_verify(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: thaw verify CKPT\n");
        return 2;
    }
    double t0 = thaw_now_s();
    int rc = thaw_ckpt_verify(argv[1]);
    if (rc)
        return cli_error("verify", rc);
    printf("ok: %s verified in %.2f s\n", argv[1], thaw_now_s() - t0);
    return 0;
}
