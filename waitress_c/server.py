"""Listening sockets and the server object.

Python binds the sockets (so ``listen``, ``unix_socket`` and ``sockets=`` work
exactly as in waitress) and hands their file descriptors to the C core, which
serves them from a libuv loop with the GIL released.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import tempfile
import threading
from typing import Any, Callable, Iterable, List, Optional, Protocol, Sequence, Tuple

from waitress_c.adjustments import Adjustments, format_address

logger = logging.getLogger("waitress_c")

# The TLS servers of this process that are running: what reload_tls()
# (SIGHUP in a single process, runner.py) reloads.
_TLS_SERVERS: "set[BaseWSGIServer]" = set()
_TLS_LOCK = threading.Lock()


def reload_tls() -> bool:
    """Read the certificate, key and CA files of every running TLS server
    of this process again; the connections accepted from then on use them.
    A failure is logged and the old files stay in use.  Returns False when
    no TLS server runs."""
    with _TLS_LOCK:
        servers = list(_TLS_SERVERS)
    for server in servers:
        try:
            server._core.tls_reload(server.adj)
        except ValueError as exc:
            logger.error("SIGHUP: TLS files not reloaded, the old ones stay: %s", exc)
        else:
            logger.info("SIGHUP: TLS files reloaded (%s)", server.adj.certfile)
    return bool(servers)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ListenError(OSError):
    """A listening socket could not be made.  Keeps the ``errno`` of the
    failure; its message names the address, e.g. ``cannot listen on
    127.0.0.1:8080: Address already in use``."""

    def __str__(self) -> str:
        return self.strerror or ""


class PidfileError(OSError):
    """The pid file could not be written; the message names it and says
    why."""

    def __str__(self) -> str:
        return self.strerror or ""


def write_pidfile(path: Optional[str], pid: int) -> None:
    """Write ``pid`` to ``path`` whole or not at all: a temporary file in
    the same directory, renamed over it.  Nothing without a path."""
    if not path:
        return
    directory, base = os.path.split(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + base + ".", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write("%d\n" % pid)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise PidfileError(
            exc.errno,
            "cannot write the pid file %s: %s" % (path, exc.strerror or exc),
        ) from exc


def remove_pidfile(path: Optional[str], pid: int) -> None:
    """Remove ``path`` if it still holds ``pid`` (another server may have
    taken it over since)."""
    if not path:
        return
    try:
        with open(path) as f:
            if f.read().strip() != str(pid):
                return
        os.unlink(path)
    except OSError as exc:
        logger.warning("Cannot remove the pid file %s: %s", path, exc)


def _listen_error(exc: OSError, where: str) -> ListenError:
    reason = exc.strerror or str(exc)
    return ListenError(exc.errno, "cannot listen on %s: %s" % (where, reason))


def _make_unix_socket(adj: Adjustments) -> socket.socket:
    path = adj.unix_socket
    sock = None
    try:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket file from an earlier run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, adj.unix_socket_perms)
        sock.listen(adj.backlog)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise _listen_error(exc, path) from exc
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    return sock


def _make_tcp_socket(adj: Adjustments, family, socktype, proto, sockaddr):
    host, port = sockaddr[0], sockaddr[1]
    where = format_address(host, port)
    try:
        sock = socket.socket(family, socktype, proto)
    except OSError as exc:
        raise _listen_error(exc, where) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Accepted sockets inherit TCP_NODELAY from the listener on Linux:
        # no setsockopt per connection.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            # Wake up for a connection when its request has arrived, and
            # read it at once (the core reads right after accept).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        sock.bind(sockaddr)
        sock.listen(adj.backlog)
    except OSError as exc:
        sock.close()
        raise _listen_error(exc, where) from exc
    except BaseException:
        sock.close()
        raise
    return sock


def listen_schemes(adj: Adjustments, plain: Sequence[bool], n: int) -> List[str]:
    """The scheme of each of `n` listeners: https with a certfile, except
    where `plain` (one flag per listener, or empty) says plain HTTP
    (``insecure_listen``)."""
    flags = list(plain) or [False] * n
    if len(flags) != n:
        raise ValueError("%d plain flags for %d listeners" % (len(flags), n))
    return ["https" if adj.certfile and not p else "http" for p in flags]


def _sockinfo(sock: socket.socket) -> Tuple[str, str]:
    """(effective_host, effective_port) as strings, as waitress gives them."""
    if sock.family == socket.AF_UNIX:
        return ("unix", sock.getsockname())
    host, port = socket.getnameinfo(
        sock.getsockname(), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    )
    return host, port


class ServerProtocol(Protocol):
    """What ``create_server()`` returns, whichever class it is: a server
    (``TcpWSGIServer``, ``UnixWSGIServer``, ``MultiSocketServer``) or, with
    ``workers`` > 1 or ``max_requests``, a ``Supervisor``.  Annotate with
    this (``waitress_c.ServerProtocol``) rather than with a class.

    ``effective_host`` and ``effective_port`` are the first listener's; on
    a single-process server with more than one listener
    (``MultiSocketServer``) they raise ``AttributeError``, as waitress's
    has neither, while a ``Supervisor`` gives the first listener's.
    ``listen_schemes`` gives each listener's scheme, ``"http"`` or
    ``"https"``, in ``effective_listen``'s order."""

    application: Any
    adj: Adjustments
    effective_listen: List[Tuple[str, str]]
    listen_schemes: List[str]

    @property
    def effective_host(self) -> str: ...

    @property
    def effective_port(self) -> str: ...

    def print_listen(self, format_str: str) -> None: ...

    def run(self) -> None: ...

    def close(self) -> None: ...


