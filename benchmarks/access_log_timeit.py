"""What formatting one access log line costs, in-process, with timeit.

    python benchmarks/access_log_timeit.py [PATH/TO/access_log.py]

Calls an AccessLog for a typical combined-format response (a browser's
User-Agent and Referer) and for one whose User-Agent needs escaping, with
a handler that only formats the message (no I/O): the part of the access
log that runs on the worker with the GIL held.  Prints microseconds a call,
the best of 7 repeats.  A path compares another version of the module.
"""

import importlib.util
import logging
import sys
import timeit


def load(path):
    if path is None:
        from waitress_c import access_log

        return access_log
    spec = importlib.util.spec_from_file_location("access_log_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FormatOnly(logging.Handler):
    def emit(self, record):
        record.getMessage()


def main():
    mod = load(sys.argv[1] if len(sys.argv) > 1 else None)
    logger = logging.getLogger("waitress_c.access")
    logger.handlers[:] = [FormatOnly()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    ua = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
          "Gecko) Chrome/120.0.0.0 Safari/537.36")
    env = {
        "REMOTE_ADDR": "203.0.113.7",
        "HTTP_REFERER": "https://www.example.com/articles/2026/some-page?ref=home",
        "HTTP_USER_AGENT": ua,
    }
    dirty = dict(env, HTTP_USER_AGENT=ua + '\x85"\x9b')
    log = mod.AccessLog(mod.COMBINED)
    target = "/static/css/site.css?v=20261130"
    cases = [("clean", env), ("needs escaping", dirty)]
    for name, e in cases:
        t = timeit.Timer(lambda: log(e, None, "GET", target, "HTTP/1.1", 200, 5120, 1234, None))
        n = 20000
        best = min(t.repeat(7, n)) / n
        print("%-16s %6.2f us a line" % (name, best * 1e6))


if __name__ == "__main__":
    main()
