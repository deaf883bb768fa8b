#!/usr/bin/env python3
"""Generate the engine golden fixtures under tests/fixtures/engine/ with
transformers itself. Run ONCE by hand (needs torch + transformers + gguf,
which CI does not have); the outputs are committed and checked by
tests/engine/engine_goldens.py.

  PYTHON_WITH_TRANSFORMERS tests/engine/make_goldens.py [--only NAME ...] [--no-smollm2]

SmolLM2 is read from the GGUF that scripts/smollm2.sh keeps in its model cache
(THAW_MODEL_CACHE, default build/models); set SMOLLM2_GGUF_DIR to use another.

Per tiny model (random init, seeded, stored with save_pretrained):
  tests/fixtures/engine/<name>/config.json, model.safetensors
  goldens.json  ids1, ids2, prompt, greedy (20 new ids from model.generate,
                do_sample=False, KV cache), min_margin (smallest top1-top2 logit
                gap along the greedy path), versions, np_ref self-check diffs
  logits.npz    logits1 [len(ids1), V], logits2 [len(ids2), V] (float32,
                every position, eager attention, float32 compute)
SmolLM2-135M-Instruct (from the Q4_1 GGUF, dequantized to float32 by
transformers) in tests/fixtures/engine/smollm2/: goldens.json (chat texts,
ids, greedy 32 ids and text for two prompts), logits_last3.npy.

After writing, every tiny model's goldens are re-derived with the numpy
reference tests/engine/np_ref.py (reading the saved folder) and the max abs
differences are printed and stored in goldens.json["np_ref_check"].
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "engine")
sys.path.insert(0, HERE)
import np_ref  # noqa: E402

GGUF_DIR = os.environ.get("SMOLLM2_GGUF_DIR") or os.environ.get("THAW_MODEL_CACHE") or \
    os.path.join(ROOT, "build", "models")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
              max_position_embeddings=256, initializer_range=0.15, rms_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=2, pad_token_id=None, hidden_act="silu")

# name: (config class, model class, overrides, storage dtype, config layout)
# layout "v4" rewrites config.json as the Hub files have it (rope_theta +
# rope_scaling); "v5" keeps what transformers 5 writes (rope_parameters).
VARIANTS = {
    "llama": (LlamaConfig, LlamaForCausalLM,
              dict(rope_theta=10000.0, tie_word_embeddings=False), torch.float32, "v4"),
    "llama_llama3rope": (LlamaConfig, LlamaForCausalLM,
                         dict(rope_theta=10000.0, tie_word_embeddings=True, head_dim=32,
                              intermediate_size=172, vocab_size=320,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 64}),
                         torch.float32, "v4"),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM,
              dict(rope_theta=1000000.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
                   num_hidden_layers=3, intermediate_size=128, vocab_size=320,
                   use_sliding_window=False, sliding_window=None, max_window_layers=3),
              torch.float32, "v4"),
    "mistral": (MistralConfig, MistralForCausalLM,
                dict(rope_theta=10000.0, tie_word_embeddings=False, sliding_window=None,
                     num_key_value_heads=1, rms_norm_eps=1e-6),
                torch.float32, "v4"),
    "llama_bf16": (LlamaConfig, LlamaForCausalLM,
                   dict(rope_theta=500000.0, tie_word_embeddings=False, num_hidden_layers=3,
                        vocab_size=512),
                   torch.bfloat16, "v4"),
    "llama_linear": (LlamaConfig, LlamaForCausalLM,
                     dict(rope_theta=10000.0, tie_word_embeddings=False,
                          rope_scaling={"rope_type": "linear", "factor": 2.0}),
                     torch.float32, "v5"),
}

GEN_NEW = 20
EMBED_STD = {"llama": 3e-3, "mistral": 1e-3}  # eps-sensitive first norm (1e-5, 1e-6)


def seqs(vocab):
    r = np.random.RandomState(20261123)
    ids1 = r.randint(0, vocab, 24).tolist()
    ids1[3], ids1[17] = 0, vocab - 1  # edge rows of the embedding
    ids2 = r.randint(0, vocab, 9).tolist()
    prompt = [1] + r.randint(3, vocab, 7).tolist()
    return ids1, ids2, prompt


def perturb(model, seed, embed_std=None):
    """Non-trivial norm weights and biases (HF inits them to 1 and 0).
    embed_std (untied models only): embedding rows this small make mean(x^2)
    at the first input_layernorm comparable to rms_norm_eps, so an engine
    that ignores or hard-codes eps fails."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif n.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif n == "model.embed_tokens.weight" and embed_std is not None:
                assert not model.config.tie_word_embeddings
                p.copy_(embed_std * torch.randn(p.shape, generator=g))


