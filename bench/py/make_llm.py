#!/usr/bin/env python3
"""Write a Hugging Face folder with random weights in the shape of a real
LLaMA-family model, for the engine benchmark (bench/engine.sh).

    make_llm.py --out DIR [--shape smollm2-135m] [--seed 0]

Weights are N(0, 0.02) float32 written with the real safetensors library;
`thaw convert --dtype bf16` then stores them as the model would ship.
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

SHAPES = {
    # SmolLM2-135M-Instruct's config (as transformers reads it from the GGUF).
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                         num_key_value_heads=3, num_hidden_layers=30, vocab_size=49152,
                         max_position_embeddings=8192, rope_theta=100000.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, head_dim=64),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    c = dict(SHAPES[a.shape])
    rng = np.random.default_rng(a.seed)
    H, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    qd = c["num_attention_heads"] * c["head_dim"]
    kvd = c["num_key_value_heads"] * c["head_dim"]

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    t = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": np.ones(H, np.float32)}
    for l in range(L):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = np.ones(H, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(H, np.float32)
        t[p + "self_attn.q_proj.weight"] = w(qd, H)
        t[p + "self_attn.k_proj.weight"] = w(kvd, H)
        t[p + "self_attn.v_proj.weight"] = w(kvd, H)
        t[p + "self_attn.o_proj.weight"] = w(H, qd)
        t[p + "mlp.gate_proj.weight"] = w(I, H)
        t[p + "mlp.up_proj.weight"] = w(I, H)
        t[p + "mlp.down_proj.weight"] = w(H, I)
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = w(V, H)
    os.makedirs(a.out, exist_ok=True)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
               bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16", **c)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    n = sum(v.size for v in t.values())
    print(json.dumps({"shape": a.shape, "params": int(n), "dir": a.out}))


if __name__ == "__main__":
    main()
