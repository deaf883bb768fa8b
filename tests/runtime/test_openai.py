#!/usr/bin/env python3
"""thaw-runtime's OpenAI-compatible API (Knative mode: THAW_MODEL loaded at
start-up) driven by the official `openai` Python SDK, unchanged, plus raw
HTTP checks of what the SDK hides:

  - GET /v1/models; POST /v1/completions and /v1/chat/completions, plain and
    streamed (SSE, `data: [DONE]`, stream_options.include_usage), stop
    strings, seeds, penalties, max_tokens -> finish_reason "length"
  - "Paris" for the capital of France (temperature 0); streamed text equals
    the non-streamed text
  - errors in the OpenAI shape {"error": {"message","type","param","code"}}:
    400 for bad requests (the SDK raises BadRequestError), 404 unknown
    route, 503 when no model is loaded
  - /healthz, /readyz, /metrics (Prometheus text 0.0.4; counters increase)

Exit: 0 pass, 1 fail, 77 skip (SmolLM2 or the openai SDK unavailable).
"""
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # keep tests/runtime free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rt_harness import Checks, Runtime, framing_problem, http, prom_sum, require_runtime, skip, smollm2, sse_events  # noqa: E402,E501

try:
    import openai
except ImportError as e:
    skip(f"needs the openai SDK ({e}); run scripts/pyenv.sh")

require_runtime()
CKPT = smollm2("bf16")
C = Checks("openai")
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def client(rt):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{rt.port}/v1", api_key="unused",
                         max_retries=0, timeout=120)


def error_shape(r, status, what):
    j = r.try_json()
    ok = C.check(r.status == status, f"{what}: want {status}, got {r!r}")
    e = j.get("error") if isinstance(j, dict) else None
    ok = C.check(isinstance(e, dict) and all(k in e for k in ("message", "type", "param", "code"))
                 and isinstance(e.get("message"), str) and e["message"],
                 f"{what}: want {{\"error\": {{message, type, param, code}}}}, got {r.text()[:300]!r}") and ok
    return ok


def check_usage(u, what, max_tokens=None):
    if not C.check(u is not None, f"{what}: no usage"):
        return
    C.check(u.prompt_tokens > 0 and u.completion_tokens >= 1, f"{what}: usage {u}")
    C.eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, f"{what}: total_tokens")
    if max_tokens is not None:
        C.check(u.completion_tokens <= max_tokens, f"{what}: {u.completion_tokens} > max_tokens {max_tokens}")


def case_health(rt):
    C.eq(rt.get("/healthz").status, 200, "/healthz")
    C.eq(rt.get("/readyz").status, 200, "/readyz with THAW_MODEL loaded")


def case_models(rt, st):
    r = rt.get("/v1/models")
    j = r.try_json()
    ok = C.check(r.status == 200 and isinstance(j, dict) and j.get("object") == "list"
                 and isinstance(j.get("data"), list) and len(j["data"]) >= 1,
                 f"GET /v1/models: {r!r}")
    if ok:
        d = j["data"][0]
        C.check(isinstance(d.get("id"), str) and d["id"] and d.get("object") == "model",
                f"/v1/models data[0]: {d}")
    ms = client(rt).models.list()
    ids = [m.id for m in ms.data]
    C.check(len(ids) >= 1, f"SDK models.list(): {ids}")
    st["model"] = ids[0] if ids else "unknown"
    print(f"  model id: {st['model']!r}")


def case_chat(rt, st):
    c = client(rt)
    t = time.monotonic()
    resp = c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0, max_tokens=16)
    dt = time.monotonic() - t
    C.eq(resp.object, "chat.completion", "chat: object")
    C.check(isinstance(resp.id, str) and resp.id, f"chat: id {resp.id!r}")
    C.eq(len(resp.choices), 1, "chat: number of choices")
    ch = resp.choices[0]
    C.eq(ch.message.role, "assistant", "chat: role")
    C.check("Paris" in (ch.message.content or ""), f"chat: {ch.message.content!r} lacks 'Paris'")
    C.check(ch.finish_reason in ("stop", "length"), f"chat: finish_reason {ch.finish_reason!r}")
    check_usage(resp.usage, "chat", 16)
    C.eq(resp.model, st["model"], "chat: model")
    st["france"] = ch.message.content
    print(f"  chat: {ch.message.content!r} ({ch.finish_reason}, {dt:.2f}s)")

    # multi-turn with a system prompt
    resp = c.chat.completions.create(
        model=st["model"], temperature=0, max_tokens=12,
        messages=[{"role": "system", "content": "You are a terse assistant."},
                  {"role": "user", "content": "Name a color."},
                  {"role": "assistant", "content": "Blue."},
                  {"role": "user", "content": "What is the capital of France?"}])
    C.check(isinstance(resp.choices[0].message.content, str), "multi-turn chat: no content")

    # raw framing of a non-streamed reply
    r = rt.post("/v1/chat/completions", {"model": st["model"], "messages": FRANCE,
                                          "temperature": 0, "max_tokens": 16})
    C.eq(r.status, 200, f"raw chat: {r!r}")
    C.check(framing_problem(r) is None, f"raw chat: framing {framing_problem(r)}")
    C.check(r.headers.get("content-type", "").startswith("application/json"),
            f"raw chat: Content-Type {r.headers.get('content-type')!r}")
    j = r.try_json() or {}
    got = (j.get("choices") or [{}])[0].get("message", {}).get("content")
    C.eq(got, st["france"], "temperature 0: raw chat repeats the SDK answer")


