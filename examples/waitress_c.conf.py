"""A configuration file for waitress-c-serve, in Python: the format that can
define lifecycle hooks.

    waitress-c-serve -c examples/waitress_c.conf.py

Every lower-case module-level name is a setting (or a hook, or wsgi_app);
names starting with "_", names with capitals, modules and imported objects
are ignored.  WAITRESS_C_<NAME> variables, WAITRESS_C_CMD_ARGS and the
command line override the settings given here (docs/configuration.rst,
"Configuration files and the environment").
"""

import logging

wsgi_app = "examples.hello:app"
listen = "127.0.0.1:8080"
workers = 2
threads = 4
shutdown_timeout = 10

# Private: not a setting.  A child of the waitress_c logger, so it has its
# level and its output.
_log = logging.getLogger("waitress_c.hooks")


def when_ready(server):
    # In the supervisor, once the first workers all serve.
    _log.info("when_ready: listening on %s, workers %s",
              server.listen, server.worker_pids)


def post_fork(worker):
    # In the worker, before it imports the application: reopen here what
    # must not be shared across a fork (database pools, client sockets).
    _log.info("post_fork: worker %d is pid %d", worker.age, worker.pid)


def worker_exit(worker):
    # In the worker, as it exits: flush and close what post_fork opened.
    _log.info("worker_exit: pid %d, status %d", worker.pid, worker.exit_status)


def child_exit(worker):
    # In the supervisor, once the worker has exited (even after SIGKILL).
    _log.info("child_exit: pid %d, status %d", worker.pid, worker.exit_status)
