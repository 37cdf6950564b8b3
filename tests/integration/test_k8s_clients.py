# SPDX-License-Identifier: Apache-2.0
"""The fake API server checked against real clients, so it behaves like the real API:

- kubectl (Debian's kubernetes-client when installed; IDB_KUBECTL overrides) applies, gets, watches
  and deletes through it, and shows the AzureAssignedIdentities the broker writes
- python3-kubernetes lists pods and custom objects, and its watch.Watch().stream follows a change

Either client missing -> that part is skipped (reported), the rest still runs.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

UID1 = "11111111-1111-1111-1111-111111111111"
DEBIAN_KUBECTL = ["/usr/bin/kubectl.kubernetes-client", "/opt/debian-kubectl/usr/bin/kubectl"]


def find_kubectl():
    if os.environ.get("IDB_KUBECTL"):
        return os.environ["IDB_KUBECTL"]
    for p in DEBIAN_KUBECTL:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("kubectl")


IDENTITY_YAML = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: applied
  namespace: default
  annotations:
    idbroker.io/provider: mock
spec:
  type: 0
  clientID: {client_id}
  resourceID: /subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/applied
"""


def kubectl_part(fake, kubectl, tmp):
    def kc(*args, timeout=60):
        return subprocess.run([kubectl, "--kubeconfig", fake.kubeconfig_static, "--cache-dir",
                               os.path.join(tmp, "cache")] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    p = kc("version", "-o", "json")
    check(p.returncode == 0 and "gitVersion" in p.stdout, "kubectl version reaches the server")
    path = os.path.join(tmp, "identity.yaml")
    with open(path, "w") as f:
        f.write(IDENTITY_YAML.format(client_id="00000000-0000-0000-0000-000000000001"))
    p = kc("apply", "--validate=false", "-f", path)
    check(p.returncode == 0, "kubectl apply creates (%s)" % (p.stdout + p.stderr).strip())
    objs = {o["metadata"]["name"]: o for o in fake.objects("azureidentities")}
    check("applied" in objs, "the applied identity is stored")
    with open(path, "w") as f:
        f.write(IDENTITY_YAML.format(client_id="00000000-0000-0000-0000-000000000002"))
    p = kc("apply", "--validate=false", "-f", path)
    check(p.returncode == 0, "kubectl apply updates (%s)" % (p.stdout + p.stderr).strip())
    objs = {o["metadata"]["name"]: o for o in fake.objects("azureidentities")}
    equal(objs["applied"]["spec"]["clientID"], "00000000-0000-0000-0000-000000000002",
          "the update reached the object")
    p = kc("get", "azureidentities")
    check(p.returncode == 0 and "applied" in p.stdout, "kubectl get azureidentities lists it")
    p = kc("get", "pods", "--field-selector", "spec.nodeName=" + K.NODE, "-o", "name")
    check(p.returncode == 0 and "pod/p1" in p.stdout, "kubectl get pods with a field selector")

    # kubectl get -w follows a change.
    out = os.path.join(tmp, "watch.out")
    with open(out, "w") as f:
        w = subprocess.Popen([kubectl, "--kubeconfig", fake.kubeconfig_static, "--cache-dir",
                              os.path.join(tmp, "cache"), "get", "azureidentities", "-w"],
                             stdout=f, stderr=subprocess.STDOUT)
    try:
        K.wait_for(lambda: "applied" in open(out).read(), "kubectl get -w shows the current list")
        fake.put(K.identity("watched"))
        K.wait_for(lambda: "watched" in open(out).read(), "kubectl get -w shows a new object")
    finally:
        w.terminate()
        w.wait(timeout=10)
    p = kc("delete", "azureidentity", "applied")
    check(p.returncode == 0, "kubectl delete")
    check("applied" not in [o["metadata"]["name"] for o in fake.objects("azureidentities")], "deleted")


def python_part(fake):
    try:
        from kubernetes import client, config, watch
    except ImportError:
        print("skip - python3-kubernetes is not installed")
        return
    api_client = config.new_client_from_config(config_file=fake.kubeconfig_static)
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=" + K.NODE, limit=1)
    equal([p.metadata.name for p in pods.items], ["p1"], "python3-kubernetes lists pods (page 1 of 2)")
    check(pods.metadata._continue, "with a continue token")
    page2 = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=" + K.NODE, limit=1,
                                             _continue=pods.metadata._continue)
    equal([p.metadata.name for p in page2.items], ["p9"], "and page 2")
    ids = custom.list_cluster_custom_object("aadpodidentity.k8s.io", "v1", "azureidentities")
    check("id1" in [i["metadata"]["name"] for i in ids["items"]], "python3-kubernetes lists custom objects")
    rv = pods.metadata.resource_version
    seen = []

    def follow():
        w = watch.Watch()
        for ev in w.stream(core.list_pod_for_all_namespaces, field_selector="spec.nodeName=" + K.NODE,
                           resource_version=rv, timeout_seconds=20):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["object"].metadata.name == "p2":
                w.stop()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    time.sleep(0.5)
    fake.put(K.pod("p2", "127.0.0.8", "sel1"))
    fake.put(K.pod("elsewhere", "10.0.0.1", "sel1", node="other-node"))
    t.join(30)
    check(("ADDED", "p2") in seen, "watch.Watch().stream follows a new pod (%s)" % seen)
    check(all(n != "elsewhere" for _, n in seen), "the field selector holds in the watch")


def main():
    tmp = tempfile.mkdtemp(prefix="idb-kc-")
    try:
        with K.FakeApi() as fake:
            fake.put(K.identity("id1"))
            fake.put(K.binding("b1", "id1", "sel1"))
            fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))
            fake.put(K.pod("p9", "127.0.0.9", "none"))
            kubectl = find_kubectl()
            if kubectl:
                print("# kubectl: %s" % kubectl)
                kubectl_part(fake, kubectl, tmp)
            else:
                print("skip - no kubectl (install Debian's kubernetes-client)")
            python_part(fake)

            # The broker's AAIs as kubectl shows them.
            with K.KubeBroker(fake) as b:
                b.register("default", "p1", "127.0.0.5", uid=UID1)
                equal(b.token(source="127.0.0.5")[0], 200, "token")
                K.wait_for(lambda: ((K.aai_by_name(fake).get("p1-default-id1") or {}).get("status") or {})
                           .get("status") == "Assigned", "AAI Assigned")
                if kubectl:
                    p = subprocess.run([kubectl, "--kubeconfig", fake.kubeconfig_static, "--cache-dir",
                                        os.path.join(tmp, "cache"), "get", "azureassignedidentities",
                                        "-o", "jsonpath={.items[*].metadata.name} {.items[*].status.status}"],
                                       capture_output=True, text=True, timeout=60)
                    check(p.returncode == 0 and "p1-default-id1" in p.stdout and "Assigned" in p.stdout,
                          "kubectl get azureassignedidentities shows the broker's AAI (%s)" % p.stdout.strip())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    idbtest.run_main(main)
