"""The WSGI application tests/soak.py drives.  Every answer carries the
request's X-Token back, so a response given to the wrong request (or the
wrong connection) shows.

Routes:
  GET  /tok          body: the token
  POST /echo         body: the request body (Content-Length or chunked);
                     X-SHA256: its digest
  GET  /gen?n=N      N bytes derived from the token, streamed by a
                     generator in pieces of random sizes (no Content-Length:
                     chunked on HTTP/1.1)
  GET  /big?n=N      N bytes of a fixed pattern with a Content-Length, in
                     64 KiB items (for clients that vanish or read slowly)
"""

import hashlib
import random

PATTERN = bytes(range(256)) * 256  # 64 KiB


def gen_body(token, n):
    """The body /gen sends for this token: its digest, repeated."""
    unit = hashlib.sha256(token).hexdigest().encode()
    return (unit * (n // len(unit) + 1))[:n]


def big_body(n):
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def _n(environ, default):
    for part in environ.get("QUERY_STRING", "").split("&"):
        k, _, v = part.partition("=")
        if k == "n":
            return int(v)
    return default


def app(environ, start_response):
    token = environ.get("HTTP_X_TOKEN", "").encode("latin-1")
    path = environ["PATH_INFO"]
    tok = ("X-Token", token.decode("latin-1"))
    if path == "/tok":
        start_response("200 OK", [("Content-Length", str(len(token))), tok])
        return [token]
    if path == "/echo":
        cl = environ.get("CONTENT_LENGTH")
        inp = environ["wsgi.input"]
        data = inp.read(int(cl)) if cl else inp.read()
        start_response(
            "200 OK",
            [
                ("Content-Length", str(len(data))),
                ("X-SHA256", hashlib.sha256(data).hexdigest()),
                tok,
            ],
        )
        return [data]
    if path == "/gen":
        body = gen_body(token, _n(environ, 1024))
        rnd = random.Random(token)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), tok])

        def pieces():
            pos = 0
            while pos < len(body):
                k = rnd.randint(1, 65536)
                yield body[pos : pos + k]
                pos += k

        return pieces()
    if path == "/big":
        n = _n(environ, 8 << 20)
        start_response("200 OK", [("Content-Length", str(n)), tok])

        def items():
            left = n
            while left > 0:
                k = min(left, len(PATTERN))
                yield PATTERN[:k]
                left -= k

        return items()
    start_response("404 Not Found", [("Content-Length", "0"), tok])
    return []
