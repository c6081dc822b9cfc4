"""Start a peer that has no command line of its own on ``apps:app``.

    python launch.py bjoern PORT
    python launch.py fastwsgi PORT

Run with the peer's own venv interpreter and ``benchmarks/`` on ``sys.path``
(``run.py`` does both).  Listens on 127.0.0.1 only.
"""

import sys

from apps import app

HOST = "127.0.0.1"


def run_bjoern(port):
    import bjoern

    bjoern.run(app, HOST, port)


def run_fastwsgi(port):
    import fastwsgi

    fastwsgi.run(wsgi_app=app, host=HOST, port=port, loglevel=0)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("bjoern", "fastwsgi"):
        sys.exit("usage: launch.py {bjoern,fastwsgi} PORT")
    runner = run_bjoern if argv[1] == "bjoern" else run_fastwsgi
    try:
        runner(int(argv[2]))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv)
