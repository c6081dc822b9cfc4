"""HTTP/2 (csrc/h2.c): h2c with prior knowledge and h2 over TLS (ALPN),
with real clients (curl, nghttp, h2load, httpx, HAProxy in front) and,
for the protocol's corners and the attacks, raw frames from the `h2`
library over a real socket.  Traffic goes to 127.0.0.1 only; every wait is
bounded."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, RstStreamFrame

from servers import SLOW

APP = "apps_h2:app"
BOUND = 30 * SLOW
IBOUND = str(int(BOUND))


def tool_env():
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"):
        env.pop(k, None)
    return env


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed (make deps)" % tool)


def curl(*args):
    need("curl")
    p = subprocess.run(
        ["curl", "-sS", "--max-time", str(BOUND)] + list(args),
        capture_output=True, env=tool_env(), timeout=BOUND + 10,
    )
    return p


class Client:
    """An HTTP/2 client connection from the `h2` library over a socket,
    read until a condition holds (bounded)."""

    def __init__(self, port, settings=None, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="latin-1")
        )
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.ack = True

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", "127.0.0.1")] + list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        self.flush()
        return sid

    def pump(self, until, bound=BOUND):
        deadline = time.monotonic() + bound
        while not until() and not self.closed:
            assert time.monotonic() < deadline, "no answer in time"
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.closed = True
                break
            for ev in self.conn.receive_data(data):
                self.on_event(ev)
            try:
                self.flush()
            except (ConnectionResetError, BrokenPipeError):
                self.closed = True
        return until()

    def on_event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            self.streams[ev.stream_id]["headers"] = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self.streams[ev.stream_id]["data"] += ev.data
            if self.ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.streams[ev.stream_id]["ended"] = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id]["reset"] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def done(self, *sids):
        return lambda: all(self.streams[s]["ended"] or self.streams[s]["reset"] is not None for s in sids)

    def close(self):
        self.sock.close()


def h2_server(server_factory, **kw):
    return server_factory(APP, **kw)


def served_h1(srv):
    """The server still answers HTTP/1.1 and HTTP/2 on new connections."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=BOUND)
    c.request("GET", "/")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"hello HTTP/1.1\n")
    c.close()
    cl = Client(srv.port)
    sid = cl.request("/")
    assert cl.pump(cl.done(sid))
    assert bytes(cl.streams[sid]["data"]) == b"hello HTTP/2\n"
    cl.close()


# ---- real clients ------------------------------------------------------------


def test_curl_prior_knowledge_and_http1_on_one_port(server_factory):
    srv = h2_server(server_factory)
    url = "http://127.0.0.1:%d/" % srv.port
    # One URL per curl: Debian 12's curl (7.88) fails to reuse a prior-
    # knowledge connection, whatever the server (HAProxy's too).
    p = curl("--http2-prior-knowledge", "-w", "|%{http_version}", url)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hello HTTP/2\n|2"
    p = curl("-w", "|%{http_version}", url)
    assert p.stdout == b"hello HTTP/1.1\n|1.1"


def test_curl_h2_over_tls_alpn(server_factory, pki):
    srv = h2_server(server_factory, certfile=str(pki / "server.pem"), keyfile=str(pki / "server.key"))
    url = "https://localhost:%d/env" % srv.port
    p = curl("--http2", "--cacert", str(pki / "ca.pem"), "--resolve",
             "localhost:%d:127.0.0.1" % srv.port, "-w", "|%{http_version}", url)
    assert p.returncode == 0, p.stderr
    body, version = p.stdout.rsplit(b"|", 1)
    assert version == b"2"
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["wsgi.url_scheme"] == "https"
    # A client that offers only http/1.1 still gets it.
    p = curl("--http1.1", "--cacert", str(pki / "ca.pem"), "--resolve",
             "localhost:%d:127.0.0.1" % srv.port, "-w", "|%{http_version}",
             "https://localhost:%d/" % srv.port)
    assert p.stdout == b"hello HTTP/1.1\n|1.1"


