"""Proxy headers (reference section 3.25).

Most tests run the same request through our middleware and through
waitress's own (installed from PyPI as a test dependency) and compare the
environ the application sees, the warnings logged, and the 400 for a
malformed header.  The translation is tested without the C core: the
exception the core turns into a 400 is replaced by a local one, except in
the one test that checks the real ``waitress_c._core.BadRequest``.
"""

import itertools
import re
import time

import pytest
import waitress.proxy_headers as wph

from waitress_c import proxy_headers as ph
from waitress_c.adjustments import Adjustments
from waitress_c.proxy_headers import (
    MalformedProxyHeader,
    clear_untrusted_headers,
    parse_proxy_headers,
    proxy_headers_middleware,
    undquote,
    wrap_app,
)

BASE = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/",
    "REMOTE_ADDR": "192.168.1.1",
    "REMOTE_HOST": "192.168.1.1",
    "REMOTE_PORT": "5000",
    "SERVER_NAME": "waitress.invalid",
    "SERVER_PORT": "8080",
    "HTTP_HOST": "example.com",
    "wsgi.url_scheme": "http",
}

KEY = {
    "forwarded": "HTTP_FORWARDED",
    "xff": "HTTP_X_FORWARDED_FOR",
    "xfh": "HTTP_X_FORWARDED_HOST",
    "xfp": "HTTP_X_FORWARDED_PROTO",
    "xfport": "HTTP_X_FORWARDED_PORT",
    "xfby": "HTTP_X_FORWARDED_BY",
}


class Rejected(Exception):
    """Stands in for waitress_c._core.BadRequest."""


class RecordingLogger:
    def __init__(self):
        self.messages = []

    def warning(self, msg, *args):
        self.messages.append(msg % args if args else msg)


def normalised(messages):
    # The order of the names in "Removed untrusted headers (...)" is a set's
    # order in waitress.
    out = []
    for m in messages:
        match = re.match(r"Removed untrusted headers \((.*)\)(.*)", m)
        if match:
            names = ", ".join(sorted(match.group(1).split(", ")))
            m = "Removed untrusted headers (%s)%s" % (names, match.group(2))
        out.append(m)
    return out


@pytest.fixture
def local_rejection(monkeypatch):
    monkeypatch.setattr(ph, "bad_request", Rejected)


def run(middleware, headers, **kw):
    """Run one request; returns ("app", environ, log) or ("400", detail, log)."""
    environ = dict(BASE)
    environ.update({KEY.get(k, k): v for k, v in headers.items()})
    seen = {}
    log = RecordingLogger()

    def app(env, start_response):
        seen.update(env)
        start_response("200 OK", [])
        return [b""]

    def start_response(status, headers, exc_info=None):
        seen["status"] = status

    wrapped = middleware(app, logger=log, **kw)
    try:
        body = b"".join(wrapped(environ, start_response))
    except Rejected as exc:
        return ("400", str(exc), normalised(log.messages))
    if "REQUEST_METHOD" not in seen:
        # waitress answered itself
        assert seen["status"] == "400 Bad Request"
        detail = body.decode().split("\r\n\r\n")[1]
        return ("400", detail, normalised(log.messages))
    del seen["status"]
    return ("app", seen, normalised(log.messages))


def both(headers, **kw):
    ours = run(proxy_headers_middleware, headers, **kw)
    theirs = run(wph.proxy_headers_middleware, headers, **kw)
    return ours, theirs


# -- parity with waitress over a matrix of headers and settings ------------------

