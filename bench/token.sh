#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 1 (issue 7): the token endpoint with a warm cache against nginx serving the identical body.
#
#   bench/token.sh            # ROUNDS=3 DURATION=10 CONNECTIONS=64 THREADS=2 by default
#
# idbrokerd (release build, files mode, mock provider) with one registered pod. wrk cannot choose its
# source address, so the pod is registered on 127.0.0.1, the address wrk's connections come from; the
# broker listens on 127.0.0.1 too. The per-pod rate limit is off (rateLimit.requestsPerSecond 0):
# with the default 20/s every request past the burst would be a 429 and this would measure refusals.
# Everything else is the default configuration, audit records included (to a file, as nginx's
# access log is). nginx-light runs with its own temporary configuration on another loopback port, one
# worker per core, and serves the body the broker sent, byte for byte, as a static file with the same
# Content-Type and Cache-Control.
#
# Part 1, saturation: wrk with CONNECTIONS keep-alive connections for DURATION s, alternating broker,
# nginx, broker, nginx … ROUNDS times each; medians of requests/s and of the latency percentiles.
# Part 2, fixed offered load: wrk2 is not in Debian, so each connection waits a fixed delay before each
# request (wrk's Lua delay()), which offers RATE_SHARE (default 0.5) of the slower server's median
# saturation rate to both; medians of p50/p90/p99 at that load.
# Also the CPU time each server used per request (user+system of all its threads, from /proc).
source "$(dirname "$0")/common.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
HTTP_THREADS=${HTTP_THREADS:-}
RATE_SHARE=${RATE_SHARE:-0.5}

bench_init
bench_apt wrk nginx-light
# HTTP_THREADS (optional): the broker's "http.threads" (0 = a thread per connection); unset = its
# default.
bench_broker_conf "{\"rateLimit\":{\"requestsPerSecond\":0}${HTTP_THREADS:+,\"http\":{\"threads\":$HTTP_THREADS\}}}"
cat >"$BROKER_SOURCE/bench.yaml" <<'EOF'
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: bench-id, namespace: default}
spec: {type: 0, clientID: 11111111-2222-3333-4444-555555555555, resourceID: /subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bench-id}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: bench-binding, namespace: default}
spec: {azureIdentity: bench-id, selector: bench}
---
apiVersion: v1
kind: Pod
metadata: {name: bench-pod, namespace: default, labels: {aadpodidbinding: bench}}
EOF
bench_broker_exec
bench_broker_wait_ready
bench_ctl register default/bench-pod --ip 127.0.0.1 >/dev/null

QUERY="$IMDS_PATH?api-version=2018-02-01&resource=https://management.azure.com/"
BROKER_URL="http://127.0.0.1:$BROKER_PORT$QUERY"

# The body nginx serves: the broker's own reply (the cache is warm from here on).
NG=$BENCH_DIR/nginx
mkdir -p "$NG/www"
curl -sf -H 'Metadata: true' -H 'Host: 169.254.169.254' -o "$NG/www/token" "$BROKER_URL" ||
    bench_die "the broker did not issue a token: $(tail -5 "$BENCH_DIR/broker/idbrokerd.log")"
bench_nginx_start "$NG"
NGINX_URL="http://127.0.0.1:$NGINX_PORT$QUERY"

# CPU ticks (user + system) of a process and, for nginx, its workers.
cpu_ticks() {
    local p t=0
    for p in "$@" $(pgrep -P "$1" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}

# Runs wrk; prints "rps p50 p75 p90 p99 cpu_us_per_request" (latencies in ms).
run_wrk() {
    local url=$1 pid=$2 script=${3:-} out t0 t1
    t0=$(cpu_ticks "$pid")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency ${script:+-s "$script"} \
        -H 'Metadata: true' -H 'Host: 169.254.169.254' "$url")
    t1=$(cpu_ticks "$pid")
    if echo "$out" | grep -q "Non-2xx"; then
        echo "$out" >&2
        bench_die "non-2xx replies"
    fi
    echo "$out" | awk -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ {p50 = ms($2)} /^ +75%/ {p75 = ms($2)} /^ +90%/ {p90 = ms($2)} /^ +99%/ {p99 = ms($2)}
        /requests in/ {n = $1}
        /^Requests\/sec/ {rps = $2}
        END {printf "%.0f %.3f %.3f %.3f %.3f %.1f\n", rps, p50, p75, p90, p99, ticks * 1e6 / hz / n}'
}

