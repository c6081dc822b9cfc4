"""Start a server in a subprocess and stop it with SIGINT (for the CLI and
PasteDeploy tests).  Every wait is bounded; only 127.0.0.1 is used."""

import http.client
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time

# Sanitized runs (WC_SANITIZED=1) start and stop servers more slowly.
SLOW = float(os.environ.get("WC_TIMEOUT_SCALE") or (4 if os.environ.get("WC_SANITIZED") else 1))

SERVING = re.compile(r"Serving on http://(\S+):(\d+)")

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


class Server:
    """A server process, started and ready once ``ready`` (a regex) shows in
    its output; with the default, ``host`` and ``port`` are the first
    address it logged."""

    def __init__(self, args, cwd, ready=SERVING, timeout=20.0):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            args,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.output = b""
        self.host = self.port = None
        self._wait_for(ready, timeout)

    def _wait_for(self, ready, timeout):
        deadline = time.monotonic() + timeout * SLOW
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.2):
                    chunk = os.read(key.fileobj.fileno(), 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    self.output += chunk
                match = ready.search(self.output.decode("utf-8", "replace"))
                if match:
                    if ready is SERVING:
                        self.host, self.port = match.group(1), int(match.group(2))
                    return
                if self.proc.poll() is not None and not sel.get_map():
                    break
        finally:
            sel.close()
        self.kill()
        raise AssertionError(
            "server did not start (status %r):\n%s"
            % (self.proc.returncode, self.output.decode("utf-8", "replace"))
        )

    def get(self, path="/", headers=None):
        """One GET; returns (status, headers dict, decoded JSON body)."""
        conn = http.client.HTTPConnection(self.host.strip("[]"), self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, dict(resp.getheaders()), json.loads(body)
        finally:
            conn.close()

    def stop(self, timeout=15.0):
        """SIGINT, then wait; returns (exit status, all output)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("server did not stop on SIGINT")
        self.output += err + out
        return self.proc.returncode, self.output.decode("utf-8", "replace")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


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
