"""The request path end to end (issue: the C core).  A real server in a
subprocess, spoken to over TCP and a unix socket with raw sockets and
http.client."""

import hashlib
import io
import os
import signal
import socket
import threading
import time

import pytest
from http_reader import read_response, recv_all


def test_hello(server):
    resp, body = server.request("GET", "/")
    assert resp.status == 200
    assert body == b"Hello, world!"
    assert resp.getheader("Content-Length") == "13"
    assert resp.getheader("Server") == "waitress_c"
    assert resp.getheader("Date").endswith(" GMT")


def test_keep_alive_reuses_connection(server):
    conn = server.http()
    try:
        for _ in range(20):
            conn.request("GET", "/hello")
            resp = conn.getresponse()
            assert resp.read() == b"Hello, world!"
            assert resp.getheader("Connection") is None
        # One TCP connection served all of them.
        assert conn.sock is not None
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/validated", "/validated-chunks"])
def test_wsgiref_validator_passes(server, path):
    resp, body = server.request("GET", path)
    assert resp.status == 200, body
    assert body in (b"Hello, world!", b"one two three")
    assert "AssertionError" not in server.stderr()
    assert "Exception while serving" not in server.stderr()


def test_wsgiref_validator_with_body(server):
    data = os.urandom(1000)
    resp, body = server.request("POST", "/validated-echo", body=data)
    assert resp.status == 200
    assert body == data
    assert "Exception while serving" not in server.stderr()


def test_fifty_pipelined_requests_in_one_send(server):
    s = server.connect()
    try:
        reqs = b"".join(
            b"GET /environ?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(50)
        )
        s.sendall(reqs)
        f = s.makefile("rb")
        import json

        for i in range(50):
            status, headers, body = read_response(f)
            assert status.startswith(b"HTTP/1.1 200")
            assert json.loads(body)["QUERY_STRING"] == "i=%d" % i
    finally:
        s.close()


