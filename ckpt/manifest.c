/*
 * manifest.c - manifest.json of a Thaw checkpoint: parsing with strict
 * validation (version, alignment, bounds, overlaps, checksum counts) and the
 * accessors the loader and CLI use. The writer lives in convert.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_int.h"

#define MAX_TENSORS 1000000
#define MAX_PARTITIONS 1024
#define MAX_MANIFEST_BYTES (256u << 20)

struct thaw_manifest {
    char *raw;
    size_t raw_len;
    char id[17];
    char *model_json;
    uint64_t chunk_bytes;
    uint32_t n_parts;
    struct thaw_partition_info *parts;
    uint64_t *chunks; /* all partitions' checksums, one allocation */
    size_t n_tensors;
    struct thaw_tensor_info *t;
    char *names;
    size_t n_files;
    char **files;
};

void thaw_manifest_destroy(struct thaw_manifest *m)
{
    if (!m)
        return;
    if (m->parts) {
        for (uint32_t i = 0; i < m->n_parts; i++)
            thaw_free((char *)m->parts[i].file);
    }
    for (size_t i = 0; i < m->n_files; i++)
        thaw_free(m->files[i]);
    thaw_free(m->files);
    thaw_free(m->parts);
    thaw_free(m->chunks);
    thaw_free(m->t);
    thaw_free(m->names);
    thaw_free(m->model_json);
    thaw_free(m->raw);
    thaw_free(m);
}

static int get_u64(json_t *o, const char *key, uint64_t *out, const char *what)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return THAW_FAIL(THAW_EFORMAT, "%s: '%s' missing or not a non-negative integer", what, key);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* A file name inside the checkpoint: no directories, no dot-files. */
static int safe_name(const char *s)
{
    return s[0] && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\') && strlen(s) < 256;
}

struct span {
    uint64_t off, end;
    size_t idx;
};

