# SPDX-License-Identifier: Apache-2.0
"""azure-msi's identity assignment ("assignIdentities": true) against tests/fixtures/fake-arm-identity.py and
fake-imds.py on 127.0.0.1: an identity not on the node's VM is added by one ARM PATCH (keeping the VM's
other identities) before IMDS is asked for its first token, with a token of the node's own identity for
ARM; an identity already on the VM is never patched; an identity no pod uses any more is removed (and
only that one); a VMSS instance patches its scale set; ARM failures reach the pod as errors; ARM over
HTTPS is verified against armCaFile (a certificate the provider does not trust is refused, and logged).

Tokens live 4 s here and unassignGraceSeconds is 1, so "no longer used" comes within seconds; waits are
polls with an upper bound, nothing asserts that something was fast."""
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from idbtest import BUILD, SOURCE, check, equal, parallel, run_main  # noqa: E402
from test_azure_msi import PY, R, FakeImds, cid, msi_broker, pod_ip, pods_policy, register_pods  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE, "tests", "fixtures"))
import kvpki  # noqa: E402

FAKE_ARM = os.path.join(SOURCE, "tests", "fixtures", "fake-arm-identity.py")
SUB = "/subscriptions/0000/resourceGroups/rg/providers/"
VM = SUB + "Microsoft.Compute/virtualMachines/node-vm-0"
VMSS = SUB + "Microsoft.Compute/virtualMachineScaleSets/aks-pool"
UAI = SUB + "Microsoft.ManagedIdentity/userAssignedIdentities/"
KUBELET = UAI + "kubelet-identity"
NODE_CLIENT = "00000000-0000-0000-0000-00000000c0de"


class FakeArm:
    def __init__(self, *args, tls=False):
        """tls: HTTPS with a certificate for 127.0.0.1 from a CA of its own (self.ca, the PEM path)."""
        self.dir = tempfile.mkdtemp(prefix="idb-fake-arm-")
        pf = os.path.join(self.dir, "port")
        self.ca, self.ssl = None, None
        if tls:
            ca_key, ca_cert, self.ca = kvpki.make_ca(self.dir)
            cert, key = kvpki.make_server(self.dir, ca_key, ca_cert)
            args = list(args) + ["--cert", cert, "--key", key]
            self.ssl = ssl.create_default_context(cafile=self.ca)
        self.proc = subprocess.Popen([PY, FAKE_ARM, "--port-file", pf] + list(args),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while not os.path.exists(pf):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("fake ARM did not start")
            time.sleep(0.05)
        with open(pf) as f:
            self.port = int(f.read())
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)

    def stats(self):
        with urllib.request.urlopen(self.url + "/control/stats", timeout=10, context=self.ssl) as r:
            return json.loads(r.read())

    def behavior(self, **kw):
        req = urllib.request.Request(self.url + "/control/behavior", data=json.dumps(kw).encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10, context=self.ssl) as r:
            return json.loads(r.read())

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def users(arm):
    return sorted((arm.stats()["identity"].get("userAssignedIdentities") or {}).keys())


def wait_until(cond, bound_s=60):
    deadline = time.time() + bound_s
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.25)
    return cond()


def arm_conf(arm, **kw):
    c = {"assignIdentities": True, "armEndpoint": arm.url, "unassignGraceSeconds": 1,
         "nodeIdentityClientId": NODE_CLIENT}
    c.update(kw)
    return c


