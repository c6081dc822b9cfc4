"""Checks of the harness's own logic that need no server: the response
parser behind the preflight, the scenarios' requests, the medians, the
target tables and slowread1k's accounting.  Run with
``.venv/bin/python -m pytest benchmarks``."""

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
import run as bench_run  # noqa: E402
import scenarios  # noqa: E402
import slowread  # noqa: E402
from common import MIB  # noqa: E402

OK = (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!")


def test_content_length_response():
    resp, used = client.parse_response(OK, False)
    assert (resp.status, resp.body, resp.framing) == (
        200, b"Hello, world!", "content-length")
    assert used == len(OK) and not resp.closes


def test_pipelined_responses_parse_one_at_a_time():
    buf = OK * 3
    bodies = []
    while buf:
        resp, used = client.parse_response(buf, False)
        bodies.append(resp.body)
        buf = buf[used:]
    assert bodies == [b"Hello, world!"] * 3


def test_chunked_response_with_trailer():
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nHello\r\n8;ext=1\r\n, world!\r\n0\r\nX-T: 1\r\n\r\nrest")
    resp, used = client.parse_response(raw, False)
    assert resp.body == b"Hello, world!" and resp.framing == "chunked"
    assert raw[used:] == b"rest"


@pytest.mark.parametrize("cut", [10, len(OK) - 1])
def test_incomplete_needs_more(cut):
    with pytest.raises(client.Incomplete):
        client.parse_response(OK[:cut], False)
    with pytest.raises(ValueError):
        client.parse_response(OK[:cut], True)


def test_close_delimited_only_at_eof():
    raw = b"HTTP/1.1 200 OK\r\n\r\nHello"
    with pytest.raises(client.Incomplete):
        client.parse_response(raw, False)
    resp, _ = client.parse_response(raw, True)
    assert resp.framing == "close" and resp.closes


@pytest.mark.parametrize("head,closes", [
    (b"HTTP/1.1 200 OK\r\nConnection: close", True),
    (b"HTTP/1.0 200 OK", True),
    (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive", False),
    (b"HTTP/1.1 200 OK", False),
])
def test_closes(head, closes):
    resp, _ = client.parse_response(
        head + b"\r\nContent-Length: 0\r\n\r\n", False)
    assert resp.closes is closes


def test_not_http():
    with pytest.raises(ValueError):
        client.parse_response(b"SSH-2.0-x\r\n\r\n", False)


def test_scenario_requests():
    by = scenarios.BY_NAME
    assert by["pipeline16"].request().count(b"GET /hello HTTP/1.1") == 16
    assert by["http10"].request().startswith(b"GET /hello HTTP/1.0\r\n")
    assert not by["http10"].keep_alive and not by["close"].keep_alive
    assert b"Connection: close" in by["close"].request()
    post = by["post64k"].request()
    assert b"Content-Length: 65536\r\n" in post
    assert post.endswith(b"x" * 65536)
    assert set(scenarios.NAMES) >= {"hello-1", "hello-1000", "idle10k"}


def run(rps, cpu=10.0, p99=1.0, errors=0):
    return {"rps": rps, "p50": 0.5, "p99": p99, "errors": errors,
            "error_kinds": {}, "cpu_us": cpu, "rss": 1, "probe_ms": 1.0,
            "notes": []}


def test_summarize_medians_and_failures():
    s = report.summarize([run(100), run(300), run(200),
                          {"error": "boom", "notes": ["x"]}])
    assert s["rps"] == 200 and s["spread"] == 1.0
    assert (s["rounds"], s["good"], s["failures"]) == (4, 3, ["boom"])
    assert s["notes"] == ["x"]


def test_target_checks():
    results = {
        ("hello-100", "waitress_c"): report.summarize([run(120, cpu=5.0)]),
        ("hello-100", "bjoern"): report.summarize([run(100, p99=0.5)]),
        ("1mib", "waitress_c"): report.summarize([run(10)]),
        ("1mib", "bjoern"): report.summarize([run(12)]),
        ("1mib", "uwsgi"): report.summarize([run(15)]),
    }
    checks = report.target_checks(lambda sc, n: results.get((sc, n)),
                                  ["bjoern", "uwsgi"])
    met = {what: ok for what, _, _, ok in checks}
    assert met["hello-100 req/s >= bjoern"] is True
    assert met["hello-100 server CPU per request <= 6 us"] is True
    assert met["hello-100 p99 <= bjoern"] is False
    assert met["1mib >= best peer"] is False
    bound = [b for what, _, b, _ in checks if what == "1mib >= best peer"]
    assert bound == ["15 (uwsgi)"]


# /proc/net/tcp as the kernel writes it (columns after tx:rx cut): a
# listener on port 0x1F90 (8080), two of its connections, the readers' ends
# of them, and an unrelated connection.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000005 00:00000000
   1: 0100007F:1F90 0100007F:A000 01 00030000:00000000 00:00000000
   2: 0100007F:1F90 0100007F:A001 01 00000100:00000040 00:00000000
   3: 0100007F:A000 0100007F:1F90 01 00000000:00008000 00:00000000
   4: 0100007F:A001 0100007F:1F90 01 00000000:00000010 00:00000000
   5: 0100007F:A001 0100007F:0050 01 00099999:00099999 00:00000000
   6: 0100007F:A002 0100007F:1F90 06 00000000:00007777 00:00000000
"""


def test_kernel_queues_count_server_sends_and_reader_receives():
    send, recv = slowread.parse_queues(PROC_NET_TCP, 0x1F90)
    # The server's unread requests (0x40) and the listener's backlog are
    # not response bytes; neither is another port's traffic nor a socket
    # in TIME_WAIT.
    assert send == 0x30000 + 0x100
    assert recv == 0x8000 + 0x10


def test_wait_quiet_needs_a_still_stretch():
    now = [0.0]
    figures = iter([(100, 5), (200, 5), (300, 5), (300, 5), (310, 5),
                    (305, 5), (305, 5), (305, 5)])

    def sleep(dt):
        now[0] += dt

    value, waited, quiet = slowread.wait_quiet(
        lambda: next(figures), (20, 0), quiet_for=1.0, timeout=10.0,
        interval=0.5, clock=lambda: now[0], sleep=sleep)
    # 100 at t=0 (before the loop), 200 at t=0, 300 at t=0.5, then within
    # the slack of 20 of 300: quiet 1 s later.
    assert quiet and waited == 1.5 and value == (310, 5)


def test_wait_quiet_gives_up():
    now = [0.0]
    count = iter(range(100))

    def sleep(dt):
        now[0] += dt

    value, waited, quiet = slowread.wait_quiet(
        lambda: (0, next(count)), (0, 0), quiet_for=1.0, timeout=2.0,
        interval=0.5, clock=lambda: now[0], sleep=sleep)
    assert not quiet and waited == 2.0


class _Sock:
    def close(self):
        pass


def reading(data, *more):
    r = slowread.Reading(_Sock())
    for chunk in (data,) + more:
        r.feed(chunk)
    return r


def test_readings_and_accounting():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    whole = reading(head[:5], head[5:] + b"0123", b"456789")
    assert whole.whole and whole.head == len(head)
    short = reading(head + b"01234")
    short.problem = "closed after 5 of 10 body bytes"
    bad = reading(b"HTTP/1.1 500 Oops\r\nContent-Length: 10\r\n\r\n"
                  b"0123456789")
    never = slowread.Reading(_Sock())
    got, asked, problems = slowread.account([whole, short, bad, never], 10)
    assert got == 1
    # Four responses asked for (the 500's head is 2 bytes longer); the one
    # whose head never came counts as the median one.
    assert asked == 49 + 49 + 51 + 49
    assert problems == ["closed after 5 of 10 body bytes", "status 500"]
    with pytest.raises(ValueError):
        reading(head + b"0123456789!")
    with pytest.raises(ValueError):
        reading(b"HTTP/1.1 200 OK\r\n\r\n")


def test_longpoll_admits_threaded_servers_only():
    poll, hello = scenarios.BY_NAME["longpoll100"], scenarios.BY_NAME[
        "hello-100"]
    waitress, bjoern, nginx = (_Server("waitress"),
                               _Server("bjoern", threaded=False),
                               _Server("nginx", wsgi=False))
    assert poll.admits(waitress) and hello.admits(bjoern)
    assert not poll.admits(bjoern) and not poll.admits(nginx)
    assert hello.admits(nginx)
    assert peers.threads(poll) == scenarios.LONGPOLL_THREADS
    assert peers.threads(hello) == 4


def test_tls_scenarios_admit_the_servers_that_speak_tls():
    tls = [scenarios.BY_NAME[n] for n in scenarios.TLS_NAMES]
    hello = scenarios.BY_NAME["hello-100"]
    data = None  # the classes' attributes only
    wc, granian, front, nginx, waitress = (
        peers.CLASSES[n](data) for n in ("waitress_c", "granian", "nginx-tls",
                                         "nginx", "waitress"))
    for sc in tls:
        assert sc.admits(wc) and sc.admits(front)
        # granian resumes sessions and cannot be told not to.
        assert sc.admits(granian) == sc.resume
        # nginx serves the files over its own TLS: the reference.
        assert sc.admits(nginx) and not sc.admits(waitress)
    assert [sc.name for sc in tls if not sc.resume] == ["tls-full-handshakes"]
    assert peers.nginx_session_cache(True).startswith("shared:")
    assert peers.nginx_session_cache(False) == "off"
    assert hello.admits(wc) and hello.admits(granian)
    assert not hello.admits(front)
    # Not in a full run: the servers and scenarios are named on purpose.
    assert not set(scenarios.TLS_NAMES) & set(scenarios.NAMES)
    assert "granian" not in peers.ALL and "nginx-tls" not in peers.ALL
    handshakes = scenarios.BY_NAME["tls-handshakes"]
    assert not handshakes.keep_alive
    argv = bench_run.wrk_argv(handshakes, 8443, 5, pinned=False)
    assert "https://127.0.0.1:8443/hello" in argv
    assert "Connection: close" in argv


def test_tls_target_rows():
    figures = {("hello-100", "waitress_c"): (100.0, 6.0),
               ("tls-hello-100", "waitress_c"): (80.0, 9.5),
               ("tls-hello-100", "granian"): (60.0, 10.0),
               ("hello-100", "nginx"): (200.0, 5.0),
               ("tls-hello-100", "nginx"): (150.0, 7.0),
               ("tls-handshakes", "waitress_c"): (5.0, 10.0),
               ("tls-handshakes", "nginx-tls"): (10.0, 10.0)}

    def get(sc, name):
        v = figures.get((sc, name))
        return None if v is None else report.summarize([run(v[0], cpu=v[1])])

    rows = report.target_checks_tls(get)
    assert rows[0][0] == "tls-hello-100 req/s >= 0.85 x hello-100"
    assert rows[0][1].endswith("(0.80 x)") and rows[0][3] is False
    assert ("tls-hello-100 req/s > granian", "80 (1.33 x)", "60", True) in rows
    assert ("tls-handshakes req/s vs nginx-tls", "5 (0.50 x)", "10",
            None) in rows
    assert ("reference: nginx (static) tls-hello-100 / hello-100", "0.75 x",
            "-", None) in rows
    # granian ran no hello-100 here: only nginx's figure to compare.
    assert ("server CPU TLS adds to a request (tls-hello-100 - hello-100)",
            "3.5 us", "nginx 2.0 us", None) in rows
    assert report.target_checks_tls(lambda sc, name: None) == []


def test_nginx_tls_command_starts_the_backend_first(tmp_path):
    class Data:
        dir = str(tmp_path)

        def nginx_tls_conf(self, port, sock, resume=True):
            return os.path.join(self.dir, "conf")

    front = peers.NginxTLS(Data())
    front.binary = "/usr/sbin/nginx"
    argv = front.command(8443, scenarios.BY_NAME["tls-hello-100"])
    assert argv[:2] == ["sh", "-c"]
    sock = argv[4]
    assert sock.endswith(".sock") and "--unix-socket=" + sock in argv
    assert argv[-1] == "apps:app"
    assert "exec /usr/sbin/nginx" in argv[2]


def test_new_scenarios_in_the_default_run():
    assert scenarios.BY_NAME["1mib-16"].conns == 16
    assert "hello-1000" in scenarios.UNPINNED
    assert scenarios.BY_NAME["slowread1k"].kind == "slowread"


def own(**figures):
    return dict({"server": "x", "notes": [], "errors": 0}, **figures)


def issue_11_results():
    s = report.summarize
    return {
        ("unpinned", "hello-100", "waitress_c"): s([run(110)]),
        ("unpinned", "hello-100", "bjoern"): s([run(100)]),
        ("pinned", "hello-100", "waitress_c"): s([run(120, cpu=6.5)]),
        ("pinned", "hello-100", "bjoern"): s([run(100)]),
        ("pinned", "hello-1000", "waitress_c"): s([run(90, errors=2)]),
        ("pinned", "hello-1000", "bjoern"): s([run(100)]),
        ("pinned", "1mib-16", "waitress_c"): s([run(30)]),
        ("pinned", "1mib-16", "bjoern"): s([run(20)]),
        ("pinned", "1mib-16", "nginx"): s([run(50)]),
        ("pinned", "idle10k", "waitress_c"): s([own(
            opened=10, wanted=10, still_open=10, rss_per_conn=300.0,
            new_p50=1.0, new_max=12.0, rss=1)]),
        ("pinned", "slowread1k", "waitress_c"): s([own(
            opened=1000, wanted=1000, rss_growth=300 * 1024 ** 2,
            in_kernel=200 * 1024 ** 2, queued=800 * 1024 ** 2,
            growth_ratio=0.375, quiet_s=2.5, whole=1000, read_s=4.0,
            rss=1)]),
        ("pinned", "slowread1k", "waitress"): s([
            own(opened=1000, wanted=1000, rss_growth=2, in_kernel=1,
                queued=1, growth_ratio=2.0, quiet_s=2.0, whole=990,
                read_s=4.0, rss=1, errors=10),
            {"error": "boom", "notes": []}]),
        ("pinned", "longpoll100", "waitress_c"): s([own(
            answered=100, wanted=100, cpu_pct=0.4, window_s=7.0,
            last_s=10.1, rss=1)]),
    }


def test_target_checks_11():
    results = issue_11_results()
    checks = report.target_checks_11(
        lambda p, sc, n: results.get((p, sc, n)), "pinned",
        ["bjoern", "waitress"])
    met = {what: ok for what, _, _, ok in checks}
    assert met == {
        "hello-100 unpinned req/s >= bjoern": True,
        "hello-1000 pinned req/s >= bjoern": False,
        "hello-1000 pinned errors = 0": False,
        "hello-100 pinned server CPU per request <= 6 us": False,
        # nginx is not a WSGI peer: bjoern is the best.
        "1mib-16 >= best peer": True,
        "idle10k RSS per connection <= 320 B": True,
        "idle10k new request < 10 ms (worst of 11)": False,
        "slowread1k errors = 0 (every response whole)": True,
        "slowread1k RSS growth <= 2x the bytes the server holds": True,
        "longpoll100 server CPU < 1% of a core, 100 parked": True,
    }
    shown = {what: (ours, bound) for what, ours, bound, _ in checks}
    assert shown["slowread1k RSS growth <= 2x the bytes the server holds"] \
        == ("0.38 (300.0 MB for 800.0 MB)", "2.00")
    assert shown["1mib-16 >= best peer"] == ("30", "20 (bjoern)")


def test_report_renders_issue_11_tables():
    """The new scenarios get their own tables, no req/s matrix rows, and a
    single-threaded server an n/a in longpoll100."""
    class Opts(_Opts):
        passes = [("pinned", ["hello-100", "slowread1k", "longpoll100"])]

    servers = [_Server("waitress_c"), _Server("waitress"),
               _Server("bjoern", threaded=False)]
    text = report.Report(Opts(), servers, issue_11_results(), 0,
                         1.0).render()
    assert "## waitress_c against the targets of issue 5" in text
    assert "## waitress_c against the targets of issue 11" in text
    lines = text.splitlines()
    matrix = lines.index("### req/s (median)")
    assert not any(x.startswith("| slowread1k") or x.startswith(
        "| longpoll100") for x in lines[matrix:matrix + 8])
    assert ("| waitress_c | 1,000 of 1,000 | 200.0 | 800.0 | 300.0 | 0.38x "
            "| 2.5 | 1,000 | 4.0 | 0 | 0.0 |  |") in lines
    assert any(x.startswith("| waitress | 1,000 of 1,000 |")
               and x.endswith("| 10 | 0.0 | 1 of 2 rounds failed: boom |")
               for x in lines)
    assert ("| waitress_c | 100 of 100 | 0.40 | 7.0 | 10.1 | 0 | 0.0 |  |"
            in lines)
    assert "| bjoern | n/a: one thread |  |  |  |  |  |  |" in lines


class _Opts:
    passes = [("pinned", ["hello-100", "chunked", "pipeline16"])]
    commit = "abc1234"
    command = "benchmarks/run.py"
    duration, warmup, rounds = 5, 1, 1
    server_cpu, client_cpu = 0, 1


class _Server:
    def __init__(self, name, wsgi=True, threaded=True):
        self.name, self.wsgi, self.reason = name, wsgi, None
        self.threaded = threaded
        self.version, self.how = "1.0", "how " + name


def test_results_file_reads_back_and_charts(tmp_path):
    """A report as run.py writes it is read back (req/s matrix and header)
    and drawn as a PNG with one panel per scenario."""
    pytest.importorskip("matplotlib")
    servers = [_Server("waitress_c"), _Server("waitress"), _Server("bjoern"),
               _Server("nginx", wsgi=False)]
    fails = {"rounds": 1, "good": 0, "failures": ["boom"], "notes": []}
    results = {
        ("pinned", "hello-100", "waitress_c"):
            report.summarize([run(130240.0)]),
        ("pinned", "hello-100", "waitress"): report.summarize([run(17648.0)]),
        ("pinned", "hello-100", "bjoern"):
            report.summarize([run(142267.0, errors=3)]),
        ("pinned", "hello-100", "nginx"): report.summarize([run(153040.0)]),
        ("pinned", "chunked", "waitress_c"): report.summarize([run(1000.0)]),
        ("pinned", "chunked", "waitress"): report.summarize([run(500.0)]),
        ("pinned", "chunked", "bjoern"): fails,
        ("pinned", "pipeline16", "waitress_c"): fails,
        ("pinned", "pipeline16", "waitress"): fails,
        ("pinned", "pipeline16", "bjoern"): fails,
    }
    text = report.Report(_Opts(), servers, results, 0, 1.0).render()
    md = tmp_path / "2026-01-01-abc1234.md"
    md.write_text(text)

    res = report.parse_results(text)
    assert res["commit"] == "abc1234"
    names, rows = res["passes"]["pinned"]
    assert names == ["waitress_c", "waitress", "bjoern", "nginx"]
    assert rows == [
        ("hello-100", [130240.0, 17648.0, 142267.0, 153040.0]),
        ("chunked", [1000.0, 500.0, "fails", None]),
        ("pipeline16", ["fails", "fails", "fails", None]),
    ]

    png = tmp_path / "chart.png"
    # pipeline16 has no figure at all: two panels are drawn.
    assert report.write_chart(str(md), str(png)) == 2
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert width >= 600 and height >= 300


def test_newest_results_prefers_full_runs(tmp_path):
    for name in ("2026-01-01-aaa.md", "2026-01-02-bbb-quick.md",
                 "2026-01-02-ccc-partial.md", "notes.txt"):
        (tmp_path / name).write_text("# x\n")
    assert report.newest_results(str(tmp_path)).endswith("2026-01-01-aaa.md")
    (tmp_path / "empty").mkdir()
    assert report.newest_results(str(tmp_path / "empty")) is None


def test_progress_line_of_each_kind():
    import run
    slow = own(opened=1000, wanted=1000, rss_growth=MIB, in_kernel=0,
               queued=2 * MIB, growth_ratio=0.5, quiet_s=2.0, whole=1000,
               read_s=3.0, rss=1)
    idle = own(opened=10, wanted=10, still_open=10, rss_per_conn=300.0,
               new_p50=1.0, new_max=2.0, rss=1)
    poll = own(answered=100, wanted=100, cpu_pct=0.25, window_s=7.0,
               last_s=10.0, rss=1)
    assert "RSS +1.0 MB for 2.0 MB held (0.50x)" in run.progress_text(slow)
    assert "300 B per connection" in run.progress_text(idle)
    assert "server CPU 0.25% of a core" in run.progress_text(poll)


# ------------------------------------------------------------ --base REV

SHA = "3925458cee5ea7751925bbd793d6d2869321b503"


def base_server(rev="main", sha=SHA, short=SHA[:7]):
    return peers.WaitressCAt(None, rev, sha, short)


def test_base_option_parsing():
    import run
    opts = run.parse_args(["--base", "main", "--servers", "bjoern",
                           "--scenarios", "hello-100"])
    # waitress_c is what the base is compared with: added when missing.
    assert opts.base == "main"
    assert opts.server_names == ["waitress_c", "bjoern"]
    opts = run.parse_args(["--servers", "bjoern,waitress_c", "--base",
                           "HEAD~3"])
    assert opts.server_names == ["bjoern", "waitress_c"]
    assert run.parse_args(["--quick"]).base is None
    with pytest.raises(SystemExit):
        run.parse_args(["--base", " "])


def test_base_server_naming_and_settings():
    srv = base_server()
    assert srv.name == "waitress_c@3925458" == peers.base_name("3925458")
    assert srv.is_base and not peers.WaitressC(None).is_base
    assert srv.venv.path == os.path.join(peers.VENVS, "waitress_c-3925458")
    assert "3925458" in srv.how and "`main`" in srv.how
    # The same arguments as the working tree's, from its own venv.
    tree = peers.WaitressC(None)
    for sc in ("hello-100", "hello-1000", "idle10k", "longpoll100"):
        scen = scenarios.BY_NAME[sc]
        mine, theirs = tree.command(8080, scen), srv.command(8080, scen)
        assert theirs[0] == srv.venv.bin("waitress-c-serve")
        assert mine[1:] == theirs[1:]
    assert (srv.pinnable, srv.threaded) == (tree.pinnable, tree.threaded)


def test_base_comes_right_after_waitress_c():
    import run
    opts = run.parse_args(["--base", "main", "--servers",
                           "bjoern,waitress_c,waitress_c"])
    opts.base_sha, opts.base_short = SHA, SHA[:7]
    names = [s.name for s in run.make_servers(opts, None)]
    assert names == ["bjoern", "waitress_c", "waitress_c@3925458",
                     "waitress_c#2"]
    opts.base = None
    assert [s.name for s in run.make_servers(opts, None)] == [
        "bjoern", "waitress_c", "waitress_c#2"]


def test_base_run_file_name():
    import run
    opts = run.parse_args(["--base", "main", "--scenarios", "hello-100"])
    opts.base_short = "3925458"
    assert run.run_kind(opts) == "-vs-3925458-partial"
    opts = run.parse_args(["--base", "main"])
    opts.base_short = "3925458"
    assert run.run_kind(opts) == "-vs-3925458"
    assert run.run_kind(run.parse_args([])) == ""


def git_repo(path):
    def git(*args):
        subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c",
                        "user.email=t@t", "-c", "commit.gpgsign=false"]
                       + list(args), check=True, capture_output=True)
    git("init", "-q")
    (path / "setup.py").write_text("old\n")
    git("add", "setup.py")
    git("commit", "-q", "-m", "one")
    return git


def test_base_revision_resolved_and_exported(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("no git")
    repo = tmp_path / "repo"
    repo.mkdir()
    git = git_repo(repo)
    (repo / "setup.py").write_text("new, not committed\n")
    full, short = peers.resolve_revision("HEAD", str(repo))
    assert len(full) == 40 and full.startswith(short) and len(short) >= 7
    assert peers.resolve_revision(full[:10], str(repo)) == (full, short)
    for bad in ("nope", "HEAD~5", "--all", ""):
        with pytest.raises(ValueError):
            peers.resolve_revision(bad, str(repo))
    dest = tmp_path / "src"
    (dest / "stale").mkdir(parents=True)
    assert peers.export_revision(full, str(dest), str(repo)) is None
    # The commit's files, not the working tree's; the folder made afresh.
    assert sorted(os.listdir(dest)) == ["setup.py"]
    assert (dest / "setup.py").read_text() == "old\n"
    git("tag", "v1")
    assert peers.resolve_revision("v1", str(repo)) == (full, short)


def base_results():
    s = report.summarize
    base = "waitress_c@3925458"
    return {
        ("pinned", "hello-100", "waitress_c"): s([run(110, cpu=9.0),
                                                  run(100, cpu=10.0)]),
        ("pinned", "hello-100", base): s([run(100, cpu=10.0)]),
        ("pinned", "hello-100", "bjoern"): s([run(150)]),
        ("pinned", "1mib", "waitress_c"): s([run(10)]),
        ("pinned", "1mib", base): s([run(20)]),
        ("pinned", "1mib", "bjoern"): s([run(12)]),
        ("pinned", "pipeline16", "waitress_c"): s([run(50)]),
        ("pinned", "pipeline16", base): {
            "rounds": 1, "good": 0, "failures": ["boom"], "notes": []},
        ("pinned", "idle10k", "waitress_c"): s([own(
            opened=10, wanted=10, still_open=10, rss_per_conn=300.0,
            new_p50=1.0, new_max=2.0, rss=1)]),
        ("pinned", "idle10k", base): s([own(
            opened=10, wanted=10, still_open=10, rss_per_conn=400.0,
            new_p50=1.0, new_max=4.0, rss=1)]),
    }


def test_report_rows_against_the_base():
    class Opts(_Opts):
        passes = [("pinned", ["hello-100", "1mib", "pipeline16", "idle10k"])]

    servers = [_Server("waitress_c"), base_server(), _Server("bjoern")]
    text = report.Report(Opts(), servers, base_results(), 0, 1.0).render()
    lines = text.splitlines()
    assert ("- base: waitress_c@3925458, waitress_c built from `main` (%s), "
            "interleaved with the working tree's in every round, with the "
            "same settings" % SHA) in lines
    head = lines.index("## waitress_c against waitress_c@3925458 (`main`)")
    table = lines[head:lines.index("", head + 4)]
    assert table[4:] == [
        "| pass | scenario | figure | waitress_c | waitress_c@3925458 "
        "| waitress_c / waitress_c@3925458 | spread |",
        "|---|---|---|---|---|---|---|",
        "| pinned | hello-100 | req/s | 105 | 100 | 1.05x | 10% / - |",
        "| pinned | hello-100 | CPU us/req | 9.5 | 10.0 | 0.95x |  |",
        "| pinned | 1mib | req/s | 10 | 20 | 0.50x | - / - |",
        "| pinned | 1mib | CPU us/req | 10.0 | 10.0 | 1.00x |  |",
        "| pinned | pipeline16 | req/s | 50 | fails | - | - / - |",
        "| pinned | pipeline16 | CPU us/req | 10.0 | fails | - |  |",
        "| pinned | idle10k | RSS per connection | 300 B | 400 B | 0.75x "
        "|  |",
        "| pinned | idle10k | new request max ms | 2.00 | 4.00 | 0.50x |  |",
    ]
    # The comparison comes before the targets, and the base, beside
    # waitress_c in every table, is no peer of it there.
    assert head < lines.index(
        "## waitress_c against the targets of issue 5 (pinned)")
    assert "| 1mib >= best peer | 10 | 12 (bjoern) | **no** |" in lines
    matrix = lines.index("### req/s (median)")
    assert lines[matrix + 2] == ("| scenario | waitress_c "
                                 "| waitress_c@3925458 | bjoern |")
    assert any(x.startswith("| waitress_c@3925458 | 100 | - | 0.67x |")
               for x in lines)
    # Without a base there is no such section.
    plain = report.Report(Opts(), [_Server("waitress_c"), _Server("bjoern")],
                          base_results(), 0, 1.0).render()
    assert "waitress_c@" not in plain


def test_base_rows_when_one_side_did_not_run():
    s = report.summarize([run(100), run(150), run(50)])
    assert report.base_rows(None, None, "load") == []
    assert report.base_rows(s, None, "load")[0] == [
        "req/s", "100", "-", "-", "100% / -"]
    poll = report.summarize([own(answered=100, wanted=100, cpu_pct=0.5,
                                 window_s=7.0, last_s=10.0, rss=1)])
    assert report.base_rows(poll, poll, "longpoll") == [
        ["server CPU % of a core", "0.50", "0.50", "1.00x", ""]]


def test_newest_results_leaves_out_runs_against_a_base(tmp_path):
    for name in ("2026-01-01-aaa.md", "2026-01-02-bbb-vs-ccc.md"):
        (tmp_path / name).write_text("# x\n")
    assert report.newest_results(str(tmp_path)).endswith("2026-01-01-aaa.md")


def test_python_option_adds_waitress_c_on_each_interpreter(monkeypatch):
    import run

    monkeypatch.setattr(peers, "find_python", lambda spec: (
        ("/usr/bin/python" + spec, True) if spec == "3.15"
        else ("/opt/py/bin/python" + spec, False)))
    opts = run.parse_args(["--servers", "waitress_c", "--scenarios",
                           "hello-100", "--python", "3.13,3.15"])
    assert opts.pythons == ["3.13", "3.15"]
    assert run.run_kind(opts) == "-partial"
    servers = run.make_servers(opts, data=None)
    assert [s.name for s in servers] == [
        "waitress_c", "waitress_c-py3.13", "waitress_c-py3.15"]
    host, chrooted = servers[1], servers[2]
    assert host.venv.creator == "/opt/py/bin/python3.13"
    assert host.venv.prefix == []
    scenario = scenarios.BY_NAME["hello-100"]
    assert host.command(8000, scenario)[0] == host.venv.bin("waitress-c-serve")
    argv = chrooted.command(8000, scenario)
    assert argv[:5] == [peers.PYTHONS_SH, "run", "-C", peers.WORK, "env"]
    assert chrooted.venv.bin("waitress-c-serve") in argv
    assert chrooted.venv.prefix == [peers.PYTHONS_SH, "run", "-C", peers.WORK]


# ------------------------------------------------------- HTTP/2 (h2load)

H2LOAD_OUT = """starting benchmark...
Application protocol: h2c

finished in 5.00s, 140348.20 req/s, 5.23MB/s
requests: 701741 total, 701841 started, 701741 done, 701700 succeeded, 41 failed, 0 errored, 0 timeout
status codes: 701700 2xx, 0 3xx, 2 4xx, 3 5xx
traffic: 26.15MB (27420560) total, 2.68MB (2806964) headers (space savings 90.04%), 8.70MB (9122633) data
                     min         max         mean         sd        +/- sd
time for request:      247us     34.88ms      7.02ms      2.14ms    80.00%
"""


def test_h2_scenarios_admit_h2_servers_only():
    h2s = [s for s in scenarios.SCENARIOS if s.kind == "h2load"]
    assert {s.name for s in h2s} == {"h2-hello-100x10", "h2-hello-1x100",
                                     "h2-sleep10ms-1x100", "h2-1mib"}
    one = scenarios.BY_NAME["h2-hello-1x100"]
    assert (one.conns, one.streams, one.size) == (1, 100, 13)
    assert scenarios.BY_NAME["h2-1mib"].size == MIB
    ours, nginx = _Server("waitress_c"), _Server("nginx", wsgi=False)
    ours.h2 = nginx.h2 = True
    assert one.admits(ours)
    assert not one.admits(_Server("waitress"))
    assert not one.admits(nginx)
    assert peers.WaitressC.h2 and peers.Granian.h2 and peers.GunicornH2.h2
    assert not getattr(peers.Gunicorn, "h2", False)


def test_h2load_output_parsed():
    import run
    figures, err = run.parse_h2load(H2LOAD_OUT)
    assert err is None
    assert figures["rps"] == 140348.2
    assert (figures["total"], figures["succeeded"], figures["failed"]) == (
        701741, 701700, 41)
    assert (figures["ok2xx"], figures["bad"], figures["data"]) == (
        701700, 5, 9122633)
    assert figures["mean_ms"] == 7.02
    assert run.parse_h2load("no figures") == (None, None)
    figures, err = run.parse_h2load(H2LOAD_OUT.replace("h2c", "http/1.1"))
    assert figures is None and "h2c" in err


def test_h2_peers_flags_only_in_h2_scenarios():
    h2, h1 = scenarios.BY_NAME["h2-hello-100x10"], scenarios.BY_NAME[
        "hello-100"]
    g = peers.Granian(None)
    assert g.command(8000, h2)[g.command(8000, h2).index("--http") + 1] == "2"
    assert g.command(8000, h1)[g.command(8000, h1).index("--http") + 1] == "1"
    gu = peers.GunicornH2(None)
    assert "--http2-cleartext=prior-knowledge" in gu.command(8000, h2)
    assert not any(a.startswith("--http") for a in gu.command(8000, h1))
    assert gu.pip_specs() == ["gunicorn[http2]"]
    import run
    argv = run.h2load_argv(h2, 8000, pinned=True, duration=5)
    assert argv[:3] == ["taskset", "-c", str(run.CLIENT_CPU)]
    assert ["-c", "100", "-m", "10"] == argv[4:8] and "-D" in argv
