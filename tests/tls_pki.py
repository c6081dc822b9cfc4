"""Certificates for the TLS tests, made by `openssl` (no network): the
session's ``pki`` fixture (conftest.py) calls make_pki once."""

import os
import subprocess

PASSWORD = "s3cret pass"


def _openssl(cwd, *args):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.endswith("SAN_OPTIONS")}
    subprocess.run(["openssl", *args], cwd=str(cwd), check=True, capture_output=True, timeout=60, env=env)


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 and localhost, a client
    certificate from the CA and one from another CA; the server's key
    encrypted too, with its password in a file."""
    def key(name):
        _openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", name + ".key")

    def ca(name, cn):
        key(name)
        # keyUsage: python 3.13's default context (VERIFY_X509_STRICT)
        # refuses a CA certificate without it.
        _openssl(d, "req", "-x509", "-new", "-key", name + ".key", "-out", name + ".pem",
                 "-days", "2", "-subj", "/CN=" + cn,
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, subject, issuer, ext, days="2"):
        key(name)
        _openssl(d, "req", "-new", "-key", name + ".key", "-out", name + ".csr", "-subj", subject)
        (d / (name + ".ext")).write_text(ext)
        _openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", issuer + ".pem",
                 "-CAkey", issuer + ".key", "-CAcreateserial", "-days", days,
                 "-out", name + ".pem", "-extfile", name + ".ext")

    ca("ca", "waitress_c test CA")
    ca("other", "another CA")
    leaf("server", "/CN=localhost", "ca",
         "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    leaf("client", "/O=waitress_c tests/CN=client one", "ca", "extendedKeyUsage=clientAuth\n")
    # The next certificate of the same server, for a reload.
    leaf("renewed", "/CN=renewed", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    # Valid from now to now: expired by the time it is read.
    leaf("expired", "/CN=localhost", "ca", "subjectAltName=IP:127.0.0.1\n", days="0")
    leaf("stranger", "/CN=stranger", "other", "extendedKeyUsage=clientAuth\n")
    # More names, for sni_certs: an exact pair, a wildcard, an exact name
    # under that wildcard, one with no DNS name, one whose name is the
    # first's, and an encrypted key.
    leaf("site-a", "/CN=site a", "ca", "subjectAltName=DNS:a.test,DNS:WWW.A.Test\n")
    leaf("site-b", "/CN=site b", "ca", "subjectAltName=DNS:*.b.test\n")
    leaf("site-xb", "/CN=site x.b", "ca", "subjectAltName=DNS:x.b.test\n")
    leaf("no-dns", "/CN=c.test", "ca", "subjectAltName=IP:127.0.0.2\n")
    leaf("site-a2", "/CN=site a again", "ca", "subjectAltName=DNS:a.test\n")
    _openssl(d, "pkey", "-in", "site-xb.key", "-aes256", "-passout", "pass:" + PASSWORD,
             "-out", "site-xb-enc.key")
    (d / "site-a-bundle.pem").write_text((d / "site-a.pem").read_text()
                                         + (d / "site-a.key").read_text())
    _openssl(d, "pkey", "-in", "server.key", "-aes256", "-passout", "pass:" + PASSWORD,
             "-out", "server-enc.key")
    (d / "password.txt").write_text(PASSWORD + "\n")
    (d / "wrong-password.txt").write_text("not it\n")
    (d / "garbage.pem").write_text("this is not a certificate\n")
    return d
