#!/usr/bin/env python3
"""thaw-runtime's SIGTERM drain (Knative: SIGTERM, then SIGKILL after the
grace period; OpenWhisk: 503 means "shutting down"), SmolLM2 via THAW_MODEL:

  - idle: SIGTERM -> exit 0 promptly
  - a streamed completion in flight: SIGTERM after the first chunk; the stream
    completes normally (finish_reason, data: [DONE]); new connections are
    refused or answered 503; exit 0 within THAW_DRAIN_S
  - an OpenWhisk /run in flight: it completes with its result and its
    sentinels; exit 0
  - THAW_DRAIN_S=2 with a request far longer than that: the process is gone
    within the limit (+ slack) and the client is not left hanging

Exit: 0 pass, 1 fail, 77 skip (SmolLM2 unavailable).
"""
import json
import os
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep tests/runtime free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rt_harness import Checks, Runtime, http, require_runtime, smollm2, sse_events  # noqa: E402

require_runtime()
CKPT = smollm2("bf16")
C = Checks("sigterm")
COUNT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # greedy SmolLM2 counts on without stopping


def new_request_refused_or_503(rt, what):
    """A new connection after SIGTERM: refused, reset, or 503."""
    for method, path, body in (("GET", "/readyz", None),
                               ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}),
                               ("POST", "/run", {"value": {"prompt": "hi", "max_tokens": 2}})):
        try:
            r = http(rt.port, method, path, body, timeout=5)
            C.eq(r.status, 503, f"{what}: {method} {path} after SIGTERM (refused or 503 wanted)")
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
            pass
        except OSError as e:
            C.check(False, f"{what}: {method} {path} after SIGTERM: {e!r} (a hang?)")


def wait_exit(rt, limit, what):
    t = time.monotonic()
    try:
        rc = rt.proc.wait(limit)
    except Exception:
        C.check(False, f"{what}: still running {limit:.0f}s after SIGTERM")
        return None, None
    return rc, time.monotonic() - t


def case_idle():
    with Runtime(name="term-idle", env={"THAW_MODEL": CKPT}, wait_ready=True, start_timeout=120) as rt:
        t = time.monotonic()
        rt.proc.send_signal(signal.SIGTERM)
        rc, _ = wait_exit(rt, 10, "idle")
        dt = time.monotonic() - t
        C.eq(rc, 0, "idle SIGTERM: exit status")
        C.check(dt < 3, f"idle SIGTERM: took {dt:.1f}s to exit")


def case_stream():
    drain = 30
    with Runtime(name="term-stream", env={"THAW_MODEL": CKPT, "THAW_DRAIN_S": drain},
                 wait_ready=True, start_timeout=120) as rt:
        first = threading.Event()
        res = {}
        arrivals = []

        def on_event(i, data):
            arrivals.append(time.monotonic())
            first.set()

        def stream():
            try:
                res["r"] = sse_events(rt.port, "/v1/completions",
                                      {"model": rt.model_id() or "x", "prompt": COUNT, "max_tokens": 250,
                                       "temperature": 0, "stream": True},
                                      timeout=90, on_event=on_event)
            except Exception as e:
                res["e"] = e
        th = threading.Thread(target=stream, daemon=True)
        th.start()
        if not C.check(first.wait(60), "no stream chunk within 60s"):
            return
        t_term = time.monotonic()
        rt.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        new_request_refused_or_503(rt, "streaming drain")
        th.join(90)
        C.check(not th.is_alive(), "the in-flight stream did not finish")
        C.check("e" not in res, f"the in-flight stream failed: {res.get('e')!r}")
        if "r" in res:
            status, _, events = res["r"]
            C.eq(status, 200, "in-flight stream status")
            C.check(events and events[-1] == "[DONE]", f"in-flight stream did not end with [DONE]: {events[-2:]}")
            finish, text = None, ""
            for e in events[:-1]:
                try:
                    j = json.loads(e)
                except ValueError:
                    continue
                for ch in j.get("choices") or []:
                    finish = ch.get("finish_reason") or finish
                    text += ch.get("text") or ""
            C.check(finish in ("length", "stop"), f"in-flight stream finish_reason {finish!r} (want a normal end)")
            after = sum(1 for a in arrivals if a > t_term)
            C.check(after > 0 or finish == "stop", "no chunk arrived after SIGTERM: was the stream cut?")
            print(f"  stream: {len(events)} events ({after} after SIGTERM), finish {finish}, {len(text)} chars")
        rc, dt = wait_exit(rt, drain + 5, "streaming drain")
        C.eq(rc, 0, "exit status after draining a stream")
        if dt is not None:
            print(f"  exited {time.monotonic() - t_term:.1f}s after SIGTERM")


