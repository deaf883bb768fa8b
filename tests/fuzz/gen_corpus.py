#!/usr/bin/env python3
"""gen_corpus.py - regenerate the fuzz seed corpora in tests/fuzz/corpus/.

safetensors/: small valid files (every dtype, empty tensors, __metadata__,
padded header) and near-valid ones that each break one rule of the reader.
manifest/: manifest.json files written by `thaw convert` from tiny HF folders
(one and two partitions, small chunks) plus near-valid edits of them.
Only the standard library is used. Usage: gen_corpus.py [path/to/thaw]
(default build/bin/thaw); run from anywhere, writes next to this script.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_SEED = 8 << 10

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
         "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def st_bytes(tensors, metadata=None, pad=True, header_obj=None, tail=b""):
    """tensors: [(name, dtype, shape)] laid out in order. Returns the file."""
    hdr, data, off = {}, b"", 0
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, dt, shape in tensors:
        n = SIZES.get(dt, 1)
        for d in shape:
            n *= d
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        data += bytes((off + i * 37) & 0xFF for i in range(n))
        off += n
    if header_obj is not None:
        hdr = header_obj
    h = json.dumps(hdr, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data + tail


def raw_st(header_text, data=b""):
    h = header_text.encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    two = [("a", "F32", [2, 2]), ("b", "BF16", [3])]
    s = {
        "valid_two": st_bytes(two, {"format": "pt"}),
        "valid_empty_header": raw_st("{}"),
        "valid_metadata_only": st_bytes([], {"format": "pt", "k": "v"}),
        "valid_all_dtypes": st_bytes([(d.lower(), d, [2]) for d in SIZES]),
        "valid_zero_sized": st_bytes([("e", "F16", [0, 4]), ("s", "F64", []),
                                      ("z", "U8", [3, 0])]),
        "valid_unpadded": st_bytes(two, pad=False),
        "valid_8_dims": st_bytes([("d8", "U8", [1, 2, 1, 2, 1, 1, 2, 1])]),
        "valid_layers": st_bytes([("model.layers.0.w", "F16", [2, 2]),
                                  ("model.layers.1.w", "F16", [2, 2]),
                                  ("lm_head.weight", "F32", [2])]),
    }
    f = st_bytes(two)
    n = struct.unpack("<Q", f[:8])[0]
    good = json.loads(f[8:8 + n].decode())
    hole = json.loads(json.dumps(good))
    hole["b"]["data_offsets"] = [20, 26]
    overlap = json.loads(json.dumps(good))
    overlap["b"]["data_offsets"] = [12, 18]
    mism = json.loads(json.dumps(good))
    mism["b"]["shape"] = [4]
    data = f[8 + n:]
    s.update({
        "bad_hole": st_bytes([], header_obj=hole, tail=data + b"\0" * 4),
        "bad_overlap": st_bytes([], header_obj=overlap, tail=data[:18]),
        "bad_shape_mismatch": st_bytes([], header_obj=mism, tail=data),
        "bad_truncated": st_bytes(two)[:-3],
        "bad_trailing": st_bytes(two) + b"xx",
        "bad_dtype_f8": st_bytes([("f8", "F8_E4M3", [2])]),
        "bad_dtype_unknown": raw_st('{"q":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}',
                                    b"\0"),
        "bad_9_dims": st_bytes([("d9", "U8", [1] * 9)]),
        "bad_metadata_value": st_bytes(two, {"n": 1}),
        "bad_duplicate": raw_st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"\0\0"),
        "bad_negative_offset": raw_st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}'),
        "bad_huge_dims": raw_st('{"a":{"dtype":"U64","shape":[4294967296,4294967296],'
                                '"data_offsets":[0,0]}}'),
        "bad_header_past_eof": struct.pack("<Q", 1000) + b"{}",
        "bad_not_object": raw_st("[]"),
        "bad_no_brace": raw_st(' {"a":1}'),
        "bad_short": b"\x02\0\0\0",
    })
    return s


def write_hf(d, layers, hidden, dtype):
    os.makedirs(d)
    t = [("model.embed_tokens.weight", dtype, [8, hidden])]
    for i in range(layers):
        p = "model.layers.%d." % i
        t += [(p + "self_attn.q_proj.weight", dtype, [hidden, hidden]),
              (p + "mlp.down_proj.weight", dtype, [hidden, hidden]),
              (p + "input_layernorm.weight", dtype, [hidden])]
    t += [("model.norm.weight", dtype, [hidden]), ("lm_head.weight", dtype, [8, hidden])]
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(st_bytes(t, {"format": "pt"}))
    cfg = {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers,
           "num_attention_heads": 1, "vocab_size": 8, "rms_norm_eps": 1e-5,
           "torch_dtype": "bfloat16", "rope_scaling": None, "eos_token_id": [1, 2]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write('{"version":"1.0"}')


def convert(thaw, tmp, tag, layers, hidden, dtype, args):
    hf, out = os.path.join(tmp, "hf-" + tag), os.path.join(tmp, "ckpt-" + tag)
    write_hf(hf, layers, hidden, dtype)
    subprocess.run([thaw, "convert", hf, out, "--quiet"] + args, check=True)
    with open(os.path.join(out, "manifest.json"), "rb") as f:
        return f.read()


def manifest_seeds(thaw):
    tmp = tempfile.mkdtemp(prefix="thaw-fuzz-")
    try:
        s = {
            "valid_one_part": convert(thaw, tmp, "a", 1, 4, "BF16", []),
            "valid_two_parts": convert(thaw, tmp, "b", 2, 4, "F32",
                                       ["--partitions", "2", "--dtype", "bf16"]),
            "valid_small_chunks": convert(thaw, tmp, "c", 2, 32, "F32",
                                          ["--chunk", "4096"]),
        }
    finally:
        shutil.rmtree(tmp)
    base = json.loads(s["valid_two_parts"])

    def edit(fn):
        m = json.loads(json.dumps(base))
        fn(m)
        return json.dumps(m, indent=1).encode()

    first = sorted(base["tensors"])[0]
    second = sorted(base["tensors"])[1]

    def t(name, key, v):
        return lambda m: m["tensors"][name].__setitem__(key, v)

    def overlap(m):
        m["tensors"][second]["partition"] = m["tensors"][first]["partition"]
        m["tensors"][second]["offset"] = m["tensors"][first]["offset"]

    s.update({
        "bad_misaligned": edit(t(first, "offset", 100)),
        "bad_past_end": edit(t(first, "offset", 1 << 40)),
        "bad_partition_index": edit(t(first, "partition", 7)),
        "bad_bytes_mismatch": edit(t(first, "bytes", 3)),
        "bad_dtype": edit(t(first, "dtype", "F8_E5M2")),
        "bad_overlap": edit(overlap),
        "bad_version": edit(lambda m: m.__setitem__("version", 2)),
        "bad_format": edit(lambda m: m.__setitem__("format", "other")),
        "bad_chunk_bytes": edit(lambda m: m.__setitem__("chunk_bytes", 4097)),
        "bad_chunk_count": edit(lambda m: m["partitions"][0]["chunks"].append("0" * 16)),
        "bad_checksum_hex": edit(lambda m: m["partitions"][0]["chunks"].__setitem__(0, "zz")),
        "bad_part_file": edit(lambda m: m["partitions"][0].__setitem__("file", "../x")),
        "bad_part_dup": edit(lambda m: m["partitions"][1].__setitem__(
            "file", m["partitions"][0]["file"])),
        "bad_part_bytes": edit(lambda m: m["partitions"][0].__setitem__("bytes", 4095)),
        "bad_files": edit(lambda m: m.__setitem__("files", ["ok.json", ".hidden"])),
        "bad_files_type": edit(lambda m: m.__setitem__("files", "config.json")),
        "bad_no_partitions": edit(lambda m: m.__setitem__("partitions", [])),
        "bad_truncated": s["valid_two_parts"][: len(s["valid_two_parts"]) // 2],
    })
    return s


def write_dir(name, seeds):
    d = os.path.join(HERE, "corpus", name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for k, v in sorted(seeds.items()):
        if len(v) >= MAX_SEED:
            sys.exit("seed %s/%s is %d bytes (limit %d)" % (name, k, len(v), MAX_SEED))
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)
    print("%s: %d seeds" % (d, len(seeds)))


def main():
    thaw = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "bin", "thaw")
    write_dir("safetensors", safetensors_seeds())
    write_dir("manifest", manifest_seeds(os.path.abspath(thaw)))


if __name__ == "__main__":
    main()
