"""The public API type-checks under ``mypy --strict``: the python blocks of
docs/usage.rst (as tests/test_docs.py extracts them), and a small program
that uses every attribute ``create_server()``'s result documents.

mypy follows the imports into waitress_c with ``--follow-imports=silent``:
the package's signatures are what the examples are checked against, while
the package's own bodies are not held to ``--strict`` here."""

import os
import subprocess
import sys

import pytest
from test_docs import BLOCKS

pytest.importorskip("mypy", reason="mypy is in the test extra")

TYPED_EXAMPLE = '''\
from typing import Iterable, List, Tuple
from wsgiref.types import StartResponse, WSGIEnvironment

import waitress_c
from waitress_c import ServerProtocol, create_server, serve


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def describe(server: ServerProtocol) -> str:
    listen: List[Tuple[str, str]] = server.effective_listen
    host: str = server.effective_host
    port: str = server.effective_port
    schemes: List[str] = server.listen_schemes
    server.print_listen("Serving on {scheme}://{}:{}")
    return "%s %s %s:%s %r %r" % (listen, schemes, host, port, server.application,
                                  server.adj)


single: ServerProtocol = create_server(app, listen="127.0.0.1:0")
several: ServerProtocol = create_server(app, listen="127.0.0.1:0", workers=2)
for s in (single, several):
    print(describe(s))
    s.close()
    s.run()
version: str = waitress_c.__version__
if False:
    serve(app, listen="127.0.0.1:0", threads=2)
    waitress_c.serve_paste(app, {}, listen="127.0.0.1:0")
'''


def mypy(tmp_path, files):
    import waitress_c

    # PasteDeploy (the usage page's PasteDeploy block) has no types; nothing
    # else is let off.
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n\n[mypy-paste.*]\nignore_missing_imports = True\n")
    # The package where it is imported from: an editable install is an
    # import hook, which mypy does not follow.  An installed one (make
    # sdist-test) mypy finds itself, and refuses site-packages in MYPYPATH.
    env = dict(os.environ)
    parent = os.path.dirname(os.path.dirname(waitress_c.__file__))
    if os.path.basename(parent) != "site-packages":
        env["MYPYPATH"] = parent
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--config-file", str(config), "--cache-dir", str(tmp_path / "mypy-cache"),
         "--python-version", "%d.%d" % sys.version_info[:2]] + [str(f) for f in files],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )


def test_usage_examples_and_typed_example_pass_mypy_strict(tmp_path):
    files = []
    first = BLOCKS[0][1].split('if __name__ == "__main__":')[0]
    for marker, source, line in BLOCKS:
        if marker == "runs after the first block":
            source = first + "\n" + source
        path = tmp_path / ("usage_line%d.py" % line)
        path.write_text(source)
        files.append(path)
    example = tmp_path / "typed_example.py"
    example.write_text(TYPED_EXAMPLE)
    files.append(example)
    out = mypy(tmp_path, files)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout, out.stdout


def test_mypy_finds_a_wrong_attribute(tmp_path):
    """The check has teeth: an attribute the protocol lacks is an error."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from waitress_c import create_server\n"
        "def app(environ: object, start_response: object) -> list[bytes]:\n"
        "    return []\n"
        "server = create_server(app, listen='127.0.0.1:0')\n"
        "print(server.effective_prot)\n"
    )
    out = mypy(tmp_path, [bad])
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'has no attribute "effective_prot"' in out.stdout, out.stdout


def test_the_package_declares_its_types():
    import waitress_c

    here = os.path.dirname(waitress_c.__file__)
    assert os.path.isfile(os.path.join(here, "py.typed"))
