"""The public API (issue 4): create_server(), the server object's
attributes, print_listen(), close() from any thread, and an import that
starts nothing.  In-process servers on port 0."""

import http.client
import logging
import os
import socket
import subprocess
import sys
import threading

import pytest

import waitress_c
from waitress_c import create_server, serve

import apps


def run_in_thread(srv):
    t = threading.Thread(target=srv.run)
    t.start()
    return t


def test_create_server_none_app_raises_waitress_error():
    with pytest.raises(ValueError) as e:
        create_server(None)
    assert "You forgot to return a WSGI app" in str(e.value)


def test_effective_host_and_port_are_strings():
    srv = create_server(apps.hello, listen="127.0.0.1:0")
    try:
        assert srv.effective_host == "127.0.0.1"
        assert isinstance(srv.effective_port, str) and int(srv.effective_port) > 0
    finally:
        srv.close()
        t = run_in_thread(srv)  # close() before run(): run returns at once
        t.join(10)
        assert not t.is_alive()


def test_print_listen_logs_each_listener(caplog):
    srv = create_server(apps.hello, listen="127.0.0.1:0 127.0.0.1:0")
    try:
        assert not hasattr(srv, "effective_host")  # as waitress's MultiSocketServer
        assert len(srv.effective_listen) == 2
        with caplog.at_level(logging.INFO, logger="waitress_c"):
            srv.print_listen("Serving on http://{}:{}")
        lines = [r.getMessage() for r in caplog.records]
        for host, port in srv.effective_listen:
            assert "Serving on http://%s:%s" % (host, port) in lines
    finally:
        srv.close()
        run_in_thread(srv).join(10)


def test_ipv6_listener_is_bracketed_in_print_listen(caplog):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    srv = create_server(apps.hello, listen="[::1]:0 127.0.0.1:0")
    try:
        with caplog.at_level(logging.INFO, logger="waitress_c"):
            srv.print_listen("Serving on http://{}:{}")
        assert any("http://[::1]:" in r.getMessage() for r in caplog.records)
    finally:
        srv.close()
        run_in_thread(srv).join(10)


def test_a_name_with_two_addresses_is_served_on_both(monkeypatch):
    # "localhost" as most machines resolve it (127.0.0.1 and ::1), from a
    # resolver the test controls rather than this machine's hosts file
    try:
        with socket.socket(socket.AF_INET6) as s6, socket.socket() as s4:
            s6.bind(("::1", 0))
            port = s6.getsockname()[1]
            s4.bind(("127.0.0.1", port))
    except OSError:
        pytest.skip("no ::1 here, or no port free on both")
    real = socket.getaddrinfo

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host != "localhost":
            return real(host, port, family, type, proto, flags)
        return [
            (socket.AF_INET6, type, proto, "", ("::1", int(port), 0, 0)),
            (socket.AF_INET, type, proto, "", ("127.0.0.1", int(port))),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    srv = create_server(apps.hello, listen="localhost:%d" % port)
    t = run_in_thread(srv)
    try:
        assert sorted(srv.effective_listen) == [
            ("127.0.0.1", str(port)), ("::1", str(port))
        ]
        for host in ("::1", "127.0.0.1"):
            c = http.client.HTTPConnection(host, port, timeout=10)
            c.request("GET", "/")
            assert c.getresponse().read() == b"Hello, world!"
            c.close()
    finally:
        srv.close()
        t.join(10)


def test_unix_server_effective_listen(tmp_path):
    path = str(tmp_path / "s.sock")
    srv = create_server(apps.hello, unix_socket=path)
    try:
        assert srv.effective_host == "unix"
        assert srv.effective_port == path
    finally:
        srv.close()
        run_in_thread(srv).join(10)


def test_close_from_another_thread_while_serving_many_requests():
    srv = create_server(apps.hello, listen="127.0.0.1:0", threads=2)
    t = run_in_thread(srv)
    port = int(srv.effective_port)
    for _ in range(20):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/")
        assert c.getresponse().read() == b"Hello, world!"
        c.close()
    closer = threading.Thread(target=srv.close)
    closer.start()
    closer.join(10)
    t.join(10)
    assert not t.is_alive()
    # The worker threads are gone too.
    assert not [x for x in threading.enumerate() if x.name.startswith("waitress_c-")]


def test_sockets_passed_in_are_not_closed():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    srv = create_server(apps.hello, sockets=[s])
    t = run_in_thread(srv)
    port = s.getsockname()[1]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/")
    assert c.getresponse().read() == b"Hello, world!"
    c.close()
    srv.close()
    t.join(10)
    assert s.fileno() != -1  # still the caller's
    s.close()


def test_serve_uses_the_server_shim():
    calls = []

    class Fake:
        def __init__(self, app, **kw):
            calls.append(kw)

        def print_listen(self, fmt):
            calls.append(fmt)

        def run(self):
            calls.append("run")

    serve(apps.hello, _server=Fake, _quiet=True, threads=3)
    assert calls == [{"threads": 3}, "run"]
    del calls[:]
    serve(apps.hello, _server=Fake, threads=3)
    assert calls == [{"threads": 3}, "Serving on http://{}:{}", "run"]


def test_import_starts_no_thread_and_opens_no_socket():
    code = (
        "import os, threading\n"
        "before = set(os.listdir('/proc/self/fd'))\n"
        "import waitress_c, waitress_c.server, waitress_c._core\n"
        "after = set(os.listdir('/proc/self/fd'))\n"
        "socks = [f for f in after - before\n"
        "         if os.readlink('/proc/self/fd/' + f).startswith('socket:')]\n"
        "print(threading.active_count(), len(socks))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == ["1", "0"], out.stderr


def test_package_is_typed():
    pkg = os.path.dirname(waitress_c.__file__)
    assert os.path.exists(os.path.join(pkg, "py.typed"))
    assert create_server.__annotations__
