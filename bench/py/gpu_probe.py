#!/usr/bin/env python3
"""GPU-side probes and peers for bench/gpu/run.sh (PyTorch). Each prints one
JSON line.

    gpu_probe.py copy                 pinned / pageable host->device and device->device
                                      (HBM) bandwidth, median of 5 x 1 GiB (D2D 4 GiB)
    gpu_probe.py drop FILE...         evict the files from the page cache
                                      (posix_fadvise DONTNEED; no root needed)
    gpu_probe.py st_load FILE [--cold]     safetensors.torch.load_file(FILE, device="cuda")
    gpu_probe.py torch_load FILE [--cold]  torch.load(FILE) then .cuda() on every tensor
    gpu_probe.py make_pt ST_FILE OUT.pt    the same tensors as a torch.save file (the
                                           torch.load peer's input)
    gpu_probe.py disk FILE...         sequential O_DIRECT read of the files: fio (libaio, 16 MiB,
                                      QD 32) when installed, else dd iflag=direct bs=16M
    gpu_probe.py time -- CMD...       wall time of CMD from just before exec to its exit

Timings end with torch.cuda.synchronize(); bytes are the tensors' sizes.
"""
import json
import os
import statistics
import sys
import time

import torch


def drop(paths):
    n = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            try:
                os.fsync(fd)  # dirty pages are not dropped
            except OSError:
                pass
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return n


def copy_bw():
    dev = torch.device("cuda")
    n = 1 << 30
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "cuda": torch.version.cuda}
    d = torch.empty(n, dtype=torch.uint8, device=dev)
    for name, pin in (("h2d_pinned_gbps", True), ("h2d_pageable_gbps", False)):
        h = torch.empty(n, dtype=torch.uint8, pin_memory=pin)
        h.fill_(1)
        d.copy_(h, non_blocking=pin)
        torch.cuda.synchronize()
        r = []
        for _ in range(5):
            t0 = time.perf_counter()
            d.copy_(h, non_blocking=pin)
            torch.cuda.synchronize()
            r.append(n / (time.perf_counter() - t0) / 1e9)
        out[name] = round(statistics.median(r), 2)
        del h
    h = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    r = []
    for _ in range(5):
        t0 = time.perf_counter()
        h.copy_(d, non_blocking=True)
        torch.cuda.synchronize()
        r.append(n / (time.perf_counter() - t0) / 1e9)
    out["d2h_pinned_gbps"] = round(statistics.median(r), 2)
    del h, d
    big = 4 << 30
    a = torch.empty(big, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    a.fill_(3)
    b.copy_(a)
    torch.cuda.synchronize()
    r = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        torch.cuda.synchronize()
        r.append(2 * big / (s.elapsed_time(e) / 1e3) / 1e9)  # read + write
    out["hbm_copy_gbps"] = round(statistics.median(r), 1)
    out["hbm_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return out


def st_load(path, cold):
    from safetensors.torch import load_file
    if cold:
        drop([path])
    torch.cuda.init()
    torch.empty(1, device="cuda")
    t0 = time.perf_counter()
    sd = load_file(path, device="cuda")
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    nb = sum(v.numel() * v.element_size() for v in sd.values())
    return {"peer": "safetensors.torch.load_file(device=cuda)", "cold": cold, "bytes": nb,
            "seconds": round(dt, 3), "gbps": round(nb / dt / 1e9, 2)}


def torch_load(path, cold):
    if cold:
        drop([path])
    torch.empty(1, device="cuda")
    t0 = time.perf_counter()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    t1 = time.perf_counter()
    sd = {k: v.cuda() for k, v in sd.items()}
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    nb = sum(v.numel() * v.element_size() for v in sd.values())
    return {"peer": "torch.load + .cuda()", "cold": cold, "bytes": nb, "seconds": round(dt, 3),
            "read_s": round(t1 - t0, 3), "gbps": round(nb / dt / 1e9, 2)}


def make_pt(st, out):
    from safetensors.torch import load_file
    t0 = time.perf_counter()
    torch.save(load_file(st), out)
    return {"made": out, "bytes": os.path.getsize(out), "seconds": round(time.perf_counter() - t0, 1)}


def disk(paths):
    import shutil
    import subprocess
    nb = sum(os.path.getsize(p) for p in paths)
    drop(paths)
    if shutil.which("fio"):
        p = subprocess.run(["fio", "--name=seqread", "--readonly", "--rw=read", "--bs=16M",
                            "--direct=1", "--ioengine=libaio", "--iodepth=32",
                            "--filename=" + ":".join(paths), "--output-format=json"],
                           capture_output=True, text=True)
        if p.returncode == 0:
            j = json.loads(p.stdout)["jobs"][0]["read"]
            return {"tool": "fio libaio bs=16M qd=32 O_DIRECT", "bytes": j["io_bytes"],
                    "gbps": round(j["bw_bytes"] / 1e9, 2)}
    t0 = time.perf_counter()
    for f in paths:
        subprocess.run(["dd", "if=" + f, "of=/dev/null", "bs=16M", "iflag=direct"], check=True,
                       capture_output=True)
    dt = time.perf_counter() - t0
    return {"tool": "dd iflag=direct bs=16M", "bytes": nb, "seconds": round(dt, 3),
            "gbps": round(nb / dt / 1e9, 2)}


def time_cmd(cmd):
    import subprocess
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(p.returncode)
    return {"cmd": " ".join(cmd[:3]), "seconds": round(dt, 3),
            "stderr_tail": p.stderr.strip().splitlines()[-1:] if p.stderr.strip() else []}


def main():
    a = sys.argv[1:]
    if a and a[0] == "time":
        print(json.dumps(time_cmd(a[2:] if len(a) > 1 and a[1] == "--" else a[1:])))
        return 0
    if not a:
        print(__doc__)
        return 2
    cold = "--cold" in a
    a = [x for x in a if x != "--cold"]
    if a[0] == "copy":
        r = copy_bw()
    elif a[0] == "drop":
        r = {"dropped_bytes": drop(a[1:])}
    elif a[0] == "st_load":
        r = st_load(a[1], cold)
    elif a[0] == "torch_load":
        r = torch_load(a[1], cold)
    elif a[0] == "make_pt":
        r = make_pt(a[1], a[2])
    elif a[0] == "disk":
        r = disk(a[1:])
    else:
        print(__doc__)
        return 2
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
