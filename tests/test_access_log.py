"""The access log: one line per response on ``waitress_c.access``, the
server's own error responses included.  Real server processes; the lines
are read from the server's stderr (tests/serve.py logs at INFO)."""

import logging
import re
import socket
import struct
import time
import uuid

import pytest
from http_helpers import Client, get

from waitress_c.access_log import FIELD_CAP, AccessLog, check_format, escape

APP = "apps_hardening:router"
PREFIX = "INFO:waitress_c.access:"


@pytest.fixture
def make(server_factory):
    def start(**kw):
        return server_factory(APP, **kw)

    return start


# The start of a line (as str.splitlines() splits) that begins with PREFIX.
ACCESS_LINE = re.compile(
    r"(?:\A|(?<=[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]))" + re.escape(PREFIX)
)


def access_lines(srv, n, timeout=5.0):
    """The access log lines, once there are n whole ones (waiting for them,
    bounded): a long line may be read half written."""
    deadline = time.monotonic() + timeout
    while True:
        srv.wait_for(ACCESS_LINE, count=n, timeout=max(0.0, deadline - time.monotonic()),
                     stream="stderr", fail=False)
        text = srv.stderr()
        text = text[: text.rfind("\n") + 1]
        lines = [line[len(PREFIX):] for line in text.splitlines() if line.startswith(PREFIX)]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


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


# -- log injection: client bytes never start a line or a terminal escape ----
#
# Header bytes are latin-1 in the environ: 0x85 is U+0085 (NEL), a line
# break for str.splitlines and Unicode-aware log readers, and 0x9B is
# U+009B, a terminal's CSI.  Every atom's value is escaped (\xHH), so are
# the server's own error lines about a path.  Each test reads the whole
# stderr with splitlines(), as such a reader would, and checks that the
# forged text is on exactly one line: the escaped one.

INJECT_APP = "apps_access_log:router"


def only_line_with(srv, marker):
    """The one stderr line holding marker; a forged line would be another."""
    found = [line for line in srv.stderr().splitlines() if marker in line]
    assert len(found) == 1, found
    return found[0]


def test_c1_bytes_in_user_agent_are_escaped(make):
    srv = make(access_log=True)
    with Client(srv) as c:
        r = c.request(b"GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\x85FAKE LINE\x9b31m\r\n\r\n")
        assert r.status == 200
    (line,) = access_lines(srv, 1)
    m = COMBINED_LINE.match(line)
    assert m, line
    assert m.group(7) == r"ua\x85FAKE LINE\x9B31m"
    assert only_line_with(srv, "FAKE LINE") == PREFIX + line


def test_quote_in_referer_cannot_forge_a_field(make):
    srv = make(access_log=True)
    with Client(srv) as c:
        r = c.request(get("/hello", headers=['Referer: x" 999 "forged\\', "User-Agent: ua"]))
        assert r.status == 200
    (line,) = access_lines(srv, 1)
    m = COMBINED_LINE.match(line)
    assert m, line
    assert m.groups()[2:] == ("GET /hello HTTP/1.1", "200", "5", r"x\x22 999 \x22forged\x5C", "ua")
    assert only_line_with(srv, "forged") == PREFIX + line


