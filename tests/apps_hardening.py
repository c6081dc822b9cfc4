"""WSGI applications for tests/test_hardening.py: apps_http's routes plus
the ones that attack the server from inside (threads in write(), hostile
headers) or hold a request (slow, forever).

With WC_TEST_SIGPIPE_DFL=1 in the environment, importing this module puts
SIGPIPE back to its default disposition (terminate), as some embedders and
launchers leave it, so that a SIGPIPE reaching the server would kill it."""

import os
import signal
import threading
import time

import apps_http
from apps_http import _lock, _marks, _ok, _q, mark

if os.environ.get("WC_TEST_SIGPIPE_DFL") == "1":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def block(tag, i, size):
    """A write() block that says who wrote it and in which order."""
    head = b"%s%06d:" % (tag, i)
    return (head * (size // len(head) + 1))[:size]


def two_writers(environ, start_response):
    """?n= blocks of ?size= bytes written by each of two threads at once."""
    q = _q(environ)
    k, n, size = q.get("k"), int(q.get("n", "64")), int(q.get("size", "16384"))
    write = start_response("200 OK", [("Content-Length", str(2 * n * size))])
    start = threading.Barrier(2)

    def writer(tag):
        start.wait(timeout=10)
        try:
            for i in range(n):
                write(block(tag, i, size))
            mark(k, "%s done" % tag.decode())
        except Exception as e:
            mark(k, "%s raised %s" % (tag.decode(), type(e).__name__))

    threads = [threading.Thread(target=writer, args=(t,)) for t in (b"A", b"B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return []


def orphan_writer(environ, start_response):
    """A thread writes ?size= bytes (enough to park it) and then once more;
    the app returns at once, without waiting for it."""
    q = _q(environ)
    k, size = q.get("k"), int(q.get("size", "1048576"))
    write = start_response("200 OK", [("Content-Length", str(size))])
    started = threading.Event()

    def writer():
        started.set()
        try:
            write(b"x" * size)
            mark(k, "first write returned")
        except Exception as e:
            mark(k, "first write raised %s" % type(e).__name__)
        try:
            write(b"late")
            mark(k, "late write returned")
        except RuntimeError as e:
            mark(k, "late write raised RuntimeError: %s" % e)
        except Exception as e:
            mark(k, "late write raised %s" % type(e).__name__)

    threading.Thread(target=writer, daemon=True).start()
    started.wait(timeout=10)
    time.sleep(0.2)  # the writer is parked on the full output queue by now
    return []


def forever(environ, start_response):
    """Never really returns (60 s): for shutdown_timeout."""
    mark(_q(environ).get("k"), "started")
    time.sleep(60)
    return _ok(start_response, b"too late")


def sleep(environ, start_response):
    """Sleeps ?t= seconds, then answers "slept"."""
    mark(_q(environ).get("k"), "started")
    time.sleep(float(_q(environ).get("t", "1")))
    return _ok(start_response, b"slept")


def hello(environ, start_response):
    return _ok(start_response, b"hello")


BAD_HEADERS = {
    "nul-value": [("X-Bad", "a\x00b")],
    "ctl-value": [("X-Bad", "a\x01b")],
    "del-value": [("X-Bad", "a\x7fb")],
    "nul-name": [("X-B\x00ad", "v")],
    "esc-name": [("X-B\x1bad", "v")],
    "two-cl": [("Content-Length", "5"), ("Content-Length", "6")],
    "same-cl": [("Content-Length", "5"), ("X-Between", "1"), ("content-length", "5")],
}


def bad_headers(environ, start_response):
    """?case= one of BAD_HEADERS; the app does not catch what
    start_response raises."""
    case = _q(environ)["case"]
    start_response("200 OK", [("Content-Type", "text/plain")] + BAD_HEADERS[case])
    return [b"hello"]


def bad_status(environ, start_response):
    start_response("200 O\x00K", [])
    return [b"hello"]


def rss(environ, start_response):
    """This process's resident set size in KiB, and its open descriptors."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir("/proc/self/fd"))
    return apps_http._json(start_response, {"rss_kb": kb, "fds": fds})


ROUTES = dict(
    apps_http.ROUTES,
    **{
        "two-writers": two_writers,
        "orphan-writer": orphan_writer,
        "forever": forever,
        "sleep": sleep,
        "hello": hello,
        "bad-headers": bad_headers,
        "bad-status": bad_status,
        "rss": rss,
    }
)


def router(environ, start_response):
    name = environ["PATH_INFO"].rsplit("/", 1)[-1]
    return ROUTES.get(name, apps_http.env)(environ, start_response)


__all__ = ["router", "_lock", "_marks"]
