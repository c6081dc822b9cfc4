"""How connections end: each timeout on its own clock, lingering close,
graceful stops that answer every request received completely, and the
backlog's bound on spooled bodies.

Real server processes and raw sockets.  Every wait is bounded in count and
time, and no test asserts how fast something happens: where a timeout is
checked, the bound is many times that timeout, and a test waits for an
event (a log line, a response) rather than sleeping for one."""

import hashlib
import os
import re
import signal
import socket
import threading
import time

import pytest
from http_reader import Reader, read_response
from servers import SLOW

APP = "apps_lifecycle:router"
HELLO = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


def wait_log(srv, text, count=1, timeout=20.0):
    """Wait until `text` occurs `count` times in the server's stderr."""
    srv.wait_for(re.escape(text), count=count, timeout=timeout * SLOW, stream="stderr")


def headers(resp):
    return {k.lower(): v for k, v in resp[1]}


def status(resp):
    return int(resp[0].split()[1])


def read_all_responses(sock, limit=1000, timeout=20.0):
    """Responses until the server closes; a reset fails the test."""
    sock.settimeout(timeout * SLOW)
    return Reader(sock).responses(limit)


def recv_to_end(sock, timeout=30.0):
    """Everything until the server's end of stream; a reset fails the
    test (ConnectionResetError propagates)."""
    return Reader(sock).rest(timeout=timeout * SLOW)


def parse_all(data):
    return Reader(data).responses()


def small_rcvbuf_connect(srv, rcvbuf=65536, timeout=30.0):
    """A TCP client with a small receive buffer, so that what it does not
    read stays queued in the server; `timeout` None: blocking."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(None if timeout is None else timeout * SLOW)
    s.connect((srv.host, srv.port))
    return s


class Trickle(threading.Thread):
    """Send `data` a byte (or a line) at a time every `every` seconds until
    stopped, a send fails, or `seconds` have passed."""

    def __init__(self, sock, pieces, every=0.5, seconds=20.0):
        super().__init__(daemon=True)
        self.sock, self.pieces, self.every = sock, pieces, every
        self.seconds = seconds * SLOW
        self.done = threading.Event()
        self.failed = None

    def run(self):
        end = time.monotonic() + self.seconds
        i = 0
        while not self.done.is_set() and time.monotonic() < end:
            try:
                self.sock.send(self.pieces[i % len(self.pieces)])
            except OSError as exc:
                self.failed = exc
                return
            i += 1
            self.done.wait(self.every)


# -- timeouts, each on its own clock ---------------------------------------

@pytest.mark.parametrize("what", ["empty-lines", "pipelined-head"])
def test_a_client_that_sends_but_does_not_read_is_timed_out(server_factory, what):
    """Stalled output is timed by the bytes the client takes, not by the
    bytes it sends: with one worker parked on a reader that stopped
    reading but sends a byte every half second, the worker is freed after
    channel_timeout and the next client is served."""
    srv = server_factory(APP, threads=1, channel_timeout=2, outbuf_high_watermark=1 << 20)
    a = small_rcvbuf_connect(srv, rcvbuf=16384, timeout=None)
    a.sendall(b"GET /stream?mib=512 HTTP/1.1\r\nHost: x\r\n\r\n")
    if what == "empty-lines":
        pieces = [b"\r\n"]
    else:
        pieces = [bytes([c]) for c in b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: "] + [b"a"]
    trickle = Trickle(a, pieces)
    trickle.start()
    try:
        b = srv.connect(timeout=20 * SLOW)
        try:
            b.sendall(HELLO)
            resp = read_response(b.makefile("rb"))
        finally:
            b.close()
        assert resp is not None and resp[2] == b"Hello, world!"
    finally:
        trickle.done.set()
        trickle.join(5)
        a.close()


def test_empty_lines_do_not_hold_a_connection(server_factory):
    """CR/LF before a request starts the head clock and is bounded: a
    client sending one every half second is answered 400 and closed."""
    srv = server_factory(APP, channel_timeout=2)
    s = srv.connect(timeout=20 * SLOW)
    trickle = Trickle(s, [b"\r\n"])
    trickle.start()
    try:
        data = b""
        end = time.monotonic() + 20 * SLOW
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError("connection still open after 20 s")
        assert data == b"" or data.startswith(b"HTTP/1.0 400 Bad Request"), data
    finally:
        trickle.done.set()
        trickle.join(5)
        s.close()


@pytest.mark.parametrize("lines,code", [(0, 200), (1, 200), (8, 200), (9, 400)])
def test_empty_lines_before_a_request(server_factory, lines, code):
    """RFC 9112 2.2: at least one empty line before a request is ignored;
    eight are; nine are refused."""
    srv = server_factory(APP)
    s = srv.connect()
    try:
        s.sendall(b"\r\n" * lines + HELLO)
        resp = read_response(s.makefile("rb"))
    finally:
        s.close()
    assert status(resp) == code
    if code == 400:
        assert b"Too many empty lines" in resp[2]
        assert headers(resp)["connection"] == "close"


def test_a_head_trickled_in_is_timed_from_its_first_byte(server_factory):
    srv = server_factory(APP, channel_timeout=2)
    s = srv.connect(timeout=20 * SLOW)
    pieces = [bytes([c]) for c in b"GET /hello HTTP/1.1\r\nX-Pad: "] + [b"a"]
    trickle = Trickle(s, pieces)
    trickle.start()
    try:
        s.settimeout(20 * SLOW)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        assert trickle.is_alive(), "the trickle ended before the server closed"
    finally:
        trickle.done.set()
        trickle.join(5)
        s.close()


# -- the backlog -----------------------------------------------------------

def deleted_fds(pid):
    """Open descriptors of unlinked files (spooled bodies) in `pid`."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).endswith("(deleted)"):
                n += 1
        except OSError:
            pass
    return n


