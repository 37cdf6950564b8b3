#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs the integration tests with idbrokerd under valgrind memcheck and reports memory errors and
# definite leaks of every broker process (goal: 0 and 0).
#
#   scripts/valgrind.sh [BUILD_DIR] [TEST ...]
#
# BUILD_DIR defaults to build/debug (a build without sanitizers: valgrind and ASan do not mix).
# TESTs are names of tests/integration/test_*.py without the prefix (default: every test that starts
# the broker through tests/integration/idbtest.py). Each broker runs as
#   valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite ...
# (IDB_BROKER_WRAPPER in idbtest.py), one log per process in $OUT (default: a temporary directory,
# kept). Exit status: 0 when every log shows 0 errors and 0 bytes definitely lost, 1 otherwise.
# A test that fails for another reason (timing under valgrind) is reported but does not change the
# verdict on memory; its broker logs still count.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$SRC/build/debug}" && pwd)
[ $# -gt 0 ] && shift
OUT=${OUT:-$(mktemp -d /tmp/idb-valgrind.XXXXXX)}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[ -x "$BUILD/idbrokerd" ] || { echo "$BUILD/idbrokerd is not built" >&2; exit 2; }
if grep -q 'IDB_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
    echo "$BUILD is a sanitizer build; use a plain one (cmake --preset debug)" >&2
    exit 2
fi

if [ $# -eq 0 ]; then
    set --
    for f in "$SRC"/tests/integration/test_*.py; do
        grep -q '^from idbtest import\|^import idbtest' "$f" || continue
        grep -q 'Broker(' "$f" || continue
        n=$(basename "$f" .py)
        set -- "$@" "${n#test_}"
    done
fi

SUPP=$SRC/scripts/valgrind.supp
VG="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"
VG="$VG --show-leak-kinds=definite --track-origins=yes --num-callers=30 --log-file=$OUT/%q{IDB_VG_TEST}.%p.log"
[ -f "$SUPP" ] && VG="$VG --suppressions=$SUPP"

failed_tests=""
for t in "$@"; do
    echo "== $t"
    if IDB_VG_TEST=$t IDB_BROKER_WRAPPER="$VG" IDB_BUILD_DIR=$BUILD IDB_SOURCE_DIR=$SRC \
        PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 "$SRC/tests/integration/test_$t.py" >"$OUT/$t.out" 2>&1; then
        echo "   test passed ($(tail -n 1 "$OUT/$t.out"))"
    else
        echo "   test FAILED ($(tail -n 1 "$OUT/$t.out")): see $OUT/$t.out"
        failed_tests="$failed_tests $t"
    fi
done

logs=0
errors=0
leaked=0
bad=""
for l in "$OUT"/*.log; do
    [ -f "$l" ] || continue
    logs=$((logs + 1))
    e=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$l" | tail -n 1 | tr -d ,)
    d=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$l" | tail -n 1 | tr -d ,)
    if [ -z "$e" ]; then
        # No summary: the process was killed (SIGKILL tests) before valgrind could write one.
        continue
    fi
    errors=$((errors + e))
    leaked=$((leaked + ${d:-0}))
    if [ "$e" != 0 ] || [ "${d:-0}" != 0 ]; then
        bad="$bad $l"
    fi
done

echo
echo "broker processes under valgrind: $logs (logs in $OUT)"
echo "memcheck errors: $errors; definitely lost: $leaked bytes"
[ -n "$failed_tests" ] && echo "tests that failed (see their .out):$failed_tests"
if [ -n "$bad" ]; then
    echo "reports:$bad"
    exit 1
fi
[ "$logs" -gt 0 ] || { echo "no broker ran under valgrind" >&2; exit 1; }
exit 0
