/*
 * convert.c - `thaw convert`: Hugging Face safetensors folder -> Thaw
 * checkpoint. Tensors are grouped into partitions by contiguous layer ranges
 * balanced by bytes (embeddings with the first, final norm and lm_head with
 * the last), laid out 4 KiB-aligned, streamed through one chunk buffer that
 * is checksummed (xxh3 per chunk) and written, then the whole directory is
 * fsynced and renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_int.h"

#define MAX_SHARDS 4096
#define MAX_INDEX_BYTES (64u << 20)
#define MAX_SIDE_BYTES (512u << 20)

/* Side files copied verbatim when present. */
static const char *side_files[] = { "config.json", "generation_config.json", "tokenizer.json",
                                    "tokenizer_config.json", "special_tokens_map.json",
                                    "tokenizer.model", "chat_template.jinja", "vocab.json",
                                    "merges.txt" };

/* Fields of config.json summarised in the manifest's "model" object. */
static const char *model_keys[] = { "model_type", "hidden_size", "intermediate_size",
                                    "num_hidden_layers", "num_attention_heads",
                                    "num_key_value_heads", "head_dim", "vocab_size",
                                    "max_position_embeddings", "rms_norm_eps", "rope_theta",
                                    "rope_scaling", "tie_word_embeddings", "bos_token_id",
                                    "eos_token_id", "torch_dtype" };

struct src_tensor {
    const struct thaw_tensor_info *info; /* borrowed from its shard */
    const void *data;
    enum thaw_dtype out_dtype;
    uint64_t out_bytes;
    int group; /* 0 = before layers, 1 = a layer, 2 = after layers */
    int layer;
    uint32_t part;
    uint64_t offset;
};

struct conv {
    const struct thaw_convert_opts *o;
    const char *hf_dir;
    struct thaw_st **shards;
    size_t n_shards;
    struct src_tensor *t;
    size_t n;
    uint32_t n_parts;
    int n_layers;
    int *part_first, *part_last; /* layer range of each partition */
    uint64_t *part_bytes;
    uint64_t chunk_bytes;
    uint64_t total_bytes, done_bytes;
    int last_pct;
};

static int cmp_tensor(const void *a, const void *b)
{
    const struct src_tensor *x = a, *y = b;
    if (x->group != y->group)
        return x->group - y->group;
    if (x->layer != y->layer)
        return x->layer - y->layer;
    return strcmp(x->info->name, y->info->name);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Open the shards: model.safetensors, or those named by the index. */
static int open_shards(struct conv *c, json_t **index_out)
{
    char path[4096];
    int rc;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", c->hf_dir);
    if (!file_exists(path)) {
        snprintf(path, sizeof path, "%s/model.safetensors", c->hf_dir);
        if (!file_exists(path))
            return THAW_FAIL(-ENOENT, "%s: no model.safetensors or model.safetensors.index.json",
                             c->hf_dir);
        c->shards = thaw_calloc(1, sizeof *c->shards);
        if (!c->shards)
            return -ENOMEM;
        rc = thaw_st_open(path, &c->shards[0]);
        if (rc)
            return rc;
        c->n_shards = 1;
        return 0;
    }
    char *buf = NULL;
    size_t len = 0;
    rc = thaw_read_file(path, MAX_INDEX_BYTES, &buf, &len);
    if (rc)
        return rc;
    json_error_t jerr;
    json_t *idx = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    thaw_free(buf);
    json_t *wm = idx ? json_object_get(idx, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        json_decref(idx);
        return THAW_FAIL(THAW_EFORMAT, "%s: %s", path,
                         idx ? "no \"weight_map\" object" : jerr.text);
    }
    /* The unique shard names, sorted (HF numbers them model-0000i-of-0000n). */
    size_t n = json_object_size(wm);
    const char **names = thaw_calloc(n ? n : 1, sizeof *names);
    if (!names) {
        json_decref(idx);
        return -ENOMEM;
    }
    size_t k = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        const char *f = json_string_value(v);
        if (!f || !f[0] || strchr(f, '/') || f[0] == '.') {
            int rc2 = THAW_FAIL(THAW_EFORMAT, "%s: weight_map[%.128s] is not a shard file name",
                                path, key);
            thaw_free(names);
            json_decref(idx);
            return rc2;
        }
        names[k++] = f;
    }
    qsort(names, k, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++) {
        if (u == 0 || strcmp(names[u - 1], names[i]) != 0)
            names[u++] = names[i];
    }
    if (u > MAX_SHARDS) {
        thaw_free(names);
        json_decref(idx);
        return THAW_FAIL(THAW_ELIMIT, "%s: more than %d shards", path, MAX_SHARDS);
    }
    c->shards = thaw_calloc(u ? u : 1, sizeof *c->shards);
    rc = c->shards ? 0 : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < u; i++) {
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/%s", c->hf_dir, names[i]);
        rc = thaw_st_open(sp, &c->shards[i]);
        if (rc == 0)
            c->n_shards++;
    }
    thaw_free(names);
    if (rc) {
        json_decref(idx);
        return rc;
    }
    *index_out = idx;
    return 0;
}

