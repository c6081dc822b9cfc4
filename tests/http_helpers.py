"""Shared helpers for the tests/test_http_*.py modules: module-scoped
servers (TCP and unix socket), a raw-socket HTTP client with byte-exact
access to what the server sent, and log polling.

Every read has a timeout and every loop is bounded in time.  Traffic goes to
127.0.0.1 or a unix socket only."""

import re
import socket
import time
import uuid

import pytest
from http_reader import Reader
from servers import ServerProcess

APP = "apps_http:router"


def server_fixture(name="srv", app=APP, transports=("tcp", "unix"), **adjustments):
    """A module-scoped fixture `name`: one server per transport for the
    module.  Assign it to a module global of the same name."""

    @pytest.fixture(scope="module", params=transports, name=name)
    def fixture(request, tmp_path_factory):
        kw = dict(adjustments)
        if request.param == "unix":
            kw["unix_socket"] = str(tmp_path_factory.mktemp("wcsock") / "s")
        srv = ServerProcess(app, **kw)
        yield srv
        try:
            srv.close()
        except AssertionError:
            pass

    return fixture


def key():
    """A fresh key for the /mark and /marks routes."""
    return uuid.uuid4().hex


class Client(Reader):
    """A raw connection; responses are parsed (by http_reader.Reader) from
    our own buffer so that every byte the server sent can be inspected.
    Each read is bounded by `timeout`; a reset ends a close-delimited body
    or rest() like a close does."""

    def __init__(self, srv, timeout=5.0):
        super().__init__(srv.connect(timeout=timeout), timeout=timeout, reset_ok=True)
        self.srv = srv

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """Send all of `data`; a server that answered and closed before
        taking it all (an error response) is not an error here."""
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return self

    def request(self, data, head=False):
        self.send(data)
        return self.response(head=head)

    def rest(self, timeout=5.0, **kw):
        """Everything until the server closes (bounded in time)."""
        return super().rest(timeout=timeout, **kw)

    def closed(self, timeout=3.0):
        """True once the server has closed the connection (nothing more to
        read but EOF); False if bytes arrive or nothing within `timeout`."""
        if self.buf:
            return False
        try:
            self.fill(timeout=timeout)
        except (EOFError, ConnectionResetError):
            return True
        except socket.timeout:
            return False
        return False

    def silent(self, seconds):
        """True if nothing at all arrives (and no close) for `seconds`."""
        if self.buf:
            return False
        try:
            self.fill(timeout=seconds)
        except socket.timeout:
            return True
        except (EOFError, ConnectionResetError):
            return False
        return False


def exchange(srv, data, timeout=5.0):
    """Send `data` on a new connection and return everything received up to
    the server's close."""
    with Client(srv, timeout=timeout) as c:
        c.send(data)
        return c.rest(timeout)


def get(path, version="1.1", headers=(), method="GET", body=b""):
    """Bytes of one simple request."""
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    if version == "1.1" and not any(h.lower().startswith("host:") for h in headers):
        lines.append("Host: x")
    lines.extend(headers)
    if body and not any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def marks(srv, k):
    """Events the apps recorded under key `k` (in the server process)."""
    with Client(srv) as c:
        r = c.request(get("/marks?k=" + k, headers=["Connection: close"]))
    assert r.status == 200, r
    return r.json()


def wait_marks(srv, k, pred, timeout=5.0):
    """Poll /marks until pred(events) holds; returns the events."""
    deadline = time.monotonic() + timeout
    ev = marks(srv, k)
    while not pred(ev) and time.monotonic() < deadline:
        time.sleep(0.05)
        ev = marks(srv, k)
    return ev


def log_count(srv, text):
    return srv.stderr().count(text)


def wait_log(srv, text, before, timeout=5.0):
    """Wait until `text` occurs more than `before` times in the server's
    stderr; returns the new count."""
    srv.wait_for(re.escape(text), count=before + 1, timeout=timeout, stream="stderr", fail=False)
    return log_count(srv, text)


def error_body(reason, detail, ident="waitress_c"):
    return ("%s\r\n\r\n%s\r\n\r\n(generated by %s)" % (reason, detail, ident)).encode("utf-8")
