#!/usr/bin/env python3
"""Independent numpy reference of the Hugging Face forward pass for the
LLaMA family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and
SmolLM/SmolLM2, which are Llama), used as the correctness oracle for the C
engine (tests/engine/engine_goldens.py).

Written from the maths in ../shared/research/engine.md section 2, not from
transformers' code. Computes in float64 by default (weights upcast; float32
optional), full causal attention over the whole sequence, no KV cache:

  per layer:  a = rmsnorm(x)*w_in; q,k,v = W a (+b for Qwen2); rope(q,k)
              o = softmax(q k^T / sqrt(hd) + causal) v   (GQA: head h -> kv h//(nH/nKV))
              x += Wo o;  m = rmsnorm(x)*w_post;  x += Wdown(silu(Wgate m) * Wup m)
  logits = lm_head(rmsnorm(x)*w_norm)   (lm_head = embed_tokens when tied)

RoPE is the HF half-split ("rotate_half") layout, pairing j with j+hd/2,
inv_freq[j] = theta^(-2j/hd), scaled by rope_scaling types default, linear
and llama3 (others are rejected).

Reads either an HF folder (config.json + model.safetensors or a sharded
model.safetensors.index.json, via safetensors.numpy) or a Thaw checkpoint
(manifest.json + part-*.bin, tensors by partition/offset/bytes/dtype/shape;
config.json is the copy the converter keeps next to the manifest).

Needs numpy (+ safetensors for HF folders only).

CLI (the thaw verbs' flags):
  np_ref.py logits MODEL_DIR --ids 1,2,3 --out logits.npy [--f32]
  np_ref.py generate MODEL_DIR --ids 1,2,3 --max-tokens N --temperature 0 --json
"""
import json
import math
import os
import sys

import numpy as np

_NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16,
       "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def bf16_to_f32(u16):
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# ----------------------------------------------------------------- loading

def load_thaw(ckpt):
    """Tensors of a Thaw checkpoint as float32 arrays, keyed by HF name."""
    with open(os.path.join(ckpt, "manifest.json")) as f:
        m = json.load(f)
    if m.get("format") != "thaw":
        raise ValueError(f"{ckpt}: manifest format is {m.get('format')!r}, not thaw")
    parts = [np.memmap(os.path.join(ckpt, p["file"]), dtype=np.uint8, mode="r")
             for p in m["partitions"]]
    out = {}
    for name, t in m["tensors"].items():
        raw = parts[t["partition"]][t["offset"]:t["offset"] + t["bytes"]]
        a = np.frombuffer(raw.tobytes(), dtype=_NP[t["dtype"]]).reshape(t["shape"])
        out[name] = bf16_to_f32(a) if t["dtype"] == "BF16" else a.astype(np.float32)
    return out


def load_hf(folder):
    """Tensors of an HF folder (single or sharded safetensors) as float32."""
    from safetensors.numpy import load_file  # only needed here
    idx = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        path = os.path.join(folder, fn)
        try:
            d = load_file(path)
        except Exception:  # noqa: BLE001 - e.g. bf16, which numpy cannot express
            d = None
        if d is None or any(v.dtype == np.uint16 or v.dtype.kind == "V" for v in d.values()):
            d = _load_st_raw(path)  # safetensors.numpy cannot express bf16
        for k, v in d.items():
            out[k] = v.astype(np.float32)
    return out


def _load_st_raw(path):
    """Minimal safetensors reader for dtypes numpy lacks (BF16)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    hdr = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        a = np.frombuffer(blob[base + b:base + e], dtype=_NP[t["dtype"]]).reshape(t["shape"])
        out[name] = bf16_to_f32(a) if t["dtype"] == "BF16" else a
    return out


def load(path):
    """(config dict, tensors dict) from a Thaw checkpoint or an HF folder."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    if os.path.exists(os.path.join(path, "manifest.json")):
        return cfg, load_thaw(path)
    return cfg, load_hf(path)


# ----------------------------------------------------------------- config

def rope_params(cfg):
    """(theta, scaling dict or None). Accepts the v4 layout (rope_theta +
    rope_scaling) and the transformers v5 layout (rope_parameters)."""
    rp = cfg.get("rope_parameters")
    theta = cfg.get("rope_theta")
    scaling = cfg.get("rope_scaling")
    if isinstance(rp, dict):
        theta = rp.get("rope_theta", theta)
        if rp.get("rope_type", rp.get("type", "default")) != "default":
            scaling = rp
    if theta is None:
        theta = 10000.0
    if scaling is not None:
        t = scaling.get("rope_type", scaling.get("type", "default"))
        if t == "default":
            scaling = None
    return float(theta), scaling


