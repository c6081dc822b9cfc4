"""Shared helpers for the tests/test_http_*.py modules: module-scoped
servers (TCP and unix socket), a raw-socket HTTP client with byte-exact
access to what the server sent, and log polling.

Every read has a timeout and every loop is bounded in time.  Traffic goes to
127.0.0.1 or a unix socket only."""

import json
import socket
import time
import uuid

import pytest
from conftest import ServerProcess

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


class Response:
    def __init__(self, status_line, headers, body, raw, head):
        self.head = head  # status line and header block, with the blank line
        self.status_line = status_line  # bytes, without CRLF
        self.headers = headers  # [(name, value)] as sent (latin-1 str)
        self.body = body
        self.raw = raw  # every byte of the response as received
        parts = status_line.split(b" ", 2)
        self.version = parts[0].decode("latin-1")
        self.status = int(parts[1][:3])
        self.reason = parts[2].decode("latin-1") if len(parts) > 2 else None

    def header(self, name, default=None):
        """The value of the one header `name` (case-insensitive)."""
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(found) <= 1, (name, self.headers)
        return found[0] if found else default

    def names(self):
        return [k for k, _ in self.headers]

    def lower_names(self):
        return sorted(k.lower() for k, _ in self.headers)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %r>" % (self.raw[:300],)


class Client:
    """A raw connection; responses are parsed from our own buffer so that
    every byte the server sent can be inspected."""

    def __init__(self, srv, timeout=5.0):
        self.srv = srv
        self.sock = srv.connect(timeout=timeout)
        self.timeout = timeout
        self.buf = bytearray()

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

    def _fill(self, timeout=None):
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        data = self.sock.recv(262144)
        if not data:
            raise EOFError("connection closed; buffered %r" % bytes(self.buf[-300:]))
        self.buf += data

    def _take_line(self):
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no line; buffered %r" % bytes(self.buf[-300:]))
            self._fill()
        i = self.buf.index(b"\n") + 1
        line = bytes(self.buf[:i])
        del self.buf[:i]
        return line

    def _take(self, n):
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("%d of %d bytes; buffered %r" % (len(self.buf), n, bytes(self.buf[-300:])))
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _take_all(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                self._fill()
            except (EOFError, ConnectionResetError):
                break
        data = bytes(self.buf)
        self.buf = bytearray()
        return data

    def response(self, head=False):
        """Read one response (raw bytes kept).  100-continue responses are
        returned like any other, so a test sees them."""
        raw = b""
        line = self._take_line()
        raw += line
        assert line.endswith(b"\r\n"), line
        status_line = line[:-2]
        headers = []
        while True:
            line = self._take_line()
            raw += line
            assert line.endswith(b"\r\n"), line
            if line == b"\r\n":
                break
            name, _, value = line[:-2].decode("latin-1").partition(":")
            headers.append((name, value.strip(" \t")))
        head_raw = raw
        h = {k.lower(): v for k, v in headers}
        code = int(status_line.split(b" ")[1][:3])
        body = b""
        if head or code in (204, 304) or 100 <= code < 200:
            pass
        elif "transfer-encoding" in h:
            assert h["transfer-encoding"] == "chunked", h
            while True:
                line = self._take_line()
                raw += line
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        line = self._take_line()
                        raw += line
                        if line == b"\r\n":
                            break
                    break
                data = self._take(size + 2)
                raw += data
                assert data.endswith(b"\r\n"), data
                body += data[:-2]
        elif "content-length" in h:
            body = self._take(int(h["content-length"]))
            raw += body
        else:
            body = self._take_all()
            raw += body
        return Response(status_line, headers, body, raw, head_raw)

    def request(self, data, head=False):
        self.send(data)
        return self.response(head=head)

    def rest(self, timeout=5.0):
        """Everything until the server closes (bounded in time)."""
        old = self.timeout
        self.timeout = timeout
        try:
            return self._take_all()
        finally:
            self.timeout = old

    def closed(self, timeout=3.0):
        """True once the server has closed the connection (nothing more to
        read but EOF); False if bytes arrive or nothing within `timeout`."""
        if self.buf:
            return False
        try:
            self._fill(timeout)
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
            self._fill(seconds)
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
    deadline = time.monotonic() + timeout
    n = log_count(srv, text)
    while n <= before and time.monotonic() < deadline:
        time.sleep(0.05)
        n = log_count(srv, text)
    return n


def error_body(reason, detail, ident="waitress_c"):
    return ("%s\r\n\r\n%s\r\n\r\n(generated by %s)" % (reason, detail, ident)).encode("utf-8")