static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int parse_partitions(struct thaw_manifest *m, json_t *jp, const char *name)
{
    if (!json_is_array(jp) || json_array_size(jp) == 0)
        return THAW_FAIL(THAW_EFORMAT, "%s: 'partitions' must be a non-empty array", name);
    if (json_array_size(jp) > MAX_PARTITIONS)
        return THAW_FAIL(THAW_ELIMIT, "%s: more than %d partitions", name, MAX_PARTITIONS);
    m->n_parts = (uint32_t)json_array_size(jp);
    m->parts = thaw_calloc(m->n_parts, sizeof *m->parts);
    if (!m->parts)
        return -ENOMEM;
    size_t total_chunks = 0;
    for (uint32_t i = 0; i < m->n_parts; i++) {
        json_t *p = json_array_get(jp, i);
        char what[64];
        snprintf(what, sizeof what, "%s: partition %u", name, i);
        if (!json_is_object(p))
            return THAW_FAIL(THAW_EFORMAT, "%s is not an object", what);
        json_t *jf = json_object_get(p, "file");
        if (!json_is_string(jf) || !safe_name(json_string_value(jf)))
            return THAW_FAIL(THAW_EFORMAT, "%s: 'file' missing or not a plain file name", what);
        int rc = get_u64(p, "bytes", &m->parts[i].bytes, what);
        if (rc)
            return rc;
        if (m->parts[i].bytes % THAW_CKPT_ALIGN)
            return THAW_FAIL(THAW_EFORMAT, "%s: %" PRIu64 " bytes is not a multiple of %u", what,
                             m->parts[i].bytes, THAW_CKPT_ALIGN);
        json_t *jc = json_object_get(p, "chunks");
        uint64_t want = (m->parts[i].bytes + m->chunk_bytes - 1) / m->chunk_bytes;
        if (!json_is_array(jc) || json_array_size(jc) != want)
            return THAW_FAIL(THAW_EFORMAT, "%s: 'chunks' must list %" PRIu64 " checksums", what,
                             want);
        total_chunks += want;
        json_t *jl = json_object_get(p, "layers");
        m->parts[i].first_layer = m->parts[i].last_layer = -1;
        if (jl) {
            json_t *a = json_array_get(jl, 0), *b = json_array_get(jl, 1);
            if (json_array_size(jl) != 2 || !json_is_integer(a) || !json_is_integer(b) ||
                json_integer_value(a) < -1 || json_integer_value(b) < json_integer_value(a) ||
                json_integer_value(b) > 1000000)
                return THAW_FAIL(THAW_EFORMAT, "%s: 'layers' must be [first, last] with "
                                               "-1 <= first <= last", what);
            m->parts[i].first_layer = (int)json_integer_value(a);
            m->parts[i].last_layer = (int)json_integer_value(b);
        }
        m->parts[i].file = thaw_strdup(json_string_value(jf));
        if (!m->parts[i].file)
            return -ENOMEM;
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(m->parts[j].file, m->parts[i].file) == 0)
                return THAW_FAIL(THAW_EFORMAT, "%s: file %s listed twice", what,
                                 m->parts[i].file);
        }
    }
    m->chunks = thaw_malloc((total_chunks ? total_chunks : 1) * sizeof *m->chunks);
    if (!m->chunks)
        return -ENOMEM;
    uint64_t *c = m->chunks;
    for (uint32_t i = 0; i < m->n_parts; i++) {
        json_t *jc = json_object_get(json_array_get(jp, i), "chunks");
        m->parts[i].chunk_xxh3 = c;
        m->parts[i].n_chunks = (uint32_t)json_array_size(jc);
        for (size_t k = 0; k < json_array_size(jc); k++) {
            const char *hex = json_string_value(json_array_get(jc, k));
            char *end = NULL;
            if (!hex || strlen(hex) != 16)
                return THAW_FAIL(THAW_EFORMAT, "%s: partition %u chunk %zu: bad checksum", name,
                                 i, k);
            *c++ = strtoull(hex, &end, 16);
            if (*end)
                return THAW_FAIL(THAW_EFORMAT, "%s: partition %u chunk %zu: bad checksum", name,
                                 i, k);
        }
    }
    return 0;
}

