#!/usr/bin/env python3
"""The engine against transformers: logits and greedy generations of the C
engine (`thaw logits`, `thaw generate`) compared with goldens that
transformers produced (tests/engine/make_goldens.py, committed under
tests/fixtures/engine/), and with the independent numpy reference
tests/engine/np_ref.py run on the same Thaw checkpoint.

For each tiny model in tests/fixtures/engine/<name>/ (random init; Llama GQA,
Llama with llama3 rope scaling + explicit head_dim + tied embeddings, Qwen2
with q/k/v biases, Mistral, Llama stored in bf16, Llama with linear rope
scaling):
  1. thaw convert fixtures/<name> TMP/<name> --dtype keep
  2. np_ref on TMP/<name> == goldens (checks converter + reference; tol 1e-4 x scale)
  3. thaw logits TMP/<name> --ids ... --out x.npy   (float32 [n_ids, vocab]) for
     two sequences, against the goldens and against np_ref
  4. thaw generate TMP/<name> --ids PROMPT --max-tokens 20 --temperature 0 --json
     -> {"ids": [...generated only], ...}: must equal transformers' greedy ids
     exactly (fixtures were seeded so every greedy step wins by >= 0.02).
SmolLM2-135M-Instruct (real weights, from the Q4_1 GGUF dequantized to f32):
  the checkpoint path is printed by `bash $THAW_SOURCE_DIR/scripts/smollm2.sh f32`;
  if that script is missing or fails, this part is skipped with the reason.
  Logits at the last 3 positions of the chat prompt, and greedy 32 tokens for
  two chat prompts (a trailing stop token may be included or left out).

Tolerances (max abs diff over all positions and the whole vocabulary):
  tiny f32 weights:  <= 2e-3 * max(1, max|golden logit|)
  tiny bf16 weights: <= 2e-2 * max(1, max|golden logit|) (goldens: bf16 weights
                     upcast, float32 compute; an engine may round activations)
  SmolLM2 (f32):     <= 1e-2 absolute (logits reach ~37 in magnitude)
  greedy ids:        exact

Usage: engine_goldens.py [--device cpu|cuda] [MODEL...]
--device cuda runs the same comparisons (same tolerances) through `thaw logits
--device cuda` and `thaw generate --device cuda`; without a usable CUDA device
(or in a build without CUDA) it exits 77 with the reason.

Environment: THAW_BIN (dir of the thaw binary, default build/bin),
THAW_SOURCE_DIR (repo root, default: derived from this file), THAW_PYTHON
(unused here: this script is run with it), THAW_ENGINE_CMD (optional command
prefix used instead of "$THAW_BIN/thaw" for the logits and generate verbs,
e.g. "python3 tests/engine/np_ref.py" to test this script itself).
Exit: 0 pass, 1 fail, 77 skip (no numpy, or thaw lacks the logits verb).
"""
import json
import os
import shlex
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
SRC = os.environ.get("THAW_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(SRC, "tests", "fixtures", "engine")
THAW = os.path.join(os.environ.get("THAW_BIN", "build/bin"), "thaw")
ENGINE = shlex.split(os.environ["THAW_ENGINE_CMD"]) if os.environ.get("THAW_ENGINE_CMD") \
    else [THAW]
sys.path.insert(0, HERE)
import np_ref  # noqa: E402

TINY = ["llama", "llama_llama3rope", "qwen2", "mistral", "llama_bf16", "llama_linear"]
REL_TOL = {"float32": 2e-3, "bfloat16": 2e-2}
REF_TOL = 1e-4  # np_ref (float64) vs transformers (float32), relative to scale
SMOL_TOL = 1e-2

failures = []
DEVICE_ARGS = []  # ["--device", "cuda"] with --device cuda


def fail(msg):
    print(f"FAIL: {msg}")
    failures.append(msg)


def run(args, timeout=300):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout}s")


def ids_arg(ids):
    return ",".join(str(int(i)) for i in ids)