VALUES = {
    "xff": [
        "10.0.0.1",
        "10.0.0.1, 192.0.2.5",
        "10.0.0.1,192.0.2.5, 198.51.100.7",
        '"10.0.0.1"',
        "2001:db8::1",
        "10.0.0.1, 2001:db8::1",
        '"[2001:db8::1]:4711"',
        "10.0.0.1:8000",
        "[2001:db8::1]",
        '"bad',
        'a"b"',
        '"a\\"b"',
        "",
        " , ",
    ],
    "xfh": [
        "ex.com",
        "ex.com:8443",
        "a.com, b.com",
        "[::1]",
        "[::1]:99",
        '"ex.com"',
        '"ex.com',
        "ex.com:80",
    ],
    "xfp": ["https", "HTTPS", "http", "ftp", "https, http", '"https"', '"https', ""],
    "xfport": ["8443", "443", "80", "1,2", '"8443"', '"8443'],
    "xfby": ["proxy", "_hidden"],
    "forwarded": [
        "for=192.0.2.60;proto=https;by=203.0.113.43",
        'for="[2001:db8:cafe::17]:4711"',
        'for="[2001:db8:cafe::17]"',
        "for=192.0.2.43, for=198.51.100.17;host=ex.com:8443;proto=https",
        "for=a;host=h1, for=b",
        "for=a;host=h1;proto=https, for=b;host=h2:81;proto=http",
        "for=a;proto=ftp",
        "for",
        "for= a",
        "for =a",
        " for=a",
        "for=a; proto=https",
        "foo=bar;for=x",
        "For=X;HOST=EX.COM;Proto=HTTPS",
        "for=a,,for=b",
        "for=a;;proto=http;",
        'for="bad',
        'host="ex.com:8443"',
        "proto=https;host=ex.com",
        "",
    ],
}

ALL_X = (
    "x-forwarded-for x-forwarded-host x-forwarded-proto x-forwarded-port "
    "x-forwarded-by"
)

SETTINGS = [
    {},
    {"clear_untrusted": False},
    {"log_untrusted": True},
    {"trusted_proxy": "10.9.9.9", "trusted_proxy_headers": {"x-forwarded-for"}},
    {"trusted_proxy": "192.168.1.1", "trusted_proxy_headers": {"x-forwarded-for"}},
    {"trusted_proxy": "*", "trusted_proxy_headers": set(ALL_X.split())},
    {
        "trusted_proxy": "*",
        "trusted_proxy_count": 2,
        "trusted_proxy_headers": set(ALL_X.split()),
        "log_untrusted": True,
    },
    {"trusted_proxy": "*", "trusted_proxy_headers": {"x-forwarded-proto"}},
    # 0 trusts every hop (a slice from -0), as in waitress
    {
        "trusted_proxy": "*",
        "trusted_proxy_count": 0,
        "trusted_proxy_headers": set(ALL_X.split()),
    },
    {"trusted_proxy": "*", "trusted_proxy_headers": {"forwarded"}},
    {
        "trusted_proxy": "*",
        "trusted_proxy_count": 0,
        "trusted_proxy_headers": {"forwarded"},
    },
    {
        "trusted_proxy": "*",
        "trusted_proxy_count": 2,
        "trusted_proxy_headers": {"forwarded"},
        "log_untrusted": True,
    },
    {
        "trusted_proxy": "*",
        "trusted_proxy_count": 3,
        "trusted_proxy_headers": {"forwarded"},
        "clear_untrusted": False,
    },
]


def single_header_cases():
    for header, values in VALUES.items():
        for value in values:
            yield {header: value}


# the [verified] example of section 3.25
VERIFIED = {
    "xff": "10.0.0.1, 192.0.2.5",
    "xfp": "https",
    "xfh": "ex.com",
    "xfport": "8443",
}

COMBINATIONS = [
    VERIFIED,
    {"xfh": "ex.com", "xfport": "443", "xfp": "https"},
    {"xfh": "ex.com", "xfport": "443", "xfp": "http"},
    {"xfh": "ex.com", "xfport": "80", "xfp": "https"},
    {"xfh": "ex.com", "xfport": "80"},
    {"xfh": "ex.com:9000", "xfport": "8443", "xfp": "https"},
    {"xfh": "ex.com", "xfp": "https"},
    {"xfport": "8443", "xfp": "https"},
    {"xff": "10.0.0.1", "xfby": "p", "forwarded": "for=1.2.3.4;proto=https"},
    {"forwarded": "for=1.2.3.4;host=ex.com", "xfp": "https", "xfh": "other"},
]

