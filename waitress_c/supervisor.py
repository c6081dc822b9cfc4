"""Several server processes on the same listening sockets, supervised.

With ``workers`` > 1 (or ``max_requests`` set), ``create_server`` binds the
listeners as usual and returns a :class:`Supervisor` instead of a server.
Its ``run()`` forks the worker processes, each of which builds the normal
server (event loop and thread pool) on the inherited sockets, and then only
watches them: it never creates an event loop or a thread of its own, and
serves no request.  The workers share each listening socket, and so its
accept queue: a worker that stops accepting leaves the waiting connections
to the others.

Control goes through signals, as with gunicorn:

=========  =============================================================
to         signal and effect
=========  =============================================================
supervisor SIGTERM, SIGINT: graceful stop (workers finish what they have
           accepted, within ``shutdown_timeout``; 0: however long it
           takes); a second one, or
           SIGQUIT: immediate stop.  SIGHUP: replace the workers one by
           one.  SIGTTIN / SIGTTOU: one worker more / less.  SIGUSR1:
           reopen the log files, and send SIGUSR1 to every worker.
worker     SIGTERM: graceful stop of that worker (it is replaced);
           SIGQUIT: immediate stop.  SIGUSR1: reopen the log files.
           SIGINT, SIGHUP, SIGTTIN and SIGTTOU are ignored: they are the
           supervisor's business.
=========  =============================================================

A worker learns that the supervisor is gone from a pipe whose only writer
is the supervisor (and, on Linux, from ``PR_SET_PDEATHSIG``); it then stops
gracefully, so killing the supervisor with SIGKILL leaves no orphan serving.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import pkgutil
import random
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

from waitress_c import logs
from waitress_c.adjustments import Adjustments
from waitress_c.config import NO_HOOKS, Hooks, ServerInfo, WorkerInfo
from waitress_c.server import FirstListener, remove_pidfile, write_pidfile

__all__ = ["AppLoader", "Supervisor", "WorkerBootError", "wants_supervisor"]

logger = logging.getLogger("waitress_c")

# A worker that could not build its application or its server exits with
# this status (gunicorn uses the same number).
BOOT_ERROR = 3
# Seconds a stopping worker gets beyond shutdown_timeout before SIGKILL
# (and after an immediate stop).  With shutdown_timeout 0 a graceful stop
# has no deadline: the worker is never killed for taking its time.
KILL_MARGIN = 5.0
# A worker that dies sooner than this after it started counts as a failure
# in a row: the next replacement waits longer (0, 0.5, 1, 2 ... 30 s).
STABLE_AFTER = 5.0
MAX_BACKOFF = 30.0

# Bytes on a worker's status pipe.
READY = b"R"  # the server is built: the worker serves from now on
RETIRING = b"Q"  # max_requests reached: the worker is stopping by itself
STUCK = b"T"  # every thread is stuck in the app (timeout): replace it
BEAT = b"."  # with timeout: the worker's main thread still gets the GIL
# With timeout, a serving worker silent for max(timeout, SILENT_FLOOR)
# seconds is replaced: its main thread, which writes BEAT every
# timeout / 4 seconds (at least once a second), cannot get the GIL (an
# extension holding it) or the process is stopped.  The floor keeps a
# machine under load, where a process may wait a second for a core, from
# passing for a hang.
SILENT_FLOOR = 10.0

_CLOSE = 0  # byte the supervisor's close() writes (no signal has number 0)
_SUPERVISOR_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU",
        "SIGCHLD", "SIGUSR1",
    )
)
_WORKER_IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
_PR_SET_PDEATHSIG = 1


class WorkerBootError(RuntimeError):
    """The first workers could not start (their exit status is logged)."""


def wants_supervisor(adj: Adjustments) -> bool:
    """Whether these settings need worker processes and a supervisor."""
    return adj.workers > 1 or adj.max_requests > 0


class AppLoader:
    """An application named ``MODULE:OBJECT`` (or ``package.module.object``),
    imported in each worker after the fork rather than in the supervisor;
    with ``call``, the object is called and what it returns is served."""

    def __init__(self, name: str, call: bool = False) -> None:
        self.name = name
        self.call = call

    def load(self) -> Callable:
        app = pkgutil.resolve_name(self.name)
        if self.call:
            app = app()
        if app is None:
            raise ValueError(
                "The WSGI application %r is None%s."
                % (self.name, " (returned by --call)" if self.call else "")
            )
        return app

    def __repr__(self) -> str:
        return "AppLoader(%r, call=%r)" % (self.name, self.call)


def describe_status(status: int) -> str:
    """A wait status as words: "exit status 3", "killed by signal SIGKILL"."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return "exit status %d" % code
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = str(-code)
    return "killed by signal %s" % name


