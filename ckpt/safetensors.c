/*
 * safetensors.c - a strict reader of safetensors files: an 8-byte
 * little-endian header length N, N bytes of JSON, then the tensor buffer.
 * Validation follows the reference implementation (huggingface/safetensors
 * tensor.rs Metadata::validate): no holes, no overlaps, sizes match shapes,
 * buffer covered exactly to end of file, header at most 100 MB.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_int.h"

struct thaw_st {
    char *label;
    const unsigned char *data; /* whole file */
    size_t len;
    size_t data_start; /* 8 + N */
    void *map;         /* owned mapping (thaw_st_open), else NULL */
    size_t map_len;
    size_t n;
    struct thaw_tensor_info *t; /* sorted by offset */
    char *names;                /* one allocation for all names */
};

int ckpt_parse_shape(json_t *arr, struct thaw_tensor_info *t, uint64_t *numel, const char *what)
{
    if (!json_is_array(arr))
        return THAW_FAIL(THAW_EFORMAT, "%s: shape is not an array", what);
    size_t nd = json_array_size(arr);
    if (nd > THAW_CKPT_MAX_DIMS)
        return THAW_FAIL(THAW_EFORMAT, "%s: %zu dims, at most %d supported", what, nd,
                         THAW_CKPT_MAX_DIMS);
    uint64_t count = 1;
    for (size_t d = 0; d < nd; d++) {
        json_t *v = json_array_get(arr, d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return THAW_FAIL(THAW_EFORMAT, "%s: shape[%zu] is not a non-negative integer", what, d);
        uint64_t dim = (uint64_t)json_integer_value(v);
        if (dim && count > UINT64_MAX / dim)
            return THAW_FAIL(THAW_EFORMAT, "%s: shape overflows", what);
        count *= dim;
        t->shape[d] = (int64_t)dim;
    }
    t->n_dims = (int)nd;
    *numel = count;
    return 0;
}

int ckpt_layer_of(const char *name)
{
    static const char *keys[] = { ".layers.", ".h.", ".blocks.", "layers." };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *p = strstr(name, keys[k]);
        if (!p || (k == 3 && p != name))
            continue;
        p += strlen(keys[k]);
        if (*p < '0' || *p > '9')
            continue;
        long v = 0;
        while (*p >= '0' && *p <= '9' && v < 1000000)
            v = v * 10 + (*p++ - '0');
        if (*p == '.' || *p == '\0')
            return (int)v;
    }
    return -1;
}

static int cmp_offset(const void *a, const void *b)
{
    const struct thaw_tensor_info *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    /* empty tensors share offsets with their neighbours: order by size */
    if (x->bytes != y->bytes)
        return x->bytes < y->bytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

void thaw_st_close(struct thaw_st *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_len);
    thaw_free(st->t);
    thaw_free(st->names);
    thaw_free(st->label);
    thaw_free(st);
}

