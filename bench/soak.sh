#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Soak test (issue 8 item 5; figures in docs/security.md): N minutes of mixed traffic against the real
# idbrokerd with the real CNI chain in a throw-away node network namespace — 50 pods asking for tokens,
# a pod deleted and one created every second, a binding changed every 5 s, SIGHUP every 10 s — and a
# report: unexpected errors (goal 0), foreign identities (goal 0), broker RSS growth (goal < 1 MiB)
# and open descriptors (goal: flat). Root only. Details: bench/soak_driver.py.
#
#   bench/soak.sh [MINUTES] [BUILD_DIR]     (default 10 minutes; the first of build/release,
#                                           build/debug that has idbrokerd)
#   IDB_SOAK_SECONDS=60 overrides MINUTES (CI, tests); IDB_SOAK_PODS, IDB_SOAK_INTERVAL tune the load.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
build=${2:-${IDB_BUILD_DIR:-}}
if [ -z "$build" ]; then
  build=build/release
  for b in build/release build/debug; do
    if [ -x "$b/idbrokerd" ] && [ -x "$b/cni/idbroker" ]; then build=$b; break; fi
  done
fi
for f in idbrokerd cni/idbroker providers/mock.so; do
  [ -e "$build/$f" ] || { echo "no $build/$f: build first (cmake --preset release && cmake --build --preset release -j2)" >&2; exit 1; }
done
for p in bridge host-local; do
  [ -x /usr/lib/cni/$p ] || { echo "missing /usr/lib/cni/$p (apt-get install containernetworking-plugins)" >&2; exit 1; }
done
export IDB_SOAK_SECONDS=${IDB_SOAK_SECONDS:-$((minutes * 60))}
echo "soak: $(realpath "$build"), ${IDB_SOAK_SECONDS} s, ${IDB_SOAK_PODS:-50} pods; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
IDB_BUILD_DIR=$(realpath "$build") IDB_SOURCE_DIR=$PWD exec /usr/bin/python3 bench/soak_driver.py
