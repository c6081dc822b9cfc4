"""Benchmark waitress_c against its peers, side by side, in one run.

    python benchmarks/run.py                  # every scenario, every server
    python benchmarks/run.py --quick          # hello at 100 connections:
                                              # waitress_c, waitress, bjoern
    python benchmarks/run.py --servers waitress_c,bjoern --scenarios hello-1
    python benchmarks/run.py --base main --servers waitress_c,bjoern \
        --scenarios hello-100             # the working tree against main

Each server runs from its own venv under ``benchmarks/venvs/<name>``, created
on demand with the interpreter running this script; waitress_c is installed
there from a copy of this repository's working tree, as a release build.
nginx (Debian) serves the same bytes as static files: the machine's I/O
reference, not a WSGI peer.  Load comes from wrk, only ever against
127.0.0.1 and bounded by ``--duration``.  The server is pinned to CPU 0 and
wrk to CPU 1 with taskset, and an unpinned pass follows.  Servers are
interleaved (A B C, A B C, ...), each scenario is repeated ``--rounds``
times, and the tables quote medians.  docs/benchmarks.rst says how to read
them.  ``--base REV`` adds ``waitress_c@<sha>``, waitress_c built from that
commit (only the package: the harness and its apps are this tree's), run in
the same rounds with the same settings, and the report gives the working
tree's figures over its.  The report goes to
``benchmarks/results/<date>-<commit>.md`` and to stdout; progress goes to
stderr.
"""

import argparse
import json
import os
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import client
import peers
import report
import scenarios
import slowread
from common import (HOST, LOGS, LUA, MIB, RESULTS, ROOT, VENVS, WORK, log,
                    one_line, tail, write_text)

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = 0
CLIENT_CPU = 1
RUNNING = set()
# slowread1k: the server is quiet once its RSS moves less than this and the
# kernel's queues not at all for QUIET_FOR seconds.
RSS_SLACK = 256 * 1024
QUIET_FOR = 2.0
QUIET_TIMEOUT = 30.0
READ_BACK_TIMEOUT = 60.0
# longpoll100: the CPU window opens this long after the requests are sent
# (every one is parked by then) and closes well before the app wakes.
LONGPOLL_SETTLE = 1.5
LONGPOLL_WINDOW = 7.0


# ------------------------------------------------------------------ helpers

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_nofile():
    """Lift the soft open-file limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def git(*args):
    try:
        return subprocess.check_output(
            ["git", "-C", ROOT] + list(args), stderr=subprocess.DEVNULL
        ).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# ---------------------------------------------------- process measurements

def read_stat(pid):
    """Fields of /proc/PID/stat from the state on (field 3 is index 0)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def group_pids(pgid):
    """Every live process of the process group ``pgid``: a server started
    in its own session keeps its workers (gunicorn, nginx) in it."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = read_stat(int(name))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(name))
    return pids


def group_cpu(pgid):
    """utime + stime of the group, reaped children included, in seconds."""
    ticks = 0
    for pid in group_pids(pgid):
        f = read_stat(pid)
        if f is not None:
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def group_status(pgid, key):
    """A kB field of /proc/PID/status summed over the group, in bytes."""
    total = 0
    for pid in group_pids(pgid):
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


# ------------------------------------------------------- a running server

class Running:
    """A started server: its own session and process group, a free
    loopback port, and a log under .work/logs.  ``stop()`` ends the group."""

    def __init__(self, server, scenario, pinned):
        self.server = server
        self.port = free_port()
        self.logpath = os.path.join(LOGS, "%s.log" % server.name)
        argv = server.command(self.port, scenario)
        if pinned:
            argv = ["taskset", "-c", str(SERVER_CPU)] + argv
        self.out = open(self.logpath, "ab")
        self.out.write(("\n==== %s %s %s\n$ %s\n" % (
            time.strftime("%H:%M:%S"), scenario.name,
            "pinned" if pinned else "unpinned",
            " ".join(shlex.quote(a) for a in argv))).encode())
        self.out.flush()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self.out,
                stderr=subprocess.STDOUT, env=server.env(), cwd=WORK,
                start_new_session=True,
            )
        except BaseException:
            self.out.close()
            raise
        self.pgid = self.proc.pid
        RUNNING.add(self)

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited with %s at start: %s" % (
                    self.proc.returncode, tail(self.logpath, 3))
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return None
            except OSError:
                time.sleep(0.05)
        return "not listening after %.0f s" % timeout

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Signal the whole group, then SIGKILL whatever is left."""
        try:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.pgid, self.server.stop_signal())
                    self.proc.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log("warning: %s (pid %d) did not exit" % (
                    self.server.name, self.pgid))
        finally:
            self.out.close()
            RUNNING.discard(self)


