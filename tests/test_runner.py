"""waitress-c-serve (reference section 2.7): every flag, every error, the
help text compared with the real waitress-serve's, and serving through the
console script and ``python -m waitress_c`` in a subprocess."""

import importlib.metadata
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from servers import Server, run_cli, script, write_app

import waitress_c
from waitress_c import logs, runner
from waitress_c.adjustments import OPTION_MAP, OPTIONS, STANDARD, TUNING
from waitress_c.adjustments import Adjustments
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
    logs.reset()  # the handlers run() set up


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


def test_short_help_is_help(capsys):
    status, calls = cli("-h")
    out, err = capsys.readouterr()
    assert (status, calls, err) == (0, [], "")
    assert out == format_help("waitress-c-serve") + "\n"


def test_help_shows_the_short_forms():
    text = format_help("x")
    assert "\n    --help, -h\n" in text
    assert "\n    --version, -V\n" in text


# -- version -----------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V", "--vers"])
def test_version(capsys, flag):
    status, calls = cli(flag, APP)
    out, err = capsys.readouterr()
    assert (status, calls, err) == (0, [], "")
    assert out == "waitress_c %s\n" % waitress_c.__version__


def test_version_is_the_installed_distributions():
    assert importlib.metadata.version("waitress_c") == waitress_c.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.?(dev|a|b|rc)\d+)?", waitress_c.__version__)


def test_help_lists_every_adjustment_in_its_section():
    sections = help_options(format_help("x"))
    assert list(sections) == [STANDARD, TUNING]
    assert sections[STANDARD][:4] == ["help", "version", "call", "app"]
    for opt in OPTIONS:
        assert opt.flag[2:] in sections[opt.section]
    assert len(sections[STANDARD]) + len(sections[TUNING]) == len(
        runner.RUNNER_FLAGS
    ) + len(OPTIONS)


def test_help_shows_flag_forms():
    text = format_help("x")
    assert "    --[no-]ipv4\n" in text
    assert "    --listen=ip:port, -b, --bind\n" in text
    assert "    --workers=INT, -w\n" in text
    assert "    --shutdown-timeout=SECONDS, --graceful-timeout\n" in text
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
    "boot_timeout": "10",
    "timeout": "120",
    "access_log_format": "%(h)s %(s)s",
    "pidfile": "/tmp/wc-test.pid",
    "log_level": "warning",
    # An incremental dictConfig that changes nothing in this process.
    "log_config": os.path.join(os.path.dirname(os.path.abspath(__file__)), "logging_noop.json"),
    "error_logfile": "-",
    "access_logfile": "-",
    "metrics": "127.0.0.1:9100",
    # {pki}: the session's certificates (conftest.py's pki fixture).
    "certfile": "{pki}/server.pem",
    "keyfile": "{pki}/server.key",
    "keyfile_password_file": "{pki}/password.txt",
    "keyfile_password_env": "WC_TEST_KEY_PASSWORD",
    "ca_certs": "{pki}/ca.pem",
    "cert_reqs": "required",
    "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "tls_min_version": "1.3",
    "insecure_listen": "127.0.0.1:0",
    "sni_certs": "{pki}/site-a.pem,{pki}/site-a.key",
    "h2_max_concurrent_streams": "32",
    "tls_session_cache": "0",
    "tls_session_timeout": "600",
    "h2_initial_window_size": "65535",
    "h2_max_frame_size": "32768",
    "h2_max_header_list_size": "8192",
}

_TLS = ["--certfile={pki}/server.pem", "--keyfile={pki}/server.key"]
_TLS_ENC = ["--certfile={pki}/server.pem", "--keyfile={pki}/server-enc.key"]
CONTEXT = {
    "trusted_proxy_count": ["--trusted-proxy=10.0.0.1"],
    "trusted_proxy_headers": ["--trusted-proxy=10.0.0.1"],
    "certfile": ["--keyfile={pki}/server.key"],
    "keyfile": ["--certfile={pki}/server.pem"],
    "keyfile_password_file": _TLS_ENC,
    "keyfile_password_env": _TLS_ENC,
    "ca_certs": _TLS,
    "cert_reqs": _TLS + ["--ca-certs={pki}/ca.pem"],
    "ciphers": _TLS,
    "tls_min_version": _TLS,
    "insecure_listen": _TLS,
    "sni_certs": _TLS,
}


