"""The documentation says what the code does.

* Every ``waitress-c-serve --flag`` on a command line in docs/*.rst or
  README.rst is one of the runner's options.
* Every python code block of docs/usage.rst runs.  Each is preceded by an
  rst comment that says how (invisible in the HTML)::

      .. usage-test: serves
      .. usage-test: runs after the first block
      .. usage-test: app NAME
      .. usage-test: skip

  ``serves``: the block is a program that serves forever; it runs as a
  script with its port 8080 turned into 0, answers a GET, and stops with
  status 0 on SIGTERM.  ``runs``: a script that ends by itself with status
  0 (``after the first block``: the first block's definitions come first).
  ``app NAME``: the block defines the WSGI application NAME, served here
  on port 0 and asked for ``/``.  ``skip``: not run (the page says why).
* The benchmark chart shows the newest full results file.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from http_reader import Reader
from servers import ROOT, Server

from waitress_c import create_server
from waitress_c.runner import _getopt_spec

DOCS = os.path.join(ROOT, "docs")
USAGE = os.path.join(DOCS, "usage.rst")
MARKER = re.compile(r"^\.\. usage-test: (.+)$")


def rst_files():
    names = sorted(n for n in os.listdir(DOCS) if n.endswith(".rst"))
    return [os.path.join(DOCS, n) for n in names] + [os.path.join(ROOT, "README.rst")]


def command_lines(text):
    """The waitress-c-serve command lines of an rst text, backslash
    continuations joined."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        # In a literal block (indented), not in the prose.
        if "waitress-c-serve" in line and line[:1] == " " and (
            line.lstrip().startswith(("waitress-c-serve", "$ waitress-c-serve", "CMD"))
        ):
            cmd = line
            while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd.rstrip()[:-1] + " " + lines[i]
            yield cmd[cmd.index("waitress-c-serve"):]
        i += 1


def test_every_flag_on_a_docs_command_line_exists():
    short, long_opts, _, aliases = _getopt_spec()
    known = {"--" + o.rstrip("=") for o in long_opts}
    seen = set()
    for path in rst_files():
        with open(path, encoding="utf-8") as f:
            for cmd in command_lines(f.read()):
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", cmd):
                    seen.add(flag)
                    assert flag in known, "%s: %s is not an option: %s" % (
                        os.path.basename(path), flag, cmd)
                for flag in re.findall(r"(?<![\w-])-([a-zA-Z])\b", cmd):
                    assert flag in short, "%s: -%s is not an option: %s" % (
                        os.path.basename(path), flag, cmd)
    # The check saw the docs' command lines (a broken extraction would
    # find none and pass).
    assert {"--listen", "--threads", "--workers", "--unix-socket"} <= seen, seen


# -- docs/usage.rst's python blocks -------------------------------------------


def usage_blocks():
    """[(marker, source, line number)] of the python code blocks."""
    with open(USAGE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks = []
    marker = None
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            marker = m.group(1).strip()
        elif lines[i].strip() == ".. code-block:: python":
            start = i + 1
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                body.append(lines[i][4:])
                i += 1
            source = "\n".join(body).strip("\n") + "\n"
            assert marker, "usage.rst:%d: a python block without a usage-test marker" % start
            blocks.append((marker, source, start))
            marker = None
            continue
        i += 1
    return blocks


BLOCKS = usage_blocks()


def first_block_definitions():
    """The first block without its ``if __name__ == "__main__":`` part."""
    source = BLOCKS[0][1]
    return source.split('if __name__ == "__main__":')[0]


def block_id(block):
    return "line%d-%s" % (block[2], block[0].split()[0])


def test_usage_has_blocks_of_every_kind():
    kinds = {b[0].split()[0] for b in BLOCKS}
    assert {"serves", "runs", "app"} <= kinds, kinds


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[0] == "serves"], ids=block_id)
def test_usage_block_serves(block, tmp_path):
    _, source, _ = block
    assert "127.0.0.1:8080" in source
    script = tmp_path / "example.py"
    # serve() leaves the waitress_c logger's level alone: the "Serving on"
    # line this waits for needs INFO.
    script.write_text(
        'import logging; logging.getLogger("waitress_c").setLevel("INFO")\n'
        + source.replace("127.0.0.1:8080", "127.0.0.1:0")
    )
    server = Server([sys.executable, str(script)], cwd=tmp_path, timeout=30)
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/" % server.port, timeout=10) as r:
            assert r.status == 200
            assert r.read() == b"Hello, world!\n"
    finally:
        rc, output = server.stop(signal.SIGTERM)
    assert rc == 0, output


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[0].startswith("runs")], ids=block_id)
def test_usage_block_runs(block, tmp_path):
    marker, source, _ = block
    if marker == "runs after the first block":
        source = first_block_definitions() + "\n" + source
    else:
        assert marker == "runs", marker
    script = tmp_path / "example.py"
    script.write_text(source)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def served(app):
    """The responses to GET / from ``app`` served on port 0 in a thread
    here (``http_reader.Response``), interim ones first."""
    server = create_server(app, listen="127.0.0.1:0", threads=2)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: docs\r\nConnection: close\r\n\r\n")
            reader = Reader(sock, timeout=10)
            responses = []
            while True:
                resp = reader.response()
                responses.append(resp)
                if resp.status >= 200:
                    return responses
    finally:
        server.close()
        thread.join(timeout=30)
        assert not thread.is_alive()


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[0].startswith("app ")], ids=block_id)
def test_usage_block_app_answers(block, tmp_path):
    marker, source, _ = block
    name = marker.split()[1]
    namespace = {"__name__": "usage_example"}
    exec(compile(source, USAGE, "exec"), namespace)
    if "BIG_FILE" in namespace:  # the file the example sends: one of ours
        big = tmp_path / "big.iso"
        big.write_bytes(b"x" * 100000)
        namespace["BIG_FILE"] = str(big)
    responses = served(namespace[name])
    final = responses[-1]
    assert final.status == 200, responses
    assert final.body, responses
    if name == "download":
        assert final.body == b"x" * 100000
    if name == "page":  # its 103 first, with the two Link headers
        assert [r.status for r in responses] == [103, 200], responses
        assert [v for n, v in responses[0].headers if n.lower() == "link"] == [
            "</static/app.css>; rel=preload; as=style",
            "</static/app.js>; rel=preload; as=script",
        ], responses