def stop_all():
    for run in list(RUNNING):
        run.stop()


# ----------------------------------------------------------------- loading

def wrk_argv(scenario, port, duration, pinned):
    threads = max(1, min(1 if pinned else 2, scenario.conns))
    argv = ["wrk", "-t%d" % threads, "-c%d" % scenario.conns,
            "-d%ds" % duration, "--timeout", "5s", "--latency", "-s", LUA]
    for h in scenario.headers:
        argv += ["-H", h]
    argv += ["%s://%s:%d%s" % ("https" if scenario.tls else "http", HOST,
                                port, scenario.path), "--"]
    argv += scenario.mode
    if pinned:
        argv = ["taskset", "-c", str(CLIENT_CPU)] + argv
    return argv


def run_wrk(argv, timeout):
    """Run wrk; returns (summary dict, None) or (None, why it failed)."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout,
                              cwd=WORK)
    except subprocess.TimeoutExpired:
        return None, "wrk did not finish in %.0f s" % timeout
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):]), None
    return None, "wrk failed (%d): %s" % (
        proc.returncode, one_line(proc.stderr.decode(errors="replace")
                                  or out, 120))


class Probe(threading.Thread):
    """Halfway through the load, time one request on a new connection: a
    server that serves only as many connections as it has threads leaves it
    waiting, however good wrk's own latency looks."""

    def __init__(self, port, delay, timeout, pinned, tls=False):
        threading.Thread.__init__(self, daemon=True)
        self.port, self.delay, self.timeout = port, delay, timeout
        self.pinned = pinned
        self.tls = tls
        self.ms = None

    def run(self):
        if self.pinned:
            os.sched_setaffinity(0, {CLIENT_CPU})  # this thread only
        time.sleep(self.delay)
        seconds = client.timed_request(self.port, "/hello", self.timeout,
                                       self.tls)
        self.ms = None if seconds is None else seconds * 1000.0


def start_checked(server, scenario, pinned):
    """Start ``server`` and run the scenario's preflight.  Returns
    (Running, error, notes); the caller stops the Running."""
    run = Running(server, scenario, pinned)
    try:
        err = run.wait_ready()
        notes = []
        if err is None:
            err, notes = scenarios.preflight(run.port, scenario)
    except BaseException:
        run.stop()
        raise
    return run, err, notes


def measure(server, scenario, pinned, opts):
    """Start, check, warm, load and stop one server: one round's result."""
    result = {"server": server.name}
    run, err, result["notes"] = start_checked(server, scenario, pinned)
    try:
        if err is not None:
            result["error"] = err
            return result
        if opts.warmup > 0:
            run_wrk(wrk_argv(scenario, run.port, opts.warmup, pinned),
                    opts.warmup + 30)
        probe = Probe(run.port, opts.duration / 2.0,
                      max(1.0, opts.duration / 2.0 - 0.5), pinned,
                      scenario.tls)
        cpu0 = group_cpu(run.pgid)
        probe.start()
        stats, err = run_wrk(
            wrk_argv(scenario, run.port, opts.duration, pinned),
            opts.duration + 60)
        cpu1 = group_cpu(run.pgid)
        probe.join(opts.duration + 5)
        if err is not None:
            result["error"] = err
            return result
        requests = stats["requests"]
        if requests == 0:
            result["error"] = "wrk completed no request"
            return result
        seconds = stats["duration_us"] / 1e6
        kinds = {k: stats[k] for k in report.LOAD_KEYS if stats[k]}
        if stats["max_us"] == 0:
            # wrk records one latency per completed pipelined batch (or
            # request): none means no batch ever completed.
            result["notes"].append("wrk recorded no latency")
        result.update(
            rps=requests / seconds,
            # wrk answers 0 for a percentile its histogram cannot place.
            p50=stats["p50_us"] / 1000.0 or None,
            p99=stats["p99_us"] / 1000.0 or None,
            errors=sum(kinds.values()),
            error_kinds=kinds,
            cpu_us=(cpu1 - cpu0) * 1e6 / requests,
            rss=group_status(run.pgid, "VmHWM"),
            requests=requests,
            probe_ms=probe.ms,
        )
        if not run.alive():
            result["error"] = "server died during the run: %s" % tail(
                run.logpath, 2)
        return result
    finally:
        run.stop()


