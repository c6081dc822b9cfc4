"""The build finds libuv, OpenSSL and nghttp2 with pkg-config and http-parser by its header and
library; when something is missing it stops with the Debian packages to
install."""

import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HINT = "apt-get install libuv1-dev libhttp-parser-dev libssl-dev libnghttp2-dev pkg-config"


def no_sanitizer(env):
    """The build's tools run without the sanitizer runtime `make asan` and
    `make tsan` preload: dash, which the fake pkg-config scripts run in,
    crashes under libtsan, and the build is not what those targets check."""
    return {k: v for k, v in env.items() if k != "LD_PRELOAD"}


def run_setup(env):
    return subprocess.run(
        [sys.executable, "setup.py", "--version"],
        cwd=ROOT,
        env=no_sanitizer(env),
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


def fake_pkg_config(directory, refused):
    """A pkg-config in ``directory`` that knows every module but those whose
    name contains ``refused``; the environment that puts it first on PATH."""
    fake = directory / "pkg-config"
    fake.write_text('#!/bin/sh\ncase "$*" in *%s*) exit 1;; esac\nexec %s "$@"\n'
                    % (refused, shutil.which("pkg-config")))
    fake.chmod(0o755)
    return dict(os.environ, PATH=str(directory) + os.pathsep + os.environ["PATH"])


def test_missing_openssl_names_the_packages(tmp_path):
    out = run_setup(fake_pkg_config(tmp_path, "openssl"))
    assert out.returncode != 0
    assert "cannot find openssl >= 3.0 (libssl-dev)" in out.stderr and HINT in out.stderr


def test_found_libraries_build_flags():
    out = run_setup(dict(os.environ))
    assert out.returncode == 0, out.stderr


def test_build_without_tls(tmp_path, pki):
    """WC_NO_TLS=1: built with a pkg-config that knows no OpenSSL, the
    extension links no libssl or libcrypto, says so (_core.HAVE_TLS), and a
    certfile is the usual one-line start-up error saying how to get TLS,
    before any of the TLS files is looked at.  The manylinux_2_28 wheels
    are this build (tools/wheel.sh)."""
    (tmp_path / "bin").mkdir()
    fake_env = fake_pkg_config(tmp_path / "bin", "openssl")
    lib = tmp_path / "lib"
    # The package's Python files from wherever it is imported from: the
    # tree, or an installed copy (make sdist-test moves the tree's aside).
    import waitress_c

    shutil.copytree(os.path.dirname(waitress_c.__file__), lib / "waitress_c",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = dict(no_sanitizer(fake_env), WC_NO_TLS="1", WC_WERROR="1")
    out = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(lib),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr
    cores = glob.glob(str(lib / "waitress_c" / "_core*.so"))
    assert len(cores) == 1, cores
    needed = subprocess.run(["readelf", "-d", cores[0]], capture_output=True, text=True,
                            check=True).stdout
    assert "libuv" in needed and "libssl" not in needed and "libcrypto" not in needed, needed

    run_env = dict(os.environ, PYTHONPATH=str(lib))
    code = ("import sys, waitress_c._core as c; assert c.__file__.startswith(%r), c.__file__; "
            "print(c.HAVE_TLS); from waitress_c.runner import run; sys.exit(run())" % str(lib))
    for extra in ([], ["--keyfile=%s" % (tmp_path / "missing.key")]):
        cli = subprocess.run(
            [sys.executable, "-c", code, "--listen=127.0.0.1:0",
             "--certfile=%s" % (pki / "server.pem"), *extra, "apps_tls:app"],
            cwd=os.path.join(ROOT, "tests"), env=run_env, capture_output=True, text=True,
            timeout=60, stdin=subprocess.DEVNULL,
        )
        assert cli.stdout.splitlines()[:1] == ["False"], (cli.stdout, cli.stderr)
        assert cli.returncode == 1, cli.stderr
        errors = [ln for ln in cli.stderr.splitlines() if "Error" in ln]
        assert len(errors) == 1, cli.stderr
        assert "this build of waitress_c has no TLS" in errors[0], cli.stderr
        assert "manylinux_2_34" in errors[0] and "OpenSSL 3" in errors[0], cli.stderr
def test_missing_nghttp2_names_the_packages(tmp_path):
    out = run_setup(fake_pkg_config(tmp_path, "nghttp2"))
    assert out.returncode != 0
    assert "cannot find libnghttp2 (libnghttp2-dev)" in out.stderr and HINT in out.stderr
