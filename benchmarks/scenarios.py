"""The benchmark scenarios of issues 5 and 11: what wrk (or the harness's
own client) sends and what a correct answer looks like.
docs/benchmarks.rst describes each one."""

import client
from common import MIB

HELLO = b"Hello, world!"
PIPELINE_DEPTH = 16
POST_SIZE = 64 * 1024
SLOW_READERS = 1000
LONGPOLL_CONNS = 100
# Enough worker threads to park every long-poll request at once, and a few
# to spare, as a deployment expecting them would configure.
LONGPOLL_THREADS = 110


class Scenario:
    """One load shape: a path, a connection count and the wrk arguments.

    ``mode`` is passed to wrk/bench.lua, ``headers`` to wrk -H.  ``nginx``
    says whether nginx (static files only) can take part.  ``kind`` says
    who measures it: ``load`` is wrk; ``idle``, ``slowread`` and
    ``longpoll`` are the harness's own clients.  ``threads``, when set, is
    the worker threads each threaded server gets (a server with one thread
    cannot take part).  ``tls``: over HTTPS, for the servers that speak it
    (``Server.tls``); ``resume=False``: with session resumption off, for
    the servers that can turn it off (``Server.full_handshakes``).
    """

    def __init__(self, name, path, conns, what, mode=("get",), headers=(),
                 check=None, nginx=True, kind="load", threads=None,
                 tls=False, resume=True):
        self.name = name
        self.path = path
        self.conns = conns
        self.what = what
        self.mode = list(mode)
        self.headers = list(headers)
        self.check = check or (lambda body: body == HELLO)
        self.nginx = nginx
        self.kind = kind
        self.threads = threads
        self.tls = tls
        self.resume = resume

    def admits(self, server):
        """Whether ``server`` takes part: nginx only serves files, a
        scenario that parks requests needs a server with threads, one over
        TLS a server that speaks it, and a TLS-only server (nginx-tls)
        takes part in TLS scenarios only."""
        speaks_tls = getattr(server, "tls", False)
        if self.tls != getattr(server, "tls_only", False) and not (
                self.tls and speaks_tls):
            return False
        if not self.resume and not getattr(server, "full_handshakes", False):
            return False
        return ((server.wsgi or self.nginx)
                and (server.threaded or self.threads is None))

    @property
    def keep_alive(self):
        return not self.headers and self.mode[0] != "http10"

    @property
    def depth(self):
        return PIPELINE_DEPTH if self.mode[0] == "pipeline" else 1

    def request(self):
        """The bytes of one round of this scenario's requests."""
        if self.mode[0] == "post":
            return client.build_request("POST", self.path,
                                        body=b"x" * POST_SIZE)
        if self.mode[0] == "http10":
            return client.build_request("GET", self.path, "HTTP/1.0")
        one = client.build_request("GET", self.path, headers=self.headers)
        return one * self.depth


def has_size(n):
    return lambda body: len(body) == n


