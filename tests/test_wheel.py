"""The binary wheels ``make wheel`` writes to dist/, two per CPython
version: manylinux_2_34 with TLS (built on Debian 12, OpenSSL 3 bundled)
and manylinux_2_28 without (built in Debian 11, WC_NO_TLS=1).  Installed
into a fresh venv (no source tree on sys.path) each serves requests, and
its extension loads the libuv, http-parser (and for the TLS one libssl and
libcrypto) copies bundled in ``waitress_c.libs/``, not the system's.  Its
tag is the one expected (WC_TEST_WHEEL_PLAT, e.g. ``manylinux_2_28``), its
shared objects carry no debug info and have mode 0644.  The TLS wheel
serves HTTPS with the system's OpenSSL hidden from the server; the other
refuses a certfile in one line.  pip picks the TLS wheel where glibc
allows it and the other one on an older glibc.

Skipped unless WC_TEST_WHEEL names the wheel (WC_TEST_WHEEL_TLS=1 when it
is the TLS one); ``make wheel-test`` builds them and sets these, and runs
this with the system's libuv, http-parser and C compilers hidden
(WC_TEST_WHEEL_HIDDEN=1, tools/wheel.sh), which the first test checks."""

import ctypes
import glob
import json
import os
import platform
import re
import signal
import ssl
import struct
import subprocess
import sys
import urllib.request
import zipfile

import pytest
from servers import Server

WHEEL = os.environ.get("WC_TEST_WHEEL", "")
HIDDEN = os.environ.get("WC_TEST_WHEEL_HIDDEN") == "1"
EXPECT_PLAT = os.environ.get("WC_TEST_WHEEL_PLAT", "")
TLS = os.environ.get("WC_TEST_WHEEL_TLS") == "1"
BUNDLED = ("libuv", "libhttp_parser") + (("libssl", "libcrypto") if TLS else ())
OPENSSL = ("libssl", "libcrypto")

pytestmark = pytest.mark.skipif(
    not WHEEL, reason="set WC_TEST_WHEEL to a built wheel (make wheel-test)"
)

