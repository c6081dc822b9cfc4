"""Interpreter shutdown with the server still running: a program that runs
``serve()`` in a daemon thread and returns from its main thread while
requests are in flight must exit, at once and without a crash, on every
CPython version (the workers are daemon threads: in the application,
parked on a slow client with the GIL released, or waiting for a task; the
loop thread runs without the GIL).  CPython's finalization stops daemon
threads that try to take the GIL again (3.13 and older end them, 3.14 and
newer leave them blocked until the process exits); nothing of the server's
may touch the interpreter once it is gone.

Each case runs in a subprocess of this interpreter, so ``make test-all``
covers every version."""

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import os, socket, sys, threading, time

    from waitress_c import create_server

    CASE = sys.argv[1]
    in_app = threading.Semaphore(0)


    def app(environ, start_response):
        path = environ["PATH_INFO"]
        in_app.release()
        if path == "/sleep":            # in the app, GIL released
            time.sleep(120)
        elif path == "/busy":           # in the app, holding the GIL
            end = time.monotonic() + 120
            while time.monotonic() < end:
                pass
        elif path == "/stream":         # parked on a client that reads nothing
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return iter(lambda: b"x" * 65536, None)
        elif path == "/log":            # the log thread busy too
            for i in range(200):
                environ["wsgi.errors"].write("line %d\\n" % i)
            time.sleep(120)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


    threads = 2
    srv = create_server(app, listen="127.0.0.1:0", threads=threads,
                        access_log=True, outbuf_high_watermark=65536)
    port = int(srv.effective_port)
    threading.Thread(target=srv.run, daemon=True).start()

    clients = []
    def send(path):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET %s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % path.encode())
        clients.append(s)

    if CASE == "idle":
        # keep-alive connections, no request: workers wait for a task
        for _ in range(4):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.2)
    else:
        path = "/sleep" if CASE == "sys-exit" else "/" + CASE
        for _ in range(threads):
            send(path)
        for _ in range(threads):
            assert in_app.acquire(timeout=10), "the app was not called"
        # more requests than workers: queued behind them
        for _ in range(3):
            send(path)
        time.sleep(0.2)
    print("exiting", flush=True)
    if CASE == "sys-exit":
        sys.exit(3)
    """
)


@pytest.mark.parametrize(
    "case, status",
    [
        ("idle", 0),
        ("sleep", 0),
        ("busy", 0),
        ("stream", 0),
        ("log", 0),
        ("sys-exit", 3),
    ],
)
def test_exit_while_serving_in_a_daemon_thread(tmp_path, case, status):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    # The apps run for two minutes: the process must not wait for them.
    # ("busy" holds the GIL: finalization takes it at a switch interval.)
    try:
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", str(script), case],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail("the process did not exit within 30 s: %r" % (exc.stderr,))
    assert proc.stdout == "exiting\n", proc.stderr
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    assert "Segmentation fault" not in proc.stderr, proc.stderr
    assert proc.returncode == status, proc.stderr