def test_every_option_has_a_flag_test():
    bools = {o.name for o in OPTIONS if o.is_bool}
    assert set(VALUE_FLAGS) | bools == {o.name for o in OPTIONS}
    assert not set(VALUE_FLAGS) & bools


@pytest.mark.parametrize("name", sorted(VALUE_FLAGS))
def test_value_flag(name, request, monkeypatch):
    value = VALUE_FLAGS[name]
    context = CONTEXT.get(name, [])
    if "{pki}" in value + "".join(context):
        pki = request.getfixturevalue("pki")
        value = value.format(pki=pki)
        context = [c.format(pki=pki) for c in context]
    if name == "keyfile_password_env":
        from tls_pki import PASSWORD

        monkeypatch.setenv(value, PASSWORD)
    flag = "%s=%s" % (OPTION_MAP[name].flag, value)
    kw = served_kw(*context, flag, APP)
    assert kw[name] == value


@pytest.mark.parametrize(
    "name", sorted(o.name for o in OPTIONS if o.is_bool)
)
@pytest.mark.parametrize("negated", [False, True])
def test_bool_flag(name, negated):
    flag = ("--no-" if negated else "--") + OPTION_MAP[name].flag[2:]
    extra = ["--listen=*:0"] if name in ("ipv4", "ipv6") else []
    kw = served_kw(flag, *extra, APP)
    assert kw[name] == ("false" if negated else "true")


def test_flags_pass_strings_untouched_and_only_those_given():
    kw = served_kw("--threads=8", "--no-ipv6", APP)
    assert kw == {"threads": "8", "ipv6": "false"}


def test_listen_repeated_is_joined():
    kw = served_kw("--listen=127.0.0.1:0", "--listen=[::1]:0", APP)
    assert kw == {"listen": "127.0.0.1:0 [::1]:0"}


def test_insecure_listen_repeated_is_joined(pki):
    kw = served_kw("--certfile=%s" % (pki / "server.pem"),
                   "--keyfile=%s" % (pki / "server.key"),
                   "--insecure-listen=127.0.0.1:0",
                   "--insecure-listen=[::1]:0", APP)
    assert kw["insecure_listen"] == "127.0.0.1:0 [::1]:0"


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


# -- errors: "Error: ..." and a short usage on stderr, status 1 --------------------

SHORT_USAGE = (
    "Usage: waitress-c-serve [OPTS] MODULE:OBJECT\n"
    "Try 'waitress-c-serve --help' for the options.\n"
)