/* Collect tensors; check each against the index and reject duplicates. */
static int collect(struct conv *c, json_t *idx)
{
    size_t n = 0;
    for (size_t s = 0; s < c->n_shards; s++)
        n += thaw_st_n_tensors(c->shards[s]);
    c->t = thaw_calloc(n ? n : 1, sizeof *c->t);
    if (!c->t)
        return -ENOMEM;
    json_t *wm = idx ? json_object_get(idx, "weight_map") : NULL;
    for (size_t s = 0; s < c->n_shards; s++) {
        for (size_t i = 0; i < thaw_st_n_tensors(c->shards[s]); i++) {
            const struct thaw_tensor_info *ti = thaw_st_tensor(c->shards[s], i);
            struct src_tensor *t = &c->t[c->n++];
            t->info = ti;
            t->data = thaw_st_data(c->shards[s], ti);
            t->out_dtype = ti->dtype;
            if (c->o->dtype != THAW_CONVERT_KEEP && thaw_dtype_is_float(ti->dtype)) {
                static const enum thaw_dtype map[] = { THAW_DTYPE_F32, THAW_DTYPE_BF16,
                                                       THAW_DTYPE_F16, THAW_DTYPE_F32 };
                t->out_dtype = map[c->o->dtype];
            }
            uint64_t numel = ti->bytes / thaw_dtype_size(ti->dtype);
            t->out_bytes = numel * thaw_dtype_size(t->out_dtype);
            t->layer = ckpt_layer_of(ti->name);
            if (t->layer >= 0) {
                t->group = 1;
                if (t->layer + 1 > c->n_layers)
                    c->n_layers = t->layer + 1;
            } else {
                t->group = (strstr(ti->name, "embed") || strstr(ti->name, "wte") ||
                            strstr(ti->name, "wpe")) &&
                                   !strstr(ti->name, "lm_head")
                               ? 0
                               : 2;
            }
            if (wm && !json_is_string(json_object_get(wm, ti->name)))
                return THAW_FAIL(THAW_EFORMAT,
                                 "%s: tensor %.128s is in a shard but not in the index",
                                 c->hf_dir, ti->name);
        }
    }
    qsort(c->t, c->n, sizeof *c->t, cmp_tensor);
    for (size_t i = 1; i < c->n; i++) {
        if (strcmp(c->t[i].info->name, c->t[i - 1].info->name) == 0)
            return THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s appears in two shards", c->hf_dir,
                             c->t[i].info->name);
    }
    if (wm) {
        const char *key;
        json_t *v;
        json_object_foreach(wm, key, v) {
            int found = 0;
            for (size_t i = 0; i < c->n && !found; i++)
                found = strcmp(c->t[i].info->name, key) == 0;
            if (!found)
                return THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s is in the index but missing "
                                               "from shard %s",
                                 c->hf_dir, key, json_string_value(v));
        }
    }
    if (c->n == 0)
        return THAW_FAIL(THAW_EFORMAT, "%s: no tensors", c->hf_dir);
    return 0;
}

