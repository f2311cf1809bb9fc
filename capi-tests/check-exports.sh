#!/bin/sh
# Check the installed shared libraries: SONAME, the real file names, and
# that each one exports exactly the functions the original exported
# (symbols.txt: "<soname> <symbol>" per line).
# usage: check-exports.sh <libdir> <symbols.txt>
set -u
libdir=$1
list=$2
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "check-exports: $*" >&2; }

for so in libnal.so.1 libdistcache.so.1 libdistcacheserver.so.1; do
    f="$libdir/$so"
    [ -e "$f" ] && ok || { bad "$f missing"; continue; }
    [ -e "$libdir/${so%.1}" ] && ok || bad "dev symlink ${so%.1} missing"
    [ "$(readlink -f "$f")" = "$(readlink -f "$libdir/$so.0.1")" ] && ok || bad "$so does not point to $so.0.1"
    sn=$(readelf -d "$f" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [ "$sn" = "$so" ] && ok || bad "$so has SONAME '$sn'"
    exported=$(nm -D --defined-only "$f" | awk '$2 == "T" || $2 == "W" { print $3 }' | sort)
    for sym in $(awk -v l="$so" '$1 == l { print $2 }' "$list"); do
        echo "$exported" | grep -qx "$sym" && ok || bad "$so does not export $sym"
    done
    [ -e "$libdir/${so%.so.1}.a" ] && ok || bad "static ${so%.so.1}.a missing"
done
# The filter libraries must name libnal.so.1 (as filter and as dependency).
for so in libdistcache.so.1 libdistcacheserver.so.1; do
    readelf -d "$libdir/$so" | grep -q 'Filter library: \[libnal.so.1\]' && ok || bad "$so is not a filter of libnal.so.1"
    readelf -d "$libdir/$so" | grep -q 'NEEDED.*\[libnal.so.1\]' && ok || bad "$so lacks DT_NEEDED libnal.so.1"
done
n=$(awk 'NF == 2' "$list" | wc -l)
[ "$n" -eq 95 ] && ok || bad "symbols.txt lists $n symbols, expected 95"
echo "check-exports: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
