# SPDX-License-Identifier: Apache-2.0
"""Compatibility (issue 9): Debian's python3-azure (azure.identity), unmodified, inside a pod behind the CNI
redirect, with no endpoint override in its environment.

ManagedIdentityCredential (system default and with a client id) and DefaultAzureCredential (every other
credential's variables absent, so it reaches managed identity) get the bound pod's tokens (verified
against the mock provider's JWKS); a client id that is not bound, and a pod without a binding, fail
cleanly (ClientAuthenticationError or CredentialUnavailableError, no token). Debian's packages import only
with /usr/bin/python3. Without python3-azure the test is skipped (77)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from sdk_world import DEFAULT_ID, OTHER_ID, UNKNOWN_ID, VAULT, SdkWorld, check, run_main  # noqa: E402

PYTHON = "/usr/bin/python3"

# The application: the documented way to get a token, nothing configured.
APP = r"""
import json, sys, time
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
mode, scope, cid = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
t0 = time.monotonic()
try:
    if mode == "mi":
        cred = ManagedIdentityCredential(client_id=cid) if cid else ManagedIdentityCredential()
    else:
        cred = DefaultAzureCredential(managed_identity_client_id=cid) if cid else DefaultAzureCredential()
    t = cred.get_token(scope)
    out = {"token": t.token, "expiresOn": t.expires_on}
    rc = 0
except Exception as e:
    out = {"error": type(e).__name__, "message": str(e)}
    rc = 1
out["ms"] = int((time.monotonic() - t0) * 1000)
print(json.dumps(out))
sys.exit(rc)
"""


def versions():
    p = subprocess.run([PYTHON, "-c", "import azure.identity, azure.core; print(azure.identity.__version__, "
                        "azure.core.__version__)"], capture_output=True, text=True)
    if p.returncode != 0:
        print("SKIP: Debian's python3-azure is not installed (apt-get install python3-azure): %s" % p.stderr[-300:])
        sys.exit(77)
    ident, core = p.stdout.split()
    pkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-azure"], capture_output=True, text=True)
    print("# %s, python3-azure %s, azure.identity %s, azure.core %s" % (
        subprocess.run([PYTHON, "--version"], capture_output=True, text=True).stdout.strip(), pkg.stdout, ident, core),
        flush=True)


def sdk(world, pod, mode, client_id=None):
    argv = [PYTHON, "-c", APP, mode, VAULT + "/.default"] + ([client_id] if client_id else [])
    p = world.run_in_pod(pod, argv)
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"error": "no JSON", "message": (p.stdout + p.stderr)[-500:]}
    return p.returncode, out


def main():
    versions()
    s = SdkWorld("sdp")
    try:
        for mode, cid, want, what in (
            ("mi", None, DEFAULT_ID, "azure.identity ManagedIdentityCredential(), system default"),
            ("mi", OTHER_ID, OTHER_ID, "azure.identity ManagedIdentityCredential(client_id=...)"),
            ("dac", None, DEFAULT_ID, "azure.identity DefaultAzureCredential()"),
            ("dac", OTHER_ID, OTHER_ID, "azure.identity DefaultAzureCredential(managed_identity_client_id=...)"),
        ):
            rc, out = sdk(s, s.bound, mode, cid)
            check(rc == 0 and "token" in out, "%s in the bound pod gets a token (%s)" % (what, out.get("message", "ok")))
            s.verify(out["token"], VAULT, want, what)
            print("#   %s: %d ms" % (what, out["ms"]), flush=True)

        rc, out = sdk(s, s.bound, "mi", UNKNOWN_ID)
        check(rc == 1 and out.get("error") in ("ClientAuthenticationError", "CredentialUnavailableError"),
              "ManagedIdentityCredential asking for a client id not bound to the pod fails cleanly: %s: %s (%d ms)"
              % (out.get("error"), out.get("message", "")[:200].replace("\n", " "), out.get("ms", -1)))
        for mode, what in (("mi", "ManagedIdentityCredential"), ("dac", "DefaultAzureCredential")):
            rc, out = sdk(s, s.unbound, mode)
            check(rc == 1 and out.get("error") in ("ClientAuthenticationError", "CredentialUnavailableError"),
                  "azure.identity %s in a pod without a binding fails cleanly: %s: %s (%d ms)"
                  % (what, out.get("error"), out.get("message", "")[:200].replace("\n", " "), out.get("ms", -1)))
        s.finish()
    finally:
        s.close()


if __name__ == "__main__":
    run_main(main)
