"""Checks of the harness's own logic that need no server: the response
parser behind the preflight, the scenarios' requests, the medians and the
target table.  Run with ``.venv/bin/python -m pytest benchmarks``."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402

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


class _Opts:
    passes = [("pinned", ["hello-100", "chunked", "pipeline16"])]
    commit = "abc1234"
    command = "benchmarks/run.py"
    duration, warmup, rounds = 5, 1, 1
    server_cpu, client_cpu = 0, 1


class _Server:
    def __init__(self, name, wsgi=True):
        self.name, self.wsgi, self.reason = name, wsgi, None
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
