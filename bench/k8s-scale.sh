#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Kubernetes mode at scale (docs/performance.md, "Kubernetes source: start-up at scale"): ROUNDS runs
# of tests/integration/test_k8s_scale.py with the release build (10 000 AzureIdentities, 10 000
# bindings, 250 pods in the fake API server; IDB_SCALE_IDS / IDB_SCALE_PODS change the sizes). Prints
# each run's readiness after the last LIST page and memory once ready, then a Markdown table of
# medians.
#
#   bench/k8s-scale.sh        # ROUNDS=3
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
bench_need_build
echo "## bench/k8s-scale.sh — $(date -u +%F) — $(bench_machine)"
echo
for i in $(seq "$ROUNDS"); do
    IDB_BUILD_DIR=$BENCH_BUILD /usr/bin/python3 "$BENCH_SRC/tests/integration/test_k8s_scale.py" |
        grep '^# ' || bench_die "test_k8s_scale.py failed in round $i"
done | /usr/bin/python3 -c '
import re, statistics, sys
rows = {"ready after the last LIST page (s)": [], "VmRSS (MiB)": [], "RssAnon (MiB)": [],
        "RssFile (MiB)": [], "VmHWM (MiB)": []}
for line in sys.stdin:
    print(line.rstrip())
    m = re.search(r"([0-9.]+) s after the last LIST page", line)
    if m:
        rows["ready after the last LIST page (s)"].append(float(m.group(1)))
    m = re.search(r"VmRSS ([0-9.]+) MiB \(RssAnon ([0-9.]+), RssFile ([0-9.]+)\), VmHWM ([0-9.]+)", line)
    if m:
        for k, v in zip(("VmRSS (MiB)", "RssAnon (MiB)", "RssFile (MiB)", "VmHWM (MiB)"), m.groups()):
            rows[k].append(float(v))
print()
print("| measure | median | runs |")
print("|---|---|---|")
for k, v in rows.items():
    print("| %s | %s | %s |" % (k, statistics.median(v) if v else "-", " ".join(str(x) for x in v)))
'
