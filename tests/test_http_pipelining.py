"""Pipelining (as in waitress)."""

import time

import pytest
from http_helpers import Client, get, key, marks, server_fixture

srv = server_fixture()


def test_25_pipelined_http10_keep_alive_requests_in_order(srv):
    reqs = b"".join(
        get("/respond?b=r%d" % i, version="1.0", headers=["Connection: keep-alive"]) for i in range(25)
    )
    with Client(srv) as c:
        c.send(reqs)
        for i in range(25):
            r = c.response()
            assert r.body == b"r%d" % i
            assert r.header("Connection") == "Keep-Alive"


def test_pipelined_requests_run_one_at_a_time_in_order(srv):
    """The first request is the slowest; the answers still come in request
    order, and no two ran at once."""
    times = [0.3, 0.0, 0.15, 0.0]
    reqs = b"".join(get("/slow?t=%s&id=%d" % (t, i)) for i, t in enumerate(times))
    with Client(srv) as c:
        c.send(reqs)
        got = [c.response().json() for _ in times]
    assert [g["id"] for g in got] == [str(i) for i in range(len(times))]
    for a, b in zip(got, got[1:]):
        assert b["start"] >= a["end"]


def test_pipelined_requests_mixed_with_bodies(srv):
    reqs = (
        get("/echo", method="POST", body=b"first body")
        + get("/respond?b=middle")
        + b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        + get("/echo", method="PUT", body=b"last")
    )
    with Client(srv) as c:
        # Byte by byte for the first 200 bytes, then the rest at once.
        for i in range(0, 200):
            c.send(reqs[i : i + 1])
        c.send(reqs[200:])
        assert [c.response().body for _ in range(4)] == [b"first body", b"middle", b"abc", b"last"]


@pytest.mark.parametrize("prefix", [b"\r\n", b"\r\n\r\n", b"\r\n\r\n\r\n\r\n\r\n"])
def test_empty_lines_before_a_request_are_ignored(srv, prefix):
    with Client(srv) as c:
        r = c.request(prefix + get("/respond?b=one"))
        assert r.body == b"one"
        r = c.request(prefix + get("/respond?b=two"))
        assert r.body == b"two"


def test_empty_lines_between_pipelined_requests(srv):
    with Client(srv) as c:
        c.send(get("/respond?b=one") + b"\r\n\r\n" + get("/respond?b=two") + b"\r\n" + get("/respond?b=three"))
        assert [c.response().body for _ in range(3)] == [b"one", b"two", b"three"]
        # The blank lines made no extra response.
        assert c.silent(0.3)


def test_bytes_after_the_body_are_the_next_request(srv):
    with Client(srv) as c:
        c.send(get("/echo", method="POST", body=b"hello") + get("/respond?b=next"))
        assert c.response().body == b"hello"
        assert c.response().body == b"next"


def test_garbage_after_the_body_gets_an_error_then_close(srv):
    with Client(srv) as c:
        c.send(get("/echo", method="POST", body=b"hello") + b"hello again, this is not http\r\n\r\n")
        r = c.response()
        assert r.status == 200 and r.body == b"hello"
        r2 = c.response()
        assert r2.status == 400
        assert r2.header("Connection") == "close"
        assert c.closed()


def test_http10_without_keep_alive_drops_what_follows(srv):
    k = key()
    with Client(srv) as c:
        c.send(get("/mark?k=%s&n=1" % k, version="1.0") + get("/mark?k=%s&n=2" % k, version="1.0"))
        r = c.response()
        assert r.body == b"marked"
        assert c.closed()
    assert marks(srv, k) == ["hit k=%s&n=1" % k]


@pytest.mark.parametrize("first", ["close", "error", "http10"])
def test_nothing_after_a_closing_request_is_served(srv, first):
    """Requests already read behind one that ends in close are discarded,
    never dispatched (GHSA-9298-4cf8-g4wj)."""
    k = key()
    if first == "close":
        head = get("/slow?t=0.2", headers=["Connection: close"])
    elif first == "error":
        head = b"GET /slow HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
    else:
        head = get("/slow?t=0.2", version="1.0")
    follow = b"".join(get("/mark?k=%s&n=%d" % (k, i)) for i in range(5))
    with Client(srv) as c:
        c.send(head + follow)
        r = c.response()
        assert r.header("Connection") == "close"
        assert c.closed()
    time.sleep(0.2)
    assert marks(srv, k) == []


def test_pipeline_across_many_small_packets(srv):
    reqs = b"".join(get("/respond?b=p%d" % i) for i in range(10))
    with Client(srv) as c:
        for i in range(0, len(reqs), 7):
            c.send(reqs[i : i + 7])
        assert [c.response().body for _ in range(10)] == [b"p%d" % i for i in range(10)]
