"""The suite's one HTTP/1.x response reader.

``Reader(source)`` reads responses from a socket (with a buffer of its
own, so every byte the server sent can be inspected), from a binary file
(``sock.makefile("rb")``, ``io.BytesIO``: read line by line and by exact
counts, so nothing past the response is taken from the file) or from bytes.
The rules are written once, here:

* the status line and every header line end with CRLF; headers are kept as
  a list of ``(name, value)`` in the order sent (latin-1, the value without
  its surrounding spaces and tabs);
* no body for a response to HEAD (``head=True``), for 1xx, 204 and 304;
* otherwise Transfer-Encoding (which must be ``chunked``) before
  Content-Length, and without either the body ends when the server closes.

Every read is bounded: a socket reader with ``timeout`` gives each call that
long (a deadline) and each recv that long; with ``deadline`` (a
``time.monotonic()`` value) all of its calls share one; with neither, the
socket's own timeout bounds each recv.  A file reader relies on the
timeout of the socket behind it.

Errors: ``EOFError`` when the connection ends inside a response,
``TimeoutError`` when a deadline passes, ``Malformed`` (an AssertionError,
so a test fails rather than errors) when the bytes break the rules above.
"""

import io
import json
import socket
import time


class Malformed(AssertionError):
    """Bytes that are not a well-formed response; ``where`` is "status",
    "header" or "body"."""

    def __init__(self, where, message):
        super().__init__("%s: %s" % (where, message))
        self.where = where


class Response:
    """One response.  ``head``: the status line and header block, with the
    blank line; ``status_line`` (bytes, without CRLF); ``headers``
    ([(name, value)] as sent); ``body``; ``trailers`` (the chunked
    trailer fields, like headers); ``raw``: every byte of the response as
    received.

    It also unpacks and indexes as the triple (status line as received,
    with its CRLF; headers; body), the form older tests were written
    against."""

    def __init__(self, status_line, headers, head):
        self.status_line = status_line
        self.headers = headers
        self.head = head
        self.body = b""
        self.trailers = []
        self._raw = [head]
        parts = status_line.split(b" ", 2)
        self.version = parts[0].decode("latin-1")
        try:
            self.status = int(parts[1][:3])
        except (IndexError, ValueError):
            raise Malformed("status", "bad status line %r" % status_line[:200]) from None
        self.reason = parts[2].decode("latin-1") if len(parts) > 2 else None

    @property
    def raw(self):
        if len(self._raw) > 1:
            self._raw = [b"".join(self._raw)]
        return self._raw[0]

    def header(self, name, default=None):
        """The value of the one header `name` (case-insensitive)."""
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(found) <= 1, (name, self.headers)
        return found[0] if found else default

    def header_map(self):
        """{lowercased name: value}; of a repeated header, the last."""
        return {k.lower(): v for k, v in self.headers}

    def names(self):
        return [k for k, _ in self.headers]

    def lower_names(self):
        return sorted(k.lower() for k, _ in self.headers)

    def json(self):
        return json.loads(self.body)

    def _triple(self):
        return (self.status_line + b"\r\n", self.headers, self.body)

    def __iter__(self):
        return iter(self._triple())

    def __getitem__(self, i):
        return self._triple()[i]

    def __repr__(self):
        return "<Response %r>" % (self.raw[:300],)


def framing(resp, head=False):
    """How the body of `resp` is delimited: "none", "chunked", "length"
    or "close"."""
    if head or resp.status in (204, 304) or 100 <= resp.status < 200:
        return "none"
    h = resp.header_map()
    if "transfer-encoding" in h:
        if h["transfer-encoding"] != "chunked":
            raise Malformed("body", "Transfer-Encoding %r" % h["transfer-encoding"])
        return "chunked"
    if "content-length" in h:
        return "length"
    return "close"


