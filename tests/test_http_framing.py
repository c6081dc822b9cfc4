"""Choice of response framing (as in waitress), HEAD
(deliberate difference 1, overriding 3.4) and a wrong Content-Length from
the app (3.5)."""

from urllib.parse import quote

import pytest
from http_helpers import Client, get, log_count, server_fixture, wait_log

srv = server_fixture()


def items(*bs):
    return "&".join("b=" + quote(b) for b in bs)


# -- 3.3 framing ------------------------------------------------------------


def test_app_content_length_is_used(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?mode=gen&cl=5&" + items("he", "llo")))
        assert r.header("Content-Length") == "5"
        assert r.header("Transfer-Encoding") is None
        assert r.body == b"hello"
        assert r.raw.endswith(b"\r\n\r\nhello")


def test_app_content_length_in_lower_case_is_the_only_one(srv):
    """The app's own header frames the body; none is added beside it (and
    its name is kept as written: difference 12)."""
    with Client(srv) as c:
        r = c.request(get("/respond?mode=gen&h=content-length:5&" + items("he", "llo")))
        assert [n for n in r.names() if n.lower() == "content-length"] == ["content-length"]
        assert r.body == b"hello"
        assert c.request(get("/respond?b=next")).body == b"next"


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_one_item_list_gets_a_content_length(srv, version):
    with Client(srv) as c:
        r = c.request(get("/respond?b=hello", version=version, headers=["Connection: keep-alive"]))
        assert r.header("Content-Length") == "5"
        assert r.header("Transfer-Encoding") is None
        assert r.body == b"hello"
        assert c.request(get("/respond?b=next", version=version)).body == b"next"


def test_no_body_at_all_is_a_complete_message(srv):
    """Nothing produced: the head goes out at the end of the request with
    an empty, framed body (waitress_c says Content-Length: 0; waitress sends
    an empty chunked body and closes), and the connection stays open."""
    with Client(srv) as c:
        for mode in ("empty", "gen", "write"):
            r = c.request(get("/respond?mode=" + mode))
            assert r.status == 200
            assert r.body == b""
            assert r.header("Content-Length") == "0" or r.header("Transfer-Encoding") == "chunked"
        assert c.request(get("/respond?b=next")).body == b"next"


def test_generator_is_chunked_with_uppercase_hex_sizes(srv):
    a, b, c_ = "x", "y" * 255, "z" * 4096
    with Client(srv) as c:
        r = c.request(get("/respond?mode=gen&" + items(a, b, c_)))
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.header("Content-Length") is None
    body = r.raw[len(r.head):]
    assert body == (
        b"1\r\nx\r\n" + b"FF\r\n" + b"y" * 255 + b"\r\n" + b"1000\r\n" + b"z" * 4096 + b"\r\n" + b"0\r\n\r\n"
    )


def test_empty_items_never_make_a_chunk(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?mode=gen&b=&b=a&b=&b=&b=b&b="))
        assert r.raw[len(r.head):] == b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n"
        r = c.request(get("/respond?mode=write&b=&b=a&b=&b=b"))
        assert r.raw[len(r.head):] == b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n"


def test_write_calls_are_chunked_one_chunk_each(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?mode=write&" + items("ab", "cde")))
    assert r.raw[len(r.head):] == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"


@pytest.mark.parametrize("mode", ["list", "tuple"])
def test_list_of_two_items_gets_a_content_length(srv, mode):
    """Deliberate difference (3.3 frames a list of 2+ items like a stream):
    every byte of a list or tuple is known when the app returns it, so it
    gets a computed Content-Length and goes out in one write, with no
    chunk framing and the connection kept."""
    with Client(srv) as c:
        r = c.request(get("/respond?mode=%s&b=a&b=b" % mode))
        assert r.header("Content-Length") == "2"
        assert r.header("Transfer-Encoding") is None
        assert r.raw[len(r.head):] == b"ab"
        r = c.request(get("/respond?mode=%s&b=c" % mode))
        assert r.raw[len(r.head):] == b"c"


def test_list_of_two_items_http10_keeps_alive(srv):
    """The same on HTTP/1.0: a Content-Length, so keep-alive can be kept."""
    with Client(srv) as c:
        r = c.request(get("/respond?b=a&b=b", version="1.0", headers=["Connection: keep-alive"]))
        assert r.header("Content-Length") == "2"
        assert r.header("Connection") == "Keep-Alive"
        assert r.raw[len(r.head):] == b"ab"


def test_http10_stream_is_close_delimited(srv):
    with Client(srv) as c:
        c.send(get("/respond?mode=gen&" + items("one ", "two"), version="1.0"))
        data = c.rest()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"\r\nConnection: close" in head
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert body == b"one two"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses_drop_content_length_and_body(srv, status):
    before = log_count(srv, "may not contain a message-body: (%s)" % status)
    with Client(srv) as c:
        r = c.request(get("/respond?s=%s&cl=5&b=hello" % quote(status)))
        assert r.status == int(status[:3])
        assert r.header("Content-Length") is None
        assert r.header("Transfer-Encoding") is None
        # Nothing of the body on the wire: the next response follows at once.
        r2 = c.request(get("/respond?b=next"))
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == b"next"
    assert wait_log(srv, "WARNING:waitress_c:application-written content was ignored due to HTTP response that "
                    "may not contain a message-body: (%s)" % status, before) > before


def test_no_body_status_with_a_stream(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?s=204%20No%20Content&mode=gen&b=x&b=y"))
        assert r.status == 204
        assert r.header("Transfer-Encoding") is None and r.header("Content-Length") is None
        assert c.request(get("/respond?b=next")).body == b"next"


def test_headers_wait_for_the_first_non_empty_item(srv):
    """An app that yields only b"" and then fails still gets a 500: nothing
    was sent before the first non-empty item."""
    with Client(srv) as c:
        r = c.request(get("/raise-gen?n=0&empty=1"))
        assert r.status == 500
        assert r.header("Connection") == "close"


# -- HEAD (difference 1) --------------------------------------------------------------


def test_head_keeps_content_length_sends_no_body(srv):
    with Client(srv) as c:
        c.send(get("/respond?cl=5&b=hello", method="HEAD") + get("/respond?b=next"))
        r = c.response(head=True)
        assert r.header("Content-Length") == "5"
        r2 = c.response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == b"next"


def test_head_one_item_list(srv):
    with Client(srv) as c:
        c.send(get("/respond?b=hello", method="HEAD") + get("/respond?b=next"))
        r = c.response(head=True)
        assert r.header("Content-Length") in ("5", None)
        assert c.response().body == b"next"


@pytest.mark.parametrize("mode", ["gen", "write"])
def test_head_stream_is_not_chunked(srv, mode):
    with Client(srv) as c:
        c.send(get("/respond?mode=%s&b=a&b=b" % mode, method="HEAD") + get("/respond?b=next"))
        r = c.response(head=True)
        assert r.header("Transfer-Encoding") is None
        r2 = c.response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == b"next"


def test_head_http10_stream_sends_nothing_after_the_head(srv):
    with Client(srv) as c:
        c.send(get("/respond?mode=gen&b=a&b=b", method="HEAD", version="1.0"))
        data = c.rest()
    assert data.endswith(b"\r\n\r\n")
    assert data.count(b"\r\n\r\n") == 1


def test_head_short_body_is_not_an_error(srv):
    """HEAD with a Content-Length and no body: no warning, no close."""
    before = log_count(srv, "too few bytes")
    with Client(srv) as c:
        c.send(get("/respond?cl=1234&mode=empty", method="HEAD") + get("/respond?b=next"))
        r = c.response(head=True)
        assert r.header("Content-Length") == "1234"
        assert c.response().body == b"next"
    assert log_count(srv, "too few bytes") == before


def test_head_http10_keep_alive(srv):
    with Client(srv) as c:
        c.send(get("/respond?cl=5&b=hello", method="HEAD", version="1.0", headers=["Connection: keep-alive"]))
        r = c.response(head=True)
        assert r.header("Connection") == "Keep-Alive"
        assert c.request(get("/respond?b=next", version="1.0")).body == b"next"


# -- 3.5 wrong Content-Length from the app -------------------------------------------


@pytest.mark.parametrize("mode,cl", [("list", 3), ("gen", 4), ("write", 2)])
def test_too_long_body_is_truncated_connection_kept(srv, mode, cl):
    text = ("WARNING:waitress_c:application-written content exceeded the number of bytes specified by "
            "Content-Length header (%d)" % cl)
    before = log_count(srv, text)
    with Client(srv) as c:
        r = c.request(get("/respond?mode=%s&cl=%d&b=hel&b=lo" % (mode, cl)))
        assert r.header("Content-Length") == str(cl)
        assert r.body == b"hello"[:cl]
        assert r.header("Connection") is None
        r2 = c.request(get("/respond?b=next"))
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == b"next"
    assert wait_log(srv, text, before) == before + 1  # one warning per response


@pytest.mark.parametrize("mode,cl", [("gen", 11), ("write", 12), ("list", 13)])
def test_too_short_body_closes(srv, mode, cl):
    text = ("WARNING:waitress_c:application returned too few bytes (5) for specified Content-Length (%d) "
            "via app_iter" % cl)
    before = log_count(srv, text)
    with Client(srv) as c:
        c.send(get("/respond?mode=%s&cl=%d&b=hel&b=lo" % (mode, cl)))
        data = c.rest()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % cl in head
    assert body == b"hello"
    assert wait_log(srv, text, before) > before


def test_non_numeric_content_length_from_app_is_500(srv):
    with Client(srv) as c:
        r = c.request(get("/sr-bad?case=cl-garbage"))
        assert r.status == 500
        assert c.closed()
