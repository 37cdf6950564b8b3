#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds cnitool (a real CNI runtime: libcni's reference tool) from Debian's source package, offline
# after the download, for tests/e2e/test_cni_cnitool.py. Root; Debian 12. Usage: build-cnitool.sh DEST
# Installs golang-go and golang-github-appc-cni-dev; fetches the source with a private deb-src list
# (the URI of the machine's Debian entry), leaving /etc/apt untouched.
set -euo pipefail
dest=${1:?usage: build-cnitool.sh DEST}
[ -x "$dest" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
for p in golang-go golang-github-appc-cni-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends golang-go golang-github-appc-cni-dev >/dev/null; break; }
done
work=$(mktemp -d /tmp/idb-cnitool-XXXXXX)
trap 'rm -rf "$work"' EXIT
uri=$(grep -h -m1 -E '^URIs: .*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true)
[ -n "$uri" ] || uri=http://deb.debian.org/debian
printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bookworm main\n' "$uri" >"$work/sources.list"
mkdir -p "$work/lists/partial" "$work/src"
apt_opts=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
          -o Dir::State::Lists="$work/lists" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only -qq golang-github-appc-cni >/dev/null)
tar -C "$work/src" -xf "$work"/src/golang-github-appc-cni_*.orig.tar.*
srcdir=$(find "$work/src" -maxdepth 2 -name cnitool -type d | head -1)
mkdir -p "$(dirname "$dest")"
(cd "$srcdir/.." && GO111MODULE=off GOPATH=/usr/share/gocode CGO_ENABLED=0 GOCACHE="$work/gocache" \
   go build -o "$dest" ./cnitool/cnitool.go)
echo "built $dest"
