#!/usr/bin/env python3
"""thaw-runtime's configuration from the environment (Knative runtime
contract: $PORT, readiness; DESIGN.md: THAW_MODEL, THAW_CACHE_DIR, ...):

  - PORT selects the port; --port N when PORT is unset; 8080 by default
    (checked only when 8080 is free)
  - THAW_MODEL=http://... through a slow Range-capable loopback store:
    /healthz 200 and /readyz 503 while loading, /readyz 200 after; the SSD
    cache (THAW_CACHE_DIR) is filled; the OpenWhisk side works without /init
    (first /run cold, then warm), /init without code -> 200
  - a second start with the same THAW_CACHE_DIR fetches no part file again
  - THAW_MODEL naming a missing checkpoint: never ready (or exits non-zero)
  - THAW_CTX limits the context; THAW_THREADS=1 serves
  - THAW_PG_URL pointing nowhere does not stop serving (the ledger is optional)

Exit: 0 pass, 1 fail, 77 skip (SmolLM2 unavailable).
"""
import os
import socket
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep tests/runtime free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rt_harness import Checks, RangeServer, Runtime, free_port, http, require_runtime, smollm2  # noqa: E402

require_runtime()
CKPT = smollm2("bf16")
C = Checks("knative_env")


def case_port_flag():
    with Runtime(name="kn-flag", use_port_flag=True) as rt:
        C.eq(rt.get("/healthz").status, 200, f"--port {rt.port}")
        C.check("PORT" not in rt.env, "harness: PORT leaked into the env")


def case_port_env():
    with Runtime(name="kn-port") as rt:  # the harness passes PORT
        C.eq(rt.get("/healthz").status, 200, f"PORT={rt.port}")


def case_default_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 8080))
    except OSError:
        C.note("port 8080 busy: default port not checked")
        return
    finally:
        s.close()
    rt = Runtime(name="kn-8080", port=8080, use_port_flag=False)
    rt.env.pop("PORT", None)
    with rt:
        C.eq(http(8080, "GET", "/healthz", timeout=5).status, 200, "default port 8080")


def case_remote_model():
    with RangeServer(CKPT, delay=0.4) as srv:
        rt = Runtime(name="kn-remote", env={"THAW_MODEL": srv.url}, start_timeout=120)
        with rt:
            r = rt.get("/readyz")
            C.check(r.status == 503 or rt.proc.poll() is not None,
                    f"/readyz while THAW_MODEL loads from a slow store: want 503, got {r!r} "
                    f"(does the server start listening only after the load?)")
            C.eq(rt.get("/healthz").status, 200, "/healthz while loading")
            t = time.monotonic()
            r = rt.post("/v1/completions", {"prompt": "hi", "max_tokens": 2}, timeout=120)
            during = r.try_json() or {}
            C.check(r.status == 503 or (r.status == 200 and during.get("thaw", {}).get("cold") is True),
                    f"completion sent while loading: want 503, or 200 (cold) once loaded, got {r!r}")
            print(f"  a completion sent while loading: {r.status} after {r.elapsed:.1f}s")
            rt.wait_readyz(120)
            print(f"  ready {time.monotonic() - t:.1f}s after /healthz; {len(srv.requests)} store requests")
            cold_taken = r.status == 200
            files = [os.path.join(d, f) for d, _, fs in os.walk(rt.cache_dir) for f in fs]
            size = sum(os.path.getsize(f) for f in files)
            C.check(size >= os.path.getsize(os.path.join(CKPT, "part-0.bin")),
                    f"THAW_CACHE_DIR holds {size} bytes in {len(files)} files after a remote load")
            r = rt.run({"prompt": "The capital of France is", "temperature": 0, "max_tokens": 4},
                       activation_id="kn-1")
            j = r.try_json() or {}
            C.check(r.status == 200 and "text" in j, f"/run without /init (THAW_MODEL): {r!r}")
            C.eq(j.get("thaw", {}).get("cold"), not cold_taken,
                 "first /run after the start-up load: thaw.cold (true only for the first request served)")
            print(f"  first /run thaw: tiers={j.get('thaw', {}).get('tiers')}")
            r = rt.run({"prompt": "The capital of France is", "temperature": 0, "max_tokens": 4})
            j = r.try_json() or {}
            C.eq(j.get("thaw", {}).get("cold"), False, "second /run: thaw.cold")
            r = rt.init({"main": "main", "binary": False, "env": None})
            C.eq(r.status, 200, f"/init without code with THAW_MODEL set: {r!r}")
            r = rt.run({"prompt": "Hi", "max_tokens": 2})
            C.eq(r.status, 200, f"/run after the code-less /init: {r!r}")
            C.eq(rt.wait_sentinels(3), (3, 3), "sentinels after 3 /run")