/*
 * Split layers into n_parts contiguous ranges balanced by bytes. Tensors
 * before the layers count toward the first range and those after toward
 * the last. Greedy cut at the layer boundary nearest each k*total/n_parts.
 */
static int partition(struct conv *c)
{
    uint32_t np = c->n_parts;
    if (np > 1 && (int)np > c->n_layers)
        return THAW_FAIL(THAW_EINVAL, "--partitions %u exceeds the %d layers of the model", np,
                         c->n_layers);
    c->part_first = thaw_calloc(np, sizeof(int));
    c->part_last = thaw_calloc(np, sizeof(int));
    c->part_bytes = thaw_calloc(np, sizeof(uint64_t));
    uint64_t *cum = thaw_calloc((size_t)c->n_layers + 1, sizeof(uint64_t));
    if (!c->part_first || !c->part_last || !c->part_bytes || !cum) {
        thaw_free(cum);
        return -ENOMEM;
    }
    /* cum[l] = bytes before layer l, including the leading group. */
    uint64_t pre = 0, post = 0, total = 0;
    for (size_t i = 0; i < c->n; i++) {
        uint64_t b = thaw_align_up(c->t[i].out_bytes, THAW_CKPT_ALIGN);
        total += b;
        if (c->t[i].group == 0)
            pre += b;
        else if (c->t[i].group == 2)
            post += b;
        else
            cum[c->t[i].layer + 1] += b;
    }
    cum[0] = pre;
    for (int l = 1; l <= c->n_layers; l++)
        cum[l] += cum[l - 1];
    (void)post;
    int start = 0;
    for (uint32_t p = 0; p < np; p++) {
        c->part_first[p] = start;
        int end; /* exclusive */
        if (p == np - 1) {
            end = c->n_layers;
        } else {
            double target = (double)total * (p + 1) / np;
            end = start + 1;
            /* leave at least one layer for every remaining partition */
            int max_end = c->n_layers - (int)(np - 1 - p);
            while (end < max_end &&
                   (double)cum[end + 1] - target < target - (double)cum[end])
                end++;
        }
        c->part_last[p] = end - 1;
        if (end <= start)
            c->part_first[p] = c->part_last[p] = -1; /* no layers at all */
        start = end;
    }
    thaw_free(cum);
    for (size_t i = 0; i < c->n; i++) {
        struct src_tensor *t = &c->t[i];
        if (t->group == 0)
            t->part = 0;
        else if (t->group == 2)
            t->part = np - 1;
        else {
            t->part = 0;
            for (uint32_t p = 0; p < np; p++) {
                if (t->layer >= c->part_first[p] && t->layer <= c->part_last[p])
                    t->part = p;
            }
        }
        t->offset = c->part_bytes[t->part];
        c->part_bytes[t->part] += thaw_align_up(t->out_bytes, THAW_CKPT_ALIGN);
    }
    for (uint32_t p = 0; p < np; p++) {
        if (c->part_bytes[p] == 0)
            c->part_bytes[p] = THAW_CKPT_ALIGN; /* an empty partition is one zero page */
        c->total_bytes += c->part_bytes[p];
    }
    return 0;
}

static void progress(struct conv *c)
{
    if (!c->o->progress || c->total_bytes == 0)
        return;
    int pct = (int)(100.0 * (double)c->done_bytes / (double)c->total_bytes);
    if (pct == c->last_pct || (pct / 5 == c->last_pct / 5 && pct != 100))
        return;
    c->last_pct = pct;
    char a[32], b[32];
    fprintf(stderr, "convert: %3d%% %s / %s\n", pct, thaw_fmt_bytes(c->done_bytes, a, sizeof a),
            thaw_fmt_bytes(c->total_bytes, b, sizeof b));
}

