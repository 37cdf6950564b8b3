#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 5 (issue 7): time from exec of idbrokerd to the first /readyz 200.
#
#   bench/startup.sh          # PODS=250 IDENTITIES=10000 ROUNDS=5
#
# Files mode, release build, mock provider with its signing key in a file (made on a first, untimed
# start, so RSA key generation is not measured). Loaded: IDENTITIES AzureIdentities + as many
# AzureIdentityBindings + PODS Pod manifests (bench_gen_manifests), and PODS registration files in
# the state directory (made through the control socket on the untimed start). Baseline in the same
# run, alternating: the same broker with no manifests and no registrations.
# A Python poller execs idbrokerd and asks /readyz every 2 ms; the time is exec -> first 200.
source "$(dirname "$0")/common.sh"

PODS=${PODS:-250}
IDENTITIES=${IDENTITIES:-10000}
ROUNDS=${ROUNDS:-5}

bench_init
BROKER_LOG=/dev/null
bench_broker_conf '{}'
LOADED_SOURCE=$BENCH_DIR/loaded
EMPTY_SOURCE=$BENCH_DIR/empty
mkdir -p "$LOADED_SOURCE" "$EMPTY_SOURCE"
bench_gen_manifests "$LOADED_SOURCE" "$IDENTITIES" "$PODS"
LOADED_CONF=$BROKER_CONF
EMPTY_CONF=$BENCH_DIR/broker/empty.json
python3 - "$BROKER_CONF" "$LOADED_SOURCE" "$EMPTY_SOURCE" "$EMPTY_CONF" "$BENCH_DIR/broker/empty-state" <<'PY'
import json, sys
conf, loaded, empty, empty_conf, empty_state = sys.argv[1:]
c = json.load(open(conf))
c["source"]["dir"] = loaded
json.dump(c, open(conf, "w"), indent=2)
c["source"]["dir"] = empty
c["stateDir"] = empty_state
json.dump(c, open(empty_conf, "w"), indent=2)
PY

bench_log "untimed first start: signing key, $PODS registrations"
bench_broker_exec
bench_broker_wait_ready 300
bench_register_pods "$PODS"
n_regs=$(ls "$BENCH_DIR/broker/state/pods" | wc -l)
[ "$n_regs" -eq "$PODS" ] || bench_die "expected $PODS registration files, found $n_regs"
bench_broker_stop

cat >"$BENCH_DIR/time.py" <<'PY'
import http.client, os, signal, subprocess, sys, time
idbrokerd, conf, hport = sys.argv[1], sys.argv[2], int(sys.argv[3])
devnull = open(os.devnull, "wb")
t0 = time.monotonic()
p = subprocess.Popen([idbrokerd, "--config", conf], stdout=devnull, stderr=devnull, stdin=subprocess.DEVNULL)
while True:
    if p.poll() is not None:
        sys.exit("idbrokerd exited with %d" % p.returncode)
    try:
        c = http.client.HTTPConnection("127.0.0.1", hport, timeout=1)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    time.sleep(0.002)
t = (time.monotonic() - t0) * 1000
p.send_signal(signal.SIGTERM)
p.wait(timeout=30)
print("%.1f" % t)
PY

: >"$BENCH_DIR/loaded.ms"
: >"$BENCH_DIR/empty.ms"
for i in $(seq "$ROUNDS"); do
    python3 "$BENCH_DIR/time.py" "$IDBROKERD" "$EMPTY_CONF" "$BROKER_HEALTH_PORT" | tee -a "$BENCH_DIR/empty.ms" >&2
    python3 "$BENCH_DIR/time.py" "$IDBROKERD" "$LOADED_CONF" "$BROKER_HEALTH_PORT" | tee -a "$BENCH_DIR/loaded.ms" >&2
done

echo
echo "## bench/startup.sh — $(date -u +%F) — $(bench_machine)"
echo "idbrokerd $(git -C "$BENCH_SRC" describe --always --dirty 2>/dev/null || echo '?'), files mode, exec -> /readyz 200, $ROUNDS rounds each, alternating; medians"
echo
echo "| state | median ms | all rounds ms |"
echo "|---|---|---|"
echo "| empty: no manifests, no registrations | $(bench_median <"$BENCH_DIR/empty.ms") | $(tr '\n' ' ' <"$BENCH_DIR/empty.ms")|"
echo "| $IDENTITIES identities + $IDENTITIES bindings + $PODS pods, $PODS registrations | $(bench_median <"$BENCH_DIR/loaded.ms") | $(tr '\n' ' ' <"$BENCH_DIR/loaded.ms")|"
