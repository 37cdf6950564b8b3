# SPDX-License-Identifier: Apache-2.0
"""The azure-msi provider through the CNI path (issue 5, acceptance 5): a node namespace whose "real
IMDS" is tests/fixtures/fake-imds.py on 169.254.169.254:80 (the node's lo), and the real idbrokerd with
the azure-msi provider at its default endpoint (http://169.254.169.254). Pods made by bridge +
host-local + idbroker ask http://169.254.169.254 with plain curl; the CNI plugin's redirect sends them
to the broker. A pod bound to a type-0 identity gets the fake IMDS's token for that client ID, and the
fake sees the node (the broker) as its caller, never the pod. An unbound pod gets 400 and the fake sees
nothing of it."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    BUILD,
    IDBROKERD,
    METADATA,
    PYTHON,
    SOURCE,
    World,
    check,
    equal,
    run_main,
    wait_for,
)

MSI_PROVIDER = os.path.join(BUILD, "providers", "azure-msi.so")
FAKE_IMDS = os.path.join(SOURCE, "tests", "fixtures", "fake-imds.py")
CLIENT_ID = "00000000-0000-0000-0000-0000000a5d01"
OTHER_ID = "00000000-0000-0000-0000-0000000a5d02"

POLICY = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: msi-identity
  namespace: default
spec:
  type: 0
  clientID: %s
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata:
  name: msi-binding
  namespace: default
spec:
  azureIdentity: msi-identity
  selector: msi
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
    return POD % (pod.name, "uid-" + pod.container_id[:12], "aadpodidbinding: msi" if bound else "app: x")


def token(pod, url=None):
    rc, status, body = pod.curl(url=url) if url else pod.curl()
    try:
        return rc, status, json.loads(body) if body else None
    except ValueError:
        return rc, status, None


def imds_stats(w):
    p = w.node_exec(["curl", "-sS", "-m", "5", "http://%s/control/stats" % METADATA])
    return json.loads(p.stdout)


def node_addresses(w):
    p = w.node_exec(["ip", "-j", "addr", "show"], check=True)
    return {a["local"] for link in json.loads(p.stdout) for a in link.get("addr_info", [])}


def main():
    if not (os.path.exists(IDBROKERD) and os.path.exists(MSI_PROVIDER)):
        print("SKIP: idbrokerd or the azure-msi provider is not built")
        sys.exit(77)
    with World("ms") as w:
        cl = w.conflist("1.0.0")
        a, b = w.new_pod("pa"), w.new_pod("pb")

        # The node's "real IMDS": the fake, on 169.254.169.254:80 of the node's lo.
        w.node_exec(["ip", "addr", "add", METADATA + "/32", "dev", "lo"], check=True)
        w.start([PYTHON, FAKE_IMDS, "--host", METADATA, "--port", "80", "--identity", CLIENT_ID,
                 "--identity", OTHER_ID])
        wait_for(lambda: w.listening(METADATA, 80), "fake IMDS on %s:80 in the node namespace" % METADATA)

        w.start_real_broker(POLICY + pod_manifest(a, True) + pod_manifest(b, False),
                            providers={"azure-msi": {}},
                            conf_extra={"typeProviders": {"0": "azure-msi", "1": "mock", "2": "mock"}})
        check("provider 'azure-msi' loaded" in open(w.broker_log).read(),
              "idbrokerd loaded azure-msi with its default endpoint")
        for p in (a, b):
            code, out, err = w.chain("ADD", cl, p)
            equal(code, 0, "ADD %s through bridge + host-local + idbroker" % p.name)

        rc, status, body = token(a)
        equal((rc, status), (0, 200), "pod A gets a token from http://169.254.169.254 with plain curl")
        equal(body.get("client_id"), CLIENT_ID, "... for its type-0 identity's client ID")
        check(body.get("access_token", "").endswith(".fakesig"), "... issued by the fake IMDS")
        st = imds_stats(w)
        equal((st["token_requests"], st["by_key"]), (1, {CLIENT_ID: 1}),
              "the fake IMDS saw one request, for that client ID")
        equal(st["violations"], [], "... with Metadata: true and no X-Forwarded-For")
        node = node_addresses(w)
        check(a.ip not in st["peers"] and set(st["peers"]) <= node,
              "... from the node (%s), never from the pod (%s)" % (sorted(st["peers"]), a.ip))

        # A selector for another identity: the broker decides, the pod never reaches IMDS itself.
        url = ("http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"
               "&resource=https%3A%2F%2Fvault.azure.net&client_id=" + OTHER_ID)
        rc, status, body = token(a, url)
        check(status == 400 and "access_token" not in (body or {}),
              "pod A asking for another client ID gets 400 (%s)" % status)

        rc, status, body = token(a)
        equal((status, imds_stats(w)["token_requests"]), (200, 1), "pod A again: served from the cache")

        rc, status, body = token(b)
        check(rc == 0 and status == 400 and "access_token" not in (body or {}),
              "pod B (no binding) gets 400 (%s %s)" % (status, (body or {}).get("error_description")))
        st = imds_stats(w)
        equal(st["token_requests"], 1, "the fake IMDS saw nothing of pod B (or of A's refused selector)")
        check(b.ip not in st["peers"] and a.ip not in st["peers"], "... and never a pod as its caller")
        for p in (a, b):
            code, _, _ = w.chain("DEL", cl, p)
            equal(code, 0, "DEL %s" % p.name)
        check("AddressSanitizer" not in open(w.broker_log).read(), "no sanitizer report from idbrokerd")


if __name__ == "__main__":
    run_main(main)
