"""TLS in the core (csrc/tls.c): real handshakes with python's ssl, curl
and openssl s_client against a server in a subprocess, with a CA, server
and client certificates made by `openssl` for the session.  Traffic goes to
127.0.0.1 only; every wait is bounded."""

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from apps_tls import blocks
from http_reader import Reader, recv_all
from servers import HERE, SLOW, run_cli, script
from tls_pki import PASSWORD

from waitress_c import _core

APP = "apps_tls:app"

# A build without OpenSSL (WC_NO_TLS=1: the manylinux_2_28 wheels) has no
# TLS: tests/test_build.py checks what certfile says there.
pytestmark = pytest.mark.skipif(
    not _core.HAVE_TLS, reason="this build has no TLS (built with WC_NO_TLS=1)"
)


def tool_env():
    """The environment for curl and openssl: without a sanitizer preloaded
    (make asan preloads it into every child; curl hangs under it)."""
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"):
        env.pop(k, None)
    return env


def tls_server(server_factory, pki, **kw):
    kw.setdefault("certfile", str(pki / "server.pem"))
    kw.setdefault("keyfile", str(pki / "server.key"))
    return server_factory(APP, **kw)


def client_ctx(pki, cert=None, **versions):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / (cert + ".pem")), str(pki / (cert + ".key")))
    for name, value in versions.items():
        setattr(ctx, name, value)
    return ctx


def https(srv, ctx, port=None):
    return http.client.HTTPSConnection("127.0.0.1", port or srv.port, context=ctx,
                                       timeout=30 * SLOW)


def get_env(srv, ctx, port=None):
    """One GET / on a new connection (to srv's first listener, or `port`):
    the TLS keys of its environ."""
    conn = https(srv, ctx, port)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


