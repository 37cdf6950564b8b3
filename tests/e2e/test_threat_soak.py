# SPDX-License-Identifier: Apache-2.0
"""A short run of bench/soak.sh (issue 8 item 5; THREATS T2, T15, T16 under churn): the real broker and
the real CNI chain, pods asking for tokens while others are created and deleted every second, bindings
changing and SIGHUP reloads. Every reply must be 200 with the pod's own identity, no descriptor may
leak. The full 10-minute run and its figures are in docs/security.md; RSS growth is only reported
here (a short run is dominated by the cache filling up).
IDB_SOAK_SECONDS (default 30 here) and IDB_SOAK_PODS (default 10 here) tune it."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import BUILD, IDBROKERD, SOURCE, check, equal, run_main  # noqa: E402


def main():
    if not os.path.exists(IDBROKERD):
        print("SKIP: idbrokerd is not built")
        sys.exit(77)
    fd, out = tempfile.mkstemp(prefix="idb-soak-", suffix=".json")
    os.close(fd)
    try:
        env = dict(os.environ, IDB_SOAK_SECONDS=os.environ.get("IDB_SOAK_SECONDS", "30"),
                   IDB_SOAK_PODS=os.environ.get("IDB_SOAK_PODS", "10"), IDB_SOAK_WARMUP="8",
                   IDB_SOAK_JSON=out)
        p = subprocess.run(["/bin/bash", os.path.join(SOURCE, "bench", "soak.sh"), "1", BUILD], env=env,
                           capture_output=True, text=True, timeout=400)
        print("\n".join(l for l in p.stdout.splitlines() if l.startswith("soak:")))
        if p.returncode not in (0, 1):
            print(p.stdout[-3000:], p.stderr[-3000:])
        check(os.path.getsize(out) > 0, "the soak wrote its summary")
        s = json.load(open(out))
        check(s["requests_ok"] > 0 and s["churned_pods"] > 0 and s["binding_changes"] > 0 and s["sighup_reloads"] > 0,
              "mixed traffic ran: %d tokens, %d pods churned, %d binding changes, %d reloads"
              % (s["requests_ok"], s["churned_pods"], s["binding_changes"], s["sighup_reloads"]))
        equal(s["unexpected_errors"], 0, "no unexpected error (%s)" % s["first_errors"][:3])
        equal(s["foreign_identity"], 0, "every pod always got its own identity's token")
        check(s["fds_warm_end"] is not None and s["fds_warm_end"][0] == s["fds_warm_end"][1],
              "open descriptors flat (%s)" % s["fds_warm_end"])
        check(not s["sanitizer_or_crash"], "no sanitizer report from the broker")
        print("     RSS growth over the run: %s KiB (reported only)" % s["rss_growth_kib"])
    finally:
        os.unlink(out)


if __name__ == "__main__":
    run_main(main)
