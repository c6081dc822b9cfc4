"""PasteDeploy (reference section 2.2): ``use = egg:waitress_c#main`` in a
``[server:main]`` section, string values converted by Adjustments, loaded
with the real ``paste.deploy.loadserver`` / ``loadapp``."""

import re
import socket
import sys
import textwrap
import warnings

import pytest
from http_reader import Reader
from paste.deploy import loadapp, loadserver
from servers import Server, write_app

import waitress_c
from waitress_c.adjustments import OPTIONS, Adjustments

# Every adjustment except the ones that exclude listen (host, port,
# unix_socket, sockets), which have their own ini below.
EVERY_SETTING = """\
listen = 127.0.0.1:0
ipv4 = true
ipv6 = true
threads = 2
trusted_proxy = 127.0.0.1
trusted_proxy_count = 1
trusted_proxy_headers = x-forwarded-for
    x-forwarded-proto
log_untrusted_proxy_headers = true
clear_untrusted_proxy_headers = true
url_scheme = http
url_prefix = /app/
backlog = 64
recv_bytes = 16384
send_bytes = 1
outbuf_overflow = 2097152
outbuf_high_watermark = 8388608
inbuf_overflow = 262144
connection_limit = 50
cleanup_interval = 10
channel_timeout = 60
log_socket_errors = false
max_request_header_size = 65536
max_request_body_size = 1048576
expose_tracebacks = false
ident = paste-test
asyncore_loop_timeout = 2
asyncore_use_poll = false
unix_socket_perms = 660
channel_request_lookahead = 2
server_name = example.org
shutdown_timeout = 2.5
workers = 2
max_requests = 1000
max_requests_jitter = 10
boot_timeout = 20
timeout = 90
access_log = true
access_log_format = %%(h)s %%(s)s %%(b)s
pidfile = %(here)s/paste.pid
log_level = Info
log_config = %(here)s/logging.json
error_logfile = -
access_logfile = -
metrics = 127.0.0.1:9100
http2 = off
h2_max_concurrent_streams = 32
tls_session_cache = 0
tls_session_timeout = 600
h2_initial_window_size = 65535
h2_max_frame_size = 32768
h2_max_header_list_size = 8192
"""

EXPECTED = {
    "ipv4": True,
    "ipv6": True,
    "threads": 2,
    "trusted_proxy": "127.0.0.1",
    "trusted_proxy_count": 1,
    "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
    "log_untrusted_proxy_headers": True,
    "clear_untrusted_proxy_headers": True,
    "url_scheme": "http",
    "url_prefix": "/app",
    "backlog": 64,
    "recv_bytes": 16384,
    "send_bytes": 1,
    "outbuf_overflow": 2097152,
    "outbuf_high_watermark": 8388608,
    "inbuf_overflow": 262144,
    "connection_limit": 50,
    "cleanup_interval": 10,
    "channel_timeout": 60,
    "log_socket_errors": False,
    "max_request_header_size": 65536,
    "max_request_body_size": 1048576,
    "expose_tracebacks": False,
    "ident": "paste-test",
    "asyncore_loop_timeout": 2,
    "asyncore_use_poll": False,
    "unix_socket_perms": 0o660,
    "channel_request_lookahead": 2,
    "server_name": "example.org",
    "shutdown_timeout": 2.5,
    "workers": 2,
    "max_requests": 1000,
    "max_requests_jitter": 10,
    "boot_timeout": 20.0,
    "timeout": 90.0,
    "access_log": True,
    "access_log_format": "%(h)s %(s)s %(b)s",
    "pidfile": "paste.pid",  # in the ini's directory
    "log_level": "info",
    "log_config": "logging.json",  # in the ini's directory
    "error_logfile": "-",
    "access_logfile": "-",
    "metrics": "127.0.0.1:9100",
    "http2": False,
    "h2_max_concurrent_streams": 32,
    "tls_session_cache": 0,
    "tls_session_timeout": 600,
    "h2_initial_window_size": 65535,
    "h2_max_frame_size": 32768,
    "h2_max_header_list_size": 8192,
}


