#!/bin/sh
# Bounded fuzzing run of every target (or the ones named), for `make check`
# and for long runs by hand. See fuzz/README.md.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS is the total budget, split evenly between the targets (default
# 60). Installs the pinned cargo-fuzz if it is missing, writes the seed
# corpora from wire.json into fuzz/seeds/, keeps what the fuzzer finds in
# fuzz/corpus/ (neither is committed), and exits non-zero, printing the
# failure and the reproducing input, as soon as a target crashes.
set -eu

CARGO_FUZZ_VERSION=0.13.2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TOTAL=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-decoder plug add_payload address sessiond server}

# The stable toolchain is all there is: RUSTC_BOOTSTRAP lets it take the
# -Z flags cargo-fuzz passes (sanitizer, coverage instrumentation).
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "fuzz/run.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# The repository's wire vectors (tests/vectors/README.md); DCRS_VECTORS may
# name another wire.json or its directory explicitly.
WIRE=${DCRS_VECTORS:-$ROOT/tests/vectors/wire.json}
[ -d "$WIRE" ] && WIRE=$WIRE/wire.json
if [ ! -f "$WIRE" ]; then
    echo "fuzz/run.sh: $WIRE not found" >&2
    exit 1
fi
python3 "$HERE/seeds.py" "$WIRE" "$HERE/seeds"

cd "$ROOT"
# -a: debug assertions and overflow checks on; ASan (cargo-fuzz's default)
# guards the few unsafe blocks.
cargo fuzz build -a

n=0
for t in $TARGETS; do n=$((n + 1)); done
per=$((TOTAL / n))
[ "$per" -ge 1 ] || per=1

status=0
for t in $TARGETS; do
    mkdir -p "$HERE/corpus/$t" "$HERE/artifacts/$t"
    log="$HERE/artifacts/$t/last-run.log"
    echo "fuzz/run.sh: $t for ${per}s"
    # -close_fd_mask=2: the plug prints one line per corrupt stream on
    # stderr; libFuzzer's own report still comes through.
    if cargo fuzz run -a "$t" "$HERE/corpus/$t" "$HERE/seeds/$t" -- \
        -max_total_time="$per" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
        -close_fd_mask=2 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" |
            sed "s/^/fuzz\/run.sh: $t: /"
    else
        status=1
        echo "fuzz/run.sh: TARGET $t FAILED; last lines of $log:" >&2
        tail -n 40 "$log" >&2
        for a in $(grep -o "$HERE/artifacts/$t/[a-z]*-[0-9a-f]\{40\}" "$log" | sort -u); do
            echo "fuzz/run.sh: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run -a $t $a" >&2
            RUSTC_BOOTSTRAP=1 cargo fuzz run -a "$t" "$a" 2>&1 | grep -v '^ *[0-9]*: 0x' | tail -n 30 >&2 || true
        done
        break
    fi
done
if [ "$status" -ne 0 ]; then
    echo "fuzz/run.sh: FAILED" >&2
    exit 1
fi
echo "fuzz/run.sh: all targets ran ${per}s each without a finding"
