"""The access log: one line per response on ``waitress_c.access``, the
server's own error responses included.  Real server processes; the lines
are read from the server's stderr (tests/serve.py logs at INFO)."""

import re
import time

import pytest
from http_helpers import Client, get

from waitress_c.access_log import AccessLog, check_format

APP = "apps_hardening:router"
PREFIX = "INFO:waitress_c.access:"


@pytest.fixture
def make(server_factory):
    def start(**kw):
        return server_factory(APP, **kw)

    return start


def access_lines(srv, n, timeout=5.0):
    """The first n access log lines (waiting for them, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line[len(PREFIX):] for line in srv.stderr().splitlines() if line.startswith(PREFIX)]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines


COMBINED_LINE = re.compile(
    r'^(\S+) - - \[(\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "([^"]*)" (\d{3}) (\S+) "([^"]*)" "([^"]*)"$'
)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_combined_format_by_default(make, transport):
    kw = {"access_log": True}
    if transport == "unix":
        kw["unix_socket"] = True
    srv = make(**kw)
    with Client(srv) as c:
        r = c.request(get("/hello?x=1", headers=["Referer: http://ref.example/", "User-Agent: ua/1.0"]))
        assert r.status == 200
        r = c.request(get("/hello", method="HEAD"), head=True)
        assert r.status == 200
    lines = access_lines(srv, 2)
    assert len(lines) == 2, srv.stderr()
    m = COMBINED_LINE.match(lines[0])
    assert m, lines[0]
    host, when, reqline, status, nbytes, ref, ua = m.groups()
    assert host == ("127.0.0.1" if transport == "tcp" else "localhost")
    assert reqline == "GET /hello?x=1 HTTP/1.1"
    assert (status, nbytes, ref, ua) == ("200", "5", "http://ref.example/", "ua/1.0")
    m = COMBINED_LINE.match(lines[1])
    assert m and m.group(3) == "HEAD /hello HTTP/1.1" and m.group(5) == "-", lines[1]
    assert m.group(6) == "-" and m.group(7) == "-"


def test_custom_format_atoms(make):
    fmt = "%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(D)s|%(M)s|%(L)s|%({X-Req-Id}i)s|%({Content-Type}o)s|%({PATH_INFO}e)s|%(p)s"
    srv = make(access_log=True, access_log_format=fmt)
    with Client(srv) as c:
        c.request(get("/sleep?t=0.05", headers=["X-Req-Id: abc123"]))
    (line,) = access_lines(srv, 1)
    f = line.split("|")
    assert f[:6] == ["GET", "/sleep", "t=0.05", "HTTP/1.1", "200", "5"]
    micros, millis, secs = int(f[6]), int(f[7]), float(f[8])
    assert 50_000 <= micros < 5_000_000 and millis == micros // 1000
    assert abs(secs - micros / 1e6) < 1e-5
    assert f[9:12] == ["abc123", "text/plain", "/sleep"]
    assert f[12] == str(srv.proc.pid)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", "431"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", "413"),
    ],
)
def test_server_error_responses_are_logged(make, request_bytes, status):
    srv = make(access_log=True, max_request_header_size=65536, max_request_body_size=1000000)
    with Client(srv) as c:
        c.send(request_bytes)
        r = c.response()
    assert str(r.status) == status
    (line,) = access_lines(srv, 1)
    m = COMBINED_LINE.match(line)
    assert m, line
    assert m.group(4) == status
    assert int(m.group(5)) == len(r.body)


def test_app_failure_is_logged_as_the_500_sent(make):
    srv = make(access_log=True)
    with Client(srv) as c:
        r = c.request(get("/bad-headers?case=two-cl"))
    assert r.status == 500
    (line,) = access_lines(srv, 1)
    m = COMBINED_LINE.match(line)
    assert m and m.group(4) == "500" and int(m.group(5)) == len(r.body), line


def test_off_by_default(make):
    srv = make()
    with Client(srv) as c:
        assert c.request(get("/hello")).status == 200
    time.sleep(0.2)
    assert access_lines(srv, 1, timeout=0.3) == []


def test_unknown_atom_is_refused():
    with pytest.raises(ValueError, match="unknown access log atom"):
        check_format("%(h)s %(nope)s")
    with pytest.raises(ValueError):
        AccessLog("%(h)d")
