"""Logging (docs/logging.rst): the error log's format, --error-logfile,
--access-logfile, --log-config (JSON, TOML, ini), the stop cause, worker
pids, SIGUSR1 reopening renamed files (one process and --workers), and the
errors at start-up.

Every server is a real ``waitress-c-serve`` process on 127.0.0.1 port 0;
what it logs is read from its pipes or from its log files, each wait a
poll with a bound."""

import datetime
import os
import re
import signal
import sys
import time

import pytest

from servers import Server, alive, http_connection, run_cli, script

from waitress_c import __version__
from waitress_c.logs import aslogconfig, aslogfile

# A line of the error log: [time] [pid] [LEVEL] message.
LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\] \[(\d+)\] "
    r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] (.*)$"
)
COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
    r'"GET (\S+) HTTP/1\.1" 200 2 "-" "-"$'
)
SERVING = r"Serving on http://127\.0\.0\.1:(?P<port>\d+)"

# Printed on stdout once imported (in each worker without --preload): the
# launcher's "ready" when the log lines go to a file.
APP = '''
import sys

print("app imported", flush=True)


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''

BOUND = 20.0


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "logapp.py").write_text(APP)
    return tmp_path


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        try:
            s.stop(signal.SIGTERM, timeout=30)
        except AssertionError:
            pass


def start(servers, cwd, *args, ready=SERVING, **kw):
    s = Server(
        [script("waitress-c-serve"), "--listen=127.0.0.1:0", *args, "logapp:app"],
        cwd=cwd, ready=ready, **kw,
    )
    servers.append(s)
    return s


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_file(path, regex, count=1, timeout=BOUND):
    """The first ``count`` matches of ``regex`` (multiline) in the file's
    whole lines, polled until they are there; AssertionError after
    ``timeout`` seconds."""
    pattern = re.compile(regex, re.M)
    deadline = time.monotonic() + timeout
    while True:
        text = read(path)
        text = text[: text.rfind("\n") + 1]
        found = list(pattern.finditer(text))
        if len(found) >= count:
            return found[:count]
        if time.monotonic() > deadline:
            raise AssertionError("no %r (x%d) in %s:\n%s" % (regex, count, path, text))
        time.sleep(0.02)


def get(port, path="/"):
    conn = http_connection(("127.0.0.1", port))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok")
    finally:
        conn.close()


def error_lines(text):
    """(time, pid, level, message) of each error log line of ``text``;
    every line must be one."""
    lines = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, "not an error log line: %r" % line
        lines.append((m.group(1), int(m.group(2)), m.group(3), m.group(4)))
    return lines


# -- the format ------------------------------------------------------------------------


def test_default_format_on_stderr_names_version_threads_listener_and_cause(app_dir, servers):
    s = start(servers, app_dir, "--threads=3")
    get(s.port)
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    lines = error_lines(s.stderr())
    now = datetime.datetime.now(datetime.timezone.utc)
    for when, pid, level, _ in lines:
        assert pid == s.pid
        when = datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S %z")
        assert abs((now - when).total_seconds()) < 3600
    messages = [(level, msg) for _, _, level, msg in lines]
    assert messages[0] == ("INFO", "Starting waitress_c %s: one process, 3 threads" % __version__)
    assert messages[1] == ("INFO", "Serving on http://127.0.0.1:%d" % s.port)
    assert messages[-2][1].startswith("Shutting down (SIGTERM): ")
    assert messages[-1] == ("INFO", "Server stopped")
    assert s.stdout() == "app imported\n"


def test_level_is_in_the_line(app_dir, servers):
    s = start(servers, app_dir)
    get(s.port)  # serving: SIGTERM is the server's
    s.send_signal(signal.SIGHUP)  # refused, at WARNING
    s.wait_for(r"SIGHUP: a single process cannot reload", stream="stderr")
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    refusals = [(pid, level) for _, pid, level, msg in error_lines(s.stderr()) if "SIGHUP" in msg]
    assert refusals == [(s.pid, "WARNING")]


# -- files -----------------------------------------------------------------------------


def test_error_logfile_appends_and_leaves_stderr_empty(app_dir, servers):
    path = app_dir / "error.log"
    path.write_text("an older line\n")
    s = start(servers, app_dir, "--error-logfile=error.log", ready="app imported")
    port = int(wait_file(path, SERVING)[0].group("port"))
    get(port)
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    text = read(path)
    assert text.startswith("an older line\n")
    lines = error_lines(text[len("an older line\n"):])
    assert {pid for _, pid, _, _ in lines} == {s.pid}
    assert lines[-1][3] == "Server stopped"
    assert s.stderr() == ""


def test_error_logfile_dash_is_stderr(app_dir, servers):
    s = start(servers, app_dir, "--error-logfile=-")
    get(s.port)  # serving: SIGTERM is the server's
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    assert error_lines(s.stderr())[-1][3] == "Server stopped"
    assert s.stdout() == "app imported\n"


def test_access_logfile_turns_the_access_log_on_with_bare_lines(app_dir, servers):
    path = app_dir / "access.log"
    path.write_text("an older line\n")
    s = start(servers, app_dir, "--access-logfile=access.log")
    get(s.port, "/one")
    get(s.port, "/two")
    lines = [m.group(0) for m in wait_file(path, r"^.*GET.*$", count=2)]
    assert [COMBINED.match(line).group(1) for line in lines] == ["/one", "/two"]
    assert read(path).startswith("an older line\n")
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    assert "GET /one" not in s.output


def test_access_logfile_dash_is_stdout(app_dir, servers):
    s = start(servers, app_dir, "--access-logfile=-")
    get(s.port, "/to-stdout")
    m = s.wait_for(r"(?m)^.*GET /to-stdout.*\n", stream="stdout")
    assert COMBINED.match(m.group(0).rstrip("\n")), m.group(0)
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    assert "/to-stdout" not in s.stderr()
    error_lines(s.stderr())  # the error log alone


def test_access_log_without_a_file_goes_with_the_error_log(app_dir, servers):
    path = app_dir / "error.log"
    s = start(servers, app_dir, "--access-log", "--error-logfile=error.log", ready="app imported")
    port = int(wait_file(path, SERVING)[0].group("port"))
    get(port, "/with-errors")
    line = wait_file(path, r"^.*GET /with-errors.*$")[0].group(0)
    assert COMBINED.match(line), line
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0


@pytest.mark.parametrize("flag", ["--error-logfile", "--access-logfile"])
def test_a_missing_directory_is_refused_at_start_up(app_dir, flag):
    missing = app_dir / "no-such-dir"
    proc = run_cli(
        [script("waitress-c-serve"), "--listen=127.0.0.1:0", "%s=%s/x.log" % (flag, missing), "logapp:app"],
        cwd=app_dir,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        "Error: %s %s/x.log: directory %s does not exist" % (flag[2:].replace("-", "_"), missing, missing)
    )
    assert "Traceback" not in proc.stderr and "app imported" not in proc.stdout


def test_an_unwritable_file_is_refused_at_start_up(app_dir):
    (app_dir / "a-dir.log").mkdir()
    proc = run_cli(
        [script("waitress-c-serve"), "--error-logfile=a-dir.log", "logapp:app"], cwd=app_dir
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        "Error: cannot open the log file %s: Is a directory" % (app_dir / "a-dir.log")
    )


# -- --log-config ----------------------------------------------------------------------

CONFIGS = {
    "json": """{
  "version": 1,
  "formatters": {"cfg": {"format": "CFG %%(levelname)s %%(name)s %%(message)s"}},
  "handlers": {"file": {"class": "logging.FileHandler", "filename": "%(log)s",
                        "formatter": "cfg"}},
  "loggers": {"waitress_c": {"level": "INFO", "handlers": ["file"], "propagate": false}}
}
""",
    "toml": """version = 1
[formatters.cfg]
format = "CFG %%(levelname)s %%(name)s %%(message)s"
[handlers.file]
class = "logging.FileHandler"
filename = "%(log)s"
formatter = "cfg"
[loggers.waitress_c]
level = "INFO"
handlers = ["file"]
propagate = false
""",
    "ini": """[loggers]
keys = root, waitress_c

[handlers]
keys = file

[formatters]
keys = cfg

[logger_root]
level = WARNING
handlers =

[logger_waitress_c]
level = INFO
handlers = file
qualname = waitress_c
propagate = 0

[handler_file]
class = FileHandler
args = ("%(log)s",)
formatter = cfg

[formatter_cfg]
format = CFG %%(levelname)s %%(name)s %%(message)s
""",
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_log_config_in_each_format(app_dir, servers, kind):
    log = app_dir / "cfg.log"
    text = CONFIGS[kind] % {"log": log}
    # (fileConfig reads a format raw: no configparser interpolation.)
    conf = app_dir / ("logging." + kind)
    conf.write_text(text)
    s = start(servers, app_dir, "--log-config=logging.%s" % kind, "--access-log", ready="app imported")
    port = int(wait_file(log, r"^CFG INFO waitress_c %s$" % SERVING)[0].group("port"))
    get(port, "/cfg")
    # Without --error-logfile the configuration alone decides: the access
    # lines reach the file through waitress_c's handler, with its format.
    wait_file(log, r'^CFG INFO waitress_c\.access 127\.0\.0\.1 .*"GET /cfg HTTP/1\.1" 200 2')
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    wait_file(log, r"^CFG INFO waitress_c Server stopped$")
    assert "[INFO]" not in s.output


def test_log_config_with_an_error_logfile_adds_the_file(app_dir, servers):
    log = app_dir / "cfg.log"
    (app_dir / "logging.json").write_text(CONFIGS["json"] % {"log": log})
    s = start(servers, app_dir, "--log-config=logging.json", "--error-logfile=error.log",
              ready="app imported")
    m = wait_file(app_dir / "error.log", r"^\[.*\] \[%d\] \[INFO\] %s$" % (s.pid, SERVING))[0]
    get(int(m.group("port")))  # serving: SIGTERM is the server's
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    # error_logfile's handler is waitress_c's own: the configuration's
    # handler on the same logger still gets the lines.
    wait_file(log, r"^CFG INFO waitress_c Server stopped$")


BAD_CONFIGS = [
    ("bad.json", '{"version": 1,', r"Expecting property name enclosed in double quotes"),
    ("bad.toml", "version = \n", r"Invalid value"),
    ("bad.ini", "[loggers]\nkeys = root\n", r"missing 'formatters'"),
    ("bad.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}',
     r"Unable to configure handler 'h'"),
    ("list.json", "[1, 2]", r"expected a dictionary"),
    ("missing.conf", None, r"No such file or directory"),
]


@pytest.mark.parametrize("name, text, reason", BAD_CONFIGS, ids=[c[0] + "-" + c[2][:12] for c in BAD_CONFIGS])
def test_a_bad_log_config_is_a_one_line_usage_error(app_dir, name, text, reason):
    if text is not None:
        (app_dir / name).write_text(text)
    proc = run_cli([script("waitress-c-serve"), "--log-config=%s" % name, "logapp:app"], cwd=app_dir)
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith("Error: log_config %s: " % (app_dir / name)), first
    assert re.search(reason, first), first
    assert "Traceback" not in proc.stderr
    assert "Usage: waitress-c-serve" in proc.stderr
    assert "app imported" not in proc.stdout


# -- SIGUSR1 ---------------------------------------------------------------------------


def test_sigusr1_reopens_renamed_files_in_a_single_process(app_dir, servers):
    error, access = app_dir / "error.log", app_dir / "access.log"
    s = start(servers, app_dir, "--error-logfile=error.log", "--access-logfile=access.log",
              ready="app imported")
    port = int(wait_file(error, SERVING)[0].group("port"))
    get(port, "/before")
    wait_file(access, r"GET /before ")
    os.rename(error, app_dir / "error.log.1")
    os.rename(access, app_dir / "access.log.1")
    for count in (1, 2):  # again: the watcher goes on
        s.send_signal(signal.SIGUSR1)
        wait_file(error, r"^\[.*\] \[%d\] \[INFO\] SIGUSR1: 2 log files reopened$" % s.pid, count=count)
        get(port, "/after-%d" % count)
        wait_file(access, r"GET /after-%d " % count)
    assert s.poll() is None
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    wait_file(error, r"\[INFO\] Server stopped$")
    old = read(app_dir / "error.log.1")
    assert "Serving on" in old and "SIGUSR1" not in old and "Server stopped" not in old
    assert "/after" not in read(app_dir / "access.log.1")
    assert s.stderr() == ""


# An application whose import starts a thread of its own (a scheduler, an
# error reporter's sender), idle for the whole test.
THREADED_APP = '''
import threading

