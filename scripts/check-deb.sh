#!/usr/bin/env bash
# The Debian packages, end to end: build them (make deb: build/deb/, from
# the release build in target/), lintian (no errors), install them with
# apt-get, run the Apache end-to-end test against the installed system
# libraries and tools (/usr, the multiarch libdir, no LD_LIBRARY_PATH), then
# purge them again so that the machine is left as it was found.
#
# usage: scripts/check-deb.sh        (as root: it installs packages; CI runs it)
# Needs: debhelper, lintian, dpkg-dev, and what tests/e2e/apache.sh needs
# (.ci/run installs all of it).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
say() { printf '[%4ss] check-deb: %s\n' "$(($(date +%s) - T0))" "$*"; }
PKGS=(libdistcache1 libdistcache-dev distcache-tools)

[ "$(id -u)" = 0 ] || { echo "check-deb: must run as root (apt-get install/purge)" >&2; exit 2; }
for c in dpkg-buildpackage dh lintian apt-get; do
    command -v "$c" >/dev/null 2>&1 || { echo "check-deb: $c not found (apt-get install dpkg-dev debhelper lintian)" >&2; exit 2; }
done
for p in "${PKGS[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        say "note: $p was installed before this run; it is purged at the end"
    fi
done

say "building the packages and running lintian on them (make deb: fails on a lintian error)"
make --no-print-directory deb
ls -l build/deb/*.deb

MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
LIBDIR=/usr/lib/$MULTIARCH
purge() {
    say "purging ${PKGS[*]}"
    apt-get purge -y -qq "${PKGS[@]}" >/dev/null || { say "FAIL: apt-get purge"; exit 1; }
    for f in "$LIBDIR/libnal.so.1" /usr/bin/dc_server /usr/include/distcache; do
        [ ! -e "$f" ] || { say "FAIL: $f still there after the purge"; exit 1; }
    done
}
trap purge EXIT
trap 'exit 130' INT TERM

say "installing ${PKGS[*]} with apt-get"
debs=()
for p in "${PKGS[@]}"; do debs+=("./build/deb/${p}_"*.deb); done
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null

# What the packages put where, checked on the installed system.
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" | grep -q 'ok installed' || { say "FAIL: $p not installed"; exit 1; }
done
for f in "$LIBDIR/libnal.so.1" "$LIBDIR/libdistcache.so.1" "$LIBDIR/libdistcacheserver.so.1" \
         "$LIBDIR/libdistcache.so" "$LIBDIR/libnal.a" "$LIBDIR/pkgconfig/distcache.pc" \
         /usr/include/distcache/dc_client.h /usr/bin/dc_server /usr/bin/dc_client; do
    [ -e "$f" ] || { say "FAIL: $f not installed"; exit 1; }
done
# The package's ldconfig trigger is "noawait": dpkg may run it just after
# apt-get returns (a CI run once checked the cache before it was rewritten),
# so the cache gets up to 10 s to learn the library; a package without the
# trigger still fails here.
known=0
for _ in $(seq 50); do
    if ldconfig -p | grep "libdistcacheserver.so.1 .*=> .*$MULTIARCH" >/dev/null; then known=1; break; fi
    sleep 0.2
done
[ "$known" = 1 ] || { say "FAIL: ldconfig does not know libdistcacheserver.so.1 (10 s after apt-get install)"; exit 1; }

say "Apache end-to-end test against the installed packages (/usr, $LIBDIR)"
env -u LD_LIBRARY_PATH -u PKG_CONFIG_PATH bash tests/e2e/apache.sh /usr "$LIBDIR"

say "passed in $(($(date +%s) - T0)) s"
