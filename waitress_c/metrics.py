"""Prometheus metrics: the counters' memory, the exposition, its listener.

The C core counts into a *slot* of a metrics buffer (csrc/metrics.c): an
anonymous shared mmap made here, before any worker process is forked, so
that every process writes its own slot of the same memory and one scrape
sums them all.  The exposition (Prometheus text format 0.0.4) is served on
a listener of its own (``metrics=HOST:PORT``), never by a worker thread of
the application:

* one process: by a thread of its own (``waitress_c-metrics``), which takes
  the GIL only to format a scrape;
* with worker processes: by the supervisor's own loop, which already polls
  for its workers and so needs no thread (and forks none with a thread
  running).

Slot 0 is the *retired* slot: when a worker process is gone, the
supervisor adds its counters there (``_core.metrics_fold``) and gives its
slot to the next worker, so totals never go backwards.  docs/metrics.rst
has the series and the reasons.
"""

from __future__ import annotations

import errno
import logging
import mmap
import select
import socket
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from waitress_c.adjustments import split_listen_entry

__all__ = ["MetricsBuffer", "MetricsEndpoint", "render"]

logger = logging.getLogger("waitress_c")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"
# A scrape's request head must come within this many seconds, and be at
# most REQUEST_MAX bytes.
REQUEST_TIMEOUT = 10.0
REQUEST_MAX = 8192
# Scrape connections open at once.  Beyond that the listener is not polled
# (the next connections wait in its queue): connections that never send a
# request cannot take every file descriptor of the process, whose
# supervisor needs them for its workers' pipes.
SCRAPES_MAX = 32
# Seconds the listener is not polled after accept() failed for want of a
# file descriptor (the connection stays queued, the listener readable).
ACCEPT_PAUSE = 1.0
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _layout() -> dict:
    from waitress_c import _core

    return _core.METRICS_LAYOUT


