"""Worker processes (docs/workers.rst): a supervisor that binds once and
forks ``workers`` servers, replaces the ones that die, stops them
gracefully, replaces them one by one on SIGHUP, recycles them after
``max_requests``, and leaves no orphan when it is killed; ``--reload``.

Every server is a real subprocess on 127.0.0.1 (port 0, or a free port for
--reload) or a unix socket; every load is bounded in requests and time.
"""

import collections
import http.client
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from servers import Server, alive, free_port, http_connection

from waitress_c import create_server
from waitress_c.adjustments import Adjustments
from waitress_c.supervisor import Supervisor, describe_status

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The application: its answer names the code version, the pid serving and
# the pid that imported the module.  ?sleep=SECONDS sleeps first (with
# &only=PID, only in that process); with ?id=NAME it first writes its pid to
# the file NAME in RECORDS; ?size=N pads the body to at least N bytes.
APP = '''
import os, time

VERSION = "%(version)s"
IMPORTED_IN = os.getpid()
RECORDS = %(records)r


def app(environ, start_response):
    query = dict(
        p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p
    )
    if "id" in query:
        with open(os.path.join(RECORDS, query["id"]), "w") as f:
            f.write(str(os.getpid()))
    if "sleep" in query and int(query.get("only", os.getpid())) == os.getpid():
        time.sleep(float(query["sleep"]))
    body = ("%%s %%d %%d" %% (VERSION, os.getpid(), IMPORTED_IN)).encode()
    size = int(query.get("size", 0))
    if size > len(body):
        body += b" " + b"x" * (size - len(body) - 1)
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
'''

def write_app(directory, version="v1", name="wapp", extra=""):
    records = os.path.join(str(directory), "records")
    os.makedirs(records, exist_ok=True)
    path = os.path.join(str(directory), name + ".py")
    text = APP % {"version": version, "records": records} + extra
    with open(path, "w") as f:
        f.write(text)
    return path


def answer(body):
    """(version, pid, imported_in) of a response body."""
    version, pid, imported = body.decode().split()[:3]
    return version, int(pid), int(imported)


def get(port, path="/", timeout=10.0):
    """One request on a new connection: the body of a 200 (else raises).
    ``port``: a TCP port on 127.0.0.1, or a unix socket's path."""
    conn = http_connection(port if isinstance(port, str) else ("127.0.0.1", port), timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return body
    finally:
        conn.close()


# One request of a Load: when it ended, the body (None if it failed), the
# exception (None if answered), the path; the connection it went on (a
# number, new for each connection the load opens), the client thread that
# sent it, the response's Connection header (lowercased, "" if none, None
# if it failed) and how long the connection had been idle before it was
# sent (0.0 on a new connection).
Result = collections.namedtuple(
    "Result", "time body error path conn client connection idle")


class Load:
    """``threads`` clients sending GET ``path`` until stop() or ``seconds``
    or ``limit`` requests in all.  Each request goes on a new connection,
    or with ``keepalive`` on the client's connection until the server
    answers with ``Connection: close`` (or a request fails): then the
    client opens a new one.  ``closed_by_client`` holds the connections the
    clients closed themselves when the load ended."""

    def __init__(self, port, path="/", threads=4, seconds=30.0, limit=20000,
                 stop_on_failure=False, keepalive=False):
        self.port, self.path = port, path
        self.deadline = time.monotonic() + seconds
        self.limit = limit
        self.stop_on_failure = stop_on_failure
        self.keepalive = keepalive
        self.results = []  # Result, in the order they ended
        self.closed_by_client = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.counter = 0
        self.conns = itertools.count(1)
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True)
            for i in range(threads)
        ]
        for t in self.threads:
            t.start()

    def _next(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def _run(self, client):
        conn = conn_id = None
        last = 0.0  # when the previous response on conn ended
        try:
            while (not self.stopped.is_set()
                   and time.monotonic() < self.deadline):
                n = self._next()
                if n > self.limit:
                    break
                path = self.path.replace("{n}", str(n))
                if conn is None:
                    conn = http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=10.0)
                    conn_id, idle = next(self.conns), 0.0
                else:
                    idle = time.monotonic() - last
                body = err = header = None
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    data = resp.read()
                    assert resp.status == 200, (resp.status, data)
                    body = data
                    header = (resp.getheader("Connection") or "").lower()
                    done = resp.will_close or not self.keepalive
                except Exception as exc:  # noqa: BLE001 - recorded
                    err, done = exc, True
                last = time.monotonic()
                with self.lock:
                    self.results.append(Result(last, body, err, path, conn_id,
                                               client, header, idle))
                if done:
                    conn.close()
                    conn = None
                if err is not None and self.stop_on_failure:
                    break
        finally:
            if conn is not None:
                conn.close()
                with self.lock:
                    self.closed_by_client.add(conn_id)

    def stop(self):
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=40)
        return self.results

    def failures(self):
        with self.lock:
            return [r for r in self.results if r[2] is not None]

    def count(self):
        with self.lock:
            return len(self.results)


