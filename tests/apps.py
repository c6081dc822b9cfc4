"""WSGI applications the tests serve.  ``router`` dispatches on PATH_INFO so
one server process covers many cases."""

import hashlib
import json
import os
import sys
import time
from wsgiref.validate import validator

HELLO = b"Hello, world!"


def hello(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))],
    )
    return [HELLO]


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def environ_app(environ, start_response):
    """The environ as JSON (non-JSON values as their repr)."""
    out = {}
    for k, v in environ.items():
        out[k] = v if isinstance(v, (str, int, bool, type(None))) else repr(v)
    out["wsgi.version"] = list(environ["wsgi.version"])
    out["_input"] = environ["wsgi.input"].read().decode("latin-1")
    return _json(start_response, out)


def echo(environ, start_response):
    """The request body back, with its SHA-256 in a header."""
    n = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(n)
    digest = hashlib.sha256(data).hexdigest()
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(data))),
            ("X-SHA256", digest),
            ("X-Input-Type", type(environ["wsgi.input"]).__name__),
        ],
    )
    return [data]


def big(environ, start_response):
    """n bytes (query ?n=), a repeating pattern, streamed in 64 KiB items."""
    n = int(environ.get("QUERY_STRING", "").partition("=")[2] or 5 * 1024 * 1024)
    block = bytes(range(256)) * 256
    start_response("200 OK", [("Content-Length", str(n))])

    def gen():
        left = n
        while left > 0:
            k = min(left, len(block))
            yield block[:k]
            left -= k

    return gen()


def chunks(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"one ", b"", b"two ", b"three"])


def raise_before(environ, start_response):
    raise RuntimeError("boom before start_response")


def raise_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"partial"
        raise RuntimeError("boom in the generator")

    return gen()


class _Closing:
    closed = []

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def close(self):
        _Closing.closed.append(True)


def slow(environ, start_response):
    t = float(environ.get("QUERY_STRING", "").partition("=")[2] or 1.0)
    time.sleep(t)
    body = b"slept %.2f" % t
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def write_cb(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"abc")
    return [b"def"]


def stream_pause(environ, start_response):
    """Two quick blocks, then a pause before the last one."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"first;"
        yield b"second;"
        time.sleep(1.0)
        yield b"third;"

    return gen()


def pid(environ, start_response):
    return _json(start_response, {"pid": os.getpid()})


ROUTES = {
    "/": hello,
    "/hello": hello,
    "/environ": environ_app,
    "/echo": echo,
    "/big": big,
    "/chunks": chunks,
    "/raise-before": raise_before,
    "/raise-after": raise_after,
    "/slow": slow,
    "/write": write_cb,
    "/validated": validator(hello),
    "/validated-echo": validator(echo),
    "/validated-chunks": validator(chunks),
    "/pid": pid,
    "/stream-pause": stream_pause,
}


def router(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        body = b"not found: " + environ["PATH_INFO"].encode("latin-1")
        start_response("404 Not Found", [("Content-Length", str(len(body)))])
        return [body]
    return handler(environ, start_response)