idle = threading.Event()
threading.Thread(target=idle.wait, args=(120,), daemon=True).start()
print("app imported", flush=True)


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''


@pytest.mark.parametrize("signal_name", ["SIGUSR1", "SIGHUP"])
def test_a_thread_the_app_starts_at_import_does_not_swallow_signals(app_dir, servers, signal_name):
    """The command line blocks SIGUSR1 and SIGHUP, for the threads that
    take them with sigwait, before it imports the application: a thread
    started by the import would otherwise be given each of them (the
    kernel picks a thread that does not block it) and run only the
    handler that does nothing."""
    (app_dir / "logapp.py").write_text(THREADED_APP)
    error = app_dir / "error.log"
    s = start(servers, app_dir, "--error-logfile=error.log", ready="app imported")
    wait_file(error, SERVING)
    line = {
        "SIGUSR1": r"\[INFO\] SIGUSR1: 1 log file reopened$",
        "SIGHUP": r"\[WARNING\] SIGHUP: a single process cannot reload",
    }[signal_name]
    for count in (1, 2):
        s.send_signal(getattr(signal, signal_name))
        wait_file(error, line, count=count)
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0


def test_a_file_that_cannot_be_reopened_keeps_the_old_one(app_dir, servers):
    (app_dir / "logs").mkdir()
    s = start(servers, app_dir, "--error-logfile=logs/error.log", ready="app imported")
    port = int(wait_file(app_dir / "logs" / "error.log", SERVING)[0].group("port"))
    os.rename(app_dir / "logs", app_dir / "logs.old")  # the path is gone
    s.send_signal(signal.SIGUSR1)
    old = app_dir / "logs.old" / "error.log"
    wait_file(old, r"\[ERROR\] Cannot reopen the log file %s: No such file or directory$"
              % re.escape(str(app_dir / "logs" / "error.log")))
    wait_file(old, r"\[INFO\] SIGUSR1: 0 log files reopened$")
    get(port)
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    wait_file(old, r"\[INFO\] Server stopped$")