def waitress_c(*args):
    return [sys.executable, "-m", "waitress_c", "--listen=127.0.0.1:0"] + list(
        args
    )


@pytest.fixture
def app_dir(tmp_path):
    write_app(tmp_path)
    return tmp_path


@pytest.fixture
def servers():
    """Servers (servers.Server) to stop at the end: SIGTERM, then SIGKILL
    to them and their workers after 30 s."""
    started = []
    yield started
    for s in started:
        try:
            s.close(signal.SIGTERM, timeout=30)
        except AssertionError:
            pass


def start(servers, args, cwd, workers=2, **kw):
    """A server started (servers.Server), once ``workers`` workers serve."""
    s = Server(args, cwd, **kw)
    servers.append(s)
    s.wait_for(r"Worker pid \d+: serving", count=workers)
    return s


def seen_pids(port, want, seconds=15.0, path="/"):
    """Worker pids answering, until ``want`` distinct ones were seen."""
    pids = set()
    deadline = time.monotonic() + seconds
    while len(pids) < want and time.monotonic() < deadline:
        # A few concurrent slow requests spread over the workers.
        results = []

        def one():
            try:
                results.append(answer(get(port, "/?sleep=0.05"))[1])
            except Exception:  # noqa: BLE001 - the caller checks the count
                pass

        threads = [threading.Thread(target=one) for _ in range(2 * want)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        pids.update(results)
    return pids


def assert_no_failed_request(results, allowed=()):
    """No request failed, but for the ``allowed`` exception types.  A
    worker's graceful stop answers the requests on every connection it has
    accepted, so a connection closed without a response is a failure."""
    failures = [
        r for r in results
        if r[2] is not None and not isinstance(r[2], allowed)
    ]
    assert failures == [], (len(failures), len(results), failures[:3])


# The rule of a worker's graceful stop (max_requests reached, SIGTERM, a
# rolling restart): it stops accepting; every request it has received whole
# is answered; each keep-alive connection it holds gets a short grace in
# which at most one further request may arrive, and that one is answered
# with Connection: close; a connection idle for the whole grace is closed.
# A Load client sends its next request as soon as it has read a response,
# so it is never idle for a grace; only a client the machine left idle at
# least this long before a request may see that request fail.  It must not
# exceed the grace the core gives.
STOP_GRACE_FLOOR = 0.25

RECYCLED = re.compile(r"Worker pid (\d+): max_requests reached, recycling it")


def assert_recycling_rule(load, retired, max_requests):
    """What the keep-alive clients of ``load`` saw of the ``retired``
    workers (pids recycled after ``max_requests``) follows the rule above."""
    results = load.results
    answered = [r for r in results if r.body is not None]
    counts = collections.Counter(answer(r.body)[1] for r in answered)
    # The max_requests-th request stops a worker, and it is answered, as
    # is every one before it.
    for pid in retired:
        assert counts[pid] >= max_requests, (pid, counts)
    # A Connection: close answer of a worker means it had begun to stop,
    # so had stopped accepting: the client that got it never reaches that
    # worker again, on any of its later connections.
    for client in range(len(load.threads)):
        closed_by = set()
        for r in answered:
            if r.client != client:
                continue
            pid = answer(r.body)[1]
            assert pid not in closed_by, (
                "client %d: pid %d answered on connection %d after its "
                "Connection: close" % (client, pid, r.conn))
            if r.connection == "close":
                closed_by.add(pid)
    # Every keep-alive connection a retired worker held (and the client did
    # not close at the end of the load) ended with an answer that said
    # Connection: close: the worker closed none of them without one.
    last = {}
    for r in results:
        last[r.conn] = r
    for conn, r in last.items():
        if (r.body is None or conn in load.closed_by_client
                or answer(r.body)[1] not in retired):
            continue
        assert r.connection == "close", (conn, r)
    # And no request failed, but one sent after its client had been idle
    # for a grace.
    failures = [
        r for r in results
        if r.error is not None
        and not (r.idle >= STOP_GRACE_FLOOR
                 and isinstance(r.error, (ConnectionError,
                                          http.client.RemoteDisconnected)))
    ]
    kinds = collections.Counter(type(r.error).__name__ for r in failures)
    assert failures == [], (len(failures), len(results), dict(kinds),
                            failures[:3])


# -- settings and API ---------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [{"workers": 0}, {"workers": "-1"}, {"max_requests": -1},
     {"max_requests_jitter": "-5"}],
)
def test_bad_worker_settings_are_refused(kw):
    with pytest.raises(ValueError):
        Adjustments(**kw)


def test_default_is_one_process_and_no_supervisor():
    server = create_server(lambda e, s: [], listen="127.0.0.1:0")
    try:
        assert not isinstance(server, Supervisor)
    finally:
        server.close()
        for sock in server.sockets:
            sock.close()


