"""Request size limits (as in waitress) and the error
responses the server generates (3.13), byte for byte; deliberate
difference 16 (a malformed trusted proxy header)."""

import time

import pytest
from http_helpers import Client, error_body, get, server_fixture

MAX_HEADER = 1000
MAX_BODY = 1000
srv = server_fixture(max_request_header_size=MAX_HEADER, max_request_body_size=MAX_BODY)

ERROR_HEADERS = ["connection", "content-length", "content-type", "date", "server"]


def head_of_length(n, path="/respond?b=ok", version="1.1"):
    start = ("GET %s HTTP/%s\r\nHost: x\r\nX-Pad: " % (path, version)).encode()
    end = b"\r\n\r\n"
    pad = n - len(start) - len(end)
    assert pad >= 0
    return start + b"p" * pad + end


def assert_error(r, status, reason, detail, version="HTTP/1.1", ident="waitress_c"):
    """The exact format of a server-generated error (3.13)."""
    body = error_body(reason, detail, ident)
    assert r.status_line == ("%s %d %s" % (version, status, reason)).encode()
    assert r.lower_names() == ERROR_HEADERS
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    assert r.header("Content-Length") == str(len(body))
    assert r.header("Connection") == "close"
    assert r.header("Server") == ident
    assert r.body == body


def send_error(srv, data, *expected, timeout=5.0, **kw):
    with Client(srv, timeout=timeout) as c:
        r = c.request(data)
        assert_error(r, *expected, **kw)
        assert c.closed()
    return r


# -- 3.12 header size ---------------------------------------------------------


def test_head_one_byte_under_the_limit_is_served(srv):
    with Client(srv) as c:
        r = c.request(head_of_length(MAX_HEADER - 1))
        assert r.status == 200 and r.body == b"ok"


def test_head_reaching_the_limit_is_431(srv):
    send_error(srv, head_of_length(MAX_HEADER), 431, "Request Header Fields Too Large",
               "exceeds max_header of %d" % MAX_HEADER, version="HTTP/1.0")


@pytest.mark.parametrize("n", [MAX_HEADER - 1, MAX_HEADER])
def test_header_limit_counted_across_reads(srv, n):
    """The same heads, trickled in small pieces."""
    data = head_of_length(n)
    with Client(srv) as c:
        for i in range(0, len(data), 97):
            c.send(data[i : i + 97])
            time.sleep(0.005)
        r = c.response()
    assert r.status == (200 if n < MAX_HEADER else 431)


def test_endless_header_stream_is_cut_off(srv):
    """No blank line ever comes: the 431 is sent once the limit is reached,
    without waiting for the end of the head."""
    with Client(srv, timeout=3) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(30):
            c.send(b"X-Header: value\r\n" * 10)
            if not c.silent(0.01):
                break
        r = c.response()
        assert_error(r, 431, "Request Header Fields Too Large", "exceeds max_header of %d" % MAX_HEADER,
                     version="HTTP/1.0")


def test_endless_request_line_is_cut_off(srv):
    with Client(srv, timeout=3) as c:
        c.send(b"GET /" + b"a" * (MAX_HEADER + 10))
        r = c.response()
        assert r.status == 431


# -- 3.12 body size --------------------------------------------------------------


def test_body_under_the_limit_is_served(srv):
    with Client(srv) as c:
        r = c.request(get("/echo", method="POST", body=b"b" * (MAX_BODY - 1)))
        assert r.status == 200 and len(r.body) == MAX_BODY - 1


@pytest.mark.parametrize("cl", [MAX_BODY, MAX_BODY + 1, 99999999999999999999, 10**40])
def test_content_length_at_or_over_the_limit_is_413_at_once(srv, cl):
    """Answered as soon as the head is read: the body is never sent."""
    send_error(srv, get("/echo", method="POST", headers=["Content-Length: %d" % cl]), 413,
               "Request Entity Too Large", "exceeds max_body of %d" % MAX_BODY)


def test_content_length_over_the_limit_http10(srv):
    send_error(srv, get("/echo", method="POST", version="1.0", headers=["Content-Length: %d" % MAX_BODY]),
               413, "Request Entity Too Large", "exceeds max_body of %d" % MAX_BODY, version="HTTP/1.0")


