/*
 * ckpt_int.h - private to ckpt/: shared helpers between the safetensors
 * reader, the manifest and the converter.
 */
#ifndef CKPT_INT_H
#define CKPT_INT_H

#include <jansson.h>

#include "ckpt/thaw_ckpt.h"

/* Parse a JSON shape array into t (dims, overflow-checked element count).
 * what labels errors. */
int ckpt_parse_shape(json_t *arr, struct thaw_tensor_info *t, uint64_t *numel, const char *what);

/* Layer index encoded in a tensor name ("model.layers.12.mlp..." -> 12), -1 if none. */
int ckpt_layer_of(const char *name);

#endif /* CKPT_INT_H */