def test_create_server_with_workers_returns_a_bound_supervisor():
    sup = create_server(lambda e, s: [], listen="127.0.0.1:0", workers=3)
    try:
        assert isinstance(sup, Supervisor)
        assert sup.adj.workers == 3
        assert sup.worker_pids == []  # nothing forked before run()
        port = int(sup.effective_port)
        assert sup.effective_host == "127.0.0.1" and port > 0
        # Bound and listening already: a connection waits in the backlog.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        for sock in sup.sockets:
            sock.close()


def test_max_requests_alone_uses_the_supervisor():
    sup = create_server(lambda e, s: [], listen="127.0.0.1:0", max_requests=5)
    try:
        assert isinstance(sup, Supervisor) and sup.adj.workers == 1
    finally:
        for sock in sup.sockets:
            sock.close()


def test_describe_status():
    assert describe_status(3 << 8) == "exit status 3"
    assert describe_status(signal.SIGKILL) == "killed by signal SIGKILL"


# -- serving ----------------------------------------------------------------------


def test_n_workers_all_serve(app_dir, servers):
    s = start(servers, waitress_c("--workers=3", "--threads=2", "wapp:app"),
              app_dir, workers=3)
    workers = s.worker_pids()
    assert len(workers) == 3
    pids = seen_pids(s.port, 3)
    assert pids == set(workers)
    assert s.proc.pid not in pids
    # The supervisor itself: one thread, no event loop (no epoll instance).
    assert os.listdir("/proc/%d/task" % s.proc.pid) == [str(s.proc.pid)]
    fds = os.listdir("/proc/%d/fd" % s.proc.pid)
    links = []
    for fd in fds:
        try:
            links.append(os.readlink("/proc/%d/fd/%s" % (s.proc.pid, fd)))
        except OSError:
            pass
    assert not [x for x in links if "eventpoll" in x or "eventfd" in x], links
    # Every worker has its loop and its threads.
    for pid in workers:
        assert len(os.listdir("/proc/%d/task" % pid)) >= 3


def test_pid_file_holds_the_supervisors_pid(app_dir, servers):
    path = app_dir / "wc.pid"
    s = start(servers, waitress_c("--workers=2", "--pid=%s" % path, "wapp:app"),
              app_dir)
    # The workers serve: the supervisor wrote the file before it forked them.
    assert path.read_text() == "%d\n" % s.proc.pid
    assert s.proc.pid not in s.worker_pids()
    code, output = s.close(signal.SIGTERM, timeout=30)
    assert code == 0, output
    assert not path.exists()


def test_app_is_imported_in_each_worker(app_dir, servers):
    s = start(servers, waitress_c("--workers=2", "wapp:app"), app_dir)
    for _ in range(10):
        _, pid, imported = answer(get(s.port))
        assert imported == pid  # imported after the fork, in the worker


def test_preload_imports_once_in_the_supervisor(app_dir, servers):
    s = start(servers, waitress_c("--workers=2", "--preload", "wapp:app"),
              app_dir)
    for _ in range(10):
        _, pid, imported = answer(get(s.port))
        assert imported == s.proc.pid != pid


