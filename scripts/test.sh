#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets up, builds and runs every test: a debug build (gcc, -Werror) and an ASan+UBSan build, each under
# ctest with all labels (unit, integration, privileged, fuzz). Needs root for the namespace tests.
# Usage: scripts/test.sh [ctest args…]   e.g. scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)
status=0
for preset in debug asan; do
  echo "=== $preset build ==="
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$jobs"
  echo "=== $preset tests ==="
  ctest --preset "$preset" "$@" || status=1
done
if [ "$status" -ne 0 ]; then
  echo "some tests failed" >&2
fi
exit "$status"