def engine_logits(ckpt, ids, out):
    p = run(ENGINE + ["logits", ckpt, "--ids", ids_arg(ids), "--out", out] + DEVICE_ARGS)
    if p.returncode != 0:
        return None, f"thaw logits exited {p.returncode}: {p.stderr.strip()[-2000:]}"
    try:
        a = np.load(out)
    except Exception as e:  # noqa: BLE001 - report any unreadable output
        return None, f"thaw logits wrote an unreadable {out}: {e}"
    return a, None


def engine_generate(ckpt, ids, n):
    p = run(ENGINE + ["generate", ckpt, "--ids", ids_arg(ids), "--max-tokens", str(n),
                      "--temperature", "0", "--json"] + DEVICE_ARGS)
    if p.returncode != 0:
        return None, f"thaw generate exited {p.returncode}: {p.stderr.strip()[-2000:]}"
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and isinstance(d.get("ids"), list):
                return d, None
    try:
        d = json.loads(p.stdout)
        if isinstance(d, dict) and isinstance(d.get("ids"), list):
            return d, None
    except ValueError:
        pass
    return None, f"thaw generate printed no JSON object with ids: {p.stdout[-1000:]!r}"


def cmp_logits(what, got, want, tol, engine=True):
    """Compare [T, V] arrays; report max diff, where, and argmax agreement."""
    if got is None:
        return None
    if engine and got.dtype != np.float32:
        fail(f"{what}: dtype {got.dtype}, want float32")
    if got.shape != want.shape:
        fail(f"{what}: shape {got.shape}, want {want.shape}")
        return None
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    if not np.isfinite(got).all():
        fail(f"{what}: non-finite logits at positions "
             f"{sorted(set(np.nonzero(~np.isfinite(got))[0].tolist()))[:10]}")
        return None
    mx = float(d.max())
    pos, tok = np.unravel_index(int(d.argmax()), d.shape)
    am = int((got.argmax(-1) != want.argmax(-1)).sum())
    ok = mx <= tol
    print(f"  {what}: max abs diff {mx:.3e} (tol {tol:.1e}) at position {pos} id {tok}; "
          f"argmax differs at {am}/{len(want)} positions {'ok' if ok else 'FAIL'}")
    if not ok:
        worst = d.max(axis=1)
        bad = [int(i) for i in np.nonzero(worst > tol)[0]]
        fail(f"{what}: max abs diff {mx:.3e} > {tol:.1e}; first bad position {bad[0]} "
             f"(diff {worst[bad[0]]:.3e}), bad positions {bad[:12]}"
             f"{' ...' if len(bad) > 12 else ''}")
    return mx


def cmp_ids(what, got, want, stop_ids=()):
    got = [int(t) for t in got]
    want = [int(t) for t in want]
    ok = got == want
    if not ok and want and want[-1] in stop_ids and got == want[:-1]:
        ok = True  # engine left out the stop token it stopped on
    if ok:
        print(f"  {what}: {len(got)} greedy ids equal")
        return True
    first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                 min(len(got), len(want)))
    fail(f"{what}: greedy ids differ at new token {first}: "
         f"got {got[first] if first < len(got) else '<end>'}, "
         f"want {want[first] if first < len(want) else '<end>'}\n    got  {got}\n    want {want}")
    return False


def has_logits_verb():
    if os.environ.get("THAW_ENGINE_CMD"):
        return True, ""
    p = run([THAW, "logits"], timeout=60)
    text = (p.stdout + p.stderr).lower()
    if "unknown verb" in text or "not built" in text or "not implemented" in text:
        return False, f"{THAW} has no working `logits` verb yet ({text.strip()[:80]!r})"
    return True, ""


def convert(src, dst):
    p = run([THAW, "convert", src, dst, "--dtype", "keep", "--quiet"])
    if p.returncode != 0:
        fail(f"thaw convert {src}: exited {p.returncode}: {p.stderr.strip()[-1000:]}")
        return False
    return True


