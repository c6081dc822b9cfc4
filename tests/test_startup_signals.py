"""Signals that arrive as a server announces itself.

"Serving on ..." is the line that process managers and scripts wait for
before they signal the server, so by the time it is written the server
must already handle SIGTERM and SIGINT as a graceful stop: a single
process killed by the default action of SIGTERM (status -15), or by a
KeyboardInterrupt, at that line has lost its in-flight requests and its
pid file.

The first tests are deterministic: the process sends the signal to itself
from a logging handler, synchronously, while the "Serving on" line is
being logged.  The last one sends SIGTERM from outside as soon as the line
shows, a few times over."""

import signal
import sys
import textwrap

import pytest
from servers import SLOW, Server, run_cli

# A logging handler that sends SIG to this very process while "Serving on"
# is being logged, then MODE: "cli" runs the command line, "serve" calls
# serve() as a library would.
PROGRAM = textwrap.dedent(
    """
    import logging, os, signal, sys

    SIG = getattr(signal, sys.argv[1])
    MODE = sys.argv[2]


    class KillAtServing(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Serving on"):
                print("signalling", flush=True)
                os.kill(os.getpid(), SIG)


    logger = logging.getLogger("waitress_c")
    logger.addHandler(KillAtServing())
    logger.setLevel(logging.INFO)


    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


    if MODE == "cli":
        from waitress_c.runner import run

        status = run(["waitress-c-serve", "--listen=127.0.0.1:0",
                      "--threads=2", "__main__:app"])
        print("run returned", status, flush=True)
        sys.exit(status)
    from waitress_c import serve

    serve(app, listen="127.0.0.1:0", threads=2)
    print("serve returned", flush=True)
    """
)


@pytest.mark.parametrize("mode", ["cli", "serve"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_while_serving_on_is_logged_stops_gracefully(mode, sig):
    done = run_cli([sys.executable, "-c", PROGRAM, sig, mode], cwd=".", timeout=60 * SLOW)
    out = done.stdout + done.stderr
    assert "signalling" in out, out
    assert done.returncode == 0, out
    assert "Shutting down (%s)" % sig in out, out
    assert ("run returned 0" if mode == "cli" else "serve returned") in out, out


@pytest.mark.parametrize("round", range(5))
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_at_the_serving_on_line_stops_gracefully(tmp_path, workers, round):
    srv = Server(
        [sys.executable, "-m", "waitress_c", "--listen=127.0.0.1:0", "--threads=2",
         "--workers=%d" % workers, "wsgiref.simple_server:demo_app"],
        cwd=tmp_path,
    )
    status, out = srv.stop(signal.SIGTERM)
    assert status == 0, out
    if workers == 1:
        assert "Shutting down (SIGTERM)" in out, out
    else:
        assert "SIGTERM: stopping the workers gracefully" in out, out
        assert "Supervisor pid %d: stopped" % srv.pid in out, out
