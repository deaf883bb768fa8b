#!/usr/bin/env python3
"""thaw-runtime edge cases that the platform contracts imply but the other
files do not cover, SmolLM2 via THAW_MODEL unless noted:

  - UTF-8: results cut after 1..8 tokens of a reply in Chinese/emoji are
    valid UTF-8 JSON (no split code points), streamed deltas too; unicode in
    the request (B7's "❄ ☃ ❄")
  - a client that drops a stream frees its place: with THAW_MAX_SEQS=1
    THAW_QUEUE=0 the next request is served, not refused
  - two concurrent /init: exactly one 200, the other 403 (no THAW_MODEL)
  - /run with "stream": true is still one JSON reply with Content-Length
  - a 9 MiB body: 413 (or 200 {error}) with one sentinel per /run; an empty
    /run body is treated as {}; health/metrics replies have Content-Length
  - a deadline already past, or not a number: a prompt answer, no crash
  - OpenAI odd inputs (max_tokens 0 or beyond the context, prompt as a list,
    content as a list of parts, unknown fields) never give a 5xx
  - /metrics declares TYPE lines; /run requests are counted too
  - SIGTERM while THAW_MODEL is still loading: exits promptly

Exit: 0 pass, 1 fail, 77 skip (SmolLM2 unavailable).
"""
import json
import os
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep tests/runtime free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rt_harness import (Checks, RangeServer, Runtime, card, framing_problem, prom_sum,  # noqa: E402
                        require_runtime, smollm2, sse_events)

require_runtime()
CKPT = smollm2("bf16")
C = Checks("edge")
COUNT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
ZH = [{"role": "user", "content": "请用中文回答：❄ ☃ ❄ 你好吗？🙂"}]


def strict_json(r, what):
    try:
        return json.loads(r.body.decode("utf-8", "strict"))
    except (UnicodeDecodeError, ValueError) as e:
        C.check(False, f"{what}: body is not valid UTF-8 JSON ({e}): {r.body[:200]!r}")
        return None


def case_utf8(rt, model):
    for n in range(1, 9):
        r = rt.post("/v1/chat/completions", {"model": model, "messages": ZH, "max_tokens": n, "temperature": 0})
        j = strict_json(r, f"chat max_tokens {n}")
        C.check(r.status == 200 and j is not None, f"chat in Chinese, max_tokens {n}: {r!r}")
        r = rt.run({"messages": ZH, "max_tokens": n, "temperature": 0})
        j = strict_json(r, f"/run max_tokens {n}")
        C.check(r.status == 200 and isinstance(j, dict) and "message" in j, f"/run in Chinese, max_tokens {n}: {r!r}")
    # streamed deltas: each event is valid UTF-8 JSON on its own
    status, _, events = sse_events(rt.port, "/v1/chat/completions",
                                   {"model": model, "messages": ZH, "max_tokens": 24, "temperature": 0,
                                    "stream": True}, timeout=60)
    C.eq(status, 200, "Chinese stream status")
    for e in events[:-1]:
        try:
            json.loads(e)
        except ValueError as ex:
            C.check(False, f"stream event not valid JSON/UTF-8 ({ex}): {e[:100]!r}")
            break
    r = rt.run({"prompt": "❄ ☃ ❄", "max_tokens": 4, "delimiter": "❄"})
    C.check(r.status == 200 and strict_json(r, "unicode prompt") is not None, f"unicode prompt: {r!r}")


