#!/bin/sh
# The system's main job on one machine: a dc_server, a dc_client proxy in
# front of it (UNIX sockets in a temp dir), and a dc_test load through the
# proxy, then straight to the server. Prints the results and stops both.
# usage: demo.sh <prefix>
#
# Nothing here depends on timing luck: the sockets live in a fresh private
# directory (no fixed path, no port), each daemon counts as started only
# once a real request through it has been answered correctly (not when its
# socket file appears), and every wait is bounded.
set -u
prefix=$1
bin=$prefix/bin
# A UNIX socket path must fit in 108 bytes: use TMPDIR only when short.
base=${TMPDIR:-/tmp}
[ ${#base} -le 60 ] && [ -d "$base" ] && [ -w "$base" ] || base=/tmp
tmp=$(mktemp -d "$base/dcrs-demo.XXXXXX") || { echo "demo: cannot make a temp dir" >&2; exit 1; }
server_pid=
client_pid=
stop() {
    # $1 pid (may be empty): TERM it and reap it, so its last lines are out
    # before the next one's.
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
cleanup() {
    # The proxy first, then the server it talks to.
    stop "$client_pid"
    stop "$server_pid"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
export LD_LIBRARY_PATH="$prefix/lib"

# ready <address> <name> <pid>: wait (at most 30 s) until one ADD/GET/REMOVE
# sequence through <address> is answered correctly; give up at once if the
# daemon died.
ready() {
    i=0
    while :; do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "demo: $2 exited during start-up" >&2
            exit 1
        fi
        "$bin/dc_test" -connect "$1" -sessions 1 -ops 3 >/dev/null 2>&1 && return 0
        i=$((i + 1))
        if [ $i -ge 300 ]; then
            echo "demo: $2 did not answer within 30 s" >&2
            exit 1
        fi
        sleep 0.1
    done
}

echo "== starting dc_server on UNIX:$tmp/server.sock"
"$bin/dc_server" -listen "UNIX:$tmp/server.sock" -sessions 100000 -progress 100000 &
server_pid=$!
ready "UNIX:$tmp/server.sock" dc_server "$server_pid"
echo "== starting dc_client on UNIX:$tmp/client.sock -> dc_server"
"$bin/dc_client" -server "UNIX:$tmp/server.sock" -listen "UNIX:$tmp/client.sock" &
client_pid=$!
ready "UNIX:$tmp/client.sock" dc_client "$client_pid"

status=0
echo "== dc_test through dc_client, a connection per operation (as Apache does)"
"$bin/dc_test" -connect "UNIX:$tmp/client.sock" -sessions 100 -ops 20000 -clients 4 || status=1
echo "== dc_test through dc_client, persistent connections"
"$bin/dc_test" -connect "UNIX:$tmp/client.sock" -sessions 100 -ops 50000 -clients 4 -persistent || status=1
echo "== dc_test straight to dc_server, persistent connections"
"$bin/dc_test" -connect "UNIX:$tmp/server.sock" -sessions 1000 -ops 100000 -clients 4 -persistent || status=1
for d in "dc_server:$server_pid" "dc_client:$client_pid"; do
    kill -0 "${d#*:}" 2>/dev/null || { echo "demo: ${d%%:*} died during the loads" >&2; status=1; }
done
if [ $status -eq 0 ]; then echo "demo: all loads answered correctly"; else echo "demo: FAILED" >&2; fi
exit $status
