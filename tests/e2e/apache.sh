#!/usr/bin/env bash
# Apache httpd end-to-end test: Apache's own, unmodified mod_socache_dc.c
# (from Debian's apache2 source package) built against OUR installed
# libraries, two Apache instances sharing TLS sessions through our dc_client
# and dc_server. Every MPM the installed apache2 has (event, worker,
# prefork) runs with DISTCACHE_REUSE_CONNECTIONS=1 and with it off, the
# same rounds each; dc_client's -metrics counts the connections (one per
# cache call when off, kept ones when on, none left after a graceful
# restart). Then the mixed fleet of issue 17: Apache with Debian's
# mod_socache_redis and Apache with mod_socache_dc through dc_client in
# Redis mode share one redis-server (needs redis-server and redis-tools).
#
#   openssl s_client -> apache A --mod_socache_dc--\
#                                                   dc_client (UNIX) -> dc_server
#   openssl s_client -> apache B --mod_socache_dc--/
#
# usage: tests/e2e/apache.sh <install-prefix>
#        tests/e2e/apache.sh <prefix> <libdir>   (installed system packages:
#          /usr /usr/lib/x86_64-linux-gnu; the module links and runs with the
#          system's defaults: no LD_LIBRARY_PATH, no -I/-L, the system's
#          pkg-config path; scripts/check-deb.sh runs it so)
# env:   DCRS_E2E_N (cross-server resumptions per TLS version, default 20)
#        DCRS_E2E_PAR (parallel resumptions, default 32)
#        DCRS_CACHE (where the fetched mod_socache_dc.c is kept,
#                    default ~/.cache/distcache-rs)
#        DCRS_E2E_KEEP=1 keeps the work dir
# Needs: apache2, apache2-dev (apxs), openssl, dpkg-dev, a deb-src entry
# (.ci/run sets all of that up). Prints "apache-e2e: N passed, M failed".
set -u -o pipefail