class Reader:
    """Responses from `source`: a socket, a binary file or bytes.

    With a socket, ``buf`` holds what was received and not yet taken
    (``buf`` seeds it with bytes already read from the socket).
    ``reset_ok``: a connection reset ends a close-delimited body or
    ``rest()`` like a close does, instead of raising."""

    def __init__(self, source, timeout=None, deadline=None, buf=b"", reset_ok=False, recv_size=262144):
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(bytes(source))
        if hasattr(source, "recv"):
            self.sock, self.file = source, None
        else:
            self.sock, self.file = None, source
        self.timeout = timeout
        self.deadline = deadline
        self.buf = bytearray(buf)
        self.reset_ok = reset_ok
        self.recv_size = recv_size

    # -- bytes ------------------------------------------------------------------
    def _op_deadline(self):
        if self.deadline is not None:
            return self.deadline
        if self.timeout is not None:
            return time.monotonic() + self.timeout
        return None

    def _check(self, deadline, what):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("%s; buffered %r" % (what, bytes(self.buf[-300:])))

    def fill(self, n=None, timeout=None):
        """One recv (of at most `n` bytes) into the buffer; EOFError at the
        end of the stream.  `timeout` overrides the reader's for this recv."""
        timeout = self.timeout if timeout is None else timeout
        if timeout is not None:
            self.sock.settimeout(timeout)
        data = self.sock.recv(n or self.recv_size)
        if not data:
            raise EOFError("connection closed; buffered %r" % bytes(self.buf[-300:]))
        self.buf += data
        return len(data)

    def line(self, eof_ok=False):
        """The next line, with its line end.  b"" at the end of the stream
        before any byte of it when `eof_ok`."""
        if self.file is not None:
            line = self.file.readline()
            if line.endswith(b"\n") or (eof_ok and not line):
                return line
            raise EOFError("connection closed inside a line: %r" % line[-300:])
        deadline = self._op_deadline()
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                break
            start = len(self.buf)
            self._check(deadline, "no line")
            try:
                self.fill()
            except EOFError:
                if eof_ok and not self.buf:
                    return b""
                raise
        line = bytes(self.buf[: i + 1])
        del self.buf[: i + 1]
        return line

    def exact(self, n, timeout=None):
        """Exactly `n` bytes (`timeout`: this call's bound, if not the
        reader's)."""
        if self.file is not None:
            data = self.file.read(n)
            if len(data) < n:
                raise EOFError("connection closed after %d of %d bytes" % (len(data), n))
            return data
        if timeout is not None:
            deadline = time.monotonic() + timeout
        else:
            deadline = self._op_deadline()
        while len(self.buf) < n:
            self._check(deadline, "%d of %d bytes" % (len(self.buf), n))
            self.fill(timeout=None if timeout is None else max(0.01, deadline - time.monotonic()))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_some(self, n=65536):
        """What is buffered (at most `n` bytes), else one recv's worth; b""
        at the end of the stream."""
        if not self.buf:
            try:
                self.fill(n)
            except EOFError:
                return b""
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def take_buffered(self):
        """The bytes received and not yet taken."""
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def rest(self, timeout=None, total=None, timeout_ok=False, reset_ok=None):
        """Everything up to the end of the stream.  Each recv waits at most
        `timeout` (default: the reader's), all of them `total` (default:
        `timeout`); what arrived is returned when `total` is up, or when a
        recv times out with `timeout_ok`, or at a reset with `reset_ok`
        (default: the reader's)."""
        if self.file is not None:
            return self.file.read()
        reset_ok = self.reset_ok if reset_ok is None else reset_ok
        timeout = self.timeout if timeout is None else timeout
        total = timeout if total is None else total
        deadline = None if total is None else time.monotonic() + total
        while deadline is None or time.monotonic() < deadline:
            try:
                self.fill(timeout=timeout)
            except EOFError:
                break
            except ConnectionResetError:
                if not reset_ok:
                    raise
                break
            except socket.timeout:
                if not timeout_ok:
                    raise
                break
        return self.take_buffered()

    # -- responses ------------------------------------------------------------
    def read_head(self, eof_ok=False):
        """The status line and headers (a Response without its body yet);
        None at the end of the stream before a response when `eof_ok`."""
        line = self.line(eof_ok)
        if not line:
            return None
        raw = [line]
        if not line.endswith(b"\r\n"):
            raise Malformed("status", "no CRLF after %r" % line[:200])
        status_line = line[:-2]
        headers = []
        while True:
            line = self.line()
            raw.append(line)
            if not line.endswith(b"\r\n"):
                raise Malformed("header", "no CRLF after %r" % line[:200])
            if line == b"\r\n":
                break
            name, _, value = line[:-2].decode("latin-1").partition(":")
            headers.append((name, value.strip(" \t")))
        return Response(status_line, headers, b"".join(raw))

    def read_body(self, resp, head=False, trailers=True):
        """Read the body of `resp` (from read_head) by the framing rules;
        `trailers=False`: a chunked body must end without trailer fields."""
        how = framing(resp, head)
        if how == "chunked":
            body = []
            while True:
                line = self.line()
                resp._raw.append(line)
                if not line.endswith(b"\r\n"):
                    raise Malformed("body", "no CRLF after the chunk size %r" % line[:200])
                try:
                    size = int(line.split(b";")[0], 16)
                except ValueError:
                    raise Malformed("body", "bad chunk size %r" % line[:200]) from None
                if size == 0:
                    break
                data = self.exact(size + 2)
                resp._raw.append(data)
                if not data.endswith(b"\r\n"):
                    raise Malformed("body", "no CRLF after a chunk of %d bytes" % size)
                body.append(data[:-2])
            while True:
                line = self.line()
                resp._raw.append(line)
                if line == b"\r\n":
                    break
                if not trailers:
                    raise Malformed("body", "a trailer, none expected: %r" % line[:200])
                name, _, value = line.rstrip(b"\r\n").decode("latin-1").partition(":")
                resp.trailers.append((name, value.strip(" \t")))
            resp.body = b"".join(body)
        elif how == "length":
            resp.body = self.exact(int(resp.header_map()["content-length"]))
            resp._raw.append(resp.body)
        elif how == "close":
            resp.body = self.rest(timeout=self.timeout)
            resp._raw.append(resp.body)
        return resp

    def response(self, head=False, eof_ok=False, trailers=True):
        """One whole response (`head`: it answers a HEAD request).  1xx
        responses are returned like any other, so a test sees them."""
        resp = self.read_head(eof_ok)
        if resp is None:
            return None
        return self.read_body(resp, head=head, trailers=trailers)

    def responses(self, limit=1000):
        """Responses until the end of the stream (at most `limit`)."""
        out = []
        while len(out) < limit:
            resp = self.response(eof_ok=True)
            if resp is None:
                break
            out.append(resp)
        return out


def read_response(f, head=False):
    """One response from a binary file (``sock.makefile("rb")``) or bytes;
    None at the end of the stream.  It unpacks as (status line, headers,
    body)."""
    return Reader(f).response(head=head, eof_ok=True)


def recv_all(sock, timeout=10.0, total=None, reset_ok=False):
    """Read until the peer closes; stops quietly when a recv waits longer
    than `timeout` or after `total` seconds in all (default: `timeout`)."""
    return Reader(sock).rest(timeout=timeout, total=total, timeout_ok=True, reset_ok=reset_ok)
