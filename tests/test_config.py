"""Configuration files (Python and TOML), the environment (WAITRESS_C_*,
WAITRESS_C_CMD_ARGS, $PORT), their precedence, and the lifecycle hooks of a
Python configuration file.

What is served is observed from outside: the Server header (``ident``) says
which source won, the "Serving on" lines where the server listens; each hook
appends a JSON line with its process's pid to a file the test reads."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from servers import ROOT, SLOW, Server, children, free_port, script, write_app

from waitress_c import config, runner
from waitress_c.adjustments import OPTIONS

SERVE = script("waitress-c-serve")


def clean_env(**extra):
    """This environment without any WAITRESS_C_* variable or PORT, plus
    `extra`."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("WAITRESS_C_") and k != "PORT"
    }
    env.update(extra)
    return env


# What the in-process runs serve (the runner imports it).
APP = "wsgiref.simple_server:demo_app"


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """In-process runs see no WAITRESS_C_* variable or PORT of the caller's,
    get their own sys.path and leave the logger's level as it was."""
    for key in list(os.environ):
        if key.startswith("WAITRESS_C_") or key == "PORT":
            monkeypatch.delenv(key)
    monkeypatch.setattr(sys, "path", list(sys.path))
    wlogger = logging.getLogger("waitress_c")
    level = wlogger.level
    yield
    wlogger.setLevel(level)


@pytest.fixture
def app_dir(tmp_path):
    write_app(tmp_path)
    return tmp_path


def write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return str(path)


