"""Response headers (as in waitress), the start_response,
write() and app_iter rules (3.9 to 3.11), and deliberate differences 12
and 13."""

import email.utils
import re
import time
from urllib.parse import quote

import pytest
from http_helpers import Client, get, key, log_count, marks, server_fixture, wait_log, wait_marks

srv = server_fixture()

DATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d\d:\d\d:\d\d GMT$"
)


def hdrs(*pairs):
    return "&".join("h=" + quote("%s:%s" % p, encoding="latin-1") for p in pairs)


# -- 3.8 headers the server adds or keeps ---------------------------------------


def test_header_names_and_order_as_the_app_wrote_them(srv):
    """Difference 12: waitress sorts the headers and re-capitalises them
    (ETag -> Etag)."""
    app = [("ETag", '"x"'), ("x-lower-case", "1"), ("Zed", "z"), ("Alpha", "a"),
           ("X-Dup", "1"), ("WWW-Authenticate", "Basic"), ("X-Dup", "2")]
    with Client(srv) as c:
        r = c.request(get("/respond?b=x&" + hdrs(*app)))
    assert r.headers[: len(app)] == app
    head = r.head.decode("latin-1")
    assert "\r\nETag: \"x\"\r\nx-lower-case: 1\r\nZed: z\r\nAlpha: a\r\n" in head


def test_server_header_is_the_default_ident(srv):
    """Difference 13: the default ident is waitress_c."""
    with Client(srv) as c:
        r = c.request(get("/respond?b=x"))
    assert r.header("Server") == "waitress_c"
    assert r.header("Via") is None


