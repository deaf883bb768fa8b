#!/usr/bin/env python3
"""thaw-runtime as an OpenWhisk action container (POST /init, POST /run),
checked against the platform's own contract (research/openwhisk.md §1-2,
data/openwhisk/acceptance_cases.json B1-B10, P1-P3) with SmolLM2-135M-Instruct
as the action:

  - before init: /healthz 200, /readyz 503, /run -> 403 "System not initialized."
  - /init {} / null / empty body / empty code -> 403 "Missing main/no code to execute."
  - /init with a model card (file://, plain path, zip with model.json, http://
    through a Range-capable loopback server): 200 {"ok": true}; a second
    /init -> 403 "Cannot initialize the action more than once." written to
    stdout and stderr, with no sentinel
  - bad card JSON, a missing checkpoint, a 404ing or refusing store, a corrupt
    checkpoint over HTTP -> 502 {"error": message naming what failed} + one
    sentinel on each stream; the process stays up
  - /run: prompt and messages results, usage, model id, thaw.{cold,...};
    "Paris" for the capital of France; determinism (temperature 0, seed);
    stop strings; card defaults; user errors -> 200 {"error"} and the
    container stays usable; value "A" -> 404; {} / null / array bodies;
    a ~1 MiB input; the deadline (string and number) -> finish_reason
    "deadline" before it passes
  - framing: every reply has Content-Length, no chunked encoding, never 204,
    <= 1 MB; exactly one sentinel per /run on stdout and on stderr; one JSON
    activation line per /run on stdout
  - init env is exported before loading (THAW_CACHE_DIR given only in env
    fills that cache)

Exit: 0 pass, 1 fail, 77 skip (SmolLM2 unavailable).
"""
import json
import os
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep tests/runtime free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rt_harness import (Checks, RangeServer, Runtime, card, corrupt_copy, framing_problem,  # noqa: E402
                        free_port, require_runtime, smollm2, zip_card_b64, SENTINEL)

require_runtime()
CKPT = smollm2("bf16")
C = Checks("openwhisk")

NOT_INIT = {"error": "System not initialized."}
NO_CODE = {"error": "Missing main/no code to execute."}
REINIT = {"error": "Cannot initialize the action more than once."}
NOT_DICT = {"error": "The action did not receive a dictionary or array as an argument."}
THAW_KEYS = ("activation_id", "cold", "init_ms", "load_ms", "load_gbps", "tiers",
             "queue_ms", "ttft_ms", "ms_per_output_token")
MB = 1 << 20
COUNT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # greedy SmolLM2 counts on without stopping


def framed(r, what):
    p = framing_problem(r)
    C.check(p is None, f"{what}: bad framing ({p}) for {r!r}")
    C.check(len(r.body) <= MB, f"{what}: reply is {len(r.body)} bytes > 1 MB")


def init_value(code, binary=False, env=None, main="main", name="chat"):
    return {"name": name, "main": main, "binary": binary, "code": code, "env": env}


def is_user_error(r, what, contains=None):
    framed(r, what)
    j = r.try_json()
    ok = C.check(r.status == 200 and isinstance(j, dict) and isinstance(j.get("error"), str)
                 and j["error"], f"{what}: want 200 {{\"error\": \"...\"}}, got {r!r}")
    if ok and contains:
        C.check(any(c.lower() in j["error"].lower() for c in contains),
                f"{what}: error {j['error']!r} should mention one of {contains}")
    return ok


# ------------------------------------------------------------------ before init

def case_before_init():
    with Runtime(name="ow-pre") as rt:
        C.eq(rt.get("/healthz").status, 200, "/healthz before init")
        C.eq(rt.get("/readyz").status, 503, "/readyz before init")
        r = rt.run({"prompt": "hi"})
        framed(r, "/run before init")
        C.eq((r.status, r.try_json()), (403, NOT_INIT), "/run before init")
        r = rt.run(body="null")
        C.eq((r.status, r.try_json()), (403, NOT_INIT), "/run (null body) before init")
        C.eq(rt.wait_sentinels(2), (2, 2), "sentinels (stdout, stderr) after 2 /run before init")
        C.check(rt.proc.poll() is None, "runtime died")


