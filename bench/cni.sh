#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# CNI benchmark (docs/performance.md): idbroker against Debian's portmap as the chained plugin after
# bridge + host-local, ADD+DEL of N pods each (alternating), and idbroker's ADD with 1 vs 1000 pods
# present. Everything runs in a throw-away "node" network namespace. Root only.
#   bench/cni.sh [BUILD_DIR]      (default: the first of build/release, build/debug, build that has it)
#   IDB_BENCH_PODS=200 IDB_BENCH_SCALE=1000 IDB_BENCH_PROBES=150 tune the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-${IDB_BUILD_DIR:-}}
if [ -z "$build" ]; then
  build=build/release
  for b in build/release build/debug build; do
    if [ -x "$b/cni/idbroker" ]; then build=$b; break; fi
  done
fi
if [ ! -x "$build/cni/idbroker" ]; then
  echo "no $build/cni/idbroker: build it first, e.g." >&2
  echo "  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release && cmake --build build/release -j2 --target idbroker-cni" >&2
  exit 1
fi
for p in bridge host-local portmap; do
  [ -x /usr/lib/cni/$p ] || { echo "missing /usr/lib/cni/$p (apt-get install containernetworking-plugins)" >&2; exit 1; }
done
echo "idbroker: $(realpath "$build")/cni/idbroker; peers: Debian containernetworking-plugins $(dpkg-query -W -f '${Version}' containernetworking-plugins 2>/dev/null || echo '?')"
echo "kernel $(uname -r), $(nproc) CPUs"
IDB_BUILD_DIR=$(realpath "$build") IDB_SOURCE_DIR=$PWD exec /usr/bin/python3 bench/cni_bench.py