static int parse_tensors(struct thaw_manifest *m, json_t *jt, const char *name)
{
    if (!json_is_object(jt))
        return THAW_FAIL(THAW_EFORMAT, "%s: 'tensors' must be an object", name);
    size_t n = json_object_size(jt);
    if (n > MAX_TENSORS)
        return THAW_FAIL(THAW_ELIMIT, "%s: more than %d tensors", name, MAX_TENSORS);
    size_t names_bytes = 0;
    const char *key;
    json_t *v;
    json_object_foreach(jt, key, v) {
        names_bytes += strlen(key) + 1;
    }
    m->t = thaw_calloc(n ? n : 1, sizeof *m->t);
    m->names = thaw_malloc(names_bytes ? names_bytes : 1);
    struct span *spans = thaw_malloc((n ? n : 1) * sizeof *spans);
    int rc = 0;
    if (!m->t || !m->names || !spans) {
        rc = -ENOMEM;
        goto out;
    }
    char *np = m->names;
    json_object_foreach(jt, key, v) {
        struct thaw_tensor_info *t = &m->t[m->n_tensors];
        size_t kl = strlen(key) + 1;
        memcpy(np, key, kl);
        t->name = np;
        np += kl;
        if (!json_is_object(v)) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s is not an object", name, key);
            goto out;
        }
        json_t *jd = json_object_get(v, "dtype");
        if (!json_is_string(jd)) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s: dtype missing", name, key);
            goto out;
        }
        rc = thaw_dtype_parse(json_string_value(jd), &t->dtype);
        if (rc) {
            thaw_err_ctx("%s: tensor %.128s", name, key);
            goto out;
        }
        uint64_t numel = 0, part = 0;
        rc = ckpt_parse_shape(json_object_get(v, "shape"), t, &numel, key);
        if (!rc)
            rc = get_u64(v, "partition", &part, key);
        if (!rc)
            rc = get_u64(v, "offset", &t->offset, key);
        if (!rc)
            rc = get_u64(v, "bytes", &t->bytes, key);
        if (rc) {
            thaw_err_ctx("%s", name);
            goto out;
        }
        if (part >= m->n_parts) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s: partition %" PRIu64 " does not exist",
                           name, key, part);
            goto out;
        }
        t->partition = (uint32_t)part;
        size_t es = thaw_dtype_size(t->dtype);
        if (numel > UINT64_MAX / es || numel * es != t->bytes) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s: bytes do not match shape and dtype",
                           name, key);
            goto out;
        }
        if (t->offset % THAW_CKPT_ALIGN) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s: offset %" PRIu64
                                         " is not %u-byte aligned", name, key, t->offset,
                           THAW_CKPT_ALIGN);
            goto out;
        }
        if (t->bytes > m->parts[part].bytes || t->offset > m->parts[part].bytes - t->bytes) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s: runs past the end of %s", name, key,
                           m->parts[part].file);
            goto out;
        }
        m->n_tensors++;
    }
    /* No two tensors of one partition may overlap. */
    for (uint32_t p = 0; p < m->n_parts; p++) {
        size_t k = 0;
        for (size_t i = 0; i < m->n_tensors; i++) {
            if (m->t[i].partition == p && m->t[i].bytes > 0)
                spans[k++] = (struct span){ m->t[i].offset, m->t[i].offset + m->t[i].bytes, i };
        }
        qsort(spans, k, sizeof *spans, cmp_span);
        for (size_t i = 1; i < k; i++) {
            if (spans[i].off < spans[i - 1].end) {
                rc = THAW_FAIL(THAW_EFORMAT, "%s: tensors %.128s and %.128s overlap", name,
                               m->t[spans[i - 1].idx].name, m->t[spans[i].idx].name);
                goto out;
            }
        }
    }
out:
    thaw_free(spans);
    return rc;
}

int thaw_manifest_parse(const char *json, size_t len, const char *name, struct thaw_manifest **out)
{
    json_error_t jerr;
    int rc;
    if (len > MAX_MANIFEST_BYTES)
        return THAW_FAIL(THAW_ELIMIT, "%s: manifest larger than %u bytes", name,
                         MAX_MANIFEST_BYTES);
    struct thaw_manifest *m = thaw_calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: invalid JSON: %s (line %d)", name, jerr.text, jerr.line);
        goto fail;
    }
    if (!json_is_object(root) || !json_is_string(json_object_get(root, "format")) ||
        strcmp(json_string_value(json_object_get(root, "format")), "thaw") != 0) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: not a Thaw manifest (\"format\" must be \"thaw\")",
                       name);
        goto fail;
    }
    json_t *jv = json_object_get(root, "version");
    if (!json_is_integer(jv) || json_integer_value(jv) != THAW_CKPT_VERSION) {
        rc = THAW_FAIL(THAW_EVERSION, "%s: manifest version %s is not supported (this build "
                                      "reads version %d)", name,
                       json_is_integer(jv) ? "other than 1" : "missing", THAW_CKPT_VERSION);
        if (json_is_integer(jv))
            rc = THAW_FAIL(THAW_EVERSION, "%s: manifest version %lld is not supported (this "
                                          "build reads version %d)", name,
                           (long long)json_integer_value(jv), THAW_CKPT_VERSION);
        goto fail;
    }
    rc = get_u64(root, "chunk_bytes", &m->chunk_bytes, name);
    if (rc)
        goto fail;
    if (m->chunk_bytes == 0 || m->chunk_bytes % THAW_CKPT_ALIGN || m->chunk_bytes > (1u << 30)) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: chunk_bytes must be a multiple of %u up to 1 GiB", name,
                       THAW_CKPT_ALIGN);
        goto fail;
    }
    rc = parse_partitions(m, json_object_get(root, "partitions"), name);
    if (rc)
        goto fail;
    rc = parse_tensors(m, json_object_get(root, "tensors"), name);
    if (rc)
        goto fail;
    json_t *jf = json_object_get(root, "files");
    if (jf && !json_is_array(jf)) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: 'files' must be an array", name);
        goto fail;
    }
    m->files = thaw_calloc(json_array_size(jf) + 1, sizeof *m->files);
    if (!m->files) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < json_array_size(jf); i++) {
        const char *f = json_string_value(json_array_get(jf, i));
        if (!f || !safe_name(f)) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: files[%zu] is not a plain file name", name, i);
            goto fail;
        }
        m->files[i] = thaw_strdup(f);
        if (!m->files[i]) {
            rc = -ENOMEM;
            goto fail;
        }
        m->n_files++;
    }
    json_t *jm = json_object_get(root, "model");
    char *mj = jm ? json_dumps(jm, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    m->model_json = thaw_strdup(mj ? mj : "{}");
    free(mj); /* jansson allocated it */ /* checksrc: allow */
    m->raw = thaw_malloc(len + 1);
    if (!m->model_json || !m->raw) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(m->raw, json, len);
    m->raw[len] = '\0';
    m->raw_len = len;
    snprintf(m->id, sizeof m->id, "%016" PRIx64, thaw_xxh3(json, len));
    json_decref(root);
    *out = m;
    return 0;
fail:
    json_decref(root);
    thaw_manifest_destroy(m);
    return rc;
}