def assert_usage_error(capsys, status, calls, message):
    """One line for the error, then the short usage: not the whole help."""
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err == "Error: %s\n\n%s" % (message, SHORT_USAGE)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", APP], None),  # getopt takes APP as the value
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
        (
            ["--threads=many", APP],
            "option --threads: invalid value 'many' (expected an integer)",
        ),
        (
            ["--unix-socket-perms=999", APP],
            "option --unix-socket-perms: invalid value '999' (expected an octal number)",
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


# getopt's own messages: the words are Python's and change between versions
# (3.14 lists the candidates of an ambiguous prefix), so what is checked is
# what the user needs: the option named, one line, the short usage, status 1.
@pytest.mark.parametrize(
    "args, option, gist",
    [
        (["--nope", APP], "--nope", "not recognized"),
        ([APP, "--nope"], "--nope", "not recognized"),
        (["-x", APP], "-x", "not recognized"),
        (["--version=1"], "--version", "argument"),
        (["--threads"], "--threads", "argument"),
        (["--ipv4=1", APP], "--ipv4", "argument"),
        (["--no-threads", APP], "--no-threads", "not recognized"),
        (["--t=1", APP], "--t", "prefix"),
    ],
)
def test_option_error(capsys, args, option, gist):
    status, calls = cli(*args)
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    line, rest = err.split("\n", 1)
    assert line.startswith("Error: option %s " % option)
    assert gist in line
    assert rest == "\n" + SHORT_USAGE


def test_options_after_the_app():
    # GNU style, unlike waitress (whose getopt stops at the application)
    assert served_kw(APP, "--threads=2") == {"threads": "2"}
    assert served_kw("--threads=2", APP, "--no-ipv6", "--listen=127.0.0.1:0") == {
        "threads": "2",
        "ipv6": "false",
        "listen": "127.0.0.1:0",
    }


def test_short_forms_anywhere(capsys):
    status, calls = cli(APP, "-h")
    assert (status, calls) == (0, [])
    assert capsys.readouterr().out.startswith("Usage:\n")


def test_double_dash_ends_the_options(capsys):
    status, calls = cli("--threads=2", "--", "--threads=3")
    out, err = capsys.readouterr()
    assert (status, calls) == (1, [])
    assert err.startswith("Error: Cannot import WSGI application '--threads=3'")


# -- ports outside 0-65535 ---------------------------------------------------------

# getaddrinfo takes the port modulo 65536: 70000 would listen on 4464, 65536
# on a random free port.


@pytest.mark.parametrize(
    "flag, port",
    [
        ("--port=65536", "65536"),
        ("--port=70000", "70000"),
        ("--port=-1", "-1"),
        ("--listen=127.0.0.1:65536", "65536"),
        ("--listen=127.0.0.1:0 --listen=[::1]:99999", "99999"),
        ("--listen=*:100000", "100000"),
        ("--insecure-listen=127.0.0.1:70000", "70000"),
    ],
)
def test_port_out_of_range(capsys, flag, port):
    status, calls = cli(*flag.split(), APP)
    assert_usage_error(
        capsys,
        status,
        calls,
        "port %s is out of range (1-65535, or 0 for any free port)" % port,
    )


@pytest.mark.parametrize(
    "flag", ["--port=0", "--port=1", "--port=65535", "--listen=127.0.0.1:65535"]
)
def test_port_in_range(flag):
    name, value = flag[2:].split("=")
    assert served_kw(flag, APP) == {name: value}


def test_port_as_a_service_name_is_left_to_getaddrinfo():
    assert served_kw("--listen=127.0.0.1:http", APP) == {"listen": "127.0.0.1:http"}


# -- the application cannot be imported: one line ---------------------------------


@pytest.mark.parametrize(
    "spec, detail",
    [
        ("wc_no_such_module:app", "No module named 'wc_no_such_module'"),
        ("wc_no_such_module.sub:app", "No module named 'wc_no_such_module'"),
        (
            "wsgiref.simple_server:no_such_app",
            "module 'wsgiref.simple_server' has no attribute 'no_such_app'",
        ),
        ("wsgiref.simple_server.no_such_app", "no_such_app"),
        ("not a name!", "invalid format: 'not a name!'"),
    ],
)
def test_import_error(capsys, spec, detail):
    status, calls = cli(spec)
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err.count("\n") == 1
    assert err.startswith("Error: Cannot import WSGI application %r: " % spec)
    assert detail in err


# A module that loads its attributes lazily (a module-level __getattr__, as
# large frameworks' packages have, and wsgiref.simple_server from 3.15): its
# "no such attribute" comes from its own code, and is still one line; an
# AttributeError about something else, raised while it loads one, is the
# module's error and keeps its traceback.
LAZY_MODULE = """\
import json


def __getattr__(name):
    if name == "app":
        from wsgiref.simple_server import demo_app
        return demo_app
    if name == "broken_app":
        return json.no_such_function
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
"""


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    name = "wc_lazy_%d" % os.getpid()
    (tmp_path / (name + ".py")).write_text(LAZY_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_lazy_module_attribute_is_served(lazy_module):
    from wsgiref.simple_server import demo_app

    status, calls = cli(lazy_module + ":app")
    assert status == 0 and calls[0][0] is demo_app


@pytest.mark.parametrize("sep", [":", "."])
def test_lazy_module_without_the_attribute(capsys, lazy_module, sep):
    spec = lazy_module + sep + "no_such_app"
    status, calls = cli(spec)
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err == (
        "Error: Cannot import WSGI application %r: module %r has no "
        "attribute 'no_such_app'\n" % (spec, lazy_module)
    )


def test_lazy_module_error_while_loading_shows_its_traceback(capsys, lazy_module):
    status, calls = cli(lazy_module + ":broken_app")
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err.startswith("Traceback (most recent call last)")
    assert "module 'json' has no attribute 'no_such_function'" in err
    assert err.endswith(
        "Error: Cannot import WSGI application '%s:broken_app': its module "
        "raised the exception above\n" % lazy_module
    )


def test_dotted_name_whose_module_fails_to_import(capsys, tmp_path, monkeypatch):
    # without a colon the longest importable prefix is the module: one that
    # exists but fails (a missing dependency) is its error, not "no such
    # attribute" of the package
    pkg = tmp_path / "wc_dotted_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "wsgi.py").write_text("import wc_missing_dependency\napp = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        status, calls = cli("wc_dotted_pkg.wsgi.app")
    finally:
        for name in ("wc_dotted_pkg", "wc_dotted_pkg.wsgi"):
            sys.modules.pop(name, None)
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err.startswith("Traceback (most recent call last)")
    assert "No module named 'wc_missing_dependency'" in err


@pytest.mark.parametrize(
    "spec, detail",
    [
        ("wsgiref.simple_server:demo_app.no_such", "has no attribute 'no_such'"),
        ("wsgiref.simple_server:WSGIServer.no_such", "has no attribute 'no_such'"),
    ],
)
def test_missing_attribute_further_along(capsys, spec, detail):
    status, calls = cli(spec)
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err.count("\n") == 1 and detail in err


@pytest.mark.parametrize(
    "source, error",
    [
        ("import wc_missing_dependency\n", "ModuleNotFoundError"),
        ("raise AttributeError('inside the module')\n", "AttributeError"),
        ("raise ValueError('inside the module')\n", "ValueError"),
        ("def broken(:\n", "SyntaxError"),
    ],
)
def test_error_inside_the_app_module_shows_its_traceback(
    capsys, tmp_path, monkeypatch, source, error
):
    name = "wc_broken_%s" % error.lower()
    (tmp_path / (name + ".py")).write_text(source)
    monkeypatch.chdir(tmp_path)
    status, calls = cli(name + ":app")
    out, err = capsys.readouterr()
    assert (status, calls, out) == (1, [], "")
    assert err.startswith("Traceback (most recent call last)")
    assert "\n%s" % error in err
    assert err.endswith(
        "Error: Cannot import WSGI application '%s:app': its module raised "
        "the exception above\n" % name
    )


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
    assert "[INFO] Serving on http://127.0.0.1:%d" % server.port in output
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
    name = "python -m waitress_c" if command[0] == sys.executable else "waitress-c-serve"
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: %s\n\nUsage: %s [OPTS] MODULE:OBJECT\n"
        "Try '%s --help' for the options.\n" % (message, name, name)
    )
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "command",
    [[script("waitress-c-serve")], [sys.executable, "-m", "waitress_c"]],
    ids=["console-script", "python-m"],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0(app_dir, command, flag):
    proc = run_cli(command + [flag], cwd=app_dir)
    assert proc.returncode == 0
    assert "Tuning options:" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize(
    "command",
    [[script("waitress-c-serve")], [sys.executable, "-m", "waitress_c"]],
    ids=["console-script", "python-m"],
)
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_exits_0(app_dir, command, flag):
    proc = run_cli(command + [flag], cwd=app_dir)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == "waitress_c %s\n" % waitress_c.__version__
    assert re.fullmatch(r"waitress_c \d+\.\d+\.\d+\S*\n", proc.stdout)


def test_option_after_the_app_in_a_subprocess(app_dir):
    # --port=0 alone listens on 0.0.0.0: the request still goes to 127.0.0.1
    server = Server([script("waitress-c-serve"), "cliapp:app", "--port=0"], cwd=app_dir)
    try:
        assert server.host == "0.0.0.0"
        server.host = "127.0.0.1"
        status, _, body = server.get("/after")
        assert (status, body["PATH_INFO"]) == (200, "/after")
    finally:
        code, output = server.stop()
    assert code == 0


@pytest.fixture
def busy_port():
    """A port this test holds: bound and listening on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize(
    "command",
    [[script("waitress-c-serve")], [sys.executable, "-m", "waitress_c"]],
    ids=["console-script", "python-m"],
)
@pytest.mark.parametrize("form", ["listen", "host-port"])
def test_port_in_use(app_dir, command, busy_port, form):
    if form == "listen":
        args = ["--listen=127.0.0.1:%d" % busy_port]
    else:
        args = ["--host=127.0.0.1", "--port=%d" % busy_port]
    proc = run_cli(command + args + ["cliapp:app"], cwd=app_dir)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        "Error: cannot listen on 127.0.0.1:%d: Address already in use\n" % busy_port
    )


def test_second_listener_in_use_releases_the_first(app_dir, busy_port):
    proc = run_cli(
        [
            script("waitress-c-serve"),
            "--listen=127.0.0.1:0",
            "--listen=127.0.0.1:%d" % busy_port,
            "cliapp:app",
        ],
        cwd=app_dir,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: cannot listen on 127.0.0.1:%d: Address already in use\n" % busy_port
    )


def test_unix_socket_path_taken_by_a_file(app_dir):
    path = app_dir / "taken.sock"
    path.write_text("not a socket")
    proc = run_cli(
        [script("waitress-c-serve"), "--unix-socket=%s" % path, "cliapp:app"],
        cwd=app_dir,
    )
    assert proc.returncode == 1
    assert proc.stderr == "Error: cannot listen on %s: Address already in use\n" % path
    assert path.read_text() == "not a socket"


def test_unix_socket_in_a_missing_directory(app_dir):
    path = app_dir / "no-such-dir" / "wc.sock"
    proc = run_cli(
        [script("waitress-c-serve"), "--unix-socket=%s" % path, "cliapp:app"],
        cwd=app_dir,
    )
    assert proc.returncode == 1
    assert proc.stderr == "Error: cannot listen on %s: No such file or directory\n" % path


@pytest.mark.parametrize(
    "args, message",
    [
        (["wc_nope:app"], "Cannot import WSGI application 'wc_nope:app': "
         "No module named 'wc_nope'"),
        (["cliapp:nope"], "Cannot import WSGI application 'cliapp:nope': "
         "module 'cliapp' has no attribute 'nope'"),
    ],
)
def test_unknown_app_in_a_subprocess(app_dir, args, message):
    proc = run_cli([script("waitress-c-serve")] + args, cwd=app_dir)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "Error: %s\n" % message


def test_listen_error_keeps_the_errno(busy_port):
    import errno

    with pytest.raises(OSError) as info:
        waitress_c.create_server(
            lambda environ, start_response: [], listen="127.0.0.1:%d" % busy_port
        )
    assert info.value.errno == errno.EADDRINUSE
    assert str(info.value) == (
        "cannot listen on 127.0.0.1:%d: Address already in use" % busy_port
    )


# -- a closed stdout, a numeric flag given a non-number, SIGHUP ----------------------


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_output_to_a_closed_pipe_is_quiet(app_dir, flag):
    # `waitress-c-serve --help | head -1`, with head gone before the write:
    # the read end is closed before the command starts, so every write to
    # stdout fails with EPIPE.
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.Popen(
            [script("waitress-c-serve"), flag],
            cwd=str(app_dir),
            stdin=subprocess.DEVNULL,
            stdout=w,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(w)
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err.decode()
    assert "BrokenPipeError" not in err.decode()
    assert err == b""
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "args, flag, value, expected",
    [
        (["--threads=x"], "--threads", "x", "an integer"),
        (["--port", "http"], "--port", "http", "an integer"),
        (["--shutdown-timeout=soon"], "--shutdown-timeout", "soon", "a number"),
        (["--unix-socket-perms=999"], "--unix-socket-perms", "999", "an octal number"),
    ],
)
def test_numeric_flag_given_a_non_number(capsys, args, flag, value, expected):
    status, calls = cli(*args, APP)
    assert_usage_error(
        capsys, status, calls,
        "option %s: invalid value %r (expected %s)" % (flag, value, expected),
    )


def test_numeric_flag_error_in_a_subprocess(app_dir):
    proc = run_cli([script("waitress-c-serve"), "--threads=x", "cliapp:app"], cwd=app_dir)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        "Error: option --threads: invalid value 'x' (expected an integer)"
    )


def test_sighup_in_a_single_process_is_refused_and_logged(app_dir):
    server = Server(
        [script("waitress-c-serve"), "--listen=127.0.0.1:0", "cliapp:app"],
        cwd=app_dir,
    )
    refusal = "[WARNING] SIGHUP: a single process cannot reload; use --workers for rolling restarts"
    try:
        for count in (1, 2):
            server.send_signal(signal.SIGHUP)
            server.wait_for(re.escape(refusal), count=count)
            status, _, body = server.get("/after-hup")
            assert (status, body["PATH_INFO"]) == (200, "/after-hup")
            assert server.poll() is None
    finally:
        code, output = server.stop()
    assert code == 0
    assert "Traceback" not in output


# -- the pid file ----------------------------------------------------------------------


def test_pid_flag_is_pidfile():
    assert served_kw("--pid", "/tmp/x.pid", APP) == {"pidfile": "/tmp/x.pid"}


def test_pid_in_a_missing_directory_is_refused(capsys, tmp_path):
    path = tmp_path / "no-such-dir" / "wc.pid"
    status, calls = cli("--pid=%s" % path, APP)
    assert_usage_error(
        capsys, status, calls,
        "pidfile %s: directory %s does not exist" % (path, path.parent),
    )


def test_pid_file_holds_the_serving_pid_and_goes_at_sigterm(app_dir):
    path = app_dir / "run" / "wc.pid"
    path.parent.mkdir()
    server = Server(
        [script("waitress-c-serve"), "--listen=127.0.0.1:0", "--pid", "run/wc.pid",
         "cliapp:app"],
        cwd=app_dir,
    )
    try:
        # Answered: the loop runs, so the file was written before it.
        status, _, _ = server.get("/")
        assert status == 200
        assert path.read_text() == "%d\n" % server.pid
        assert os.listdir(path.parent) == ["wc.pid"]  # no temporary left
    finally:
        code, output = server.stop(signal.SIGTERM)
    assert code == 0, output
    assert not path.exists()


def test_pid_file_that_cannot_be_written_is_one_line(app_dir):
    # A directory where the file should be: the rename fails (even as root).
    path = app_dir / "wc.pid"
    path.mkdir()
    proc = run_cli(
        [script("waitress-c-serve"), "--listen=127.0.0.1:0", "--pid=%s" % path,
         "cliapp:app"],
        cwd=app_dir,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "Error: cannot write the pid file %s: Is a directory" % path
    )
    assert not [n for n in os.listdir(app_dir) if n.startswith(".wc.pid.")]


def test_pid_file_removed_after_close(tmp_path):
    import threading

    path = tmp_path / "wc.pid"
    server = waitress_c.create_server(
        lambda environ, start_response: [], listen="127.0.0.1:0", pidfile=str(path)
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        conn = socket.create_connection(("127.0.0.1", int(server.effective_port)), 10)
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        conn.settimeout(10)
        assert conn.recv(100)  # the loop answers: the file was written before
        conn.close()
        assert path.read_text() == "%d\n" % os.getpid()
    finally:
        server.close()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert not path.exists()


# -- gunicorn's spellings --------------------------------------------------------------

ALIASES = [
    (["-b", "127.0.0.1:0"], ["--listen=127.0.0.1:0"]),
    (["-b127.0.0.1:0"], ["--listen=127.0.0.1:0"]),
    (["--bind=127.0.0.1:0"], ["--listen=127.0.0.1:0"]),
    (["--bind", "127.0.0.1:0"], ["--listen=127.0.0.1:0"]),
    (["-b", "127.0.0.1:0", "--bind=[::1]:0"], ["--listen=127.0.0.1:0", "--listen=[::1]:0"]),
    (["-b", "127.0.0.1:0", "--listen=[::1]:0"], ["--listen=127.0.0.1:0", "--listen=[::1]:0"]),
    (["-w", "3"], ["--workers=3"]),
    (["-w3"], ["--workers=3"]),
    (["--graceful-timeout=2.5"], ["--shutdown-timeout=2.5"]),
]


@pytest.mark.parametrize("alias, original", ALIASES)
def test_alias_gives_what_the_flag_gives(alias, original):
    kw = served_kw(*alias, APP)
    assert kw == served_kw(*original, APP)
    assert vars(Adjustments(**kw)) == vars(Adjustments(**served_kw(*original, APP)))


def test_aliases_after_the_app():
    assert served_kw(APP, "-w", "2", "-b", "127.0.0.1:0") == {
        "workers": "2", "listen": "127.0.0.1:0"}


@pytest.mark.parametrize(
    "alias, original",
    [(["--bind=127.0.0.1:0", "--bind=127.0.0.1:1"], ["--listen=127.0.0.1:0", "--listen=127.0.0.1:1"]),
     (["--graceful-timeout=4"], ["--shutdown-timeout=4"])],
)
def test_adjustments_parse_args_takes_the_long_aliases(alias, original):
    assert Adjustments.parse_args(alias + [APP]) == Adjustments.parse_args(original + [APP])


def test_alias_error_names_the_option(capsys):
    status, calls = cli("-w", "many", APP)
    assert_usage_error(
        capsys, status, calls,
        "option --workers: invalid value 'many' (expected an integer)",
    )


def test_short_bind_serves(app_dir):
    server = Server([script("waitress-c-serve"), "-b", "127.0.0.1:0", "cliapp:app"],
                    cwd=app_dir)
    try:
        assert server.host == "127.0.0.1"
        status, _, body = server.get("/bound")
        assert (status, body["PATH_INFO"]) == (200, "/bound")
    finally:
        code, output = server.stop()
    assert code == 0, output


# -- --log-level -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, level",
    [("warning", logging.WARNING), ("DEBUG", logging.DEBUG), ("Error", logging.ERROR),
     ("critical", logging.CRITICAL), ("info", logging.INFO)],
)
def test_log_level_sets_the_logger(value, level):
    logging.getLogger("waitress_c").setLevel(logging.NOTSET)
    assert served_kw("--log-level", value, APP) == {"log_level": value}
    assert logging.getLogger("waitress_c").level == level


def test_log_level_overrides_an_explicit_level():
    logging.getLogger("waitress_c").setLevel(logging.ERROR)
    cli("--log-level=debug", APP)
    assert logging.getLogger("waitress_c").level == logging.DEBUG


def test_log_level_invalid_is_a_usage_error(capsys):
    status, calls = cli("--log-level=loud", APP)
    assert_usage_error(
        capsys, status, calls,
        "option --log-level: invalid value 'loud' (expected one of debug, "
        "info, warning, error, critical)",
    )


LOGGING_APP = """
import logging

log = logging.getLogger("waitress_c")
log.warning("app module imported")


def app(environ, start_response):
    log.info("INFO from the app")
    log.warning("WARNING from the app")
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def test_log_level_warning_hides_info_lines(tmp_path):
    from servers import free_port, http_connection

    (tmp_path / "logapp.py").write_text(LOGGING_APP)
    port = free_port()
    # No "Serving on" line to wait for: ready once the module is imported,
    # then the first request retried (bounded) until the socket listens.
    server = Server(
        [script("waitress-c-serve"), "--log-level=WARNING",
         "--listen=127.0.0.1:%d" % port, "logapp:app"],
        cwd=tmp_path, ready="app module imported",
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = http_connection(("127.0.0.1", port))
                conn.request("GET", "/")
                assert conn.getresponse().read() == b"ok"
                conn.close()
                break
            except ConnectionRefusedError:
                assert server.poll() is None, server.output
                assert time.monotonic() < deadline, server.output
        server.wait_for(re.escape("[WARNING] WARNING from the app"))
    finally:
        code, output = server.stop(signal.SIGTERM)
    assert code == 0, output
    assert "Serving on" not in output
    assert "INFO from the app" not in output
    assert "[INFO]" not in output
