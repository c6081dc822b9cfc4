"""waitress_c behind a real nginx, as in a deployment: nginx (Debian's, run
as a subprocess with its own configuration, pid file, access log and
temporary directories in a tmp dir, its error log on stderr) reverse-proxies to waitress_c over TCP and over a
unix socket, with upstream keep-alive and the usual forwarding headers
(X-Forwarded-For appended, X-Forwarded-Proto https as after TLS
termination, Host).  waitress_c runs from ``waitress-c-serve`` with
``--trusted-proxy`` and ``--trusted-proxy-headers``.

Checked: what the application sees (REMOTE_ADDR, wsgi.url_scheme,
HTTP_HOST, SERVER_PORT), that a forged X-Forwarded-For is not trusted, that
nginx keeps its upstream connection, and a 50 MB upload and download
through nginx, compared by SHA-256.  ``make test`` installs nginx; without
it the module is skipped."""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket

import pytest
from servers import Server, free_port, script

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
    None,
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx not found (make test installs Debian's nginx)"
)

BIG = 50 * 1024 * 1024
FORGED = "203.0.113.9"  # a documentation address, only ever sent as a header

APP_SOURCE = '''
import hashlib
import json
import random

KEYS = (
    "REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST", "SERVER_PORT",
    "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_CONNECTION",
    "CONTENT_LENGTH",
)


def download(size, block=1 << 20):
    data = random.Random(size).randbytes(size)
    for i in range(0, size, block):
        yield data[i:i + block]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.endswith("/upload"):
        digest = hashlib.sha256()
        size = 0
        inp = environ["wsgi.input"]
        while True:
            block = inp.read(1 << 20)
            if not block:
                break
            digest.update(block)
            size += len(block)
        info = {"size": size, "sha256": digest.hexdigest()}
        info.update((k, environ.get(k)) for k in KEYS)
        body = json.dumps(info).encode()
    elif "/download/" in path:
        size = int(path.rsplit("/", 1)[1])
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"),
             ("Content-Length", str(size))],
        )
        return download(size)
    else:
        body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
'''

# Both servers: X-Forwarded-For (the last entry, appended by nginx) and
# X-Forwarded-Proto are trusted from the proxy only.
TRUST = [
    "--trusted-proxy-count=1",
    "--trusted-proxy-headers=x-forwarded-for x-forwarded-proto",
]

NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log stderr info;

events {{
    worker_connections 128;
}}

http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 100m;

    upstream waitress_c_tcp {{
        server 127.0.0.1:{tcp_port};
        keepalive 8;
    }}
    upstream waitress_c_unix {{
        server unix:{unix_path};
        keepalive 8;
    }}
{servers}
}}
"""

NGINX_SERVER = """
    server {{
        listen 127.0.0.1:{port};

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto https;

        location / {{
            proxy_pass http://{upstream};
        }}
        # The request body passed on as it arrives, not spooled first.
        location /unbuffered/ {{
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_pass http://{upstream};
        }}
    }}
