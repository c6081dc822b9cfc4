"""Request parsing: header strictness (as in waitress), chunked
bodies (3.15), the request target (3.16), and the request-smuggling cases
behind deliberate differences 5 to 10."""

import time

import pytest
from http_helpers import Client, get, key, marks, server_fixture

srv = server_fixture()


def env_of(srv, data):
    with Client(srv) as c:
        r = c.request(data)
    assert r.status == 200, r
    return r.json()


def refused(srv, data, status=400):
    """`data` is answered with `status` and a close."""
    with Client(srv, timeout=3) as c:
        r = c.request(data)
        assert r.status == status, r
        assert r.header("Connection") == "close"
        assert c.closed()
    return r


def req(*header_lines, target="/env", method="GET", version="1.1", body=b""):
    head = "%s %s HTTP/%s\r\n" % (method, target, version)
    return (head.encode("latin-1") + b"".join(h + b"\r\n" for h in header_lines) + b"\r\n" + body)


# -- 3.14 line endings ------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET /env HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\n\r\n",
        b"GET /env HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n",
        b"GET /env HTTP/1.1\r\nHost: x\r\nX-A: a\rX-B: b\r\n\r\n",
        b"GET /env HTTP/1.1\nHost: x\r\n\r\n",
        b"GET /env\r HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /env HTTP/1.1\r\nHost: x\r\n\n",
    ],
    ids=["lf-in-header", "lf-after-host", "cr-in-header", "lf-request-line", "cr-request-line", "lf-blank-line"],
)
def test_bare_cr_or_lf_is_400(srv, data):
    refused(srv, data)


def test_lf_only_request_is_refused_at_once(srv):
    """waitress waits for a CRLF CRLF that never comes (then 431 or the
    channel timeout); a bare LF is refused as soon as it is seen."""
    r = refused(srv, b"GET /env HTTP/1.1\nHost: x\n\n")
    assert r.body.startswith(b"Bad Request\r\n\r\nBare CR or LF found")


# -- 3.14 field syntax ------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [b"X-A : b", b"X-A\t: b", b"X-A b", b"X A: b", b": b", b"X-A: a\x01", b"X-A: \x0b", b"X-A: a\x10b",
     b"X-A: a\x00", b"X-A: a\x7f", b"X\x01A: b", b"X(A): b", b'X"A": b', b"X\xe9: b"],
)
def test_invalid_field_lines_are_400(srv, line):
    refused(srv, req(b"Host: x", line))


@pytest.mark.parametrize("value", [b"a " * 100000 + b"\x10", b"a\t" * 100000 + b"\x7f", b" " * 200000 + b"\x01"])
def test_long_invalid_value_is_refused_quickly(srv, value):
    """No catastrophic backtracking (CVE-2020-5236): a long value with a
    bad byte at its end is refused at once."""
    t0 = time.monotonic()
    refused(srv, req(b"Host: x", b"X-A: " + value))
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize(
    "lines",
    [
        [b"X-A: a", b"  b", b"\tc"],
        [b"X-A: a", b" b"],
        [b"X-A:", b" folded"],
    ],
)
def test_obs_fold_refused_or_replaced_by_one_space(srv, lines):
    """Difference 10 (RFC 9112 5.2): 400, or each fold becomes one SP;
    waitress passes the raw whitespace through ("a  b\\tc")."""
    with Client(srv, timeout=3) as c:
        r = c.request(req(b"Host: x", *lines))
        if r.status == 400:
            assert c.closed()
            return
    assert r.status == 200
    value = r.json()["HTTP_X_A"]
    assert "\t" not in value and "  " not in value and "\r" not in value and "\n" not in value


@pytest.mark.parametrize(
    "lines",
    [
        [b"Transfer-Encoding:", b" chunked"],
        [b"Transfer-Encoding: gzip,", b" chunked"],
        [b"Content-Length: 1", b" 0"],
    ],
)
def test_folded_framing_headers_never_change_the_framing(srv, lines):
    k = key()
    smuggled = get("/mark?k=" + k)
    with Client(srv, timeout=3) as c:
        c.send(req(b"Host: x", *lines, method="POST", target="/echo") + b"0\r\n\r\n" + smuggled)
        r = c.response()
        assert r.status in (400, 501)
        assert c.closed()
    assert marks(srv, k) == []


def test_value_strips_only_sp_and_htab(srv):
    env = env_of(srv, req(b"Host: x", b"X-A: \t  a  b \t ", b"X-B: \xa0b\x85", b"X-C:c"))
    assert env["HTTP_X_A"] == "a  b"
    assert env["HTTP_X_B"] == "\xa0b\x85"
    assert env["HTTP_X_C"] == "c"


def test_values_are_latin1(srv):
    env = env_of(srv, req(b"Host: x", b"X-A: caf\xe9 \xff"))
    assert env["HTTP_X_A"] == "caf\xe9 \xff"


