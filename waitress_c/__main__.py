"""``python -m waitress_c``: the same command line, and the same exit
status, as ``waitress-c-serve``."""

import sys

from waitress_c.runner import run

if __name__ == "__main__":
    sys.exit(run())
