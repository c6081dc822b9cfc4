"""Adjustments: every tunable setting of the server, converted and checked.

``OPTIONS`` below is the single description of the 34 settings waitress
calls adjustments: name, converter, default, command-line value name,
help section and help text.  ``Adjustments(**kw)`` (what ``serve()``,
``create_server()`` and PasteDeploy use), the ``waitress-c-serve`` flags and
``--help`` (``runner.py``) and the reference in ``docs/configuration.rst``
(``docs/gen_options.py``) are all generated from it.

Values may be given as Python values or as strings (command line, ini
files); each goes through its option's converter, with the same results and
the same errors as waitress.
"""

from __future__ import annotations

import getopt
import os
import socket
import warnings
from typing import Any, Callable, Iterable, NamedTuple

from waitress_c.access_log import COMBINED, check_format
from waitress_c.logs import as_access_logfile, as_error_logfile, aslogconfig

__all__ = [
    "Adjustments",
    "OPTIONS",
    "Option",
    "TRUSTABLE_PROXY_HEADERS",
    "as_socket_list",
    "asbool",
    "host_port",
    "aslevel",
    "aslist",
    "asoctal",
    "asset",
    "slash_fixed_str",
    "str_iftruthy",
]

# The header names trusted_proxy_headers may contain, lowercased.
TRUSTABLE_PROXY_HEADERS = (
    "forwarded",
    "x-forwarded-by",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
)

_TRUTHY = frozenset(("t", "true", "y", "yes", "on", "1"))


# -- converters ----------------------------------------------------------


def asbool(value: Any) -> bool:
    """True for ``t, true, y, yes, on, 1`` (any case, surrounding blanks
    ignored); a bool is returned as is; ``None`` and anything else is
    False (never an error)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUTHY


def aslist(value: str | Iterable[str]) -> list[str]:
    """Split a string on line breaks, then each line on blanks; split each
    item of any other iterable on blanks.  Commas are not separators."""
    if isinstance(value, str):
        value = value.splitlines()
    words: list[str] = []
    for item in value:
        words.extend(item.split())
    return words


def asset(value: str | Iterable[str]) -> set[str]:
    """``aslist`` as a set."""
    return set(aslist(value))


def asoctal(value: str) -> int:
    """Read an octal string (``"600"``, ``"0600"``, ``"0o600"``).  Like
    waitress, an int is refused (``int()`` raises TypeError)."""
    return int(value, 8)


def slash_fixed_str(value: str) -> str:
    """Empty stays empty; anything else becomes one leading slash followed
    by the value without its leading and trailing slashes."""
    value = value.strip()
    if not value:
        return value
    return "/" + value.strip("/")


def str_iftruthy(value: Any) -> str | None:
    """``str(value)``, or None for a false value (``''``, ``None``, 0)."""
    return str(value) if value else None


def access_log_format(value: str) -> str:
    """A format of ``%(atom)s`` fields; unknown atoms are refused."""
    return check_format(str(value))


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def aslevel(value: Any) -> str | None:
    """A logging level name, lowercased (any case accepted); None for an
    empty value."""
    if value is None or not str(value).strip():
        return None
    level = str(value).strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(
            "invalid log level %r (expected one of %s)"
            % (value, ", ".join(LOG_LEVELS))
        )
    return level


def host_port(value: Any) -> str | None:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6; port 0: any free one),
    checked and kept as given; None for an empty value."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    host, port = split_listen_entry(text, -1)
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError("expected HOST:PORT, not %r" % text)
    return text


CERT_REQS = ("none", "optional", "required")


def as_cert_reqs(value: Any) -> str:
    """none, optional or required (any case); gunicorn's numbers 0, 1, 2
    (ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED) too."""
    text = str(int(value) if isinstance(value, int) else value).strip().lower()
    if text in ("0", "1", "2"):
        return CERT_REQS[int(text)]
    if text not in CERT_REQS:
        raise ValueError(
            "invalid cert_reqs %r (expected none, optional or required)" % value
        )
    return text


def as_sni_certs(value: Any) -> list[tuple[str, str]]:
    """sni_certs: words (``aslist``'s) ``CERTFILE`` or
    ``CERTFILE,KEYFILE``, or ``(certfile, keyfile)`` pairs; a certificate
    file without a key file holds its key."""
    if value is None:
        return []
    if isinstance(value, str):
        value = aslist(value)
    pairs: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, (tuple, list)):
            paths = [os.fspath(p) if isinstance(p, os.PathLike) else p
                     for p in item]
            if len(paths) != 2 or not all(isinstance(p, str) and p
                                          for p in paths):
                raise ValueError(
                    "sni_certs: %r is not a (certfile, keyfile) pair" % (item,)
                )
            pairs.append((paths[0], paths[1]))
            continue
        if isinstance(item, os.PathLike):
            path = os.fspath(item)
            if isinstance(path, str):
                pairs.append((path, path))
                continue
        if not isinstance(item, str):
            raise ValueError(
                "sni_certs: %r is not CERTFILE or CERTFILE,KEYFILE" % (item,)
            )
        for word in aslist([item]):
            parts = word.split(",")
            if len(parts) > 2 or not all(parts):
                raise ValueError(
                    "sni_certs: %r is not CERTFILE or CERTFILE,KEYFILE" % word
                )
            pairs.append((parts[0], parts[-1]))
    return pairs


def as_tls_version(value: Any) -> str:
    """1.2 or 1.3 (TLSv1.2 and TLSv1_3 spellings accepted)."""
    text = str(value).strip().lower().replace("tlsv", "").replace("_", ".")
    if text not in ("1.2", "1.3"):
        raise ValueError(
            "invalid tls_min_version %r (expected 1.2 or 1.3)" % value
        )
    return text


def as_socket_list(value: Iterable[Any]) -> list[socket.socket]:
    """Keep the ``socket.socket`` items, silently drop everything else."""
    return [item for item in value if isinstance(item, socket.socket)]


# -- the table -------------------------------------------------------------

STANDARD = "Standard options"
TUNING = "Tuning options"


class Option(NamedTuple):
    """One adjustment.

    ``metavar`` is the name of the value in ``--name=METAVAR``; boolean
    options (converter ``asbool``) have none and get ``--name`` and
    ``--no-name`` instead.  ``shown_default`` is how the default is written
    in the help and the docs.  ``legacy`` marks the options accepted only
    for compatibility with waitress: they have no effect.  ``extra`` marks
    the options waitress does not have.  ``cli`` is the long flag's name
    when it is not the option's name with dashes (``pidfile`` is
    ``--pid``).  ``aliases`` are further flags for an option that takes a
    value, long (``--bind``) or of one letter (``-b``, command line only):
    gunicorn's spellings.
    """

    name: str
    convert: Callable[[Any], Any]
    default: Any
    metavar: str | None
    section: str
    help: str
    shown_default: str
    legacy: bool = False
    extra: bool = False
    cli: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--recv-bytes``."""
        return "--" + (self.cli or self.name.replace("_", "-"))

    @property
    def is_bool(self) -> bool:
        return self.convert is asbool

    @property
    def long_aliases(self) -> tuple[str, ...]:
        return tuple(a for a in self.aliases if a.startswith("--"))

    @property
    def short_aliases(self) -> tuple[str, ...]:
        return tuple(a for a in self.aliases if not a.startswith("--"))


