"""Several certificates on one TLS server (sni_certs): each chosen by the
name the client sends (SNI), with real clients (python's ssl, curl,
openssl s_client) against a server in a subprocess.  The certificates are
tests/tls_pki.py's: certfile is "localhost" (the default), site-a has
a.test and www.a.test, site-b *.b.test, site-xb x.b.test.  Traffic goes to
127.0.0.1 only; every wait is bounded."""

import json
import re
import shutil
import signal
import socket
import ssl
import subprocess

import pytest

from servers import HERE, SLOW, Server, script
from test_tls import (APP, client_ctx, get_to_the_end, paste_server, tls_server,
                      tool_env)

from waitress_c import _core
from waitress_c.adjustments import Adjustments, as_sni_certs

pytestmark = pytest.mark.skipif(
    not _core.HAVE_TLS, reason="this build has no TLS (built with WC_NO_TLS=1)"
)

SITES = ("site-a", "site-b", "site-xb")


def sni_certs(pki, *names):
    return [[str(pki / (n + ".pem")), str(pki / (n + ".key"))] for n in names]


def sni_server(server_factory, pki, **kw):
    kw.setdefault("sni_certs", sni_certs(pki, *SITES))
    return tls_server(server_factory, pki, **kw)


def served(port, name, pki, cert=None, **versions):
    """One GET / over a new connection to 127.0.0.1:port that sends `name`
    as SNI (None: no name): the certificate's subject CN, verified by the
    tests' CA, and the TLS keys of the request's environ."""
    ctx = client_ctx(pki, cert, **versions)
    ctx.check_hostname = False      # the name is what is being chosen
    raw = socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW)
    with ctx.wrap_socket(raw, server_hostname=name) as s:
        subject = dict(x[0] for x in s.getpeercert()["subject"])
        return subject["commonName"], get_to_the_end(s)


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_each_name_gets_its_certificate(server_factory, pki, version):
    """The name exactly (in any case, with or without a final dot), then a
    wildcard one label up, then certfile's: for names no certificate has,
    a name two labels under a wildcard, and a client that sends none."""
    srv = sni_server(server_factory, pki)
    v = getattr(ssl.TLSVersion, version)
    cases = [
        ("a.test", "site a"),
        ("www.a.test", "site a"),       # WWW.A.Test in the certificate
        ("WWW.A.TEST", "site a"),
        ("a.test.", "site a"),
        ("y.b.test", "site b"),
        ("x.b.test", "site x.b"),       # its own beats *.b.test
        ("b.test", "localhost"),        # * is a whole label
        ("z.y.b.test", "localhost"),    # and only one
        ("unknown.test", "localhost"),
        ("localhost", "localhost"),
        (None, "localhost"),
    ]
    for name, cn in cases:
        got, env = served(srv.port, name, pki, minimum_version=v,
                          maximum_version=v)
        assert (name, got) == (name, cn)
        assert env["SSL_PROTOCOL"] == version.replace("_", ".")
        assert env.get("SSL_TLS_SNI") == name


def test_sni_is_in_environ_without_sni_certs(server_factory, pki):
    srv = tls_server(server_factory, pki)
    assert served(srv.port, "anything.test", pki)[1]["SSL_TLS_SNI"] == "anything.test"
    assert served(srv.port, None, pki)[1]["SSL_TLS_SNI"] is None  # not set


def s_client_get(port, name):
    """GET / through openssl s_client sending `name` as SNI, whatever its
    bytes: the request's environ."""
    out = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
         "-servername", name, "-quiet", "-ign_eof"],
        input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        capture_output=True, timeout=60 * SLOW, env=tool_env())
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), out.stdout + out.stderr
    return json.loads(body)


