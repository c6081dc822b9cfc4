"""HTTP/2 load with h2load (Debian's nghttp2-client): waitress_c, and
granian when an interpreter that has it is given.

    python benchmarks/h2load.py [--granian=/path/to/venv/bin/python]

Scenarios (benchmarks/apps.py's /hello and /sleep):

    hello 100x10    100 connections, 10 streams each in flight
    hello 1x100     one connection, 100 streams in flight
    sleep 1x100     one connection, 100 streams of a 10 ms sleep: how many
                    of a connection's streams are in the app at once

Each server gets 4 threads (granian: 1 worker, 4 blocking threads) and
listens on 127.0.0.1; every run is bounded in requests and in time.  The
figures are h2load's requests per second and its failures, one line per
scenario and server."""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

SCENARIOS = [
    ("hello 100x10", "/hello", ["-n", "100000", "-c", "100", "-m", "10"]),
    ("hello 1x100", "/hello", ["-n", "100000", "-c", "1", "-m", "100"]),
    ("sleep 1x100", "/sleep", ["-n", "2000", "-c", "1", "-m", "100"]),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc, bound=30.0):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited (status %s)" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not listen within %.0f s" % bound)


def waitress_c(port):
    return [sys.executable, "-m", "waitress_c", "--listen=127.0.0.1:%d" % port,
            "--threads=4", "apps:app"]


def granian(python):
    def command(port):
        return [python, "-m", "granian", "--interface", "wsgi", "--http", "2",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--blocking-threads", "4", "apps:app"]
    return command


def run_h2load(port, path, args):
    out = subprocess.run(["h2load", "-T", "60"] + args + ["http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=300).stdout
    rps = re.search(r"([\d.]+) req/s", out)
    done = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    return (float(rps.group(1)) if rps else 0.0,
            done.groups() if done else ("?", "?", "?"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--granian", help="a python that can import granian")
    opts = ap.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
    servers = [("waitress_c", waitress_c)]
    if opts.granian:
        servers.append(("granian", granian(opts.granian)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([BENCH, ROOT]))
    print("| scenario | server | req/s | succeeded | failed | errored |")
    print("|---|---|---|---|---|---|")
    for name, command in servers:
        port = free_port()
        proc = subprocess.Popen(command(port), cwd=BENCH, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port, proc)
            for label, path, args in SCENARIOS:
                rps, (ok, failed, errored) = run_h2load(port, path, args)
                print("| %s | %s | %.0f | %s | %s | %s |" % (label, name, rps, ok, failed, errored),
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
