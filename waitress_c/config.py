"""Settings from a configuration file and the environment; lifecycle hooks.

``waitress-c-serve`` (``runner.py``) reads settings from five sources, each
overriding the ones before it:

1. ``$PORT`` (the platform convention), only when no source names an
   address (``host``, ``port``, ``listen``, ``unix_socket``, ``sockets``);
2. a configuration file (``--config FILE``): Python (``*.py``, executed,
   the only format that can define hooks) or TOML (``*.toml``);
3. ``WAITRESS_C_<NAME>`` environment variables, one per setting;
4. ``WAITRESS_C_CMD_ARGS``: command-line arguments, split like a shell;
5. the command line itself.

Every name is derived from ``adjustments.OPTIONS``: a setting added there is
at once a key of both file formats and an environment variable.  Each source
is checked on its own, so that an error names the file or the variable and
the setting; the merged settings are then checked together by
``Adjustments``.  None of this applies to ``serve()``, whose keywords are
the whole configuration.

The hooks (``HOOKS``) are functions of a Python configuration file, called
with a :class:`ServerInfo` or a :class:`WorkerInfo`; an exception in one is
logged with its traceback and the server goes on (``post_fork`` excepted:
the worker then exits with the boot error status).
"""

from __future__ import annotations

import difflib
import logging
import runpy
import shlex
import tomllib
import traceback
import types
from typing import Any, Callable, Iterable, Mapping

from waitress_c.adjustments import (
    _TRUTHY,
    LOG_LEVELS,
    OPTION_MAP,
    OPTIONS,
    Option,
    asbool,
    aslevel,
    aslist,
    asoctal,
    access_log_format,
    asset,
    check_exclusive,
    slash_fixed_str,
    str_iftruthy,
)

__all__ = [
    "ADDRESS_GROUPS",
    "ConfigError",
    "ENV_PREFIX",
    "HOOKS",
    "Hooks",
    "LoadedConfig",
    "NO_HOOKS",
    "ServerInfo",
    "WorkerInfo",
    "check_settings",
    "cmd_args",
    "env_settings",
    "load_config",
    "merge",
    "port_settings",
]

logger = logging.getLogger("waitress_c")

ENV_PREFIX = "WAITRESS_C_"
CMD_ARGS_VAR = ENV_PREFIX + "CMD_ARGS"

# Called with a ServerInfo: on_starting, when_ready; with a WorkerInfo:
# post_fork, worker_exit, child_exit.
HOOKS = ("on_starting", "when_ready", "post_fork", "worker_exit", "child_exit")

# The key of a configuration file naming the application (gunicorn's name).
APP_KEY = "wsgi_app"

# The ways of saying where to listen.  They exclude one another within one
# source; a source that uses one of them replaces what the sources below it
# said with the others (a --port on the command line overrides a listen of
# the file instead of clashing with it).
ADDRESS_GROUPS: tuple[tuple[str, ...], ...] = (
    ("host", "port"),
    ("listen",),
    ("unix_socket",),
    ("sockets",),
)
ADDRESS_NAMES = frozenset(name for group in ADDRESS_GROUPS for name in group)

_FALSY = frozenset(("f", "false", "n", "no", "off", "0"))

# What a converter accepts, in the words of an error.
_EXPECTED: dict[Callable[[Any], Any], str] = {
    int: "an integer",
    float: "a number",
    asbool: "true or false (also yes/no, on/off, 1/0)",
    asoctal: 'octal digits in a string, such as "660"',
    aslevel: "one of " + ", ".join(LOG_LEVELS),
    aslist: "a string of blank-separated entries or a list of strings",
    asset: "a string of blank-separated entries or a list of strings",
}


# Converters of a single value, which would turn a list into a string: a
# list given to one is refused.  (Another converter gets what it is given.)
_SCALAR = frozenset((
    int, float, str, str_iftruthy, slash_fixed_str, aslevel, access_log_format,
))


