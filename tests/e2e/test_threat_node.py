# SPDX-License-Identifier: Apache-2.0
"""THREATS rows that need a whole node, with the real idbrokerd (files mode, mock provider) and pods
made by bridge + host-local + idbroker, in a fresh node namespace:

- T9: identity is never taken from `podns`/`podname` headers (through the real redirect);
  `route_localnet` is the same after the install as before it.
- T13: inside a pod, after `iptables -t nat -F` and `nft flush ruleset`, a process running as uid
  1501 (the uid azure-workload-identity's init-iptables.sh exempts) still reaches only the broker.
- T10: a node process (a hostNetwork pod's stand-in) asking the broker gets 403 saying it is the
  node; without a node rule it reaches the node's IMDS (the gap the docs warn about); the node rule
  of docs/operating.md, installed as printed there, drops it for non-root users while root (the
  broker's own path to IMDS) still passes; the redirect variant of docs/security.md sends it to
  the broker, which answers 403 "node".
- T18: a second node, connected to the first by a link, cannot reach the token port (by the broker
  address, by the node's own address, or spoofing a pod's source address), nor the health/metrics
  port. A control at the end removes the guard rule and shows the second node then gets through.
- T17: after all of it, the broker log, the CNI log and /metrics hold no token material and no full
  client ID.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    BROKER,
    BROKER_PORT,
    IDBROKERD,
    METADATA,
    MOCK_PROVIDER,
    SOURCE,
    TOKEN_URL,
    World,
    check,
    equal,
    run_main,
)

CID_A = "00000000-0000-0000-0000-0000000a11ce"
CID_B = "00000000-0000-0000-0000-000000000b0b"
NODE_REASON = "address of the node itself"
UID = "1501"

IDENTITY = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: {name}
  namespace: default
  annotations:
    idbroker.io/provider: mock
spec:
  type: 0
  clientID: {cid}
  resourceID: /subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata:
  name: {name}-binding
  namespace: default
spec:
  azureIdentity: {name}
  selector: {name}
---
"""

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  uid: {uid}
  labels:
    aadpodidbinding: {label}
---
"""

# The redirect variant of the node rule (docs/security.md, T10): non-root node processes asking the
# metadata address are sent to the broker, which tells them they are the node.
REDIRECT_RULE = """table inet idbroker-node-redirect {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr 169.254.169.254 tcp dport 80 meta skuid != 0 dnat ip to 169.254.169.250:2579
  }
}
"""


def documented_node_rule():
    """The nft ruleset of docs/operating.md's "hostNetwork pods" section, exactly as printed."""
    text = open(os.path.join(SOURCE, "docs", "operating.md")).read()
    sec = text.split("## hostNetwork pods", 1)[1]
    m = re.search(r"```\n(table .*?)```", sec, re.S)
    check(m is not None, "docs/operating.md prints a node rule")
    return m.group(1)


def curl_node(w, url, uid=None, interface=None, timeout=3):
    argv = []
    if uid:
        argv += ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]
    argv += ["curl", "-sS", "-m", str(timeout), "-H", "Metadata: true", "-o", "-", "-w", "\n%{http_code}"]
    if interface:
        argv += ["--interface", interface]
    argv.append(url)
    p = w.node_exec(argv)
    body, _, code = p.stdout.rpartition("\n")
    return p.returncode, (int(code) if code.isdigit() and code != "000" else None), body


def jbody(body):
    try:
        return json.loads(body)
    except ValueError:
        return {}


def nft(w, text):
    p = w.node_exec(["nft", "-f", "-"], input=text)
    check(p.returncode == 0, "nft accepts the rule (%s)" % p.stderr.strip())


