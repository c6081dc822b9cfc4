"""wsgi.file_wrapper (as in waitress) and deliberate
difference 15: a real file goes out with sendfile(2) from the loop thread,
never read through Python."""

import json
import shutil
import socket
import subprocess
import time

import pytest
from apps_http import pattern
from http_helpers import Client, get, key, marks, server_fixture, wait_marks

srv = server_fixture()

N = 100000


def wrapper_info(srv, k):
    ev = [e for e in marks(srv, k) if e.startswith("wrapper ")]
    assert len(ev) == 1, ev
    return json.loads(ev[0][len("wrapper "):])


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("real", (True, True, True)),
        ("bytesio", (True, True, True)),
        ("seektell", (True, True, False)),
        ("readonly", (False, False, False)),
        ("raw", (False, False, False)),
    ],
)
def test_seek_tell_seekable_exposed_only_for_seekable_files(srv, kind, expected):
    k = key()
    with Client(srv) as c:
        r = c.request(get("/file?kind=%s&n=10&k=%s" % (kind, k)))
        assert r.body == pattern(10)
    info = wrapper_info(srv, k)
    assert (info["has_seek"], info["has_tell"], info["has_seekable"]) == expected


# -- seekable files: the size is known --------------------------------------------------


def test_real_file_without_content_length(srv):
    with Client(srv) as c:
        r = c.request(get("/file?n=%d" % N))
        assert r.header("Content-Length") == str(N)
        assert r.header("Transfer-Encoding") is None
        assert r.body == pattern(N)
        assert c.request(get("/respond?b=next")).body == b"next"


def test_real_file_content_length_too_long_is_corrected(srv):
    with Client(srv) as c:
        r = c.request(get("/file?n=%d&cl=%d" % (N, N + 5000)))
        assert [v for k, v in r.headers if k.lower() == "content-length"] == [str(N)]
        assert r.body == pattern(N)
        assert c.request(get("/respond?b=next")).body == b"next"


def test_real_file_content_length_too_short_sends_exactly_that(srv):
    with Client(srv) as c:
        r = c.request(get("/file?n=%d&cl=1" % N))
        assert r.header("Content-Length") == "1"
        assert r.body == pattern(1)
        r = c.request(get("/respond?b=next"))
        assert r.status_line == b"HTTP/1.1 200 OK" and r.body == b"next"


def test_real_file_from_its_current_position(srv):
    with Client(srv) as c:
        r = c.request(get("/file?n=%d&seek=1000" % N))
        assert r.header("Content-Length") == str(N - 1000)
        assert r.body == pattern(N)[1000:]
        r = c.request(get("/file?n=%d&seek=1000&cl=10" % N))
        assert r.body == pattern(N)[1000:1010]


def test_real_file_http10_keep_alive(srv):
    with Client(srv) as c:
        r = c.request(get("/file?n=%d" % N, version="1.0", headers=["Connection: keep-alive"]))
        assert r.header("Connection") == "Keep-Alive"
        assert r.header("Content-Length") == str(N)
        assert r.body == pattern(N)
        assert c.request(get("/respond?b=next", version="1.0")).body == b"next"


def test_real_file_head_sends_no_body(srv):
    """Difference 1 (waitress sends the file on HEAD too)."""
    with Client(srv) as c:
        c.send(get("/file?n=%d" % N, method="HEAD") + get("/respond?b=next"))
        r = c.response(head=True)
        assert r.header("Content-Length") == str(N)
        r2 = c.response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == b"next"


@pytest.mark.parametrize("kind", ["bytesio", "seektell"])
def test_seekable_file_like_gets_a_content_length(srv, kind):
    """3.19: any seekable file (seekable(), or seek and tell) has its size
    computed: Content-Length set and the connection kept."""
    with Client(srv) as c:
        r = c.request(get("/file?kind=%s&n=%d" % (kind, N), version="1.0", headers=["Connection: keep-alive"]))
        assert r.header("Content-Length") == str(N)
        assert r.body == pattern(N)
        assert c.request(get("/respond?b=next", version="1.0")).body == b"next"


@pytest.mark.parametrize("kind", ["bytesio", "seektell"])
def test_seekable_file_like_too_long_content_length_is_corrected(srv, kind):
    with Client(srv) as c:
        r = c.request(get("/file?kind=%s&n=%d&cl=%d" % (kind, N, N + 10)))
        assert r.header("Content-Length") == str(N)
        assert r.body == pattern(N)
        assert c.request(get("/respond?b=next")).body == b"next"


