# SPDX-License-Identifier: Apache-2.0
"""Kubernetes mode, THREATS T21: pods of this node that the idbroker CNI plugin never set up.

A real idbrokerd against the fake API server. The node runs: a pod the plugin set up (registered), a
pod it did not (created before the install step, or while the conflist lacked idbroker: no
registration), a hostNetwork pod, a completed pod, a pod being deleted, and a pod of another node.

- only the unregistered running pod is reported: a warning naming it (once), the gauge
  idbroker_pods_unprotected 1, `idbrokerctl status` unprotectedPods 1;
- registered later (as a re-created pod is): a notice, and the count goes back to 0;
- files mode has no such check (no unprotectedPods in status).
Waits are polls with an upper bound (the broker scans every 5 s and reports a pod seen in two scans).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

UID_OK = "11111111-1111-1111-1111-111111111111"


def main():
    with K.FakeApi() as fake:
        fake.put(K.pod("protected", "127.0.0.5", uid=UID_OK))
        fake.put(K.pod("unprotected", "127.0.0.6"))
        hostnet = K.pod("hostnet", "127.0.0.1")
        hostnet["spec"]["hostNetwork"] = True
        fake.put(hostnet)
        done = K.pod("completed", "127.0.0.7")
        done["status"]["phase"] = "Succeeded"
        fake.put(done)
        dying = K.pod("terminating", "127.0.0.8")
        dying["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        fake.put(dying)
        fake.put(K.pod("elsewhere", "127.0.0.9", node="another-node"))
        with K.KubeBroker(fake) as b:
            b.register("default", "protected", "127.0.0.5", uid=UID_OK)
            K.wait_for(lambda: b.metric("idbroker_pods_unprotected") == 1,
                       "the gauge idbroker_pods_unprotected counts the one unregistered running pod", timeout=60,
                       interval=0.25)
            log = b.log()
            equal(log.count("pod default/unprotected runs on this node without idbroker"), 1,
                  "a warning names it")
            for other in ("protected", "hostnet", "completed", "terminating", "elsewhere"):
                check("pod default/%s runs" % other not in log, "... and not %s" % other)
            equal(b.ctl_json("status").get("unprotectedPods"), 1, "idbrokerctl status: unprotectedPods 1")
            time.sleep(11)  # not an assertion: two more scans
            equal(b.log().count("pod default/unprotected runs on this node without idbroker"), 1,
                  "the warning is not repeated every scan")

            # Re-created through the plugin: registered.
            b.register("default", "unprotected", "127.0.0.6")
            K.wait_for(lambda: b.metric("idbroker_pods_unprotected") == 0, "registered: the gauge goes back to 0",
                       timeout=60, interval=0.25)
            check("pod default/unprotected is no longer an unprotected pod" in b.log(), "... with a notice")
            equal(b.ctl_json("status").get("unprotectedPods"), 0, "idbrokerctl status: unprotectedPods 0")

    with idbtest.Broker("") as b:
        check("unprotectedPods" not in b.ctl_json("status"), "files mode: no unprotected-pod check")


if __name__ == "__main__":
    idbtest.run_main(main)
