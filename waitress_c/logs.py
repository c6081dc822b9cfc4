"""Logging set-up: the error log, the access log, ``log_config``, and
reopening the log files on SIGUSR1 (docs/logging.rst).

waitress_c configures logging handlers only when it is asked to: from the
command line, or when ``error_logfile``, ``access_logfile`` or
``log_config`` is given.  Otherwise (a library calling ``serve()`` or
``create_server()`` without them) the application's own logging
configuration is left alone, as waitress leaves it.

:func:`setup` does the work, once per set of settings (the command line
and ``create_server()`` both call it; the second call changes nothing):

1. ``log_config`` first: a ``dictConfig`` dictionary in a ``.json`` or
   ``.toml`` file, or a ``fileConfig`` ini file (any other name);
2. the error log: a handler on the ``waitress_c`` logger writing
   :data:`ERROR_FORMAT` to ``error_logfile`` (``-`` is stderr), or to
   stderr from the command line when neither ``error_logfile`` nor
   ``log_config`` is given;
3. the access log: a handler on ``waitress_c.access`` writing bare lines to
   ``access_logfile`` (``-`` is stdout), or, with ``access_log`` on and no
   file, to where step 2 sends the error log.

The loggers given a handler here stop propagating to the root logger, so a
line is not written twice when the application has its own handler there.

Files are opened for appending.  :func:`reopen` closes and opens again
every :class:`logging.FileHandler` (these and those of ``log_config``), for
``logrotate``'s ``create`` mode: the single process does it on SIGUSR1
through :class:`ReopenOnSignal`, the supervisor and its workers in their
signal loops (``supervisor.py``).
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import signal
import sys
import threading
from typing import Any, TextIO

__all__ = [
    "ACCESS_FORMAT",
    "DATE_FORMAT",
    "ERROR_FORMAT",
    "ReopenOnSignal",
    "as_access_logfile",
    "as_error_logfile",
    "aslogconfig",
    "aslogfile",
    "log_startup",
    "reopen",
    "reset",
    "setup",
]

logger = logging.getLogger("waitress_c")
access_logger = logging.getLogger("waitress_c.access")

# ``[2026-12-07 16:50:01 +0000] [12345] [INFO] Serving on http://...``:
# local time with its offset, the pid of the process that logged (a
# worker's own), the level.
ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
# The access log line is already whole (access_log_format).
ACCESS_FORMAT = "%(message)s"


# -- converters (used by the adjustments table) -----------------------------


def aslogfile(value: Any, setting: str = "log file") -> str | None:
    """A log file path made absolute (the file is reopened later, whatever
    the current directory is by then), ``-`` kept as it is, None for an
    empty value.  A path whose directory does not exist is refused; the
    error names ``setting``."""
    if value is None or not str(value).strip():
        return None
    path = str(value).strip()
    if path == "-":
        return path
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ValueError(
            "%s %s: directory %s does not exist" % (setting, path, directory)
        )
    return path


def as_error_logfile(value: Any) -> str | None:
    """:func:`aslogfile` for ``error_logfile``."""
    return aslogfile(value, "error_logfile")


def as_access_logfile(value: Any) -> str | None:
    """:func:`aslogfile` for ``access_logfile``."""
    return aslogfile(value, "access_logfile")


def aslogconfig(value: Any) -> str | None:
    """The path of a logging configuration file, made absolute; None for an
    empty value.  The file is read by :func:`setup`."""
    if value is None or not str(value).strip():
        return None
    return os.path.abspath(str(value).strip())


# -- set-up -----------------------------------------------------------------


class _State:
    """What :func:`setup` did last: its settings and the handlers it
    added (removed again if it is called with other settings)."""

    key: tuple | None = None
    handlers: list[tuple[logging.Logger, logging.Handler]] = []
    propagate: dict[str, bool] = {}  # each logger's, before the first call
    managed = False  # handlers or a log_config were set up
    set_level = False  # waitress_c was NOTSET and was given INFO


def _error_text(exc: BaseException) -> str:
    """An exception (and its cause, which dictConfig's errors carry) as one
    line."""
    parts = []
    while exc is not None and len(parts) < 3:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, KeyError):  # fileConfig: a missing section
            text = "missing %s" % text
        parts.append(text)
        exc = exc.__cause__
    return " ".join(": ".join(parts).split())


def _apply_config(path: str) -> None:
    """Apply the logging configuration in ``path``; raises ValueError
    naming the file."""
    try:
        if path.endswith((".json", ".toml")):
            if path.endswith(".json"):
                with open(path, encoding="utf-8") as f:
                    config = json.load(f)
            else:
                import tomllib

                with open(path, "rb") as f:
                    config = tomllib.load(f)
            if not isinstance(config, dict):
                raise ValueError("expected a dictionary (dictConfig schema)")
            config.setdefault("version", 1)
            # The waitress_c loggers exist already: keep them working
            # unless the file says otherwise.
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        else:
            with open(path, encoding="utf-8") as f:
                # fileConfig reads a missing file as an empty one: open it
                # first for the real error.
                logging.config.fileConfig(f, disable_existing_loggers=False)
    except OSError as exc:
        raise ValueError(
            "log_config %s: %s" % (path, exc.strerror or exc)
        ) from None
    except Exception as exc:  # the parsers' and logging.config's own errors
        raise ValueError(
            "log_config %s: %s" % (path, _error_text(exc))
        ) from None


def _handler(path: str, dash: TextIO, fmt: logging.Formatter) -> logging.Handler:
    """A handler appending to ``path``, or writing to ``dash`` for ``-``."""
    handler: logging.Handler
    if path == "-":
        handler = logging.StreamHandler(dash)
    else:
        try:
            handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                "cannot open the log file %s: %s"
                % (path, exc.strerror or exc)
            ) from None
    handler.setFormatter(fmt)
    return handler


def error_formatter() -> logging.Formatter:
    """The error log's formatter (:data:`ERROR_FORMAT`)."""
    return logging.Formatter(ERROR_FORMAT, DATE_FORMAT)


def setup(adj: Any, cli: bool = False) -> bool:
    """Set logging up for the settings ``adj`` (see the module docstring);
    ``cli``: called by the command line.  Returns whether waitress_c
    manages logging (something was set up, now or by an earlier call).
    Raises ValueError, naming the file, for a log file that cannot be
    opened or a ``log_config`` that cannot be read or applied."""
    log_config = getattr(adj, "log_config", None)
    error_logfile = getattr(adj, "error_logfile", None)
    access_logfile = getattr(adj, "access_logfile", None)
    access_log = bool(getattr(adj, "access_log", False))
    if not (cli or log_config or error_logfile or access_logfile):
        return _State.managed
    key = (log_config, error_logfile, access_logfile, access_log)
    if key == _State.key:
        return True
    if log_config:
        _apply_config(log_config)
    added: list[tuple[logging.Logger, logging.Handler]] = []
    try:
        error_path = error_logfile
        if error_path is None and cli and not log_config:
            error_path = "-"
        if error_path is not None:
            added.append(
                (logger, _handler(error_path, sys.stderr, error_formatter()))
            )
        access_path = access_logfile
        if access_path is None and access_log:
            access_path = error_path
            dash = sys.stderr  # the error log's "-"
        else:
            dash = sys.stdout
        if access_path is not None:
            added.append(
                (
                    access_logger,
                    _handler(access_path, dash, logging.Formatter(ACCESS_FORMAT)),
                )
            )
    except BaseException:
        for _, h in added:
            h.close()
        raise
    _remove_handlers()
    for lg, h in added:
        _State.propagate.setdefault(lg.name, lg.propagate)
        lg.addHandler(h)
        lg.propagate = False
    if added and logger.level == logging.NOTSET:
        # Asked for a log file: its INFO lines too (the access log's are
        # all INFO), not the root logger's WARNING; log_level, applied
        # later, still decides.
        logger.setLevel(logging.INFO)
        _State.set_level = True
    _State.handlers = added
    _State.key = key
    _State.managed = True
    return True


def _remove_handlers() -> None:
    """Take off (and close) the handlers the last setup() added."""
    for lg, h in _State.handlers:
        lg.removeHandler(h)
        h.close()
    _State.handlers = []


def reset() -> None:
    """Undo :func:`setup`: its handlers removed and closed, the loggers'
    ``propagate`` and level as they were (a ``log_config`` is not undone).
    For a process that serves again with other settings, and for tests."""
    _remove_handlers()
    if _State.set_level:
        logger.setLevel(logging.NOTSET)
        _State.set_level = False
    for name, propagate in _State.propagate.items():
        logging.getLogger(name).propagate = propagate
    _State.propagate = {}
    _State.key = None
    _State.managed = False


def log_startup(server: Any) -> None:
    """The start-up line: version, processes and threads (the listeners
    follow, one ``Serving on`` line each)."""
    from waitress_c import __version__

    adj = getattr(server, "adj", None)
    if adj is None:
        return
    threads = adj.threads
    if hasattr(server, "worker_pids"):  # a supervisor
        logger.info(
            "Starting waitress_c %s: %d worker process%s of %d thread%s each",
            __version__, adj.workers, "" if adj.workers == 1 else "es",
            threads, "" if threads == 1 else "s",
        )
    else:
        logger.info(
            "Starting waitress_c %s: one process, %d thread%s",
            __version__, threads, "" if threads == 1 else "s",
        )


# -- reopening --------------------------------------------------------------


def _file_handlers() -> list[logging.FileHandler]:
    seen = set()
    found = []
    loggers = [logging.getLogger()] + [
        lg
        for lg in list(logging.Logger.manager.loggerDict.values())
        if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.FileHandler) and id(h) not in seen:
                seen.add(id(h))
                found.append(h)
    return found


def reopen() -> int:
    """Close and open again, for appending, the path of every
    :class:`logging.FileHandler` attached to a logger: after ``logrotate``
    renamed a file, the lines go to a new file at the old path.  Returns
    how many files were reopened.  A file that cannot be opened is logged
    and its handler keeps its old file."""
    count = 0
    for h in _file_handlers():
        error: OSError | None = None
        h.acquire()
        try:
            # A delay=True handler not opened yet has nothing to reopen.
            if h.stream is not None:
                try:
                    stream = open(h.baseFilename, "a", encoding=h.encoding,
                                  errors=h.errors)
                except OSError as exc:
                    error = exc
                else:
                    old, h.stream = h.stream, stream
                    try:
                        old.close()
                    except OSError:
                        pass
                    count += 1
        finally:
            h.release()
        if error is not None:
            logger.error("Cannot reopen the log file %s: %s",
                         h.baseFilename, error.strerror or error)
    return count


def reopen_and_log() -> None:
    """:func:`reopen`, and the line saying so (in the new files)."""
    n = reopen()
    logger.info("SIGUSR1: %d log file%s reopened", n, "" if n == 1 else "s")


class ReopenOnSignal:
    """Around a single-process server run in the main thread, when
    waitress_c manages logging: SIGUSR1 reopens the log files, and the
    server goes on.

    The main thread spends its time in the C loop with the GIL released,
    where a Python handler would not run until the server has stopped; so,
    as for SIGHUP (runner.py), SIGUSR1 is blocked in the main thread (and
    so in the server's threads, started from it afterwards) and a thread
    of its own takes it with ``sigwait``.  A handler that does nothing is
    set too, for a thread the application started earlier, in which
    SIGUSR1 is not blocked (such a thread would swallow the signal: enter
    this before starting threads; the command line enters it, and then its
    SIGHUP watcher, before it imports the application).  Nothing is done if SIGUSR1 is not at its default
    action (someone else handles or ignores it, or an outer
    ``ReopenOnSignal`` does) or outside the main thread."""

    def __init__(self, active: bool = True) -> None:
        self._active = active
        self._thread: threading.Thread | None = None
        self._done = False

    def __enter__(self) -> "ReopenOnSignal":
        sig = getattr(signal, "SIGUSR1", None)
        if (
            not self._active
            or sig is None
            or not hasattr(signal, "sigwait")
            or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(sig) is not signal.SIG_DFL
        ):
            return self
        self._old_handler = signal.signal(sig, lambda signum, frame: None)
        self._thread = threading.Thread(
            target=self._watch, name="waitress_c-sigusr1", daemon=True
        )
        # The watcher is born with every signal blocked: no other signal
        # (SIGHUP for runner.py's watcher) is lost to it.
        self._old_mask = signal.pthread_sigmask(
            signal.SIG_BLOCK, signal.valid_signals()
        )
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(
                signal.SIG_SETMASK, set(self._old_mask) | {sig}
            )
        return self

    def _watch(self) -> None:
        while True:
            signal.sigwait({signal.SIGUSR1})
            if self._done:
                return
            try:
                reopen_and_log()
            except Exception:  # pragma: no cover - keep the watcher alive
                logger.exception("Cannot reopen the log files")

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            return
        self._done = True
        signal.pthread_kill(self._thread.ident, signal.SIGUSR1)
        self._thread.join(timeout=5)
        signal.signal(signal.SIGUSR1, self._old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)


def managed() -> bool:
    """Whether :func:`setup` has set logging up in this process."""
    return _State.managed
