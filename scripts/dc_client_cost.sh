#!/usr/bin/env bash
# What dc_client and libdistcache cost per operation, counted rather than
# timed (issue 20): system calls per operation under `strace -c -f`, and
# dc_client's user-space instructions per operation under callgrind.
#
#   scripts/dc_client_cost.sh PREFIX [OPS]
#
# PREFIX is an install of this project (make build/stamp-testinstall puts
# one in build/prefix); point it at another install (e.g. a copy with an
# older bin/dc_client) to compare two builds with the same load program.
# OPS (default 5000) GETs per client through scripts/dcops.c, after one ADD
# each; dc_client listens on UNIX and forwards to dc_server over TCP
# 127.0.0.1, as in the benchmark's dc_client cells.
#
# Output: markdown table rows on stdout. Needs strace and valgrind.
set -u

PREFIX=${1:?usage: $0 PREFIX [OPS]}
OPS=${2:-5000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case $PREFIX in /*) ;; *) PREFIX=$ROOT/$PREFIX ;; esac
die() { echo "dc_client_cost: $*" >&2; exit 1; }
[ -x "$PREFIX/bin/dc_client" ] || die "no install in $PREFIX"
command -v strace >/dev/null || die "strace not found"
command -v valgrind >/dev/null || die "valgrind not found"

T=$(mktemp -d /tmp/dcrs-cost.XXXXXX)
SRV=
DCC=
ST=
stop_pid() {
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null
        wait "$1" 2>/dev/null
    fi
}
cleanup() { stop_pid "$ST"; stop_pid "$DCC"; stop_pid "$SRV"; rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -Wextra -Werror -I"$PREFIX/include" -o "$T/dcops" "$ROOT/scripts/dcops.c" \
    -L"$PREFIX/lib" -ldistcache -lnal || die "cannot compile scripts/dcops.c"
export LD_LIBRARY_PATH=$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# until PATH is a socket (PID still alive), at most 20 s
wait_sock() {
    local i
    for i in $(seq 1 1000); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

start_server() {
    local p
    p=$((20000 + RANDOM % 12000))
    "$PREFIX/bin/dc_server" -listen "IP:127.0.0.1:$p" </dev/null >>"$T/server.log" 2>&1 &
    SRV=$!
    for _ in $(seq 1 250); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { SRV_ADDR=IP:127.0.0.1:$p; return 0; }
        kill -0 "$SRV" 2>/dev/null || break
        sleep 0.02
    done
    die "dc_server did not start: $(tail -2 "$T/server.log")"
}

# ops MODE CLIENTS: run dcops against dc_client, fail on any error
ops() {
    "$T/dcops" "UNIX:$T/c.sock" "$OPS" "$1" "$2" >"$T/dcops.out" 2>&1 \
        || die "dcops $1 $2 failed: $(tail -3 "$T/dcops.out")"
}
total_ops() { echo $(( (OPS + 1) * $1 )); }

# strace_summary FILE OPS: "total/op (top calls/op)"
strace_summary() {
    # columns: % time, seconds, usecs/call, calls, [errors], syscall
    awk -v n="$2" '
        $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { c[$NF] = $4; tot += $4 }
        END {
            printf "%.2f |", tot / n
            for (k in c) if (c[k] / n >= 0.05) printf " %s %.2f,", k, c[k] / n
        }' "$1" | sed 's/,$//'
}

start_server
echo "| measure | mode | clients | per operation | detail |"
echo "|---|---|---|---|---|"

# ---- dc_client under strace ----
for mode in perconn persistent; do
    for clients in 1 16; do
        rm -f "$T/c.sock"
        "$PREFIX/bin/dc_client" -server "$SRV_ADDR" -listen "UNIX:$T/c.sock" </dev/null >>"$T/client.log" 2>&1 &
        DCC=$!
        wait_sock "$T/c.sock" "$DCC" || die "dc_client did not start: $(tail -2 "$T/client.log")"
        strace -c -f -o "$T/strace.txt" -p "$DCC" 2>"$T/strace.err" &
        ST=$!
        for _ in $(seq 1 250); do grep -q attached "$T/strace.err" && break; sleep 0.02; done
        ops "$mode" "$clients"
        kill -INT "$ST"; wait "$ST" 2>/dev/null; ST=
        n=$(total_ops "$clients")
        echo "| dc_client syscalls | $mode | $clients | $(strace_summary "$T/strace.txt" "$n") |"
        stop_pid "$DCC"; DCC=
    done
done

# ---- the library's calls, one dcops process traced with its children ----
for mode in perconn persistent; do
    rm -f "$T/c.sock"
    "$PREFIX/bin/dc_client" -server "$SRV_ADDR" -listen "UNIX:$T/c.sock" </dev/null >>"$T/client.log" 2>&1 &
    DCC=$!
    wait_sock "$T/c.sock" "$DCC" || die "dc_client did not start"
    strace -c -f -o "$T/strace.txt" "$T/dcops" "UNIX:$T/c.sock" "$OPS" "$mode" 1 >/dev/null 2>&1 \
        || die "dcops under strace failed"
    echo "| library syscalls (whole dcops process, start-up included) | $mode | 1 | $(strace_summary "$T/strace.txt" "$(total_ops 1)") |"
    stop_pid "$DCC"; DCC=
done

# ---- dc_client instructions under callgrind: two runs, OPS and 3*OPS
# operations; the difference over the difference in operations leaves out
# start-up and shutdown ----
ir_run() { # MODE CLIENTS MULT -> total Ir
    local out=$T/cg.out
    rm -f "$T/c.sock" "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$PREFIX/bin/dc_client" -server "$SRV_ADDR" -listen "UNIX:$T/c.sock" </dev/null >>"$T/cg.log" 2>&1 &
    DCC=$!
    wait_sock "$T/c.sock" "$DCC" || die "dc_client under valgrind did not start: $(tail -3 "$T/cg.log")"
    local k
    for k in $(seq 1 "$3"); do ops "$1" "$2"; done
    stop_pid "$DCC"; DCC=
    sed -n 's/^summary: *//p; s/^totals: *//p' "$out" | head -1
}
for mode in perconn persistent; do
    for clients in 1 16; do
        a=$(ir_run "$mode" "$clients" 1)
        b=$(ir_run "$mode" "$clients" 3)
        n=$(( 2 * $(total_ops "$clients") ))
        echo "| dc_client instructions (callgrind Ir) | $mode | $clients | $(awk -v a="$a" -v b="$b" -v n="$n" 'BEGIN { printf "%.0f", (b - a) / n }') | runs of $(total_ops "$clients") and $((3 * $(total_ops "$clients"))) ops: $a and $b Ir |"
    done
done
