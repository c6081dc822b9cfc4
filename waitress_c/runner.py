"""``waitress-c-serve``: the command line of ``waitress-serve``.

Every adjustment is a flag (``--name=VALUE``; ``--name`` / ``--no-name`` for
the booleans), generated from ``adjustments.OPTIONS`` like the ``--help``
text.  The application is named ``MODULE:OBJECT`` (or in dotted form), as
the one positional argument or with ``--app``; ``--call`` calls it to get
the WSGI application.  The current directory is put on ``sys.path``.
Options may come before or after the application (GNU style; ``--`` ends
them); ``-h`` is ``--help`` and ``-V`` is ``--version``.

Unlike waitress, every error gives exit status 1, both through the console
script and through ``python -m waitress_c``, and is reported in one line on
stderr: ``Error: ...``, followed for a usage error by a short usage hint
(not the whole help).  A port outside 0-65535 is refused (getaddrinfo would
wrap it around), a socket that cannot be bound is named with the reason,
and an application that cannot be found is one line, not a traceback.

Settings may also come from a configuration file (``--config``), from
``WAITRESS_C_<NAME>`` variables, ``WAITRESS_C_CMD_ARGS`` and ``$PORT``
(``config.py`` reads them; the command line overrides them all), and a
Python configuration file may define lifecycle hooks.
"""

from __future__ import annotations

import contextlib
import getopt
import importlib
import logging
import os
import re
import signal
import sys
import textwrap
import threading
import traceback
import types
import warnings
from typing import Any, Callable

from waitress_c import __version__, logs, serve
from waitress_c.adjustments import (
    OPTION_MAP,
    OPTIONS,
    STANDARD,
    TUNING,
    Adjustments,
    LOG_LEVELS,
    aslevel,
    aslist,
    asoctal,
    split_listen_entry,
)
from waitress_c.config import (
    CMD_ARGS_VAR,
    NO_HOOKS,
    ConfigError,
    Hooks,
    ServerInfo,
    WorkerInfo,
    cmd_args,
    env_settings,
    load_config,
    merge,
    port_settings,
)
from waitress_c.server import ListenError, PidfileError

__all__ = ["format_help", "run"]

logger = logging.getLogger("waitress_c")

# The runner's own flags, listed first under "Standard options".
# Each is "--name[=METAVAR][, -X]": the getopt specification is read from
# here too.
RUNNER_FLAGS = (
    ("--help, -h", "Show this help and exit."),
    ("--version, -V", "Show the version (waitress_c X.Y.Z) and exit."),
    (
        "--call",
        "Call the object named by MODULE:OBJECT (with no arguments) and "
        "serve what it returns: for application factories.",
    ),
    (
        "--app=MODULE:OBJECT",
        "The WSGI application to serve, instead of the positional "
        "argument.  MODULE is imported (the current directory is on the "
        "module search path) and OBJECT looked up in it; the dotted form "
        "package.module.object is also accepted.",
    ),
    (
        "--config=FILE, -c",
        "Read settings from FILE, under their names: a Python file (*.py: "
        "threads = 8, and lifecycle hooks such as post_fork) or a TOML file "
        "(*.toml).  wsgi_app = 'MODULE:OBJECT' in it names the "
        "application.  Every setting may also be a WAITRESS_C_<NAME> "
        "environment variable.  Precedence: $PORT < FILE < WAITRESS_C_<NAME> "
        "< WAITRESS_C_CMD_ARGS (more arguments) < the command line.",
    ),
    (
        "--preload",
        "With worker processes (workers > 1 or max_requests): import the "
        "application once, in the supervisor, before the workers are "
        "forked, rather than in each worker.  The workers share the "
        "imported code's memory and an import error stops the start at "
        "once, but SIGHUP no longer loads changed code.",
    ),
    (
        "--reload",
        "For development: restart the server whenever a source file of "
        "the application changes (needs hupper: pip install "
        "waitress_c[reload]).  Implies --preload.",
    ),
)

USAGE = "Usage:\n\n    {name} [OPTS] [MODULE:OBJECT]\n"

# After a usage error, instead of the whole help.
SHORT_USAGE = (
    "Usage: {name} [OPTS] MODULE:OBJECT\n"
    "Try '{name} --help' for the options."
)