def case_completions(rt, st):
    c = client(rt)
    resp = c.completions.create(model=st["model"], prompt="The capital of France is",
                                temperature=0, max_tokens=8)
    C.eq(resp.object, "text_completion", "completions: object")
    C.eq(len(resp.choices), 1, "completions: choices")
    C.check(isinstance(resp.choices[0].text, str) and resp.choices[0].text,
            f"completions: text {resp.choices[0].text!r}")
    C.check(resp.choices[0].finish_reason in ("stop", "length"),
            f"completions: finish_reason {resp.choices[0].finish_reason!r}")
    check_usage(resp.usage, "completions", 8)
    st["compl"] = resp.choices[0].text
    print(f"  completion: {resp.choices[0].text!r}")
    resp = c.completions.create(model=st["model"], prompt="Once upon a time", temperature=0, max_tokens=3)
    C.eq(resp.choices[0].finish_reason, "length", "max_tokens 3: finish_reason")
    C.eq(resp.usage.completion_tokens, 3, "max_tokens 3: completion_tokens")


def case_stream(rt, st):
    c = client(rt)
    parts, finish, n, roles = [], None, 0, []
    for chunk in c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0,
                                           max_tokens=16, stream=True):
        n += 1
        C.check(chunk.object == "chat.completion.chunk", f"stream chunk object {chunk.object!r}")
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        if d.role:
            roles.append(d.role)
        if d.content:
            parts.append(d.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    text = "".join(parts)
    C.check(finish in ("stop", "length"), f"chat stream: final finish_reason {finish!r}")
    C.eq(text, st.get("france"), "chat stream: concatenated deltas vs the non-streamed answer")
    C.check(not roles or set(roles) == {"assistant"}, f"chat stream roles {roles}")
    C.check(n >= 2, f"chat stream: only {n} chunks")

    usage, last_choices, cnt = None, None, 0
    for chunk in c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0, max_tokens=16,
                                           stream=True, stream_options={"include_usage": True}):
        cnt += 1
        if chunk.usage is not None:
            usage = chunk.usage
            last_choices = chunk.choices
    C.check(usage is not None, "stream_options.include_usage: no chunk carried usage")
    if usage is not None:
        check_usage(usage, "stream usage", 16)
        C.eq(last_choices, [], "stream_options.include_usage: the usage chunk's choices")

    parts, finish = [], None
    for chunk in c.completions.create(model=st["model"], prompt="The capital of France is", temperature=0,
                                      max_tokens=8, stream=True):
        if chunk.choices:
            parts.append(chunk.choices[0].text or "")
            finish = chunk.choices[0].finish_reason or finish
    C.eq("".join(parts), st.get("compl"), "completions stream vs non-streamed")
    C.check(finish in ("stop", "length"), f"completions stream: finish_reason {finish!r}")

    # raw SSE framing
    status, hdrs, events = sse_events(rt.port, "/v1/chat/completions",
                                      {"model": st["model"], "messages": FRANCE, "temperature": 0,
                                       "max_tokens": 8, "stream": True}, timeout=60)
    C.eq(status, 200, f"raw SSE status ({events[:1]})")
    C.check(hdrs.get("content-type", "").startswith("text/event-stream"),
            f"raw SSE: Content-Type {hdrs.get('content-type')!r}")
    C.check(events and events[-1] == "[DONE]", f"raw SSE: last event {events[-1:]!r}, want [DONE]")
    for e in events[:-1]:
        try:
            json.loads(e)
        except ValueError:
            C.check(False, f"raw SSE: event is not JSON: {e[:200]!r}")
            break


