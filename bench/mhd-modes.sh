#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The serving-model numbers behind docs/performance.md: libmicrohttpd's threading modes with a
# trivial handler (bench/mhd-modes.c, a fixed 1.3 kB reply), wrk -t2 -c64 for DURATION s each,
# alternating, ROUNDS rounds; median requests/s, p99 and CPU µs per request of the server.
#
#   bench/mhd-modes.sh        # ROUNDS=3 DURATION=5
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
bench_init
bench_apt wrk libmicrohttpd-dev
gcc -O2 -Wall -o "$BENCH_DIR/mhd-modes" "$BENCH_SRC/bench/mhd-modes.c" -lmicrohttpd
MODES="tpc-select tpc-poll epoll epoll-pool"
for i in $(seq "$ROUNDS"); do
    for m in $MODES; do
        port=$(bench_free_port)
        "$BENCH_DIR/mhd-modes" "$m" "$port" &
        pid=$!
        BENCH_PIDS+=("$pid")
        for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.02; done
        t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
        t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        echo "$out" | awk -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
            function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
            /^ +99%/ {p99 = ms($2)} /requests in/ {n = $1} /^Requests\/sec/ {rps = $2}
            END {printf "%.0f %.3f %.1f\n", rps, p99, ticks * 1e6 / hz / n}' | tee -a "$BENCH_DIR/$m" >&2
    done
done
echo
echo "## bench/mhd-modes.sh — $(date -u +%F) — $(bench_machine)"
echo "libmicrohttpd $(dpkg-query -W -f='${Version}' libmicrohttpd12 2>/dev/null), trivial handler, wrk -t2 -c64 -d${DURATION}s, $ROUNDS rounds, alternating; medians"
echo
echo "| mode | req/s | p99 ms | CPU µs/req |"
echo "|---|---|---|---|"
for m in $MODES; do
    echo "| $m | $(awk '{print $1}' "$BENCH_DIR/$m" | bench_median) | $(awk '{print $2}' "$BENCH_DIR/$m" | bench_median) | $(awk '{print $3}' "$BENCH_DIR/$m" | bench_median) |"
done