def _paragraphs(text: str) -> list[str]:
    """Help text as indented lines: plain paragraphs re-wrapped, paragraphs
    starting with four spaces (examples) kept as they are."""
    lines: list[str] = []
    for para in text.split("\n\n"):
        if lines:
            lines.append("")
        if para.startswith("    "):
            lines += ["        " + line for line in para.splitlines()]
        else:
            lines += textwrap.wrap(
                " ".join(para.split()),
                width=79,
                initial_indent="        ",
                subsequent_indent="        ",
                break_on_hyphens=False,
            )
    return lines


def _entry(flag: str, text: str) -> list[str]:
    return ["    " + flag] + _paragraphs(text) + [""]


def format_help(name: str) -> str:
    """The ``--help`` text: the usage, then "Standard options" and "Tuning
    options" with every adjustment in table order."""
    lines = USAGE.format(name=name).splitlines() + [""]
    for section in (STANDARD, TUNING):
        lines += [section + ":", ""]
        if section == STANDARD:
            for flag, text in RUNNER_FLAGS:
                lines += _entry(flag, text)
        for opt in OPTIONS:
            if opt.section != section:
                continue
            if opt.is_bool:
                flag = "--[no-]" + opt.flag[2:]
            else:
                flag = ", ".join(
                    ["%s=%s" % (opt.flag, opt.metavar)] + list(opt.aliases))
            text = opt.help + "\n\nDefault: %s." % opt.shown_default
            lines += _entry(flag, text)
    return "\n".join(lines)


def _program_name(argv0: str) -> str:
    name = os.path.basename(argv0)
    if name == "__main__.py":
        return "python -m waitress_c"
    return name


def _fail(name: str, message: str) -> int:
    """Report a usage error on stderr: one line and the short usage;
    returns the exit status."""
    print("Error: %s\n" % message, file=sys.stderr)
    print(SHORT_USAGE.format(name=name), file=sys.stderr)
    return 1


def _print_out(text: str) -> None:
    """Print ``text`` (the help or the version) on stdout, quietly if
    stdout is a pipe whose reader has gone (``--help | head -1``): stdout
    is then pointed at /dev/null, so that the flush at exit fails no more
    and the exit status stays the usual one."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def _error(message: str) -> int:
    """Report an error that is not about the usage, in one line."""
    print("Error: %s" % message, file=sys.stderr)
    return 1


def _getopt_spec() -> tuple[str, list[str], set[str], dict[str, str]]:
    """(short options, long options, flags taking a value, long flag of
    each short one) for the runner's flags and every adjustment."""
    short = ""
    long_opts = []
    aliases = {}
    for flag, _ in RUNNER_FLAGS:
        long_flag, _, short_flag = flag.partition(", -")
        name, eq, _ = long_flag[2:].partition("=")
        long_opts.append(name + eq)
        if short_flag:
            short += short_flag + (":" if eq else "")
            aliases["-" + short_flag] = "--" + name
    for opt in OPTIONS:
        if opt.is_bool:
            long_opts += [opt.flag[2:], "no-" + opt.flag[2:]]
        else:
            long_opts.append(opt.flag[2:] + "=")
        for alias in opt.long_aliases:
            long_opts.append(alias[2:] + "=")
            aliases[alias] = opt.flag
        for alias in opt.short_aliases:
            short += alias[1:] + ":"
            aliases[alias] = opt.flag
    with_value = {"--" + o[:-1] for o in long_opts if o.endswith("=")}
    return short, long_opts, with_value, aliases


