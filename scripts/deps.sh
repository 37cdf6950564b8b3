#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what idbroker needs to build, test and demo on Debian 12 (root). Idempotent.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
  libcurl4-openssl-dev libjson-c-dev libssl-dev libnl-3-dev libnl-route-3-dev libnl-nf-3-dev
  libnftables-dev libmicrohttpd-dev libyaml-dev libcmocka-dev
  python3 python3-jwt python3-cryptography
  containernetworking-plugins nftables iproute2 conntrack curl procps
  golang-go golang-github-appc-cni-dev dpkg-dev
  python3-azure azure-cli prometheus openssl
  python3-kubernetes python3-yaml jq
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's kubectl (kubernetes-client) for the fake API server's client test. Some images ship a
# `kubectl` package that owns /usr/bin/kubectl and conflicts with it, so it is unpacked, not installed.
if [ ! -x /opt/debian-kubectl/usr/bin/kubectl ] && ! dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1); then
    mkdir -p /opt/debian-kubectl
    dpkg -x "$tmp"/kubernetes-client_*.deb /opt/debian-kubectl
  else
    echo "deps: could not download Debian's kubernetes-client; the kubectl check will use any kubectl on PATH" >&2
  fi
  rm -rf "$tmp"
fi
