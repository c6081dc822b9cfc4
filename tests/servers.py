"""The suite's one server launcher: a server (or any long-running command)
in a subprocess, started, waited for, signalled, stopped and cleaned up.

Two ways in, one class underneath:

* ``ServerProcess(app, **adjustments)`` runs ``python tests/serve.py APP
  JSON`` (create_server in a subprocess, which prints a JSON line with its
  listeners on stdout once it listens);
* ``Server(args, cwd)`` runs a command line: ``waitress-c-serve``,
  ``python -m waitress_c`` (the supervisor too), ``pserve``, ``python -c
  SCRIPT``, nginx...; it is ready once ``ready`` (a regex, by default the
  ``Serving on http://HOST:PORT`` log line) shows in its output.

Readiness is an event: a line printed, waited for with a bound, never a
sleep.  stdout and stderr are read from pipes by a thread as they come (a
server never blocks on a full pipe) and on every access too, so whatever
the server wrote before an event the test saw (its answer to a request) is
there: ``stderr()``, ``stdout()``, ``output`` (both, as they arrived) and
``wait_for(regex)``.  Every wait is bounded; start and stop bounds are
stretched by SLOW under a sanitizer.  Traffic goes to 127.0.0.1 or a unix
socket only.

Also here: the http.client connection for a TCP or unix socket address,
commands that exit by themselves (``run_cli``), the application the CLI
tests serve (``write_app``), and /proc helpers."""

import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Servers under a sanitizer (make asan, make tsan set WC_SANITIZED=1) start
# and stop several times slower: the launcher's waits are stretched by this.
SLOW = float(os.environ.get("WC_TIMEOUT_SCALE") or (4 if os.environ.get("WC_SANITIZED") else 1))

# The line waitress_c logs for each listener; Server takes its host and
# port from the named groups of the ready match, when it has them.
SERVING = re.compile(r"Serving on https?://(?P<host>\S+):(?P<port>\d+)")

# tests/serve.py's first line on stdout.
JSON_LINE = re.compile(r"\A(.*)\n")