def test_assign_and_remove():
    with FakeImds("--any", "--lifetime", "4", "--vm-resource-id", VM) as imds, \
            FakeArm("--resource", VM, "--system", "--existing", KUBELET, "--updating", "1") as arm:
        pol = pods_policy(4, n_ids=2)  # id0 (pods p0, p2) and id1 (pods p1, p3)
        with msi_broker(imds, pol, msi=arm_conf(arm), conf={"cache": {"minTtlSeconds": 0}}) as br:
            register_pods(br, 4)
            # 20 concurrent requests of two pods for id0, which is not on the VM yet.
            res = parallel(20, lambda i: br.token(R, source=pod_ip(0 if i % 2 else 2)))
            equal(sum(1 for r in res if not isinstance(r, Exception) and r[0] == 200), 20,
                  "20 concurrent requests for an unassigned identity all get 200")
            st = arm.stats()
            equal(len(st["patches"]), 1, "ARM saw exactly one PATCH")
            body = st["patches"][0]["body"]
            equal(body["identity"]["type"], "SystemAssigned, UserAssigned",
                  "... keeping the system-assigned identity")
            equal(sorted(body["identity"]["userAssignedIdentities"]), sorted([KUBELET, UAI + "id0"]),
                  "... with the union of the existing identities and the new one")
            equal(users(arm), sorted([KUBELET, UAI + "id0"]), "the VM now has both")
            first_token = min(e["t"] for e in imds.stats()["log"] if e["key"] == cid(1))
            check(st["patches"][0]["t"] < first_token,
                  "the PATCH came before IMDS was asked for the identity's first token")
            check(st["auth"] and all(a == {"aud": "https://management.azure.com/", "appid": NODE_CLIENT}
                                     for a in st["auth"]),
                  "ARM was called with the node identity's token for https://management.azure.com/")
            equal(st["violations"], [], "ARM saw no malformed request")
            equal(imds.stats()["instance_requests"], 1, "the VM was learnt once from IMDS instance metadata")
            check(st["gets"] >= 2, "the provider waited for ARM to finish updating (%d GETs)" % st["gets"])

            # A second identity: one more PATCH, keeping id0 too.
            st_, _, _ = br.token(R, source=pod_ip(1))
            equal(st_, 200, "a pod of id1 gets its token")
            st = arm.stats()
            equal(len(st["patches"]), 2, "... after one more PATCH")
            equal(sorted(st["patches"][1]["body"]["identity"]["userAssignedIdentities"]),
                  sorted([KUBELET, UAI + "id0", UAI + "id1"]), "... which keeps id0 and the kubelet's")

            # Keep id0 in use, let id1 go: id1 is removed, id0 and the kubelet identity stay.
            t_end = time.time() + 14
            removed, statuses = False, set()
            while time.time() < t_end:
                statuses.add(br.token(R, source=pod_ip(0))[0])
                removed = removed or UAI + "id1" not in users(arm)
                time.sleep(1)
            equal(statuses, {200}, "the pods of id0 kept getting tokens meanwhile")
            check(removed, "id1, which no pod asked for any more, was removed from the VM")
            equal(users(arm), sorted([KUBELET, UAI + "id0"]),
                  "id0 (still in use) and the kubelet identity (not ours) stayed")
            rm = [p["body"] for p in arm.stats()["patches"]
                  if (p["body"]["identity"].get("userAssignedIdentities") or {}).get(UAI + "id1", 1) is None]
            equal(len(rm), 1, "one PATCH removed id1 (set to null)")
            check(rm[0]["identity"]["userAssignedIdentities"].get(KUBELET) == {},
                  "... listing the identities it keeps")

            # Nobody uses id0 either: it goes too, the kubelet identity never does.
            check(wait_until(lambda: users(arm) == [KUBELET]), "id0 is removed once unused too")
            equal(arm.stats()["identity"]["type"], "SystemAssigned, UserAssigned",
                  "... and the VM keeps its other identities")

            # Used again: assigned again before its token.
            n = len(arm.stats()["patches"])
            st_, _, _ = br.token("https://storage.azure.com/", source=pod_ip(1))
            equal(st_, 200, "a pod of id1 asks again and gets a token")
            equal((len(arm.stats()["patches"]), users(arm)), (n + 1, sorted([KUBELET, UAI + "id1"])),
                  "... after one PATCH assigned id1 again")
            equal(arm.stats()["violations"], [], "ARM saw no malformed request")


def test_existing_identity_untouched():
    existing = UAI + "id0"
    with FakeImds("--any", "--lifetime", "4") as imds, \
            FakeArm("--resource", VM, "--existing", existing) as arm:
        with msi_broker(imds, pods_policy(1), msi=arm_conf(arm, nodeResourceId=VM),
                        conf={"cache": {"minTtlSeconds": 0}}) as br:
            register_pods(br, 1)
            st, _, _ = br.token(R, source=pod_ip(0))
            equal(st, 200, "an identity already on the VM gets its token")
            time.sleep(12)  # well past lifetime + grace: an identity we added would be gone
            equal(arm.stats()["patches"], [], "... with no PATCH, and never removed (it was not ours)")
            equal(imds.stats()["instance_requests"], 0, "nodeResourceId configured: no instance metadata")


