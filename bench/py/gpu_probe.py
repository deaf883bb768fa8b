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
torch is imported only by the modes that need it (drop, disk and time run
without it). st_load and torch_load take --device cpu to check this script on
a machine without a GPU (the numbers then mean nothing); the default is cuda.
"""
import json
import os
import statistics
import sys
import time

torch = None  # imported lazily: drop / disk / time must not pay for (or need) torch


def _torch():
    global torch
    if torch is None:
        import torch as t
        torch = t
    return torch


def _sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


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
    _torch()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_probe copy: torch.cuda.is_available() is False (no GPU, or a "
                         "CPU-only torch %s)" % torch.__version__)
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


def st_load(path, cold, dev="cuda"):
    _torch()
    from safetensors.torch import load_file
    if cold:
        drop([path])
    if dev == "cuda":
        torch.cuda.init()
    torch.empty(1, device=dev)  # CUDA context outside the timing
    t0 = time.perf_counter()
    sd = load_file(path, device=dev)
    _sync(dev)
    dt = time.perf_counter() - t0
    nb = sum(v.numel() * v.element_size() for v in sd.values())
    return {"peer": "safetensors.torch.load_file(device=%s)" % dev, "cold": cold, "bytes": nb,
            "seconds": round(dt, 3), "gbps": round(nb / dt / 1e9, 2)}


def torch_load(path, cold, dev="cuda"):
    _torch()
    if cold:
        drop([path])
    torch.empty(1, device=dev)
    t0 = time.perf_counter()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    t1 = time.perf_counter()
    sd = {k: v.to(dev) for k, v in sd.items()}
    _sync(dev)
    dt = time.perf_counter() - t0
    nb = sum(v.numel() * v.element_size() for v in sd.values())
    return {"peer": "torch.load + .to(%s)" % dev, "cold": cold, "bytes": nb,
            "seconds": round(dt, 3), "read_s": round(t1 - t0, 3), "gbps": round(nb / dt / 1e9, 2)}


def make_pt(st, out):
    _torch()
    from safetensors.torch import load_file
    t0 = time.perf_counter()
    torch.save(load_file(st), out + ".tmp")  # renamed when complete (run.sh tests existence)
    os.replace(out + ".tmp", out)
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
        fio_err = p.stderr.strip()[-300:]
        if p.returncode == 0:
            try:  # fio may print notes before its JSON
                j = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]["read"]
                return {"tool": "fio libaio bs=16M qd=32 O_DIRECT", "bytes": j["io_bytes"],
                        "gbps": round(j["bw_bytes"] / 1e9, 2)}
            except (ValueError, KeyError, IndexError) as e:
                fio_err = "unparsable fio output: %s" % e
        sys.stderr.write("fio failed (%s); falling back to dd\n" % fio_err)
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
        cmd = a[2:] if len(a) > 1 and a[1] == "--" else a[1:]
        if not cmd:
            sys.stderr.write("usage: gpu_probe.py time -- CMD...\n")
            return 2
        print(json.dumps(time_cmd(cmd)))
        return 0
    cold = "--cold" in a
    a = [x for x in a if x != "--cold"]
    dev = "cuda"
    if "--device" in a:
        i = a.index("--device")
        if i + 1 >= len(a) or a[i + 1] not in ("cpu", "cuda"):
            sys.stderr.write("gpu_probe.py: --device takes cpu or cuda\n")
            return 2
        dev = a[i + 1]
        del a[i:i + 2]
    need = {"copy": 1, "drop": 2, "st_load": 2, "torch_load": 2, "make_pt": 3, "disk": 2}
    if not a or a[0] not in need or len(a) < need[a[0]]:
        sys.stderr.write(__doc__)
        return 2
    if a[0] == "copy":
        r = copy_bw()
    elif a[0] == "drop":
        r = {"dropped_bytes": drop(a[1:])}
    elif a[0] == "st_load":
        r = st_load(a[1], cold, dev)
    elif a[0] == "torch_load":
        r = torch_load(a[1], cold, dev)
    elif a[0] == "make_pt":
        r = make_pt(a[1], a[2])
    else:
        r = disk(a[1:])
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
