# SPDX-License-Identifier: Apache-2.0
"""deploy/: the manifests parse, the CRD schemas accept the example manifests in conf/identities
(and the AAIs the broker writes), RBAC is least privilege, the ConfigMap's configuration is
accepted by idbrokerd, and the install step works against real-world primary conflists (bridge, a
Calico-style 0.3.1 conflist, an Azure-CNI-style conflist): atomic copy of the binary, idbroker
inserted once at the end, the rest unchanged, re-inserted after the primary rewrites its file,
never removed.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402

try:
    import yaml
except ImportError:
    yaml = None

DEPLOY = os.path.join(idbtest.SOURCE, "deploy")
CONF = os.path.join(idbtest.SOURCE, "conf")

# ---- a small structural-schema validator (the subset the CRDs use) ----


def validate(schema, v, path="$"):
    errs = []
    t = schema.get("type")
    types = {"object": dict, "string": str, "integer": int, "array": list, "boolean": bool}
    if t and not (isinstance(v, types[t]) and not (t == "integer" and isinstance(v, bool))):
        return ["%s: expected %s, got %r" % (path, t, v)]
    if t == "integer":
        if "minimum" in schema and v < schema["minimum"]:
            errs.append("%s: below minimum" % path)
        if "maximum" in schema and v > schema["maximum"]:
            errs.append("%s: above maximum" % path)
    if t == "object" and isinstance(v, dict):
        for r in schema.get("required", []):
            if r not in v:
                errs.append("%s: missing required %s" % (path, r))
        props = schema.get("properties", {})
        for k, sub in v.items():
            if k in props:
                errs += validate(props[k], sub, path + "." + k)
            elif "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
                errs += validate(schema["additionalProperties"], sub, path + "." + k)
            elif props and not schema.get("x-kubernetes-preserve-unknown-fields") and path != "$.metadata":
                errs.append("%s: unknown field %s (would be pruned)" % (path, k))
    return errs


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def check_manifests():
    all_docs = {}
    for p in sorted(glob.glob(os.path.join(DEPLOY, "*.yaml"))):
        d = docs(p)
        check(len(d) > 0 and all("kind" in x and "apiVersion" in x for x in d),
              "%s parses into objects" % os.path.basename(p))
        all_docs[os.path.basename(p)] = d
    crds = {c["spec"]["names"]["kind"]: c for c in all_docs["crds.yaml"]}
    equal(sorted(crds), ["AzureAssignedIdentity", "AzureIdentity", "AzureIdentityBinding",
                         "AzurePodIdentityException"], "the four CRDs")
    for kind, c in crds.items():
        v = c["spec"]["versions"][0]
        check(c["apiVersion"] == "apiextensions.k8s.io/v1" and c["spec"]["group"] == "aadpodidentity.k8s.io"
              and v["name"] == "v1" and v["served"] and v["storage"] and v["schema"]["openAPIV3Schema"]["type"] == "object"
              and v.get("additionalPrinterColumns"), "%s: v1, structural schema, printer columns" % kind)

    examples = []
    for p in sorted(glob.glob(os.path.join(CONF, "identities", "*.yaml"))):
        examples += [(os.path.basename(p), d) for d in docs(p)]
    n = 0
    for name, d in examples:
        if d.get("kind") not in crds:
            continue
        schema = crds[d["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        errs = validate(schema, {k: v for k, v in d.items()})
        check(not errs, "%s: %s %s accepted by its CRD schema %s" % (name, d["kind"], d["metadata"]["name"], errs))
        n += 1
    check(n >= 2, "examples checked: %d" % n)

    rbac = {(d["kind"], d["metadata"]["name"]): d for d in all_docs["rbac.yaml"]}
    rules = rbac[("ClusterRole", "idbroker")]["rules"]
    writes = [(r["resources"], r["verbs"]) for r in rules if set(r["verbs"]) - {"get", "list", "watch"}]
    equal(writes, [(["azureassignedidentities"], ["get", "list", "watch", "create", "patch", "delete"]),
                   (["events"], ["create"])],
          "RBAC: the only writes are to azureassignedidentities, and creating Events")
    check(not [r for r in rules if "secrets" in r["resources"] or "*" in r["resources"] or "*" in r["verbs"]],
          "RBAC: no secrets, no wildcards")
    ds = all_docs["daemonset.yaml"][0]["spec"]["template"]["spec"]
    check(ds["hostNetwork"] and {"operator": "Exists"} in ds["tolerations"], "DaemonSet: hostNetwork, every node")
    broker = [c for c in ds["containers"] if c["name"] == "idbrokerd"][0]
    equal(broker["securityContext"]["capabilities"], {"drop": ["ALL"], "add": ["NET_ADMIN"]},
          "idbrokerd: NET_ADMIN only")
    for c in ds["initContainers"] + ds["containers"]:
        if c["name"] in ("install-cni", "cni-watch"):
            equal(c["securityContext"]["capabilities"], {"drop": ["ALL"], "add": ["NET_ADMIN"]},
                  "%s: NET_ADMIN only (idbroker --guard installs the node's tables)" % c["name"])
        elif c["name"] != "idbrokerd":
            equal(c["securityContext"]["capabilities"], {"drop": ["ALL"]}, "%s: no capability" % c["name"])
    net = [m for m in broker["volumeMounts"] if m["name"] == "cni-net"]
    check(net and net[0]["mountPath"] == "/etc/cni/net.d" and net[0].get("readOnly"),
          "idbrokerd: the CNI conf dir is mounted read-only at cni.confDir's default (T21)")
    check(not any(c.get("securityContext", {}).get("privileged") for c in ds["containers"] + ds["initContainers"]),
          "no privileged container")
    check(broker["readinessProbe"]["httpGet"]["path"] == "/readyz" and
          broker["livenessProbe"]["httpGet"]["path"] == "/healthz", "probes on the health listener")
    return all_docs


def check_configmap(all_docs):
    cm = all_docs["configmap.yaml"][0]["data"]["idbrokerd.json"]
    cfg = json.loads(cm.replace("@NODE_NAME@", "node-1"))
    equal(cfg["source"]["kind"], "kubernetes", "the ConfigMap uses the kubernetes source")
    tmp = tempfile.mkdtemp(prefix="idb-cm-")
    try:
        # idbrokerd --check-config with a kubeconfig standing in for the in-cluster configuration.
        kc = os.path.join(tmp, "kubeconfig")
        with open(kc, "w") as f:
            json.dump({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                       "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
                       "users": [{"name": "u", "user": {"token": "x"}}]}, f)
        cfg["source"]["kubeconfig"] = kc
        p = os.path.join(tmp, "idbrokerd.json")
        with open(p, "w") as f:
            json.dump(cfg, f)
        r = subprocess.run([idbtest.IDBROKERD, "--config", p, "--check-config"], capture_output=True, text=True,
                           timeout=30)
        check(r.returncode == 0, "idbrokerd --check-config accepts the ConfigMap (%s)" % (r.stdout + r.stderr).strip())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


BRIDGE = {"cniVersion": "1.0.0", "name": "bridge-net", "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}
CALICO = {"name": "k8s-pod-network", "cniVersion": "0.3.1", "plugins": [
    {"type": "calico", "log_level": "info", "datastore_type": "kubernetes", "nodename": "node-1", "mtu": 1440,
     "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"},
     "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}},
    {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
    {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}
AZURE = {"cniVersion": "0.3.0", "name": "azure", "plugins": [
    {"type": "azure-vnet", "mode": "transparent", "ipsToRouteViaHost": ["169.254.20.10"],
     "executable": "/opt/cni/bin/azure-vnet", "bridge": "azure0",
     "ipam": {"type": "azure-vnet-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}


def check_install(name, primary):
    if not shutil.which("jq"):
        print("skip - jq is not installed: install step not tested")
        return
    tmp = tempfile.mkdtemp(prefix="idb-cni-")
    proc = None
    try:
        src = os.path.join(tmp, "src", "idbroker")
        bindir, netdir = os.path.join(tmp, "bin"), os.path.join(tmp, "net.d")
        os.makedirs(os.path.dirname(src))
        os.makedirs(netdir)
        # The real plugin: the install step runs `idbroker --guard` with the chained entry of each
        # real-world conflist, in a network namespace of its own (unshare), never the machine's.
        shutil.copy(os.path.join(idbtest.BUILD, "cni", "idbroker"), src)
        fname = {"bridge": "10-bridge.conflist", "calico": "10-calico.conflist", "azure": "10-azure.conflist"}[name]
        with open(os.path.join(netdir, fname), "w") as f:
            json.dump(primary, f, indent=2)
        with open(os.path.join(netdir, "99-loopback.conflist"), "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}, f)
        env = dict(os.environ, IDBROKER_CNI_BINARY=src, CNI_BIN_DIR=bindir, CNI_NET_DIR=netdir,
                   IDBROKER_CNI_INTERVAL="0.2")
        script = os.path.join(DEPLOY, "install-cni.sh")
        for i in range(2):
            r = subprocess.run(["unshare", "--net", "--", "/bin/sh", "-c",
                                '/bin/sh "$0" && nft list chain inet idbroker guard', script],
                               env=env, capture_output=True, text=True, timeout=30)
            check(r.returncode == 0, "%s: install step run %d succeeds (%s)" % (name, i + 1, r.stderr.strip()))
            check("ip daddr 169.254.169.254 drop" in r.stdout,
                  "%s: ... and installed idbroker's guard from the conflist's idbroker entry" % name)
        st = os.stat(os.path.join(bindir, "idbroker"))
        check(st.st_mode & 0o777 == 0o755, "%s: binary installed with mode 0755" % name)
        with open(os.path.join(netdir, fname)) as f:
            got = json.load(f)
        want = json.loads(json.dumps(primary))
        want["plugins"].append({"type": "idbroker"})
        equal(got, want, "%s: idbroker inserted once, at the end, the rest unchanged" % name)
        with open(os.path.join(netdir, "99-loopback.conflist")) as f:
            check("idbroker" not in f.read(), "%s: only the primary conflist is changed" % name)
        check(not [x for x in os.listdir(netdir) + os.listdir(bindir) if "tmp" in x],
              "%s: no temporary files left" % name)

        # Watch mode: the primary CNI rewrites its file -> idbroker comes back.
        proc = subprocess.Popen(["unshare", "--net", "--", "/bin/sh", script], env=dict(env, IDBROKER_CNI_WATCH="1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tmpf = os.path.join(netdir, ".rewrite")
        with open(tmpf, "w") as f:
            json.dump(primary, f)
        os.rename(tmpf, os.path.join(netdir, fname))
        deadline = time.time() + 20
        ok = False
        while time.time() < deadline and not ok:
            time.sleep(0.1)
            try:
                with open(os.path.join(netdir, fname)) as f:
                    ok = [p["type"] for p in json.load(f)["plugins"]].count("idbroker") == 1
            except ValueError:
                pass
        check(ok, "%s: re-inserted after the primary rewrote its conflist" % name)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if yaml is None:
        print("skip - PyYAML (python3-yaml) is not installed")
        return
    all_docs = check_manifests()
    check_configmap(all_docs)
    for name, primary in (("bridge", BRIDGE), ("calico", CALICO), ("azure", AZURE)):
        check_install(name, primary)


if __name__ == "__main__":
    idbtest.run_main(main)
