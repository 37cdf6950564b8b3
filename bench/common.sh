# SPDX-License-Identifier: Apache-2.0
# Shared helpers of bench/token.sh, cold.sh, memory.sh and startup.sh (sourced, not run).
#
# Every benchmark starts its own idbrokerd from the release build in files mode with its own temporary
# directory (configuration, manifests, state, control socket, plugins), on loopback only, and removes
# everything it started or created on exit.

set -euo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_BUILD=${IDB_BUILD_DIR:-$BENCH_SRC/build/release}
IDBROKERD=$BENCH_BUILD/idbrokerd
IDBROKERCTL=$BENCH_BUILD/idbrokerctl

bench_log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

bench_need_build() {
    [ -x "$IDBROKERD" ] && [ -x "$IDBROKERCTL" ] && [ -f "$BENCH_BUILD/providers/mock.so" ] ||
        bench_die "no release build in $BENCH_BUILD: run scripts/deps.sh, then cmake --preset release && cmake --build --preset release -j2"
}

# Installs the Debian packages given that are missing (root). A package that ships a service
# (nginx-light) must not leave it running: Docker-style images have a policy-rc.d that forbids it;
# elsewhere we stop what the package started.
bench_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    bench_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    case " ${missing[*]} " in
    *" nginx-light "*) if command -v systemctl >/dev/null && systemctl is-active -q nginx 2>/dev/null; then
        systemctl stop nginx; systemctl disable -q nginx; fi ;;
    esac
}

bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The median of numbers, one per line on stdin.
bench_median() {
    sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

bench_machine() {
    printf '%s, %s cores (%s), %s MiB RAM, kernel %s' "$(. /etc/os-release && echo "$PRETTY_NAME")" \
        "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
        "$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))" "$(uname -r)"
}

BENCH_DIR=""
BENCH_PIDS=()

bench_cleanup() {
    local p
    for p in "${BENCH_PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    [ -n "$BENCH_DIR" ] && rm -rf "$BENCH_DIR"
}

bench_init() {
    bench_need_build
    BENCH_DIR=$(mktemp -d /tmp/idb-bench.XXXXXX)
    chmod 755 "$BENCH_DIR"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Writes $BENCH_DIR/broker/idbrokerd.json. $1: JSON object merged over the defaults (top-level keys;
# nested objects are merged one level deep), e.g. '{"rateLimit":{"requestsPerSecond":0}}'.
# Sets BROKER_PORT, BROKER_HEALTH_PORT, BROKER_SOCK, BROKER_CONF, BROKER_SOURCE.
bench_broker_conf() {
    local extra=${1:-{\}} b=$BENCH_DIR/broker
    mkdir -p "$b/identities" "$b/providers" "$b/run"
    chmod 755 "$b" "$b/providers"
    local so
    for so in "$BENCH_BUILD"/providers/mock.so ${BENCH_EXTRA_PLUGINS:-}; do
        install -m 0755 "$so" "$b/providers/"
    done
    BROKER_PORT=$(bench_free_port)
    BROKER_HEALTH_PORT=$(bench_free_port)
    BROKER_SOCK=$b/run/idbrokerd.sock
    BROKER_CONF=$b/idbrokerd.json
    BROKER_SOURCE=$b/identities
    python3 - "$b" "$BROKER_PORT" "$BROKER_HEALTH_PORT" "$extra" >"$BROKER_CONF" <<'EOF'
import json, sys
b, port, hport, extra = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
cfg = {
    "nodeName": "bench-node",
    "listen": "127.0.0.1:%s" % port,
    "healthListen": "127.0.0.1:%s" % hport,
    "controlSocket": b + "/run/idbrokerd.sock",
    "stateDir": b + "/state",
    "pluginDir": b + "/providers",
    "source": {"kind": "files", "dir": b + "/identities", "pollIntervalMs": 1000},
    "providers": {"mock": {"lifetimeSeconds": 3600, "signingKeyFile": b + "/mock-key.pem"}},
    "typeProviders": {"0": "mock", "1": "mock", "2": "mock"},
    "log": {"level": "info", "format": "json", "audit": True},
}
for k, v in extra.items():
    if isinstance(v, dict) and isinstance(cfg.get(k), dict):
        cfg[k].update(v)
    else:
        cfg[k] = v
json.dump(cfg, sys.stdout, indent=2)
EOF
}

# Starts idbrokerd (stderr to $BROKER_LOG, default $BENCH_DIR/broker/idbrokerd.log); sets BROKER_PID.
# Does not wait.
bench_broker_exec() {
    "$IDBROKERD" --config "$BROKER_CONF" >>"${BROKER_LOG:-$BENCH_DIR/broker/idbrokerd.log}" 2>&1 </dev/null &
    BROKER_PID=$!
    BENCH_PIDS+=("$BROKER_PID")
}

# Waits until /readyz answers 200 (at most $1 seconds, default 60).
bench_broker_wait_ready() {
    local deadline=$((SECONDS + ${1:-60}))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$BROKER_PID" 2>/dev/null || { tail -20 "${BROKER_LOG:-$BENCH_DIR/broker/idbrokerd.log}" >&2; bench_die "idbrokerd exited"; }
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$BROKER_HEALTH_PORT/readyz")" = 200 ] &&
            [ -S "$BROKER_SOCK" ]; then
            return 0
        fi
        sleep 0.05
    done
    bench_die "idbrokerd not ready after ${1:-60} s"
}

bench_broker_stop() {
    if [ -n "${BROKER_PID:-}" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}

bench_ctl() { "$IDBROKERCTL" --socket "$BROKER_SOCK" "$@"; }

# A metric's value (summed over label sets matching the optional label filter regex $2).
bench_metric() {
    curl -s "http://127.0.0.1:$BROKER_HEALTH_PORT/metrics" |
        awk -v n="$1" -v f="${2:-}" '$1 ~ "^"n"({|$)" && (f == "" || $1 ~ f) {s += $NF} END {print s+0}'
}

# RSS of a pid in KiB.
bench_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

IMDS_PATH=/metadata/identity/oauth2/token

# Writes manifests for the files source into $1: $2 identities and as many bindings (binding i
# selects label value "sel-i" and grants identity i), spread over 50 namespaces, and $3 pods. Files stay
# well under the per-file cap (MANIFEST_MAX_FILE_BYTES). Pod j is "pod-%05d" in ns-(j % 50), bound to
# identity j.
bench_gen_manifests() {
    python3 - "$1" "$2" "$3" <<'PY'
import os, sys
d, nid, npod = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
NS = 50
def ns(i): return "ns-%02d" % (i % NS)
chunk = 2500
for start in range(0, nid, chunk):
    with open(os.path.join(d, "identities-%05d.yaml" % start), "w") as f:
        for i in range(start, min(nid, start + chunk)):
            f.write("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentity\nmetadata:\n"
                    "  name: id-%05d\n  namespace: %s\nspec:\n  type: 0\n"
                    "  clientID: 00000000-0000-0000-0000-%012d\n"
                    "  resourceID: /subscriptions/0000/resourceGroups/rg/providers/"
                    "Microsoft.ManagedIdentity/userAssignedIdentities/id-%05d\n---\n" % (i, ns(i), i, i))
    with open(os.path.join(d, "bindings-%05d.yaml" % start), "w") as f:
        for i in range(start, min(nid, start + chunk)):
            f.write("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata:\n"
                    "  name: binding-%05d\n  namespace: %s\nspec:\n  azureIdentity: id-%05d\n"
                    "  selector: sel-%05d\n---\n" % (i, ns(i), i, i))
with open(os.path.join(d, "pods.yaml"), "w") as f:
    for j in range(npod):
        # identity j lives in ns(j) too, so pod j is bound to identity j (j < number of identities)
        f.write("apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-%05d\n  namespace: %s\n"
                "  labels:\n    aadpodidbinding: sel-%05d\n---\n" % (j, ns(j), j % max(nid, 1)))
PY
}

# Registers pods 0..$1-1 of bench_gen_manifests through the control socket: pod 0 on 127.0.0.1 (the
# source address of wrk's connections), pod j on 127.0.1.j (j < 255).
bench_register_pods() {
    local j ip
    for ((j = 0; j < $1; j++)); do
        ip=$([ "$j" -eq 0 ] && echo 127.0.0.1 || echo "127.0.1.$j")
        bench_ctl register "ns-$(printf %02d $((j % 50)))/pod-$(printf %05d "$j")" --ip "$ip" \
            --container-id "bench$(printf %05d "$j")" >/dev/null
    done
}

# Starts nginx (nginx-light) with its own configuration in $1, serving $1/www/token for every path
# with the broker's Content-Type and Cache-Control, one worker per core, keep-alive without a request
# limit, access log to $1/access.log. Sets NGINX_PORT and NGINX_PID.
bench_nginx_start() {
    local NG=$1
    mkdir -p "$NG/tmp"
    NGINX_PORT=$(bench_free_port)
    cat >"$NG/nginx.conf" <<EOF
worker_processes $(nproc);
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log;
events { worker_connections 4096; }
http {
    access_log $NG/access.log;
    client_body_temp_path $NG/tmp; proxy_temp_path $NG/tmp; fastcgi_temp_path $NG/tmp;
    uwsgi_temp_path $NG/tmp; scgi_temp_path $NG/tmp;
    keepalive_requests 100000000;
    server_tokens off;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            root $NG/www;
            try_files /token =404;
            default_type "application/json; charset=utf-8";
            etag off;
            add_header Cache-Control no-store;
        }
    }
}
EOF
    nginx -c "$NG/nginx.conf" -p "$NG" &
    NGINX_PID=$!
    BENCH_PIDS+=("$NGINX_PID")
    local i
    for i in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.05; done
    cmp -s <(curl -s "http://127.0.0.1:$NGINX_PORT/") "$NG/www/token" || bench_die "nginx does not serve the body"
}