def _server_class(socks):
    from waitress_c.server import (
        MultiSocketServer,
        TcpWSGIServer,
        UnixWSGIServer,
    )

    if len(socks) != 1:
        return MultiSocketServer
    if socks[0].family == socket.AF_UNIX:
        return UnixWSGIServer
    return TcpWSGIServer


def _set_parent_death_signal(sig: int) -> None:
    """Linux: have the kernel send ``sig`` when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover
        pass


class _Worker:
    """The supervisor's record of one worker process."""

    __slots__ = ("pid", "fd", "started", "ready", "retiring", "replaces",
                 "kill_at", "age", "boot_killed", "seen", "slot")

    def __init__(self, pid: int, fd: int, replaces: Optional[int],
                 slot: Optional[int] = None) -> None:
        self.slot = slot  # its metrics slot, if any
        self.pid = pid
        self.fd = fd  # read end of its status pipe, -1 once at EOF
        self.started = time.monotonic()
        self.ready = False
        self.retiring = False  # stopping: no longer counts as serving
        self.replaces = replaces  # the pid a rolling restart retires for it
        self.kill_at: Optional[float] = None  # SIGKILL deadline
        self.age = 0  # 1 for the first worker started, 2 for the next...
        self.boot_killed = False  # killed for not being ready in time
        self.seen = self.started  # when its status pipe last had bytes


class _Stopper:
    """Stops a worker's server at most once per level (1 graceful, 2
    immediate), whoever asks: signals, the supervisor's pipe, max_requests."""

    def __init__(self, server) -> None:
        self.server = server
        self.level = 0
        self.lock = threading.Lock()

    def stop(self, level: int, why: Optional[str] = None) -> None:
        """``why``: the cause the server's stop line names."""
        with self.lock:
            while self.level < level:
                self.level += 1
                self.server.close(why)


