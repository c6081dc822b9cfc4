"""A large body block that the socket does not take at once is queued by
reference to the app's bytes object, not copied, and the reference is
dropped once it is sent: slow readers of one shared body cost next to no
memory, and nothing is held after the responses are done."""

import os
import socket
import time

import pytest

from apps_zero_copy import SHARED, SIZE
from http_reader import read_response
from servers import proc_rss_kb

SANITIZED = bool(os.environ.get("WC_SANITIZED"))


def read_body(s):
    """The body of the 200 response waiting on `s`."""
    with s.makefile("rb") as f:
        status, _, body = read_response(f)
    assert status.startswith(b"HTTP/1.1 200 "), status
    return body


def connect_slow(srv, path, n):
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A reader over a real network: loopback's 64 KiB segments let the
        # kernel take a whole body into the socket buffers.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(30)
        s.connect((srv.host, srv.port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path).encode())
        conns.append(s)
    return conns


def wait_quiet(pid, limit=10.0):
    """RSS unchanged (within 256 KiB) for half a second, or `limit` s."""
    deadline = time.monotonic() + limit
    last = proc_rss_kb(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = proc_rss_kb(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


@pytest.mark.parametrize("path", ["/shared", "/shared-gen"])
def test_slow_readers_of_one_shared_body_do_not_copy_it(server_factory, path):
    srv = server_factory("apps_zero_copy:app")
    n = 60
    # Warm up: one full response, so allocator and thread stacks are in.
    warm = connect_slow(srv, path, 1)
    assert read_body(warm[0]) == SHARED
    warm[0].close()
    base = wait_quiet(srv.proc.pid)
    conns = connect_slow(srv, path, n)
    grown = wait_quiet(srv.proc.pid) - base
    # Copied, each connection would hold what its socket did not take
    # (most of 768 KiB): n x ~0.7 MiB = ~40 MiB.  By reference: segments.
    if not SANITIZED:
        assert grown < 8 * 1024, "RSS grew by %d KiB for %d slow readers" % (grown, n)
    for s in conns:
        assert read_body(s) == SHARED
        s.close()


def refcount(path):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                return int(f.read())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError("no refcount recorded")


def test_sent_bodies_are_released_without_another_request(server_factory, tmp_path, monkeypatch):
    counts = str(tmp_path / "refcount")
    monkeypatch.setenv("WC_TEST_REFCOUNT_FILE", counts)
    srv = server_factory("apps_zero_copy:app")
    base = refcount(counts)
    conns = connect_slow(srv, "/shared", 20)
    deadline = time.monotonic() + 10
    while refcount(counts) < base + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    held = refcount(counts)
    # The bodies wait in the server by reference.
    assert held >= base + 10, (base, held)
    for s in conns:
        assert read_body(s) == SHARED
    # No request follows: the once-a-second sweep has a worker drop them.
    deadline = time.monotonic() + 5 * (4 if SANITIZED else 1)
    while refcount(counts) != base and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refcount(counts) == base
    for s in conns:
        s.close()


def test_fresh_bodies_by_reference_arrive_intact_through_a_slow_reader(server_factory):
    srv = server_factory("apps_zero_copy:app")
    conns = connect_slow(srv, "/fresh", 10)
    time.sleep(0.5)
    want = SHARED[:-1] + b"!"
    for s in conns:
        assert read_body(s) == want
        s.close()
    assert len(want) == SIZE
