"""WSGI applications for the tests/test_http_*.py modules.  ``router``
dispatches on PATH_INFO (its suffix after the last "/" that names a route),
so one server process covers a whole module.

Side effects the tests check (close() called, a request dispatched, how far
a producer got) are recorded with ``mark(key, event)`` in this process and
read back over HTTP from ``/marks?k=KEY``."""

import io
import json
import os
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs

_lock = threading.Lock()
_marks = {}


def mark(k, event):
    if not k:
        return
    with _lock:
        _marks.setdefault(k, []).append(event)


def _q(environ):
    """Query parameters; values are latin-1 so any byte can be sent."""
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True, encoding="latin-1")
    return {k: v if len(v) > 1 else v[0] for k, v in qs.items()}


def _list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _ok(start_response, body, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def _json(start_response, obj):
    return _ok(start_response, json.dumps(obj).encode(), extra=[])


def pattern(n, seed=0):
    block = bytes((i * 7 + seed) % 251 for i in range(4096))
    return (block * (n // len(block) + 1))[:n]


# -- generic response builder ----------------------------------------------


def respond(environ, start_response):
    """?s=STATUS&h=Name:Value (repeatable)&b=ITEM (repeatable)&mode=M&cl=N
    (&u=1: STATUS and the headers are percent-encoded UTF-8)

    mode: list (default), tuple, gen, write (each item through write()),
    writelist (first item written, the rest returned), single (a 1-element
    list of the joined items), empty (an empty list)."""
    q = _q(environ)
    status = q.get("s", "200 OK")
    if q.get("u"):
        status = status.encode("latin-1").decode("utf-8")
    headers = []
    for h in _list(q.get("h")):
        if q.get("u"):
            h = h.encode("latin-1").decode("utf-8")
        name, _, value = h.partition(":")
        headers.append((name, value))
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    items = [b.encode("latin-1") for b in _list(q.get("b"))]
    mode = q.get("mode", "list")
    k = q.get("k")
    if mode == "write":
        write = start_response(status, headers)
        for item in items:
            write(item)
        mark(k, "done")
        return []
    if mode == "writelist":
        write = start_response(status, headers)
        write(items[0])
        return items[1:]
    start_response(status, headers)
    if mode == "tuple":
        return tuple(items)
    if mode == "single":
        return [b"".join(items)]
    if mode == "empty":
        return []
    if mode == "gen":

        def gen():
            for item in items:
                yield item
            mark(k, "done")

        return gen()
    return items


# -- interim responses (wsgi.early_hints) --------------------------------------

_kept_hints = []


def hints(environ, start_response):
    """?n=N calls of environ["wsgi.early_hints"] with the ?h=Name:Value
    headers (one Link by default), then a 200.  What each call returned or
    raised is marked under ?k.

    ?when=lazy: the calls come after start_response, before the first body
    item.  ?when=after: after write() sent the headers; ?catch=1 catches
    the error and finishes the body, else it propagates.  ?keep=1 keeps
    the callable; ?when=late calls the one a past request kept, then its
    own.  ?thread=1: the calls come from another thread.
    """
    q = _q(environ)
    k = q.get("k")
    n = int(q.get("n", "1"))
    headers = [tuple(h.partition(":")[::2]) for h in _list(q.get("h"))] or [("Link", "</a.css>; rel=preload")]
    eh = environ["wsgi.early_hints"]
    when = q.get("when", "before")
    if q.get("keep"):
        _kept_hints.append(eh)

    def call(fn):
        for _ in range(n):
            try:
                mark(k, repr(fn(headers)))
            except Exception as e:
                mark(k, "%s: %s" % (type(e).__name__, e))
                if not q.get("catch"):
                    raise

    if when == "after":
        write = start_response("200 OK", [("Content-Length", "9")])
        write(b"before")
        call(eh)
        return [b"end"]
    if when == "late":
        call(_kept_hints.pop())
        call(eh)
    elif when == "lazy":
        start_response("200 OK", [("Content-Length", "4")])
        call(eh)
        return [b"done"]
    elif q.get("thread"):
        t = threading.Thread(target=call, args=(eh,))
        t.start()
        t.join()
    else:
        call(eh)
    start_response("200 OK", [("Content-Length", "4")])
    return [b"done"]


def hints_bad(environ, start_response):
    """?arg= one wrong argument to environ["wsgi.early_hints"]."""
    arg = {
        "not-a-list": ("Link", "</a.css>"),
        "tuple-items": [["Link", "</a.css>"]],
        "bytes-name": [(b"Link", "</a.css>")],
        "bytes-value": [("Link", b"</a.css>")],
        "three": [("Link", "</a.css>", "x")],
    }[_q(environ)["arg"]]
    environ["wsgi.early_hints"](arg)
    return _ok(start_response, b"not reached")


# -- environ and input -------------------------------------------------------


def env(environ, start_response):
    """The environ as JSON, plus facts about the objects in it."""
    out = {}
    for k, v in environ.items():
        out[k] = v if isinstance(v, (str, int, bool, type(None))) else repr(v)
    out["_types"] = {k: type(v).__name__ for k, v in environ.items()}
    out["_version_is_tuple"] = environ["wsgi.version"] == (1, 0) and type(environ["wsgi.version"]) is tuple
    out["_errors_is_stderr"] = environ["wsgi.errors"] is sys.stderr
    fw = environ.get("wsgi.file_wrapper")
    out["_file_wrapper_is_class"] = isinstance(fw, type)
    inp = environ["wsgi.input"]
    out["_input_tell"] = inp.tell() if hasattr(inp, "tell") else None
    data = inp.read()
    out["_input"] = data.decode("latin-1")
    out["_input_after_end"] = inp.read(10).decode("latin-1")
    cd = environ.get("waitress.client_disconnected")
    out["_disconnected"] = cd() if callable(cd) else "missing"
    return _json(start_response, out)


def input_ops(environ, start_response):
    """Exercise wsgi.input: read(n), readline, readlines, iteration, seek."""
    inp = environ["wsgi.input"]
    res = {"type": type(inp).__name__}
    res["read3"] = inp.read(3).decode("latin-1")
    res["readline"] = inp.readline().decode("latin-1")
    res["readline_limit"] = inp.readline(2).decode("latin-1")
    res["tell"] = inp.tell()
    inp.seek(0)
    res["readlines"] = [x.decode("latin-1") for x in inp.readlines()]
    inp.seek(0)
    res["iter"] = [x.decode("latin-1") for x in inp]
    inp.seek(0)
    res["read_all"] = inp.read().decode("latin-1")
    res["read_past_end"] = inp.read(5).decode("latin-1")
    inp.seek(2)
    res["after_seek2"] = inp.read(4).decode("latin-1")
    res["length"] = len(res["read_all"])
    try:
        os.fstat(inp.fileno())
        res["real_file"] = True
    except Exception:
        res["real_file"] = False
    res["CONTENT_LENGTH"] = environ.get("CONTENT_LENGTH")
    return _json(start_response, res)


# -- marks -------------------------------------------------------------------


def mark_app(environ, start_response):
    q = _q(environ)
    mark(q.get("k"), "hit " + environ.get("QUERY_STRING", ""))
    return _ok(start_response, b"marked")


def marks_app(environ, start_response):
    k = _q(environ).get("k")
    with _lock:
        ev = list(_marks.get(k, []))
    return _json(start_response, ev)


def slow_times(environ, start_response):
    """Sleeps ?t= seconds; answers with its start and end times."""
    q = _q(environ)
    t0 = time.monotonic()
    time.sleep(float(q.get("t", "0.1")))
    t1 = time.monotonic()
    return _json(start_response, {"id": q.get("id"), "start": t0, "end": t1})


# -- start_response / write / app_iter rules ----------------------------------


def sr_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"never"]


def sr_excinfo_before(environ, start_response):
    """An error handler replacing the headers before any were sent."""
    start_response("200 OK", [("X-First", "1"), ("Content-Length", "5")])
    try:
        raise ValueError("replaced")
    except ValueError:
        start_response("500 Oops", [("X-Second", "2"), ("Content-Length", "4")], sys.exc_info())
    return [b"oops"]


def sr_excinfo_after(environ, start_response):
    """exc_info once the headers are out: start_response re-raises."""
    q = _q(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"first"
        try:
            raise KeyError("late error")
        except KeyError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except KeyError:
                mark(q.get("k"), "reraised")
                raise
        yield b"never"

    return gen()


class _Marker:
    pass


def sr_kw(environ, start_response):
    """start_response called with keywords, or with ?argc= positional
    arguments (a TypeError unless 2 or 3)."""
    q = _q(environ)
    headers = [("Content-Type", "text/plain"), ("Content-Length", "2")]
    if "argc" in q:
        args = ["200 OK", headers, None, None][: int(q["argc"])]
        start_response(*args)
    elif q.get("how") == "all":
        start_response(status="200 OK", headers=headers, exc_info=None)
    else:
        start_response("200 OK", headers=headers)
    return [b"kw"]


def sr_bad(environ, start_response):
    """?case= one violation of the start_response rules."""
    case = _q(environ)["case"]
    ok = [("Content-Length", "2")]
    if case == "status-bytes":
        start_response(b"200 OK", ok)
    elif case == "status-int":
        start_response(200, ok)
    elif case == "status-cr":
        start_response("200 OK\rX-Injected: 1", ok)
    elif case == "status-lf":
        start_response("200 OK\nX-Injected: 1", ok)
    elif case == "name-bytes":
        start_response("200 OK", ok + [(b"X-Bytes", "v")])
    elif case == "value-bytes":
        start_response("200 OK", ok + [("X-Bytes", b"v")])
    elif case == "value-crlf":
        start_response("200 OK", ok + [("X-A", "v\r\nX-Injected: 1")])
    elif case == "value-lf":
        start_response("200 OK", ok + [("X-A", "v\nX-Injected: 1")])
    elif case == "value-cr":
        start_response("200 OK", ok + [("X-A", "v\rX-Injected: 1")])
    elif case == "name-colon":
        start_response("200 OK", ok + [("X-Injected: 1\tX-A", "v")])
    elif case == "name-crlf":
        start_response("200 OK", ok + [("X-Injected: 1\r\nX-A", "v")])
    elif case == "non-latin1":
        start_response("200 OK", ok + [("X-Euro", "\u20ac")])
    elif case == "cl-garbage":
        start_response("200 OK", [("Content-Length", "abc")])
    elif case.startswith("hop:"):
        start_response("200 OK", ok + [(case[4:], "x")])
    else:
        raise AssertionError(case)
    return [b"ok"]


def lazy_bad(environ, start_response):
    """Body bytes before start_response was called."""

    def gen():
        yield b"too early"
        start_response("200 OK", [])

    return gen()


def lazy_ok(environ, start_response):
    """start_response called on the first iteration (PEP 3333 allows it)."""

    def gen():
        start_response("200 OK", [("Content-Length", "4")])
        yield b"lazy"

    return gen()


def str_chunk(environ, start_response):
    """A str item in the body: first (?first=1) or after a bytes item."""
    first = _q(environ).get("first") == "1"
    start_response("200 OK", [("Content-Length", "3")])

    def gen():
        if not first:
            yield b"a"
        yield "bc"

    return gen()


def raise_gen(environ, start_response):
    """?n= non-empty items, then an exception; ?empty=1 first yields b""."""
    q = _q(environ)
    n = int(q.get("n", "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        if q.get("empty") == "1":
            yield b""
        for i in range(n):
            yield b"item%d" % i
        raise RuntimeError("boom in raise_gen")

    return gen()


class Closing:
    """An app_iter with a close() that records itself."""

    def __init__(self, k, items, fail_at=None):
        self.k = k
        self.items = items
        self.fail_at = fail_at

    def __iter__(self):
        for i, item in enumerate(self.items):
            if i == self.fail_at:
                raise RuntimeError("boom in Closing")
            yield item

    def close(self):
        mark(self.k, "closed")


class ClosingList(list):
    """A list subclass may have a close() of its own: it is called."""

    def close(self):
        mark(self.k, "closed")


class NoClose:
    """An iterable without close()."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


class CloseLookupFails(NoClose):
    """Looking up close raises: AttributeError means no close(), anything
    else is the app's error."""

    def __init__(self, items, exc):
        super().__init__(items)
        self.exc = exc

    @property
    def close(self):
        raise self.exc("close lookup")


def closing(environ, start_response):
    """?k=&mode=ok|raise-first|raise-later|str|list-sub|none|lookup-attr|
    lookup-error"""
    q = _q(environ)
    k, mode = q.get("k"), q.get("mode", "ok")
    start_response("200 OK", [("Content-Type", "text/plain")])
    if mode == "list-sub":
        body = ClosingList([b"a", b"b"])
        body.k = k
        return body
    if mode == "none":
        return NoClose([b"a", b"b"])
    if mode == "lookup-attr":
        return CloseLookupFails([b"a", b"b"], AttributeError)
    if mode == "lookup-error":
        return CloseLookupFails([b"a", b"b"], RuntimeError)
    if mode == "ok":
        return Closing(k, [b"a", b"b"])
    if mode == "raise-first":
        return Closing(k, [b"a", b"b"], fail_at=0)
    if mode == "raise-later":
        return Closing(k, [b"a", b"b"], fail_at=1)
    if mode == "str":
        return Closing(k, ["text"])
    raise AssertionError(mode)


# -- file_wrapper --------------------------------------------------------------


class TrackedFile(io.FileIO):
    """A real file that records reads through Python and its close()."""

    k = None

    def read(self, *a):
        mark(self.k, "read")
        return super().read(*a)

    def readinto(self, b):
        mark(self.k, "readinto")
        return super().readinto(b)

    def readall(self):
        mark(self.k, "readall")
        return super().readall()

    def close(self):
        if not self.closed:
            mark(self.k, "closed")
        super().close()


class ReadOnly:
    """Only read(n): not seekable."""

    def __init__(self, data, k=None):
        self.f = io.BytesIO(data)
        self.k = k

    def read(self, n=-1):
        mark(self.k, "read %d" % n)
        return self.f.read(n)

    def close(self):
        mark(self.k, "closed")


class SeekTell:
    """seek and tell but no seekable(): counts as seekable."""

    def __init__(self, data):
        self.f = io.BytesIO(data)
        self.read = self.f.read
        self.seek = self.f.seek
        self.tell = self.f.tell


class RawUnseekable(io.RawIOBase):
    def __init__(self, data):
        self.f = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        data = self.f.read(len(b))
        b[: len(data)] = data
        return len(data)


def _real_file(n, k):
    fd, path = tempfile.mkstemp(prefix="wc-http-file-")
    os.write(fd, pattern(n))
    os.close(fd)
    f = TrackedFile(path, "rb")
    os.unlink(path)
    f.k = k
    return f


def file_app(environ, start_response):
    """?kind=real|bytesio|readonly|seektell|raw &n=size &seek=pos &cl=N
    &bs=block_size &k=key &ret=wrapper|list"""
    q = _q(environ)
    n = int(q.get("n", "100000"))
    k = q.get("k")
    kind = q.get("kind", "real")
    if kind == "real":
        f = _real_file(n, k)
    elif kind == "bytesio":
        f = io.BytesIO(pattern(n))
    elif kind == "readonly":
        f = ReadOnly(pattern(n), k)
    elif kind == "seektell":
        f = SeekTell(pattern(n))
    elif kind == "raw":
        f = RawUnseekable(pattern(n))
    else:
        raise AssertionError(kind)
    if "seek" in q:
        f.seek(int(q["seek"]))
    headers = [("Content-Type", "application/octet-stream")]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    fw = environ["wsgi.file_wrapper"]
    if "bs" in q:
        w = fw(f, int(q["bs"]))
    else:
        w = fw(f)
    info = {}
    for attr in ("seek", "tell", "seekable"):
        try:
            info["has_" + attr] = hasattr(w, attr)
        except Exception as e:  # reported to the test, not fatal here
            info["has_" + attr] = "%s: %s" % (type(e).__name__, e)
    mark(k, "wrapper " + json.dumps(info, sort_keys=True))
    return w


# -- flow: disconnects, backpressure ---------------------------------------------


def disc(environ, start_response):
    """Polls waitress.client_disconnected() for up to ?t= seconds."""
    q = _q(environ)
    k = q.get("k")
    cd = environ["waitress.client_disconnected"]
    mark(k, "started")
    deadline = time.monotonic() + float(q.get("t", "3"))
    seen = False
    while time.monotonic() < deadline:
        if cd():
            seen = True
            break
        time.sleep(0.02)
    mark(k, "disconnected=%s" % seen)
    return _ok(start_response, b"disc %s" % str(seen).encode())


class Producer:
    """?n= blocks of ?block= bytes; records its progress and its close()."""

    def __init__(self, k, n, block):
        self.k = k
        self.n = n
        self.block = pattern(block)
        self.produced = 0

    def __iter__(self):
        for i in range(self.n):
            self.produced += len(self.block)
            with _lock:
                _marks[self.k + "-progress"] = [self.produced]
            yield self.block

    def close(self):
        mark(self.k, "closed after %d" % self.produced)


def produce(environ, start_response):
    q = _q(environ)
    n, block = int(q.get("n", "1000")), int(q.get("block", "65536"))
    headers = []
    if q.get("cl") == "1":
        headers.append(("Content-Length", str(n * block)))
    start_response("200 OK", headers)
    return Producer(q["k"], n, block)


def write_loop(environ, start_response):
    """write() ?n= blocks of ?block= bytes; records what write() raised."""
    q = _q(environ)
    k = q["k"]
    n, block = int(q.get("n", "1000")), int(q.get("block", "65536"))
    data = pattern(block)
    write = start_response("200 OK", [("Content-Length", str(n * block))])
    done = 0
    try:
        for _ in range(n):
            write(data)
            done += block
            with _lock:
                _marks[k + "-progress"] = [done]
    except Exception as e:
        mark(k, "raised %s" % type(e).__name__)
        raise
    finally:
        mark(k, "wrote %d" % done)
    return Closing(k, [])


def echo(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(n)
    return _ok(start_response, data, extra=[("X-Input-Type", type(environ["wsgi.input"]).__name__)])


ROUTES = {
    "respond": respond,
    "env": env,
    "input": input_ops,
    "mark": mark_app,
    "marks": marks_app,
    "slow": slow_times,
    "sr-twice": sr_twice,
    "sr-excinfo-before": sr_excinfo_before,
    "sr-excinfo-after": sr_excinfo_after,
    "sr-bad": sr_bad,
    "sr-kw": sr_kw,
    "lazy-bad": lazy_bad,
    "lazy-ok": lazy_ok,
    "str-chunk": str_chunk,
    "raise-gen": raise_gen,
    "closing": closing,
    "file": file_app,
    "disc": disc,
    "produce": produce,
    "write-loop": write_loop,
    "echo": echo,
    "hints": hints,
    "hints-bad": hints_bad,
}


def router(environ, start_response):
    """Routes on the last path segment, so any prefix (url_prefix tests,
    odd targets) still reaches an app; unknown paths get the environ."""
    name = environ["PATH_INFO"].rsplit("/", 1)[-1]
    return ROUTES.get(name, env)(environ, start_response)
