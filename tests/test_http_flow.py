"""Flow control: channel_request_lookahead and client-disconnect detection
(as in waitress), output backpressure with a slow reader
(3.27), and input spooling (3.28)."""

import socket
import time

import pytest
from apps_http import pattern
from http_helpers import Client, get, key, marks, server_fixture, wait_marks

srv = server_fixture()
ahead = server_fixture(name="ahead", channel_request_lookahead=5)
small = server_fixture(name="small", outbuf_high_watermark=65536, inbuf_overflow=1000)

MB = 1024 * 1024


def progress(s, k):
    ev = marks(s, k + "-progress")
    return ev[0] if ev else 0


def wait_progress_stable(s, k, timeout=3.0):
    """Progress once it stops moving (the producer is parked)."""
    deadline = time.monotonic() + timeout
    last = -1
    cur = progress(s, k)
    while cur != last and time.monotonic() < deadline:
        last = cur
        time.sleep(0.25)
        cur = progress(s, k)
    return cur


# -- 3.26 lookahead and client_disconnected ----------------------------------------------


def test_client_disconnected_stays_false_without_lookahead(srv):
    k = key()
    c = Client(srv)
    c.send(get("/disc?t=0.8&k=" + k))
    wait_marks(srv, k, lambda ev: "started" in ev)
    c.close()
    ev = wait_marks(srv, k, lambda ev: len(ev) == 2)
    assert ev == ["started", "disconnected=False"]


def test_client_disconnected_true_with_lookahead(ahead):
    k = key()
    c = Client(ahead)
    c.send(get("/disc?t=5&k=" + k))
    wait_marks(ahead, k, lambda ev: "started" in ev)
    t0 = time.monotonic()
    c.close()
    ev = wait_marks(ahead, k, lambda ev: len(ev) == 2)
    assert ev == ["started", "disconnected=True"]
    assert time.monotonic() - t0 < 3  # seen while the app was running


def test_client_disconnected_false_while_connected_with_lookahead(ahead):
    k = key()
    with Client(ahead) as c:
        r = c.request(get("/disc?t=0.3&k=" + k))
        assert r.body == b"disc False"


def test_lookahead_serves_pipelined_requests_in_order(ahead):
    with Client(ahead) as c:
        c.send(b"".join(get("/slow?t=%s&id=%d" % (t, i)) for i, t in enumerate([0.2, 0, 0.1, 0, 0, 0, 0, 0])))
        got = [c.response().json() for _ in range(8)]
    assert [g["id"] for g in got] == [str(i) for i in range(8)]
    for a, b in zip(got, got[1:]):
        assert b["start"] >= a["end"]


@pytest.mark.parametrize("first", ["error", "close"])
def test_lookahead_never_serves_past_a_closing_request(ahead, first):
    """GHSA-9298-4cf8-g4wj: requests read ahead behind an invalid request,
    or one that ends in close, are never dispatched."""
    k = key()
    if first == "error":
        head = b"GET /slow HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx"
    else:
        head = get("/slow?t=0.3", headers=["Connection: close"])
    with Client(ahead) as c:
        c.send(head + b"".join(get("/mark?k=%s&n=%d" % (k, i)) for i in range(5)))
        r = c.response()
        assert r.header("Connection") == "close"
        assert c.closed()
    time.sleep(0.3)
    assert marks(ahead, k) == []


def test_disconnect_noticed_on_write_aborts_the_app_iter(srv):
    """Without lookahead a disconnect is seen when writing fails: the task
    stops and close() is still called."""
    k = key()
    n = 20000  # 1.3 GB if nobody stopped it
    c = Client(srv)
    c.send(get("/produce?n=%d&block=65536&k=%s" % (n, k)))
    c.sock.recv(1000)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    ev = wait_marks(srv, k, lambda ev: ev, timeout=10)
    assert len(ev) == 1 and ev[0].startswith("closed after ")
    assert int(ev[0].rsplit(" ", 1)[1]) < n * 65536


def test_write_raises_once_the_client_is_gone(srv):
    k = key()
    c = Client(srv)
    c.send(get("/write-loop?n=20000&block=65536&k=" + k))
    c.sock.recv(1000)
    c.close()
    ev = wait_marks(srv, k, lambda ev: len(ev) >= 2, timeout=10)
    assert ev[0].startswith("raised ")
    assert ev[1].startswith("wrote ") and int(ev[1].split()[1]) < 20000 * 65536


