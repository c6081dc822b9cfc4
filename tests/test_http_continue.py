"""Expect: 100-continue (as in waitress, deliberate
difference 4)."""

import pytest
from http_helpers import Client, error_body, get, server_fixture

MAX_BODY = 1000
srv = server_fixture(max_request_body_size=MAX_BODY)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def head_only(path="/echo", body_len=5, expect="100-continue", version="1.1", extra=()):
    lines = ["POST %s HTTP/%s" % (path, version), "Host: x", "Content-Length: %d" % body_len]
    if expect is not None:
        lines.append("Expect: " + expect)
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("value", ["100-continue", "100-Continue", "100-CONTINUE"])
def test_continue_sent_once_headers_are_read(srv, value):
    with Client(srv) as c:
        c.send(head_only(expect=value))
        r = c.response()
        assert r.raw == CONTINUE
        assert c.silent(0.2)  # the final answer waits for the body
        r = c.request(b"hello")
        assert r.status == 200 and r.body == b"hello"


def test_continue_for_chunked_body(srv):
    with Client(srv) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        assert c.response().raw == CONTINUE
        r = c.request(b"5\r\nhello\r\n0\r\n\r\n")
        assert r.status == 200 and r.body == b"hello"


def test_continue_for_each_request_on_a_connection(srv):
    with Client(srv) as c:
        for body in (b"one", b"second"):
            c.send(head_only(body_len=len(body)))
            assert c.response().raw == CONTINUE
            assert c.request(body).body == body


def test_expect_header_stays_in_environ(srv):
    with Client(srv) as c:
        c.send(head_only("/env", body_len=3))
        assert c.response().raw == CONTINUE
        env = c.request(b"abc").json()
    assert env["HTTP_EXPECT"] == "100-continue"
    assert env["_input"] == "abc"


def test_other_expect_values_get_no_continue(srv):
    with Client(srv) as c:
        c.send(head_only(expect="100-continue, foo"))
        assert c.silent(0.3)
        r = c.request(b"hello")
        assert r.status_line.startswith(b"HTTP/1.1 200")


def test_never_for_http10(srv):
    with Client(srv) as c:
        c.send(head_only(version="1.0"))
        assert c.silent(0.5)
        c.send(b"hello")
        data = c.rest()
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"100 Continue" not in data
    assert data.endswith(b"hello")


def test_no_continue_when_the_body_already_arrived(srv):
    """The issue's rule: 100 only if the body is still to come (RFC 9110
    10.1.1 lets a server omit it once content has arrived); waitress sends
    it anyway."""
    with Client(srv) as c:
        r = c.request(head_only() + b"hello")
        assert r.status_line == b"HTTP/1.1 200 OK"
        assert r.body == b"hello"
        assert c.silent(0.2)


def test_continue_waits_for_the_earlier_requests(srv):
    """A 100 must not jump ahead of the responses before it."""
    with Client(srv) as c:
        c.send(get("/slow?t=0.4&id=first") + head_only())
        r = c.response()
        assert r.status == 200 and r.json()["id"] == "first"
        assert c.response().raw == CONTINUE
        r = c.request(b"hello")
        assert r.body == b"hello"


@pytest.mark.parametrize("cl", ["0", None])
def test_expect_without_body_is_answered(srv, cl):
    """Difference 4: waitress sends 100 and then hangs until the channel
    timeout."""
    extra = ["Content-Length: " + cl] if cl is not None else []
    with Client(srv, timeout=3) as c:
        r = c.request(("\r\n".join(["POST /echo HTTP/1.1", "Host: x", "Expect: 100-continue"] + extra)
                       + "\r\n\r\n").encode())
        assert r.status_line == b"HTTP/1.1 200 OK"
        assert r.body == b""
        assert c.request(get("/respond?b=next")).body == b"next"


@pytest.mark.parametrize("size", [MAX_BODY, MAX_BODY + 1, 10**20])
def test_over_limit_content_length_gets_413_at_once(srv, size):
    """Difference 4: no 100, an immediate 413, then close."""
    with Client(srv, timeout=3) as c:
        r = c.request(head_only(body_len=size))
        assert r.status_line == b"HTTP/1.1 413 Request Entity Too Large"
        assert r.body == error_body("Request Entity Too Large", "exceeds max_body of %d" % MAX_BODY)
        assert c.closed()


def test_just_under_the_limit_gets_continue(srv):
    with Client(srv) as c:
        c.send(head_only(body_len=MAX_BODY - 1))
        assert c.response().raw == CONTINUE
        r = c.request(b"x" * (MAX_BODY - 1))
        assert r.status == 200 and len(r.body) == MAX_BODY - 1