def test_underscore_names_are_dropped(srv):
    env = env_of(srv, req(b"Host: x", b"X_Foo: spoofed", b"X-Foo: real", b"Content_Length: 5", b"X_Only: 1"))
    assert env["HTTP_X_FOO"] == "real"
    assert "HTTP_X_ONLY" not in env
    assert "CONTENT_LENGTH" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_repeated_headers_are_joined(srv):
    env = env_of(srv, req(b"Host: x", b"Cookie: a=1", b"X-A: 1", b"cookie: b=2", b"X-A: 2", b"X-A: 3"))
    assert env["HTTP_COOKIE"] == "a=1, b=2"
    assert env["HTTP_X_A"] == "1, 2, 3"


def test_empty_value(srv):
    env = env_of(srv, req(b"Host: x", b"X-Empty:", b"X-Blank:   "))
    assert env["HTTP_X_EMPTY"] == ""
    assert env["HTTP_X_BLANK"] == ""


@pytest.mark.parametrize(
    "lines",
    [
        [b"Host: x", b"Host: x"],
        [b"Host: x", b"host: y"],
        [b"Host: x", b"Content-Length: 0", b"Content-Length: 0"],
        [b"Host: x", b"Content-Type: a/b", b"content-type: a/b"],
    ],
    ids=["host", "host-case", "content-length", "content-type"],
)
def test_duplicate_host_content_length_content_type_are_400(srv, lines):
    """Difference 7 for Host; the snapshot's "Duplicate header" for all three."""
    r = refused(srv, req(*lines))
    assert b"Duplicate header: " in r.body


@pytest.mark.parametrize("version", ["1.1"])
def test_http11_without_host_is_400(srv, version):
    """Difference 7 (RFC 9112 3.2); waitress serves it."""
    k = key()
    refused(srv, req(target="/mark?k=" + k, version=version))
    assert marks(srv, k) == []


def test_http10_without_host_is_fine(srv):
    with Client(srv) as c:
        r = c.request(req(version="1.0"))
    assert r.status == 200 and "HTTP_HOST" not in r.json()


def test_http11_absolute_form_without_host_is_400(srv):
    """RFC 9112 3.2: a server MUST answer 400 to any HTTP/1.1 request
    without a Host field, whatever the form of its target (difference 7)."""
    refused(srv, req(target="http://h:99/env"))