def test_a_sent_name_that_is_no_host_name_is_not_looked_up_or_shown(
        server_factory, pki):
    """The server name is the client's bytes: one with a blank, a '*', an
    empty label or a control character is neither matched (not even
    against a wildcard) nor put in the environ."""
    srv = sni_server(server_factory, pki)
    for name in ("a b.test", "*.b.test", "x..b.test", ".a.test", "a.test\t"):
        env = s_client_get(srv.port, name)
        assert env["SSL_TLS_SNI"] is None, name
    assert s_client_get(srv.port, "Under_score.b.test")["SSL_TLS_SNI"] == \
        "Under_score.b.test"


def test_no_certificate_with_a_dns_name(server_factory, pki):
    """Nothing to choose from (no certificate, certfile's included, has a
    DNS name): a warning, and certfile's for every client."""
    kw = dict(certfile=str(pki / "no-dns.pem"), keyfile=str(pki / "no-dns.key"),
              sni_certs=sni_certs(pki, "no-dns"))
    with pytest.warns(UserWarning, match="no-dns.pem: no DNS name"):
        Adjustments(listen="127.0.0.1:0", **kw)
    srv = tls_server(server_factory, pki, **kw)
    for name in ("a.test", "c.test", None):
        assert served(srv.port, name, pki)[0] == "c.test"


def test_settings_hold_after_the_switch(server_factory, pki):
    """What SSL_new copies from certfile's context (versions) and what is
    read from the chosen one (ALPN) agree: TLS 1.3 only and no h2, under a
    name of sni_certs too."""
    srv = sni_server(server_factory, pki, tls_min_version="1.3", http2=False)
    tls12 = ssl.TLSVersion.TLSv1_2
    for name in ("a.test", "y.b.test", None):
        with pytest.raises(ssl.SSLError):
            served(srv.port, name, pki, maximum_version=tls12)
        out = subprocess.run(
            ["curl", "-sS", "--max-time", str(30 * SLOW), "--http2",
             "--cacert", str(pki / "ca.pem"), "-o", "/dev/null",
             "-w", "%{http_code} %{http_version}",
             "--resolve", "a.test:%d:127.0.0.1" % srv.port,
             "https://a.test:%d/" % srv.port],
            capture_output=True, text=True, timeout=60 * SLOW, env=tool_env())
        assert out.stdout == "200 1.1", out.stderr


def test_curl_and_s_client_verify_each_name(server_factory, pki):
    """Clients that check the name: curl (HTTP/1.1 and h2, ALPN chosen
    after the switch to the name's certificate) and s_client with
    -verify_hostname."""
    srv = sni_server(server_factory, pki)
    for name in ("a.test", "www.a.test", "q.b.test", "x.b.test", "localhost"):
        for proto in ("--http1.1", "--http2"):
            out = subprocess.run(
                ["curl", "-sS", "--max-time", str(30 * SLOW), proto,
                 "--cacert", str(pki / "ca.pem"), "-o", "/dev/null",
                 "-w", "%{http_code} %{http_version}",
                 "--resolve", "%s:%d:127.0.0.1" % (name, srv.port),
                 "https://%s:%d/" % (name, srv.port)],
                capture_output=True, text=True, timeout=60 * SLOW, env=tool_env())
            want = "200 1.1" if proto == "--http1.1" else "200 2"
            assert (name, proto, out.stdout) == (name, proto, want), out.stderr
    out = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
         "-servername", "a.test", "-verify_hostname", "a.test",
         "-CAfile", str(pki / "ca.pem"), "-verify_return_error", "-brief"],
        input="", capture_output=True, text=True, timeout=60 * SLOW, env=tool_env())
    assert "Verification: OK" in out.stderr, out.stderr
    # "CN = site a" (OpenSSL 3.0) or "CN=site a" (3.6)
    assert re.search(r"Peer certificate: CN ?= ?site a", out.stderr), out.stderr


def test_client_certificates_are_required_under_every_name(server_factory, pki):
    """mTLS is the server's, not certfile's: a connection moved to another
    certificate still needs a client certificate from ca_certs."""
    srv = sni_server(server_factory, pki, ca_certs=str(pki / "ca.pem"),
                     cert_reqs="required")
    for name in ("a.test", "y.b.test", None):
        cn, env = served(srv.port, name, pki, cert="client")
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert "CN=client one" in env["SSL_CLIENT_S_DN"]
        for cert in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionResetError,
                                BrokenPipeError)):
                served(srv.port, name, pki, cert=cert)