"""


def accepting(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Nginx:
    """nginx in the foreground on two free ports, one per upstream, its
    error log on stderr.  A port taken between choosing it and nginx
    binding it means a new try."""

    def __init__(self, tmp, tcp_port, unix_path, tries=3):
        self.tmp = tmp
        self.conf = os.path.join(tmp, "nginx.conf")
        self.server = None
        for _ in range(tries):
            self.ports = {"tcp": free_port(), "unix": free_port()}
            self._write_conf(tcp_port, unix_path)
            try:
                # The master logs this once every listening socket is bound
                # (a connection could reach whoever took the port instead).
                self.server = Server(
                    [NGINX, "-p", self.tmp, "-e", "stderr", "-c", self.conf],
                    cwd=tmp,
                    ready="start worker process",
                )
            except AssertionError as exc:
                failure = str(exc)
            else:
                if all(accepting(p) for p in self.ports.values()):
                    return
                failure = self.errors()
                self.stop()
            if "Address already in use" not in failure:
                break
        raise AssertionError("nginx did not start:\n" + failure)

    def _write_conf(self, tcp_port, unix_path):
        servers = "".join(
            NGINX_SERVER.format(port=self.ports[via], upstream="waitress_c_" + via)
            for via in ("tcp", "unix")
        )
        with open(self.conf, "w") as f:
            f.write(
                NGINX_CONF.format(
                    user="user root;" if os.geteuid() == 0 else "",
                    tmp=self.tmp,
                    tcp_port=tcp_port,
                    unix_path=unix_path,
                    servers=servers,
                )
            )

    def errors(self):
        return self.server.output if self.server else ""

    def stop(self):
        """SIGQUIT (graceful), bounded; returns the exit status."""
        try:
            return self.server.close(signal.SIGQUIT)[0]
        except AssertionError:  # killed
            return self.server.proc.returncode


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("nginx"))
    with open(os.path.join(tmp, "nginxapp.py"), "w") as f:
        f.write(APP_SOURCE)
    unix_path = os.path.join(tmp, "waitress_c.sock")
    serve = [script("waitress-c-serve"), "--threads=4"]
    tcp = Server(
        serve + ["--listen=127.0.0.1:0", "--trusted-proxy=127.0.0.1"] + TRUST
        + ["nginxapp:app"],
        cwd=tmp,
    )
    unix = Server(
        serve + ["--unix-socket=" + unix_path, "--trusted-proxy=localhost"] + TRUST
        + ["nginxapp:app"],
        cwd=tmp,
        ready=re.compile(r"Serving on http://unix:"),
    )
    nginx = None
    try:
        nginx = Nginx(tmp, tcp.port, unix_path)
        yield nginx
    finally:
        if nginx is not None:
            nginx_status = nginx.stop()
        results = [tcp.stop(), unix.stop()]
    assert nginx_status == 0, nginx.errors()
    assert not re.search(r"\[(emerg|alert|crit|error)\]", nginx.errors()), nginx.errors()
    for code, output in results:
        assert code == 0, output
        assert "Traceback" not in output, output


@pytest.fixture(params=["tcp", "unix"])
def via(request):
    return request.param


def connect(stack, via):
    return http.client.HTTPConnection("127.0.0.1", stack.ports[via], timeout=60)


def get_json(stack, via, path="/env", headers=None):
    conn = connect(stack, via)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


# -- what the application sees -------------------------------------------------------


def test_environ_behind_the_proxy(stack, via):
    env = get_json(stack, via)
    assert env["REMOTE_ADDR"] == "127.0.0.1"  # the client, from X-Forwarded-For
    assert env["wsgi.url_scheme"] == "https"  # X-Forwarded-Proto
    assert env["SERVER_PORT"] == "443"  # implied by https
    # Host $host: the client's host name, without the port
    assert env["HTTP_HOST"] == "127.0.0.1"
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert env["HTTP_CONNECTION"] is None  # Connection "" for keep-alive


def test_host_header_from_the_client(stack, via):
    env = get_json(stack, via, headers={"Host": "App.Example.test:8443"})
    assert env["HTTP_HOST"] == "app.example.test"
    assert env["SERVER_PORT"] == "443"
    assert env["wsgi.url_scheme"] == "https"


def test_forged_forwarded_headers_are_not_trusted(stack, via):
    env = get_json(
        stack,
        via,
        headers={"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "http"},
    )
    # nginx appends the real client; only the last entry is trusted, and
    # the environ keeps only the trusted part (as in waitress)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    # nginx replaces X-Forwarded-Proto
    assert env["wsgi.url_scheme"] == "https"


def test_forged_forwarded_for_with_several_entries(stack, via):
    env = get_json(stack, via, headers={"X-Forwarded-For": "10.1.1.1, " + FORGED})
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_nginx_keeps_its_upstream_connection(stack):
    # Over TCP the peer's port (REMOTE_PORT is not rewritten: the
    # X-Forwarded-For entry has no port) names nginx's upstream connection.
    ports = {get_json(stack, "tcp")["REMOTE_PORT"] for _ in range(20)}
    assert len(ports) == 1, ports


# -- 50 MB each way ------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_upload():
    data = os.urandom(BIG)
    return data, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "mode", ["content-length", "chunked-unbuffered"]
)
def test_upload_50mb(stack, via, big_upload, mode):
    data, digest = big_upload
    conn = connect(stack, via)
    try:
        if mode == "content-length":
            conn.request("POST", "/upload", body=data)
        else:
            blocks = (data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20))
            conn.request(
                "POST", "/unbuffered/upload", body=blocks, encode_chunked=True,
                headers={"Transfer-Encoding": "chunked"},
            )
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body[:500]
    info = json.loads(body)
    assert (info["size"], info["sha256"]) == (BIG, digest)
    assert info["REMOTE_ADDR"] == "127.0.0.1"
    # Spooled by nginx and sent with its length, or (request buffering
    # off) passed on chunked as it arrives and decoded by waitress_c, which
    # then sets CONTENT_LENGTH as waitress does.
    assert info["CONTENT_LENGTH"] == str(BIG)


@pytest.mark.parametrize("prefix", ["", "/unbuffered"])
def test_download_50mb(stack, via, prefix):
    import random

    expected = hashlib.sha256(random.Random(BIG).randbytes(BIG)).hexdigest()
    conn = connect(stack, via)
    try:
        conn.request("GET", "%s/download/%d" % (prefix, BIG))
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Length") == str(BIG)
        digest = hashlib.sha256()
        size = 0
        while True:
            block = resp.read(1 << 20)
            if not block:
                break
            digest.update(block)
            size += len(block)
    finally:
        conn.close()
    assert (size, digest.hexdigest()) == (BIG, expected)