def check_tiny(name, tmp, engine_ok, summary):
    d = os.path.join(FIX, name)
    g = json.load(open(os.path.join(d, "goldens.json")))
    lz = np.load(os.path.join(d, "logits.npz"))
    want1, want2 = lz["logits1"], lz["logits2"]
    scale = max(1.0, float(np.abs(want1).max()))
    tol = REL_TOL[g["stored_dtype"]] * scale
    print(f"{name} ({g['architecture']}, {g['stored_dtype']}, max|logit| {scale:.2f}):")
    ck = os.path.join(tmp, name)
    if not convert(d, ck):
        return
    row = {"model": name}
    # np_ref on the Thaw checkpoint reproduces transformers
    ref = np_ref.Model(ck)
    r1, r2 = ref.logits(g["ids1"]), ref.logits(g["ids2"])
    row["np_ref"] = cmp_logits(f"{name} np_ref(thaw ckpt) vs transformers seq1", r1, want1,
                               REF_TOL * scale, engine=False)
    cmp_logits(f"{name} np_ref(thaw ckpt) vs transformers seq2", r2, want2, REF_TOL * scale,
               engine=False)
    if not engine_ok:
        summary.append(row)
        return
    x = os.path.join(tmp, f"{name}.npy")
    got1, err = engine_logits(ck, g["ids1"], x)
    if err:
        fail(f"{name}: {err}")
    else:
        row["engine_seq1"] = cmp_logits(f"{name} engine vs transformers seq1", got1, want1, tol)
        row["engine_vs_np_ref_seq1"] = cmp_logits(f"{name} engine vs np_ref seq1", got1, r1, tol)
    got2, err = engine_logits(ck, g["ids2"], x)
    if err:
        fail(f"{name}: {err}")
    else:
        row["engine_seq2"] = cmp_logits(f"{name} engine vs transformers seq2", got2, want2, tol)
    out, err = engine_generate(ck, g["prompt"], g["greedy_new_tokens"])
    if err:
        fail(f"{name}: {err}")
    else:
        row["greedy"] = cmp_ids(f"{name} greedy {g['greedy_new_tokens']}", out["ids"],
                                g["greedy"])
    summary.append(row)


def smollm2_ckpt():
    script = os.path.join(SRC, "scripts", "smollm2.sh")
    if not os.path.exists(script):
        return None, f"{script} does not exist"
    p = run(["bash", script, "f32"], timeout=1200)
    if p.returncode != 0:
        return None, f"scripts/smollm2.sh f32 exited {p.returncode}: {p.stderr.strip()[-500:]}"
    lines = [ln.strip() for ln in p.stdout.strip().splitlines() if ln.strip()]
    if not lines or not os.path.exists(os.path.join(lines[-1], "manifest.json")):
        return None, f"scripts/smollm2.sh f32 printed no checkpoint path: {p.stdout[-300:]!r}"
    return lines[-1], None


