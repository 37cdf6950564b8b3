# SPDX-License-Identifier: Apache-2.0
"""Compatibility (issue 9): Debian's azure-cli, unmodified, inside a pod behind the CNI redirect, with no
endpoint override in its environment.

`az login --identity` takes a token for https://management.core.windows.net/ from 169.254.169.254 (the
broker), reads the tenant from its `tid` claim and lists subscriptions at https://management.azure.com:
that is a fake ARM here (tests/fixtures/fake-arm.py, HTTPS with a test certificate, reached through a
`hosts` entry of the pod's namespace; REQUESTS_CA_BUNDLE names the certificate — the only variable set,
and it concerns ARM, not IMDS). The fake ARM checks that the bearer token is the pod's. Then
`az account show` and `az account get-access-token` (ARM and --resource) return the pod's identity and its
tokens, and `az login --identity --username CLIENT_ID|RESOURCE_ID` selects another identity bound to the
pod. In a pod without a
binding `az login --identity` fails cleanly (exit code 1, a message, no account). Other az commands talk to
ARM, which is not faked beyond /subscriptions. Without azure-cli the test is skipped (77): install it with
`apt-get install azure-cli` (Debian 12: 2.45)."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from sdk_world import DEFAULT_ID, OTHER_ID, TENANT, VAULT, SdkWorld, check, equal, run_main  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
ARM = "https://management.core.windows.net/"
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
OTHER_RES = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
             "Microsoft.ManagedIdentity/userAssignedIdentities/other-identity")


def az_version():
    az = shutil.which("az")
    if not az:
        print("SKIP: azure-cli is not installed (apt-get install azure-cli)")
        sys.exit(77)
    pkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "azure-cli"], capture_output=True, text=True).stdout
    print("# azure-cli %s (%s)" % (pkg or "?", az), flush=True)
    return az


def main():
    az = az_version()
    s = SdkWorld("sda")
    try:
        tmp = s.w.tmp
        cert, key, armlog = (os.path.join(tmp, n) for n in ("arm.pem", "arm.key", "arm.jsonl"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=management.azure.com",
                        "-addext", "subjectAltName=DNS:management.azure.com"], check=True, capture_output=True)
        open(armlog, "w").close()
        gw = s.bound.result["ips"][0]["gateway"]
        s.w.start(["/usr/bin/python3", os.path.join(FIXTURES, "fake-arm.py"), gw, "443", cert, key, armlog, TENANT,
                   SUBSCRIPTION])
        from netns_world import wait_for

        wait_for(lambda: s.w.listening(gw, 443), "fake ARM on %s:443 in the node namespace" % gw)
        for pod in (s.bound, s.unbound):
            with open("/etc/netns/%s/hosts" % pod.netns, "a") as f:
                f.write("%s management.azure.com\n" % gw)

        def az_run(pod, args, cfg):
            env = {"AZURE_CONFIG_DIR": os.path.join(tmp, cfg), "REQUESTS_CA_BUNDLE": cert,
                   "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_NO_COLOR": "true"}
            p = s.run_in_pod(pod, [az] + args + ["-o", "json"], extra_env=env, timeout=300)
            try:
                out = json.loads(p.stdout) if p.stdout.strip() else None
            except ValueError:
                out = p.stdout
            return p.returncode, out, p.stderr.strip()

        # System default: the pod's default identity.
        rc, out, err = az_run(s.bound, ["login", "--identity"], "az-bound")
        check(rc == 0 and isinstance(out, list) and out,
              "az login --identity in the bound pod succeeds (%s)" % (err[-300:] or "ok"))
        equal((out[0]["id"], out[0]["tenantId"], out[0]["user"]["type"], out[0]["user"]["name"]),
              (SUBSCRIPTION, TENANT, "servicePrincipal", "systemAssignedIdentity"),
              "... the fake ARM's subscription in the token's tenant, as a managed identity")
        arm = s.w.requests(armlog)
        check(arm and arm[0]["path"].startswith("/subscriptions") and arm[0]["token"],
              "... azure-cli listed subscriptions at ARM with a bearer token")
        s.verify(arm[0]["token"], ARM, DEFAULT_ID, "the token az sent to ARM")

        for args, aud, what in ((["account", "get-access-token"], ARM, "ARM"),
                                (["account", "get-access-token", "--resource", VAULT], VAULT, "--resource " + VAULT)):
            rc, out, err = az_run(s.bound, args, "az-bound")
            check(rc == 0 and isinstance(out, dict) and "accessToken" in out,
                  "az account get-access-token (%s) succeeds (%s)" % (what, err[-300:] or "ok"))
            equal((out.get("subscription"), out.get("tenant"), out.get("tokenType")), (SUBSCRIPTION, TENANT, "Bearer"),
                  "... for the logged-in subscription and tenant")
            s.verify(out["accessToken"], aud, DEFAULT_ID, "az account get-access-token (%s)" % what)

        rc, out, err = az_run(s.bound, ["account", "show"], "az-bound")
        equal((rc, (out or {}).get("id"), (out or {}).get("user", {}).get("name")),
              (0, SUBSCRIPTION, "systemAssignedIdentity"), "az account show: the logged-in subscription")

        # A user-assigned identity by client id: another identity bound to the same pod.
        rc, out, err = az_run(s.bound, ["login", "--identity", "--username", OTHER_ID], "az-other")
        check(rc == 0 and isinstance(out, list) and out,
              "az login --identity --username CLIENT_ID in the bound pod succeeds (%s)" % (err[-300:] or "ok"))
        equal(out[0]["user"]["assignedIdentityInfo"], "MSIClient-" + OTHER_ID, "... as that user-assigned identity")
        rc, out, err = az_run(s.bound, ["account", "get-access-token", "--resource", VAULT], "az-other")
        check(rc == 0 and isinstance(out, dict) and "accessToken" in out,
              "... az account get-access-token --resource then returns (%s)" % (err[-300:] or "ok"))
        s.verify(out["accessToken"], VAULT, OTHER_ID, "az account get-access-token, user-assigned")

        # A user-assigned identity by resource id (az asks IMDS with msi_res_id=).
        rc, out, err = az_run(s.bound, ["login", "--identity", "--username", OTHER_RES], "az-res")
        check(rc == 0 and isinstance(out, list) and out,
              "az login --identity --username RESOURCE_ID in the bound pod succeeds (%s)" % (err[-300:] or "ok"))
        equal(out[0]["user"]["assignedIdentityInfo"], "MSIResource-" + OTHER_RES, "... as that identity")
        rc, out, err = az_run(s.bound, ["account", "get-access-token", "--resource", VAULT], "az-res")
        check(rc == 0 and isinstance(out, dict) and "accessToken" in out,
              "... az account get-access-token --resource then returns (%s)" % (err[-300:] or "ok"))
        s.verify(out["accessToken"], VAULT, OTHER_ID, "az account get-access-token, by resource id")

        # A pod without a binding.
        before = len(s.w.requests(armlog))
        rc, out, err = az_run(s.unbound, ["login", "--identity"], "az-unbound")
        check(rc != 0 and not out, "az login --identity in a pod without a binding fails cleanly (exit %d): %s"
              % (rc, err.replace("\n", " ")[-300:]))
        equal(len(s.w.requests(armlog)), before, "... and never reaches ARM")
        rc, out, err = az_run(s.unbound, ["account", "get-access-token"], "az-unbound")
        check(rc != 0 and not out, "... then az account get-access-token fails too (%s)" % err.replace("\n", " ")[-200:])
        s.finish()
    finally:
        s.close()


if __name__ == "__main__":
    run_main(main)
