"""The binary wheel ``make wheel`` writes to dist/: installed into a fresh
venv (no source tree on sys.path) it serves requests, and its extension
loads the libuv and http-parser copies bundled in ``waitress_c.libs/``, not
the system's.  Its tag is the one expected (WC_TEST_WHEEL_PLAT, e.g.
``manylinux_2_28``), its shared objects carry no debug info and have mode
0644.

Skipped unless WC_TEST_WHEEL names the wheel; ``make wheel-test`` builds it
and sets it, and runs this with the system's libuv, http-parser and C
compilers hidden (WC_TEST_WHEEL_HIDDEN=1, tools/wheel.sh), which the first
test checks."""

import ctypes
import glob
import struct
import zipfile
import os
import platform
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from servers import Server

WHEEL = os.environ.get("WC_TEST_WHEEL", "")
HIDDEN = os.environ.get("WC_TEST_WHEEL_HIDDEN") == "1"
EXPECT_PLAT = os.environ.get("WC_TEST_WHEEL_PLAT", "")
BUNDLED = ("libuv", "libhttp_parser")

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
        assert len(sos) == 3, [i.filename for i in sos]  # _core and the two libraries
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
