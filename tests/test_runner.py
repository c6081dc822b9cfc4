"""waitress-c-serve (reference section 2.7): every flag, every error, the
help text compared with the real waitress-serve's, and serving through the
console script and ``python -m waitress_c`` in a subprocess."""

import logging
import os
import re
import sys

import pytest
from subprocess_server import Server, run_cli, script, write_app

from waitress_c import runner
from waitress_c.adjustments import OPTIONS, STANDARD, TUNING
from waitress_c.runner import format_help, run

APP = "wsgiref.simple_server:demo_app"


class FakeServe:
    def __init__(self):
        self.calls = []

    def __call__(self, app, **kw):
        self.calls.append((app, kw))


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """Each test gets its own sys.path and leaves the logger as it was."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    wlogger = logging.getLogger("waitress_c")
    level = wlogger.level
    yield
    wlogger.setLevel(level)


def cli(*args, name="waitress-c-serve"):
    """Run the runner in-process; returns (status, serve calls)."""
    fake = FakeServe()
    status = run([name] + list(args), _serve=fake)
    return status, fake.calls


def served_kw(*args):
    status, calls = cli(*args)
    assert status == 0 and len(calls) == 1
    return calls[0][1]


# -- help ------------------------------------------------------------------------


def help_options(text):
    """{section: [option names]} from a waitress-style help text."""
    sections = {}
    current = None
    for line in text.splitlines():
        if line.endswith("options:"):
            current = sections.setdefault(line[:-1], [])
        match = re.match(r"^    --(?:\[no-\])?([a-z0-9-]+)", line)
        if match and current is not None:
            current.append(match.group(1))
    return sections


def test_help(capsys):
    status, calls = cli("--help")
    out, err = capsys.readouterr()
    assert (status, calls, err) == (0, [], "")
    assert out.startswith(
        "Usage:\n\n    waitress-c-serve [OPTS] [MODULE:OBJECT]\n\nStandard options:\n"
    )
    assert "\nTuning options:\n" in out


def test_help_lists_every_adjustment_in_its_section():
    sections = help_options(format_help("x"))
    assert list(sections) == [STANDARD, TUNING]
    assert sections[STANDARD][:3] == ["help", "call", "app"]
    for opt in OPTIONS:
        assert opt.flag[2:] in sections[opt.section]
    assert len(sections[STANDARD]) + len(sections[TUNING]) == len(
        runner.RUNNER_FLAGS
    ) + len(OPTIONS)


def test_help_shows_flag_forms():
    text = format_help("x")
    assert "    --[no-]ipv4\n" in text
    assert "    --listen=ip:port\n" in text
    assert "    --unix-socket-perms=PERMS\n" in text
    assert "    --asyncore-loop-timeout=INT\n" in text
    for line in text.splitlines():
        assert len(line) <= 79


def test_help_lists_every_waitress_serve_option_in_the_same_section():
    proc = run_cli([script("waitress-serve"), "--help"], cwd=os.getcwd())
    assert proc.returncode == 0
    theirs = help_options(proc.stdout)
    ours = help_options(format_help("x"))
    assert set(theirs) == {STANDARD, TUNING}
    for section, names in theirs.items():
        assert names, section
        assert set(names) <= set(ours[section]), section


def test_help_of_python_m():
    assert format_help(runner._program_name("/x/waitress_c/__main__.py")).startswith(
        "Usage:\n\n    python -m waitress_c [OPTS] [MODULE:OBJECT]"
    )


# -- one test per flag ---------------------------------------------------------------

# (flag arguments, expected keywords given to serve)
VALUE_FLAGS = {
    "host": "127.0.0.1",
    "port": "9000",
    "listen": "127.0.0.1:0",
    "threads": "8",
    "trusted_proxy": "10.0.0.1",
    "trusted_proxy_count": "2",
    "trusted_proxy_headers": "x-forwarded-for x-forwarded-proto",
    "url_scheme": "https",
    "url_prefix": "/app",
    "backlog": "64",
    "recv_bytes": "16384",
    "send_bytes": "9000",
    "outbuf_overflow": "2048",
    "outbuf_high_watermark": "4096",
    "inbuf_overflow": "1024",
    "connection_limit": "10",
    "cleanup_interval": "5",
    "channel_timeout": "7",
    "max_request_header_size": "1000",
    "max_request_body_size": "2000",
    "ident": "myserver",
    "asyncore_loop_timeout": "5",
    "unix_socket": "/tmp/wc-test.sock",
    "unix_socket_perms": "660",
    "sockets": "3",
    "channel_request_lookahead": "3",
    "server_name": "example.org",
    "shutdown_timeout": "2.5",
    "workers": "3",
    "max_requests": "1000",
    "max_requests_jitter": "50",
}

CONTEXT = {
    "trusted_proxy_count": ["--trusted-proxy=10.0.0.1"],
    "trusted_proxy_headers": ["--trusted-proxy=10.0.0.1"],
}


def test_every_option_has_a_flag_test():
    bools = {o.name for o in OPTIONS if o.is_bool}
    assert set(VALUE_FLAGS) | bools == {o.name for o in OPTIONS}
    assert not set(VALUE_FLAGS) & bools


@pytest.mark.parametrize("name", sorted(VALUE_FLAGS))
def test_value_flag(name):
    flag = "--%s=%s" % (name.replace("_", "-"), VALUE_FLAGS[name])
    kw = served_kw(*CONTEXT.get(name, []), flag, APP)
    assert kw[name] == VALUE_FLAGS[name]


@pytest.mark.parametrize(
    "name", sorted(o.name for o in OPTIONS if o.is_bool)
)
@pytest.mark.parametrize("negated", [False, True])
def test_bool_flag(name, negated):
    flag = ("--no-" if negated else "--") + name.replace("_", "-")
    extra = ["--listen=*:0"] if name in ("ipv4", "ipv6") else []
    kw = served_kw(flag, *extra, APP)
    assert kw[name] == ("false" if negated else "true")


def test_flags_pass_strings_untouched_and_only_those_given():
    kw = served_kw("--threads=8", "--no-ipv6", APP)
    assert kw == {"threads": "8", "ipv6": "false"}


def test_listen_repeated_is_joined():
    kw = served_kw("--listen=127.0.0.1:0", "--listen=[::1]:0", APP)
    assert kw == {"listen": "127.0.0.1:0 [::1]:0"}


def test_unambiguous_prefix_accepted_like_getopt():
    assert served_kw("--thr=3", APP) == {"threads": "3"}


def test_last_value_wins():
    assert served_kw("--threads=3", "--threads=5", APP) == {"threads": "5"}


# -- the application ---------------------------------------------------------------


def test_positional_app():
    from wsgiref.simple_server import demo_app

    status, calls = cli(APP)
    assert status == 0 and calls[0][0] is demo_app


def test_app_flag():
    from wsgiref.simple_server import demo_app

    status, calls = cli("--app=" + APP)
    assert status == 0 and calls[0][0] is demo_app


def test_dotted_form():
    from wsgiref.simple_server import demo_app

    status, calls = cli("wsgiref.simple_server.demo_app")
    assert status == 0 and calls[0][0] is demo_app


def test_call_and_current_directory_on_sys_path(tmp_path, monkeypatch):
    (tmp_path / "wc_factory_mod.py").write_text(
        "def app(environ, start_response):\n    return []\n"
        "def make():\n    return app\n"
    )
    monkeypatch.chdir(tmp_path)
    status, calls = cli("--call", "wc_factory_mod:make")
    assert status == 0
    assert calls[0][0] is sys.modules["wc_factory_mod"].app
    assert str(tmp_path) in sys.path


def test_call_returning_none(tmp_path, monkeypatch, capsys):
    (tmp_path / "wc_none_mod.py").write_text("def make():\n    return None\n")
    monkeypatch.chdir(tmp_path)
    status, calls = cli("--call", "wc_none_mod:make")
    err = capsys.readouterr().err
    assert (status, calls) == (1, [])
    assert err.startswith(
        "Error: The WSGI application 'wc_none_mod:make' is None (returned by --call)."
    )


# -- errors: "Error: ..." and the usage on stderr, status 1 ------------------------


def assert_usage_error(capsys, status, calls, message):
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err.startswith("Error: %s\n\nUsage:\n" % message)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nope", APP], "option --nope not recognized"),
        (["--threads", APP], None),  # getopt takes APP as the value
        (["--threads"], "option --threads requires argument"),
        (["--ipv4=1", APP], "option --ipv4 must not have an argument"),
        (["--no-threads", APP], "option --no-threads not recognized"),
        (["--t=1", APP], "option --t not a unique prefix"),
        ([], "Specify an application"),
        ([APP, APP], "Provide only one WSGI app"),
        (["--app=" + APP, APP], "Provide only one WSGI app"),
        (
            ["--listen=127.0.0.1:0", "--port=1", APP],
            "host or port may not be set if listen is set.",
        ),
        (
            ["--trusted-proxy-headers=x-forwarded-for", APP],
            "trusted_proxy_headers has no meaning without setting trusted_proxy",
        ),
        (["--listen=127.0.0.1:nope", APP], "Invalid host/port specified."),
        (["--threads=many", APP], "invalid literal for int() with base 10: 'many'"),
        (
            ["--unix-socket-perms=999", APP],
            "invalid literal for int() with base 8: '999'",
        ),
        (
            ["--unix-socket=/tmp/x.sock", "--host=127.0.0.1", APP],
            "unix_socket may not be set if host or port is set",
        ),
    ],
)
def test_usage_error(capsys, args, message):
    status, calls = cli(*args)
    if message is None:
        # "--threads app" swallows the app as the value of --threads
        message = "Specify an application"
    assert_usage_error(capsys, status, calls, message)


def test_options_after_the_app_are_not_options(capsys):
    # getopt stops at the first positional argument, as in waitress
    status, calls = cli(APP, "--threads=2")
    assert_usage_error(capsys, status, calls, "Provide only one WSGI app")


@pytest.mark.parametrize(
    "spec, detail",
    [
        ("wc_no_such_module:app", "No module named 'wc_no_such_module'"),
        ("wsgiref.simple_server:no_such_app", "no_such_app"),
        ("not a name!", "invalid format"),
    ],
)
def test_import_error(capsys, spec, detail):
    status, calls = cli(spec)
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    first = err.splitlines()[0]
    assert first.startswith("Error: Cannot import WSGI application %r: " % spec)
    assert detail in first
    assert "Traceback (most recent call last)" in err


# -- logging -----------------------------------------------------------------------


def test_sets_logger_to_info_when_notset():
    logging.getLogger("waitress_c").setLevel(logging.NOTSET)
    cli(APP)
    assert logging.getLogger("waitress_c").level == logging.INFO


def test_keeps_an_explicit_logger_level():
    logging.getLogger("waitress_c").setLevel(logging.ERROR)
    cli(APP)
    assert logging.getLogger("waitress_c").level == logging.ERROR


def test_default_serve_is_waitress_c_serve():
    import waitress_c

    assert run.__defaults__[1] is waitress_c.serve


# -- in a subprocess: needs the C core ---------------------------------------------


@pytest.fixture
def app_dir(tmp_path):
    write_app(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "command",
    [[script("waitress-c-serve")], [sys.executable, "-m", "waitress_c"]],
    ids=["console-script", "python-m"],
)
def test_serves_and_stops_on_sigint(app_dir, command):
    server = Server(
        command + ["--listen=127.0.0.1:0", "--ident=cli-test", "cliapp:app"],
        cwd=app_dir,
    )
    try:
        assert server.host == "127.0.0.1"
        status, headers, body = server.get("/hello")
        assert status == 200
        assert body["PATH_INFO"] == "/hello"
        assert headers["Server"] == "cli-test"
    finally:
        code, output = server.stop()
    assert code == 0
    assert "INFO:waitress_c:Serving on http://127.0.0.1:%d" % server.port in output
    assert "Traceback" not in output


def test_serves_on_two_listeners(app_dir):
    server = Server(
        [
            script("waitress-c-serve"),
            "--listen=127.0.0.1:0",
            "--listen=127.0.0.1:0",
            "--app=cliapp:app",
        ],
        cwd=app_dir,
    )
    try:
        status, _, _ = server.get("/")
        assert status == 200
    finally:
        code, output = server.stop()
    ports = set(map(int, re.findall(r"Serving on http://127.0.0.1:(\d+)", output)))
    assert len(ports) == 2 and code == 0


@pytest.mark.parametrize(
    "command",
    [[script("waitress-c-serve")], [sys.executable, "-m", "waitress_c"]],
    ids=["console-script", "python-m"],
)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "cliapp:app"], "option --bogus not recognized"),
        (
            ["--listen=127.0.0.1:0", "--port=1", "cliapp:app"],
            "host or port may not be set if listen is set.",
        ),
        ([], "Specify an application"),
    ],
)
def test_errors_exit_1(app_dir, command, args, message):
    proc = run_cli(command + args, cwd=app_dir)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: %s\n" % message)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "command",
    [[script("waitress-c-serve")], [sys.executable, "-m", "waitress_c"]],
    ids=["console-script", "python-m"],
)
def test_help_exits_0(app_dir, command):
    proc = run_cli(command + ["--help"], cwd=app_dir)
    assert proc.returncode == 0
    assert "Tuning options:" in proc.stdout
