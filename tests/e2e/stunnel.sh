#!/usr/bin/env bash
# stunnel end-to-end test: unmodified stunnel4 instances share TLS sessions
# through OUR dc_server's sessiond listener (stunnel's built-in external
# session cache client, `sessiond = HOST:PORT`, UDP).
#
#   openssl s_client -> stunnel S1 --sessiond (UDP)--\
#                                                     dc_server -sessiond
#   openssl s_client -> stunnel S2 --sessiond (UDP)--/
#
# Checks:
#   1. a session made through one instance is resumed on the other
#      (`-sess_out` / `-sess_in`, s_client says Reused), TLS 1.2 and TLS 1.3,
#      ROUNDS rounds each with the direction alternating S1->S2, S2->S1;
#      dc_server's own counters show the GETs and hits;
#   2. negative control: two instances without sessiond do not resume each
#      other's sessions; an unknown session offered to S2 gives a clean full
#      handshake;
#   3. dc_server killed: both instances keep serving, with full handshakes
#      across instances (their own sessions still resume locally);
#   4. stateless fronts (issue 17): two dc_servers with -sessiond and
#      -backend on the same redis-server, one per stunnel instance (R1, R2):
#      each resumes the other's sessions, stored in Redis under
#      stunnel-sess: (skipped without redis-server, unless CI=true).
#
# usage: tests/e2e/stunnel.sh <install-prefix>      (uses <prefix>/bin/dc_server)
# env:   DCRS_E2E_ROUNDS (rounds per TLS version and check, default 5)
#        REDIS_SERVER: the binary (default redis-server)
#        DCRS_E2E_KEEP=1 keeps the work dir (configs, logs)
#        STUNNEL, OPENSSL: the binaries (default stunnel4, openssl)
# Needs: stunnel4, openssl (Debian packages of those names; .ci/run installs
# them). Installs nothing. Loopback only; starts and stops only its own
# processes, by pid. Prints "stunnel-e2e: N passed, M failed"; exit status
# 0 when all passed, 1 on a failure, 2 when it cannot run.
set -u -o pipefail

PREFIX=$(cd "${1:?usage: stunnel.sh <install-prefix>}" && pwd -P)
ROUNDS=${DCRS_E2E_ROUNDS:-5}
STUNNEL=${STUNNEL:-$(command -v stunnel4 || command -v stunnel || true)}
OPENSSL=${OPENSSL:-$(command -v openssl || true)}
DC_SERVER=$PREFIX/bin/dc_server
PASS=0
FAIL=0
T0=$(date +%s)
say() { printf '[%3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
ok() { PASS=$((PASS + 1)); say "PASS: $*"; }
bad() { FAIL=$((FAIL + 1)); say "FAIL: $*"; }
check() { # description expected actual
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected '$2', got '$3')"; fi
}

[ -n "$STUNNEL" ] && [ -x "$STUNNEL" ] || { echo "stunnel-e2e: needs stunnel4 (apt-get install stunnel4)" >&2; exit 2; }
[ -n "$OPENSSL" ] || { echo "stunnel-e2e: needs openssl" >&2; exit 2; }
[ -x "$DC_SERVER" ] || { echo "stunnel-e2e: no $DC_SERVER (make install PREFIX=...)" >&2; exit 2; }
command -v timeout >/dev/null || { echo "stunnel-e2e: needs timeout (coreutils)" >&2; exit 2; }