def case_sampling(rt, st):
    c = client(rt)
    outs = [c.chat.completions.create(model=st["model"], messages=[{"role": "user", "content": "Tell me a joke."}],
                                      temperature=0.8, seed=99, max_tokens=16).choices[0].message.content
            for _ in range(2)]
    C.check(outs[0] == outs[1], f"seed 99, temperature 0.8: differs: {outs}")
    outs = [c.completions.create(model=st["model"], prompt="My favourite food is", temperature=0,
                                 max_tokens=12).choices[0].text for _ in range(2)]
    C.check(outs[0] == outs[1], f"temperature 0: differs: {outs}")
    resp = c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0, max_tokens=16, stop=["Paris"])
    C.check("Paris" not in (resp.choices[0].message.content or ""), f"stop: {resp.choices[0].message.content!r}")
    C.eq(resp.choices[0].finish_reason, "stop", "stop: finish_reason")
    parts = [ch.choices[0].delta.content or "" for ch in
             c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0, max_tokens=16,
                                       stop="Paris", stream=True) if ch.choices]
    C.check("Paris" not in "".join(parts), f"stop while streaming: {''.join(parts)!r}")
    resp = c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0.5, top_p=0.9, seed=3,
                                     presence_penalty=0.5, frequency_penalty=0.5, max_tokens=8, n=1)
    C.check(isinstance(resp.choices[0].message.content, str), "penalties: no content")
    try:
        resp = c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0, max_tokens=4,
                                         logprobs=True, top_logprobs=2)
        C.note(f"logprobs=True accepted (choices[0].logprobs is {'set' if resp.choices[0].logprobs else 'None'})")
    except openai.BadRequestError as e:
        C.note(f"logprobs=True refused with 400: {e.message}")
    resp = c.chat.completions.create(model=st["model"], messages=FRANCE, temperature=0, max_tokens=4, logprobs=False)
    C.check(isinstance(resp.choices[0].message.content, str), "logprobs=False: no content")


def case_errors(rt, st):
    c = client(rt)
    bad = [
        ("n=2", lambda: c.chat.completions.create(model=st["model"], messages=FRANCE, max_tokens=4, n=2)),
        ("temperature -1", lambda: c.chat.completions.create(model=st["model"], messages=FRANCE, max_tokens=4,
                                                             temperature=-1)),
        ("top_p 2", lambda: c.completions.create(model=st["model"], prompt="hi", max_tokens=4, top_p=2)),
        ("messages empty", lambda: c.chat.completions.create(model=st["model"], messages=[], max_tokens=4)),
        ("prompt longer than the context", lambda: c.completions.create(model=st["model"], prompt="hello " * 3000,
                                                                        max_tokens=4)),
    ]
    for what, fn in bad:
        try:
            fn()
            C.check(False, f"{what}: the SDK call succeeded; want BadRequestError (400)")
        except openai.BadRequestError as e:
            C.eq(e.status_code, 400, f"{what}: status")
        except openai.APIStatusError as e:
            C.check(False, f"{what}: want 400, got {e.status_code}: {e.message}")
    raw = [
        ("missing messages", "/v1/chat/completions", {"model": st["model"], "max_tokens": 4}),
        ("messages a string", "/v1/chat/completions", {"model": st["model"], "messages": "hi"}),
        ("missing prompt", "/v1/completions", {"model": st["model"], "max_tokens": 4}),
        ("max_tokens a string", "/v1/completions", {"model": st["model"], "prompt": "hi", "max_tokens": "x"}),
        ("stop a number", "/v1/completions", {"model": st["model"], "prompt": "hi", "stop": 5}),
        ("body not JSON", "/v1/chat/completions", "{not json"),
        ("body an array", "/v1/chat/completions", "[1,2]"),
    ]
    for what, path, body in raw:
        r = rt.post(path, body)
        error_shape(r, 400, f"raw {what}")
        C.check(framing_problem(r) is None, f"raw {what}: framing {framing_problem(r)}")
    for method, path in (("GET", "/v1/nope"), ("POST", "/v1/nope")):
        r = http(rt.port, method, path, body={} if method == "POST" else None)
        error_shape(r, 404, f"{method} {path}")
    r = http(rt.port, "GET", "/nope")  # outside /v1: any error body
    C.eq(r.status, 404, "GET /nope")
    try:
        c.embeddings.create(model=st["model"], input="hi")
        C.check(False, "embeddings: want NotFoundError (404)")
    except openai.NotFoundError:
        pass
    except openai.APIStatusError as e:
        C.check(False, f"embeddings (unknown route): want 404, got {e.status_code}")
    # still serving
    resp = c.completions.create(model=st["model"], prompt="Hello", max_tokens=2)
    C.check(resp.choices[0].text is not None, "after errors: no completion")
    C.check(rt.proc.poll() is None, "runtime died")


