"""The access log: one line per response on the ``waitress_c.access`` logger.

The C core collects each response's facts where they are known (the status
and body bytes actually sent, the time it took, the request line) and calls
an :class:`AccessLog` on the worker that served the request, the GIL held;
that covers the server's own error responses (400, 413, 431, 500) too,
which a WSGI middleware never sees.  The event loop never runs Python.

The format uses gunicorn's atoms, ``%(name)s``:

====================  ====================================================
``h``                 remote address (after trusted proxy headers)
``l``                 ``-``
``u``                 remote user (``REMOTE_USER``), else ``-``
``t``                 time of the response, ``[30/Nov/2026:13:39:46 +0000]``
``r``                 request line, ``GET /path?q=1 HTTP/1.1``
``m``                 request method
``U``                 URL path, without the query
``q``                 query string
``H``                 protocol, ``HTTP/1.1``
``s``                 status code
``B``                 body bytes sent
``b``                 body bytes sent, ``-`` for none
``f``                 ``Referer`` header
``a``                 ``User-Agent`` header
``T``                 duration, whole seconds
``M``                 duration, milliseconds
``D``                 duration, microseconds
``L``                 duration, seconds with six decimals
``p``                 process id
``{name}i``           request header ``name``
``{name}o``           response header ``name``
``{name}e``           environ variable ``name``
====================  ====================================================

A missing value is written ``-``.
"""

from __future__ import annotations

import logging
import os
import re
import time

__all__ = ["AccessLog", "COMBINED"]

# Apache's combined log format.
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

_ATOM = re.compile(r"%\(([^)]*)\)")

logger = logging.getLogger("waitress_c.access")


def check_format(fmt: str) -> str:
    """Refuse a format with an unknown atom (at start-up, not per request)."""
    _compile(fmt)
    return fmt


def _env(r, key):
    env = r[0]
    v = env.get(key) if env is not None else None
    return v if v else "-"


def _remote(r):
    env = r[0]
    v = env.get("REMOTE_ADDR") if env is not None else r[1]
    return v or "-"


def _query(r):
    t = r[3] or ""
    return t.split("?", 1)[1] if "?" in t else "-"


# Each atom's value from the record r = (environ or None, peer, method,
# target, protocol, status, body bytes, microseconds, time, headers).
_GETTERS = {
    "h": _remote,
    "l": lambda r: "-",
    "u": lambda r: _env(r, "REMOTE_USER"),
    "t": lambda r: _clf_time(r[8]),
    "r": lambda r: "%s %s %s" % (r[2] or "-", r[3] or "-", r[4] or "-"),
    "m": lambda r: r[2] or "-",
    "U": lambda r: (r[3] or "-").split("?", 1)[0],
    "q": _query,
    "H": lambda r: r[4] or "-",
    "s": lambda r: r[5] or "-",
    "B": lambda r: r[6],
    "b": lambda r: r[6] or "-",
    "f": lambda r: _env(r, "HTTP_REFERER"),
    "a": lambda r: _env(r, "HTTP_USER_AGENT"),
    "T": lambda r: r[7] // 1000000,
    "M": lambda r: r[7] // 1000,
    "D": lambda r: r[7],
    "L": lambda r: "%.6f" % (r[7] / 1e6),
    "p": lambda r: os.getpid(),
}


def _header_getter(key: str, kind: str):
    if kind == "i":
        name = "HTTP_" + key.upper().replace("-", "_")
        return lambda r: _env(r, name)
    if kind == "e":
        return lambda r: _env(r, key)
    low = key.lower()

    def response_header(r):
        for k, v in r[9] or ():
            if k.lower() == low:
                return v
        return "-"

    return response_header


def _compile(fmt: str):
    """The getters of the atoms ``fmt`` uses, by name; checks the format."""
    getters = {}
    for name in _ATOM.findall(fmt):
        if name in _GETTERS:
            getters[name] = _GETTERS[name]
        elif len(name) > 3 and name[0] == "{" and name[-2] == "}" and name[-1] in "ioe":
            getters[name] = _header_getter(name[1:-2], name[-1])
        else:
            raise ValueError("unknown access log atom %%(%s)s" % name)
    try:
        fmt % {k: "-" for k in getters}
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError("bad access log format %r: %s" % (fmt, exc)) from None
    return tuple(getters.items())


_clf_cache = [None, ""]


def _clf_time(when: float) -> str:
    """``[30/Nov/2026:13:39:46 +0000]`` in local time, once a second."""
    sec = int(when)
    if _clf_cache[0] != sec:
        _clf_cache[0] = sec
        _clf_cache[1] = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(sec))
    return _clf_cache[1]


class AccessLog:
    """Called by the core once per response; see the module docstring."""

    def __init__(self, fmt: str = COMBINED) -> None:
        self.fmt = fmt
        self.getters = _compile(fmt)

    def __call__(
        self, env, peer, method, target, proto, status, nbytes, micros, headers
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        r = (env, peer, method, target, proto, status, nbytes, micros, time.time(), headers)
        logger.info("%s", self.fmt % {k: get(r) for k, get in self.getters})
