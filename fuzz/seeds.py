#!/usr/bin/env python3
"""Write the fuzz seed corpora, derived from the captured traffic.

usage: seeds.py WIRE_JSON OUT_DIR

Creates OUT_DIR/<target>/ for every fuzz target, one file per seed (named
by content hash, so re-running is idempotent). Every request and response
byte string in wire.json (including the separately timed chunks and the
follow-up exchanges) becomes a seed of the stream targets, framed with the
small control prefix each target reads first; every ADD payload in it
becomes an add_payload seed. Address and sessiond seeds are written out
here, as wire.json has none.
"""
import hashlib
import json
import os
import struct
import sys


def put(out, target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frames(stream):
    """Yield (is_response, op, complete, payload) for well-formed frames."""
    off = 0
    while off + 14 <= len(stream):
        n = struct.unpack(">H", stream[off + 12:off + 14])[0]
        if n > 2048 or off + 14 + n > len(stream):
            return
        yield stream[off + 4], stream[off + 10], stream[off + 11], stream[off + 14:off + 14 + n]
        off += 14 + n


def add_payloads(stream):
    acc = None
    for is_resp, op, complete, payload in frames(stream):
        if is_resp != 0 or op != 0:
            acc = None
            continue
        acc = (acc or b"") + payload
        if complete == 1:
            yield acc
            acc = None


def main():
    wire, out = sys.argv[1], sys.argv[2]
    with open(wire) as f:
        cases = json.load(f)
    streams = []  # (bytes, carries requests?)
    for c in cases:
        for key in ("request_hex", "followup_request_hex"):
            if c.get(key):
                streams.append((bytes.fromhex(c[key]), True))
        for key in ("response_hex", "followup_response_hex"):
            if c.get(key):
                streams.append((bytes.fromhex(c[key]), False))
        for ch in c.get("request_chunks") or []:
            if ch.get("hex"):
                streams.append((bytes.fromhex(ch["hex"]), True))
    n = 0
    for s, is_req in streams:
        # decoder: byte 0 = chunk size.
        put(out, "decoder", b"\x00" + s)
        put(out, "decoder", b"\x07" + s)
        # plug: byte 0 = side | buffer size index << 1, byte 1 = chunk size.
        side = 0 if is_req else 1
        put(out, "plug", bytes([side | (4 << 1), 0]) + s)
        put(out, "plug", bytes([side | (2 << 1), 5]) + s)
        if is_req:
            # server: capacity, seconds per request, -mintimeout seconds.
            put(out, "server", b"\x03\x00\x00" + s)
            put(out, "server", b"\xff\x3c\x00" + s)
            for p in add_payloads(s):
                put(out, "add_payload", p)
        n += 1
    # A stream of every request in order, as one long-lived connection.
    allreq = b"".join(s for s, r in streams if r and s[:4] == b"\x00\x11\x00\x00")
    put(out, "server", b"\x0f\x01\x00" + allreq[:60000])
    put(out, "decoder", b"\x00" + allreq[:60000])

    for a in [
        "UNIX:/tmp/dc.sock", "unix:/var/run/distcache/dc_server", "IP:9001",
        "IP:127.0.0.1:9001", "IPv4:10.0.0.1:65535", "IPv6:[::1]:443",
        "IPv6:443", "IP:localhost:80", "IP:", "UNIX:", "IP:127.0.0.1:0",
        "IPv6:[fe80::1]:1", "TCP:1.2.3.4:5", "UNIX:/" + "a" * 106,
    ]:
        put(out, "address", a.encode())

    key = b"k" * 32
    for t in [b"\x00", b"\x01", b"\x02", b"\x80", b"\x81"]:
        hdr = b"\x01" + t + b"\x00\x3c" + key
        body = hdr + (b"v" * 100 if t == b"\x00" else b"")
        put(out, "sessiond", struct.pack(">H", len(body)) + body)
    new = b"\x01\x00\x00\x3c" + key + b"DER" * 10
    get = b"\x01\x01\x00\x00" + key
    rem = b"\x01\x02\x00\x00" + key
    seq = b"".join(struct.pack(">H", len(x)) + x for x in (new, get, rem, get, new, new, get))
    put(out, "sessiond", seq)
    print(f"seeds: {n} wire.json streams -> {out}")


main()
