#!/usr/bin/env bash
# The benchmark matrix of issue 9 (run by `make bench` / `make bench-short`).
#
#   scripts/bench.sh full|short PREFIX
#
# PREFIX is an install of this project (the Makefile passes build/prefix).
# The load generator is the neutral bench/dcbench.c (bench/README.md),
# compiled against PREFIX. Every cell gets a
# fresh dc_server (and dc_client) so the stored population is exactly the
# cell's; dcbench pre-populates it and reports ops/s, latency percentiles and
# the CPU% of the server processes (-pid). Debian's redis-server and
# redis-benchmark are run side by side when installed (nothing is installed
# here: `apt-get install redis-server redis-tools`).
#
# Output: a markdown report on stdout, also written to build/bench/<mode>.md,
# with the raw dcbench/redis-benchmark lines in build/bench/<mode>-raw.txt.
# Environment: BENCH_SECONDS (per cell), BENCH_WARMUP, BENCH_OUT (directory),
# BENCH_CELLS (run these cells instead of the matrix), REDIS_SIZING_N
# (sessions stored in Redis for its memory figure, default 100000; 0 skips
# it) and REDIS_SIZING_SIZES (their sizes, default "200 1000").
set -u

MODE=${1:-full}
PREFIX=${2:-build/prefix}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case $PREFIX in /*) ;; *) PREFIX=$ROOT/$PREFIX ;; esac
OUTDIR=${BENCH_OUT:-$ROOT/build/bench}
SRC=$ROOT/bench/dcbench.c

case $MODE in
full)
    SECS=${BENCH_SECONDS:-3}
    WARM=${BENCH_WARMUP:-0.5}
    REDIS_N=200000
    # transport clients stored size. Each flat-cost pair (1 000 000 then
    # 512 stored) runs back to back, twice, so both members of a pair see
    # the same machine (a cell listed twice gets a row per run); floor-*
    # cells are the kernel-floor responder (scripts/floor.c), run next to
    # the cells they are compared with.
    CELLS="
unix 1 512 200
unix 16 1000000 200
unix 16 512 200
unix 16 1000000 200
unix 16 512 200
floor-p 16 0 200
unix 64 1000000 200
unix 64 512 200
unix 64 1000000 200
unix 64 512 200
floor-p 64 0 200
unix 1 512 1500
unix 16 1000000 1500
unix 16 512 1500
unix 16 1000000 1500
unix 16 512 1500
unix 64 512 1500
unix 1 50000 200
unix 16 50000 200
unix 64 50000 200
unix 16 50000 1500
tcp 1 512 200
tcp 16 1000000 200
tcp 16 512 200
tcp 16 1000000 200
tcp 16 512 200
tcp 64 1000000 200
tcp 64 512 200
tcp 64 1000000 200
tcp 64 512 200
tcp 1 512 1500
tcp 16 512 1500
tcp 64 512 1500
tcp 16 50000 200
tcp 64 50000 200
dcc-np 1 512 200
dcc-np 16 512 200
floor-np 16 0 200
dcc-np 64 512 200
dcc-np 1 512 1500
dcc-np 16 512 1500
dcc-np 64 512 1500
dcc-np 16 50000 200
dcc-p 1 512 200
dcc-p 16 512 200
dcc-tls-p 16 512 200
dcc-p 16 512 200
dcc-tls-p 16 512 200
dcc-p 64 512 200
dcc-tls-p 64 512 200
dcc-p 64 512 200
dcc-tls-p 64 512 200
dcc-reuse 16 512 200
dcc-reuse 64 512 200
dcc-p 1 512 1500
dcc-p 16 512 1500
dcc-p 64 512 1500
dcc-p 16 50000 200
dcc-p 1 512 200
dcc-redis-p 1 512 200
dcc-p 16 512 200
dcc-redis-p 16 512 200
dcc-np 16 512 200
dcc-redis-np 16 512 200
dcc-p 64 512 200
dcc-redis-p 64 512 200
dcc-np 64 512 200
dcc-redis-np 64 512 200
dcc-p 16 512 200
dcc-redis-p 16 512 200
dcc-np 16 512 200
dcc-redis-np 16 512 200
dcc-p 64 512 200
dcc-redis-p 64 512 200
dcc-np 64 512 200
dcc-redis-np 64 512 200
"
    ;;
short)
    SECS=${BENCH_SECONDS:-2}
    WARM=${BENCH_WARMUP:-0.3}
    REDIS_N=60000
    CELLS="
unix 1 512 200
unix 16 512 200
floor-p 16 0 200
unix 16 50000 200
tcp 16 512 200
tcp 64 512 200
dcc-np 16 512 200
floor-np 16 0 200
dcc-p 16 512 200
dcc-tls-p 16 512 200
dcc-reuse 16 512 200
dcc-p 64 512 200
dcc-tls-p 64 512 200
dcc-reuse 64 512 200
dcc-p 1 512 200
dcc-redis-p 1 512 200
dcc-p 16 512 200
dcc-redis-p 16 512 200
dcc-np 16 512 200
dcc-redis-np 16 512 200
dcc-p 64 512 200
dcc-redis-p 64 512 200
dcc-np 64 512 200
dcc-redis-np 64 512 200
"
    ;;
*)
    echo "usage: $0 full|short PREFIX" >&2
    exit 2
    ;;
esac

die() { echo "bench: $*" >&2; exit 1; }

# BENCH_CELLS replaces the matrix (same "transport clients stored size"
# lines), for a quick look at a few cells.
[ -z "${BENCH_CELLS:-}" ] || CELLS=$BENCH_CELLS

[ -x "$PREFIX/bin/dc_server" ] || die "no install in $PREFIX (run make build/stamp-testinstall)"
[ -f "$SRC" ] || die "no $SRC"
mkdir -p "$OUTDIR"
REPORT=$OUTDIR/$MODE.md
RAW=$OUTDIR/$MODE-raw.txt
: > "$RAW"
DCBENCH=$OUTDIR/dcbench
cc -O2 -I"$PREFIX/include" -o "$DCBENCH" "$SRC" -L"$PREFIX/lib" -ldistcache -lnal \
    || die "cannot compile dcbench"
FLOOR=$OUTDIR/floor
cc -O2 -Wall -Wextra -Werror -o "$FLOOR" "$ROOT/scripts/floor.c" || die "cannot compile scripts/floor.c"
DCRB=$OUTDIR/dcrb
cc -O2 -Wall -Wextra -Werror -o "$DCRB" "$ROOT/scripts/dcrb.c" || die "cannot compile scripts/dcrb.c"
export LD_LIBRARY_PATH=$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

T=$(mktemp -d /tmp/dcrs-bench.XXXXXX)
SRV=
DCC=
RPID=
stop_pid() {
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null
        wait "$1" 2>/dev/null
    fi
}
cleanup() {
    stop_pid "$DCC"
    stop_pid "$SRV"
    stop_pid "$RPID"
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port nothing listens on (bash's /dev/tcp connect fails), below
# the kernel's ephemeral range so no outgoing connection holds it either.
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_tcp PORT [PID]: until something accepts on PORT (PID still alive)
wait_tcp() {
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

wait_sock() {
    local i
    for i in $(seq 1 200); do
        [ -S "$1" ] && return 0
        [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# TLS cells (issue 16): a CA, a server certificate for 127.0.0.1 and a
# client certificate, made with openssl once per run.
PKI=$T/pki
TLS_NOTE=
make_pki() {
    command -v openssl >/dev/null 2>&1 || { TLS_NOTE="openssl not installed: no TLS cells"; return 1; }
    mkdir -p "$PKI" && (
        cd "$PKI" || exit 1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
            -out ca.pem -days 2 -subj "/CN=bench CA" &&
        for n in server client; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key \
                -out $n.csr -subj "/CN=$n" || exit 1
            if [ $n = server ]; then echo "subjectAltName=IP:127.0.0.1" >$n.ext
            else echo "subjectAltName=DNS:bench-client.example" >$n.ext; fi
            openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem \
                -days 2 -extfile $n.ext || exit 1
        done
        chmod 600 ./*.key
    ) >/dev/null 2>&1 || { TLS_NOTE="making the test certificates failed: no TLS cells"; return 1; }
}
tls_flags() { echo "-tls-cert $PKI/$1.pem -tls-key $PKI/$1.key -tls-ca $PKI/ca.pem"; }
TLS_OK=0
make_pki && TLS_OK=1

# start_server unix|tcp|tls [extra flags...]: a fresh dc_server; sets SRV
# and SRV_ADDR.
start_server() {
    local try
    stop_pid "$DCC"; DCC=
    stop_pid "$SRV"; SRV=
    rm -f "$T/s.sock"
    for try in 1 2 3 4 5; do
        local flags=
        if [ "$1" = unix ]; then
            SRV_ADDR=UNIX:$T/s.sock
        else
            PORT=$(free_port) || die "no free port"
            SRV_ADDR=IP:127.0.0.1:$PORT
        fi
        if [ "$1" = tls ]; then
            SRV_ADDR=TLS:127.0.0.1:$PORT
            flags=$(tls_flags server)
        fi
        # shellcheck disable=SC2086 # $flags are words
        "$PREFIX/bin/dc_server" -listen "$SRV_ADDR" -sessions 1100000 $flags "${@:2}" </dev/null >>"$T/server.log" 2>&1 &
        SRV=$!
        if [ "$1" = unix ]; then wait_sock "$T/s.sock" "$SRV"; else wait_tcp "$PORT" "$SRV"; fi && return 0
        stop_pid "$SRV"; SRV=
    done
    die "dc_server did not start on $SRV_ADDR: $(tail -3 "$T/server.log")"
}

# start_dc_client [ADDR]: a dc_client for SRV_ADDR (or ADDR) on $T/c.sock;
# sets DCC.
start_dc_client() {
    rm -f "$T/c.sock"
    local flags= addr=${1:-$SRV_ADDR}
    case $addr in TLS:*) flags=$(tls_flags client) ;; esac
    # shellcheck disable=SC2086 # $flags are words
    "$PREFIX/bin/dc_client" -server "$addr" -listen "UNIX:$T/c.sock" $flags </dev/null >>"$T/client.log" 2>&1 &
    DCC=$!
    wait_sock "$T/c.sock" "$DCC" || die "dc_client did not start: $(tail -3 "$T/client.log")"
}

# start_redis: a fresh redis-server (no persistence) on a free loopback
# port, in place of any dc_server, dc_client or redis-server running; sets
# RPID and RPORT. Fails (returns 1) when redis-server is not installed.
HAVE_REDIS=0
command -v redis-server >/dev/null && HAVE_REDIS=1
start_redis() {
    stop_pid "$DCC"; DCC=
    stop_pid "$SRV"; SRV=
    stop_pid "$RPID"; RPID=
    [ "$HAVE_REDIS" = 1 ] || return 1
    local try
    for try in 1 2 3 4 5; do
        RPORT=$(free_port) || die "no free port"
        redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --dir "$T" </dev/null >>"$T/redis.log" 2>&1 &
        RPID=$!
        wait_tcp "$RPORT" "$RPID" && return 0
        stop_pid "$RPID"; RPID=
    done
    die "redis-server did not start: $(tail -3 "$T/redis.log")"
}
# redis_info FIELD: one field of INFO (used_memory...), over bash's /dev/tcp.
redis_info() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "INFO\r\nQUIT\r\n" >&3
        tr -d "\r" <&3 | sed -n "s/^$2://p"' _ "$RPORT" "$1" 2>/dev/null | head -1
}

# key=value from a dcbench line
kv() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }

declare -A OPS USOP ROWS RUNS PRINTED ALLOPS ALLUSOP GETP50 GETP99

# mean "a b c" DECIMALS: the mean of the numbers (n/a when none).
mean() { awk -v l="$1" -v d="$2" 'BEGIN { n = split(l, x, " "); s = 0; m = 0
    for (i = 1; i <= n; i++) if (x[i] != "-" && x[i] != "") { s += x[i]; m++ }
    if (m > 0) printf "%." d "f", s / m; else print "n/a" }'; }
MEM_LINE=

tname() {
    case $1 in
    unix) echo "UNIX" ;;
    tcp) echo "TCP 127.0.0.1" ;;
    dcc-np) echo "dc_client, new conn/op" ;;
    dcc-p) echo "dc_client, persistent" ;;
    dcc-tls-p) echo "dc_client, persistent, TLS link" ;;
    dcc-reuse) echo "dc_client, flags 0 (Apache's mode) with DISTCACHE_REUSE_CONNECTIONS=1" ;;
    dcc-redis-p) echo "dc_client -> Redis, persistent" ;;
    dcc-redis-np) echo "dc_client -> Redis, new conn/op" ;;
    floor-p) echo "kernel floor: do-nothing responder, persistent (UNIX)" ;;
    floor-np) echo "kernel floor: do-nothing responder, new conn/op (UNIX)" ;;
    esac
}

TABLE="| transport | clients | stored | size B | ops/s | p50 us | p99 us | p99.9 us | dc_server CPU % | dc_server CPU us/op | dc_client CPU % | other CPU % | prepop s | errors |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

# The kernel floor (scripts/floor.c): no cache, no protocol, no library;
# 46-byte requests answered with SIZE+14 bytes, as a GET is.
run_floor() {
    local tr=$1 c=$2 sz=$4 mode line ops usop key
    stop_pid "$DCC"; DCC=
    stop_pid "$SRV"; SRV=
    mode=persistent
    [ "$tr" = floor-np ] && mode=perconn
    line=$(timeout 120 "$FLOOR" "$mode" "$T/f.sock" "$c" "$SECS" 46 $((sz + 14)) </dev/null 2>>"$RAW" | tail -1)
    echo "$tr clients=$c size=$sz: $line" >>"$RAW"
    ops=$(kv ops_per_s "$line")
    usop=$(kv server_cpu_us_per_op "$line")
    key="$tr:$c:$3:$sz"
    RUNS[$key]=1
    OPS[$key]=${ops:-0}
    USOP[$key]=${usop:--}
    ROWS[$key#1]="| $(tname "$tr") | $c | - | $sz | ${ops:-0} | - | - | - | - | ${usop:--} (responder) | - | - | - | - |"
    printf '%s\n' "${ROWS[$key#1]}" >&2
}

run_cell() {
    local tr=$1 c=$2 k=$3 sz=$4 addr persist pids line ops cpu cpuc usop rss0 rss
    case $tr in
    floor-*) run_floor "$@"; return ;;
    esac
    case $tr in
    *-tls-*) [ "$TLS_OK" = 1 ] || return 0 ;;
    dcc-redis-*) [ "$HAVE_REDIS" = 1 ] || return 0 ;;
    esac
    # srv: the store's process, dc_server or (dcc-redis-*) redis-server
    local srv
    case $tr in
    unix) start_server unix; addr=$SRV_ADDR ;;
    *-tls-*) start_server tls; addr=$SRV_ADDR ;;
    dcc-redis-*) start_redis ;;
    *) start_server tcp; addr=$SRV_ADDR ;;
    esac
    srv=$SRV
    case $tr in
    dcc-redis-*) start_dc_client "redis://127.0.0.1:$RPORT"; addr=UNIX:$T/c.sock; srv=$RPID ;;
    dcc-*) start_dc_client; addr=UNIX:$T/c.sock ;;
    esac
    persist=-persistent
    local reuse=0
    case $tr in *-np) persist=-nonpersistent ;; esac
    [ "$tr" = dcc-reuse ] && persist=-nonpersistent reuse=1
    pids="-pid $srv"
    [ -n "$DCC" ] && pids="$pids -pid $DCC"
    rss0=$(rss_kb "$srv")
    line=$(DISTCACHE_REUSE_CONNECTIONS=$reuse timeout 600 "$DCBENCH" -connect "$addr" -clients "$c" -keys "$k" -size "$sz" \
        -seconds "$SECS" -warmup "$WARM" -mix 90:8:2 $persist $pids \
        -label "$tr" -q </dev/null 2>>"$RAW" | tail -1)
    echo "$tr clients=$c keys=$k size=$sz: $line" >>"$RAW"
    ops=$(kv ops_per_s "$line")
    cpu=$(kv "cpu_pct_pid$srv" "$line")
    cpuc=-
    [ -n "$DCC" ] && cpuc=$(kv "cpu_pct_pid$DCC" "$line")
    [ -n "$ops" ] || ops=0
    [ -n "$cpu" ] || cpu=0
    usop=$(awk -v c="$cpu" -v o="$ops" 'BEGIN { if (o > 0) printf "%.2f", c * 1e4 / o; else print "-" }')
    local key="$tr:$c:$k:$sz" n
    GETP50[$key]="${GETP50[$key]:-}${GETP50[$key]:+ }$(kv get_p50_us "$line")"
    GETP99[$key]="${GETP99[$key]:-}${GETP99[$key]:+ }$(kv get_p99_us "$line")"
    # A cell run more than once: one table row per run; OPS and USOP (used
    # by the comparisons) are the means of its runs.
    n=$(( ${RUNS[$key]:-0} + 1 ))
    RUNS[$key]=$n
    ALLOPS[$key]="${ALLOPS[$key]:-}${ALLOPS[$key]:+ }$ops"
    ALLUSOP[$key]="${ALLUSOP[$key]:-}${ALLUSOP[$key]:+ }$usop"
    OPS[$key]=$(mean "${ALLOPS[$key]}" 0)
    USOP[$key]=$(mean "${ALLUSOP[$key]}" 2)
    ROWS[$key#$n]="| $(tname "$tr") | $c | $k | $sz | $ops | $(kv p50_us "$line") | $(kv p99_us "$line") | $(kv p999_us "$line") | $cpu | $usop | ${cpuc:--} | $(kv other_cpu_pct "$line") | $(kv prepop_s "$line") | $(kv errors "$line") |"
    printf '%s\n' "${ROWS[$key#$n]}" >&2
    # The next cell's dc_server does not share the machine with this
    # cell's idle redis-server.
    case $tr in dcc-redis-*) stop_pid "$DCC"; DCC=; stop_pid "$RPID"; RPID= ;; esac
    if [ "$tr:$c:$k:$sz" = "unix:16:1000000:200" ]; then
        rss=$(rss_kb "$SRV")
        MEM_LINE=$(awk -v r0="$rss0" -v r="$rss" 'BEGIN {
            per = (r - r0) * 1024 / 1e6;
            printf "dc_server RSS %.0f MiB at start, %.0f MiB with 1 000 000 sessions of 32-byte id + 200 bytes: %.1f bytes per session, %.1f bytes of overhead beyond id+data (target < 100)", r0/1024, r/1024, per, per - 232 }')
        MEM_OVER=$(awk -v r0="$rss0" -v r="$rss" 'BEGIN { printf "%.1f", (r - r0) * 1024 / 1e6 - 232 }')
    fi
}

START=$(date +%s)
echo "bench: $MODE matrix, ${SECS}s per cell (+${WARM}s warm-up), output in $REPORT" >&2
echo "$TABLE" | head -1 >&2
while read -r tr c k sz; do
    [ -n "$tr" ] || continue
    run_cell "$tr" "$c" "$k" "$sz"
done <<EOF
$CELLS
EOF
stop_pid "$DCC"; DCC=
stop_pid "$SRV"; SRV=

# ---- TLS: memory per idle connection, sessiond under a handshake flood ----
# scripts/tls_bench.py (python3's ssl module as the peer): N idle
# connections held open, plain then TLS, and dc_server's RSS growth
# divided by N; then stunnel-style sessiond GETs (one a millisecond) alone
# and while 200 full TLS handshakes a second arrive on the same dc_server.
TLS_IDLE_N=1000
[ "$MODE" = short ] && TLS_IDLE_N=500
TLS_MEM_PLAIN= TLS_MEM_TLS= SD_BASE= SD_FLOOD= SD_CTRL=
if [ "$TLS_OK" = 1 ] && command -v python3 >/dev/null 2>&1; then
    for kind in plain tls; do
        start_server "$([ $kind = tls ] && echo tls || echo tcp)"
        rss0=$(rss_kb "$SRV")
        coproc IDLE { python3 "$ROOT/scripts/tls_bench.py" idle 127.0.0.1 "$PORT" "$TLS_IDLE_N" "$PKI" "$([ $kind = plain ] && echo plain)" 2>>"$RAW"; }
        read -r -t 120 ready n <&"${IDLE[0]}" || ready=
        sleep 0.5
        rss=$(rss_kb "$SRV")
        if [ "$ready" = ready ]; then
            per=$(awk -v a="$rss0" -v b="$rss" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n }')
            [ $kind = tls ] && TLS_MEM_TLS=$per || TLS_MEM_PLAIN=$per
            echo "idle $kind connections: $n, dc_server RSS $rss0 -> $rss kB: $per KiB each" >>"$RAW"
        fi
        eval "exec ${IDLE[1]}>&-"
        wait "$IDLE_PID" 2>/dev/null
    done
    # The control: the same flood against another dc_server, so what the
    # flood's clients cost the machine is told apart from what the
    # handshakes cost the loop that serves the datagrams.
    start_server tls
    OTHER=$SRV OTHER_PORT=$PORT SRV=
    SDPORT=$(free_port)
    start_server tls -sessiond "127.0.0.1:$SDPORT"
    SD_CTRL=$(timeout 60 python3 "$ROOT/scripts/tls_bench.py" sessiond "$SDPORT" "$SECS" 200 127.0.0.1 "$OTHER_PORT" "$PKI" 2>>"$RAW" | tail -1)
    stop_pid "$OTHER"
    echo "sessiond with 200 handshakes/s to another dc_server: $SD_CTRL" >>"$RAW"
    SD_BASE=$(timeout 60 python3 "$ROOT/scripts/tls_bench.py" sessiond "$SDPORT" "$SECS" 0 127.0.0.1 "$PORT" "$PKI" 2>>"$RAW" | tail -1)
    SD_FLOOD=$(timeout 60 python3 "$ROOT/scripts/tls_bench.py" sessiond "$SDPORT" "$SECS" 200 127.0.0.1 "$PORT" "$PKI" 2>>"$RAW" | tail -1)
    echo "sessiond alone: $SD_BASE" >>"$RAW"
    echo "sessiond with 200 handshakes/s: $SD_FLOOD" >>"$RAW"
    stop_pid "$SRV"; SRV=
fi

# ---- redis side by side ----
# Two comparisons at equal concurrency, 200-byte values, no pipelining:
# redis-benchmark against redis-server next to dcrb (scripts/dcrb.c, the
# same load model: one process, N connections, epoll, one request in
# flight each) against a fresh dc_server, run back to back per N; and the
# dcbench TCP cells (N forked DC_CTX processes) for reference.
declare -A RGET RSET RUS RUSS DGET DSET DUS DUSS
REDIS_NOTE=
if [ "$HAVE_REDIS" = 1 ] && command -v redis-benchmark >/dev/null; then
    start_redis
    REDIS_NOTE="redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$RPORT, no persistence"
    for c in 16 64; do
        start_server tcp
        out=$("$DCRB" -h 127.0.0.1 -p "$PORT" -c "$c" -n "$REDIS_N" -r 100000 -d 200 -pid "$SRV" </dev/null 2>>"$RAW")
        printf '%s\n' "$out" >>"$RAW"
        set_line=$(printf '%s\n' "$out" | grep 'test=set')
        get_line=$(printf '%s\n' "$out" | grep 'test=get')
        DSET[$c]=$(kv ops_per_s "$set_line")
        DGET[$c]=$(kv ops_per_s "$get_line")
        DUS[$c]=$(kv server_cpu_us_per_op "$get_line")
        DUSS[$c]=$(kv server_cpu_us_per_op "$set_line")
        stop_pid "$SRV"; SRV=
        # One redis-benchmark run per test, so each has its own CPU window.
        for t in set get; do
            t0=$(awk '{ print $14 + $15 }' "/proc/$RPID/stat")
            out=$(redis-benchmark -h 127.0.0.1 -p "$RPORT" -t "$t" -d 200 -c "$c" \
                -n "$REDIS_N" -r 100000 -P 1 --csv </dev/null 2>/dev/null)
            t1=$(awk '{ print $14 + $15 }' "/proc/$RPID/stat")
            echo "redis-benchmark -t $t -d 200 -c $c -n $REDIS_N -r 100000 -P 1: $out" | tr '\n' ' ' >>"$RAW"
            echo >>"$RAW"
            us=$(awk -v a="$t0" -v b="$t1" -v n="$REDIS_N" -v hz="$(getconf CLK_TCK)" \
                'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
            if [ "$t" = set ]; then
                RSET[$c]=$(printf '%s\n' "$out" | awk -F'"' '$2 == "SET" { printf "%.0f", $4 }')
                RUSS[$c]=$us
            else
                RGET[$c]=$(printf '%s\n' "$out" | awk -F'"' '$2 == "GET" { printf "%.0f", $4 }')
                RUS[$c]=$us
            fi
        done
        echo "c=$c: dc_server (dcrb) ADD ${DSET[$c]} GET ${DGET[$c]} ops/s, ${DUSS[$c]}/${DUS[$c]} us/op; redis SET ${RSET[$c]} GET ${RGET[$c]} ops/s, ${RUSS[$c]}/${RUS[$c]} us/op" >&2
    done
    stop_pid "$RPID"; RPID=
fi

# ---- Redis as the store (issue 17): memory per session ----
# REDIS_SIZING_N sessions of each size stored through dc_client -> a
# fresh redis-server by dcbench's pre-population (32-byte ids, so a key is
# mod_ssl-sess: + 64 hex digits), then a GET-only run that changes nothing;
# INFO used_memory before and after, divided by the DBSIZE.
# REDIS_SIZING_SIZES: 200 (the matrix's size) and 1000 (a TLS 1.3 session
# with a client certificate in it; see README "Sizing").
REDIS_SIZING_N=${REDIS_SIZING_N:-100000}
declare -A RMEM_PER RMEM_KEYS RRSS_PER
REDIS_SIZES=
if [ "$HAVE_REDIS" = 1 ] && [ "$REDIS_SIZING_N" -gt 0 ]; then
    for sz in ${REDIS_SIZING_SIZES:-200 1000}; do
        start_redis
        start_dc_client "redis://127.0.0.1:$RPORT"
        m0=$(redis_info used_memory)
        r0=$(redis_info used_memory_rss)
        line=$(timeout 600 "$DCBENCH" -connect "UNIX:$T/c.sock" -clients 16 -keys "$REDIS_SIZING_N" \
            -size "$sz" -seconds 0.2 -mix 100:0:0 -persistent -label redis-sizing -q </dev/null 2>>"$RAW" | tail -1)
        m1=$(redis_info used_memory)
        r1=$(redis_info used_memory_rss)
        n=$(redis_info db0 | sed -n 's/^keys=\([0-9]*\).*/\1/p')
        echo "redis sizing size=$sz: used_memory $m0 -> $m1, used_memory_rss $r0 -> $r1, keys ${n:-0}: $line" >>"$RAW"
        if [ -n "$m0" ] && [ -n "$m1" ] && [ "${n:-0}" -gt 0 ]; then
            RMEM_PER[$sz]=$(awk -v a="$m0" -v b="$m1" -v n="$n" 'BEGIN { printf "%.0f", (b - a) / n }')
            RMEM_KEYS[$sz]=$n
            RRSS_PER[$sz]=$(awk -v a="$r0" -v b="$r1" -v n="$n" 'BEGIN { if (b > 0) printf "%.0f", (b - a) / n; else print "n/a" }')
            REDIS_SIZES="$REDIS_SIZES $sz"
            echo "redis sizing: $n sessions of $sz B: ${RMEM_PER[$sz]} bytes each in used_memory" >&2
        fi
    done
    stop_pid "$DCC"; DCC=
    stop_pid "$RPID"; RPID=
