"""waitress_c: waitress's behaviour with a C core (libuv + http-parser)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Callable, Iterable, List

from waitress_c import logs
from waitress_c._version import __version__
from waitress_c.server import BaseWSGIServer, ServerProtocol, create_server

__all__ = ["serve", "serve_paste", "create_server", "ServerProtocol", "__version__"]


def serve(app: Callable[..., Any], **kw: Any) -> None:
    """Serve ``app`` until the server is closed or the process is signalled.

    Takes the same keyword adjustments as ``waitress.serve``.

    ``_profile=True`` (private, as in waitress) runs the application under
    ``cProfile`` and prints the statistics to stdout once the server has
    stopped.  Waitress profiles the thread that calls ``run()``; here that
    thread only waits on the C event loop, so what is profiled instead is
    every call of the application, in whichever worker thread makes it, all
    summed into one table (from CPython 3.12, where one profiler sees every
    thread, whatever any thread runs while a call is in progress is
    counted too).  The body of a generator the application returns runs
    after the call and is not counted.  It needs a single process
    (without ``workers`` > 1 or ``max_requests``): the workers' calls happen
    in other processes.
    """
    server_factory = kw.pop("_server", create_server)  # test shim, as in waitress
    quiet = kw.pop("_quiet", False)
    profile = kw.pop("_profile", False)
    # Private, for the command line: called with a single-process server
    # once it serves (its when_ready hook).
    on_ready = kw.pop("_ready", None)
    if not quiet:  # pragma: no cover
        logging.basicConfig()
    profiler = None
    if profile:
        from waitress_c.adjustments import Adjustments
        from waitress_c.supervisor import wants_supervisor

        if wants_supervisor(Adjustments(**kw)):
            raise ValueError("_profile needs a single process (no workers or max_requests)")
        profiler = _AppProfiler(app)
        app = profiler
    server: ServerProtocol = server_factory(app, **kw)
    level = getattr(getattr(server, "adj", None), "log_level", None)
    if level:
        logging.getLogger("waitress_c").setLevel(level.upper())
    # SIGUSR1 reopens the log files from before the first line (a
    # supervisor handles it in its own loop).
    if hasattr(server, "listen_schemes"):  # ours: each listener's own
        serving_on = "Serving on {scheme}://{}:{}"
    else:
        tls = getattr(getattr(server, "adj", None), "certfile", None)
        serving_on = "Serving on %s://{}:{}" % ("https" if tls else "http")

    def announce() -> None:
        if not quiet:
            server.print_listen(serving_on)
        if on_ready is not None:
            on_ready(server)

    with logs.ReopenOnSignal(
        logs.managed() and not hasattr(server, "worker_pids")
    ):
        if not quiet:
            logs.log_startup(server)
        try:
            if isinstance(server, BaseWSGIServer):
                # "Serving on" once SIGTERM and SIGINT stop it gracefully:
                # a signal sent on seeing the line must not kill it.
                server.run(ready=announce)
            else:
                # A supervisor logs the lines itself once a worker serves
                # (after its signal handlers are set); a shim as waitress.
                if not quiet:
                    server.print_listen(serving_on)
                server.run()
        finally:
            if profiler is not None:
                profiler.print_stats()


class _AppProfiler:
    """The application wrapped for ``serve(_profile=True)``.

    Up to CPython 3.11 a ``cProfile.Profile`` sees the thread that enabled
    it: each worker thread gets its own, and ``print_stats()`` adds them
    up.  From 3.12 a profiler is one per interpreter (``sys.monitoring``)
    and sees every thread, and enabling a second one raises: one profiler
    is shared, enabled while at least one call of the application is in
    progress."""

    # One profiler for every thread (CPython 3.12 and later).
    SHARED = sys.version_info >= (3, 12)

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._local = threading.local()
        self._lock = threading.Lock()
        self._profiles: List[Any] = []
        self._inside = 0  # SHARED: calls of the application in progress

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.SHARED:
            return self._call_shared(environ, start_response)
        import cProfile

        prof = getattr(self._local, "prof", None)
        if prof is None:
            prof = self._local.prof = cProfile.Profile()
            with self._lock:
                self._profiles.append(prof)
        prof.enable()
        try:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        finally:
            prof.disable()

    def _call_shared(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        import cProfile

        with self._lock:
            if not self._profiles:
                self._profiles.append(cProfile.Profile())
            if self._inside == 0:
                self._profiles[0].enable()
            self._inside += 1
        try:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    self._profiles[0].disable()

    def print_stats(self) -> None:
        import pstats

        with self._lock:
            profiles = list(self._profiles)
        if not profiles:
            print("_profile: the application was not called")
            return
        stats = pstats.Stats(profiles[0])
        for prof in profiles[1:]:
            stats.add(prof)
        stats.strip_dirs()
        stats.sort_stats("cumulative", "calls", "time")
        stats.print_stats(0.3)


def serve_paste(app: Callable[..., Any], global_conf: Any, **kw: Any) -> int:
    """The ``paste.server_runner`` entry point (``use = egg:waitress_c#main``)."""
    serve(app, **kw)
    return 0