class _Output:
    """A child's stdout and stderr, read by a thread as they come and by
    every reader before it looks (so nothing written before the look is
    missing), kept in memory."""

    def __init__(self, streams):
        self.cond = threading.Condition()
        self.names = {f.fileno(): name for name, f in streams.items()}
        self.files = list(streams.values())
        self.data = {name: bytearray() for name in streams}
        self.data["output"] = bytearray()
        self.open = set(self.names)
        self.sel = selectors.DefaultSelector()
        for fd in self.names:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read(self, fd):
        """Everything `fd` has now (the lock held)."""
        got = False
        while fd in self.open:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.open.discard(fd)
                got = True
                break
            self.data[self.names[fd]] += chunk
            self.data["output"] += chunk
            got = True
        if got:
            self.cond.notify_all()

    def _drain(self):
        for fd in list(self.open):
            self._read(fd)

    def _run(self):
        while True:
            with self.cond:
                for fd in set(self.sel.get_map()) - self.open:
                    self.sel.unregister(fd)
                if not self.open:  # all read to the end: nothing can come
                    for f in self.files:
                        f.close()
                    break
                if self.stopping:
                    break
            for key, _ in self.sel.select(timeout=0.5):
                with self.cond:
                    self._read(key.fd)
        self.sel.close()

    def text(self, stream="output"):
        with self.cond:
            self._drain()
            return self.data[stream].decode("utf-8", "replace")

    def wait(self, regex, count=1, timeout=20.0, stream="output"):
        """The `count`-th match of `regex` in `stream`, or None if it has not
        come within `timeout` or cannot come any more (the stream ended)."""
        deadline = time.monotonic() + timeout
        wanted = [fd for fd, name in self.names.items() if stream in (name, "output")]
        with self.cond:
            while True:
                self._drain()
                text = self.data[stream].decode("utf-8", "replace")
                matches = list(regex.finditer(text))
                if len(matches) >= count:
                    return matches[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or not self.open.intersection(wanted):
                    return None
                self.cond.wait(min(left, 0.5))

    def close(self):
        """Stop reading (what the pipes hold now is kept) and close them."""
        with self.cond:
            if self.stopping:
                return
            self.stopping = True
        self.thread.join(timeout=5)
        with self.cond:
            self._drain()
            self.open.clear()
        for f in self.files:
            f.close()


class Server:
    """``args`` in a subprocess (cwd `cwd`; environment `env` or this
    one's), ready once `ready` (a regex, or a string taken as one) matches
    in `ready_in` ("output", "stdout" or "stderr") within `timeout`; its
    ``host`` and ``port`` are the named groups of that match, if any.  With
    `stdin`, ``write()`` feeds its standard input."""

    STOP_TIMEOUT = 15.0

    def __init__(self, args, cwd=ROOT, ready=SERVING, timeout=20.0, env=None, stdin=False, ready_in="output"):
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.args = list(args)
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out = _Output({"stdout": self.proc.stdout, "stderr": self.proc.stderr})
        self.host = self.port = None
        self.unix = False
        if isinstance(ready, str):
            ready = re.compile(ready)
        self.ready = self._out.wait(ready, timeout=timeout * SLOW, stream=ready_in)
        if self.ready is None:
            self.kill()
            raise AssertionError(
                "server did not start (status %r):\n%s" % (self.proc.returncode, self.output)
            )
        found = self.ready.groupdict()
        if found.get("port"):
            self.host, self.port = found.get("host"), int(found["port"])

    # -- output -------------------------------------------------------------
    @property
    def output(self):
        """stdout and stderr so far, as they arrived."""
        return self._out.text("output")

    def stderr(self):
        return self._out.text("stderr")

    def stdout(self):
        return self._out.text("stdout")

    def wait_for(self, regex, count=1, timeout=20.0, stream="output", fail=True):
        """The `count`-th match of `regex` (a string is taken as a regex)
        in `stream`, waited for up to `timeout` (or until the stream ends);
        if it does not come, an AssertionError, or None without `fail`."""
        if isinstance(regex, str):
            regex = re.compile(regex)
        match = self._out.wait(regex, count, timeout, stream)
        if match is None and fail:
            raise AssertionError(
                "no %r (x%d) in the %s:\n%s" % (regex.pattern, count, stream, self._out.text(stream))
            )
        return match

    def write(self, data):
        """Send `data` (bytes or text) to the standard input."""
        self.proc.stdin.write(data if isinstance(data, bytes) else data.encode())
        self.proc.stdin.flush()

    # -- clients ------------------------------------------------------------
    @property
    def address(self):
        """A unix socket's path, or (host, port) for a TCP listener."""
        if self.unix:
            return self.port
        return (self.host.strip("[]"), self.port)

    def connect(self, timeout=10.0):
        return connect(self.address, timeout)

    def http(self, timeout=10.0):
        return http_connection(self.address, timeout)

    def request(self, method="GET", path="/", body=None, headers=None):
        """One request on a new http.client connection: (response, body)."""
        conn = self.http()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp, data
        finally:
            conn.close()

    def get(self, path="/", headers=None):
        """One GET; returns (status, headers dict, decoded JSON body)."""
        resp, body = self.request("GET", path, headers=headers)
        return resp.status, dict(resp.getheaders()), json.loads(body)

    # -- the process --------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid

    def poll(self):
        return self.proc.poll()

    def worker_pids(self):
        """Live children (a supervisor's workers)."""
        return children(self.proc.pid)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30.0):
        """The exit status, within `timeout` (else killed, AssertionError)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("did not exit:\n" + self.output) from None

    def stop(self, sig=signal.SIGINT, timeout=None):
        """`sig` (unless it has exited), then wait, bounded (then killed,
        AssertionError); the pipes are closed, the output kept.  Returns
        (exit status, all output)."""
        timeout = self.STOP_TIMEOUT if timeout is None else timeout
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    "server did not stop on %s\n%s" % (signal.Signals(sig).name, self.output)
                ) from None
        finally:
            self._release()
        return self.proc.returncode, self.output

    def kill(self):
        """SIGKILL to its children (a supervisor's workers), then to it;
        the pipes are closed, the output kept."""
        if self.proc.poll() is None:
            for pid in children(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._release()

    close = stop

    def _release(self):
        self._out.close()
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    signal = send_signal  # last: it shadows the module in the class body


class ServerProcess(Server):
    """``python tests/serve.py app kw`` in a subprocess: create_server(app,
    **kw) (threads=4 and listen=127.0.0.1:0 unless given), with the tests'
    directory on the path; `app` is a name in tests/apps.py or MODULE:NAME.
    ``listen`` is its effective listeners; ``host`` and ``port`` the first
    (``unix`` and the path for a unix socket)."""

    STOP_TIMEOUT = 20.0

    def __init__(self, app, timeout=20.0, **kw):
        kw.setdefault("threads", 4)
        if "unix_socket" not in kw and "sockets" not in kw:
            kw.setdefault("listen", "127.0.0.1:0")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
        super().__init__(
            [sys.executable, os.path.join(HERE, "serve.py"), app if ":" in app else "apps:" + app, json.dumps(kw)],
            cwd=ROOT,
            env=env,
            ready=JSON_LINE,
            ready_in="stdout",
            timeout=timeout,
        )
        info = json.loads(self.ready.group(1))
        self.listen = info["listen"]
        host, port = self.listen[0]
        self.unix = host == "unix"
        self.host = host
        self.port = port if self.unix else int(port)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def connect(address, timeout=10.0):
    """A socket connected to (host, port) or a unix socket path."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(address)
    return s


def http_connection(address, timeout=10.0):
    """An http.client connection to (host, port) or a unix socket path."""
    if isinstance(address, str):
        return UnixHTTPConnection(address, timeout=timeout)
    return http.client.HTTPConnection(address[0], address[1], timeout=timeout)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- commands that exit by themselves -------------------------------------------


def run_cli(args, cwd, timeout=30.0):
    """Run a command that is expected to exit by itself."""
    return subprocess.run(
        args,
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def script(name):
    """Path of a console script of this venv."""
    return os.path.join(os.path.dirname(sys.executable), name)


# -- the application of the CLI and PasteDeploy tests ------------------------------

# A WSGI application that answers with a JSON object of some environ keys.
APP_SOURCE = '''
import json

KEYS = (
    "PATH_INFO", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR",
    "HTTP_HOST", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
    "SERVER_SOFTWARE", "wsgi.url_scheme",
)


def app(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def make_app(global_conf=None, **settings):
    return app
'''


def write_app(directory, name="cliapp"):
    """Write the application module ``name`` into ``directory``."""
    path = os.path.join(str(directory), name + ".py")
    with open(path, "w") as f:
        f.write(APP_SOURCE)
    return name


# -- /proc ---------------------------------------------------------------------------


def proc_rss_kb(pid):
    """A process's resident set size in KiB (/proc/PID/status VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def proc_stat(pid):
    """(state, ppid) from /proc/PID/stat, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def alive(pid):
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def children(ppid):
    """Live (not zombie) children of `ppid`."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat and int(stat[1]) == ppid and stat[0] != "Z":
                pids.append(int(name))
    return sorted(pids)
