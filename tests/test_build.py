"""The build finds libuv, OpenSSL and nghttp2 with pkg-config and http-parser by its header and
library; when something is missing it stops with the Debian packages to
install."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HINT = "apt-get install libuv1-dev libhttp-parser-dev libssl-dev libnghttp2-dev pkg-config"


def run_setup(env):
    return subprocess.run(
        [sys.executable, "setup.py", "--version"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_pkg_config_names_the_packages(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no pkg-config on PATH
    out = run_setup(env)
    assert out.returncode != 0
    assert "pkg-config was not found" in out.stderr
    assert HINT in out.stderr


def test_missing_libuv_names_the_packages(tmp_path):
    fake = tmp_path / "pkg-config"
    fake.write_text("#!/bin/sh\nexit 1\n")  # pkg-config that knows no libuv
    fake.chmod(0o755)
    env = dict(os.environ, PATH=str(tmp_path) + os.pathsep + os.environ["PATH"])
    out = run_setup(env)
    assert out.returncode != 0
    assert "libuv1-dev" in out.stderr and HINT in out.stderr


def test_missing_openssl_names_the_packages(tmp_path):
    real = subprocess.run(["sh", "-c", "command -v pkg-config"], capture_output=True, text=True).stdout.strip()
    fake = tmp_path / "pkg-config"
    # A pkg-config that knows libuv but no OpenSSL.
    fake.write_text('#!/bin/sh\ncase "$*" in *openssl*) exit 1;; esac\nexec %s "$@"\n' % real)
    fake.chmod(0o755)
    env = dict(os.environ, PATH=str(tmp_path) + os.pathsep + os.environ["PATH"])
    out = run_setup(env)
    assert out.returncode != 0
    assert "cannot find openssl >= 3.0 (libssl-dev)" in out.stderr and HINT in out.stderr


def test_found_libraries_build_flags():
    out = run_setup(dict(os.environ))
    assert out.returncode == 0, out.stderr


def test_missing_nghttp2_names_the_packages(tmp_path):
    real = subprocess.run(["sh", "-c", "command -v pkg-config"], capture_output=True, text=True).stdout.strip()
    fake = tmp_path / "pkg-config"
    # A pkg-config that knows the others but no nghttp2.
    fake.write_text('#!/bin/sh\ncase "$*" in *nghttp2*) exit 1;; esac\nexec %s "$@"\n' % real)
    fake.chmod(0o755)
    env = dict(os.environ, PATH=str(tmp_path) + os.pathsep + os.environ["PATH"])
    out = run_setup(env)
    assert out.returncode != 0
    assert "cannot find libnghttp2 (libnghttp2-dev)" in out.stderr and HINT in out.stderr