def test_keys_in_the_certificate_file_and_encrypted(server_factory, pki):
    """CERTFILE alone reads the key from it; an encrypted key takes the
    keyfile's password."""
    srv = tls_server(server_factory, pki, keyfile=str(pki / "server-enc.key"),
                     keyfile_password_file=str(pki / "password.txt"),
                     sni_certs="%s %s,%s" % (pki / "site-a-bundle.pem",
                                             pki / "site-xb.pem",
                                             pki / "site-xb-enc.key"))
    assert served(srv.port, "a.test", pki)[0] == "site a"
    assert served(srv.port, "x.b.test", pki)[0] == "site x.b"
    assert served(srv.port, None, pki)[0] == "localhost"


def test_the_flag_repeats_and_worker_processes_choose_too(pki):
    with Server([script("waitress-c-serve"), "--listen=127.0.0.1:0", "--workers=2",
                 "--certfile=%s" % (pki / "server.pem"),
                 "--keyfile=%s" % (pki / "server.key"),
                 "--sni-certs=%s,%s" % (pki / "site-a.pem", pki / "site-a.key"),
                 "--sni-certs=%s" % (pki / "site-a-bundle.pem"),
                 "--sni-certs=%s,%s" % (pki / "site-b.pem", pki / "site-b.key"),
                 APP], cwd=HERE) as srv:
        for _ in range(3):
            assert served(srv.port, "a.test", pki)[0] == "site a"
            assert served(srv.port, "y.b.test", pki)[0] == "site b"
        # site-a-bundle has only a.test and www.a.test, site-a's names.
        assert "site-a-bundle.pem: each of its names is an earlier certificate's" \
            in srv.output


def test_sni_certs_from_an_ini(pki, tmp_path):
    """PasteDeploy: one certificate a line, with or without its key."""
    (tmp_path / "sni.ini").write_text(
        "[app:main]\nuse = call:apps_tls:make_app\n\n"
        "[server:main]\nuse = egg:waitress_c#main\nlisten = 127.0.0.1:0\n"
        "certfile = %(d)s/server.pem\nkeyfile = %(d)s/server.key\n"
        "sni_certs =\n    %(d)s/site-a-bundle.pem\n"
        "    %(d)s/site-b.pem,%(d)s/site-b.key\n" % {"d": pki}
    )
    with paste_server(tmp_path / "sni.ini") as srv:
        assert served(srv.port, "www.a.test", pki)[0] == "site a"
        assert served(srv.port, "y.b.test", pki)[0] == "site b"
        assert served(srv.port, "a.b.c.test", pki)[0] == "localhost"


def test_sighup_reloads_sni_certificates(pki, tmp_path):
    """certbot renews every name's files in place: SIGHUP reloads them
    with certfile; a file that cannot work keeps all the old ones."""
    cert, key = tmp_path / "a.pem", tmp_path / "a.key"
    shutil.copy(pki / "site-a.pem", cert)
    shutil.copy(pki / "site-a.key", key)
    with Server([script("waitress-c-serve"), "--listen=127.0.0.1:0",
                 "--certfile=%s" % (pki / "server.pem"),
                 "--keyfile=%s" % (pki / "server.key"),
                 "--sni-certs=%s,%s" % (cert, key), APP], cwd=HERE) as srv:
        assert served(srv.port, "a.test", pki)[0] == "site a"
        shutil.copy(pki / "site-a2.pem", cert)
        shutil.copy(pki / "site-a2.key", key)
        srv.send_signal(signal.SIGHUP)
        srv.wait_for(r"SIGHUP: TLS files reloaded", timeout=20 * SLOW)
        assert served(srv.port, "a.test", pki)[0] == "site a again"

        shutil.copy(pki / "site-b.key", key)    # no longer the certificate's
        srv.send_signal(signal.SIGHUP)
        srv.wait_for(r"SIGHUP: TLS files not reloaded, the old ones stay: "
                     r"sni_certs key %s does not match" % key, timeout=20 * SLOW)
        assert served(srv.port, "a.test", pki)[0] == "site a again"
        assert srv.poll() is None


