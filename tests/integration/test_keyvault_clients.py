#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Checks the keyvault provider's fakes against real Azure SDK clients, so the broker is tested against
fakes that behave like the services:

  - @azure/msal-node ConfidentialClientApplication gets a token from the fake Entra ID with a client secret,
    with a certificate named by its SHA-256 thumbprint (PS256 assertion, x5t#S256) and by its SHA-1
    thumbprint (RS256, x5t); the fake verified each assertion;
  - @azure/keyvault-secrets (with @azure/identity's ClientSecretCredential against the fake Entra ID) reads
    a secret, and an older version of it, from the fake Key Vault through its 401 challenge.

The npm packages are pinned in tests/fixtures/node-kv/package-lock.json; `npm ci` installs them when
node_modules is missing. Without node or npm the test prints SKIP and passes.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import kvfakes  # noqa: E402
import kvpki  # noqa: E402

NODE_DIR = os.path.join(kvfakes.SOURCE, "tests", "fixtures", "node-kv")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def main():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        print("SKIP - node or npm is not installed")
        return
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                           timeout=600)
        check(p.returncode == 0, "npm ci in tests/fixtures/node-kv (%s)" % p.stderr[-500:])
    tmp = tempfile.mkdtemp(prefix="idb-kv-node-")
    try:
        with kvfakes.Fakes(tmp) as fk:
            run(fk, node, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(fk, node, tmp):
    key, cert = kvpki.make_client_cert("msal-cert")
    fk.register_app(TENANT, "aaaaaaaa-0000-0000-0000-000000000001", secrets=["node-secret"])
    fk.register_app(TENANT, "bbbbbbbb-0000-0000-0000-000000000002", certs=[cert])
    old = fk.set_secret("node-check", "first value")
    fk.set_secret("node-check", "second value", "text/plain")
    cfg = {
        "tenant": TENANT, "authority": fk.entra_url, "vaultUrl": fk.vault_url, "scope": "https://vault.azure.net/.default",
        "secretClientId": "aaaaaaaa-0000-0000-0000-000000000001", "secret": "node-secret",
        "certClientId": "bbbbbbbb-0000-0000-0000-000000000002", "keyPem": kvpki.pem_key(key).decode(),
        "certPem": kvpki.pem_cert(cert).decode(), "thumbprintSha256": kvpki.thumbprint_sha256_hex(cert),
        "thumbprintSha1": kvpki.thumbprint_sha1_hex(cert), "secretName": "node-check", "expectValue": "second value",
        "oldVersion": old["version"], "oldValue": "first value",
    }
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=fk.ca_file, NO_PROXY="*", AZURE_LOG_LEVEL="")
    for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    p = subprocess.run([node, os.path.join(NODE_DIR, "check.js"), json.dumps(cfg)], cwd=NODE_DIR, env=env,
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        print(p.stderr[-2000:])
    results = {}
    for line in p.stdout.splitlines():
        try:
            r = json.loads(line)
            results[r["check"]] = r
        except ValueError:
            print("node: " + line)
    for name, what in [("msal-secret", "msal-node gets a token with a client secret"),
                       ("msal-cert-sha256", "msal-node gets a token with a certificate (SHA-256 thumbprint)"),
                       ("msal-cert-sha1", "msal-node gets a token with a certificate (SHA-1 thumbprint)"),
                       ("keyvault-secrets", "@azure/keyvault-secrets reads the newest version of a secret"),
                       ("keyvault-secrets-version", "@azure/keyvault-secrets reads an older version")]:
        r = results.get(name, {"ok": False, "detail": "no result; stderr: " + p.stderr[-800:]})
        check(r["ok"], "%s (%s)" % (what, r["detail"]))
        if name.startswith("msal"):
            equal(r["detail"], "https://vault.azure.net", "%s: token for the scope's resource" % name)
    log = fk.entra("/_control/log")
    algs = sorted({r["alg"] for r in log if r["auth"] == "assertion" and r["verified"] and r["status"] == 200})
    check(len(algs) >= 1, "the fake Entra ID verified msal-node's assertions (algorithms %s)" % algs)
    vlog = fk.vault("/_control/log")
    check(any(r["status"] == 401 for r in vlog) and any(r["status"] == 200 and r["authorized"] for r in vlog),
          "the Key Vault client went through the 401 challenge, then read with a token")


if __name__ == "__main__":
    idbtest.run_main(main)