CASES = [
    (headers, settings)
    for headers, settings in itertools.product(
        list(single_header_cases()) + COMBINATIONS, SETTINGS
    )
]


def case_id(case):
    headers, settings = case
    return repr(headers) + " " + repr(sorted(settings.items()))


@pytest.mark.parametrize("headers, settings", CASES, ids=map(case_id, CASES))
def test_same_result_as_waitress(local_rejection, headers, settings):
    ours, theirs = both(headers, **settings)
    assert ours == theirs


# -- explicit expectations ---------------------------------------------------------


def test_verified_example(local_rejection):
    kind, env, log = run(
        proxy_headers_middleware,
        VERIFIED,
        trusted_proxy="192.168.1.1",
        trusted_proxy_headers=set(ALL_X.split()),
    )
    assert kind == "app"
    assert env["REMOTE_ADDR"] == env["REMOTE_HOST"] == "192.0.2.5"
    assert env["SERVER_NAME"] == "ex.com"
    assert env["SERVER_PORT"] == "8443"
    assert env["HTTP_HOST"] == "ex.com:8443"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_X_FORWARDED_FOR"] == "192.0.2.5"
    assert log == []


def test_count_two_picks_the_earlier_hop():
    kind, env, _ = run(
        proxy_headers_middleware,
        {"xff": "10.0.0.1, 192.0.2.5"},
        trusted_proxy="*",
        trusted_proxy_count=2,
        trusted_proxy_headers={"x-forwarded-for"},
    )
    assert env["REMOTE_ADDR"] == "10.0.0.1"
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1, 192.0.2.5"


def test_xff_with_port_sets_remote_port():
    _, env, _ = run(
        proxy_headers_middleware,
        {"xff": "192.0.2.5:4711"},
        trusted_proxy="*",
        trusted_proxy_headers={"x-forwarded-for"},
    )
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.5", "4711")


def test_xff_bracketed_ipv6_with_port_is_kept_whole_like_waitress():
    # A waitress quirk kept for compatibility: the hop is bracketed again
    # because it does not end with "]", so no port is split off.
    _, env, _ = run(
        proxy_headers_middleware,
        {"xff": '"[2001:db8::1]:4711"'},
        trusted_proxy="*",
        trusted_proxy_headers={"x-forwarded-for"},
    )
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("[2001:db8::1]:4711", "5000")


def test_xff_without_port_keeps_tcp_port():
    _, env, _ = run(
        proxy_headers_middleware,
        {"xff": "2001:db8::1"},
        trusted_proxy="*",
        trusted_proxy_headers={"x-forwarded-for"},
    )
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::1", "5000")


def test_trusted_proto_only_gives_https_and_port_443():
    _, env, _ = run(
        proxy_headers_middleware,
        {"xfp": "https", "xff": "1.2.3.4"},
        trusted_proxy="*",
        trusted_proxy_headers={"x-forwarded-proto"},
    )
    assert env["wsgi.url_scheme"] == "https"
    assert env["SERVER_PORT"] == "443"
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["REMOTE_ADDR"] == "192.168.1.1"


def test_x_forwarded_by_is_kept_when_trusted():
    _, env, _ = run(
        proxy_headers_middleware,
        {"xfby": "me"},
        trusted_proxy="*",
        trusted_proxy_headers={"x-forwarded-by"},
    )
    assert env["HTTP_X_FORWARDED_BY"] == "me"


def test_forwarded_uses_oldest_trusted_values():
    _, env, _ = run(
        proxy_headers_middleware,
        {
            "forwarded": 'for="[2001:db8::1]";host="example.com:8443";proto="https", '
            "for=192.0.2.1;host=example.internal:8080"
        },
        trusted_proxy="*",
        trusted_proxy_count=2,
        trusted_proxy_headers={"forwarded"},
    )
    assert env["REMOTE_ADDR"] == "2001:db8::1"
    assert env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == "8443"
    assert env["HTTP_HOST"] == "example.com:8443"
    assert env["wsgi.url_scheme"] == "https"