def test_vmss_and_failures():
    instance = VMSS + "/virtualMachines/3"
    with FakeImds("--any", "--vm-resource-id", instance) as imds, \
            FakeArm("--resource", VMSS) as arm:
        with msi_broker(imds, pods_policy(2, n_ids=2), msi=arm_conf(arm, maxTotalMs=3000)) as br:
            register_pods(br, 2)
            st, _, _ = br.token(R, source=pod_ip(0))
            equal(st, 200, "a VMSS node: the identity is assigned and the pod gets its token")
            s = arm.stats()
            equal((len(s["patches"]), s["patches"][0]["body"]["identity"]["type"]), (1, "UserAssigned"),
                  "... by one PATCH of the scale set (no system identity to keep)")
            # ARM refuses (missing role): the pod gets 400, IMDS is not asked.
            arm.behavior(status=403, count=1)
            n = imds.stats()["token_requests"]
            st, _, b = br.token(R, source=pod_ip(1))
            equal(st, 400, "ARM 403 (a missing role) -> 400 to the pod")
            check("could not be assigned" in json.loads(b)["error_description"], "... saying why")
            equal(imds.stats()["token_requests"], n, "... and IMDS was not asked for its token")
            # ARM down: 503, later recovered.
            arm.behavior(status=500, count=1000)
            st, h, _ = br.token("https://storage.azure.com/", source=pod_ip(1))
            equal(st, 503, "ARM 5xx -> 503 to the pod")
            check(int(h.get("retry-after", "0")) > 0, "... with Retry-After")
            arm.behavior(status=500, count=0)
            st = wait_until(lambda: br.token("https://management.azure.com/", source=pod_ip(1))[0] == 200,
                            30)
            check(st, "ARM back: the identity is assigned and served")
            equal(users(arm), sorted([UAI + "id0", UAI + "id1"]), "the scale set has both identities")


def test_tls():
    """ARM over HTTPS, as in Azure: with armCaFile the provider verifies ARM's certificate against that
    CA and assigns the identity; a certificate the provider does not trust is refused: the pod gets an
    error, nothing is patched, the broker stays up and its log says why."""
    with FakeImds("--any", "--vm-resource-id", VM) as imds, FakeArm("--resource", VM, tls=True) as arm:
        with msi_broker(imds, pods_policy(1), msi=arm_conf(arm, armCaFile=arm.ca)) as br:
            register_pods(br, 1)
            st, _, _ = br.token(R, source=pod_ip(0))
            equal(st, 200, "ARM over HTTPS with armCaFile: the identity is assigned and the pod gets its token")
            s = arm.stats()
            equal((len(s["patches"]), users(arm), s["violations"]), (1, [UAI + "id0"], []),
                  "... by one well-formed PATCH over TLS")
        # Without armCaFile the system's CAs are used, and they do not know the fake's CA (as with a
        # private ARM endpoint, Azure Stack, whose CA was not configured).
        with msi_broker(imds, pods_policy(2, n_ids=2), msi=arm_conf(arm, maxTotalMs=3000)) as br:
            register_pods(br, 2)
            n = len(arm.stats()["patches"])
            st, _, b = br.token(R, source=pod_ip(1))
            check(st in (500, 503), "ARM's certificate from a CA the provider does not trust: the pod gets an "
                  "error (%d)" % st)
            equal(len(arm.stats()["patches"]), n, "... and ARM was not patched")
            tls = [l for l in br.log().splitlines() if "HTTPS to " in l]
            check(tls and "certificate" in tls[-1] and arm.url in tls[-1] and "subscriptions" not in tls[-1],
                  "... and the broker's log names ARM's origin (no path) and the certificate problem: %s"
                  % tls[-1:])
            equal(br.health("/healthz")[0], 200, "the broker stays up")


def test_config():
    """Bad assignment settings fail init(), with a message naming the key (the broker's real loader,
    through build/tools/mint-token)."""
    mint = os.path.join(BUILD, "tools", "mint-token")
    for bad, key in (({"assignIdentities": "yes"}, "assignIdentities"),
                     ({"assignIdentities": True, "armEndpoint": "ftp://x"}, "armEndpoint"),
                     ({"assignIdentities": True, "nodeResourceId": SUB + "Microsoft.Web/sites/x"},
                      "nodeResourceId"),
                     ({"assignIdentities": True, "nodeResourceId": VM + "?x=1"}, "nodeResourceId"),
                     ({"assignIdentities": True, "armApiVersion": "2023-03-01&x=y"}, "armApiVersion"),
                     ({"unassignGraceSeconds": -1}, "unassignGraceSeconds")):
        p = subprocess.run([mint, os.path.join(BUILD, "providers"), "azure-msi", json.dumps(bad), R],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode != 0 and "failed to initialize" in p.stderr and "'%s'" % key in p.stderr,
              "azure-msi refuses %s, naming the key" % json.dumps(bad))


def main():
    only = sys.argv[1:]
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn) and (not only or name in only):
            print("# %s" % name, flush=True)
            fn()


if __name__ == "__main__":
    run_main(main)
