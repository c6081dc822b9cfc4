"""TLS session resumption (tls_session_cache, tls_session_timeout): a
client that comes back with its session skips the certificate, from a
cache in the server process; real handshakes with python's ssl and
openssl s_client against a server in a subprocess.  Traffic goes to
127.0.0.1 only; every wait is bounded."""

import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from servers import HERE, SLOW, Server, script
from test_tls import APP, client_ctx, get_to_the_end, tls_server, tool_env

from waitress_c import _core
from waitress_c.adjustments import Adjustments

pytestmark = pytest.mark.skipif(
    not _core.HAVE_TLS, reason="this build has no TLS (built with WC_NO_TLS=1)"
)

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def visit(port, ctx, session=None, name="localhost"):
    """One GET / on a new connection, offering `session`: (the TLS keys of
    the request's environ, the session to come back with, whether the
    client saw its session resumed)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW)
    with ctx.wrap_socket(raw, server_hostname=name, session=session) as s:
        return get_to_the_end(s), s.session, s.session_reused


def ctx_for(pki, version, cert=None):
    return client_ctx(pki, cert, minimum_version=version, maximum_version=version)


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
def test_a_client_that_comes_back_resumes(server_factory, pki, version):
    srv = tls_server(server_factory, pki)
    ctx = ctx_for(pki, version)
    env, session, reused = visit(srv.port, ctx)
    assert (env["SSL_SESSION_RESUMED"], reused) == ("Initial", False)
    for _ in range(3):      # each visit leaves the session to come back with
        env, session, reused = visit(srv.port, ctx, session)
        assert (env["SSL_SESSION_RESUMED"], reused) == ("Resumed", True)
        assert env["SSL_PROTOCOL"] == version.name.replace("v1_", "v1.")
    # A client without a session makes a full handshake.
    assert visit(srv.port, ctx)[0]["SSL_SESSION_RESUMED"] == "Initial"


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
def test_a_resumed_session_keeps_its_client_certificate(server_factory, pki, version):
    """mTLS: the resumed connection is the verified client's, and the
    application sees it as after the full handshake."""
    srv = tls_server(server_factory, pki, ca_certs=str(pki / "ca.pem"),
                     cert_reqs="required")
    ctx = ctx_for(pki, version, cert="client")
    first, session, _ = visit(srv.port, ctx)
    again, _, reused = visit(srv.port, ctx, session)
    assert reused and again["SSL_SESSION_RESUMED"] == "Resumed"
    for key in ("SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN",
                "SSL_CLIENT_CERT"):
        assert again[key] == first[key]
    assert again["SSL_CLIENT_VERIFY"] == "SUCCESS"
    # Still required of a client that has no session.
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        visit(srv.port, ctx_for(pki, version))


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
def test_cache_0_turns_resumption_off(server_factory, pki, version):
    srv = tls_server(server_factory, pki, tls_session_cache=0)
    ctx = ctx_for(pki, version)
    _, session, _ = visit(srv.port, ctx)
    env, _, reused = visit(srv.port, ctx, session)
    assert (env["SSL_SESSION_RESUMED"], reused) == ("Initial", False)


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
def test_a_session_expires_after_the_timeout_however_often_it_is_resumed(
        server_factory, pki, version):
    """tls_session_timeout counts from the full handshake: a client that
    keeps coming back, with the newest session it was given, makes a
    full handshake once it has passed.  The full handshake's time is kept
    to the second, and OpenSSL 3.0 counts in whole seconds: a 3-s session
    ends between 2 and 4 s after its handshake.
    Each TLS 1.3 resumption gets a new ticket, for a copy of the session
    that OpenSSL would time from now: a client that kept coming back would
    keep its session, and a client certificate verified in it, for ever."""
    srv = tls_server(server_factory, pki, tls_session_timeout=3)
    ctx = ctx_for(pki, version)
    start = time.monotonic()
    _, session, _ = visit(srv.port, ctx)
    end = time.monotonic()
    resumed = 0
    while True:
        at = time.monotonic()
        env, got, reused = visit(srv.port, ctx, session)
        done = time.monotonic()
        assert env["SSL_SESSION_RESUMED"] == ("Resumed" if reused else "Initial")
        if at - end > 4.5:
            assert not reused       # past the timeout and the clock's second
            break
        if not reused:
            assert done - start >= 2    # not before the timeout's second
            break
        resumed += 1
        session = got
        time.sleep(0.25)
    assert resumed >= 1


def test_the_cache_keeps_the_newest_sessions(server_factory, pki):
    """A full cache drops its oldest session for a new one (TLS 1.2: a
    resumption adds none)."""
    srv = tls_server(server_factory, pki, tls_session_cache=3)
    ctx = ctx_for(pki, ssl.TLSVersion.TLSv1_2)
    sessions = [visit(srv.port, ctx)[1] for _ in range(4)]
    assert visit(srv.port, ctx, sessions[3])[2] is True
    assert visit(srv.port, ctx, sessions[0])[2] is False


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
def test_a_session_resumes_under_its_own_certificate_only(server_factory, pki,
                                                          version):
    """A session made under one certificate (sni_certs) resumes for any
    of that certificate's names, never under another certificate (RFC
    6066: a full handshake instead); SSL_TLS_SNI is the name sent this
    time, also on a TLS 1.2 resumption (whose session knows the first)."""
    srv = tls_server(server_factory, pki, sni_certs=[
        [str(pki / "site-a.pem"), str(pki / "site-a.key")],
        [str(pki / "site-b.pem"), str(pki / "site-b.key")]])
    ctx = ctx_for(pki, version)
    ctx.check_hostname = False
    _, first, _ = visit(srv.port, ctx, name="a.test")
    for name, resumes in [("a.test", True), ("www.a.test", True),
                          ("y.b.test", False), ("localhost", False),
                          ("unknown.test", False), (None, False)]:
        env, _, reused = visit(srv.port, ctx, first, name=name)
        assert (name, reused) == (name, resumes)
        assert env["SSL_TLS_SNI"] == name


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
def test_the_name_sent_is_in_environ_after_a_resumption(server_factory, pki,
                                                        version):
    srv = tls_server(server_factory, pki)
    ctx = ctx_for(pki, version)
    ctx.check_hostname = False
    _, session, _ = visit(srv.port, ctx, name="localhost")
    for name in ("other.test", "localhost", None):
        env, session, reused = visit(srv.port, ctx, session, name=name)
        assert reused and env["SSL_TLS_SNI"] == name


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
def test_a_session_with_a_long_client_chain_is_not_kept(server_factory, pki,
                                                        tmp_path, version):
    """A cached session holds the client's whole chain: one of more than
    four certificates is served but not kept for resumption, so that a
    client cannot fill the cache with heavy sessions."""
    srv = tls_server(server_factory, pki, ca_certs=str(pki / "ca.pem"),
                     cert_reqs="required")
    client, ca = (pki / "client.pem").read_text(), (pki / "ca.pem").read_text()
    for copies, kept in [(3, True), (4, False)]:
        chain = tmp_path / ("chain-%d.pem" % copies)
        chain.write_text(client + ca * copies)
        ctx = ctx_for(pki, version)
        ctx.load_cert_chain(str(chain), str(pki / "client.key"))
        env, session, _ = visit(srv.port, ctx)
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert visit(srv.port, ctx, session)[2] is kept


def test_a_client_chain_is_16_kib_at_most(server_factory, pki, tmp_path):
    """The chain a client sends is kept with its session: one padded past
    16 KiB (with copies of a CA certificate) is refused; a real one is
    served."""
    srv = tls_server(server_factory, pki, ca_certs=str(pki / "ca.pem"),
                     cert_reqs="required")
    client, ca = (pki / "client.pem").read_text(), (pki / "ca.pem").read_text()
    der = len(ssl.PEM_cert_to_DER_cert(ca))
    for copies, served in [(2, True), (16384 // der + 2, False)]:
        chain = tmp_path / ("chain-%d.pem" % copies)
        chain.write_text(client + ca * copies)
        ctx = ctx_for(pki, ssl.TLSVersion.TLSv1_3)
        ctx.load_cert_chain(str(chain), str(pki / "client.key"))
        if served:
            assert visit(srv.port, ctx)[0]["SSL_CLIENT_VERIFY"] == "SUCCESS"
        else:
            with pytest.raises((ssl.SSLError, ConnectionResetError,
                                BrokenPipeError)):
                visit(srv.port, ctx)


def test_a_reload_starts_an_empty_cache(pki, tmp_path):
    """No session from before a reload is resumed after it: the new
    context's cache is empty, so nothing verified under the old files is
    taken for verified under the new ones."""
    with Server([script("waitress-c-serve"), "--listen=127.0.0.1:0",
                 "--certfile=%s" % (pki / "server.pem"),
                 "--keyfile=%s" % (pki / "server.key"), APP], cwd=HERE) as srv:
        ctx = ctx_for(pki, ssl.TLSVersion.TLSv1_3)
        _, session, _ = visit(srv.port, ctx)
        _, session, reused = visit(srv.port, ctx, session)
        assert reused
        srv.send_signal(signal.SIGHUP)
        srv.wait_for(r"SIGHUP: TLS files reloaded", timeout=20 * SLOW)
        env, session, reused = visit(srv.port, ctx, session)
        assert (env["SSL_SESSION_RESUMED"], reused) == ("Initial", False)
        assert visit(srv.port, ctx, session)[2]     # the new cache's


def test_s_client_reconnects_with_its_session(server_factory, pki):
    """openssl s_client -reconnect: the first connection is new, the five
    after it reuse its session."""
    srv = tls_server(server_factory, pki)
    out = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
         "-tls1_2", "-reconnect", "-CAfile", str(pki / "ca.pem")],
        input="", capture_output=True, text=True, timeout=60 * SLOW, env=tool_env())
    kinds = re.findall(r"^(New|Reused), ", out.stdout, re.M)
    assert kinds == ["New"] + ["Reused"] * 5, out.stdout[-2000:]


@pytest.mark.parametrize("kw, message", [
    ({"tls_session_cache": -1}, "tls_session_cache must be at least 0"),
    ({"tls_session_timeout": 0}, "tls_session_timeout must be at least 1"),
    ({"tls_session_timeout": 604801}, "at most 604800"),
])
def test_bad_values(pki, kw, message):
    with pytest.raises(ValueError, match=message):
        Adjustments(listen="127.0.0.1:0", certfile=str(pki / "server.pem"),
                    keyfile=str(pki / "server.key"), **kw)
