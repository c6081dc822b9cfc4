"""Applications for tests/test_metrics.py.

``app``: ``/status/CODE`` answers CODE with a small body (none for 204 and
304); ``/gate?f=PATH`` holds its worker thread until the file PATH exists
(bounded: 30 s); ``/big?n=N`` answers N bytes in 64 KiB blocks; a body
sent is read whole first.  Everything else answers 200 ``hello``."""

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/gate":
        deadline = time.monotonic() + 30.0
        while not os.path.exists(query["f"][0]) and time.monotonic() < deadline:
            time.sleep(0.005)
    if path == "/big":
        n = int(query["n"][0])
        start_response("200 OK", [("Content-Length", str(n))])
        block = b"x" * 65536
        return (block[: min(65536, n - i)] for i in range(0, n, 65536))
    code = 200
    if path.startswith("/status/"):
        code = int(path[len("/status/"):])
    reasons = {200: "OK", 204: "No Content", 302: "Found", 304: "Not Modified",
               404: "Not Found", 500: "Internal Server Error"}
    status = "%d %s" % (code, reasons.get(code, "Whatever"))
    if code in (204, 304):
        start_response(status, [])
        return []
    out = b"hello" + body[:10]
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
