"""Soak: many requests of mixed kinds through ONE waitress_c server.

    .venv/bin/python tests/soak.py --requests 1000000 --clients 4 --seconds 1200

Starts one server (tests/serve.py apps_soak:app) and K client processes on
127.0.0.1.  Each client keeps a keep-alive connection (reconnecting now and
then) and runs a random mix of:

  get        one keep-alive GET
  pipelined  2..16 GETs written in one send, answers read in order
  post       a POST body of 1 B .. 1 MiB (log-uniform) echoed back, checked
             byte for byte and by its SHA-256
  chunked    the same, uploaded with Transfer-Encoding: chunked in chunks of
             random sizes
  gen        a response streamed by a generator (chunked), checked against
             what the token says it must be
  vanish     a client that reads part of an 8 MiB response, then closes
             (half the time with a reset)
  slow       a 256 KiB .. 1 MiB response read in pieces of at most 1/64 of
             it (16 KiB at least), each after a 2 ms sleep
  h2         HTTP/2 (h2c with prior knowledge, the `h2` library; h2 by
             ALPN for the TLS clients) on a connection kept for a while:
             2..8 streams in flight at once, GETs and POSTs of
             1 B .. 64 KiB echoed back

TLS share: --tls-clients of the K clients (1 by default) make the same mix
over TLS to a second server, the same application with certfile and
keyfile (certificates made by tests/tls_pki.py in a temporary directory):
one operation in ten on a new connection (a full handshake each), the
others on keep-alive connections as above.  Both servers
are checked in the same way.

Every request carries its own token (X-Token); every answer is checked for
its status (200), its token (nothing crossed between requests or
connections) and its body.  The server's RSS (/proc/PID/status VmRSS) and
open fds (/proc/PID/fd) are sampled after a warm-up and at the end.

Passes when: all requests were made within --seconds; 0 lost, 0 crossed,
0 unexpected statuses, 0 bad bodies; no traceback in either server's log;
each server's RSS grew by less than --rss-growth-mib (64 MiB) from the
post-warm-up baseline; and each one's open fds are back to the baseline
within 10 s of the clients stopping.  Prints one summary line (starting "soak:") and exits 0, or 1.
"""

import argparse
import hashlib
import math
import multiprocessing
import os
import random
import signal
import socket
import ssl
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from apps_soak import big_body, gen_body  # noqa: E402
from http_reader import Malformed, Reader, framing  # noqa: E402
from servers import ServerProcess  # noqa: E402
from tls_pki import make_pki  # noqa: E402

KINDS = ("get", "pipelined", "post", "chunked", "gen", "vanish", "slow")
# Operation weights (a pipelined operation is 2..16 requests).
WEIGHTS = (50, 8, 10, 6, 6, 1, 1)
# The HTTP/2 share (an operation is 2..8 streams).
KINDS += ("h2",)
WEIGHTS += (6,)
ERRORS = ("lost", "crossed", "status", "body")
MAX_BODY = 1 << 20
BIG = 8 << 20


class Lost(Exception):
    """The connection failed under a request (closed, reset, timed out)."""


class Bad(Exception):
    def __init__(self, kind, msg):
        super().__init__(msg)
        self.kind = kind


class Conn(Reader):
    """A raw HTTP/1.1 client connection, read by http_reader.Reader: a
    failed connection raises Lost, a malformed response Bad."""

    def __init__(self, addr, timeout, tls=None):
        sock = socket.create_connection(addr, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname="localhost")
            except BaseException:
                sock.close()
                raise
        super().__init__(sock)
        self.closed = False

    def close(self, reset=False):
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Lost("send: %r" % e)

    def fill(self, n=None, timeout=None):
        try:
            return super().fill(n, timeout)
        except EOFError:
            raise Lost("closed by the server")
        except OSError as e:
            raise Lost("recv: %r" % e)

    def _head(self):
        try:
            return self.read_head()
        except Malformed as e:
            raise Bad("status" if e.where == "status" else "body", str(e))

    def head(self):
        """(status, {lowercased name: value}, as bytes)."""
        r = self._head()
        return r.status, headers_of(r)

    def answer(self):
        """(status, headers as head() gives them, body) of a framed
        response."""
        r = self._head()
        try:
            if framing(r) == "close":
                raise Bad("body", "no framing: %r" % r.headers)
            self.read_body(r)
        except Malformed as e:
            raise Bad("body", str(e))
        return r.status, headers_of(r), r.body