def ini(tmp_path, server_settings, name="test.ini"):
    write_app(tmp_path, "pasteapp")
    text = (
        "[app:main]\nuse = call:pasteapp:make_app\n\n"
        "[server:main]\nuse = egg:waitress_c#main\n" + server_settings
    )
    path = tmp_path / name
    path.write_text(text)
    # For log_config: an incremental dictConfig that changes nothing.
    (tmp_path / "logging.json").write_text('{"version": 1, "incremental": true}')
    return "config:" + str(path)


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Replace waitress_c.serve (which serve_paste calls) by a recorder."""
    calls = []
    monkeypatch.setattr(waitress_c, "serve", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.syspath_prepend(str(tmp_path))
    return calls


def adjustments(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return Adjustments(**kw)


# The TLS settings need real certificates: tests/test_tls.py and
# tests/test_tls_sni.py read them from ini files of their own.
TLS_OPTIONS = {
    "certfile", "keyfile", "keyfile_password_file", "keyfile_password_env",
    "ca_certs", "cert_reqs", "ciphers", "tls_min_version", "insecure_listen",
    "sni_certs",
}


def test_expected_covers_every_option_but_the_exclusive_ones():
    assert set(EXPECTED) | TLS_OPTIONS | {"listen", "host", "port", "unix_socket", "sockets"} == {
        o.name for o in OPTIONS
    }


def test_entry_point_is_serve_paste(captured, tmp_path):
    server = loadserver(ini(tmp_path, "threads = 3\n"))
    assert server(lambda e, s: []) == 0
    assert captured[0][1] == {"threads": "3"}


def test_every_setting_from_an_ini(captured, tmp_path):
    uri = ini(tmp_path, EVERY_SETTING)
    app = loadapp(uri)
    server = loadserver(uri)
    assert server(app) == 0
    (served_app, kw), = captured
    assert served_app is sys.modules["pasteapp"].app
    assert all(isinstance(v, str) for v in kw.values())
    adj = adjustments(kw)
    for name, value in EXPECTED.items():
        if name in ("pidfile", "log_config"):
            value = str(tmp_path / value)
        assert getattr(adj, name) == value, name
    assert [entry[3] for entry in adj.listen] == [("127.0.0.1", 0)]


def test_listen_with_several_entries(captured, tmp_path):
    uri = ini(tmp_path, "listen = 127.0.0.1:6543 [::1]:6543\n")
    loadserver(uri)(loadapp(uri))
    adj = adjustments(captured[0][1])
    assert [entry[3][:2] for entry in adj.listen] == [
        ("127.0.0.1", 6543),
        ("::1", 6543),
    ]


def test_host_and_port(captured, tmp_path):
    uri = ini(tmp_path, "host = 127.0.0.1\nport = 6543\n")
    loadserver(uri)(loadapp(uri))
    adj = adjustments(captured[0][1])
    assert (adj.host, adj.port) == ("127.0.0.1", 6543)
    assert [entry[3] for entry in adj.listen] == [("127.0.0.1", 6543)]


def test_unix_socket(captured, tmp_path):
    uri = ini(
        tmp_path, "unix_socket = %s\nunix_socket_perms = 0o666\n" % (tmp_path / "s")
    )
    loadserver(uri)(loadapp(uri))
    adj = adjustments(captured[0][1])
    assert (adj.unix_socket, adj.unix_socket_perms) == (str(tmp_path / "s"), 0o666)


def test_global_conf_is_not_passed_on(captured, tmp_path):
    path = tmp_path / "g.ini"
    write_app(tmp_path, "pasteapp")
    path.write_text(
        textwrap.dedent(
            """\
            [DEFAULT]
            debug = true

            [app:main]
            use = call:pasteapp:make_app

            [server:main]
            use = egg:waitress_c#main
            threads = 5
            """
        )
    )
    uri = "config:" + str(path)
    loadserver(uri)(loadapp(uri))
    assert captured[0][1] == {"threads": "5"}


def test_bad_setting_raises_the_adjustments_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    uri = ini(tmp_path, "listen = 127.0.0.1:0\nport = 1\n")
    with pytest.raises(ValueError, match="host or port may not be set if listen"):
        loadserver(uri)(loadapp(uri))


# -- serving: needs the C core -------------------------------------------------------

RUN_INI = """\
import logging, sys
from paste.deploy import loadapp, loadserver
logging.getLogger("waitress_c").setLevel(logging.INFO)
uri = sys.argv[1]
sys.exit(loadserver(uri)(loadapp(uri)))
"""


def test_ini_with_every_setting_serves(tmp_path):
    uri = ini(tmp_path, EVERY_SETTING)
    server = Server([sys.executable, "-c", RUN_INI, uri], cwd=tmp_path)
    try:
        status, headers, env = server.get(
            "/app/x",
            {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        )
        assert status == 200
        assert headers["Server"] == "paste-test"
        assert env["SCRIPT_NAME"] == "/app"
        assert env["PATH_INFO"] == "/x"
        assert env["REMOTE_ADDR"] == "203.0.113.9"
        assert env["wsgi.url_scheme"] == "https"
        assert env["SERVER_PORT"] == "443"
        assert env["SERVER_NAME"] == "example.org"
        assert env["SERVER_SOFTWARE"] == "paste-test"

        status, _, env = server.get("/other", {"X-Forwarded-Host": "evil.example"})
        assert env["SCRIPT_NAME"] == "/app"
        assert env["HTTP_HOST"] != "evil.example"
        assert (tmp_path / "paste.pid").read_text() == "%d\n" % server.pid
    finally:
        code, output = server.stop()
    assert code == 0
    assert not (tmp_path / "paste.pid").exists()
    assert "Removed untrusted headers (X-Forwarded-Host)" in output


def test_ini_with_unix_socket_serves(tmp_path):
    sock_path = tmp_path / "paste.sock"
    uri = ini(
        tmp_path,
        "unix_socket = %s\nunix_socket_perms = 660\n"
        "trusted_proxy = localhost\ntrusted_proxy_headers = x-forwarded-for\n"
        % sock_path,
    )
    server = Server(
        [sys.executable, "-c", RUN_INI, uri],
        cwd=tmp_path,
        ready=re.compile(r"Serving on http://unix:\S+"),
    )
    try:
        assert oct(sock_path.stat().st_mode & 0o777) == oct(0o660)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(sock_path))
            s.sendall(
                b"GET /u HTTP/1.0\r\nHost: x\r\n"
                b"X-Forwarded-For: 198.51.100.2\r\n\r\n"
            )
            data = Reader(s).rest()
        assert data.startswith(b"HTTP/1.0 200 OK\r\n")
        assert b'"PATH_INFO": "/u"' in data
        # the peer of a unix socket is "localhost", trusted here
        assert b'"REMOTE_ADDR": "198.51.100.2"' in data
    finally:
        code, _ = server.stop()
    assert code == 0


def test_ini_with_host_and_port_serves(tmp_path):
    uri = ini(tmp_path, "host = 127.0.0.1\nport = 0\n")
    server = Server([sys.executable, "-c", RUN_INI, uri], cwd=tmp_path)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        status, headers, env = server.get("/hp")
        assert (status, env["PATH_INFO"]) == (200, "/hp")
        assert headers["Server"] == "waitress_c"
    finally:
        code, _ = server.stop()
    assert code == 0