SCENARIOS = [
    Scenario("hello-1", "/hello", 1, "13 bytes, 1 keep-alive connection"),
    Scenario("hello-16", "/hello", 16, "13 bytes, 16 keep-alive connections"),
    Scenario("hello-100", "/hello", 100,
             "13 bytes, 100 keep-alive connections"),
    Scenario("hello-1000", "/hello", 1000,
             "13 bytes, 1,000 keep-alive connections"),
    Scenario("close", "/hello", 100,
             "13 bytes, `Connection: close`, 100 connections",
             headers=["Connection: close"]),
    Scenario("http10", "/hello", 100,
             "13 bytes, HTTP/1.0 without keep-alive, 100 connections",
             mode=("http10",)),
    Scenario("chunked", "/chunked", 100,
             "the same 13 bytes from a generator of 4 yields, no "
             "Content-Length, 100 connections", nginx=False),
    Scenario("1mib", "/1mib", 100, "1 MiB body, 100 connections",
             check=has_size(MIB)),
    Scenario("1mib-16", "/1mib", 16, "1 MiB body, 16 connections",
             check=has_size(MIB)),
    Scenario("post64k", "/echo", 100,
             "64 KiB POST echoed back, 100 connections",
             mode=("post", str(POST_SIZE)), check=has_size(POST_SIZE),
             nginx=False),
    Scenario("file10m", "/file", 100,
             "10 MiB file through `wsgi.file_wrapper`, 100 connections",
             check=has_size(10 * MIB)),
    Scenario("sleep10ms", "/sleep", 100,
             "the app sleeps 10 ms, 100 connections (4 threads: at most "
             "400 req/s)", nginx=False),
    Scenario("pipeline16", "/hello", 100,
             "13 bytes, 16 requests pipelined, 100 connections",
             mode=("pipeline", str(PIPELINE_DEPTH))),
    Scenario("idle10k", "/hello", 10000,
             "10,000 idle keep-alive connections: RSS per connection, and "
             "a new request answered while they are open", kind="idle"),
    Scenario("slowread1k", "/1mib", SLOW_READERS,
             "1,000 connections each ask for the 1 MiB body and read "
             "nothing: server RSS against the bytes it must hold",
             check=has_size(MIB), kind="slowread"),
    Scenario("longpoll100", "/longpoll", LONGPOLL_CONNS,
             "100 long-poll requests parked in an app that sleeps, no "
             "other load: server CPU while they wait", nginx=False,
             kind="longpoll", threads=LONGPOLL_THREADS),
]
# Over TLS: 13 bytes on keep-alive connections (compare with hello-100), a
# handshake per request (wrk reconnects after each Connection: close; it
# offers the previous connection's session again, which every server here
# resumes: waitress_c and nginx from a session cache, granian too), the
# same with resumption off (a full handshake per request: granian cannot
# turn it off, so it sits this one out), 1 MiB bodies.  Not in the default
# run (``--scenarios`` names them).
TLS_SCENARIOS = [
    Scenario("tls-hello-100", "/hello", 100,
             "13 bytes over TLS, 100 keep-alive connections", tls=True),
    Scenario("tls-handshakes", "/hello", 100,
             "13 bytes over TLS with `Connection: close`: a handshake per "
             "request, 100 connections",
             headers=["Connection: close"], tls=True),
    Scenario("tls-full-handshakes", "/hello", 100,
             "13 bytes over TLS with `Connection: close` and session "
             "resumption off: a full handshake per request, 100 connections",
             headers=["Connection: close"], tls=True, resume=False),
    Scenario("tls-1mib", "/1mib", 100, "1 MiB body over TLS, 100 connections",
             check=has_size(MIB), tls=True),
]
class H2Scenario(Scenario):
    """An HTTP/2 load shape (h2c with prior knowledge), measured by h2load:
    ``conns`` connections with ``streams`` requests in flight on each.
    ``size`` is the body each response must carry (h2load counts the DATA
    bytes; it reads no body).  Only servers that speak h2c take part."""

    def __init__(self, name, path, conns, streams, what, size=len(HELLO),
                 threads=None):
        Scenario.__init__(self, name, path, conns, what, nginx=False,
                          kind="h2load", threads=threads,
                          check=has_size(size))
        self.streams = streams
        self.size = size

    def admits(self, server):
        return server.wsgi and getattr(server, "h2", False)


SCENARIOS += [
    H2Scenario("h2-hello-100x10", "/hello", 100, 10,
               "HTTP/2 (h2c), 13 bytes, 100 connections x 10 streams"),
    H2Scenario("h2-hello-1x100", "/hello", 1, 100,
               "HTTP/2 (h2c), 13 bytes, 1 connection x 100 streams (a "
               "proxy's shape)"),
    H2Scenario("h2-sleep10ms-1x100", "/sleep", 1, 100,
               "HTTP/2 (h2c), the app sleeps 10 ms, 1 connection x 100 "
               "streams (4 threads: at most 400 req/s, if the streams are "
               "served concurrently)"),
    H2Scenario("h2-1mib", "/1mib", 16, 4,
               "HTTP/2 (h2c), 1 MiB body, 16 connections x 4 streams",
               size=MIB),
]

BY_NAME = {s.name: s for s in SCENARIOS + TLS_SCENARIOS}
NAMES = [s.name for s in SCENARIOS]
TLS_NAMES = [s.name for s in TLS_SCENARIOS]
HEADLINE = "hello-100"
# The unpinned pass, where the servers with worker processes
# (waitress_c-w2, gunicorn-w2) run: both cores are theirs to use.
UNPINNED = [HEADLINE, "hello-1000", "sleep10ms"]


def preflight(port, scenario, timeout=10.0):
    """Send the scenario's requests once on one connection and judge the
    answers.  Returns (error, notes): ``error`` (a string) means the server
    cannot run this scenario, so wrk is not started; ``notes`` are protocol
    remarks shown beside its numbers (a missing close, say)."""
    notes = []
    count = scenario.depth
    responses, eof, problem = client.exchange(
        port, scenario.request(), count, timeout,
        want_eof=not scenario.keep_alive, tls=scenario.tls)
    if problem is not None:
        what = "answered %d of %d pipelined requests" % (
            len(responses), count) if count > 1 else "no answer"
        return "%s: %s" % (what, problem), notes
    for resp in responses:
        if resp.status != 200:
            return "status %d" % resp.status, notes
        if not scenario.check(resp.body):
            return "wrong body (%d bytes: %r)" % (
                len(resp.body), resp.body[:20]), notes
    last = responses[-1]
    if scenario.keep_alive:
        if last.framing == "close":
            return ("the response has no Content-Length and is not chunked: "
                    "it ends by closing the connection"), notes
        if last.closes:
            notes.append("closes keep-alive connections")
    elif not eof:
        notes.append("does not close the connection")
    return None, notes