def test_upload_5mib_spooled_to_disk_and_echoed(server):
    data = os.urandom(5 * 1024 * 1024)
    resp, body = server.request(
        "POST", "/echo", body=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert resp.status == 200
    assert resp.getheader("X-SHA256") == hashlib.sha256(data).hexdigest()
    # Above inbuf_overflow (512 KiB) the body lives in a temp file.
    assert resp.getheader("X-Input-Type") != "Input"
    assert body == data


def test_small_upload_stays_in_memory(server):
    resp, body = server.request("POST", "/echo", body=b"x" * 1000)
    assert resp.getheader("X-Input-Type") == "Input"
    assert body == b"x" * 1000


def test_chunked_upload_decoded(server):
    s = server.connect()
    try:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        status, headers, body = read_response(s.makefile("rb"))
        assert status.startswith(b"HTTP/1.1 200")
        assert body == b"hello world"
    finally:
        s.close()


def test_response_5mib(server):
    n = 5 * 1024 * 1024
    resp, body = server.request("GET", "/big?n=%d" % n)
    assert resp.status == 200
    assert len(body) == n
    block = bytes(range(256)) * 256
    assert body == (block * (n // len(block) + 1))[:n]


def test_two_hundred_concurrent_clients(server):
    """No response is lost or crossed with another connection's."""
    import json

    results = {}
    errors = []

    def client(i):
        try:
            conn = server.http(timeout=30)
            for j in range(3):
                conn.request("POST", "/echo", body=b"client %d req %d" % (i, j))
                resp = conn.getresponse()
                results[(i, j)] = resp.read()
            conn.close()
        except Exception as e:  # collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 600
    for (i, j), body in results.items():
        assert body == b"client %d req %d" % (i, j)


def test_chunked_response_on_http11(server):
    s = server.connect()
    try:
        s.sendall(b"GET /chunks HTTP/1.1\r\nHost: x\r\n\r\n")
        f = s.makefile("rb")
        status, headers, body = read_response(f)
        h = dict((k.lower(), v) for k, v in headers)
        assert h["transfer-encoding"] == "chunked"
        assert body == b"one two three"
        # Chunked responses keep the connection open (a difference).
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"Hello, world!"
    finally:
        s.close()


def test_close_delimited_on_http10(server):
    s = server.connect()
    try:
        s.sendall(b"GET /chunks HTTP/1.0\r\n\r\n")
        data = recv_all(s)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert b"Connection: close" in head
        assert b"Transfer-Encoding" not in head
        assert body == b"one two three"
    finally:
        s.close()


def test_write_callable(server):
    resp, body = server.request("GET", "/write")
    assert body == b"abcdef"


def test_exception_before_start_response_gives_500(server):
    resp, body = server.request("GET", "/raise-before")
    assert resp.status == 500
    assert body == (
        b"Internal Server Error\r\n\r\nThe server encountered an unexpected "
        b"internal server error\r\n\r\n(generated by waitress_c)"
    )
    assert resp.getheader("Connection") == "close"
    assert resp.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert "Exception while serving /raise-before" in server.stderr()
    assert "boom before start_response" in server.stderr()
    # The server goes on.
    resp, body = server.request("GET", "/hello")
    assert body == b"Hello, world!"


def test_exception_after_headers_closes_connection(server):
    s = server.connect()
    try:
        s.sendall(b"GET /raise-after HTTP/1.1\r\nHost: x\r\n\r\n")
        data = recv_all(s)
        assert data.startswith(b"HTTP/1.1 200")
        assert b"partial" in data
        assert not data.endswith(b"0\r\n\r\n")  # the body was cut short
    finally:
        s.close()
    assert "boom in the generator" in server.stderr()
    resp, body = server.request("GET", "/hello")
    assert body == b"Hello, world!"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_slow_request_finishes_it(server_factory, sig):
    srv = server_factory("router")
    s = srv.connect(timeout=20)
    try:
        s.sendall(b"GET /slow?t=1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        srv.send_signal(sig)
        data = recv_all(s, timeout=20)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"slept 1.00")
    assert b"Connection: close" in data
    assert srv.wait(timeout=20) == 0
    assert "Traceback" not in srv.stderr()


def test_close_from_another_thread_in_process():
    """create_server(...).run() in a thread, close() from this one."""
    import http.client

    from waitress_c import create_server

    import apps

    srv = create_server(apps.router, listen="127.0.0.1:0", threads=2)
    t = threading.Thread(target=srv.run)
    t.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(srv.effective_port), timeout=10)
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"Hello, world!"
        conn.close()
    finally:
        srv.close()
        t.join(10)
    assert not t.is_alive()


def test_ipv6_listener(server_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    srv = server_factory("router", listen="[::1]:0")
    assert srv.host == "::1"
    resp, body = srv.request("GET", "/environ")
    import json

    env = json.loads(body)
    assert env["REMOTE_ADDR"] == "::1"


def test_tcp_nodelay_single_connection_latency(server):
    """Small request/response round trips must not wait on Nagle (40 ms)."""
    conn = server.http()
    try:
        conn.request("GET", "/hello")
        conn.getresponse().read()
        start = time.monotonic()
        for _ in range(50):
            conn.request("GET", "/write")
            conn.getresponse().read()
        elapsed = time.monotonic() - start
    finally:
        conn.close()
    # 50 round trips with a Nagle stall each would take 2 s.
    assert elapsed < 1.5, elapsed


def _read_until(sock, marker, timeout):
    sock.settimeout(timeout)
    data = b""
    start = time.monotonic()
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def test_streamed_blocks_are_not_held_while_the_app_works(server):
    """PEP 3333: transmission goes on while the app makes its next block.
    A block held back for coalescing leaves within milliseconds even when
    the generator then pauses for a second."""
    s = server.connect(timeout=10)
    try:
        s.sendall(b"GET /stream-pause HTTP/1.1\r\nHost: x\r\n\r\n")
        data, elapsed = _read_until(s, b"second;", timeout=5)
        assert b"second;" in data
        assert elapsed < 0.5, elapsed
        data2, _ = _read_until(s, b"0\r\n\r\n", timeout=5)
        assert b"third;" in data + data2
    finally:
        s.close()


def test_pipelined_response_not_held_behind_a_slow_request(server):
    """A fast response followed by a slow pipelined request is sent at once,
    not when the slow one finishes."""
    s = server.connect(timeout=10)
    try:
        s.sendall(
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /slow?t=1.0 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data, elapsed = _read_until(s, b"Hello, world!", timeout=5)
        assert b"Hello, world!" in data
        assert elapsed < 0.5, elapsed
        data2, _ = _read_until(s, b"slept 1.00", timeout=5)
        assert b"slept 1.00" in data + data2
    finally:
        s.close()
