"""TLS: the workers' own writes (a small response encrypted and written by
the worker under the channel's lock) and the records OpenSSL reads ahead,
at their edges: what must hold when the socket refuses a worker's record,
when the client goes away, and when the queue behind a record spills."""

import hashlib
import json
import os
import socket
import threading
import time

import pytest

from http_reader import Reader
from servers import SLOW
from test_tls import client_ctx, get_json, small_window_socket, tls_server
from waitress_c import _core

pytestmark = pytest.mark.skipif(
    not _core.HAVE_TLS, reason="this build has no TLS (built with WC_NO_TLS=1)"
)


def wait_until_still(srv, pki, key, bound):
    """Poll the app's progress until it stops moving (the worker is parked
    on a full socket, or done): the client has read nothing so far."""
    deadline = time.monotonic() + bound
    last = None
    while time.monotonic() < deadline:
        now = get_json(srv, pki, "/progress")[key]
        if now == last and now > 0:
            return now
        last = now
        time.sleep(0.3)
    raise AssertionError("the app never stopped writing")


def test_refused_worker_record_with_a_small_outbuf_overflow(server_factory, pki):
    """A worker writes a chunk (size line, 4000-byte block, CRLF) itself
    until the socket refuses the record: OpenSSL keeps it, and the queue
    must then offer those same 4007 bytes first.  With outbuf_overflow
    below a record, the block would go to the temp file behind the
    size line queued in memory, the loop's retry would offer the 5-byte
    size line alone, and OpenSSL would fail it (bad write retry): the
    response cut off.  The client reads nothing until the app is parked,
    then everything, in order."""
    from apps_tls import WRITE_BLOCK, write_block

    blocks_n = 1500     # 6 MB: more than the kernel buffers hold
    srv = tls_server(server_factory, pki, outbuf_overflow=2048, channel_timeout=120)
    s = small_window_socket(srv, pki)
    try:
        s.sendall(b"GET /chunks?%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % blocks_n)
        assert wait_until_still(srv, pki, "written", 60 * SLOW) < blocks_n * WRITE_BLOCK
        answer = Reader(s, timeout=60 * SLOW).response()
    finally:
        s.close()
    assert answer.status == 200
    want = hashlib.sha256(b"".join(write_block(i) for i in range(blocks_n)))
    assert len(answer.body) == blocks_n * WRITE_BLOCK
    assert hashlib.sha256(answer.body).hexdigest() == want.hexdigest()


def test_client_reset_during_worker_writes_does_not_kill_a_sigpipe_default_process(
    server_factory, pki, monkeypatch
):
    """Workers write small blocks to TLS connections themselves, through
    OpenSSL's socket BIO, i.e. write(2), which cannot pass MSG_NOSIGNAL;
    the process's SIGPIPE is at its default (terminate).  Clients reset
    their connections mid-response: when the loop's read meets the reset
    first (and takes the socket's error), a worker's next write gets EPIPE
    and, without MSG_NOSIGNAL, a SIGPIPE that kills the server.  It is a
    race, so many connections (bounded in number and time): the server
    must live through all of them."""
    import struct
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("WC_TEST_SIGPIPE_DFL", "1")
    srv = tls_server(server_factory, pki, threads=4)
    ctx = client_ctx(pki)
    deadline = time.monotonic() + 20 * SLOW
    # The client threads' handshakes one at a time: the race is the
    # server's, in what follows; concurrent certificate checks inside this
    # process's libcrypto would only give ThreadSanitizer (make tsan),
    # which cannot see libcrypto's own synchronisation, false reports.
    handshake = threading.Lock()

    def resets(k):
        done = 0
        for _ in range(400):
            if time.monotonic() > deadline or srv.proc.poll() is not None:
                break
            try:
                raw = srv.connect(timeout=10 * SLOW)
                with handshake:
                    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                s.sendall(b"GET /writes?100000 HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(65536)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                break   # the server died (checked below)
            done += 1
            # The worker goes on writing into the reset connection
            # meanwhile (the race is there, not in the next connect).
            time.sleep(0.02)
        return done

    with ThreadPoolExecutor(3) as pool:
        done = sum(pool.map(resets, range(3)))
    assert srv.proc.poll() is None, "server died: %r" % srv.proc.returncode
    assert done > 0
    assert get_json(srv, pki, "/progress")["written"] >= 0


@pytest.mark.parametrize("n", [215, 230, 240])
def test_pipelined_burst_past_the_backlog_with_records_read_ahead(server_factory, pki, n):
    """`n` pipelined requests of about 250 bytes, a record each, behind
    the Finished in one send (under 64 KiB on the wire): the first read
    takes them all into OpenSSL, the read round stops for room at 48 KiB
    with whole records left inside OpenSSL and none in the socket, and
    the parser stops at the backlog (reading stops).  When the backlog
    drains and reading resumes, those records must be read without a
    readiness event.  Every request is answered, in order."""
    from test_tls import tls_by_hand

    srv = tls_server(server_factory, pki)
    raw, obj, outgoing, read_all = tls_by_hand(srv, pki)
    pad = b"X-Pad: " + b"p" * 200 + b"\r\n"
    try:
        for i in range(n):
            obj.write(b"GET /id/%d HTTP/1.1\r\nHost: x\r\n%s%s\r\n"
                      % (i, pad, b"Connection: close\r\n" if i == n - 1 else b""))
        raw.sendall(outgoing.read())
        plain = read_all()
    finally:
        raw.close()
    answers = Reader(plain).responses()
    assert [(a.status, a.body) for a in answers] == [(200, b"/id/%d" % i) for i in range(n)]


def request_key_update(obj):
    """Make the TLS 1.3 client `obj` (an ssl.SSLObject) send a KeyUpdate
    asking for the server's with its next record.  Python's ssl has no
    call for it: OpenSSL's SSL_key_update on the SSL* of the _ssl object
    (the field after the weak reference to the socket), through the same
    libssl the _ssl module uses."""
    import ctypes
    import ctypes.util

    libssl = ctypes.CDLL(ctypes.util.find_library("ssl"))
    libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libssl.SSL_version.argtypes = [ctypes.c_void_p]
    # PySSLSocket: the object's head, the socket's weak reference, SSL *.
    at = id(obj._sslobj) + object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)
    ptr = ctypes.c_void_p.from_address(at).value
    assert libssl.SSL_version(ptr) == 0x0304, "not the SSL* of a TLS 1.3 connection"
    assert libssl.SSL_key_update(ptr, 1) == 1  # SSL_KEY_UPDATE_REQUESTED


def key_update_to_a_full_socket(server_factory, pki, request, while_full=None):
    """A TLS 1.3 client asks a holding_server for more than the kernel can
    hold and reads nothing until the app has written it all (the socket
    is full); then it sends a KeyUpdate and `request` in one segment, runs
    `while_full(srv)` and reads.  The first response must be whole.
    Returns (the response to `request`, what while_full returned)."""
    from test_tls import holding_server, past_kernel_buffers, tls_by_hand, wait_written

    blocks_n, total = past_kernel_buffers()
    srv = holding_server(server_factory, pki, total)
    raw, obj, outgoing, read_all = tls_by_hand(srv, pki)
    seen = None
    try:
        obj.write(b"GET /writes?%d HTTP/1.1\r\nHost: x\r\n\r\n" % blocks_n)
        raw.sendall(outgoing.read())
        wait_written(srv, pki, total)   # more than the kernel holds: the socket is full
        request_key_update(obj)
        obj.write(request)
        raw.sendall(outgoing.read())    # KeyUpdate and request, one segment
        if while_full is not None:
            seen = while_full(srv)
        raw.settimeout(10 * SLOW)
        plain = read_all()
    except socket.timeout:
        plain = None
    finally:
        raw.close()
    assert plain is not None, "the request behind the KeyUpdate was never answered"
    first, second = Reader(plain).responses()
    assert first.status == 200 and len(first.body) == total
    return second, seen


def test_key_update_while_the_server_cannot_write(server_factory, pki):
    """The client asks for a key update (TLS 1.3), with a pipelined
    request behind it in the same segment, while the server's socket is
    full with a response the client does not read yet.  The server owes a
    KeyUpdate of its own that the socket cannot take now (OpenSSL 3.0
    sends it with its next write), and the request's record, read ahead,
    may wait inside OpenSSL with the socket empty.  Once the client
    reads, the response ends and the pipelined request must still be
    answered, not forgotten."""
    answer, _ = key_update_to_a_full_socket(
        server_factory, pki,
        b"GET /id/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (answer.status, answer.body) == (200, b"/id/after")


def cpu_seconds(pid):
    """The user and system CPU time process `pid` has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_key_update_from_a_client_that_sends_but_does_not_read(server_factory, pki):
    """As above, but behind the KeyUpdate comes more than OpenSSL reads at
    once (an upload), so the socket stays readable.  Were the read to wait
    for the KeyUpdate's answer to be written (SSL_read's WANT_WRITE), a
    loop polling for EPOLLIN would wake for it again and again, a core's
    worth of CPU until the client reads or channel_timeout: the server must
    stay still (OpenSSL 3.0 answers with its next write, and the read goes
    on).  Then the upload must arrive whole."""
    body = hashlib.sha256(b"upload").digest() * (160 * 1024 // 32)  # 160 KiB

    def still(srv):
        # The server's CPU over a while (a second or more of wall time) in
        # which it has nothing it can do: (busy, wall).
        start, used = time.monotonic(), cpu_seconds(srv.pid)
        time.sleep(1.5)
        return cpu_seconds(srv.pid) - used, time.monotonic() - start

    answer, (busy, wall) = key_update_to_a_full_socket(
        server_factory, pki,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body,
        while_full=still)
    assert busy < 0.25 * wall, "the loop spun: %.2f s of CPU in %.2f s" % (busy, wall)
    assert answer.status == 200
    assert json.loads(answer.body) == {
        "sha256": hashlib.sha256(body).hexdigest(), "len": len(body)}
