#!/usr/bin/env python3
"""Runtime benchmark driver (bench/runtime.sh): what thaw-runtime adds over
the engine and the loader, measured in one run on the same checkpoint.

  1. warm TTFT: client-side time to the first streamed token (OpenAI API,
     loopback) versus the engine's own time to first token for the same
     prompt ids (`thaw generate --ids ... --max-tokens 1`); target overhead
     <= 2 ms (medians).
  2. cold start: a fresh thaw-runtime process, POST /init (model card) then a
     streamed request, until its first token, versus the loader's benchmark
     time (`thaw bench load`) plus the engine's prefill; target <= 1.1x.
  3. throughput under concurrent load: C clients, completion tokens/s.

    runtime_bench.py --bin build/bin --ckpt DIR [--reps 7] [--clients 8]
Prints a markdown report on stdout.
"""
import argparse
import http.client
import json
import os
import re
import socket
import statistics as st
import subprocess
import sys
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Runtime:
    def __init__(self, bin_dir, env=None):
        self.port = free_port()
        e = dict(os.environ, PORT=str(self.port), THAW_LOG="warn")
        e.update(env or {})
        self.p = subprocess.Popen([os.path.join(bin_dir, "thaw-runtime")], env=e,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("thaw-runtime did not start")

    def post(self, path, body, timeout=300):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")

    def stream_ttft(self, body):
        """Seconds from sending the request to the first content chunk."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        data = json.dumps(dict(body, stream=True))
        t0 = time.perf_counter()
        c.request("POST", "/v1/completions", data, {"Content-Type": "application/json"})
        r = c.getresponse()
        first = None
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ch = json.loads(line[6:])
            if ch["choices"] and ch["choices"][0].get("text"):
                if first is None:
                    first = time.perf_counter() - t0
        return first

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def engine_ttft(bin_dir, ckpt, ids):
    out = subprocess.run([os.path.join(bin_dir, "thaw"), "generate", ckpt, "--ids", ",".join(map(str, ids)),
                          "--max-tokens", "1", "--temperature", "0", "--json"],
                         capture_output=True, text=True, check=True)
    m = re.search(r"prompt \d+ tokens in ([0-9.]+) s", out.stderr)
    return float(m.group(1))


NOTES = """
## Notes (hand-written in bench/py/runtime_bench.py; they explain the history of the cold ratio)

- **Method change (2026-11-23, third round).** Each cold run and each reference load is now
  preceded by one buffered read of the checkpoint. Before, the reference `thaw bench load`
  usually found the files not resident (this VM's proactive reclaim, DAMON, evicts idle file
  pages, and the loader reads non-resident files with O_DIRECT, which never fills the cache),
  so it read the disk, whose speed varies 4x here; that made the reference slow and noisy and hid the
  runtime's own overheads. The earlier 1.21x was measured that way. Measured the new way
  before the change below, the ratio was **1.99x** (cold 227 ms against 28 + 86 ms).
- **Tokenizer fast path.** `tokenizer.json`'s `model.vocab` and `model.merges` (95% of the
  file) are now read by a strict scanner straight into the tokenizer's tables
  (`engine/tok_json.c`), and jansson parses only the rest; anything unusual falls back to
  jansson for the whole file, and `tests/fuzz/fuzz_tok_json.c` checks that both ways agree.
  SmolLM2's tokenizer loads in ~12 ms instead of ~55 ms on its own; inside the runtime, where
  it shares the 2 cores with the loader's copy threads, the wait for it after the weights
  fell from ~118 ms to ~7 ms (median of 7).
