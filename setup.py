"""Build the one C extension, waitress_c._core, against the system libuv,
http-parser, OpenSSL 3 and nghttp2.  No library is vendored: a missing one
stops the build with the name of the Debian package that provides it.

WC_NO_TLS=1 builds without OpenSSL: no TLS (csrc/tls.c compiles to stubs
that refuse a certfile).  The manylinux_2_28 wheels are built so, since no
OpenSSL 3 runs on their glibc (docs/installation.rst)."""

import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup

APT_HINT = (
    "waitress_c needs the system libuv, http-parser, OpenSSL 3 and "
    "nghttp2.  On Debian/Ubuntu:\n"
    "    apt-get install libuv1-dev libhttp-parser-dev libssl-dev "
    "libnghttp2-dev pkg-config\n"
)

HTTP_PARSER_LIBDIRS = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
]


def fail(why):
    sys.stderr.write("\nerror: %s\n\n%s\n" % (why, APT_HINT))
    sys.exit(1)


def pkg_config(*args, lib="libuv", package="libuv1-dev"):
    if shutil.which("pkg-config") is None:
        fail("pkg-config was not found")
    try:
        out = subprocess.check_output(["pkg-config"] + list(args) + [lib])
    except subprocess.CalledProcessError:
        fail("pkg-config cannot find %s (%s)" % (lib, package))
    return out.decode().split()


def openssl(*args):
    """pkg-config for OpenSSL, which must be 3.0 or newer (tls.c)."""
    return pkg_config(*args, lib="openssl >= 3.0", package="libssl-dev")


def nghttp2(*args):
    """pkg-config for nghttp2 (h2.c: HTTP/2)."""
    return pkg_config(*args, lib="libnghttp2", package="libnghttp2-dev")


def find_http_parser():
    incdirs = ["/usr/include", "/usr/local/include"]
    if not any(os.path.exists(os.path.join(d, "http_parser.h")) for d in incdirs):
        fail("http_parser.h was not found (libhttp-parser-dev)")
    for d in HTTP_PARSER_LIBDIRS:
        if glob.glob(os.path.join(d, "libhttp_parser.so*")):
            return
    fail("libhttp_parser.so was not found (libhttp-parser-dev)")


def sanitizers(value):
    """WC_SANITIZE: unset or empty for none; "thread" for ThreadSanitizer;
    anything else ("1", "address") for AddressSanitizer + UBSan.  TSan cannot
    be combined with ASan, so the two are separate builds."""
    value = value.strip().lower()
    if value in ("", "0"):
        return ""
    if value in ("thread", "tsan"):
        return "thread"
    return "address,undefined"


def extension():
    cflags = pkg_config("--cflags") + nghttp2("--cflags")
    libs = pkg_config("--libs") + nghttp2("--libs")
    if os.environ.get("WC_NO_TLS", "") not in ("", "0"):
        cflags.append("-DWC_NO_TLS")
    else:
        cflags += openssl("--cflags")
        libs += openssl("--libs")
    find_http_parser()
    extra_compile = cflags + [
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Wno-missing-field-initializers",
        "-fvisibility=hidden",
        "-O2",
    ]
    if os.environ.get("WC_WERROR"):
        extra_compile.append("-Werror")
    if os.environ.get("WC_DEBUG"):
        extra_compile += ["-O0", "-g3", "-UNDEBUG"]
    sanitize = sanitizers(os.environ.get("WC_SANITIZE", ""))
    # WC_CHECKS=1: the lifecycle's assertions (csrc/wc.h, WC_ASSERT), on
    # in the test and sanitizer builds.
    if os.environ.get("WC_CHECKS") or os.environ.get("WC_DEBUG") or sanitize:
        extra_compile.append("-DWC_CHECKS")
    if sanitize:
        extra_compile += ["-fsanitize=" + sanitize, "-fno-omit-frame-pointer", "-g"]
    if sanitize == "thread":
        # gcc warns that TSan does not model atomic_thread_fence (the
        # seqlock of dispatch.c's worker records).  Every word there is an
        # atomic, so TSan still sees no plain access race; without this,
        # WC_WERROR=1 (CI) would fail `make tsan`.
        extra_compile.append("-Wno-tsan")
    extra_link = list(libs) + ["-lhttp_parser"]
    if sanitize:
        extra_link += ["-fsanitize=" + sanitize]
    return Extension(
        "waitress_c._core",
        sources=sorted(glob.glob("csrc/*.c")),
        depends=sorted(glob.glob("csrc/*.h")),
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    )


setup(ext_modules=[extension()])
