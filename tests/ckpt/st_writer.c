/*
 * st_writer.c - test helper: deterministic safetensors files and HF folders.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ckpt/st_writer.h"
#include "tests/thaw_test.h"

size_t tw_bytes(const struct tw_tensor *t)
{
    size_t n = 1;
    for (int d = 0; d < t->n_dims; d++)
        n *= (size_t)t->shape[d];
    return n * thaw_dtype_size(t->dtype);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void *tw_data(const struct tw_tensor *t, size_t *bytes)
{
    size_t nb = tw_bytes(t), es = thaw_dtype_size(t->dtype), n = nb / es;
    unsigned char *d = malloc(nb ? nb : 1);
    CHECK(d != NULL);
    uint64_t s = thaw_xxh3(t->name, strlen(t->name));
    for (size_t i = 0; i < n; i++) {
        uint64_t r = splitmix(&s);
        float f = (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        switch (t->dtype) {
        case THAW_DTYPE_F32: memcpy(d + 4 * i, &f, 4); break;
        case THAW_DTYPE_F64: { double v = f; memcpy(d + 8 * i, &v, 8); break; }
        case THAW_DTYPE_F16:
        case THAW_DTYPE_BF16: {
            uint16_t h;
            thaw_dtype_cast(&h, t->dtype, &f, THAW_DTYPE_F32, 1);
            memcpy(d + 2 * i, &h, 2);
            break;
        }
        case THAW_DTYPE_BOOL: d[i] = (unsigned char)(r & 1); break;
        default: memcpy(d + es * i, &r, es); break;
        }
    }
    *bytes = nb;
    return d;
}

void tw_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
    CHECK(fclose(f) == 0);
}

void tw_write_st(const char *path, const struct tw_tensor *t, size_t n)
{
    size_t cap = 256 + n * 256, len = 0;
    char *h = malloc(cap);
    CHECK(h != NULL);
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                t[i].name, thaw_dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].n_dims; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)t[i].shape[d]);
        uint64_t b = tw_bytes(&t[i]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)off, (unsigned long long)(off + b));
        off += b;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8)
        h[len++] = ' '; /* as the reference writer pads */
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    unsigned char n8[8];
    for (int i = 0; i < 8; i++)
        n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    CHECK(fwrite(n8, 1, 8, f) == 8);
    CHECK(fwrite(h, 1, len, f) == len);
    for (size_t i = 0; i < n; i++) {
        size_t nb;
        void *d = tw_data(&t[i], &nb);
        CHECK(fwrite(d, 1, nb, f) == nb);
        free(d);
    }
    CHECK(fclose(f) == 0);
    free(h);
}

static void add(struct tw_tensor *t, size_t *n, const char *name, enum thaw_dtype dt, int nd,
                int64_t a, int64_t b)
{
    t[*n] = (struct tw_tensor){ .name = strdup(name), .dtype = dt, .n_dims = nd,
                                .shape = { a, b } };
    (*n)++;
}

void tw_make_model(const char *dir, int n_layers, int hidden, enum thaw_dtype dt, int shards,
                   struct tw_tensor **out, size_t *n_out)
{
    int vocab = 96, inter = hidden * 2;
    struct tw_tensor *t = calloc((size_t)n_layers * 9 + 3, sizeof *t);
    size_t n = 0;
    char name[128];
    add(t, &n, "model.embed_tokens.weight", dt, 2, vocab, hidden);
    for (int l = 0; l < n_layers; l++) {
        static const char *sq[] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                    "self_attn.o_proj" };
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, sq[k]);
            add(t, &n, name, dt, 2, hidden, hidden);
        }
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate_proj.weight", l);
        add(t, &n, name, dt, 2, inter, hidden);
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", l);
        add(t, &n, name, dt, 2, inter, hidden);
        snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", l);
        add(t, &n, name, dt, 2, hidden, inter);
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        add(t, &n, name, dt, 1, hidden, 0);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        add(t, &n, name, dt, 1, hidden, 0);
    }
    add(t, &n, "model.norm.weight", dt, 1, hidden, 0);
    add(t, &n, "lm_head.weight", dt, 2, vocab, hidden);

    char path[1024], cfg[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(cfg, sizeof cfg,
             "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","
             "\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,"
             "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":%d,"
             "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"torch_dtype\":\"%s\"}",
             hidden, inter, n_layers, vocab, dt == THAW_DTYPE_BF16 ? "bfloat16" : "float32");
    tw_write_text(path, cfg);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    tw_write_text(path, "{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\",\"vocab\":{}}}");
    if (shards <= 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        tw_write_st(path, t, n);
    } else {
        size_t per = (n + (size_t)shards - 1) / (size_t)shards;
        size_t cap = 64 + n * 200, len = 0;
        char *idx = malloc(cap);
        len += (size_t)snprintf(idx + len, cap - len,
                                "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
        for (int s = 0; s < shards; s++) {
            size_t a = (size_t)s * per, b = a + per < n ? a + per : n;
            char fname[128];
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, shards);
            snprintf(path, sizeof path, "%s/%s", dir, fname);
            tw_write_st(path, t + a, b - a);
            for (size_t i = a; i < b; i++)
                len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\":\"%s\"",
                                        i ? "," : "", t[i].name, fname);
        }
        len += (size_t)snprintf(idx + len, cap - len, "}}");
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        tw_write_text(path, idx);
        free(idx);
    }
    *out = t;
    *n_out = n;
}

void tw_free_tensors(struct tw_tensor *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)t[i].name);
    free(t);
}