def test_spooled_bodies_queued_behind_a_slow_request_are_bounded(server_factory):
    """At most one spooled body waits behind the request in service: a
    client pipelining 20 large POSTs behind a slow request holds one temp
    file, not 20; every request is still answered, in order."""
    srv = server_factory(APP, threads=1, inbuf_overflow=1024)
    pid = srv.proc.pid
    before = deleted_fds(pid)
    body = os.urandom(8192)
    post = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    s = srv.connect(timeout=30 * SLOW)
    sender = threading.Thread(target=s.sendall, args=(b"GET /gate?t=2&id=s HTTP/1.1\r\nHost: x\r\n\r\n" + post * 20,))
    sender.start()
    try:
        wait_log(srv, "gate entered s")
        most = 0
        for _ in range(20):
            most = max(most, deleted_fds(pid) - before)
            time.sleep(0.05)
        resps = []
        f = s.makefile("rb")
        while len(resps) < 21:
            r = read_response(f)
            assert r is not None, len(resps)
            resps.append(r)
    finally:
        sender.join(10)
        s.close()
    assert resps[0][2] == b"gate s"
    want = b"8192 " + hashlib.sha256(body).hexdigest().encode()
    assert [r[2] for r in resps[1:]] == [want] * 20
    assert most <= 1, most


# -- lingering close ---------------------------------------------------------