class BaseWSGIServer:
    """A running-or-runnable server on one or more listening sockets.

    ``run()`` serves in the calling thread until ``close()`` is called (from
    any thread) or the process gets SIGINT/SIGTERM (when ``run()`` is in the
    main thread); in-flight responses are finished first.
    """

    def __init__(self, application, adj: Adjustments, sockets, owned,
                 metrics_slot: Optional[Tuple[Any, int]] = None,
                 plain: Sequence[bool] = ()):
        """``metrics_slot``: (MetricsBuffer, slot) to count into, from a
        supervisor that serves the metrics; otherwise ``adj.metrics``
        makes a buffer and a listener of this server's own.  ``plain``: a
        flag per socket, true for one that speaks plain HTTP although
        ``adj`` has a certfile (``insecure_listen``)."""
        from waitress_c import _core

        self.application = application
        self.adj = adj
        self.sockets: List[socket.socket] = list(sockets)
        self._owned = owned
        self.effective_listen = [_sockinfo(s) for s in self.sockets]
        # Beside effective_listen: "http" or "https" for each listener.
        self.listen_schemes = listen_schemes(adj, plain, len(self.sockets))
        app = application
        drop = False
        if adj.trusted_proxy or (
            adj.clear_untrusted_proxy_headers and adj.log_untrusted_proxy_headers
        ):
            from waitress_c.proxy_headers import wrap_app

            app = wrap_app(application, adj)
        elif adj.clear_untrusted_proxy_headers:
            drop = True  # the core drops them while building the environ
        listeners = []
        for sock, (host, port), scheme in zip(
            self.sockets, self.effective_listen, self.listen_schemes
        ):
            is_unix = sock.family == socket.AF_UNIX
            # Our own sockets are shut down when a stop begins (new
            # connections refused at once); the caller's are left alone.
            listeners.append((sock.fileno(), is_unix, str(port), owned,
                              scheme == "http"))
        access = None
        if adj.access_log:
            from waitress_c.access_log import AccessLog

            access = AccessLog(adj.access_log_format)
        self._metrics = None
        mbuf, mslot = metrics_slot or (None, 0)
        if mbuf is None and adj.metrics:
            from waitress_c.metrics import MetricsBuffer

            mbuf = MetricsBuffer(1)
        self._core = _core.Server(
            app, listeners, adj, drop_proxy_headers=drop, access_log=access,
            metrics=mbuf.map if mbuf is not None else None, metrics_slot=mslot,
        )
        if metrics_slot is None and mbuf is not None:
            from waitress_c.metrics import MetricsEndpoint, render

            self._metrics = MetricsEndpoint(
                adj.metrics, lambda: render(mbuf, (0,)))
        self._threads: List[threading.Thread] = []
        self._ran = False
        # A worker process's server leaves it to its supervisor.
        self._pidfile = adj.pidfile
        # timeout: called once every thread is stuck (a worker process
        # tells its supervisor); None logs it (waitress_c/watchdog.py).
        self._on_hung = None

    def print_listen(self, format_str: str) -> None:
        """Log a line per listener: ``format_str`` with its host and port
        (and ``{scheme}``, http or https, if the format names it)."""
        log_listeners(format_str, self.effective_listen, self.listen_schemes)

    def run(self, ready: Optional[Callable[[], None]] = None) -> None:
        """Serve until stopped.  ``ready``, if given, is called once (in
        this thread) when SIGINT and SIGTERM already stop the server
        gracefully and the pid file is written, just before it serves:
        ``serve()`` logs "Serving on" from there, so that a process
        manager that signals the server as soon as it sees that line never
        finds it with the signals' default actions.  An exception it
        raises is logged, and the server serves."""
        if self._ran:
            raise RuntimeError("run() may be called only once")
        self._ran = True
        core = self._core
        restore = self._install_signals()
        pid = os.getpid()
        try:
            write_pidfile(self._pidfile, pid)
        except BaseException:
            if restore:
                self._restore_signals(restore)
            self._close_sockets()
            if self._metrics is not None:  # its port too
                self._metrics.close()
            raise
        for i in range(self.adj.threads):
            t = threading.Thread(
                target=core.worker, name="waitress_c-%d" % i, daemon=True
            )
            t.start()
            self._threads.append(t)
        # The loop's log lines are emitted by a thread of their own, so they
        # come out even while every worker is busy in the application.
        log_thread = threading.Thread(
            target=core.log_thread, name="waitress_c-log", daemon=True
        )
        log_thread.start()
        watch = None
        if self.adj.timeout:
            from waitress_c.watchdog import HungWatch

            watch = HungWatch(core, self.adj.timeout, self._on_hung).start()
        if self._metrics is not None:
            self._metrics.start()
            logger.info("Metrics on %s", self._metrics.url)
        if self.adj.certfile:
            with _TLS_LOCK:
                _TLS_SERVERS.add(self)
        try:
            if ready is not None:
                try:
                    ready()
                except Exception:
                    logger.exception("run(): the ready callback failed")
            core.run(sigfd=restore[0] if restore else -1)
        finally:
            with _TLS_LOCK:
                _TLS_SERVERS.discard(self)
            if watch is not None:
                watch.stop()
            if self._metrics is not None:
                self._metrics.close()
            remove_pidfile(self._pidfile, pid)
            log_thread.join(timeout=5)
            if restore:
                self._restore_signals(restore)
            # After a graceful stop the workers have left already; after an
            # immediate one, workers stuck in the app are not waited for
            # (they are daemon threads, as in waitress).
            if core.stopping < 2:
                for t in self._threads:
                    t.join(timeout=5)
            self._close_sockets()

    def close(self, why: Optional[str] = None) -> None:
        """Stop serving: gracefully the first time, at once the second.
        Safe from any thread, and before run().  ``why`` is the cause the
        "Shutting down" line names (by default "close() called")."""
        self._core.close(why)

    def _close_sockets(self) -> None:
        for sock in self.sockets if self._owned else ():
            sock.close()

    def _install_signals(self):
        """SIGINT/SIGTERM reach the loop through Python's wakeup fd (the
        loop never needs the GIL for them)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        try:
            old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        except ValueError:
            r.close()
            w.close()
            return None
        old = {}
        for sig in _STOP_SIGNALS:
            # The handler runs only after run() returns: nothing to do then.
            old[sig] = signal.signal(sig, lambda signum, frame: None)
        return (r.fileno(), r, w, old_fd, old)

    @staticmethod
    def _restore_signals(state) -> None:
        _, r, w, old_fd, old = state
        for sig, handler in old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_fd)
        r.close()
        w.close()


def log_listeners(format_str: str, listen: Sequence[Tuple[str, str]],
                  schemes: Sequence[str]) -> None:
    """print_listen() of a server or a supervisor: a line per listener."""
    for (host, port), scheme in zip(listen, schemes):
        if ":" in host:
            host = "[%s]" % host
        logger.info(format_str.format(host, port, scheme=scheme))


class FirstListener:
    """``effective_host`` and ``effective_port``: those of the first
    listener, as waitress gives them for a single one."""

    effective_listen: List[Tuple[str, str]]

    @property
    def effective_host(self) -> str:
        return self.effective_listen[0][0]

    @property
    def effective_port(self) -> str:
        return self.effective_listen[0][1]


class TcpWSGIServer(FirstListener, BaseWSGIServer):
    pass


class UnixWSGIServer(TcpWSGIServer):
    pass


class MultiSocketServer(BaseWSGIServer):
    """More than one listener: only ``effective_listen``, as in waitress
    (``effective_host`` and ``effective_port`` raise ``AttributeError``, so
    ``hasattr()`` is false for them as there)."""

    @property
    def effective_host(self) -> str:
        raise AttributeError("a server with several listeners has no effective_host")

    @property
    def effective_port(self) -> str:
        raise AttributeError("a server with several listeners has no effective_port")


WSGIServer = TcpWSGIServer


def create_server(application: Optional[Callable[..., Any]], **kw: Any) -> ServerProtocol:
    """Bind the sockets ``kw`` describes and return a server; call
    ``run()`` on it to serve.  Takes waitress's adjustments.

    With ``workers`` > 1 or ``max_requests`` set, the result is a
    ``waitress_c.supervisor.Supervisor``: the same ``run()``, ``close()``,
    ``print_listen()`` and ``effective_listen``, but ``run()`` forks the
    worker processes that serve, and supervises them."""
    if application is None:
        raise ValueError(
            'The "app" passed to ``create_server`` was ``None``.  You forgot '
            "to return a WSGI app within your application."
        )
    adj = Adjustments(**kw)
    from waitress_c import logs

    logs.setup(adj)  # only with log files or log_config (docs/logging.rst)
    owned = True
    socks: List[socket.socket] = []
    plain: List[bool] = []
    try:
        if adj.sockets:
            owned = False  # the caller's (socket activation): not closed
            socks = list(adj.sockets)
            for s in socks:
                if s.family != socket.AF_UNIX:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.listen(adj.backlog)
        elif adj.unix_socket and hasattr(socket, "AF_UNIX"):
            socks = [_make_unix_socket(adj)]
        else:
            for family, socktype, proto, _, sockaddr in _entries(adj.listen):
                socks.append(
                    _make_tcp_socket(adj, family, socktype, proto, sockaddr)
                )
        # Plain HTTP beside TLS (Adjustments refuses it with sockets=).
        if adj.insecure_listen:
            plain = [False] * len(socks)
            for family, socktype, proto, _, sockaddr in _entries(
                adj.insecure_listen
            ):
                socks.append(
                    _make_tcp_socket(adj, family, socktype, proto, sockaddr)
                )
                plain.append(True)
        from waitress_c.supervisor import Supervisor, wants_supervisor

        if wants_supervisor(adj):  # workers > 1 or max_requests
            return Supervisor(application, adj, socks, owned, plain)
        if len(socks) == 1:
            cls = UnixWSGIServer if socks[0].family == socket.AF_UNIX else TcpWSGIServer
        else:
            cls = MultiSocketServer
        return cls(application, adj, socks, owned, plain=plain)
    except BaseException:
        if owned:
            for s in socks:
                s.close()
        raise


def _entries(listen: Iterable[Sequence]):
    for entry in listen:
        if len(entry) == 4:
            family, socktype, proto, sockaddr = entry
            yield family, socktype, proto, "", sockaddr
        else:
            yield tuple(entry)
