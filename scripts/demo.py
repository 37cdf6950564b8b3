#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The main job, end to end, in throw-away network namespaces: a "node" namespace runs idbrokerd (files
mode, mock provider, conf/identities/ as the policy); two pods are made through the real CNI chain
bridge + host-local + idbroker (the CNI protocol, as a container runtime speaks it); pod-a, bound to
demo-identity, gets a token from http://169.254.169.254 with plain curl; pod-b, unbound, is refused; a
pod set up without idbroker gets no answer once `idbroker --guard` has installed the node's tables.
Everything is removed at the end, even on failure. Run as root after a build (scripts/demo.sh)."""
import base64
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import netns_world  # noqa: E402
from netns_world import World  # noqa: E402

URL = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"


def say(msg=""):
    print(msg, flush=True)


def step(msg):
    say("\n\033[1m==> %s\033[0m" % msg)


def jwt_claims(tok):
    part = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def main():
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with open(os.path.join(src, "conf/identities/demo.yaml")) as f:
        policy = f.read()
    with open(os.path.join(src, "conf/identities/pods.yaml")) as f:
        pods = f.read()
    ok = True
    with World("demo") as w:
        step("node namespace '%s' (the whole demo lives inside it and is deleted at the end)" % w.node)
        w.start_imds()
        say("    a stand-in for the real IMDS listens on 169.254.169.254:80 in the node: it must see no pod request")
        broker = w.start_real_broker(policy + "---\n" + pods)
        say("    idbrokerd is ready on %s:%d (files mode, mock provider)" % (netns_world.BROKER, netns_world.BROKER_PORT))
        say("    policy: conf/identities/demo.yaml (AzureIdentity demo-identity, AzureIdentityBinding demo-binding,")
        say("            selector 'demo') and conf/identities/pods.yaml (pod-a labelled aadpodidbinding=demo, pod-b not)")

        cl = w.conflist("1.0.0")
        step("before any pod: idbroker --guard < the conflist (what the install step does on a node)")
        p = w.node_exec([netns_world.IDBROKER_CNI, "--guard"], input=json.dumps(cl))
        say("    %s" % (p.stderr.strip() or "exit %d" % p.returncode))
        ok &= p.returncode == 0
        early = w.new_pod("pod-early")
        code, _, _ = w.chain("ADD", w.conflist("1.0.0", chained=None), early)
        rc, status, _ = early.curl(timeout=2)
        say("    pod-early, set up by bridge + host-local alone (as before idbroker was installed): curl exit %d,"
            " no answer from 169.254.169.254 (fail closed)" % rc)
        ok &= code == 0 and rc != 0 and status is None

        step("CNI ADD through bridge + host-local + idbroker for pod-a and pod-b")
        a, b = w.new_pod("pod-a"), w.new_pod("pod-b")
        for p in (a, b):
            code, out, err = w.chain("ADD", cl, p)
            say("    %s: ADD exit %d, address %s, host side %s" % (p.name, code, p.ip, p.host_veth()))
            ok &= code == 0
        say("    the redirect exists before the pods run anything: set inet idbroker pods4 (node side) holds")
        out = w.node_exec(["nft", "list", "set", "inet", "idbroker", "pods4"]).stdout
        elems = " ".join(out.split("elements = {", 1)[-1].split("}", 1)[0].split())
        say("       { %s }  (bridge . pod address: only these may reach the broker)" % elems)

        step("pod-a: curl -H Metadata:true '%s'" % URL)
        rc, status, body = a.curl()
        say("    HTTP %s" % status)
        if status == 200:
            j = json.loads(body)
            c = jwt_claims(j["access_token"])
            say("    client_id %s, expires_on %s, token_type %s" % (j["client_id"], j["expires_on"], j["token_type"]))
            say("    the JWT says: aud=%s appid=%s xms_mirid=%s" % (c.get("aud"), c.get("appid"), c.get("xms_mirid")))
        ok &= status == 200

        step("pod-b (no binding): the same request")
        rc, status, body = b.curl()
        say("    HTTP %s %s" % (status, body.strip()))
        ok &= status == 400

        step("pod-b pretends to be pod-a (takes pod-a's address as its source)")
        b.exec(["ip", "addr", "add", a.ip + "/24", "dev", "eth0"])
        rc, status, body = b.curl(source=a.ip, timeout=2)
        say("    curl exit %d (%s): dropped on the node side, no token" % (rc, "timed out" if rc == 28 else "refused" if rc == 7 else "?"))
        ok &= rc != 0

        step("what the broker knows (idbrokerctl)")
        ctl = os.path.join(netns_world.BUILD, "idbrokerctl")
        for args in (["pods"], ["explain", "default/pod-b"]):
            p = w.node_exec([ctl, "--socket", w.broker_socket] + args)
            for line in p.stdout.rstrip().splitlines():
                say("    " + line)

        step("CNI DEL, then the stand-in IMDS's request count")
        for p in (a, b):
            code, _, _ = w.chain("DEL", cl, p)
            ok &= code == 0
        seen = w.requests(w.imds_log)
        say("    requests that reached the stand-in IMDS: %d" % len(seen))
        ok &= not seen
        w.stop(broker)
    say("\n%s: namespaces, rules and files removed" % ("demo succeeded" if ok else "DEMO FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
