"""The clients of ``slowread1k``: many connections that each ask for a large
response and read none of it, and the count of where its bytes wait.

A response the client has not read yet is in the client socket's receive
queue, in the server socket's send queue (both in the kernel, both read
from /proc/net/tcp), or in the server's own memory: so what the server
holds is what it was asked for minus what the kernel holds.

On loopback, 64 KiB segments let the kernel grow a socket's send buffer to
4 MiB, so it would take every 1 MiB response whole and leave the server
nothing to hold.  Each reader therefore advertises an Ethernet MSS and a
small receive buffer, as a reader across a real network does, and the
kernel keeps only a few hundred KiB of each response.  Loopback only; every
call is bounded by a deadline.
"""

import selectors
import socket
import statistics
import time

import client

HOST = "127.0.0.1"
READER_MSS = 1460
READER_RCVBUF = 16 * 1024
ESTABLISHED = "01"  # the st column of /proc/net/tcp


def reader_socket():
    s = socket.socket()
    # Both must be set before connect: they go into the SYN.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, READER_MSS)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READER_RCVBUF)
    s.setblocking(False)
    return s


def open_readers(port, count, request, deadline, batch=100):
    """Open ``count`` connections and send ``request`` on each, reading
    nothing.  Returns (sockets, failures)."""
    sel = selectors.DefaultSelector()
    done, failures = [], 0
    try:
        for first in range(0, count, batch):
            if time.monotonic() >= deadline:
                failures += count - first
                break
            pending = set()
            for _ in range(min(batch, count - first)):
                s = reader_socket()
                s.connect_ex((HOST, port))
                sel.register(s, selectors.EVENT_WRITE)
                pending.add(s)
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.5):
                    s = key.fileobj
                    sel.unregister(s)
                    pending.discard(s)
                    try:
                        # A new connection's send buffer takes a request whole.
                        if s.send(request) == len(request):
                            done.append(s)
                            continue
                    except OSError:
                        pass
                    s.close()
                    failures += 1
            for s in pending:
                sel.unregister(s)
                s.close()
                failures += 1
    finally:
        sel.close()
    return done, failures


def parse_queues(text, port):
    """From the text of /proc/net/tcp: the bytes of the established
    connections to ``port`` held by the kernel, as (unacknowledged in the
    server's send queues, unread in the clients' receive queues)."""
    send = recv = 0
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 5 or f[3] != ESTABLISHED:
            continue
        local = int(f[1].rsplit(":", 1)[1], 16)
        remote = int(f[2].rsplit(":", 1)[1], 16)
        tx, rx = (int(x, 16) for x in f[4].split(":"))
        if local == port:
            send += tx
        elif remote == port:
            recv += rx
    return send, recv


def kernel_queues(port):
    with open("/proc/net/tcp") as f:
        return parse_queues(f.read(), port)


def wait_quiet(sample, slack, quiet_for=2.0, timeout=30.0, interval=0.25,
               clock=time.monotonic, sleep=time.sleep):
    """Call ``sample()`` (a tuple of figures) until each figure has stayed
    within its ``slack`` of where it was for ``quiet_for`` seconds, or until
    ``timeout``.  Returns (last sample, seconds waited, quiet or not)."""
    start = clock()
    since, ref = start, sample()
    while True:
        now = clock()
        value = sample()
        if any(abs(v - r) > s for v, r, s in zip(value, ref, slack)):
            since, ref = now, value
        if now - since >= quiet_for:
            return value, now - start, True
        if now - start >= timeout:
            return value, now - start, False
        sleep(interval)


class Reading:
    """One connection's response as it is read back: ``head`` (its
    length) and ``length`` (its Content-Length) once the head is in."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.head = None
        self.status = None
        self.length = None
        self.body = 0
        self.problem = None

    @property
    def whole(self):
        return self.length is not None and self.body >= self.length

    def feed(self, data):
        if self.head is None:
            self.buf += data
            try:
                _, self.status, headers, self.head = client.parse_head(
                    self.buf)
            except client.Incomplete:
                return
            if "content-length" not in headers:
                raise ValueError("no Content-Length")
            self.length = int(headers["content-length"])
            data, self.buf = self.buf[self.head:], b""
        self.body += len(data)
        if self.body > self.length:
            raise ValueError("%d bytes past the body" % (
                self.body - self.length))


def read_back(socks, deadline):
    """Read every connection's response to its end, then close it.
    Returns one Reading per socket."""
    readings = [Reading(s) for s in socks]
    sel = selectors.DefaultSelector()
    for r in readings:
        sel.register(r.sock, selectors.EVENT_READ, r)
    scratch = bytearray(256 * 1024)
    view = memoryview(scratch)
    try:
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                r = key.data
                try:
                    n = r.sock.recv_into(scratch)
                    if n == 0:
                        raise ValueError("closed after %d of %s body bytes"
                                         % (r.body, r.length))
                    r.feed(bytes(view[:n]) if r.head is None else view[:n])
                except BlockingIOError:
                    continue
                except (OSError, ValueError) as exc:
                    r.problem = str(exc)
                if r.problem is not None or r.whole:
                    sel.unregister(r.sock)
        for key in list(sel.get_map().values()):
            key.data.problem = "not read whole in time (%d of %s bytes)" % (
                key.data.body, key.data.length)
    finally:
        sel.close()
        for r in readings:
            r.sock.close()
    return readings


def account(readings, size):
    """(whole, asked, problems): how many responses came whole with status
    200 and a ``size``-byte body; the bytes the server was asked for (each
    response's head and body; one whose head never came counts as a
    typical one); and the distinct problems seen."""
    whole = sum(1 for r in readings if r.problem is None and r.whole
                and r.status == 200 and r.length == size)
    sizes = [r.head + r.length for r in readings if r.head is not None]
    typical = int(statistics.median(sizes)) if sizes else size
    asked = sum(sizes) + typical * (len(readings) - len(sizes))
    problems = sorted({r.problem for r in readings if r.problem}
                      | {"status %s" % r.status for r in readings
                         if r.status not in (None, 200)}
                      | {"a %d-byte body" % r.length for r in readings
                         if r.length not in (None, size)})
    return whole, asked, problems
