#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The memory floor of Kubernetes mode (docs/performance.md, "Kubernetes source: start-up at scale"):
# bench/k8s-floor.c links idbrokerd's libraries, runs no broker code and keeps 0, 1 or 5 TLS watches
# open against the fake API server (tests/fixtures/fake-apiserver.py); idbrokerd in kubernetes mode
# with an empty cluster is measured in the same rounds. Prints a Markdown table of medians and the
# size of the field text the scale test's objects carry.
#
#   bench/k8s-floor.sh        # ROUNDS=3
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
bench_init
bench_need_build
gcc -O2 -Wall -Wextra -Werror -o "$BENCH_DIR/k8s-floor" "$BENCH_SRC/bench/k8s-floor.c" \
    $(pkg-config --cflags --libs libcurl json-c libmicrohttpd yaml-0.1 libnl-3.0 libnl-route-3.0) -lpthread
echo "## bench/k8s-floor.sh — $(date -u +%F) — $(bench_machine)"
echo
IDB_BUILD_DIR=$BENCH_BUILD /usr/bin/python3 "$BENCH_SRC/bench/k8s_floor.py" "$BENCH_DIR/k8s-floor" "$ROUNDS"
