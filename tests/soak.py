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
  h2         HTTP/2 (h2c with prior knowledge, the `h2` library) on a
             connection kept for a while: 2..8 streams in flight at once,
             GETs and POSTs of 1 B .. 64 KiB echoed back

Every request carries its own token (X-Token); every answer is checked for
its status (200), its token (nothing crossed between requests or
connections) and its body.  The server's RSS (/proc/PID/status VmRSS) and
open fds (/proc/PID/fd) are sampled after a warm-up and at the end.

Passes when: all requests were made within --seconds; 0 lost, 0 crossed,
0 unexpected statuses, 0 bad bodies; no traceback in the server's log; RSS
grew by less than --rss-growth-mib (64 MiB) from the post-warm-up baseline;
and the open fds are back to the baseline within 10 s of the clients
stopping.  Prints one summary line (starting "soak:") and exits 0, or 1.
"""

import argparse
import hashlib
import math
import multiprocessing
import os
import random
import signal
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from apps_soak import big_body, gen_body  # noqa: E402
from http_reader import Malformed, Reader, framing  # noqa: E402
from servers import ServerProcess  # noqa: E402

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

    def __init__(self, addr, timeout):
        sock = socket.create_connection(addr, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
    def __init__(self, index, addr, seed, timeout):
        self.index = index
        self.addr = addr
        self.rnd = random.Random(seed)
        self.timeout = timeout
        self.seq = 0
        self.conn = None
        self.ops_left = 0
        self.pool = self.rnd.randbytes(2 * MAX_BODY)

    def token(self):
        self.seq += 1
        return b"c%d-%d" % (self.index, self.seq)

    def connection(self):
        if self.conn is None or self.conn.closed or self.ops_left <= 0:
            if self.conn is not None and not self.conn.closed:
                self.conn.close()
            try:
                self.conn = Conn(self.addr, self.timeout)
            except OSError as e:
                self.conn = None
                raise Lost("connect: %r" % e)
            self.ops_left = self.rnd.randint(1, 200)
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
    """An h2c connection (prior knowledge) of the `h2` library: a failed
    connection raises Lost, a protocol error Bad."""

    def __init__(self, addr, timeout):
        import h2.config
        import h2.connection

        try:
            self.sock = socket.create_connection(addr, timeout=timeout)
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
        c = cl.h2conn = H2Conn(cl.addr, cl.timeout)
        cl.h2_left = cl.rnd.randint(1, 50)
    cl.h2_left -= 1
    want = {}
    try:
        for _ in range(cl.rnd.randint(2, 8)):
            t = cl.token()
            sid = c.conn.get_next_available_stream_id()
            c.open(sid)
            base = [(b":scheme", b"http"), (b":authority", b"soak"), (b"x-token", t)]
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


def client_main(index, addr, quota, deadline, seed, timeout, progress, results):
    """One client process: run operations until `quota` requests are made
    or the deadline passes; put a result dict on `results`."""
    cl = Client(index, addr, seed, timeout)
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
                 "samples": samples})


# -- the server -----------------------------------------------------------------


def start_server(threads, timeout=60.0):
    try:
        server = ServerProcess("apps_soak:app", timeout=timeout, threads=threads)
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


def run_phase(addr, requests, clients, seconds, seed, timeout, server, label, verbose):
    """K client processes share `requests`; returns (merged results,
    duration, peak RSS KiB)."""
    ctx = multiprocessing.get_context("fork")
    progress = ctx.RawArray("q", clients)
    results = ctx.Queue()
    deadline = time.monotonic() + seconds
    per = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    procs = [
        ctx.Process(target=client_main,
                    args=(i, addr, per[i], deadline, seed * 1000 + i, timeout, progress, results),
                    daemon=True)
        for i in range(clients)
    ]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    got = []
    peak = rss_kib(server.pid)
    last_print = t0
    hard = deadline + timeout + 30
    while len(got) < clients and time.monotonic() < hard:
        try:
            got.append(results.get(timeout=1.0))
        except Exception:
            pass
        if server.poll() is not None:
            # The clients find out through their sockets: let them report.
            hard = min(hard, time.monotonic() + timeout + 10)
            continue
        peak = max(peak, rss_kib(server.pid))
        if verbose and time.monotonic() - last_print >= 30:
            last_print = time.monotonic()
            print("soak: %s %d/%d requests, %.0f s, RSS %.1f MiB"
                  % (label, sum(progress), requests, last_print - t0, rss_kib(server.pid) / 1024),
                  flush=True)
    duration = time.monotonic() - t0
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
    merged = {"done": 0, "counts": dict.fromkeys(KINDS, 0), "errors": dict.fromkeys(ERRORS, 0),
              "samples": [], "missing": clients - len(got)}
    for r in got:
        merged["done"] += r["done"]
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
    ap.add_argument("--seconds", type=float, default=600,
                    help="time cap for the requests (warm-up included)")
    ap.add_argument("--threads", type=int, default=4, help="server worker threads")
    ap.add_argument("--warmup", type=int, default=None,
                    help="requests before the baseline sample (default: 5%%, at most 20000)")
    ap.add_argument("--rss-growth-mib", type=float, default=64.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=30.0, help="client socket timeout")
    ap.add_argument("--log", help="write the server's log (stderr) to this file")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    warmup = args.warmup if args.warmup is not None else min(20000, max(1000, args.requests // 20))

    server, addr, pid = start_server(args.threads)
    failures = []
    try:
        if not args.quiet:
            print("soak: server pid %d on %s:%d, seed %d; warm-up of %d requests"
                  % (pid, addr[0], addr[1], seed, warmup), flush=True)
        t0 = time.monotonic()
        w, _, _ = run_phase(addr, warmup, args.clients, args.seconds, seed + 1, args.timeout,
                            server, "warm-up", not args.quiet)
        if sum(w["errors"].values()) or w["missing"]:
            failures.append("warm-up errors %r %r" % (w["errors"], w["samples"][:3]))
        fds0 = settle_fds(pid, None, 10)
        rss0 = rss_kib(pid)
        left = max(1.0, args.seconds - (time.monotonic() - t0))
        r, duration, peak = run_phase(addr, args.requests, args.clients, left, seed,
                                      args.timeout, server, "main", not args.quiet)
        if server.poll() is not None:
            failures.append("the server exited with %r" % server.proc.returncode)
            fds1 = rss1 = 0
        else:
            fds1 = settle_fds(pid, fds0, 10)
            rss1 = rss_kib(pid)
    finally:
        try:
            server.close(signal.SIGINT, timeout=30)
        except AssertionError:
            failures.append("the server did not stop on SIGINT")
        log = server.stderr()

    nerr = sum(r["errors"].values())
    if nerr:
        failures.append("errors %r; first: %s" % (r["errors"], " | ".join(r["samples"][:5])))
    if r["missing"]:
        failures.append("%d client processes did not report" % r["missing"])
    if r["done"] < args.requests:
        failures.append("only %d of %d requests within %.0f s" % (r["done"], args.requests,
                                                                  args.seconds))
    growth = (rss1 - rss0) / 1024
    if rss1 and growth >= args.rss_growth_mib:
        failures.append("RSS grew by %.1f MiB (bound %.0f MiB)" % (growth, args.rss_growth_mib))
    if fds1 > fds0:
        failures.append("open fds %d, baseline %d, 10 s after the clients stopped" % (fds1, fds0))
    if "Traceback" in log:
        i = log.index("Traceback")
        failures.append("traceback in the server log:\n" + log[max(0, i - 200): i + 2000])
    if server.proc.returncode not in (0, None):
        failures.append("server exit status %r" % server.proc.returncode)

    print("soak: requests=%d errors=%d (%s) kinds: %s rss_start=%.1fMiB rss_end=%.1fMiB "
          "rss_peak=%.1fMiB fds_start=%d fds_end=%d duration=%.1fs rate=%.0f/s clients=%d "
          "seed=%d server_log_lines=%d %s"
          % (r["done"], nerr, " ".join("%s=%d" % kv for kv in r["errors"].items()),
             " ".join("%s=%d" % kv for kv in r["counts"].items()), rss0 / 1024, rss1 / 1024,
             peak / 1024, fds0, fds1, duration, r["done"] / duration if duration else 0,
             args.clients, seed, len(log.splitlines()), "FAIL" if failures else "OK"),
          flush=True)
    if args.log:
        with open(args.log, "w") as f:
            f.write(log)
    for f in failures:
        print("soak: FAIL: " + f, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