int thaw_manifest_load(const char *ckpt_dir, struct thaw_manifest **out)
{
    char path[4096];
    char *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/manifest.json", ckpt_dir);
    int rc = thaw_read_file(path, MAX_MANIFEST_BYTES, &buf, &len);
    if (rc)
        return rc;
    rc = thaw_manifest_parse(buf, len, path, out);
    thaw_free(buf);
    return rc;
}

uint32_t thaw_manifest_n_partitions(const struct thaw_manifest *m) { return m->n_parts; }

const struct thaw_partition_info *thaw_manifest_partition(const struct thaw_manifest *m,
                                                          uint32_t i)
{
    return i < m->n_parts ? &m->parts[i] : NULL;
}

size_t thaw_manifest_n_tensors(const struct thaw_manifest *m) { return m->n_tensors; }

const struct thaw_tensor_info *thaw_manifest_tensor(const struct thaw_manifest *m, size_t i)
{
    return i < m->n_tensors ? &m->t[i] : NULL;
}

int64_t thaw_manifest_find(const struct thaw_manifest *m, const char *name)
{
    for (size_t i = 0; i < m->n_tensors; i++) {
        if (strcmp(m->t[i].name, name) == 0)
            return (int64_t)i;
    }
    return THAW_ENOTFOUND;
}

uint64_t thaw_manifest_chunk_bytes(const struct thaw_manifest *m) { return m->chunk_bytes; }

uint64_t thaw_manifest_total_bytes(const struct thaw_manifest *m)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < m->n_parts; i++)
        s += m->parts[i].bytes;
    return s;
}

const char *thaw_manifest_id(const struct thaw_manifest *m) { return m->id; }
const char *thaw_manifest_model_json(const struct thaw_manifest *m) { return m->model_json; }
size_t thaw_manifest_n_files(const struct thaw_manifest *m) { return m->n_files; }

const char *thaw_manifest_file(const struct thaw_manifest *m, size_t i)
{
    return i < m->n_files ? m->files[i] : NULL;
}

const char *thaw_manifest_raw(const struct thaw_manifest *m, size_t *len)
{
    if (len)
        *len = m->raw_len;
    return m->raw;
}