def test_h2_on_tls_and_h2c_on_an_insecure_listener(server_factory, pki):
    """One server, a TLS listener and a plain one (insecure_listen): h2
    through ALPN on the first, h2c with prior knowledge on the second,
    each with its own scheme."""
    srv = h2_server(server_factory, certfile=str(pki / "server.pem"),
                    keyfile=str(pki / "server.key"), insecure_listen="127.0.0.1:0")
    plain_port = int(srv.listen[1][1])
    p = curl("--http2", "--cacert", str(pki / "ca.pem"), "--resolve",
             "localhost:%d:127.0.0.1" % srv.port, "-w", "|%{http_version}",
             "https://localhost:%d/env" % srv.port)
    assert p.returncode == 0, p.stderr
    body, version = p.stdout.rsplit(b"|", 1)
    assert version == b"2" and json.loads(body)["wsgi.url_scheme"] == "https"
    p = curl("--http2-prior-knowledge", "-w", "|%{http_version}",
             "http://127.0.0.1:%d/env" % plain_port)
    assert p.returncode == 0, p.stderr
    body, version = p.stdout.rsplit(b"|", 1)
    assert version == b"2" and json.loads(body)["wsgi.url_scheme"] == "http"


def test_http2_off(server_factory, pki):
    srv = h2_server(server_factory, http2=False, certfile=str(pki / "server.pem"),
                    keyfile=str(pki / "server.key"))
    p = curl("--http2", "--cacert", str(pki / "ca.pem"), "--resolve",
             "localhost:%d:127.0.0.1" % srv.port, "-w", "|%{http_version}",
             "https://localhost:%d/" % srv.port)
    assert p.stdout == b"hello HTTP/1.1\n|1.1"
    plain = h2_server(server_factory, http2=False)
    p = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/" % plain.port)
    assert p.returncode != 0     # the preface is a bad HTTP/1 request


def test_nghttp_sees_our_settings(server_factory):
    need("nghttp")
    srv = h2_server(server_factory, h2_max_concurrent_streams=50, h2_max_header_list_size=65536)
    p = subprocess.run(["nghttp", "-nv", "-t", IBOUND, "http://127.0.0.1:%d/" % srv.port],
                       capture_output=True, text=True, env=tool_env(), timeout=BOUND + 10)
    assert p.returncode == 0, p.stdout + p.stderr
    recv = p.stdout.split("recv SETTINGS frame", 1)[1]
    assert "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):50" in recv
    assert "SETTINGS_INITIAL_WINDOW_SIZE(0x04):1048576" in recv
    assert "SETTINGS_MAX_FRAME_SIZE(0x05):16384" in recv
    assert "SETTINGS_MAX_HEADER_LIST_SIZE(0x06):65536" in recv
    assert ":status: 200" in p.stdout


def test_h2load_no_failures(server_factory):
    need("h2load")
    srv = h2_server(server_factory)
    p = subprocess.run(["h2load", "-n", "1000", "-c", "10", "-m", "10", "-T", IBOUND,
                        "http://127.0.0.1:%d/" % srv.port],
                       capture_output=True, text=True, env=tool_env(), timeout=BOUND * 3)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored" in p.stdout
    assert "status codes: 1000 2xx" in p.stdout


def test_httpx(server_factory, pki):
    import httpx

    srv = h2_server(server_factory)
    with httpx.Client(http1=False, http2=True, timeout=BOUND) as c:
        r = c.get("http://127.0.0.1:%d/env?a=1" % srv.port, cookies={"k": "v"})
        assert r.http_version == "HTTP/2"
        assert r.json()["QUERY_STRING"] == "a=1"
    tls = h2_server(server_factory, certfile=str(pki / "server.pem"), keyfile=str(pki / "server.key"))
    with httpx.Client(http2=True, verify=str(pki / "ca.pem"), timeout=BOUND) as c:
        r = c.get("https://localhost:%d/" % tls.port)
        assert r.http_version == "HTTP/2"
        assert r.text == "hello HTTP/2\n"


def test_haproxy_speaks_h2_to_us(server_factory, tmp_path):
    need("haproxy")
    srv = h2_server(server_factory)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    front = s.getsockname()[1]
    s.close()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n  log stderr format raw local0 info\n"
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n"
        "  timeout server 30s\n"
        "frontend f\n  bind 127.0.0.1:%d\n  default_backend b\n"
        "backend b\n  server s1 127.0.0.1:%d proto h2\n" % (front, srv.port)
    )
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], env=tool_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + BOUND
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", front, timeout=BOUND)
                c.request("GET", "/env")
                r = c.getresponse()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status == 200
        assert json.loads(r.read())["SERVER_PROTOCOL"] == "HTTP/2"
        c.request("POST", "/echo", body=b"z" * 100000)
        r = c.getresponse()
        assert r.read() == hashlib.sha256(b"z" * 100000).hexdigest().encode()
        c.close()
    finally:
        proxy.terminate()
        proxy.wait(timeout=BOUND)


