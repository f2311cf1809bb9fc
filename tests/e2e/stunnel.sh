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
#      across instances (their own sessions still resume locally).
#
# usage: tests/e2e/stunnel.sh <install-prefix>      (uses <prefix>/bin/dc_server)
# env:   DCRS_E2E_ROUNDS (rounds per TLS version and check, default 5)
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
# A random UDP port; if it is taken dc_server exits at once: try another.
SD_PORT=
for _ in 1 2 3 4 5 6 7 8; do
    port=$(rand_port)
    rm -f "$W/dc.sock"
    "$DC_SERVER" -listen "UNIX:$W/dc.sock" -sessiond "127.0.0.1:$port" -progress 1 \
        >"$W/dc.out" 2>"$W/dc.err" &
    DC_PID=$!
    for _ in $(seq 50); do
        [ -S "$W/dc.sock" ] && break
        kill -0 "$DC_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -S "$W/dc.sock" ] && kill -0 "$DC_PID" 2>/dev/null; then
        PIDS+=("$DC_PID")
        SD_PORT=$port
        break
    fi
    wait "$DC_PID" 2>/dev/null
done
[ -n "$SD_PORT" ] || { bad "dc_server -sessiond did not start: $(tail -n 3 "$W/dc.err")"; exit 1; }
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

# Last sessiond counter N of dc_server's status lines.
dc_counter() { # name
    grep -o " $1=[0-9]*" "$W/dc.out" | tail -n 1 | cut -d= -f2
}

# stunnel's "recv timeout" lines: GET answers that came too late.
late() { grep -c 'cache_transfer: recv timeout' "$W/$1.log" 2>/dev/null; }

# ------------------------------------------------ 3. resumption across instances
# stunnel waits only 2 kernel ticks (~8 ms at HZ=250) for a GET answer. On a
# heavily loaded host dc_server may not even be scheduled that fast: a
# resumption that failed while stunnel logged a recv timeout for it is tried
# once more with a new session, and counted in the summary.
RETRIED=0
for v in -tls1_2 -tls1_3; do
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then a=S1; b=S2; else a=S2; b=S1; fi
        for try in 1 2; do
            f="$W/s${v}-$r-$try.pem"
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
