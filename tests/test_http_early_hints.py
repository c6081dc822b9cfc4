"""Interim responses: ``environ["wsgi.early_hints"]`` sends ``103 Early
Hints`` before the final response (RFC 8297), as gunicorn does; HTTP/1.0
clients get none (RFC 9110 15.2)."""

import socket
from urllib.parse import quote

import pytest
from http_helpers import Client, get, key, log_count, marks, server_fixture, wait_log

srv = server_fixture()

LINK = b"Link: </a.css>; rel=preload"


def hints_path(k, **q):
    return "/hints?k=%s&" % k + "&".join("%s=%s" % (n, quote(str(v))) for n, v in q.items())


def test_two_hints_then_the_final_response_on_a_kept_connection(srv):
    k = key()
    with Client(srv) as c:
        c.send(get(hints_path(k, n=2)))
        first = c.response()
        second = c.response()
        final = c.response()
        assert first.raw == second.raw == b"HTTP/1.1 103 Early Hints\r\n" + LINK + b"\r\n\r\n"
        assert final.status_line == b"HTTP/1.1 200 OK"
        assert final.body == b"done" and final.header("Connection") is None
        # The next request on the connection gets its own answer.
        r = c.request(get("/respond?b=next"))
        assert r.status_line == b"HTTP/1.1 200 OK" and r.body == b"next"
    assert marks(srv, k) == ["None", "None"]


def test_hints_with_several_headers_and_pipelined_requests(srv):
    k = key()
    path = "/hints?k=%s&h=%s&h=%s" % (k, quote("Link:</a.js>; rel=preload; as=script"), quote("X-Hint:\xe9", encoding="latin-1"))
    with Client(srv) as c:
        c.send(get(path) + get("/respond?b=next") + get(path))
        r = c.response()
        assert r.raw == b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload; as=script\r\nX-Hint: \xe9\r\n\r\n"
        assert c.response().body == b"done"
        assert c.response().body == b"next"
        assert c.response().status == 103
        assert c.response().body == b"done"


def test_hints_after_start_response_before_the_body(srv):
    """start_response does not send the head: hints may still go first."""
    k = key()
    with Client(srv) as c:
        c.send(get(hints_path(k, when="lazy")))
        assert c.response().raw == b"HTTP/1.1 103 Early Hints\r\n" + LINK + b"\r\n\r\n"
        r = c.response()
        assert r.status == 200 and r.body == b"done"
        assert c.request(get("/respond?b=next")).body == b"next"


def test_hints_from_an_app_thread(srv):
    k = key()
    with Client(srv) as c:
        c.send(get(hints_path(k, n=2, thread=1)))
        assert c.response().status == 103 and c.response().status == 103
        assert c.response().body == b"done"
        assert c.request(get("/respond?b=next")).body == b"next"
    assert marks(srv, k) == ["None", "None"]


def test_http10_gets_no_hints(srv):
    k = key()
    with Client(srv) as c:
        r = c.request(get(hints_path(k, n=2), version="1.0", headers=["Connection: keep-alive"]))
        assert r.status_line == b"HTTP/1.0 200 OK" and r.body == b"done"
        assert b"103" not in r.raw
        r = c.request(get("/respond?b=next", version="1.0", headers=["Connection: keep-alive"]))
        assert r.body == b"next"
    assert marks(srv, k) == ["None", "None"]


def test_hints_after_the_headers_were_sent_raise_and_the_response_completes(srv):
    k = key()
    with Client(srv) as c:
        r = c.request(get(hints_path(k, when="after", catch=1)))
        assert r.status_line == b"HTTP/1.1 200 OK" and r.body == b"beforeend"
        assert b"103" not in r.raw
        assert c.request(get("/respond?b=next")).body == b"next"
    assert marks(srv, k) == ["RuntimeError: early_hints called after the response headers were sent"]


def test_hints_after_the_headers_were_sent_uncaught_cut_the_response(srv):
    """The app lets the RuntimeError out: the response is cut short and the
    connection closed, as for any error once the head is out."""
    k = key()
    text = "RuntimeError: early_hints called after the response headers were sent"
    before = log_count(srv, text)
    with Client(srv) as c:
        c.send(get(hints_path(k, when="after")))
        data = c.rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nbefore")
    assert b"103" not in data
    assert wait_log(srv, text, before) > before
    with Client(srv) as c:
        assert c.request(get("/respond?b=next")).body == b"next"