# ---- the protocol ------------------------------------------------------------


def test_streams_are_served_concurrently(server_factory):
    """threads=4 and one connection with four streams whose app waits for
    all four to be in it: served one after another, it would never end."""
    srv = h2_server(server_factory, threads=4)
    cl = Client(srv.port)
    sids = [cl.request("/barrier?4") for _ in range(4)]
    assert cl.pump(cl.done(*sids))
    for sid in sids:
        assert cl.streams[sid]["headers"][":status"] == "200"
        assert bytes(cl.streams[sid]["data"]) == b"met"
    cl.close()


def test_environ(server_factory):
    srv = h2_server(server_factory)
    cl = Client(srv.port)
    sid = cl.request("/env?x=1&y=2", method="POST",
                     headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-test", "yes"),
                              ("content-type", "text/plain")], body=b"12345")
    assert cl.pump(cl.done(sid))
    env = json.loads(bytes(cl.streams[sid]["data"]))
    assert env == {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/env", "QUERY_STRING": "x=1&y=2",
        "REQUEST_URI": "/env?x=1&y=2", "SERVER_PROTOCOL": "HTTP/2", "HTTP_HOST": "127.0.0.1",
        "HTTP_COOKIE": "a=1; b=2", "HTTP_X_TEST": "yes", "CONTENT_LENGTH": "5",
        "CONTENT_TYPE": "text/plain", "wsgi.url_scheme": "http",
    }
    cl.close()


def test_post_body_echoed(server_factory, tmp_path):
    srv = h2_server(server_factory)
    body = os.urandom(3 * 1024 * 1024 + 17)
    f = tmp_path / "body"
    f.write_bytes(body)
    p = curl("--http2-prior-knowledge", "--data-binary", "@" + str(f),
             "http://127.0.0.1:%d/echo" % srv.port)
    assert p.returncode == 0, p.stderr
    assert p.stdout == hashlib.sha256(body).hexdigest().encode()


