"""WSGI applications for tests/test_hardening_input.py.  ``router`` adds a
few routes to apps_http's and falls back to it (so /env, /echo... work)."""

import json
import os

import apps_http


def _json(start_response, obj):
    body = json.dumps(obj).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def seek(environ, start_response):
    """POST a JSON list of [offset, whence] pairs: each is applied to
    wsgi.input in turn; reports the result or the exception of each, and
    what tell() and read() say afterwards."""
    inp = environ["wsgi.input"]
    n = int(environ.get("CONTENT_LENGTH") or 0)
    ops = json.loads(inp.read(n))
    out = []
    for off, whence in ops:
        try:
            out.append(["ok", inp.seek(off, whence)])
        except Exception as e:  # reported, not raised: the test reads it
            out.append([type(e).__name__, str(e)])
        try:
            out.append(["tell", inp.tell(), inp.read(2).decode("latin-1")])
        except Exception as e:
            out.append(["tell-failed", type(e).__name__])
    return _json(start_response, out)


def set_tmpdir(environ, start_response):
    """?d=DIR: point TMPDIR (the process environment) at DIR."""
    d = environ["QUERY_STRING"].partition("d=")[2]
    os.environ["TMPDIR"] = d
    return _json(start_response, {"TMPDIR": os.environ["TMPDIR"]})


def input_path(environ, start_response):
    """Where wsgi.input lives: the target of its descriptor, or null for a
    body held in memory; and how much of the body it holds."""
    inp = environ["wsgi.input"]
    try:
        fd = inp.fileno()
    except Exception:
        where = None
    else:
        where = os.readlink("/proc/self/fd/%d" % fd)
    return _json(start_response, {"where": where, "len": len(inp.read())})


ROUTES = {"seek": seek, "set-tmpdir": set_tmpdir, "input-path": input_path}


def router(environ, start_response):
    name = environ["PATH_INFO"].rsplit("/", 1)[-1]
    app = ROUTES.get(name)
    if app is None:
        return apps_http.router(environ, start_response)
    return app(environ, start_response)