def main():
    if not (os.path.exists(IDBROKERD) and os.path.exists(MOCK_PROVIDER)):
        print("SKIP: idbrokerd or the mock provider is not built")
        sys.exit(77)
    with World("thr") as w:
        before = {dev: w.sysctl("net.ipv4.conf.%s.route_localnet" % dev) for dev in ("all", "default", "lo")}
        cl = w.conflist("1.0.0")
        a, b = w.new_pod("pa"), w.new_pod("pb")
        manifests = (IDENTITY.format(name="ida", cid=CID_A) + IDENTITY.format(name="idb", cid=CID_B)
                     + POD.format(name=a.name, uid="uid-" + a.container_id[:12], label="ida")
                     + POD.format(name=b.name, uid="uid-" + b.container_id[:12], label="idb"))
        w.start_imds()
        w.start_real_broker(manifests)
        for p in (a, b):
            code, out, err = w.chain("ADD", cl, p)
            equal(code, 0, "ADD %s" % p.name)

        rc, status, body = a.curl()
        equal((rc, status, jbody(body).get("client_id")), (0, 200, CID_A), "pod A gets identity A")
        rc, status, body = b.curl()
        equal((rc, status, jbody(body).get("client_id")), (0, 200, CID_B), "pod B gets identity B")

        # --- T9 ---
        rc, status, body = b.curl(headers=("Metadata: true", "podns: default", "podname: " + a.name))
        equal((status, jbody(body).get("client_id")), (200, CID_B),
              "T9: pod B naming pod A in podns/podname headers still gets identity B")
        rc, status, body = b.curl(url=TOKEN_URL + "&bypass_cache=true",
                                  headers=("Metadata: true", "podns: default", "podname: " + a.name))
        equal(jbody(body).get("client_id"), CID_B, "T9: ... also past the cache")
        after = {dev: w.sysctl("net.ipv4.conf.%s.route_localnet" % dev) for dev in ("all", "default", "lo")}
        equal(after, before, "T9: route_localnet is the same after the install as before (%s)" % after)
        equal(after["all"], "0", "T9: route_localnet stays 0")

        # --- T13 ---
        for argv in (["iptables", "-t", "nat", "-F"], ["nft", "flush", "ruleset"]):
            b.exec(argv)
        p = b.exec(["setpriv", "--reuid", UID, "--regid", UID, "--clear-groups", "curl", "-sS", "-m", "3",
                    "-H", "Metadata: true", TOKEN_URL])
        equal((p.returncode, jbody(p.stdout).get("client_id")), (0, CID_B),
              "T13: uid 1501 in a pod that flushed its own rules reaches only the broker, as itself")
        p = b.exec(["setpriv", "--reuid", UID, "--regid", UID, "--clear-groups", "curl", "-sS", "-m", "2",
                    "http://%s:443/" % METADATA])
        check(p.returncode != 0, "T13: ... and no other port of the metadata address (rc %d)" % p.returncode)
        equal(w.requests(w.imds_log), [], "T13: the node's IMDS saw no pod request")

        # --- T10 ---
        broker_url = "http://%s:%d/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x" % (BROKER, BROKER_PORT)
        rc, status, body = curl_node(w, broker_url, uid=UID)
        equal(status, 403, "T10: a node process asking the broker gets 403")
        check(NODE_REASON in jbody(body).get("error_description", ""),
              "T10: ... saying it is the node (%s)" % jbody(body).get("error_description"))
        gw = a.result["ips"][0]["gateway"]
        rc, status, body = curl_node(w, broker_url, interface=gw)
        check(status == 403 and NODE_REASON in jbody(body).get("error_description", ""),
              "T10: also from the node's address on the pod network (%s)" % gw)
        imds_seen = len(w.requests(w.imds_log))
        rc, status, _ = curl_node(w, "http://%s/metadata/identity/oauth2/token" % METADATA, uid=UID)
        equal(status, 200, "T10 gap: without a node rule a node process reaches the node's IMDS")
        equal(len(w.requests(w.imds_log)), imds_seen + 1, "T10 gap: ... the IMDS saw it")

        nft(w, documented_node_rule())
        rc, status, _ = curl_node(w, "http://%s/metadata/identity/oauth2/token" % METADATA, uid=UID, timeout=2)
        check(rc != 0 and status is None,
              "T10: with the node rule of docs/operating.md a non-root node process gets nothing (rc %d)" % rc)
        equal(len(w.requests(w.imds_log)), imds_seen + 1, "T10: ... the IMDS saw nothing more")
        rc, status, _ = curl_node(w, "http://%s/metadata/identity/oauth2/token" % METADATA)
        equal(status, 200, "T10: root (the broker's own path for azure-msi) still reaches it")
        w.node_exec(["nft", "delete", "table", "inet", "idbroker-node"], check=True)

        nft(w, REDIRECT_RULE)
        seen = len(w.requests(w.imds_log))
        rc, status, body = curl_node(w, "http://%s/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x" % METADATA, uid=UID)
        equal(status, 403, "T10: with the redirect variant a non-root node process asking 169.254.169.254 gets 403")
        check(NODE_REASON in jbody(body).get("error_description", ""), "T10: ... from the broker, saying it is the node")
        equal(len(w.requests(w.imds_log)), seen, "T10: ... and the IMDS saw nothing")
        w.node_exec(["nft", "delete", "table", "inet", "idbroker-node-redirect"], check=True)

        # --- T18 ---
        node2 = "idb-%s-node2" % w.id
        w._add_netns(node2)
        w.netns_exec(node2, ["ip", "link", "set", "lo", "up"], check=True)
        w.node_exec(["ip", "link", "add", "n2peer", "type", "veth", "peer", "name", "eth0", "netns", node2], check=True)
        w.node_exec(["ip", "addr", "add", "10.250.0.1/30", "dev", "n2peer"], check=True)
        w.node_exec(["ip", "link", "set", "n2peer", "up"], check=True)
        w.netns_exec(node2, ["ip", "addr", "add", "10.250.0.2/30", "dev", "eth0"], check=True)
        w.netns_exec(node2, ["ip", "link", "set", "eth0", "up"], check=True)
        for dst in (BROKER, METADATA, "10.99.0.0/24"):
            w.netns_exec(node2, ["ip", "route", "add", dst, "via", "10.250.0.1"], check=True)

        def from_node2(url, source=None, timeout=2):
            argv = ["curl", "-sS", "-m", str(timeout), "-H", "Metadata: true", "-o", "-", "-w", "\n%{http_code}"]
            if source:
                argv += ["--interface", source]
            p = w.netns_exec(node2, argv + [url])
            body, _, code = p.stdout.rpartition("\n")
            return p.returncode, (int(code) if code.isdigit() and code != "000" else None), body

        w.start_http("10.250.0.1", 8080, "node1-web")
        rc, status, _ = from_node2("http://10.250.0.1:8080/")
        equal((rc, status), (0, 200), "T18: the second node reaches a service of the first (the link works)")
        rc, status, _ = from_node2(broker_url)
        check(rc != 0 and status is None, "T18: another node cannot reach the token port at the broker address (rc %d)" % rc)
        rc, status, _ = from_node2("http://10.250.0.1:%d/metadata/identity/oauth2/token" % BROKER_PORT)
        equal(rc, 7, "T18: ... nor at the node's own address (connection refused: not listening there)")
        rc, status, _ = from_node2("http://10.250.0.1:%d/metrics" % w.health_port)
        equal(rc, 7, "T18: the health/metrics port is not reachable from another node")
        w.netns_exec(node2, ["ip", "addr", "add", a.ip + "/32", "dev", "eth0"], check=True)
        rc, status, _ = from_node2(broker_url, source=a.ip)
        check(rc != 0 and status is None, "T18: ... nor with pod A's address as source (rc %d)" % rc)
        w.netns_exec(node2, ["ip", "addr", "del", a.ip + "/32", "dev", "eth0"], check=True)

        # --- T17 ---
        _, _, metrics = curl_node(w, "http://127.0.0.1:%d/metrics" % w.health_port)
        logs = {"broker log": open(w.broker_log).read(), "CNI log": open(w.cni_log).read(), "metrics": metrics}
        for name, text in logs.items():
            check(len(text) > 0 and "eyJ" not in text, "T17: no token material in the %s" % name)
            check(CID_A not in text and CID_B not in text, "T17: no full client ID in the %s" % name)
        audits = [json.loads(l) for l in logs["broker log"].splitlines() if l.startswith("{") and '"audit"' in l]
        check(any(r.get("decision") == "issued" and r.get("podUid") and r.get("identity") for r in audits),
              "T17: audit records carry pod uid, identity and decision")

        # Control for T18: without the guard's broker rule, the second node gets through.
        guard = [i["rule"] for i in w.ruleset()
                 if "rule" in i and i["rule"]["family"] == "inet" and i["rule"]["table"] == "idbroker"
                 and i["rule"]["chain"] == "guard" and BROKER in json.dumps(i["rule"]["expr"])]
        check(len(guard) == 1, "the guard has one rule for the broker address")
        w.node_exec(["nft", "delete", "rule", "inet", "idbroker", "guard", "handle", str(guard[0]["handle"])], check=True)
        rc, status, body = from_node2(broker_url)
        equal(status, 403, "control: with the guard rule removed, another node reaches the token port")


if __name__ == "__main__":
    run_main(main)
