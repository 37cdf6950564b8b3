#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs the idbroker CNI plugin on the node (docs/kubernetes.md, "Install step"):
#  1. copies the plugin binary into the host CNI bin directory atomically (temp file + rename);
#  2. inserts {"type": "idbroker", ...} at the end of the primary conflist's plugins (the first
#     *.conflist in the host CNI config directory by name, as the runtime picks it), atomically;
#  3. with IDBROKER_CNI_WATCH=1, keeps checking and re-inserts it whenever the primary CNI rewrites
#     its file. It never removes the plugin: an upgrade or a restart leaves pods protected.
# Needs: sh, cp, mv, chmod, jq.
set -eu

SRC=${IDBROKER_CNI_BINARY:-/opt/idbroker/cni/idbroker}
BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
PLUGIN=${IDBROKER_CNI_PLUGIN:-'{"type":"idbroker"}'}
INTERVAL=${IDBROKER_CNI_INTERVAL:-5}

log() { printf '%s install-cni: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

install_binary() {
    [ -f "$SRC" ] || { log "plugin binary '$SRC' not found"; return 1; }
    if [ -f "$BIN_DIR/idbroker" ] && cmp -s "$SRC" "$BIN_DIR/idbroker"; then
        return 0
    fi
    tmp="$BIN_DIR/.idbroker.tmp.$$"
    cp "$SRC" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$BIN_DIR/idbroker"
    log "installed $BIN_DIR/idbroker"
}

# The conflist the runtime uses: the first *.conflist by name (libcni sorts the directory).
primary() {
    for f in "$NET_DIR"/*.conflist; do
        [ -f "$f" ] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

insert() {
    f=$(primary) || { log "no *.conflist in $NET_DIR yet"; return 1; }
    if jq -e '.plugins | type == "array" and any(.[]; .type == "idbroker")' "$f" >/dev/null 2>&1; then
        return 0
    fi
    if ! jq -e '.plugins | type == "array"' "$f" >/dev/null 2>&1; then
        log "'$f' is not a conflist with a plugins array, not changed"
        return 1
    fi
    # A hidden temporary name with no .conf/.conflist/.json suffix: runtimes never read it.
    tmp="$NET_DIR/.idbroker-conflist.tmp.$$"
    jq --argjson p "$PLUGIN" '.plugins += [$p]' "$f" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$f"
    log "inserted idbroker into $f"
}

mkdir -p "$BIN_DIR" "$NET_DIR"
install_binary
insert || true
if [ "${IDBROKER_CNI_WATCH:-0}" = 1 ]; then
    while :; do
        sleep "$INTERVAL"
        install_binary || true
        insert || true
    done
fi
