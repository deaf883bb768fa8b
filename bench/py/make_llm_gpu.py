#!/usr/bin/env python3
"""Write a Hugging Face folder (config.json + model.safetensors) with random
bf16 weights in the shape of a real LLaMA-family model, fast, for the GPU
benchmarks (bench/gpu/run.sh). Weights are N(0, 0.02) drawn with torch on the
GPU when there is one (else the CPU), written with the real safetensors
library as one file; norms are ones.

    make_llm_gpu.py --out DIR [--shape llama3-8b] [--seed 0] [--device auto|cpu|cuda]

Shapes: llama3-8b (Llama-3.1-8B: 32 layers, hidden 4096, GQA 32/8, vocab
128256, untied; 8.03e9 parameters, 16.06 GB in bf16), smollm2-135m (small),
llama3-tiny (the llama3-8b layout -- GQA, llama3 rope, untied -- at 2 layers,
hidden 256, vocab 1024: a few MB, for checking this script and the pipeline
on a machine without a GPU).
"""
import argparse
import json
import os
import time

import torch
from safetensors.torch import save_file

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                      num_key_value_heads=8, num_hidden_layers=32, vocab_size=128256,
                      max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, head_dim=128,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8192}),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                         num_key_value_heads=3, num_hidden_layers=30, vocab_size=49152,
                         max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, head_dim=64),
    "llama3-tiny": dict(hidden_size=256, intermediate_size=512, num_attention_heads=8,
                        num_key_value_heads=2, num_hidden_layers=2, vocab_size=1024,
                        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                        tie_word_embeddings=False, head_dim=32,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192}),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where to draw the weights (auto: cuda when available)")
    a = ap.parse_args()
    c = dict(SHAPES[a.shape])
    dev = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=dev).manual_seed(a.seed)
    H, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    qd = c["num_attention_heads"] * c["head_dim"]
    kvd = c["num_key_value_heads"] * c["head_dim"]
    t0 = time.time()

    def w(*shape):
        x = torch.randn(*shape, generator=g, device=dev, dtype=torch.float32) * 0.02
        return x.to(torch.bfloat16).cpu()

    def ones(n):
        return torch.ones(n, dtype=torch.bfloat16)

    t = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": ones(H)}
    for l in range(L):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = ones(H)
        t[p + "post_attention_layernorm.weight"] = ones(H)
        t[p + "self_attn.q_proj.weight"] = w(qd, H)
        t[p + "self_attn.k_proj.weight"] = w(kvd, H)
        t[p + "self_attn.v_proj.weight"] = w(kvd, H)
        t[p + "self_attn.o_proj.weight"] = w(H, qd)
        t[p + "mlp.gate_proj.weight"] = w(I, H)
        t[p + "mlp.up_proj.weight"] = w(I, H)
        t[p + "mlp.down_proj.weight"] = w(H, I)
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = w(V, H)
    t_gen = time.time() - t0
    os.makedirs(a.out, exist_ok=True)
    # Written under a temporary name, renamed when complete: run.sh skips this
    # step when model.safetensors exists, so a killed run must not leave one.
    dst = os.path.join(a.out, "model.safetensors")
    save_file(t, dst + ".tmp", metadata={"format": "pt"})
    os.replace(dst + ".tmp", dst)
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
               bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16", **c)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    n = sum(v.numel() for v in t.values())
    print(json.dumps({"shape": a.shape, "params": int(n), "bytes": int(n) * 2, "dir": a.out,
                      "generate_s": round(t_gen, 2), "total_s": round(time.time() - t0, 2),
                      "device": dev}))


if __name__ == "__main__":
    main()
