#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every libFuzzer target (tests/fuzz/fuzz-*.c) for a given time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 600 s each, every target
#   JOBS=2 scripts/fuzz.sh 60 http-target     # JOBS targets at a time (default: the number of cores)
#
# Builds the `fuzz` preset (clang, -fsanitize=fuzzer,address,undefined) into build/fuzz. Each target
# starts from a copy of its seed corpus tests/fuzz/corpus/<name>/ (the repository's corpus is never
# written to), in build/fuzz/run/<name>/. A crash, leak or timeout leaves its input in
# build/fuzz/run/<name>/crash-* (or leak-*, timeout-*): add it to tests/fuzz/corpus/<name>/ as a
# regression case once fixed, and CI replays it from then on. Prints one line per target (executions,
# coverage, corpus size, findings) and exits 1 if any target found something.
set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${1:-600}
shift || true
JOBS=${JOBS:-$(nproc)}

if ! command -v clang >/dev/null; then
    echo "fuzz.sh: clang is needed (apt-get install clang)" >&2
    exit 2
fi
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j"$JOBS" >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in tests/fuzz/fuzz-*.c; do
        n=$(basename "$f" .c)
        targets+=("${n#fuzz-}")
    done
fi

RUN=build/fuzz/run
mkdir -p "$RUN"

run_one() {
    local name=$1 dir=$RUN/$1
    rm -rf "$dir"
    mkdir -p "$dir/corpus"
    cp -a "tests/fuzz/corpus/$name/." "$dir/corpus/"
    # -rss_limit_mb: the targets parse small inputs; a run that needs more is a finding.
    (cd "$dir" && "../../tests/fuzz-$name" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=1024 \
        -max_len=65536 -print_final_stats=1 corpus >log 2>&1) || true
}

summary() {
    local name=$1 dir=$RUN/$1 log=$RUN/$1/log
    local execs cov units found
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    units=$(find "$dir/corpus" -type f | wc -l)
    found=$(find "$dir" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o \
        -name 'oom-*' \) | wc -l)
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$SECS" "${execs:-?}" "${cov:-?}" "$units" "$found"
    [ "$found" -eq 0 ] && grep -q 'stat::number_of_executed_units' "$log"
}

echo "fuzz.sh: ${#targets[@]} targets, $SECS s each, $JOBS at a time; logs in $RUN/<target>/log" >&2
running=0
for t in "${targets[@]}"; do
    [ -f "tests/fuzz/fuzz-$t.c" ] || { echo "fuzz.sh: no target '$t'" >&2; exit 2; }
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

echo "| target | seconds | executions | coverage (edges) | corpus after | findings |"
echo "|---|---|---|---|---|---|"
bad=0
for t in "${targets[@]}"; do
    summary "$t" || bad=1
done
exit $bad
