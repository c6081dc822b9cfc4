"""Fixtures: a real waitress_c server in a subprocess, and raw-socket
clients.  Every wait is bounded; traffic goes to 127.0.0.1 or a unix socket
only."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Servers under a sanitizer (make asan, make tsan set WC_SANITIZED=1) start
# and stop several times slower: their fixture waits are stretched by this.
SLOW = float(os.environ.get("WC_TIMEOUT_SCALE") or (4 if os.environ.get("WC_SANITIZED") else 1))


class ServerProcess:
    """``python tests/serve.py app kw`` in a subprocess."""

    def __init__(self, app, timeout=20.0, **kw):
        kw.setdefault("threads", 4)
        if "unix_socket" not in kw and "sockets" not in kw:
            kw.setdefault("listen", "127.0.0.1:0")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
        self.errfile = open(_tmpname(), "w+b")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "serve.py"), "apps:" + app if ":" not in app else app, json.dumps(kw)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.errfile,
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout * SLOW
        line = b""
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.monotonic() < deadline:
            try:
                chunk = self.proc.stdout.readline()
            except BlockingIOError:
                chunk = b""
            if chunk:
                line += chunk
                if line.endswith(b"\n"):
                    break
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.02)
        if not line.endswith(b"\n"):
            self.kill()
            raise AssertionError("server did not start:\n" + self.stderr())
        info = json.loads(line)
        self.listen = info["listen"]
        host, port = self.listen[0]
        self.unix = host == "unix"
        self.host = host
        self.port = port if self.unix else int(port)

    # -- clients ------------------------------------------------------------
    def connect(self, timeout=10.0):
        if self.unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.port)
        else:
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((self.host, self.port))
        return s

    def http(self, timeout=10.0):
        if self.unix:
            conn = UnixHTTPConnection(self.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return conn

    def request(self, method="GET", path="/", body=None, headers=None):
        conn = self.http()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp, data
        finally:
            conn.close()

    # -- lifecycle ------------------------------------------------------------
    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=20.0):
        return self.proc.wait(timeout=timeout)

    def stop(self, sig=None, timeout=20.0):
        sig = signal.SIGINT if sig is None else sig
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("server did not stop on %s\n%s" % (sig, self.stderr()))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr(self):
        if self.errfile.closed:
            return self._stderr
        # A file of its own: the server writes through a descriptor that
        # shares errfile's offset, so seeking errfile would make its next
        # line overwrite the start of the log.
        with open(self.errfile.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        try:
            self.stop()
        finally:
            self._stderr = self.stderr()
            self.proc.stdout.close()
            self.errfile.close()
            os.unlink(self.errfile.name)


_counter = [0]


def _tmpname():
    import tempfile

    _counter[0] += 1
    fd, path = tempfile.mkstemp(prefix="wc-test-err-")
    os.close(fd)
    return path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


@pytest.fixture
def server_factory(tmp_path):
    """server_factory(app_name, **adjustments) -> a started ServerProcess."""
    started = []

    def make(app="hello", **kw):
        if kw.get("unix_socket") is True:
            kw["unix_socket"] = str(tmp_path / "wc.sock")
        s = ServerProcess(app, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        try:
            s.close()
        except AssertionError:
            pass


@pytest.fixture(params=["tcp", "unix"])
def transport(request):
    return request.param


@pytest.fixture
def server(server_factory, transport):
    """A hello-world-and-friends server over TCP and over a unix socket."""
    if transport == "unix":
        return server_factory("router", unix_socket=True)
    return server_factory("router")


def recv_all(sock, timeout=10.0):
    """Read until the peer closes (bounded in time)."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def proc_rss_kb(pid):
    """A process's resident set size in KiB (/proc/PID/status VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def read_response(f, head=False):
    """Parse one HTTP response from a buffered binary file; returns
    (status_line, headers list, body).  Handles Content-Length, chunked,
    and close-delimited bodies; ``head`` for a response to HEAD."""
    status = f.readline()
    if not status:
        return None
    headers = []
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name, value.strip()))
    h = {k.lower(): v for k, v in headers}
    code = int(status.split()[1])
    if head or code in (204, 304) or 100 <= code < 200:
        return status, headers, b""
    if "content-length" in h:
        body = f.read(int(h["content-length"]))
    elif h.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                break
            body += f.read(size)
            assert f.read(2) == b"\r\n"
    else:
        body = f.read()
    return status, headers, body
