#!/usr/bin/env python3
"""The peer for bench/engine.sh: Hugging Face transformers (PyTorch, CPU)
generating greedily from the same random-weight model folder.

    peer_hf_generate.py HF_DIR [--tokens 64] [--batch 8] [--prompt 256] [--threads N]

Prints one JSON line: decode tok/s at batch 1 and at --batch, prefill tok/s.
The model runs in bfloat16 (as the Thaw checkpoint stores it), the fastest
dtype PyTorch offers on CPU for this; sdpa attention, KV cache on.
"""
import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM


def decode_rate(model, batch, tokens, vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, 16), generator=g)
    model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
    t_prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    dt = time.perf_counter() - t0 - t_prefill
    n = (out.shape[1] - 16 - 1) * batch
    return n / dt


def prefill_rate(model, n, vocab):
    ids = torch.randint(3, vocab, (1, n), generator=torch.Generator().manual_seed(1))
    best = 0
    with torch.inference_mode():
        for _ in range(3):
            t0 = time.perf_counter()
            model(ids)
            best = max(best, n / (time.perf_counter() - t0))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.hf, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    vocab = model.config.vocab_size
    with torch.inference_mode():
        d1 = decode_rate(model, 1, a.tokens, vocab)
        dn = decode_rate(model, a.batch, a.tokens, vocab)
    pf = prefill_rate(model, a.prompt, vocab)
    print(json.dumps({"peer": "transformers", "torch": torch.__version__, "threads": a.threads,
                      "decode1_tps": d1, "batch": a.batch, "decodeN_tps": dn, "prefill_tokens": a.prompt,
                      "prefill_tps": pf}))


if __name__ == "__main__":
    main()