col() { awk -v c="$1" '{print $c}' | bench_median; }

bench_log "warm-up"
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H 'Metadata: true' -H 'Host: 169.254.169.254' "$BROKER_URL" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$NGINX_URL" >/dev/null

: >"$BENCH_DIR/sat.broker"
: >"$BENCH_DIR/sat.nginx"
for i in $(seq "$ROUNDS"); do
    bench_log "saturation round $i/$ROUNDS: broker"
    run_wrk "$BROKER_URL" "$BROKER_PID" | tee -a "$BENCH_DIR/sat.broker" >&2
    bench_log "saturation round $i/$ROUNDS: nginx"
    run_wrk "$NGINX_URL" "$NGINX_PID" | tee -a "$BENCH_DIR/sat.nginx" >&2
done

b_rps=$(col 1 <"$BENCH_DIR/sat.broker")
n_rps=$(col 1 <"$BENCH_DIR/sat.nginx")
rate=$(awk -v a="$b_rps" -v b="$n_rps" -v s="$RATE_SHARE" 'BEGIN {m = a < b ? a : b; printf "%d", m * s}')
delay_ms=$(awk -v r="$rate" -v c="$CONNECTIONS" 'BEGIN {d = c * 1000 / r; printf "%d", d < 1 ? 1 : d + 0.5}')
cat >"$BENCH_DIR/delay.lua" <<EOF
function delay() return $delay_ms end
EOF

: >"$BENCH_DIR/fix.broker"
: >"$BENCH_DIR/fix.nginx"
for i in $(seq "$ROUNDS"); do
    bench_log "fixed load round $i/$ROUNDS (about $rate req/s, $delay_ms ms between requests per connection): broker"
    run_wrk "$BROKER_URL" "$BROKER_PID" "$BENCH_DIR/delay.lua" | tee -a "$BENCH_DIR/fix.broker" >&2
    bench_log "fixed load round $i/$ROUNDS: nginx"
    run_wrk "$NGINX_URL" "$NGINX_PID" "$BENCH_DIR/delay.lua" | tee -a "$BENCH_DIR/fix.nginx" >&2
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
row() { # name file
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(col 1 <"$2")" "$(col 2 <"$2")" "$(col 3 <"$2")" \
        "$(col 4 <"$2")" "$(col 5 <"$2")" "$(col 6 <"$2")"
}

b_p99=$(col 5 <"$BENCH_DIR/fix.broker")
n_p99=$(col 5 <"$BENCH_DIR/fix.nginx")
rps_ratio=$(ratio "$b_rps" "$n_rps")
p99_ratio=$(ratio "$b_p99" "$n_p99")
echo
echo "## bench/token.sh — $(date -u +%F) — $(bench_machine)"
echo "idbrokerd $(git -C "$BENCH_SRC" describe --always --dirty 2>/dev/null || echo '?'), nginx $(nginx -v 2>&1 | cut -d/ -f2), wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds each, alternating; medians"
echo
echo "Saturation (as fast as wrk can send):"
echo
echo "| server | req/s | p50 ms | p75 ms | p90 ms | p99 ms | CPU µs/req |"
echo "|---|---|---|---|---|---|---|"
row idbrokerd "$BENCH_DIR/sat.broker"
row nginx "$BENCH_DIR/sat.nginx"
echo
echo "Fixed offered load, about $rate req/s ($delay_ms ms between requests on each of $CONNECTIONS connections):"
echo
echo "| server | req/s | p50 ms | p75 ms | p90 ms | p99 ms | CPU µs/req |"
echo "|---|---|---|---|---|---|---|"
row idbrokerd "$BENCH_DIR/fix.broker"
row nginx "$BENCH_DIR/fix.nginx"
echo
met() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {ok = op == "ge" ? v >= t : v <= t; print ok ? "met" : "missed"}'; }
echo "- rps ratio broker/nginx: $rps_ratio (target ≥ 0.8: $(met "$rps_ratio" 0.8 ge))"
echo "- p99 ratio broker/nginx at the fixed load: $p99_ratio (target ≤ 2: $(met "$p99_ratio" 2 le))"