fi
END=$(date +%s)

# ---- report ----
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "") printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" -v lower="${3:-}" 'BEGIN {
    if (r == "n/a" || r == "") { print "not measured"; exit }
    if (lower == "") print (r >= t ? "met" : "MISSED"); else print (r <= t ? "met" : "MISSED") }'; }

{
    echo "## distcache-rs benchmark ($MODE matrix)"
    echo
    echo "- command: \`make bench$([ "$MODE" = short ] && echo -short)\` (scripts/bench.sh $MODE), $(date -u '+%Y-%m-%d %H:%M UTC'), took $((END - START)) s"
    echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(uname -sr), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- dcbench: -mix 90:8:2, 32-byte ids, ${SECS} s measured after ${WARM} s warm-up per cell, a fresh dc_server (-sessions 1100000) per cell; \"other CPU\" is what the rest of the machine used meanwhile (noise indicator, % of one CPU)"
    echo "- dc_client cells: application -> dc_client over UNIX, dc_client -> dc_server over TCP 127.0.0.1"
    echo "- the flat-cost pairs (1 000 000 and 512 stored) run back to back twice: one row per run; comparisons use the mean of a cell's runs, the flat-cost verdict the mean of the two pair ratios"
    echo
    echo "$TABLE"
    while read -r tr c k sz; do
        [ -n "$tr" ] || continue
        key=$tr:$c:$k:$sz
        PRINTED[$key]=$(( ${PRINTED[$key]:-0} + 1 ))
        row=${ROWS[$key#${PRINTED[$key]}]:-}
        [ -n "$row" ] || continue
        if [ "${RUNS[$key]:-1}" -gt 1 ]; then
            # "| transport | clients |" -> "| transport (run i) | clients |"
            row=$(printf '%s\n' "$row" | sed "s/^| \([^|]*\) |/| \1 (run ${PRINTED[$key]}) |/")
        fi
        printf '%s\n' "$row"
    done <<EOF
$CELLS
EOF
    echo
    if [ -n "$MEM_LINE" ]; then
        echo "Memory: $MEM_LINE."
        echo
    fi
    echo "### Side by side with redis (TCP 127.0.0.1, 200-byte values, no pipelining)"
    echo
    if [ -n "$REDIS_NOTE" ]; then
        echo "$REDIS_NOTE; \`redis-benchmark -t set|get -d 200 -c N -n $REDIS_N -r 100000 -P 1\` (one client process, N connections; set, then get, as two runs)."
        echo "dc_server, same load model: \`dcrb -c N -n $REDIS_N -r 100000 -d 200\` (scripts/dcrb.c: one client process, N connections, one request in flight each; set = ADD, get = GET of 32-byte ids), a fresh dc_server, run right before redis-benchmark."
        echo
        echo "Server CPU per request is each server's /proc CPU time over that test alone, divided by its requests."
        echo
        echo "| clients | dc_server GET ops/s (dcrb) | redis GET ops/s | ratio | dc_server ADD ops/s (dcrb) | redis SET ops/s | ratio | CPU us per GET: dc_server / redis-server | CPU us per ADD / SET: dc_server / redis-server |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for c in 16 64; do
            echo "| $c | ${DGET[$c]:-n/a} | ${RGET[$c]} | $(ratio "${DGET[$c]:-}" "${RGET[$c]}") | ${DSET[$c]:-n/a} | ${RSET[$c]} | $(ratio "${DSET[$c]:-}" "${RSET[$c]}") | ${DUS[$c]:-n/a} / ${RUS[$c]} | ${DUSS[$c]:-n/a} / ${RUSS[$c]} |"
        done
        echo
        echo "For reference, dcbench over TCP (N forked client processes, one DC_CTX each, 512 stored sessions, 90:8:2): its clients cost more CPU than redis-benchmark's single process, so on 2 shared cores these figures are lower for a reason that is not the server's."
        echo
        echo "| clients | dc_server ops/s (dcbench) | redis GET ops/s | ratio | dc_server CPU us/op |"
        echo "|---|---|---|---|---|"
        for c in 16 64; do
            o=${OPS[tcp:$c:512:200]:-}
            echo "| $c | ${o:-n/a} | ${RGET[$c]} | $(ratio "$o" "${RGET[$c]}") | ${USOP[tcp:$c:512:200]:-n/a} |"
        done
    else
        echo "redis-server/redis-benchmark not installed (apt-get install redis-server redis-tools): no comparison."
    fi
    echo
    echo "### TLS link (issue 16)"
    echo
    if [ "$TLS_OK" = 1 ]; then
        echo "Application -> dc_client over UNIX, dc_client -> dc_server over TCP 127.0.0.1 with TLS (rustls, ring, TLS 1.3, ECDSA P-256 certificates, client certificate verified), beside the same cells over plain TCP; cells run alternately (plain, TLS, plain, TLS) and compared as means."
        echo
        echo "| clients, 200 B, persistent | plain ops/s | TLS ops/s | ratio TLS / plain | required | verdict | dc_server CPU us/op plain | TLS | difference us |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for c in 16 64; do
            p=${OPS[dcc-p:$c:512:200]:-}; t=${OPS[dcc-tls-p:$c:512:200]:-}
            [ -n "$t" ] || continue
            r=$(ratio "$t" "$p")
            up=${USOP[dcc-p:$c:512:200]:-}; ut=${USOP[dcc-tls-p:$c:512:200]:-}
            echo "| $c | $p | $t | $r | >= 0.85 | $(verdict "$r" 0.85) | $up | $ut | $(awk -v a="$ut" -v b="$up" 'BEGIN { if (a != "" && b != "") printf "%.2f", a - b; else print "n/a" }') |"
        done
        echo
        if [ -n "$TLS_MEM_TLS" ]; then
            echo "Memory per idle connection on dc_server ($TLS_IDLE_N connections held open by scripts/tls_bench.py, RSS growth / N): plain TCP ${TLS_MEM_PLAIN:-n/a} KiB, TLS ${TLS_MEM_TLS} KiB."
            echo
        fi
        if [ -n "$SD_FLOOD" ]; then
            echo "stunnel sessiond GETs (one datagram a millisecond, answer time measured by the sender) on a dc_server that also listens on TLS:"
            echo
            echo "| load | sessiond GETs answered | p50 us | p99 us | max us | handshakes done |"
            echo "|---|---|---|---|---|---|"
            echo "| sessiond alone | $(kv answered "$SD_BASE")/$(kv sessiond_gets "$SD_BASE") | $(kv p50_us "$SD_BASE") | $(kv p99_us "$SD_BASE") | $(kv max_us "$SD_BASE") | - |"
            echo "| with 200 TLS handshakes a second to the same dc_server | $(kv answered "$SD_FLOOD")/$(kv sessiond_gets "$SD_FLOOD") | $(kv p50_us "$SD_FLOOD") | $(kv p99_us "$SD_FLOOD") | $(kv max_us "$SD_FLOOD") | $(kv handshakes "$SD_FLOOD") ($(kv handshake_failures "$SD_FLOOD") failed) |"
            echo "| control: the same flood to another dc_server | $(kv answered "$SD_CTRL")/$(kv sessiond_gets "$SD_CTRL") | $(kv p50_us "$SD_CTRL") | $(kv p99_us "$SD_CTRL") | $(kv max_us "$SD_CTRL") | $(kv handshakes "$SD_CTRL") ($(kv handshake_failures "$SD_CTRL") failed) |"
            echo
            echo "The flood's clients (python) run on the same two cores as dc_server: their CPU is in the measured latency; the control row is that share alone. The difference between the two flood rows is what handshakes cost the loop that answers the datagrams."
            echo
        fi
    else
        echo "$TLS_NOTE."
        echo
    fi
    echo "### Connection reuse for flags-0 contexts (issue 20)"
    echo
    echo "| clients, 200 B | flags 0 without reuse ops/s | flags 0 with DISTCACHE_REUSE_CONNECTIONS=1 ops/s | persistent ops/s | reuse / persistent | required | verdict |"
    echo "|---|---|---|---|---|---|---|"
    for c in 16 64; do
        u=${OPS[dcc-reuse:$c:512:200]:-}
        [ -n "$u" ] || continue
        r=$(ratio "$u" "${OPS[dcc-p:$c:512:200]:-}")
        echo "| $c | ${OPS[dcc-np:$c:512:200]:-n/a} | $u | ${OPS[dcc-p:$c:512:200]:-n/a} | $r | >= 0.9 | $(verdict "$r" 0.9) |"
    done
    echo
    echo "### Redis as the store (issue 17)"
    echo
    if [ "$HAVE_REDIS" = 1 ]; then
        echo "Application -> dc_client over UNIX; dc_client -> a fresh redis-server (127.0.0.1, no persistence, \`-server redis://127.0.0.1:PORT\`, one Redis connection, pipelined) beside dc_client -> a fresh dc_server over TCP 127.0.0.1, same dcbench load; the \"dc_server CPU\" columns of the dcc-redis rows are redis-server's. Cells run alternately; comparisons use the means of a cell's runs."
        echo
        echo "| clients, 200 B | mode | dc_client -> dc_server ops/s | dc_client -> Redis ops/s | ratio Redis / dc_server | required | verdict | store CPU us/op: dc_server / redis-server |"
        echo "|---|---|---|---|---|---|---|---|"
        for c in 16 64; do
            for m in p np; do
                d=${OPS[dcc-$m:$c:512:200]:-}; r=${OPS[dcc-redis-$m:$c:512:200]:-}
                [ -n "$r" ] || continue
                q=$(ratio "$r" "$d")
                echo "| $c | $([ $m = p ] && echo persistent || echo new conn/op) | ${d:-n/a} | $r | $q | >= 0.8 | $(verdict "$q" 0.8) | ${USOP[dcc-$m:$c:512:200]:-n/a} / ${USOP[dcc-redis-$m:$c:512:200]:-n/a} |"
            done
        done
        echo
        echo "GET latency through dc_client (dcbench's percentiles of the GETs alone inside the 90:8:2 mix, persistent; one figure per run, in run order, since one disturbed run would move a mean). One client is the added latency of the hop itself; at 16 and 64 clients on 2 shared cores it is mostly queueing."
        echo
        echo "| clients | GET p50 us: -> dc_server | -> Redis | GET p99 us: -> dc_server | -> Redis |"
        echo "|---|---|---|---|---|"
        for c in 1 16 64; do
            [ -n "${GETP50[dcc-redis-p:$c:512:200]:-}" ] || continue
            g=${GETP50[dcc-p:$c:512:200]:-n/a}; r=${GETP50[dcc-redis-p:$c:512:200]}
            g9=${GETP99[dcc-p:$c:512:200]:-n/a}; r9=${GETP99[dcc-redis-p:$c:512:200]}
            echo "| $c | ${g// /, } | ${r// /, } | ${g9// /, } | ${r9// /, } |"
        done
        echo
        if [ -n "$REDIS_SIZES" ]; then
            echo "Memory in Redis: sessions stored through dc_client by dcbench's pre-population (32-byte ids: 77-byte keys \`mod_ssl-sess:\` + 64 hex digits, every key with an expiry), INFO used_memory (what Redis allocated) before and after, divided by the keys (DBSIZE); the last column is used_memory_rss, the process's resident memory, allocator fragmentation included."
            echo
            echo "| session size B | sessions stored | bytes per session in used_memory | sessions per GiB | RSS growth per session |"
            echo "|---|---|---|---|---|"
            for sz in $REDIS_SIZES; do
                echo "| $sz | ${RMEM_KEYS[$sz]} | ${RMEM_PER[$sz]} | $(awk -v b="${RMEM_PER[$sz]}" 'BEGIN { if (b > 0) printf "%.1f million", 1073741824 / b / 1e6; else print "n/a" }') | ${RRSS_PER[$sz]} |"
            done
            echo
        fi
    else
        echo "redis-server not installed (apt-get install redis-server): no Redis cells."
        echo
    fi
    echo "### Kernel floor"
    echo
    echo "scripts/floor.c: a responder with no cache, no protocol and no library (one thread, epoll, recv + send per request) and clients that wait with poll + recv as libdistcache does. Its CPU per operation is what the kernel charges for the socket traffic alone on this machine; nothing built on per-request socket calls can go below it."
    echo
    echo "| floor | clients | ops/s | responder CPU us/op | compare with |"
    echo "|---|---|---|---|---|"
    for c in 16 64; do
        [ -n "${OPS[floor-p:$c:0:200]:-}" ] || continue
        echo "| persistent connections (UNIX) | $c | ${OPS[floor-p:$c:0:200]} | ${USOP[floor-p:$c:0:200]} | dc_server UNIX $c clients 512 stored: ${OPS[unix:$c:512:200]:-n/a} ops/s, ${USOP[unix:$c:512:200]:-n/a} us/op |"
    done
    if [ -n "${OPS[floor-np:16:0:200]:-}" ]; then
        echo "| new connection per op (UNIX, no upstream hop) | 16 | ${OPS[floor-np:16:0:200]} | ${USOP[floor-np:16:0:200]} | dc_client new conn/op 16 clients: ${OPS[dcc-np:16:512:200]:-n/a} ops/s |"
    fi
    echo
    echo "### Targets (issue 9), ratios from this run"
    echo
    echo "| target | measured | ratio | required | verdict |"
    echo "|---|---|---|---|---|"
    # Flat cost: the ratio of each back-to-back pair of runs (run i at
    # 1 000 000 against run i at 512), and their mean for the verdict.
    for pair in unix:16:200 unix:64:200 unix:16:1500 tcp:16:200 tcp:64:200; do
        IFS=: read -r tr c sz <<<"$pair"
        a=${ALLOPS[$tr:$c:1000000:$sz]:-}; b=${ALLOPS[$tr:$c:512:$sz]:-}
        [ -n "$a" ] && [ -n "$b" ] || continue
        read -r pairs r <<<"$(awk -v a="$a" -v b="$b" 'BEGIN {
            na = split(a, x, " "); nb = split(b, y, " "); n = (na < nb ? na : nb); s = 0; m = 0; out = ""
            for (i = 1; i <= n; i++) if (y[i] > 0) { q = x[i] / y[i]; s += q; m++; out = out (out == "" ? "" : ",") sprintf("%s/%s=%.2f", x[i], y[i], q) }
            if (m > 0) printf "%s %.2f", out, s / m; else print "n/a n/a" }')"
        echo "| flat cost: $(tname "$tr") $c clients, $sz B, 1 000 000 vs 512 stored (pairs run back to back; mean of the pair ratios) | ${pairs//,/, } ops/s | $r | >= 0.8 | $(verdict "$r" 0.8) |"
    done
    for c in 16 64; do
        o=${DGET[$c]:-}
        r=$(ratio "$o" "${RGET[$c]:-}")
        echo "| vs redis-server GET, $c clients, 200 B, same load model (dcrb vs redis-benchmark) | ${o:-n/a} vs ${RGET[$c]:-n/a} ops/s | $r | >= 1.0 | $(verdict "$r" 1.0) |"
        o=${DSET[$c]:-}
        r=$(ratio "$o" "${RSET[$c]:-}")
        echo "| vs redis-server SET, $c clients, 200 B (dcrb ADD vs redis-benchmark SET) | ${o:-n/a} vs ${RSET[$c]:-n/a} ops/s | $r | >= 1.0 | $(verdict "$r" 1.0) |"
    done
    for c in 16 64; do
        case $c in 16) ref=4400 ;; 64) ref=3400 ;; esac
        o=${OPS[unix:$c:50000:200]:-}
        r=$(ratio "$o" "$ref")
        echo "| vs original, UNIX $c clients, 50 000 stored | ${o:-n/a} vs $ref ops/s | $r | >= 15 | $(verdict "$r" 15) |"
    done
    for c in 16 64; do
        u=${USOP[unix:$c:512:200]:-}
        f=${USOP[floor-p:$c:0:200]:-}
        echo "| dc_server CPU per op, UNIX $c clients, 512 stored | ${u:-n/a} us (original ~10; kernel floor ${f:-n/a} us) | $(ratio "$u" 10) | <= 0.33 (3.3 us) | $(verdict "$u" 3.3 le) |"
    done
    o=${OPS[dcc-np:16:512:200]:-}
    r=$(ratio "$o" 19200)
    f=${OPS[floor-np:16:0:200]:-}
    echo "| vs original via dc_client, new connection per op, 16 clients | ${o:-n/a} vs 19200 ops/s (kernel floor, no upstream hop: ${f:-n/a}) | $r | >= 2 | $(verdict "$r" 2) |"
    if [ -n "$MEM_LINE" ]; then
        echo "| memory beyond id+data per session at 1 000 000 | ${MEM_OVER} bytes | | < 100 | $(awk -v m="$MEM_OVER" 'BEGIN { print (m < 100 ? "met" : "MISSED") }') |"
    fi
} >"$REPORT"
cat "$REPORT"
echo "bench: raw results in $RAW" >&2