APP = '''\
import waitress_c

def app(environ, start_response):
    body = ("served by %s\\n" % waitress_c.__file__).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def clean_env():
    """The environment without anything that would find the source tree."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
        env.pop(name, None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the wheel installed: (venv python, site-packages, workdir)."""
    assert os.path.isfile(WHEEL), "WC_TEST_WHEEL=%r is not a file" % WHEEL
    root = tmp_path_factory.mktemp("wheel")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    # The wheel has no dependencies: nothing is fetched from an index.
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", WHEEL],
        check=True,
        timeout=300,
        env=clean_env(),
    )
    work = root / "work"  # the cwd of everything below: no waitress_c/ in it
    work.mkdir()
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_path('platlib'))"],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env=clean_env(),
    ).stdout.strip()
    return py, site, work


def test_wheel_name_carries_a_manylinux_tag():
    name = os.path.basename(WHEEL)
    assert re.search(r"-manylinux_\d+_\d+_%s\.whl$" % re.escape(platform.machine()), name), name
    if EXPECT_PLAT:
        assert "-%s_%s." % (EXPECT_PLAT, platform.machine()) in name, name


@pytest.mark.skipif(not HIDDEN, reason="the system's libraries are hidden by make wheel-test")
def test_the_system_libraries_and_compilers_are_hidden():
    for lib in ("libuv.so.1", "libhttp_parser.so.2.9"):
        with pytest.raises(OSError):
            ctypes.CDLL(lib)
    for cc in ("cc", "gcc"):
        try:
            out = subprocess.run([cc, "--version"], capture_output=True, timeout=30)
        except OSError:
            continue
        assert out.returncode != 0, (cc, out.stdout)


def section_names(data):
    """The section names of a 64-bit little-endian ELF file."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, data[:8]
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i):
        # sh_name, then sh_offset at 0x18 and sh_size at 0x20
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size
    _, str_off, str_size = header(shstrndx)
    strtab = data[str_off:str_off + str_size]
    return {strtab[n:strtab.index(b"\0", n)].decode() for n, _, _ in map(header, range(shnum))}


def test_shared_objects_are_stripped_and_not_executable():
    with zipfile.ZipFile(WHEEL) as zf:
        sos = [i for i in zf.infolist() if re.search(r"\.so(\.|$)", i.filename)]
        # _core and the bundled libraries; OpenSSL only in the TLS wheel.
        assert len(sos) == 1 + len(BUNDLED), [i.filename for i in sos]
        libs = [os.path.basename(i.filename) for i in sos if "/_core" not in i.filename]
        for lib in BUNDLED:
            assert sum(n.startswith(lib + "-") for n in libs) == 1, libs
        for info in sos:
            assert (info.external_attr >> 16) & 0o777 == 0o644, (info.filename, oct(info.external_attr >> 16))
            names = section_names(zf.read(info))
            assert ".text" in names, (info.filename, names)
            assert not {n for n in names if n.startswith(".debug")}, (info.filename, names)
            assert ".symtab" not in names, (info.filename, names)


def test_auditwheel_show_accepts_the_manylinux_tag():
    out = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", WHEEL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # auditwheel wraps its lines
    tag = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    assert tag, text
    assert tag.group(1).startswith("manylinux_"), text
    assert tag.group(1) in os.path.basename(WHEEL)
    # Nothing outside the manylinux policy's system libraries is needed.
    assert "external shared libraries are required" not in text, text


def test_bundled_libraries_come_with_their_copyright_files(installed):
    py, site, work = installed
    out = subprocess.run(
        [py, "-c", "from importlib.metadata import metadata as m; "
         "print(chr(10).join(m('waitress_c').get_all('License-File')))"],
        capture_output=True, text=True, check=True, cwd=work, env=clean_env(),
    )
    listed = out.stdout.split()
    assert "LICENSE" in listed, listed
    info = glob.glob(os.path.join(site, "waitress_c-*.dist-info"))
    assert len(info) == 1, info
    for name in listed:
        with open(os.path.join(info[0], "licenses", name), encoding="utf-8") as f:
            assert "Copyright" in f.read(), name
    # One notice per Debian package a bundled library came from.
    notices = " ".join(listed)
    assert "libuv" in notices and "http-parser" in notices, listed
    assert ("bundled/libssl" in notices) == TLS, listed


def test_installed_extension_resolves_to_the_bundled_libraries(installed):
    py, site, work = installed
    libs = os.path.join(site, "waitress_c.libs")
    bundled = sorted(os.listdir(libs))
    for lib in BUNDLED:
        assert any(f.startswith(lib + "-") for f in bundled), bundled
    cores = glob.glob(os.path.join(site, "waitress_c", "_core*.so"))
    assert len(cores) == 1, cores
    out = subprocess.run(
        ["ldd", cores[0]], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert out.returncode == 0, out.stderr
    assert "not found" not in out.stdout, out.stdout
    for lib in BUNDLED:
        lines = [ln for ln in out.stdout.splitlines() if ln.strip().startswith(lib)]
        assert len(lines) == 1, out.stdout
        target = lines[0].split("=>")[1].split("(")[0].strip()
        assert os.path.dirname(os.path.realpath(target)) == os.path.realpath(libs), out.stdout


def test_served_from_the_installed_wheel(installed):
    py, site, work = installed
    (work / "wheelapp.py").write_text(APP)
    serve = os.path.join(os.path.dirname(py), "waitress-c-serve")
    server = Server(
        [serve, "--listen=127.0.0.1:0", "--threads=2", "wheelapp:app"],
        cwd=work,
        env=clean_env(),
        ready=re.compile(r"Serving on http://(?P<host>127\.0\.0\.1):(?P<port>\d+)"),
        timeout=30,
    )
    try:
        url = "http://127.0.0.1:%d/" % server.port
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            body = resp.read().decode()
        assert body == "served by %s\n" % os.path.join(site, "waitress_c", "__init__.py")

        # The running process mapped the bundled copies, and no other.
        maps = open("/proc/%d/maps" % server.pid).read()
        libs = os.path.join(site, "waitress_c.libs")
        for lib in BUNDLED:
            paths = {ln.split()[-1] for ln in maps.splitlines()
                     if os.path.basename(ln.split()[-1]).startswith(lib)}
            assert paths, maps
            assert {os.path.dirname(os.path.realpath(p)) for p in paths} == {
                os.path.realpath(libs)
            }, paths
    finally:
        rc, output = server.close(signal.SIGTERM, timeout=20)
    assert rc == 0, output


def hide_openssl(cmd):
    """cmd run with the system's libssl and libcrypto hidden too (/dev/null
    bound over them in a mount namespace of its own, inside the one
    tools/wheel.sh made): only the copies the wheel bundles can load.
    unshare and sh exec, so the process is cmd's.  Root only."""
    files = sorted({os.path.realpath(f) for pattern in (
        "/usr/lib/*/libssl.so*", "/usr/lib/*/libcrypto.so*",
        "/lib/*/libssl.so*", "/lib/*/libcrypto.so*") for f in glob.glob(pattern)})
    assert files, "no system libssl to hide"
    return ["unshare", "--mount", "--propagation", "unchanged", "/bin/sh", "-c",
            'for f in %s; do mount --bind /dev/null "$f"; done; exec "$@"'
            % " ".join(files), "hide", *cmd]


@pytest.mark.skipif(not TLS, reason="the manylinux_2_28 wheel has no TLS")
@pytest.mark.skipif(not HIDDEN, reason="hiding the system's OpenSSL is make wheel-test's")
def test_https_served_with_the_system_openssl_hidden(installed, pki):
    py, site, work = installed
    probe = subprocess.run(
        hide_openssl([py, "-c", "import ctypes; ctypes.CDLL('libssl.so.3')"]),
        capture_output=True, text=True, timeout=60, cwd=work, env=clean_env(),
    )
    assert probe.returncode != 0 and "OSError" in probe.stderr, probe
    (work / "wheelapp.py").write_text(APP)
    serve = os.path.join(os.path.dirname(py), "waitress-c-serve")
    server = Server(
        hide_openssl([serve, "--listen=127.0.0.1:0", "--threads=2",
                      "--certfile=%s" % (pki / "server.pem"),
                      "--keyfile=%s" % (pki / "server.key"), "wheelapp:app"]),
        cwd=work,
        env=clean_env(),
        ready=re.compile(r"Serving on https://(?P<host>127\.0\.0\.1):(?P<port>\d+)"),
        timeout=30,
    )
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        url = "https://127.0.0.1:%d/" % server.port
        with urllib.request.urlopen(url, timeout=10, context=ctx) as resp:
            assert resp.status == 200
            assert resp.read().decode().startswith("served by " + site)
        # Its own mount namespace: in the chroot of tools/pythons.sh its
        # maps name files from the machine's root, a prefix of ours.
        maps = open("/proc/%d/maps" % server.pid).read()
        libs = os.path.realpath(os.path.join(site, "waitress_c.libs"))
        for lib in OPENSSL:
            dirs = {os.path.dirname(ln.split()[-1]) for ln in maps.splitlines()
                    if os.path.basename(ln.split()[-1]).startswith(lib)}
            assert len(dirs) == 1 and dirs.pop().endswith(libs), maps
    finally:
        rc, output = server.close(signal.SIGTERM, timeout=20)
    assert rc == 0, output


@pytest.mark.skipif(TLS, reason="the TLS wheel serves HTTPS")
def test_certfile_is_a_one_line_error_without_tls(installed, pki):
    py, site, work = installed
    (work / "wheelapp.py").write_text(APP)
    serve = os.path.join(os.path.dirname(py), "waitress-c-serve")
    out = subprocess.run(
        [serve, "--listen=127.0.0.1:0", "--certfile=%s" % (pki / "server.pem"), "wheelapp:app"],
        capture_output=True, text=True, timeout=60, cwd=work, env=clean_env(),
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 1, out
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out.stderr
    assert "this build of waitress_c has no TLS" in errors[0], out.stderr
    assert "manylinux_2_34" in errors[0], out.stderr
    flag = subprocess.run([py, "-c", "import waitress_c._core as c; print(c.HAVE_TLS)"],
                          capture_output=True, text=True, timeout=60, cwd=work, env=clean_env())
    assert flag.stdout.strip() == "False", flag


def pip_pick(work, glibc=None):
    """The wheel of dist/ (WHEEL's folder) that pip (this venv's) chooses
    for this machine, or for a machine of glibc 2.<glibc>: its file name.
    pip takes no glibc version, only the platform tags such a machine
    accepts, most specific first, as packaging lists them (2.<glibc> down
    to 2.17)."""
    dist = os.path.dirname(WHEEL)
    if glibc is not None:
        tag = "%d%d" % sys.version_info[:2]
        dest = work / ("pick-2_%d" % glibc)
        plats = []
        for minor in range(glibc, 16, -1):
            plats += ["--platform", "manylinux_2_%d_%s" % (minor, platform.machine())]
        out = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-index", "--find-links", dist,
             "--only-binary=:all:", "--no-deps", "--python-version", tag,
             "--implementation", "cp", "--abi", "cp" + tag, *plats,
             "-d", str(dest), "waitress_c"],
            capture_output=True, text=True, timeout=120, cwd=work, env=clean_env(),
        )
        assert out.returncode == 0, out.stderr
        got = os.listdir(dest)
        assert len(got) == 1, got
        return got[0]
    report = work / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--no-index",
         "--find-links", dist, "--only-binary=:all:", "--no-deps", "--report", str(report),
         "waitress_c"],
        capture_output=True, text=True, timeout=120, cwd=work, env=clean_env(),
    )
    assert out.returncode == 0, out.stderr
    items = json.loads(report.read_text())["install"]
    assert len(items) == 1, items
    return os.path.basename(items[0]["download_info"]["url"])


@pytest.mark.skipif(not TLS, reason="checked once per version, with the TLS wheel")
def test_pip_prefers_the_tls_wheel_where_glibc_allows(installed):
    """Both wheels side by side in dist/: pip takes the most specific tag
    its glibc allows.  Here (glibc 2.34 or newer) and on such a machine
    that is the TLS wheel; on RHEL 8 or Ubuntu 20.04 (glibc 2.28, 2.31) the
    other one."""
    py, site, work = installed
    machine = platform.machine()
    others = glob.glob(os.path.join(os.path.dirname(WHEEL), "%s-*manylinux_2_28_%s.whl"
                                    % (os.path.basename(WHEEL).split("-manylinux")[0], machine)))
    assert len(others) == 1, "the manylinux_2_28 wheel of this version is not beside %s" % WHEEL
    assert pip_pick(work) == os.path.basename(WHEEL)
    for glibc in (34, 36):  # RHEL 9 and Ubuntu 22.04, Debian 12
        assert pip_pick(work, glibc) == os.path.basename(WHEEL)
    for glibc in (28, 31):  # RHEL 8, Ubuntu 20.04
        assert pip_pick(work, glibc) == os.path.basename(others[0])
    # packaging's order, which pip follows: the newer tag first.
    order = subprocess.run(
        [py, "-c", "from pip._vendor.packaging.tags import sys_tags; "
         "print(chr(10).join(t.platform for t in sys_tags()))"],
        capture_output=True, text=True, check=True, timeout=60, cwd=work, env=clean_env(),
    ).stdout.split()
    plat = os.path.basename(WHEEL).rsplit("-", 1)[1][:-len(".whl")]
    assert order.index(plat) < order.index("manylinux_2_28_%s" % machine), order
