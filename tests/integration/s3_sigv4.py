#!/usr/bin/env python3
"""s3:// loading against a local S3-style server that checks every request's
AWS Signature Version 4 the way S3 does, with its own SigV4 implementation
(hashlib/hmac; independent of libcurl's signer). Path-style URLs
(THAW_S3_ENDPOINT), Range requests, a session token; a wrong secret must give
a clear HTTP 403 error.
"""
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
THAW = os.path.join(os.environ.get("THAW_BIN", "build/bin"), "thaw")
AKID, SECRET, TOKEN, REGION = "AKIDTHAWTEST", "s3cr3t/key+value", "tok-123", "eu-west-3"
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def check_sigv4(method, path, query, headers):
    """Return None if the request is validly signed, else the reason."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 Authorization header"
    fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    cred = fields["Credential"].split("/")
    if cred[0] != AKID or cred[2] != REGION or cred[3] != "s3" or cred[4] != "aws4_request":
        return f"bad credential scope {fields['Credential']}"
    signed = fields["SignedHeaders"].split(";")
    for must in ("host", "x-amz-date", "x-amz-content-sha256"):  # S3 requires all three
        if must not in signed:
            return f"{must} not signed"
    if headers.get("x-amz-security-token") != TOKEN or "x-amz-security-token" not in signed:
        return "session token missing or unsigned"
    amz_date = headers["x-amz-date"]
    payload = headers["x-amz-content-sha256"]
    if payload not in (EMPTY_SHA, "UNSIGNED-PAYLOAD"):
        return "x-amz-content-sha256 is not the empty-body hash of a GET"
    canon_headers = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
    q = "&".join(sorted(query.split("&"))) if query else ""
    canon = "\n".join([method, path, q, canon_headers, ";".join(signed), payload])
    scope = f"{cred[1]}/{REGION}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canon.encode()).hexdigest()])
    k = sign(("AWS4" + SECRET).encode(), cred[1])
    k = sign(sign(sign(k, REGION), "s3"), "aws4_request")
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, fields["Signature"]) else "signature mismatch"


class S3(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = None
    seen = {"ok": 0, "denied": 0, "ranges": 0}

    def log_message(self, *a):
        pass

    def reply(self, code, body, extra=()):
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        why = check_sigv4("GET", u.path, u.query, headers)
        if why:
            S3.seen["denied"] += 1
            body = (f"<Error><Code>SignatureDoesNotMatch</Code><Message>{why}</Message></Error>"
                    ).encode()
            return self.reply(403, body, [("Content-Type", "application/xml")])
        fpath = os.path.join(self.root, urllib.parse.unquote(u.path).lstrip("/"))
        if ".." in u.path or not os.path.isfile(fpath):
            return self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
        data = open(fpath, "rb").read()
        S3.seen["ok"] += 1
        rng = headers.get("range")
        if rng:
            a, b = rng.split("=")[1].split("-")
            a, b = int(a), min(int(b), len(data) - 1)
            S3.seen["ranges"] += 1
            return self.reply(206, data[a:b + 1],
                              [("Content-Range", f"bytes {a}-{b}/{len(data)}")])
        return self.reply(200, data)


def main():
    try:
        import numpy  # noqa: F401  (make_hf needs it)
        import safetensors  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="thaw-s3-")
    srv = None
    try:
        hf = os.path.join(tmp, "hf")
        subprocess.run([sys.executable, os.path.join(HERE, "make_hf.py"), hf, "--layers", "2"],
                       check=True)
        bucket = os.path.join(tmp, "root", "models-bucket")
        os.makedirs(bucket)
        subprocess.run([THAW, "convert", hf, os.path.join(bucket, "tiny"), "--chunk", "64KiB",
                        "--quiet"], check=True)
        S3.root = os.path.join(tmp, "root")
        srv = ThreadingHTTPServer(("127.0.0.1", 0), S3)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        env = dict(os.environ, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_SESSION_TOKEN=TOKEN, AWS_REGION=REGION,
                   THAW_S3_ENDPOINT=f"http://127.0.0.1:{srv.server_port}")
        p = subprocess.run([THAW, "bench", "load", "s3://models-bucket/tiny", "--json"],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"FAIL: signed s3 load: {p.stderr} (server saw {S3.seen})")
        d = json.loads(p.stdout)
        assert d["method"] == "http" and d["tier"] == "remote", d
        assert S3.seen["denied"] == 0 and S3.seen["ranges"] > 1, S3.seen
        print(f"ok: s3 load, {S3.seen['ok']} signed requests verified")
        env["AWS_SECRET_ACCESS_KEY"] = "wrong"
        p = subprocess.run([THAW, "bench", "load", "s3://models-bucket/tiny"], env=env,
                           capture_output=True, text=True)
        assert p.returncode == 1, p
        assert "HTTP 403" in p.stderr and "s3://models-bucket/tiny/manifest.json" in p.stderr, \
            p.stderr
        print("ok: wrong secret -> " + p.stderr.strip().splitlines()[-1])
    finally:
        if srv:
            srv.shutdown()
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