@pytest.mark.parametrize(
    "line,path",
    [(b"GET /env HTTP/1.1  ", "/env"), (b"GET /env HTTP/1.1\t", "/env"), (b"GET /env HTTP/1.1 \t ", "/env")],
)
def test_trailing_whitespace_on_request_line(srv, line, path):
    env = env_of(srv, line + b"\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == path and env["SERVER_PROTOCOL"] == "HTTP/1.1"


@pytest.mark.parametrize("method", ["PURGE", "M.SEARCH", "PROPFIND", "X-CUSTOM_1!", "DELETE", "OPTIONS"])
def test_uppercase_token_methods_are_accepted(srv, method):
    env = env_of(srv, req(b"Host: x", method=method))
    assert env["REQUEST_METHOD"] == method


@pytest.mark.parametrize("target", [b"/a\x01b", b"/a\tb", b"/a\x7fb"])
def test_control_characters_in_the_target_are_refused(srv, target):
    """waitress accepts CTLs in the target (and urlsplit drops a TAB).  The
    request-target grammar (RFC 3986 / RFC 9112 3.2) has no CTLs, so the
    request line is malformed: difference 8."""
    refused(srv, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")


@pytest.mark.parametrize("value", [b"5", b"005", b" 5 ", b"\t5"])
def test_content_length_digits_with_ows(srv, value):
    env = env_of(srv, req(b"Host: x", b"Content-Length:" + value, method="POST", body=b"hello"))
    assert env["_input"] == "hello" and env["CONTENT_LENGTH"] == value.strip(b" \t").decode()


# -- 3.14 Transfer-Encoding ----------------------------------------------------------


@pytest.mark.parametrize("te", [b"chunked", b"Chunked", b"CHUNKED", b"  chunked  ", b"\tchunked", b", , chunked"])
def test_chunked_is_recognised(srv, te):
    env = env_of(srv, req(b"Host: x", b"Transfer-Encoding: " + te, method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"))
    assert env["_input"] == "abc"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_TRANSFER_ENCODING" not in env


@pytest.mark.parametrize("te", [b"chunked\t", b"chunked, ", b",chunked", b"chunked,,"])
def test_chunked_with_tabs_and_empty_list_elements(srv, te):
    """OWS is SP or HTAB, and RFC 9110 5.6.1 says a recipient MUST ignore
    empty list elements; waitress serves all of these as chunked."""
    env = env_of(srv, req(b"Host: x", b"Transfer-Encoding: " + te, method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"))
    assert env["_input"] == "abc"


@pytest.mark.parametrize("order", ["cl-first", "te-first"])
def test_content_length_and_transfer_encoding_close(srv, order):
    """Difference 5 (RFC 9112 6.1): 400, or read as chunked, and in both
    cases the connection is closed after the response (waitress keeps it
    open).  What follows is never served."""
    k = key()
    cl, te = b"Content-Length: 5", b"Transfer-Encoding: chunked"
    lines = [b"Host: x"] + ([cl, te] if order == "cl-first" else [te, cl])
    data = req(*lines, method="POST", target="/echo", body=b"3\r\nabc\r\n0\r\n\r\n") + get("/mark?k=" + k)
    with Client(srv, timeout=3) as c:
        r = c.request(data)
        if r.status == 200:
            assert r.body == b"abc"
        else:
            assert r.status == 400
        assert r.header("Connection") == "close"
        assert c.closed()
    assert marks(srv, k) == []


def test_transfer_encoding_on_http10_is_refused(srv):
    """Difference 6: waitress ignores it and reads the chunked body as the
    next request."""
    k = key()
    smuggled = get("/mark?k=" + k, version="1.0")
    body = b"%X\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    data = req(b"Transfer-Encoding: chunked", b"Connection: keep-alive", method="POST", target="/echo",
               version="1.0", body=body)
    with Client(srv, timeout=3) as c:
        r = c.request(data)
        assert r.status == 400
        assert r.header("Connection") == "close"
        assert c.closed()
    assert marks(srv, k) == []


def test_transfer_encoding_identity_on_http10_is_refused(srv):
    refused(srv, req(b"Transfer-Encoding: identity", b"Content-Length: 0", version="1.0"))


# -- 3.15 chunked bodies ---------------------------------------------------------------


def chunked_env(srv, body, *extra):
    return env_of(srv, req(b"Host: x", b"Transfer-Encoding: chunked", *extra, method="POST", body=body))


@pytest.mark.parametrize(
    "body,decoded",
    [
        (b"a\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
        (b"005\r\nhello\r\n000\r\n\r\n", "hello"),
        (b"5;name\r\nhello\r\n0\r\n\r\n", "hello"),
        (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello"),
        (b'5;n="quoted \\" value; here"\r\nhello\r\n0\r\n\r\n', "hello"),
        (b"5;a=1;b=2;c\r\nhello\r\n0\r\n\r\n", "hello"),
        (b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", "hello"),
        (b"0\r\n\r\n", ""),
    ],
)
def test_valid_chunked_bodies(srv, body, decoded):
    env = chunked_env(srv, body)
    assert env["_input"] == decoded
    assert env["CONTENT_LENGTH"] == str(len(decoded))
    assert "HTTP_TRANSFER_ENCODING" not in env


@pytest.mark.parametrize("line", [b"5 ", b"5\t"])
def test_whitespace_after_chunk_size_is_400(srv, line):
    """3.15: the size must be hex digits only (waitress: `^[0-9a-fA-F]+$`
    on what precedes ";"); RFC 9112 7.1 has no whitespace there either."""
    refused(srv, req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo",
                     body=line + b"\r\nhello\r\n0\r\n\r\n"))


@pytest.mark.parametrize("line", [b" 5", b"-5", b"0x5", b"+5", b"5,", b"", b"12345678901234567"])
def test_bad_chunk_sizes(srv, line):
    with Client(srv, timeout=3) as c:
        r = c.request(req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo",
                          body=line + b"\r\nhello\r\n0\r\n\r\n"))
        assert r.status in (400, 413)
        assert c.closed()


@pytest.mark.parametrize("line", [b"5 ;a=b", b"5\t;a=b", b"5; a=b", b"5;a = b", b'5;a= "q"', b"5 ; a ; b = c"])
def test_chunk_extension_bws_is_accepted(srv, line):
    """RFC 9112 7.1.1 allows BWS around ";" and "=" in chunk extensions
    (waitress follows RFC 7230's grammar, which has none, and answers 400)."""
    env = chunked_env(srv, line + b"\r\nhello\r\n0\r\n\r\n")
    assert env["_input"] == "hello"


def test_huge_chunk_size_is_413(srv):
    r = refused(srv, req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo",
                         body=b"FFFFFFFFFFFFFFF\r\nhello"), status=413)
    assert b"exceeds max_body of" in r.body


def test_chunk_extension_is_bounded(srv):
    """An endless extension is refused, not buffered without limit."""
    with Client(srv, timeout=3) as c:
        c.send(req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo"))
        c.send(b"5;a=" + b"x" * 20000)
        r = c.response()
        assert r.status == 400
        assert b"Invalid chunk extension" in r.body


def test_lf_only_chunk_framing_is_refused(srv):
    """waitress waits (it never accepts bare-LF chunk lines); waitress_c
    refuses at once."""
    refused(srv, req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo",
                     body=b"5\nhello\n0\n\n"))


def test_empty_line_before_chunk_size_is_400(srv):
    """Deliberate difference (waitress skips empty lines where a chunk-size
    line is expected, 3.15): RFC 9112 7.1 has none there, and a framing
    leniency is what request smuggling feeds on."""
    refused(srv, req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo",
                     body=b"\r\n5\r\nhello\r\n\r\n0\r\n\r\n"))


def test_trailers_are_read_and_discarded(srv):
    body = b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n"
    with Client(srv) as c:
        c.send(req(b"Host: x", b"Transfer-Encoding: chunked", b"Trailer: X-Trailer", method="POST", body=body)
               + get("/respond?b=next"))
        env = c.response().json()
        assert c.response().body == b"next"
    assert env["_input"] == "hello"
    assert "HTTP_X_TRAILER" not in env and "HTTP_X_OTHER" not in env


def test_chunked_body_split_across_many_reads(srv):
    body = b"5\r\nhello\r\n6;e=1\r\n world\r\n0\r\nT: 1\r\n\r\n"
    with Client(srv) as c:
        c.send(req(b"Host: x", b"Transfer-Encoding: chunked", method="POST"))
        for i in range(len(body)):
            c.send(body[i : i + 1])
        env = c.response().json()
    assert env["_input"] == "hello world"
    assert env["CONTENT_LENGTH"] == "11"


# -- 3.16 the request target -------------------------------------------------------------


def target_env(srv, target, *extra, method="GET"):
    return env_of(srv, req(b"Host: hosthdr", *extra, target=target, method=method))


def test_absolute_form_authority_replaces_host(srv):
    """Difference 9 (RFC 9112 3.2.2); waitress keeps the Host header."""
    env = target_env(srv, "http://h:99/zz/env?q=1")
    assert env["PATH_INFO"] == "/zz/env"
    assert env["QUERY_STRING"] == "q=1"
    assert env["HTTP_HOST"] == "h:99"
    assert env["REQUEST_URI"] == "http://h:99/zz/env?q=1"
    assert env["wsgi.url_scheme"] == "http"


def test_absolute_form_scheme_is_ignored(srv):
    env = target_env(srv, "https://example.com/env")
    assert env["PATH_INFO"] == "/env"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "example.com"


@pytest.mark.parametrize(
    "target,path,query",
    [
        ("//a//b/env?x=1", "/a//b/env", "x=1"),
        ("///x/env", "/x/env", ""),
        ("//host/env", "/host/env", ""),
        ("/p/env?q=1#frag", "/p/env", "q=1"),
        ("/p/env#frag?x", "/p/env", ""),
        ("/a/env?b?c", "/a/env", "b?c"),
        ("/env?a=%20b+c&d&&e=", "/env", "a=%20b+c&d&&e="),
    ],
)
def test_path_and_query_split(srv, target, path, query):
    env = target_env(srv, target)
    assert env["PATH_INFO"] == path
    assert env["QUERY_STRING"] == query
    assert env["REQUEST_URI"] == target


@pytest.mark.parametrize(
    "target,path",
    [
        ("/caf%C3%A9/env", "/caf\xc3\xa9/env"),
        ("/caf%c3%a9/env", "/caf\xc3\xa9/env"),
        ("/a%2Fb/env", "/a/b/env"),
        ("/a%00b/env", "/a\x00b/env"),
        ("/a%zzb%4/env", "/a%zzb%4/env"),
        ("/%25/env", "/%/env"),
        ("/sp%20ace/env", "/sp ace/env"),
        ("/%2F%2Fa/env", "/a/env"),
    ],
)
def test_path_info_is_percent_decoded_as_latin1(srv, target, path):
    env = target_env(srv, target)
    assert env["PATH_INFO"] == path
    assert env["REQUEST_URI"] == target


def test_options_star(srv):
    env = target_env(srv, "*", method="OPTIONS")
    assert env["PATH_INFO"] == "*"
    assert env["REQUEST_URI"] == "*"


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_asterisk_form_only_for_options(srv, method):
    """RFC 9112 3.2.4: the asterisk-form is only for OPTIONS (waitress serves
    `GET *` with PATH_INFO `*`)."""
    refused(srv, req(b"Host: x", target="*", method=method))


def test_connect_authority_form(srv):
    """Deliberate difference: `CONNECT host:443` gives PATH_INFO `host:443`,
    the authority-form target as sent (RFC 9112 3.2.3); waitress gives `443`,
    an accident of urlsplit reading "host:" as a scheme."""
    env = target_env(srv, "host:443", method="CONNECT")
    assert env["PATH_INFO"] == "host:443"