- **What is left** (medians of 7 instrumented cold starts): the runtime's load is ~8 ms
  slower than the loader alone (the tokenizer thread takes CPU from the copy threads on
  2 cores), ~7 ms waiting for the tokenizer, and the first request takes ~10 ms longer than
  a warm one (first touch of the engine's buffers and worker threads). The best cold runs
  are 127-140 ms (1.2-1.3x); the median is pulled up by runs of 300-540 ms, about 4 in 11.
  In those the runtime's load itself is slow: the loader reports the buffered page-cache
  path ("dram", files resident) at 1.4-2.6 GB/s instead of 6-7 GB/s. The reference
  `thaw bench load`, run the same way, shows it too, in 1 to 5 runs of 11 depending on the
  run, so it looks like this shared VM's memory and disk noise rather than the runtime; the
  cause is not pinned down (not the tokenizer thread: its wait is still ~7 ms in those runs).
"""


def warm_cache(ckpt):
    """Read every file of the checkpoint once, buffered, so that it sits in the
    page cache, as it does for a container restarted on the same host. (The
    loader's O_DIRECT reads of non-resident files never fill the cache, and this
    VM's proactive reclaim, DAMON, evicts idle file pages; without this the loads
    of both sides would usually read the disk, whose speed here varies 4x.)"""
    for name in sorted(os.listdir(ckpt)):
        with open(os.path.join(ckpt, name), "rb") as f:
            while f.read(1 << 24):
                pass


def load_time(bin_dir, ckpt):
    out = subprocess.run([os.path.join(bin_dir, "thaw"), "bench", "load", ckpt, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    ckpt = os.path.abspath(a.ckpt)
    card = {"value": {"code": json.dumps({"model": ckpt, "name": "m", "defaults": {"temperature": 0}})}}
    prompt = ("Once upon a time, in a small fishing village by the sea, there lived an old lighthouse keeper "
              "named Tom. Every night he climbed the stairs and")

    # Warm TTFT: one runtime, the prompt's ids from the runtime's own usage.
    rt = Runtime(a.bin)
    rt.post("/init", card)
    _, r = rt.post("/v1/completions", {"model": "m", "prompt": prompt, "max_tokens": 1})
    n_prompt = r["usage"]["prompt_tokens"]
    tok = subprocess.run([os.path.join(a.bin, "thaw"), "tokenize", ckpt, prompt], capture_output=True,
                         text=True, check=True)
    ids = json.loads(tok.stdout)
    assert len(ids) == n_prompt, (len(ids), n_prompt)
    client, engine = [], []
    for _ in range(a.reps):
        client.append(rt.stream_ttft({"model": "m", "prompt": prompt, "max_tokens": 2}))
        engine.append(engine_ttft(a.bin, ckpt, ids))
    # Throughput: C clients x 4 requests of 32 tokens.
    done = []

    def worker(i):
        for k in range(4):
            _, r = rt.post("/v1/completions", {"model": "m", "prompt": f"Story {i}-{k}: once upon a time",
                                               "max_tokens": 32, "temperature": 0.8, "seed": i * 10 + k})
            done.append(r["usage"]["completion_tokens"])
    ths = [threading.Thread(target=worker, args=(i,)) for i in range(a.clients)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    tput = sum(done) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(4):
        rt.post("/v1/completions", {"model": "m", "prompt": "Story: once upon a time", "max_tokens": 32,
                                    "temperature": 0.8, "seed": k})
    tput1 = 4 * 32 / (time.perf_counter() - t0)
    rt.stop()

    # Cold start: fresh process, /init + first streamed token, vs load + prefill.
    cold, loads = [], []
    for _ in range(a.reps):
        rt = Runtime(a.bin)
        warm_cache(ckpt)
        t0 = time.perf_counter()
        st_, _ = rt.post("/init", card)
        assert st_ == 200
        first = rt.stream_ttft({"model": "m", "prompt": prompt, "max_tokens": 2})
        cold.append(None if first is None else time.perf_counter() - t0)
        rt.stop()
        warm_cache(ckpt)
        loads.append(load_time(a.bin, ckpt))
    med = st.median
    if None in client:
        sys.exit("a streamed request produced no text; choose another prompt")
    c_ttft, e_ttft = med(client), med(engine)
    cold_m, load_m = med([c for c in cold if c]), med(loads)
    print("# Runtime benchmark (thaw-runtime over the engine and the loader)\n")
    print(f"Checkpoint: {os.path.basename(ckpt)} (page cache warm, as a restarted container on the same host "
          f"finds it: each cold run and each reference load is preceded by one buffered read of the files, "
          f"because the loader's O_DIRECT reads never fill the page cache and this VM's proactive "
          f"reclaim (DAMON) evicts idle file pages); prompt of {n_prompt} tokens; "
          f"{os.cpu_count()} cores, shared; medians of {a.reps} interleaved runs. Reproduce: `bench/runtime.sh`.\n")
    print("| measure | thaw-runtime | reference | result | target |\n|---|---|---|---|---|")
    print(f"| warm TTFT (OpenAI, streamed, loopback) | {c_ttft*1e3:.1f} ms | engine alone {e_ttft*1e3:.1f} ms "
          f"| overhead **{(c_ttft-e_ttft)*1e3:+.1f} ms** | ≤ 2 ms |")
    print(f"| cold start, /init → first token | {cold_m*1e3:.0f} ms | load {load_m*1e3:.0f} ms + prefill "
          f"{e_ttft*1e3:.0f} ms = {(load_m+e_ttft)*1e3:.0f} ms | **{cold_m/(load_m+e_ttft):.2f}×** | ≤ 1.1× |")
    print(f"| throughput, {a.clients} clients × 4 × 32 tokens | {tput:.1f} tok/s | 1 client {tput1:.1f} tok/s | "
          f"**{tput/tput1:.2f}×** | reported |")
    print("\nPer run: client TTFT " + ", ".join(f"{x*1e3:.1f}" for x in client) + " ms; engine TTFT " +
          ", ".join(f"{x*1e3:.1f}" for x in engine) + " ms; cold " + ", ".join(f"{x*1e3:.0f}" for x in cold if x) +
          " ms; load " + ", ".join(f"{x*1e3:.0f}" for x in loads) + " ms.")
    print(NOTES)


if __name__ == "__main__":
    main()
