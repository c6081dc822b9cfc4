"""Hardening of what a client (or an app) feeds the C core: absolute-form
targets longer than 64 KiB, the chunk-extension grammar, wsgi.input.seek
with hostile offsets, the temp directory for spooled bodies, and the
Server object's GC support.  Real server processes, raw sockets, exact
bytes."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from http_helpers import Client, get, server_fixture

APP = "apps_hardening_input:router"
srv = server_fixture(app=APP)


def env_of(srv, data):
    with Client(srv, timeout=10) as c:
        r = c.request(data)
    assert r.status == 200, r
    return r.json()


def refused(srv, data, status=400):
    """`data` is answered with `status` and a close."""
    with Client(srv, timeout=5) as c:
        r = c.request(data)
        assert r.status == status, r
        assert r.header("Connection") == "close"
        assert c.closed()
    return r


def req(*header_lines, target="/env", method="GET", body=b""):
    head = b"%s %s HTTP/1.1\r\n" % (method.encode(), target.encode("latin-1"))
    return head + b"".join(h + b"\r\n" for h in header_lines) + b"\r\n" + body


def target_env(srv, target, method="GET"):
    return env_of(srv, req(b"Host: hosthdr", target=target, method=method))


# -- absolute-form targets over 64 KiB ----------------------------------------
#
# http-parser's URL splitter keeps uint16 offsets: past 65,535 bytes the
# path and query it reported were other parts of the target.

BIG = 65536


@pytest.mark.parametrize("n", [BIG - 20, BIG - 9, BIG - 8, BIG, BIG + 1, 3 * BIG + 7])
def test_long_absolute_form_path_is_split_exactly(srv, n):
    path = "/" + "a" * n + "/public"
    env = target_env(srv, "http://h" + path + "?secret=1")
    assert env["PATH_INFO"] == path
    assert env["QUERY_STRING"] == "secret=1"
    assert env["HTTP_HOST"] == "h"
    assert env["REQUEST_URI"] == "http://h" + path + "?secret=1"


def test_long_absolute_form_query_is_split_exactly(srv):
    query = "q=" + "x" * (BIG + 100) + "&secret=1"
    env = target_env(srv, "http://h:8/p/env?" + query + "#frag")
    assert env["PATH_INFO"] == "/p/env"
    assert env["QUERY_STRING"] == query
    assert env["HTTP_HOST"] == "h:8"


def test_long_absolute_form_authority(srv):
    host = "h" * (BIG + 5)
    env = target_env(srv, "http://%s:81/env?k=v" % host)
    assert env["HTTP_HOST"] == host + ":81"
    assert env["PATH_INFO"] == "/env"
    assert env["QUERY_STRING"] == "k=v"


def test_long_absolute_form_without_path(srv):
    query = "secret=" + "s" * BIG
    env = target_env(srv, "http://h?" + query)
    assert env["PATH_INFO"] == "/"
    assert env["QUERY_STRING"] == query


def test_long_authority_form_connect(srv):
    host = "c" * (BIG + 3)
    env = target_env(srv, host + ":443", method="CONNECT")
    assert env["PATH_INFO"] == host + ":443"
    assert env["HTTP_HOST"] == host + ":443"


def test_long_bad_absolute_form_is_refused(srv):
    """A bad byte past 64 KiB in the authority is still seen."""
    refused(srv, req(b"Host: x", target="http://" + "h" * (BIG + 10) + "!x/env"))


# Normal absolute-form targets: (target, PATH_INFO, QUERY_STRING, HTTP_HOST),
# as http_parser_parse_url split them (pinned before it was replaced).
ABSOLUTE = [
    ("http://h/env", "/env", "", "h"),
    ("HTTP://H.example.COM/env", "/env", "", "H.example.COM"),
    ("http://h", "/", "", "h"),
    ("http://h:8080", "/", "", "h:8080"),
    ("http://h?x=1", "/", "x=1", "h"),
    ("http://h:1?x=1?y", "/", "x=1?y", "h:1"),
    ("http://h/env?", "/env", "", "h"),
    ("http://h/env?#f", "/env", "", "h"),
    ("http://h/a/env#f?g", "/a/env", "", "h"),
    ("http://h/a/env?q#f#g", "/a/env", "q", "h"),
    ("http://h//x//env", "/x//env", "", "h"),
    ("http://u:p@h:9/env", "/env", "", "h:9"),
    ("http://@h/env", "/env", "", "h"),
    ("http://u%41;&=+$,-_.!~*'()@h/env", "/env", "", "h"),
    ("http://[::1]/env", "/env", "", "[::1]"),
    ("http://[::1]:8/env", "/env", "", "[::1]:8"),
    ("http://[fe80::1%25eth0]:8/env", "/env", "", "[fe80::1%25eth0]:8"),
    ("http://[1.2.3.4]/env", "/env", "", "[1.2.3.4]"),
    ("http://a_b-c.d/env", "/env", "", "a_b-c.d"),
    ("http://127.0.0.1:65535/env", "/env", "", "127.0.0.1:65535"),
    ("http://h:00080/env", "/env", "", "h:00080"),
    ("x://h/env", "/env", "", "h"),
    ("http://h/%2e%2E/env?a=%20", "/../env", "a=%20", "h"),
]


@pytest.mark.parametrize("target,path,query,host", ABSOLUTE, ids=[a[0] for a in ABSOLUTE])
def test_absolute_form_split(srv, target, path, query, host):
    env = target_env(srv, target)
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["HTTP_HOST"]) == (path, query, host)
    assert env["REQUEST_URI"] == target


@pytest.mark.parametrize(
    "target",
    [
        "http:///env",
        "http://?x",
        "http://",
        "http:/h/env",
        "http:h/env",
        "://h/env",
        "h2c://h/env",
        "ht-tp://h/env",
        "http://h:/env",
        "http://h:65536/env",
        "http://h:99999999999999999999/env",
        "http://h:8a/env",
        "http://:80/env",
        "http://h#f",
        "http://h!/env",
        "http://h%41/env",
        "http://a@b@h/env",
        "http://u[@h/env",
        "http://[::1/env",
        "http://[]/env",
        "http://[::g]/env",
        "http://[::1]x/env",
        "http://[::1%]/env",
        "http://[%eth0]/env",
        "http://[::1]:/env",
        "http://u@/env",
        "*x",
        "env",
    ],
)
def test_bad_absolute_form_is_400(srv, target):
    refused(srv, req(b"Host: x", target=target))


@pytest.mark.parametrize("target", ["h:443", "[::1]:443", "h:0", "a_b.c-d:65535"])
def test_connect_authority_form(srv, target):
    env = target_env(srv, target, method="CONNECT")
    assert env["PATH_INFO"] == target
    assert env["HTTP_HOST"] == target


@pytest.mark.parametrize(
    "target", ["h", "h:", ":443", "h:443/x", "h:443?x", "h:443?", "h:65536", "u@h:443", "@h:443", "[::1]", "http://h:443"]
)
def test_bad_connect_target_is_400(srv, target):
    refused(srv, req(b"Host: x", target=target, method="CONNECT"))


# -- chunk extensions: a name must follow ";" ---------------------------------


def chunked(body):
    return req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo", body=body)


@pytest.mark.parametrize(
    "line",
    [b"5;", b"5; ", b"5 ;", b"5;\t", b"5;=x", b"5; ;a", b"5;;a", b"5;a;", b"5;a=1;", b"5;a=1; ", b'5;a="q";',
     b"5;a=", b"5;a= ", b"5;a=;b"],
)
def test_chunk_extension_without_a_name_is_400(srv, line):
    r = refused(srv, chunked(line + b"\r\nhello\r\n0\r\n\r\n"))
    assert b"Invalid chunk extension" in r.body


@pytest.mark.parametrize("line", [b"0;", b"0; ", b"0;a;"])
def test_last_chunk_extension_without_a_name_is_400(srv, line):
    r = refused(srv, chunked(b"5\r\nhello\r\n" + line + b"\r\n\r\n"))
    assert b"Invalid chunk extension" in r.body


@pytest.mark.parametrize(
    "line",
    [b"5;a", b"5;a=b", b"5 ;a=b", b"5; a = b ", b'5;a="";b', b'5;a="x\\"y"', b"5;a;b;c", b"5;a\t=\t\"q\"\t;\tb"],
)
def test_valid_chunk_extensions_still_accepted(srv, line):
    with Client(srv) as c:
        r = c.request(chunked(line + b"\r\nhello\r\n0;z\r\n\r\n"))
    assert r.status == 200, r
    assert r.body == b"hello"


def test_chunk_extension_error_split_across_reads(srv):
    """The same verdict when the bytes come one at a time."""
    with Client(srv, timeout=5) as c:
        c.send(req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/echo"))
        for b in b"5;a; \r\nhello\r\n0\r\n\r\n":
            c.send(bytes([b]))
        r = c.response()
        assert r.status == 400
        assert b"Invalid chunk extension" in r.body
        assert c.closed()


# -- wsgi.input.seek with hostile values ---------------------------------------

MAX = 2**63 - 1


def seek_ops(srv, ops):
    body = json.dumps(ops).encode()
    with Client(srv) as c:
        r = c.request(get("/seek", method="POST", body=body))
    assert r.status == 200, r
    return r.json(), len(body)


def test_seek_relative_overflow_raises(srv):
    res, _ = seek_ops(srv, [[2**62, 0], [2**62, 1], [2**62 - 1, 1]])
    assert res[0] == ["ok", 2**62]
    assert res[1] == ["tell", 2**62, ""]
    assert res[2] == ["OverflowError", "new position too large"]
    assert res[3] == ["tell", 2**62, ""]  # unchanged by the failed seek
    assert res[4] == ["ok", MAX]


def test_seek_from_end_overflow_raises(srv):
    ops = [[MAX, 2], [MAX - 4096, 2], [-3, 2]]
    res, n = seek_ops(srv, ops)
    assert res[0] == ["OverflowError", "new position too large"]
    assert res[1] == ["tell", n, ""]
    assert res[2] == ["ok", MAX - 4096 + n]
    assert res[4] == ["ok", n - 3]
    assert res[5] == ["tell", n - 3, json.dumps(ops)[n - 3 : n - 1]]


def test_seek_at_the_limits(srv):
    ops = [
        [MAX, 0],
        [1, 1],
        [0, 1],
        [-(2**63), 1],
        [-(2**63), 2],
        [-(2**63), 0],
        [-1, 0],
        [2**63, 0],
        [-(2**63) - 1, 1],
        [0, 3],
        [0, -1],
        [0, 2**70],
        [5, 0],
    ]
    res, n = seek_ops(srv, ops)
    assert res[0] == ["ok", MAX]
    assert res[2] == ["OverflowError", "new position too large"]
    assert res[4] == ["ok", MAX]
    assert res[6][0] == "ValueError" and "negative seek value" in res[6][1]
    assert res[8][0] == "ValueError" and "negative seek value" in res[8][1]
    assert res[10][0] == "ValueError" and "negative seek value" in res[10][1]
    assert res[12][0] == "ValueError" and "negative seek value" in res[12][1]
    assert res[14][0] == "OverflowError"
    assert res[16][0] == "OverflowError"
    assert res[18][0] == "ValueError" and "whence" in res[18][1]
    assert res[20][0] == "ValueError" and "whence" in res[20][1]
    assert res[22][0] == "OverflowError"
    assert res[24] == ["ok", 5]
    # Failed seeks leave the position alone; reads past the end are empty.
    for i in range(1, 24, 2):
        assert res[i] == ["tell", MAX, ""], (i, res[i])
    assert res[25] == ["tell", 5, json.dumps(ops)[5:7]]


# -- TMPDIR is read once, when the server is created ---------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_spool_dir_is_fixed_at_server_creation(server_factory, tmp_path, monkeypatch, framing):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    s = server_factory(APP, inbuf_overflow=1024)
    body = b"z" * 20000

    def post():
        if framing == "length":
            data = get("/input-path", method="POST", body=body)
        else:
            data = req(b"Host: x", b"Transfer-Encoding: chunked", method="POST", target="/input-path",
                       body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        with Client(s) as c:
            return c.request(data)

    r = post()
    assert r.status == 200, r
    assert r.json()["where"].startswith(str(spool) + "/"), r.json()
    assert r.json()["len"] == len(body)
    # The app changes the process environment: the server does not follow.
    with Client(s) as c:
        r = c.request(get("/set-tmpdir?d=/nonexistent-waitress-c-dir"))
    assert r.json() == {"TMPDIR": "/nonexistent-waitress-c-dir"}
    r = post()
    assert r.status == 200, r
    assert r.json()["where"].startswith(str(spool) + "/"), r.json()
    assert r.json()["len"] == len(body)


# -- the Server object's GC support --------------------------------------------


def run_script(code):
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_server_traverse_visits_every_member():
    out = run_script(
        """
        import gc, logging, sys, waitress_c
        from waitress_c import _core, access_log

        def app(environ, start_response):
            return []

        s = waitress_c.create_server(app, listen="127.0.0.1:0", url_prefix="/pfx")
        core = s._core
        refs = gc.get_referents(core)
        expect = {
            "app": app,
            "logger": logging.getLogger("waitress_c"),
            "qlogger": logging.getLogger("waitress_c.queue"),
            "file_wrapper": _core.FileWrapper,
            "input_type": _core.Input,
            "sr_type": _core.StartResponse,
            "hints_type": _core.EarlyHints,
            "disc_type": _core.ClientDisconnected,
            "bad_request": _core.BadRequest,
            "log_escape": access_log.escape,
            "type": type(core),
        }
        missing = [k for k, v in expect.items() if not any(r is v for r in refs)]
        kinds = sorted(type(r).__name__ for r in refs)
        print(missing)
        print(kinds)
        print(sum(1 for r in refs if r == "/pfx" or r == b"/pfx"))
        print(sum(1 for r in refs if isinstance(r, tuple) and len(r) == 1 and isinstance(r[0], dict)))
        s.close()
        """
    )
    missing, kinds, prefix, templates = out.splitlines()
    assert missing == "[]"
    assert prefix == "2"  # url_prefix, and its latin-1 bytes
    assert templates == "1"
    # io.open and traceback.format_exception are visited too: 16 members.
    assert len(eval(kinds)) == 16, kinds


def test_server_cycle_is_collected():
    """An app that holds its own server: the cycle goes through tp_traverse
    and is broken by tp_clear."""
    out = run_script(
        """
        import gc, weakref, waitress_c

        class App:
            def __call__(self, environ, start_response):
                return []

        app = App()
        s = waitress_c.create_server(app, listen="127.0.0.1:0")
        app.core = s._core
        s.close()
        for sock in s.sockets:
            sock.close()
        ref = weakref.ref(app)
        del app, s
        gc.collect()
        print(ref() is None)
        """
    )
    assert out.strip() == "True"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Py_mod_multiple_interpreters is 3.12+")
def test_isolated_subinterpreter_refuses_the_module():
    out = run_script(
        """
        try:
            import _interpreters as interp
        except ImportError:
            import _xxsubinterpreters as interp
        try:
            iid = interp.create(isolated=True)
        except TypeError:
            iid = interp.create()
        try:  # 3.13 returns the failure, 3.12 raises it
            res = interp.run_string(iid, "import waitress_c._core")
        except Exception as e:
            res = e
        print(repr(res))
        """
    )
    assert "ImportError" in out or "does not support" in out, out


# -- heads over http-parser's own 80 KiB limit ---------------------------------


@pytest.mark.parametrize("size", [80 * 1024, 200 * 1024])
def test_head_over_http_parser_default_limit(srv, size):
    """http-parser's process-wide limit is left at its default (80 KiB);
    our max_request_header_size (256 KiB) is the one that applies."""
    value = "v" * size
    env = env_of(srv, req(b"Host: x", b"X-Big: " + value.encode(), b"X-After: 1"))
    assert env["HTTP_X_BIG"] == value
    assert env["HTTP_X_AFTER"] == "1"


def test_many_fields_over_http_parser_default_limit(srv):
    lines = [b"X-F%d: %s" % (i, b"f" * 1000) for i in range(150)]
    env = env_of(srv, req(b"Host: x", *lines))
    assert env["HTTP_X_F149"] == "f" * 1000
