"""A small raw-socket HTTP/1.1 client for the harness's own checks.

wrk counts responses but does not say whether a server answered every
pipelined request, honoured ``Connection: close``, or could frame a response
at all.  These checks run once before each load (``preflight``), once in the
middle of it (``timed_request``: a new connection's wait while the server is
busy, which exposes servers that starve connections beyond their thread
count), and for the idle scenario (``open_idle``).  Loopback only; every
call is bounded by a deadline.
"""

import selectors
import socket
import ssl
import time

HOST = "127.0.0.1"


class Response:
    def __init__(self, version, status, headers, body, framing):
        self.version = version
        self.status = status
        self.headers = headers      # lower-case name -> last value
        self.body = body
        self.framing = framing      # "content-length", "chunked" or "close"

    @property
    def closes(self):
        """True if the server will close the connection after this one."""
        conn = self.headers.get("connection", "").lower()
        if self.framing == "close" or "close" in conn:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in conn


class Incomplete(Exception):
    """More bytes are needed to finish the response."""


def parse_response(buf, eof):
    """Parse one response from the front of ``buf``.

    Returns (Response, bytes used).  Raises Incomplete when more data is
    needed (unless ``eof``), ValueError when the bytes are not HTTP.
    """
    version, status, headers, start = parse_head(buf, eof)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, used = parse_chunks(buf, start, eof)
        return Response(version, status, headers, body, "chunked"), used
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(buf) - start < n:
            if eof:
                raise ValueError("connection closed inside the body")
            raise Incomplete
        body = buf[start:start + n]
        return (Response(version, status, headers, body, "content-length"),
                start + n)
    if status in (204, 304) or 100 <= status < 200:
        return Response(version, status, headers, b"", "content-length"), start
    if not eof:
        raise Incomplete
    return Response(version, status, headers, buf[start:], "close"), len(buf)


def parse_head(buf, eof=False):
    """Parse the status line and headers at the front of ``buf``.

    Returns (version, status, headers, where the body starts), with header
    names in lower case.  Raises Incomplete or ValueError as
    ``parse_response`` does.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if eof:
            raise ValueError("connection closed inside the headers")
        raise Incomplete
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("not an HTTP status line: %r" % lines[0][:40])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0], int(parts[1]), headers, end + 4


def parse_chunks(buf, pos, eof):
    body = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(buf[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            while trailer_end > pos:   # skip trailer fields
                pos = trailer_end + 2
                trailer_end = buf.find(b"\r\n", pos)
            if trailer_end < 0:
                break
            return b"".join(body), trailer_end + 2
        if len(buf) < pos + size + 2:
            break
        body.append(buf[pos:pos + size])
        pos += size + 2
    if eof:
        raise ValueError("connection closed inside a chunked body")
    raise Incomplete


def tls_context():
    """A client context for the benchmark's own certificate: not verified
    (it is made for the run), TLS 1.2 at least."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def exchange(port, request, count, timeout, want_eof=False, tls=False):
    """Send ``request`` (possibly several pipelined requests) on a new
    connection (over TLS with ``tls``) and read ``count`` responses.

    Returns (responses, eof_seen, problem): ``problem`` is None or why
    fewer responses came.  With ``want_eof`` it then waits up to one second
    for the server to close the connection.
    """
    deadline = time.monotonic() + timeout
    responses, buf, eof = [], b"", False
    try:
        sock = socket.create_connection((HOST, port), timeout=timeout)
        if tls:
            try:
                sock = tls_context().wrap_socket(sock)
            except BaseException:
                sock.close()
                raise
    except OSError as exc:  # ssl.SSLError too
        return responses, False, "connect failed: %s" % exc
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(request)
            while len(responses) < count:
                try:
                    resp, used = parse_response(buf, eof)
                except Incomplete:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return responses, eof, "timed out after %.0f s" % (
                            timeout)
                    sock.settimeout(left)
                    data = sock.recv(1 << 20)
                    if not data:
                        eof = True
                    buf += data
                    continue
                responses.append(resp)
                buf = buf[used:]
                if resp.closes and len(responses) < count:
                    return responses, eof, "the server closed the connection"
            if want_eof and not eof:
                sock.settimeout(1.0)
                try:
                    eof = sock.recv(1) == b""
                except socket.timeout:
                    eof = False
        except ValueError as exc:
            return responses, eof, str(exc)
        except OSError as exc:
            return responses, eof, "%s" % (exc,)
    return responses, eof, None


def build_request(method, path, version="HTTP/1.1", headers=(), body=None):
    lines = ["%s %s %s" % (method, path, version), "Host: %s" % HOST]
    lines += list(headers)
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def timed_request(port, path="/hello", timeout=5.0, tls=False):
    """Seconds for one GET on a new connection (its handshake included
    with ``tls``), or None if it failed."""
    t0 = time.perf_counter()
    responses, _, problem = exchange(
        port, build_request("GET", path), 1, timeout, tls=tls)
    if problem is not None or responses[0].status != 200:
        return None
    return time.perf_counter() - t0


# ------------------------------------------------ idle keep-alive clients

def open_idle(port, count, deadline, request, batch=250):
    """Open ``count`` connections, each sending ``request`` and reading its
    answer, then left open and idle.  Returns (sockets, failures)."""
    sel = selectors.DefaultSelector()
    done, failures = [], 0
    pending = count
    try:
        while pending > 0 and time.monotonic() < deadline:
            n = min(batch, pending)
            pending -= n
            live = {}
            for _ in range(n):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((HOST, port))
                live[s] = [b"", False]
                sel.register(s, selectors.EVENT_WRITE)
            batch_deadline = min(deadline, time.monotonic() + 15)
            while live and time.monotonic() < batch_deadline:
                for key, _ in sel.select(timeout=0.5):
                    s = key.fileobj
                    state = live[s]
                    data = b""
                    try:
                        if not state[1]:
                            s.send(request)
                            state[1] = True
                            sel.modify(s, selectors.EVENT_READ)
                            continue
                        data = s.recv(65536)
                    except OSError:
                        pass
                    if data:
                        state[0] += data
                        try:
                            parse_response(state[0], False)
                        except Incomplete:
                            continue
                        except ValueError:
                            data = b""
                        else:
                            sel.unregister(s)
                            del live[s]
                            done.append(s)
                            continue
                    sel.unregister(s)
                    s.close()
                    del live[s]
                    failures += 1
            for s in live:
                sel.unregister(s)
                s.close()
                failures += 1
        failures += pending
    finally:
        sel.close()
    return done, failures


def still_open(socks):
    """How many of ``socks`` the server has not closed (nor written to)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = len(sel.select(timeout=0))
    sel.close()
    return len(socks) - closed