def checked_alive(run, result):
    """``result``, with an error if the server died during the measurement."""
    if not run.alive():
        result["error"] = "server died: %s" % tail(run.logpath, 2)
    return result


def release(run, socks, affinity):
    """Close a measurement's connections, give this process its CPUs back and
    stop the server."""
    for s in socks:
        s.close()
    os.sched_setaffinity(0, affinity)
    run.stop()


def measure_idle(server, scenario, pinned, opts):
    """Open ``--idle-conns`` keep-alive connections (each sends one request
    and reads the answer, then sits idle), then measure the RSS they cost and
    the time a new connection waits for an answer.  Time-boxed."""
    result = {"server": server.name}
    count = opts.idle_conns
    run, err, result["notes"] = start_checked(server, scenario, pinned)
    socks = []
    affinity = os.sched_getaffinity(0)
    try:
        if err is not None:
            result["error"] = err
            return result
        if pinned:
            os.sched_setaffinity(0, {CLIENT_CPU})
        for _ in range(50):  # warm up so steady-state pools are allocated
            client.timed_request(run.port)
        time.sleep(0.3)
        rss0 = group_status(run.pgid, "VmRSS")
        deadline = time.monotonic() + opts.idle_timeout
        socks, failures = client.open_idle(
            run.port, count, deadline, client.build_request("GET", "/hello"))
        time.sleep(0.5)
        rss1 = group_status(run.pgid, "VmRSS")
        latencies = []
        for _ in range(11):
            seconds = client.timed_request(run.port)
            if seconds is None:
                failures += 1
            else:
                latencies.append(seconds * 1000.0)
        open_now = client.still_open(socks)
        result.update(
            opened=len(socks), wanted=count, still_open=open_now,
            rss_per_conn=(rss1 - rss0) / len(socks) if socks else None,
            new_p50=statistics.median(latencies) if latencies else None,
            new_max=max(latencies) if latencies else None,
            errors=failures + (len(socks) - open_now),
            rss=group_status(run.pgid, "VmHWM"),
        )
        return checked_alive(run, result)
    finally:
        release(run, socks, affinity)


def measure_slowread(server, scenario, pinned, opts):
    """Open ``scenario.conns`` connections that each ask for the 1 MiB body
    and read nothing.  Once the server is quiet, compare the growth of its
    RSS with the bytes it must be holding (asked for, minus what sits in the
    kernel's socket queues); then read every response to its end and check
    it.  Time-boxed."""
    result = {"server": server.name}
    run, err, result["notes"] = start_checked(server, scenario, pinned)
    socks = []
    affinity = os.sched_getaffinity(0)
    try:
        if err is not None:
            result["error"] = err
            return result
        if pinned:
            os.sched_setaffinity(0, {CLIENT_CPU})
        for _ in range(5):  # let the server allocate what one response needs
            client.exchange(run.port, scenario.request(), 1, 10.0)
        time.sleep(0.3)
        rss0 = group_status(run.pgid, "VmRSS")
        socks, failures = slowread.open_readers(
            run.port, scenario.conns, scenario.request(),
            time.monotonic() + 30.0)

        def sample():
            return (group_status(run.pgid, "VmRSS"),) + (
                slowread.kernel_queues(run.port))

        (rss1, send_q, recv_q), waited, quiet = slowread.wait_quiet(
            sample, (RSS_SLACK, 0, 0), QUIET_FOR, QUIET_TIMEOUT)
        if not quiet:
            result["notes"].append("still changing after %.0f s" % waited)
        t0 = time.monotonic()
        readings = slowread.read_back(socks,
                                      time.monotonic() + READ_BACK_TIMEOUT)
        read_s = time.monotonic() - t0
        socks = []
        whole, asked, problems = slowread.account(readings, MIB)
        result["notes"] += problems[:3]
        queued = asked - send_q - recv_q
        growth = rss1 - rss0
        result.update(
            opened=len(readings), wanted=scenario.conns, rss_growth=growth,
            in_kernel=send_q + recv_q, queued=queued,
            growth_ratio=growth / queued if queued > 0 else None,
            quiet_s=waited, whole=whole, read_s=read_s,
            errors=failures + len(readings) - whole,
            rss=group_status(run.pgid, "VmHWM"),
        )
        return checked_alive(run, result)
    finally:
        release(run, socks, affinity)


