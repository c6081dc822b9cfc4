"""Fixtures: a real waitress_c server in a subprocess (tests/servers.py),
and raw-socket clients (tests/http_reader.py).  Every wait is bounded;
traffic goes to 127.0.0.1 or a unix socket only."""

import pytest

# Re-exported: tests written before tests/servers.py and tests/http_reader.py
# import these from here.
from http_reader import read_response, recv_all  # noqa: F401
from servers import HERE, ROOT, SLOW, ServerProcess, UnixHTTPConnection, proc_rss_kb  # noqa: F401


@pytest.fixture
def server_factory(tmp_path):
    """server_factory(app_name, **adjustments) -> a started ServerProcess."""
    started = []

    def make(app="hello", **kw):
        if kw.get("unix_socket") is True:
            kw["unix_socket"] = str(tmp_path / "wc.sock")
        s = ServerProcess(app, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        try:
            s.close()
        except AssertionError:
            pass


@pytest.fixture(params=["tcp", "unix"])
def transport(request):
    return request.param


@pytest.fixture
def server(server_factory, transport):
    """A hello-world-and-friends server over TCP and over a unix socket."""
    if transport == "unix":
        return server_factory("router", unix_socket=True)
    return server_factory("router")


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA, server and client certificates for the TLS tests
    (tests/tls_pki.py), made once per session."""
    from tls_pki import make_pki

    d = tmp_path_factory.mktemp("pki")
    make_pki(d)
    return d