/* Write partition p to path through one chunk buffer; fill sums[]. */
static int write_partition(struct conv *c, uint32_t p, const char *path, uint64_t *sums,
                           unsigned char *buf)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return THAW_FAIL(-errno, "%s: create: %s", path, strerror(errno));
    uint64_t pos = 0; /* file position of buf[0] */
    size_t fill = 0;
    uint32_t chunk = 0;
    int rc = 0;
    for (size_t i = 0; i <= c->n && rc == 0; i++) {
        /* Copy tensor i (or the final padding when i == c->n). */
        uint64_t start = i < c->n ? c->t[i].offset : c->part_bytes[p];
        if (i < c->n && c->t[i].part != p)
            continue;
        /* zero padding up to this tensor */
        while (pos + fill < start && rc == 0) {
            size_t z = (size_t)(start - (pos + fill));
            size_t room = (size_t)c->chunk_bytes - fill;
            z = z < room ? z : room;
            memset(buf + fill, 0, z);
            fill += z;
            c->done_bytes += z;
            if (fill == c->chunk_bytes) {
                sums[chunk++] = thaw_xxh3(buf, fill);
                rc = thaw_write_all(fd, buf, fill, path);
                pos += fill;
                fill = 0;
            }
        }
        if (i == c->n || rc)
            break;
        const struct src_tensor *t = &c->t[i];
        size_t in_es = thaw_dtype_size(t->info->dtype), out_es = thaw_dtype_size(t->out_dtype);
        uint64_t numel = t->out_bytes / out_es, e = 0;
        while (e < numel && rc == 0) {
            size_t room = ((size_t)c->chunk_bytes - fill) / out_es;
            size_t k = numel - e < room ? (size_t)(numel - e) : room;
            if (t->out_dtype == t->info->dtype)
                memcpy(buf + fill, (const char *)t->data + e * in_es, k * out_es);
            else
                thaw_dtype_cast(buf + fill, t->out_dtype, (const char *)t->data + e * in_es,
                                t->info->dtype, k);
            fill += k * out_es;
            e += k;
            c->done_bytes += k * out_es;
            if (fill == c->chunk_bytes) {
                sums[chunk++] = thaw_xxh3(buf, fill);
                rc = thaw_write_all(fd, buf, fill, path);
                pos += fill;
                fill = 0;
                progress(c);
            }
        }
        progress(c);
    }
    if (rc == 0 && fill > 0) {
        sums[chunk++] = thaw_xxh3(buf, fill);
        rc = thaw_write_all(fd, buf, fill, path);
    }
    progress(c);
    if (rc == 0 && fsync(fd) != 0)
        rc = THAW_FAIL(-errno, "%s: fsync: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = THAW_FAIL(-errno, "%s: close: %s", path, strerror(errno));
    return rc;
}

static json_t *model_object(struct conv *c, json_t *config)
{
    json_t *m = json_object();
    json_t *arch = json_object_get(config, "architectures");
    json_object_set_new(m, "architecture",
                        json_is_array(arch) && json_is_string(json_array_get(arch, 0))
                            ? json_copy(json_array_get(arch, 0))
                            : json_string("unknown"));
    /* The stored dtype: that of the largest float tensor. */
    uint64_t best = 0;
    const char *dt = "F32";
    for (size_t i = 0; i < c->n; i++) {
        if (thaw_dtype_is_float(c->t[i].out_dtype) && c->t[i].out_bytes >= best) {
            best = c->t[i].out_bytes;
            dt = thaw_dtype_name(c->t[i].out_dtype);
        }
    }
    json_object_set_new(m, "dtype", json_string(dt));
    json_object_set_new(m, "n_layers", json_integer(c->n_layers));
    for (size_t k = 0; k < sizeof model_keys / sizeof model_keys[0]; k++) {
        json_t *v = json_object_get(config, model_keys[k]);
        if (v)
            json_object_set(m, model_keys[k], v);
    }
    return m;
}

static int copy_side_file(const char *src, const char *dst)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = thaw_read_file(src, MAX_SIDE_BYTES, &buf, &len);
    if (rc)
        return rc;
    int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        thaw_free(buf);
        return THAW_FAIL(-errno, "%s: create: %s", dst, strerror(errno));
    }
    rc = thaw_write_all(fd, buf, len, dst);
    if (rc == 0 && fsync(fd) != 0)
        rc = THAW_FAIL(-errno, "%s: fsync: %s", dst, strerror(errno));
    close(fd);
    thaw_free(buf);
    return rc;
}

