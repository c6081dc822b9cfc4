"""The access log: one line per response on the ``waitress_c.access`` logger.

The C core collects each response's facts where they are known (the status
and body bytes actually sent, the time it took, the request line) and calls
an :class:`AccessLog` on the worker that served the request, the GIL held;
that covers the server's own error responses (400, 413, 431, 500) too,
which a WSGI middleware never sees.  The event loop never runs Python.
Where the lines go is the logging configuration's business: with
``access_logfile`` (or ``access_log`` on the command line),
``waitress_c.logs`` gives the logger a handler that writes the bare line.

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

Every value but the numbers is escaped, the way nginx's ``escape=default``
escapes its access log: C0 controls (0x00-0x1F), DEL, C1 controls
(0x80-0x9F: a header's bytes arrive as latin-1, so 0x85 is U+0085, a line
break to a Unicode-aware reader, and 0x9B a terminal's CSI), ``"`` and
``\\`` are written ``\\xHH``, U+2028 and U+2029 ``\\uHHHH``: a client
can neither start a line nor forge a field of the combined format.  Other
characters, latin-1 letters or an application's Unicode, are kept.  A
value is cut to :data:`FIELD_CAP` characters, escapes included, and then
ends with ``...``.  :func:`escape` is also how the server writes a path or
a proxy header in its own error lines.
"""

from __future__ import annotations

import logging
import operator
import os
import re
import time

__all__ = ["AccessLog", "COMBINED", "FIELD_CAP", "escape"]

# Apache's combined log format.
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

_ATOM = re.compile(r"%\(([^)]*)\)")

logger = logging.getLogger("waitress_c.access")

# The longest value written, in characters, escapes and the marker
# included: a 64 KiB User-Agent costs a log line of 2 KiB, not 64.
FIELD_CAP = 2048
_CUT = "..."

# What escape() rewrites: C0, DEL, C1, the quote and the backslash (so an
# escape can be told from a client's literal "\\x0A"), and U+2028/U+2029.
# With C0 and C1 that is every character str.splitlines breaks a line at.
_UNSAFE = re.compile('[\x00-\x1f"\\\\\x7f-\x9f\u2028\u2029]')
_UNSAFE_NO_QUOTE = re.compile("[\x00-\x1f\\\\\x7f-\x9f\u2028\u2029]")
_ESCAPES = {chr(c): "\\x%02X" % c for c in [*range(0x20), 0x22, 0x5C, *range(0x7F, 0xA0)]}
_ESCAPES.update({"\u2028": "\\u2028", "\u2029": "\\u2029"})


def _escape_match(m: re.Match) -> str:
    return _ESCAPES[m.group()]


def _clean(s: str) -> bool:
    """True when s needs no escape: the fast test for nearly every value
    (twice as fast as _UNSAFE.search).  Every character _UNSAFE matches is
    unprintable, or a quote or a backslash; a False can be a value with
    only another unprintable character, which escape() then keeps."""
    return s.isprintable() and '"' not in s and "\\" not in s


def escape(value: str, cap: int = FIELD_CAP, *, quotes: bool = True) -> str:
    """``value`` safe for one log line: see the module docstring.

    ``quotes=False`` keeps ``"`` as it is: for the proxy header warnings,
    whose value comes last, unquoted, in waitress's words.
    """
    if value.__class__ is not str:
        value = str(value)
    if len(value) <= cap and _clean(value):
        return value
    # Escaping only lengthens: cap + 1 characters are enough to know.  A
    # sub() calls back once an escape, where str.translate with a table
    # looks every character up: 6 us for a User-Agent with one C1 byte.
    out = (_UNSAFE if quotes else _UNSAFE_NO_QUOTE).sub(_escape_match, value[: cap + 1])
    if len(out) <= cap:
        return out
    cut = max(cap - len(_CUT), 0)
    # Every backslash in out starts an escape (4 or 6 characters): never
    # keep half of one.
    i = out.rfind("\\", max(cut - 5, 0), cut)
    if i >= 0 and i + (6 if out[i + 1] == "u" else 4) > cut:
        cut = i
    return out[:cut] + _CUT


def check_format(fmt: str) -> str:
    """Refuse a format with an unknown atom (at start-up, not per request)."""
    _compile(fmt)
    return fmt


def _env(r, key):
    env = r[0]
    v = env.get(key) if env is not None else None
    if not v:
        return "-"
    return v if v.__class__ is str else str(v)


def _remote(r):
    env = r[0]
    if env is None:
        return r[1] or "-"
    return _env(r, "REMOTE_ADDR")


def _query(r):
    t = r[3] or ""
    return t.split("?", 1)[1] if "?" in t else "-"


# Each atom's value from the record r = (environ or None, peer, method,
# target, protocol, status, body bytes, microseconds, time, headers): a
# str, except for the _NUMBERS.
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

# Numbers (or "-"), formatted by the server: never escaped.
_NUMBERS = frozenset("sBbTMDLp")


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
                return v if v.__class__ is str else str(v)
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


# (second, text), replaced whole: a reader sees either pair, never the new
# second with the old text (see the free-threading section of
# docs/design.rst).
_clf_cache: tuple = (None, "")


def _clf_time(when: float) -> str:
    """``[30/Nov/2026:13:39:46 +0000]`` in local time, once a second."""
    global _clf_cache
    sec = int(when)
    cached_sec, text = _clf_cache
    if cached_sec != sec:
        text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(sec))
        _clf_cache = (sec, text)
    return text


class AccessLog:
    """Called by the core once per response; see the module docstring."""

    def __init__(self, fmt: str = COMBINED) -> None:
        self.fmt = fmt
        self.getters = _compile(fmt)
        self._text_keys = tuple(k for k, _ in self.getters if k not in _NUMBERS)
        keys = self._text_keys
        # The text values of a line, as a tuple.
        if len(keys) > 1:
            self._texts = operator.itemgetter(*keys)
        else:
            self._texts = lambda values: tuple(values[k] for k in keys)

    def __call__(
        self, env, peer, method, target, proto, status, nbytes, micros, headers
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        r = (env, peer, method, target, proto, status, nbytes, micros, time.time(), headers)
        values = {k: get(r) for k, get in self.getters}
        # One test of every text value at once (_clean, inlined): nearly
        # every line is clean and short, and then escape() is not called.
        joined = "".join(self._texts(values))
        if (
            len(joined) > FIELD_CAP
            or not joined.isprintable()
            or '"' in joined
            or "\\" in joined
        ):
            for k in self._text_keys:
                values[k] = escape(values[k])
        logger.info("%s", self.fmt % values)
