#!/usr/bin/env bash
# make test-all: the whole suite on each CPython version named, each in its
# own venv (.venv-3.NN) with the extension rebuilt in place as `make build`
# builds it (WC_CHECKS=1, the lifecycle's assertions on) and with -Werror
# (--force: no stale or sanitized build is reused; the .so names carry the
# version, so they live side by side).
#
#   tools/test_all.sh 3.11 3.12 3.13 3.14 3.15
#
# A version that tools/pythons.sh provides (3.14, 3.15) runs inside its
# chroot (make pythons); any other is pyenv's ($PYENV_ROOT/versions/3.NN.*,
# newest first) or python3.NN on PATH.  A version that cannot be found is
# a failure, not a skip.  Prints the time each version took.
set -u
cd "$(dirname "$0")/.."

# One version with the interpreter $2, in this environment.
one() {
    local v=$1 py=$2 venv=.venv-$1
    echo "test-all: $("$py" -c 'import sys; print(sys.version.split()[0])') ($py) in $venv"
    if [ ! -f "$venv/.stamp" ] || [ pyproject.toml -nt "$venv/.stamp" ] ||
       [ setup.py -nt "$venv/.stamp" ] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        rm -rf "$venv" && "$py" -m venv "$venv" &&
        "$venv/bin/python" -m pip install -q --upgrade pip 'setuptools>=77' &&
        "$venv/bin/python" -m pip install -q -e '.[test]' &&
        touch "$venv/.stamp" || { echo "test-all: $v: the venv could not be made"; return 1; }
    fi
    WC_CHECKS=1 WC_WERROR=1 "$venv/bin/python" setup.py -q build_ext --inplace --force &&
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
}

if [ "${1:-}" = --one ]; then
    one "$2" "$3"
    exit
fi

# The interpreter for version $1 on this machine: CPython, that version,
# with the GIL (a free-threaded build is another target).
find_python() {
    local v=$1 c
    for c in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -rV) \
             $(command -v "python$v"); do
        if "$c" -c "import sys, sysconfig; assert sys.implementation.name == 'cpython' \
                and '%d.%d' % sys.version_info[:2] == '$v' \
                and not sysconfig.get_config_var('Py_GIL_DISABLED')" 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}

# tools/pythons.sh runs as root.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    else sudo env PYTHONS_DIR="${PYTHONS_DIR:-}" "$@"; fi
}

chroot_versions=$(tools/pythons.sh versions)
failed=""
for v in "$@"; do
    start=$SECONDS
    if echo "$chroot_versions" | grep -qx "$v"; then
        as_root tools/pythons.sh run tools/test_all.sh --one "$v" "/usr/bin/python$v" ||
            failed="$failed $v"
    elif py=$(find_python "$v"); then
        one "$v" "$py" || failed="$failed $v"
    else
        echo "test-all: no CPython $v found (pyenv install $v, or put python$v on PATH)"
        failed="$failed $v(missing)"
    fi
    echo "test-all: $v took $((SECONDS - start)) s"
done
if [ -n "$failed" ]; then
    echo "test-all: FAILED on:$failed"
    exit 1
fi
echo "test-all: passed on $*"