def test_sigusr1_reopens_in_the_supervisor_and_every_worker(app_dir, servers):
    error, access = app_dir / "error.log", app_dir / "access.log"
    s = start(servers, app_dir, "--workers=2", "--error-logfile=error.log",
              "--access-logfile=access.log", ready="app imported")
    port = int(wait_file(error, SERVING)[0].group("port"))
    serving = wait_file(error, r"^\[.*\] \[(\d+)\] \[INFO\] Worker pid (\d+): serving$", count=2)
    assert {int(m.group(1)) for m in serving} == {s.pid}  # the supervisor's lines
    workers = {int(m.group(2)) for m in serving}
    os.rename(error, app_dir / "error.log.1")
    os.rename(access, app_dir / "access.log.1")
    s.send_signal(signal.SIGUSR1)
    reopened = wait_file(error, r"^\[.*\] \[(\d+)\] \[INFO\] SIGUSR1: 2 log files reopened$", count=3)
    assert {int(m.group(1)) for m in reopened} == workers | {s.pid}
    for i in range(4):
        get(port, "/after-%d" % i)
    wait_file(access, r"GET /after-\d ", count=4)
    assert all(alive(pid) for pid in workers)  # SIGUSR1 killed no worker
    assert set(s.worker_pids()) == workers
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    # Each worker's stop line carries its pid and names the signal it got.
    stops = wait_file(error, r"^\[.*\] \[(\d+)\] \[INFO\] Shutting down \((.*?)\): ", count=2)
    assert {int(m.group(1)) for m in stops} == workers
    assert {m.group(2) for m in stops} == {"SIGTERM"}
    wait_file(error, r"^\[.*\] \[%d\] \[INFO\] SIGTERM: stopping the workers gracefully" % s.pid)
    wait_file(error, r"^\[.*\] \[%d\] \[INFO\] Supervisor pid %d: stopped$" % (s.pid, s.pid))
    assert "Worker pid" in read(app_dir / "error.log.1")
    assert "SIGUSR1" not in read(app_dir / "error.log.1")


