#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs the idbroker CNI plugin on the node (docs/kubernetes.md, "Install step"):
#  1. copies the plugin binary into the host CNI bin directory atomically (temp file + rename);
#  2. chains {"type": "idbroker", ...} after the primary plugin in the network configuration the
#     container runtime uses: the first *.conf, *.conflist or *.json of the host CNI config
#     directory by name (libcni's ConfFiles, sorted). A conflist gets idbroker appended to its
#     plugins; a single-plugin .conf/.json is converted to <same name>.conflist holding
#     [that plugin, idbroker], and the original is removed so the runtime uses the list. Both are
#     written to a hidden temporary file and renamed;
#  3. installs idbroker's nftables tables on the node (`idbroker --guard` given that file: it takes
#     the chained entry), so the node is fail-closed before its first ADD: a pod the runtime sets up without
#     idbroker (created before this step, or while the primary has dropped idbroker from its file)
#     cannot reach the metadata address. Tables already current are left alone. Needs CAP_NET_ADMIN
#     in the node's network namespace; IDBROKER_CNI_GUARD=0 skips it. When nftables cannot be
#     programmed the one-shot run ends with status 1 (the init container restarts, visibly); in
#     watch mode it is logged;
#  4. with IDBROKER_CNI_WATCH=1, keeps checking and does steps 1-3 again: step 2 whenever the
#     primary CNI rewrites its file, step 3 whenever the tables went missing (a flushed ruleset, a
#     reboot). It never removes the plugin: an upgrade or a restart leaves pods protected.
# A file that is not JSON, or not a network configuration, is logged and left alone.
# Needs: sh, cat, cp, mv, rm, chmod, cmp, date, expr, find, jq, and the plugin's libraries.
set -eu

SRC=${IDBROKER_CNI_BINARY:-/opt/idbroker/cni/idbroker}
BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
PLUGIN=${IDBROKER_CNI_PLUGIN:-'{"type":"idbroker"}'}
INTERVAL=${IDBROKER_CNI_INTERVAL:-5}

# Pathname expansion sorted by byte value, as libcni's sort.Strings.
LC_ALL=C
export LC_ALL

log() { printf '%s install-cni: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# A condition that stays (no configuration yet, a file left alone): logged once, not every round.
last_note=
note() {
    [ "$*" = "$last_note" ] || log "$*"
    last_note=$*
}

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

# Sets $sel to the network configuration the runtime loads: the first name of the directory, in
# byte order, whose extension is .conf, .conflist or .json; directories are skipped (libcni's
# ConfFiles, which does not skip hidden files: nor does this, nor the broker's conflist watch,
# broker/conflist-watch.c). This script's temporaries have no such extension. Returns 1 if there
# is none.
pick() {
    sel=
    for f in "$NET_DIR"/.[!.]* "$NET_DIR"/..?* "$NET_DIR"/*; do
        [ -e "$f" ] || [ -L "$f" ] || continue # an unmatched glob
        case ${f##*/} in
        *.conf | *.conflist | *.json) ;;
        *) continue ;;
        esac
        [ -d "$f" ] && continue
        # The three globs are each sorted, not together: keep the least name (byte order, LC_ALL=C).
        if [ -z "$sel" ] || expr "x${f##*/}" \< "x${sel##*/}" >/dev/null; then
            sel=$f
        fi
    done
    [ -n "$sel" ]
}

# Prints what the JSON text on stdin is: "list" (an object with a "plugins" array), "single" (an
# object with a non-empty string "type" and no "plugins"), or why it is neither. Prints nothing if
# it is not JSON.
kind() {
    jq -rs 'if length != 1 then "not one JSON value"
        else .[0] | if type != "object" then "not a JSON object"
        elif has("plugins") then
            (if (.plugins | type) == "array" then "list" else "\"plugins\" is not an array" end)
        elif (.type | type) == "string" and .type != "" then "single"
        else "neither \"plugins\" nor \"type\"" end end' 2>/dev/null || true
}

same() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }

# Whether the JSON on stdin (or in file $1) is a list with a plugin of type idbroker.
has_idbroker() {
    jq -e 'any(.plugins[]?; type == "object" and .type == "idbroker")' "$@" >/dev/null 2>&1
}

# Writes the jq filter $1 applied to $src ($p: the plugin chained) to $tmp, mode 0644, unless $f
# no longer holds $src (the primary rewrote it: it is read again). $tmp is a hidden name with no
# .conf/.conflist/.json suffix: runtimes never read it. Returns 0, 1 (could not write) or 2 (changed
# meanwhile: try again).
stage() {
    tmp="$NET_DIR/.idbroker-conflist.tmp.$$"
    if ! printf '%s\n' "$src" | jq --argjson p "$PLUGIN" "$1" >"$tmp"; then
        rm -f "$tmp"
        log "could not write $tmp"
        return 1
    fi
    chmod 0644 "$tmp"
    if ! same "$f" "$src"; then
        rm -f "$tmp"
        return 2
    fi
}

# Renames $tmp to $1 (atomic). Returns 0 or 1.
publish() {
    mv -f "$tmp" "$1" && return 0
    rm -f "$tmp"
    log "could not rename $tmp to $1"
    return 1
}

