"""url_prefix / SCRIPT_NAME (as in waitress) and the WSGI
environ (3.18)."""

import socket

import pytest
from http_helpers import Client, get, server_fixture

srv = server_fixture()
prefixed = server_fixture(
    name="prefixed", url_prefix="//foo//", server_name="example.org", url_scheme="https"
)

FIXED_KEYS = {
    "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT", "REQUEST_METHOD", "SERVER_PORT", "SERVER_NAME",
    "SERVER_SOFTWARE", "SERVER_PROTOCOL", "SCRIPT_NAME", "PATH_INFO", "REQUEST_URI", "QUERY_STRING",
    "wsgi.url_scheme", "wsgi.version", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess",
    "wsgi.run_once", "wsgi.input", "wsgi.input_terminated", "wsgi.file_wrapper",
    "waitress.client_disconnected", "wsgi.early_hints",
}
HELPER_KEYS = {"_types", "_version_is_tuple", "_errors_is_stderr", "_file_wrapper_is_class", "_input_tell",
               "_input", "_input_after_end", "_disconnected"}


def env_of(s, data, client=None):
    with Client(s) as c:
        r = c.request(data)
        port = c.sock.getsockname()[1] if not s.unix else None
    assert r.status == 200, r
    return r.json(), port


# -- 3.17 url_prefix -------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,path",
    [
        ("/foo", ""),
        ("/foo/", "/"),
        ("/foo/bar/env", "/bar/env"),
        ("/foo/foo", "/foo"),
        ("/foobar", "/foobar"),
        ("/bar", "/bar"),
        ("/", "/"),
        ("/fo", "/fo"),
        ("/foo%2Fbar", "/bar"),
        ("//foo/bar", "/bar"),
        ("///foo", ""),
        ("/%66oo/x", "/x"),
    ],
)
def test_url_prefix(prefixed, target, path):
    """SCRIPT_NAME is the prefix on every request, even outside it; the
    match is made after percent-decoding and slash collapsing."""
    env, _ = env_of(prefixed, get(target))
    assert env["SCRIPT_NAME"] == "/foo"
    assert env["PATH_INFO"] == path
    assert env["REQUEST_URI"] == target


def test_no_prefix_gives_empty_script_name(srv):
    env, _ = env_of(srv, get("/foo/env"))
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/foo/env"


def test_server_name_and_url_scheme_settings(prefixed):
    env, _ = env_of(prefixed, get("/foo/env", headers=["Host: other.example:8080"]))
    assert env["SERVER_NAME"] == "example.org"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "other.example:8080"


# -- 3.18 environ --------------------------------------------------------------------


def test_exactly_the_fixed_keys(srv):
    env, _ = env_of(srv, get("/env", headers=[]))
    assert set(env) - HELPER_KEYS == FIXED_KEYS | {"HTTP_HOST"}
    env, _ = env_of(srv, get("/env", version="1.0"))
    assert set(env) - HELPER_KEYS == FIXED_KEYS


def test_addresses_and_ports(srv):
    env, port = env_of(srv, get("/env"))
    if srv.unix:
        assert env["REMOTE_ADDR"] == "localhost"
        assert env["REMOTE_HOST"] == "localhost"
        assert env["REMOTE_PORT"] == "None"
        assert env["SERVER_PORT"] == srv.port  # the socket path
    else:
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["REMOTE_HOST"] == "127.0.0.1"
        assert env["REMOTE_PORT"] == str(port)
        assert env["SERVER_PORT"] == str(srv.port)


@pytest.mark.parametrize("source", ["127.0.0.1", "127.10.200.3", "127.255.0.9", "127.0.100.254"])
def test_remote_addr_of_ipv4_peers(srv, source):
    """REMOTE_ADDR is formatted by the server itself for IPv4: every octet
    width, from a client bound to another loopback address."""
    if srv.unix:
        pytest.skip("TCP only")
    with Client(srv) as c:
        c.sock.close()
        c.sock = socket.create_connection(("127.0.0.1", int(srv.port)), timeout=5,
                                          source_address=(source, 0))
        r = c.request(get("/env"))
        port = c.sock.getsockname()[1]
    env = r.json()
    assert (env["REMOTE_ADDR"], env["REMOTE_HOST"]) == (source, source)
    assert env["REMOTE_PORT"] == str(port)


def test_fixed_values(srv):
    env, _ = env_of(srv, get("/p/env?a=1", headers=["Host: h.example:1234"]))
    assert env["SERVER_NAME"] == "waitress.invalid"  # whatever the Host
    assert env["SERVER_SOFTWARE"] == "waitress_c"  # difference 13
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/p/env"
    assert env["REQUEST_URI"] == "/p/env?a=1"
    assert env["QUERY_STRING"] == "a=1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["_version_is_tuple"] is True
    assert env["_errors_is_stderr"] is True
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["_file_wrapper_is_class"] is True
    assert env["_disconnected"] is False
    assert "HTTPS" not in env
    for k in FIXED_KEYS - {"wsgi.version", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess",
                           "wsgi.run_once", "wsgi.input", "wsgi.input_terminated", "wsgi.file_wrapper",
                           "waitress.client_disconnected", "wsgi.early_hints"}:
        assert env["_types"][k] == "str", k
    assert env["_types"]["wsgi.early_hints"] == "EarlyHints"  # tests/test_http_early_hints.py


