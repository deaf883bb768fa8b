#!/usr/bin/env python3
"""Merge bench/gpu/run.sh's results (one JSON per step in RESULTS_DIR) into
one object, with the issue-4 comparisons derived where their inputs exist:
load GB/s of Thaw (cold, warm) against the disk, pinned cudaMemcpy and the
safetensors / torch.load peers; decode tok/s against the HBM bound and
transformers; process start to first token against transformers.

    summary.py RESULTS_DIR  > summary.json
"""
import glob
import json
import os
import statistics
import sys


def main():
    d = sys.argv[1]
    res = {}
    for p in sorted(glob.glob(os.path.join(d, "*.json"))):
        try:
            res[os.path.basename(p)[:-5]] = json.load(open(p))
        except ValueError as e:
            res[os.path.basename(p)[:-5]] = {"unreadable": str(e)}

    def get(name, key):
        v = res.get(name)
        return v.get(key) if isinstance(v, dict) else None

    def med(prefix, key):
        xs = [v.get(key) for k, v in res.items() if k.startswith(prefix) and isinstance(v, dict)
              and isinstance(v.get(key), (int, float))]
        return round(statistics.median(xs), 3) if xs else None

    der = {}
    der["disk_read_gbps"] = get("disk_read", "gbps")
    der["h2d_pinned_gbps"] = get("copy_bw", "h2d_pinned_gbps")
    der["h2d_pageable_gbps"] = get("copy_bw", "h2d_pageable_gbps")
    der["hbm_copy_gbps"] = get("copy_bw", "hbm_copy_gbps")
    der["thaw_load_gpu_cold_gbps"] = get("thaw_load_gpu_cold", "gbps")
    der["thaw_load_gpu_warm_gbps"] = get("thaw_load_gpu_warm", "gbps")
    der["thaw_load_gpu_cold_s"] = get("thaw_load_gpu_cold", "seconds")
    der["thaw_load_gpu_warm_s"] = get("thaw_load_gpu_warm", "seconds")
    der["safetensors_cuda_cold_gbps"] = med("st_load_cold", "gbps")
    der["safetensors_cuda_warm_gbps"] = med("st_load_warm", "gbps")
    der["torch_load_cuda_cold_gbps"] = get("torch_load_cold", "gbps")
    der["torch_load_cuda_warm_gbps"] = get("torch_load_warm", "gbps")
    if der["thaw_load_gpu_cold_gbps"] and der["disk_read_gbps"]:
        der["thaw_cold_vs_disk"] = round(der["thaw_load_gpu_cold_gbps"] / der["disk_read_gbps"], 3)
    if der["thaw_load_gpu_warm_gbps"] and der["h2d_pinned_gbps"]:
        der["thaw_warm_vs_pinned_memcpy"] = round(
            der["thaw_load_gpu_warm_gbps"] / der["h2d_pinned_gbps"], 3)
    if der["thaw_load_gpu_cold_gbps"] and der["safetensors_cuda_cold_gbps"]:
        der["thaw_vs_safetensors_cold"] = round(
            der["thaw_load_gpu_cold_gbps"] / der["safetensors_cuda_cold_gbps"], 2)
    wb = get("thaw_decode", "weight_bytes")
    hbm = der["hbm_copy_gbps"]
    for tag in ("thaw_decode", "thaw_decode_fast_act"):
        d1, dn = get(tag, "decode1_tps"), get(tag, "decodeN_tps")
        der[tag + "_1_tps"] = d1
        der[tag + "_N_tps"] = dn
        if wb and hbm and d1:
            bound = hbm * 1e9 / wb
            der["decode_hbm_bound_tps"] = round(bound, 1)
            der[tag + "_1_vs_bound"] = round(d1 / bound, 3)
    der["decode_batch"] = get("thaw_decode", "batch")
    der["hf_decode_1_tps"] = get("hf_decode", "decode1_tps")
    der["hf_decode_N_tps"] = get("hf_decode", "decodeN_tps")
    if der.get("thaw_decode_1_tps") and der["hf_decode_1_tps"]:
        der["thaw_vs_hf_decode_1"] = round(der["thaw_decode_1_tps"] / der["hf_decode_1_tps"], 2)
    if der.get("thaw_decode_N_tps") and der["hf_decode_N_tps"]:
        der["thaw_vs_hf_decode_N"] = round(der["thaw_decode_N_tps"] / der["hf_decode_N_tps"], 2)
    der["thaw_first_token_warm_s"] = med("thaw_ttft_warm", "seconds")
    der["hf_first_token_warm_s"] = med("hf_ttft_warm", "first_token_s")
    der["thaw_first_token_cold_s"] = get("thaw_ttft_cold", "seconds")
    der["hf_first_token_cold_s"] = get("hf_ttft_cold", "first_token_s")
    if der["thaw_first_token_warm_s"] and der["hf_first_token_warm_s"]:
        der["hf_over_thaw_first_token_warm"] = round(
            der["hf_first_token_warm_s"] / der["thaw_first_token_warm_s"], 2)
    der["thaw_load_host_warm_gbps"] = get("thaw_load_host_warm", "gbps")
    der["build_mode"] = get("build", "mode")
    der = {k: v for k, v in der.items() if v is not None}
    # Steps that failed (rc != 0; 77 = skipped, listed apart) or wrote no JSON.
    failed, skipped = [], []
    for k, v in sorted(res.items()):
        if not isinstance(v, dict):
            continue
        rc = v.get("rc", v.get("build_rc", v.get("configure_rc", 0)))
        if "unreadable" in v or rc not in (0, 77) or (rc == 0 and "error" in v):
            failed.append(k)
        elif rc == 77:
            skipped.append(k)
    der["failed_steps"] = failed
    der["skipped_steps"] = skipped
    print(json.dumps({"derived": der, "steps": res}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
