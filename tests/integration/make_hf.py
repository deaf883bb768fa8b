#!/usr/bin/env python3
"""Write a small Hugging Face style model folder with the real safetensors
library: llama tensor names, config.json, optional shards with an index.

usage: make_hf.py OUT_DIR [--layers N] [--hidden H] [--shards S] [--dtype f32|f16]
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file


def tensors(layers, hidden, dtype, seed=0):
    rng = np.random.default_rng(seed)
    vocab, inter = 128, hidden * 2
    t = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + "self_attn." + n + ".weight"] = (hidden, hidden)
        t[p + "mlp.gate_proj.weight"] = (inter, hidden)
        t[p + "mlp.up_proj.weight"] = (inter, hidden)
        t[p + "mlp.down_proj.weight"] = (hidden, inter)
        t[p + "input_layernorm.weight"] = (hidden,)
        t[p + "post_attention_layernorm.weight"] = (hidden,)
    t["model.norm.weight"] = (hidden,)
    t["lm_head.weight"] = (vocab, hidden)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in t.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    a = ap.parse_args()
    dt = np.float32 if a.dtype == "f32" else np.float16
    os.makedirs(a.out, exist_ok=True)
    t = tensors(a.layers, a.hidden, dt)
    # an int tensor too: kept as is by every --dtype
    t["model.rotary_emb.inv_freq_ids"] = np.arange(16, dtype=np.int64)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "hidden_size": a.hidden, "intermediate_size": a.hidden * 2,
           "num_hidden_layers": a.layers, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 128, "rms_norm_eps": 1e-5,
           "torch_dtype": "float32" if a.dtype == "f32" else "float16"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(a.out, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}, f)
    names = sorted(t)
    if a.shards <= 1:
        save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
        return
    per = (len(names) + a.shards - 1) // a.shards
    wm = {}
    for s in range(a.shards):
        fn = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
        part = {k: t[k] for k in names[s * per:(s + 1) * per]}
        save_file(part, os.path.join(a.out, fn), metadata={"format": "pt"})
        wm.update({k: fn for k in part})
    total = sum(v.nbytes for v in t.values())
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f)


if __name__ == "__main__":
    main()
