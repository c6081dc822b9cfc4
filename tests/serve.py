"""Run a test server: ``python tests/serve.py MODULE:APP '{"kw": ...}'``.

Prints one JSON line with the listening addresses on stdout once it listens,
then serves until SIGINT/SIGTERM.  Used by servers.ServerProcess (the tests,
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
    print(json.dumps({"listen": server.effective_listen, "pid": os.getpid()}), flush=True)
    server.run()
    print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    main()