def run_cmd(args, cwd, env=None):
    """A command that exits by itself: (status, stdout, stderr)."""
    proc = subprocess.run(
        args, cwd=str(cwd), env=clean_env(**(env or {})),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


def serving(args, cwd, env=None):
    return Server([SERVE] + args, cwd=cwd, env=clean_env(**(env or {})))


def ident_of(server):
    """The Server header the server sends (its ident setting)."""
    server.host = "127.0.0.1"  # 0.0.0.0 listeners too
    resp, _ = server.request("GET", "/")
    assert resp.status == 200
    return resp.getheader("Server")


class FakeServe:
    def __init__(self):
        self.calls = []

    def __call__(self, app, **kw):
        self.calls.append((app, kw))


def served_kw(*args):
    """The runner in-process: the settings it would serve with."""
    fake = FakeServe()
    status = runner.run(["waitress-c-serve"] + list(args), _serve=fake)
    assert status == 0 and len(fake.calls) == 1
    return fake.calls[0]


# -- formats ---------------------------------------------------------------------


def test_python_file_gives_settings_and_the_app(app_dir):
    write(app_dir, "wc.conf.py",
          "import multiprocessing\n"
          "threads = 2\n"
          "listen = '127.0.0.1:0'\n"
          "ident = 'from-py'\n"
          "wsgi_app = 'cliapp:app'\n")
    with serving(["-c", "wc.conf.py"], app_dir) as server:
        assert server.host == "127.0.0.1"
        assert ident_of(server) == "from-py"


@pytest.mark.parametrize(
    "text",
    [
        "listen = ['127.0.0.1:0']\nident = 'from-toml'\nthreads = 2\n",
        # The [waitress_c] table alone counts: the rest may be another's.
        "[other]\nident = 'not-me'\n\n[waitress_c]\nlisten = '127.0.0.1:0'\n"
        "ident = 'from-toml'\nthreads = '2'\nexpose_tracebacks = 'no'\n",
    ],
    ids=["flat", "table"],
)
def test_toml_file(app_dir, text):
    write(app_dir, "wc.toml", text)
    with serving(["--config=wc.toml", "cliapp:app"], app_dir) as server:
        assert server.host == "127.0.0.1"
        assert ident_of(server) == "from-toml"


def test_toml_values_keep_their_types(tmp_path):
    path = write(tmp_path, "c.toml",
                 "threads = 3\nexpose_tracebacks = true\n"
                 "shutdown_timeout = 2.5\nunix_socket_perms = '660'\n"
                 "unix_socket = '/tmp/x.sock'\nwsgi_app = 'a:b'\n")
    loaded = config.load_config(path)
    assert loaded.settings == {
        "threads": 3, "expose_tracebacks": True, "shutdown_timeout": 2.5,
        "unix_socket_perms": "660", "unix_socket": "/tmp/x.sock",
    }
    assert loaded.app == "a:b" and not loaded.hooks


def test_python_file_ignores_private_constant_and_imported_names(tmp_path):
    path = write(tmp_path, "c.py",
                 "import os\n"
                 "from os import cpu_count, environ\n"
                 "from collections import OrderedDict\n"
                 "BASE = 2\n"
                 "_base = 3\n"
                 "def _helper():\n    return BASE\n"
                 "threads = _helper() * _base\n"
                 "ident = None  # None: not set\n")
    loaded = config.load_config(path)
    assert loaded.settings == {"threads": 6}


def test_every_setting_is_a_name_of_both_formats_and_a_variable(tmp_path):
    # Derived from the table: a setting added there needs nothing here.
    text = "".join("%s = None\n" % opt.name for opt in OPTIONS)
    assert config.load_config(write(tmp_path, "all.py", text)).settings == {}
    for opt in OPTIONS:
        var = "WAITRESS_C_" + opt.name.upper()
        assert config.env_name(opt) == var
        assert opt.name in config._load_toml(
            "x.toml", "x", ('%s = "1"\n' % opt.name).encode()).settings


def test_on_off_values(tmp_path):
    text = "".join(
        "%s = %s\n" % (name, value) for name, value in [
            ("ipv4", "1"), ("ipv6", "'Off'"), ("access_log", "True"),
            ("expose_tracebacks", "' yes '"), ("log_socket_errors", "0"),
        ])
    settings = config.load_config(write(tmp_path, "c.py", text)).settings
    assert settings["ipv6"] == "'Off'".strip("'")
    for bad in ("2", "'sure'", "1.0"):
        with pytest.raises(config.ConfigError, match="ipv4: invalid value"):
            config.load_config(write(tmp_path, "c.py", "ipv4 = %s\n" % bad))


def test_cmd_args_flags_and_app_give_way_to_the_command_line(monkeypatch, tmp_path):
    path = write(tmp_path, "c.toml", "threads = 3\nwsgi_app = 'nothere:app'\n")
    monkeypatch.setenv(
        "WAITRESS_C_CMD_ARGS", "--preload --config=%s nothere:app2" % path)
    app, kw = served_kw(APP)
    assert kw == {"threads": 3}  # the file named by WAITRESS_C_CMD_ARGS
    assert callable(app)  # the command line's, not the variable's or file's


def test_config_flag_in_help():
    text = runner.format_help("x")
    assert "\n    --config=FILE, -c\n" in text


# -- errors ------------------------------------------------------------------------


ERRORS = [
    ("missing.py", None,
     "config file missing.py: cannot read it: No such file or directory"),
    ("c.py", "threads = (\n",
     "config file c.py, line 1: '(' was never closed"),
    ("c.py", "import os\nthreads = os.nothing\n",
     "config file c.py, line 2: AttributeError: module 'os' has no attribute "
     "'nothing'"),
    ("c.py", "thread = 4\n",
     "config file c.py: unknown setting 'thread' (did you mean threads?)"),
    ("c.py", "def post_frok(worker):\n    pass\n",
     "config file c.py: unknown setting 'post_frok' (did you mean post_fork?)"),
    ("c.py", "post_fork = 3\n", "config file c.py: hook post_fork is not a function"),
    ("c.py", "threads = 'x'\n",
     "config file c.py: threads: invalid value 'x' (expected an integer)"),
    ("c.py", "threads = True\n",
     "config file c.py: threads: invalid value True (expected an integer)"),
    ("c.py", "listen = '127.0.0.1:0'\nport = 1\n",
     "config file c.py: host or port may not be set if listen is set."),
    ("c.toml", "threads = 4\nthreads = 5\n",
     "config file c.toml: Cannot overwrite a value (at line 2, column 12)"),
    ("c.toml", "bind = '127.0.0.1:0'\n",
     "config file c.toml: unknown setting 'bind' (did you mean listen?)"),
    ("c.toml", "expose_tracebacks = 'sure'\n",
     "config file c.toml: expose_tracebacks: invalid value 'sure' (expected "
     "true or false (also yes/no, on/off, 1/0))"),
    ("c.toml", "unix_socket_perms = 0o660\n",
     "config file c.toml: unix_socket_perms: invalid value 432 (expected "
     'octal digits in a string, such as "660")'),
    ("c.toml", "ident = ['a', 'b']\n",
     "config file c.toml: ident: invalid value ['a', 'b'] (expected a single "
     "value)"),
    ("c.toml", "post_fork = 'x'\n",
     "config file c.toml: post_fork: hooks can only be defined in a Python "
     "config file"),
    ("c.ini", "[server:main]\n",
     "config file c.ini: unknown format (the name must end in .py or .toml)"),
]


@pytest.mark.parametrize("name, text, message", ERRORS,
                         ids=[str(i) for i in range(len(ERRORS))])
def test_config_file_error_is_one_line_and_status_1(app_dir, name, text, message):
    if text is not None:
        write(app_dir, name, text)
    status, out, err = run_cmd([SERVE, "-c", name, "cliapp:app"], app_dir)
    assert (status, out, err) == (1, "", "Error: %s\n" % message)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"WAITRESS_C_THREADS": "many"},
         "WAITRESS_C_THREADS: invalid value 'many' (expected an integer)"),
        ({"WAITRESS_C_LOG_LEVEL": "loud"},
         "WAITRESS_C_LOG_LEVEL: invalid value 'loud' (expected one of debug, "
         "info, warning, error, critical)"),
        ({"WAITRESS_C_LISTEN": "127.0.0.1:0", "WAITRESS_C_PORT": "1"},
         "environment: host or port may not be set if listen is set."),
        ({"PORT": "http"},
         "PORT: invalid value 'http' (expected a port number, 0-65535)"),
        # Digits to str.isdigit(), not to int(): refused in one line too.
        ({"PORT": "\u00b2"},
         "PORT: invalid value '\u00b2' (expected a port number, 0-65535)"),
        ({"PORT": "80\u0664"},
         "PORT: invalid value '80\u0664' (expected a port number, 0-65535)"),
        ({"WAITRESS_C_CMD_ARGS": "--ident='x"},
         "WAITRESS_C_CMD_ARGS: No closing quotation"),
    ],
)
def test_environment_error_is_one_line_and_status_1(app_dir, env, message):
    status, out, err = run_cmd([SERVE, "cliapp:app"], app_dir, env)
    assert (status, out, err) == (1, "", "Error: %s\n" % message)


