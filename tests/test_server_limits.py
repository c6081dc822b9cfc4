"""connection_limit (3.23, difference 11), channel_timeout and
cleanup_interval (3.24), graceful close and the listener options.  Real
server, real sockets; every wait bounded."""

import socket
import threading
import time

import pytest
from http_reader import read_response, recv_all


def get(sock, path="/hello"):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    return read_response(sock.makefile("rb"))


def test_connection_limit_counts_clients_only(server_factory):
    """Difference 11: connection_limit=2 serves 2 clients at once (waitress
    serves limit - listeners - 1); the third waits in the backlog and is
    served when one leaves."""
    srv = server_factory("router", connection_limit=2)
    a, b = srv.connect(), srv.connect()
    try:
        assert get(a)[2] == b"Hello, world!"
        assert get(b)[2] == b"Hello, world!"
        c = srv.connect(timeout=1.5)
        try:
            c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(socket.timeout):
                c.recv(100)  # not accepted while two clients are open
            a.close()
            c.settimeout(10)
            assert read_response(c.makefile("rb"))[2] == b"Hello, world!"
        finally:
            c.close()
    finally:
        a.close()
        b.close()
    srv.wait_for("listening again", timeout=5, stream="stderr", fail=False)
    log = srv.stderr()
    assert (
        "total open connections reached the connection limit, no longer "
        "accepting new connections" in log
    )
    assert "total open connections dropped below the connection limit, listening again" in log


def test_idle_keepalive_connection_closed_after_channel_timeout(server_factory):
    srv = server_factory("router", channel_timeout=1, cleanup_interval=1)
    s = srv.connect(timeout=10)
    try:
        assert get(s)[2] == b"Hello, world!"
        start = time.monotonic()
        assert s.recv(100) == b""  # closed by the server, silently (no 408)
        elapsed = time.monotonic() - start
        assert 0.9 < elapsed < 4.0, elapsed
    finally:
        s.close()


def test_half_sent_headers_closed_after_channel_timeout(server_factory):
    srv = server_factory("router", channel_timeout=1, cleanup_interval=1)
    s = srv.connect(timeout=10)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow")
        start = time.monotonic()
        assert recv_all(s, timeout=8) == b""
        assert time.monotonic() - start < 6
    finally:
        s.close()


def test_running_request_is_never_timed_out(server_factory):
    """3.24: a request being served is not cut by channel_timeout."""
    srv = server_factory("router", channel_timeout=1, cleanup_interval=1)
    s = srv.connect(timeout=15)
    try:
        s.sendall(b"GET /slow?t=2.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(s.makefile("rb"))
        assert body == b"slept 2.50"
    finally:
        s.close()


def test_active_connection_not_timed_out(server_factory):
    srv = server_factory("router", channel_timeout=2, cleanup_interval=1)
    s = srv.connect(timeout=10)
    f = s.makefile("rb")
    try:
        for _ in range(6):  # 3 s of traffic, more than channel_timeout
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(f)[2] == b"Hello, world!"
            time.sleep(0.5)
    finally:
        s.close()


def test_graceful_close_keeps_busy_and_drops_idle(server_factory):
    """On SIGTERM an idle keep-alive connection is closed at once while a
    busy one gets its response, with Connection: close."""
    import signal

    srv = server_factory("router")
    idle = srv.connect(timeout=10)
    busy = srv.connect(timeout=10)
    try:
        assert get(idle)[2] == b"Hello, world!"
        busy.sendall(b"GET /slow?t=1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        srv.send_signal(signal.SIGTERM)
        assert idle.recv(100) == b""
        data = recv_all(busy, timeout=10)
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"Connection: close" in data
    finally:
        idle.close()
        busy.close()
    assert srv.wait(10) == 0


def test_new_connections_refused_while_stopping(server_factory):
    import signal

    srv = server_factory("router")
    busy = srv.connect(timeout=10)
    try:
        busy.sendall(b"GET /slow?t=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        srv.send_signal(signal.SIGINT)
        time.sleep(0.3)
        # Refused at once: not accepted by the kernel and left hanging.
        with pytest.raises(ConnectionRefusedError):
            srv.connect(timeout=2)
        assert recv_all(busy, timeout=10).endswith(b"slept 1.50")
    finally:
        busy.close()


def test_second_signal_stops_at_once(server_factory):
    import signal

    srv = server_factory("router")
    busy = srv.connect(timeout=10)
    try:
        busy.sendall(b"GET /slow?t=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        start = time.monotonic()
        srv.send_signal(signal.SIGINT)
        time.sleep(0.2)
        srv.send_signal(signal.SIGINT)
        assert srv.wait(10) == 0
        assert time.monotonic() - start < 4
    finally:
        busy.close()


def test_unix_socket_perms_and_stale_file(server_factory, tmp_path):
    import os
    import stat

    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a stale socket file, as a crashed server leaves
    stale.close()
    srv = server_factory("router", unix_socket=path, unix_socket_perms="660")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    resp, body = srv.request("GET", "/hello")
    assert body == b"Hello, world!"


def test_many_connections_above_default_limit_are_served_in_turn(server_factory):
    """150 clients with connection_limit=100: everyone is served."""
    srv = server_factory("router")
    results = []

    def client():
        try:
            s = srv.connect(timeout=20)
            try:
                results.append(get(s)[2])
            finally:
                s.close()
        except OSError as e:  # recorded, asserted below
            results.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(b"Hello, world!") == 150


def _tempfiles(pid):
    import os

    found = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("/tmp/") and "(deleted)" in target:
            found.append(target)
    return found


def test_output_over_outbuf_overflow_spills_to_disk(server_factory):
    """3.27: a slow reader's pending output above outbuf_overflow goes to a
    temp file, not memory; the bytes arrive intact and in order."""
    import json

    srv = server_factory("router", outbuf_overflow=65536)
    pid = json.loads(srv.request("GET", "/pid")[1])["pid"]
    n = 8 * 1024 * 1024
    s = srv.connect(timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        deadline = time.monotonic() + 5
        spilled = []
        while time.monotonic() < deadline and not spilled:
            spilled = _tempfiles(pid)
            time.sleep(0.05)
        assert spilled, "no spill file while the client does not read"
        status, headers, body = read_response(s.makefile("rb"))
        block = bytes(range(256)) * 256
        assert body == (block * (n // len(block) + 1))[:n]
    finally:
        s.close()