def chunked(body_chunks, path="/echo"):
    data = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode()
    for ch in body_chunks:
        data += b"%X\r\n%s\r\n" % (len(ch), ch)
    return data + b"0\r\n\r\n"


def test_chunked_body_under_the_limit(srv):
    with Client(srv) as c:
        r = c.request(chunked([b"x" * 100] * 8))
        assert r.status == 200 and r.body == b"x" * 800


def test_chunked_raw_bytes_count_against_the_limit(srv):
    """200 one-byte chunks: 200 bytes decoded but 1200 bytes on the wire
    (the framing counts, 3.12)."""
    send_error(srv, chunked([b"x"] * 200), 413, "Request Entity Too Large", "exceeds max_body of %d" % MAX_BODY)


def test_one_big_chunk_over_the_limit(srv):
    send_error(srv, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3E8\r\n", 413,
               "Request Entity Too Large", "exceeds max_body of %d" % MAX_BODY)


# -- 3.13 the error catalogue ---------------------------------------------------------

HOST = b"Host: x\r\n"

BAD_REQUESTS = [
    # (id, request, detail, status-line version)
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", "Invalid header", None),
    ("no-colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A b\r\n\r\n", "Invalid header", None),
    ("space-in-name", b"GET / HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", "Invalid header", None),
    ("empty-name", b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n", "Invalid header", None),
    ("ctl-01", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", "Invalid header", None),
    ("ctl-0b", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x0bb\r\n\r\n", "Invalid header", None),
    ("ctl-10", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x10\r\n\r\n", "Invalid header", None),
    ("ctl-7f", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", "Invalid header", None),
    ("nul", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "Invalid header", None),
    ("fold-first", b"GET / HTTP/1.1\r\n X-A: a\r\nHost: x\r\n\r\n", 'Malformed header line " X-A: a"', None),
    ("lf-request-line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", "Bare CR or LF found in HTTP message", "HTTP/1.0"),
    ("cr-request-line", b"GET / HTTP/1.1\rHost: x\r\n\r\n", "Bare CR or LF found in HTTP message", "HTTP/1.0"),
    ("two-spaces", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", "Start line is invalid", "HTTP/1.0"),
    ("space-in-uri", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "Start line is invalid", "HTTP/1.0"),
    ("bad-proto", b"GET / FOO/1.1\r\nHost: x\r\n\r\n", "Start line is invalid", "HTTP/1.0"),
    ("short-version", b"GET / HTTP/1\r\nHost: x\r\n\r\n", "Start line is invalid", "HTTP/1.0"),
    ("lowercase-http", b"GET / http/1.1\r\nHost: x\r\n\r\n", "Start line is invalid", "HTTP/1.0"),
    ("bad-method-char", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", "Start line is invalid", "HTTP/1.0"),
    ("lowercase-method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 'Malformed HTTP method "get"', "HTTP/1.0"),
    ("mixed-method", b"Get / HTTP/1.1\r\nHost: x\r\n\r\n", 'Malformed HTTP method "Get"', "HTTP/1.0"),
    ("raw-utf8-uri", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", "Bad URI", None),
    ("dup-host", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "Duplicate header: Host", None),
    ("dup-cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
     "Duplicate header: Content-Length", None),
    ("dup-ct", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: a/b\r\n\r\n",
     "Duplicate header: Content-Type", None),
    ("cl-plus", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx", "Content-Length is invalid", None),
    ("cl-minus", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nx", "Content-Length is invalid", None),
    ("cl-list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nx", "Content-Length is invalid", None),
    ("cl-hex", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\nx", "Content-Length is invalid", None),
    ("cl-space", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 1\r\n\r\nx", "Content-Length is invalid", None),
    ("cl-empty", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", "Content-Length is invalid", None),
    ("chunk-size-0x", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
     "Invalid chunk size", None),
    ("chunk-size-plus", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
     "Invalid chunk size", None),
    ("chunk-size-g", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5g\r\nhello\r\n0\r\n\r\n",
     "Invalid chunk size", None),
    ("chunk-ext-bad", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a@b\r\nhello\r\n0\r\n\r\n",
     "Invalid chunk extension", None),
    ("chunk-ext-bad-quote",
     b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a="b\x01"\r\nhello\r\n0\r\n\r\n',
     "Invalid chunk extension", None),
    ("chunk-unterminated",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
     "Chunk not properly terminated", None),
]


XFAIL_BAD = {}


@pytest.mark.parametrize(
    "data,detail,version",
    [
        pytest.param(*b[1:], id=b[0], marks=[pytest.mark.xfail(strict=True, reason=XFAIL_BAD[b[0]])]
                     if b[0] in XFAIL_BAD else [])
        for b in BAD_REQUESTS
    ],
)
def test_bad_request_body_is_byte_exact(srv, data, detail, version):
    send_error(srv, data, 400, "Bad Request", detail, version=version or "HTTP/1.1")


def test_bare_lf_in_header_line_detail(srv):
    send_error(srv, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n", 400, "Bad Request",
               'Bare CR or LF found in header line "X-A: a\nb"', version="HTTP/1.0")


def test_bare_cr_in_header_line_detail(srv):
    with Client(srv) as c:
        r = c.request(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n")
        assert r.status == 400
        assert r.body == error_body("Bad Request", 'Bare CR or LF found in header line "X-A: a\rb"')
        assert c.closed()


@pytest.mark.parametrize(
    "te,detail",
    [
        ("gzip", "Transfer-Encoding requested is not supported."),
        ("identity", "Transfer-Encoding requested is not supported."),
        ("gzip, chunked", "Transfer-Encoding requested is not supported."),
        ("chunked, gzip", "Transfer-Encoding requested is not supported."),
        ("\x85chunked", "Transfer-Encoding requested is not supported."),
        ("chunked, chunked", "Transfer-Encoding is invalid. Multiple chunked encodings requested."),
    ],
)
def test_501_for_transfer_codings(srv, te, detail):
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te.encode("latin-1") + b"\r\n\r\n0\r\n\r\n"
    send_error(srv, data, 501, "Not Implemented", detail)


def test_501_for_chunked_in_two_headers(srv):
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    send_error(srv, data, 501, "Not Implemented",
               "Transfer-Encoding is invalid. Multiple chunked encodings requested.")


def test_500_body(srv):
    r = send_error(srv, get("/raise-gen?n=0"), 500, "Internal Server Error",
                   "The server encountered an unexpected internal server error")
    assert len(r.body) == 112  # waitress's 110, with the longer ident


def test_500_http10(srv):
    send_error(srv, get("/raise-gen?n=0", version="1.0", headers=["Connection: keep-alive"]), 500,
               "Internal Server Error", "The server encountered an unexpected internal server error",
               version="HTTP/1.0")


def test_500_with_expose_tracebacks(server_factory):
    s = server_factory("apps_http:router", expose_tracebacks=True)
    with Client(s) as c:
        r = c.request(get("/raise-gen?n=0"))
        assert r.status_line == b"HTTP/1.1 500 Internal Server Error"
        assert r.body.startswith(b"Internal Server Error\r\n\r\nTraceback (most recent call last):\n")
        assert b"RuntimeError: boom in raise_gen" in r.body
        assert r.body.endswith(b"\r\n\r\n(generated by waitress_c)")
        assert r.header("Content-Length") == str(len(r.body))
        assert c.closed()


def test_error_tag_uses_the_ident(server_factory):
    s = server_factory("apps_http:router", ident="custom")
    send_error(s, b"GET / HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", 400, "Bad Request", "Invalid header",
               ident="custom")


def test_error_tag_without_ident(server_factory):
    s = server_factory("apps_http:router", ident="")
    with Client(s) as c:
        r = c.request(b"GET / HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n")
    assert r.body == error_body("Bad Request", "Invalid header", ident="server")
    assert r.lower_names() == ["connection", "content-length", "content-type", "date"]


def test_malformed_trusted_proxy_header(server_factory):
    """Difference 16: the usual error format, with a Content-Length and the
    ident (waitress sends it chunked and signed "(generated by server)")."""
    s = server_factory("apps_http:router", trusted_proxy="*", trusted_proxy_headers="x-forwarded-proto")
    with Client(s) as c:
        r = c.request(get("/env", headers=["X-Forwarded-Proto: ftp"]))
        assert_error(r, 400, "Bad Request", 'Header "X-Forwarded-Proto" malformed.')
        assert r.header("Transfer-Encoding") is None
        assert c.closed()