class Parked(threading.Thread):
    """One long-poll request on its own connection: its answer, and when it
    came."""

    def __init__(self, port, request, timeout):
        threading.Thread.__init__(self, daemon=True)
        self.port, self.request, self.timeout = port, request, timeout
        self.problem = "no answer"
        self.at = None

    def run(self):
        responses, _, problem = client.exchange(self.port, self.request, 1,
                                                self.timeout)
        self.at = time.monotonic()
        if problem is not None:
            self.problem = problem
        elif responses[0].status != 200:
            self.problem = "status %d" % responses[0].status
        elif responses[0].body != scenarios.HELLO:
            self.problem = "wrong body (%d bytes)" % len(responses[0].body)
        else:
            self.problem = None


def measure_longpoll(server, scenario, pinned, opts):
    """Park ``scenario.conns`` requests in the sleeping app at once and
    measure the server's CPU over a window inside the sleep, with no other
    load; then check every answer.  There is no preflight: one request
    takes the whole sleep, and every answer is checked here."""
    # Imported here, not at the top: apps writes its data file at import,
    # and peers.DataDir has already told it where by now.
    from apps import LONGPOLL_SECONDS

    result = {"server": server.name, "notes": []}
    run = Running(server, scenario, pinned)
    affinity = os.sched_getaffinity(0)
    try:
        err = run.wait_ready()
        if err is not None:
            result["error"] = err
            return result
        if pinned:
            os.sched_setaffinity(0, {CLIENT_CPU})  # the threads inherit it
        timeout = 2 * LONGPOLL_SECONDS + 10
        parked = [Parked(run.port, scenario.request(), timeout)
                  for _ in range(scenario.conns)]
        t0 = time.monotonic()
        for p in parked:
            p.start()
        time.sleep(LONGPOLL_SETTLE)
        cpu0, w0 = group_cpu(run.pgid), time.monotonic()
        time.sleep(LONGPOLL_WINDOW)
        cpu1, w1 = group_cpu(run.pgid), time.monotonic()
        for p in parked:
            p.join(max(0.0, t0 + timeout + 1 - time.monotonic()))
        good = [p for p in parked if p.problem is None]
        early = sum(1 for p in good if p.at < w1)
        # Answered more than 2 s after the sleep: it waited for a thread.
        late = sum(1 for p in good if p.at - t0 > LONGPOLL_SECONDS + 2)
        result["notes"] += sorted({p.problem for p in parked
                                   if p.problem})[:3]
        if early:
            result["notes"].append("%d answered inside the window" % early)
        if late:
            result["notes"].append("%d waited for a thread" % late)
        result.update(
            answered=len(good), wanted=scenario.conns,
            cpu_pct=(cpu1 - cpu0) / (w1 - w0) * 100.0, window_s=w1 - w0,
            last_s=max(p.at - t0 for p in good) if good else None,
            errors=len(parked) - len(good) + early + late,
            rss=group_status(run.pgid, "VmHWM"),
        )
        return checked_alive(run, result)
    finally:
        release(run, (), affinity)


# ------------------------------------------------------ HTTP/2 with h2load

H2LOAD_RE = {
    "rps": re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s"),
    "done": re.compile(r"requests: (\d+) total, \d+ started, \d+ done, "
                       r"(\d+) succeeded, (\d+) failed, (\d+) errored, "
                       r"(\d+) timeout"),
    "status": re.compile(r"status codes: (\d+) 2xx, \d+ 3xx, (\d+) 4xx, "
                         r"(\d+) 5xx"),
    "data": re.compile(r"traffic: .* \((\d+)\) data"),
    "mean": re.compile(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)"),
}


