"""Workers that cannot hang unnoticed (docs/workers.rst): ``boot_timeout``
kills a worker that does not become ready and keeps the old workers of a
rolling restart serving; ``timeout`` names the requests stuck in the
application and replaces a worker whose every thread is stuck (a single
server only logs them).

Real processes on 127.0.0.1 port 0; the application is gated by files
(every wait in it bounded), and every assertion waits for a log line or a
response with a generous bound, never for a time to pass.
"""

import os
import re
import signal
import socket
import sys
import time

import pytest

from servers import SERVING, Server, alive, http_connection

from waitress_c import create_server
from waitress_c.adjustments import OPTION_MAP, Adjustments
from waitress_c.runner import _parse_args

# Its import waits while the file "closed" exists; /block/... waits until
# the file "release" exists (both at most 120 s); /gil runs a regular
# expression whose backtracking holds the GIL for longer than any test
# (re never lets the GIL go); every answer is the serving pid.
APP = '''
import os, re, time

HERE = os.path.dirname(os.path.abspath(__file__))


def wait(name, present):
    deadline = time.monotonic() + 120
    while os.path.exists(os.path.join(HERE, name)) != present:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


wait("closed", False)


def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/block"):
        wait("release", True)
    if environ["PATH_INFO"] == "/gil":
        re.match(r"(a+)+$", "a" * 64 + "b")
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "gated.py").write_text(APP)
    return tmp_path


@pytest.fixture
def servers(app_dir):
    """Servers to stop at the end (the gates opened first)."""
    started = []
    yield started
    (app_dir / "release").write_text("")
    for path in (app_dir / "closed",):
        if path.exists():
            path.unlink()
    for s in started:
        try:
            s.close(signal.SIGTERM, timeout=30)
        except AssertionError:
            pass


def serve(servers, app_dir, *args, ready=SERVING):
    s = Server(
        [sys.executable, "-m", "waitress_c", "--listen=127.0.0.1:0"]
        + list(args) + ["gated:app"],
        app_dir, ready=ready, timeout=60,
    )
    servers.append(s)
    return s


def get_pid(port, path="/", timeout=10.0):
    """The pid that answered a GET, or None if the request failed."""
    conn = http_connection(("127.0.0.1", port), timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return int(body) if resp.status == 200 else None
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def answered_by(port, accept, seconds=30.0):
    """The pid of the first answer ``accept(pid)`` likes, asking again
    (new connections) for up to ``seconds``; None if none came."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid = get_pid(port, timeout=5.0)
        if pid is not None and accept(pid):
            return pid
        time.sleep(0.1)
    return None


def restarts(output, cause):
    """waitress_c_worker_restarts_total{cause=...} of one scrape of the
    metrics the server's output announced."""
    import urllib.request

    url = re.search(r"Metrics on (http://\S+/metrics)", output).group(1)
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(r'^waitress_c_worker_restarts_total\{cause="%s"\} (\d+)$' % cause,
                  text, re.M)
    assert m, text
    return int(m.group(1))


def block(port, tag):
    """A request that stays in the application until "release": the
    socket, left open (its answer is not awaited)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /block/%s HTTP/1.1\r\nHost: t\r\n\r\n" % tag.encode())
    return sock


# -- settings ---------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"timeout": -1}, {"boot_timeout": -0.5},
                                {"timeout": "1e10"}])
def test_negative_or_huge_timeouts_are_refused(kw):
    with pytest.raises(ValueError, match="seconds >= 0"):
        Adjustments(**kw)


def test_defaults_and_flags():
    adj = Adjustments()
    assert adj.timeout == 0 and adj.boot_timeout == 60
    for argv, timeout in ((["--timeout=2.5"], 2.5), (["-t", "3"], 3.0)):
        kw, args = _parse_args(argv + ["--boot-timeout=10", "m:app"])
        adj = Adjustments(**{k: v for k, v in kw.items() if k in OPTION_MAP})
        assert (adj.timeout, adj.boot_timeout, args) == (timeout, 10, ["m:app"])


def test_busy_requests_on_an_idle_server_lists_nothing():
    srv = create_server(lambda e, s: [], listen="127.0.0.1:0", threads=3)
    try:
        assert srv._core.busy_requests(0) == (3, [])
        with pytest.raises(ValueError):
            srv._core.busy_requests(-1)
    finally:
        srv.close()


# -- boot_timeout -----------------------------------------------------------


def test_worker_whose_import_hangs_is_killed_and_serving_waits(
        app_dir, servers):
    (app_dir / "closed").write_text("")
    s = serve(servers, app_dir, "--workers=2", "--boot-timeout=1",
              "--metrics=127.0.0.1:0",
              ready=r"Supervisor pid \d+: starting 2 workers")
    m = s.wait_for(r"Worker pid (\d+) not ready after 1 s: killed",
                   timeout=30)
    pid = int(m.group(1))
    s.wait_for(r"Worker pid %d died \(killed by signal SIGKILL\); "
               r"starting a replacement" % pid, timeout=30)
    # No worker is ready: the listeners are not announced.
    assert "Serving on" not in s.output
    (app_dir / "closed").unlink()
    m = s.wait_for(SERVING, timeout=60)
    # Announced only once a worker serves, and answered.
    assert re.search(r"Worker pid \d+: serving", s.output[: m.start()])
    port = int(m.group("port"))
    assert get_pid(port) in s.worker_pids()
    assert pid not in s.worker_pids()
    # Counted among the restarts, under its cause.
    assert restarts(s.output, "boot_timeout") >= 1


def test_rolling_restart_whose_new_worker_cannot_boot_keeps_the_old(
        app_dir, servers):
    s = serve(servers, app_dir, "--workers=2", "--boot-timeout=2")
    s.wait_for(r"Worker pid \d+: serving", count=2)
    old = set(s.worker_pids())
    assert len(old) == 2
    (app_dir / "closed").write_text("")  # a new worker's import hangs
    s.signal(signal.SIGHUP)
    m = s.wait_for(r"Worker pid (\d+): starting \(to replace pid (\d+)\)",
                   timeout=30)
    new, replaced = int(m.group(1)), int(m.group(2))
    assert replaced in old
    s.wait_for(r"Worker pid %d not ready after 2 s: killed" % new,
               timeout=30)
    s.wait_for(r"Rolling restart abandoned: the new worker did not become "
               r"ready; pid %d keeps serving" % replaced, timeout=30)
    # The old workers answer, no other.
    for _ in range(6):
        assert get_pid(s.port) in old
    assert set(s.worker_pids()) == old
    assert "stopping gracefully" not in s.output


# -- timeout ----------------------------------------------------------------


def test_worker_with_every_thread_stuck_is_replaced(app_dir, servers):
    s = serve(servers, app_dir, "--workers=2", "--threads=2", "--timeout=1",
              "--shutdown-timeout=2", "--metrics=127.0.0.1:0")
    s.wait_for(r"Worker pid \d+: serving", count=2)
    # Four requests on two workers of two threads: one worker at least
    # has both threads on one of them.
    socks = [block(s.port, "r%d" % i) for i in range(4)]
    try:
        m = s.wait_for(r"Worker pid (\d+): all 2 threads stuck in the "
                       r"application: (.*)", timeout=30)
        hung = int(m.group(1))
        named = re.findall(r"GET (/block/r\d) \((\d+\.\d) s\)", m.group(2))
        assert len(named) == 2, m.group(0)
        assert all(float(age) >= 1.0 for _, age in named)
        s.wait_for(r"Worker pid %d: every thread stuck in the application "
                   r"for more than 1 s \(timeout\): replacing it" % hung,
                   timeout=30)
        s.wait_for(r"Worker pid %d: stopping gracefully \(hung\)" % hung,
                   timeout=30)
        # A new worker serves the new requests.
        s.wait_for(r"Worker pid \d+: serving", count=3, timeout=30)
        pid = answered_by(s.port, lambda p: p != hung)
        assert pid is not None, s.output
        # The stuck one is gone: stopped after shutdown_timeout, or
        # killed 5 s later.
        s.wait_for(r"Worker pid %d exited" % hung, timeout=30)
        assert not alive(hung)
        # The four requests may have gone two to each worker: then both
        # were stuck, and both replaced (within a check of each other,
        # before the first one's graceful stop ended).
        replaced = set(re.findall(r"Worker pid (\d+): every thread stuck in the "
                                  r"application for more than 1 s", s.output))
        assert str(hung) in replaced
        assert restarts(s.output, "timeout") == len(replaced)
    finally:
        for sock in socks:
            sock.close()


def test_worker_whose_gil_is_held_is_killed(app_dir, servers):
    s = serve(servers, app_dir, "--workers=2", "--threads=2", "--timeout=1",
              "--metrics=127.0.0.1:0")
    s.wait_for(r"Worker pid \d+: serving", count=2)
    gil = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    try:
        gil.sendall(b"GET /gil HTTP/1.1\r\nHost: t\r\n\r\n")
        # Its heartbeat stops (no thread of it can run Python): killed
        # after the floor of 10 s, whatever the timeout.
        m = s.wait_for(r"Worker pid (\d+): no heartbeat for \d+ s \(a thread "
                       r"holding the GIL, or the process stopped\): SIGKILL",
                       timeout=60)
        hung = int(m.group(1))
        s.wait_for(r"Worker pid %d exited \(killed by signal SIGKILL\)" % hung,
                   timeout=30)
        s.wait_for(r"Worker pid \d+: serving", count=3, timeout=30)
        assert answered_by(s.port, lambda p: p != hung) is not None, s.output
        assert hung not in s.worker_pids()
        assert restarts(s.output, "timeout") == 1
    finally:
        gil.close()


def test_single_server_logs_each_stuck_request_once(app_dir, servers):
    s = serve(servers, app_dir, "--threads=2", "--timeout=1")
    one = block(s.port, "one")
    try:
        s.wait_for(r"Request in the application for more than 1 s "
                   r"\(timeout\): GET /block/one \(\d+\.\d s\)", timeout=30)
        two = block(s.port, "two")
        try:
            # Found by a later check than the first: by then the first was
            # checked again, and not logged again.
            s.wait_for(r"GET /block/two \(\d+\.\d s\)", timeout=30)
            s.wait_for(r"Every thread \(2\) is stuck in the application",
                       timeout=30)
            assert len(re.findall(r"GET /block/one ", s.output)) == 1
            assert not re.search(r"stopping|replacing", s.output)
            (app_dir / "release").write_text("")
            for sock in (one, two):
                sock.settimeout(30)
                assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        finally:
            two.close()
    finally:
        one.close()
    assert get_pid(s.port) == s.pid
    assert s.poll() is None


def test_the_whole_server_stopped_and_continued_keeps_its_workers(app_dir, servers):
    """The supervisor and its workers all stopped for longer than the
    heartbeat floor (SIGSTOP, a frozen container, a shell's Ctrl-Z), then
    continued: the workers could not beat, but neither could the
    supervisor look; none is taken as hung.  (The one wait here is the
    stop itself, which must outlast the floor.)"""
    from waitress_c.supervisor import SILENT_FLOOR

    s = serve(servers, app_dir, "--workers=2", "--threads=2", "--timeout=1")
    s.wait_for(r"Worker pid \d+: serving", count=2)
    workers = s.worker_pids()
    assert len(workers) == 2
    for pid in [s.pid] + workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(SILENT_FLOOR + 2)
    finally:
        # The supervisor first: it looks before the workers can beat.
        for pid in [s.pid] + workers:
            os.kill(pid, signal.SIGCONT)
    # Two turns of the supervisor's loop since: a signal handled, then the
    # worker it starts serving.
    s.send_signal(signal.SIGTTIN)
    s.wait_for(r"SIGTTIN: 3 workers wanted", timeout=30)
    s.wait_for(r"Worker pid \d+: serving", count=3, timeout=60)
    assert "no heartbeat" not in s.output, s.output
    assert all(alive(pid) for pid in workers), s.output
