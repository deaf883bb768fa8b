/*
 * model.c - bind a LLaMA-family model to a loaded checkpoint: read its
 * config (config.json, Hugging Face field names and defaults), check every
 * tensor's presence, shape and dtype, and keep pointers into the loader's
 * buffers. Nothing is copied, and no weight is read here: the partitions may
 * be GPU memory (source device_ptrs), which only the CUDA backend touches.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine_int.h"

static const struct {
    const char *arch, *model_type;
    int qkv_bias; /* Qwen2 hard-wires q/k/v biases */
} archs[] = {
    { "LlamaForCausalLM", "llama", 0 },
    { "MistralForCausalLM", "mistral", 0 },
    { "Qwen2ForCausalLM", "qwen2", 1 },
};

static int get_int(json_t *o, const char *k, int def, int *out)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
        return THAW_FAIL(THAW_EFORMAT, "config.json: \"%s\" must be a non-negative integer", k);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(json_t *o, const char *k, double def, double *out)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return THAW_FAIL(THAW_EFORMAT, "config.json: \"%s\" must be a number", k);
    *out = json_number_value(v);
    return 0;
}

/* eos_token_id may be an int or a list; take the first. */
static int32_t get_token_id(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (json_is_array(v))
        v = json_array_get(v, 0);
    return json_is_integer(v) ? (int32_t)json_integer_value(v) : -1;
}