def test_start_up_line_with_workers(app_dir, servers):
    s = start(servers, app_dir, "--workers=2", "--threads=2")
    s.wait_for(r"Worker pid \d+: serving", count=2)
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    lines = error_lines(s.stderr())
    assert (lines[0][1], lines[0][3]) == (
        s.pid, "Starting waitress_c %s: 2 worker processes of 2 threads each" % __version__
    )


def test_a_recycled_workers_stop_line_says_max_requests(app_dir, servers):
    s = start(servers, app_dir, "--max-requests=2")
    worker = int(s.wait_for(r"Worker pid (\d+): serving").group(1))
    for _ in range(2):
        get(s.port)
    s.wait_for(r"\[%d\] \[INFO\] Shutting down \(max_requests\): " % worker)


# -- serve() from Python ---------------------------------------------------------------

LIBRARY = """
import logging, sys
import waitress_c
sys.path.insert(0, ".")
from logapp import app
logging.basicConfig(level=logging.INFO, format="LIB %%(name)s %%(message)s")
waitress_c.serve(app, listen="127.0.0.1:0"%s)
"""


def test_serve_without_log_settings_keeps_the_callers_logging(app_dir, servers):
    s = Server([sys.executable, "-c", LIBRARY % ""], cwd=app_dir)
    servers.append(s)
    m = s.wait_for(r"(?m)^LIB waitress_c Serving on http://127\.0\.0\.1:(\d+)$")
    get(int(m.group(1)))  # serving: SIGTERM is the server's
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    assert "LIB waitress_c Server stopped" in s.stderr()
    assert "[INFO]" not in s.output