class ConfigError(ValueError):
    """A configuration source cannot be used; the message is one line that
    names the source (file or variable) and, when there is one, the
    setting."""


class LoadedConfig:
    """What a configuration file gave: ``settings`` (name to value, as
    written), ``hooks`` and ``app`` (its ``wsgi_app``, or None)."""

    def __init__(self, path: str, settings: dict[str, Any],
                 hooks: "Hooks", app: str | None) -> None:
        self.path = path
        self.settings = settings
        self.hooks = hooks
        self.app = app


# -- checking values ----------------------------------------------------------


def _bad(value: Any, opt: Option, detail: str = "") -> ValueError:
    expected = _EXPECTED.get(opt.convert)
    if expected:
        detail = "expected " + expected
    return ValueError(
        "invalid value %r%s" % (value, " (%s)" % detail if detail else "")
    )


def check_value(opt: Option, value: Any) -> None:
    """Refuse a value that ``opt`` cannot take from a file or the
    environment; raises ValueError saying what was expected.

    Stricter than the converters, which keep waitress's leniency for the
    keywords: a boolean must be one of the words, not any word; a number
    is not a boolean; a setting of one value is not given a list; an octal
    setting is a string (a TOML or Python 0o660 and a decimal 660 cannot
    be told apart once read)."""
    conv = opt.convert
    if conv is asbool:
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return
        if isinstance(value, str) and value.strip().lower() in (
            _TRUTHY | _FALSY
        ):
            return
        raise _bad(value, opt)
    if isinstance(value, bool) and conv in (int, float):
        raise _bad(value, opt)
    if conv is asoctal and not isinstance(value, str):
        raise _bad(value, opt)
    if conv in (aslist, asset):
        if isinstance(value, str):
            return
        if isinstance(value, (list, tuple)) and all(
            isinstance(item, str) for item in value
        ):
            return
        raise _bad(value, opt)
    if isinstance(value, (list, tuple, dict)) and conv in _SCALAR:
        raise _bad(value, opt, "expected a single value")
    try:
        conv(value)
    except (TypeError, ValueError) as exc:
        raise _bad(value, opt, str(exc)) from None


def check_settings(settings: Mapping[str, Any], source: str,
                   names: Mapping[str, str] | None = None) -> None:
    """Check each value of one source and the address settings together;
    raises ConfigError naming ``source`` and the setting (``names`` maps a
    setting to the name it has in that source, e.g. its variable)."""
    names = names or {}
    for key, value in settings.items():
        try:
            check_value(OPTION_MAP[key], value)
        except ValueError as exc:
            where = names.get(key, key)
            if source:
                where = source + ": " + where
            raise ConfigError("%s: %s" % (where, exc)) from None
    try:
        check_exclusive(dict(settings))
    except ValueError as exc:
        raise ConfigError("%s: %s" % (source or "environment", exc)) from None


# -- configuration files -------------------------------------------------------


# gunicorn's names of some settings (bind, graceful_timeout), from the
# command-line aliases: suggested for them.
_ALIASES = {
    alias[2:].replace("-", "_"): opt.name
    for opt in OPTIONS for alias in opt.long_aliases
}


def _unknown(source: str, name: str, known: Iterable[str]) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=1)
    if name in _ALIASES:
        close = [_ALIASES[name]]
    hint = " (did you mean %s?)" % close[0] if close else ""
    return ConfigError("%s: unknown setting %r%s" % (source, name, hint))


def load_config(path: str) -> LoadedConfig:
    """Read the configuration file ``path``: Python if it ends in ``.py``,
    TOML if it ends in ``.toml``.  Raises ConfigError."""
    source = "config file %s" % path
    if path.endswith(".py"):
        loader = _load_python
    elif path.endswith(".toml"):
        loader = _load_toml
    else:
        raise ConfigError(
            "%s: unknown format (the name must end in .py or .toml)" % source
        )
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(
            "%s: cannot read it: %s" % (source, exc.strerror or exc)
        ) from None
    config = loader(path, source, data)
    check_settings(config.settings, source)
    return config