# A paragraph of a help text that starts with four spaces is printed as it
# is (examples); the others are re-wrapped.
OPTIONS: tuple[Option, ...] = (
    Option(
        "host", str, "0.0.0.0", "ADDR", STANDARD,
        "Host name or IP address to listen on; 0.0.0.0 means every IPv4 "
        "address of this machine.  Setting host or port (even to its "
        "default value) makes the server listen on exactly HOST:PORT.  "
        "May not be combined with listen, sockets or unix_socket.",
        "0.0.0.0",
    ),
    Option(
        "port", int, 8080, "PORT", STANDARD,
        "TCP port to listen on, as a number (service names are only "
        "understood inside listen).  May not be combined with listen, "
        "sockets or unix_socket.",
        "8080",
    ),
    Option(
        "ipv4", asbool, True, None, STANDARD,
        "Accept IPv4 addresses when the listen entries are resolved.  "
        "With --no-ipv4, *:PORT listens on the IPv6 wildcard only.",
        "on",
    ),
    Option(
        "ipv6", asbool, True, None, STANDARD,
        "Accept IPv6 addresses when the listen entries are resolved.  "
        "With --no-ipv6, *:PORT listens on the IPv4 wildcard only.  IPv6 "
        "sockets are always IPv6-only (IPV6_V6ONLY).",
        "on",
    ),
    Option(
        "listen", aslist, ["0.0.0.0:8080"], "ip:port", STANDARD,
        "Where to listen: HOST:PORT, [IPV6-ADDRESS]:PORT, or *:PORT for "
        "every interface (IPv4 and IPv6).  PORT may be a service name such "
        "as http; without one, port's value is used.  A host name that "
        "resolves to several addresses gives one socket per address, and "
        "duplicate addresses are dropped.  Repeat the flag (or, in an ini "
        "file or from Python, separate the entries with blanks) to listen "
        "on several sockets.  May not be combined with host, port, sockets "
        "or unix_socket.  Examples:\n\n"
        "    --listen=127.0.0.1:8080\n"
        "    --listen=[::1]:8080\n"
        "    --listen=*:8080\n"
        "    --listen=localhost:http",
        "0.0.0.0:8080",
        aliases=("-b", "--bind"),
    ),
    Option(
        "threads", int, 4, "INT", TUNING,
        "Number of worker threads that run the application.",
        "4",
    ),
    Option(
        "trusted_proxy", str_iftruthy, None, "IP", STANDARD,
        "Address of the reverse proxy whose proxy headers are believed.  "
        "It is compared as a string with the peer address; '*' trusts every "
        "peer, and 'localhost' is the peer address of a Unix socket "
        "connection.",
        "none",
    ),
    Option(
        "trusted_proxy_count", int, None, "INT", STANDARD,
        "How many proxies in front of this server are trusted: that many "
        "of the last entries of X-Forwarded-For, X-Forwarded-Host and "
        "Forwarded are used, the earliest of them giving the client.  "
        "Requires trusted_proxy.",
        "1",
    ),
    Option(
        "trusted_proxy_headers", asset, set(), "LIST", STANDARD,
        "Blank-separated list of the proxy headers believed from the "
        "trusted proxy: x-forwarded-for, x-forwarded-host, "
        "x-forwarded-proto, x-forwarded-port, x-forwarded-by, or forwarded "
        "(RFC 7239, which excludes all the others).  Requires "
        "trusted_proxy.  If trusted_proxy is set without this option, "
        "x-forwarded-proto alone is believed and a DeprecationWarning is "
        "issued.",
        "none",
    ),
    Option(
        "log_untrusted_proxy_headers", asbool, False, None, STANDARD,
        "Log a warning naming the untrusted proxy headers each time some "
        "are removed from a request.",
        "off",
    ),
    Option(
        "clear_untrusted_proxy_headers", asbool, True, None, STANDARD,
        "Remove the proxy headers that are not trusted (Forwarded, "
        "X-Forwarded-For, -Host, -Proto, -Port, -By) from the WSGI environ, "
        "so that the application never sees a forged one.",
        "on",
    ),
    Option(
        "url_scheme", str, "http", "STR", STANDARD,
        "Value of wsgi.url_scheme, unless a trusted proxy header sets it.",
        "http",
    ),
    Option(
        "url_prefix", slash_fixed_str, "", "STR", STANDARD,
        "Path the application is mounted at.  It becomes SCRIPT_NAME "
        "(written with one leading slash and no trailing one) on every "
        "request, and is removed from the front of PATH_INFO when the path "
        "is the prefix or starts with the prefix and a slash.",
        "empty",
    ),
    Option(
        "backlog", int, 1024, "INT", TUNING,
        "Number of connections the kernel queues before they are accepted "
        "(the argument of listen()).",
        "1024",
    ),
    Option(
        "recv_bytes", int, 8192, "INT", TUNING,
        "Accepted for compatibility, with no effect: waitress_c reads up to "
        "64 KiB at a time into one buffer per event loop, whatever this "
        "says.",
        "8192",
    ),
    Option(
        "send_bytes", int, 1, "INT", TUNING,
        "Deprecated since waitress 1.3, and ignored: setting it only "
        "issues a DeprecationWarning.",
        "1",
        legacy=True,
    ),
    Option(
        "outbuf_overflow", int, 1048576, "INT", TUNING,
        "Response bytes waiting to be sent on a connection are kept in "
        "memory up to this many bytes, and in a temporary file beyond.",
        "1048576 (1 MiB)",
    ),
    Option(
        "outbuf_high_watermark", int, 16777216, "INT", TUNING,
        "When more response bytes than this are waiting to be sent on a "
        "connection, the application thread that writes more waits until "
        "the client has read enough of them.",
        "16777216 (16 MiB)",
    ),
    Option(
        "inbuf_overflow", int, 524288, "INT", TUNING,
        "Request bodies are kept in memory up to this many bytes, and in a "
        "temporary file beyond.",
        "524288 (512 KiB)",
    ),
    Option(
        "connection_limit", int, 100, "INT", TUNING,
        "Largest number of client connections open at once.  Further "
        "connections are not refused: they wait in the backlog until one "
        "closes.  Unlike waitress, the listening sockets do not count.",
        "100",
    ),
    Option(
        "cleanup_interval", int, 30, "INT", TUNING,
        "Accepted for compatibility with waitress, where it is the time "
        "between two looks for idle connections; it has no effect: "
        "waitress_c checks every connection's timeouts once a second.",
        "30",
        legacy=True,
    ),
    Option(
        "channel_timeout", int, 120, "INT", TUNING,
        "Seconds a connection may stay idle (nothing received, nothing "
        "sent, no request being served) before it is closed; also the "
        "longest a response may wait without the client taking a byte of "
        "it, and the longest a request head may take to arrive from its "
        "first byte.  Checked every second.",
        "120",
    ),
    Option(
        "log_socket_errors", asbool, True, None, TUNING,
        "Log errors on client connections (a client that goes away early, "
        "a failed accept()) with their tracebacks.",
        "on",
    ),
    Option(
        "max_request_header_size", int, 262144, "INT", TUNING,
        "Largest size of the request line and headers together; a larger "
        "request gets 431 Request Header Fields Too Large.",
        "262144 (256 KiB)",
    ),
    Option(
        "max_request_body_size", int, 1073741824, "INT", TUNING,
        "Largest request body; a larger one gets 413 Request Entity Too "
        "Large.",
        "1073741824 (1 GiB)",
    ),
    Option(
        "expose_tracebacks", asbool, False, None, TUNING,
        "Send the traceback of an exception raised by the application in "
        "the body of the 500 response.  For debugging only: it shows the "
        "application's internals to every client.",
        "off",
    ),
    Option(
        "ident", str_iftruthy, "waitress_c", "STR", STANDARD,
        "Server identity: the value of the Server response header, of "
        "SERVER_SOFTWARE and of the '(generated by ...)' line of error "
        "pages.  An empty value sends no Server header.",
        "waitress_c",
    ),
    Option(
        "asyncore_loop_timeout", int, 1, "INT", TUNING,
        "Accepted for compatibility with waitress, where it is the "
        "select() timeout; it has no effect on waitress_c's event loop.",
        "1",
        legacy=True,
    ),
    Option(
        "asyncore_use_poll", asbool, False, None, TUNING,
        "Accepted for compatibility with waitress, where it chooses poll() "
        "over select(); it has no effect: waitress_c's event loop (libuv) "
        "has no limit on descriptor numbers.",
        "off",
        legacy=True,
    ),
    Option(
        "unix_socket", str, None, "PATH", STANDARD,
        "Listen on a Unix domain socket at this path instead of TCP.  A "
        "stale socket file at the path is removed first (any other kind of "
        "file is left alone); the socket file is not removed at shutdown.  "
        "May not be combined with host, port, listen or sockets.",
        "none",
    ),
    Option(
        "unix_socket_perms", asoctal, 0o600, "PERMS", STANDARD,
        "Permissions, in octal, given to the Unix socket file once it is "
        "bound.",
        "600",
    ),
    Option(
        "sockets", as_socket_list, [], "SOCKETS", STANDARD,
        "Sockets that are already bound, for example by systemd socket "
        "activation, to listen on instead of creating any.  They must be "
        "all TCP or all Unix stream sockets, and the server does not close "
        "them.  Python only: items that are not socket.socket objects are "
        "dropped, so a value given on the command line or in an ini file "
        "means no sockets.  May not be combined with host, port, listen "
        "or unix_socket.",
        "none",
    ),
    Option(
        "channel_request_lookahead", int, 0, "INT", TUNING,
        "How many further requests are read from a connection while one "
        "of its requests is being served.  Above 0, a client that "
        "disconnects is noticed while the application runs: "
        "environ['waitress.client_disconnected']() becomes true.",
        "0",
    ),
    Option(
        "server_name", str, "waitress.invalid", "NAME", STANDARD,
        "Value of SERVER_NAME, unless a trusted X-Forwarded-Host or "
        "Forwarded header sets it.",
        "waitress.invalid",
    ),
    # -- waitress_c's own options (waitress has none of these) --
    Option(
        "shutdown_timeout", float, 30.0, "SECONDS", TUNING,
        "On a graceful stop (SIGINT, SIGTERM or close()), how long the "
        "requests in flight may take to finish.  New connections are "
        "refused from the start of the stop; once this many seconds have "
        "passed, the connections still open are closed, what was cut off is "
        "logged, and the server returns.  0 waits for as long as they "
        "take.",
        "30",
        extra=True,
        aliases=("--graceful-timeout",),
    ),
    Option(
        "workers", int, 1, "INT", TUNING,
        "Number of server processes.  With 1 (the default) the server runs "
        "in this process, as waitress does.  With more, this process binds "
        "the listening sockets, starts that many worker processes that "
        "serve them (each with its own event loop and pool of threads) and "
        "supervises them: a worker that dies is replaced, SIGHUP replaces "
        "them one by one, SIGTTIN and SIGTTOU add and remove one.",
        "1",
        extra=True,
        aliases=("-w",),
    ),
    Option(
        "max_requests", int, 0, "INT", TUNING,
        "Recycle a worker process after it has received this many "
        "requests: it finishes them, exits, and a fresh worker takes its "
        "place (a guard against an application that leaks memory).  0 "
        "never recycles.  Setting it runs the worker processes even with "
        "workers=1.",
        "0",
        extra=True,
    ),
    Option(
        "max_requests_jitter", int, 0, "INT", TUNING,
        "Add a random number of requests between 0 and this to each "
        "worker's max_requests, so that the workers are not all recycled "
        "at the same time.",
        "0",
        extra=True,
    ),
    Option(
        "boot_timeout", float, 60.0, "SECONDS", TUNING,
        "With worker processes: how long a new worker may take to become "
        "ready (application imported, server built and listening).  A "
        "worker not ready by then is killed (SIGKILL) and the failure "
        "logged; during a rolling restart (SIGHUP) the worker it was to "
        "replace keeps serving.  0 waits for as long as it takes.",
        "60",
        extra=True,
    ),
    Option(
        "timeout", float, 0.0, "SECONDS", TUNING,
        "Hung-worker timeout.  A request that has been inside the "
        "application for longer than this is logged (once, with its method, "
        "path and age); with worker processes, a worker whose every thread "
        "is on such a request is replaced: a new worker is started and the "
        "stuck one is stopped gracefully, then killed after "
        "shutdown_timeout; a worker that sends no heartbeat for this long "
        "(at least 10 s: a thread holds the GIL) is killed and replaced.  "
        "0 (the default) checks nothing.",
        "0",
        extra=True,
        aliases=("-t",),
    ),
    Option(
        "access_log", asbool, False, None, STANDARD,
        "Log one line per response, the server's own error responses "
        "included, at INFO on the waitress_c.access logger (route it with "
        "the logging configuration).",
        "off",
        extra=True,
    ),
    Option(
        "access_log_format", access_log_format, COMBINED, "FORMAT", STANDARD,
        "The access log line, in gunicorn's format: %(h)s remote address, "
        "%(t)s time, %(r)s request line, %(s)s status, %(b)s body bytes, "
        "%(f)s referer, %(a)s user agent, %(D)s / %(M)s duration in "
        "microseconds / milliseconds, %({name}i)s a request header, "
        "%({name}o)s a response header; the full list is in the docs.  The "
        "default is Apache's combined format.",
        "combined",
        extra=True,
    ),
    Option(
        "pidfile", str_iftruthy, None, "FILE", STANDARD,
        "Write the pid of the serving process (the supervisor's with "
        "worker processes) to this file once the server listens, and "
        "remove the file when the server stops cleanly (SIGINT, SIGTERM or "
        "close()).  The file is written whole or not at all (a temporary "
        "file in the same directory, renamed), and is removed only if it "
        "still holds that pid.  Its directory must exist.",
        "none",
        extra=True,
        cli="pid",
    ),
    Option(
        "log_level", aslevel, None, "LEVEL", STANDARD,
        "Level of the waitress_c loggers (waitress_c and, unless given "
        "one of its own, waitress_c.access): debug, info, warning, error "
        "or critical, in any case.  With warning, the 'Serving on' lines "
        "and the access log are not shown.  When it is not given, the "
        "command line sets info if nothing else gave the waitress_c "
        "logger a level, and so do error_logfile and access_logfile; "
        "otherwise serve() leaves the level alone.",
        "info",
        extra=True,
    ),
    Option(
        "log_config", aslogconfig, None, "FILE", STANDARD,
        "A logging configuration applied before the server starts: a "
        "logging.config.dictConfig dictionary in a .json or .toml file, "
        "or a logging.config.fileConfig ini file (any other name).  Loggers "
        "that exist already are kept (disable_existing_loggers defaults to "
        "false).  A file that cannot be read or applied is refused at "
        "start-up.  Without --error-logfile, waitress_c then adds no "
        "handler of its own.",
        "none",
        extra=True,
    ),
    Option(
        "error_logfile", as_error_logfile, None, "PATH", STANDARD,
        "Write the waitress_c logger's lines (start-up, stop, errors) to "
        "this file, opened for appending, as '[2026-12-07 16:50:01 +0000] "
        "[PID] [INFO] message'; - is stderr, which is also where the "
        "command line writes them by default.  SIGUSR1 reopens the file.  "
        "Its directory must exist.",
        "none (stderr on the command line)",
        extra=True,
    ),
    Option(
        "access_logfile", as_access_logfile, None, "PATH", STANDARD,
        "Write the access log to this file, opened for appending, one bare "
        "line per response; - is stdout.  Turns access_log on.  SIGUSR1 "
        "reopens the file.  Its directory must exist.  Without it, the "
        "access log goes where the error log goes.",
        "none",
        extra=True,
    ),
    Option(
        "metrics", host_port, None, "HOST:PORT", STANDARD,
        "Serve Prometheus metrics (text format) at http://HOST:PORT/metrics, "
        "on a listener of their own: requests by status and method, a "
        "duration histogram, bytes, connections, the task queue, busy "
        "threads; with worker processes, one scrape of the supervisor "
        "covers them all.  Off by default.  Bind it to a private address.",
        "off",
        extra=True,
    ),
    Option(
        "certfile", str_iftruthy, None, "FILE", STANDARD,
        "Serve HTTPS: the server's certificate in PEM, followed by the "
        "intermediate certificates of its chain (a fullchain.pem).  Every "
        "listener but the insecure_listen ones then speaks TLS (1.2 and "
        "1.3; ALPN h2, with http2, and http/1.1), "
        "wsgi.url_scheme is https, and a plain HTTP request gets a 400 "
        "saying so.",
        "none",
        extra=True,
    ),
    Option(
        "sni_certs", as_sni_certs, [], "CERTFILE[,KEYFILE]", STANDARD,
        "With certfile: more certificates, for more names, each chosen when "
        "a client asks for one of the DNS names in its subjectAltName "
        "(SNI): the name itself first, then a wildcard for it "
        "(*.example.com stands for one label).  certfile serves every "
        "other name and clients that send none.  Each is a chain in PEM, "
        "with its key in KEYFILE or in the same file; encrypted keys take "
        "keyfile's password.  Repeat the flag to give several (a path may "
        "hold neither a comma nor a blank).  SIGHUP reloads them with "
        "certfile.  The application sees the name in SSL_TLS_SNI.",
        "none",
        extra=True,
    ),
    Option(
        "keyfile", str_iftruthy, None, "FILE", STANDARD,
        "The private key of certfile, in PEM; by default it is read from "
        "certfile itself.",
        "certfile",
        extra=True,
    ),
    Option(
        "keyfile_password_file", str_iftruthy, None, "FILE", STANDARD,
        "A file whose first line is the password of an encrypted keyfile.  "
        "The password itself is never given on the command line.",
        "none",
        extra=True,
    ),
    Option(
        "keyfile_password_env", str_iftruthy, None, "NAME", STANDARD,
        "The name of an environment variable that holds the password of an "
        "encrypted keyfile (instead of keyfile_password_file).",
        "none",
        extra=True,
    ),
    Option(
        "ca_certs", str_iftruthy, None, "FILE", STANDARD,
        "CA certificates in PEM that sign the client certificates, for "
        "cert_reqs.",
        "none",
        extra=True,
    ),
    Option(
        "cert_reqs", as_cert_reqs, "none", "WHEN", STANDARD,
        "Client certificates (mutual TLS): none (not asked for), optional "
        "(asked for; a client without one is served, one with a certificate "
        "that ca_certs does not verify is refused) or required (a client "
        "without a valid one is refused).  The application sees "
        "SSL_CLIENT_S_DN, SSL_CLIENT_I_DN, SSL_CLIENT_VERIFY and "
        "SSL_CLIENT_CERT in its environ.",
        "none",
        extra=True,
    ),
    Option(
        "ciphers", str_iftruthy, None, "LIST", STANDARD,
        "The TLS 1.2 cipher suites, in OpenSSL's syntax (TLS 1.3's are "
        "OpenSSL's defaults).  By default ECDHE+AESGCM:ECDHE+CHACHA20: "
        "forward secrecy and AEAD ciphers only, no CBC suites.",
        "ECDHE+AESGCM:ECDHE+CHACHA20",
        extra=True,
    ),
    Option(
        "tls_min_version", as_tls_version, "1.2", "VERSION", STANDARD,
        "The oldest TLS version accepted: 1.2 or 1.3.",
        "1.2",
        extra=True,
    ),
    Option(
        "tls_session_cache", int, 4096, "INT", TUNING,
        "TLS session resumption: how many sessions each process keeps, in "
        "memory, for clients that come back (a resumed handshake skips the "
        "certificate and its signature).  Sessions are named by TLS 1.2 "
        "session IDs and TLS 1.3 tickets that carry no secret, so there is "
        "no ticket key; the oldest is dropped when full; a session resumes "
        "only under the certificate it was made with; a reload starts an "
        "empty cache.  0 turns resumption off.",
        "4096",
        extra=True,
    ),
    Option(
        "tls_session_timeout", int, 300, "SECONDS", TUNING,
        "How long a TLS session may be resumed after its full handshake, "
        "however often it is (at most 604800, a week).",
        "300 (5 minutes)",
        extra=True,
    ),
    Option(
        "insecure_listen", aslist, [], "ip:port", STANDARD,
        "With certfile: more listeners, in listen's form, that speak plain "
        "HTTP beside the TLS ones (wsgi.url_scheme is url_scheme there, "
        "and the trusted proxy headers apply): a port for a proxy or a "
        "health check on a private address, or port 80 for redirects.  "
        "Repeat the flag to give several.  Needs certfile.",
        "none",
        extra=True,
    ),
    Option(
        "http2", asbool, True, None, STANDARD,
        "Speak HTTP/2: to clients that start a plain connection with the "
        "HTTP/2 preface (prior knowledge, h2c) and to TLS clients that "
        "choose h2 in ALPN.  HTTP/1.1 clients are not affected: no "
        "HTTP/1.1 request starts with the preface.  Upgrade: h2c is not "
        "supported (the request is served over HTTP/1.1).",
        "on",
        extra=True,
    ),
    Option(
        "h2_max_concurrent_streams", int, 100, "INT", TUNING,
        "HTTP/2: the most requests (streams) a connection may have open "
        "at once, served concurrently by the threads; further ones are "
        "refused (RST_STREAM REFUSED_STREAM).",
        "100",
        extra=True,
    ),
    Option(
        "h2_initial_window_size", int, 1048576, "INT", TUNING,
        "HTTP/2: the flow-control window of each request body stream, in "
        "bytes (at least 65535).",
        "1048576 (1 MiB)",
        extra=True,
    ),
    Option(
        "h2_max_frame_size", int, 16384, "INT", TUNING,
        "HTTP/2: the largest frame payload the server accepts, in bytes "
        "(16384 to 16777215).",
        "16384",
        extra=True,
    ),
    Option(
        "h2_max_header_list_size", int, 262144, "INT", TUNING,
        "HTTP/2: the largest request header list (names and values, "
        "decompressed, plus 32 bytes a field), as max_request_header_size "
        "for HTTP/1; a larger one gets 431.",
        "262144 (256 KiB)",
        extra=True,
    ),
)

