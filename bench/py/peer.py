#!/usr/bin/env python3
"""One cold load by a Python peer of Thaw, for bench/load.sh.

    peer.py [--prewarm BYTES] safetensors HF_DIR   safetensors.numpy.load_file on every shard
    peer.py [--prewarm BYTES] torch FILE.pt        torch.load(FILE, map_location="cpu")

After the imports, BYTES of memory are touched and freed (prewarm.py; not
timed), then the files are evicted from the page cache (evict.py) and their
residency is checked. The library is imported before the clock starts; the
timed region is the load plus touching one byte per 4 KiB page of every
tensor (so the data is really in memory, whatever the library does lazily).
Prints one JSON line: method, bytes, seconds, gbps, resident_before.
"""
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evict  # noqa: E402
import prewarm  # noqa: E402

TOUCH = 4096


def touch_np(a):
    u8 = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return int(u8[::TOUCH].sum()) if u8.size else 0


def shards_of(hf_dir):
    idx = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        return [os.path.join(hf_dir, s) for s in sorted(set(wm.values()))]
    return [os.path.join(hf_dir, "model.safetensors")]


def main(argv):
    pre = 0
    if len(argv) >= 2 and argv[0] == "--prewarm":
        pre = int(float(argv[1]))
        argv = argv[2:]
    if len(argv) != 2 or argv[0] not in ("safetensors", "torch"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, path = argv
    if kind == "safetensors":
        import safetensors
        from safetensors.numpy import load_file
        version = "safetensors " + safetensors.__version__
        files = shards_of(path)
    else:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        version = "torch " + torch.__version__
        files = [path]

    pre_s = prewarm.prewarm(pre) if pre > 0 else 0.0
    evict.evict(files)
    res, total = evict.resident(files)

    t0 = time.perf_counter()
    nbytes = 0
    chk = 0
    if kind == "safetensors":
        sd = {}
        for fn in files:  # all shards stay in memory, as for a model
            sd.update(load_file(fn))
        for a in sd.values():
            nbytes += a.nbytes
            chk += touch_np(a)
    else:
        sd = torch.load(path, map_location="cpu")
        for t in sd.values():
            nbytes += t.numel() * t.element_size()
            chk += touch_np(t.numpy())
    sec = time.perf_counter() - t0

    print(json.dumps({"method": kind, "bytes": nbytes, "file_bytes": total,
                      "seconds": sec, "gbps": nbytes / sec / 1e9,
                      "resident_before": res, "checksum": chk,
                      "prewarm_bytes": pre, "prewarm_s": pre_s,
                      "version": version + ", numpy " + np.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
