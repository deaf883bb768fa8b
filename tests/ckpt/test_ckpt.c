/*
 * test_ckpt.c - ckpt/: dtypes and casts, the strict safetensors reader (a
 * table of malformed files), the manifest validator, convert round trips
 * (every dtype, sharded input, partitions, dtype casts), verify, and the
 * converter's errors (nothing partial left behind).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "tests/ckpt/st_writer.h"
#include "tests/thaw_test.h"

/* ---------------------------------------------------------------- dtypes */

static void t_dtype_parse(void)
{
    for (int i = 0; i < THAW_DTYPE_COUNT; i++) {
        enum thaw_dtype d;
        CHECK_OK(thaw_dtype_parse(thaw_dtype_name((enum thaw_dtype)i), &d));
        CHECK_EQ(d, i);
    }
    enum thaw_dtype d;
    CHECK_FAILS(thaw_dtype_parse("F8_E4M3", &d), THAW_EDTYPE);
    CHECK_ERRMSG_HAS("F8_E4M3 is not supported");
    CHECK_FAILS(thaw_dtype_parse("Q4", &d), THAW_EDTYPE);
    CHECK_ERRMSG_HAS("unknown dtype 'Q4'");
    CHECK_EQ(thaw_dtype_size(THAW_DTYPE_BF16), 2);
    CHECK_EQ(thaw_dtype_size(THAW_DTYPE_U64), 8);
}

static uint16_t to16(float f, enum thaw_dtype t)
{
    uint16_t h;
    thaw_dtype_cast(&h, t, &f, THAW_DTYPE_F32, 1);
    return h;
}

static float from16(uint16_t h, enum thaw_dtype t)
{
    float f;
    thaw_dtype_cast(&f, THAW_DTYPE_F32, &h, t, 1);
    return f;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void t_dtype_cast(void)
{
    /* bf16: round to nearest, ties to even */
    CHECK_EQ(to16(1.0f, THAW_DTYPE_BF16), 0x3f80);
    CHECK_EQ(to16(bitsf(0x3f808000u), THAW_DTYPE_BF16), 0x3f80); /* tie, even stays */
    CHECK_EQ(to16(bitsf(0x3f818000u), THAW_DTYPE_BF16), 0x3f82); /* tie, odd rounds up */
    CHECK_EQ(to16(bitsf(0x3f808001u), THAW_DTYPE_BF16), 0x3f81);
    CHECK_EQ(to16(-2.5f, THAW_DTYPE_BF16), 0xc020);
    CHECK(isnan(from16(to16(NAN, THAW_DTYPE_BF16), THAW_DTYPE_BF16)));
    /* f16 */
    CHECK_EQ(to16(1.0f, THAW_DTYPE_F16), 0x3c00);
    CHECK_EQ(to16(65504.0f, THAW_DTYPE_F16), 0x7bff);
    CHECK_EQ(to16(65520.0f, THAW_DTYPE_F16), 0x7c00); /* rounds to inf */
    CHECK_EQ(to16(-INFINITY, THAW_DTYPE_F16), 0xfc00);
    CHECK_EQ(to16(5.9604644775390625e-8f, THAW_DTYPE_F16), 0x0001); /* smallest subnormal */
    CHECK_EQ(to16(2.98e-8f, THAW_DTYPE_F16), 0x0000);
    CHECK(isnan(from16(to16(NAN, THAW_DTYPE_F16), THAW_DTYPE_F16)));
    CHECK_NEAR(from16(0x3555, THAW_DTYPE_F16), 0.333251953125, 0);
    /* every finite f16 survives f16 -> f32 -> f16 exactly */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue; /* NaN payloads */
        CHECK_EQ(to16(from16((uint16_t)h, THAW_DTYPE_F16), THAW_DTYPE_F16), h);
    }
    /* and every bf16 through f32 and f64 */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            continue;
        double v;
        uint16_t back;
        uint16_t hh = (uint16_t)h;
        thaw_dtype_cast(&v, THAW_DTYPE_F64, &hh, THAW_DTYPE_BF16, 1);
        thaw_dtype_cast(&back, THAW_DTYPE_BF16, &v, THAW_DTYPE_F64, 1);
        CHECK_EQ(back, h);
    }
}

/* ---------------------------------------------------------------- safetensors */