def case_drop_stream():
    env = {"THAW_MODEL": CKPT, "THAW_MAX_SEQS": 1, "THAW_QUEUE": 0, "THAW_DRAIN_S": 3}
    with Runtime(name="edge-drop", env=env, wait_ready=True, start_timeout=120) as rt:
        model = rt.model_id() or "x"
        s = socket.create_connection(("127.0.0.1", rt.port), timeout=30)
        body = json.dumps({"model": model, "prompt": COUNT, "max_tokens": 1500, "temperature": 0,
                           "stream": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data:") < 3:
            d = s.recv(4096)
            if not d:
                break
            got += d
        C.check(got.count(b"data:") >= 3, f"the stream did not start: {got[:300]!r}")
        # while it runs, the single place is taken
        r = rt.post("/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 2})
        C.eq(r.status, 429, "a second request while the only place is taken (MAX_SEQS=1, QUEUE=0)")
        s.close()
        t = time.monotonic()
        status = None
        while time.monotonic() - t < 10:
            r = rt.post("/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 2})
            status = r.status
            if status == 200:
                break
            time.sleep(0.2)
        if C.eq(status, 200, "after the client dropped its stream, its place is freed (within 10 s)"):
            print(f"  place freed {time.monotonic() - t:.1f}s after the client dropped the stream")
        # the same for a dropped non-streamed request
        s = socket.create_connection(("127.0.0.1", rt.port), timeout=30)
        body = json.dumps({"model": model, "prompt": COUNT, "max_tokens": 1500, "temperature": 0}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.5)
        s.close()
        t = time.monotonic()
        while time.monotonic() - t < 10:
            r = rt.post("/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 2})
            status = r.status
            if status == 200:
                break
            time.sleep(0.2)
        if C.eq(status, 200, "after a client dropped a non-streamed request (1500 tokens asked), its place is "
                             "freed within 10 s (is the request cancelled when its client goes?)"):
            print(f"  place freed {time.monotonic() - t:.1f}s after the client dropped a non-streamed request")
        C.check(rt.proc.poll() is None, "runtime died")


def case_concurrent_init():
    with Runtime(name="edge-init2") as rt:
        out = [None, None]
        b = threading.Barrier(2)

        def go(i):
            b.wait(10)
            out[i] = rt.init({"name": "a", "main": "main", "binary": False, "env": None,
                              "code": card("file://" + CKPT, name=f"smol-{i}")}, timeout=120)
        ths = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(2)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(130)
        codes = sorted(r.status for r in out if r is not None)
        C.eq(codes, [200, 403], f"two concurrent /init: statuses ({out})")
        r = rt.run({"prompt": "Hi", "max_tokens": 2})
        j = r.try_json() or {}
        C.check(r.status == 200 and j.get("model") in ("smol-0", "smol-1"), f"/run after concurrent inits: {r!r}")
        winner = [i for i in range(2) if out[i] is not None and out[i].status == 200]
        if winner and j.get("model"):
            C.eq(j["model"], f"smol-{winner[0]}", "the model is the one whose /init got 200")


def case_run_odd(rt):
    r = rt.run({"prompt": "Hi", "max_tokens": 4, "stream": True})
    C.check(framing_problem(r) is None, f"/run with stream true: framing {framing_problem(r)}")
    j = r.try_json()
    C.check(r.status == 200 and isinstance(j, dict) and "text" in j, f"/run with stream true: {r!r}")
    t = time.monotonic()
    r = rt.run({"prompt": COUNT, "max_tokens": 500, "temperature": 0},
               deadline=str(int(time.time() * 1000) - 5000))
    dt = time.monotonic() - t
    j = r.try_json()
    C.check(r.status == 200 and isinstance(j, dict) and dt < 2,
            f"deadline already past: want a prompt 200, got {r!r} after {dt:.1f}s")
    if isinstance(j, dict):
        C.check(j.get("finish_reason") == "deadline" or "error" in j,
                f"deadline already past: finish_reason {j.get('finish_reason')!r}")
    r = rt.run({"prompt": "Hi", "max_tokens": 2}, deadline="soon")
    C.check(r.status == 200 and isinstance(r.try_json(), dict), f"deadline \"soon\": {r!r}")
    r = rt.run({"prompt": "Hi", "max_tokens": 2}, deadline=None, namespace=None, activation_id=7)
    C.check(r.status == 200 and isinstance(r.try_json(), dict), f"metadata of odd types: {r!r}")
    C.check(rt.proc.poll() is None, "runtime died")


def case_big_body(rt, model):
    """A body over any sane limit (9 MiB): a 4xx (or 200 {error}) with
    Content-Length, still one sentinel per /run, and the runtime serves on."""
    before = rt.sentinels()
    big = "a" * (9 << 20)
    r = rt.run({"prompt": "hi", "pad": big}, timeout=60)
    C.check(framing_problem(r) is None, f"9 MiB /run: framing {framing_problem(r)}")
    C.check(r.status == 413 or (r.status == 200 and "error" in (r.try_json() or {})),
            f"9 MiB /run: want 413 or 200 {{error}}, got {r!r}")
    after = rt.wait_sentinels(before[0] + 1)
    C.eq((after[0] - before[0], after[1] - before[1]), (1, 1), "sentinels for the refused 9 MiB /run")
    r = rt.post("/v1/completions", {"model": model, "prompt": "hi", "pad": big}, timeout=60)
    C.check(r.status in (400, 413), f"9 MiB completion: want 400/413, got {r!r}")
    r = rt.run({"prompt": "hi", "max_tokens": 2})
    C.eq(r.status, 200, f"after 9 MiB bodies: {r!r}")
    r = rt.run(body="")
    j = r.try_json()
    C.check(r.status == 200 and isinstance(j, dict) and "error" in j,
            f"/run with an empty body (treated as {{}}): want 200 {{error}}, got {r!r}")
    for path in ("/healthz", "/readyz", "/metrics", "/v1/models"):
        r = rt.get(path)
        C.check(framing_problem(r) is None, f"GET {path}: framing {framing_problem(r)}")


def case_openai_odd(rt, model):
    odd = [
        ("max_tokens 0", "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 0}),
        ("max_tokens beyond the context", "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 100000}),
        ("prompt a list of one string", "/v1/completions", {"model": model, "prompt": ["hi"], "max_tokens": 2}),
        ("prompt a list of token ids", "/v1/completions", {"model": model, "prompt": [1, 2, 3], "max_tokens": 2}),
        ("content as parts", "/v1/chat/completions",
         {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        ("content null", "/v1/chat/completions",
         {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": None}]}),
        ("role unknown", "/v1/chat/completions",
         {"model": model, "max_tokens": 2, "messages": [{"role": "wizard", "content": "hi"}]}),
        ("unknown fields", "/v1/chat/completions",
         {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "user": "u1",
          "metadata": {"a": "b"}, "service_tier": "auto", "tools": None}),
        ("stop: 5 strings", "/v1/completions",
         {"model": model, "prompt": "hi", "max_tokens": 2, "stop": ["a", "b", "c", "d", "e"]}),
        ("model unknown", "/v1/completions", {"model": "no-such-model", "prompt": "hi", "max_tokens": 2}),
        ("no model field", "/v1/completions", {"prompt": "hi", "max_tokens": 2}),
        ("stream_options without stream", "/v1/completions",
         {"model": model, "prompt": "hi", "max_tokens": 2, "stream_options": {"include_usage": True}}),
    ]
    for what, path, body in odd:
        r = rt.post(path, body)
        C.check(r.status in (200, 400, 404, 422) and framing_problem(r) is None,
                f"{what}: want 200 or 4xx with Content-Length, got {r!r}")
        if r.status == 200:
            j = r.try_json() or {}
            ch = (j.get("choices") or [{}])[0]
            if what == "max_tokens beyond the context":
                C.check(j.get("usage", {}).get("total_tokens", 0) <= 2048,
                        f"{what}: {j.get('usage')} exceeds the 2048-token context")
            C.check("message" in ch or "text" in ch, f"{what}: 200 without a choice: {r!r}")
        print(f"  {what}: {r.status}" + (f" {r.text()[:140]}" if r.status != 200 else ""))
    C.check(rt.proc.poll() is None, "runtime died")


def case_metrics_types(rt):
    r0, m0 = rt.metrics()
    for name, typ in (("thaw_runtime_requests_total", "counter"), ("thaw_runtime_cold_starts_total", "counter"),
                      ("thaw_runtime_ttft_seconds", "histogram"), ("thaw_runtime_tokens_total", "counter")):
        C.check(f"# TYPE {name} {typ}" in r0.text(), f"/metrics lacks '# TYPE {name} {typ}'")
    rt.run({"prompt": "Hi", "max_tokens": 2})
    rt.run("A")  # 404
    _, m1 = rt.metrics()
    grow = (prom_sum(m1, "thaw_runtime_requests_total") or 0) - (prom_sum(m0, "thaw_runtime_requests_total") or 0)
    C.check(grow >= 2, f"requests_total grew by {grow} after 2 /run")
    apis = sorted({dict(ls).get("api") for n, ls in m1 if n == "thaw_runtime_requests_total"})
    print(f"  requests_total api labels: {apis}")


def case_sigterm_while_loading():
    with RangeServer(CKPT, delay=1.0) as srv:
        with Runtime(name="edge-termload", env={"THAW_MODEL": srv.url, "THAW_DRAIN_S": 5}) as rt:
            time.sleep(0.5)
            C.eq(rt.get("/readyz").status, 503, "/readyz while loading (store slowed to 1 s a request)")
            t = time.monotonic()
            rt.proc.send_signal(signal.SIGTERM)
            try:
                rc = rt.proc.wait(15)
            except Exception:
                rc = None
            dt = time.monotonic() - t
            C.check(rc is not None and dt <= 5 + 3, f"SIGTERM while loading: still running after {dt:.1f}s")
            print(f"  SIGTERM while loading: exit {rc} after {dt:.1f}s")


def main():
    C.case("two concurrent /init", case_concurrent_init)
    C.case("dropped clients free their place", case_drop_stream)
    C.case("SIGTERM while loading", case_sigterm_while_loading)
    try:
        rt = Runtime(name="edge", env={"THAW_MODEL": CKPT}, wait_ready=True, start_timeout=120).start()
    except Exception as e:
        C.check(False, f"start with THAW_MODEL: {e}")
        C.finish()
    try:
        model = rt.model_id() or "x"
        C.case("UTF-8", case_utf8, rt, model)
        C.case("odd /run", case_run_odd, rt)
        C.case("odd OpenAI requests", case_openai_odd, rt, model)
        C.case("big bodies, empty body", case_big_body, rt, model)
        C.case("metrics types", case_metrics_types, rt)
    finally:
        rt.cleanup()
    C.finish()


main()
