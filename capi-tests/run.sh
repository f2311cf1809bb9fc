#!/bin/sh
# Build every C API test against an installed prefix, run it, then run it
# again under valgrind. Also builds the C examples through pkg-config and one
# test statically.
#
# File name prefix picks the link line real programs use:
#   nal_*.c  -lnal
#   dc_*.c   -ldistcache -lnal
#   srv_*.c  -ldistcacheserver -ldistcache -lnal
# A test whose source contains the word NEEDS-SERVER gets a running dc_server
# (our own, from the prefix) in $DC_TEST_ADDR and as argv[1].
#
# usage: run.sh <prefix>
set -u
prefix=$1
here=$(cd "$(dirname "$0")" && pwd)
out=$here/bin
mkdir -p "$out"
tmp=$(mktemp -d /tmp/dcrs-capi.XXXXXX)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

CC_CMD=${CC:-cc}
CFLAGS="-Wall -Wextra -Werror -O1 -g -I$prefix/include -I$here"
export LD_LIBRARY_PATH="$prefix/lib"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "capi-tests: FAILED: $*" >&2; }

start_server() {
    [ -n "$server_pid" ] && return 0
    "$prefix/bin/dc_server" -listen "UNIX:$tmp/dc.sock" -sessions 100000 >"$tmp/server.log" 2>&1 &
    server_pid=$!
    i=0
    while [ ! -S "$tmp/dc.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    if [ ! -S "$tmp/dc.sock" ]; then
        echo "capi-tests: dc_server did not start:" >&2
        cat "$tmp/server.log" >&2
        return 1
    fi
}

have_valgrind=0
command -v valgrind >/dev/null 2>&1 && have_valgrind=1
[ "${DCRS_NO_VALGRIND:-0}" = 1 ] && have_valgrind=0

for src in "$here"/*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    case $name in
        nal_*) libs="-lnal" ;;
        dc_*) libs="-ldistcache -lnal" ;;
        srv_*) libs="-ldistcacheserver -ldistcache -lnal" ;;
        *) bad "$name: unknown test prefix"; continue ;;
    esac
    if ! $CC_CMD $CFLAGS -o "$out/$name" "$src" -L"$prefix/lib" $libs -lpthread 2>"$tmp/cc.log"; then
        cat "$tmp/cc.log" >&2
        bad "$name: does not compile"
        continue
    fi
    args=
    unset DC_TEST_ADDR
    if grep -q NEEDS-SERVER "$src"; then
        if ! start_server; then bad "$name: no server"; continue; fi
        export DC_TEST_ADDR="UNIX:$tmp/dc.sock"
        args=$DC_TEST_ADDR
    fi
    if timeout 120 "$out/$name" $args; then ok; else bad "$name (exit $?)"; fi
    # The DC_CTX tests once more with flags-0 contexts keeping their
    # connections (DISTCACHE_REUSE_CONNECTIONS, what Apache can be told to
    # do): the same answers are expected.
    case $name in
        dc_ctx_*)
            if DISTCACHE_REUSE_CONNECTIONS=1 timeout 120 "$out/$name" $args; then ok; else bad "$name with DISTCACHE_REUSE_CONNECTIONS=1 (exit $?)"; fi ;;
    esac
    if [ $have_valgrind = 1 ]; then
        if DCRS_UNDER_VALGRIND=1 timeout 600 valgrind -q --error-exitcode=9 --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite \
            "$out/$name" $args >"$tmp/vg.log" 2>&1; then
            ok
        else
            cat "$tmp/vg.log" >&2
            bad "$name under valgrind"
        fi
    fi
done

# The C examples, built the way packagers do: through pkg-config.
for src in "$here"/../examples-c/*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    case $name in
        nal_*) pkg=libnal ;;
        dc_*) pkg=distcache ;;
        srv_*) pkg=distcacheserver ;;
        *) pkg=distcacheserver ;;
    esac
    # shellcheck disable=SC2046
    if $CC_CMD -Wall -Wextra -Werror -O2 -o "$out/ex_$name" "$src" $(pkg-config --cflags --libs $pkg) 2>"$tmp/cc.log"; then
        ok
    else
        cat "$tmp/cc.log" >&2
        bad "example $name does not build with pkg-config $pkg"
    fi
done

# The examples working together: the DC_SERVER mini server answers the
# DC_CTX command-line client and a dc_test load.
if [ -x "$out/ex_srv_mini_server" ] && [ -x "$out/ex_dc_session_tool" ]; then
    sock="$tmp/mini.sock"
    "$out/ex_srv_mini_server" "UNIX:$sock" 1000 60 >"$tmp/mini.log" 2>&1 &
    mini_pid=$!
    i=0
    while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    tool="$out/ex_dc_session_tool UNIX:$sock"
    data="a session longer than the tool's first 16-byte buffer"
    if $tool add sid-1 "$data" 60000 >/dev/null && [ "$($tool get sid-1)" = "get: $data" ] &&
        $tool has sid-1 >/dev/null && $tool del sid-1 >/dev/null && ! $tool get sid-1 >/dev/null &&
        "$prefix/bin/dc_test" -connect "UNIX:$sock" -sessions 50 -ops 5000 -clients 2 >"$tmp/mini-dc_test.log" 2>&1; then
        ok
    else
        cat "$tmp/mini.log" "$tmp/mini-dc_test.log" >&2
        bad "examples: srv_mini_server with dc_session_tool and dc_test"
    fi
    kill "$mini_pid" 2>/dev/null
    wait "$mini_pid" 2>/dev/null
fi

# One static link: the archives and pkg-config --static must be enough.
first=$(ls "$here"/nal_*.c 2>/dev/null | head -n 1)
if [ -n "$first" ]; then
    # shellcheck disable=SC2046
    if $CC_CMD $CFLAGS -o "$out/static_test" "$first" -L"$prefix/lib" -Wl,-Bstatic -ldistcache -lnal -Wl,-Bdynamic \
        $(pkg-config --static --libs-only-l libnal | sed 's/-lnal//') 2>"$tmp/cc.log" && "$out/static_test" >/dev/null; then
        if ldd "$out/static_test" | grep -q libnal; then bad "static test still needs libnal.so"; else ok; fi
    else
        cat "$tmp/cc.log" >&2
        bad "static link against libnal.a"
    fi
fi

echo "capi-tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