int thaw_st_parse(const void *data, size_t len, const char *name, struct thaw_st **out)
{
    const unsigned char *p = data;
    json_t *root = NULL;
    int rc;
    if (len < 8)
        return THAW_FAIL(THAW_EFORMAT, "%s: %zu bytes is too short for a safetensors header",
                         name, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | p[i];
    if (n > THAW_ST_MAX_HEADER)
        return THAW_FAIL(THAW_EFORMAT, "%s: header length %llu exceeds the 100 MB limit", name,
                         (unsigned long long)n);
    if (n > len - 8)
        return THAW_FAIL(THAW_EFORMAT, "%s: header length %llu runs past end of file (%zu bytes)",
                         name, (unsigned long long)n, len);
    if (n < 2 || p[8] != '{')
        return THAW_FAIL(THAW_EFORMAT, "%s: header does not start with '{'", name);

    struct thaw_st *st = thaw_calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->data = p;
    st->len = len;
    st->data_start = 8 + (size_t)n;
    st->label = thaw_strdup(name);
    if (!st->label) {
        rc = -ENOMEM;
        goto fail;
    }

    /* The writer pads the header with spaces to 8-byte alignment. */
    size_t hlen = (size_t)n;
    while (hlen > 0 && p[8 + hlen - 1] == ' ')
        hlen--;
    json_error_t jerr;
    root = json_loadb((const char *)p + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: header JSON: %s (column %d)", name, jerr.text,
                       jerr.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = THAW_FAIL(THAW_EFORMAT, "%s: header is not a JSON object", name);
        goto fail;
    }

    size_t count = json_object_size(root);
    size_t names_bytes = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        names_bytes += strlen(key) + 1;
    }
    st->t = thaw_calloc(count ? count : 1, sizeof *st->t);
    st->names = thaw_malloc(names_bytes ? names_bytes : 1);
    if (!st->t || !st->names) {
        rc = -ENOMEM;
        goto fail;
    }
    char *np = st->names;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(val)) {
                rc = THAW_FAIL(THAW_EFORMAT, "%s: __metadata__ is not an object", name);
                goto fail;
            }
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = THAW_FAIL(THAW_EFORMAT, "%s: __metadata__[%.64s] is not a string", name,
                                   mk);
                    goto fail;
                }
            }
            continue;
        }
        struct thaw_tensor_info *t = &st->t[st->n];
        size_t kl = strlen(key) + 1;
        memcpy(np, key, kl);
        t->name = np;
        np += kl;
        if (!json_is_object(val)) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s: entry is not an object", name, key);
            goto fail;
        }
        json_t *jd = json_object_get(val, "dtype");
        json_t *js = json_object_get(val, "shape");
        json_t *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd) || !js || !json_is_array(jo) || json_array_size(jo) != 2) {
            rc = THAW_FAIL(THAW_EFORMAT,
                           "%s: tensor %.128s: needs dtype, shape and data_offsets [begin, end]",
                           name, key);
            goto fail;
        }
        rc = thaw_dtype_parse(json_string_value(jd), &t->dtype);
        if (rc) {
            thaw_err_ctx("%s: tensor %.128s", name, key);
            goto fail;
        }
        uint64_t numel;
        rc = ckpt_parse_shape(js, t, &numel, key);
        if (rc) {
            thaw_err_ctx("%s", name);
            goto fail;
        }
        json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
        if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
            json_integer_value(je) < json_integer_value(jb)) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s: invalid data_offsets", name, key);
            goto fail;
        }
        t->offset = (uint64_t)json_integer_value(jb);
        t->bytes = (uint64_t)(json_integer_value(je) - json_integer_value(jb));
        size_t es = thaw_dtype_size(t->dtype);
        if (numel > UINT64_MAX / es || numel * es != t->bytes) {
            rc = THAW_FAIL(THAW_EFORMAT,
                           "%s: tensor %.128s: %llu bytes in data_offsets but shape and dtype "
                           "need %llu",
                           name, key, (unsigned long long)t->bytes,
                           (unsigned long long)(numel * es));
            goto fail;
        }
        st->n++;
    }

    /* No holes, no overlaps, and the buffer must end exactly at EOF. */
    qsort(st->t, st->n, sizeof *st->t, cmp_offset);
    uint64_t expect = 0;
    for (size_t i = 0; i < st->n; i++) {
        if (st->t[i].offset != expect) {
            rc = THAW_FAIL(THAW_EFORMAT, "%s: tensor %.128s starts at %llu, expected %llu (%s)",
                           name, st->t[i].name, (unsigned long long)st->t[i].offset,
                           (unsigned long long)expect,
                           st->t[i].offset > expect ? "hole in the buffer" : "overlap");
            goto fail;
        }
        expect += st->t[i].bytes;
    }
    if (expect != len - st->data_start) {
        rc = THAW_FAIL(THAW_EFORMAT,
                       "%s: tensors cover %llu bytes but the file holds %llu after the header%s",
                       name, (unsigned long long)expect,
                       (unsigned long long)(len - st->data_start),
                       expect > len - st->data_start ? " (truncated file?)" : "");
        goto fail;
    }
    json_decref(root);
    *out = st;
    return 0;
fail:
    json_decref(root);
    thaw_st_close(st);
    return rc;
}

int thaw_st_open(const char *path, struct thaw_st **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return THAW_FAIL(-errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = -errno;
        close(fd);
        return THAW_FAIL(e, "%s: stat: %s", path, strerror(-e));
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = -errno;
            close(fd);
            return THAW_FAIL(e, "%s: mmap: %s", path, strerror(-e));
        }
    }
    close(fd);
    struct thaw_st *s = NULL;
    int rc = thaw_st_parse(map ? map : "", len, path, &s);
    if (rc) {
        if (map)
            munmap(map, len);
        return rc;
    }
    s->map = map;
    s->map_len = len;
    *out = s;
    return 0;
}

size_t thaw_st_n_tensors(const struct thaw_st *st)
{
    return st->n;
}

const struct thaw_tensor_info *thaw_st_tensor(const struct thaw_st *st, size_t i)
{
    return i < st->n ? &st->t[i] : NULL;
}

const void *thaw_st_data(const struct thaw_st *st, const struct thaw_tensor_info *t)
{
    return st->data + st->data_start + t->offset;
}