def h2load_argv(scenario, port, pinned, duration=None, requests=None):
    """h2load over h2c (prior knowledge): for ``duration`` seconds or
    ``requests`` in all."""
    argv = ["h2load", "-c", str(scenario.conns), "-m", str(scenario.streams),
            "-t", "1", "-T", "60"]
    if duration is not None:
        argv += ["-D", str(duration)]
    else:
        argv += ["-n", str(requests)]
    argv.append("http://%s:%d%s" % (HOST, port, scenario.path))
    if pinned:
        argv = ["taskset", "-c", str(CLIENT_CPU)] + argv
    return argv


def run_h2load(argv, timeout):
    """Run h2load; returns (figures dict, None) or (None, why it failed).
    The figures: rps, total, succeeded, failed, errored, timeout, ok2xx,
    bad (4xx and 5xx), data (DATA bytes) and mean_ms (mean time for a
    request)."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout,
                              cwd=WORK)
    except subprocess.TimeoutExpired:
        return None, "h2load did not finish in %.0f s" % timeout
    out = proc.stdout.decode(errors="replace")
    figures, err = parse_h2load(out)
    if figures is None and err is None:
        err = "h2load failed (%d): %s" % (
            proc.returncode, one_line(proc.stderr.decode(errors="replace")
                                      or out, 120))
    return figures, err


def parse_h2load(out):
    """h2load's report: (figures, None); (None, why) when it spoke
    something other than h2c; (None, None) when it has no figures."""
    found = {k: rx.search(out) for k, rx in H2LOAD_RE.items()}
    if found["done"] is None or found["rps"] is None:
        return None, None
    total, ok, failed, errored, tout = (int(x) for x in
                                        found["done"].groups())
    figures = dict(rps=float(found["rps"].group(1)), total=total,
                   succeeded=ok, failed=failed, errored=errored,
                   timeout=tout,
                   ok2xx=int(found["status"].group(1))
                   if found["status"] else 0,
                   bad=int(found["status"].group(2))
                   + int(found["status"].group(3)) if found["status"] else 0,
                   data=int(found["data"].group(1)) if found["data"] else 0,
                   mean_ms=None)
    if found["mean"] is not None:
        v, unit = float(found["mean"].group(1)), found["mean"].group(2)
        figures["mean_ms"] = v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    if "Application protocol: h2c" not in out:
        return None, "h2load did not speak h2c: %s" % one_line(out, 120)
    return figures, None


def h2_timed_request(port, path, timeout):
    """One request over a new h2c connection (the `h2` library): seconds
    to the whole answer, or None."""
    import h2.config
    import h2.connection
    import h2.events

    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            conn = h2.connection.H2Connection(
                config=h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":path", path),
                                  (":scheme", "http"),
                                  (":authority", HOST)], end_stream=True)
            s.sendall(conn.data_to_send())
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    return None
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.StreamEnded):
                        return time.monotonic() - t0
                s.sendall(conn.data_to_send())
    except (OSError, ImportError, Exception):  # noqa: BLE001 - no answer
        return None
    return None


class H2Probe(Probe):
    """The Probe over h2c: a server that speaks only HTTP/2 there
    (granian --http 2) answers no HTTP/1.1 request."""

    def run(self):
        if self.pinned:
            os.sched_setaffinity(0, {CLIENT_CPU})
        time.sleep(self.delay)
        seconds = h2_timed_request(self.port, "/hello", self.timeout)
        self.ms = None if seconds is None else seconds * 1000.0


def h2_preflight(scenario, port, pinned):
    """A few requests: every one 2xx, with the whole body (h2load counts
    DATA bytes).  Returns an error string or None."""
    n = max(scenario.streams, scenario.conns, 10)
    figures, err = run_h2load(h2load_argv(scenario, port, pinned,
                                          requests=n), 120)
    if err is not None:
        return err
    if figures["ok2xx"] != n:
        return "%d of %d requests answered 2xx" % (figures["ok2xx"], n)
    if figures["data"] != n * scenario.size:
        return "wrong body: %d DATA bytes for %d requests of %d" % (
            figures["data"], n, scenario.size)
    return None


def measure_h2load(server, scenario, pinned, opts):
    """Like ``measure``, with h2load over h2c instead of wrk: start,
    check, warm, load (``--duration`` after ``--warmup``) and stop.
    h2load gives no percentiles: p50 and p99 stay empty, and the mean
    time of a request is a note."""
    result = {"server": server.name, "notes": []}
    run = Running(server, scenario, pinned)
    try:
        err = run.wait_ready() or h2_preflight(scenario, run.port, pinned)
        if err is not None:
            result["error"] = err
            return result
        if opts.warmup > 0:
            run_h2load(h2load_argv(scenario, run.port, pinned,
                                   duration=opts.warmup), opts.warmup + 60)
        probe = H2Probe(run.port, opts.duration / 2.0,
                        max(1.0, opts.duration / 2.0 - 0.5), pinned)
        cpu0 = group_cpu(run.pgid)
        probe.start()
        figures, err = run_h2load(
            h2load_argv(scenario, run.port, pinned, duration=opts.duration),
            opts.duration + 60)
        cpu1 = group_cpu(run.pgid)
        probe.join(opts.duration + 5)
        if err is not None:
            result["error"] = err
            return result
        if figures["succeeded"] == 0:
            result["error"] = "h2load completed no request"
            return result
        kinds = {k: figures[k] for k in ("failed", "errored", "timeout")
                 if figures[k]}
        if figures["bad"]:
            kinds["status"] = figures["bad"]     # 4xx and 5xx
        if figures["mean_ms"] is not None:
            result["notes"].append("mean %.1f ms" % figures["mean_ms"])
        result.update(
            rps=figures["rps"], p50=None, p99=None,
            errors=sum(kinds.values()), error_kinds=kinds,
            cpu_us=(cpu1 - cpu0) * 1e6 / max(1, figures["total"]),
            rss=group_status(run.pgid, "VmHWM"),
            requests=figures["total"], probe_ms=probe.ms,
        )
        if not run.alive():
            result["error"] = "server died during the run: %s" % tail(
                run.logpath, 2)
        return result
    finally:
        run.stop()


MEASURE = {"load": measure, "idle": measure_idle,
           "slowread": measure_slowread, "longpoll": measure_longpoll}
MEASURE["h2load"] = measure_h2load


def run_passes(opts, servers):
    """Every pass, scenario, round and server, servers interleaved within a
    round.  Returns summaries keyed by (pass, scenario, server)."""
    raw = {}
    ready = [s for s in servers if s.reason is None]
    for pname, scen_names in opts.passes:
        pinned = pname == "pinned"
        for sc in scen_names:
            scen = scenarios.BY_NAME[sc]
            active = [s for s in ready if scen.admits(s)
                      and (s.pinnable or not pinned)]
            for rnd in range(opts.rounds):
                for srv in active:
                    how = MEASURE[scen.kind]
                    try:
                        r = how(srv, scen, pinned, opts)
                    except Exception as exc:  # noqa: BLE001 - reported
                        r = {"server": srv.name,
                             "error": "harness error: %r" % (exc,)}
                    raw.setdefault((pname, sc, srv.name), []).append(r)
                    log("[%s] %s %d/%d %-10s %s" % (
                        pname, sc, rnd + 1, opts.rounds, srv.name,
                        progress_text(r)))
    return {k: report.summarize(v) for k, v in raw.items()}


def progress_text(r):
    fmt = report
    if "rps" in r:
        text = "%s req/s, p50 %s ms, p99 %s ms, %s errors, %s us/req" % (
            fmt.fmt_num(r["rps"]), fmt.fmt_ms(r["p50"]), fmt.fmt_ms(r["p99"]),
            fmt.fmt_num(r["errors"]), fmt.fmt_num(r["cpu_us"], 1))
        text += ", new conn %s ms" % fmt.fmt_ms(r["probe_ms"])
    elif "queued" in r:
        text = ("%d/%d open, RSS +%s MB for %s MB held (%s), %d whole in "
                "%.1f s" % (r["opened"], r["wanted"], fmt.fmt_mb(
                    r["rss_growth"]), fmt.fmt_mb(r["queued"]),
                    fmt.fmt_ratio(r["rss_growth"], r["queued"]),
                    r["whole"], r["read_s"]))
    elif "opened" in r:
        text = "%d/%d open, %s per connection, new request %s ms" % (
            r["opened"], r["wanted"], fmt.fmt_bytes(r["rss_per_conn"]),
            fmt.fmt_ms(r["new_p50"]))
    elif "cpu_pct" in r:
        text = "%d/%d answered, server CPU %.2f%% of a core" % (
            r["answered"], r["wanted"], r["cpu_pct"])
    else:
        text = ""
    if "error" in r:
        text += (" " if text else "") + "FAILED: " + r["error"]
    if r.get("notes"):
        text += " [%s]" % "; ".join(r["notes"])
    return text


# --------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark waitress_c against its peers, side by side "
                    "(docs/benchmarks.rst).")
    p.add_argument("--quick", action="store_true",
                   help="hello-100 only, for waitress_c, waitress and "
                        "bjoern, pinned: under a minute")
    p.add_argument("--servers", help="comma-separated, from: " +
                   ",".join(peers.ALL + peers.EXTRA))
    p.add_argument("--scenarios", help="comma-separated, from: " +
                   ",".join(scenarios.NAMES + scenarios.TLS_NAMES))
    p.add_argument("--rounds", type=int, default=3,
                   help="repeats of each scenario (default 3)")
    p.add_argument("--duration", type=int,
                   help="seconds of load per run (default 5; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=1,
                   help="seconds of untimed load before each run (default 1)")
    p.add_argument("--no-pin", action="store_true",
                   help="a single unpinned pass, no taskset")
    p.add_argument("--unpinned", default=None,
                   help="scenarios of the unpinned pass that follows the "
                        "pinned one: 'all', 'none' or a list (default %s; "
                        "none with --quick)" % ",".join(scenarios.UNPINNED))
    p.add_argument("--idle-conns", type=int, default=10000,
                   help="connections held open by idle10k (default 10000)")
    p.add_argument("--idle-timeout", type=int, default=60,
                   help="seconds allowed for opening them (default 60)")
    p.add_argument("--base", metavar="REV",
                   help="also run waitress_c built from this git revision "
                        "(a branch, tag or commit of this repository), as "
                        "waitress_c@<sha>, interleaved with the working "
                        "tree's and reported as ratios to it; adds "
                        "waitress_c to --servers if missing")
    p.add_argument("--python", metavar="VERSION[,...]",
                   help="also run the working tree's waitress_c on these "
                        "interpreters, as waitress_c-py<version>: a "
                        "version (3.14 and 3.15 from the chroot of make "
                        "pythons, others pyenv's or python3.NN on PATH) "
                        "or a path")
    p.add_argument("--reinstall", action="store_true",
                   help="rebuild every venv, even one that failed before")
    p.add_argument("--output", help="the report file (default "
                   "benchmarks/results/<date>-<commit>.md)")
    opts = p.parse_args(argv)

    def names(text, known, what):
        out = [x.strip() for x in text.split(",") if x.strip()]
        for x in out:
            if x not in known:
                p.error("unknown %s %r (known: %s)" % (what, x,
                                                       ", ".join(known)))
        return out

    if opts.servers:
        opts.server_names = names(opts.servers, peers.ALL + peers.EXTRA,
                                  "server")
    else:
        opts.server_names = peers.QUICK if opts.quick else peers.ALL
    if opts.base is not None:
        if not opts.base.strip():
            p.error("--base needs a git revision")
        if "waitress_c" not in opts.server_names:
            opts.server_names = ["waitress_c"] + list(opts.server_names)
    opts.pythons = [x.strip() for x in (opts.python or "").split(",")
                    if x.strip()]
    for spec in opts.pythons:
        try:
            peers.find_python(spec)
        except ValueError as exc:
            p.error("--python: %s" % exc)
    if opts.scenarios:
        opts.scenario_names = names(opts.scenarios,
                                    scenarios.NAMES + scenarios.TLS_NAMES,
                                    "scenario")
    else:
        opts.scenario_names = ([scenarios.HEADLINE] if opts.quick
                               else scenarios.NAMES)
    if opts.duration is None:
        opts.duration = 3 if opts.quick else 5
    if opts.rounds < 1 or opts.duration < 1 or opts.warmup < 0:
        p.error("--rounds and --duration must be >= 1, --warmup >= 0")
    if opts.unpinned is None:
        opts.unpinned = "none" if opts.quick else ",".join(
            scenarios.UNPINNED)
    if opts.unpinned == "all":
        extra = list(opts.scenario_names)
    elif opts.unpinned == "none":
        extra = []
    else:
        extra = [x for x in names(opts.unpinned,
                                  scenarios.NAMES + scenarios.TLS_NAMES,
                                  "scenario")
                 if x in opts.scenario_names]
    if opts.no_pin or os.cpu_count() < 2:
        opts.passes = [("unpinned", opts.scenario_names)]
    else:
        opts.passes = [("pinned", opts.scenario_names)]
        if extra:
            opts.passes.append(("unpinned", extra))
    opts.server_cpu, opts.client_cpu = SERVER_CPU, CLIENT_CPU
    opts.command = " ".join(["benchmarks/run.py"] + list(argv))
    return opts


def run_kind(opts):
    """The report's file name suffix: a quick or partial run never
    overwrites the full report of the same commit, and a run against a base
    (``-vs-<sha>``) never passes for a run of the peers."""
    vs = "-vs-%s" % opts.base_short if getattr(opts, "base", None) else ""
    if opts.quick:
        return vs + "-quick"
    if (opts.server_names != peers.ALL
            or opts.scenario_names != scenarios.NAMES or opts.pythons):
        return vs + "-partial"
    return vs


def make_servers(opts, data):
    """The Server objects, in the order of every round: a server named
    twice gets a twin (``name#2``), and the base, if any, comes right after
    the first waitress_c."""
    servers = []
    for n in opts.server_names:
        srv = peers.CLASSES[n](data, opts.reinstall)
        twins = sum(1 for x in servers if x.name.split("#")[0] == n)
        if twins:  # an A/A run: the same server again, for the noise
            srv.name = "%s#%d" % (n, twins + 1)
        servers.append(srv)
        if n == "waitress_c" and not twins and opts.base is not None:
            servers.append(peers.WaitressCAt(
                data, opts.base, opts.base_sha, opts.base_short,
                opts.reinstall))
    for spec in opts.pythons:
        servers.append(peers.WaitressCPython(data, spec, opts.reinstall))
    return servers


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if opts.base is not None:
        try:
            opts.base_sha, opts.base_short = peers.resolve_revision(opts.base)
        except ValueError as exc:
            sys.exit("cannot run: --base: %s" % exc)
    for d in (VENVS, WORK, LOGS, RESULTS):
        os.makedirs(d, exist_ok=True)
    nofile = raise_nofile()
    if nofile < opts.idle_conns + 200:
        opts.idle_conns = max(100, nofile - 200)
        log("open-file limit %d: idle10k holds %d connections" % (
            nofile, opts.idle_conns))
    for package, probe in (("wrk", "wrk"), ("util-linux", "taskset")):
        reason = peers.apt_install(package, probe)
        if reason:
            sys.exit("cannot run: " + reason)
    if any(scenarios.BY_NAME[n].kind == "h2load"
           for n in opts.scenario_names):
        reason = peers.apt_install("nghttp2-client", "h2load")
        if reason:
            sys.exit("cannot run: " + reason)

    short = git("rev-parse", "--short", "HEAD") or "nogit"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    opts.commit = short + ("-dirty" if dirty else "")

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    handlers = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGTERM, signal.SIGHUP)}
    started, t0 = time.time(), time.monotonic()
    data = peers.DataDir()
    try:
        servers = make_servers(opts, data)
        for srv in servers:
            srv.prepare()
            log("%-10s %s" % (srv.name, srv.version if srv.reason is None
                              else "unavailable: " + srv.reason))
        results = run_passes(opts, servers)
    finally:
        stop_all()
        data.remove()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    text = report.Report(opts, servers, results, started,
                         time.monotonic() - t0).render()
    out = opts.output or os.path.join(RESULTS, "%s-%s%s.md" % (
        time.strftime("%Y-%m-%d", time.localtime(started)), opts.commit,
        run_kind(opts)))
    write_text(out, text)
    sys.stdout.write(text)
    log("wrote %s" % os.path.relpath(out, os.getcwd()))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        sys.exit("interrupted")