def case_init_without_code():
    """B1, B2: init {} / null / empty / empty code: 403 Missing main."""
    with Runtime(name="ow-nocode") as rt:
        for what, kw in (("{}", {"body": {}}),
                         ("null body", {"body": "null"}),
                         ("empty body", {"body": ""}),
                         ("value without code", {"value": {"main": "main", "binary": False, "env": None}}),
                         ("code null", {"value": {"code": None, "main": "main", "binary": False, "env": None}}),
                         ("B1 empty code", {"value": {"code": "", "main": "", "binary": False, "env": None}})):
            r = rt.init(**kw)
            framed(r, f"/init {what}")
            if what == "B1 empty code":  # the contract only demands != 200 here
                C.check(r.status != 200, f"/init {what}: want != 200, got {r!r}")
            else:
                C.eq((r.status, r.try_json()), (403, NO_CODE), f"/init {what}")
        C.eq(rt.get("/readyz").status, 503, "/readyz after refused inits")
        r = rt.run({"prompt": "hi"})
        C.eq((r.status, r.try_json()), (403, NOT_INIT), "/run after refused inits")
        C.check(rt.proc.poll() is None, "runtime died")


def expect_init_502(rt, value, what, mentions, timeout=120):
    t = time.monotonic()
    r = rt.init(value, timeout=timeout)
    dt = time.monotonic() - t
    framed(r, what)
    j = r.try_json()
    ok = C.check(r.status == 502 and isinstance(j, dict) and isinstance(j.get("error"), str),
                 f"{what}: want 502 {{\"error\": ...}}, got {r!r} after {dt:.1f}s")
    if ok:
        msg = j["error"]
        C.check(any(m.lower() in msg.lower() for m in mentions),
                f"{what}: error {msg!r} should name what failed (one of {mentions})")
        print(f"  {what}: 502 in {dt:.1f}s: {msg}")
    C.eq(rt.wait_sentinels(1), (1, 1), f"{what}: sentinels (stdout, stderr) after a failed init")
    C.eq(rt.get("/healthz").status, 200, f"{what}: /healthz after a failed init")
    C.eq(rt.get("/readyz").status, 503, f"{what}: /readyz after a failed init")


def case_init_bad_card():
    with Runtime(name="ow-badjson") as rt:
        expect_init_502(rt, init_value("{not json"), "card that is not JSON",
                        ["json", "card", "parse"])
    with Runtime(name="ow-nomodel") as rt:
        expect_init_502(rt, init_value(json.dumps({"name": "x"})), "card without \"model\"",
                        ["model"])
    with Runtime(name="ow-badzip") as rt:
        expect_init_502(rt, init_value("UEsDBAo=", binary=True), "binary code that is not a zip",
                        ["zip", "model.json", "base64", "archive"])
    missing = os.path.join(tempfile.gettempdir(), "thaw-no-such-ckpt-%d" % os.getpid())
    with Runtime(name="ow-missing") as rt:
        expect_init_502(rt, init_value(card(missing)), "card naming a missing checkpoint",
                        [missing, "manifest", "no such"])


def case_init_unreachable():
    empty = tempfile.mkdtemp(prefix="thaw-empty-")
    try:
        with RangeServer(empty, fail_all=True) as srv, Runtime(name="ow-404") as rt:
            expect_init_502(rt, init_value(card(srv.url)), "http store answering 404",
                            ["404", "manifest", srv.url.rstrip("/"), "127.0.0.1"])
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    port = free_port()  # nothing listens there
    with Runtime(name="ow-refused") as rt:
        expect_init_502(rt, init_value(card(f"http://127.0.0.1:{port}/")), "http store refusing connections",
                        ["connect", "refused", f"127.0.0.1:{port}", "manifest"], timeout=180)