def test_query_string_always_present(srv):
    env, _ = env_of(srv, get("/env"))
    assert env["QUERY_STRING"] == ""
    env, _ = env_of(srv, get("/env?"))
    assert env["QUERY_STRING"] == ""


def test_input_is_at_zero_and_ends_cleanly(srv):
    env, _ = env_of(srv, get("/env", method="POST", body=b"some body"))
    assert env["_input_tell"] == 0
    assert env["_input"] == "some body"
    assert env["_input_after_end"] == ""
    env, _ = env_of(srv, get("/env"))
    assert env["_input"] == "" and env["_input_after_end"] == ""


def test_content_headers_have_no_http_prefix(srv):
    env, _ = env_of(srv, get("/env", method="POST", headers=["Content-Type: text/x-test"], body=b"abc"))
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_other_headers_become_http_keys(srv):
    env, _ = env_of(srv, get("/env", headers=[
        "Host: h", "X-Custom-Header: 1", "accept-LANGUAGE: fr", "Expect: something", "Connection: keep-alive, x",
        "User-Agent: ua", "a: single", "X-Many-Dashes--Here: 2",
    ]))
    assert env["HTTP_HOST"] == "h"
    assert env["HTTP_X_CUSTOM_HEADER"] == "1"
    assert env["HTTP_ACCEPT_LANGUAGE"] == "fr"
    assert env["HTTP_EXPECT"] == "something"
    assert env["HTTP_CONNECTION"] == "keep-alive, x"
    assert env["HTTP_USER_AGENT"] == "ua"
    assert env["HTTP_A"] == "single"
    assert env["HTTP_X_MANY_DASHES__HERE"] == "2"


PROXY = ["Forwarded: for=1.2.3.4", "X-Forwarded-For: 1.2.3.4", "X-Forwarded-Host: evil", "X-Forwarded-Proto: https",
         "X-Forwarded-Port: 443", "X-Forwarded-By: 5.6.7.8"]


def test_proxy_headers_removed_by_default(srv):
    env, _ = env_of(srv, get("/env", headers=PROXY + ["X-Forwarded-Other: kept"]))
    for k in ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO",
              "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_BY"):
        assert k not in env
    assert env["HTTP_X_FORWARDED_OTHER"] == "kept"
    assert env["wsgi.url_scheme"] == "http"


def test_proxy_headers_kept_when_clearing_is_off(server_factory):
    s = server_factory("apps_http:router", clear_untrusted_proxy_headers=False)
    env, _ = env_of(s, get("/env", headers=PROXY))
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert env["HTTP_FORWARDED"] == "for=1.2.3.4"
    assert env["wsgi.url_scheme"] == "http"


def test_chunked_request_environ(srv):
    with Client(srv) as c:
        r = c.request(b"POST /env HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
                      b"Connection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    env = r.json()
    assert "HTTP_TRANSFER_ENCODING" not in env
    assert env["CONTENT_LENGTH"] == "3"
    assert env["HTTP_EXPECT"] == "100-continue"
    assert env["HTTP_CONNECTION"] == "keep-alive"


latin1_prefixed = server_fixture(name="latin1_prefixed", transports=("tcp",), url_prefix="/caf\xe9")
wide_prefixed = server_fixture(name="wide_prefixed", transports=("tcp",), url_prefix="/\u20ac")


@pytest.mark.parametrize(
    "target,path",
    [("/caf%E9/x/env", "/x/env"), ("/caf%E9", ""), ("/caf%C3%A9/x/env", "/caf\xc3\xa9/x/env")],
)
def test_non_ascii_url_prefix_matches_the_latin1_path(latin1_prefixed, target, path):
    """The prefix is compared with PATH_INFO as latin-1, character for
    character, as waitress compares the two strings (the core once compared
    its UTF-8 bytes, so "/café" never matched)."""
    env, _ = env_of(latin1_prefixed, get(target))
    assert env["SCRIPT_NAME"] == "/caf\xe9"
    assert env["PATH_INFO"] == path


def test_prefix_beyond_latin1_matches_no_path(wide_prefixed):
    """No latin-1 PATH_INFO can start with "/€": nothing is removed."""
    env, _ = env_of(wide_prefixed, get("/%E2%82%AC/x/env"))
    assert env["SCRIPT_NAME"] == "/\u20ac"
    assert env["PATH_INFO"] == "/\xe2\x82\xac/x/env"