class Supervisor(FirstListener):
    """What ``create_server`` returns when ``workers`` > 1 or
    ``max_requests`` is set: the listening sockets are bound; ``run()``
    starts the worker processes and supervises them until ``close()`` (from
    any thread) or SIGINT/SIGTERM, and returns once every worker has
    exited.  ``effective_listen`` (and ``effective_host`` /
    ``effective_port`` for one listener) are as on a server.  ``hooks``
    are a configuration file's lifecycle hooks (``waitress_c.config``).
    """

    hooks: Hooks = NO_HOOKS
    _spawned = 0  # workers started so far: the next one's age - 1
    _me: Optional[WorkerInfo] = None  # in a worker once post_fork ran
    _checked = 0.0  # when _check_silent last ran

    def __init__(self, application, adj: Adjustments, sockets, owned: bool,
                 plain: Sequence[bool] = ()):
        from waitress_c.server import _sockinfo, listen_schemes

        self.application = application
        self.adj = adj
        self.sockets: List[socket.socket] = list(sockets)
        self._owned = owned
        self.effective_listen = [_sockinfo(s) for s in self.sockets]
        # "http" or "https" for each listener; ``plain`` as the servers'.
        self._plain = list(plain)
        self.listen_schemes = listen_schemes(adj, plain, len(self.sockets))
        self._workers: Dict[int, _Worker] = {}
        self._target = adj.workers
        self._ran = False
        self._pid = os.getpid()
        # Signals (through set_wakeup_fd) and close() wake the loop here.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._close_calls: List[int] = []
        self._stopping = 0
        self._booting = True  # until the first workers are all ready
        self._boot_failed: Optional[str] = None
        self._failures = 0  # quick deaths in a row
        self._spawn_at = 0.0  # no spawning before this (backoff)
        self._reload_queue: List[int] = []
        self._reload_new: Optional[int] = None
        self._alive_r = self._alive_w = -1
        self._poller = select.poll()
        self._by_fd: Dict[int, _Worker] = {}  # status pipe -> worker
        # print_listen()'s format: "Serving on" waits for a ready worker.
        self._listen_format: Optional[str] = None
        self._announced = False
        # Metrics: one slot per worker process in memory they share with
        # us; we serve the sum from this loop (waitress_c/metrics.py).
        self._mbuf = self._metrics = None
        self._mpolled: List[int] = []
        self._restarts: Dict[str, int] = {}
        if adj.metrics:
            from waitress_c.metrics import MetricsBuffer, MetricsEndpoint

            self._mbuf = MetricsBuffer(1 + max(64, 4 * adj.workers))
            try:
                self._metrics = MetricsEndpoint(
                    adj.metrics, self._render_metrics)
            except BaseException:
                self._wake_r.close()
                self._wake_w.close()
                raise

    # -- the public surface ---------------------------------------------------

    @property
    def worker_pids(self) -> List[int]:
        """The pids of the worker processes alive now."""
        return sorted(self._workers)

    def print_listen(self, format_str: str) -> None:
        """Log the listeners, once a worker serves them (now if one does,
        else when the first one is ready)."""
        self._listen_format = format_str
        if self._announced:
            self._announce()

    def _announce(self) -> None:
        self._announced = True
        if self._listen_format is None:
            return
        from waitress_c.server import log_listeners

        log_listeners(self._listen_format, self.effective_listen,
                      self.listen_schemes)

    def close(self) -> None:
        """Stop: gracefully the first time, at once the second.  Safe from
        any thread, and before run()."""
        self._close_calls.append(1)  # list.append: safe from any thread
        try:
            self._wake_w.send(bytes([_CLOSE]))
        except OSError:
            pass

    def run(self) -> None:
        if self._ran:
            raise RuntimeError("run() may be called only once")
        self._ran = True
        self._pid = os.getpid()
        in_main = threading.current_thread() is threading.main_thread()
        restore = self._install_signals() if in_main else None
        try:
            write_pidfile(self.adj.pidfile, self._pid)
        except BaseException:
            if restore:
                self._restore_signals(restore)
            self._close_sockets()
            if self._metrics is not None:  # its port too
                self._metrics.close()
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._alive_r, self._alive_w = os.pipe()
        try:
            logger.info(
                "Supervisor pid %d: starting %d worker%s",
                self._pid, self._target, "" if self._target == 1 else "s",
            )
            if self._metrics is not None:
                logger.info("Metrics on %s", self._metrics.url)
            self._loop(poll_ms=1000 if restore else 200)
        finally:
            for w in list(self._workers.values()):  # only after errors
                self._kill(w, signal.SIGKILL)
            self._reap(block=True)
            for w in list(self._by_fd.values()):
                self._forget_fd(w)
            if restore:
                self._restore_signals(restore)
            os.close(self._alive_w)
            os.close(self._alive_r)
            self._wake_r.close()
            self._wake_w.close()
            if self._metrics is not None:
                self._metrics.close()
            self._close_sockets()
            remove_pidfile(self.adj.pidfile, self._pid)
        if self._boot_failed:
            raise WorkerBootError(self._boot_failed)
        logger.info("Supervisor pid %d: stopped", self._pid)

    # -- the loop -------------------------------------------------------------

    def _loop(self, poll_ms: int) -> None:
        self._poller.register(self._wake_r.fileno(), select.POLLIN)
        self._read_wakeups()  # close() before run(): start no worker
        while True:
            self._reap()
            if self._stopping and not self._workers:
                return
            self._tick()
            timeout = self._timeout(poll_ms)
            self._poll_metrics()
            for fd, _ in self._poller.poll(timeout):
                if fd == self._wake_r.fileno():
                    self._read_wakeups()
                    continue
                if self._metrics is not None and self._metrics.owns(fd):
                    try:
                        self._metrics.handle(fd)
                    except Exception:  # a scrape never stops supervision
                        logger.exception("metrics: scrape failed")
                    continue
                w = self._by_fd[fd]
                try:
                    data = os.read(fd, 64)
                except OSError:
                    data = b""
                if data:
                    self._on_status(w, data)
                else:  # EOF: the worker has exited or is about to
                    self._forget_fd(w)
            # Every pipe that had bytes was read just now: a worker that
            # beat while this loop was not scheduled is not taken as silent.
            self._check_silent()

    def _forget_fd(self, w: _Worker) -> None:
        if w.fd >= 0:
            self._poller.unregister(w.fd)
            del self._by_fd[w.fd]
            os.close(w.fd)
            w.fd = -1

    def _timeout(self, poll_ms: int) -> int:
        """Milliseconds until the next deadline, at most ``poll_ms``."""
        now = time.monotonic()
        deadlines = [w.kill_at for w in self._workers.values() if w.kill_at]
        if self.adj.boot_timeout and not self._stopping:
            deadlines += [
                w.started + self.adj.boot_timeout
                for w in self._workers.values()
                if not (w.ready or w.retiring or w.boot_killed)
            ]
        if self._spawn_at > now and not self._stopping:
            deadlines.append(self._spawn_at)
        ms = poll_ms
        for d in deadlines:
            ms = min(ms, max(0, int((d - now) * 1000) + 1))
        return ms

    def _read_wakeups(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for sig in data:
            if sig == _CLOSE:
                continue
            if sig in (signal.SIGINT, signal.SIGTERM):
                self._begin_stop(self._stopping + 1, signal.Signals(sig).name)
            elif sig == signal.SIGQUIT:
                self._begin_stop(2, "SIGQUIT")
            elif sig == signal.SIGHUP:
                self._begin_reload()
            elif sig == signal.SIGTTIN:
                self._target += 1
                logger.info("SIGTTIN: %d workers wanted", self._target)
            elif sig == signal.SIGTTOU:
                if self._target > 1:
                    self._target -= 1
                logger.info("SIGTTOU: %d workers wanted", self._target)
            elif sig == signal.SIGUSR1:  # logrotate: ours, then theirs
                logs.reopen_and_log()
                for w in self._workers.values():
                    self._kill(w, signal.SIGUSR1)
        while self._close_calls:
            self._close_calls.pop()
            self._begin_stop(self._stopping + 1, "close()")

    def _on_status(self, w: _Worker, data: bytes) -> None:
        w.seen = time.monotonic()
        # A worker killed for boot_timeout is not taken as ready by a READY
        # it wrote as it was being killed.
        if READY in data and not w.ready and not w.boot_killed:
            w.ready = True
            logger.info("Worker pid %d: serving", w.pid)
            if not self._announced:
                self._announce()
            if w.pid == self._reload_new:
                self._reload_new = None
                old = self._workers.get(w.replaces or 0)
                if old is not None and not old.retiring:
                    self._retire(old, "replaced")
                if not self._reload_queue:
                    logger.info("Rolling restart complete")
            if self._booting and all(
                x.ready for x in self._workers.values() if not x.retiring
            ):
                self._booting = False
                self.hooks.call("when_ready", ServerInfo(
                    self._pid, self.adj, self.effective_listen,
                    self.worker_pids))
        if RETIRING in data and not w.retiring:
            self._count_restart("max_requests")
            w.retiring = True
            w.kill_at = self._graceful_deadline()
            logger.info(
                "Worker pid %d: max_requests reached, recycling it", w.pid
            )
        if (STUCK in data and w.ready and not w.retiring
                and not self._stopping):
            logger.error(
                "Worker pid %d: every thread stuck in the application for "
                "more than %g s (timeout): replacing it",
                w.pid, self.adj.timeout,
            )
            self._count_restart("timeout")
            self._retire(w, "hung")

    def _tick(self) -> None:
        """Deadlines, the next step of a rolling restart, the worker
        count."""
        now = time.monotonic()
        for w in self._workers.values():
            if w.kill_at is not None and now >= w.kill_at:
                logger.warning(
                    "Worker pid %d did not stop in time: SIGKILL", w.pid
                )
                self._kill(w, signal.SIGKILL)
                w.kill_at = None
        if self._stopping:
            return
        self._check_boot(now)
        if self._reload_new is None:
            while self._reload_queue:
                old = self._workers.get(self._reload_queue.pop(0))
                if old is not None and not old.retiring:
                    self._reload_new = self._spawn(replaces=old.pid)
                    break
        serving = [w for w in self._workers.values() if not w.retiring]
        extra = 1 if self._reload_new is not None else 0
        missing = self._target + extra - len(serving)
        if missing > 0 and now >= self._spawn_at:
            for _ in range(missing):
                self._spawn()
        elif missing < 0:
            # SIGTTOU: the oldest go first (never the one booting for a
            # rolling restart).
            candidates = sorted(
                (w for w in serving if w.pid != self._reload_new),
                key=lambda w: w.started,
            )
            for w in candidates[: -missing]:
                self._retire(w, "one worker less")

    def _check_boot(self, now: float) -> None:
        """boot_timeout: SIGKILL to the workers not ready in time (their
        exit is handled by _on_exit)."""
        limit = self.adj.boot_timeout
        if not limit:
            return
        for w in self._workers.values():
            if w.ready or w.retiring or w.boot_killed:
                continue
            if now - w.started >= limit:
                logger.error(
                    "Worker pid %d not ready after %g s: killed", w.pid, limit
                )
                w.boot_killed = True
                self._kill(w, signal.SIGKILL)

    def _check_silent(self) -> None:
        """timeout: kill (and so replace) the serving workers whose
        heartbeat stopped.  Not gracefully: a worker that cannot run Python
        would not act on SIGTERM, and its event loop, which needs no GIL,
        would go on accepting connections that nobody serves."""
        now = time.monotonic()
        last, self._checked = self._checked, now
        if not self.adj.timeout or self._stopping:
            return
        if last and now - last > SILENT_FLOOR / 2:
            # This loop itself did not run for that long (the whole server
            # stopped or frozen, or a slow hook): the workers' silence
            # says nothing then; they are judged from now on.
            for w in self._workers.values():
                w.seen = max(w.seen, now)
            return
        limit = max(self.adj.timeout, SILENT_FLOOR)
        for w in self._workers.values():
            if w.ready and not w.retiring and now - w.seen > limit:
                logger.error(
                    "Worker pid %d: no heartbeat for %.0f s (a thread "
                    "holding the GIL, or the process stopped): SIGKILL",
                    w.pid, now - w.seen,
                )
                w.retiring = True
                self._count_restart("timeout")
                self._kill(w, signal.SIGKILL)

    # -- workers --------------------------------------------------------------

    def _graceful_deadline(self) -> Optional[float]:
        """When a worker that begins a graceful stop now is killed if it is
        still there: shutdown_timeout + KILL_MARGIN from now, or never
        (None) when shutdown_timeout is 0."""
        if not self.adj.shutdown_timeout:
            return None
        return time.monotonic() + self.adj.shutdown_timeout + KILL_MARGIN

    def _kill(self, w: _Worker, sig: int) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def _retire(self, w: _Worker, why: str) -> None:
        logger.info("Worker pid %d: stopping gracefully (%s)", w.pid, why)
        w.retiring = True
        w.kill_at = self._graceful_deadline()
        self._kill(w, signal.SIGTERM)

    def _begin_stop(self, level: int, why: str) -> None:
        level = min(level, 2)
        if level <= self._stopping:
            return
        self._stopping = level
        self._reload_queue.clear()
        self._reload_new = None
        if level == 1:
            logger.info(
                "%s: stopping the workers gracefully (shutdown_timeout %g s)",
                why, self.adj.shutdown_timeout,
            )
        else:
            logger.info("%s: stopping the workers now", why)
        # The listeners stay open only in the workers, whose servers close
        # them at once: new connections are refused from now on.
        self._close_sockets()
        if level == 1:
            limit = self._graceful_deadline()  # None: no deadline
        else:
            limit = time.monotonic() + KILL_MARGIN
        for w in self._workers.values():
            w.retiring = True
            # A worker already stopping keeps its deadline if it is sooner.
            if limit is not None:
                w.kill_at = min(w.kill_at or limit, limit)
            self._kill(w, signal.SIGTERM if level == 1 else signal.SIGQUIT)

    def _begin_reload(self) -> None:
        if self._stopping:
            return
        olds = sorted(
            (w for w in self._workers.values() if not w.retiring),
            key=lambda w: w.started,
        )
        logger.info(
            "SIGHUP: replacing %d worker%s one by one",
            len(olds), "" if len(olds) == 1 else "s",
        )
        # A new SIGHUP during a rolling restart starts over with the
        # workers serving now (new ones included).
        self._reload_queue = [w.pid for w in olds if w.pid != self._reload_new]

    def _reap(self, block: bool = False) -> None:
        for pid in list(self._workers):
            try:
                done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self._on_exit(self._workers.pop(pid), status)

    def _on_exit(self, w: _Worker, status: int) -> None:
        how = describe_status(status)
        self.hooks.call("child_exit", WorkerInfo(
            w.pid, w.age, self.adj, os.waitstatus_to_exitcode(status)))
        if self._mbuf is not None and w.slot is not None:
            self._mbuf.retire(w.slot)  # its counts stay in the totals
            w.slot = None
        if w.fd >= 0:  # a last status byte may wait there
            try:
                data = os.read(w.fd, 64)
            except OSError:
                data = b""
            if data:
                self._on_status(w, data)
            self._forget_fd(w)
        if self._stopping or w.retiring:
            logger.info("Worker pid %d exited (%s)", w.pid, how)
            return
        now = time.monotonic()
        if not w.ready:
            if w.boot_killed and w.pid == self._reload_new:
                old = self._workers.get(w.replaces or 0)
                logger.error(
                    "Rolling restart abandoned: the new worker did not "
                    "become ready; %s keeps serving",
                    "pid %d" % old.pid if old else "the old worker")
                self._reload_new = None
                self._reload_queue.clear()
                return
            if self._booting and not w.boot_killed:
                self._boot_failed = "worker pid %d failed to boot (%s)" % (
                    w.pid, how)
                logger.error("Worker pid %d failed to boot (%s): stopping",
                             w.pid, how)
                self._begin_stop(1, "boot failure")
                return
            if w.pid == self._reload_new:
                logger.error(
                    "Worker pid %d failed to boot (%s): rolling restart "
                    "abandoned, the other workers keep serving", w.pid, how)
                self._reload_new = None
                self._reload_queue.clear()
                return
        self._count_restart("boot_timeout" if w.boot_killed
                            else "exit" if status == 0 else "crash")
        if now - w.started < STABLE_AFTER or w.boot_killed:
            self._failures += 1
        else:
            self._failures = 0
        delay = 0.0
        if self._failures > 1:
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (self._failures - 2))
        self._spawn_at = now + delay
        logger.warning(
            "Worker pid %d died (%s); starting a replacement%s",
            w.pid, how, " in %g s" % delay if delay else "",
        )

    def _spawn(self, replaces: Optional[int] = None) -> Optional[int]:
        """Fork one worker; returns its pid (None if fork failed)."""
        r, w = os.pipe()
        slot = self._mbuf.take() if self._mbuf is not None else None
        if replaces:
            self._count_restart("reload")
        blocked = signal.pthread_sigmask(
            signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        self._spawned += 1
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(r)
            os.close(w)
            if slot is not None:
                self._mbuf.retire(slot)
            logger.error("Cannot start a worker: %s", exc)
            self._spawn_at = time.monotonic() + 1.0
            return None
        if pid == 0:  # the worker
            status = 70
            try:
                os.close(r)
                status = self._worker_main(w, blocked, slot)
            except BaseException:
                traceback.print_exc()
            finally:
                if self._me is not None:  # post_fork ran: worker_exit too
                    self._me.exit_status = status
                    self.hooks.call("worker_exit", self._me)
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(w)
        self._workers[pid] = rec = _Worker(pid, r, replaces, slot)
        rec.age = self._spawned
        self._by_fd[r] = rec
        self._poller.register(r, select.POLLIN)
        logger.info(
            "Worker pid %d: starting%s", pid,
            " (to replace pid %d)" % replaces if replaces else "",
        )
        return pid

    # -- in the worker process ----------------------------------------------

    def _worker_main(self, status_w: int, mask,
                     slot: Optional[int] = None) -> int:
        """Runs in the forked child; returns its exit status.  ``slot``:
        its metrics slot."""
        for sig in _SUPERVISOR_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for sig in _WORKER_IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        self._wake_r.close()
        self._wake_w.close()
        os.close(self._alive_w)
        for fd in self._by_fd:
            os.close(fd)
        self._workers = {}
        self._by_fd = {}
        if self._metrics is not None:  # the supervisor's to serve
            self._metrics.close()
        _set_parent_death_signal(signal.SIGTERM)
        # SIGUSR1 stays blocked (pending, neither lost nor fatal) until
        # _serve_in_worker handles it.
        signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) | {signal.SIGUSR1})
        if os.getppid() != self._pid:
            return 0  # the supervisor died while we were being born
        # Before the application is loaded: what a database pool or a
        # metrics library needs to reset after a fork.  A failure is a
        # failure to boot.
        me = WorkerInfo(os.getpid(), self._spawned, self.adj)
        if not self.hooks.call("post_fork", me):
            return BOOT_ERROR
        self._me = me
        retire: List[Callable[[], None]] = []
        try:
            app = self.application
            if isinstance(app, AppLoader):
                app = app.load()
            if self.adj.max_requests:
                limit = self.adj.max_requests + random.randint(
                    0, self.adj.max_requests_jitter)
                app = _count_requests(app, limit, lambda: retire[0]())
            server = _server_class(self.sockets)(
                app, self.adj, self.sockets, False,
                # No slot (all taken): counted in its own memory only.
                metrics_slot=(self._mbuf if slot is not None else None,
                              slot or 0),
                plain=self._plain,
            )
            server._pidfile = None  # the supervisor's pid is in it
            server._on_hung = lambda stuck: _report_hung(status_w, stuck)
        except BaseException:
            logger.exception("Worker pid %d: cannot start", os.getpid())
            return BOOT_ERROR
        # The server's core serves its own copies of the listening sockets
        # and closes them when it stops: closing ours leaves the listeners
        # open in this process only as long as it accepts on them.
        for sock in self.sockets:
            sock.close()
        stopper = _Stopper(server)

        def retire_self() -> None:
            # The stop first: until the loop has begun it, the requests
            # that arrive are served as usual, beyond the limit.
            stopper.stop(1, "max_requests")
            _write(status_w, RETIRING)
            logger.info(
                "Worker pid %d: %d requests (max_requests): stopping",
                os.getpid(), limit)

        retire.append(retire_self)
        self._serve_in_worker(server, stopper, status_w)
        return 0

    def _serve_in_worker(self, server, stopper: _Stopper, status_w: int):
        """Run the server in a thread; the main thread turns signals and the
        supervisor's death into stops."""
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(sig, lambda signum, frame: None)
        done = threading.Event()

        def serve() -> None:
            try:
                server.run()
            finally:
                done.set()
                w.send(b"\0")  # wake the main thread: the server is done

        loop = threading.Thread(target=serve, name="waitress_c-loop")
        loop.start()
        # Only now: the server's threads keep SIGUSR1 blocked, so it comes
        # to this thread and its wakeup fd.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        _write(status_w, READY)
        poller = select.poll()
        poller.register(r.fileno(), select.POLLIN)
        poller.register(self._alive_r, select.POLLIN)
        # timeout: a heartbeat (see SILENT_FLOOR).
        beat = min(1.0, self.adj.timeout / 4) if self.adj.timeout else 0.0
        next_beat = 0.0
        while not done.is_set():
            if beat and time.monotonic() >= next_beat:
                _write(status_w, BEAT)
                next_beat = time.monotonic() + beat
            for fd, _ in poller.poll(int(beat * 1000) if beat else 1000):
                if fd == self._alive_r:  # the supervisor is gone
                    poller.unregister(fd)
                    stopper.stop(1, "supervisor gone")
                    continue
                try:
                    data = r.recv(64)
                except (BlockingIOError, InterruptedError):
                    data = b""
                for sig in data:
                    if sig == signal.SIGQUIT:
                        stopper.stop(2, "SIGQUIT")
                    elif sig == signal.SIGTERM:
                        stopper.stop(1, "SIGTERM")
                    elif sig == signal.SIGUSR1:
                        logs.reopen_and_log()
            if os.getppid() != self._pid:
                stopper.stop(1, "supervisor gone")
        loop.join()
        signal.set_wakeup_fd(-1)

    # -- metrics --------------------------------------------------------------

    def _count_restart(self, cause: str) -> None:
        self._restarts[cause] = self._restarts.get(cause, 0) + 1

    def _poll_metrics(self) -> None:
        """Poll the metrics listener and its scrapes with the rest."""
        if self._metrics is None:
            return
        self._metrics.expire()
        for fd in self._mpolled:
            # A closed scrape's number may be a worker's status pipe now.
            if fd in self._by_fd or fd == self._wake_r.fileno():
                continue
            try:
                self._poller.unregister(fd)
            except KeyError:
                pass
        self._mpolled = []
        for fd, events in self._metrics.fds():
            self._poller.register(fd, events)
            self._mpolled.append(fd)

    def _render_metrics(self) -> str:
        from waitress_c.metrics import render

        assert self._mbuf is not None
        slots = [0] + [
            w.slot for w in self._workers.values() if w.slot is not None
        ]
        extra = [
            "# HELP waitress_c_workers Worker processes alive.",
            "# TYPE waitress_c_workers gauge",
            "waitress_c_workers %d" % len(self._workers),
            "# HELP waitress_c_worker_restarts_total Worker processes "
            "replaced, by cause.",
            "# TYPE waitress_c_worker_restarts_total counter",
        ]
        for cause in ("max_requests", "reload", "exit", "crash",
                      "boot_timeout", "timeout"):
            extra.append(
                'waitress_c_worker_restarts_total{cause="%s"} %d'
                % (cause, self._restarts.get(cause, 0))
            )
        return render(self._mbuf, slots, extra)

    # -- helpers --------------------------------------------------------------

    def _close_sockets(self) -> None:
        if self._owned:
            for sock in self.sockets:
                sock.close()

    def _install_signals(self):
        old_fd = signal.set_wakeup_fd(
            self._wake_w.fileno(), warn_on_full_buffer=False)
        old = {}
        for sig in _SUPERVISOR_SIGNALS:
            # The wakeup fd carries the signal number to the loop.
            old[sig] = signal.signal(sig, lambda signum, frame: None)
        return old_fd, old

    @staticmethod
    def _restore_signals(state) -> None:
        old_fd, old = state
        for sig, handler in old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_fd)


def _write(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError as exc:  # the supervisor is gone
        if exc.errno not in (errno.EPIPE, errno.EBADF):
            raise


def _report_hung(status_w: int, stuck) -> None:
    """timeout, in a worker whose every thread is stuck: name the requests,
    and have the supervisor replace this worker."""
    from waitress_c.watchdog import describe

    logger.error(
        "Worker pid %d: all %d threads stuck in the application: %s",
        os.getpid(), len(stuck), describe(stuck),
    )
    _write(status_w, STUCK)


def _count_requests(app, limit: int, on_limit: Callable[[], None]):
    """``app``, calling ``on_limit`` when its ``limit``-th request starts
    (that request is served like the others)."""
    counter = itertools.count(1)

    def counted(environ, start_response):
        if next(counter) == limit:  # atomic under the GIL
            on_limit()
        return app(environ, start_response)

    return counted