def test_python_file_imports_from_the_current_directory(app_dir):
    """A Python configuration file may import the project's own modules,
    as the application is: the current directory is on the module search
    path before the file is run (the console script's own directory is
    what Python puts there)."""
    write(app_dir, "projsettings.py", "THREADS = 3\nIDENT = 'from-module'\n")
    write(app_dir, "c.py", "from projsettings import THREADS, IDENT\n"
          "threads = THREADS\nident = IDENT\nlisten = '127.0.0.1:0'\n")
    with serving(["-c", "c.py", "cliapp:app"], app_dir) as srv:
        assert ident_of(srv) == "from-module"


def test_cmd_args_usage_error_names_the_variable(app_dir):
    status, _, err = run_cmd([SERVE, "cliapp:app"], app_dir,
                             {"WAITRESS_C_CMD_ARGS": "--threads=x"})
    assert status == 1
    assert err.startswith(
        "Error: WAITRESS_C_CMD_ARGS: option --threads: invalid value 'x' "
        "(expected an integer)\n\nUsage: ")


def test_unknown_variable_is_a_warning_not_an_error(app_dir):
    # A platform may set variables of its own with the prefix.
    env = {"WAITRESS_C_SERVICE_HOST": "10.0.0.1",
           "WAITRESS_C_LISTEN": "127.0.0.1:0"}
    with serving(["cliapp:app"], app_dir, env) as server:
        assert ident_of(server) == "waitress_c"
        assert ("Environment variable WAITRESS_C_SERVICE_HOST names no "
                "setting: ignored") in server.stderr()


# -- the environment ---------------------------------------------------------------


def test_env_list_is_split_on_blanks(app_dir):
    env = {"WAITRESS_C_LISTEN": "127.0.0.1:0  127.0.0.1:0\t127.0.0.1:0"}
    with serving(["cliapp:app"], app_dir, env) as server:
        server.wait_for(r"Serving on http://127\.0\.0\.1:\d+", count=3)
        assert ident_of(server) == "waitress_c"