def test_hints_kept_past_their_request_raise(server_factory):
    """One worker, so the next request reuses the StartResponse the kept
    callable was made for: the kept one raises, the new request's own one
    works."""
    s = server_factory("apps_http:router", threads=1)
    k = key()
    with Client(s) as c:
        assert c.request(get(hints_path(k, n=0, keep=1))).body == b"done"
        c.send(get(hints_path(k, when="late", catch=1)))
        assert c.response().raw == b"HTTP/1.1 103 Early Hints\r\n" + LINK + b"\r\n\r\n"
        r = c.response()
        assert r.status_line == b"HTTP/1.1 200 OK" and r.body == b"done"
    assert marks(s, k) == ["RuntimeError: early_hints called after the request was finished", "None"]


def test_hints_kept_in_an_environ_cycle(server_factory):
    """An environ kept alive (here on purpose, as a framework's reference
    cycle does until the collector runs) holds its wsgi.early_hints: the
    next requests get a callable of their own."""
    s = server_factory("apps_http:router", threads=1)
    k = key()
    with Client(s) as c:
        for _ in range(3):
            assert c.request(get(hints_path(k, n=0, keep=1))).body == b"done"
            c.send(get(hints_path(k)))
            assert c.response().status == 103
            assert c.response().body == b"done"
        for _ in range(3):
            r = c.request(get(hints_path(k, when="late", catch=1)))
            assert r.status == 103 and c.response().body == b"done"
    assert marks(s, k) == ["None"] * 3 + ["RuntimeError: early_hints called after the request was finished",
                                          "None"] * 3


def test_hints_on_every_listener(server_factory):
    """Each worker keeps its own copy of every listener's environ template
    with its wsgi.early_hints in it: one worker, requests alternating
    between two listeners, with the callable renewed between them."""
    s = server_factory("apps_http:router", listen="127.0.0.1:0 127.0.0.1:0", threads=1)
    k = key()
    clients = []
    try:
        for host, port in s.listen:
            c = Client(s)
            c.sock.close()
            c.sock = socket.create_connection((host, int(port)), timeout=5)
            clients.append(c)
        for i in range(6):
            c = clients[i % 2]
            c.send(get(hints_path(k, keep=1) if i == 2 else hints_path(k)))
            assert c.response().raw == b"HTTP/1.1 103 Early Hints\r\n" + LINK + b"\r\n\r\n"
            assert c.response().body == b"done"
    finally:
        for c in clients:
            c.close()
    assert marks(s, k) == ["None"] * 6


@pytest.mark.parametrize(
    "header, text",
    [
        ("X-A:v\r\nX-Injected: 1", "ValueError: carriage return/line feed character present in header value"),
        ("X-A:v\x00", "ValueError: control character present in header value"),
        ("X A:v", "ValueError: header name 'X A' is not a token"),
        ("Content-Length :1", "ValueError: header name 'Content-Length ' is not a token"),
        ("Content-Length:0", "ValueError: Content-Length in an interim response"),
        ("Connection:close", 'AssertionError: Connection is a "hop-by-hop" header'),
        ("Transfer-Encoding:chunked", 'AssertionError: Transfer-Encoding is a "hop-by-hop" header'),
    ],
)
def test_invalid_hint_headers_raise_and_nothing_is_sent(srv, header, text):
    k = key()
    before = log_count(srv, text)
    with Client(srv) as c:
        c.send(get("/hints?k=%s&h=%s" % (k, quote(header, encoding="latin-1"))))
        r = c.response()
        assert r.status_line == b"HTTP/1.1 500 Internal Server Error"
        assert b"103" not in r.raw and b"X-Injected" not in r.raw
        assert c.closed()
    assert wait_log(srv, text, before) > before


@pytest.mark.parametrize("arg", ["not-a-list", "tuple-items", "bytes-name", "bytes-value", "three"])
def test_hints_argument_types(srv, arg):
    with Client(srv) as c:
        r = c.request(get("/hints-bad?arg=" + arg))
        assert r.status == 500
        assert c.closed()