static int write_checkpoint(struct conv *c, const char *tmp, json_t *config)
{
    int rc = 0;
    json_t *root = json_object();
    json_t *parts = json_array();
    json_t *tensors = json_object();
    json_t *files = json_array();
    unsigned char *buf = thaw_malloc_aligned(THAW_CKPT_ALIGN, (size_t)c->chunk_bytes);
    if (!root || !parts || !tensors || !files || !buf) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t p = 0; p < c->n_parts && rc == 0; p++) {
        char name[64], path[4096];
        snprintf(name, sizeof name, "part-%u.bin", p);
        snprintf(path, sizeof path, "%s/%s", tmp, name);
        uint32_t n_chunks = (uint32_t)((c->part_bytes[p] + c->chunk_bytes - 1) / c->chunk_bytes);
        uint64_t *sums = thaw_calloc(n_chunks, sizeof *sums);
        if (!sums) {
            rc = -ENOMEM;
            break;
        }
        rc = write_partition(c, p, path, sums, buf);
        json_t *jp = json_object();
        json_t *jc = json_array();
        for (uint32_t k = 0; k < n_chunks; k++) {
            char hex[17];
            snprintf(hex, sizeof hex, "%016" PRIx64, sums[k]);
            json_array_append_new(jc, json_string(hex));
        }
        thaw_free(sums);
        json_object_set_new(jp, "file", json_string(name));
        json_object_set_new(jp, "bytes", json_integer((json_int_t)c->part_bytes[p]));
        json_object_set_new(jp, "layers", json_pack("[ii]", c->part_first[p], c->part_last[p]));
        json_object_set_new(jp, "chunks", jc);
        json_array_append_new(parts, jp);
    }
    if (rc)
        goto out;
    for (size_t i = 0; i < c->n; i++) {
        const struct src_tensor *t = &c->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->info->n_dims; d++)
            json_array_append_new(shape, json_integer(t->info->shape[d]));
        json_object_set_new(tensors, t->info->name,
                            json_pack("{s:i, s:I, s:I, s:s, s:o}", "partition", (int)t->part,
                                      "offset", (json_int_t)t->offset, "bytes",
                                      (json_int_t)t->out_bytes, "dtype",
                                      thaw_dtype_name(t->out_dtype), "shape", shape));
    }
    for (size_t k = 0; k < sizeof side_files / sizeof side_files[0] && rc == 0; k++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", c->hf_dir, side_files[k]);
        if (!file_exists(src))
            continue;
        snprintf(dst, sizeof dst, "%s/%s", tmp, side_files[k]);
        rc = copy_side_file(src, dst);
        json_array_append_new(files, json_string(side_files[k]));
    }
    if (rc)
        goto out;
    json_object_set_new(root, "format", json_string("thaw"));
    json_object_set_new(root, "version", json_integer(THAW_CKPT_VERSION));
    json_object_set_new(root, "model", model_object(c, config));
    json_object_set_new(root, "alignment", json_integer(THAW_CKPT_ALIGN));
    json_object_set_new(root, "chunk_bytes", json_integer((json_int_t)c->chunk_bytes));
    json_object_set_new(root, "checksum", json_string("xxh3-64"));
    json_object_set_new(root, "files", files);
    json_object_set_new(root, "partitions", parts);
    json_object_set_new(root, "tensors", tensors);
    files = parts = tensors = NULL;
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!text) {
        rc = -ENOMEM;
        goto out;
    }
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", tmp);
    rc = thaw_write_file_atomic(mpath, text, strlen(text));
    free(text); /* jansson allocated it */ /* checksrc: allow */
    if (rc == 0)
        rc = thaw_fsync_dir(tmp);
out:
    thaw_free_aligned(buf);
    json_decref(files);
    json_decref(parts);
    json_decref(tensors);
    json_decref(root);
    return rc;
}