def test_forwarded_is_cut_to_the_trusted_elements():
    _, env, _ = run(
        proxy_headers_middleware,
        {"forwarded": "for=a, for=b, for=c", "xff": "1.1.1.1"},
        trusted_proxy="*",
        trusted_proxy_count=2,
        trusted_proxy_headers={"forwarded"},
    )
    assert env["HTTP_FORWARDED"] == "for=b, for=c"
    assert env["REMOTE_ADDR"] == "b"
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_unknown_forwarded_token_is_logged():
    _, env, log = run(
        proxy_headers_middleware,
        {"forwarded": "foo=bar;for=x"},
        trusted_proxy="*",
        trusted_proxy_headers={"forwarded"},
    )
    assert log == ["Unknown Forwarded token: foo"]
    assert env["REMOTE_ADDR"] == "x"


@pytest.mark.parametrize(
    "headers, trusted, header_name, log",
    [
        (
            {"xfp": "ftp"},
            {"x-forwarded-proto"},
            "X-Forwarded-Proto",
            'Malformed proxy header "X-Forwarded-Proto" from "192.168.1.1": '
            "unsupported proto value value: ftp",
        ),
        (
            {"xfp": "https, http"},
            {"x-forwarded-proto"},
            "X-Forwarded-Proto",
            'Malformed proxy header "X-Forwarded-Proto" from "192.168.1.1": '
            "Unspecified behavior for multiple values found in header value: "
            "https, http",
        ),
        (
            {"xfport": '"1'},
            {"x-forwarded-port"},
            "X-Forwarded-Port",
            'Malformed proxy header "X-Forwarded-Port" from "192.168.1.1": '
            'Invalid quoting in value value: "1',
        ),
        (
            {"xff": '"1.2.3.4'},
            {"x-forwarded-for"},
            "X-Forwarded-For",
            'Malformed proxy header "X-Forwarded-For" from "192.168.1.1": '
            'Invalid quoting in value value: "1.2.3.4',
        ),
        (
            {"xfh": 'a, "b'},
            {"x-forwarded-host"},
            "X-Forwarded-Host",
            'Malformed proxy header "X-Forwarded-Host" from "192.168.1.1": '
            'Invalid quoting in value value: a, "b',
        ),
        (
            {"forwarded": "for"},
            {"forwarded"},
            "Forwarded",
            'Malformed proxy header "Forwarded" from "192.168.1.1": '
            'Invalid forwarded-pair missing "=" value: for',
        ),
        (
            {"forwarded": "for=a;proto=gopher"},
            {"forwarded"},
            "Forwarded Proto=",
            'Malformed proxy header "Forwarded Proto=" from "192.168.1.1": '
            "unsupported proto value value: gopher",
        ),
    ],
)
def test_malformed_trusted_header(local_rejection, headers, trusted, header_name, log):
    result = run(
        proxy_headers_middleware,
        headers,
        trusted_proxy="*",
        trusted_proxy_headers=trusted,
    )
    assert result == ("400", 'Header "%s" malformed.' % header_name, [log])


def test_malformed_header_from_untrusted_peer_is_just_removed(local_rejection):
    kind, env, _ = run(
        proxy_headers_middleware,
        {"xfp": "ftp"},
        trusted_proxy="10.0.0.1",
        trusted_proxy_headers={"x-forwarded-proto"},
    )
    assert kind == "app" and "HTTP_X_FORWARDED_PROTO" not in env


def test_malformed_header_raises_the_cores_bad_request():
    from waitress_c import _core

    app = proxy_headers_middleware(
        lambda e, s: [], trusted_proxy="*", trusted_proxy_headers={"x-forwarded-proto"}
    )
    environ = dict(BASE, HTTP_X_FORWARDED_PROTO="ftp")
    with pytest.raises(_core.BadRequest) as info:
        app(environ, None)
    assert 'Header "X-Forwarded-Proto" malformed.' in str(info.value)


# -- clearing ---------------------------------------------------------------------


