"""Applications for tests/test_h2.py (HTTP/2)."""

import hashlib
import json
import sys
import threading
import time

ENV_KEYS = (
    "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "SERVER_PROTOCOL",
    "HTTP_HOST", "HTTP_COOKIE", "HTTP_X_TEST", "CONTENT_LENGTH", "CONTENT_TYPE",
    "wsgi.url_scheme",
)

_barriers = {}
_lock = threading.Lock()
_calls = {"count": 0}


def _barrier(n):
    with _lock:
        if n not in _barriers:
            _barriers[n] = threading.Barrier(n)
        return _barriers[n]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/env":
        body = json.dumps({k: environ.get(k) for k in ENV_KEYS}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/echo":
        digest = hashlib.sha256(environ["wsgi.input"].read()).hexdigest()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [digest.encode()]
    if path == "/big":
        n = int(query or 10485760)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        block = b"0123456789abcdef" * 4096
        return (block[: min(len(block), n - i)] for i in range(0, n, len(block)))
    if path == "/file":
        # wsgi.file_wrapper over a regular file (sendfile on HTTP/1).
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(query, "rb"), 65536)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]
    if path == "/boom":
        raise RuntimeError("boom before the head")
    if path == "/boom-late":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _late_failure()
    if path == "/hop":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Proxy-Connection", "keep-alive"), ("X-Kept", "yes")])
        return [b"hop"]
    if path == "/barrier":
        # Every party must be in the app at once: a connection whose
        # streams were served one after another would never get here.
        _barrier(int(query)).wait(timeout=30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"met"]
    if path == "/count":
        with _lock:
            _calls["count"] += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"counted"]
    if path == "/calls":
        with _lock:
            n = _calls["count"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(n).encode()]
    if path == "/sleep":
        print("sleeping", file=sys.stderr, flush=True)
        time.sleep(float(query or 1))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + environ["SERVER_PROTOCOL"].encode() + b"\n"]


def _late_failure():
    yield b"partial"
    raise RuntimeError("boom after the head")