# runpy's __name__ for a Python configuration file: how its own functions
# (hooks, or mistakes) are told from imported ones.
_RUN_NAME = "__waitress_c_config__"
# The values a name of the file must be a setting to have: plain data.
_PLAIN = (str, bytes, int, float, list, tuple, dict, set, type(None))


def _load_python(path: str, source: str, data: bytes) -> LoadedConfig:
    try:
        # Compiled here first: a syntax error is reported in one line.
        compile(data, path, "exec")
        namespace = runpy.run_path(path, run_name=_RUN_NAME)
    except SyntaxError as exc:
        raise ConfigError(
            "%s, line %s: %s" % (source, exc.lineno, exc.msg)
        ) from None
    except Exception as exc:
        line = ""
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename == path:
                line = ", line %d" % frame.lineno
                break
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            "%s%s: %s%s"
            % (source, line, type(exc).__name__,
               ": " + message if message else "")
        ) from None
    settings: dict[str, Any] = {}
    hooks: dict[str, Callable[..., Any]] = {}
    app = None
    known = list(OPTION_MAP) + list(HOOKS) + [APP_KEY]
    for name, value in namespace.items():
        if name.startswith("_") or name != name.lower():
            continue  # private names and CONSTANTS
        if isinstance(value, types.ModuleType):
            continue
        if name in HOOKS:
            if not callable(value):
                raise ConfigError(
                    "%s: hook %s is not a function" % (source, name)
                )
            hooks[name] = value
        elif name == APP_KEY:
            if value is not None:
                if not isinstance(value, str):
                    raise ConfigError(
                        "%s: %s: expected 'MODULE:OBJECT' as a string"
                        % (source, name)
                    )
                app = value
        elif name in OPTION_MAP:
            if value is not None:  # None: not set
                settings[name] = value
        elif isinstance(value, _PLAIN) or (
            isinstance(value, types.FunctionType)
            and value.__module__ == _RUN_NAME
        ):
            raise _unknown(source, name, known)
        # Anything else was imported (from os import cpu_count, environ):
        # not a setting, and no typing mistake of ours to report.
    return LoadedConfig(path, settings, Hooks(hooks), app)


