"""What the access log costs: hello world at 100 connections, waitress_c
with and without ``--access-log``, interleaved, in one run.

    python benchmarks/access_log.py [--rounds 3] [--duration 5]

The server (this tree's waitress-c-serve, examples/hello.py) is pinned to
CPU 0 and wrk to CPU 1; the log goes to stderr, sent to /dev/null, so the
figure is the cost of producing each line (waitress_c's formatting and
Python's logging), not of a disk.  Prints the median req/s and the median
server CPU time per request (from /proc/PID/stat) of each variant.  Load
goes to 127.0.0.1 only, bounded by --duration.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(os.path.dirname(sys.executable), "waitress-c-serve")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(extra, duration):
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", SERVE, "--listen=127.0.0.1:%d" % port,
         "--connection-limit=1000"] + extra + ["examples.hello:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.05)
        before = cpu_seconds(server.pid)
        out = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c100", "-d%ds" % duration,
             "http://127.0.0.1:%d/" % port],
            capture_output=True, text=True, timeout=duration + 30,
        ).stdout
        used = cpu_seconds(server.pid) - before
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, used / (rps * duration) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    opts = p.parse_args()
    runs = {"off": [], "on": []}
    for _ in range(opts.rounds):
        runs["off"].append(one_run([], opts.duration))
        runs["on"].append(one_run(["--access-log"], opts.duration))
    med = {}
    for name, rs in runs.items():
        med[name] = (statistics.median(r for r, _ in rs), statistics.median(c for _, c in rs))
        print("access log %-3s  %8.0f req/s  %6.2f us of server CPU a request"
              % (name, med[name][0], med[name][1]))
    print("cost: %.2f us of server CPU a request" % (med["on"][1] - med["off"][1]))


if __name__ == "__main__":
    main()
