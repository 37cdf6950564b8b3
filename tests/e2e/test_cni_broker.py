# SPDX-License-Identifier: Apache-2.0
"""The CNI plugin with the real broker (issue 3, tests 2-5; THREATS T1-T4): idbrokerd in files mode with
the mock provider runs in the node namespace; pods made by bridge + host-local + idbroker ask
http://169.254.169.254 for tokens with plain curl. Pod A (bound) gets its identity's token, pod B
(unbound) the IMDS error; a pod that reuses A's address after A's DEL never gets A's identity; the
broker stopped or killed means refused connections and a stand-in IMDS that sees nothing; a pod added
while the broker is down is served once it starts."""
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    IDBROKERD,
    MOCK_PROVIDER,
    World,
    check,
    equal,
    run_main,
)

CLIENT_ID = "00000000-0000-0000-0000-00000000c1d1"

POLICY = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: demo-identity
  namespace: default
  annotations:
    idbroker.io/provider: mock
spec:
  type: 0
  clientID: %s
  resourceID: /subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/demo-identity
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata:
  name: demo-binding
  namespace: default
spec:
  azureIdentity: demo-identity
  selector: demo
""" % CLIENT_ID

POD = """---
apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
  uid: %s
  labels:
    %s
"""


def pod_manifest(pod, bound):
    return POD % (pod.name, "uid-" + pod.container_id[:12], "aadpodidbinding: demo" if bound else "app: x")


def token(pod):
    rc, status, body = pod.curl()
    try:
        return rc, status, json.loads(body) if body else None
    except ValueError:
        return rc, status, None


def main():
    if not (os.path.exists(IDBROKERD) and os.path.exists(MOCK_PROVIDER)):
        print("SKIP: idbrokerd or the mock provider is not built")
        sys.exit(77)
    with World("rb") as w:
        cl = w.conflist("1.0.0")
        # Two addresses only: a new pod gets the address the last deleted one had.
        cl["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.99.0.0/24", "rangeStart": "10.99.0.50", "rangeEnd": "10.99.0.51"}]]
        a, b, c, d = (w.new_pod(n) for n in ("pa", "pb", "pc", "pd"))
        manifests = POLICY + pod_manifest(a, True) + pod_manifest(b, False) + pod_manifest(c, False) + pod_manifest(d, True)
        w.start_imds()
        broker = w.start_real_broker(manifests)
        for p in (a, b):
            code, out, err = w.chain("ADD", cl, p)
            equal(code, 0, "ADD %s through bridge + host-local + idbroker" % p.name)

        rc, status, body = token(a)
        equal((rc, status), (0, 200), "pod A gets a token from http://169.254.169.254 with plain curl")
        equal(body.get("client_id"), CLIENT_ID, "... of its bound identity")
        check(body["access_token"].count(".") == 2, "... a JWT from the mock provider")
        a_token = body["access_token"]
        rc, status, body = token(b)
        check(rc == 0 and status in (400, 403) and "access_token" not in (body or {}),
              "pod B (no binding) gets the IMDS error (%s %s)" % (status, (body or {}).get("error_description")))
        b.exec(["ip", "addr", "add", a.ip + "/24", "dev", "eth0"], check=True)
        rc, status, _ = b.curl(source=a.ip, timeout=2)
        check(rc != 0, "pod B using A's address as source gets nothing (rc %d)" % rc)
        b.exec(["ip", "addr", "del", a.ip + "/24", "dev", "eth0"], check=True)

        # T2: C gets A's address after A's DEL and never A's identity, cached or not.
        code, _, _ = w.chain("DEL", cl, a)
        equal(code, 0, "DEL pod A")
        code, _, _ = w.chain("ADD", cl, c)
        equal((code, c.ip), (0, a.ip), "pod C gets A's address")
        for q in ("", "&bypass_cache=true"):
            rc, status, body = c.curl(url="http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net" + q)
            check(status != 200 and a_token not in body and CLIENT_ID not in body,
                  "pod C never gets A's identity%s (%s)" % (" (bypass_cache)" if q else "", status))

        # T3: the broker stops -> refused, never the node's IMDS; T4: a pod added meanwhile.
        w.stop(broker)
        rc, status, _ = c.curl(timeout=2)
        check(rc in (7, 28), "broker stopped: the request is refused (rc %d)" % rc)
        code, _, _ = w.chain("DEL", cl, b)
        code, _, _ = w.chain("ADD", cl, d)
        equal(code, 0, "ADD while the broker is down succeeds")
        rc, status, _ = d.curl(timeout=2)
        check(rc in (7, 28), "the new pod is protected meanwhile (rc %d)" % rc)
        broker = w.start_real_broker(manifests)
        rc, status, body = token(d)
        equal((rc, status, (body or {}).get("client_id")), (0, 200, CLIENT_ID),
              "the broker started: the pod added while it was down gets its token")
        rc, status, body = token(c)
        check(status != 200, "pod C is still refused A's identity after the restart")

        broker.send_signal(signal.SIGKILL)
        broker.wait()
        rc, status, _ = d.curl(timeout=2)
        check(rc in (7, 28), "broker killed: refused (rc %d)" % rc)
        equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request at any time")
        equal(w.sysctl("net.ipv4.conf.all.route_localnet"), "0", "route_localnet stays 0")
        check("AddressSanitizer" not in open(w.broker_log).read(), "no sanitizer report from idbrokerd")


if __name__ == "__main__":
    run_main(main)