def case_metrics(rt, st):
    r0, m0 = rt.metrics()
    C.eq(r0.status, 200, "/metrics status")
    C.check(r0.headers.get("content-type", "").replace(" ", "").startswith("text/plain;version=0.0.4"),
            f"/metrics Content-Type {r0.headers.get('content-type')!r}")
    for name in ("thaw_runtime_requests_total", "thaw_runtime_cold_starts_total", "thaw_runtime_load_seconds",
                 "thaw_runtime_ttft_seconds_bucket", "thaw_runtime_ttft_seconds_sum",
                 "thaw_runtime_ttft_seconds_count", "thaw_runtime_tokens_total", "thaw_runtime_batch_size"):
        C.check(any(n == name or n.startswith(name + "_") for n, _ in m0),
                f"/metrics lacks {name}")
    C.check((prom_sum(m0, "thaw_runtime_cold_starts_total") or 0) >= 1, "cold_starts_total < 1 after a load")
    C.check(any(n == "thaw_runtime_ttft_seconds_bucket" and ("le", "+Inf") in ls for n, ls in m0),
            "ttft histogram has no le=\"+Inf\" bucket")
    C.check(any(n == "thaw_runtime_requests_total" and any(k == "api" for k, _ in ls)
                and any(k == "code" for k, _ in ls) for n, ls in m0),
            "requests_total lacks api/code labels")
    c = client(rt)
    c.completions.create(model=st["model"], prompt="Hello", max_tokens=4)
    c.chat.completions.create(model=st["model"], messages=FRANCE, max_tokens=4)
    rt.post("/v1/completions", {"model": st["model"], "max_tokens": 4})  # 400
    r1, m1 = rt.metrics()

    def d(name, **labels):
        return (prom_sum(m1, name, **labels) or 0) - (prom_sum(m0, name, **labels) or 0)

    C.check(d("thaw_runtime_requests_total", code="200") >= 2, "requests_total{code=200} did not grow by 2")
    C.check(d("thaw_runtime_requests_total", code="400") >= 1, "requests_total{code=400} did not grow")
    C.check(d("thaw_runtime_ttft_seconds_count") >= 2, "ttft_seconds_count did not grow by 2")
    C.check(d("thaw_runtime_ttft_seconds_sum") > 0, "ttft_seconds_sum did not grow")
    C.check(d("thaw_runtime_tokens_total", kind="prompt") > 0, "tokens_total{kind=prompt} did not grow")
    C.check(d("thaw_runtime_tokens_total", kind="completion") >= 8, "tokens_total{kind=completion} grew < 8")


def case_no_model():
    with Runtime(name="oa-nomodel") as rt:
        C.eq(rt.get("/readyz").status, 503, "/readyz with no model")
        r = rt.post("/v1/chat/completions", {"model": "x", "messages": FRANCE, "max_tokens": 4})
        error_shape(r, 503, "chat with no model loaded")
        r = rt.post("/v1/completions", {"model": "x", "prompt": "hi", "max_tokens": 4})
        error_shape(r, 503, "completions with no model loaded")
        try:
            client(rt).chat.completions.create(model="x", messages=FRANCE, max_tokens=4)
            C.check(False, "SDK with no model: want an APIStatusError 503")
        except openai.APIStatusError as e:
            C.eq(e.status_code, 503, "SDK with no model: status")
        r = rt.get("/v1/models")
        j = r.try_json()
        C.check(r.status == 503 or (r.status == 200 and isinstance(j, dict) and j.get("data") == []),
                f"/v1/models with no model: want 503 or an empty list, got {r!r}")


def main():
    st = {}
    try:
        rt = Runtime(name="oa", env={"THAW_MODEL": CKPT}, wait_ready=True, start_timeout=120).start()
    except Exception as e:
        C.check(False, f"start with THAW_MODEL={CKPT}: {e}")
        C.finish()
    try:
        C.case("health", case_health, rt)
        C.case("models", case_models, rt, st)
        C.case("chat", case_chat, rt, st)
        C.case("completions", case_completions, rt, st)
        C.case("streaming", case_stream, rt, st)
        C.case("sampling", case_sampling, rt, st)
        C.case("errors", case_errors, rt, st)
        C.case("metrics", case_metrics, rt, st)
    finally:
        rt.cleanup()
    C.case("no model loaded", case_no_model)
    C.finish()


main()
