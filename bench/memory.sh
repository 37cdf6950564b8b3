#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 4 (issue 7): resident memory of idbrokerd.
#
#   bench/memory.sh           # PODS=250 IDENTITIES=10000 REQUESTS=1000000
#
# Files mode, release build, mock provider. Measures VmRSS (and VmHWM, the peak) of idbrokerd:
#  1. idle: no manifests, no registrations, after /readyz is 200;
#  2. loaded: IDENTITIES AzureIdentities + as many AzureIdentityBindings + PODS Pod manifests
#     (generated, 50 namespaces), and PODS registrations made through the control socket;
#  3. after REQUESTS token requests from one of those pods (wrk, 64 keep-alive connections), read
#     after each wrk run of CHUNK seconds, so growth would show as a trend.
# The per-pod rate limit is off (rateLimit.requestsPerSecond 0) so every request is a real issue,
# and the log (one audit record per request) goes to /dev/null: a million records are ~300 MB.
# Target: ≤ 16 MiB loaded; no growth beyond noise over the requests.
source "$(dirname "$0")/common.sh"

PODS=${PODS:-250}
IDENTITIES=${IDENTITIES:-10000}
REQUESTS=${REQUESTS:-1000000}
CHUNK=${CHUNK:-5}

bench_init
bench_apt wrk
BROKER_LOG=/dev/null
bench_broker_conf '{"rateLimit":{"requestsPerSecond":0}}'

# VmRSS VmHWM threads RssAnon RssFile (KiB). RssFile is mostly shared libraries (libcrypto, libcurl…),
# pages shared with every other process that maps them; RssAnon is the broker's own heap and stacks.
rss() {
    awk -v t="$(ls "/proc/$BROKER_PID/task" | wc -l)" '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2}
        /^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {print r, h, t, a, f}' "/proc/$BROKER_PID/status"
}
# The same for the broker's children (the provider host process, "providerIsolation": "process"):
# VmRSS RssAnon, summed.
child_rss() {
    local r=0 a=0 pid
    for pid in $(pgrep -P "$BROKER_PID"); do
        read -r pr pa < <(awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} END {print r, a}' "/proc/$pid/status")
        r=$((r + pr)) a=$((a + pa))
    done
    echo "$r $a"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

bench_log "idle"
bench_broker_exec
bench_broker_wait_ready
sleep 1
read -r idle_rss idle_hwm idle_threads idle_anon idle_file <<<"$(rss)"
bench_broker_stop

bench_log "generating $IDENTITIES identities, $IDENTITIES bindings, $PODS pods"
bench_gen_manifests "$BROKER_SOURCE" "$IDENTITIES" "$PODS"
bench_broker_exec
bench_broker_wait_ready 300
bench_log "registering $PODS pods"
bench_register_pods "$PODS"
sleep 1
read -r loaded_rss loaded_hwm loaded_threads loaded_anon loaded_file <<<"$(rss)"
read -r loaded_child_rss loaded_child_anon <<<"$(child_rss)"

URL="http://127.0.0.1:$BROKER_PORT$IMDS_PATH?api-version=2018-02-01&resource=https://management.azure.com/"
st=$(curl -s -o /dev/null -w '%{http_code}' -H 'Metadata: true' -H 'Host: 169.254.169.254' "$URL")
[ "$st" = 200 ] || bench_die "pod-00000 did not get a token ($st)"

: >"$BENCH_DIR/series"
done_n=0
while [ "$done_n" -lt "$REQUESTS" ]; do
    wrk -t2 -c64 -d"${CHUNK}s" -H 'Metadata: true' -H 'Host: 169.254.169.254' "$URL" >"$BENCH_DIR/wrk.out"
    grep -q "Non-2xx" "$BENCH_DIR/wrk.out" && { cat "$BENCH_DIR/wrk.out" >&2; bench_die "non-2xx replies"; }
    done_n=$(bench_metric idbroker_http_requests_total 'code="200"')
    done_n=${done_n%.*}
    echo "$done_n $(rss)" | tee -a "$BENCH_DIR/series" >&2
done
# The broker hands free pages of finished connections back every 10 s (malloc_trim in its main loop).
sleep 12
read -r rest_rss _ _ rest_anon rest_file <<<"$(rss)"
read -r rest_child_rss rest_child_anon <<<"$(child_rss)"
read -r _ first_rss _ _ first_anon first_file < <(head -1 "$BENCH_DIR/series")
read -r last_n last_rss last_hwm last_threads last_anon last_file < <(tail -1 "$BENCH_DIR/series")
max_rss=$(awk '{print $2}' "$BENCH_DIR/series" | sort -n | tail -1)
min_rss=$(awk '{print $2}' "$BENCH_DIR/series" | sort -n | head -1)

echo
echo "## bench/memory.sh — $(date -u +%F) — $(bench_machine)"
echo "idbrokerd $(git -C "$BENCH_SRC" describe --always --dirty 2>/dev/null || echo '?'), files mode, mock provider"
echo
echo "| state | VmRSS MiB | RssAnon MiB | RssFile MiB | VmHWM MiB | threads |"
echo "|---|---|---|---|---|---|"
echo "| idle (no objects, no registrations) | $(mib "$idle_rss") | $(mib "$idle_anon") | $(mib "$idle_file") | $(mib "$idle_hwm") | $idle_threads |"
echo "| loaded: $PODS registered pods, $IDENTITIES identities, $IDENTITIES bindings, $PODS pod manifests | $(mib "$loaded_rss") | $(mib "$loaded_anon") | $(mib "$loaded_file") | $(mib "$loaded_hwm") | $loaded_threads |"
echo "| after the first $CHUNK s of requests ($(head -1 "$BENCH_DIR/series" | cut -d' ' -f1) requests) | $(mib "$first_rss") | $(mib "$first_anon") | $(mib "$first_file") | | |"
echo "| after $last_n requests | $(mib "$last_rss") | $(mib "$last_anon") | $(mib "$last_file") | $(mib "$last_hwm") | $last_threads |"
echo "| 12 s after the last request | $(mib "$rest_rss") | $(mib "$rest_anon") | $(mib "$rest_file") | | |"
echo
echo "The provider host process (the mock provider, out of the broker's process): VmRSS $(mib "$loaded_child_rss") MiB (RssAnon $(mib "$loaded_child_anon")) loaded, $(mib "$rest_child_rss") MiB (RssAnon $(mib "$rest_child_anon")) after the requests."
echo
echo "RSS over the requests, read between wrk runs: min $(mib "$min_rss") MiB, max $(mib "$max_rss") MiB ($(wc -l <"$BENCH_DIR/series") samples)."
echo "- loaded RSS ≤ 16 MiB: $(awk -v k="$loaded_rss" 'BEGIN {print k <= 16384 ? "met" : "missed"}')"
echo "- growth from the first sample to the last: $(mib $((last_rss - first_rss))) MiB"
