"""WSGI applications for tests/test_lifecycle.py: how connections end.

``router`` dispatches on PATH_INFO.  ``/gate`` writes a line to stderr when
it starts, so a test can wait for a request to be in service instead of
sleeping."""

import hashlib
import sys
import time
from urllib.parse import parse_qs


def _q(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _ok(start_response, body, extra=()):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def hello(environ, start_response):
    return _ok(start_response, b"Hello, world!")


def big(environ, start_response):
    """?mib=N: N MiB of a known pattern, with Content-Length."""
    n = int(float(_q(environ).get("mib", "16")) * 1024 * 1024)
    block = bytes(range(256)) * 256
    body = (block * (n // len(block) + 1))[:n]
    return _ok(start_response, body)


def stream(environ, start_response):
    """?mib=N: N MiB in 64 KiB blocks, no Content-Length (chunked)."""
    n = int(float(_q(environ).get("mib", "256")))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    block = b"x" * 65536

    def gen():
        for _ in range(n * 16):
            yield block

    return gen()


def gate(environ, start_response):
    """Say on stderr that request ?id= is in service, then sleep ?t=."""
    q = _q(environ)
    sys.stderr.write("gate entered %s\n" % q.get("id", ""))
    sys.stderr.flush()
    time.sleep(float(q.get("t", "1")))
    return _ok(start_response, b"gate %s" % q.get("id", "").encode())


def echo(environ, start_response):
    """The body's length and SHA-256."""
    data = environ["wsgi.input"].read()
    return _ok(start_response, b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode()))


ROUTES = {
    "/hello": hello,
    "/big": big,
    "/stream": stream,
    "/gate": gate,
    "/echo": echo,
}


def router(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    return handler(environ, start_response)


_kept = []


def keep_disconnected(environ, start_response):
    """Keep this request's client_disconnected callable past the request."""
    _kept[:] = [environ["waitress.client_disconnected"]]
    return _ok(start_response, b"kept")


def call_kept(environ, start_response):
    """Call the kept callable (from another request, later)."""
    return _ok(start_response, b"%r" % (_kept[0](),))


ROUTES["/keep-disconnected"] = keep_disconnected
ROUTES["/call-kept"] = call_kept