def case_run():
    with Runtime(name="term-run", env={"THAW_MODEL": CKPT, "THAW_DRAIN_S": 30},
                 wait_ready=True, start_timeout=120) as rt:
        res = {}

        def run():
            try:
                res["r"] = http(rt.port, "POST", "/run",
                                {"value": {"prompt": COUNT, "max_tokens": 400, "temperature": 0},
                                 "activation_id": "term-1"}, timeout=90)
            except Exception as e:
                res["e"] = e
        th = threading.Thread(target=run, daemon=True)
        th.start()
        time.sleep(1.0)
        C.check(th.is_alive(), "the /run finished before SIGTERM (too fast to test the drain)")
        t = time.monotonic()
        rt.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        new_request_refused_or_503(rt, "/run drain")
        th.join(90)
        C.check("e" not in res, f"the in-flight /run failed: {res.get('e')!r}")
        r = res.get("r")
        if r is not None:
            j = r.try_json()
            C.check(r.status == 200 and isinstance(j, dict) and "text" in j
                    and j.get("finish_reason") in ("length", "stop"),
                    f"in-flight /run after SIGTERM: {r!r}")
        rc, _ = wait_exit(rt, 35, "/run drain")
        C.eq(rc, 0, "exit status after draining a /run")
        print(f"  /run drain: exited {time.monotonic() - t:.1f}s after SIGTERM")
        C.eq(rt.sentinels()[0] >= 1 and rt.sentinels()[1] >= 1, True, "sentinels of the drained /run")


def case_drain_limit():
    drain = 2
    with Runtime(name="term-limit", env={"THAW_MODEL": CKPT, "THAW_DRAIN_S": drain},
                 wait_ready=True, start_timeout=120) as rt:
        first = threading.Event()
        res = {}

        def stream():
            try:
                res["r"] = sse_events(rt.port, "/v1/completions",
                                      {"model": rt.model_id() or "x", "prompt": COUNT, "max_tokens": 1500,
                                       "stream": True, "temperature": 0},
                                      timeout=60, on_event=lambda i, d: first.set())
            except Exception as e:
                res["e"] = e
        th = threading.Thread(target=stream, daemon=True)
        th.start()
        if not C.check(first.wait(60), "no stream chunk within 60s"):
            return
        t = time.monotonic()
        rt.proc.send_signal(signal.SIGTERM)
        rc, _ = wait_exit(rt, drain + 5, "drain limit")
        dt = time.monotonic() - t
        C.check(rc is not None and dt <= drain + 3, f"THAW_DRAIN_S={drain}: exited after {dt:.1f}s")
        th.join(15)
        C.check(not th.is_alive(), "the client of the cut stream is left hanging after exit")
        evs = res.get("r", (0, 0, []))[2]
        print(f"  drain limit {drain}s: exit status {rc} after {dt:.1f}s; client got "
              f"{'error ' + repr(res.get('e')) if 'e' in res else '%d events, the last: %r' % (len(evs), evs[-2:])}")


C.case("idle", case_idle)
C.case("in-flight stream", case_stream)
C.case("in-flight /run", case_run)
C.case("drain limit", case_drain_limit)
C.finish()