def case_init_corrupt():
    tmp = tempfile.mkdtemp(prefix="thaw-corrupt-")
    try:
        bad = corrupt_copy(CKPT, os.path.join(tmp, "ck"))
        with RangeServer(bad) as srv, Runtime(name="ow-corrupt") as rt:
            expect_init_502(rt, init_value(card(srv.url)), "corrupt checkpoint over http",
                            ["checksum", "xxh3", "corrupt", "part-0"], timeout=180)
            r = rt.run({"prompt": "hi"})
            j = r.try_json()
            C.check(r.status == 403 and isinstance(j, dict) and isinstance(j.get("error"), str),
                    f"/run after a failed init: want 403 {{error}}, got {r!r}")
            if j != NOT_INIT:
                C.note(f"/run after a failed init answers {j} rather than {NOT_INIT}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ the main flow

class Flow:
    """One initialized container; counts /run calls to check the sentinels."""

    def __init__(self, rt):
        self.rt = rt
        self.runs = 0
        self.ids = []

    def run(self, value=None, body="__value__", **meta):
        self.runs += 1
        if "activation_id" in meta:
            self.ids.append(meta["activation_id"])
        r = self.rt.run(value, body=body, **meta)
        framed(r, f"/run {json.dumps(value)[:80] if body == '__value__' else body!r}")
        return r


def check_result(r, what, model="smol-test", kind="text", max_tokens=None):
    j = r.try_json()
    if not C.check(r.status == 200 and isinstance(j, dict) and "error" not in j,
                   f"{what}: want 200 with a result, got {r!r}"):
        return None
    if kind == "text":
        C.check(isinstance(j.get("text"), str), f"{what}: no \"text\" string in {j}")
    else:
        m = j.get("message")
        C.check(isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str),
                f"{what}: \"message\" should be {{role: assistant, content: str}}, got {m!r}")
    C.check(j.get("finish_reason") in ("stop", "length", "deadline"),
            f"{what}: finish_reason {j.get('finish_reason')!r}")
    u = j.get("usage")
    if C.check(isinstance(u, dict) and all(isinstance(u.get(k), int)
                                           for k in ("prompt_tokens", "completion_tokens", "total_tokens")),
               f"{what}: usage {u!r}"):
        C.check(u["prompt_tokens"] > 0 and u["completion_tokens"] >= 1, f"{what}: usage {u}")
        C.eq(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"], f"{what}: total_tokens")
        if max_tokens is not None:
            C.check(u["completion_tokens"] <= max_tokens,
                    f"{what}: completion_tokens {u['completion_tokens']} > max_tokens {max_tokens}")
            if j.get("finish_reason") == "length":
                C.eq(u["completion_tokens"], max_tokens, f"{what}: completion_tokens at finish 'length'")
    if model:
        C.eq(j.get("model"), model, f"{what}: model")
    th = j.get("thaw")
    if C.check(isinstance(th, dict), f"{what}: no \"thaw\" object"):
        missing = [k for k in THAW_KEYS if k not in th]
        C.check(not missing, f"{what}: thaw lacks {missing} (has {sorted(th)})")
        C.check(isinstance(th.get("cold"), bool), f"{what}: thaw.cold {th.get('cold')!r}")
        if isinstance(th.get("tiers"), dict):
            C.check(sum(v for v in th["tiers"].values() if isinstance(v, (int, float))) > 0,
                    f"{what}: thaw.tiers holds no bytes: {th['tiers']}")
    return j


def flow_init(f):
    rt = f.rt
    val = init_value(card("file://" + CKPT, name="smol-test",
                          defaults={"max_tokens": 12, "temperature": 0}),
                     env={"SOME_VAR": "xyz", "ANOTHER_VAR": ""})
    t = time.monotonic()
    r = rt.init(val, timeout=180)
    dt = time.monotonic() - t
    framed(r, "/init")
    C.eq((r.status, r.try_json()), (200, {"ok": True}), "/init with a file:// card")
    print(f"  cold init (file://, {os.path.getsize(os.path.join(CKPT, 'part-0.bin')) / 1e6:.0f} MB) "
          f"answered in {dt:.2f}s")
    C.eq(rt.get("/readyz").status, 200, "/readyz after init")
    time.sleep(0.3)
    C.eq(rt.sentinels(), (0, 0), "sentinels after a successful init")

    r = rt.init(val, timeout=60)
    framed(r, "second /init")
    C.eq((r.status, r.try_json()), (403, REINIT), "second /init (B4)")
    time.sleep(0.3)
    C.check(REINIT["error"] in rt.stdout(), "B4: re-init message not on stdout")
    C.check(REINIT["error"] in rt.stderr(), "B4: re-init message not on stderr")
    C.eq(rt.sentinels(), (0, 0), "B4: sentinels after the refused re-init")


def flow_first_runs(f):
    meta = dict(namespace="zzz", action_name="/zzz/chat", action_version="0.0.1",
                activation_id="a1b2c3d4e5f60001", transaction_id="tx1",
                deadline=str(int(time.time() * 1000) + 120000), api_key="abc:def")
    r = f.run({"prompt": "Once upon a time"}, **meta)
    j = check_result(r, "first /run (card defaults: max_tokens 12)", max_tokens=12)
    if j:
        th = j.get("thaw", {})
        C.eq(th.get("cold"), True, "first /run: thaw.cold")
        C.eq(th.get("activation_id"), meta["activation_id"], "first /run: thaw.activation_id")
        print(f"  first run: {j['text']!r} {j['finish_reason']} thaw={json.dumps(th)[:400]}")
    meta["activation_id"] = "a1b2c3d4e5f60002"
    meta["deadline"] = int(time.time() * 1000) + 120000  # a number this time
    r = f.run({"prompt": "Once upon a time", "max_tokens": 5}, **meta)
    j2 = check_result(r, "second /run", max_tokens=5)
    if j2:
        C.eq(j2.get("thaw", {}).get("cold"), False, "second /run: thaw.cold")
        C.eq(j2.get("finish_reason"), "length", "second /run (5 tokens of a story): finish_reason")
        if j:
            C.check(j["text"].startswith(j2["text"]),
                    f"greedy (card default temperature 0): 5-token text {j2['text']!r} "
                    f"is not a prefix of the 12-token text {j['text']!r}")


def flow_chat(f):
    r = f.run({"messages": [{"role": "user", "content": "What is the capital of France?"}],
               "temperature": 0, "max_tokens": 16}, activation_id="chat-0001")
    j = check_result(r, "chat", kind="message", max_tokens=16)
    if j:
        C.check("Paris" in j["message"]["content"],
                f"chat: answer {j['message']['content']!r} lacks 'Paris'")
    # the stop string cuts before "Paris"
    r = f.run({"messages": [{"role": "user", "content": "What is the capital of France?"}],
               "temperature": 0, "max_tokens": 16, "stop": "Paris"})
    j = check_result(r, "chat with stop 'Paris'", kind="message")
    if j:
        C.check("Paris" not in j["message"]["content"], f"stop string: {j['message']['content']!r}")
        C.eq(j.get("finish_reason"), "stop", "stop string: finish_reason")
    r = f.run({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                            {"role": "user", "content": "What is the capital of France?"}],
               "temperature": 0, "max_tokens": 16, "stop": ["zzzz", "capital"]})
    j = check_result(r, "chat with stop list", kind="message")
    if j:
        C.check("capital" not in j["message"]["content"], f"stop list: {j['message']['content']!r}")


