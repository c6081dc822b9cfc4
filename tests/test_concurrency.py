"""Concurrency at the edges of a response: several application threads
calling write() on one response to a slow client, and a client that stops
reading a large response while others wait to be served.

Real server subprocesses, raw sockets on 127.0.0.1.  Every wait is bounded
(socket timeouts and deadlines), so a lost wake-up or a pinned worker is a
failure, not a stuck suite.  These run under ``make tsan`` too."""

import re
import socket
import time

import pytest
from apps_concurrency import HEAD_LEN, HELLO, block
from http_reader import Reader
from servers import SLOW

APP = "apps_concurrency:router"
HEAD_RE = re.compile(rb"<([A-Z]):(\d{6}):(\d{10})>\.*")


def small_socket(srv, rcvbuf=4096, timeout=10.0):
    """A TCP client with a small receive buffer (set before connect, so
    the window the server sees stays small).  Not too small for a client
    that does read everything in the end: a window far below the loopback
    MSS makes TCP itself crawl (tens of KiB/s)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((srv.host, srv.port))
    return s


def check_blocks(body, tags, n):
    """The body is the writers' blocks, each whole, each writer's in its
    own order, none lost, none twice."""
    nxt = {t: 0 for t in tags}
    pos = 0
    while pos < len(body):
        m = HEAD_RE.match(body, pos)
        assert m and m.end() - pos == HEAD_LEN, "no block head at %d: %r" % (
            pos,
            body[pos : pos + 40],
        )
        tag, seq, size = m.group(1).decode(), int(m.group(2)), int(m.group(3))
        assert tag in nxt, "unknown writer %r at %d" % (tag, pos)
        assert seq == nxt[tag], "writer %s: block %d where %d was due (offset %d)" % (
            tag,
            seq,
            nxt[tag],
            pos,
        )
        assert body[pos : pos + size] == block(tag, seq, size), (
            "block %s:%d at %d is damaged" % (tag, seq, pos)
        )
        nxt[tag] += 1
        pos += size
    assert nxt == {t: n for t in tags}, "blocks per writer: %r" % nxt


def get_hello(srv, timeout):
    """One GET /hello on a fresh connection; returns the status and body."""
    s = srv.connect(timeout=timeout)
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = Reader(s, deadline=time.monotonic() + timeout).response()
        return r.status, r.body
    finally:
        s.close()



def trickle_then_read(s, seconds, join):
    """Read a trickle for `seconds` (the writers park meanwhile), then the
    whole chunked response; returns (status, headers, body)."""
    buf = b""
    slow_until = time.monotonic() + seconds
    while time.monotonic() < slow_until:
        time.sleep(0.02)
        buf += s.recv(2048)
    reader = Reader(s, deadline=time.monotonic() + join + 10, buf=buf)
    r = reader.response(trailers=False)
    assert reader.buf == b""
    return r.status, r.header_map(), r.body

# -- (a) several threads in write() ------------------------------------------


@pytest.mark.parametrize("nthreads", [2, 4])
def test_concurrent_write_calls_to_a_slow_client(server_factory, nthreads):
    # 12 MiB in all: well past what the kernel buffers hold, so the writers
    # do park on the watermark.
    size, join = 32768, 6 * SLOW
    n = 384 // nthreads
    srv = server_factory(APP, threads=2, outbuf_high_watermark=65536)
    s = small_socket(srv, rcvbuf=65536, timeout=join + 10)
    try:
        s.sendall(
            b"GET /writers?threads=%d&n=%d&size=%d&join=%d HTTP/1.1\r\nHost: x\r\n\r\n"
            % (nthreads, n, size, join)
        )
        # Slow phase: the writers fill the queue past the watermark and
        # park; a trickle of reads lets them on one at a time.
        status, headers, body = trickle_then_read(s, 1.5, join)
        assert status == 200
        assert headers.get("transfer-encoding") == "chunked"
        check_blocks(body, [chr(ord("A") + i) for i in range(nthreads)], n)

        # The connection and the server are still fine.
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s, deadline=time.monotonic() + 10 * SLOW).response()
        assert (r.status, r.body) == (200, HELLO)
    finally:
        s.close()
    assert get_hello(srv, 10 * SLOW) == (200, HELLO)


def test_one_writer_thread_besides_the_app_to_a_slow_client(server_factory):
    """The single-writer case of the above: write() from a thread other
    than the one that called the app, parking on the watermark."""
    n, size, join = 256, 32768, 6 * SLOW
    srv = server_factory(APP, threads=2, outbuf_high_watermark=65536)
    s = small_socket(srv, rcvbuf=65536, timeout=join + 10)
    try:
        s.sendall(
            b"GET /writers?threads=1&n=%d&size=%d&join=%d HTTP/1.1\r\nHost: x\r\n\r\n"
            % (n, size, join)
        )
        status, headers, body = trickle_then_read(s, 1.0, join)
        assert status == 200
        check_blocks(body, ["A"], n)
    finally:
        s.close()
    assert get_hello(srv, 10 * SLOW) == (200, HELLO)


# -- (b) a client that stops reading -----------------------------------------

BIG = 64 * 1024 * 1024


def stall(srv):
    """A client that asks for a large response and never reads it."""
    s = small_socket(srv, timeout=10 * SLOW)
    s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
    return s


def drain(s, timeout):
    """Read what the stalled client was sent, up to EOF or a reset;
    returns (bytes, closed by the server)."""
    total = 0
    deadline = time.monotonic() + timeout
    s.settimeout(2.0)
    while time.monotonic() < deadline:
        try:
            data = s.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionError:
            return total, True
        if not data:
            return total, True
        total += len(data)
    return total, False


def test_stalled_reader_does_not_stop_other_clients(server_factory):
    """One worker is held by a client that stopped reading; the other
    serves everyone else, then the stalled client leaves and its worker
    comes back."""
    srv = server_factory(APP, threads=2, outbuf_high_watermark=1048576)
    stalled = stall(srv)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        for _ in range(30):
            assert get_hello(srv, 10 * SLOW) == (200, HELLO)
        assert time.monotonic() - t0 < 20 * SLOW
    finally:
        stalled.close()
    # Its worker is free again: two slow-ish clients at once both get
    # answers, which needs both workers.
    a, b = stall(srv), stall(srv)
    try:
        for s in (a, b):
            r = Reader(s, deadline=time.monotonic() + 10 * SLOW).read_head()
            assert r.status == 200 and r.header_map()["content-length"] == str(BIG)
    finally:
        a.close()
        b.close()
    assert get_hello(srv, 10 * SLOW) == (200, HELLO)


def test_stalled_reader_is_closed_after_channel_timeout(server_factory):
    """With one worker, a client that stops reading would hold it forever:
    a write that makes no progress for channel_timeout closes the channel,
    the worker is released and the next client is answered."""
    srv = server_factory(
        APP, threads=1, outbuf_high_watermark=1048576, channel_timeout=1, cleanup_interval=1
    )
    stalled = stall(srv)
    try:
        time.sleep(0.5)
        # Queued behind the stalled response: answered once it is closed
        # (channel_timeout 1 s + one sweep of 1 s, with room to spare).
        assert get_hello(srv, 8 * SLOW) == (200, HELLO)
        got, closed = drain(stalled, 10 * SLOW)
        assert closed, "the stalled channel was not closed"
        assert got < BIG, "the stalled client got the whole response"
    finally:
        stalled.close()
    assert get_hello(srv, 10 * SLOW) == (200, HELLO)
