#!/usr/bin/env python3
"""Round trip through files the real safetensors library wrote: convert with
`thaw convert` (single file, shards, partitions, every --dtype), then read the
Thaw checkpoint with an independent numpy reader of manifest.json + part-*.bin
and compare with safetensors.numpy.load_file of the source. Casts are checked
against numpy's own float16 rounding and a bit-exact numpy bf16 reference.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors.numpy import load_file
except ImportError as e:  # scripts/test.sh installs them; run by hand without: skip
    print(f"SKIP: needs numpy and safetensors ({e}); run scripts/pyenv.sh")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
THAW = os.path.join(os.environ.get("THAW_BIN", "build/bin"), "thaw")
NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
      "I32": np.int32, "U8": np.uint8, "BF16": np.uint16}


def run(*args, ok=True):
    p = subprocess.run(args, capture_output=True, text=True)
    if ok and p.returncode != 0:
        sys.exit(f"FAIL: {' '.join(args)} -> {p.returncode}\n{p.stderr}")
    return p


def read_thaw(ckpt):
    """Independent reader: tensors from manifest.json and part files."""
    with open(os.path.join(ckpt, "manifest.json")) as f:
        m = json.load(f)
    assert m["format"] == "thaw" and m["version"] == 1
    parts = []
    for p in m["partitions"]:
        data = open(os.path.join(ckpt, p["file"]), "rb").read()
        assert len(data) == p["bytes"] and len(data) % 4096 == 0
        parts.append(data)
    out = {}
    for name, t in m["tensors"].items():
        assert t["offset"] % 4096 == 0, name
        raw = parts[t["partition"]][t["offset"]:t["offset"] + t["bytes"]]
        out[name] = (t["dtype"], np.frombuffer(raw, dtype=NP[t["dtype"]]).reshape(t["shape"]))
    return m, out


def bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even (what torch does)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def check(src_dir, ckpt, dtype):
    src = {}
    for fn in sorted(os.listdir(src_dir)):
        if fn.endswith(".safetensors"):
            src.update(load_file(os.path.join(src_dir, fn)))
    m, got = read_thaw(ckpt)
    assert set(src) == set(got), (set(src) ^ set(got))
    for name, ref in src.items():
        dt, arr = got[name]
        assert list(arr.shape) == list(ref.shape), name
        if ref.dtype.kind in "iu" or dtype == "keep":
            assert arr.dtype == ref.dtype or (dt == "BF16"), name
            assert np.array_equal(arr, ref), name
        elif dtype == "f32":
            assert dt == "F32" and np.array_equal(arr, ref.astype(np.float32)), name
        elif dtype == "f16":
            assert dt == "F16" and np.array_equal(arr, ref.astype(np.float16)), name
        elif dtype == "bf16":
            assert dt == "BF16", name
            assert np.array_equal(arr, bf16_bits(ref.astype(np.float32))), name
    return m


def main():
    tmp = tempfile.mkdtemp(prefix="thaw-hf-")
    try:
        for shards, dt in ((1, "f32"), (3, "f16")):
            hf = os.path.join(tmp, f"hf{shards}")
            run(sys.executable, os.path.join(HERE, "make_hf.py"), hf, "--layers", "5",
                "--shards", str(shards), "--dtype", dt)
            for target in ("keep", "bf16", "f16", "f32"):
                for parts in (1, 2, 5):
                    out = os.path.join(tmp, f"ck-{shards}-{target}-{parts}")
                    run(THAW, "convert", hf, out, "--dtype", target, "--partitions", str(parts),
                        "--quiet")
                    m = check(hf, out, target)
                    assert len(m["partitions"]) == parts
                    run(THAW, "verify", out)
                    shutil.rmtree(out)
            print(f"ok: {shards} shard(s) of {dt} x 4 dtypes x 3 partition counts")
        # the CLI's inspect agrees with the manifest
        out = os.path.join(tmp, "ck")
        run(THAW, "convert", os.path.join(tmp, "hf3"), out, "--partitions", "2", "--quiet")
        info = json.loads(run(THAW, "inspect", out).stdout)
        assert info["model"]["architecture"] == "LlamaForCausalLM"
        assert info["tensors"] == 5 * 9 + 4 and len(info["partitions"]) == 2
        assert info["model"]["dtype"] == "F16"
        print("ok: inspect")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