def get_to_the_end(s):
    """GET / with Connection: close over the TLS socket `s`, read to the
    end (a TLS 1.3 ticket comes after the handshake): the TLS keys of the
    request's environ."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return json.loads(body)


def paste_server(ini):
    """A Server (servers.py) for the PasteDeploy file `ini`, its
    waitress_c logger at INFO (for "Serving on")."""
    import sys

    from servers import Server

    script_ = (
        "import logging, sys\n"
        "sys.path.insert(0, %r)\n"
        "from paste.deploy import loadapp, loadserver\n"
        "logging.getLogger('waitress_c').setLevel(logging.INFO)\n"
        "uri = sys.argv[1]\n"
        "sys.exit(loadserver(uri)(loadapp(uri)))\n" % HERE
    )
    return Server([sys.executable, "-c", script_, "config:%s" % ini],
                  cwd=os.path.dirname(str(ini)))


def client_hello(pki):
    """The bytes of a real ClientHello (python's ssl over memory BIOs)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(inc, out, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def handshake_over(sock, pki):
    """A TLS client over `sock` driven by hand: returns the SSLObject and
    its outgoing BIO once the handshake is done."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(inc, out, server_hostname="127.0.0.1")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = out.read()
            if data:
                sock.sendall(data)
            got = sock.recv(65536)
            assert got, "the server closed during the handshake"
            inc.write(got)
    data = out.read()
    if data:
        sock.sendall(data)
    return obj, out


def closed_by_server(sock, bound):
    """Wait (at most `bound` seconds) for the server to close `sock`,
    reading what it sends; True if it did."""
    sock.settimeout(bound)
    deadline = time.monotonic() + bound
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


# -- serving -------------------------------------------------------------------


def test_keep_alive_get_with_python_ssl(server_factory, pki):
    srv = tls_server(server_factory, pki)
    conn = https(srv, client_ctx(pki))
    socks, envs = [], []
    try:
        for _ in range(3):
            conn.request("GET", "/")
            resp = conn.getresponse()
            envs.append(json.loads(resp.read()))
            socks.append(conn.sock)
            assert resp.status == 200 and not resp.will_close
    finally:
        conn.close()
    assert socks[0] is socks[1] is socks[2]     # one connection
    env = envs[0]
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CIPHER"].startswith("TLS_")
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert env["SSL_CLIENT_S_DN"] is None and env["SSL_CLIENT_CERT"] is None


def test_curl_over_https(server_factory, pki):
    srv = tls_server(server_factory, pki)
    url = "https://127.0.0.1:%d/" % srv.port
    out = subprocess.run(
        ["curl", "-sS", "--max-time", str(30 * SLOW), "--cacert", str(pki / "ca.pem"), url, url],
        capture_output=True, timeout=60 * SLOW, env=tool_env(),
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split(b"}{")
    assert json.loads(first + b"}")["SSL_PROTOCOL"] == "TLSv1.3"
    assert json.loads(b"{" + second)["HTTPS"] == "on"


def s_client(srv, *flags):
    return subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port, *flags],
        input=b"", capture_output=True, timeout=30 * SLOW, env=tool_env(),
    )


def test_s_client_sees_tls13_and_alpn(server_factory, pki):
    # With http2 on, h2 is chosen: tests/test_h2.py.
    srv = tls_server(server_factory, pki, http2=False)
    out = s_client(srv, "-alpn", "h2,http/1.1", "-CAfile", str(pki / "ca.pem"))
    text = out.stdout.decode()
    assert "TLSv1.3" in text
    assert "ALPN protocol: http/1.1" in text
    assert "Verify return code: 0 (ok)" in text


def test_tls_1_1_and_1_0_refused(server_factory, pki):
    srv = tls_server(server_factory, pki)
    for flag in ("-tls1_1", "-tls1"):
        out = s_client(srv, flag, "-cipher", "DEFAULT:@SECLEVEL=0")
        text = (out.stdout + out.stderr).decode()
        # The server's alert 70, not a refusal of the local OpenSSL's.
        assert "alert protocol version" in text, text
        assert "Cipher is (NONE)" in text
    # Python's ssl too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        get_env(srv, ctx)
    assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"


def test_tls_1_2_allowed_and_min_version_1_3(server_factory, pki):
    srv = tls_server(server_factory, pki)
    env = get_env(srv, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert env["SSL_PROTOCOL"] == "TLSv1.2"
    srv13 = tls_server(server_factory, pki, tls_min_version="1.3")
    with pytest.raises(ssl.SSLError):
        get_env(srv13, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert get_env(srv13, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"


def test_tls_facts_follow_each_connection(server_factory, pki):
    # The server keeps the last SSL_PROTOCOL / SSL_CIPHER strs it made and
    # uses them again while they still match: connections that alternate
    # between versions and suites must each see their own.
    srv = tls_server(server_factory, pki)
    tls12 = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    chacha = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    chacha.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305")
    want = [
        (client_ctx(pki), "TLSv1.3", None),
        (tls12, "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        (chacha, "TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"),
        (client_ctx(pki), "TLSv1.3", None),
        (tls12, "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ]
    for ctx, protocol, cipher in want:
        env = get_env(srv, ctx)
        assert env["SSL_PROTOCOL"] == protocol
        if cipher is None:
            assert env["SSL_CIPHER"].startswith("TLS_")
        else:
            assert env["SSL_CIPHER"] == cipher
        assert env["SSL_CLIENT_VERIFY"] == "NONE"


def test_tls12_ciphers_setting(server_factory, pki):
    srv = tls_server(server_factory, pki, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
    env = get_env(srv, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert env["SSL_CIPHER"] == "ECDHE-ECDSA-CHACHA20-POLY1305"


# -- client certificates ----------------------------------------------------------


def test_mtls_required(server_factory, pki):
    srv = tls_server(server_factory, pki, ca_certs=str(pki / "ca.pem"), cert_reqs="required")
    env = get_env(srv, client_ctx(pki, "client"))
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "CN=client one,O=waitress_c tests"
    assert env["SSL_CLIENT_I_DN"] == "CN=waitress_c test CA"
    assert env["SSL_CLIENT_CERT"] == (pki / "client.pem").read_text()
    # A certificate from another CA, and none at all: refused.
    for cert in ("stranger", None):
        with pytest.raises(OSError):
            get_env(srv, client_ctx(pki, cert))
    assert get_env(srv, client_ctx(pki, "client"))["SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_requests_with_a_client_certificate(server_factory, pki):
    """The `requests` library, verifying the server against the CA and
    presenting a client certificate; a stranger's is refused."""
    import requests

    srv = tls_server(server_factory, pki, ca_certs=str(pki / "ca.pem"), cert_reqs="required")
    url = "https://127.0.0.1:%d/" % srv.port
    with requests.Session() as session:
        for _ in range(2):  # keep-alive: the second rides the first's connection
            r = session.get(url, verify=str(pki / "ca.pem"), timeout=30 * SLOW,
                            cert=(str(pki / "client.pem"), str(pki / "client.key")))
            assert r.status_code == 200
            env = r.json()
            assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
            assert env["SSL_CLIENT_S_DN"] == "CN=client one,O=waitress_c tests"
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError or a reset
        requests.get(url, verify=str(pki / "ca.pem"), timeout=30 * SLOW,
                     cert=(str(pki / "stranger.pem"), str(pki / "stranger.key")))


def test_mtls_optional(server_factory, pki):
    srv = tls_server(server_factory, pki, ca_certs=str(pki / "ca.pem"), cert_reqs="optional")
    assert get_env(srv, client_ctx(pki))["SSL_CLIENT_VERIFY"] == "NONE"
    env = get_env(srv, client_ctx(pki, "client"))
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "CN=client one,O=waitress_c tests"
    with pytest.raises(OSError):
        get_env(srv, client_ctx(pki, "stranger"))


# -- clients that misbehave ---------------------------------------------------------


def test_plain_http_to_a_tls_port_gets_400(server_factory, pki):
    srv = tls_server(server_factory, pki)
    s = srv.connect(timeout=20 * SLOW)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = recv_all(s, timeout=20 * SLOW)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Type: text/plain" in head and b"Connection: close" in head
    assert body == b"This port speaks HTTPS\n"
    assert get_env(srv, client_ctx(pki))["HTTPS"] == "on"


def test_truncated_handshakes(server_factory, pki):
    srv = tls_server(server_factory, pki, channel_timeout=2)
    hello = client_hello(pki)
    # Five bytes (a record header), then gone.
    s = srv.connect()
    s.sendall(hello[:5])
    s.close()
    # Half a ClientHello, then silence: the handshake's timeout
    # (channel_timeout) closes it; others are served meanwhile.
    s = srv.connect()
    try:
        started = time.monotonic()
        s.sendall(hello[: len(hello) // 2])
        assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"
        assert closed_by_server(s, 30 * SLOW)
        assert time.monotonic() - started >= 1.0   # not before its timeout
    finally:
        s.close()
    assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x00\x20" + b"\xff" * 32,         # a handshake record of junk
    bytes(range(0, 256)),                           # not even a record
])
def test_garbage_instead_of_client_hello(server_factory, pki, garbage):
    srv = tls_server(server_factory, pki)
    s = srv.connect(timeout=20 * SLOW)
    try:
        s.sendall(garbage)
        assert closed_by_server(s, 20 * SLOW)
    finally:
        s.close()
    assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"


def test_client_stops_mid_record(server_factory, pki):
    srv = tls_server(server_factory, pki, channel_timeout=2)
    s = srv.connect(timeout=20 * SLOW)
    try:
        obj, out = handshake_over(s, pki)
        obj.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        record = out.read()
        s.sendall(record[: len(record) // 2])
        # Nothing to decrypt yet: the connection waits, others are served,
        # and its idle clock closes it.
        assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"
        assert closed_by_server(s, 30 * SLOW)
    finally:
        s.close()
    assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"


# -- large bodies ---------------------------------------------------------------------


SIZE = 50 * 10**6  # 50 MB each way


def pattern_sha256(n):
    h = hashlib.sha256()
    for block in blocks(n):
        h.update(block)
    return h.hexdigest()


def test_large_upload_download_and_file(server_factory, pki, tmp_path):
    srv = tls_server(server_factory, pki)
    body = b"".join(blocks(SIZE))
    want = hashlib.sha256(body).hexdigest()
    path = tmp_path / "big.bin"
    path.write_bytes(body[: SIZE - 12345])
    conn = https(srv, client_ctx(pki))
    try:
        conn.request("POST", "/upload", body=body)
        resp = conn.getresponse()
        assert json.loads(resp.read()) == {"sha256": want, "len": SIZE}
        conn.request("GET", "/download?%d" % SIZE)
        resp = conn.getresponse()
        assert hashlib.sha256(resp.read()).hexdigest() == want
        # A file (FileWrapper): read and encrypted, not sendfile'd.
        conn.request("GET", "/file?%s" % path)
        resp = conn.getresponse()
        got = resp.read()
        assert len(got) == SIZE - 12345
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body[: SIZE - 12345]).hexdigest()
    finally:
        conn.close()


# -- stopping -----------------------------------------------------------------------


def test_graceful_stop_answers_a_tls_request(server_factory, pki):
    srv = tls_server(server_factory, pki)
    conn = https(srv, client_ctx(pki))
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        conn.request("GET", "/slow?1")
        srv.send_signal(signal.SIGINT)
        resp = conn.getresponse()
        assert resp.read() == b"slept"
        assert resp.getheader("Connection") == "close"
    finally:
        conn.close()
    assert srv.wait(timeout=30 * SLOW) == 0


# -- settings and start-up errors ---------------------------------------------------------


def cli(*flags):
    out = run_cli([script("waitress-c-serve"), "--listen=127.0.0.1:0", *flags, APP], cwd=HERE)
    return out.returncode, out.stderr


def test_cli_missing_key_file(pki):
    status, err = cli("--certfile=%s" % (pki / "server.pem"),
                      "--keyfile=%s" % (pki / "missing.key"))
    assert status == 1
    assert "Error: keyfile %s: no such file" % (pki / "missing.key") in err


def test_cli_key_that_does_not_match(pki):
    status, err = cli("--certfile=%s" % (pki / "server.pem"),
                      "--keyfile=%s" % (pki / "client.key"))
    assert status == 1
    assert "does not match certfile" in err


@pytest.mark.parametrize("case, message", [
    ({"keyfile_password_file": "wrong-password.txt"}, "wrong password"),
    ({}, "is encrypted: give its password"),
    ({"ca_certs": "garbage.pem", "keyfile_password_file": "password.txt"},
     "ca_certs %(d)s/garbage.pem: cannot load"),
    ({"certfile": "garbage.pem"}, "certfile %(d)s/garbage.pem: cannot load a certificate"),
    ({"cert_reqs": "required", "keyfile_password_file": "password.txt"}, "needs ca_certs"),
])
def test_start_up_errors(pki, case, message):
    from waitress_c import create_server

    kw = {"certfile": "server.pem", "keyfile": "server-enc.key", **case}
    kw = {k: (str(pki / v) if k != "cert_reqs" else v) for k, v in kw.items()}
    with pytest.raises(ValueError) as info:
        create_server(lambda e, s: [], listen="127.0.0.1:0", **kw)
    assert message % {"d": pki} in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("password, message", [
    (None, "is encrypted: give its password"),
    ("wrong261", ": wrong password"),
])
def test_encrypted_key_errors_when_the_padding_looks_right(pki, password, message,
                                                           monkeypatch):
    """A key decrypted with no password or a wrong one is garbage whose
    padding looks right about once in 256 keys: OpenSSL then reports
    "unsupported", not a bad decrypt.  tests/data/padding-enc.key is such
    a key for both no password and "wrong261" (found by trying); the
    message must still say what is wrong, from the file's own header."""
    from waitress_c.adjustments import Adjustments

    kw = {"certfile": str(pki / "server.pem"),
          "keyfile": os.path.join(HERE, "data", "padding-enc.key")}
    if password:
        monkeypatch.setenv("WC_TEST_WRONG_PASSWORD", password)
        kw["keyfile_password_env"] = "WC_TEST_WRONG_PASSWORD"
    with pytest.raises(ValueError, match=message):
        Adjustments(**kw)


def test_tls_settings_need_certfile():
    from waitress_c.adjustments import Adjustments

    with pytest.raises(ValueError, match="ca_certs, cert_reqs has no meaning without certfile"):
        Adjustments(listen="127.0.0.1:0", ca_certs="x", cert_reqs="required")


def test_encrypted_key_with_password_env(server_factory, pki, monkeypatch):
    monkeypatch.setenv("WC_TEST_KEY_PASSWORD", PASSWORD)
    srv = tls_server(server_factory, pki, keyfile=str(pki / "server-enc.key"),
                     keyfile_password_env="WC_TEST_KEY_PASSWORD")
    assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"


def test_encrypted_key_with_password_file_on_the_cli(pki):
    from servers import Server

    with Server([script("waitress-c-serve"), "--listen=127.0.0.1:0",
                 "--certfile=%s" % (pki / "server.pem"),
                 "--keyfile=%s" % (pki / "server-enc.key"),
                 "--keyfile-password-file=%s" % (pki / "password.txt"), APP],
                cwd=HERE) as srv:
        assert get_env(srv, client_ctx(pki))["HTTPS"] == "on"
        assert "Serving on https://127.0.0.1:%d" % srv.port in srv.output


def test_every_tls_setting_from_an_ini(pki, tmp_path, monkeypatch):
    """PasteDeploy: the TLS settings as strings, an encrypted key whose
    password is in an environment variable, client certificates asked for."""
    monkeypatch.setenv("WC_TEST_KEY_PASSWORD", PASSWORD)
    (tmp_path / "tls.ini").write_text(
        "[app:main]\nuse = call:apps_tls:make_app\n\n"
        "[server:main]\nuse = egg:waitress_c#main\nlisten = 127.0.0.1:0\n"
        "certfile = %(d)s/server.pem\nkeyfile = %(d)s/server-enc.key\n"
        "keyfile_password_env = WC_TEST_KEY_PASSWORD\n"
        "ca_certs = %(d)s/ca.pem\ncert_reqs = optional\n"
        "ciphers = ECDHE-ECDSA-AES256-GCM-SHA384\ntls_min_version = TLSv1.2\n" % {"d": pki}
    )
    with paste_server(tmp_path / "tls.ini") as srv:
        env = get_env(srv, client_ctx(pki, "client", maximum_version=ssl.TLSVersion.TLSv1_2))
        assert env["SSL_CIPHER"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert get_env(srv, client_ctx(pki))["SSL_CLIENT_VERIFY"] == "NONE"


@pytest.mark.parametrize("value, expected", [
    ("none", "none"), ("Optional", "optional"), ("REQUIRED", "required"),
    (0, "none"), (1, "optional"), ("2", "required"),
])
def test_cert_reqs_values(value, expected):
    from waitress_c.adjustments import as_cert_reqs

    assert as_cert_reqs(value) == expected


def test_bad_tls_setting_values():
    from waitress_c.adjustments import as_cert_reqs, as_tls_version

    assert as_tls_version("TLSv1.3") == as_tls_version("1.3") == "1.3"
    assert as_tls_version("TLSv1_2") == "1.2"
    with pytest.raises(ValueError):
        as_tls_version("1.1")
    with pytest.raises(ValueError):
        as_cert_reqs("sometimes")


def test_expired_certificate_is_a_warning(pki):
    from waitress_c.adjustments import Adjustments

    with pytest.warns(UserWarning, match="expired.pem: the certificate has expired"):
        adj = Adjustments(listen="127.0.0.1:0", certfile=str(pki / "expired.pem"),
                          keyfile=str(pki / "expired.key"))
    assert adj.certfile == str(pki / "expired.pem")


def peer_der(conn):
    return conn.sock.getpeercert(binary_form=True)


def pem_der(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_sighup_reloads_the_files_in_a_single_process(pki, tmp_path):
    """certbot renews in place: SIGHUP makes the connections accepted from
    then on use the new files; a connection open before keeps its session;
    files that cannot work are logged and the old ones stay."""
    import shutil

    from servers import Server

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki / "server.pem", cert)
    shutil.copy(pki / "server.key", key)
    with Server([script("waitress-c-serve"), "--listen=127.0.0.1:0",
                 "--certfile=%s" % cert, "--keyfile=%s" % key, APP], cwd=HERE) as srv:
        old = https(srv, client_ctx(pki))
        old.request("GET", "/")
        old.getresponse().read()
        assert peer_der(old) == pem_der(pki / "server.pem")

        shutil.copy(pki / "renewed.pem", cert)
        shutil.copy(pki / "renewed.key", key)
        srv.send_signal(signal.SIGHUP)
        srv.wait_for(r"SIGHUP: TLS files reloaded", timeout=20 * SLOW)
        new = https(srv, client_ctx(pki))
        new.request("GET", "/")
        assert json.loads(new.getresponse().read())["HTTPS"] == "on"
        assert peer_der(new) == pem_der(pki / "renewed.pem")
        new.close()
        old.request("GET", "/")     # the old connection goes on
        assert json.loads(old.getresponse().read())["HTTPS"] == "on"
        old.close()

        (tmp_path / "cert.pem").write_text("not a certificate\n")
        srv.send_signal(signal.SIGHUP)
        srv.wait_for(r"SIGHUP: TLS files not reloaded, the old ones stay: certfile", timeout=20 * SLOW)
        again = https(srv, client_ctx(pki))
        again.request("GET", "/")
        again.getresponse().read()
        assert peer_der(again) == pem_der(pki / "renewed.pem")
        again.close()
        assert srv.poll() is None


def test_close_notify_on_a_clean_close(server_factory, pki):
    """A response that ends the connection is followed by close_notify: a
    client that does not forgive a bare EOF sees a clean end."""
    srv = tls_server(server_factory, pki)
    raw = srv.connect(timeout=20 * SLOW)
    s = client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1",
                                    suppress_ragged_eofs=False)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)     # SSLEOFError without close_notify
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in data


def test_stop_does_not_wait_for_a_handshake(server_factory, pki):
    """A connection stuck half-way through its handshake does not hold a
    graceful stop up (channel_timeout is long here)."""
    srv = tls_server(server_factory, pki, channel_timeout=600)
    s = srv.connect(timeout=20 * SLOW)
    try:
        hello = client_hello(pki)
        s.sendall(hello[: len(hello) // 2])
        assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"
        srv.send_signal(signal.SIGINT)
        assert srv.wait(timeout=30 * SLOW) == 0
        assert closed_by_server(s, 20 * SLOW)
    finally:
        s.close()


def test_worker_processes_speak_tls(pki):
    """--workers: each worker process builds its own context from the
    settings; both answer over TLS."""
    from servers import Server

    with Server([script("waitress-c-serve"), "--listen=127.0.0.1:0", "--workers=2",
                 "--certfile=%s" % (pki / "server.pem"),
                 "--keyfile=%s" % (pki / "server-enc.key"),
                 "--keyfile-password-file=%s" % (pki / "password.txt"), APP],
                cwd=HERE) as srv:
        for _ in range(4):
            assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"
        assert "Serving on https://127.0.0.1:%d" % srv.port in srv.output


def test_tls12_renegotiation_refused(server_factory, pki):
    srv = tls_server(server_factory, pki)
    # "R" asks s_client to renegotiate; its input stays open until the
    # server's answer ended it (or a bound passed).
    p = subprocess.Popen(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port, "-tls1_2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=tool_env(),
    )
    p.stdin.write(b"R\n")
    p.stdin.flush()
    try:
        p.wait(timeout=20 * SLOW)
    except subprocess.TimeoutExpired:
        pass
    text = p.communicate(timeout=30 * SLOW)[0].decode()
    assert "RENEGOTIATING" in text      # s_client asked
    assert "no renegotiation" in text   # the server's alert
    assert get_env(srv, client_ctx(pki))["SSL_PROTOCOL"] == "TLSv1.3"


def tls_socket(srv, pki):
    raw = srv.connect(timeout=20 * SLOW)
    return client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")


def test_pipelined_requests_in_one_record(server_factory, pki):
    """Three requests in one TLS record: three answers, in order."""
    from http_reader import Reader

    srv = tls_server(server_factory, pki)
    s = tls_socket(srv, pki)
    try:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 2
                  + b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        reader = Reader(s, timeout=20 * SLOW)
        first, second, third = (reader.response() for _ in range(3))
    finally:
        s.close()
    assert json.loads(first[2])["HTTPS"] == json.loads(second[2])["HTTPS"] == "on"
    assert json.loads(third[2]) == {"sha256": hashlib.sha256(b"hello").hexdigest(), "len": 5}


def tls_by_hand(srv, pki, ctx=None):
    """A TLS client (`ctx`, by default client_ctx's) over memory BIOs on a
    raw socket to `srv`, handshake done except for the client's Finished,
    which waits in the outgoing BIO to go with the first records.  Returns
    (socket, SSLObject, outgoing BIO, read_all): read_all() decrypts what
    the server sends until it closes (bounded)."""
    raw = srv.connect(timeout=20 * SLOW)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ctx or client_ctx(pki)
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    deadline = time.monotonic() + 30 * SLOW

    def pump():
        data = raw.recv(65536)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        return data

    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            assert time.monotonic() < deadline and pump()

    def read_all():
        plain = bytearray()
        while True:
            try:
                chunk = obj.read(65536)
            except ssl.SSLWantReadError:
                assert time.monotonic() < deadline, "the server stopped answering"
                pump()
                continue
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            plain += chunk
        return bytes(plain)

    return raw, obj, outgoing, read_all


@pytest.mark.parametrize("kib", [40, 44, 48, 52, 56, 60, 80])
def test_records_read_ahead_are_served(server_factory, pki, kib):
    """The server reads ahead: one read(2) takes what the socket holds, up
    to 64 KiB of records, into OpenSSL, where epoll no longer sees them.
    Here the client's Finished, a request head and `kib` KiB of its body
    in 1000-byte records go in one send (one loopback segment below 64
    KiB): the handshake's read takes them all, and the round of reads that
    follows stops for room (at 48 KiB) with whole records still inside
    OpenSSL and the socket empty.  The server must come back for those
    records itself (the channel's ready list), or the client waits for
    ever: without it the sizes from 52 KiB hang.  Every size must be
    answered whole, whatever the segments."""
    srv = tls_server(server_factory, pki)
    raw, obj, outgoing, read_all = tls_by_hand(srv, pki)
    body = os.urandom(int(kib * 1024))
    try:
        obj.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        for at in range(0, len(body), 1000):
            obj.write(body[at:at + 1000])
        raw.sendall(outgoing.read())    # with the Finished, at once
        plain = read_all()
    finally:
        raw.close()
    (answer,) = Reader(plain).responses()
    assert json.loads(answer.body) == {"sha256": hashlib.sha256(body).hexdigest(),
                                       "len": len(body)}


def test_uploads_read_ahead_are_served(server_factory, pki):
    """Bodies in records of every size behind the Finished, 140 KiB at
    once: each arrives whole."""
    srv = tls_server(server_factory, pki)
    raw, obj, outgoing, read_all = tls_by_hand(srv, pki)
    bodies = [os.urandom(n) for n in (20000, 16384, 30000, 1, 40000, 35000)]
    try:
        for body in bodies:
            obj.write(b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body))
            for at in range(0, len(body), 9000):
                obj.write(body[at:at + 9000])
        obj.write(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw.sendall(outgoing.read())
        plain = read_all()
    finally:
        raw.close()
    answers = Reader(plain).responses()
    assert [a.status for a in answers] == [200] * (len(bodies) + 1)
    for answer, body in zip(answers, bodies):
        assert json.loads(answer.body) == {"sha256": hashlib.sha256(body).hexdigest(),
                                           "len": len(body)}


def small_window_socket(srv, pki):
    """A TLS client socket to `srv` with an 8 KiB receive buffer: a client
    that reads late fills the server's socket soon."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(30 * SLOW)
    raw.connect(("127.0.0.1", srv.port))
    return client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")


def past_kernel_buffers():
    """(blocks, bytes) for /writes: more than the kernel can buffer for one
    connection (tcp_wmem's largest send buffer, and 4 MiB more)."""
    from apps_tls import WRITE_BLOCK

    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        wmem_max = int(f.read().split()[2])
    blocks = (wmem_max + (4 << 20)) // WRITE_BLOCK
    return blocks, blocks * WRITE_BLOCK


def holding_server(server_factory, pki, total):
    """A TLS server with room for `total` bytes of output in its queue:
    an app writing them to a client that reads nothing yet finishes."""
    return tls_server(server_factory, pki, outbuf_overflow=4 * total,
                      outbuf_high_watermark=4 * total, channel_timeout=120)


def wait_written(srv, pki, total):
    """Wait (bounded) until /writes's app has written `total` bytes."""
    deadline = time.monotonic() + 60 * SLOW
    while get_json(srv, pki, "/progress")["written"] < total:
        assert time.monotonic() < deadline, "the app never finished writing"
        time.sleep(0.05)


def test_worker_record_refused_then_sent_by_the_loop(server_factory, pki):
    """A worker writes a small response block itself, through TLS, until
    the socket is full: OpenSSL then holds that record, and the bytes must
    be offered again, first, by the loop.  The client reads nothing until
    the app has written more than the kernel can buffer for the connection
    (tcp_wmem's largest send buffer and the client's small receive buffer
    together), so one of the worker's writes was refused; then the whole
    body must arrive, every 4000-byte block in its place."""
    from apps_tls import write_block

    blocks_n, total = past_kernel_buffers()
    srv = holding_server(server_factory, pki, total)
    s = small_window_socket(srv, pki)
    try:
        s.sendall(b"GET /writes?%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % blocks_n)
        wait_written(srv, pki, total)
        answer = Reader(s, timeout=60 * SLOW).response()
    finally:
        s.close()
    assert answer.status == 200
    body = answer.body
    assert len(body) == total
    want = hashlib.sha256(b"".join(write_block(i) for i in range(blocks_n)))
    assert hashlib.sha256(body).hexdigest() == want.hexdigest()


def get_json(srv, pki, path):
    conn = https(srv, client_ctx(pki))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


def test_small_responses_from_workers_while_the_loop_reads(server_factory, pki):
    """Workers write small responses themselves while the loop reads the
    next pipelined requests from the same TLS connections: the one SSL
    object is used under the channel's lock by both.  Eight connections at
    once, each 300 requests, sent one at a time and in pipelined bursts of
    five: every answer is its own request's, in order."""
    from concurrent.futures import ThreadPoolExecutor

    srv = tls_server(server_factory, pki, threads=4)
    # The handshakes first, one at a time, in this thread: the client
    # threads then only read and write their own connections (concurrent
    # certificate checks inside the client's libcrypto are not what this
    # tests, and ThreadSanitizer, which cannot see libcrypto's own
    # synchronisation, reports them).
    socks = [tls_socket(srv, pki) for _ in range(8)]

    def one(k):
        s = socks[k]
        reader = Reader(s, timeout=30 * SLOW)
        got = []
        try:
            i = 0
            while i < 300:
                burst = 1 if i % 10 < 5 else 5
                s.sendall(b"".join(b"GET /id/%d/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (k, i + j)
                                   for j in range(burst)))
                for j in range(burst):
                    answer = reader.response()
                    got.append((answer.status, answer.body))
                i += burst
        finally:
            s.close()
        return got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for k, got in enumerate(results):
        assert got == [(200, b"/id/%d/%d" % (k, i)) for i in range(300)]


def test_large_blocks_to_a_reading_client_skip_the_temp_file(server_factory, pki,
                                                            tmp_path, monkeypatch):
    """Over TLS everything past a record waits in the queue for the loop
    to encrypt, even for a client that reads at once: a block the app
    hands over (here one bytes object of 1 to 8 MiB, above outbuf_overflow)
    is kept by reference, not copied to the temp file and read back.  The
    server's temp directory is removed once it runs, so any spill would
    fail and cut its response: every body must arrive whole."""
    from apps_tls import BLOCK

    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill))
    srv = tls_server(server_factory, pki)   # outbuf_overflow: 1 MiB
    spill.rmdir()
    conn = https(srv, client_ctx(pki))
    try:
        for n in (1 << 20, (1 << 20) + 1, 3 << 20, 8 << 20):
            conn.request("GET", "/blob?%d" % n)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and len(body) == n
            assert body == (BLOCK * (n // len(BLOCK) + 1))[:n]
    finally:
        conn.close()


def test_100_continue_over_tls(server_factory, pki):
    from http_reader import Reader

    srv = tls_server(server_factory, pki)
    s = tls_socket(srv, pki)
    try:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        reader = Reader(s, timeout=20 * SLOW)
        assert reader.line() == b"HTTP/1.1 100 Continue\r\n"
        assert reader.line() == b"\r\n"
        s.sendall(b"hello")
        resp = reader.response()
    finally:
        s.close()
    assert json.loads(resp[2])["len"] == 5



def test_requests_in_many_records_sent_at_once(server_factory, pki):
    """Records of every size arrive in one TCP segment: a request per
    record, a head cut across three records, a body of a full 16 KiB
    record then short ones.  The server stops reading after a short record
    (it does not try a read that would fail); what the socket still holds
    must be read at the next round, not forgotten: every request is
    answered, in order."""
    from http_reader import Reader

    srv = tls_server(server_factory, pki)
    raw, obj, outgoing, read_all = tls_by_hand(srv, pki)
    try:
        raw.sendall(outgoing.read())    # the Finished first, alone
        body = os.urandom(16384 + 700)
        records = [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                   b"GET /b HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n",
                   b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body),
                   body[:16384], body[16384:16684], body[16684:],
                   b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
        for r in records:
            obj.write(r)    # one record each
        raw.sendall(outgoing.read())    # all at once
        plain = read_all()
    finally:
        raw.close()
    reader = Reader(bytes(plain))
    answers = reader.responses()
    assert [a.status for a in answers] == [200] * 4
    assert json.loads(answers[0].body)["HTTPS"] == "on"
    assert json.loads(answers[2].body) == {"sha256": hashlib.sha256(body).hexdigest(),
                                           "len": len(body)}


# -- plain listeners beside TLS ones (insecure_listen) -----------------------------


def plain_get(port, path="/", headers=None):
    """One GET on a plain HTTP connection to 127.0.0.1:`port`: (status,
    body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20 * SLOW)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def plain_env(port):
    """GET / on the plain listener `port`: its wsgi.url_scheme, once sure
    that no other TLS key of the environ is there."""
    status, body = plain_get(port)
    assert status == 200
    env = json.loads(body)
    scheme = env.pop("wsgi.url_scheme")
    assert set(env.values()) == {None}, env
    return scheme


def test_insecure_listen_serves_plain_http_beside_tls(server_factory, pki):
    """With certfile, the listen entries speak TLS and the insecure_listen
    ones plain HTTP, on one server: each connection's environ says which
    (no HTTPS or SSL_* keys on the plain one), a trusted proxy's
    X-Forwarded-Proto applies there, and the TLS port still refuses plain
    HTTP.  Keep-alive, small and large responses on the plain listener go
    the plain ways (the worker's own write, the queue)."""
    srv = tls_server(server_factory, pki, insecure_listen="127.0.0.1:0",
                     trusted_proxy="127.0.0.1",
                     trusted_proxy_headers="x-forwarded-proto")
    (_, tls_port), (_, plain_port) = srv.listen
    assert int(tls_port) == srv.port
    env = get_env(srv, client_ctx(pki))
    assert (env["wsgi.url_scheme"], env["HTTPS"], env["SSL_PROTOCOL"]) == (
        "https", "on", "TLSv1.3")
    assert plain_env(int(plain_port)) == "http"
    status, body = plain_get(int(plain_port), headers={"X-Forwarded-Proto": "https"})
    assert json.loads(body)["wsgi.url_scheme"] == "https"
    # Keep-alive: three requests, then a 1 MiB body, on one connection.
    conn = http.client.HTTPConnection("127.0.0.1", int(plain_port), timeout=20 * SLOW)
    try:
        for i in range(3):
            conn.request("GET", "/id/%d" % i)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"/id/%d" % i)
        conn.request("GET", "/download?%d" % (1 << 20))
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"".join(blocks(1 << 20))
    finally:
        conn.close()
    s = srv.connect(timeout=20 * SLOW)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_all(s, timeout=20 * SLOW).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    finally:
        s.close()


def test_insecure_listen_with_worker_processes(pki):
    """--insecure-listen on the command line, with --workers: each worker
    serves both listeners, and "Serving on" names each one's scheme."""
    from servers import Server

    with Server([script("waitress-c-serve"), "--listen=127.0.0.1:0", "--workers=2",
                 "--insecure-listen=127.0.0.1:0",
                 "--certfile=%s" % (pki / "server.pem"),
                 "--keyfile=%s" % (pki / "server.key"), APP],
                cwd=HERE) as srv:
        plain_port = int(srv.wait_for(r"Serving on http://127\.0\.0\.1:(\d+)").group(1))
        assert "Serving on https://127.0.0.1:%d" % srv.port in srv.output
        for _ in range(4):
            assert get_env(srv, client_ctx(pki))["HTTPS"] == "on"
            assert plain_env(plain_port) == "http"


def test_insecure_listen_needs_certfile_and_its_own_sockets(pki):
    from waitress_c.adjustments import Adjustments

    with pytest.raises(ValueError, match="insecure_listen has no meaning without certfile"):
        Adjustments(insecure_listen="127.0.0.1:0")
    sock = socket.socket()
    try:
        with pytest.raises(ValueError, match="insecure_listen may not be set if sockets is set"):
            Adjustments(sockets=[sock], insecure_listen="127.0.0.1:0",
                        certfile=str(pki / "server.pem"))
    finally:
        sock.close()
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:8443 is in both listen and insecure_listen"):
        Adjustments(listen="127.0.0.1:8443", insecure_listen="127.0.0.1:8443",
                    certfile=str(pki / "server.pem"), keyfile=str(pki / "server.key"))
    adj = Adjustments(certfile=str(pki / "server.pem"),
                      keyfile=str(pki / "server.key"),
                      insecure_listen="127.0.0.1:1 127.0.0.1:2")
    assert [a[3] for a in adj.insecure_listen] == [("127.0.0.1", 1), ("127.0.0.1", 2)]


def test_insecure_listen_beside_a_tls_unix_socket(server_factory, pki):
    """A TLS unix socket and a plain TCP listener: each connection's scheme
    is its listener's, whatever the family."""
    srv = tls_server(server_factory, pki, unix_socket=True,
                     insecure_listen="127.0.0.1:0")
    assert srv.unix
    (_, path), (_, plain_port) = srv.listen
    assert plain_env(int(plain_port)) == "http"
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(20 * SLOW)
    raw.connect(path)
    s = client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = Reader(s, timeout=20 * SLOW).response()
    finally:
        s.close()
    env = json.loads(answer.body)
    assert (answer.status, env["wsgi.url_scheme"], env["HTTPS"]) == (200, "https", "on")


def test_many_listeners_each_keep_their_scheme(server_factory, pki):
    """A channel keeps its listener's index: past 256 listeners (once a
    byte), a plain connection still gets the plain environ and a TLS one
    the TLS environ."""
    srv = tls_server(server_factory, pki, listen=" ".join(["127.0.0.1:0"] * 300),
                     insecure_listen="127.0.0.1:0")
    assert len(srv.listen) == 301
    assert plain_env(int(srv.listen[300][1])) == "http"
    env = get_env(srv, client_ctx(pki), port=int(srv.listen[299][1]))
    assert (env["wsgi.url_scheme"], env["HTTPS"]) == ("https", "on")