def _parse_args(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``Adjustments.parse_args``, with options allowed after the
    application and the short forms: ``gnu_getopt`` finds the options and
    writes each in full (``-h`` as ``--help``, ``--thr=3`` as
    ``--threads=3``) before the positional arguments.  ``kw`` has two more
    keys, ``version`` and ``config`` (its FILE or None).  Raises
    ``getopt.GetoptError``."""
    short, long_opts, with_value, aliases = _getopt_spec()
    opts, args = getopt.gnu_getopt(argv, short, long_opts)
    version = False
    config = None
    normal = []
    for flag, value in opts:
        flag = aliases.get(flag, flag)
        if flag == "--version":
            version = True
        elif flag == "--config":
            config = value
        elif flag in with_value:
            normal.append("%s=%s" % (flag, value))
        else:
            normal.append(flag)
    kw, args = Adjustments.parse_args(normal + ["--"] + args)
    kw["version"] = version
    kw["config"] = config
    return kw, args


# The keys of _parse_args's result that are the runner's own, not settings.
_RUNNER_KEYS = ("help", "version", "call", "preload", "reload", "app", "config")


def _sources(
    name: str, argv: list[str]
) -> tuple[dict[str, Any], list[str], dict[str, Any], dict[str, Any]] | int:
    """Read the command line and ``WAITRESS_C_CMD_ARGS`` (the configuration
    file and the other variables are read later, once --help and --version
    are out of the way).

    Returns ``(flags, apps, kw, cmd_kw)``: the runner's own flags
    (``_RUNNER_KEYS``; the command line's, or ``WAITRESS_C_CMD_ARGS``'s when
    the command line does not give one), the application names given (the
    command line's, else those of ``WAITRESS_C_CMD_ARGS``), and the
    settings of the command line and of ``WAITRESS_C_CMD_ARGS``; or an exit
    status after an error, which has been reported."""
    try:
        extra = cmd_args(os.environ)
    except ConfigError as exc:
        return _error(str(exc))
    try:
        kw, args = _parse_args(argv)
    except getopt.GetoptError as exc:
        return _fail(name, str(exc))
    try:
        env_kw, env_args = _parse_args(extra)
    except getopt.GetoptError as exc:
        return _fail(name, "%s: %s" % (CMD_ARGS_VAR, exc))
    flags = {key: kw.pop(key) for key in _RUNNER_KEYS}
    env_flags = {key: env_kw.pop(key) for key in _RUNNER_KEYS}
    apps = ([flags["app"]] if flags["app"] is not None else []) + args
    if not apps:
        apps = ([env_flags["app"]] if env_flags["app"] is not None else []) + env_args
    for key, value in env_flags.items():
        if key == "config":
            flags[key] = flags[key] if flags[key] is not None else value
        elif key != "app":
            flags[key] = flags[key] or value
    return flags, apps, kw, env_kw


_NUMBER = re.compile(r"[+-]?[0-9]+")

# What a numeric flag's converter accepts, in the words of its error.
_EXPECTED = {
    int: "an integer",
    float: "a number",
    asoctal: "an octal number",
    aslevel: "one of " + ", ".join(LOG_LEVELS),
}


def _check_numbers(kw: dict[str, Any]) -> None:
    """Refuse a numeric flag (or --log-level) given something else, naming
    the flag, the value and what was expected (the converter's own error names none of
    them but the value)."""
    for key, value in kw.items():
        opt = OPTION_MAP.get(key)
        if opt is None or opt.convert not in _EXPECTED:
            continue
        try:
            opt.convert(value)
        except (TypeError, ValueError):
            raise ValueError(
                "option %s: invalid value %r (expected %s)"
                % (opt.flag, value, _EXPECTED[opt.convert])
            ) from None


def _check_ports(kw: dict[str, Any]) -> None:
    """Refuse a numeric port outside 0-65535 in ``port``, ``listen`` or
    ``insecure_listen`` (0 means any free port).  getaddrinfo takes the
    number modulo 65536: 70000 would listen on 4464 and 65536 on a random
    port."""
    ports = []
    if "port" in kw:
        ports.append(str(kw["port"]))
    for name in ("listen", "insecure_listen"):
        for entry in aslist(kw.get(name, "")):
            ports.append(
                split_listen_entry(entry, OPTION_MAP["port"].default)[1])
    for port in ports:
        port = port.strip()
        if _NUMBER.fullmatch(port) and not 0 <= int(port) <= 65535:
            raise ValueError(
                "port %s is out of range (1-65535, or 0 for any free port)"
                % port
            )


_DOTTED = r"(?!\d)\w+(?:\.(?!\d)\w+)*"
_APP_SPEC = re.compile(r"(%s)(?::(%s)?)?" % (_DOTTED, _DOTTED))


def _resolve_name(spec: str) -> Any:
    """``pkgutil.resolve_name``, except in what it raises: LookupError for a
    malformed name or an attribute that is not there, and any other error
    (an exception raised by the code of a module being imported or of a
    module's lazy ``__getattr__``) let through.

    Whether an attribute is missing is decided by the AttributeError
    itself, not by where it was raised: CPython (3.10+) gives an
    AttributeError escaping ``getattr(obj, name)`` that ``name`` and
    ``obj`` unless it already had them, so one about this very lookup has
    both, whether the attribute machinery or the module's own
    ``__getattr__`` raised it, and one about another lookup (a bug inside
    a lazy loader) names another object or attribute.
    """
    match = _APP_SPEC.fullmatch(spec)
    if match is None:
        raise LookupError("invalid format: %r" % spec)
    modname, attrs = match.groups()
    if ":" in spec:
        obj = importlib.import_module(modname)
        names = attrs.split(".") if attrs else []
    else:
        # No colon: the longest importable prefix is the module.
        names = modname.split(".")
        modname = names.pop(0)
        obj = importlib.import_module(modname)
        while names:
            sub = "%s.%s" % (modname, names[0])
            try:
                obj = importlib.import_module(sub)
            except ModuleNotFoundError as exc:
                if exc.name != sub:
                    raise
                break
            modname = sub
            names.pop(0)
    for name in names:
        try:
            obj = getattr(obj, name)
        except AttributeError as exc:
            if exc.name != name or exc.obj is not obj:
                raise
            if isinstance(obj, types.ModuleType):
                message = "module %r has no attribute %r" % (obj.__name__, name)
            else:
                message = str(exc)
            raise LookupError(message) from exc
    return obj


def _import_app(spec: str) -> Any:
    """The object ``spec`` names.  Raises LookupError with a one-line
    message when the name is malformed or names a module or an attribute
    that does not exist; an exception raised by the application's own
    module while it is imported is let through."""
    try:
        return _resolve_name(spec)
    except ModuleNotFoundError as exc:
        parts = re.split(r"[.:]", spec)
        wanted = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        if exc.name not in wanted:
            raise
        raise LookupError(str(exc)) from exc


SIGHUP_REFUSAL = (
    "SIGHUP: a single process cannot reload; use --workers for rolling restarts"
)


class _StopWhileBooting:
    """Around the server hupper runs under ``--reload``: a SIGTERM before the
    server handles it (while the application is imported, say) ends the
    process with status 0, as a stop once serving does.  hupper's monitor
    sends SIGTERM to stop its server, for a change or on its own SIGTERM;
    the default action would kill a server still booting, and the monitor
    would end with that death as its status.  serve() replaces the handler
    while it runs; nothing is done outside the main thread or when SIGTERM
    is not at its default action."""

    def __init__(self) -> None:
        self._old: Any = None

    def __enter__(self) -> "_StopWhileBooting":
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            self._old = signal.signal(signal.SIGTERM, self._stop)
        return self

    @staticmethod
    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class _RefuseSighup:
    """Around a single-process server: SIGHUP (whose default action would
    end the process silently, with status 129) is logged as a refusal and
    the server goes on.

    The main thread spends its time in the C loop, where a Python handler
    would not run until the server has stopped, so SIGHUP is blocked in the
    main thread (and so in every thread the server starts from it) and a
    thread of its own takes it with ``sigwait``.  A handler that does
    nothing is set too, for a thread the application started earlier, in
    which SIGHUP is not blocked.  Nothing is done if SIGHUP is not at its
    default action (someone else handles or ignores it) or outside the main
    thread; SIGINT and SIGTERM are left alone."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._done = False

    def __enter__(self) -> "_RefuseSighup":
        sighup = getattr(signal, "SIGHUP", None)
        if (
            sighup is None
            or not hasattr(signal, "sigwait")
            or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(sighup) is not signal.SIG_DFL
        ):
            return self
        self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {sighup})
        self._old_handler = signal.signal(sighup, lambda signum, frame: None)
        self._thread = threading.Thread(
            target=self._watch, name="waitress_c-sighup", daemon=True
        )
        self._thread.start()
        return self

    def _watch(self) -> None:
        while True:
            signal.sigwait({signal.SIGHUP})
            if self._done:
                return
            from waitress_c.server import reload_tls

            if not reload_tls():  # TLS: the files are read again
                logger.warning(SIGHUP_REFUSAL)

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            return
        self._done = True
        signal.pthread_kill(self._thread.ident, signal.SIGHUP)
        self._thread.join(timeout=5)
        signal.signal(signal.SIGHUP, self._old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)


def run(argv: list[str] = sys.argv, _serve: Callable[..., Any] = serve) -> int:
    """Run the command line ``argv``; returns the exit status.

    Returns 0 once the server has stopped (or after ``--help`` or
    ``--version``), 1 after an error, which is reported on stderr.
    """
    name = _program_name(argv[0])
    got = _sources(name, argv[1:])
    if isinstance(got, int):
        return got
    flags, args, kw, cmd_kw = got

    if flags["help"]:
        _print_out(format_help(name))
        return 0
    if flags["version"]:
        _print_out("waitress_c %s" % __version__)
        return 0
    hooks = NO_HOOKS
    file_kw: dict[str, Any] = {}
    # The current directory on the module search path before a Python
    # configuration file runs: it may import the project's modules, as the
    # application is imported from there (the console script's directory
    # is what Python put first).
    sys.path.append(os.getcwd())
    try:
        port_kw = port_settings(os.environ)
        if flags["config"] is not None:
            loaded = load_config(flags["config"])
            file_kw, hooks = loaded.settings, loaded.hooks
            if not args and loaded.app is not None:
                args = [loaded.app]
        env_kw = env_settings(os.environ)
    except ConfigError as exc:
        return _error(str(exc))
    call = flags["call"]
    if not args:
        return _fail(name, "Specify an application")
    if len(args) > 1:
        return _fail(name, "Provide only one WSGI app")
    app_name = args[0]

    # Check the options before importing the application: a mistake is
    # reported at once, as a usage error rather than a traceback.
    # The warnings are left to the construction serve() does.
    preload = flags["preload"]
    reload = flags["reload"]
    try:
        _check_numbers(cmd_kw)
    except ValueError as exc:
        return _fail(name, "%s: %s" % (CMD_ARGS_VAR, exc))
    # Lowest precedence first.
    kw = merge([port_kw, file_kw, env_kw, cmd_kw, kw])
    try:
        _check_numbers(kw)
        _check_ports(kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adj = Adjustments(**kw)
    except ValueError as exc:
        return _fail(name, str(exc))
    # What stays set around the server: for --reload from here on.
    stack = contextlib.ExitStack()
    if reload:
        status = _start_reloader(name, argv, adj)
        if status is not None:
            return status
        stack.enter_context(_StopWhileBooting())
        if flags["config"] is not None:  # not imported: hupper would miss it
            import hupper

            hupper.get_reloader().watch_files([os.path.abspath(flags["config"])])

    # The error and access logs (docs/logging.rst), before the level below:
    # a log_config's level for waitress_c is kept.
    try:
        logs.setup(adj, cli=True)
    except ValueError as exc:
        return _fail(name, str(exc))
    # Without a level of its own the logger would inherit WARNING from the
    # root logger, and "Serving on ..." would not be shown.
    if adj.log_level:
        logger.setLevel(adj.log_level.upper())
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

    from waitress_c.supervisor import AppLoader, WorkerBootError, wants_supervisor

    if hooks:
        hooks.call("on_starting", ServerInfo(os.getpid(), adj))
        kw["_server"] = _hooked_create_server(hooks)
        if not wants_supervisor(adj):
            # A single process: when_ready once it serves (serve() calls
            # it after "Serving on", with SIGTERM already handled).
            kw["_ready"] = lambda server: hooks.call(
                "when_ready",
                ServerInfo(os.getpid(), server.adj, server.effective_listen),
            )

    if wants_supervisor(adj) and not (preload or reload):
        # Each worker imports the application after the fork.
        app = AppLoader(app_name, call)
        try:
            _serve(app, **kw)
        except (ListenError, PidfileError, WorkerBootError) as exc:
            return _error(str(exc))
        return 0
    single = not wants_supervisor(adj)
    with stack:
        if single:
            # SIGUSR1 and SIGHUP blocked, for the threads that take them,
            # before the application is imported: a thread its import
            # starts inherits the mask, and so cannot be handed a signal
            # it would only run the do-nothing handler for.
            stack.enter_context(logs.ReopenOnSignal())
            stack.enter_context(_RefuseSighup())
        status = _import_and_serve(name, app_name, call, _serve, kw)
    if status == 0 and single:
        hooks.call("worker_exit", WorkerInfo(os.getpid(), 0, adj, 0))
    return status


def _import_and_serve(name: str, app_name: str, call: bool,
                      _serve: Callable[..., Any], kw: dict[str, Any]) -> int:
    """Import the application (``--call``: call it) and serve it; returns
    the exit status, after reporting an error."""
    from waitress_c.supervisor import WorkerBootError

    try:
        app = _import_app(app_name)
    except LookupError as exc:
        return _error("Cannot import WSGI application %r: %s" % (app_name, exc))
    except Exception:
        # The application's own module failed: its traceback is the help.
        traceback.print_exc(file=sys.stderr)
        return _error(
            "Cannot import WSGI application %r: its module raised the "
            "exception above" % app_name
        )
    if call:
        app = app()
    if app is None:
        return _fail(
            name,
            "The WSGI application %r is None%s."
            % (app_name, " (returned by --call)" if call else ""),
        )
    try:
        _serve(app, **kw)
    except (ListenError, PidfileError, WorkerBootError) as exc:
        return _error(str(exc))
    return 0


def _hooked_create_server(hooks: Hooks) -> Callable[..., Any]:
    """``create_server`` for a configuration file with hooks: a supervisor
    gets them (it calls when_ready and the worker hooks); a single process
    has its when_ready called by serve() (``_ready``), once it serves."""
    from waitress_c.server import create_server
    from waitress_c.supervisor import Supervisor

    def create(app: Any, **kw: Any) -> Any:
        server = create_server(app, **kw)
        if isinstance(server, Supervisor):
            server.hooks = hooks
        return server

    return create


# hupper's wait for a server it stopped (below) when shutdown_timeout is 0:
# 0 or None would make hupper kill it at once, so "no deadline" is a wait
# longer than any request (hupper hands it to Popen.wait, which takes any
# number of seconds).
NO_DEADLINE = 1e9
# What the monitor waits beyond the server's own deadline, so that the
# server's cut-off (or the supervisor's SIGKILL) and its exit come first.
RELOAD_MARGIN = 5.0


def reload_shutdown_interval(adj: Adjustments) -> float:
    """The ``shutdown_interval`` hupper gets with ``--reload``: how long its
    monitor waits for the server it asked to stop (on a change or its own
    SIGTERM) before it sends SIGKILL.  It never undercuts ``shutdown_timeout``,
    nor the supervisor's SIGKILL that many seconds plus
    ``supervisor.KILL_MARGIN`` later; with ``shutdown_timeout`` 0 there is no
    deadline."""
    from waitress_c.supervisor import KILL_MARGIN

    if not adj.shutdown_timeout:
        return NO_DEADLINE
    return adj.shutdown_timeout + KILL_MARGIN + RELOAD_MARGIN


def _start_reloader(name: str, argv: list[str], adj: Adjustments) -> int | None:
    """``--reload``: in the process hupper watches, None (go on and serve);
    otherwise run the monitor until it stops, and return its status."""
    try:
        import hupper
    except ImportError:
        print(
            "Error: --reload needs the hupper package: "
            "pip install 'waitress_c[reload]'",
            file=sys.stderr,
        )
        return 1
    if hupper.is_active():
        return None
    try:
        hupper.start_reloader(
            "waitress_c.runner.run",
            worker_kwargs={"argv": list(argv)},
            shutdown_interval=reload_shutdown_interval(adj),
        )
    except SystemExit as exc:  # the monitor's end
        # Its status is its server's: a negative one is the signal that
        # ended it, given as a shell gives it (128 + N, not 256 - N).
        if not isinstance(exc.code, int):
            return 1
        return 128 - exc.code if exc.code < 0 else exc.code
    return 0  # pragma: no cover - start_reloader exits
