"""Black-box robustness: mutated requests (a fixed seed, a bounded count)
against a real server.  Each must get a well-formed error or success
response, or a close; the server must stay up and keep serving other
connections correctly.  `make asan` runs this under AddressSanitizer."""

import random
import re
import socket

import pytest
from http_reader import recv_all

SEEDS = [
    b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /environ?a=1&b=%20 HTTP/1.0\r\nConnection: keep-alive\r\nX-A: b\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;a=b\r\nhello\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"GET http://h:80/hello?q HTTP/1.1\r\nHost: y\r\nExpect: 100-continue\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /chunks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
]

TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"\x00", b"\x7f",
    b"\xff", b"%", b"%00", b"0", b"ffffffffffffffffff", b"-1", b"chunked",
    b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: z\r\n",
    b"HTTP/1.1", b"HTTP/2.0", b"\r\n\r\n", b"GET / HTTP/1.1\r\n", b"_", b'"',
]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randint(0, len(data))
        if op < 0.3 and data:
            del data[pos : pos + rng.randint(1, 8)]
        elif op < 0.6:
            data[pos:pos] = rng.choice(TOKENS)
        elif op < 0.8 and data:
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(data)


def exchange(srv, payload, split):
    """Send payload (in two parts), then read until close or 1 s of quiet."""
    s = srv.connect(timeout=1.0)
    try:
        try:
            s.sendall(payload[:split])
            s.sendall(payload[split:])
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before we were done
        return recv_all(s, timeout=1.0, total=3, reset_ok=True)
    finally:
        s.close()


@pytest.fixture(scope="module")
def fuzz_server(request):
    from servers import ServerProcess

    s = ServerProcess("router", max_request_body_size=100000, channel_timeout=5)
    yield s
    s.close()


@pytest.mark.parametrize("seed", range(4))
def test_mutated_requests_never_break_the_server(fuzz_server, seed):
    rng = random.Random(seed)
    for i in range(500):
        payload = mutate(rng, rng.choice(SEEDS))
        out = exchange(fuzz_server, payload, rng.randint(0, len(payload)))
        if out:
            # Every response starts with a proper status line.
            assert out.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), (payload, out[:200])
            code = int(out.split(b" ", 2)[1])
            assert 100 <= code < 600, (payload, out[:200])
        assert fuzz_server.proc.poll() is None, fuzz_server.stderr()
    # Still healthy: a normal request on a fresh connection.
    resp, body = fuzz_server.request("GET", "/hello")
    assert body == b"Hello, world!"
    # Nothing but the app's own (logged) exceptions: no internal errors.
    log = fuzz_server.stderr()
    assert "SystemError" not in log and "Fatal" not in log, log[-2000:]


def test_errors_are_never_followed_by_a_second_response(fuzz_server):
    """After a 4xx the connection closes: nothing behind the bad request is
    served (no smuggling)."""
    bad = [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nA",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    for payload in bad:
        out = exchange(fuzz_server, payload + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 0)
        assert out.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), (payload, out)
        status_lines = re.findall(rb"(?:^|\r\n)HTTP/1\.[01] \d{3} ", out)
        assert len(status_lines) == 1, (payload, out)
        assert b"Hello, world!" not in out