int thaw_ckpt_convert(const char *hf_dir, const char *out_dir, const struct thaw_convert_opts *o)
{
    struct thaw_convert_opts defaults = { 0 };
    struct conv c = { .o = o ? o : &defaults, .hf_dir = hf_dir };
    json_t *idx = NULL, *config = NULL;
    char tmp[4096], old[4096], parent[4096];
    int rc, tmp_made = 0;
    c.n_parts = c.o->n_partitions ? c.o->n_partitions : 1;
    c.chunk_bytes = c.o->chunk_bytes ? c.o->chunk_bytes : THAW_CKPT_CHUNK_BYTES;
    if (c.chunk_bytes % THAW_CKPT_ALIGN || c.chunk_bytes > (1u << 30))
        return THAW_FAIL(THAW_EINVAL, "chunk size must be a multiple of 4 KiB up to 1 GiB");
    if ((unsigned)c.o->dtype > THAW_CONVERT_F32)
        return THAW_FAIL(THAW_EINVAL, "unknown target dtype %d", (int)c.o->dtype);
    if (c.n_parts > 1024)
        return THAW_FAIL(THAW_EINVAL, "--partitions %u: at most 1024", c.n_parts);
    struct stat st;
    if (stat(out_dir, &st) == 0 && !c.o->force)
        return THAW_FAIL(-EEXIST, "%s already exists (use --force to replace it)", out_dir);

    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/config.json", hf_dir);
    if (file_exists(cpath)) {
        json_error_t jerr;
        config = json_load_file(cpath, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(config)) {
            json_decref(config);
            return THAW_FAIL(THAW_EFORMAT, "%s: %s", cpath,
                             config ? "not a JSON object" : jerr.text);
        }
    } else {
        config = json_object();
    }
    rc = open_shards(&c, &idx);
    if (rc == 0)
        rc = collect(&c, idx);
    if (rc == 0)
        rc = partition(&c);
    if (rc)
        goto out;

    /* Build in a sibling temp dir, then rename: readers never see a partial checkpoint. */
    snprintf(parent, sizeof parent, "%s", out_dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent)
        *slash = '\0';
    else
        snprintf(parent, sizeof parent, "%s", slash ? "/" : ".");
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", out_dir, (int)getpid());
    snprintf(old, sizeof old, "%s.old.%d", out_dir, (int)getpid());
    if (thaw_rm_rf(tmp) != 0 || mkdir(tmp, 0755) != 0) {
        rc = THAW_FAIL(-errno, "%s: mkdir: %s", tmp, strerror(errno));
        goto out;
    }
    tmp_made = 1;
    rc = write_checkpoint(&c, tmp, config);
    if (rc) {
        thaw_err_ctx("converting %s", hf_dir);
        goto out;
    }
    int replaced = 0;
    if (stat(out_dir, &st) == 0) {
        if (rename(out_dir, old) != 0) {
            rc = THAW_FAIL(-errno, "%s: rename: %s", out_dir, strerror(errno));
            goto out;
        }
        replaced = 1;
    }
    if (rename(tmp, out_dir) != 0) {
        rc = THAW_FAIL(-errno, "%s: rename: %s", out_dir, strerror(errno));
        if (replaced && rename(old, out_dir) != 0)
            THAW_LOG(THAW_LOG_WARN, "ckpt", "restore_failed", "path=%s", old);
        goto out;
    }
    tmp_made = 0;
    rc = thaw_fsync_dir(parent);
    if (replaced && thaw_rm_rf(old) != 0)
        THAW_LOG(THAW_LOG_WARN, "ckpt", "cleanup_failed", "path=%s", old);
    if (c.o->progress) {
        char a[32];
        fprintf(stderr, "convert: wrote %s: %zu tensors, %u partition(s), %s\n", out_dir, c.n,
                c.n_parts, thaw_fmt_bytes(c.total_bytes, a, sizeof a));
    }
out:
    if (tmp_made && thaw_rm_rf(tmp) != 0)
        THAW_LOG(THAW_LOG_WARN, "ckpt", "cleanup_failed", "path=%s", tmp);
    for (size_t s = 0; s < c.n_shards; s++)
        thaw_st_close(c.shards[s]);
    thaw_free(c.shards);
    thaw_free(c.t);
    thaw_free(c.part_first);
    thaw_free(c.part_last);
    thaw_free(c.part_bytes);
    json_decref(idx);
    json_decref(config);
    return rc;
}
