#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 2 (issue 7): the cold path. REQUESTS concurrent requests for one (identity, resource)
# that is not cached, through a provider that takes DELAY_MS per call.
#
#   bench/cold.sh             # REQUESTS=1000 PODS=20 DELAY_MS=500 ROUNDS=5
#
# idbrokerd (release build, files mode) with the test provider tests/plugins/good.so ({"delayMs"}),
# PODS fake pods on 127.0.0.10.. (the client binds each connection to its pod's address), all bound
# to one identity. The per-pod limits are raised for this benchmark, since REQUESTS / PODS requests
# arrive from each pod at the same moment: rateLimit 1000/s burst 1000 (default 20/s burst 40) and
# http.maxConnectionsPerPod 1000 (default 64); http.maxConnections 4096 (default 1024).
# The client (Python asyncio) first opens every connection, then sends all requests at once, and
# reads every reply. Each round asks for a new resource, so each round is cold.
# Peer in the same run: the same client against nginx serving the reply as a static file (the floor
# set by the client and loopback). Reported per round: provider calls (idbroker_provider_requests_total, must be 1), replies by
# status, time from the first request sent to the last reply received, and that minus DELAY_MS.
source "$(dirname "$0")/common.sh"

REQUESTS=${REQUESTS:-1000}
PODS=${PODS:-20}
DELAY_MS=${DELAY_MS:-500}
ROUNDS=${ROUNDS:-5}

bench_init
[ -f "$BENCH_BUILD/test-plugins/good.so" ] || bench_die "no $BENCH_BUILD/test-plugins/good.so"
BENCH_EXTRA_PLUGINS=$BENCH_BUILD/test-plugins/good.so
bench_broker_conf "{\"rateLimit\":{\"requestsPerSecond\":1000,\"burst\":1000},
    \"http\":{\"maxConnections\":4096,\"maxConnectionsPerPod\":1000},
    \"providers\":{\"good\":{\"delayMs\":$DELAY_MS}}}"
{
    cat <<'EOF2'
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {name: cold-id, namespace: default, annotations: {idbroker.io/provider: good}}
spec: {type: 0, clientID: 11111111-2222-3333-4444-555555555555}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {name: cold-binding, namespace: default}
spec: {azureIdentity: cold-id, selector: cold}
---
EOF2
    for ((k = 0; k < PODS; k++)); do
        printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: cold-%d, namespace: default, labels: {aadpodidbinding: cold}}\n---\n' "$k"
    done
} >"$BROKER_SOURCE/cold.yaml"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
bench_broker_exec
bench_broker_wait_ready
for ((k = 0; k < PODS; k++)); do
    bench_ctl register "default/cold-$k" --ip "127.0.0.$((10 + k))" >/dev/null
done

cat >"$BENCH_DIR/client.py" <<'PY'
import asyncio, collections, sys, time
port, n, pods, resource = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
req = ("GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=%s HTTP/1.1\r\n"
       "Host: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n" % resource).encode()

async def main():
    conns = await asyncio.gather(*[asyncio.open_connection(
        "127.0.0.1", port, local_addr=("127.0.0.%d" % (10 + i % pods), 0)) for i in range(n)])
    async def one(r, w):
        w.write(req)
        await w.drain()
        data = await r.read()
        w.close()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else -1, time.monotonic()
    t0 = time.monotonic()
    res = await asyncio.gather(*[one(r, w) for r, w in conns])
    codes = collections.Counter(c for c, _ in res)
    last = max(t for _, t in res)
    print("%.1f %s" % ((last - t0) * 1000, ",".join("%s:%d" % kv for kv in sorted(codes.items()))))

asyncio.run(main())
PY

: >"$BENCH_DIR/rounds"
for i in $(seq "$ROUNDS"); do
    before=$(bench_metric idbroker_provider_requests_total 'provider="good"')
    out=$(python3 "$BENCH_DIR/client.py" "$BROKER_PORT" "$REQUESTS" "$PODS" "https://cold-$i-$RANDOM.example/")
    after=$(bench_metric idbroker_provider_requests_total 'provider="good"')
    calls=$(awk -v a="$after" -v b="$before" 'BEGIN {print a - b}')
    echo "$calls $out" | tee -a "$BENCH_DIR/rounds" >&2
done

# Peer: the same client and the same concurrent requests against nginx serving the reply's body as a
# static file: what the client and the loopback transport cost without any broker or provider.
bench_apt nginx-light
NG=$BENCH_DIR/nginx
mkdir -p "$NG/www"
curl -sf --interface 127.0.0.10 -H 'Metadata: true' -H 'Host: 169.254.169.254' -o "$NG/www/token" \
    "http://127.0.0.1:$BROKER_PORT$IMDS_PATH?api-version=2018-02-01&resource=https://cold-peer.example/"
bench_nginx_start "$NG"
: >"$BENCH_DIR/nginx.rounds"
for i in $(seq "$ROUNDS"); do
    python3 "$BENCH_DIR/client.py" "$NGINX_PORT" "$REQUESTS" "$PODS" "https://cold-$i.example/" |
        tee -a "$BENCH_DIR/nginx.rounds" >&2
done

echo
echo "## bench/cold.sh — $(date -u +%F) — $(bench_machine)"
echo "idbrokerd $(git -C "$BENCH_SRC" describe --always --dirty 2>/dev/null || echo '?'), $REQUESTS concurrent requests from $PODS pods for one cold (identity, resource), provider delay $DELAY_MS ms, $ROUNDS rounds"
echo
echo "| round | provider calls | replies (status:count) | time to last reply ms | minus provider delay ms |"
echo "|---|---|---|---|---|"
awk -v d="$DELAY_MS" '{printf "| %d | %s | %s | %s | %.1f |\n", NR, $1, $3, $2, $2 - d}' "$BENCH_DIR/rounds"
med=$(awk '{print $2}' "$BENCH_DIR/rounds" | bench_median)
echo
echo "- median time to last reply: $med ms ($(awk -v m="$med" -v d="$DELAY_MS" 'BEGIN {printf "%.1f", m - d}') ms over the provider's delay)"
echo "- provider calls per round: $(awk '{print $1}' "$BENCH_DIR/rounds" | sort -u | tr '\n' ' ')(target 1: $(awk '$1 != 1 {bad = 1} END {print bad ? "missed" : "met"}' "$BENCH_DIR/rounds"))"
nmed=$(awk '{print $1}' "$BENCH_DIR/nginx.rounds" | bench_median)
echo "- peer, same client against nginx's static file: median $nmed ms to the last reply (replies: $(awk '{print $2}' "$BENCH_DIR/nginx.rounds" | sort -u | tr '\n' ' '))"
echo "- every reply 200: $(awk -v n="$REQUESTS" '$3 != "200:" n {bad = 1} END {print bad ? "no" : "yes"}' "$BENCH_DIR/rounds")"
