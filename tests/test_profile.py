"""``serve(_profile=True)``: the application's calls, in whichever worker
thread makes them, are profiled and the statistics printed once the server
stops (waitress_c/__init__.py's docstring of ``serve``)."""

import signal
import sys
import urllib.error
import urllib.request

import pytest
from servers import Server

import waitress_c

SCRIPT = '''\
import logging
import waitress_c

logging.getLogger("waitress_c").setLevel("INFO")

def distinctive_work(n):
    # Enough work to rank right after app by cumulative time: the table
    # shows the top 30% of its lines only, as waitress's.
    for _ in range(200):
        total = sum(range(n))
    return total

def app(environ, start_response):
    body = b"%d" % distinctive_work(1000)
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]

waitress_c.serve(app, listen="127.0.0.1:0", threads=3, _profile=True)
'''


def test_profile_prints_the_application_calls_after_the_stop(tmp_path):
    script = tmp_path / "profiled.py"
    script.write_text(SCRIPT)
    server = Server([sys.executable, str(script)], cwd=tmp_path, timeout=30)
    try:
        for _ in range(5):
            url = "http://127.0.0.1:%d/" % server.port
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.read() == b"499500"
        assert "function calls" not in server.stdout()  # not before the stop
    finally:
        rc, output = server.stop(signal.SIGTERM)
    assert rc == 0, output
    out = server.stdout()
    assert "function calls" in out, output
    # The application and what it called, 5 times each, summed over threads.
    lines = [ln for ln in out.splitlines() if "(distinctive_work)" in ln]
    assert len(lines) == 1, out
    assert lines[0].split()[0] == "5", lines


def test_profile_refuses_worker_processes():
    with pytest.raises(ValueError, match="single process"):
        waitress_c.serve(lambda e, s: [], listen="127.0.0.1:0", workers=2, _quiet=True, _profile=True)


CONCURRENT_SCRIPT = '''\
import logging
import threading
import waitress_c

logging.getLogger("waitress_c").setLevel("INFO")
both_in = threading.Barrier(2, timeout=60)

def distinctive_work(n):
    # Enough work to rank right after app by cumulative time: the table
    # shows the top 30% of its lines only, as waitress's.
    for _ in range(200):
        total = sum(range(n))
    return total

def app(environ, start_response):
    both_in.wait()  # two requests in the application at once
    body = b"%d" % distinctive_work(1000)
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]

waitress_c.serve(app, listen="127.0.0.1:0", threads=2, _profile=True)
'''


def test_profile_with_requests_in_two_threads_at_once(tmp_path):
    """Two application calls profiled at the same time, in two threads:
    both answered, both counted.  (From CPython 3.12 a profiler is one per
    interpreter, and a second cProfile.Profile().enable() raises.)"""
    import concurrent.futures

    script = tmp_path / "profiled2.py"
    script.write_text(CONCURRENT_SCRIPT)
    server = Server([sys.executable, str(script)], cwd=tmp_path, timeout=30)
    url = "http://127.0.0.1:%d/" % server.port

    def get(_):
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(get, range(2)))
    finally:
        rc, output = server.stop(signal.SIGTERM)
    assert answers == [(200, b"499500")] * 2, output
    assert rc == 0, output
    lines = [ln for ln in server.stdout().splitlines() if "(distinctive_work)" in ln]
    assert len(lines) == 1 and lines[0].split()[0] == "2", output