# -- 3.27 output backpressure --------------------------------------------------------------


@pytest.mark.parametrize("route", ["produce", "write-loop"])
def test_slow_reader_parks_the_app(small, route):
    """With outbuf_high_watermark=64 KiB the app is held back while the
    client reads nothing, and the whole body still arrives intact."""
    k = key()
    n, block = 1000, 65536  # 64 MiB
    with Client(small, timeout=20) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(get("/%s?n=%d&block=%d&cl=1&k=%s" % (route, n, block, k)))
        parked = wait_progress_stable(small, k)
        # The high watermark plus what the kernel buffers hold: far below
        # the 64 MiB the app wants to write.
        assert 0 < parked < 16 * MB, parked
        r = c.response()
        assert r.header("Content-Length") == str(n * block)
        assert len(r.body) == n * block
        assert r.body[:block] == pattern(block) and r.body[-block:] == pattern(block)
    assert progress(small, k) == n * block


def test_default_watermark_also_bounds_a_slow_reader(srv):
    k = key()
    n, block = 1500, 65536  # 94 MiB against the default 16 MiB watermark
    with Client(srv, timeout=20) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(get("/produce?n=%d&block=%d&cl=1&k=%s" % (n, block, k)))
        parked = wait_progress_stable(srv, k)
        assert 0 < parked < 40 * MB, parked
        r = c.response()
        assert len(r.body) == n * block


def test_many_responses_on_one_connection_to_a_slow_reader(small):
    """Pipelined large responses: each arrives whole and in order."""
    n = 20
    with Client(small, timeout=20) as c:
        c.send(b"".join(get("/produce?n=16&block=65536&cl=1&k=%s" % key()) for _ in range(n)))
        time.sleep(0.3)
        for _ in range(n):
            r = c.response()
            assert len(r.body) == 16 * 65536 and r.body[:65536] == pattern(65536)


# -- 3.28 input spooling ----------------------------------------------------------------------


def input_ops(s, body, chunked=False):
    with Client(s) as c:
        if chunked:
            data = b"POST /input HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            for i in range(0, len(body), 700):
                part = body[i : i + 700]
                data += b"%X\r\n%s\r\n" % (len(part), part)
            r = c.request(data + b"0\r\n\r\n")
        else:
            r = c.request(get("/input", method="POST", body=body))
    assert r.status == 200, r
    return r.json()


BODY_LINES = b"line one\nline two\r\nthird line\n" + b"x" * 3000 + b"\nlast"


@pytest.mark.parametrize("where", ["memory", "spooled", "spooled-chunked"])
def test_wsgi_input_file_operations(small, where):
    body = BODY_LINES[:200] if where == "memory" else BODY_LINES
    res = input_ops(small, body, chunked=where.endswith("chunked"))
    text = body.decode("latin-1")
    assert res["read3"] == text[:3]
    assert res["readline"] == "e one\n"
    assert res["readline_limit"] == "li"
    assert res["tell"] == 11
    assert res["readlines"] == [ln for ln in text.splitlines(keepends=True)]
    assert res["iter"] == res["readlines"]
    assert res["read_all"] == text
    assert res["read_past_end"] == ""
    assert res["after_seek2"] == text[2:6]
    assert res["CONTENT_LENGTH"] == str(len(body))


def test_body_spills_to_a_file_above_inbuf_overflow(small):
    in_memory = input_ops(small, b"a" * 999)
    spooled = input_ops(small, b"a" * 5000)
    assert in_memory["real_file"] is False
    assert spooled["real_file"] is True
    assert spooled["type"] != in_memory["type"]
    chunked = input_ops(small, b"b" * 5000, chunked=True)
    assert chunked["real_file"] is True and chunked["length"] == 5000


def test_large_spooled_bodies_are_intact(srv):
    body = pattern(3 * MB, seed=3)
    with Client(srv, timeout=20) as c:
        r = c.request(get("/echo", method="POST", body=body))
        assert r.body == body
        data = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for i in range(0, len(body), 65536):
            part = body[i : i + 65536]
            data += b"%X\r\n%s\r\n" % (len(part), part)
        r = c.request(data + b"0\r\n\r\n")
        assert r.body == body