def test_cmd_args_may_carry_the_app(app_dir):
    env = {"WAITRESS_C_CMD_ARGS": "--listen=127.0.0.1:0 '--ident=a b' cliapp:app"}
    with serving([], app_dir, env) as server:
        assert ident_of(server) == "a b"


def test_port_listens_on_every_ipv4_address(app_dir):
    port = free_port()
    with serving(["cliapp:app"], app_dir, {"PORT": str(port)}) as server:
        assert (server.host, server.port) == ("0.0.0.0", port)
        assert ident_of(server) == "waitress_c"


@pytest.mark.parametrize(
    "flag", ["--unix-socket=s.sock", "--host=127.0.0.1", "--port=0",
             "--listen=127.0.0.1:0"])
def test_port_gives_way_to_any_address_setting(monkeypatch, flag):
    monkeypatch.setenv("PORT", "5000")
    kw = served_kw(flag, APP)[1]
    assert "listen" not in kw or kw["listen"] == "127.0.0.1:0"
    assert "5000" not in str(kw)


# -- precedence: one test per adjacent pair -------------------------------------------


def test_default_below_port(monkeypatch):
    # Without anything, the default 0.0.0.0:8080; with $PORT, $PORT.
    assert served_kw(APP)[1] == {}
    monkeypatch.setenv("PORT", "5000")
    assert served_kw(APP)[1] == {"listen": "0.0.0.0:5000"}


def test_port_below_config_file(app_dir):
    write(app_dir, "c.toml", "listen = '127.0.0.1:0'\n")
    port = free_port()
    with serving(["-c", "c.toml", "cliapp:app"], app_dir, {"PORT": str(port)}) as server:
        assert server.host == "127.0.0.1" and server.port != port


def test_config_file_below_environment(app_dir):
    write(app_dir, "c.py", "listen = '127.0.0.1:0'\nident = 'file'\n")
    with serving(["-c", "c.py", "cliapp:app"], app_dir,
                 {"WAITRESS_C_IDENT": "env"}) as server:
        assert ident_of(server) == "env"


def test_environment_below_cmd_args(app_dir):
    env = {"WAITRESS_C_IDENT": "env", "WAITRESS_C_LISTEN": "127.0.0.1:0",
           "WAITRESS_C_CMD_ARGS": "--ident=cmd-args"}
    with serving(["cliapp:app"], app_dir, env) as server:
        assert ident_of(server) == "cmd-args"


def test_cmd_args_below_command_line(app_dir):
    env = {"WAITRESS_C_CMD_ARGS": "--ident=cmd-args --listen=127.0.0.1:0"}
    with serving(["--ident=cli", "--listen=127.0.0.1:0", "cliapp:app"],
                 app_dir, env) as server:
        # --listen of both would be two listeners: the command line's only.
        assert len(re.findall("Serving on", server.output)) == 1
        assert ident_of(server) == "cli"


def test_command_line_app_beats_the_files(app_dir):
    write(app_dir, "other.py", "")
    write(app_dir, "c.py", "wsgi_app = 'other:missing'\nlisten = '127.0.0.1:0'\n")
    with serving(["-c", "c.py", "cliapp:app"], app_dir) as server:
        assert ident_of(server) == "waitress_c"


def test_an_address_above_replaces_another_kind_below(app_dir):
    # unix_socket in the file, a TCP listener on the command line: no
    # "may not be set" clash, the command line's address alone.
    write(app_dir, "c.toml", "unix_socket = 'wc.sock'\n")
    with serving(["-c", "c.toml", "--listen=127.0.0.1:0", "cliapp:app"],
                 app_dir) as server:
        assert server.host == "127.0.0.1"
        assert ident_of(server) == "waitress_c"
    assert not (app_dir / "wc.sock").exists()


# -- hooks --------------------------------------------------------------------------------

