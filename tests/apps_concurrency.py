"""WSGI applications for tests/test_concurrency.py: several application
threads writing one response, and large streamed responses.  ``router``
dispatches on PATH_INFO."""

import threading
import time
from urllib.parse import parse_qs

HELLO = b"Hello, world!"
HEAD_LEN = 24


def block(tag, seq, size):
    """One self-describing write: a fixed-width head naming the writer and
    its sequence number, then filler that depends on both (so a block that
    is cut, doubled or mixed with another shows)."""
    head = b"<%s:%06d:%010d>" % (tag.encode(), seq, size)
    head = head.ljust(HEAD_LEN, b".")
    pattern = b"%s%d|" % (tag.encode(), seq)
    fill = pattern * (size // len(pattern) + 1)
    return head + fill[: size - HEAD_LEN]


def _qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def hello(environ, start_response):
    start_response("200 OK", [("Content-Length", str(len(HELLO)))])
    return [HELLO]


def writers(environ, start_response):
    """?threads=T&n=N&size=S: T application threads each call write() N
    times with S-byte blocks, all on this one response.  The app returns
    once they are done (or after ?join=SECONDS, then it fails the
    response: a writer that never comes back is a lost wake-up)."""
    q = _qs(environ)
    nthreads = int(q.get("threads", 2))
    n = int(q.get("n", 64))
    size = int(q.get("size", 16384))
    join = float(q.get("join", 60))
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    errors = []
    go = threading.Barrier(nthreads)

    def run(tag):
        try:
            go.wait(timeout=join)
            for i in range(n):
                write(block(tag, i, size))
        except BaseException as e:  # reported through the response
            errors.append("%s: %r" % (tag, e))

    tags = [chr(ord("A") + i) for i in range(nthreads)]
    # Daemon threads: one stuck in write() must not keep the process alive.
    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in tags]
    for t in threads:
        t.start()
    deadline = time.monotonic() + join
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [tag for tag, t in zip(tags, threads) if t.is_alive()]
    if stuck or errors:
        raise RuntimeError("writers stuck %r, errors %r" % (stuck, errors))
    return []


def big(environ, start_response):
    """?n=BYTES, streamed in 64 KiB items from a generator."""
    n = int(_qs(environ).get("n", 32 * 1024 * 1024))
    piece = bytes(range(256)) * 256
    start_response("200 OK", [("Content-Length", str(n))])

    def gen():
        left = n
        while left > 0:
            k = min(left, len(piece))
            yield piece[:k]
            left -= k

    return gen()


ROUTES = {"/hello": hello, "/writers": writers, "/big": big}


def router(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    return handler(environ, start_response)
