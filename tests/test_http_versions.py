"""HTTP versions and the status line (as in waitress, and
deliberate difference 8)."""

import pytest
from http_helpers import Client, get, key, marks, server_fixture

srv = server_fixture()


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_response_version_is_the_request_version(srv, version):
    with Client(srv) as c:
        r = c.request(get("/env", version=version))
    assert r.status_line.startswith(b"HTTP/%s 200" % version.encode())
    assert r.json()["SERVER_PROTOCOL"] == "HTTP/" + version


@pytest.mark.parametrize("version", ["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/3.0"])
def test_other_versions_are_refused_and_closed(srv, version):
    """Difference 8: 505 (or 400) and a close, never dispatched (waitress
    serves them as HTTP/1.0)."""
    k = key()
    with Client(srv) as c:
        r = c.request(b"GET /mark?k=%s %s\r\nHost: x\r\n\r\n" % (k.encode(), version.encode()))
        assert r.status in (400, 505), r
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert r.header("Connection") == "close"
        assert c.closed()
    assert marks(srv, k) == []


def test_missing_version_is_refused(srv):
    """`GET /` (the HTTP/0.9 form): waitress answers it as HTTP/1.0; RFC 9112
    section 3 makes the version part of every request line, so it is a
    malformed request line (difference 8)."""
    k = key()
    with Client(srv) as c:
        r = c.request(b"GET /mark?k=%s\r\n\r\n" % k.encode())
        assert r.status in (400, 505)
        assert r.status_line.startswith(b"HTTP/1.0 ")
        assert c.closed()
    assert marks(srv, k) == []


@pytest.mark.parametrize(
    "line",
    [
        b"HELLO",
        b"GET  /mark HTTP/1.1",
        b"GET /mark  HTTP/1.1",
        b"GET",
        b"GET HTTP/1.1",
        b" GET /mark HTTP/1.1",
        b"GET /mark HTTP/1.1 extra",
        b"GET /mark FOO/1.1",
        b"GET /mark HTTP/1",
        b"GET /mark http/1.1",
        b"GET /mark HTTP/1.1.1",
        b"G(T /mark HTTP/1.1",
    ],
    ids=lambda b: b.decode().replace(" ", "_") or "empty",
)
def test_malformed_request_line_gets_400_never_dispatched(srv, line):
    """Difference 8: 400, a close, and neither it nor what follows it is
    served."""
    k = key()
    line = line.replace(b"/mark", b"/mark?k=" + k.encode())
    follow = get("/mark?k=" + k + "&second=1")
    with Client(srv) as c:
        r = c.request(line + b"\r\nHost: x\r\n\r\n" + follow)
        assert r.status == 400, r
        assert r.header("Connection") == "close"
        assert r.body.startswith(b"Bad Request\r\n\r\n")
        assert c.closed()
    assert marks(srv, k) == []


@pytest.mark.parametrize(
    "status",
    ["200", "200 OK", "299 Custom reason, with  two spaces", "404 Not Here", "200 \xe9t\xe9"],
)
def test_status_line_is_the_app_status_verbatim(srv, status):
    from urllib.parse import quote

    with Client(srv) as c:
        r = c.request(get("/respond?s=" + quote(status, encoding="latin-1") + "&b=x"))
    assert r.status_line == b"HTTP/1.1 " + status.encode("latin-1")


def test_error_found_after_the_request_line_uses_the_request_version(srv):
    """A bad Content-Length is found once the request line is known: the
    error uses the request's version (3.1)."""
    for version in ("1.0", "1.1"):
        with Client(srv) as c:
            r = c.request(get("/env", version=version, headers=["Content-Length: abc"]))
            assert r.status_line == b"HTTP/%s 400 Bad Request" % version.encode()
            assert c.closed()


def test_header_field_error_on_http11_request(srv):
    """Quirk (section 7): waitress answers header-field errors with
    `HTTP/1.0 400` whatever the request version, because it parses the
    request line last.  waitress_c parses the request line first and answers
    in the request's version, as RFC 9110 2.5 asks (a server sends its
    highest conformant minor version)."""
    with Client(srv) as c:
        r = c.request(b"GET /env HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
        assert r.status == 400
        assert r.status_line == b"HTTP/1.1 400 Bad Request"
        assert c.closed()


def test_431_is_http10(srv):
    """431 is found before the request line is parsed: always HTTP/1.0
    (3.1, 3.12)."""
    with Client(srv) as c:
        r = c.request(b"GET /env HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300000 + b"\r\n\r\n")
        assert r.status_line == b"HTTP/1.0 431 Request Header Fields Too Large"
