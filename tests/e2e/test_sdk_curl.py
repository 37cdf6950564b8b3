# SPDX-License-Identifier: Apache-2.0
"""Compatibility (issue 9): curl, the way the IMDS documentation shows it, inside a pod behind the CNI
redirect. The bound pod gets IMDS' exact JSON (every value a string) for its default identity and, with
client_id= or mi_res_id=, for another identity bound to it; without the Metadata header, for an identity
not bound to it, and from a pod without a binding, it gets IMDS' 400 errors."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from sdk_world import DEFAULT_ID, OTHER_ID, UNKNOWN_ID, VAULT, SdkWorld, check, equal, run_main  # noqa: E402

BASE = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + VAULT
OTHER_RES = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
             "Microsoft.ManagedIdentity/userAssignedIdentities/other-identity")
KEYS = ["access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before", "resource",
        "token_type"]


def curl(s, pod, query="", metadata=True):
    argv = ["curl", "-sS", "-m", "10", "-w", "\n%{http_code}"] + (["-H", "Metadata: true"] if metadata else [])
    p = s.run_in_pod(pod, argv + [BASE + query])
    body, _, code = p.stdout.rpartition("\n")
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return p.returncode, code, body


def main():
    v = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print("# %s" % v, flush=True)
    s = SdkWorld("sdc")
    try:
        rc, code, body = curl(s, s.bound)
        equal((rc, code), (0, "200"), "curl -H Metadata:true in the bound pod: 200")
        equal(sorted(body), KEYS, "... IMDS' keys")
        check(all(isinstance(x, str) for x in body.values()), "... every value a string, as IMDS sends them")
        equal((body["client_id"], body["resource"], body["token_type"]), (DEFAULT_ID, VAULT, "Bearer"),
              "... the default identity, the resource asked for, Bearer")
        s.verify(body["access_token"], VAULT, DEFAULT_ID, "curl, default identity")
        for q, what in (("&client_id=" + OTHER_ID, "client_id"), ("&mi_res_id=" + OTHER_RES, "mi_res_id"),
                        ("&msi_res_id=" + OTHER_RES, "msi_res_id")):
            rc, code, body = curl(s, s.bound, q)
            equal((code, body.get("client_id") if isinstance(body, dict) else body), ("200", OTHER_ID),
                  "curl with %s= of another identity bound to the pod gets that identity" % what)
            s.verify(body["access_token"], VAULT, OTHER_ID, "curl, " + what)

        rc, code, body = curl(s, s.bound, metadata=False)
        equal((code, body.get("error")), ("400", "invalid_request"), "no Metadata header: 400 invalid_request")
        rc, code, body = curl(s, s.bound, "&client_id=" + UNKNOWN_ID)
        equal((code, body.get("error"), "access_token" in body), ("400", "invalid_request", False),
              "a client_id not bound to the pod: 400, no token (%s)" % body.get("error_description"))
        rc, code, body = curl(s, s.unbound)
        equal((code, body.get("error"), "access_token" in body), ("400", "invalid_request", False),
              "a pod without a binding: 400, no token (%s)" % body.get("error_description"))
        s.finish()
    finally:
        s.close()


if __name__ == "__main__":
    run_main(main)
