"""Apps for test_zero_copy.py: one body shared by every response, and a
thread that records how many references it has."""

import os
import sys
import threading
import time

SIZE = 768 * 1024  # under outbuf_overflow (1 MiB): queued in memory
SHARED = bytes(range(256)) * (SIZE // 256)
COUNTS = os.environ.get("WC_TEST_REFCOUNT_FILE")


def _record():
    """Every 50 ms, write sys.getrefcount(SHARED) to COUNTS: read by the
    test without sending the server a request (a request would make a
    worker release what was sent before it)."""
    while True:
        tmp = COUNTS + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(sys.getrefcount(SHARED)))
        os.replace(tmp, COUNTS)
        time.sleep(0.05)


if COUNTS:
    threading.Thread(target=_record, daemon=True).start()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/shared":
        body = [SHARED]
    elif path == "/shared-gen":
        body = iter([SHARED])
    elif path == "/fresh":
        body = [bytes(SHARED)[:-1] + b"!"]
    else:
        body = [b"hello"]
    n = sum(len(b) for b in body) if isinstance(body, list) else SIZE
    start_response("200 OK", [("Content-Length", str(n))])
    return body
