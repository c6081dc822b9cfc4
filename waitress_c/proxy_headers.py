"""Proxy headers: believe a trusted reverse proxy, hide what it did not send.

``proxy_headers_middleware`` wraps the application the way waitress does
(reference section 3.25).  For a request from the trusted proxy, the trusted
headers among ``Forwarded`` (RFC 7239) and ``X-Forwarded-For/-Host/-Proto/
-Port/-By`` rewrite REMOTE_ADDR, REMOTE_HOST, REMOTE_PORT, SERVER_NAME,
SERVER_PORT, HTTP_HOST and ``wsgi.url_scheme``; the trusted headers are cut
down to the trusted hops.  Every other proxy header is removed from the
environ when ``clear_untrusted`` is on (the default), so an application never
sees one it should not believe.

A malformed trusted header is logged and answered with 400: the middleware
raises ``waitress_c._core.BadRequest``, which the core turns into its usual
error response.

The middleware runs on every request by default, so a request without any
proxy header costs six dictionary look-ups and nothing else.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterable, NamedTuple

from waitress_c.access_log import escape

__all__ = [
    "MalformedProxyHeader",
    "PROXY_HEADERS",
    "clear_untrusted_headers",
    "parse_proxy_headers",
    "proxy_headers_middleware",
    "undquote",
    "wrap_app",
]

logger = logging.getLogger("waitress_c")

FORWARDED = "HTTP_FORWARDED"
X_FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"
X_FORWARDED_HOST = "HTTP_X_FORWARDED_HOST"
X_FORWARDED_PROTO = "HTTP_X_FORWARDED_PROTO"
X_FORWARDED_PORT = "HTTP_X_FORWARDED_PORT"
X_FORWARDED_BY = "HTTP_X_FORWARDED_BY"

# The environ keys of every proxy header.
PROXY_HEADERS = frozenset(
    (
        FORWARDED,
        X_FORWARDED_FOR,
        X_FORWARDED_HOST,
        X_FORWARDED_PROTO,
        X_FORWARDED_PORT,
        X_FORWARDED_BY,
    )
)

# RFC 9110 5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE,
# qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text,
# quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ).
_QUOTED_STRING = re.compile(
    r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"\Z'
)
_QUOTED_PAIR = re.compile(r"\\([\t !-~\x80-\xff])")


class MalformedProxyHeader(Exception):
    """A trusted proxy header that cannot be used: ``header`` is its name as
    shown in the log and in the 400 body, ``reason`` what is wrong,
    ``value`` the offending value."""

    def __init__(self, header: str, reason: str, value: str) -> None:
        super().__init__(header, reason, value)
        self.header = header
        self.reason = reason
        self.value = value


class ForwardedElement(NamedTuple):
    by: str
    for_: str
    host: str
    proto: str


def undquote(value: str) -> str:
    """Remove the quotes and backslash escapes of a quoted-string; return a
    value without quotes as it is; raise ValueError for anything between
    (one quote, or a quoted-string that is not valid)."""
    starts, ends = value.startswith('"'), value.endswith('"')
    if starts and ends and _QUOTED_STRING.match(value):
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if not starts and not ends:
        return value
    raise ValueError("Invalid quoting in value")


def proxy_headers_middleware(
    app: Callable[..., Any],
    trusted_proxy: str | None = None,
    trusted_proxy_count: int = 1,
    trusted_proxy_headers: Iterable[str] | None = None,
    clear_untrusted: bool = True,
    log_untrusted: bool = False,
    logger: logging.Logger = logger,
) -> Callable[..., Any]:
    """Wrap the WSGI ``app`` with the proxy header rules (section 3.25)."""
    trusted_headers = frozenset(trusted_proxy_headers or ())

    def translate_proxy_headers(environ, start_response):
        if not (
            FORWARDED in environ
            or X_FORWARDED_FOR in environ
            or X_FORWARDED_HOST in environ
            or X_FORWARDED_PROTO in environ
            or X_FORWARDED_PORT in environ
            or X_FORWARDED_BY in environ
        ):
            # Nothing to believe and nothing to clear.
            return app(environ, start_response)
        untrusted = PROXY_HEADERS
        peer = environ.get("REMOTE_ADDR")
        if trusted_proxy == "*" or peer == trusted_proxy:
            try:
                untrusted = parse_proxy_headers(
                    environ, trusted_proxy_count, trusted_headers, logger
                )
            except MalformedProxyHeader as exc:
                # The reason may quote the value: both are the client's.
                logger.warning(
                    'Malformed proxy header "%s" from "%s": %s value: %s',
                    exc.header,
                    peer,
                    escape(exc.reason, quotes=False),
                    escape(exc.value, quotes=False),
                )
                raise bad_request('Header "%s" malformed.' % exc.header) from None
        if clear_untrusted:
            clear_untrusted_headers(environ, untrusted, log_untrusted, logger)
        return app(environ, start_response)

    return translate_proxy_headers


def wrap_app(app: Callable[..., Any], adj: Any) -> Callable[..., Any]:
    """``app`` wrapped as an ``Adjustments`` asks: with the middleware when
    a proxy is trusted or untrusted headers are cleared (the default),
    unchanged otherwise."""
    if not (adj.trusted_proxy or adj.clear_untrusted_proxy_headers):
        return app
    return proxy_headers_middleware(
        app,
        trusted_proxy=adj.trusted_proxy,
        trusted_proxy_count=adj.trusted_proxy_count,
        trusted_proxy_headers=adj.trusted_proxy_headers,
        clear_untrusted=adj.clear_untrusted_proxy_headers,
        log_untrusted=adj.log_untrusted_proxy_headers,
    )


def bad_request(detail: str) -> Exception:
    """The core's 400 exception.  Imported here, not at module level, so
    that this module works (and is tested) without the C extension."""
    from waitress_c._core import BadRequest

    return BadRequest(detail)


def _only_value(environ: dict, key: str, name: str) -> str:
    """The unquoted value of a single-valued header ('' when absent)."""
    try:
        value = undquote(environ.get(key, ""))
        if "," in value:
            raise ValueError(
                "Unspecified behavior for multiple values found in header"
            )
    except ValueError as exc:
        raise MalformedProxyHeader(name, str(exc), environ[key]) from None
    return value


def _last_hops(environ: dict, key: str, name: str, count: int) -> list[str]:
    """The unquoted trusted (last ``count``) hops of a comma-separated
    header; the header itself is cut down to those hops."""
    raw = environ[key].split(",")
    try:
        hops = [undquote(hop.strip()) for hop in raw]
    except ValueError as exc:
        raise MalformedProxyHeader(name, str(exc), environ[key]) from None
    environ[key] = ",".join(raw[-count:]).strip()
    return hops[-count:]


def _parse_forwarded(value: str, logger: logging.Logger) -> list[ForwardedElement]:
    """The elements of a Forwarded header (RFC 7239 section 4)."""
    elements = []
    for raw_element in value.split(","):
        fields = {"by": "", "for": "", "host": "", "proto": ""}
        for pair in raw_element.strip().split(";"):
            pair = pair.lower()
            if not pair:
                continue
            token, equals, item = pair.partition("=")
            if not equals:
                raise ValueError('Invalid forwarded-pair missing "="')
            if token.strip() != token:
                raise ValueError("Token may not be surrounded by whitespace")
            if item.strip() != item:
                raise ValueError("Value may not be surrounded by whitespace")
            if token in fields:
                fields[token] = undquote(item)
            else:
                logger.warning("Unknown Forwarded token: %s", escape(token, quotes=False))
        elements.append(
            ForwardedElement(
                fields["by"], fields["for"], fields["host"], fields["proto"]
            )
        )
    return elements


def parse_proxy_headers(
    environ: dict,
    trusted_proxy_count: int,
    trusted_proxy_headers: Iterable[str] | None,
    logger: logging.Logger = logger,
) -> set[str]:
    """Apply the trusted proxy headers to ``environ``.

    Returns the environ keys of the proxy headers that are not trusted
    (those the caller removes).  Raises MalformedProxyHeader.
    """
    trusted = frozenset(trusted_proxy_headers or ())
    count = trusted_proxy_count
    untrusted = set(PROXY_HEADERS)
    client = None
    host = proto = port = ""
    forwarded = ""

    if "x-forwarded-for" in trusted and X_FORWARDED_FOR in environ:
        hops = _last_hops(environ, X_FORWARDED_FOR, "X-Forwarded-For", count)
        # An IPv6 address without a port gets brackets.
        client = hops[0]
        if "." not in client and ":" in client and client[-1] != "]":
            client = "[%s]" % client
        untrusted.discard(X_FORWARDED_FOR)

    if "x-forwarded-host" in trusted and X_FORWARDED_HOST in environ:
        host = _last_hops(environ, X_FORWARDED_HOST, "X-Forwarded-Host", count)[0]
        untrusted.discard(X_FORWARDED_HOST)

    if "x-forwarded-proto" in trusted:
        proto = _only_value(environ, X_FORWARDED_PROTO, "X-Forwarded-Proto")
        untrusted.discard(X_FORWARDED_PROTO)

    if "x-forwarded-port" in trusted:
        port = _only_value(environ, X_FORWARDED_PORT, "X-Forwarded-Port")
        untrusted.discard(X_FORWARDED_PORT)

    if "x-forwarded-by" in trusted:
        # Not used, but kept for the application.
        untrusted.discard(X_FORWARDED_BY)

    if "forwarded" in trusted:
        # Forwarded excludes every X-Forwarded-* header.
        untrusted = set(PROXY_HEADERS - {FORWARDED})
        forwarded = environ.get(FORWARDED) or ""

    if forwarded:
        raw = forwarded.split(",")
        try:
            elements = _parse_forwarded(forwarded, logger)
        except ValueError as exc:
            raise MalformedProxyHeader("Forwarded", str(exc), forwarded) from None
        environ[FORWARDED] = ",".join(raw[-count:]).strip()
        # Each value comes from the oldest trusted element that has one.
        last = elements[-1]
        host, proto, port = last.host, last.proto, ""
        for element in reversed(elements[-count:]):
            client = element.for_ or client
            host = element.host or host
            proto = element.proto or proto

    if proto:
        proto = proto.lower()
        if proto not in ("http", "https"):
            raise MalformedProxyHeader(
                "Forwarded Proto=" if forwarded else "X-Forwarded-Proto",
                "unsupported proto value",
                proto,
            )
        environ["wsgi.url_scheme"] = proto
        if not port:
            port = "443" if proto == "https" else "80"

    if host:
        environ["HTTP_HOST"] = host
        if ":" in host and host[-1] != "]":
            # A port in the host wins over X-Forwarded-Port and the proto.
            name, port = host.rsplit(":", 1)
            environ["SERVER_NAME"] = name.strip()
        else:
            environ["SERVER_NAME"] = host
            default = {"http": "80", "https": "443"}.get(
                environ.get("wsgi.url_scheme")
            )
            if port and port != default:
                environ["HTTP_HOST"] = "%s:%s" % (host, port)

    if port:
        environ["SERVER_PORT"] = port

    if client:
        if ":" in client and client[-1] != "]":
            addr, client_port = client.rsplit(":", 1)
            environ["REMOTE_ADDR"] = strip_brackets(addr.strip())
            environ["REMOTE_PORT"] = client_port.strip()
        else:
            environ["REMOTE_ADDR"] = strip_brackets(client.strip())
        environ["REMOTE_HOST"] = environ["REMOTE_ADDR"]

    return untrusted


def strip_brackets(addr: str) -> str:
    if addr.startswith("[") and addr.endswith("]"):
        return addr[1:-1]
    return addr


def clear_untrusted_headers(
    environ: dict,
    untrusted: Iterable[str],
    log_warning: bool = False,
    logger: logging.Logger = logger,
) -> None:
    """Remove the ``untrusted`` environ keys; log their names if asked."""
    removed = sorted(key for key in untrusted if environ.pop(key, None) is not None)
    if log_warning and removed:
        names = [
            "-".join(part.capitalize() for part in key[5:].split("_"))
            for key in removed
        ]
        logger.warning(
            "Removed untrusted headers (%s). Waitress recommends these be "
            "removed upstream.",
            ", ".join(names),
        )
