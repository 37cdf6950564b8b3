# SPDX-License-Identifier: Apache-2.0
"""Kubernetes mode, policy behaviour: a real idbrokerd against the fake API server.

- identity + binding + pod -> token, and an AzureAssignedIdentity that goes to Assigned
- binding deleted -> the next request is denied and the AAI is deleted; the cached token is evicted
  (THREATS T15)
- pod label change -> denied at once
- a forged AAI without a binding grants nothing and is removed (T14); stale AAIs of the node are
  removed at start
- registration vs API pod cross-check: UID and IP must agree, with the reason in explain (T2)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

UID1 = "11111111-1111-1111-1111-111111111111"
UID2 = "22222222-2222-2222-2222-222222222222"
UID3 = "33333333-3333-3333-3333-333333333333"


def aai_status(fake, name):
    o = K.aai_by_name(fake).get(name)
    return (o.get("status") or {}).get("status") if o else None


def main():
    with K.FakeApi() as fake:
        fake.put(K.identity("id1"))
        fake.put(K.binding("b1", "id1", "sel1"))
        fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))
        # A stale AAI of this node (from an earlier run) and one of another node.
        stale = {"apiVersion": K.GROUP_V, "kind": "AzureAssignedIdentity",
                 "metadata": {"name": "gone-default-id1", "namespace": "default",
                              "labels": {"nodename": K.NODE}},
                 "spec": {"pod": "gone", "podNamespace": "default", "nodename": K.NODE},
                 "status": {"status": "Assigned"}}
        other = dict(stale, metadata={"name": "x-default-id1", "namespace": "default",
                                      "labels": {"nodename": "other-node"}})
        fake.put(stale)
        fake.put(other)

        with K.KubeBroker(fake) as b:
            check(b.ready(), "ready after the first LIST of every kind")
            b.register("default", "p1", "127.0.0.5", uid=UID1)
            st, h, body = b.token(source="127.0.0.5")
            equal(st, 200, "granted pod gets a token")
            K.wait_for(lambda: aai_status(fake, "p1-default-id1") == "Assigned",
                       "AAI p1-default-id1 is Assigned after the token")
            aai = K.aai_by_name(fake)["p1-default-id1"]
            equal(aai["metadata"]["labels"], {"nodename": K.NODE}, "AAI carries label nodename")
            equal((aai["spec"]["pod"], aai["spec"]["podNamespace"], aai["spec"]["nodename"]),
                  ("p1", "default", K.NODE), "AAI spec pod/podNamespace/nodename")
            equal(aai["spec"]["azureIdentityRef"]["metadata"]["name"], "id1", "AAI azureIdentityRef")
            equal(aai["spec"]["azureBindingRef"]["metadata"]["name"], "b1", "AAI azureBindingRef")
            K.wait_for(lambda: "gone-default-id1" not in K.aai_by_name(fake),
                       "a stale AAI of this node is removed at start")
            check("x-default-id1" in K.aai_by_name(fake), "another node's AAI is left alone")
            applies = [r for r in fake.requests() if r["method"] == "PATCH"]
            check(applies and all(r.get("contentType") == "application/apply-patch+yaml"
                                  and r.get("fieldManager") == "idbroker" for r in applies),
                  "AAIs are written by server-side apply with fieldManager=idbroker")
            check(not [r for r in fake.requests() if r["method"] == "PUT"], "never GET-modify-PUT")

            # T15: the binding goes -> the next request is denied, the AAI goes, the cache drops.
            calls = b.provider_calls("mock")
            fake.delete("azureidentitybindings", "default", "b1")
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 400,
                       "binding deleted: the next request is denied (400)", timeout=5)
            K.wait_for(lambda: "p1-default-id1" not in K.aai_by_name(fake), "binding deleted: AAI deleted")
            fake.put(K.binding("b1", "id1", "sel1"))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 200, "binding back: granted again")
            check(b.provider_calls("mock") > calls, "the cached token was evicted (a new provider call)")
            K.wait_for(lambda: aai_status(fake, "p1-default-id1") == "Assigned", "AAI back, Assigned")

            # Label change on the pod: denied at once.
            fake.put(K.pod("p1", "127.0.0.5", "other", uid=UID1))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 400,
                       "pod label changed: the next request is denied", timeout=5)
            K.wait_for(lambda: "p1-default-id1" not in K.aai_by_name(fake), "label changed: AAI deleted")
            fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 200, "label back: granted")

            # T14: a forged AAI for a pod without a binding grants nothing and is removed.
            fake.put(K.pod("p2", "127.0.0.6", "nobinding", uid=UID2))
            b.register("default", "p2", "127.0.0.6", uid=UID2)
            forged = dict(stale, metadata={"name": "p2-default-id1", "namespace": "default",
                                           "labels": {"nodename": K.NODE}},
                          spec={"pod": "p2", "podNamespace": "default", "nodename": K.NODE,
                                "azureIdentityRef": {"metadata": {"name": "id1", "namespace": "default"}}})
            fake.put(forged)
            st, _, body = b.token(source="127.0.0.6")
            equal(st, 400, "forged AAI without a binding: denied")
            K.wait_for(lambda: "p2-default-id1" not in K.aai_by_name(fake), "the forged AAI is deleted")

            # T2: the registration and the API pod must agree (UID, IP).
            fake.put(K.pod("p3", "127.0.0.9", "sel1", uid=UID3))
            b.register("default", "p3", "127.0.0.7", uid=UID3)  # wrong IP
            st, h, _ = b.token(source="127.0.0.7")
            equal(st, 503, "registration IP not the API pod's IP: no token (503)")
            check("retry-after" in h, "503 carries Retry-After")
            e = b.explain("default", "p3")
            note = json_text(e)
            check("127.0.0.7" in note and "not an IP of pod" in note,
                  "explain says the registration's address is not the pod's IP")
            b.ctl("unregister", "default/p3")
            b.register("default", "p3", "127.0.0.9", uid=UID2)  # wrong UID
            st, _, _ = b.token(source="127.0.0.9")
            equal(st, 503, "registration UID not the API pod's UID: no token (503)")
            note = json_text(b.explain("default", "p3"))
            check(UID2 in note and UID3 in note, "explain names both UIDs")
            b.ctl("unregister", "default/p3")
            b.register("default", "p3", "127.0.0.9", uid=UID3)
            equal(b.token(source="127.0.0.9")[0], 200, "matching UID and IP: token")

            # A registered pod the API does not know: waits, then 503 + Retry-After.
            b.register("default", "ghost", "127.0.0.10", uid=str(UID1).replace("1", "4"))
            st, h, _ = b.token(source="127.0.0.10")
            equal(st, 503, "registered pod unknown to the API: 503")
            check("retry-after" in h, "with Retry-After")


def json_text(o):
    import json
    return json.dumps(o)


if __name__ == "__main__":
    idbtest.run_main(main)