static int parse_rope(json_t *root, struct thaw_model_config *c)
{
    /* transformers v5 moves rope_theta and the scaling keys into
     * rope_parameters; older files have rope_theta + rope_scaling. */
    json_t *params = json_object_get(root, "rope_parameters");
    json_t *scaling = json_object_get(root, "rope_scaling");
    double theta = 10000.0;
    int rc = get_num(json_is_object(params) && json_object_get(params, "rope_theta") ? params
                                                                                     : root,
                     "rope_theta", 10000.0, &theta);
    if (rc)
        return rc;
    c->rope_theta = (float)theta;
    c->rope_type = THAW_ROPE_DEFAULT;
    if (!json_is_object(scaling))
        scaling = json_is_object(params) ? params : NULL;
    if (!scaling)
        return 0;
    json_t *t = json_object_get(scaling, "rope_type");
    if (!t)
        t = json_object_get(scaling, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    double factor = 1, low = 1, high = 4;
    int orig = 8192;
    if ((rc = get_num(scaling, "factor", 1.0, &factor)) ||
        (rc = get_num(scaling, "low_freq_factor", 1.0, &low)) ||
        (rc = get_num(scaling, "high_freq_factor", 4.0, &high)) ||
        (rc = get_int(scaling, "original_max_position_embeddings", 8192, &orig)))
        return rc;
    if (strcmp(type, "default") == 0) {
        c->rope_type = THAW_ROPE_DEFAULT;
    } else if (strcmp(type, "linear") == 0) {
        c->rope_type = THAW_ROPE_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        c->rope_type = THAW_ROPE_LLAMA3;
        if (!(high > low) || orig <= 0)
            return THAW_FAIL(THAW_EFORMAT, "config.json: llama3 rope_scaling needs "
                             "high_freq_factor > low_freq_factor and original_max_position_embeddings");
    } else {
        return THAW_FAIL(THAW_ENOTSUP, "config.json: rope type \"%s\" is not supported "
                         "(default, linear, llama3 are)", type);
    }
    if (!(factor > 0))
        return THAW_FAIL(THAW_EFORMAT, "config.json: rope_scaling factor must be > 0");
    c->rope_factor = (float)factor;
    c->rope_low_freq = (float)low;
    c->rope_high_freq = (float)high;
    c->rope_orig_max_pos = orig;
    return 0;
}

static int parse_config(json_t *root, struct thaw_model_config *c, int *sliding)
{
    memset(c, 0, sizeof *c);
    const char *arch = NULL, *mtype = NULL;
    json_t *a = json_object_get(root, "architectures");
    if (json_is_array(a) && json_is_string(json_array_get(a, 0)))
        arch = json_string_value(json_array_get(a, 0));
    else if (json_is_string(json_object_get(root, "architecture")))
        arch = json_string_value(json_object_get(root, "architecture"));
    if (json_is_string(json_object_get(root, "model_type")))
        mtype = json_string_value(json_object_get(root, "model_type"));
    int found = -1;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        if ((arch && strcmp(arch, archs[i].arch) == 0) ||
            (!arch && mtype && strcmp(mtype, archs[i].model_type) == 0))
            found = (int)i;
    }
    if (found < 0)
        return THAW_FAIL(THAW_ENOTSUP, "unknown architecture \"%s\" (supported: "
                         "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                         arch ? arch : mtype ? mtype : "(none)");
    snprintf(c->architecture, sizeof c->architecture, "%s", archs[found].arch);

    int rc;
    if ((rc = get_int(root, "hidden_size", 0, &c->hidden)) ||
        (rc = get_int(root, "intermediate_size", 0, &c->intermediate)) ||
        (rc = get_int(root, "num_attention_heads", 0, &c->n_heads)) ||
        (rc = get_int(root, "num_hidden_layers", 0, &c->n_layers)) ||
        (rc = get_int(root, "vocab_size", 0, &c->vocab)) ||
        (rc = get_int(root, "max_position_embeddings", 2048, &c->max_pos)))
        return rc;
    if (!c->hidden || !c->intermediate || !c->n_heads || !c->n_layers || !c->vocab)
        return THAW_FAIL(THAW_EFORMAT, "config.json: hidden_size, intermediate_size, "
                         "num_attention_heads, num_hidden_layers and vocab_size are required");
    if ((rc = get_int(root, "num_key_value_heads", c->n_heads, &c->n_kv_heads)) ||
        (rc = get_int(root, "head_dim", c->hidden / c->n_heads, &c->head_dim)))
        return rc;
    if (!c->n_kv_heads || c->n_heads % c->n_kv_heads)
        return THAW_FAIL(THAW_EFORMAT, "config.json: num_attention_heads (%d) must be a multiple "
                         "of num_key_value_heads (%d)", c->n_heads, c->n_kv_heads);
    if (!c->head_dim || c->head_dim % 2 || c->head_dim > 1024)
        return THAW_FAIL(THAW_EFORMAT, "config.json: head_dim %d must be even and <= 1024",
                         c->head_dim);
    double eps = 1e-6;
    if ((rc = get_num(root, "rms_norm_eps", 1e-6, &eps)))
        return rc;
    c->rms_eps = (float)eps;
    if ((rc = parse_rope(root, c)))
        return rc;
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    c->tied_embeddings = json_is_true(tie);
    c->qkv_bias = archs[found].qkv_bias || json_is_true(json_object_get(root, "attention_bias"));
    if (json_is_true(json_object_get(root, "mlp_bias")))
        return THAW_FAIL(THAW_ENOTSUP, "config.json: mlp_bias is not supported");
    json_t *act = json_object_get(root, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu") != 0)
        return THAW_FAIL(THAW_ENOTSUP, "config.json: hidden_act \"%s\" is not supported (silu is)",
                         json_string_value(act));
    c->bos_id = get_token_id(root, "bos_token_id");
    c->eos_id = get_token_id(root, "eos_token_id");
    *sliding = 0;
    json_t *sw = json_object_get(root, "sliding_window");
    json_t *use_sw = json_object_get(root, "use_sliding_window");
    if (json_is_integer(sw) && json_integer_value(sw) > 0 && !json_is_false(use_sw))
        *sliding = (int)json_integer_value(sw);
    return 0;
}

static int bind(const struct thaw_model_source *src, const char *name, int rows, int cols,
                int optional, struct eng_weight *w, uint64_t *bytes)
{
    int64_t idx = thaw_manifest_find(src->manifest, name);
    memset(w, 0, sizeof *w);
    if (idx < 0) {
        if (optional)
            return 0;
        return THAW_FAIL(THAW_ENOTFOUND, "missing tensor %s", name);
    }
    const struct thaw_tensor_info *ti = thaw_manifest_tensor(src->manifest, (size_t)idx);
    if (ti->partition >= thaw_manifest_n_partitions(src->manifest) ||
        !src->partitions[ti->partition])
        return THAW_FAIL(THAW_EINVAL, "tensor %s: partition %u is not loaded", name,
                         ti->partition);
    const void *p = (const char *)src->partitions[ti->partition] + ti->offset;
    if (ti->dtype != THAW_DTYPE_F32 && ti->dtype != THAW_DTYPE_F16 && ti->dtype != THAW_DTYPE_BF16)
        return THAW_FAIL(THAW_EDTYPE, "tensor %s has dtype %s (F32, F16 or BF16 needed)", name,
                         thaw_dtype_name(ti->dtype));
    int ok = rows == 1 ? (ti->n_dims == 1 && ti->shape[0] == cols)
                       : (ti->n_dims == 2 && ti->shape[0] == rows && ti->shape[1] == cols);
    if (!ok) {
        char got[96] = "";
        for (int i = 0; i < ti->n_dims && i < 4; i++) {
            size_t l = strlen(got);
            snprintf(got + l, sizeof got - l, "%s%lld", i ? "," : "", (long long)ti->shape[i]);
        }
        if (rows == 1)
            return THAW_FAIL(THAW_EFORMAT, "tensor %s has shape [%s], expected [%d]", name, got,
                             cols);
        return THAW_FAIL(THAW_EFORMAT, "tensor %s has shape [%s], expected [%d,%d]", name, got,
                         rows, cols);
    }
    if ((uintptr_t)p % thaw_dtype_size(ti->dtype))
        return THAW_FAIL(THAW_EFORMAT, "tensor %s is not aligned", name);
    w->p = p;
    w->dt = ti->dtype;
    w->rows = rows;
    w->cols = cols;
    *bytes += ti->bytes;
    return 0;
}

int thaw_model_open(const struct thaw_model_source *src, struct thaw_model **out)
{
    *out = NULL;
    size_t len = src->config_len;
    const char *txt = src->config_json;
    json_error_t jerr;
    json_t *root = NULL;
    if (txt) {
        root = json_loadb(txt, len, 0, &jerr);
        if (!root)
            return THAW_FAIL(THAW_EFORMAT, "config.json: line %d: %s", jerr.line, jerr.text);
    } else {
        const char *mj = thaw_manifest_model_json(src->manifest);
        root = mj ? json_loads(mj, 0, &jerr) : NULL;
        if (!root)
            return THAW_FAIL(THAW_EFORMAT, "checkpoint has no config.json and no model fields");
    }
    struct thaw_model *m = thaw_calloc(1, sizeof *m);
    if (!m) {
        json_decref(root);
        return -ENOMEM;
    }
    int rc = parse_config(root, &m->cfg, &m->sliding_window);
    json_decref(root);
    if (rc)
        goto fail;
    /* The partitions' extents, so a backend can copy or translate them. */
    m->device_ptrs = src->device_ptrs != 0;
    m->n_parts = thaw_manifest_n_partitions(src->manifest);
    m->parts = thaw_calloc(m->n_parts ? m->n_parts : 1, sizeof *m->parts);
    if (!m->parts) {
        rc = -ENOMEM;
        goto fail;
    }
    for (uint32_t p = 0; p < m->n_parts; p++) {
        m->parts[p].base = src->partitions[p];
        m->parts[p].bytes = (size_t)thaw_manifest_partition(src->manifest, p)->bytes;
    }
    struct thaw_model_config *c = &m->cfg;
    int H = c->hidden, I = c->intermediate, qd = c->n_heads * c->head_dim,
        kvd = c->n_kv_heads * c->head_dim;
    uint64_t bytes = 0, embed_bytes;
    m->layers = thaw_calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = bind(src, "model.embed_tokens.weight", c->vocab, H, 0, &m->embed, &bytes)) ||
        (rc = bind(src, "model.norm.weight", 1, H, 0, &m->norm, &bytes)))
        goto fail;
    embed_bytes = bytes;
    if ((rc = bind(src, "lm_head.weight", c->vocab, H, 1, &m->lm_head, &bytes)))
        goto fail;
    if (!m->lm_head.p) {
        if (!c->tied_embeddings) {
            rc = THAW_FAIL(THAW_ENOTFOUND, "missing tensor lm_head.weight "
                           "(config.json has tie_word_embeddings false)");
            goto fail;
        }
        m->lm_head = m->embed;
        bytes += embed_bytes; /* read again for the logits */
    }
    /* Per token only one embedding row is read; count the rest. */
    bytes -= embed_bytes - (embed_bytes / (uint64_t)c->vocab);
    for (int l = 0; l < c->n_layers; l++) {
        struct eng_layer *L = &m->layers[l];
        char n[128];
#define B(field, suffix, r, cl, opt)                                                   \
    do {                                                                               \
        snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                        \
        if ((rc = bind(src, n, r, cl, opt, &L->field, &bytes)))                         \
            goto fail;                                                                 \
    } while (0)
        B(attn_norm, "input_layernorm.weight", 1, H, 0);
        B(q, "self_attn.q_proj.weight", qd, H, 0);
        B(k, "self_attn.k_proj.weight", kvd, H, 0);
        B(v, "self_attn.v_proj.weight", kvd, H, 0);
        B(o, "self_attn.o_proj.weight", H, qd, 0);
        B(q_bias, "self_attn.q_proj.bias", 1, qd, !c->qkv_bias);
        B(k_bias, "self_attn.k_proj.bias", 1, kvd, !c->qkv_bias);
        B(v_bias, "self_attn.v_proj.bias", 1, kvd, !c->qkv_bias);
        B(ffn_norm, "post_attention_layernorm.weight", 1, H, 0);
        B(gate, "mlp.gate_proj.weight", I, H, 0);
        B(up, "mlp.up_proj.weight", I, H, 0);
        B(down, "mlp.down_proj.weight", H, I, 0);
#undef B
    }
    m->weight_bytes = bytes;
    *out = m;
    return 0;
fail:
    thaw_err_ctx("model");
    thaw_model_destroy(m);
    return rc;
}

void thaw_model_destroy(struct thaw_model *m)
{
    if (!m)
        return;
    thaw_free(m->layers);
    thaw_free(m->parts);
    thaw_free(m);
}

const struct thaw_model_config *thaw_model_config(const struct thaw_model *m)
{
    return &m->cfg;
}

uint64_t thaw_model_weight_bytes(const struct thaw_model *m)
{
    return m->weight_bytes;
}
