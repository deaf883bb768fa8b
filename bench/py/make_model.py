#!/usr/bin/env python3
"""Write a synthetic llama-like Hugging Face folder with the real safetensors
library, plus the same weights as a torch .pt, for bench/load.sh.

    make_model.py --out DIR [--pt FILE] [--gib 2.2] [--dtype f16|f32]
                  [--shard-gib 1.0] [--seed 0]

DIR gets config.json, model-0000i-of-0000n.safetensors shards written with
safetensors.numpy.save_file and model.safetensors.index.json (or a single
model.safetensors when one shard is enough). FILE (optional) gets the same
tensors as one dict saved with torch.save. Values are N(0, 0.02) noise; only
their bytes matter to a loader. Prints one JSON line describing the model.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
from safetensors.numpy import save_file

GIB = 1 << 30


def dims_for(target_bytes, esize):
    """Pick llama-like dimensions whose total comes close to target_bytes."""
    if target_bytes >= 1.5 * GIB:
        hidden, inter, vocab, heads, kv = 2048, 5632, 32000, 32, 8
    elif target_bytes >= 0.4 * GIB:
        hidden, inter, vocab, heads, kv = 1536, 4096, 32000, 24, 8
    else:
        hidden, inter, vocab, heads, kv = 1024, 2816, 32000, 16, 8
    head_dim = hidden // heads
    per_layer = (2 * hidden * hidden            # q_proj, o_proj
                 + 2 * hidden * kv * head_dim   # k_proj, v_proj (GQA)
                 + 3 * hidden * inter           # gate, up, down
                 + 2 * hidden) * esize          # two norms
    fixed = (2 * vocab * hidden + hidden) * esize  # embed, lm_head, final norm
    layers = max(1, int(round((target_bytes - fixed) / per_layer)))
    return dict(hidden=hidden, inter=inter, vocab=vocab, heads=heads, kv=kv,
                head_dim=head_dim, layers=layers)


def tensor_specs(d):
    h, i, v, kvd = d["hidden"], d["inter"], d["vocab"], d["kv"] * d["head_dim"]
    yield "model.embed_tokens.weight", (v, h)
    for n in range(d["layers"]):
        p = f"model.layers.{n}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (h, h)
        yield p + "self_attn.k_proj.weight", (kvd, h)
        yield p + "self_attn.v_proj.weight", (kvd, h)
        yield p + "self_attn.o_proj.weight", (h, h)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate_proj.weight", (i, h)
        yield p + "mlp.up_proj.weight", (i, h)
        yield p + "mlp.down_proj.weight", (h, i)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (v, h)


def make_tensor(rng, shape, dtype):
    if len(shape) == 1:
        return np.ones(shape, dtype=dtype)
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= 0.02
    return a.astype(dtype, copy=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--pt", default=None)
    ap.add_argument("--gib", type=float, default=2.2)
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--shard-gib", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    dtype = np.float16 if a.dtype == "f16" else np.float32
    esize = np.dtype(dtype).itemsize
    d = dims_for(a.gib * GIB, esize)
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()

    # Generate everything (the .pt needs all of it anyway), grouped in shards.
    shards, cur, cur_bytes = [], {}, 0
    shard_max = int(a.shard_gib * GIB)
    for name, shape in tensor_specs(d):
        t = make_tensor(rng, shape, dtype)
        if cur and cur_bytes + t.nbytes > shard_max:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[name] = t
        cur_bytes += t.nbytes
    shards.append(cur)

    total = sum(t.nbytes for s in shards for t in s.values())
    n = len(shards)
    weight_map = {}
    files = []
    meta = {"format": "pt"}
    for k, s in enumerate(shards):
        fn = "model.safetensors" if n == 1 else f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_file(s, os.path.join(a.out, fn), metadata=meta)
        files.append(fn)
        for name in s:
            weight_map[name] = fn
    if n > 1:
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": d["hidden"],
        "intermediate_size": d["inter"],
        "num_hidden_layers": d["layers"],
        "num_attention_heads": d["heads"],
        "num_key_value_heads": d["kv"],
        "head_dim": d["head_dim"],
        "vocab_size": d["vocab"],
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float16" if a.dtype == "f16" else "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    if a.pt:
        import torch
        sd = {k: torch.from_numpy(v) for s in shards for k, v in s.items()}
        torch.save(sd, a.pt)

    print(json.dumps({"bytes": total, "tensors": len(weight_map), "shards": files,
                      "layers": d["layers"], "hidden": d["hidden"], "dtype": a.dtype,
                      "pt": os.path.basename(a.pt) if a.pt else None,
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
