# SPDX-License-Identifier: Apache-2.0
"""Compatibility (issue 9): the real npm clients, unmodified, inside a pod behind the CNI redirect.

@azure/identity ManagedIdentityCredential (system default and with a client id), DefaultAzureCredential
(which probes IMDS first; every other credential's variables are absent) and @azure/msal-node
ManagedIdentityApplication (system default and with a client id) run in pods made by bridge + host-local
+ idbroker, with no endpoint override in their environment. The bound pod gets tokens of its identities
(verified against the mock provider's JWKS); asking for an identity that is not bound, or asking from a
pod without a binding, fails cleanly (an error, exit 1, no token). The node's real IMDS never sees a
request. Versions are pinned in tests/fixtures/node/package-lock.json; `npm ci` runs when node_modules
is missing, and without node, npm or a registry the test is skipped (77)."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from sdk_world import DEFAULT_ID, OTHER_ID, UNKNOWN_ID, VAULT, SdkWorld, check, equal, run_main  # noqa: E402

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "node")
SCRIPT = os.path.join(NODE_DIR, "sdk-pod.js")


def ensure_packages():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        print("SKIP: node or npm is not installed")
        sys.exit(77)
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@azure", "msal-node")):
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                           timeout=600)
        if p.returncode != 0:
            print("SKIP: npm ci in tests/fixtures/node failed (no registry?): %s" % p.stderr[-500:])
            sys.exit(77)
    versions = {}
    for pkg in ("@azure/identity", "@azure/msal-node"):
        with open(os.path.join(NODE_DIR, "node_modules", pkg, "package.json")) as f:
            versions[pkg] = json.load(f)["version"]
    v = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    print("# node %s, @azure/identity %s, @azure/msal-node %s" % (v, versions["@azure/identity"],
                                                               versions["@azure/msal-node"]), flush=True)
    return node


def sdk(world, node, pod, mode, client_id=None):
    argv = [node, SCRIPT, mode, VAULT] + ([client_id] if client_id else [])
    p = world.run_in_pod(pod, argv, cwd=NODE_DIR)
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"error": "no JSON", "message": (p.stdout + p.stderr)[-500:]}
    return p.returncode, out


def main():
    node = ensure_packages()
    s = SdkWorld("sdn")
    try:
        cases = [
            ("identity-mi", None, DEFAULT_ID, "@azure/identity ManagedIdentityCredential, system default"),
            ("identity-mi", OTHER_ID, OTHER_ID, "@azure/identity ManagedIdentityCredential({clientId})"),
            ("identity-dac", None, DEFAULT_ID, "@azure/identity DefaultAzureCredential"),
            ("identity-dac", OTHER_ID, OTHER_ID, "@azure/identity DefaultAzureCredential({managedIdentityClientId})"),
            ("msal-mi", None, DEFAULT_ID, "@azure/msal-node ManagedIdentityApplication, system default"),
            ("msal-mi", OTHER_ID, OTHER_ID, "@azure/msal-node ManagedIdentityApplication(userAssignedClientId)"),
        ]
        for mode, cid, want, what in cases:
            rc, out = sdk(s, node, s.bound, mode, cid)
            check(rc == 0 and "token" in out, "%s in the bound pod gets a token (%s)" % (what, out.get("message", "ok")))
            s.verify(out["token"], VAULT, want, what)
            print("#   %s: %d ms" % (what, out["ms"]), flush=True)

        for mode, what in (("identity-mi", "ManagedIdentityCredential"), ("msal-mi", "ManagedIdentityApplication")):
            rc, out = sdk(s, node, s.bound, mode, UNKNOWN_ID)
            check(rc == 1 and "token" not in out,
                  "%s asking for a client id not bound to the pod fails cleanly: %s: %s (%d ms)"
                  % (what, out.get("error"), out.get("message", "")[:160], out.get("ms", -1)))

        for mode, what in (("identity-mi", "@azure/identity ManagedIdentityCredential"),
                           ("identity-dac", "@azure/identity DefaultAzureCredential"),
                           ("msal-mi", "@azure/msal-node ManagedIdentityApplication")):
            rc, out = sdk(s, node, s.unbound, mode)
            check(rc == 1 and "token" not in out and out.get("error") != "no JSON",
                  "%s in a pod without a binding fails cleanly: %s: %s (%d ms)"
                  % (what, out.get("error"), out.get("message", "")[:200].replace("\n", " "), out.get("ms", -1)))
        s.finish()
    finally:
        s.close()


if __name__ == "__main__":
    run_main(main)