def test_c1_bytes_in_a_bad_request_line_are_escaped(make):
    srv = make(access_log=True)
    with Client(srv) as c:
        c.send(b"GET /a\x85FAKE\x9bb HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response()
    assert r.status == 400
    (line,) = access_lines(srv, 1)
    m = COMBINED_LINE.match(line)
    assert m, line
    assert m.group(3) == r"GET /a\x85FAKE\x9Bb HTTP/1.1"
    assert m.group(4) == "400"
    assert only_line_with(srv, "FAKE") == PREFIX + line


def test_newline_in_remote_user_is_escaped(server_factory):
    srv = server_factory(INJECT_APP, access_log=True)
    with Client(srv) as c:
        r = c.request(get("/hello?user=bob%0AINFO:waitress_c.access:FORGED%0D%1C%E9"))
        assert r.status == 200
    time.sleep(0.2)
    lines = access_lines(srv, 2, timeout=0.5)
    assert len(lines) == 1, lines
    assert lines[0].split(" ")[2] == r"bob\x0AINFO:waitress_c.access:FORGED\x0D\x1Cé"
    assert only_line_with(srv, "FORGED") == PREFIX + lines[0]


def test_header_and_environ_atoms_are_escaped(server_factory):
    srv = server_factory(INJECT_APP, access_log=True, access_log_format="%({X-Foo}i)s|%({FOO}e)s|%(s)s|%(B)s")
    with Client(srv) as c:
        r = c.request(
            get("/hello?foo=e1%0Ae2%0B%0C%1D%1E%85%7F%00", headers=['X-Foo: i1"\x85i2\x9b\\'])
        )
        assert r.status == 200
    (line,) = access_lines(srv, 1)
    assert line == r"i1\x22\x85i2\x9B\x5C|e1\x0Ae2\x0B\x0C\x1D\x1E\x85\x7F\x00|200|5"
    assert only_line_with(srv, "i1") == PREFIX + line


def test_newline_in_path_is_escaped_in_the_error_log(make):
    srv = make(access_log=True)
    with Client(srv) as c:
        r = c.request(get("/%0AFAKE%20LOG%20LINE%85%E2%80%A8/raise-gen"))
        assert r.status == 500
    (line,) = access_lines(srv, 1)
    assert COMBINED_LINE.match(line).group(3) == "GET /%0AFAKE%20LOG%20LINE%85%E2%80%A8/raise-gen HTTP/1.1"
    # PATH_INFO is latin-1: U+2028 arrives as its three UTF-8 bytes.
    err = only_line_with(srv, "FAKE LOG LINE")
    assert err == r"ERROR:waitress_c:Exception while serving /\x0AFAKE LOG LINE\x85â\x80¨/raise-gen"


def test_newline_in_path_is_escaped_in_the_disconnect_line(make):
    srv = make(access_log=True, outbuf_high_watermark=65536)
    s = srv.connect(timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(get("/%0AFAKE%20LOG%20LINE/produce?n=4096&block=65536&k=" + uuid.uuid4().hex))
    s.recv(1024)
    # A reset, not a FIN: the next write fails.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    access_lines(srv, 1)
    err = only_line_with(srv, "FAKE LOG LINE")
    assert err == r"INFO:waitress_c:Client disconnected while serving /\x0AFAKE LOG LINE/produce"


def test_a_long_field_is_capped(make):
    srv = make(access_log=True)
    with Client(srv) as c:
        r = c.request(get("/hello", headers=["User-Agent: " + "a" * 10000, "Referer: " + "\x85" * 1000]))
        assert r.status == 200
    (line,) = access_lines(srv, 1)
    m = COMBINED_LINE.match(line)
    assert m, line
    assert m.group(7) == "a" * (FIELD_CAP - 3) + "..."
    # Cut before a whole escape, never inside one.
    assert m.group(6) == r"\x85" * ((FIELD_CAP - 3) // 4) + "..."


# -- escape() itself ------------------------------------------------------


def test_escape_every_line_break_and_control():
    # Every character str.splitlines splits on.
    assert escape("a\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029b") == (
        r"a\x0A\x0D\x0B\x0C\x1C\x1D\x1E\x85\u2028\u2029b"
    )
    for c in range(0x110000):
        out = escape(chr(c))
        assert len(("x" + out + "x").splitlines()) == 1, hex(c)
        if c < 0x20 or 0x7F <= c <= 0x9F or chr(c) in '"\\':
            assert out == "\\x%02X" % c
        elif c in (0x2028, 0x2029):
            assert out == "\\u%04X" % c
        else:
            assert out == chr(c)


def test_escape_keeps_clean_text_and_caps():
    s = "Mozilla/5.0 (X11; Linux x86_64) é 日本"
    assert escape(s) is s
    assert escape("a" * FIELD_CAP) == "a" * FIELD_CAP
    assert escape("a" * (FIELD_CAP + 1)) == "a" * (FIELD_CAP - 3) + "..."
    # An escape that would straddle the cut is left out whole.
    for k in range(8):
        out = escape("a" * (FIELD_CAP - 8 + k) + "\u2028" * 10)
        assert len(out) <= FIELD_CAP and out.endswith("...")
        assert re.fullmatch(r"a*(\\u2028)*\.\.\.", out), out[-20:]
    assert escape("x\ny", cap=3) == "..."
    assert escape("a\"b", quotes=False) == 'a"b'
    assert escape("a\\b\n", quotes=False) == r"a\x5Cb\x0A"


def test_numbers_stay_numbers_and_other_values_become_text(caplog):
    log = AccessLog("%(s)s %(B)s %(b)s %(D)s %(u)s %({FOO}e)s %({BAR}e)s")
    env = {"REMOTE_USER": "a\nb", "FOO": 7, "BAR": ["x\n"]}
    with caplog.at_level(logging.INFO, logger="waitress_c.access"):
        log(env, None, "GET", "/", "HTTP/1.1", 200, 0, 12, None)
    assert [r.getMessage() for r in caplog.records] == [r"200 0 - 12 a\x0Ab 7 ['x\x5Cn']"]


def test_clf_time_is_never_read_half_updated(monkeypatch):
    # The once-a-second cache of the [date] field is read and refreshed by
    # every worker.  A thread that sees the new second before the new text
    # is stored (a switch between two stores with the GIL; any moment
    # without it) would log the previous second's date.  Simulated: another
    # worker reads the cache while this one formats the new second.
    from waitress_c import access_log

    seen = []
    real = time.strftime

    def strftime(fmt, t):
        if not seen:
            seen.append(None)
            seen.append(access_log._clf_time(t0 + 1))  # the other worker
        return real(fmt, t)

    t0 = 1_800_000_000
    access_log._clf_time(t0)
    monkeypatch.setattr(access_log.time, "strftime", strftime)
    ours = access_log._clf_time(t0 + 1)
    expected = real("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(t0 + 1))
    assert ours == expected
    assert seen[1:] == [expected]