def check_smollm2(tmp, engine_ok, summary):
    d = os.path.join(FIX, "smollm2")
    g = json.load(open(os.path.join(d, "goldens.json")))
    want = np.load(os.path.join(d, "logits_last3.npy"))
    print(f"smollm2 ({g['model']}, max|logit| at last 3 positions "
          f"{g['max_abs_logit_last3']:.2f}):")
    ck, why = smollm2_ckpt()
    if ck is None:
        print(f"  SKIP smollm2: {why}")
        summary.append({"model": "smollm2", "skipped": why})
        return
    row = {"model": "smollm2"}
    p0 = g["prompts"][0]
    ref = np_ref.Model(ck, np.float32)  # float32 compute keeps memory ~0.6 GB
    r = ref.logits(p0["ids"])[-3:]
    del ref
    row["np_ref"] = cmp_logits("smollm2 np_ref(thaw ckpt, f32) vs transformers last 3", r, want,
                               SMOL_TOL, engine=False)
    if row["np_ref"] is None or row["np_ref"] > SMOL_TOL:
        print("  hint: the goldens come from the Q4_1 GGUF as transformers dequantizes it "
              "(q/k rows un-permuted back to the HF half-split layout); the checkpoint from "
              "scripts/smollm2.sh must hold those same float32 weights")
    if engine_ok:
        x = os.path.join(tmp, "smollm2.npy")
        got, err = engine_logits(ck, p0["ids"], x)
        if err:
            fail(f"smollm2: {err}")
        elif got is not None and got.ndim == 2 and got.shape[0] == len(p0["ids"]):
            row["engine_last3"] = cmp_logits("smollm2 engine vs transformers last 3",
                                             got[-3:], want, SMOL_TOL)
        else:
            fail(f"smollm2: logits shape {None if got is None else got.shape}, want "
                 f"[{len(p0['ids'])}, {want.shape[1]}]")
        for i, p in enumerate(g["prompts"]):
            out, err = engine_generate(ck, p["ids"], 32)
            if err:
                fail(f"smollm2 prompt {i}: {err}")
                continue
            ok = cmp_ids(f"smollm2 {p['user']!r} greedy 32", out["ids"], p["greedy"],
                         g["stop_ids"])
            row[f"greedy{i}"] = ok
            t = out.get("text")
            if ok and t is not None and t.strip() != p["greedy_text"].strip():
                print(f"  NOTE: text {t!r} differs from transformers' {p['greedy_text']!r}")
    summary.append(row)


def cuda_probe(tmp):
    """None when `thaw logits --device cuda` runs; else why it cannot."""
    ck = os.path.join(tmp, "cuda-probe")
    if not convert(os.path.join(FIX, "llama"), ck):
        return "thaw convert failed"
    p = run(ENGINE + ["logits", ck, "--ids", "1,2,3", "--out", os.path.join(tmp, "probe.npy")]
            + DEVICE_ARGS)
    if p.returncode == 0:
        return None
    err = p.stderr.strip()
    if "CUDA backend unavailable" in err:
        return err.splitlines()[-1][:300]
    fail(f"thaw logits --device cuda exited {p.returncode}: {err[-2000:]}")
    return None


def main():
    global DEVICE_ARGS
    args = sys.argv[1:]
    device = "cpu"
    if "--device" in args:
        i = args.index("--device")
        if i + 1 >= len(args) or args[i + 1] not in ("cpu", "cuda"):
            print("usage: engine_goldens.py [--device cpu|cuda] [MODEL...]")
            return 2
        device = args[i + 1]
        del args[i:i + 2]
    if device == "cuda":
        DEVICE_ARGS = ["--device", "cuda"]
    if not os.access(THAW, os.X_OK):
        print(f"SKIP: {THAW} not found (set THAW_BIN)")
        return 77
    engine_ok, why = has_logits_verb()
    if not engine_ok:
        print(f"note: {why}; checking only convert + np_ref against the goldens")
    print(f"engine: {' '.join(ENGINE + DEVICE_ARGS)}")
    tmp = tempfile.mkdtemp(prefix="thaw-goldens-")
    if device == "cuda" and engine_ok:
        why_not = cuda_probe(tmp)
        if why_not:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"SKIP: no CUDA backend: {why_not}")
            return 77
    summary = []
    try:
        only = args
        for name in TINY:
            if not only or name in only:
                check_tiny(name, tmp, engine_ok, summary)
        if not only or "smollm2" in only:
            check_smollm2(tmp, engine_ok, summary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("summary (max abs logit diffs):")
    for row in summary:
        print("  " + json.dumps(row))
    if failures:
        print(f"engine_goldens: {len(failures)} failure(s)")
        return 1
    if not engine_ok:
        print(f"SKIP: {why} (convert + np_ref vs goldens passed)")
        return 77
    print("engine_goldens: all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
