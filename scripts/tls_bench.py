#!/usr/bin/env python3
"""TLS measurements for scripts/bench.sh (issue 16), standard library only.

  tls_bench.py idle HOST PORT N PKI_DIR [plain]
      open N connections to dc_server (TLS with PKI_DIR/client.{pem,key} and
      PKI_DIR/ca.pem, or plain TCP), complete every handshake, print
      "ready N" on stdout, then hold them until stdin closes.

  tls_bench.py sessiond UDP_PORT SECONDS RATE HOST PORT PKI_DIR
      send stunnel sessiond GETs (36-byte datagrams, one socket each, as
      stunnel does) for SECONDS, one every millisecond, and measure the
      answer time; with RATE > 0, meanwhile start RATE full TLS handshakes a
      second against HOST:PORT. Prints one line:
      "sessiond_gets=N answered=N p50_us=X p99_us=X max_us=X handshakes=N
       handshake_failures=N".
"""

import os
import socket
import ssl
import sys
import threading
import time


def client_context(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
    ctx.load_cert_chain(os.path.join(pki, "client.pem"), os.path.join(pki, "client.key"))
    return ctx


def idle(host, port, n, pki, plain):
    ctx = None if plain else client_context(pki)
    held = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname=host)
            # TLS 1.3 tickets arrive after the handshake: read them so the
            # server's side is quiet (nothing unsent) like an idle link.
            s.setblocking(False)
            try:
                s.recv(1)
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
        held.append(s)
    print("ready %d" % len(held), flush=True)
    sys.stdin.read()
    for s in held:
        s.close()


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


def sessiond(udp_port, seconds, rate, host, port, pki):
    stop = threading.Event()
    counts = {"ok": 0, "fail": 0}

    def flood(my_rate):
        ctx = client_context(pki)
        interval = 1.0 / my_rate
        nxt = time.monotonic()
        while not stop.is_set():
            nxt += interval
            try:
                with socket.create_connection((host, port), timeout=5) as s:
                    with ctx.wrap_socket(s, server_hostname=host):
                        counts["ok"] += 1
            except (OSError, ssl.SSLError):
                counts["fail"] += 1
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                nxt = time.monotonic()

    threads = []
    if rate > 0:
        # Two flooders at half the rate each, so one slow handshake does
        # not hold the rate back.
        threads = [threading.Thread(target=flood, args=(rate / 2,)) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
    key = bytes(range(32))
    req = bytes([1, 1, 0, 0]) + key
    lat = []
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.05)
        t0 = time.perf_counter()
        s.sendto(req, ("127.0.0.1", udp_port))
        sent += 1
        try:
            s.recv(600)
            lat.append((time.perf_counter() - t0) * 1e6)
        except socket.timeout:
            pass
        s.close()
        time.sleep(0.001)
    stop.set()
    for t in threads:
        t.join()
    lat.sort()
    print(
        "sessiond_gets=%d answered=%d p50_us=%.0f p99_us=%.0f max_us=%.0f handshakes=%d handshake_failures=%d"
        % (
            sent,
            len(lat),
            percentile(lat, 0.50),
            percentile(lat, 0.99),
            lat[-1] if lat else 0,
            counts["ok"],
            counts["fail"],
        ),
        flush=True,
    )


def main(argv):
    if len(argv) >= 5 and argv[0] == "idle":
        idle(argv[1], int(argv[2]), int(argv[3]), argv[4], len(argv) > 5 and argv[5] == "plain")
    elif len(argv) == 7 and argv[0] == "sessiond":
        sessiond(int(argv[1]), float(argv[2]), float(argv[3]), argv[4], int(argv[5]), argv[6])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