def to_v4(cfg_path):
    with open(cfg_path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters", None)
    if rp:
        rp = dict(rp)
        c["rope_theta"] = rp.pop("rope_theta")
        c["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
    with open(cfg_path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")


def load_f32(path, **kw):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                             attn_implementation="eager", **kw)
    return m.eval()


def greedy(model, prompt, n, eos=None):
    inp = torch.tensor([prompt])
    pad = 0 if eos is None else (eos[0] if isinstance(eos, list) else eos)
    with torch.no_grad():
        out = model.generate(inp, attention_mask=torch.ones_like(inp), do_sample=False,
                             max_new_tokens=n, min_new_tokens=0 if eos is not None else n,
                             eos_token_id=eos, pad_token_id=pad,
                             output_scores=True, return_dict_in_generate=True,
                             use_cache=True, num_beams=1, temperature=None, top_p=None,
                             top_k=None)
    gen = out.sequences[0, len(prompt):].tolist()
    margins = []
    for s in out.scores:
        top = torch.topk(s[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return gen, margins


def versions():
    return {"transformers": transformers.__version__, "torch": torch.__version__,
            "numpy": np.__version__}


MIN_MARGIN = 0.02  # re-seed until every greedy step wins by at least this


def make_tiny(name):
    for attempt in range(40):
        seed = 1000 + sorted(VARIANTS).index(name) + 100 * attempt
        r = make_tiny_seed(name, seed)
        if r is not None:
            return r
    raise SystemExit(f"{name}: no seed gave a greedy margin >= {MIN_MARGIN}")


def make_tiny_seed(name, seed):
    cfg_cls, mdl_cls, over, dtype, layout = VARIANTS[name]
    kw = dict(COMMON)
    kw.update(over)
    torch.manual_seed(seed)
    cfg = cfg_cls(**kw)
    model = mdl_cls(cfg).eval()
    perturb(model, seed, EMBED_STD.get(name))
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    model.to(dtype).save_pretrained(d, safe_serialization=True)
    for fn in os.listdir(d):  # keep only what the test needs
        if fn not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, fn))
    if layout == "v4":
        to_v4(os.path.join(d, "config.json"))

    # goldens from the files as stored, weights upcast to float32
    m = load_f32(d)
    V = m.config.vocab_size
    ids1, ids2, prompt = seqs(V)
    with torch.no_grad():
        l1 = m(torch.tensor([ids1])).logits[0].float().numpy()
        l2 = m(torch.tensor([ids2])).logits[0].float().numpy()
    gen, margins = greedy(m, prompt, GEN_NEW)
    assert len(gen) == GEN_NEW
    eos = kw["eos_token_id"]
    if min(margins) < MIN_MARGIN or eos in gen:
        print(f"{name}: seed {seed} min margin {min(margins):.4f}, eos in greedy: {eos in gen};"
              " re-seeding")
        return None
    np.savez_compressed(os.path.join(d, "logits.npz"), logits1=l1.astype(np.float32),
                        logits2=l2.astype(np.float32))

    # self-check with the independent numpy reference
    ref = np_ref.Model(d)
    r1, r2 = ref.logits(ids1), ref.logits(ids2)
    d1 = float(np.abs(r1 - l1).max())
    d2 = float(np.abs(r2 - l2).max())
    rgen = ref.greedy(prompt, GEN_NEW)
    g = {
        "model": name,
        "seed": seed,
        "architecture": type(m).__name__,
        "stored_dtype": str(dtype).replace("torch.", ""),
        "config_layout": layout,
        "ids1": ids1, "ids2": ids2,
        "prompt": prompt, "greedy": gen, "greedy_new_tokens": GEN_NEW,
        "greedy_min_margin": min(margins),
        "max_abs_logit1": float(np.abs(l1).max()),
        "argmax1": l1.argmax(-1).tolist(),
        "eos_token_id": eos,
        "np_ref_check": {"max_abs_diff_logits1": d1, "max_abs_diff_logits2": d2,
                         "greedy_equal": rgen == gen},
        "versions": versions(),
    }
    with open(os.path.join(d, "goldens.json"), "w") as f:
        json.dump(g, f, indent=1)
        f.write("\n")
    print(f"{name:18s} V={V} max|logit|={g['max_abs_logit1']:.3f} "
          f"min_margin={min(margins):.4f} np_ref diff l1={d1:.2e} l2={d2:.2e} "
          f"greedy_equal={rgen == gen}")
    return d1, d2, rgen == gen


def make_smollm2(selfcheck=True):
    d = os.path.join(OUT, "smollm2")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE)
    m = load_f32(GGUF_DIR, gguf_file=GGUF_FILE)
    stop = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
            if t is not None]
    prompts = []
    for q in ("What is the capital of France?", "Write a haiku about winter."):
        text = tok.apply_chat_template([{"role": "user", "content": q}],
                                       add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        gen, margins = greedy(m, ids, 32, eos=stop)
        finish = "stop" if gen and gen[-1] in stop else "length"
        prompts.append({"user": q, "text": text, "ids": ids, "greedy": gen,
                        "greedy_text": tok.decode(gen, skip_special_tokens=True),
                        "greedy_text_raw": tok.decode(gen, skip_special_tokens=False),
                        "finish_reason": finish, "greedy_min_margin": min(margins)})
    ids = prompts[0]["ids"]
    with torch.no_grad():
        lg = m(torch.tensor([ids])).logits[0].float().numpy()
    last3 = lg[-3:].astype(np.float32)
    np.save(os.path.join(d, "logits_last3.npy"), last3)
    g = {"model": "SmolLM2-135M-Instruct", "source": f"{GGUF_FILE} dequantized to float32 by "
         "transformers (AutoModelForCausalLM.from_pretrained(gguf_file=...))",
         "vocab_size": int(lg.shape[1]), "stop_ids": stop, "prompts": prompts,
         "logits_last3_positions": [len(ids) - 3, len(ids) - 2, len(ids) - 1],
         "max_abs_logit_last3": float(np.abs(last3).max()), "versions": versions()}

    if selfcheck:  # np_ref on the dequantized weights written as an HF folder (in /tmp)
        tmp = "/tmp/thaw_smollm2_hf"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        from safetensors.torch import save_file  # GGUF models refuse save_pretrained
        sd = {k: v.contiguous() for k, v in m.state_dict().items()}
        if m.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        save_file(sd, os.path.join(tmp, "model.safetensors"))
        m.config.to_json_file(os.path.join(tmp, "config.json"))
        to_v4(os.path.join(tmp, "config.json"))
        ref = np_ref.Model(tmp)
        rl = ref.logits(ids)
        diff = float(np.abs(rl[-3:] - last3).max())
        diff_all = float(np.abs(rl - lg).max())
        g["np_ref_check"] = {"max_abs_diff_last3": diff, "max_abs_diff_all": diff_all,
                             "argmax_equal_all": bool((rl.argmax(-1) == lg.argmax(-1)).all())}
        print(f"smollm2 np_ref diff last3={diff:.2e} all={diff_all:.2e} "
              f"max|logit|={g['max_abs_logit_last3']:.2f}")
    with open(os.path.join(d, "goldens.json"), "w") as f:
        json.dump(g, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for p in prompts:
        print(f"smollm2 {p['user']!r} -> {p['greedy_text']!r} ({len(p['greedy'])} ids, "
              f"{p['finish_reason']}, min_margin={p['greedy_min_margin']:.3f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--no-smollm2", action="store_true")
    ap.add_argument("--no-selfcheck", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(OUT, exist_ok=True)
    for name in VARIANTS:
        if a.only and name not in a.only:
            continue
        make_tiny(name)
    if not a.no_smollm2 and (not a.only or "smollm2" in a.only):
        make_smollm2(not a.no_selfcheck)


if __name__ == "__main__":
    main()