W=$(mktemp -d /tmp/dcrs-stunnel.XXXXXX)
PIDS=()
DC_PID=
finish() {
    trap - EXIT
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$FAIL" -ne 0 ] || [ "${DCRS_E2E_KEEP:-0}" = 1 ]; then
        for f in "$W"/dc.err "$W"/*.log; do
            [ -f "$f" ] && { echo "--- tail of $f"; tail -n 15 "$f"; }
        done
    fi
    if [ "${DCRS_E2E_KEEP:-0}" = 1 ]; then echo "stunnel-e2e: kept $W"; else rm -rf "$W"; fi
    echo "stunnel-e2e: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && exit 0 || exit 1
}
trap finish EXIT
trap 'bad "interrupted"; exit 1' INT TERM
export LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

tcp_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rand_port() { echo $((20000 + (RANDOM * 32768 + RANDOM) % 40000)); }

# ------------------------------------------------ 1. dc_server with -sessiond
# dc_server NAME (files $W/NAME.{sock,out,err}) with -sessiond on a random
# UDP port and more flags; sets DC_PID and SD_PORT. If the port is taken
# dc_server exits at once: try another.
start_dc() { # name flags...
    local n=$1 port
    shift
    SD_PORT=
    for _ in 1 2 3 4 5 6 7 8; do
        port=$(rand_port)
        rm -f "$W/$n.sock"
        "$DC_SERVER" -listen "UNIX:$W/$n.sock" -sessiond "127.0.0.1:$port" -progress 1 "$@" \
            >"$W/$n.out" 2>"$W/$n.err" &
        DC_PID=$!
        for _ in $(seq 50); do
            [ -S "$W/$n.sock" ] && break
            kill -0 "$DC_PID" 2>/dev/null || break
            sleep 0.1
        done
        if [ -S "$W/$n.sock" ] && kill -0 "$DC_PID" 2>/dev/null; then
            PIDS+=("$DC_PID")
            SD_PORT=$port
            return 0
        fi
        wait "$DC_PID" 2>/dev/null
    done
    bad "dc_server $n -sessiond did not start: $(tail -n 3 "$W/$n.err")"
    exit 1
}
start_dc dc
say "dc_server pid $DC_PID, sessiond on udp 127.0.0.1:$SD_PORT ($("$STUNNEL" -version 2>&1 | head -n 1))"

# ------------------------------------------------ 2. four stunnel instances
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$W/key.pem" -out "$W/cert.pem" -days 2 -subj /CN=localhost \
    >"$W/req.log" 2>&1 || { bad "certificate generation failed"; exit 1; }

declare -A PORT
start_stunnel() { # name use_sessiond(0/1)
    local n=$1 sd=$2 port pid try i
    for try in 1 2 3 4 5; do
        port=$(rand_port)
        tcp_busy "$port" && continue
        {
            echo "foreground = quiet"
            echo "pid = $W/$n.pid"
            echo "output = $W/$n.log"
            echo "debug = info"
            echo "[dcrs-e2e]"     # the same section name everywhere: TLS session id context
            echo "accept = 127.0.0.1:$port"
            echo "cert = $W/cert.pem"
            echo "key = $W/key.pem"
            echo "exec = /bin/echo"
            echo "execArgs = echo banner-$n"
            [ "$sd" = 1 ] && echo "sessiond = 127.0.0.1:$SD_PORT"
        } >"$W/$n.conf"
        "$STUNNEL" "$W/$n.conf" >"$W/$n.stderr" 2>&1 &
        pid=$!
        for i in $(seq 50); do
            if tcp_busy "$port"; then
                PIDS+=("$pid")
                PORT[$n]=$port
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    bad "stunnel $n did not start: $(tail -n 3 "$W/$n.stderr" "$W/$n.log" 2>/dev/null)"
    exit 1
}
start_stunnel S1 1
start_stunnel S2 1
start_stunnel N1 0
start_stunnel N2 0
say "stunnel S1:${PORT[S1]} S2:${PORT[S2]} (sessiond), N1:${PORT[N1]} N2:${PORT[N2]} (none)"

# One TLS connection: prints "New|Reused|ERR <banner>".
client() { # instance tlsflag -sess_out|-sess_in file
    local out st
    # -ign_eof: s_client reads until stunnel closes the connection after the
    # banner, so it sees the TLS 1.3 tickets and the banner however slow.
    out=$(timeout 10 "$OPENSSL" s_client -connect "127.0.0.1:${PORT[$1]}" -ign_eof \
        "$2" "$3" "$4" 2>&1 </dev/null)
    st=$(printf '%s\n' "$out" | grep -E '^(New|Reused), ' | head -n 1 | cut -d, -f1)
    printf '%s %s\n' "${st:-ERR}" "$(printf '%s\n' "$out" | grep -o 'banner-[A-Z0-9]*' | head -n 1)"
}

# Last sessiond counter N of dc_server's status lines (of dc_server dc, or
# of the one named second).
dc_counter() { # name [server]
    grep -o " $1=[0-9]*" "$W/${2:-dc}.out" | tail -n 1 | cut -d= -f2
}

# stunnel's "recv timeout" lines: GET answers that came too late.
late() { grep -c 'cache_transfer: recv timeout' "$W/$1.log" 2>/dev/null; }

# ------------------------------------------------ 3. resumption across instances
# stunnel waits only 2 kernel ticks (~8 ms at HZ=250) for a GET answer. On a
# heavily loaded host dc_server may not even be scheduled that fast: a
# resumption that failed while stunnel logged a recv timeout for it is tried
# once more with a new session, and counted in the summary.
RETRIED=0
# ROUNDS rounds of TLS version V between instances X and Y, alternating.
cross_rounds() { # v x y
    local v=$1 r a b try f first second late0
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then a=$2; b=$3; else a=$3; b=$2; fi
        for try in 1 2; do
            f="$W/s${v}-$a$b-$r-$try.pem"
            first=$(client $a $v -sess_out "$f")
            late0=$(late $b)
            second=$(client $b $v -sess_in "$f")
            if [ "$try" = 1 ] && [ "$second" != "Reused banner-$b" ] && [ "$(late $b)" != "$late0" ]; then
                RETRIED=$((RETRIED + 1))
                say "note: $v round $r: $b's GET got no answer in time (stunnel recv timeout); trying again"
                continue
            fi
            break
        done
        check "$v round $r: full handshake on $a" "New banner-$a" "$first"
        check "$v round $r: $a's session resumed on $b" "Reused banner-$b" "$second"
    done
}
for v in -tls1_2 -tls1_3; do
    cross_rounds $v S1 S2
    f="$W/n${v}.pem"
    check "$v control: full handshake on N1" "New banner-N1" "$(client N1 $v -sess_out "$f")"
    check "$v control: N1's session NOT resumed on N2 (no sessiond)" "New banner-N2" "$(client N2 $v -sess_in "$f")"
    check "$v control: unknown session offered to S2 gives a full handshake" "New banner-S2" "$(client S2 $v -sess_in "$f")"
done

sleep 0.3
hits=$(dc_counter hits)
gets=$(dc_counter gets)
news=$(dc_counter news)
dropped=$(dc_counter dropped)
say "dc_server sessiond counters: news=$news gets=$gets hits=$hits dropped=$dropped"
check "dc_server answered a hit for every cross-instance resumption ($((2 * ROUNDS)))" yes \
    "$([ "${hits:-0}" -ge $((2 * ROUNDS)) ] && echo yes || echo "no (hits=${hits:-none})")"
check "dc_server dropped no stunnel datagram" 0 "${dropped:-none}"
cnt() { cat "$W/S1.log" "$W/S2.log" 2>/dev/null | grep -c -- "$1"; }
check "stunnel found no malformed sessiond reply" 0 "$(cnt 'cache_transfer: malformed packet')"
check "stunnel had no sessiond send error" 0 "$(cnt 'cache_transfer: sendto')"
tmo=$(cnt 'cache_transfer: recv timeout')
[ "$tmo" -gt 0 ] && say "note: $tmo GET answer(s) reached stunnel too late (host load?); $RETRIED round(s) retried"

# ------------------------------------------------ 4. dc_server gone
exec 3>&2 2>/dev/null   # no "Killed" job notice from the shell
kill -KILL "$DC_PID"
wait "$DC_PID"
exec 2>&3 3>&-
say "dc_server killed (SIGKILL)"
for v in -tls1_2 -tls1_3; do
    f="$W/k${v}.pem"
    check "$v without dc_server: S1 still serves (full handshake)" "New banner-S1" "$(client S1 $v -sess_out "$f")"
    check "$v without dc_server: S1's session gives a full handshake on S2" "New banner-S2" "$(client S2 $v -sess_in "$f")"
    check "$v without dc_server: S1 still resumes its own session" "Reused banner-S1" "$(client S1 $v -sess_in "$f")"
done

# ------------------------------------------------ 5. stateless fronts on Redis
# Two dc_servers keeping no sessions (-backend), one per stunnel instance,
# on one redis-server: a session made through R1 (front A) resumes on R2
# (front B) and the reverse. -sessiond-deadline 5: below stunnel's ~8 ms
# wait, with room for a loaded host (the default is 2).
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
if [ -z "$REDIS_SERVER" ]; then
    [ "${CI:-}" = true ] && { bad "redis-server missing under CI"; exit 1; }
    say "SKIPPED stateless fronts: redis-server not found (apt-get install redis-server)"
    exit 0
fi
RPORT=
for _ in 1 2 3 4 5; do
    port=$(rand_port)
    tcp_busy "$port" && continue
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$W" --save "" --appendonly no \
        --daemonize no >"$W/redis.log" 2>&1 &
    rpid=$!
    for _ in $(seq 50); do
        tcp_busy "$port" && break
        kill -0 "$rpid" 2>/dev/null || break
        sleep 0.1
    done
    if tcp_busy "$port" && kill -0 "$rpid" 2>/dev/null; then
        PIDS+=("$rpid")
        RPORT=$port
        break
    fi
    wait "$rpid" 2>/dev/null
done
[ -n "$RPORT" ] || { bad "redis-server did not start: $(tail -n 3 "$W/redis.log")"; exit 1; }
start_dc frontA -backend "redis://127.0.0.1:$RPORT" -sessiond-deadline 5
start_stunnel R1 1
start_dc frontB -backend "redis://127.0.0.1:$RPORT" -sessiond-deadline 5
start_stunnel R2 1
say "redis on $RPORT; stunnel R1:${PORT[R1]} -> front A, R2:${PORT[R2]} -> front B"
for v in -tls1_2 -tls1_3; do
    cross_rounds $v R1 R2
done
sleep 0.3
hits=$(( $(dc_counter hits frontA) + $(dc_counter hits frontB) ))
check "the fronts answered a hit for every cross-instance resumption ($((2 * ROUNDS)))" yes \
    "$([ "$hits" -ge $((2 * ROUNDS)) ] && echo yes || echo "no (hits=$hits)")"
keys=$(exec 3<>"/dev/tcp/127.0.0.1/$RPORT" && printf 'KEYS stunnel-sess:*\r\n' >&3 &&
    timeout 2 head -n 1 <&3 | tr -d '\r')
check "the sessions are in Redis under stunnel-sess:" yes \
    "$([ "${keys#\*}" != "$keys" ] && [ "${keys#\*}" -ge $((2 * ROUNDS)) ] && echo yes || echo "no ($keys)")"