def _load_toml(path: str, source: str, data: bytes) -> LoadedConfig:
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError("%s: not UTF-8: %s" % (source, exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("%s: %s" % (source, exc)) from None
    table = document.get("waitress_c")
    if not isinstance(table, dict):
        table = document
    settings: dict[str, Any] = {}
    app = None
    for name, value in table.items():
        if name in HOOKS:
            raise ConfigError(
                "%s: %s: hooks can only be defined in a Python config file"
                % (source, name)
            )
        if name == APP_KEY:
            if not isinstance(value, str):
                raise ConfigError(
                    "%s: %s: expected 'MODULE:OBJECT' as a string"
                    % (source, name)
                )
            app = value
        elif name in OPTION_MAP:
            settings[name] = value
        else:
            raise _unknown(source, name, list(OPTION_MAP) + [APP_KEY])
    return LoadedConfig(path, settings, Hooks({}), app)


# -- the environment --------------------------------------------------------------


def env_name(option: Option) -> str:
    """``WAITRESS_C_THREADS`` for ``threads``."""
    return ENV_PREFIX + option.name.upper()


def env_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings given as ``WAITRESS_C_<NAME>`` variables, as strings
    (checked; raises ConfigError naming the variable).  Another variable
    with the prefix gets a warning on stderr: a platform may set some of its
    own (a service named waitress-c, say), so it does not stop the start."""
    settings = {}
    names = {}
    wanted = {env_name(opt): opt for opt in OPTIONS}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == CMD_ARGS_VAR:
            continue
        opt = wanted.get(var)
        if opt is None:
            logger.warning(
                "Environment variable %s names no setting: ignored", var
            )
            continue
        settings[opt.name] = environ[var]
        names[opt.name] = var
    check_settings(settings, "", names)
    return settings


def cmd_args(environ: Mapping[str, str]) -> list[str]:
    """``WAITRESS_C_CMD_ARGS`` split like a shell would; raises
    ConfigError for unbalanced quotes."""
    value = environ.get(CMD_ARGS_VAR, "")
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError("%s: %s" % (CMD_ARGS_VAR, exc)) from None


def port_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"listen": "0.0.0.0:$PORT"}`` when ``$PORT`` is set (and not
    empty), else nothing; raises ConfigError for a value that is not a
    port number."""
    port = environ.get("PORT", "").strip()
    if not port:
        return {}
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses,
    # and other scripts' digits, which int() reads.
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(
            "PORT: invalid value %r (expected a port number, 0-65535)" % port
        )
    return {"listen": "0.0.0.0:%d" % int(port)}


# -- merging ------------------------------------------------------------------------


def merge(sources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The settings of ``sources``, lowest precedence first: a later value
    replaces an earlier one, and a source that names an address in one way
    (``ADDRESS_GROUPS``) drops the other ways the earlier ones used."""
    merged: dict[str, Any] = {}
    for settings in sources:
        used = [g for g in ADDRESS_GROUPS if any(k in settings for k in g)]
        if used:
            for group in ADDRESS_GROUPS:
                if group not in used:
                    for key in group:
                        merged.pop(key, None)
        merged.update(settings)
    return merged


# -- hooks ---------------------------------------------------------------------------


class ServerInfo:
    """What ``on_starting`` and ``when_ready`` get.

    ``pid``: the process the command started (the supervisor, with worker
    processes); ``settings``: the ``Adjustments``; ``listen``: the
    ``(host, port)`` pairs listened on (empty in ``on_starting``, before
    the sockets are bound); ``worker_pids``: the worker processes serving
    (empty without workers)."""

    def __init__(self, pid: int, settings: Any,
                 listen: Iterable[tuple[str, str]] = (),
                 worker_pids: Iterable[int] = ()) -> None:
        self.pid = pid
        self.settings = settings
        self.listen = list(listen)
        self.worker_pids = list(worker_pids)

    def __repr__(self) -> str:
        return "ServerInfo(pid=%d, listen=%r, worker_pids=%r)" % (
            self.pid, self.listen, self.worker_pids)


class WorkerInfo:
    """What ``post_fork``, ``worker_exit`` and ``child_exit`` get.

    ``pid``: the worker's; ``age``: 1 for the first worker the supervisor
    started, 2 for the next, and so on (replacements included; 0 for the
    single process of a server without workers); ``settings``: the
    ``Adjustments``; ``exit_status``: None in ``post_fork``, the status the
    worker exits with in ``worker_exit``, and in ``child_exit`` its exit
    status, or minus the signal number that killed it (-9 for SIGKILL)."""

    def __init__(self, pid: int, age: int, settings: Any,
                 exit_status: int | None = None) -> None:
        self.pid = pid
        self.age = age
        self.settings = settings
        self.exit_status = exit_status

    def __repr__(self) -> str:
        return "WorkerInfo(pid=%d, age=%d, exit_status=%r)" % (
            self.pid, self.age, self.exit_status)


class Hooks:
    """The hooks of a configuration file, by name (``HOOKS``)."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]]) -> None:
        self.functions = dict(functions)

    def __bool__(self) -> bool:
        return bool(self.functions)

    def call(self, name: str, arg: Any) -> bool:
        """Call hook ``name`` with ``arg`` if there is one; returns False if
        it raised (the exception is logged with its traceback), True
        otherwise.  SystemExit and KeyboardInterrupt are let through."""
        function = self.functions.get(name)
        if function is None:
            return True
        try:
            function(arg)
        except Exception:
            logger.exception("Hook %s(%r) raised an exception", name, arg)
            return False
        return True


NO_HOOKS = Hooks({})