def test_boot_failure_stops_with_status_1(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('no database')\n")
    proc = subprocess.run(
        waitress_c("--workers=2", "broken:app"),
        cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "RuntimeError: no database" in proc.stderr
    assert "failed to boot (exit status 3)" in proc.stderr
    assert "Error: worker pid" in proc.stderr


def test_unix_socket_and_serve_api(tmp_path, servers):
    """serve(app, workers=2, unix_socket=...) from Python."""
    write_app(tmp_path)
    path = str(tmp_path / "w.sock")
    script = (
        "import logging, wapp, waitress_c\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "waitress_c.serve(wapp.app, unix_socket=%r, workers=2, threads=2)\n"
        % path
    )
    s = start(servers, [sys.executable, "-c", script], tmp_path,
              ready=re.compile(r"Serving on http://unix:"))
    pids = seen_pids(path, 2)
    assert pids == set(s.worker_pids())
    _, pid, imported = answer(get(path))
    assert imported == s.proc.pid  # serve() got an imported application
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_callers_sockets_are_shared_and_left_open(tmp_path, servers):
    """serve(app, sockets=[s], workers=2): the caller's socket serves from
    both workers and is still open in the caller afterwards."""
    write_app(tmp_path)
    script = (
        "import logging, socket, sys, wapp, waitress_c\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "s = socket.socket()\n"
        "s.bind(('127.0.0.1', 0))\n"
        "s.listen(64)\n"
        "waitress_c.serve(wapp.app, sockets=[s], workers=2, threads=2)\n"
        "print('after serve: fileno', s.fileno(), flush=True)\n"
    )
    s = start(servers, [sys.executable, "-c", script], tmp_path)
    assert seen_pids(s.port, 2) == set(s.worker_pids())
    s.signal(signal.SIGINT)
    assert s.wait() == 0
    fileno = int(re.search(r"after serve: fileno (-?\d+)", s.output).group(1))
    assert fileno >= 0


# -- supervision --------------------------------------------------------------


def slow_requests(port, n, seconds, tag):
    """Start ``n`` slow requests in threads; returns (threads, results) with
    results[id] = body or the exception."""
    results = {}

    def one(i):
        rid = "%s%d" % (tag, i)
        try:
            results[rid] = get(port, "/?id=%s&sleep=%s" % (rid, seconds),
                               timeout=seconds + 20)
        except Exception as exc:  # noqa: BLE001 - checked by the caller
            results[rid] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def records(app_dir, tag=""):
    """{request id: pid} of the requests the application has started."""
    out = {}
    folder = app_dir / "records"
    for name in os.listdir(folder):
        if name.startswith(tag):
            text = (folder / name).read_text()
            if text:
                out[name] = int(text)
    return out


def test_sigkill_of_a_worker_loses_only_its_requests(app_dir, servers):
    s = start(servers, waitress_c("--workers=2", "--threads=2", "wapp:app"),
              app_dir)
    threads, results = slow_requests(s.port, 4, 4.0, "k")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        started = records(app_dir, "k")
        if len(set(started.values())) == 2 or len(started) == 4:
            break
        time.sleep(0.05)
    started = records(app_dir, "k")
    assert started
    victim = sorted(started.values())[0]
    os.kill(victim, signal.SIGKILL)
    done_before = set(results)  # none, unless the machine is very slow
    for t in threads:
        t.join(timeout=30)
    for rid, pid in started.items():
        if rid in done_before:
            continue
        if pid == victim:
            assert isinstance(results[rid], Exception), rid
        else:
            assert isinstance(results[rid], bytes), (rid, results[rid])
            assert answer(results[rid])[1] == pid
    s.wait_for(r"Worker pid %d died \(killed by signal SIGKILL\); starting "
               r"a replacement" % victim)
    s.wait_for(r"Worker pid \d+: serving", count=3)
    pids = seen_pids(s.port, 2)
    assert len(pids) == 2 and victim not in pids
    assert pids == set(s.worker_pids())


def test_sighup_rolls_new_code_in_without_a_failed_request(app_dir, servers):
    s = start(servers, waitress_c("--workers=2", "--threads=2", "wapp:app"),
              app_dir)
    old = set(s.worker_pids())
    load = Load(s.port, threads=4, seconds=30)
    try:
        time.sleep(0.5)
        write_app(app_dir, version="v2-new")  # another size: no stale .pyc
        s.signal(signal.SIGHUP)
        s.wait_for("Rolling restart complete", timeout=25)
        for pid in old:
            s.wait_for(r"Worker pid %d exited \(exit status 0\)" % pid,
                       timeout=25)
        time.sleep(0.5)
    finally:
        results = load.stop()
    assert len(results) > 50
    new = set(s.worker_pids())
    assert len(new) == 2 and not new & old
    after = [answer(get(s.port)) for _ in range(6)]
    assert all(v == "v2-new" and pid in new for v, pid, _ in after)
    versions = [answer(r[1])[0] for r in results if r[1] is not None]
    assert versions[0] == "v1" and versions[-1] == "v2-new"
    assert_no_failed_request(results)


def test_sigterm_under_load_finishes_what_was_accepted(app_dir, servers):
    s = start(servers, waitress_c("--workers=2", "--threads=4",
                                  "--shutdown-timeout=20", "wapp:app"),
              app_dir)
    workers = s.worker_pids()
    load = Load(s.port, path="/?id=t{n}&sleep=0.3", threads=6, seconds=30,
                stop_on_failure=True)
    time.sleep(1.0)
    s.signal(signal.SIGTERM)
    status = s.wait(timeout=30)
    results = load.stop()
    assert status == 0
    started = records(app_dir, "t")
    assert len(started) >= 6
    by_id = {r[3].split("id=")[1].split("&")[0]: r for r in results}
    for rid in started:
        assert rid in by_id, rid
        assert by_id[rid][2] is None, (rid, by_id[rid][2])  # answered
    # Connections after the stop are refused, and no worker is left.
    with pytest.raises(OSError):
        get(s.port, timeout=2)
    assert not [p for p in workers if alive(p)]
    assert "SIGTERM: stopping the workers gracefully" in s.output
    # Refused: after the stop.  Reset: waiting in the kernel's accept queue
    # when the listener closed, never accepted by a worker.
    assert_no_failed_request(
        results, allowed=(ConnectionRefusedError, ConnectionResetError))


def test_max_requests_recycles_without_a_failed_request(app_dir, servers):
    """Two keep-alive clients through four or five recycles of one worker
    (max_requests=20): what they see follows the rule of a graceful stop
    (assert_recycling_rule), and no request fails.  How many requests a
    worker answers beyond its 20th depends on the machine (the other
    client's requests received before its loop has begun the stop), so no
    bound is put on it."""
    s = start(servers, waitress_c("--max-requests=20", "--threads=2",
                                  "wapp:app"),
              app_dir, workers=1)
    load = Load(s.port, threads=2, seconds=30, limit=100, keepalive=True)
    for t in load.threads:
        t.join(timeout=40)
    results = load.stop()
    assert len(results) == 100
    pids = {answer(r.body)[1] for r in results if r.body is not None}
    retired = {int(p) for p in RECYCLED.findall(s.output)} & pids
    assert len(retired) >= 3, (retired, pids)
    assert_recycling_rule(load, retired, 20)
    deadline = time.monotonic() + 10
    while [p for p in retired if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in retired if alive(p)] == []


def test_keepalive_clients_lose_nothing_to_recycling(app_dir, servers):
    """Six keep-alive clients for 6 s against two workers recycled every
    200 requests: dozens of recycles, not one failed request (each stopping
    worker answers what it has received, and Connection: close tells a
    client to go elsewhere)."""
    s = start(servers, waitress_c("--workers=2", "--max-requests=200",
                                  "wapp:app"), app_dir)
    load = Load(s.port, threads=6, seconds=6, limit=60000, keepalive=True)
    for t in load.threads:
        t.join(timeout=30)
    results = load.stop()
    pids = {answer(r.body)[1] for r in results if r.body is not None}
    retired = {int(p) for p in RECYCLED.findall(s.output)} & pids
    assert len(retired) >= 2, (len(results), retired, pids)
    assert_recycling_rule(load, retired, 200)


def test_ttin_and_ttou_change_the_worker_count(app_dir, servers):
    s = start(servers, waitress_c("--workers=2", "wapp:app"), app_dir)
    s.signal(signal.SIGTTIN)
    s.wait_for(r"Worker pid \d+: serving", count=3)
    assert len(s.worker_pids()) == 3
    s.signal(signal.SIGTTOU)
    s.wait_for("SIGTTOU: 2 workers wanted")
    s.wait_for(r"\(one worker less\)")
    deadline = time.monotonic() + 15
    while len(s.worker_pids()) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(s.worker_pids()) == 2
    assert seen_pids(s.port, 2) == set(s.worker_pids())


def test_killed_supervisor_leaves_no_orphan(app_dir, servers):
    s = start(servers, waitress_c("--workers=2", "wapp:app"), app_dir)
    workers = s.worker_pids()
    threads, results = slow_requests(s.port, 1, 1.5, "o")
    deadline = time.monotonic() + 5
    while not records(app_dir, "o") and time.monotonic() < deadline:
        time.sleep(0.02)
    s.proc.kill()  # SIGKILL
    s.proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while [p for p in workers if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in workers if alive(p)] == []
    for t in threads:
        t.join(timeout=20)
    # The request in flight was finished: the workers stopped gracefully.
    assert isinstance(results["o0"], bytes), results["o0"]
    with pytest.raises(OSError):
        get(s.port, timeout=2)


# -- --reload ---------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_restarts_when_a_file_changes(app_dir, servers, workers):
    pytest.importorskip("hupper")
    port = free_port()
    args = [sys.executable, "-m", "waitress_c", "--reload",
            "--listen=127.0.0.1:%d" % port, "--workers=%d" % workers,
            "--shutdown-timeout=5", "wapp:app"]
    s = Server(args, app_dir)
    servers.append(s)
    deadline = time.monotonic() + 20
    first = None
    while first is None and time.monotonic() < deadline:
        try:
            first = answer(get(port, timeout=2))
        except (OSError, AssertionError, http.client.HTTPException):
            time.sleep(0.1)
    assert first is not None and first[0] == "v1"
    # hupper learns of the module within a second or two of its import and
    # then polls its mtime: touch the file again until the change is seen.
    path = write_app(app_dir, version="v2-reloaded")
    deadline = time.monotonic() + 40
    touched = time.monotonic()
    now = None
    while time.monotonic() < deadline:
        try:
            now = answer(get(port, timeout=2))
            if now[0] == "v2-reloaded":
                break
        except (OSError, AssertionError, http.client.HTTPException):
            pass
        # Until the reload begins, and no more: a touch later would start
        # another.
        reloading = "wapp.py changed; reloading" in s.output
        if not reloading and time.monotonic() - touched > 3:
            os.utime(path)
            touched = time.monotonic()
        time.sleep(0.2)
    assert now is not None and now[0] == "v2-reloaded", s.output
    assert "wapp.py changed; reloading" in s.output
    # hupper's monitor passes SIGTERM on to the server as a graceful stop.
    s.signal(signal.SIGTERM)
    assert s.wait(timeout=30) == 0


# An application whose import never ends (within a minute): it writes the
# file ``booting`` first, so a test knows the import has begun.
BLOCKED_IMPORT = """
import os, time
open(os.path.join(os.path.dirname(__file__), "booting"), "w").close()
for _ in range(600):
    time.sleep(0.1)
app = None
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_sigterm_while_the_app_imports_is_a_clean_stop(
        app_dir, servers, workers):
    """hupper's monitor passes its SIGTERM on to a server that has not yet
    set its handlers (it is importing the application): that server ends
    with status 0, at once, and so does the monitor (it ended with 241, the
    server's death by SIGTERM as hupper reports it)."""
    pytest.importorskip("hupper")
    (app_dir / "blocked.py").write_text(BLOCKED_IMPORT)
    args = [sys.executable, "-m", "waitress_c", "--reload",
            "--listen=127.0.0.1:0", "--workers=%d" % workers,
            "--shutdown-timeout=30", "blocked:app"]
    s = Server(args, app_dir, ready=r"Starting monitor for PID \d+")
    servers.append(s)
    deadline = time.monotonic() + 60
    while not (app_dir / "booting").exists():
        assert time.monotonic() < deadline and s.poll() is None, s.output
        time.sleep(0.05)
    s.signal(signal.SIGTERM)
    # Before the 40 s hupper would wait for the server (30 + 10).
    assert s.wait(timeout=30) == 0, s.output
    assert "forcefully killing" not in s.output


def test_reload_reports_a_server_killed_by_a_signal_as_a_shell_does(
        app_dir, servers):
    """The monitor's status is that of the server it last ran; a server
    killed by SIGKILL is 137 (128 + 9), not hupper's sys.exit(-9) (247)."""
    pytest.importorskip("hupper")
    port = free_port()
    args = [sys.executable, "-m", "waitress_c", "--reload",
            "--listen=127.0.0.1:%d" % port, "wapp:app"]
    s = Server(args, app_dir)
    servers.append(s)
    _, pid, _ = get_when_serving(port)
    assert pid != s.proc.pid  # hupper's server, not its monitor
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.signal(signal.SIGTERM)
    assert s.wait(timeout=30) == 128 + signal.SIGKILL, s.output


def get_when_serving(port, timeout=30.0):
    """The answer of a server that may not be listening yet (a --reload
    restart): retried until it comes, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return answer(get(port, timeout=5))
        except (OSError, AssertionError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def reload_to(s, path, version, count):
    """Write the application as ``version`` and touch it until the
    ``count``-th reload begins (hupper watches a module from a second or
    two after its import)."""
    write_app(os.path.dirname(path), version=version)
    deadline = time.monotonic() + 30
    touched = time.monotonic()
    while s.output.count("wapp.py changed; reloading") < count:
        assert time.monotonic() < deadline and s.proc.poll() is None, s.output
        if time.monotonic() - touched > 2:
            os.utime(path)
            touched = time.monotonic()
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_with_shutdown_timeout_0_lets_a_long_request_finish(
        app_dir, servers, workers):
    """--reload with shutdown_timeout=0: hupper waits for the server it
    stops as long as the server waits for its requests, so a request
    longer than KILL_MARGIN, in flight when a file changes, is answered
    whole before the new code serves."""
    pytest.importorskip("hupper")
    port = free_port()
    args = [sys.executable, "-m", "waitress_c", "--reload",
            "--listen=127.0.0.1:%d" % port, "--workers=%d" % workers,
            "--threads=4", "--shutdown-timeout=0", "wapp:app"]
    s = Server(args, app_dir)
    servers.append(s)
    assert get_when_serving(port)[0] == "v1"
    # A first reload: hupper watches wapp.py from now on.
    path = str(app_dir / "wapp.py")
    reload_to(s, path, "v2", 1)
    deadline = time.monotonic() + 30
    while get_when_serving(port)[0] != "v2":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    req = LongRequest(port, app_dir, "r")
    pid = req.started()
    reload_to(s, path, "v3-after-the-long-one", 2)
    assert req.in_flight()
    version, served_by, _ = answer(req.body())
    assert (version, served_by) == ("v2", pid)
    deadline = time.monotonic() + 30
    while get_when_serving(port)[0] != "v3-after-the-long-one":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "forcefully killing" not in s.output
    assert "did not stop in time" not in s.output
    s.signal(signal.SIGTERM)
    assert s.wait(timeout=30) == 0


def test_reload_without_hupper_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from waitress_c import runner

    monkeypatch.setitem(sys.modules, "hupper", None)  # import fails
    calls = []
    status = runner.run(
        ["waitress-c-serve", "--reload", "wsgiref.simple_server:demo_app"],
        _serve=lambda app, **kw: calls.append(app),
    )
    err = capsys.readouterr().err
    assert status == 1 and calls == []
    assert "--reload needs the hupper package" in err
    assert "pip install 'waitress_c[reload]'" in err


def test_reload_never_kills_before_the_server_would():
    """hupper's shutdown_interval: past the supervisor's SIGKILL
    (shutdown_timeout + KILL_MARGIN), and no deadline for 0 (which hupper
    would take as "kill at once")."""
    from waitress_c.runner import reload_shutdown_interval
    from waitress_c.supervisor import KILL_MARGIN

    for timeout in (0.5, 30, 3600):
        adj = Adjustments(shutdown_timeout=timeout)
        assert reload_shutdown_interval(adj) > timeout + KILL_MARGIN
    assert reload_shutdown_interval(Adjustments(shutdown_timeout=0)) >= 1e9


def test_runner_passes_a_loader_unless_preload(monkeypatch):
    from waitress_c import runner
    from waitress_c.supervisor import AppLoader

    calls = []

    def fake(app, **kw):
        calls.append((app, kw))

    app = "wsgiref.simple_server:demo_app"
    assert runner.run(["x", "--workers=2", app], _serve=fake) == 0
    assert runner.run(["x", "--workers=2", "--preload", app], _serve=fake) == 0
    assert runner.run(["x", "--max-requests=9", app], _serve=fake) == 0
    assert runner.run(["x", app], _serve=fake) == 0
    loader = calls[0][0]
    assert isinstance(loader, AppLoader) and calls[0][1] == {"workers": "2"}
    from wsgiref.simple_server import demo_app

    assert loader.load() is demo_app
    assert calls[1][0] is demo_app
    assert isinstance(calls[2][0], AppLoader)
    assert calls[3][0] is demo_app


def test_close_before_run_starts_no_worker():
    sup = create_server(lambda e, s: [], listen="127.0.0.1:0", workers=2)
    port = int(sup.effective_port)
    sup.close()
    sup.run()  # returns at once
    assert sup.worker_pids == []
    with pytest.raises(OSError):
        get(port, timeout=2)  # its sockets are closed


def test_close_from_another_thread_stops_gracefully(tmp_path, servers):
    write_app(tmp_path)
    script = (
        "import logging, threading, time, urllib.request, wapp, waitress_c\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "sup = waitress_c.create_server(wapp.app, listen='127.0.0.1:0',\n"
        "                               workers=2)\n"
        "url = 'http://127.0.0.1:%s/?sleep=0.5' % sup.effective_port\n"
        "def closer():\n"
        "    for _ in range(100):\n"
        "        try:\n"
        "            body = urllib.request.urlopen(url, timeout=5).read()\n"
        "            break\n"
        "        except OSError:\n"
        "            time.sleep(0.1)\n"
        "    print('answered before close:', body.decode(), flush=True)\n"
        "    sup.close()\n"
        "threading.Thread(target=closer, daemon=True).start()\n"
        "sup.run()\n"
        "print('run returned', flush=True)\n"
    )
    s = Server([sys.executable, "-c", script], tmp_path,
               ready=re.compile("run returned"), timeout=30)
    servers.append(s)
    assert s.wait() == 0
    assert "answered before close: v1" in s.output
    assert "close(): stopping the workers gracefully" in s.output


def test_workers_still_busy_after_shutdown_timeout_are_killed(app_dir, servers):
    """A request longer than shutdown_timeout does not hold the stop up:
    the worker is cut off (by its core's own deadline, or by the
    supervisor's SIGKILL 5 s later), and the supervisor still exits 0."""
    s = start(servers, waitress_c("--workers=2", "--shutdown-timeout=0.5",
                                  "wapp:app"), app_dir)
    threads, results = slow_requests(s.port, 1, 30, "x")
    deadline = time.monotonic() + 5
    while not records(app_dir, "x") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert records(app_dir, "x")
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait(timeout=20) == 0
    assert time.monotonic() - t0 < 0.5 + 5 + 3
    for t in threads:
        t.join(timeout=10)
    assert isinstance(results["x0"], Exception)


# -- shutdown_timeout=0: no deadline ----------------------------------------

# How long the long requests below take: longer than the 5 s (KILL_MARGIN)
# after which a stopping worker was once killed even with shutdown_timeout 0.
LONG = 9
LONG_SIZE = 256 * 1024  # their body: many writes, read whole or not at all


class LongRequest:
    """GET /?id=RID&sleep=LONG&size=LONG_SIZE on its own connection, in a
    thread; with ``only``, only that worker sleeps (the others answer at
    once)."""

    def __init__(self, port, app_dir, rid, only=None):
        self.app_dir, self.rid = app_dir, rid
        path = "/?id=%s&sleep=%s&size=%d" % (rid, LONG, LONG_SIZE)
        if only is not None:
            path += "&only=%d" % only
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(port, path),
                                       daemon=True)
        self.thread.start()

    def _run(self, port, path):
        try:
            self.result = get(port, path, timeout=LONG + 30)
        except Exception as exc:  # noqa: BLE001 - checked by the caller
            self.result = exc

    def started(self, timeout=20.0):
        """The pid of the worker that started it (waits for its record)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = records(self.app_dir, self.rid).get(self.rid)
            if pid is not None:
                return pid
            time.sleep(0.02)
        raise AssertionError("request %s not started" % self.rid)

    def in_flight(self):
        return self.thread.is_alive()

    def body(self):
        """The whole body (raises if the response was cut off)."""
        self.thread.join(timeout=LONG + 40)
        assert not self.thread.is_alive()
        if isinstance(self.result, Exception):
            raise AssertionError("request %s failed: %r"
                                 % (self.rid, self.result))
        assert len(self.result) == LONG_SIZE, len(self.result)
        return self.result


def long_request_on(port, app_dir, pid, tag):
    """A LongRequest that worker ``pid`` serves: requests are sent until
    one lands there (the others are answered at once)."""
    for i in range(50):
        req = LongRequest(port, app_dir, "%s%d" % (tag, i), only=pid)
        if req.started() == pid:
            return req
        req.body()
    raise AssertionError("no request reached worker pid %d" % pid)


def oldest_worker(s):
    return int(s.wait_for(r"Worker pid (\d+): starting").group(1))


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "max_requests",
                                 "SIGTTOU"])
def test_shutdown_timeout_0_lets_a_long_request_finish(app_dir, servers, how):
    """With shutdown_timeout=0 a graceful stop has no deadline: a request
    longer than KILL_MARGIN is answered whole whatever stopped its worker
    (the supervisor's SIGTERM, a rolling restart, max_requests, one worker
    less), and the worker exits by itself, not by SIGKILL."""
    args = ["--shutdown-timeout=0", "--threads=4"]
    if how == "max_requests":
        args += ["--max-requests=3"]
        workers = 1
    else:
        args += ["--workers=2"]
        workers = 2
    s = start(servers, waitress_c(*args, "wapp:app"), app_dir,
              workers=workers)
    if how in ("SIGHUP", "SIGTTOU"):  # both stop the oldest worker first
        req = long_request_on(s.port, app_dir, oldest_worker(s), "l")
    else:
        req = LongRequest(s.port, app_dir, "l")
    pid = req.started()
    if how == "SIGTERM":
        s.signal(signal.SIGTERM)
        s.wait_for("SIGTERM: stopping the workers gracefully")
    elif how == "SIGHUP":
        s.signal(signal.SIGHUP)
        # After a new worker has booted, however long that takes.
        s.wait_for(r"Worker pid %d: stopping gracefully \(replaced\)" % pid,
                   timeout=LONG + 20)
    elif how == "max_requests":
        for _ in range(2):  # the 3rd request: max_requests
            assert answer(get(s.port, timeout=20))[1] == pid
        s.wait_for(r"Worker pid %d: max_requests reached" % pid)
    else:
        s.signal(signal.SIGTTOU)
        s.wait_for(r"Worker pid %d: stopping gracefully \(one worker less\)"
                   % pid)
    if how != "SIGHUP":  # no boot to wait for: the stop began in flight
        assert req.in_flight()
    assert answer(req.body())[1] == pid
    s.wait_for(r"Worker pid %d exited \(exit status 0\)" % pid,
               timeout=LONG + 20)
    if how == "SIGTERM":
        assert s.wait(timeout=20) == 0
    else:
        assert get(s.port, timeout=20)  # the others (or a replacement) serve
    assert "did not stop in time" not in s.output


def test_max_requests_jitter_spreads_the_limits(app_dir, servers):
    """Each worker's limit is max_requests plus 0..jitter: with one client
    at a time, every retired worker served between 5 and 5 + 10."""
    s = start(servers, waitress_c("--max-requests=5",
                                  "--max-requests-jitter=10", "wapp:app"),
              app_dir, workers=1)
    load = Load(s.port, threads=1, seconds=30, limit=80)
    for t in load.threads:
        t.join(timeout=40)
    results = load.stop()
    answered = [answer(r[1])[1] for r in results if r[1] is not None]
    counts = {}
    for pid in answered:
        counts[pid] = counts.get(pid, 0) + 1
    retired = list(dict.fromkeys(answered))[:-1]
    assert len(retired) >= 4
    for pid in retired:
        assert 5 <= counts[pid] <= 15, counts
    assert_no_failed_request(results)


@pytest.mark.parametrize("timeout", ["60", "0"])
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGQUIT])
def test_second_signal_stops_at_once(app_dir, servers, second, timeout):
    """Even without a deadline (shutdown_timeout=0)."""
    s = start(servers, waitress_c("--workers=2",
                                  "--shutdown-timeout=" + timeout,
                                  "wapp:app"), app_dir)
    threads, results = slow_requests(s.port, 1, 30, "q")
    deadline = time.monotonic() + 5
    while not records(app_dir, "q") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert records(app_dir, "q")
    s.signal(signal.SIGTERM)
    s.wait_for("SIGTERM: stopping the workers gracefully")
    time.sleep(0.3)
    assert s.proc.poll() is None  # waiting for the slow request
    t0 = time.monotonic()
    s.signal(second)
    assert s.wait(timeout=20) == 0
    assert time.monotonic() - t0 < 5
    for t in threads:
        t.join(timeout=10)
    assert isinstance(results["q0"], Exception)
    assert "%s: stopping the workers now" % second.name in s.output


def test_app_loader_calls_factories_and_refuses_none(tmp_path, monkeypatch):
    from waitress_c.supervisor import AppLoader

    (tmp_path / "factory_mod.py").write_text(
        "def app(e, s):\n    return []\n"
        "def make():\n    return app\n"
        "def nothing():\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import factory_mod

    assert AppLoader("factory_mod:make", call=True).load() is factory_mod.app
    assert AppLoader("factory_mod.app").load() is factory_mod.app
    with pytest.raises(ValueError, match="is None \\(returned by --call\\)"):
        AppLoader("factory_mod:nothing", call=True).load()