def test_usage_skipped_blocks_say_why():
    with open(USAGE, encoding="utf-8") as f:
        text = f.read()
    skipped = [b for b in BLOCKS if b[0] == "skip"]
    assert len(skipped) == text.count("(not run by the\ndocs test")


# -- the benchmark chart ------------------------------------------------------


def test_chart_shows_the_newest_full_results_file():
    bench = os.path.join(ROOT, "benchmarks")
    if not os.path.isdir(os.path.join(bench, "results")):
        pytest.skip("no benchmarks/results in this tree")
    sys.path.insert(0, bench)
    try:
        import report
    finally:
        sys.path.remove(bench)
    with open(os.path.join(DOCS, "_static", "bench-source.txt"), encoding="utf-8") as f:
        stamp = os.path.basename(f.read().strip())
    with open(os.path.join(DOCS, "benchmarks.rst"), encoding="utf-8") as f:
        page = f.read()
    assert "benchmarks/results/%s" % stamp in page, "docs/benchmarks.rst does not name %s" % stamp
    # Which file is newest is known from git (commit times); an unpacked
    # sdist has only its files' times.
    try:
        in_git = subprocess.run(["git", "ls-files", "--error-unmatch", "results"], cwd=bench,
                                capture_output=True, timeout=30).returncode == 0
    except FileNotFoundError:  # no git at all (the chroot of `make pythons`)
        in_git = False
    if not in_git:
        pytest.skip("not a git checkout: the newest results file is unknown")
    newest = os.path.basename(report.newest_results())
    assert stamp == newest, "run `make chart`: the chart is from %s, the newest run is %s" % (
        stamp, newest)


# -- the wheels ---------------------------------------------------------------


def test_installation_page_names_the_tags_the_wheel_test_expects():
    """tests/test_wheel.py checks the wheels against tools/wheel.sh's two
    expected tags (without TLS and with it); the installation page and the
    README name those two, and no other."""
    with open(os.path.join(ROOT, "tools", "wheel.sh"), encoding="utf-8") as f:
        script = f.read()
    expected = set()
    for var in ("WHEEL_EXPECT_PLAT", "WHEEL_EXPECT_TLS_PLAT"):
        m = re.search(var + r":-(manylinux_\d+_\d+)", script)
        assert m, var
        expected.add(m.group(1))
    assert len(expected) == 2, expected
    for path in (os.path.join(DOCS, "installation.rst"), os.path.join(ROOT, "README.rst")):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        tags = set(re.findall(r"manylinux_\d+_\d+", text))
        assert tags == expected, (path, tags)
        assert "neither is bundled" not in text, path


def test_every_pid_file_read_in_the_docs_is_written_by_pid():
    """A ``$(cat FILE)`` in an example reads a pid file that an example of
    the same page writes with ``--pid=FILE`` (the flag exists:
    test_every_flag_on_a_docs_command_line_exists)."""
    read = 0
    for path in rst_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for pidfile in re.findall(r"\$\(cat (\S+)\)", text):
            read += 1
            assert "--pid=%s " % pidfile in text, (os.path.basename(path), pidfile)
    assert read, "no pid file read in the docs: the check checks nothing"