@pytest.mark.parametrize("sni, password, message", [
    ("%(d)s/missing.pem", False, "sni_certs %(d)s/missing.pem: no such file"),
    ("%(d)s/site-a.pem,%(d)s/missing.key", False,
     "sni_certs key %(d)s/missing.key: no such file"),
    ("%(d)s/site-a.pem,%(d)s/site-b.key", False,
     "sni_certs key %(d)s/site-b.key does not match sni_certs %(d)s/site-a.pem"),
    ("%(d)s/garbage.pem,%(d)s/site-a.key", False,
     "sni_certs %(d)s/garbage.pem: cannot load a certificate"),
    ("%(d)s/site-xb.pem,%(d)s/site-xb-enc.key", False,
     "sni_certs key %(d)s/site-xb-enc.key is encrypted: give its password"),
    ("%(d)s/site-xb.pem,%(d)s/site-xb-enc.key", True, None),
])
def test_start_up_errors_name_the_file(pki, sni, password, message):
    kw = {"listen": "127.0.0.1:0", "certfile": str(pki / "server.pem"),
          "keyfile": str(pki / "server.key"), "sni_certs": sni % {"d": pki}}
    if password:
        kw["keyfile_password_file"] = str(pki / "password.txt")
    if message is None:
        assert Adjustments(**kw).sni_certs == [
            (str(pki / "site-xb.pem"), str(pki / "site-xb-enc.key"))]
        return
    with pytest.raises(ValueError) as info:
        Adjustments(**kw)
    assert message % {"d": pki} in str(info.value)
    assert "\n" not in str(info.value)


def test_certificates_no_client_is_served_are_warnings(pki):
    with pytest.warns(UserWarning) as record:
        adj = Adjustments(listen="127.0.0.1:0", certfile=str(pki / "server.pem"),
                          keyfile=str(pki / "server.key"),
                          sni_certs=sni_certs(pki, "site-a", "no-dns", "site-a2"))
    text = " ".join(str(w.message) for w in record)
    assert "no-dns.pem: no DNS name a client could ask for" in text
    assert "site-a2.pem: each of its names is an earlier certificate's" in text
    assert "site-a.pem" not in text.replace("site-a2.pem", "")
    assert len(adj.sni_certs) == 3


def test_setting_forms():
    assert as_sni_certs("a.pem b.pem,b.key\nc.pem,c.key") == [
        ("a.pem", "a.pem"), ("b.pem", "b.key"), ("c.pem", "c.key")]
    assert as_sni_certs([("a.pem", "a.key"), "b.pem"]) == [
        ("a.pem", "a.key"), ("b.pem", "b.pem")]
    assert as_sni_certs("") == [] and as_sni_certs(None) == []
    from pathlib import Path

    assert as_sni_certs([Path("a.pem"), (Path("b.pem"), Path("b.key"))]) == [
        ("a.pem", "a.pem"), ("b.pem", "b.key")]
    for bad in ("a,b,c", "a,", ",b", [("a",)], [("a", "")], [b"a.pem"]):
        with pytest.raises(ValueError, match="sni_certs"):
            as_sni_certs(bad)
    kw, _ = Adjustments.parse_args(["--sni-certs=a.pem,a.key", "--sni-certs=b.pem"])
    assert as_sni_certs(kw["sni_certs"]) == [("a.pem", "a.key"), ("b.pem", "b.pem")]
    with pytest.raises(ValueError, match="sni_certs has no meaning without certfile"):
        Adjustments(listen="127.0.0.1:0", sni_certs="a.pem")