def test_app_server_header_is_kept_and_via_added(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?b=x&" + hdrs(("Server", "MyApp/1.0"))))
    assert r.header("Server") == "MyApp/1.0"
    assert r.header("Via") == "waitress_c"


def test_custom_ident(server_factory):
    s = server_factory("apps_http:router", ident="my-ident/2")
    with Client(s) as c:
        r = c.request(get("/respond?b=x"))
        assert r.header("Server") == "my-ident/2"
        r = c.request(get("/respond?b=x&" + hdrs(("Server", "App"))))
        assert r.header("Server") == "App" and r.header("Via") == "my-ident/2"
        env = c.request(get("/env")).json()
        assert env["SERVER_SOFTWARE"] == "my-ident/2"


@pytest.fixture(scope="module")
def no_ident():
    from conftest import ServerProcess

    s = ServerProcess("apps_http:router", ident="")
    yield s
    s.close()


def test_empty_ident_sends_no_server_header(no_ident):
    with Client(no_ident) as c:
        r = c.request(get("/respond?b=x"))
        assert r.header("Server") is None
        assert r.header("Date") is not None
        env = c.request(get("/env")).json()
    # waitress puts None in the environ, which PEP 3333 forbids (CGI
    # variables are str); waitress_c leaves the key out.
    assert env.get("SERVER_SOFTWARE") is None


def test_empty_ident_app_server_header_still_gets_via(no_ident):
    """3.8: `Via: <ident or "waitress">` -- the fallback name is the
    package's name (difference 13)."""
    with Client(no_ident) as c:
        r = c.request(get("/respond?b=x&" + hdrs(("Server", "App"))))
    assert r.header("Server") == "App"
    assert r.header("Via") == "waitress_c"


def test_date_header_format_and_value(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?b=x"))
    date = r.header("Date")
    assert DATE_RE.match(date), date
    sent = email.utils.parsedate_to_datetime(date).timestamp()
    assert abs(sent - time.time()) < 3


def test_date_header_is_refreshed(srv):
    with Client(srv) as c:
        d1 = c.request(get("/respond?b=x")).header("Date")
        deadline = time.monotonic() + 3
        d2 = d1
        while d2 == d1 and time.monotonic() < deadline:
            time.sleep(0.2)
            d2 = c.request(get("/respond?b=x")).header("Date")
    assert d2 != d1
    assert 0 < email.utils.parsedate_to_datetime(d2).timestamp() - email.utils.parsedate_to_datetime(d1).timestamp() <= 3


def test_app_date_header_is_kept(srv):
    app_date = "Sun, 06 Nov 1994 08:49:37 GMT"
    with Client(srv) as c:
        r = c.request(get("/respond?b=x&" + hdrs(("Date", app_date))))
    assert [v for k, v in r.headers if k.lower() == "date"] == [app_date]


def test_header_values_are_latin1_on_the_wire(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?b=x&" + hdrs(("X-Latin", "caf\xe9 \xff"))))
    assert b"\r\nX-Latin: caf\xe9 \xff\r\n" in r.head


def test_non_latin1_header_value_is_500(srv):
    with Client(srv) as c:
        r = c.request(get("/sr-bad?case=non-latin1"))
        assert r.status == 500
        assert b"X-Euro" not in r.raw


def test_tab_in_a_value_goes_out_as_written(srv):
    """A TAB in a value goes out as written (3.9); other control characters
    are refused (a deliberate difference, see tests/test_hardening.py), and
    so are names that are not tokens (difference 20, below)."""
    with Client(srv) as c:
        r = c.request(get("/respond?b=x&" + hdrs(("X-Ctl", "a\tbc"), ("X-Odd!#$%&'*+.^_`|~09", "v"))))
    assert r.status == 200
    assert b"\r\nX-Ctl: a\tbc\r\n" in r.head
    assert b"\r\nX-Odd!#$%&'*+.^_`|~09: v\r\n" in r.head


# -- 3.9 start_response ------------------------------------------------------------


def assert_500(srv, path, log_text):
    before = log_count(srv, log_text)
    before_exc = log_count(srv, "ERROR:waitress_c:Exception while serving")
    with Client(srv) as c:
        r = c.request(get(path))
        assert r.status_line == b"HTTP/1.1 500 Internal Server Error"
        assert r.header("Connection") == "close"
        assert b"X-Injected" not in r.raw
        assert c.closed()
    assert wait_log(srv, log_text, before) > before
    assert log_count(srv, "ERROR:waitress_c:Exception while serving") > before_exc
    return r


def test_second_call_without_exc_info(srv):
    assert_500(srv, "/sr-twice", "AssertionError: start_response called a second time without providing exc_info.")


@pytest.mark.parametrize("query", ["how=kw", "how=all", "argc=2", "argc=3"])
def test_start_response_arguments(srv, query):
    """Positional or keyword, with or without exc_info."""
    with Client(srv) as c:
        r = c.request(get("/sr-kw?" + query))
        assert r.status == 200 and r.body == b"kw"
        assert c.request(get("/sr-kw?" + query)).body == b"kw"


@pytest.mark.parametrize("argc", [0, 1, 4])
def test_start_response_argument_count(srv, argc):
    assert_500(srv, "/sr-kw?argc=%d" % argc, "TypeError")


def test_exc_info_before_headers_replaces_them(srv):
    with Client(srv) as c:
        r = c.request(get("/sr-excinfo-before"))
        assert r.status_line == b"HTTP/1.1 500 Oops"
        assert r.header("X-First") is None
        assert r.header("X-Second") == "2"
        assert r.header("Content-Length") == "4"
        assert r.body == b"oops"
        assert c.request(get("/respond?b=next")).body == b"next"


def test_exc_info_after_headers_reraises_and_closes(srv):
    k = key()
    with Client(srv) as c:
        c.send(get("/sr-excinfo-after?k=" + k))
        data = c.rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"5\r\nfirst\r\n")  # cut short: no last chunk
    assert b"never" not in data
    assert marks(srv, k) == ["reraised"]


@pytest.mark.parametrize(
    "case,text",
    [
        ("status-bytes", "is not a string"),
        ("status-int", "is not a string"),
        ("status-cr", "ValueError: carriage return/line feed character present in status"),
        ("status-lf", "ValueError: carriage return/line feed character present in status"),
        ("name-bytes", "AssertionError: Header name b'X-Bytes' is not a string"),
        ("value-bytes", "AssertionError: Header value b'v' is not a string"),
        ("value-crlf", "ValueError: carriage return/line feed character present in header value"),
        ("value-lf", "ValueError: carriage return/line feed character present in header value"),
        ("value-cr", "ValueError: carriage return/line feed character present in header value"),
        ("name-crlf", "ValueError: carriage return/line feed character present in header name"),
    ],
)
def test_start_response_violations_are_500(srv, case, text):
    """No header injection: the status and headers are refused whole."""
    assert_500(srv, "/sr-bad?case=" + case, text)


HOP = ["Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
       "Transfer-Encoding", "Upgrade"]


@pytest.mark.parametrize("name", HOP + ["connection", "TRANSFER-ENCODING", "trailer"])
def test_hop_by_hop_headers_are_refused(srv, name):
    assert_500(srv, "/sr-bad?case=hop:" + name,
               'AssertionError: %s is a "hop-by-hop" header; it cannot be used by a WSGI application '
               "(see PEP 3333)" % name)


def test_trailers_is_not_hop_by_hop(srv):
    """The snapshot fixed the old typo: `Trailers` is an ordinary name."""
    with Client(srv) as c:
        r = c.request(get("/sr-bad?case=hop:Trailers"))
    assert r.status == 200 and r.header("Trailers") == "x"


# -- 3.10 write() ------------------------------------------------------------------


def test_body_before_start_response_is_500(srv):
    assert_500(srv, "/lazy-bad", "start_response was not called before body written")


def test_start_response_on_first_iteration_is_fine(srv):
    with Client(srv) as c:
        r = c.request(get("/lazy-ok"))
    assert r.status == 200 and r.body == b"lazy"


def test_write_then_app_iter_with_content_length(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?mode=writelist&cl=6&b=abc&b=def"))
        assert r.header("Content-Length") == "6"
        assert r.raw.endswith(b"\r\n\r\nabcdef")
        assert c.request(get("/respond?b=next")).body == b"next"


def test_write_then_app_iter_without_content_length(srv):
    """Two chunks (and, difference 2, the connection stays open)."""
    with Client(srv) as c:
        r = c.request(get("/respond?mode=writelist&b=abc&b=def"))
        assert r.raw[len(r.head):] == b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
        assert c.request(get("/respond?b=next")).body == b"next"


def test_str_as_first_body_item(srv):
    """Quirk (section 7): waitress sends the head and then closes without
    a body.  waitress_c checks the item before anything is sent, so the
    client gets a clean 500 instead."""
    assert_500(srv, "/str-chunk?first=1", "TypeError")


def test_str_after_bytes_cuts_the_body(srv):
    with Client(srv) as c:
        c.send(get("/str-chunk?first=0"))
        data = c.rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 3\r\n" in data
    assert data.endswith(b"\r\n\r\na")


# -- 3.11 app_iter ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ok", "raise-first", "raise-later", "str"])
def test_close_is_always_called(srv, mode):
    k = key()
    with Client(srv) as c:
        c.send(get("/closing?k=%s&mode=%s" % (k, mode)))
        if mode == "raise-later":
            assert c.rest().endswith(b"\r\n\r\n1\r\na\r\n")  # cut short
        else:
            r = c.response()
            assert r.status == (200 if mode == "ok" else 500)
            assert r.body == b"ab" or mode != "ok"
    assert wait_marks(srv, k, lambda ev: ev) == ["closed"]


@pytest.mark.parametrize("mode", ["list-sub", "none", "lookup-attr"])
def test_close_lookup(srv, mode):
    """A list subclass's close() is called; an iterable without one (or
    whose lookup raises AttributeError) is served as if it had none."""
    k = key()
    with Client(srv) as c:
        r = c.request(get("/closing?k=%s&mode=%s" % (k, mode)))
        assert r.status == 200 and r.body == b"ab"
        assert c.request(get("/respond?b=next")).body == b"next"
    if mode == "list-sub":
        assert wait_marks(srv, k, lambda ev: ev) == ["closed"]
    else:
        assert marks(srv, k) == []


def test_close_lookup_error_is_logged(srv):
    """Another exception from the lookup is the app's error: logged, and
    the connection closed after the whole response."""
    before = log_count(srv, "RuntimeError: close lookup")
    with Client(srv) as c:
        c.send(get("/closing?mode=lookup-error"))
        data = c.rest()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n")
    assert wait_log(srv, "RuntimeError: close lookup", before) > before
    with Client(srv) as c:
        assert c.request(get("/respond?b=next")).body == b"next"


def test_exception_before_any_body_is_500(srv):
    assert_500(srv, "/raise-gen?n=0", "RuntimeError: boom in raise_gen")


def test_exception_after_headers_is_logged(srv):
    before = log_count(srv, "ERROR:waitress_c:Exception while serving /raise-gen")
    with Client(srv) as c:
        c.send(get("/raise-gen?n=1"))
        data = c.rest()
    assert data.endswith(b"5\r\nitem0\r\n")
    assert wait_log(srv, "ERROR:waitress_c:Exception while serving /raise-gen", before) > before


# -- difference 20: the framing the app asks for is the framing sent --------------------


def hdrs_utf8(*pairs):
    return "u=1&" + "&".join("h=" + quote("%s:%s" % p, encoding="utf-8") for p in pairs)


@pytest.mark.parametrize(
    "value",
    ["1_0", "+10", "-10", "0x10", "1e1", "10 10", "10,10", "10, 10", "\u0663", "\u0661\u0660", "\uff11\uff10",
     "", " ", "10\t\t1", "99999999999999999999", "9223372036854775808"],
)
def test_content_length_that_is_not_1_digit_is_500(srv, value):
    """Python's int() took "1_0", "+10", " 10" and Unicode digits: the body
    was framed by the number while the header went out as written, so a
    client (or a proxy) read another length than the server sent."""
    r = assert_500(srv, "/respond?b=0123456789&" + hdrs_utf8(("Content-Length", value)),
                   "ValueError: invalid Content-Length value")
    assert b"0123456789" not in r.raw


@pytest.mark.parametrize("value", [" 10", "10 ", "\t10\t", " \t 10 \t "])
def test_content_length_whitespace_around_the_digits_is_dropped(srv, value):
    """RFC 9110 5.5: whitespace around a field value is not part of it.
    The header goes out as the number that frames the body."""
    with Client(srv) as c:
        r = c.request(get("/respond?b=0123456789&" + hdrs(("Content-Length", value))))
        assert r.status == 200 and r.body == b"0123456789"
        assert b"\r\nContent-Length: 10\r\n" in r.head
        assert [n.lower() for n in r.names()].count("content-length") == 1
        assert c.request(get("/respond?b=next")).body == b"next"


def test_content_length_leading_zeros_frame_the_same_number(srv):
    with Client(srv) as c:
        r = c.request(get("/respond?b=0123456789&" + hdrs(("Content-Length", "0010"))))
        assert r.status == 200 and r.body == b"0123456789"
        assert c.request(get("/respond?b=next")).body == b"next"


@pytest.mark.parametrize("values", [("10", " 10"), ("10", "010")])
def test_content_length_twice_with_one_value_is_sent_once(srv, values):
    """RFC 9110 8.6 lets a recipient collapse repeats of one decimal value:
    sent once, as the first one (normalised)."""
    with Client(srv) as c:
        r = c.request(get("/respond?b=0123456789&" + hdrs(*[("Content-Length", v) for v in values])))
        assert r.status == 200 and r.body == b"0123456789"
        assert [(n, v) for n, v in r.headers if n.lower() == "content-length"] == [("Content-Length", "10")]
        assert c.request(get("/respond?b=next")).body == b"next"


@pytest.mark.parametrize("values", [("10", "11"), ("10", "1_0"), ("10", " 11 ")])
def test_content_length_twice_with_two_values_is_500(srv, values):
    assert_500(srv, "/respond?b=0123456789&" + hdrs(*[("Content-Length", v) for v in values]),
               "ValueError: ")


@pytest.mark.parametrize(
    "name",
    ["Content-Length ", " Content-Length", "Content Length", "Content-Length\t", "X(A)", "X@A",
     "X\"A", "X/A", "X[A]", "X{A}", "X=A", "X?A", "X,A", "X;A", "X\\A", "X<A>", "", "caf\xe9", "X-\u20ac"],
)
def test_header_name_that_is_not_a_token_is_500(srv, name):
    """RFC 9110 5.1: a field name is a token.  "Content-Length " was not
    recognised as Content-Length, so chunked framing went out beside it."""
    r = assert_500(srv, "/respond?b=0123456789&" + hdrs_utf8((name, "10")), "is not a token")
    assert b"0123456789" not in r.raw


def test_header_name_with_a_colon_is_500(srv):
    assert_500(srv, "/sr-bad?case=name-colon", "is not a token")


# -- the status: a final one, 200 to 599 (difference 22) ------------------------------


@pytest.mark.parametrize(
    "status",
    ["100 Continue", "101 Switching Protocols", "103 Early Hints", "199 Odd", "000 Zero", "099 Low",
     "600 Beyond", "999 Nine", "2000 OK", "20 OK", "200OK", "2O0 OK", "abc", "", " 200 OK", "200\tOK",
     "\u0662\u0660\u0660 OK"],
)
def test_status_that_is_not_a_final_status_is_500(srv, status):
    """A 1xx from start_response went out as if final, with keep-alive: the
    client took the next request's response as the answer to this one."""
    before = log_count(srv, "ValueError: status ")
    with Client(srv) as c:
        c.send(get("/respond?b=x&" + "u=1&s=" + quote(status, encoding="utf-8")) + get("/respond?b=next"))
        r = c.response()
        assert r.status_line == b"HTTP/1.1 500 Internal Server Error"
        assert r.header("Connection") == "close"
        assert c.closed()
    assert wait_log(srv, "ValueError: status ", before) > before


@pytest.mark.parametrize("status", ["200 OK", "299 Custom reason", "404 Not Found", "599 Last", "500 ", "200"])
def test_final_statuses_go_out_as_written(srv, status):
    """A bare code too, as waitress sends it (see also
    test_http_versions.py::test_status_line_is_the_app_status_verbatim)."""
    with Client(srv) as c:
        r = c.request(get("/respond?b=x&s=" + quote(status)))
        assert r.status_line == b"HTTP/1.1 " + status.encode()
        assert c.request(get("/respond?b=next")).body == b"next"