HOOKS_CONF = '''
import json, os

_LOG = {log!r}


def _line(hook, info):
    with open(_LOG, "a") as f:
        f.write(json.dumps({{
            "hook": hook, "getpid": os.getpid(), "getppid": os.getppid(),
            "pid": info.pid, "age": getattr(info, "age", None),
            "exit_status": getattr(info, "exit_status", None),
            "worker_pids": getattr(info, "worker_pids", None),
            "listen": getattr(info, "listen", None),
        }}) + "\\n")


def on_starting(server):
    _line("on_starting", server)


def when_ready(server):
    _line("when_ready", server)


def post_fork(worker):
    _line("post_fork", worker)
    {post_fork_extra}


def worker_exit(worker):
    _line("worker_exit", worker)


def child_exit(worker):
    _line("child_exit", worker)
    {child_exit_extra}

listen = "127.0.0.1:0"
wsgi_app = "cliapp:app"
'''


def hooks_conf(directory, post_fork_extra="pass", child_exit_extra="pass"):
    log = directory / "hooks.log"
    write(directory, "hooks.conf.py", HOOKS_CONF.format(
        log=str(log), post_fork_extra=post_fork_extra,
        child_exit_extra=child_exit_extra))
    return log


def hook_lines(log):
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def wait_lines(log, hook, count, timeout=30.0):
    """The lines of `hook`, once there are `count` of them (bounded)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        lines = [x for x in hook_lines(log) if x["hook"] == hook]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, (hook, count, hook_lines(log))
        time.sleep(0.05)


def test_hooks_with_workers_run_in_the_right_processes(app_dir):
    log = hooks_conf(app_dir)
    server = serving(["-c", "hooks.conf.py", "--workers=2"], app_dir)
    try:
        sup = server.pid
        (ready,) = wait_lines(log, "when_ready", 1)
        workers = sorted(children(sup))
        assert ident_of(server) == "waitress_c"
    finally:
        status, output = server.stop(signal.SIGTERM)
    assert status == 0
    lines = hook_lines(log)
    by = {}
    for line in lines:
        by.setdefault(line["hook"], []).append(line)
    (starting,) = by["on_starting"]
    assert starting["getpid"] == starting["pid"] == sup
    assert starting["listen"] == []
    assert ready["getpid"] == ready["pid"] == sup
    assert sorted(ready["worker_pids"]) == workers
    assert ready["listen"] == [["127.0.0.1", str(server.port)]]
    # post_fork: in each worker, child of the supervisor, before it served.
    forks = by["post_fork"]
    assert sorted(x["getpid"] for x in forks) == workers
    assert all(x["getpid"] == x["pid"] and x["getppid"] == sup for x in forks)
    assert sorted(x["age"] for x in forks) == [1, 2]
    assert all(x["exit_status"] is None for x in forks)
    assert lines.index(ready) > max(lines.index(x) for x in forks)
    # worker_exit: in each worker; child_exit: in the supervisor, after.
    exits = by["worker_exit"]
    assert sorted(x["getpid"] for x in exits) == workers
    assert all(x["pid"] == x["getpid"] and x["exit_status"] == 0 for x in exits)
    reaped = by["child_exit"]
    assert all(x["getpid"] == sup for x in reaped)
    assert sorted(x["pid"] for x in reaped) == workers
    assert all(x["exit_status"] == 0 for x in reaped)
    ages = {x["pid"]: x["age"] for x in forks}
    assert all(ages[x["pid"]] == x["age"] for x in reaped + exits)
    assert "Traceback" not in output


def test_child_exit_sees_a_killed_worker_and_its_exception_is_only_logged(app_dir):
    log = hooks_conf(app_dir, child_exit_extra="raise RuntimeError('hook bug')")
    server = serving(["-c", "hooks.conf.py", "--workers=2"], app_dir)
    try:
        wait_lines(log, "when_ready", 1)
        victim = children(server.pid)[0]
        os.kill(victim, signal.SIGKILL)
        (reaped,) = wait_lines(log, "child_exit", 1)
        assert (reaped["getpid"], reaped["pid"]) == (server.pid, victim)
        assert reaped["exit_status"] == -signal.SIGKILL
        # The supervisor survived its hook's exception: a third worker.
        forks = wait_lines(log, "post_fork", 3)
        assert forks[2]["age"] == 3 and forks[2]["getppid"] == server.pid
        server.wait_for(r"Worker pid %d: serving" % forks[2]["pid"])
        assert ident_of(server) == "waitress_c"
        assert server.poll() is None
        server.wait_for(r"Hook child_exit\(.*\) raised an exception")
        server.wait_for(r"RuntimeError: hook bug")
    finally:
        status, output = server.stop(signal.SIGTERM)
    assert status == 0


def test_post_fork_exception_is_a_boot_failure(app_dir):
    log = hooks_conf(app_dir, post_fork_extra="raise RuntimeError('no pool')")
    status, out, err = run_cmd(
        [SERVE, "-c", "hooks.conf.py", "--workers=2"], app_dir)
    assert status == 1
    assert "RuntimeError: no pool" in err
    assert "failed to boot (exit status 3)" in err
    assert "Error: worker pid" in err
    by = [x["hook"] for x in hook_lines(log)]
    # The app was never loaded; worker_exit pairs with a post_fork that
    # returned, and none did.
    assert "when_ready" not in by and "worker_exit" not in by
    assert "child_exit" in by


def test_hooks_in_a_single_process(app_dir):
    log = hooks_conf(app_dir)
    server = serving(["-c", "hooks.conf.py"], app_dir)
    try:
        (ready,) = wait_lines(log, "when_ready", 1)
        assert ident_of(server) == "waitress_c"
    finally:
        status, _ = server.stop(signal.SIGTERM)
    assert status == 0
    lines = hook_lines(log)
    assert [x["hook"] for x in lines] == ["on_starting", "when_ready", "worker_exit"]
    assert all(x["getpid"] == x["pid"] == server.pid for x in lines)
    assert ready["listen"] == [["127.0.0.1", str(server.port)]]
    assert lines[2]["age"] == 0 and lines[2]["exit_status"] == 0


def test_hook_exception_in_a_single_process_is_logged(app_dir):
    write(app_dir, "c.py",
          "listen = '127.0.0.1:0'\n"
          "def on_starting(server):\n    raise ValueError('oops')\n")
    with serving(["-c", "c.py", "cliapp:app"], app_dir) as server:
        assert ident_of(server) == "waitress_c"
        server.wait_for(r"Hook on_starting\(.*\) raised an exception")
        server.wait_for(r"ValueError: oops")


# -- the examples ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["waitress_c.conf.py", "waitress_c.toml"])
def test_example_files_serve(name):
    path = os.path.join("examples", name)
    # Their listen (127.0.0.1:8080) overridden by the command line.
    server = serving(["-c", path, "--listen=127.0.0.1:0"], ROOT)
    try:
        if name.endswith(".py"):
            server.wait_for(r"when_ready: listening on \[\('127\.0\.0\.1', '%d'\)\]"
                            % server.port)
        resp, body = server.request("GET", "/")
        assert (resp.status, body) == (200, b"Hello, world!")
    finally:
        status, output = server.stop(signal.SIGTERM)
    assert status == 0
    if name.endswith(".py"):
        assert len(re.findall(r"post_fork: worker [12] is pid \d+", output)) == 2
        assert len(re.findall(r"worker_exit: pid \d+, status 0", output)) == 2
        assert len(re.findall(r"child_exit: pid \d+, status 0", output)) == 2


def test_reload_restarts_when_the_config_file_changes(app_dir):
    pytest.importorskip("hupper")
    port = free_port()
    conf = "listen = '127.0.0.1:%d'\nident = '%s'\nwsgi_app = 'cliapp:app'\n"
    path = write(app_dir, "c.py", conf % (port, "v1"))
    server = serving(["--reload", "-c", "c.py"], app_dir)
    try:
        assert ident_of(server) == "v1"
        write(app_dir, "c.py", conf % (port, "v2"))
        # hupper polls the file's mtime from when the server asks it to
        # watch the file: touch it again until the reload begins, and no
        # more (a touch later would start another).
        deadline = time.monotonic() + 40 * SLOW
        touched = time.monotonic()
        seen = None
        while seen != "v2" and time.monotonic() < deadline:
            try:
                seen = ident_of(server)
            except (OSError, AssertionError):
                pass  # between the old server and the new one
            reloading = "c.py changed; reloading" in server.output
            if not reloading and time.monotonic() - touched > 3:
                os.utime(path)
                touched = time.monotonic()
            time.sleep(0.2)
        assert seen == "v2", server.output
        assert "c.py changed; reloading" in server.output
    finally:
        status, _ = server.stop(signal.SIGTERM, timeout=30)
    assert status == 0
