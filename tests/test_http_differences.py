"""Deliberate differences that no other test_http_* module covers: the
logger names (difference 13) and a graceful close() from another thread
(difference 14).  The others are tested where their subject lives; see
docs/differences.rst."""

import http.client
import threading
import time

from http_helpers import Client, get, log_count, wait_log


def test_queue_logger_is_waitress_c_queue(server_factory):
    """Difference 13: the queue-depth warning is on `waitress_c.queue`."""
    srv = server_factory("apps_http:router", threads=1)
    text = "WARNING:waitress_c.queue:Task queue depth is "
    before = log_count(srv, text)
    clients = [Client(srv) for _ in range(4)]
    try:
        for c in clients:
            c.send(get("/slow?t=0.2"))
        for c in clients:
            assert c.response().status == 200
    finally:
        for c in clients:
            c.close()
    assert wait_log(srv, text, before) > before
    assert "WARNING:waitress.queue" not in srv.stderr()


def test_app_warnings_and_errors_use_the_waitress_c_logger(server_factory):
    srv = server_factory("apps_http:router")
    with Client(srv) as c:
        c.request(get("/respond?cl=1&b=toolong"))
        c.request(get("/raise-gen?n=0"))
    assert wait_log(srv, "WARNING:waitress_c:application-written content exceeded", 0) == 1
    assert wait_log(srv, "ERROR:waitress_c:Exception while serving /raise-gen", 0) == 1
    assert "INFO:waitress:" not in srv.stderr() and "WARNING:waitress:" not in srv.stderr()


def test_close_from_another_thread_finishes_the_running_response():
    """Difference 14: server.close() from another thread lets the response
    in flight finish (with Connection: close), then run() returns."""
    import apps_http
    from waitress_c import create_server

    srv = create_server(apps_http.router, listen="127.0.0.1:0", threads=2)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    result = {}

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", int(srv.effective_port), timeout=10)
        try:
            conn.request("GET", "/slow?t=0.6&id=inflight")
            resp = conn.getresponse()
            result["status"] = resp.status
            result["connection"] = resp.getheader("Connection")
            result["body"] = resp.read()
        except Exception as e:  # reported below
            result["error"] = repr(e)
        finally:
            conn.close()

    c = threading.Thread(target=client)
    c.start()
    try:
        time.sleep(0.25)
        srv.close()
        c.join(10)
        t.join(10)
    finally:
        if t.is_alive():
            srv.close()  # the second close is immediate
            t.join(10)
    assert not t.is_alive()
    assert "error" not in result, result
    assert result["status"] == 200
    assert result["connection"] == "close"
    assert b'"id": "inflight"' in result["body"]
