#!/bin/sh
# The system's main job on one machine: a dc_server, a dc_client proxy in
# front of it (UNIX sockets in a temp dir), and a dc_test load through the
# proxy, then straight to the server. Prints the results and stops both.
# usage: demo.sh <prefix>
set -u
prefix=$1
bin=$prefix/bin
tmp=$(mktemp -d /tmp/dcrs-demo.XXXXXX)
pids=
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
export LD_LIBRARY_PATH="$prefix/lib"

wait_sock() {
    i=0
    while [ ! -S "$1" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -S "$1" ] || { echo "demo: $2 did not start" >&2; exit 1; }
}

echo "== starting dc_server on UNIX:$tmp/server.sock"
"$bin/dc_server" -listen "UNIX:$tmp/server.sock" -sessions 100000 -progress 100000 &
pids="$pids $!"
wait_sock "$tmp/server.sock" dc_server
echo "== starting dc_client on UNIX:$tmp/client.sock -> dc_server"
"$bin/dc_client" -server "UNIX:$tmp/server.sock" -listen "UNIX:$tmp/client.sock" &
pids="$pids $!"
wait_sock "$tmp/client.sock" dc_client

status=0
echo "== dc_test through dc_client, a connection per operation (as Apache does)"
"$bin/dc_test" -connect "UNIX:$tmp/client.sock" -sessions 100 -ops 20000 -clients 4 || status=1
echo "== dc_test through dc_client, persistent connections"
"$bin/dc_test" -connect "UNIX:$tmp/client.sock" -sessions 100 -ops 50000 -clients 4 -persistent || status=1
echo "== dc_test straight to dc_server, persistent connections"
"$bin/dc_test" -connect "UNIX:$tmp/server.sock" -sessions 1000 -ops 100000 -clients 4 -persistent || status=1
if [ $status -eq 0 ]; then echo "demo: all loads answered correctly"; else echo "demo: FAILED" >&2; fi
exit $status