def test_default_removes_every_proxy_header():
    headers = {k: "1.2.3.4" for k in KEY}
    kind, env, log = run(proxy_headers_middleware, headers)
    assert kind == "app"
    assert not set(KEY.values()) & set(env)
    assert log == []


def test_clear_off_keeps_them():
    headers = {k: "x" for k in KEY}
    _, env, _ = run(proxy_headers_middleware, headers, clear_untrusted=False)
    assert set(KEY.values()) <= set(env)


def test_removal_is_logged_when_asked():
    log = RecordingLogger()
    environ = {"HTTP_X_FORWARDED_FOR": "a", "HTTP_FORWARDED": "b", "OTHER": "c"}
    clear_untrusted_headers(environ, ph.PROXY_HEADERS, True, log)
    assert environ == {"OTHER": "c"}
    assert log.messages == [
        "Removed untrusted headers (Forwarded, X-Forwarded-For). Waitress "
        "recommends these be removed upstream."
    ]


def test_nothing_logged_when_nothing_removed():
    log = RecordingLogger()
    clear_untrusted_headers({"X": "1"}, ph.PROXY_HEADERS, True, log)
    assert log.messages == []


# -- the fast path -------------------------------------------------------------------


def test_no_proxy_header_passes_the_same_environ_untouched():
    seen = []
    app = proxy_headers_middleware(
        lambda env, sr: seen.append(env) or [b"x"],
        trusted_proxy="*",
        trusted_proxy_headers={"x-forwarded-proto"},
    )
    environ = dict(BASE)
    assert app(environ, None) == [b"x"]
    assert seen[0] is environ and environ == BASE


def test_no_proxy_header_costs_well_under_a_microsecond():
    environ = dict(BASE, HTTP_USER_AGENT="x", HTTP_ACCEPT="*/*")

    def app(env, sr):
        return None

    wrapped = proxy_headers_middleware(app)
    n = 20000

    def per_call(fn):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                fn(environ, None)
            best = min(best, (time.perf_counter() - start) / n)
        return best

    # Under a sanitizer or valgrind everything is slower: the bound is also
    # relative to one plain Python call (waitress's own costs about 16).
    bare = per_call(app)
    assert per_call(wrapped) - bare < max(1e-6, 8 * bare)


# -- pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("abc", "abc"),
        ('"abc"', "abc"),
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ('""', ""),
        ("", ""),
    ],
)
def test_undquote(value, expected):
    assert undquote(value) == expected


@pytest.mark.parametrize("value", ['"abc', 'abc"', '"', '"a"b"', '"a\x01"', '"a\\"'])
def test_undquote_refuses(value):
    with pytest.raises(ValueError, match="Invalid quoting in value"):
        undquote(value)


def test_parse_proxy_headers_returns_untrusted_keys():
    environ = dict(BASE, HTTP_X_FORWARDED_FOR="1.2.3.4")
    untrusted = parse_proxy_headers(environ, 1, {"x-forwarded-for", "x-forwarded-by"})
    assert untrusted == ph.PROXY_HEADERS - {
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_BY",
    }
    assert environ["REMOTE_ADDR"] == "1.2.3.4"


def test_parse_proxy_headers_raises_malformed():
    environ = dict(BASE, HTTP_X_FORWARDED_PROTO="gopher")
    with pytest.raises(MalformedProxyHeader) as info:
        parse_proxy_headers(environ, 1, {"x-forwarded-proto"})
    assert (info.value.header, info.value.reason, info.value.value) == (
        "X-Forwarded-Proto",
        "unsupported proto value",
        "gopher",
    )


def test_peer_is_compared_as_a_string():
    # no CIDR, no list: only an exact match or "*"
    _, env, _ = run(
        proxy_headers_middleware,
        {"xfp": "https"},
        trusted_proxy="192.168.1.0/24",
        trusted_proxy_headers={"x-forwarded-proto"},
    )
    assert env["wsgi.url_scheme"] == "http"


