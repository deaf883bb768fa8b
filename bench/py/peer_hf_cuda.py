#!/usr/bin/env python3
"""The transformers peer on the GPU for bench/gpu/run.sh: the same random
model folder, bf16, sdpa attention, KV cache on. Prints one JSON line.

    peer_hf_cuda.py HF_DIR ttft [--prompt 16]
        process start (env BENCH_T0, epoch seconds taken by the shell just
        before exec; else this interpreter's start) to the first generated
        token: import + from_pretrained(device_map="cuda") + generate(1 token)
    peer_hf_cuda.py HF_DIR decode [--batch 32] [--tokens 128]
        decode tok/s at batch 1 and --batch (greedy, prefill time subtracted)
"""
import argparse
import json
import os
import time

T_START = float(os.environ.get("BENCH_T0") or time.time())
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

T_IMPORT = time.time()


def load(hf):
    t0 = time.time()
    m = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.bfloat16, device_map="cuda",
                                             attn_implementation="sdpa")
    m.eval()
    m.generation_config.pad_token_id = 0
    m.generation_config.eos_token_id = None
    torch.cuda.synchronize()
    return m, time.time() - t0


def gen(m, ids, n):
    with torch.inference_mode():
        out = m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    torch.cuda.synchronize()
    return out


def decode_rate(m, batch, tokens, vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, 16), generator=g).cuda()
    gen(m, ids, 2)  # warm-up
    t0 = time.perf_counter()
    gen(m, ids, 1)
    t_prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = gen(m, ids, tokens)
    dt = time.perf_counter() - t0 - t_prefill
    return (out.shape[1] - 16 - 1) * batch / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf")
    ap.add_argument("mode", choices=["ttft", "decode"])
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    m, load_s = load(a.hf)
    vocab = m.config.vocab_size
    r = {"peer": "transformers", "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
         "import_s": round(T_IMPORT - T_START, 3), "load_s": round(load_s, 3)}
    if a.mode == "ttft":
        ids = torch.tensor([[(i * 7919 + 3) % vocab for i in range(a.prompt)]]).cuda()
        gen(m, ids, 1)
        r["first_token_s"] = round(time.time() - T_START, 3)
        r["prompt"] = a.prompt
    else:
        r["decode1_tps"] = round(decode_rate(m, 1, a.tokens, vocab), 2)
        r["batch"] = a.batch
        r["decodeN_tps"] = round(decode_rate(m, a.batch, a.tokens, vocab), 2)
        r["tokens"] = a.tokens
    print(json.dumps(r))


if __name__ == "__main__":
    main()