# Appends idbroker to the plugins of conflist $1 whose text is $2. Returns 0 (done or nothing to
# do), 1 (left alone), 2 (the file changed meanwhile: try again).
insert() {
    f=$1 src=$2
    if printf '%s\n' "$src" | has_idbroker; then
        return 0
    fi
    if printf '%s\n' "$src" | jq -e '.plugins | length == 0' >/dev/null 2>&1; then
        note "'$f' has an empty plugins array (idbroker must follow a primary plugin), not changed"
        return 1
    fi
    stage '.plugins += [$p]' || return
    publish "$f" || return
    last_note=
    log "inserted idbroker into $f"
}

# Converts the single-plugin configuration $1 (a .conf or .json) whose text is $2 into
# <same name>.conflist = {cniVersion, name, plugins: [the plugin, idbroker]}, and removes $1.
# The CNI SPEC's conflist has cniVersion and name at the top; its plugin objects hold "type" and
# the plugin's own keys (the runtime passes the list's name and cniVersion to each plugin), so
# they are moved up and everything else stays in the plugin. Returns as insert().
convert() {
    f=$1 src=$2
    out=${f%.*}.conflist
    if [ "$(printf '%s\n' "$src" | jq -r .type)" = idbroker ]; then
        note "'$f' configures idbroker alone (it must follow a primary plugin), not changed"
        return 1
    fi
    if ! printf '%s\n' "$src" | jq -e '(.name // "" | type) == "string" and
            (.cniVersion // "" | type) == "string"' >/dev/null 2>&1; then
        note "'$f': \"name\" or \"cniVersion\" is not a string, not changed"
        return 1
    fi
    if [ -d "$out" ]; then
        note "'$out' is a directory: '$f' cannot be converted, not changed"
        return 1
    fi
    stage '(if has("cniVersion") then {cniVersion} else {} end)
        + {name: (.name // ""), plugins: [del(.cniVersion, .name), $p]}' || return
    [ -e "$out" ] && log "replacing $out with the conversion of $f"
    publish "$out" || return
    # The runtime would keep using $f: 10-x.conf sorts before 10-x.conflist (and a .json stays
    # a second network configuration). The list is in place first, so there is always one.
    if same "$f" "$src"; then
        rm -f "$f"
        last_note=
        log "converted single-plugin $f into $out with idbroker chained after '$(printf '%s\n' \
            "$src" | jq -r .type)'; removed $f"
        return 0
    fi
    log "converted $f into $out, but $f was rewritten meanwhile: converting it again"
    return 2
}

# One round of step 2. Returns as insert().
chain() {
    pick || { note "no network configuration (*.conf, *.conflist, *.json) in $NET_DIR yet"; return 1; }
    f=$sel
    # A single-plugin x.json beside x.conflist, not older than it: the primary rewrote the .json
    # converted (and removed) earlier, which the .conflist made from it, sorting first, would hide
    # for ever. Converted again.
    case $f in
    *.conflist)
        j=${f%.conflist}.json
        if [ -f "$j" ] && [ -z "$(find "$f" -prune -newer "$j" 2>/dev/null)" ] &&
            src=$(cat "$j" 2>/dev/null) &&
            [ "$(printf '%s\n' "$src" | kind)" = single ]; then
            f=$j
        fi
        ;;
    esac
    # Not a FIFO or device (reading one could block the watch for ever), as the broker's watch.
    if ! [ -f "$f" ]; then
        note "'$f' is not a regular file, not changed"
        return 1
    fi
    if ! src=$(cat "$f" 2>/dev/null); then
        note "cannot read '$f', not changed"
        return 1
    fi
    k=$(printf '%s\n' "$src" | kind)
    case $k in
    list) insert "$f" "$src" ;;
    single)
        case $f in
        *.conflist)
            note "'$f' is a .conflist without a plugins array, not changed"
            return 1
            ;;
        esac
        convert "$f" "$src"
        ;;
    '')
        note "'$f' is not JSON, not changed"
        return 1
        ;;
    *)
        note "'$f' is not a network configuration ($k), not changed"
        return 1
        ;;
    esac
}

# Step 3: the file the runtime uses, piped to `idbroker --guard`, which takes its idbroker entry with
# the list's name and cniVersion (what a runtime gives the plugin). Returns 0 (installed, current,
# skipped, or no file chaining idbroker yet: the cni-watch container does it later) or 1 (the
# tables could not be installed).
guard() {
    [ "${IDBROKER_CNI_GUARD:-1}" = 1 ] || return 0
    pick || return 0
    [ -f "$sel" ] || return 0 # a FIFO or device: chain() said so; reading it could block
    if ! has_idbroker "$sel"; then
        note "no idbroker entry in '$sel' yet: idbroker's nftables tables not installed"
        return 0
    fi
    if ! out=$("$SRC" --guard <"$sel" 2>&1); then
        note "could not install idbroker's nftables tables: $out"
        return 1
    fi
    [ -z "$out" ] || log "$out"
}

# chain(), again at once while the primary is rewriting the file under it.
chain_retry() {
    n=0
    while :; do
        rc=0
        chain || rc=$?
        [ "$rc" = 2 ] && [ "$n" -lt 5 ] || return "$rc"
        n=$((n + 1))
    done
}

mkdir -p "$BIN_DIR" "$NET_DIR"
# Temporaries of an earlier run that was killed between write and rename.
rm -f "$NET_DIR"/.idbroker-conflist.tmp.* "$BIN_DIR"/.idbroker.tmp.*
install_binary
chain_retry || true
if [ "${IDBROKER_CNI_WATCH:-0}" = 1 ]; then
    while :; do
        guard || true
        sleep "$INTERVAL"
        install_binary || true
        chain_retry || true
    done
fi
guard