OPTION_MAP: dict[str, Option] = {opt.name: opt for opt in OPTIONS}

# Every long flag (without its dashes) of an option that takes a value or
# of a switch, to its option.
FLAG_MAP: dict[str, Option] = {opt.flag[2:]: opt for opt in OPTIONS}
FLAG_MAP.update(
    (alias[2:], opt) for opt in OPTIONS for alias in opt.long_aliases
)


# -- the class -------------------------------------------------------------


class Adjustments:
    """The converted and checked settings of one server.

    After construction every option is an attribute holding its converted
    value, with these changes: ``listen`` and ``insecure_listen`` are lists
    of resolved ``(family, socktype, proto, sockaddr)`` tuples to bind;
    ``trusted_proxy_count`` is an int (1 unless given);
    ``trusted_proxy_headers`` is a set of lowercase header names.
    """

    # One annotation per option, for type checkers; the values are set from
    # OPTIONS below the class (tests check that both name the same options).
    host: str
    port: int
    ipv4: bool
    ipv6: bool
    listen: list[Any]
    threads: int
    trusted_proxy: str | None
    trusted_proxy_count: int
    trusted_proxy_headers: set[str]
    log_untrusted_proxy_headers: bool
    clear_untrusted_proxy_headers: bool
    url_scheme: str
    url_prefix: str
    backlog: int
    recv_bytes: int
    send_bytes: int
    outbuf_overflow: int
    outbuf_high_watermark: int
    inbuf_overflow: int
    connection_limit: int
    cleanup_interval: int
    channel_timeout: int
    log_socket_errors: bool
    max_request_header_size: int
    max_request_body_size: int
    expose_tracebacks: bool
    ident: str | None
    asyncore_loop_timeout: int
    asyncore_use_poll: bool
    unix_socket: str | None
    unix_socket_perms: int
    sockets: list[socket.socket]
    channel_request_lookahead: int
    server_name: str
    shutdown_timeout: float
    workers: int
    max_requests: int
    max_requests_jitter: int
    boot_timeout: float
    timeout: float
    access_log: bool
    access_log_format: str
    pidfile: str | None
    log_level: str | None
    log_config: str | None
    error_logfile: str | None
    access_logfile: str | None
    metrics: str | None
    certfile: str | None
    sni_certs: list[tuple[str, str]]
    keyfile: str | None
    keyfile_password_file: str | None
    keyfile_password_env: str | None
    ca_certs: str | None
    cert_reqs: str
    ciphers: str | None
    tls_min_version: str
    tls_session_cache: int
    tls_session_timeout: int
    insecure_listen: list[Any]
    http2: bool
    h2_max_concurrent_streams: int
    h2_initial_window_size: int
    h2_max_frame_size: int
    h2_max_header_list_size: int

    # Options set on every accepted TCP connection, as (level, name, value).
    # Not an adjustment: passing it to the constructor is an error.
    socket_options: list[tuple[int, int, int]] = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    ]

    def __init__(self, **kw: Any) -> None:
        check_exclusive(kw)
        if "send_bytes" in kw:
            warnings.warn(
                "send_bytes will be removed in a future release",
                DeprecationWarning,
                stacklevel=2,
            )
        # Instances get their own copies of the mutable defaults.
        self.listen = list(OPTION_MAP["listen"].default)
        self.insecure_listen = []
        self.trusted_proxy_headers = set()
        self.sockets = []
        for name, value in kw.items():
            opt = OPTION_MAP.get(name)
            if opt is None:
                raise ValueError("Unknown adjustment %r" % name)
            setattr(self, name, opt.convert(value))

        if "host" in kw or "port" in kw:
            self.listen = ["%s:%s" % (self.host, self.port)]
        family = enabled_family(self.ipv4, self.ipv6)
        self.listen = resolve_listen(self.listen, self.port, family)
        self.insecure_listen = resolve_listen(
            self.insecure_listen, self.port, family
        )
        self._check_proxy_settings()
        self.check_sockets(self.sockets)
        self._check_workers()
        self._check_pidfile()
        if self.access_logfile:
            self.access_log = True  # a file for the lines asks for them
        self._check_tls()
        self._check_insecure_listen()

    def _check_insecure_listen(self) -> None:
        """An address in both listen and insecure_listen is one socket
        that cannot be both (the second bind would only say "Address
        already in use")."""
        tls = {address_key(a[3]) for a in self.listen}
        for a in self.insecure_listen:
            if a[3][1] != 0 and address_key(a[3]) in tls:
                raise ValueError("%s is in both listen and insecure_listen"
                                 % format_address(a[3][0], a[3][1]))

    def _check_tls(self) -> None:
        """The TLS settings agree with each other; with certfile, the files
        are read and the context is built once (in the C core, as the
        server will), so that a missing file, a key that does not match or
        a wrong password is reported now, in one line."""
        if self.certfile is None:
            given = [
                name
                for name in ("keyfile", "keyfile_password_file",
                             "keyfile_password_env", "ca_certs", "ciphers")
                if getattr(self, name) is not None
            ]
            if self.cert_reqs != "none":
                given.append("cert_reqs")
            if self.insecure_listen:
                given.append("insecure_listen")
            if self.sni_certs:
                given.append("sni_certs")
            if given:
                raise ValueError(
                    "%s has no meaning without certfile" % ", ".join(given)
                )
            return
        from waitress_c import _core

        if not _core.HAVE_TLS:
            # A build without OpenSSL (WC_NO_TLS: the manylinux_2_28
            # wheels): the core's one-line reason, before any file is
            # looked at, since none of them could be used.
            _core.tls_check(self)
        if self.keyfile_password_file and self.keyfile_password_env:
            raise ValueError(
                "keyfile_password_file and keyfile_password_env may not both "
                "be set"
            )
        if self.cert_reqs != "none" and self.ca_certs is None:
            raise ValueError(
                "cert_reqs=%s needs ca_certs (the CAs of the client "
                "certificates)" % self.cert_reqs
            )
        for name in ("certfile", "keyfile", "keyfile_password_file",
                     "ca_certs"):
            path = getattr(self, name)
            if path is None:
                continue
            # Absolute: worker processes and a reload read them again.
            path = os.path.abspath(path)
            setattr(self, name, path)
            check_readable(name, path)
        pairs = []
        for cert, key in self.sni_certs:
            cert, key = os.path.abspath(cert), os.path.abspath(key)
            check_readable("sni_certs", cert)
            check_readable("sni_certs key", key)
            pairs.append((cert, key))
        self.sni_certs = pairs
        _core.tls_check(self)

    def tls_password(self) -> str | None:
        """The keyfile's password: the first line of keyfile_password_file,
        or the value of the environment variable keyfile_password_env;
        None when neither is set."""
        if self.keyfile_password_file:
            try:
                with open(self.keyfile_password_file, encoding="utf-8") as f:
                    return f.readline().rstrip("\r\n")
            except (OSError, UnicodeError) as exc:
                raise ValueError(
                    "keyfile_password_file %s: %s"
                    % (self.keyfile_password_file, exc)
                ) from None
        if self.keyfile_password_env:
            value = os.environ.get(self.keyfile_password_env)
            if value is None:
                raise ValueError(
                    "keyfile_password_env: the environment variable %s is "
                    "not set" % self.keyfile_password_env
                )
            return value
        return None

    def _check_pidfile(self) -> None:
        if self.pidfile is None:
            return
        # Absolute: the file is removed at exit, whatever the current
        # directory is by then.
        self.pidfile = os.path.abspath(self.pidfile)
        directory = os.path.dirname(self.pidfile)
        if not os.path.isdir(directory):
            raise ValueError(
                "pidfile %s: directory %s does not exist"
                % (self.pidfile, directory)
            )

    def _check_workers(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.max_requests < 0 or self.max_requests_jitter < 0:
            raise ValueError(
                "max_requests and max_requests_jitter may not be negative"
            )
        if not 0 <= self.shutdown_timeout < 1e9:
            raise ValueError("shutdown_timeout must be a number of seconds >= 0")
        for name in ("boot_timeout", "timeout"):
            if not 0 <= getattr(self, name) < 1e9:
                raise ValueError("%s must be a number of seconds >= 0" % name)

    def _check_proxy_settings(self) -> None:
        if self.trusted_proxy_count is not None and self.trusted_proxy is None:
            raise ValueError(
                "trusted_proxy_count has no meaning without setting "
                "trusted_proxy"
            )
        if self.trusted_proxy_count is None:
            self.trusted_proxy_count = 1

        if self.trusted_proxy_headers and self.trusted_proxy is None:
            raise ValueError(
                "trusted_proxy_headers has no meaning without setting "
                "trusted_proxy"
            )
        if self.trusted_proxy_headers:
            headers = {name.lower() for name in self.trusted_proxy_headers}
            unknown = headers.difference(TRUSTABLE_PROXY_HEADERS)
            if unknown:
                raise ValueError(
                    "Received unknown trusted_proxy_headers value (%s) "
                    "expected one of %s"
                    % (", ".join(sorted(unknown)),
                       ", ".join(TRUSTABLE_PROXY_HEADERS))
                )
            if "forwarded" in headers and len(headers) > 1:
                raise ValueError(
                    "The Forwarded proxy header and the "
                    "X-Forwarded-{By,Host,Proto,Port,For} headers are "
                    "mutually exclusive. Can't trust both!"
                )
            self.trusted_proxy_headers = headers
        elif self.trusted_proxy is not None:
            warnings.warn(
                "No proxy headers were marked as trusted, but trusted_proxy "
                "was set. Implicitly trusting X-Forwarded-Proto for "
                "backwards compatibility. This will be removed in future "
                "versions of waitress.",
                DeprecationWarning,
                stacklevel=3,
            )
            self.trusted_proxy_headers = {"x-forwarded-proto"}

    @classmethod
    def parse_args(cls, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Read command-line arguments the way ``waitress-serve`` does.

        Returns ``(kw, args)``: ``kw`` maps option names to the strings to
        pass to the constructor, plus the runner's own ``help``, ``call``,
        ``preload`` and ``reload`` (bools) and ``app`` (str or None); ``args`` are the
        positional arguments.  ``--name`` / ``--no-name`` give ``"true"`` /
        ``"false"``; repeated ``--listen`` (and ``--insecure-listen``) values
        are joined with spaces.
        The long aliases (``--bind``, ``--graceful-timeout``) are
        accepted for their options.
        Raises ``getopt.GetoptError`` (prefixes of long options are
        accepted, as with getopt).
        """
        long_opts = ["help", "call", "app=", "preload", "reload"]
        for opt in OPTIONS:
            flag = opt.flag[2:]
            if opt.is_bool:
                long_opts += [flag, "no-" + flag]
            else:
                long_opts.append(flag + "=")
                long_opts += [a[2:] + "=" for a in opt.long_aliases]
        kw: dict[str, Any] = {"help": False, "call": False, "app": None,
                              "preload": False, "reload": False}
        opts, args = getopt.getopt(argv, "", long_opts)
        for flag, value in opts:
            flag = flag[2:]
            if flag in ("help", "call", "preload", "reload", "app"):
                kw[flag] = value if flag == "app" else True
                continue
            negated = flag not in FLAG_MAP
            opt = FLAG_MAP[flag[3:] if negated else flag]
            name = opt.name
            if name in ("listen", "insecure_listen", "sni_certs"):
                kw[name] = ("%s %s" % (kw.get(name, ""), value)).strip()
            elif opt.is_bool:
                kw[name] = "false" if negated else "true"
            else:
                kw[name] = value
        return kw, args

    @classmethod
    def check_sockets(cls, sockets: Iterable[socket.socket]) -> None:
        """Refuse anything but stream sockets, and a mix of TCP and Unix."""
        inet = unix = other = False
        for sock in sockets:
            if sock.type != socket.SOCK_STREAM:
                other = True
            elif sock.family in (socket.AF_INET, socket.AF_INET6):
                inet = True
            elif sock.family == getattr(socket, "AF_UNIX", None):
                unix = True
            else:
                other = True
        if inet and unix:
            raise ValueError("Internet and UNIX sockets may not be mixed.")
        if other:
            raise ValueError(
                "Only Internet or UNIX stream sockets may be used."
            )


for _opt in OPTIONS:
    setattr(Adjustments, _opt.name, _opt.default)
del _opt


# -- helpers ---------------------------------------------------------------


def check_readable(name: str, path: str) -> None:
    """A file the server will read: it exists and may be read."""
    if not os.path.isfile(path):
        raise ValueError("%s %s: no such file" % (name, path))
    if not os.access(path, os.R_OK):
        raise ValueError("%s %s: not readable" % (name, path))


def check_exclusive(kw: dict[str, Any]) -> None:
    """Refuse the combinations of host/port, listen, sockets and
    unix_socket that cannot work together (given at all, whatever the
    value)."""
    host_or_port = "host" in kw or "port" in kw
    if "listen" in kw and host_or_port:
        raise ValueError("host or port may not be set if listen is set.")
    if "listen" in kw and "sockets" in kw:
        raise ValueError("socket may not be set if listen is set.")
    if "sockets" in kw and host_or_port:
        raise ValueError("host or port may not be set if sockets is set.")
    if "sockets" in kw and "unix_socket" in kw:
        raise ValueError("unix_socket may not be set if sockets is set")
    if "unix_socket" in kw and host_or_port:
        raise ValueError("unix_socket may not be set if host or port is set")
    if "unix_socket" in kw and "listen" in kw:
        raise ValueError("unix_socket may not be set if listen is set")
    if "sockets" in kw and kw.get("insecure_listen"):
        raise ValueError("insecure_listen may not be set if sockets is set")


def enabled_family(ipv4: bool, ipv6: bool) -> int:
    """The address family to give getaddrinfo for these two switches."""
    if not ipv4 and not socket.has_ipv6:
        raise ValueError(
            "IPv4 is disabled but IPv6 is not available. Cowardly refusing "
            "to start."
        )
    if ipv4 and not ipv6:
        return socket.AF_INET
    if ipv6 and not ipv4:
        return socket.AF_INET6
    return socket.AF_UNSPEC


def split_listen_entry(entry: str, default_port: int) -> tuple[str | None, str]:
    """``(host, port)`` of one listen entry: split on the last colon unless
    that colon is inside brackets, brackets removed, ``*`` meaning None."""
    host, colon, port = entry.rpartition(":")
    if not colon or "]" in port:
        host, port = entry, str(default_port)
    if "[" in host and "]" in host:
        host = host.lstrip("[").rstrip("]")
    return (None if host == "*" else host), port


def address_key(sockaddr: Any) -> tuple[str, int]:
    """(host, port) of a resolved address, an IPv6 zone index left out: two
    entries with the same key are one socket."""
    return sockaddr[0].split("%", 1)[0], sockaddr[1]


def format_address(host: str, port: Any) -> str:
    """HOST:PORT, with an IPv6 host in brackets."""
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def resolve_listen(
    entries: Iterable[str], default_port: int, family: int
) -> list[tuple[int, int, int, Any]]:
    """Resolve listen entries to ``(family, socktype, proto, sockaddr)``.

    An address already seen (ignoring an IPv6 zone index) is dropped,
    except with port 0, where each entry is a different socket.
    """
    resolved = []
    seen = set()
    for entry in entries:
        host, port = split_listen_entry(entry, default_port)
        try:
            infos = socket.getaddrinfo(
                host,
                port,
                family,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                socket.AI_PASSIVE,
            )
        except (OSError, UnicodeError, ValueError, TypeError) as exc:
            raise ValueError("Invalid host/port specified.") from exc
        for fam, socktype, proto, _, sockaddr in infos:
            key = address_key(sockaddr)
            if sockaddr[1] != 0 and key in seen:
                continue
            seen.add(key)
            resolved.append((fam, socktype, proto, sockaddr))
    return resolved
