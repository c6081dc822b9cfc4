"""The application tests/test_tls.py serves over TLS: one router."""

import hashlib
import json
import os
import signal
import time

# As tests/apps_hardening.py: SIGPIPE back to its default (terminate), as
# some embedders and launchers leave it, so that one reaching the server
# kills it.
if os.environ.get("WC_TEST_SIGPIPE_DFL") == "1":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

TLS_KEYS = (
    "wsgi.url_scheme", "HTTPS", "SSL_PROTOCOL", "SSL_CIPHER", "SSL_CLIENT_VERIFY",
    "SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN", "SSL_CLIENT_CERT", "SSL_TLS_SNI",
    "SSL_SESSION_RESUMED",
)
BLOCK = hashlib.sha256(b"waitress_c tls").digest() * 2048   # 64 KiB


def blocks(n):
    """n bytes of a fixed pattern, in 64 KiB blocks."""
    while n > 0:
        yield BLOCK[:n]
        n -= len(BLOCK)


# /writes's progress, for /progress: the bytes its write() calls took.
PROGRESS = {"written": 0}
WRITE_BLOCK = 4000


def write_block(i):
    """/writes's block i: 4000 bytes that differ from every other block's."""
    return hashlib.sha256(b"%d" % i).digest() * (WRITE_BLOCK // 32)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path in ("/writes", "/chunks"):
        # Small blocks through write(), each its own send: a worker writes
        # them to the connection itself, until the socket refuses one.
        # /chunks sends them without a Content-Length: each write() is a
        # chunk, three iovecs (size line, block, CRLF) in one send.
        n = int(environ["QUERY_STRING"])
        headers = [("Content-Type", "application/octet-stream")]
        if path == "/writes":
            headers.append(("Content-Length", str(n * WRITE_BLOCK)))
        write = start_response("200 OK", headers)
        PROGRESS["written"] = 0
        for i in range(n):
            write(write_block(i))
            PROGRESS["written"] += WRITE_BLOCK
        return []
    if path == "/progress":
        body = json.dumps(PROGRESS).encode()
    elif path.startswith("/id/"):
        body = path.encode()
    elif path == "/blob":
        # One bytes object of n bytes: a single large block.
        n = int(environ["QUERY_STRING"])
        body = (BLOCK * (n // len(BLOCK) + 1))[:n]
    elif path == "/upload":
        h = hashlib.sha256()
        total = 0
        while True:
            data = environ["wsgi.input"].read(1 << 20)
            if not data:
                break
            h.update(data)
            total += len(data)
        body = json.dumps({"sha256": h.hexdigest(), "len": total}).encode()
    elif path == "/download":
        n = int(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n))])
        return blocks(n)
    elif path == "/file":
        # A file: written through TLS from memory, not with sendfile.
        name = environ["QUERY_STRING"]
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(os.path.getsize(name)))])
        return environ["wsgi.file_wrapper"](open(name, "rb"))
    elif path == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or 1))
        body = b"slept"
    else:
        body = json.dumps({k: environ.get(k) for k in TLS_KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def make_app(global_conf=None, **settings):
    """The PasteDeploy factory of ``app``."""
    return app