def flow_determinism(f):
    texts = []
    for i in range(2):
        r = f.run({"prompt": "The three primary colors are", "temperature": 0, "max_tokens": 12})
        j = check_result(r, f"greedy #{i}", max_tokens=12)
        texts.append(j and j["text"])
    C.check(texts[0] is not None and texts[0] == texts[1], f"temperature 0 not deterministic: {texts}")
    texts = []
    for i in range(2):
        r = f.run({"prompt": "The three primary colors are", "temperature": 0.8, "top_p": 0.95,
                   "top_k": 40, "min_p": 0.01, "seed": 1234, "max_tokens": 16})
        j = check_result(r, f"seeded #{i}", max_tokens=16)
        texts.append(j and j["text"])
    C.check(texts[0] is not None and texts[0] == texts[1], f"seed 1234 not deterministic: {texts}")
    r = f.run({"prompt": "The three primary colors are", "temperature": 0.7, "max_tokens": 8,
               "presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1, "seed": 7})
    check_result(r, "penalties", max_tokens=8)
    r = f.run({"prompt": "The three primary colors are", "max_tokens": 1})
    j = check_result(r, "max_tokens 1", max_tokens=1)
    if j:
        C.eq((j["usage"]["completion_tokens"], j["finish_reason"]), (1, "length"), "max_tokens 1")


def flow_user_errors(f):
    cases = [
        ({}, "missing prompt", ["prompt", "messages"]),
        ({"prompt": 5}, "prompt not a string", ["prompt"]),
        ({"prompt": "hi", "max_tokens": "x"}, "max_tokens a string", ["max_tokens"]),
        ({"prompt": "hi", "max_tokens": -3}, "max_tokens negative", ["max_tokens"]),
        ({"prompt": "hi", "temperature": -1}, "temperature negative", ["temperature"]),
        ({"prompt": "hi", "temperature": "hot"}, "temperature a string", ["temperature"]),
        ({"prompt": "hi", "top_p": 1.5}, "top_p > 1", ["top_p"]),
        ({"prompt": "hi", "stop": 5}, "stop a number", ["stop"]),
        ({"messages": "hi"}, "messages a string", ["messages"]),
        ({"messages": [{"role": "user"}]}, "message without content", ["content", "message"]),
        ({"messages": []}, "empty messages", ["messages"]),
        ({"prompt": "hello " * 3000, "max_tokens": 4}, "prompt longer than the context",
         ["context", "long", "token"]),
    ]
    for value, what, mentions in cases:
        is_user_error(f.run(value), f"user error: {what}", mentions)
    # bodies the platform's tests send
    is_user_error(f.run(body={}), "body {} (no value: treated as {})")
    is_user_error(f.run(body="null"), "body null (treated as {})")
    r = f.run(["a", "b"])
    C.check(r.status == 200 and isinstance(r.try_json(), (dict, list)),
            f"value is an array: want 200 (an error object is fine), got {r!r}")
    r = f.run("A")
    C.eq((r.status, r.try_json()), (404, NOT_DICT), "value \"A\" (P2)")
    r = f.run(42)
    C.eq((r.status, r.try_json()), (404, NOT_DICT), "value 42")
    # still usable
    r = f.run({"prompt": "Hello", "max_tokens": 3})
    check_result(r, "/run after user errors", max_tokens=3)
    C.check(f.rt.proc.poll() is None, "runtime died")


def flow_large_input(f):
    value = {"prompt": "hi", "max_tokens": 4, "pad": "a" * 1048561}
    r = f.run(value, activation_id="large-0001")
    C.check(r.status == 200, f"~1 MiB input (B10): want 200, got {r!r}")
    j = r.try_json()
    C.check(isinstance(j, dict), f"~1 MiB input: reply not a JSON object: {r!r}")
    if isinstance(j, dict) and "error" in j:
        C.note(f"~1 MiB input with an unknown key 'pad' gave an application error: {j['error']!r}")


def flow_deadline(f):
    for kind in ("string", "number"):
        dl = int(time.time() * 1000) + 1500
        t = time.monotonic()
        r = f.run({"prompt": COUNT, "max_tokens": 1500, "temperature": 0},
                  deadline=str(dl) if kind == "string" else dl, activation_id=f"deadline-{kind}")
        dt = time.monotonic() - t
        late_ms = time.time() * 1000 - dl
        j = r.try_json()
        ok = C.check(r.status == 200 and isinstance(j, dict), f"deadline ({kind}): got {r!r}")
        if ok:
            C.eq(j.get("finish_reason"), "deadline", f"deadline ({kind}): finish_reason (reply after {dt:.2f}s)")
            C.check(late_ms <= 250, f"deadline ({kind}): reply came {late_ms:.0f} ms after the deadline")
            if "usage" in j:
                print(f"  deadline ({kind}): {dt:.2f}s, {j['usage'].get('completion_tokens')} tokens, "
                      f"{-late_ms:.0f} ms before the deadline")


def flow_logs(f):
    rt = f.rt
    got = rt.wait_sentinels(f.runs, timeout=5)
    C.eq(got, (f.runs, f.runs), f"sentinels (stdout, stderr) after {f.runs} /run")
    out = rt.stdout().splitlines()
    C.check(not any(SENTINEL in l and l.strip() != SENTINEL for l in out),
            "a sentinel shares its stdout line with other text")
    stray = [l for l in out if l.strip() and l.strip() != SENTINEL and not l.lstrip().startswith("{")
             and REINIT["error"] not in l]
    C.check(not stray, f"stdout holds lines that are neither activation JSON nor sentinels "
                       f"(other logs belong on stderr): {stray[:3]}")
    lines = rt.stdout_json_lines()
    for aid in f.ids:
        n = sum(1 for d in lines if aid in json.dumps(d))
        C.eq(n, 1, f"stdout JSON activation lines mentioning activation {aid}")
    C.check(len(lines) >= f.runs - 20,  # user errors may or may not log a line
            f"only {len(lines)} JSON lines on stdout for {f.runs} activations")


def case_main_flow():
    with Runtime(name="ow-main") as rt:
        f = Flow(rt)
        for name, fn in (("init", flow_init), ("first runs", flow_first_runs), ("chat", flow_chat),
                         ("determinism", flow_determinism), ("user errors", flow_user_errors),
                         ("large input", flow_large_input), ("deadline", flow_deadline),
                         ("logs", flow_logs)):
            C.case(f"main flow: {name}", fn, f)
            if name == "init" and rt.get("/readyz").status != 200:
                C.check(False, "no model after /init: skipping the rest of the main flow")
                return


def case_zip_and_plain_path():
    code = zip_card_b64(card(CKPT, name="smol-zip", system="You are a helpful assistant."))
    with Runtime(name="ow-zip") as rt:
        r = rt.init(init_value(code, binary=True), timeout=180)
        framed(r, "/init zip")
        C.eq(r.status, 200, f"/init with a zip holding model.json: {r!r}")
        if r.status == 200:
            r = rt.run({"messages": [{"role": "user", "content": "What is the capital of France?"}],
                        "temperature": 0, "max_tokens": 16})
            framed(r, "/run zip")
            j = check_result(r, "zip card chat", model="smol-zip", kind="message", max_tokens=16)
            if j:
                C.check("Paris" in j["message"]["content"],
                        f"zip card chat (card system prompt): {j['message']['content']!r} lacks 'Paris'")
        C.eq(rt.wait_sentinels(1), (1, 1), "zip: sentinels")


def case_remote_http_and_init_env():
    """http:// card through a Range-capable store; THAW_CACHE_DIR given only
    in the init env (exported before loading) gets filled."""
    tmp = tempfile.mkdtemp(prefix="thaw-ow-remote-")
    try:
        cache = os.path.join(tmp, "ssd")
        os.makedirs(cache)
        with RangeServer(CKPT) as srv, Runtime(name="ow-remote", cache=False) as rt:
            t = time.monotonic()
            r = rt.init(init_value(card(srv.url, name="smol-remote"), env={"THAW_CACHE_DIR": cache}),
                        timeout=180)
            dt = time.monotonic() - t
            framed(r, "/init http")
            C.eq((r.status, r.try_json()), (200, {"ok": True}), "/init with an http:// card")
            reqs = srv.requests
            C.check(any(p.rstrip("/").endswith("manifest.json") for _, p, _ in reqs),
                    f"the store never saw a manifest.json request: {reqs[:5]}")
            C.check(any(rg for _, p, rg in reqs if "part-0.bin" in p),
                    "part-0.bin was not fetched with Range requests")
            print(f"  remote init: {dt:.2f}s, {len(reqs)} requests to the store")
            if r.status == 200:
                r = rt.run({"prompt": "The capital of France is", "temperature": 0, "max_tokens": 6})
                j = check_result(r, "remote /run", model="smol-remote", max_tokens=6)
                if j:
                    C.eq(j["thaw"].get("cold"), True, "remote /run: cold")
                    print(f"  remote run: thaw.tiers={j['thaw'].get('tiers')} load_ms={j['thaw'].get('load_ms')}")
                filled = sum(len(fs) for _, _, fs in os.walk(cache))
                C.check(filled > 0, "THAW_CACHE_DIR from the init env was not used: the cache is empty "
                                    "(env must be exported before loading)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


C.case("before init", case_before_init)
C.case("init without code (B1, B2)", case_init_without_code)
C.case("init with a bad card", case_init_bad_card)
C.case("init with an unreachable store", case_init_unreachable)
C.case("init with a corrupt checkpoint", case_init_corrupt)
case_main_flow()
C.case("zip card, plain path", case_zip_and_plain_path)
C.case("http:// card, init env", case_remote_http_and_init_env)
C.finish()
