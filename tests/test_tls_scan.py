"""A TLS scanner against the server's defaults (csrc/tls.c): sslyze, run
in this process against a server in a subprocess on 127.0.0.1, with an
ECDSA certificate (the session's pki) and an RSA one (made here, so that
the ROBOT check has RSA to look at).  What it asserts is the table in
docs/deployment.rst ("What a TLS scanner sees").

sslyze needs nassl, a binary wheel that exists up to CPython 3.14: the
`test` extra installs it there, and on a later version this file skips."""

import subprocess
import sys
from pathlib import Path

import pytest

from servers import SLOW
from test_tls import tls_server, tool_env
from waitress_c import _core

pytestmark = pytest.mark.skipif(
    not _core.HAVE_TLS, reason="this build has no TLS (built with WC_NO_TLS=1)"
)

sslyze = pytest.importorskip(
    "sslyze",
    reason="sslyze is not installed: it needs nassl, which has no wheel for "
    "CPython %d.%d yet (pyproject.toml's test extra)" % sys.version_info[:2],
)

# Every scan command this file asserts on.
COMMANDS = {
    sslyze.ScanCommand.SSL_2_0_CIPHER_SUITES,
    sslyze.ScanCommand.SSL_3_0_CIPHER_SUITES,
    sslyze.ScanCommand.TLS_1_0_CIPHER_SUITES,
    sslyze.ScanCommand.TLS_1_1_CIPHER_SUITES,
    sslyze.ScanCommand.TLS_1_2_CIPHER_SUITES,
    sslyze.ScanCommand.TLS_1_3_CIPHER_SUITES,
    sslyze.ScanCommand.TLS_COMPRESSION,
    sslyze.ScanCommand.SESSION_RENEGOTIATION,
    sslyze.ScanCommand.HEARTBLEED,
    sslyze.ScanCommand.ROBOT,
    sslyze.ScanCommand.OPENSSL_CCS_INJECTION,
    sslyze.ScanCommand.CERTIFICATE_INFO,
}

# Names as sslyze gives them (the IANA names): what a TLS 1.2 suite must
# have (ECDHE, an AEAD cipher) and must not.
FORWARD_SECRET = ("TLS_ECDHE_", "TLS_DHE_")
AEAD = ("_GCM_", "_CHACHA20_POLY1305_", "_CCM")
WEAK = ("_CBC_", "_RC4_", "_3DES_", "_NULL_", "_EXPORT", "_anon_", "_DES_")


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory, pki):
    """An RSA server certificate from the session's CA."""
    d = tmp_path_factory.mktemp("rsa")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=str(d), check=True, capture_output=True,
                       timeout=60, env=tool_env())

    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "server.key")
    openssl("req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", str(pki / "ca.pem"), "-CAkey", str(pki / "ca.key"),
            "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "server.ext")
    return d


def scan(port, ca_file):
    """Every command of COMMANDS against 127.0.0.1:port; their results by
    name, each checked to have completed."""
    location = sslyze.ServerNetworkLocation("127.0.0.1", port, ip_address="127.0.0.1")
    request = sslyze.ServerScanRequest(
        server_location=location,
        network_configuration=sslyze.ServerNetworkConfiguration(
            tls_server_name_indication="localhost",
            network_timeout=int(10 * SLOW),
        ),
        scan_commands=COMMANDS,
        scan_commands_extra_arguments=sslyze.ScanCommandsExtraArguments(
            certificate_info=sslyze.CertificateInfoExtraArgument(custom_ca_file=Path(ca_file)),
        ),
    )
    scanner = sslyze.Scanner(per_server_concurrent_connections_limit=4)
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    assert result.scan_status == sslyze.ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    out = {}
    for command in COMMANDS:
        attempt = getattr(result.scan_result, command.value)
        assert attempt.status == sslyze.ScanCommandAttemptStatusEnum.COMPLETED, (
            command.value, attempt.error_reason, attempt.error_trace)
        out[command.value] = attempt.result
    return out


def accepted(result):
    return [s.cipher_suite.name for s in result.accepted_cipher_suites]


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
@pytest.mark.parametrize("key", ["ecdsa", "rsa"])
def test_scan_of_the_defaults(server_factory, pki, rsa_pki, key):
    d = pki if key == "ecdsa" else rsa_pki
    srv = tls_server(server_factory, pki, certfile=str(d / "server.pem"), keyfile=str(d / "server.key"))
    r = scan(srv.port, pki / "ca.pem")

    # Versions: nothing older than TLS 1.2; TLS 1.3 offered.
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert accepted(r[old + "_cipher_suites"]) == [], old
    tls13 = accepted(r["tls_1_3_cipher_suites"])
    assert "TLS_AES_128_GCM_SHA256" in tls13 and "TLS_AES_256_GCM_SHA384" in tls13

    # TLS 1.2: every suite forward secret and AEAD, none weak; for this
    # key's kind of signature.
    tls12 = accepted(r["tls_1_2_cipher_suites"])
    assert tls12, "no TLS 1.2 suite accepted"
    for suite in tls12:
        assert suite.startswith(FORWARD_SECRET), suite
        assert any(a in suite for a in AEAD), suite
        assert not any(w in suite for w in WEAK), suite
        assert ("_ECDSA_" if key == "ecdsa" else "_RSA_") in suite, suite

    # No compression (CRIME); no client-initiated renegotiation (the server
    # refuses it) while the secure-renegotiation extension is there.
    assert r["tls_compression"].supports_compression is False
    reneg = r["session_renegotiation"]
    assert reneg.is_vulnerable_to_client_renegotiation_dos is False
    assert reneg.client_renegotiations_success_count == 0
    assert reneg.supports_secure_renegotiation is True

    # The known OpenSSL and RSA attacks.
    assert r["heartbleed"].is_vulnerable_to_heartbleed is False
    assert r["openssl_ccs_injection"].is_vulnerable_to_ccs_injection is False
    robot = r["robot"].robot_result
    assert robot in (sslyze.RobotScanResultEnum.NOT_VULNERABLE_RSA_NOT_SUPPORTED,
                     sslyze.RobotScanResultEnum.NOT_VULNERABLE_NO_ORACLE), robot

    # The certificate served is certfile's, and it chains to the test CA.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    (deployment,) = r["certificate_info"].certificate_deployments
    served = deployment.received_certificate_chain[0]
    ours = x509.load_pem_x509_certificate((d / "server.pem").read_bytes())
    assert served.public_bytes(Encoding.DER) == ours.public_bytes(Encoding.DER)
    assert deployment.received_chain_has_valid_order is True
    ours_ca = [v for v in deployment.path_validation_results
               if v.trust_store.path == pki / "ca.pem"]
    assert ours_ca and ours_ca[0].was_validation_successful, ours_ca
