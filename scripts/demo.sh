#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on a fresh Debian 12 machine (root): installs dependencies, builds, and runs
# scripts/demo.py — a pod in a network namespace getting its token through the CNI redirect.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it creates network namespaces)" >&2; exit 1; }
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" >/dev/null
IDB_BUILD_DIR="$PWD/build/release" IDB_SOURCE_DIR="$PWD" /usr/bin/python3 scripts/demo.py