@pytest.mark.parametrize("kind", ["real", "bytesio", "seektell"])
def test_seekable_file_too_short_content_length(srv, kind):
    with Client(srv) as c:
        r = c.request(get("/file?kind=%s&n=%d&cl=3" % (kind, N)))
        assert r.body == pattern(3)
        assert c.request(get("/respond?b=next")).body == b"next"


# -- not seekable, or empty: iterated -------------------------------------------------------


@pytest.mark.parametrize("kind", ["readonly", "raw"])
def test_unseekable_without_content_length_is_chunked(srv, kind):
    with Client(srv) as c:
        r = c.request(get("/file?kind=%s&n=%d" % (kind, N)))
        assert r.header("Transfer-Encoding") == "chunked"
        assert r.header("Content-Length") is None
        assert r.body == pattern(N)


def test_unseekable_is_read_in_blocks(srv):
    k = key()
    with Client(srv) as c:
        assert c.request(get("/file?kind=readonly&n=%d&k=%s" % (N, k))).body == pattern(N)
        assert c.request(get("/file?kind=readonly&n=2500&bs=1000&k=%s" % k)).body == pattern(2500)
    reads = [e for e in wait_marks(srv, k, lambda ev: ev.count("closed") == 2) if e.startswith("read")]
    # 100000 bytes in 32768-byte blocks: 4 reads and one at the end; then
    # 2500 in 1000-byte blocks.
    assert reads == ["read 32768"] * 5 + ["read 1000"] * 4


def test_unseekable_too_long_content_length_is_short_and_closes(srv):
    with Client(srv) as c:
        c.send(get("/file?kind=readonly&n=100&cl=200"))
        data = c.rest()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 200" in head
    assert body == pattern(100)


def test_empty_real_file(srv):
    with Client(srv) as c:
        r = c.request(get("/file?n=0"))
        assert r.status == 200 and r.body == b""
        assert c.request(get("/respond?b=next")).body == b"next"


# -- difference 15: sendfile, no Python copy ------------------------------------------------


def test_real_file_is_never_read_through_python_and_is_closed(srv):
    k = key()
    with Client(srv) as c:
        r = c.request(get("/file?n=%d&k=%s" % (2 * 1024 * 1024, k)))
        assert r.body == pattern(2 * 1024 * 1024)
    ev = wait_marks(srv, k, lambda ev: "closed" in ev)
    assert "closed" in ev
    assert not [e for e in ev if e.startswith("read")], ev


def test_big_file_to_a_slow_reader(srv):
    """Sent in full when the socket keeps filling up."""
    n = 8 * 1024 * 1024
    with Client(srv, timeout=20) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.send(get("/file?n=%d" % n))
        time.sleep(0.3)
        deadline = time.monotonic() + 20
        c.deadline, c.recv_size = deadline, 4096
        head = c.read_head().head
        assert b"Content-Length: %d" % n in head
        body = c.take_buffered()
        while len(body) < n and time.monotonic() < deadline:
            chunk = c.read_some(65536)
            if not chunk:
                break
            body += chunk
            if len(body) < n // 2:
                time.sleep(0.001)
    assert len(body) == n and body == pattern(n)


def test_file_closed_when_the_client_goes_away(srv):
    k = key()
    with Client(srv) as c:
        c.send(get("/file?n=%d&k=%s" % (64 * 1024 * 1024, k)))
        c.sock.recv(1000)
    assert "closed" in wait_marks(srv, k, lambda ev: "closed" in ev, timeout=10)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_sendfile_is_used(srv, tmp_path):
    out = tmp_path / "strace.txt"
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=sendfile", "-o", str(out), "-p", str(srv.proc.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            pytest.skip("strace cannot attach: %s" % proc.stderr.read().decode(errors="replace"))
        with Client(srv) as c:
            r = c.request(get("/file?n=%d" % (1024 * 1024)))
            assert r.body == pattern(1024 * 1024)
            r = c.request(get("/respond?b=plain"))
        time.sleep(0.3)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    calls = [line for line in out.read_text().splitlines() if "sendfile(" in line]
    assert calls, out.read_text()
    sent = 0
    for line in calls:
        rv = line.rsplit("=", 1)[-1].strip().split()[0]
        if rv.isdigit():
            sent += int(rv)
    assert sent > 0, calls