/* Build a file: 8-byte length + header + n_data bytes of zeros. */
static unsigned char *mkfile(const char *header, uint64_t declared, size_t n_data, size_t *len)
{
    size_t hl = strlen(header);
    *len = 8 + hl + n_data;
    unsigned char *b = calloc(1, *len + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(declared >> (8 * i));
    memcpy(b + 8, header, hl);
    return b;
}

static void t_st_valid(void)
{
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
                    "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                    "\"e\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[24,24]},"
                    "\"s\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[24,25]}}   ";
    size_t len;
    unsigned char *f = mkfile(h, strlen(h), 25, &len);
    struct thaw_st *st = NULL;
    CHECK_OK(thaw_st_parse(f, len, "mem", &st));
    CHECK_EQ(thaw_st_n_tensors(st), 4);
    CHECK_STR_EQ(thaw_st_tensor(st, 0)->name, "a");
    CHECK_EQ(thaw_st_tensor(st, 0)->dtype, THAW_DTYPE_BF16);
    CHECK_STR_EQ(thaw_st_tensor(st, 1)->name, "b");
    CHECK_EQ(thaw_st_tensor(st, 1)->shape[1], 2);
    CHECK_STR_EQ(thaw_st_tensor(st, 3)->name, "s");
    CHECK_EQ(thaw_st_tensor(st, 3)->n_dims, 0);
    CHECK((const unsigned char *)thaw_st_data(st, thaw_st_tensor(st, 1)) == f + 8 + strlen(h) + 8);
    thaw_st_close(st);
    free(f);
}

struct st_case {
    const char *name;
    const char *header;
    int64_t declared; /* -1: strlen(header) */
    size_t n_data;
    const char *msg;
};

static void t_st_invalid(void)
{
    static const struct st_case cases[] = {
        { "not an object", "[1,2]", -1, 0, "does not start with '{'" },
        { "bad json", "{\"a\":", -1, 0, "header JSON" },
        { "declared past eof", "{}", 100, 0, "runs past end of file" },
        { "over 100MB", "{}", 100000001, 0, "100 MB limit" },
        { "duplicate", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", -1, 2,
          "duplicate" },
        { "metadata value", "{\"__metadata__\":{\"k\":1}}", -1, 0, "is not a string" },
        { "no dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1, "needs dtype" },
        { "unknown dtype", "{\"a\":{\"dtype\":\"X9\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1,
          "unknown dtype" },
        { "fp8", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1,
          "not supported" },
        { "size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", -1,
          4, "need 8" },
        { "hole", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}", -1, 3, "hole" },
        { "overlap", "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", -1, 3,
          "overlap" },
        { "truncated", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 10,
          "truncated" },
        { "trailing bytes", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1,
          5, "cover 1 bytes" },
        { "negative dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", -1, 1,
          "non-negative" },
        { "reversed offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}",
          -1, 1, "invalid data_offsets" },
        { "shape overflow", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,16],"
                            "\"data_offsets\":[0,1]}}", -1, 1, "overflows" },
        { "too many dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                           "\"data_offsets\":[0,1]}}", -1, 1, "dims" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct st_case *c = &cases[i];
        size_t len;
        uint64_t decl = c->declared < 0 ? strlen(c->header) : (uint64_t)c->declared;
        unsigned char *f = mkfile(c->header, decl, c->n_data, &len);
        struct thaw_st *st = NULL;
        int rc = thaw_st_parse(f, len, "case.safetensors", &st);
        if (rc == 0 || !strstr(thaw_errmsg(), c->msg)) {
            fprintf(stderr, "case '%s': rc=%d msg='%s' (want '%s')\n", c->name, rc, thaw_errmsg(),
                    c->msg);
            exit(1);
        }
        CHECK(strstr(thaw_errmsg(), "case.safetensors") != NULL); /* names the file */
        free(f);
    }
    size_t len = 4;
    struct thaw_st *st = NULL;
    CHECK_FAILS(thaw_st_parse("abcd", len, "short", &st), THAW_EFORMAT);
}

static void t_st_alloc_fail(void)
{
    const char *h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    size_t len;
    unsigned char *f = mkfile(h, strlen(h), 1, &len);
    for (long n = 0;; n++) {
        struct thaw_st *st = NULL;
        thaw_alloc_fail_after(n);
        int rc = thaw_st_parse(f, len, "x", &st);
        thaw_alloc_fail_after(-1);
        if (rc == 0) {
            thaw_st_close(st);
            CHECK(n > 0);
            break;
        }
        CHECK_EQ(rc, -ENOMEM);
    }
    free(f);
}

/* ---------------------------------------------------------------- convert */

static char *path_in(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* Read a tensor's bytes straight from the part file (no loader). */
static void *read_tensor(const char *ckpt, const struct thaw_manifest *m, const char *name,
                         const struct thaw_tensor_info **out)
{
    int64_t i = thaw_manifest_find(m, name);
    CHECK(i >= 0);
    const struct thaw_tensor_info *t = thaw_manifest_tensor(m, (size_t)i);
    char *p = path_in(ckpt, thaw_manifest_partition(m, t->partition)->file);
    int fd = open(p, O_RDONLY);
    CHECK(fd >= 0);
    void *buf = malloc(t->bytes ? t->bytes : 1);
    CHECK(pread(fd, buf, t->bytes, (off_t)t->offset) == (ssize_t)t->bytes);
    close(fd);
    free(p);
    *out = t;
    return buf;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void t_convert_every_dtype(void)
{
    char *d = test_tmpdir();
    char *hf = path_in(d, "hf"), *out = path_in(d, "ckpt");
    mkdir(hf, 0755);
    struct tw_tensor t[THAW_DTYPE_COUNT + 1];
    char names[THAW_DTYPE_COUNT][32];
    for (int i = 0; i < THAW_DTYPE_COUNT; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.w_%s", i % 3,
                 thaw_dtype_name((enum thaw_dtype)i));
        t[i] = (struct tw_tensor){ names[i], (enum thaw_dtype)i, 2, { 3 + i, 129 } };
    }
    t[THAW_DTYPE_COUNT] = (struct tw_tensor){ "scalar", THAW_DTYPE_F32, 0, { 0 } };
    char *st = path_in(hf, "model.safetensors");
    tw_write_st(st, t, THAW_DTYPE_COUNT + 1);
    struct thaw_convert_opts o = { .chunk_bytes = 8192 };
    CHECK_OK(thaw_ckpt_convert(hf, out, &o));
    CHECK_OK(thaw_ckpt_verify(out));
    struct thaw_manifest *m;
    CHECK_OK(thaw_manifest_load(out, &m));
    CHECK_EQ(thaw_manifest_n_tensors(m), THAW_DTYPE_COUNT + 1);
    for (int i = 0; i <= THAW_DTYPE_COUNT; i++) {
        const struct thaw_tensor_info *ti;
        void *got = read_tensor(out, m, t[i].name, &ti);
        size_t nb;
        void *want = tw_data(&t[i], &nb);
        CHECK_EQ(ti->bytes, nb);
        CHECK_EQ(ti->dtype, t[i].dtype);
        CHECK_EQ(ti->offset % THAW_CKPT_ALIGN, 0);
        CHECK_EQ(ti->n_dims, t[i].n_dims);
        CHECK_MEM_EQ(got, want, nb);
        free(got);
        free(want);
    }
    /* side files travel along; the manifest names them */
    CHECK_EQ(thaw_manifest_n_files(m), 0);
    thaw_manifest_destroy(m);
    CHECK_OK(thaw_rm_rf(d));
    free(st), free(hf), free(out), free(d);
}

static void check_model_equal(const char *ckpt, struct tw_tensor *t, size_t n)
{
    struct thaw_manifest *m;
    CHECK_OK(thaw_manifest_load(ckpt, &m));
    CHECK_EQ(thaw_manifest_n_tensors(m), n);
    for (size_t i = 0; i < n; i++) {
        const struct thaw_tensor_info *ti;
        void *got = read_tensor(ckpt, m, t[i].name, &ti);
        size_t nb;
        void *want = tw_data(&t[i], &nb);
        CHECK_EQ(ti->bytes, nb);
        CHECK_MEM_EQ(got, want, nb);
        free(got);
        free(want);
    }
    thaw_manifest_destroy(m);
}

static void t_convert_sharded(void)
{
    char *d = test_tmpdir();
    char *hf = path_in(d, "hf"), *out = path_in(d, "ckpt");
    mkdir(hf, 0755);
    struct tw_tensor *t;
    size_t n;
    tw_make_model(hf, 4, 64, THAW_DTYPE_BF16, 3, &t, &n);
    CHECK_OK(thaw_ckpt_convert(hf, out, NULL));
    check_model_equal(out, t, n);
    CHECK_OK(thaw_ckpt_verify(out));
    struct thaw_manifest *m;
    CHECK_OK(thaw_manifest_load(out, &m));
    CHECK_EQ(thaw_manifest_n_files(m), 2); /* config.json, tokenizer.json */
    CHECK(strstr(thaw_manifest_model_json(m), "\"architecture\":\"LlamaForCausalLM\"") != NULL);
    CHECK(strstr(thaw_manifest_model_json(m), "\"dtype\":\"BF16\"") != NULL);
    CHECK(strstr(thaw_manifest_model_json(m), "\"hidden_size\":64") != NULL);
    thaw_manifest_destroy(m);
    tw_free_tensors(t, n);
    CHECK_OK(thaw_rm_rf(d));
    free(hf), free(out), free(d);
}

static void t_convert_partitions(void)
{
    char *d = test_tmpdir();
    char *hf = path_in(d, "hf"), *out = path_in(d, "ckpt");
    mkdir(hf, 0755);
    struct tw_tensor *t;
    size_t n;
    tw_make_model(hf, 6, 64, THAW_DTYPE_F32, 1, &t, &n);
    struct thaw_convert_opts o = { .n_partitions = 3, .chunk_bytes = 65536 };
    CHECK_OK(thaw_ckpt_convert(hf, out, &o));
    check_model_equal(out, t, n);
    CHECK_OK(thaw_ckpt_verify(out));
    struct thaw_manifest *m;
    CHECK_OK(thaw_manifest_load(out, &m));
    CHECK_EQ(thaw_manifest_n_partitions(m), 3);
    int prev_last = -1;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint32_t p = 0; p < 3; p++) {
        const struct thaw_partition_info *pi = thaw_manifest_partition(m, p);
        CHECK_EQ(pi->first_layer, prev_last + 1); /* contiguous ranges */
        CHECK(pi->last_layer >= pi->first_layer);
        prev_last = pi->last_layer;
        CHECK_EQ(pi->bytes % THAW_CKPT_ALIGN, 0);
        lo = pi->bytes < lo ? pi->bytes : lo;
        hi = pi->bytes > hi ? pi->bytes : hi;
    }
    CHECK_EQ(prev_last, 5);
    CHECK(hi < 2 * lo); /* balanced by bytes */
    const struct thaw_tensor_info *e = thaw_manifest_tensor(m, (size_t)thaw_manifest_find(m, "model.embed_tokens.weight"));
    const struct thaw_tensor_info *h = thaw_manifest_tensor(m, (size_t)thaw_manifest_find(m, "lm_head.weight"));
    const struct thaw_tensor_info *nm = thaw_manifest_tensor(m, (size_t)thaw_manifest_find(m, "model.norm.weight"));
    CHECK_EQ(e->partition, 0);
    CHECK_EQ(h->partition, 2);
    CHECK_EQ(nm->partition, 2);
    for (size_t i = 0; i < thaw_manifest_n_tensors(m); i++) {
        const struct thaw_tensor_info *ti = thaw_manifest_tensor(m, i);
        int layer = -1;
        if (sscanf(ti->name, "model.layers.%d.", &layer) == 1) {
            const struct thaw_partition_info *pi = thaw_manifest_partition(m, ti->partition);
            CHECK(layer >= pi->first_layer && layer <= pi->last_layer);
        }
    }
    thaw_manifest_destroy(m);
    /* more partitions than layers is refused, and leaves nothing behind */
    char *out2 = path_in(d, "ckpt2");
    struct thaw_convert_opts o2 = { .n_partitions = 7 };
    CHECK_FAILS(thaw_ckpt_convert(hf, out2, &o2), THAW_EINVAL);
    CHECK_ERRMSG_HAS("exceeds the 6 layers");
    CHECK_EQ(count_entries(d), 2);
    tw_free_tensors(t, n);
    CHECK_OK(thaw_rm_rf(d));
    free(hf), free(out), free(out2), free(d);
}

static void t_convert_cast(void)
{
    char *d = test_tmpdir();
    char *hf = path_in(d, "hf"), *out = path_in(d, "ckpt");
    mkdir(hf, 0755);
    struct tw_tensor t[3] = {
        { "model.embed_tokens.weight", THAW_DTYPE_F32, 2, { 10, 33 } },
        { "model.layers.0.w", THAW_DTYPE_F16, 1, { 77 } },
        { "model.layers.0.ids", THAW_DTYPE_I64, 1, { 5 } },
    };
    char *st = path_in(hf, "model.safetensors");
    tw_write_st(st, t, 3);
    struct thaw_convert_opts o = { .dtype = THAW_CONVERT_BF16 };
    CHECK_OK(thaw_ckpt_convert(hf, out, &o));
    struct thaw_manifest *m;
    CHECK_OK(thaw_manifest_load(out, &m));
    for (int i = 0; i < 3; i++) {
        const struct thaw_tensor_info *ti;
        void *got = read_tensor(out, m, t[i].name, &ti);
        size_t nb;
        void *src = tw_data(&t[i], &nb);
        if (t[i].dtype == THAW_DTYPE_I64) {
            CHECK_EQ(ti->dtype, THAW_DTYPE_I64); /* integers are kept */
            CHECK_MEM_EQ(got, src, nb);
        } else {
            CHECK_EQ(ti->dtype, THAW_DTYPE_BF16);
            size_t n = nb / thaw_dtype_size(t[i].dtype);
            CHECK_EQ(ti->bytes, n * 2);
            for (size_t k = 0; k < n; k++) {
                float a, b;
                uint16_t h;
                memcpy(&h, (char *)got + 2 * k, 2);
                a = (float)((uint32_t)h << 16 == 0 ? 0.0f : 0.0f);
                uint32_t u = (uint32_t)h << 16;
                memcpy(&a, &u, 4);
                thaw_dtype_cast(&b, THAW_DTYPE_F32, (char *)src + k * thaw_dtype_size(t[i].dtype),
                                t[i].dtype, 1);
                CHECK_NEAR(a, b, fabs(b) / 256.0 + 1e-30); /* bf16 keeps 8 bits */
            }
        }
        free(got);
        free(src);
    }
    CHECK(strstr(thaw_manifest_model_json(m), "\"dtype\":\"BF16\"") != NULL);
    thaw_manifest_destroy(m);
    CHECK_OK(thaw_rm_rf(d));
    free(st), free(hf), free(out), free(d);
}

static void t_convert_errors(void)
{
    char *d = test_tmpdir();
    char *hf = path_in(d, "hf"), *out = path_in(d, "ckpt");
    mkdir(hf, 0755);
    CHECK_FAILS(thaw_ckpt_convert(hf, out, NULL), -ENOENT);
    CHECK_ERRMSG_HAS("no model.safetensors");
    char *missing = path_in(d, "nope");
    CHECK_FAILS(thaw_ckpt_convert(missing, out, NULL), -ENOENT);

    /* index naming a tensor its shard lacks */
    struct tw_tensor t[2] = { { "model.layers.0.a", THAW_DTYPE_F32, 1, { 4 } },
                              { "model.layers.0.b", THAW_DTYPE_F32, 1, { 4 } } };
    char *s1 = path_in(hf, "model-00001-of-00001.safetensors");
    tw_write_st(s1, t, 1);
    char *idx = path_in(hf, "model.safetensors.index.json");
    tw_write_text(idx, "{\"weight_map\":{\"model.layers.0.a\":\"model-00001-of-00001.safetensors\","
                       "\"model.layers.0.b\":\"model-00001-of-00001.safetensors\"}}");
    CHECK_FAILS(thaw_ckpt_convert(hf, out, NULL), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("model.layers.0.b is in the index but missing");
    /* a shard holding a tensor the index does not list */
    tw_write_st(s1, t, 2);
    tw_write_text(idx, "{\"weight_map\":{\"model.layers.0.a\":\"model-00001-of-00001.safetensors\"}}");
    CHECK_FAILS(thaw_ckpt_convert(hf, out, NULL), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("not in the index");
    /* index naming a missing shard */
    tw_write_text(idx, "{\"weight_map\":{\"model.layers.0.a\":\"model-00002-of-00002.safetensors\"}}");
    CHECK_FAILS(thaw_ckpt_convert(hf, out, NULL), -ENOENT);
    CHECK_ERRMSG_HAS("model-00002-of-00002.safetensors");
    /* a path-escaping shard name */
    tw_write_text(idx, "{\"weight_map\":{\"model.layers.0.a\":\"../x.safetensors\"}}");
    CHECK_FAILS(thaw_ckpt_convert(hf, out, NULL), THAW_EFORMAT);
    /* a truncated single file */
    unlink(idx);
    unlink(s1);
    char *single = path_in(hf, "model.safetensors");
    tw_write_st(single, t, 2);
    struct stat sst;
    CHECK(stat(single, &sst) == 0);
    CHECK(truncate(single, sst.st_size - 3) == 0);
    CHECK_FAILS(thaw_ckpt_convert(hf, out, NULL), THAW_EFORMAT);
    CHECK_ERRMSG_HAS("model.safetensors");
    CHECK_ERRMSG_HAS("truncated");
    /* nothing partial left anywhere */
    CHECK_EQ(count_entries(d), 1);
    /* out exists: refused without --force, replaced with it */
    tw_write_st(single, t, 2);
    CHECK_OK(thaw_ckpt_convert(hf, out, NULL));
    CHECK_FAILS(thaw_ckpt_convert(hf, out, NULL), -EEXIST);
    struct thaw_convert_opts o = { .force = 1, .dtype = THAW_CONVERT_F16 };
    CHECK_OK(thaw_ckpt_convert(hf, out, &o));
    struct thaw_manifest *m;
    CHECK_OK(thaw_manifest_load(out, &m));
    CHECK_EQ(thaw_manifest_tensor(m, 0)->dtype, THAW_DTYPE_F16);
    thaw_manifest_destroy(m);
    CHECK_EQ(count_entries(d), 2);
    CHECK_OK(thaw_rm_rf(d));
    free(hf), free(out), free(missing), free(s1), free(idx), free(single), free(d);
}

/* ---------------------------------------------------------------- manifest / verify */

static void t_manifest_invalid(void)
{
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } cases[] = {
        { "{\"format\":\"thaw\",\"version\":2}", THAW_EVERSION, "version 2" },
        { "{\"format\":\"other\",\"version\":1}", THAW_EFORMAT, "not a Thaw manifest" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[]}",
          THAW_EFORMAT, "non-empty" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"../p\","
          "\"bytes\":4096,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{}}",
          THAW_EFORMAT, "plain file name" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":8192,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{}}",
          THAW_EFORMAT, "must list 2 checksums" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":4000,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{}}",
          THAW_EFORMAT, "not a multiple" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":4096,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{\"t\":{\"partition\":0,"
          "\"offset\":100,\"bytes\":4,\"dtype\":\"F32\",\"shape\":[1]}}}",
          THAW_EFORMAT, "aligned" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":4096,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{\"t\":{\"partition\":0,"
          "\"offset\":4096,\"bytes\":4,\"dtype\":\"F32\",\"shape\":[1]}}}",
          THAW_EFORMAT, "runs past the end" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":4096,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{\"t\":{\"partition\":1,"
          "\"offset\":0,\"bytes\":4,\"dtype\":\"F32\",\"shape\":[1]}}}",
          THAW_EFORMAT, "does not exist" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":4096,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{\"t\":{\"partition\":0,"
          "\"offset\":0,\"bytes\":8,\"dtype\":\"F32\",\"shape\":[1]}}}",
          THAW_EFORMAT, "do not match" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":8192,\"chunks\":[\"0000000000000000\",\"0000000000000000\"]}],\"tensors\":{"
          "\"t\":{\"partition\":0,\"offset\":0,\"bytes\":8,\"dtype\":\"F32\",\"shape\":[2]},"
          "\"u\":{\"partition\":0,\"offset\":0,\"bytes\":4,\"dtype\":\"F32\",\"shape\":[1]}}}",
          THAW_EFORMAT, "overlap" },
        { "{\"format\":\"thaw\",\"version\":1,\"chunk_bytes\":4096,\"partitions\":[{\"file\":\"p\","
          "\"bytes\":4096,\"chunks\":[\"0000000000000000\"]}],\"tensors\":{\"t\":{\"partition\":0,"
          "\"offset\":0,\"bytes\":1,\"dtype\":\"F4\",\"shape\":[2]}}}",
          THAW_EDTYPE, "F4 is not supported" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct thaw_manifest *m = NULL;
        int rc = thaw_manifest_parse(cases[i].json, strlen(cases[i].json), "m.json", &m);
        if (rc != cases[i].code || !strstr(thaw_errmsg(), cases[i].msg)) {
            fprintf(stderr, "case %zu: rc=%d msg='%s' want %d '%s'\n", i, rc, thaw_errmsg(),
                    cases[i].code, cases[i].msg);
            exit(1);
        }
    }
}

static void t_verify_corrupt(void)
{
    char *d = test_tmpdir();
    char *hf = path_in(d, "hf"), *out = path_in(d, "ckpt");
    mkdir(hf, 0755);
    struct tw_tensor *t;
    size_t n;
    tw_make_model(hf, 2, 64, THAW_DTYPE_F32, 1, &t, &n);
    struct thaw_convert_opts o = { .chunk_bytes = 65536 };
    CHECK_OK(thaw_ckpt_convert(hf, out, &o));
    CHECK_OK(thaw_ckpt_verify(out));
    char *part = path_in(out, "part-0.bin");
    int fd = open(part, O_RDWR);
    CHECK(fd >= 0);
    unsigned char b;
    CHECK(pread(fd, &b, 1, 65536 + 100) == 1);
    b ^= 0x40;
    CHECK(pwrite(fd, &b, 1, 65536 + 100) == 1);
    CHECK_FAILS(thaw_ckpt_verify(out), THAW_ECHECKSUM);
    CHECK_ERRMSG_HAS("part-0.bin chunk 1");
    b ^= 0x40;
    CHECK(pwrite(fd, &b, 1, 65536 + 100) == 1);
    CHECK_OK(thaw_ckpt_verify(out));
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    CHECK(ftruncate(fd, st.st_size - 4096) == 0);
    close(fd);
    CHECK_FAILS(thaw_ckpt_verify(out), THAW_EIO);
    CHECK_ERRMSG_HAS("part-0.bin");
    tw_free_tensors(t, n);
    CHECK_OK(thaw_rm_rf(d));
    free(part), free(hf), free(out), free(d);
}

/* Constructors under allocation failure: -ENOMEM, never a crash or leak. */
static void t_alloc_fail_convert_manifest(void)
{
    char *d = test_tmpdir();
    char *hf = path_in(d, "hf"), *out = path_in(d, "ckpt");
    mkdir(hf, 0755);
    struct tw_tensor *t;
    size_t n;
    tw_make_model(hf, 2, 32, THAW_DTYPE_F32, 2, &t, &n);
    long n_fail = 0;
    for (;; n_fail++) {
        thaw_alloc_fail_after(n_fail);
        int rc = thaw_ckpt_convert(hf, out, NULL);
        thaw_alloc_fail_after(-1);
        if (rc == 0)
            break;
        CHECK_EQ(rc, -ENOMEM);
        CHECK_EQ(count_entries(d), 1); /* nothing partial left */
    }
    CHECK(n_fail > 5);
    check_model_equal(out, t, n);
    char *text;
    size_t len;
    char *mpath = path_in(out, "manifest.json");
    CHECK_OK(thaw_read_file(mpath, 1u << 20, &text, &len));
    for (long k = 0;; k++) {
        struct thaw_manifest *m = NULL;
        thaw_alloc_fail_after(k);
        int rc = thaw_manifest_parse(text, len, "m", &m);
        thaw_alloc_fail_after(-1);
        if (rc == 0) {
            thaw_manifest_destroy(m);
            break;
        }
        CHECK_EQ(rc, -ENOMEM);
    }
    thaw_free(text);
    tw_free_tensors(t, n);
    CHECK_OK(thaw_rm_rf(d));
    free(mpath), free(hf), free(out), free(d);
}

static const struct test_case cases[] = {
    { "alloc_fail_convert_manifest", t_alloc_fail_convert_manifest },
    { "dtype_parse", t_dtype_parse },
    { "dtype_cast", t_dtype_cast },
    { "st_valid", t_st_valid },
    { "st_invalid", t_st_invalid },
    { "st_alloc_fail", t_st_alloc_fail },
    { "convert_every_dtype", t_convert_every_dtype },
    { "convert_sharded", t_convert_sharded },
    { "convert_partitions", t_convert_partitions },
    { "convert_cast", t_convert_cast },
    { "convert_errors", t_convert_errors },
    { "manifest_invalid", t_manifest_invalid },
    { "verify_corrupt", t_verify_corrupt },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