def test_large_response_with_flow_control(server_factory):
    """10 MiB through the default 64 KiB stream window: the client opens
    it as it reads (WINDOW_UPDATE)."""
    srv = h2_server(server_factory)
    n = 10 * 1024 * 1024
    expect = (b"0123456789abcdef" * 4096 * (n // 65536 + 1))[:n]
    cl = Client(srv.port)
    sid = cl.request("/big?%d" % n)
    assert cl.pump(cl.done(sid))
    assert cl.streams[sid]["headers"][":status"] == "200"
    assert hashlib.sha256(cl.streams[sid]["data"]).digest() == hashlib.sha256(expect).digest()
    cl.close()
    p = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/big?%d" % (srv.port, n))
    assert hashlib.sha256(p.stdout).digest() == hashlib.sha256(expect).digest()


def test_connection_specific_headers_dropped(server_factory):
    srv = h2_server(server_factory)
    cl = Client(srv.port)
    sid = cl.request("/hop")
    assert cl.pump(cl.done(sid))
    h = cl.streams[sid]["headers"]
    assert "proxy-connection" not in h
    assert h["x-kept"] == "yes"
    cl.close()


def test_head_has_no_data(server_factory):
    srv = h2_server(server_factory)
    cl = Client(srv.port)
    sid = cl.request("/big?1000", method="HEAD")
    assert cl.pump(cl.done(sid))
    assert cl.streams[sid]["headers"][":status"] == "200"
    assert cl.streams[sid]["data"] == b""
    assert cl.streams[sid]["ended"]
    cl.close()


def test_app_errors_500_or_reset(server_factory):
    srv = h2_server(server_factory)
    cl = Client(srv.port)
    early = cl.request("/boom")
    late = cl.request("/boom-late")
    assert cl.pump(cl.done(early, late))
    assert cl.streams[early]["headers"][":status"] == "500"
    assert b"Internal Server Error" in cl.streams[early]["data"]
    assert cl.streams[late]["reset"] == h2.errors.ErrorCodes.INTERNAL_ERROR
    # The connection goes on.
    sid = cl.request("/")
    assert cl.pump(cl.done(sid))
    assert bytes(cl.streams[sid]["data"]) == b"hello HTTP/2\n"
    cl.close()


def test_graceful_stop_sends_goaway_and_finishes(server_factory):
    """A stop while a stream is in the app: GOAWAY (NO_ERROR, last stream
    1), the stream's response, then the close.  Raw frames: the h2
    library treats any GOAWAY as the end of the connection."""
    srv = h2_server(server_factory)
    s, enc = raw_preface(srv.port)
    s.sendall(HeadersFrame(1, headers_block(enc, "/sleep?1"),
                           flags=["END_HEADERS", "END_STREAM"]).serialize())
    srv.wait_for("sleeping")    # the request is in the app
    srv.send_signal(signal.SIGTERM)
    fr = frames(read_to_close(s))
    s.close()
    kinds = [f[0] for f in fr]
    assert 0x7 in kinds
    goaway = fr[kinds.index(0x7)][3]
    assert int.from_bytes(goaway[:4], "big") == 1
    assert int.from_bytes(goaway[4:8], "big") == 0
    data = [f for f in fr if f[0] == 0x0 and f[2] == 1]
    assert b"".join(f[3] for f in data) == b"slept"
    assert data[-1][1] & 0x1     # END_STREAM
    assert kinds.index(0x7) < fr.index(data[0])
    srv.wait(timeout=BOUND)


def test_access_log_says_http2(server_factory):
    srv = h2_server(server_factory, access_log=True)
    p = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/hop" % srv.port)
    assert p.returncode == 0
    srv.wait_for(r'"GET /hop HTTP/2\.0" 200 3')


def test_idle_connection_times_out(server_factory):
    srv = h2_server(server_factory, channel_timeout=2)
    cl = Client(srv.port)
    assert cl.pump(lambda: cl.closed, bound=BOUND)
    assert cl.goaway is not None and cl.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR


# ---- attacks -------------------------------------------------------------------


def raw_preface(port):
    """A socket past the preface and SETTINGS, and an HPACK encoder."""
    s = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    return s, Encoder()


def read_to_close(s):
    """Read and discard until the server closes (bounded); the frames
    read, raw."""
    got = bytearray()
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return got
        if not d:
            return got
        got += d
    raise AssertionError("the server did not close the connection")


def frames(raw):
    """Raw frames as (type, flags, stream id, payload)."""
    out, i = [], 0
    while i + 9 <= len(raw):
        length = int.from_bytes(raw[i:i + 3], "big")
        if i + 9 + length > len(raw):
            break
        sid = int.from_bytes(raw[i + 5:i + 9], "big") & 0x7FFFFFFF
        out.append((raw[i + 3], raw[i + 4], sid, bytes(raw[i + 9:i + 9 + length])))
        i += 9 + length
    return out


def goaway_code(raw):
    """The error code of the first GOAWAY in raw frames, or None."""
    i = 0
    while i + 9 <= len(raw):
        length = int.from_bytes(raw[i:i + 3], "big")
        ftype = raw[i + 3]
        if ftype == 0x7 and i + 9 + 8 <= len(raw):
            return int.from_bytes(raw[i + 13:i + 17], "big")
        i += 9 + length
    return None


def headers_block(enc, path):
    return enc.encode([(":method", "GET"), (":path", path), (":scheme", "http"),
                       (":authority", "127.0.0.1")])


def test_rapid_reset_bounded(server_factory):
    """HEADERS (without END_STREAM) then RST_STREAM, 1500 times: nothing
    dispatched, the connection ends with GOAWAY ENHANCE_YOUR_CALM, and the
    server serves others."""
    srv = h2_server(server_factory)
    s, enc = raw_preface(srv.port)
    out = bytearray()
    for i in range(1500):
        sid = 1 + 2 * i
        out += HeadersFrame(sid, headers_block(enc, "/count"), flags=["END_HEADERS"]).serialize()
        out += RstStreamFrame(sid, error_code=8).serialize()
    try:
        s.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = read_to_close(s)
    s.close()
    assert goaway_code(raw) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    served_h1(srv)
    p = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/calls" % srv.port)
    assert p.stdout == b"0"


def test_reset_while_in_app_discards_output(server_factory):
    srv = h2_server(server_factory)
    cl = Client(srv.port)
    cl.ack = False
    sid = cl.request("/big?%d" % (50 * 1024 * 1024))
    assert cl.pump(lambda: cl.streams[sid]["headers"] is not None)
    cl.conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
    cl.flush()
    cl.ack = True
    other = cl.request("/")
    assert cl.pump(cl.done(other))
    assert bytes(cl.streams[other]["data"]) == b"hello HTTP/2\n"
    cl.close()
    srv.wait_for("Client disconnected while serving /big")


def test_continuation_flood_closes(server_factory):
    srv = h2_server(server_factory)
    s, enc = raw_preface(srv.port)
    block = headers_block(enc, "/")
    out = bytearray(HeadersFrame(1, block, flags=["END_STREAM"]).serialize())
    for i in range(5000):
        out += ContinuationFrame(1, enc.encode([("x-pad-%d" % (i % 50), "v")])).serialize()
    try:
        s.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = read_to_close(s)     # nghttp2 stops at 8 CONTINUATION frames
    s.close()
    assert not [f for f in frames(raw) if f[0] == 0x1]     # nothing served
    served_h1(srv)


def test_oversized_header_list_431(server_factory):
    srv = h2_server(server_factory, h2_max_header_list_size=4096)
    cl = Client(srv.port)
    sid = cl.request("/", headers=[("x-big", "a" * 8000)])
    assert cl.pump(cl.done(sid))
    assert cl.streams[sid]["headers"][":status"] == "431"
    # An HPACK bomb: one large entry in the dynamic table, referenced many
    # times (each reference a byte on the wire).
    sid = cl.request("/", headers=[("x-bomb", "b" * 3000)] * 40)
    assert cl.pump(cl.done(sid))
    assert cl.streams[sid]["headers"][":status"] == "431"
    sid = cl.request("/")
    assert cl.pump(cl.done(sid))
    assert cl.streams[sid]["headers"][":status"] == "200"
    cl.close()


def test_ping_flood_closes(server_factory):
    """PINGs from a client that does not read its ACKs: nghttp2's bound on
    queued ACKs ends the connection."""
    srv = h2_server(server_factory)
    s, _ = raw_preface(srv.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    s.settimeout(BOUND)
    try:
        for _ in range(100):
            s.sendall(ping * 1000)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    read_to_close(s)
    s.close()
    served_h1(srv)


def test_settings_flood_closes(server_factory):
    srv = h2_server(server_factory)
    s, _ = raw_preface(srv.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(BOUND)
    settings = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64"
    try:
        s.sendall(settings * 100000)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    read_to_close(s)
    s.close()
    served_h1(srv)


def test_zero_window_stall_times_out(server_factory):
    """A client that never opens its window: the response waits, and the
    send stall timeout (channel_timeout) closes the connection."""
    srv = h2_server(server_factory, channel_timeout=2)
    cl = Client(srv.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    cl.ack = False
    sid = cl.request("/big?%d" % (4 * 1024 * 1024))
    assert cl.pump(lambda: cl.closed, bound=BOUND)
    assert cl.streams[sid]["data"] == b""
    # The worker, parked over the stream's high watermark, is let go.
    srv.wait_for("Client disconnected while serving /big")
    served_h1(srv)


def test_too_many_streams_refused(server_factory):
    srv = h2_server(server_factory, h2_max_concurrent_streams=2, threads=4)
    # Past the limit the h2 library refuses to send: raw frames then.
    s, enc = raw_preface(srv.port)
    out = bytearray()
    for i in range(4):
        out += HeadersFrame(1 + 2 * i, headers_block(enc, "/sleep?0.5"),
                            flags=["END_HEADERS", "END_STREAM"]).serialize()
    s.sendall(out)
    raw = bytearray()
    deadline = time.monotonic() + BOUND
    while raw.count(b"\x00\x00\x04\x03") < 2 and time.monotonic() < deadline:
        raw += s.recv(65536)
    # RST_STREAM (type 3) REFUSED_STREAM (7) for two of them.
    assert raw.count(b"\x00\x00\x04\x03") >= 2
    assert b"\x00\x00\x00\x07" in raw
    s.close()


def test_unfinished_request_times_out(server_factory):
    """Streams the client opens and never ends hold no worker; the idle
    clock (channel_timeout from its last byte) closes the connection."""
    srv = h2_server(server_factory, channel_timeout=2)
    cl = Client(srv.port)
    sids = [cl.request("/echo", method="POST", end=False) for _ in range(10)]
    assert cl.pump(lambda: cl.closed, bound=BOUND)
    assert all(cl.streams[s]["headers"] is None for s in sids)
    served_h1(srv)


def test_file_wrapper_and_write(server_factory, tmp_path):
    srv = h2_server(server_factory)
    data = os.urandom(3 * 1024 * 1024 + 5)
    f = tmp_path / "blob"
    f.write_bytes(data)
    cl = Client(srv.port)
    sid = cl.request("/file?" + str(f))
    w = cl.request("/write")
    assert cl.pump(cl.done(sid, w))
    assert cl.streams[sid]["headers"]["content-length"] == str(len(data))
    assert bytes(cl.streams[sid]["data"]) == data
    assert bytes(cl.streams[w]["data"]) == b"written returned"
    cl.close()


def test_upgrade_h2c_is_ignored(server_factory):
    """Upgrade: h2c is not done: the request is answered over HTTP/1.1."""
    srv = h2_server(server_factory)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=BOUND)
    c.request("GET", "/", headers={"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
                                   "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
    r = c.getresponse()
    assert (r.status, r.version, r.read()) == (200, 11, b"hello HTTP/1.1\n")
    c.close()


def test_mutated_frames_do_not_break_the_server(server_factory):
    """A seeded fuzz over the h2 input path: valid exchanges (headers,
    bodies, trailers, resets, settings, pings, window updates) with bytes
    flipped, cut or repeated, 300 connections.  The server answers or
    closes each, and still serves afterwards (under `make asan` this is a
    memory-safety check of h2.c)."""
    import random

    from hyperframe.frame import DataFrame, SettingsFrame, WindowUpdateFrame

    rnd = random.Random(20261207)
    srv = h2_server(server_factory, max_request_body_size=100000, h2_max_header_list_size=8192)

    def exchange():
        out = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
        for sid in range(1, 2 * rnd.randint(1, 6), 2):
            hdrs = [(":method", rnd.choice(["GET", "POST", "HEAD", "CONNECT"])),
                    (":path", rnd.choice(["/", "/echo", "/env?x", "*", "/big?100"])),
                    (":scheme", "http"), (":authority", "h"), ("cookie", "a=b")]
            body = rnd.random() < 0.5
            out += HeadersFrame(sid, Encoder().encode(hdrs),
                                flags=["END_HEADERS"] + ([] if body else ["END_STREAM"])).serialize()
            if body:
                out += DataFrame(sid, os.urandom(rnd.randint(0, 3000)), flags=["END_STREAM"]).serialize()
            if rnd.random() < 0.2:
                out += RstStreamFrame(sid, error_code=8).serialize()
            if rnd.random() < 0.2:
                out += WindowUpdateFrame(sid, window_increment=rnd.randint(1, 100000)).serialize()
            if rnd.random() < 0.2:
                out += PingFrame(0, opaque_data=b"abcdefgh").serialize()
        for _ in range(rnd.randint(1, 8)):
            if len(out) <= 25:
                break
            i = rnd.randrange(24, len(out))
            kind = rnd.random()
            if kind < 0.5:
                out[i] = rnd.randrange(256)
            elif kind < 0.75:
                del out[i:i + rnd.randint(1, 20)]
            else:
                out[i:i] = out[i:i + rnd.randint(1, 40)]
        return bytes(out)

    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=BOUND)
        try:
            s.sendall(exchange())
            s.shutdown(socket.SHUT_WR)
            read_to_close(s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.close()
    served_h1(srv)
    assert srv.poll() is None


def test_tls_h2_large_bodies_both_ways(server_factory, pki, tmp_path):
    srv = h2_server(server_factory, certfile=str(pki / "server.pem"), keyfile=str(pki / "server.key"))
    base = ["--http2", "--cacert", str(pki / "ca.pem"), "--resolve",
            "localhost:%d:127.0.0.1" % srv.port]
    body = os.urandom(3 * 1024 * 1024 + 1)
    f = tmp_path / "body"
    f.write_bytes(body)
    p = curl(*base, "--data-binary", "@" + str(f), "-w", "|%{http_version}",
             "https://localhost:%d/echo" % srv.port)
    assert p.stdout == hashlib.sha256(body).hexdigest().encode() + b"|2", p.stderr
    n = 10 * 1024 * 1024
    expect = (b"0123456789abcdef" * 4096 * (n // 65536 + 1))[:n]
    p = curl(*base, "https://localhost:%d/big?%d" % (srv.port, n))
    assert hashlib.sha256(p.stdout).digest() == hashlib.sha256(expect).digest(), p.stderr