class MetricsBuffer:
    """``nslots`` slots of counters in one anonymous shared mapping (shared
    with the processes forked after it is made).  Slot 0 holds what retired
    workers counted; a single server writes slot 0 itself."""

    def __init__(self, nslots: int) -> None:
        self.layout = _layout()
        self.nslots = nslots
        self.map = mmap.mmap(-1, nslots * self.layout["slot_bytes"])
        self._free = list(range(nslots - 1, 0, -1))

    def read(self, slot: int) -> Tuple[int, ...]:
        from waitress_c import _core

        return _core.metrics_read(self.map, slot)

    def take(self) -> Optional[int]:
        """A free slot for a new worker process (None: all are taken; that
        worker's counts are then not kept)."""
        return self._free.pop() if self._free else None

    def retire(self, slot: int) -> None:
        """The process that wrote ``slot`` is gone: add its counters to the
        retired slot and free it."""
        from waitress_c import _core

        _core.metrics_fold(self.map, slot, 0)
        self._free.append(slot)


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def render(
    buf: MetricsBuffer,
    slots: Iterable[int],
    extra: Optional[List[str]] = None,
) -> str:
    """The exposition of ``slots`` of ``buf`` summed (counters added,
    gauges added, the queue's high-water mark as the maximum), followed by
    the ``extra`` lines (the supervisor's own series)."""
    lay = buf.layout
    n = lay["nfields"]
    total = [0] * n
    for slot in slots:
        cells = buf.read(slot)
        for i in range(n):
            if i == lay["queue_max"]:
                total[i] = max(total[i], cells[i])
            else:
                total[i] += cells[i]
    out: List[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append("# HELP %s %s" % (name, text))
        out.append("# TYPE %s %s" % (name, kind))

    def one(name: str, kind: str, text: str, value: float) -> None:
        family(name, kind, text)
        out.append("%s %s" % (name, _fmt(value)))

    family(
        "waitress_c_requests_total", "counter",
        "Requests answered, by status class and method.",
    )
    methods = lay["methods"]
    base = lay["requests"]
    for c, cls in enumerate(CLASSES):
        for m, method in enumerate(methods):
            v = total[base + c * len(methods) + m]
            if v:
                out.append(
                    'waitress_c_requests_total{code="%s",method="%s"} %d'
                    % (cls, method, v)
                )
    family(
        "waitress_c_request_duration_seconds", "histogram",
        "From the request received whole to its response handed to the "
        "connection.",
    )
    count = 0
    for i, le in enumerate(list(lay["buckets"]) + ["+Inf"]):
        count += total[lay["duration"] + i]
        out.append(
            'waitress_c_request_duration_seconds_bucket{le="%s"} %d'
            % (le if isinstance(le, str) else repr(le), count)
        )
    out.append(
        "waitress_c_request_duration_seconds_sum %s"
        % repr(total[lay["duration_ns"]] / 1e9)
    )
    out.append("waitress_c_request_duration_seconds_count %d" % count)
    one("waitress_c_received_bytes_total", "counter",
        "Bytes read from clients.", total[lay["bytes_in"]])
    one("waitress_c_sent_bytes_total", "counter",
        "Bytes written to clients.",
        total[lay["bytes_out"]] + total[lay["bytes_out_loop"]])
    one("waitress_c_connections", "gauge",
        "Client connections open.", total[lay["connections"]])
    one("waitress_c_connections_accepted_total", "counter",
        "Client connections accepted.", total[lay["accepted"]])
    one("waitress_c_connection_limit_reached_total", "counter",
        "Times accepting stopped at connection_limit (connections then "
        "wait in the listen queue).", total[lay["limited"]])
    one("waitress_c_task_queue_depth", "gauge",
        "Requests waiting for a worker thread.", total[lay["queue"]])
    one("waitress_c_task_queue_depth_max", "gauge",
        "The deepest the task queue has been while every thread was busy "
        "(the largest of any process).", total[lay["queue_max"]])
    one("waitress_c_threads", "gauge",
        "Worker threads.", total[lay["threads"]])
    one("waitress_c_busy_threads", "gauge",
        "Worker threads serving a request.", total[lay["busy"]])
    one("waitress_c_parked_writers", "gauge",
        "Threads waiting for a client to read (output over "
        "outbuf_high_watermark).", total[lay["parked"]])
    one("waitress_c_spooled_request_bodies_total", "counter",
        "Request bodies spooled to a temporary file (over inbuf_overflow).",
        total[lay["spooled"]])
    out.extend(extra or ())
    return "\n".join(out) + "\n"


def parse_address(value: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) as (host, port)."""
    host, port = split_listen_entry(value, -1)
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 <= number <= 65535:
        raise ValueError("metrics must be HOST:PORT, not %r" % value)
    return host, number


class _Conn:
    __slots__ = ("sock", "data", "out", "deadline")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.out = b""
        self.deadline = time.monotonic() + REQUEST_TIMEOUT


class MetricsEndpoint:
    """The exposition's own listener, bound at creation.  Non-blocking, for
    a poll loop: ``fds()`` to poll and ``handle(fd)`` when one is ready; or
    ``start()`` a thread that runs such a loop until ``close()``.
    ``render`` makes the body of a scrape."""

    def __init__(self, address: str, render: Callable[[], str]) -> None:
        host, port = parse_address(address)
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
            socket.AI_PASSIVE,
        )
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(16)
            sock.setblocking(False)
        except OSError as exc:
            from waitress_c.server import ListenError

            sock.close()
            # A ListenError, as for the application's addresses: the
            # command line reports it in one line.
            raise ListenError(
                exc.errno, "cannot listen for metrics on %s: %s"
                % (address, exc.strerror or exc),
            ) from exc
        self.sock = sock
        self.render = render
        self.conns: Dict[int, _Conn] = {}
        name = sock.getsockname()
        self.host, self.port = name[0], name[1]
        self._thread: Optional[threading.Thread] = None
        self._accept_at = 0.0  # no accept() before (see ACCEPT_PAUSE)
        self._wake_r, self._wake_w = socket.socketpair()

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d%s" % (host, self.port, PATH)

    def fds(self) -> List[Tuple[int, int]]:
        """(fd, poll events) to watch: the listener only while there is
        room for another scrape (SCRAPES_MAX)."""
        out = []
        if len(self.conns) < SCRAPES_MAX and not self.paused():
            out.append((self.sock.fileno(), select.POLLIN))
        for fd, c in self.conns.items():
            out.append((fd, select.POLLOUT if c.out else select.POLLIN))
        return out

    def paused(self) -> bool:
        """Whether accepting waits (ACCEPT_PAUSE after running out of
        file descriptors)."""
        return time.monotonic() < self._accept_at

    def owns(self, fd: int) -> bool:
        return fd == self.sock.fileno() or fd in self.conns

    def handle(self, fd: int) -> None:
        if fd == self.sock.fileno():
            self._accept()
            return
        c = self.conns.get(fd)
        if c is None:
            return
        try:
            if c.out:
                self._send(c)
            else:
                self._read(c)
        except OSError:
            self._drop(c)

    def expire(self) -> None:
        """Drop scrapes that took too long."""
        now = time.monotonic()
        for c in [c for c in self.conns.values() if c.deadline < now]:
            self._drop(c)

    def _accept(self) -> None:
        for _ in range(min(16, SCRAPES_MAX - len(self.conns))):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                 errno.ENOMEM):
                    # Still queued: polled again it would wake the loop
                    # at once, over and over.
                    self._accept_at = time.monotonic() + ACCEPT_PAUSE
                    return
                raise
            sock.setblocking(False)
            self.conns[sock.fileno()] = _Conn(sock)

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(REQUEST_MAX)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._drop(c)
            return
        c.data += data
        if b"\r\n\r\n" not in c.data and b"\n\n" not in c.data:
            if len(c.data) > REQUEST_MAX:
                c.out = self._response(431, "Request Header Fields Too Large")
                self._send(c)
            return
        c.out = self._answer(c.data)
        self._send(c)

    def _answer(self, head: bytes) -> bytes:
        line = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(line) != 3:
            return self._response(400, "Bad Request")
        method, target = line[0], line[1]
        if method not in ("GET", "HEAD"):
            return self._response(405, "Method Not Allowed",
                                  "Allow: GET, HEAD\r\n")
        if target.split("?", 1)[0] != PATH:
            return self._response(404, "Not Found")
        body = self.render().encode("utf-8")
        return (
            "HTTP/1.0 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (CONTENT_TYPE, len(body))
        ).encode("latin-1") + (b"" if method == "HEAD" else body)

    @staticmethod
    def _response(code: int, reason: str, extra: str = "") -> bytes:
        body = "%d %s\n" % (code, reason)
        return (
            "HTTP/1.0 %d %s\r\nContent-Type: text/plain\r\n"
            "Content-Length: %d\r\n%sConnection: close\r\n\r\n%s"
            % (code, reason, len(body), extra, body)
        ).encode("latin-1")

    def _send(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        c.out = c.out[n:]
        if not c.out:
            self._drop(c)

    def _drop(self, c: _Conn) -> None:
        self.conns.pop(c.sock.fileno(), None)
        c.sock.close()

    # -- a thread of its own (one server process) --------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._serve, name="waitress_c-metrics", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        wake = self._wake_r.fileno()
        while True:
            poller = select.poll()
            poller.register(wake, select.POLLIN)
            for fd, events in self.fds():
                poller.register(fd, events)
            # No timer while no scrape is open: an idle endpoint costs
            # no wake-up at all.
            timeout = 1000 if self.conns or self.paused() else None
            for fd, _ in poller.poll(timeout):
                if fd == wake:
                    return
                try:
                    self.handle(fd)
                except Exception:  # pragma: no cover - keep serving
                    logger.exception("metrics: scrape failed")
            self.expire()

    def close(self) -> None:
        """Stop the thread (if started) and close every socket."""
        if self._thread is not None:
            self._wake_w.send(b"\0")
            self._thread.join(timeout=5)
            self._thread = None
        for c in list(self.conns.values()):
            self._drop(c)
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()
