"""waitress_c: waitress's behaviour with a C core (libuv + http-parser)."""

import logging

from waitress_c import logs
from waitress_c._version import __version__
from waitress_c.server import create_server

__all__ = ["serve", "serve_paste", "create_server"]


def serve(app, **kw):
    """Serve ``app`` until the server is closed or the process is signalled.

    Takes the same keyword adjustments as ``waitress.serve``.
    """
    server = kw.pop("_server", create_server)  # test shim, as in waitress
    quiet = kw.pop("_quiet", False)
    profile = kw.pop("_profile", False)
    if not quiet:  # pragma: no cover
        logging.basicConfig()
    server = server(app, **kw)
    level = getattr(getattr(server, "adj", None), "log_level", None)
    if level:
        logging.getLogger("waitress_c").setLevel(level.upper())
    # SIGUSR1 reopens the log files from before the first line (a
    # supervisor handles it in its own loop).
    with logs.ReopenOnSignal(
        logs.managed() and not hasattr(server, "worker_pids")
    ):
        if not quiet:
            logs.log_startup(server)
            tls = getattr(getattr(server, "adj", None), "certfile", None)
            server.print_listen(
                "Serving on %s://{}:{}" % ("https" if tls else "http")
            )
        if profile:  # pragma: no cover
            from waitress_c.profile import run_profiled

            run_profiled(server)
        else:
            server.run()


def serve_paste(app, global_conf, **kw):
    """The ``paste.server_runner`` entry point (``use = egg:waitress_c#main``)."""
    serve(app, **kw)
    return 0