def test_close_after_a_large_response_is_not_a_reset(server_factory):
    """A response that says Connection: close, and a request the client
    pipelines behind it once the response has begun (the server reads no
    more requests there): the close lingers, reading and discarding that
    request, so the whole 16 MiB arrive and then a clean end of stream
    (a plain close with unread input would send a reset, which destroys
    the response bytes still in flight)."""
    srv = server_factory(APP)
    s = small_rcvbuf_connect(srv)
    try:
        s.sendall(b"GET /big?mib=16 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(HELLO)
        # Read all but the last 128 KiB, then let the server write those
        # into the sockets' buffers and end the connection before reading
        # on: with a plain close, a reset would now destroy them.
        while len(first) < (16 << 20) - (128 << 10):
            chunk = s.recv(min(1 << 20, (16 << 20) - (128 << 10) - len(first)))
            assert chunk
            first += chunk
        time.sleep(0.5)
        rest = recv_to_end(s)
    finally:
        s.close()
    resps = parse_all(first + rest)
    assert len(resps) == 1
    assert len(resps[0][2]) == 16 << 20
    assert headers(resps[0])["connection"] == "close"


@pytest.mark.parametrize("kib", [256, 4096])
def test_an_error_response_is_not_reset_by_the_body_behind_it(server_factory, kib):
    """A 413 for a body over max_request_body_size while the client is
    still sending it: the client reads the whole 413 (the linger is bounded
    by time, not by the bytes it discards)."""
    srv = server_factory(APP, max_request_body_size=1000)
    s = srv.connect(timeout=20 * SLOW)
    body = b"x" * (kib * 1024)
    sender = threading.Thread(
        target=lambda: s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    )
    sender.start()
    try:
        resps = read_all_responses(s)
    finally:
        sender.join(10)
        s.close()
    assert [status(r) for r in resps] == [413]


# -- graceful stops ------------------------------------------------------------

def test_stop_during_a_large_response_finishes_it_and_the_next_one(server_factory):
    """A stop while a 16 MiB response is being read, and a request the
    client pipelines after the stop began: both are answered whole, the
    second with Connection: close, then a clean end of stream."""
    srv = server_factory(APP)
    s = small_rcvbuf_connect(srv)
    try:
        s.sendall(b"GET /big?mib=16 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        srv.send_signal(signal.SIGTERM)
        wait_log(srv, "Shutting down")
        s.sendall(HELLO)
        rest = recv_to_end(s)
    finally:
        s.close()
    a, b = parse_all(first + rest)
    assert len(a[2]) == 16 << 20
    assert b[2] == b"Hello, world!"
    assert headers(b)["connection"] == "close"
    assert srv.wait(timeout=20 * SLOW) == 0


def test_stop_answers_every_pipelined_request_already_read(server_factory):
    """61 requests in one write, the first slow: the stop begins while it
    is served and the other 60 wait (32 queued, the rest read but not yet
    parsed).  All 61 are answered; only the last says Connection: close."""
    srv = server_factory(APP, threads=1)
    s = srv.connect(timeout=30 * SLOW)
    try:
        s.sendall(b"GET /gate?t=1&id=p HTTP/1.1\r\nHost: x\r\n\r\n" + HELLO * 60)
        wait_log(srv, "gate entered p")
        srv.send_signal(signal.SIGTERM)
        resps = read_all_responses(s)
    finally:
        s.close()
    assert len(resps) == 61
    assert resps[0][2] == b"gate p"
    assert all(r[2] == b"Hello, world!" for r in resps[1:])
    assert [headers(r).get("connection") for r in resps] == [None] * 60 + ["close"]
    assert srv.wait(timeout=20 * SLOW) == 0


def test_stop_serves_a_connection_held_at_the_connection_limit(server_factory):
    """A connection libuv accepted but the server held at connection_limit
    is served by a graceful stop, not reset."""
    srv = server_factory(APP, threads=2, connection_limit=1)
    a = srv.connect(timeout=20 * SLOW)
    b = srv.connect(timeout=20 * SLOW)
    try:
        a.sendall(b"GET /gate?t=1&id=a HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_log(srv, "gate entered a")
        b.sendall(HELLO)
        wait_log(srv, "reached the connection limit")
        srv.send_signal(signal.SIGTERM)
        ra = read_all_responses(a)
        rb = read_all_responses(b)
    finally:
        a.close()
        b.close()
    assert [r[2] for r in ra] == [b"gate a"]
    assert [r[2] for r in rb] == [b"Hello, world!"]
    assert headers(rb[0])["connection"] == "close"
    assert srv.wait(timeout=20 * SLOW) == 0


def test_stop_gives_an_idle_keepalive_connection_a_grace(server_factory):
    """The response before the stop promised keep-alive: a request sent
    right after the stop began is answered, with Connection: close."""
    srv = server_factory(APP)
    s = srv.connect(timeout=20 * SLOW)
    try:
        s.sendall(HELLO)
        f = s.makefile("rb")
        r = read_response(f)
        assert "connection" not in headers(r)
        srv.send_signal(signal.SIGTERM)
        wait_log(srv, "Shutting down")
        s.sendall(HELLO)
        r = read_response(f)
        assert r is not None and r[2] == b"Hello, world!"
        assert headers(r)["connection"] == "close"
        assert read_response(f) is None
    finally:
        s.close()
    assert srv.wait(timeout=20 * SLOW) == 0


def test_stop_closes_an_idle_keepalive_connection_after_the_grace(server_factory):
    srv = server_factory(APP)
    s = srv.connect(timeout=20 * SLOW)
    try:
        s.sendall(HELLO)
        f = s.makefile("rb")
        assert read_response(f)[2] == b"Hello, world!"
        srv.send_signal(signal.SIGTERM)
        assert srv.wait(timeout=20 * SLOW) == 0
        assert s.recv(100) == b""   # a clean end of stream, no reset
    finally:
        s.close()


def test_stop_while_the_backlog_is_full_closes_after_the_last_request(server_factory):
    """A stop while reading is paused behind a spooled body: both requests
    are answered, and the last says Connection: close."""
    srv = server_factory(APP, threads=1, inbuf_overflow=1000)
    s = srv.connect(timeout=20 * SLOW)
    body = b"x" * 5000
    try:
        s.sendall(b"GET /gate?t=1&id=q HTTP/1.1\r\nHost: x\r\n\r\n"
                  + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        wait_log(srv, "gate entered q")
        srv.send_signal(signal.SIGTERM)
        resps = read_all_responses(s)
    finally:
        s.close()
    assert [r[2] for r in resps] == [b"gate q", b"5000 " + hashlib.sha256(body).hexdigest().encode()]
    assert [headers(r).get("connection") for r in resps] == [None, "close"]
    assert srv.wait(timeout=20 * SLOW) == 0


def test_a_stray_crlf_after_a_request_gets_the_stop_grace(server_factory):
    """An empty line after a request (RFC 9112 2.2; old browsers send one
    after a POST body) leaves the connection between requests: a stop
    closes it after the grace, not at shutdown_timeout."""
    srv = server_factory(APP, shutdown_timeout=30)
    s = srv.connect(timeout=20 * SLOW)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n")
        assert read_response(s.makefile("rb"))[2].startswith(b"2 ")
        srv.send_signal(signal.SIGTERM)
        assert srv.wait(timeout=20 * SLOW) == 0
    finally:
        s.close()
    assert "Shutdown timeout" not in srv.stderr()


# -- 100 Continue ----------------------------------------------------------------

def test_100_continue_is_never_sent_after_the_final_response(server_factory):
    """The client sends its body without waiting for the 100 Continue owed
    behind a slow response: no 100 Continue may follow the final response
    (the next bytes are the next request's answer)."""
    srv = server_factory(APP, threads=2)
    s = srv.connect(timeout=20 * SLOW)
    try:
        f = s.makefile("rb")
        s.sendall(b"GET /gate?t=0.5&id=c HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_log(srv, "gate entered c")
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello")
        got = [read_response(f), read_response(f)]
        if status(got[1]) == 100:     # allowed before the final response
            got[1] = read_response(f)
        s.sendall(HELLO)
        third = read_response(f)
    finally:
        s.close()
    assert got[0][2] == b"gate c"
    assert got[1][2].startswith(b"5 ")
    assert status(third) == 200 and third[2] == b"Hello, world!"


def test_100_continue_owed_behind_a_large_response_is_sent(server_factory):
    """A 100 Continue owed while a large response is still being written
    goes out once that response is, though other events were handled
    between (a request answered before, output queued for the socket)."""
    srv = server_factory(APP, threads=2)
    s = srv.connect(timeout=20 * SLOW)
    try:
        f = s.makefile("rb")
        s.sendall(HELLO)
        assert read_response(f)[2] == b"Hello, world!"
        s.sendall(b"GET /big?mib=8 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert len(read_response(f)[2]) == 8 << 20
        cont = read_response(f)
        assert cont is not None and status(cont) == 100
        s.sendall(b"hello")
        echo = read_response(f)
    finally:
        s.close()
    assert echo[2].startswith(b"5 ")


# -- the documented lifecycle is the code's ------------------------------------

def _code_transitions():
    """channel.c's transition table: state -> set of next states."""
    import re

    src = open(os.path.join(os.path.dirname(__file__), "..", "csrc", "channel.c")).read()
    table = src[src.index("static const unsigned allowed[WC_CONN_NSTATES]"):]
    table = table[: table.index("};")]
    out = {}
    for state, targets in re.findall(r"\[WC_CONN_(\w+)\]\s*=\s*([^,\]]*(?:\|[^,\]]*)*|0),", table):
        out[state] = set(re.findall(r"S\((\w+)\)", targets))
    return out


def test_design_doc_draws_the_code_s_lifecycle():
    import re

    code = _code_transitions()
    assert set(code) == {"IDLE", "HEAD", "BODY", "PAUSED", "DONE", "LINGER", "CLOSED", "HANDSHAKE"}
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "design.rst")).read()
    section = doc[doc.index("A connection's lifecycle\n"):]
    rows = re.findall(r"\* - (HANDSHAKE|IDLE|HEAD|BODY|PAUSED|DONE|LINGER|CLOSED)\n(?:.*\n)*?     -(?: ([A-Z, ]*))?\n", section)
    documented = {state: set(filter(None, (t.strip() for t in targets.split(",")))) for state, targets in rows}
    assert documented == code
    header = open(os.path.join(os.path.dirname(__file__), "..", "csrc", "loop.h")).read()
    arrows = dict(re.findall(r"\*\s+(HANDSHAKE|IDLE|HEAD|BODY|PAUSED|DONE|LINGER)\s+->\s+([A-Z, ]+)", header))
    assert {k: {t.strip() for t in v.split(",")} for k, v in arrows.items()} == {
        k: v for k, v in code.items() if v
    }


def test_client_disconnected_kept_past_its_request(server_factory):
    """waitress.client_disconnected kept by the app and called after its
    request, while the connection sits idle (its busy part given back after
    a second) and after it closed: False, then True; never a crash."""
    srv = server_factory(APP)
    a = srv.connect(timeout=20 * SLOW)
    try:
        fa = a.makefile("rb")
        a.sendall(b"GET /keep-disconnected HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(fa)[2] == b"kept"
        time.sleep(2.5)     # idle past a sweep: the busy part is given back
        b = srv.connect(timeout=20 * SLOW)
        fb = b.makefile("rb")
        b.sendall(b"GET /call-kept HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(fb)[2] == b"False"
        fa.close()      # the file holds the socket open too
        a.close()
        deadline = time.monotonic() + 20 * SLOW
        while True:
            b.sendall(b"GET /call-kept HTTP/1.1\r\nHost: x\r\n\r\n")
            body = read_response(fb)[2]
            if body == b"True" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert body == b"True"
        b.close()
    finally:
        a.close()
    assert srv.stop()[0] == 0


def test_access_log_counts_no_bytes_a_departed_client_never_took(server_factory):
    """A client that reads 1 MiB of a 64 MiB stream and leaves: the bytes
    still queued for it (up to outbuf_high_watermark, 32 MiB here) are not
    logged as sent."""
    srv = server_factory(APP, threads=1, access_log=True, outbuf_high_watermark=32 << 20)
    s = small_rcvbuf_connect(srv, timeout=20.0)
    got = 0
    try:
        s.sendall(b"GET /stream?mib=64 HTTP/1.1\r\nHost: x\r\n\r\n")
        while got < 1 << 20:
            chunk = s.recv(65536)
            assert chunk
            got += len(chunk)
        # Let the worker fill the queue before leaving: the log line comes
        # when it sees the client gone.
        time.sleep(1.0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    finally:
        s.close()   # a reset: the client is gone
    wait_log(srv, '"GET /stream?mib=64 HTTP/1.1" 200 ')
    line = next(x for x in srv.stderr().splitlines() if '"GET /stream?mib=64 HTTP/1.1" 200 ' in x)
    logged = int(line.split('" 200 ')[1].split()[0])
    # What the client read, plus what the kernel's buffers may have held.
    assert logged < 16 << 20, (logged, got)