def test_unix_socket_peer_localhost():
    app_env = {}
    app = proxy_headers_middleware(
        lambda env, sr: app_env.update(env),
        trusted_proxy="localhost",
        trusted_proxy_headers={"x-forwarded-proto"},
    )
    app(dict(BASE, REMOTE_ADDR="localhost", HTTP_X_FORWARDED_PROTO="https"), None)
    assert app_env["wsgi.url_scheme"] == "https"


# -- wrap_app ----------------------------------------------------------------------


def test_wrap_app_default_wraps():
    def app(env, sr):
        return [env.get("HTTP_X_FORWARDED_FOR")]

    wrapped = wrap_app(app, Adjustments())
    assert wrapped is not app
    assert wrapped(dict(BASE, HTTP_X_FORWARDED_FOR="x"), None) == [None]


def test_wrap_app_not_wrapped_without_clear_or_proxy():
    def app(env, sr):
        return []

    assert wrap_app(app, Adjustments(clear_untrusted_proxy_headers=False)) is app


def test_wrap_app_passes_the_settings():
    def app(env, sr):
        return [env["REMOTE_ADDR"], env["wsgi.url_scheme"]]

    adj = Adjustments(
        trusted_proxy="192.168.1.1",
        trusted_proxy_count="2",
        trusted_proxy_headers="x-forwarded-for x-forwarded-proto",
        clear_untrusted_proxy_headers="false",
    )
    wrapped = wrap_app(app, adj)
    environ = dict(
        BASE, HTTP_X_FORWARDED_FOR="10.0.0.1, 10.0.0.2", HTTP_X_FORWARDED_PROTO="https"
    )
    assert wrapped(environ, None) == ["10.0.0.1", "https"]


# -- through a running server: needs the C core --------------------------------------


def test_malformed_header_gets_the_standard_400(tmp_path):
    import http.client

    from servers import Server, script, write_app

    write_app(tmp_path, "proxyapp")
    server = Server(
        [
            script("waitress-c-serve"),
            "--listen=127.0.0.1:0",
            "--trusted-proxy=127.0.0.1",
            "--trusted-proxy-headers=x-forwarded-proto x-forwarded-for",
            "proxyapp:app",
        ],
        cwd=tmp_path,
    )
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/", headers={"X-Forwarded-Proto": "ftp"})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status == 400
        assert body == (
            b'Bad Request\r\n\r\nHeader "X-Forwarded-Proto" malformed.'
            b"\r\n\r\n(generated by waitress_c)"
        )
        assert resp.getheader("Content-Length") == str(len(body))
        assert resp.getheader("Connection") == "close"
        assert resp.getheader("Transfer-Encoding") is None

        status, _, env = server.get(
            "/", {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.1"}
        )
        assert (status, env["wsgi.url_scheme"], env["REMOTE_ADDR"]) == (
            200,
            "https",
            "192.0.2.1",
        )
    finally:
        code, output = server.stop()
    assert code == 0
    assert (
        '[WARNING] Malformed proxy header "X-Forwarded-Proto" from '
        '"127.0.0.1": unsupported proto value value: ftp' in output
    )


def test_client_bytes_in_warnings_are_escaped(local_rejection):
    """Line breaks and terminal escapes (C0, DEL, C1, U+2028/9) and the
    backslash are written \\xHH; a quote stays as waitress writes it."""
    result = run(
        proxy_headers_middleware,
        {"xfp": 'ftp"\x85FAKE\x9b2J\\'},
        trusted_proxy="*",
        trusted_proxy_headers={"x-forwarded-proto"},
    )
    assert result == (
        "400",
        'Header "X-Forwarded-Proto" malformed.',
        [
            'Malformed proxy header "X-Forwarded-Proto" from "192.168.1.1": '
            r'unsupported proto value value: ftp"\x85fake\x9B2j\x5C'
        ],
    )
    _, env, log = run(
        proxy_headers_middleware,
        {"forwarded": "f\x85oo\x9b=bar;for=x"},
        trusted_proxy="*",
        trusted_proxy_headers={"forwarded"},
    )
    assert log == [r"Unknown Forwarded token: f\x85oo\x9B"]
    assert env["REMOTE_ADDR"] == "x"
