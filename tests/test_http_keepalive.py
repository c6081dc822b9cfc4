"""Keep-alive and connection close (as in waitress, deliberate
differences 2 and 3)."""

import pytest
from http_helpers import Client, get, server_fixture

srv = server_fixture()

CL_BODY = "/respond?b=hello"  # a 1-item list: Content-Length 5
STREAM = "/respond?mode=gen&b=hel&b=lo"  # a generator: no Content-Length


def assert_still_open(c, version="1.1", headers=()):
    """The connection serves another request."""
    r = c.request(get("/respond?b=again", version=version, headers=list(headers)))
    assert r.status == 200 and r.body == b"again", r


# -- HTTP/1.0 ------------------------------------------------------------------


def test_http10_closes_by_default(srv):
    with Client(srv) as c:
        r = c.request(get(CL_BODY, version="1.0"))
        assert r.body == b"hello"
        assert r.header("Connection") == "close"
        assert c.closed()


@pytest.mark.parametrize("value", ["keep-alive", "Keep-Alive", "KEEP-ALIVE"])
def test_http10_keep_alive_with_content_length(srv, value):
    with Client(srv) as c:
        r = c.request(get(CL_BODY, version="1.0", headers=["Connection: " + value]))
        assert r.header("Content-Length") == "5"
        assert r.header("Connection") == "Keep-Alive"
        assert_still_open(c, "1.0", ["Connection: keep-alive"])


def test_http10_keep_alive_without_content_length_closes(srv):
    """The end of the body is the close: Connection: close is announced."""
    with Client(srv) as c:
        r = c.request(get(STREAM, version="1.0", headers=["Connection: keep-alive"]))
        assert r.header("Connection") == "close"
        assert r.header("Content-Length") is None
        assert r.header("Transfer-Encoding") is None
        assert r.body == b"hello"
        assert c.closed()


@pytest.mark.parametrize("value", ["Keep-Alive, foo", "foo, keep-alive", "foo,Keep-Alive ,bar"])
def test_http10_keep_alive_token_in_a_list(srv, value):
    """Difference 3: Connection is a token list (waitress compares the whole
    value, so it closes)."""
    with Client(srv) as c:
        r = c.request(get(CL_BODY, version="1.0", headers=["Connection: " + value]))
        assert r.header("Connection") == "Keep-Alive"
        assert_still_open(c, "1.0", ["Connection: keep-alive"])


def test_http10_keep_alive_in_two_connection_headers(srv):
    with Client(srv) as c:
        r = c.request(get(CL_BODY, version="1.0", headers=["Connection: foo", "Connection: keep-alive"]))
        assert r.header("Connection") == "Keep-Alive"
        assert_still_open(c, "1.0", ["Connection: keep-alive"])


@pytest.mark.parametrize("value", ["keep-alive-ish", "not keep-alive", "keepalive"])
def test_http10_other_connection_values_close(srv, value):
    with Client(srv) as c:
        r = c.request(get(CL_BODY, version="1.0", headers=["Connection: " + value]))
        assert r.header("Connection") == "close"
        assert c.closed()


# -- HTTP/1.1 ------------------------------------------------------------------


def test_http11_persistent_by_default_no_connection_header(srv):
    with Client(srv) as c:
        for _ in range(5):
            r = c.request(get(CL_BODY))
            assert r.body == b"hello"
            assert r.header("Connection") is None
        r = c.request(get(CL_BODY, headers=["Connection: keep-alive"]))
        assert r.header("Connection") is None
        assert_still_open(c)


@pytest.mark.parametrize("value", ["close", "Close", "CLOSE"])
def test_http11_connection_close(srv, value):
    with Client(srv) as c:
        r = c.request(get(CL_BODY, headers=["Connection: " + value]))
        assert r.body == b"hello"
        assert r.header("Connection") == "close"
        assert c.closed()


@pytest.mark.parametrize("value", ["close, foo", "foo, close", "foo,close", "Keep-Alive, Close", "te ,  close"])
def test_http11_close_token_in_a_list(srv, value):
    """Difference 3 (waitress keeps these connections open)."""
    with Client(srv) as c:
        r = c.request(get(CL_BODY, headers=["Connection: " + value]))
        assert r.header("Connection") == "close"
        assert c.closed()


def test_http11_close_in_second_connection_header(srv):
    with Client(srv) as c:
        r = c.request(get(CL_BODY, headers=["Connection: foo", "Connection: close"]))
        assert r.header("Connection") == "close"
        assert c.closed()


def test_http11_close_prefix_is_not_close(srv):
    with Client(srv) as c:
        r = c.request(get(CL_BODY, headers=["Connection: closed, xclose"]))
        assert r.header("Connection") is None
        assert_still_open(c)


def test_http11_chunked_response_keeps_the_connection(srv):
    """Difference 2 (waitress closes after every response without a
    Content-Length)."""
    with Client(srv) as c:
        for _ in range(3):
            r = c.request(get(STREAM))
            assert r.header("Transfer-Encoding") == "chunked"
            assert r.header("Connection") is None
            assert r.body == b"hello"
        assert_still_open(c)


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_http11_204_304_keep_the_connection(srv, status):
    """Difference 2: no body, no Content-Length, and the connection stays."""
    from urllib.parse import quote

    with Client(srv) as c:
        r = c.request(get("/respond?s=" + quote(status) + "&cl=0"))
        assert r.status == int(status[:3])
        assert r.header("Content-Length") is None
        assert r.header("Transfer-Encoding") is None
        assert r.header("Connection") is None
        assert_still_open(c)


def test_close_decided_before_headers_is_announced(srv):
    """Whenever the server will close, the head says Connection: close."""
    with Client(srv) as c:
        r = c.request(get(STREAM, headers=["Connection: close"]))
        assert r.header("Connection") == "close"
        assert r.header("Transfer-Encoding") == "chunked"
        assert r.body == b"hello"
        assert c.closed()


def test_app_error_after_headers_closes(srv):
    """The body is cut short and the connection closed (3.2)."""
    with Client(srv) as c:
        c.send(get("/raise-gen?n=2"))
        data = c.rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"item0" in data and b"item1" in data
    assert not data.endswith(b"0\r\n\r\n")


def test_app_error_after_headers_closes_http10(srv):
    with Client(srv) as c:
        c.send(get("/raise-gen?n=1", version="1.0", headers=["Connection: keep-alive"]))
        data = c.rest()
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert data.endswith(b"item0")