def inv_freq(cfg, hd):
    theta, sc = rope_params(cfg)
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    if sc is None:
        return inv
    t = sc.get("rope_type", sc.get("type"))
    f = float(sc["factor"])
    if t == "linear":
        return inv / f
    if t == "llama3":
        lo, hi = float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
        old = float(sc["original_max_position_embeddings"])
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = np.where(wl > low_wl, inv / f, inv)
        s = (old / wl - lo) / (hi - lo)
        smooth = (1 - s) * inv / f + s * inv
        mid = ~(wl < high_wl) & ~(wl > low_wl)
        return np.where(mid, smooth, out)
    raise NotImplementedError(f"rope_scaling type {t!r}")


class Model:
    def __init__(self, path, dtype=np.float64):
        cfg, w = load(path)
        self.cfg, self.w = cfg, {k: v.astype(dtype, copy=False) for k, v in w.items()}
        self.dtype = dtype
        self.H = cfg["hidden_size"]
        self.nH = cfg["num_attention_heads"]
        self.nKV = cfg.get("num_key_value_heads") or self.nH
        self.hd = cfg.get("head_dim") or self.H // self.nH
        self.L = cfg["num_hidden_layers"]
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.inv_freq = inv_freq(cfg, self.hd)
        tied = cfg.get("tie_word_embeddings", False)
        if "lm_head.weight" in self.w:
            self.lm_head = self.w["lm_head.weight"]
        elif tied:
            self.lm_head = self.w["model.embed_tokens.weight"]
        else:
            raise KeyError("lm_head.weight missing and tie_word_embeddings is false")

    def _rms(self, x, name):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.w[name]

    def _lin(self, x, name):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def _rope(self, x, pos):  # x [T, n, hd]
        ang = pos[:, None].astype(np.float64) * self.inv_freq[None, :]  # [T, hd/2]
        c = np.cos(ang)[:, None, :].astype(self.dtype)
        s = np.sin(ang)[:, None, :].astype(self.dtype)
        h = self.hd // 2
        x1, x2 = x[..., :h], x[..., h:]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)

    def logits(self, ids):
        """float64 logits [len(ids), vocab] at every position."""
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        pos = np.arange(T)
        x = self.w["model.embed_tokens.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf, dtype=self.dtype), 1)
        g = self.nH // self.nKV
        for l in range(self.L):
            p = f"model.layers.{l}."
            a = self._rms(x, p + "input_layernorm.weight")
            q = self._lin(a, p + "self_attn.q_proj").reshape(T, self.nH, self.hd)
            k = self._lin(a, p + "self_attn.k_proj").reshape(T, self.nKV, self.hd)
            v = self._lin(a, p + "self_attn.v_proj").reshape(T, self.nKV, self.hd)
            q, k = self._rope(q, pos), self._rope(k, pos)
            o = np.empty((T, self.nH, self.hd), dtype=self.dtype)
            for h in range(self.nH):
                kh, vh = k[:, h // g], v[:, h // g]
                sc = q[:, h] @ kh.T / math.sqrt(self.hd) + mask
                sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
                sc /= sc.sum(axis=-1, keepdims=True)
                o[:, h] = sc @ vh
            x = x + self._lin(o.reshape(T, -1), p + "self_attn.o_proj")
            m = self._rms(x, p + "post_attention_layernorm.weight")
            gt = self._lin(m, p + "mlp.gate_proj")
            up = self._lin(m, p + "mlp.up_proj")
            x = x + self._lin(gt / (1 + np.exp(-gt)) * up, p + "mlp.down_proj")
        x = self._rms(x, "model.norm.weight")
        return x @ self.lm_head.T

    def greedy(self, ids, n, stop=()):
        """Greedy continuation (argmax, recomputing the full prefix each step)."""
        seq, out = list(ids), []
        for _ in range(n):
            t = int(np.argmax(self.logits(seq)[-1]))
            out.append(t)
            seq.append(t)
            if t in stop:
                break
        return out


def main(argv):
    """Same verbs and flags as the thaw CLI, so that THAW_ENGINE_CMD="python3
    np_ref.py" can stand in for the engine when testing engine_goldens.py."""
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("verb", choices=["logits", "generate"])
    ap.add_argument("model")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--out")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--f32", action="store_true", help="compute in float32")
    a = ap.parse_args(argv)
    ids = [int(t) for t in a.ids.split(",") if t]
    m = Model(a.model, np.float32 if a.f32 else np.float64)
    if a.verb == "generate":
        if a.temperature != 0:
            sys.exit("np_ref: only greedy (--temperature 0)")
        eos = m.cfg.get("eos_token_id")
        stop = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        out = m.greedy(ids, a.max_tokens, stop)
        fin = "stop" if out and out[-1] in stop else "length"
        print(json.dumps({"ids": out, "text": None, "finish_reason": fin}))
        return 0
    lg = m.logits(ids).astype(np.float32)
    if not a.out:
        sys.exit("np_ref: logits needs --out FILE.npy")
    np.save(a.out, lg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
