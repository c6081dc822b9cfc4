"""``waitress-c-serve``: the command line of ``waitress-serve``.

Every adjustment is a flag (``--name=VALUE``; ``--name`` / ``--no-name`` for
the booleans), generated from ``adjustments.OPTIONS`` like the ``--help``
text.  The application is named ``MODULE:OBJECT`` (or in dotted form), as
the one positional argument or with ``--app``; ``--call`` calls it to get
the WSGI application.  The current directory is put on ``sys.path``.

Unlike waitress, every error, including the ones the adjustments raise,
prints ``Error: ...`` and the usage and gives exit status 1, both through
the console script and through ``python -m waitress_c``.
"""

from __future__ import annotations

import getopt
import logging
import os
import pkgutil
import sys
import textwrap
import traceback
import warnings
from typing import Any, Callable

from waitress_c import serve
from waitress_c.adjustments import OPTIONS, STANDARD, TUNING, Adjustments

__all__ = ["format_help", "run"]

logger = logging.getLogger("waitress_c")

# The runner's own flags, listed first under "Standard options".
RUNNER_FLAGS = (
    ("--help", "Show this help and exit."),
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
                flag = "%s=%s" % (opt.flag, opt.metavar)
            text = opt.help + "\n\nDefault: %s." % opt.shown_default
            lines += _entry(flag, text)
    return "\n".join(lines)


def _program_name(argv0: str) -> str:
    name = os.path.basename(argv0)
    if name == "__main__.py":
        return "python -m waitress_c"
    return name


def _fail(name: str, message: str) -> int:
    """Report a usage error on stderr; returns the exit status."""
    print("Error: %s\n" % message, file=sys.stderr)
    print(format_help(name), file=sys.stderr)
    return 1


def run(argv: list[str] = sys.argv, _serve: Callable[..., Any] = serve) -> int:
    """Run the command line ``argv``; returns the exit status.

    Returns 0 once the server has stopped (or after ``--help``), 1 after an
    error, which is reported on stderr.
    """
    name = _program_name(argv[0])
    try:
        kw, args = Adjustments.parse_args(argv[1:])
    except getopt.GetoptError as exc:
        return _fail(name, str(exc))

    if kw.pop("help"):
        print(format_help(name))
        return 0
    call = kw.pop("call")
    app_name = kw.pop("app")
    if app_name is not None:
        args.insert(0, app_name)
    if not args:
        return _fail(name, "Specify an application")
    if len(args) > 1:
        return _fail(name, "Provide only one WSGI app")
    app_name = args[0]

    # Check the options before importing the application: a mistake is
    # reported at once, as a usage error rather than a traceback.
    # The warnings are left to the construction serve() does.
    preload = kw.pop("preload")
    reload = kw.pop("reload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adj = Adjustments(**kw)
    except ValueError as exc:
        return _fail(name, str(exc))
    if reload:
        status = _start_reloader(name, argv, adj)
        if status is not None:
            return status

    # Without a level of its own the logger would inherit WARNING from the
    # root logger, and "Serving on ..." would not be shown.
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

    sys.path.append(os.getcwd())
    from waitress_c.supervisor import AppLoader, WorkerBootError, wants_supervisor

    if wants_supervisor(adj) and not (preload or reload):
        # Each worker imports the application after the fork.
        app = AppLoader(app_name, call)
        try:
            _serve(app, **kw)
        except WorkerBootError as exc:
            print("Error: %s" % exc, file=sys.stderr)
            return 1
        return 0
    try:
        app = pkgutil.resolve_name(app_name)
    except (ValueError, ImportError, AttributeError) as exc:
        print(
            "Error: Cannot import WSGI application %r: %s\n" % (app_name, exc),
            file=sys.stderr,
        )
        traceback.print_exc(file=sys.stderr)
        return 1
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
    except WorkerBootError as exc:
        print("Error: %s" % exc, file=sys.stderr)
        return 1
    return 0


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
            shutdown_interval=adj.shutdown_timeout,
        )
    except SystemExit as exc:  # the monitor's end
        return exc.code if isinstance(exc.code, int) else 1
    return 0  # pragma: no cover - start_reloader exits
