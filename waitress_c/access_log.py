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
from typing import Any

__all__ = ["AccessLog", "COMBINED"]

# Apache's combined log format.
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

_ATOM = re.compile(r"%\(([^)]*)\)")
_SIMPLE = set("hlutrmUqHsBbfaTMDLp")

logger = logging.getLogger("waitress_c.access")


def check_format(fmt: str) -> str:
    """Refuse a format with an unknown atom (at start-up, not per request)."""
    for name in _ATOM.findall(fmt):
        if name in _SIMPLE:
            continue
        if len(name) > 3 and name[0] == "{" and name[-2] == "}" and name[-1] in "ioe":
            continue
        raise ValueError("unknown access log atom %%(%s)s" % name)
    try:
        fmt % _Atoms(None, None, "", None, None, None, 0, 0, 0, None)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError("bad access log format %r: %s" % (fmt, exc)) from None
    return fmt


class _Atoms:
    """The mapping ``fmt % atoms`` reads: each value computed on demand."""

    __slots__ = (
        "env", "peer", "method", "target", "proto", "status", "nbytes",
        "micros", "headers", "when",
    )

    def __init__(self, env, peer, method, target, proto, status, nbytes, micros, when, headers):
        self.env = env
        self.peer = peer
        self.method = method
        self.target = target
        self.proto = proto
        self.status = status
        self.nbytes = nbytes
        self.micros = micros
        self.when = when
        self.headers = headers

    def _env(self, key):
        env = self.env
        v = env.get(key) if env is not None else None
        return v if v else "-"

    def __getitem__(self, name: str) -> Any:
        first = name[:1]
        if first == "h":
            env = self.env
            v = env.get("REMOTE_ADDR") if env is not None else self.peer
            return v or "-"
        if first == "r":
            return "%s %s %s" % (self.method or "-", self.target or "-", self.proto or "-")
        if first == "s":
            return self.status or "-"
        if first == "b":
            return self.nbytes or "-"
        if first == "B":
            return self.nbytes
        if first == "t":
            return _clf_time(self.when)
        if first == "f":
            return self._env("HTTP_REFERER")
        if first == "a":
            return self._env("HTTP_USER_AGENT")
        if first == "l":
            return "-"
        if first == "u":
            return self._env("REMOTE_USER")
        if first == "m":
            return self.method or "-"
        if first == "U":
            return (self.target or "-").split("?", 1)[0]
        if first == "q":
            t = self.target or ""
            return t.split("?", 1)[1] if "?" in t else "-"
        if first == "H":
            return self.proto or "-"
        if first == "D":
            return self.micros
        if first == "M":
            return self.micros // 1000
        if first == "T":
            return self.micros // 1000000
        if first == "L":
            return "%.6f" % (self.micros / 1e6)
        if first == "p":
            return os.getpid()
        if first == "{":
            key, kind = name[1:-2], name[-1]
            if kind == "i":
                return self._env("HTTP_" + key.upper().replace("-", "_"))
            if kind == "e":
                return self._env(key)
            low = key.lower()
            for k, v in self.headers or ():
                if k.lower() == low:
                    return v
            return "-"
        raise KeyError(name)


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
        self.fmt = check_format(fmt)

    def __call__(
        self, env, peer, method, target, proto, status, nbytes, micros, headers
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        atoms = _Atoms(env, peer, method, target, proto, status, nbytes, micros, time.time(), headers)
        logger.info("%s", self.fmt % atoms)
