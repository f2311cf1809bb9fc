#!/bin/sh
# Prove that the repository needs nothing beside it: clone HEAD into an
# empty temporary directory and run `make test` there. The clone's target/
# is a link to this checkout's, and the tracked files keep this checkout's
# modification times, so cargo finds everything built and compiles nothing
# again (it would still be correct if it did, only slower).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/dcrs-clone.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
git clone -q --no-hardlinks "$ROOT" "$T/distcache-rs"
cd "$T/distcache-rs"
# Files that differ from HEAD in this checkout keep the clone's own time.
changed=$(cd "$ROOT" && git diff --name-only HEAD)
(cd "$ROOT" && git ls-files) | while IFS= read -r f; do
    case "
$changed
" in *"
$f
"*) continue ;; esac
    [ -e "$ROOT/$f" ] && touch -r "$ROOT/$f" "$f"
done
# Directories too: build.rs watches include/prelude as a whole.
find . -path ./.git -prune -o -type d -print | while IFS= read -r d; do
    [ -d "$ROOT/$d" ] && touch -r "$ROOT/$d" "$d"
done
mkdir -p "$ROOT/target"
ln -s "$ROOT/target" target
echo "check-clone: make test in $T/distcache-rs (nothing beside it)"
make test
echo "check-clone: a clone with nothing beside it passes make test"