def test_serve_with_an_error_logfile_writes_the_file_and_reopens_it(app_dir, servers):
    error = app_dir / "lib.log"
    s = Server([sys.executable, "-c", LIBRARY % ', error_logfile="lib.log"'], cwd=app_dir,
               ready="app imported")
    servers.append(s)
    m = wait_file(error, r"^\[.*\] \[%d\] \[INFO\] %s$" % (s.pid, SERVING))[0]
    os.rename(error, app_dir / "lib.log.1")
    s.send_signal(signal.SIGUSR1)
    wait_file(error, r"\[INFO\] SIGUSR1: 1 log file reopened$")
    get(int(m.group("port")))  # serving: SIGTERM is the server's
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    assert "LIB waitress_c" not in s.stderr()  # the file's logger does not propagate


def test_serve_with_an_error_logfile_logs_info_without_any_level_set(app_dir, servers):
    script_ = (
        "import sys, waitress_c\n"
        "sys.path.insert(0, '.')\n"
        "from logapp import app\n"
        "waitress_c.serve(app, listen='127.0.0.1:0', error_logfile='lib.log')\n"
    )
    s = Server([sys.executable, "-c", script_], cwd=app_dir, ready="app imported")
    servers.append(s)
    m = wait_file(app_dir / "lib.log", r"^\[.*\] \[%d\] \[INFO\] %s$" % (s.pid, SERVING))[0]
    get(int(m.group("port")))
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    wait_file(app_dir / "lib.log", r"\[INFO\] Server stopped$")


def test_serve_with_an_access_logfile_alone_writes_the_lines(app_dir, servers):
    script_ = (
        "import sys, waitress_c\n"
        "sys.path.insert(0, '.')\n"
        "from logapp import app\n"
        "waitress_c.serve(app, listen='127.0.0.1:0', access_logfile='access.log')\n"
    )
    s = Server([sys.executable, "-c", script_], cwd=app_dir)
    servers.append(s)
    get(s.port, "/lib-access")
    line = wait_file(app_dir / "access.log", r"^.*GET /lib-access.*$")[0].group(0)
    assert COMBINED.match(line), line
    code, _ = s.stop(signal.SIGTERM)
    assert code == 0
    assert "/lib-access" not in s.output


# -- converters ------------------------------------------------------------------------


def test_log_file_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert aslogfile("e.log") == str(tmp_path / "e.log")
    assert aslogfile("-") == "-"
    assert aslogfile("") is None and aslogfile(None) is None
    assert aslogconfig("logging.toml") == str(tmp_path / "logging.toml")
    with pytest.raises(ValueError, match="directory .*/nope does not exist"):
        aslogfile("nope/e.log")
