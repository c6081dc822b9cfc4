"""Run a test server: ``python tests/serve.py MODULE:APP '{"kw": ...}'``.

Prints one JSON line with the listening addresses on stdout once it serves
(SIGINT and SIGTERM handled), then serves until SIGINT/SIGTERM.  Used by servers.ServerProcess (the tests,
tests/soak.py)."""

import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    from pkgutil import resolve_name

    import waitress_c

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s:%(name)s:%(message)s"
    )
    app = resolve_name(sys.argv[1])
    kw = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    server = waitress_c.create_server(app, **kw)

    def ready():
        print(json.dumps({"listen": server.effective_listen, "pid": os.getpid()}), flush=True)

    if isinstance(server, waitress_c.server.BaseWSGIServer):
        # Once SIGINT/SIGTERM stop it gracefully: a test may signal it as
        # soon as it has the line.
        server.run(ready=ready)
    else:  # a supervisor handles signals from the start of run()
        ready()
        server.run()
    print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    main()