PREFIX=$(cd "${1:?usage: apache.sh <prefix> [<libdir>]}" && pwd -P)
SYSTEM=0
LIBDIR=$PREFIX/lib
if [ $# -ge 2 ]; then
    SYSTEM=1
    LIBDIR=$(cd "$2" && pwd -P)
fi
N=${DCRS_E2E_N:-20}
PAR=${DCRS_E2E_PAR:-32}
CACHE=${DCRS_CACHE:-$HOME/.cache/distcache-rs}
PASS=0
FAIL=0
T0=$(date +%s)
say() { printf '[%3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
ok() { PASS=$((PASS + 1)); say "PASS: $*"; }
bad() { FAIL=$((FAIL + 1)); say "FAIL: $*"; }
die() { bad "$*"; finish; }

APXS=$(command -v apxs || true)
OPENSSL=$(command -v openssl || true)
[ -n "$APXS" ] && [ -n "$OPENSSL" ] || { echo "apache-e2e: needs apxs (apache2-dev) and openssl" >&2; exit 2; }
MODDIR=$("$APXS" -q LIBEXECDIR)
APACHE2=$("$APXS" -q SBINDIR)/$("$APXS" -q TARGET)

W=$(mktemp -d /tmp/dcrs-apache.XXXXXX)
chmod 0755 "$W"
PIDS=()
finish() {
    trap - EXIT
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${DCRS_E2E_KEEP:-0}" = 1 ]; then echo "apache-e2e: kept $W"; else rm -rf "$W"; fi
    echo "apache-e2e: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && exit 0 || exit 1
}
trap finish EXIT
if [ "$SYSTEM" = 1 ]; then
    unset LD_LIBRARY_PATH PKG_CONFIG_PATH
    LINKDIRS=()
else
    export LD_LIBRARY_PATH="$PREFIX/lib"
    export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
    LINKDIRS=(-I"$PREFIX/include" -L"$PREFIX/lib")
fi

# ------------------------------------------------ 1. Apache's own module source
SRC="$CACHE/mod_socache_dc.c"
if [ ! -s "$SRC" ]; then
    mkdir -p "$CACHE" "$W/src"
    versions=$(apt-cache showsrc apache2 2>/dev/null | awk '/^Package: /{p=$2} /^Version: /{if (p == "apache2") print $2}')
    [ -n "$versions" ] || die "apt-cache showsrc apache2 lists nothing (no deb-src entry?)"
    got=
    for v in $versions; do
        rm -rf "$W/src/dl" && mkdir -p "$W/src/dl"
        if (cd "$W/src/dl" && apt-get source -qq --download-only "apache2=$v") >"$W/src/apt.log" 2>&1; then
            got=$v
            break
        fi
        say "apt-get source apache2=$v failed, trying the next version"
    done
    [ -n "$got" ] || die "no apache2 source version could be downloaded"
    dsc=$(ls "$W"/src/dl/*.dsc | head -n 1)
    dpkg-source -x "$dsc" "$W/src/tree" >"$W/src/dpkg-source.log" 2>&1 || die "dpkg-source -x failed"
    cp "$W/src/tree/modules/cache/mod_socache_dc.c" "$SRC" || die "mod_socache_dc.c not in apache2 $got"
    echo "apache2=$got" >"$CACHE/mod_socache_dc.c.version"
    rm -rf "$W/src"
fi
say "mod_socache_dc.c from Debian $(cat "$CACHE/mod_socache_dc.c.version" 2>/dev/null)"

# ------------------------------------------------ 2. build it against our prefix
mkdir -p "$W/m1" "$W/m2"
cp "$SRC" "$W/m1/" && cp "$SRC" "$W/m2/"
if (cd "$W/m1" && "$APXS" -c "${LINKDIRS[@]}" -ldistcache -lnal mod_socache_dc.c) >"$W/m1/build.log" 2>&1; then
    ok "apxs build with Apache's link line (-ldistcache -lnal)"
else
    tail -20 "$W/m1/build.log"
    die "apxs build with -ldistcache -lnal"
fi
# shellcheck disable=SC2046
if (cd "$W/m2" && "$APXS" -c $(pkg-config --cflags --libs distcache) mod_socache_dc.c) >"$W/m2/build.log" 2>&1; then
    ok "apxs build with pkg-config --cflags --libs distcache"
else
    tail -20 "$W/m2/build.log"
    bad "apxs build with pkg-config"
fi
MODULE="$W/m1/.libs/mod_socache_dc.so"
chmod -R a+rX "$W/m1"
# Compared as real paths: with a merged /usr, ld.so may name /lib/... for /usr/lib/...
resolved() { ldd "$MODULE" | awk -v l="$1" '$1 == l && $2 == "=>" { print $3 }' | xargs -r readlink -f; }
for l in libdistcache.so.1 libnal.so.1; do
    if [ -n "$(resolved "$l")" ] && [ "$(resolved "$l")" = "$(readlink -f "$LIBDIR/$l")" ]; then
        ok "module resolves $l from $LIBDIR"
    else
        ldd "$MODULE"
        bad "module does not resolve $l from $LIBDIR"
    fi
done
if [ "$SYSTEM" = 1 ]; then
    pcdir=$(pkg-config --variable=libdir distcache 2>/dev/null)
    if [ "$pcdir" = "$LIBDIR" ] && [ "$(pkg-config --variable=libdir libnal)" = "$LIBDIR" ]; then
        ok "pkg-config: distcache and libnal name libdir=$LIBDIR"
    else
        bad "pkg-config names libdir '$pcdir', not $LIBDIR"
    fi
fi

# ------------------------------------------------ 3. cache daemons, certificate
mkdir -p "$W/dc" "$W/htdocs" "$W/pki" "$W/c"
echo "dcrs-e2e ok" >"$W/htdocs/index.html"
chmod -R a+rX "$W/htdocs"
SOCK="$W/dc/client.sock"
DC_SERVER_PID=
DC_CLIENT_PID=

wait_sock() { local i; for i in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

start_cache() { # start_cache [dc_server flags...]
    [ -n "$DC_CLIENT_PID" ] && kill "$DC_CLIENT_PID" 2>/dev/null && wait "$DC_CLIENT_PID" 2>/dev/null
    [ -n "$DC_SERVER_PID" ] && kill "$DC_SERVER_PID" 2>/dev/null && wait "$DC_SERVER_PID" 2>/dev/null
    rm -f "$W/dc/server.sock" "$SOCK"
    "$PREFIX/bin/dc_server" -listen "UNIX:$W/dc/server.sock" -sessions 100000 "$@" >>"$W/dc/server.log" 2>&1 &
    DC_SERVER_PID=$!
    PIDS+=("$DC_SERVER_PID")
    wait_sock "$W/dc/server.sock" || die "dc_server did not start: $(tail -3 "$W/dc/server.log")"
    start_dc_client
}
start_dc_client() {
    "$PREFIX/bin/dc_client" -server "UNIX:$W/dc/server.sock" -listen "UNIX:$SOCK" -sockperms 0666 \
        -metrics "IP:127.0.0.1:$PORT_M" >>"$W/dc/client.log" 2>&1 &
    DC_CLIENT_PID=$!
    PIDS+=("$DC_CLIENT_PID")
    wait_sock "$SOCK" || die "dc_client did not start: $(tail -3 "$W/dc/client.log")"
    chmod 0666 "$SOCK"
}
restart_dc_client() { # dc_server (and its sessions) stays
    kill "$DC_CLIENT_PID" 2>/dev/null && wait "$DC_CLIENT_PID" 2>/dev/null
    rm -f "$SOCK"
    start_dc_client
}
# One unlabelled sample of dc_client's metrics (connections: see
# daemons/src/metrics.rs), empty when the scrape fails. bash's /dev/tcp
# (no curl in .ci/run's packages); HTTP/1.0, so the answer ends at EOF.
metric() {
    timeout 5 bash -c 'exec 9<>"/dev/tcp/127.0.0.1/$1" || exit 0
        printf "GET /metrics HTTP/1.0\r\n\r\n" >&9
        awk -v n="$2" "\$1 == n { print \$2; exit }" <&9' _ "$PORT_M" "$1" 2>/dev/null
}
# wait_metric NAME VALUE: wait (10 s at most) until the sample is VALUE.
wait_metric() {
    local i
    for i in $(seq 200); do [ "$(metric "$1")" = "$2" ] && return 0; sleep 0.05; done
    return 1
}

CERT="$W/pki/cert.pem"
KEY="$W/pki/key.pem"
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$KEY" \
    -out "$CERT" -days 2 -subj "/CN=dcrs-e2e.test" >"$W/pki/log" 2>&1 || die "openssl req failed"
chmod 0644 "$CERT" "$KEY"

RUN_AS=
if [ "$(id -u)" = 0 ]; then
    for u in www-data daemon nobody; do id "$u" >/dev/null 2>&1 && RUN_AS=$u && break; done
fi

free_port() {
    local p=$1
    while [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; do p=$((p + 1)); done
    echo "$p"
}
PORT_A=$(free_port 19443)
PORT_B=$(free_port $((PORT_A + 1)))
PORT_M=$(free_port $((PORT_B + 1)))

# ------------------------------------------------ 4. Apache instances
declare -A APID
start_apache() { # start_apache NAME PORT MPM CACHE [REUSE]
    local name=$1 port=$2 mpm=$3 cache=$4 reuse=${5:-0} d="$W/$1" i
    rm -rf "$d" && mkdir -p "$d/logs" "$d/run"
    {
        echo "ServerRoot \"$d\""
        # Same ServerName on both: mod_ssl derives the session id context from it.
        echo "ServerName dcrs-e2e.test:443"
        echo "Listen 127.0.0.1:$port"
        echo "PidFile \"$d/run/httpd.pid\""
        echo "DefaultRuntimeDir \"$d/run\""
        echo "ErrorLog \"$d/logs/error.log\""
        echo "LogLevel info"
        echo "LoadModule mpm_${mpm}_module \"$MODDIR/mod_mpm_${mpm}.so\""
        echo "LoadModule authz_core_module \"$MODDIR/mod_authz_core.so\""
        echo "LoadModule socache_shmcb_module \"$MODDIR/mod_socache_shmcb.so\""
        echo "LoadModule socache_dc_module \"$MODULE\""
        case $cache in redis:*) echo "LoadModule socache_redis_module \"$MODDIR/mod_socache_redis.so\"" ;; esac
        echo "LoadModule ssl_module \"$MODDIR/mod_ssl.so\""
        [ -n "$RUN_AS" ] && printf 'User %s\nGroup %s\n' "$RUN_AS" "$(id -gn "$RUN_AS")"
        if [ "$mpm" = prefork ]; then
            printf 'StartServers 8\nMinSpareServers 4\nMaxSpareServers 16\nMaxRequestWorkers 64\n'
        else
            # One child with many threads: they all share ONE DC_CTX.
            printf 'StartServers 1\nServerLimit 1\nThreadLimit 64\nThreadsPerChild 64\nMaxRequestWorkers 64\nMinSpareThreads 1\nMaxSpareThreads 64\n'
        fi
        echo "Timeout 10"
        echo "KeepAlive Off"
        echo "DocumentRoot \"$W/htdocs\""
        echo "<Directory \"$W/htdocs\">"
        echo "  Require all granted"
        echo "</Directory>"
        echo "SSLEngine on"
        echo "SSLProtocol -all +TLSv1.2 +TLSv1.3"
        echo "SSLCertificateFile \"$CERT\""
        echo "SSLCertificateKeyFile \"$KEY\""
        echo "SSLSessionCache \"$cache\""
        echo "SSLSessionCacheTimeout 300"
        echo "SSLSessionTickets off"
    } >"$d/httpd.conf"
    "$APACHE2" -d "$d" -f "$d/httpd.conf" -t >"$d/logs/configtest.log" 2>&1 || {
        cat "$d/logs/configtest.log"
        die "apache $name: config test failed"
    }
    # What /etc/apache2/envvars would export (README); 0 is the default.
    DISTCACHE_REUSE_CONNECTIONS=$reuse "$APACHE2" -d "$d" -f "$d/httpd.conf" -DNO_DETACH >"$d/logs/stdout.log" 2>&1 &
    APID[$name]=$!
    PIDS+=("${APID[$name]}")
    for i in $(seq 200); do
        grep -q 'resuming normal operations' "$d/logs/error.log" 2>/dev/null &&
            [ -n "$(ss -Htln "( sport = :$port )" 2>/dev/null)" ] && return 0
        kill -0 "${APID[$name]}" 2>/dev/null || break
        sleep 0.05
    done
    tail -5 "$d/logs/error.log" "$d/logs/stdout.log"
    die "apache $name did not start"
}
stop_apache() {
    local pid=${APID[$1]:-}
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    local i
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    APID[$1]=
}
children() { # child pids of the named Apache instances
    local n
    for n in "$@"; do pgrep -P "${APID[$n]}"; done
}
graceful() { # graceful NAME: SIGUSR1, wait for the new generation
    local d="$W/$1" n0 i
    n0=$(grep -c 'resuming normal operations' "$d/logs/error.log")
    kill -USR1 "${APID[$1]}"
    for i in $(seq 200); do
        [ "$(grep -c 'resuming normal operations' "$d/logs/error.log")" -gt "$n0" ] && return 0
        sleep 0.05
    done
    return 1
}
crashes() { # children killed by a signal, as the parent logs them
    cat "$W"/A/logs/error.log "$W"/B/logs/error.log 2>/dev/null | grep -cE 'exit signal|Segmentation|Aborted' || true
}

REQ=$'GET /index.html HTTP/1.0\r\nHost: dcrs-e2e.test\r\n\r\n'
tls() { # tls PORT TLSFLAG OUT [s_client args]
    local port=$1 v=$2 out=$3
    shift 3
    printf '%s' "$REQ" | timeout 10 "$OPENSSL" s_client -connect "127.0.0.1:$port" \
        -servername dcrs-e2e.test "$v" -CAfile "$CERT" -ign_eof "$@" >"$out" 2>&1
}
is_new() { grep -q '^New, TLSv' "$1"; }
is_reused() { grep -q '^Reused, TLSv' "$1" && grep -q '^HTTP/1.[01] 200' "$1"; }

# cross VFLAG TAG FROM TO: full handshake on FROM, resumption on TO.
cross() {
    local v=$1 tag=$2 from=$3 to=$4
    tls "$from" "$v" "$W/c/$tag.full" -sess_out "$W/c/$tag.sess" || return 2
    is_new "$W/c/$tag.full" && [ -s "$W/c/$tag.sess" ] || return 2
    tls "$to" "$v" "$W/c/$tag.res" -sess_in "$W/c/$tag.sess" || return 1
    is_reused "$W/c/$tag.res"
}

# After a failed round: enough of each log to tell which side failed
# without a rerun (the Apache logs are replaced at the next phase).
diag() { # diag LAST_CLIENT_OUTPUT
    local f
    for f in "$W"/dc/server.log "$W"/dc/client.log "$W"/A/logs/error.log "$W"/B/logs/error.log "$1"; do
        [ -s "$f" ] || continue
        echo "apache-e2e: --- last lines of ${f#"$W"/}"
        tail -n 8 "$f"
    done
}

serial_rounds() { # serial_rounds LABEL
    local label=$1 v name i good total
    for v in -tls1_2 -tls1_3; do
        good=0
        total=0
        for i in $(seq "$N"); do
            if [ $((i % 2)) = 1 ]; then cross "$v" "$label$v-$i" "$PORT_A" "$PORT_B"; else cross "$v" "$label$v-$i" "$PORT_B" "$PORT_A"; fi
            [ $? = 0 ] && good=$((good + 1))
            total=$((total + 1))
        done
        name="TLS${v#-tls}"
        name=${name/_/.}
        if [ "$good" = "$total" ]; then
            ok "$label $name: $good/$total sessions made on one Apache resumed on the other (alternating A->B, B->A)"
        else
            bad "$label $name: only $good/$total cross-server resumptions"
            diag "$W/c/$label$v-$N.res"
        fi
    done
}

parallel_round() { # parallel_round LABEL VFLAG [reverse: made on B, resumed on A]
    local label=$1 v=$2 i good=0 jobs=() from=$PORT_A to=$PORT_B names="on B of sessions made on A"
    [ "${3:-}" = reverse ] && from=$PORT_B to=$PORT_A names="on A of sessions made on B"
    for i in $(seq "$PAR"); do
        tls "$from" "$v" "$W/c/p$i.full" -sess_out "$W/c/p$i.sess" &
        jobs+=($!)
    done
    wait "${jobs[@]}"
    jobs=()
    for i in $(seq "$PAR"); do
        tls "$to" "$v" "$W/c/p$i.res" -sess_in "$W/c/p$i.sess" &
        jobs+=($!)
    done
    wait "${jobs[@]}"
    for i in $(seq "$PAR"); do is_reused "$W/c/p$i.res" && good=$((good + 1)); done
    if [ "$good" = "$PAR" ]; then
        ok "$label: $PAR parallel resumptions $names, all resumed"
    else
        bad "$label: $good/$PAR parallel resumptions"
        diag "$W/c/p$PAR.res"
    fi
}

# Sub-second part of the clock, in microseconds.
frac_us() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#${t: -6})); }
sleep_to_frac() { # sleep until the clock's sub-second part is $1 us
    local d=$((($1 - $(frac_us) + 1000000) % 1000000))
    sleep "$(printf '0.%06d' "$d")"
}

# mpm_phase MPM REUSE: Apache A and B with this MPM and
# DISTCACHE_REUSE_CONNECTIONS=REUSE: the cross-server and parallel rounds,
# dc_client's connection counts, with reuse on a dc_client restart under
# the kept connections, a graceful restart of both (every connection of the
# old generation closed, none left open), a parallel round after it.
# Leaves A and B running.
mpm_phase() {
    local mpm=$1 reuse=$2 label="$1 reuse=$2" acc0 acc1 kids calls conns open old p i c
    start_apache A "$PORT_A" "$mpm" "dc:UNIX:$SOCK" "$reuse"
    start_apache B "$PORT_B" "$mpm" "dc:UNIX:$SOCK" "$reuse"
    acc0=$(metric distcache_connections_accepted_total)
    serial_rounds "$label"
    acc1=$(metric distcache_connections_accepted_total)
    kids=$(children A B | wc -l)
    # Each cross-server resumption makes at least two cache calls: the
    # store after the full handshake and the lookup of the resumption.
    calls=$((2 * 2 * N))
    conns=$((${acc1:-0} - ${acc0:-0}))
    if [ "$reuse" = 1 ]; then
        if [ "$conns" -ge 1 ] && [ "$conns" -le "$kids" ]; then
            ok "$label: $conns connections to dc_client for >= $calls serial cache calls (at most one per Apache child; $kids children)"
        else
            bad "$label: $conns connections to dc_client for >= $calls serial cache calls, $kids Apache children (metrics: '$acc0' -> '$acc1')"
        fi
    elif [ "$conns" -ge "$calls" ]; then
        ok "$label: $conns connections to dc_client for >= $calls serial cache calls (one per call)"
    else
        bad "$label: $conns connections for >= $calls cache calls without reuse (metrics: '$acc0' -> '$acc1')"
    fi
    parallel_round "$label TLS1.2" -tls1_2
    parallel_round "$label TLS1.3" -tls1_3

    if [ "$reuse" = 1 ]; then
        # The kept connections die with dc_client: each is found closed
        # when the next call sends, and replaced without failing the call.
        say "$label: restarting dc_client under $(metric distcache_connections_open) kept connections"
        restart_dc_client
        N=2 serial_rounds "$label after-dc_client-restart"
    fi

    open=$(metric distcache_connections_open)
    if [ "$reuse" = 1 ] && [ "${open:-0}" -lt 1 ]; then
        bad "$label: no connection kept open between calls"
    elif [ "$reuse" = 0 ] && [ "$open" != 0 ]; then
        bad "$label: '$open' connections open between per-call operations"
    fi
    old=$(children A B)
    graceful A && graceful B || bad "$label: graceful restart did not complete"
    for p in $old; do
        for i in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    if ! wait_metric distcache_connections_open 0; then
        bad "$label: $(metric distcache_connections_open) connections to dc_client still open after a graceful restart (had $open)"
        ss -xp 2>/dev/null | grep -F "$SOCK" | head -5
    elif [ "$reuse" = 1 ]; then
        ok "$label: graceful restart: the old children's $open kept connections all closed, 0 open (none leaked, the parents hold none)"
    else
        ok "$label: graceful restart: 0 connections to dc_client open (none leaked)"
    fi
    parallel_round "$label, after a graceful restart, TLS1.2" -tls1_2
    open=$(metric distcache_connections_open)
    if [ "$reuse" = 1 ]; then
        # At most one per thread: 64 threads per Apache (worker and
        # prefork processes alike).
        [ "${open:-0}" -ge 1 ] && [ "$open" -le 128 ] && ok "$label: $open connections kept for the new children (at most one per thread, 128)" ||
            bad "$label: '$open' connections kept after the restart (expected 1..128)"
    else
        [ "$open" = 0 ] && ok "$label: 0 connections open between calls after the restart" ||
            bad "$label: '$open' connections open between per-call operations after the restart"
    fi
    c=$(crashes)
    [ "$c" = 0 ] && ok "$label: no Apache child crashed" || bad "$label: $c Apache child crashes logged"
}

# The event MPM's extra runs (reuse off): short timeouts from Apache.
event_timeouts() {
    # Apache 2.4's mod_socache_dc passes only the millisecond part of the
    # remaining lifetime: a session stored late in a wall-clock second
    # arrives with a timeout of a few ms. With -mintimeout it must live on.
    sleep_to_frac 850000
    tls "$PORT_A" -tls1_2 "$W/c/late.full" -sess_out "$W/c/late.sess"
    sleep 5
    tls "$PORT_B" -tls1_2 "$W/c/late.res" -sess_in "$W/c/late.sess"
    if is_new "$W/c/late.full" && is_reused "$W/c/late.res"; then
        ok "a session stored late in a second (timeout of a few ms from Apache) is resumed 5 s later on the other server"
    else
        bad "late-second session was not resumed after 5 s with -mintimeout"
    fi

    say "== event MPM, dc_server without a floor: sub-second timeouts must not crash anything"
    start_cache
    for i in $(seq 10); do
        sleep_to_frac $((i * 97000 % 1000000))
        tls "$PORT_A" -tls1_2 "$W/c/nf$i.full" -sess_out "$W/c/nf$i.sess"
    done
    good=0
    for i in $(seq 10); do is_new "$W/c/nf$i.full" && grep -q '^HTTP/1.[01] 200' "$W/c/nf$i.full" && good=$((good + 1)); done
    c=$(crashes)
    if [ "$good" = 10 ] && [ "$c" = 0 ] && kill -0 "${APID[A]}" && kill -0 "${APID[B]}"; then
        ok "without -mintimeout: 10 stores at spread sub-second points, 10 pages served, 0 child crashes"
    else
        bad "without -mintimeout: $good/10 served, $c crashes"
    fi
    start_cache -mintimeout 300000
}

# ------------------------------------------------ 5. the runs
start_cache -mintimeout 300000
for mpm in event worker prefork; do
    if [ ! -f "$MODDIR/mod_mpm_$mpm.so" ]; then
        [ "${CI:-}" = true ] && bad "$mpm MPM not installed ($MODDIR/mod_mpm_$mpm.so)" || say "SKIP: $mpm MPM not installed"
        continue
    fi
    for reuse in 0 1; do
        say "== $mpm MPM, DISTCACHE_REUSE_CONNECTIONS=$reuse, dc_server -mintimeout 300000"
        mpm_phase "$mpm" "$reuse"
        [ "$mpm" = event ] && [ "$reuse" = 0 ] && event_timeouts
        stop_apache A
        stop_apache B
    done
done

# The DC_CTX API straight through the same dc_client, as mod_socache_dc's
# threads use it: capi-tests/dc_ctx_live.c (every flag combination, 16
# threads on one context for flags 0 and for two persistent modes, fork)
# with reuse off and on. Its flags-0 hammer alone is 32000 calls.
say "== DC_CTX through dc_client: capi-tests/dc_ctx_live.c, reuse off and on"
LIVE="$W/dc_ctx_live"
LIVESRC="$(cd "$(dirname "$0")/../.." && pwd -P)/capi-tests/dc_ctx_live.c"
CC_LIVE=$(command -v cc || command -v gcc || true)
if [ -z "$CC_LIVE" ] || ! "$CC_LIVE" -O2 -o "$LIVE" "$LIVESRC" "${LINKDIRS[@]}" -ldistcache -lnal -lpthread >"$W/live-cc.log" 2>&1; then
    cat "$W/live-cc.log" 2>/dev/null | tail -5
    bad "dc_ctx_live.c does not build against $LIBDIR"
else
    for reuse in 0 1; do
        acc0=$(metric distcache_connections_accepted_total)
        if DISTCACHE_REUSE_CONNECTIONS=$reuse timeout 120 "$LIVE" "UNIX:$SOCK" >"$W/live-$reuse.log" 2>&1; then
            acc1=$(metric distcache_connections_accepted_total)
            conns=$((${acc1:-0} - ${acc0:-0}))
            hammer=$(sed -n 's/^dc_ctx_live: \(flags=0: .*\)/\1/p' "$W/live-$reuse.log")
            if [ "$reuse" = 0 ] && [ "$conns" -ge 32000 ]; then
                ok "dc_ctx_live through dc_client, reuse=0: $(tail -1 "$W/live-$reuse.log" | sed 's/^dc_ctx_live: //'); $conns connections (one per flags-0 call); $hammer"
            elif [ "$reuse" = 1 ] && [ "$conns" -ge 1 ] && [ "$conns" -le 200 ]; then
                ok "dc_ctx_live through dc_client, reuse=1: $(tail -1 "$W/live-$reuse.log" | sed 's/^dc_ctx_live: //'); $conns connections in all; $hammer"
            else
                bad "dc_ctx_live through dc_client, reuse=$reuse: $conns connections (metrics '$acc0' -> '$acc1')"
            fi
        else
            tail -5 "$W/live-$reuse.log"
            bad "dc_ctx_live through dc_client, reuse=$reuse failed"
        fi
    done
fi

# The mixed fleet of issue 17: Apache A with Debian's own mod_socache_redis
# (SSLSessionCache redis:HOST:PORT) and Apache B with mod_socache_dc through
# a dc_client in Redis mode, both on ONE redis-server: a session made on
# either resumes on the other (A stores with apr_redis and B reads it with
# dc_client's GET, and the reverse), so a fleet can move over host by host.
#
#   openssl s_client -> apache A --mod_socache_redis--------------------\
#                                                                        redis-server
#   openssl s_client -> apache B --mod_socache_dc-- dc_client (UNIX) ---/
REDIS_PID=
RDC_PID=
redis_cli() { timeout 10 redis-cli -h 127.0.0.1 -p "$PORT_R" "$@"; }
mixed_fleet() {
    local i keys bad_keys ttl_bad k id tag len lmin= lmax= c
    PORT_R=$(free_port $((PORT_M + 1)))
    mkdir -p "$W/redis"
    redis-server --port "$PORT_R" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$W/redis" >"$W/redis/log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for i in $(seq 200); do
        [ "$(redis_cli ping 2>/dev/null)" = PONG ] && break
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ "$(redis_cli ping 2>/dev/null)" = PONG ] || die "redis-server did not start: $(tail -3 "$W/redis/log")"
    # -mintimeout: mod_socache_dc passes the millisecond remainder of the
    # lifetime, and with no dc_server in the path dc_client raises it.
    "$PREFIX/bin/dc_client" -server "redis://127.0.0.1:$PORT_R" -listen "UNIX:$W/dc/redis.sock" \
        -sockperms 0666 -mintimeout 300000 >>"$W/dc/redis-client.log" 2>&1 &
    RDC_PID=$!
    PIDS+=("$RDC_PID")
    wait_sock "$W/dc/redis.sock" || die "dc_client -server redis:// did not start: $(tail -3 "$W/dc/redis-client.log")"
    chmod 0666 "$W/dc/redis.sock"
    start_apache A "$PORT_A" event "redis:127.0.0.1:$PORT_R"
    start_apache B "$PORT_B" event "dc:UNIX:$W/dc/redis.sock"
    # Odd rounds A -> B (apr_redis stores, dc_client reads), even ones
    # B -> A (dc_client stores, apr_redis reads).
    serial_rounds "mixed-fleet"
    parallel_round "mixed-fleet A->B TLS1.3" -tls1_3
    parallel_round "mixed-fleet B->A TLS1.3" -tls1_3 reverse

    # One key layout: every key is mod_ssl-sess: + lowercase hex, with a
    # relative expiry within SSLSessionCacheTimeout 300 (dc_client's from
    # -mintimeout 300000 ms), whichever module wrote it.
    keys=$(redis_cli --scan --pattern '*' | sort)
    bad_keys=$(printf '%s\n' "$keys" | grep -cvE '^mod_ssl-sess:[0-9a-f]+$' || true)
    ttl_bad=0
    for k in $keys; do
        i=$(redis_cli ttl "$k")
        [ "$i" -ge 1 ] && [ "$i" -le 300 ] || ttl_bad=$((ttl_bad + 1))
        len=$(redis_cli strlen "$k")
        [ -z "$lmin" ] || [ "$len" -lt "$lmin" ] && lmin=$len
        [ -z "$lmax" ] || [ "$len" -gt "$lmax" ] && lmax=$len
    done
    if [ -n "$keys" ] && [ "$bad_keys" = 0 ] && [ "$ttl_bad" = 0 ]; then
        ok "mixed-fleet: $(printf '%s\n' "$keys" | wc -l) keys in Redis, all mod_ssl-sess:<lowercase hex id> with a TTL of 1..300 s (sessions of $lmin..$lmax bytes)"
    else
        bad "mixed-fleet: $bad_keys keys outside mod_ssl-sess:<lowercase hex>, $ttl_bad without a TTL of 1..300 s: $(printf '%s\n' "$keys" | head -3 | tr '\n' ' ')"
    fi
    # The TLS 1.2 session ids s_client saw, made on A (round 1) and on B
    # (round 2), are the keys, byte for byte.
    for tag in "A:mixed-fleet-tls1_2-1" "B:mixed-fleet-tls1_2-2"; do
        id=$(sed -n 's/^ *Session-ID: *\([0-9A-Fa-f]*\)$/\1/p' "$W/c/${tag#*:}.full" | head -1 | tr 'A-F' 'a-f')
        if [ -n "$id" ] && [ "$(redis_cli exists "mod_ssl-sess:$id")" = 1 ]; then
            ok "mixed-fleet: the session made on ${tag%%:*} is stored under mod_ssl-sess:$id"
        else
            bad "mixed-fleet: session id '$id' made on ${tag%%:*} is not a key in Redis"
        fi
    done
    c=$(crashes)
    [ "$c" = 0 ] && ok "mixed-fleet: no Apache child crashed" || bad "mixed-fleet: $c Apache child crashes logged"
    stop_apache A
    stop_apache B
    kill "$RDC_PID" 2>/dev/null && wait "$RDC_PID" 2>/dev/null
    kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
}

if [ ! -f "$MODDIR/mod_socache_redis.so" ] || ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    m="mixed fleet needs $MODDIR/mod_socache_redis.so (apache2), redis-server and redis-cli (redis-server, redis-tools)"
    [ "${CI:-}" = true ] && bad "$m" || say "SKIP: $m"
else
    say "== mixed fleet: Apache A with mod_socache_redis, Apache B with mod_socache_dc through dc_client, one Redis"
    mixed_fleet
fi

say "== negative control: per-instance shmcb caches must NOT resume across servers"
start_apache A "$PORT_A" event "shmcb:$W/A/run/scache(512000)"
start_apache B "$PORT_B" event "shmcb:$W/B/run/scache(512000)"
neg=0
for i in 1 2 3; do cross -tls1_2 "neg$i" "$PORT_A" "$PORT_B" && neg=$((neg + 1)); done
[ "$neg" = 0 ] && ok "negative control: 0/3 cross-server resumptions without a shared cache" ||
    bad "negative control resumed $neg/3: the check cannot tell"
stop_apache A
stop_apache B