def case_warm_cache():
    """A second start with the same THAW_CACHE_DIR reads the cache: no part
    file is fetched from the store again."""
    cache = tempfile.mkdtemp(prefix="thaw-kn-cache-")
    try:
        with RangeServer(CKPT) as srv:
            tiers = []
            for i in range(2):
                n0 = len(srv.requests)
                with Runtime(name=f"kn-cache{i}", env={"THAW_MODEL": srv.url, "THAW_CACHE_DIR": cache},
                             wait_ready=True, start_timeout=120) as rt:
                    r = rt.run({"prompt": "Hi", "max_tokens": 2})
                    j = r.try_json() or {}
                    C.check(r.status == 200 and "text" in j, f"start {i}: /run {r!r}")
                    tiers.append(j.get("thaw", {}).get("tiers"))
                parts = [p for _, p, _ in srv.requests[n0:] if "part-" in p]
                if i == 0:
                    C.check(parts, "first start: no part file fetched from the store")
                else:
                    C.eq(parts, [], "second start with a warm THAW_CACHE_DIR: part files fetched again")
            print(f"  tiers: first start {tiers[0]}, second start {tiers[1]}")
            if isinstance(tiers[1], dict):
                C.check(not tiers[1].get("remote"), f"second start still reports remote bytes: {tiers[1]}")
    finally:
        import shutil
        shutil.rmtree(cache, ignore_errors=True)


def case_missing_model():
    missing = os.path.join(tempfile.gettempdir(), f"thaw-no-ckpt-{os.getpid()}")
    rt = Runtime(name="kn-missing", env={"THAW_MODEL": missing})
    try:
        try:
            rt.start()
        except RuntimeError:
            C.check(rt.proc.poll() not in (None, 0), f"missing THAW_MODEL: exited {rt.proc.returncode}")
            C.check(missing in rt.stderr(), "missing THAW_MODEL: stderr does not name the checkpoint")
            print(f"  missing THAW_MODEL: exited {rt.proc.returncode}")
            return
        end = time.monotonic() + 5
        while time.monotonic() < end and rt.proc.poll() is None:
            r = rt.get("/readyz")
            if not C.check(r.status == 503, f"missing THAW_MODEL: /readyz {r!r}"):
                break
            time.sleep(0.2)
        if rt.proc.poll() is None:
            r = rt.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
            C.eq(r.status, 503, "missing THAW_MODEL: a completion")
            print("  missing THAW_MODEL: stays up, not ready")
        else:
            C.check(rt.proc.returncode != 0, "missing THAW_MODEL: exited 0")
            print(f"  missing THAW_MODEL: exited {rt.proc.returncode}")
        C.check(missing in rt.stderr(), "missing THAW_MODEL: stderr does not name the checkpoint")
    finally:
        rt.cleanup()


def case_ctx_threads():
    env = {"THAW_MODEL": CKPT, "THAW_CTX": 64, "THAW_THREADS": 1}
    with Runtime(name="kn-ctx", env=env, wait_ready=True, start_timeout=120) as rt:
        model = rt.model_id() or "x"
        r = rt.post("/v1/completions", {"model": model, "prompt": "one two three four five six seven eight " * 10,
                                        "max_tokens": 4})
        C.eq(r.status, 400, f"THAW_CTX=64: a ~80-token prompt: {r!r}")
        r = rt.run({"prompt": "one two three four five six seven eight " * 10, "max_tokens": 4})
        j = r.try_json()
        C.check(r.status == 200 and isinstance(j, dict) and "error" in j,
                f"THAW_CTX=64, /run with a ~80-token prompt: want 200 {{error}}, got {r!r}")
        r = rt.post("/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 8})
        C.eq(r.status, 200, f"THAW_CTX=64 THAW_THREADS=1: a short completion: {r!r}")
        r = rt.post("/v1/completions", {"model": model, "prompt": "Once upon a time", "max_tokens": 200,
                                        "temperature": 0.8, "seed": 1})
        j = r.try_json() or {}
        if r.status == 200:
            u = j.get("usage", {})
            C.check(u.get("total_tokens", 0) <= 64,
                    f"THAW_CTX=64: prompt + completion = {u.get('total_tokens')} tokens")
        else:
            C.eq(r.status, 400, f"THAW_CTX=64, max_tokens 200: want 200 (truncated) or 400, got {r!r}")


def case_pg_unreachable():
    port = free_port()
    env = {"THAW_MODEL": CKPT, "THAW_PG_URL": f"postgresql://thaw@127.0.0.1:{port}/thaw?connect_timeout=1"}
    rt = Runtime(name="kn-pg", env=env, wait_ready=True, start_timeout=120)
    try:
        try:
            rt.start()
        except RuntimeError as e:
            C.note(f"THAW_PG_URL unreachable: the runtime does not serve: {str(e)[:300]}")
            C.check(False, "an unreachable THAW_PG_URL stopped the runtime (the ledger is optional)")
            return
        r = rt.run({"prompt": "Hi", "max_tokens": 2}, activation_id="pg-1", namespace="ns", action_name="a")
        C.eq(r.status, 200, f"/run with THAW_PG_URL unreachable: {r!r}")
        C.check(rt.proc.poll() is None, "runtime died")
    finally:
        rt.cleanup()


C.case("--port", case_port_flag)
C.case("PORT", case_port_env)
C.case("default port", case_default_port)
C.case("THAW_MODEL over http, readiness, cache", case_remote_model)
C.case("THAW_CACHE_DIR warm on the second start", case_warm_cache)
C.case("THAW_MODEL missing", case_missing_model)
C.case("THAW_CTX, THAW_THREADS", case_ctx_threads)
C.case("THAW_PG_URL unreachable", case_pg_unreachable)
C.finish()
