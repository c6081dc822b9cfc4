"""The WSGI apps every benchmarked server runs, one per scenario, chosen by path.

Every server loads this same module (``apps:app``, with ``benchmarks/`` on
``sys.path``), so the only difference between two runs is the server.

    /hello      13 bytes ``Hello, world!`` with Content-Length
    /chunked    the same 13 bytes from a generator of four yields, no
                Content-Length (HTTP/1.1 servers answer chunked)
    /1mib       a 1 MiB body with Content-Length, from one prebuilt bytes
    /echo       reads the whole request body and sends it back
    /file       a 10 MiB file through ``wsgi.file_wrapper``
    /sleep      ``time.sleep(0.01)`` and then ``Hello, world!``
    /longpoll   ``time.sleep(LONGPOLL_SECONDS)`` and then ``Hello, world!``:
                a parked request, as a long-poll endpoint holds one

The file for ``/file`` is named by the environment variable
``WC_BENCH_FILE`` (``run.py`` creates it once per run and serves the same file
from nginx); without it, a file is created in the temp directory at import.
"""

import os
import tempfile
import time

HELLO = b"Hello, world!"
MIB = 1024 * 1024
BIG = b"x" * MIB
FILE_SIZE = 10 * MIB
FILE_BLOCK = 64 * 1024
TEXT = ("Content-Type", "text/plain")
# run.py measures the server's CPU in the middle of this sleep: keep it
# well above the measurement window (LONGPOLL_WINDOW there).
LONGPOLL_SECONDS = 10.0


def data_file():
    """Return the path of the 10 MiB file, creating it if it is missing."""
    path = os.environ.get("WC_BENCH_FILE")
    if path is None:
        path = os.path.join(tempfile.gettempdir(), "waitress_c-bench-10mib")
    if not os.path.exists(path) or os.path.getsize(path) != FILE_SIZE:
        write_data_file(path)
    return path


def write_data_file(path):
    block = bytes(range(256)) * (FILE_BLOCK // 256)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        for _ in range(FILE_SIZE // FILE_BLOCK):
            f.write(block)
    os.replace(tmp, path)


FILE_PATH = data_file()


def hello(environ, start_response):
    start_response("200 OK", [TEXT, ("Content-Length", "13")])
    return [HELLO]


def chunked(environ, start_response):
    start_response("200 OK", [TEXT])
    return chunks()


def chunks():
    yield b"Hello"
    yield b", "
    yield b"world"
    yield b"!"


def one_mib(environ, start_response):
    start_response("200 OK", [TEXT, ("Content-Length", str(MIB))])
    return [BIG]


def echo(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"),
         ("Content-Length", str(len(body)))],
    )
    return [body]


def send_file(environ, start_response):
    f = open(FILE_PATH, "rb")
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"),
         ("Content-Length", str(FILE_SIZE))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, FILE_BLOCK)
    return blocks(f)


def blocks(f):
    """The fallback for a server without ``wsgi.file_wrapper``."""
    try:
        while True:
            block = f.read(FILE_BLOCK)
            if not block:
                return
            yield block
    finally:
        f.close()


def sleep(environ, start_response):
    time.sleep(0.01)
    return hello(environ, start_response)


def longpoll(environ, start_response):
    time.sleep(LONGPOLL_SECONDS)
    return hello(environ, start_response)


def not_found(environ, start_response):
    body = b"Not Found"
    start_response("404 Not Found", [TEXT, ("Content-Length", str(len(body)))])
    return [body]


ROUTES = {
    "/hello": hello,
    "/chunked": chunked,
    "/1mib": one_mib,
    "/echo": echo,
    "/file": send_file,
    "/sleep": sleep,
    "/longpoll": longpoll,
}


def app(environ, start_response):
    return ROUTES.get(environ.get("PATH_INFO"), not_found)(environ, start_response)
