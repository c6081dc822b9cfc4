#!/usr/bin/env bash
# The CPython versions newer than the machine's: a Debian unstable (sid)
# chroot that holds Debian's python3.14 and python3.15 with the build
# dependencies of the suite, made by debootstrap without touching the host.
#
#   tools/pythons.sh make        make the chroot, or refresh it (idempotent)
#   tools/pythons.sh run [-C DIR] CMD...
#                                run CMD inside it, as root, in this
#                                repository (bind-mounted at the same path)
#                                or in DIR, a folder inside it
#   tools/pythons.sh versions    the versions it provides, one a line
#   tools/pythons.sh mirror      the Debian archive it is made from
#
# Settings (environment): PYTHONS_DIR, the chroot (default
# /var/cache/waitress_c/sid-chroot, shared by every clone on the machine);
# PYTHONS_MIRROR, Debian's archive (default: the one this machine's apt
# uses); PYTHONS_MAX_AGE, hours after which
# `make` refreshes the packages (default 24; 0 refreshes every time).
#
# Root only (debootstrap, chroot, mounts).  The mounts (/proc, /dev,
# /dev/shm, the repository) are made in a mount namespace of their own
# (unshare -m), so they vanish with the command however it ends and are
# never seen by the host; a trap unmounts them as well.
set -euo pipefail

DIR=${PYTHONS_DIR:-/var/cache/waitress_c/sid-chroot}
# Debian's archive, as this machine's apt reaches it: the first URI of its
# sources (deb822 .sources files, then sources.list).
host_mirror() {
    local uri
    uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
          /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" { print $2; exit }' \
          /etc/apt/sources.list 2>/dev/null)
    echo "$uri"
}
MIRROR=${PYTHONS_MIRROR:-$(host_mirror)}
MAX_AGE=${PYTHONS_MAX_AGE:-24}
VERSIONS="3.14 3.15"
# What the suite needs: a compiler, libuv and http-parser, each Python with
# its headers and venv, nginx (tests/test_nginx.py), strace
# (test_http_filewrapper), curl, certificates for pip.
PACKAGES="gcc libc6-dev make pkg-config libuv1-dev libhttp-parser-dev
  ca-certificates curl nginx strace"
# TLS: OpenSSL 3 (csrc/tls.c).
PACKAGES="$PACKAGES libssl-dev"
# HTTP/2: nghttp2 (csrc/h2.c), and nghttp, h2load and HAProxy for
# tests/test_h2.py.
PACKAGES="$PACKAGES libnghttp2-dev nghttp2-client haproxy"
for v in $VERSIONS; do PACKAGES="$PACKAGES python$v-dev python$v-venv"; done
PACKAGES=$(echo $PACKAGES)
STAMP=$DIR/.waitress_c-stamp
REPO=$(cd "$(dirname "$0")/.." && pwd -P)
# sid's Release file outlives the archive's copy of sid: without this, apt
# refuses it as expired.
APT="apt-get -q -o Acquire::Check-Valid-Until=false -o Dpkg::Use-Pty=0"

say() { echo "pythons: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "needs root (debootstrap, chroot, mounts): run it with sudo"
        exit 1
    fi
}

# Run "$@" (a shell command line) in a private mount namespace with the
# chroot's /proc, /dev, /dev/shm and, with $2 = repo, the repository
# mounted; the shell's trap unmounts them at its end.
in_chroot() {
    local repo=$1 cwd=$1; shift
    if [ "${1:-}" = -C ]; then cwd=$2; shift 2; fi
    local inner='
set -e
root=$1; repo=$2; cwd=$3; shift 3
cleanup() {
    for m in "$root$repo" "$root/etc/ssl/certs/ca-certificates.crt" "$root/dev/shm" "$root/dev" "$root/proc"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m" 2>/dev/null || true
    done
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
if [ -n "$repo" ]; then
    mkdir -p "$root$repo"
    mount --bind "$repo" "$root$repo"
    cd_to=${cwd:-$repo}
else
    cd_to=/
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The trust store of the machine (with any local CA its TLS traffic needs),
# for pip inside; the bundle of the chroot is back once this ends.
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ] && [ -f "$root$bundle" ]; then
    mount --bind -o ro "$bundle" "$root$bundle"
fi
chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ${CI:+CI=$CI} ${WC_WERROR:+WC_WERROR=$WC_WERROR} \
    /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$cd_to" "$@"
'
    unshare --mount --propagation private \
        /bin/bash -c "$inner" in_chroot "$DIR" "$repo" "$cwd" "$@"
}

make_chroot() {
    need_root
    mkdir -p "$(dirname "$DIR")"
    exec 9>"$DIR.lock"
    flock 9
    local start=$SECONDS
    if [ ! -f "$STAMP" ]; then
        command -v debootstrap >/dev/null || {
            say "installing debootstrap"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq debootstrap
        }
        # Built aside and moved into place: an interrupted run leaves no
        # half-made chroot behind.
        rm -rf "$DIR.new"
        say "debootstrap sid into $DIR (minbase)"
        debootstrap --variant=minbase sid "$DIR.new" "$MIRROR" \
            >"$DIR.debootstrap.log" 2>&1 || {
            tail -20 "$DIR.debootstrap.log" >&2
            say "debootstrap failed (log: $DIR.debootstrap.log)"
            exit 1
        }
        # No daemon is started by a package's install script.
        printf '#!/bin/sh\nexit 101\n' >"$DIR.new/usr/sbin/policy-rc.d"
        chmod 755 "$DIR.new/usr/sbin/policy-rc.d"
        # "localhost" as most machines have it: IPv4 and IPv6.
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
            >"$DIR.new/etc/hosts"
        rm -rf "$DIR"
        mv "$DIR.new" "$DIR"
        say "debootstrap took $((SECONDS - start)) s"
    elif [ "$(sed -n 1p "$STAMP")" = "$PACKAGES" ] &&
         [ -z "$(find "$STAMP" -mmin +$((MAX_AGE * 60)) 2>/dev/null)" ] &&
         [ "$MAX_AGE" != 0 ]; then
        say "$DIR is up to date (refreshed less than $MAX_AGE h ago)"
        return 0
    fi
    say "installing or refreshing: $PACKAGES"
    in_chroot "" sh -c "$APT update -qq && DEBIAN_FRONTEND=noninteractive \
        $APT install -y -qq --no-install-recommends $PACKAGES >/tmp/apt.log 2>&1 \
        || { tail -30 /tmp/apt.log; exit 1; }"
    for v in $VERSIONS; do
        in_chroot "" "python$v" -c 'import sys; print("pythons:", sys.version.split()[0])' >&2
    done
    echo "$PACKAGES" >"$STAMP"
    say "ready in $((SECONDS - start)) s"
}

run_in() {
    need_root
    if [ ! -f "$STAMP" ]; then
        say "no chroot in $DIR: run 'make pythons' first"
        exit 1
    fi
    exec 9>"$DIR.lock"
    flock -s 9
    in_chroot "$REPO" "$@"
}

case "${1:-}" in
    make) make_chroot ;;
    run) shift; run_in "$@" ;;
    versions) echo $VERSIONS | tr ' ' '\n' ;;
    # The archive debootstrap uses (tools/wheel.sh makes its chroot from it).
    mirror) echo "$MIRROR" ;;
    *) echo "usage: $0 make | run CMD... | versions" >&2; exit 2 ;;
esac