def headers_of(r):
    return {k.lower().encode("latin-1"): v.encode("latin-1") for k, v in r.headers}


def check(token, status, headers, expect_status=200):
    if status != expect_status:
        raise Bad("status", "%s: status %d" % (token.decode(), status))
    got = headers.get(b"x-token")
    if got != token:
        raise Bad("crossed", "sent token %r, answer has %r" % (token, got))


def log_uniform(rnd, lo, hi):
    return int(math.exp(rnd.uniform(math.log(lo), math.log(hi + 1)))) if hi > lo else lo


class Client:
    def __init__(self, index, addr, seed, timeout, cafile=None):
        self.index = index
        self.addr = addr
        self.rnd = random.Random(seed)
        self.timeout = timeout
        self.seq = 0
        self.conn = None
        self.ops_left = 0
        self.connections = 0
        # Over TLS (to the second server) when given the CA to verify it by.
        self.tls = ssl.create_default_context(cafile=cafile) if cafile else None
        # The h2 kind over TLS: its own context, which offers only h2.
        self.h2tls = None
        if cafile:
            self.h2tls = ssl.create_default_context(cafile=cafile)
            self.h2tls.set_alpn_protocols(["h2"])
        self.pool = self.rnd.randbytes(2 * MAX_BODY)

    def token(self):
        self.seq += 1
        return b"c%d-%d" % (self.index, self.seq)

    def connection(self):
        # Over TLS, one operation in ten on a new connection of its own:
        # a full handshake each.
        fresh = self.tls is not None and self.rnd.random() < 0.1
        if fresh or self.conn is None or self.conn.closed or self.ops_left <= 0:
            if self.conn is not None and not self.conn.closed:
                self.conn.close()
            try:
                self.conn = Conn(self.addr, self.timeout, self.tls)
            except OSError as e:  # ssl.SSLError too: a failed handshake
                self.conn = None
                raise Lost("connect: %r" % e)
            self.connections += 1
            self.ops_left = 1 if fresh else self.rnd.randint(1, 200)
        self.ops_left -= 1
        return self.conn

    def drop(self):
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None

    def body(self, token, size):
        off = self.rnd.randrange(0, len(self.pool) - size + 1)
        data = self.pool[off : off + size]
        if size > len(token):
            data = token + data[len(token) :]
        return data

    # -- the kinds: each returns the number of requests it made ---------------
    def do_get(self):
        c = self.connection()
        t = self.token()
        close = self.rnd.random() < 0.01
        c.send(
            b"GET /tok HTTP/1.1\r\nHost: soak\r\nX-Token: %s\r\n%s\r\n"
            % (t, b"Connection: close\r\n" if close else b"")
        )
        status, headers, body = c.answer()
        check(t, status, headers)
        if body != t:
            raise Bad("crossed", "sent token %r, body %r" % (t, body[:40]))
        if close:
            try:
                c.fill()
            except Lost:
                pass  # closed, as asked
            else:
                raise Bad("body", "data after a Connection: close answer")
            self.drop()
        return 1

    def do_pipelined(self):
        c = self.connection()
        tokens = [self.token() for _ in range(self.rnd.randint(2, 16))]
        c.send(
            b"".join(b"GET /tok HTTP/1.1\r\nHost: soak\r\nX-Token: %s\r\n\r\n" % t for t in tokens)
        )
        for t in tokens:
            status, headers, body = c.answer()
            check(t, status, headers)
            if body != t:
                raise Bad("crossed", "pipelined: sent %r, body %r" % (t, body[:40]))
        return len(tokens)

    def _check_echo(self, t, data, status, headers, body):
        check(t, status, headers)
        if body != data:
            raise Bad("body", "echo of %d bytes came back as %d bytes" % (len(data), len(body)))
        if headers.get(b"x-sha256") != hashlib.sha256(data).hexdigest().encode():
            raise Bad("body", "echo: SHA-256 differs")

    def do_post(self):
        c = self.connection()
        t = self.token()
        data = self.body(t, log_uniform(self.rnd, 1, MAX_BODY))
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: soak\r\nX-Token: %s\r\nContent-Length: %d\r\n\r\n"
            % (t, len(data))
            + data
        )
        self._check_echo(t, data, *c.answer())
        return 1

    def do_chunked(self):
        c = self.connection()
        t = self.token()
        data = self.body(t, log_uniform(self.rnd, 1, MAX_BODY))
        parts = [b"POST /echo HTTP/1.1\r\nHost: soak\r\nX-Token: %s\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" % t]
        pos = 0
        while pos < len(data):
            k = min(len(data) - pos, log_uniform(self.rnd, 1, 65536))
            ext = b";x=1" if self.rnd.random() < 0.1 else b""
            parts.append(b"%x%s\r\n" % (k, ext) + data[pos : pos + k] + b"\r\n")
            pos += k
        parts.append(b"0\r\n\r\n")
        c.send(b"".join(parts))
        self._check_echo(t, data, *c.answer())
        return 1

    def do_gen(self):
        c = self.connection()
        t = self.token()
        n = log_uniform(self.rnd, 1, 256 * 1024)
        c.send(b"GET /gen?n=%d HTTP/1.1\r\nHost: soak\r\nX-Token: %s\r\n\r\n" % (n, t))
        status, headers, body = c.answer()
        check(t, status, headers)
        if headers.get(b"transfer-encoding") != b"chunked":
            raise Bad("body", "gen: not chunked: %r" % headers)
        if body != gen_body(t, n):
            raise Bad("body", "gen: body differs (%d bytes, %d expected)" % (len(body), n))
        return 1

    def do_vanish(self):
        c = self.connection()
        t = self.token()
        c.send(b"GET /big?n=%d HTTP/1.1\r\nHost: soak\r\nX-Token: %s\r\n\r\n" % (BIG, t))
        status, headers = c.head()
        check(t, status, headers)
        want = self.rnd.randint(1, 1 << 20)
        got = c.exact(want)
        if got != big_body(want)[: len(got)]:
            raise Bad("body", "vanish: prefix differs")
        c.close(reset=self.rnd.random() < 0.5)
        self.conn = None
        return 1

    def do_slow(self):
        c = self.connection()
        t = self.token()
        n = self.rnd.randint(256 * 1024, MAX_BODY)
        c.send(b"GET /big?n=%d HTTP/1.1\r\nHost: soak\r\nX-Token: %s\r\n\r\n" % (n, t))
        status, headers = c.head()
        check(t, status, headers)
        if headers.get(b"content-length") != b"%d" % n:
            raise Bad("body", "slow: content-length %r" % headers.get(b"content-length"))
        piece = max(16384, n // 64)
        while len(c.buf) < n:
            time.sleep(0.002)
            c.fill(piece)
        body = c.exact(n)
        if body != big_body(n):
            raise Bad("body", "slow: body differs")
        return 1


H2_MAX_BODY = 64 * 1024


class H2Conn:
    """An HTTP/2 connection of the `h2` library: h2c (prior knowledge), or
    h2 over TLS (ALPN) when given a context; a failed connection raises
    Lost, a protocol error Bad."""

    def __init__(self, addr, timeout, tls=None):
        import h2.config
        import h2.connection

        try:
            self.sock = socket.create_connection(addr, timeout=timeout)
            if tls is not None:
                self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
                if self.sock.selected_alpn_protocol() != "h2":
                    raise Bad("status", "h2: ALPN chose %r" % self.sock.selected_alpn_protocol())
        except OSError as e:
            raise Lost("connect: %r" % e)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.streams = {}
        self.flush()

    def close(self):
        self.sock.close()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError as e:
                raise Lost("send: %r" % e)

    def open(self, sid):
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False}

    def read_some(self):
        import h2.events
        import h2.exceptions

        try:
            data = self.sock.recv(65536)
        except OSError as e:
            raise Lost("recv: %r" % e)
        if not data:
            raise Lost("closed by the server")
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise Bad("body", "h2: %r" % e)
        for ev in events:
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived) and st is not None:
                st["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived) and st is not None:
                st["data"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and st is not None:
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                raise Lost("stream %d reset (%s)" % (ev.stream_id, ev.error_code))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                raise Lost("GOAWAY (%s)" % ev.error_code)
        self.flush()

    def send_body(self, sid, data):
        """DATA frames as the windows and the frame size allow, then the
        end of the stream."""
        off = 0
        while off < len(data):
            n = min(len(data) - off, self.conn.local_flow_control_window(sid),
                    self.conn.max_outbound_frame_size)
            if n <= 0:
                self.read_some()
                continue
            self.conn.send_data(sid, data[off : off + n])
            off += n
            self.flush()
        self.conn.end_stream(sid)
        self.flush()


def do_h2(cl):
    """The h2 kind for Client `cl`: 2..8 streams in flight on its h2c
    connection (a new one every 1..50 operations), each a GET /tok or a
    POST /echo with its own token; every answer checked.  Returns the
    number of requests."""
    c = getattr(cl, "h2conn", None)
    if c is None or cl.h2_left <= 0:
        if c is not None:
            c.close()
        c = cl.h2conn = H2Conn(cl.addr, cl.timeout, cl.h2tls)
        cl.h2_left = cl.rnd.randint(1, 50)
    cl.h2_left -= 1
    want = {}
    try:
        for _ in range(cl.rnd.randint(2, 8)):
            t = cl.token()
            sid = c.conn.get_next_available_stream_id()
            c.open(sid)
            scheme = b"https" if cl.h2tls is not None else b"http"
            base = [(b":scheme", scheme), (b":authority", b"soak"), (b"x-token", t)]
            if cl.rnd.random() < 0.5:
                c.conn.send_headers(sid, [(b":method", b"GET"), (b":path", b"/tok")] + base,
                                    end_stream=True)
                want[sid] = (t, t)
                c.flush()
            else:
                data = cl.body(t, log_uniform(cl.rnd, 1, H2_MAX_BODY))
                c.conn.send_headers(sid, [(b":method", b"POST"), (b":path", b"/echo")] + base
                                    + [(b"content-length", b"%d" % len(data))])
                c.send_body(sid, data)
                want[sid] = (t, data)
        deadline = time.monotonic() + cl.timeout
        while not all(c.streams[s]["ended"] for s in want):
            if time.monotonic() > deadline:
                raise Lost("h2: no whole answer in %.0f s" % cl.timeout)
            c.read_some()
        for sid, (t, expect) in want.items():
            st = c.streams.pop(sid)
            check(t, int(st["headers"][b":status"]), st["headers"])
            if bytes(st["data"]) != expect:
                raise Bad("body", "h2: %s: body differs (%d bytes for %d)"
                          % (t.decode(), len(st["data"]), len(expect)))
    except (Lost, Bad):
        c.close()
        cl.h2conn = None
        raise
    return len(want)


Client.do_h2 = do_h2


def client_main(index, addr, quota, deadline, seed, timeout, progress, results, cafile):
    """One client process: run operations until `quota` requests are made
    or the deadline passes (over TLS when `cafile` is given); put a result
    dict on `results`."""
    cl = Client(index, addr, seed, timeout, cafile)
    counts = dict.fromkeys(KINDS, 0)
    errors = dict.fromkeys(ERRORS, 0)
    samples = []
    done = 0
    ops = [getattr(cl, "do_" + k) for k in KINDS]
    lost_in_a_row = 0
    while done < quota and time.monotonic() < deadline:
        i = cl.rnd.choices(range(len(KINDS)), WEIGHTS)[0]
        try:
            n = ops[i]()
            counts[KINDS[i]] += n
            done += n
            lost_in_a_row = 0
        except Lost as e:
            errors["lost"] += 1
            done += 1
            if len(samples) < 5:
                samples.append("lost (%s): %s" % (KINDS[i], e))
            cl.drop()
            lost_in_a_row += 1
            if lost_in_a_row >= 20:
                samples.append("gave up after 20 lost requests in a row")
                break
        except Bad as e:
            errors[e.kind] += 1
            done += 1
            if len(samples) < 5:
                samples.append("%s (%s): %s" % (e.kind, KINDS[i], e))
            cl.drop()
        if done & 63 == 0 or done >= quota:
            progress[index] = done
    progress[index] = done
    cl.drop()
    results.put({"index": index, "done": done, "counts": counts, "errors": errors,
                 "samples": samples, "tls": cafile is not None,
                 "connections": cl.connections})


# -- the server -----------------------------------------------------------------


def start_server(threads, timeout=60.0, **tls):
    try:
        server = ServerProcess("apps_soak:app", timeout=timeout, threads=threads, **tls)
    except AssertionError as e:
        sys.exit("soak: the server did not start:\n%s" % e)
    return server, (server.host, server.port), server.pid


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settle_fds(pid, limit, seconds):
    """Poll the fd count until it is <= limit (or stops changing when limit
    is None) for up to `seconds`; returns the last count."""
    end = time.monotonic() + seconds
    last, stable_since = nfds(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.2)
        n = nfds(pid)
        if limit is not None and n <= limit:
            return n
        if n != last:
            last, stable_since = n, time.monotonic()
        elif limit is None and time.monotonic() - stable_since >= 1.0:
            return n
    return nfds(pid)


def run_phase(targets, requests, seconds, seed, timeout, servers, label, verbose):
    """One client process per target ((address, CA file or None)) share
    `requests`; returns (merged results, duration, peak RSS KiB of each
    server)."""
    clients = len(targets)
    ctx = multiprocessing.get_context("fork")
    progress = ctx.RawArray("q", clients)
    results = ctx.Queue()
    deadline = time.monotonic() + seconds
    per = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    procs = [
        ctx.Process(target=client_main,
                    args=(i, targets[i][0], per[i], deadline, seed * 1000 + i, timeout, progress,
                          results, targets[i][1]),
                    daemon=True)
        for i in range(clients)
    ]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    got = []
    peak = [rss_kib(s.pid) for s in servers]
    last_print = t0
    hard = deadline + timeout + 30
    while len(got) < clients and time.monotonic() < hard:
        try:
            got.append(results.get(timeout=1.0))
        except Exception:
            pass
        if any(s.poll() is not None for s in servers):
            # The clients find out through their sockets: let them report.
            hard = min(hard, time.monotonic() + timeout + 10)
            continue
        peak = [max(p, rss_kib(s.pid)) for p, s in zip(peak, servers)]
        if verbose and time.monotonic() - last_print >= 30:
            last_print = time.monotonic()
            print("soak: %s %d/%d requests, %.0f s, RSS %s MiB"
                  % (label, sum(progress), requests, last_print - t0,
                     " + ".join("%.1f" % (rss_kib(s.pid) / 1024) for s in servers)),
                  flush=True)
    duration = time.monotonic() - t0
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
    merged = {"done": 0, "counts": dict.fromkeys(KINDS, 0), "errors": dict.fromkeys(ERRORS, 0),
              "samples": [], "missing": clients - len(got), "tls_done": 0, "tls_connections": 0}
    for r in got:
        merged["done"] += r["done"]
        if r["tls"]:
            merged["tls_done"] += r["done"]
            merged["tls_connections"] += r["connections"]
        for k in KINDS:
            merged["counts"][k] += r["counts"][k]
        for k in ERRORS:
            merged["errors"][k] += r["errors"][k]
        merged["samples"] += r["samples"]
    return merged, duration, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--tls-clients", type=int, default=1,
                    help="how many of the client processes speak TLS to the second server "
                         "(0: no TLS server)")
    ap.add_argument("--seconds", type=float, default=600,
                    help="time cap for the requests (warm-up included)")
    ap.add_argument("--threads", type=int, default=4, help="server worker threads")
    ap.add_argument("--warmup", type=int, default=None,
                    help="requests before the baseline sample (default: 5%%, at most 20000)")
    ap.add_argument("--rss-growth-mib", type=float, default=64.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=30.0, help="client socket timeout")
    ap.add_argument("--log", help="write the servers' logs (stderr) to this file")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if not 0 <= args.tls_clients < args.clients:
        ap.error("--tls-clients must be at least 0 and less than --clients")
    from waitress_c import _core

    if args.tls_clients and not _core.HAVE_TLS:
        print("soak: this build has no TLS (WC_NO_TLS=1): no TLS share", flush=True)
        args.tls_clients = 0
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    warmup = args.warmup if args.warmup is not None else min(20000, max(1000, args.requests // 20))

    with tempfile.TemporaryDirectory(prefix="soak-pki-") as pki:
        return soak(args, seed, warmup, Path(pki))


def soak(args, seed, warmup, pki):
    servers = [start_server(args.threads)[0]]
    targets = [((servers[0].host, servers[0].port), None)] * (args.clients - args.tls_clients)
    names = ["plain"]
    failures = []
    r = None
    try:
        if args.tls_clients:
            make_pki(pki)
            tls, _, _ = start_server(args.threads, certfile=str(pki / "server.pem"),
                                     keyfile=str(pki / "server.key"))
            servers.append(tls)
            names.append("tls")
            targets += [((tls.host, tls.port), str(pki / "ca.pem"))] * args.tls_clients
        if not args.quiet:
            print("soak: servers %s on %s, seed %d; warm-up of %d requests"
                  % (", ".join("%s pid %d" % (n, s.pid) for n, s in zip(names, servers)),
                     ", ".join("%s:%d" % (s.host, s.port) for s in servers), seed, warmup),
                  flush=True)
        t0 = time.monotonic()
        w, _, _ = run_phase(targets, warmup, args.seconds, seed + 1, args.timeout,
                            servers, "warm-up", not args.quiet)
        if sum(w["errors"].values()) or w["missing"]:
            failures.append("warm-up errors %r %r" % (w["errors"], w["samples"][:3]))
        fds0 = [settle_fds(s.pid, None, 10) for s in servers]
        rss0 = [rss_kib(s.pid) for s in servers]
        left = max(1.0, args.seconds - (time.monotonic() - t0))
        r, duration, peak = run_phase(targets, args.requests, left, seed, args.timeout,
                                      servers, "main", not args.quiet)
        fds1, rss1 = [], []
        for name, s, base in zip(names, servers, fds0):
            if s.poll() is not None:
                failures.append("the %s server exited with %r" % (name, s.proc.returncode))
                fds1.append(0)
                rss1.append(0)
            else:
                fds1.append(settle_fds(s.pid, base, 10))
                rss1.append(rss_kib(s.pid))
    finally:
        logs = []
        for name, s in zip(names, servers):
            try:
                s.close(signal.SIGINT, timeout=30)
            except AssertionError:
                failures.append("the %s server did not stop on SIGINT" % name)
            logs.append(s.stderr())
    if r is None:
        sys.exit("soak: no result")

    nerr = sum(r["errors"].values())
    if nerr:
        failures.append("errors %r; first: %s" % (r["errors"], " | ".join(r["samples"][:5])))
    if r["missing"]:
        failures.append("%d client processes did not report" % r["missing"])
    if r["done"] < args.requests:
        failures.append("only %d of %d requests within %.0f s" % (r["done"], args.requests,
                                                                  args.seconds))
    for i, name in enumerate(names):
        growth = (rss1[i] - rss0[i]) / 1024
        if rss1[i] and growth >= args.rss_growth_mib:
            failures.append("%s server: RSS grew by %.1f MiB (bound %.0f MiB)"
                            % (name, growth, args.rss_growth_mib))
        if fds1[i] > fds0[i]:
            failures.append("%s server: open fds %d, baseline %d, 10 s after the clients stopped"
                            % (name, fds1[i], fds0[i]))
        log = logs[i]
        if "Traceback" in log:
            k = log.index("Traceback")
            failures.append("traceback in the %s server's log:\n" % name
                            + log[max(0, k - 200): k + 2000])
        if servers[i].proc.returncode not in (0, None):
            failures.append("%s server exit status %r" % (name, servers[i].proc.returncode))

    def each(values, fmt):
        return "/".join(fmt % v for v in values)

    print("soak: requests=%d errors=%d (%s) kinds: %s tls_requests=%d tls_connections=%d "
          "rss_start=%sMiB rss_end=%sMiB rss_peak=%sMiB fds_start=%s fds_end=%s (%s) "
          "duration=%.1fs rate=%.0f/s clients=%d tls_clients=%d seed=%d server_log_lines=%d %s"
          % (r["done"], nerr, " ".join("%s=%d" % kv for kv in r["errors"].items()),
             " ".join("%s=%d" % kv for kv in r["counts"].items()), r["tls_done"],
             r["tls_connections"], each([x / 1024 for x in rss0], "%.1f"),
             each([x / 1024 for x in rss1], "%.1f"), each([x / 1024 for x in peak], "%.1f"),
             each(fds0, "%d"), each(fds1, "%d"), "/".join(names), duration,
             r["done"] / duration if duration else 0, args.clients, args.tls_clients, seed,
             sum(len(log.splitlines()) for log in logs), "FAIL" if failures else "OK"),
          flush=True)
    if args.log:
        with open(args.log, "w") as f:
            for name, log in zip(names, logs):
                f.write("== the %s server\n%s" % (name, log))
    for f in failures:
        print("soak: FAIL: " + f, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
