"""Prometheus metrics (metrics=HOST:PORT): scraped with prometheus_client's
own parser while real clients load a real server, and checked exactly
against what the clients sent and received; with worker processes, one
scrape of the supervisor sees them all, also after a worker is replaced.
docs/metrics.rst describes the series."""

import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from http_helpers import Client, get, log_count, wait_log
from servers import SLOW, ServerProcess

APP = "apps_metrics:app"
METRICS_LINE = re.compile(r"Metrics on (http://\S+/metrics)")
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def start(**kw):
    kw.setdefault("metrics", "127.0.0.1:0")
    srv = ServerProcess(APP, **kw)
    srv.metrics_url = srv.wait_for(METRICS_LINE).group(1)
    return srv


def scrape(url):
    """{(sample name, ((label, value), ...)): value} of one scrape, and the
    families by name, through prometheus_client's parser."""
    with urllib.request.urlopen(url, timeout=10 * SLOW) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode("utf-8")
    samples, families = {}, {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, families


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def requests_total(samples):
    return sum(v for (name, _), v in samples.items() if name == "waitress_c_requests_total")


def wait_metrics(url, pred, timeout=20.0):
    """The first scrape for which pred(samples) holds, within `timeout`.
    (A response can reach its client a moment before the server counts it:
    the test waits for the count, with a generous bound.)"""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        samples, _ = scrape(url)
        if pred(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError("metrics never matched:\n%r" % samples)
        time.sleep(0.02)


# What the load sends: (method, path, expected status class).
MIX = [
    ("GET", "/", "2xx"),
    ("HEAD", "/", "2xx"),
    ("POST", "/status/404", "4xx"),
    ("PUT", "/status/302", "3xx"),
    ("DELETE", "/status/500", "5xx"),
    ("PATCH", "/status/204", "2xx"),
    ("OPTIONS", "/", "2xx"),
    ("PROPFIND", "/status/304", "3xx"),
]


def load(srv, connections=8, per_connection=25):
    """connections x per_connection keep-alive requests from as many
    threads; returns (bytes sent, bytes received, {(class, method): n})."""
    totals = {"out": 0, "in": 0}
    expect = {}
    lock = threading.Lock()
    errors = []

    def client(k):
        try:
            with Client(srv, timeout=10 * SLOW) as c:
                for i in range(per_connection):
                    method, path, cls = MIX[(k + i) % len(MIX)]
                    body = b"data%d" % i if method in ("POST", "PUT", "PATCH") else b""
                    data = get(path, method=method, body=body)
                    resp = c.request(data, head=method == "HEAD")
                    with lock:
                        totals["out"] += len(data)
                        totals["in"] += len(resp.raw)
                        key = (cls, method if method != "PROPFIND" else "other")
                        expect[key] = expect.get(key, 0) + 1
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60 * SLOW)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return totals["out"], totals["in"], expect


def test_counters_match_the_load_exactly():
    srv = start(threads=4)
    try:
        url = srv.metrics_url
        before, fams = scrape(url)
        assert requests_total(before) == 0
        assert fams["waitress_c_request_duration_seconds"].type == "histogram"
        assert fams["waitress_c_requests"].type == "counter"
        assert fams["waitress_c_connections"].type == "gauge"
        # Scrapes while the load runs parse, and counters never go back.
        seen = []
        stop = threading.Event()

        def scraper():
            while not stop.is_set() and len(seen) < 500:
                seen.append(requests_total(scrape(url)[0]))

        t = threading.Thread(target=scraper)
        t.start()
        try:
            sent, received, expect = load(srv)
        finally:
            stop.set()
            t.join(timeout=30 * SLOW)
        assert seen and seen == sorted(seen)
        n = sum(expect.values())
        assert n == 200
        s = wait_metrics(
            url,
            lambda s: requests_total(s) == n
            and value(s, "waitress_c_sent_bytes_total") == received,
        )
        for cls in CLASSES:
            for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"):
                assert value(s, "waitress_c_requests_total", code=cls, method=method) == expect.get(
                    (cls, method), 0
                ), (cls, method)
        assert value(s, "waitress_c_received_bytes_total") == sent
        assert value(s, "waitress_c_sent_bytes_total") == received
        assert value(s, "waitress_c_connections_accepted_total") == 8
        assert value(s, "waitress_c_request_duration_seconds_count") == n
        assert value(s, "waitress_c_request_duration_seconds_bucket", le="+Inf") == n
        assert 0 < value(s, "waitress_c_request_duration_seconds_sum") < 60 * n
        assert value(s, "waitress_c_threads") == 4
        s = wait_metrics(url, lambda s: value(s, "waitress_c_connections") == 0)
        assert value(s, "waitress_c_busy_threads") == 0
        assert value(s, "waitress_c_task_queue_depth") == 0
        assert value(s, "waitress_c_spooled_request_bodies_total") == 0
    finally:
        srv.close()


def test_queue_high_water_mark_and_gauges_with_every_thread_blocked(tmp_path):
    """More requests than threads, held in the app: the gauges show the
    busy threads and the waiting requests, the high-water mark stays, and
    the queue-depth warning says what to do, on one line."""
    srv = start(threads=2)
    gate = tmp_path / "open"
    clients = []
    try:
        url = srv.metrics_url
        assert value(scrape(url)[0], "waitress_c_task_queue_depth_max") == 0
        text = "WARNING:waitress_c.queue:Task queue depth is "
        before = log_count(srv, text)
        for _ in range(6):
            c = Client(srv, timeout=40 * SLOW)
            c.send(get("/gate?f=%s" % gate))
            clients.append(c)
        s = wait_metrics(
            url,
            lambda s: value(s, "waitress_c_busy_threads") == 2
            and value(s, "waitress_c_task_queue_depth") == 4,
        )
        assert value(s, "waitress_c_connections") == 6
        assert value(s, "waitress_c_task_queue_depth_max") > 0
        gate.write_text("")
        for c in clients:
            assert c.response().status == 200
        s = wait_metrics(
            url,
            lambda s: requests_total(s) == 6 and value(s, "waitress_c_busy_threads") == 0,
        )
        assert value(s, "waitress_c_task_queue_depth") == 0
        assert value(s, "waitress_c_task_queue_depth_max") >= 4
        assert wait_log(srv, text, before) > before
        line = [x for x in srv.stderr().splitlines() if text in x][-1]
        assert re.search(
            r"Task queue depth is \d+: all 2 threads were busy and \d+ requests "
            r"waited; raise --threads if the app waits on I/O, or add --workers "
            r"if it is CPU-bound \(see the metric waitress_c_task_queue_depth\)$",
            line,
        ), line
    finally:
        gate.write_text("")
        for c in clients:
            c.close()
        srv.close()


def test_parked_writer_and_spooled_body():
    srv = start(threads=2, outbuf_high_watermark=65536, inbuf_overflow=1024)
    try:
        url = srv.metrics_url
        with Client(srv, timeout=30 * SLOW) as c:
            # More than the socket buffers on both sides hold (a few MiB
            # each on loopback), and the client reads nothing: the worker
            # parks on the full queue.
            c.send(get("/big?n=%d" % (32 << 20)))
            wait_metrics(url, lambda s: value(s, "waitress_c_parked_writers") == 1)
            resp = c.response()
            assert len(resp.body) == 32 << 20
        wait_metrics(url, lambda s: value(s, "waitress_c_parked_writers") == 0)
        resp, body = srv.request("POST", "/", body=b"y" * 4096)
        assert resp.status == 200
        wait_metrics(url, lambda s: value(s, "waitress_c_spooled_request_bodies_total") == 1)
    finally:
        srv.close()


def test_metrics_endpoint_answers_only_its_path():
    srv = start(threads=1)
    try:
        base = srv.metrics_url.rsplit("/", 1)[0]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/other", timeout=10 * SLOW)
        assert err.value.code == 404
        req = urllib.request.Request(srv.metrics_url, data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10 * SLOW)
        assert err.value.code == 405
        # The scrapes are not requests of the application's server.
        assert requests_total(scrape(srv.metrics_url)[0]) == 0
    finally:
        srv.close()


def _listening_ports(pid):
    """TCP ports that process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_off_means_no_listener():
    srv = ServerProcess(APP, threads=2)
    try:
        resp, _ = srv.request("GET", "/")
        assert resp.status == 200
        assert _listening_ports(srv.pid) == {srv.port}
        assert "Metrics on" not in srv.output
    finally:
        srv.close()
    srv = start(threads=2)
    try:
        port = int(srv.metrics_url.rsplit(":", 1)[1].split("/")[0])
        assert _listening_ports(srv.pid) == {srv.port, port}
    finally:
        srv.close()


def test_bad_metrics_address_is_refused():
    from waitress_c.adjustments import Adjustments

    for bad in ("9100", "localhost:http", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            Adjustments(metrics=bad)
    assert Adjustments(metrics="[::1]:9100").metrics == "[::1]:9100"
    assert Adjustments().metrics is None


def _fresh_connections(srv, n):
    """n requests, each on a connection of its own (so that every worker
    process takes some)."""
    for _ in range(n):
        resp, body = srv.request("GET", "/")
        assert resp.status == 200 and body == b"hello"


def test_workers_one_scrape_sums_every_process_and_survives_a_replacement():
    srv = start(threads=2, workers=2)
    try:
        url = srv.metrics_url
        wait_metrics(url, lambda s: value(s, "waitress_c_workers") == 2)
        _fresh_connections(srv, 100)
        s = wait_metrics(url, lambda s: requests_total(s) == 100)
        assert value(s, "waitress_c_requests_total", code="2xx", method="GET") == 100
        assert value(s, "waitress_c_connections_accepted_total") == 100
        assert value(s, "waitress_c_request_duration_seconds_count") == 100
        assert value(s, "waitress_c_threads") == 4  # two processes of two
        # One worker is stopped (SIGTERM) and replaced: what it counted
        # stays in the totals.
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGTERM)
        s = wait_metrics(
            url,
            lambda s: value(s, "waitress_c_worker_restarts_total", cause="exit") == 1
            and value(s, "waitress_c_workers") == 2
            and value(s, "waitress_c_threads") == 4,
        )
        assert victim not in srv.worker_pids()
        assert requests_total(s) == 100
        assert value(s, "waitress_c_connections_accepted_total") == 100
        _fresh_connections(srv, 20)
        s = wait_metrics(url, lambda s: requests_total(s) == 120)
        assert value(s, "waitress_c_request_duration_seconds_count") == 120
        assert value(s, "waitress_c_worker_restarts_total", cause="crash") == 0
    finally:
        srv.close()


def test_workers_max_requests_recycling_keeps_the_totals():
    srv = start(threads=1, workers=1, max_requests=10)
    try:
        url = srv.metrics_url
        _fresh_connections(srv, 30)
        s = wait_metrics(
            url,
            lambda s: requests_total(s) == 30
            and value(s, "waitress_c_worker_restarts_total", cause="max_requests") >= 2,
        )
        assert value(s, "waitress_c_requests_total", code="2xx", method="GET") == 30
    finally:
        srv.close()


def test_idle_scrape_connections_are_bounded():
    """Connections to the metrics port that never send a request are kept
    at most SCRAPES_MAX at a time (each until REQUEST_TIMEOUT): beyond
    that the listener is not polled and the rest wait in its queue, so a
    flood of them cannot take every file descriptor of the supervisor (its
    workers' pipes) nor of the server.  Real sockets, the endpoint's own
    poll-loop interface driven here."""
    import select
    import socket

    from waitress_c.metrics import SCRAPES_MAX, MetricsEndpoint

    ep = MetricsEndpoint("127.0.0.1:0", lambda: "x 1\n")
    clients = []
    try:
        listener = ep.sock.fileno()
        for _ in range(SCRAPES_MAX + 40):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex((ep.host, ep.port))
            clients.append(c)
            if listener in dict(ep.fds()):
                # Accept what has arrived (loopback: the handshake is done).
                select.select([ep.sock], [], [], 10 * SLOW)
                ep.handle(listener)
        assert len(ep.conns) == SCRAPES_MAX
        assert listener not in dict(ep.fds())
        # One of them goes: room for the next, which is answered.
        fd = next(iter(ep.conns))
        ep.conns[fd].sock.shutdown(socket.SHUT_RDWR)
        ep.handle(fd)
        assert len(ep.conns) == SCRAPES_MAX - 1
        assert listener in dict(ep.fds())
    finally:
        for c in clients:
            c.close()
        ep.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_port_is_released_when_run_fails(tmp_path, workers):
    """A server whose run() fails before serving (here: its pid file path
    is a directory) releases the metrics port with its listeners."""
    import socket

    from waitress_c import create_server
    from waitress_c.server import PidfileError

    (tmp_path / "pid").mkdir()
    srv = create_server(
        lambda environ, start_response: [], listen="127.0.0.1:0", workers=workers,
        metrics="127.0.0.1:0", pidfile=str(tmp_path / "pid"),
    )
    endpoint = srv._metrics
    port = endpoint.port
    with pytest.raises(PidfileError):
        srv.run()
    assert endpoint.sock.fileno() == -1
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))  # free again
    finally:
        s.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_port_in_use_is_a_one_line_error(tmp_path, workers):
    """The command line reports a metrics address it cannot bind as it
    reports the application's: one line, status 1, no traceback."""
    import socket
    import sys

    from servers import run_cli

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        done = run_cli(
            [sys.executable, "-m", "waitress_c", "--listen=127.0.0.1:0",
             "--workers=" + workers, "--metrics=127.0.0.1:%d" % port,
             "wsgiref.simple_server:demo_app"],
            cwd=tmp_path, timeout=60 * SLOW,
        )
    finally:
        busy.close()
    assert done.returncode == 1, done.stderr
    assert done.stderr.endswith(
        "Error: cannot listen for metrics on 127.0.0.1:%d: Address already in use\n" % port
    ), done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_out_of_file_descriptors_pauses_the_listener():
    """accept() failing for want of file descriptors leaves the connection
    in the listener's queue, so the listener stays readable: it is not
    polled for a second, instead of waking the loop (the supervisor's)
    again at once, in a busy loop, until a descriptor is free."""
    import resource
    import socket

    from waitress_c.metrics import MetricsEndpoint

    ep = MetricsEndpoint("127.0.0.1:0", lambda: "x 1\n")
    client = socket.create_connection((ep.host, ep.port), timeout=10)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler = []
    try:
        # Every descriptor below the limit taken.
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        try:
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        listener = ep.sock.fileno()
        assert listener in dict(ep.fds())
        ep.handle(listener)  # EMFILE
        assert not ep.conns
        assert listener not in dict(ep.fds())
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        client.close()
        ep.close()
