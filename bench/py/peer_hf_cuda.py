#!/usr/bin/env python3
"""The transformers peer on the GPU for bench/gpu/run.sh: the same random
model folder, bf16, sdpa attention, KV cache on. Prints one JSON line.

    peer_hf_cuda.py HF_DIR ttft [--prompt 16]
        process start (env BENCH_T0, epoch seconds taken by the shell just
        before exec; else this interpreter's start) to the first generated
        token: import + from_pretrained(device_map="cuda") + generate(1 token)
    peer_hf_cuda.py HF_DIR decode [--batch 32] [--tokens 128]
        decode tok/s at batch 1 and --batch (greedy, prefill time subtracted)

--device cpu runs the same steps on the CPU, only to check this script on a
machine without a GPU (use a tiny model; the numbers mean nothing); default cuda.
The model is loaded in bf16 (`dtype=` on transformers >= 4.56, `torch_dtype=`
before) straight to the device (device_map, which needs accelerate; without
it: load on the CPU, then .to(device), reported as "load_path").
"""
import argparse
import json
import os
import time

T_START = float(os.environ.get("BENCH_T0") or time.time())
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

T_IMPORT = time.time()


DEV = "cuda"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def _dtype_kw():
    # transformers 4.56 renamed torch_dtype= to dtype=; older versions pass an
    # unknown dtype= on to the config and would load float32 (twice the bytes).
    try:
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load(hf):
    t0 = time.time()
    kw = {_dtype_kw(): torch.bfloat16, "attn_implementation": "sdpa"}
    path = "device_map"
    try:
        m = AutoModelForCausalLM.from_pretrained(hf, device_map=DEV, **kw)
    except (ImportError, ValueError) as e:
        if "accelerate" not in str(e):
            raise
        path = "cpu_then_to_device (no accelerate)"
        m = AutoModelForCausalLM.from_pretrained(hf, **kw).to(DEV)
    m.eval()
    if m.dtype != torch.bfloat16 or m.device.type != DEV:
        raise SystemExit(f"peer_hf_cuda: model loaded as {m.dtype} on {m.device}, "
                         f"expected bfloat16 on {DEV}")
    m.generation_config.pad_token_id = 0
    m.generation_config.eos_token_id = None
    sync()
    return m, time.time() - t0, path


def gen(m, ids, n):
    with torch.inference_mode():
        out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                         min_new_tokens=n, do_sample=False)
    sync()
    return out


def decode_rate(m, batch, tokens, vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, 16), generator=g).to(DEV)
    gen(m, ids, 2)  # warm-up
    t_prefill = float("inf")
    for _ in range(2):  # prefill + first token, the part subtracted below
        t0 = time.perf_counter()
        gen(m, ids, 1)
        t_prefill = min(t_prefill, time.perf_counter() - t0)
    t0 = time.perf_counter()
    out = gen(m, ids, tokens)
    dt = time.perf_counter() - t0 - t_prefill
    if out.shape[1] != 16 + tokens:
        raise SystemExit(f"peer_hf_cuda: generate made {out.shape[1] - 16} tokens, asked {tokens}")
    if dt <= 0:  # only on toy models (--device cpu checks): noise > decode time
        return None
    return (out.shape[1] - 16 - 1) * batch / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf")
    ap.add_argument("mode", choices=["ttft", "decode"])
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    a = ap.parse_args()
    global DEV
    DEV = a.device
    if DEV == "cuda" and not torch.cuda.is_available():
        raise SystemExit("peer_hf_cuda: torch.cuda.is_available() is False (no GPU, or a "
                         f"CPU-only torch {torch.__version__})")
    if a.tokens < 2:
        raise SystemExit("peer_hf_cuda: --tokens must be >= 2")
    m, load_s, load_path = load(a.hf)
    vocab = m.config.vocab_size
    r = {"peer": "transformers", "torch": torch.__version__,
         "transformers": transformers.__version__,
         "device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu",
         "import_s": round(T_IMPORT - T_START, 3), "load_s": round(load_s, 3),
         "load_path": load_path}
    if a.mode == "ttft":
        ids = torch.tensor([[(i * 7919 + 3) % vocab for i in range(a.prompt)]]).to(DEV)
        gen(m, ids, 1)
        r["first_token_s"] = round(time.time() - T_START, 3)
        r["prompt"] = a.prompt
    else:
        d1 = decode_rate(m, 1, a.tokens, vocab)
        dn = decode_rate(m, a.batch, a.tokens, vocab)
        r["decode1_tps"] = d1 and round(d1, 2)
        r["batch"] = a.batch
        r["decodeN_tps"] = dn and round(dn, 2)
        r["tokens"] = a.tokens
    print(json.dumps(r))


if __name__ == "__main__":
    main()
