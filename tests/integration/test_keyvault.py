#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The keyvault provider through a real idbrokerd, against the fake Key Vault and fake Entra ID (TLS with a
test CA made here). The vault token comes from the mock provider (bootstrapProvider "mock"), and the fake
vault verifies it against the mock's JWKS.

  1. a type-1 identity (client secret in the vault) and a type-2 identity (password-protected PKCS#12 in the
     vault, password in a second secret) each get a token from the fake Entra ID for the pod's resource; the
     fake verified the assertion's signature; a PEM certificate found through the default vault works too;
  2. rotation: the secret is replaced in the vault and the old one revoked at Entra ID -> the next token
     (bypass_cache) works after exactly one re-read of the vault;
  3. errors reach the pod in IMDS' shape with a clear error_description and the broker stays up: wrong
     tenant, expired certificate, malformed PKCS#12, vault 403, vault 429 (Retry-After), a vault outside
     the allow-list; Key Vault's 401 challenge for another resource is followed once;
  4. nothing secret is in the broker's log.
"""
import base64
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import kvfakes  # noqa: E402
import kvpki  # noqa: E402

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RESOURCE = "https://management.azure.com/"

IDENTITY = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: {name}
  namespace: default
  annotations:
{annotations}spec:
  type: {type}
  clientID: {client_id}
  tenantID: {tenant}
  clientPassword:
    name: {secret_name}
    namespace: default
---
"""


def identity(name, type_, client_id, tenant=TENANT, secret_url=None, password_url=None, secret_name=None):
    ann = ""
    if secret_url:
        ann += "    idbroker.io/keyvault-secret: %s\n" % secret_url
    if password_url:
        ann += "    idbroker.io/keyvault-password-secret: %s\n" % password_url
    if not ann:
        ann = "    idbroker.io/note: default-vault\n"
    return IDENTITY.format(name=name, type=type_, client_id=client_id, tenant=tenant, annotations=ann,
                           secret_name=secret_name or name)


def token_json(b, ip, resource=RESOURCE, extra=""):
    st, hdrs, body = b.token(resource=resource, source=ip, extra=extra)
    try:
        obj = json.loads(body)
    except ValueError:
        obj = {"raw": body.decode("utf-8", "replace")}
    return st, hdrs, obj


def claims(tok):
    return json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))


def main():
    tmp = tempfile.mkdtemp(prefix="idb-kv-it-")
    os.chmod(tmp, 0o755)
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    b = idbtest.Broker(start=False, providers={})
    try:
        # The fake vault trusts the mock's JWKS (written by the broker at start) and the fake Entra ID's.
        with kvfakes.Fakes(tmp, vault_jwks=[b.jwks]) as fk:
            run_with(b, fk)
    finally:
        b.close()


def run_with(b, fk):
    secrets = {}
    # --- the world in the fakes ---
    fk.register_app(TENANT, "11111111-0000-0000-0000-000000000001", secrets=["s3cr3t-one~&=+ value"])
    fk.set_secret("sp-secret", "s3cr3t-one~&=+ value")
    secrets["sp-secret"] = "s3cr3t-one~&=+ value"

    key, cert = kvpki.make_client_cert("sp-cert")
    fk.register_app(TENANT, "22222222-0000-0000-0000-000000000002", certs=[cert])
    pfx = kvpki.pkcs12_b64(key, cert, password="pfx-pass-123")
    fk.set_secret("sp-cert-pfx", pfx, "application/x-pkcs12")
    fk.set_secret("sp-cert-pfx-password", "pfx-pass-123")
    secrets["pfx"] = pfx[:40]

    pkey, pcert = kvpki.make_client_cert("sp-pem")
    fk.register_app(TENANT, "33333333-0000-0000-0000-000000000003", certs=[pcert])
    fk.set_secret("sp-pem-cred", kvpki.pem_bundle(pkey, pcert), "application/x-pem-file")

    ekey, ecert = kvpki.make_client_cert("sp-expired", expired=True)
    fk.register_app(TENANT, "44444444-0000-0000-0000-000000000004", certs=[ecert])
    fk.set_secret("sp-expired", kvpki.pkcs12_b64(ekey, ecert), "application/x-pkcs12")

    fk.set_secret("sp-badpfx", base64.b64encode(b"this is not a PKCS#12 file").decode(), "application/x-pkcs12")
    fk.register_app(TENANT, "55555555-0000-0000-0000-000000000005", secrets=["other-secret"])
    fk.set_secret("sp-forbidden", "other-secret")
    fk.set_secret("sp-throttled", "other-secret")
    fk.set_secret("sp-challenge", "other-secret")
    fk.set_secret("sp-wrongtenant", "other-secret")
    secrets["other"] = "other-secret"

    v = fk.vault_url
    ids = [
        ("sp-secret", 1, "11111111-0000-0000-0000-000000000001", dict(secret_url=v + "/secrets/sp-secret")),
        ("sp-cert", 2, "22222222-0000-0000-0000-000000000002",
         dict(secret_url=v + "/secrets/sp-cert-pfx", password_url=v + "/secrets/sp-cert-pfx-password")),
        ("sp-pem", 2, "33333333-0000-0000-0000-000000000003", dict(secret_name="sp-pem-cred")),
        ("sp-expired", 2, "44444444-0000-0000-0000-000000000004", dict(secret_url=v + "/secrets/sp-expired/")),
        ("sp-badpfx", 2, "55555555-0000-0000-0000-000000000005", dict()),
        ("sp-forbidden", 1, "55555555-0000-0000-0000-000000000005", dict()),
        ("sp-throttled", 1, "55555555-0000-0000-0000-000000000005", dict()),
        ("sp-challenge", 1, "55555555-0000-0000-0000-000000000005", dict()),
        ("sp-wrongtenant", 1, "55555555-0000-0000-0000-000000000005",
         dict(tenant="99999999-9999-9999-9999-999999999999")),
        ("sp-evil", 1, "55555555-0000-0000-0000-000000000005",
         dict(secret_url="https://evil.example.com/secrets/x")),
    ]
    manifests = ""
    for i, (name, type_, cid, kw) in enumerate(ids):
        manifests += identity(name, type_, cid, **kw)
        manifests += idbtest.binding_yaml(name + "-b", name, name)
        manifests += idbtest.pod_yaml("pod-" + name, name, uid="uid-%d" % i)

    b.write_manifests(manifests)
    b._install_plugin(os.path.join(idbtest.BUILD, "providers", "keyvault.so"))
    b.conf["providers"] = {
        "mock": {"jwksFile": b.jwks, "lifetimeSeconds": 3600},
        "keyvault": {"bootstrapProvider": "mock", "caFile": fk.ca_file, "vaultUrl": fk.vault_url,
                     "authorityHost": fk.entra_url, "allowedAuthorityHosts": ["127.0.0.1:*"],
                     "allowedVaultHosts": ["127.0.0.1:%d" % fk.vault_port]},
    }
    b.conf["typeProviders"] = {"0": "mock", "1": "keyvault", "2": "keyvault"}
    b.write_conf()
    b.start()
    ip = {}
    for i, (name, _, _, _) in enumerate(ids):
        ip[name] = "127.0.0.%d" % (10 + i)
        b.register("default", "pod-" + name, ip[name], uid="uid-%d" % i)
    scenarios(b, fk, ip)
    b.stop()
    log = b.log()
    for what, s in secrets.items():
        check(s not in log, "the broker log holds no secret (%s)" % what)
    check("eyJ" not in log, "the broker log holds no JWT")
    check("PRIVATE KEY" not in log, "the broker log holds no private key")


def scenarios(b, fk, ip):
    # 1. type 1: client secret
    st, _, obj = token_json(b, ip["sp-secret"])
    equal(st, 200, "type-1 identity: token from Entra ID through the vault's client secret")
    if st == 200:
        c = claims(obj["access_token"])
        equal(c["aud"], RESOURCE, "the token is for the pod's resource")
        equal(c["appid"], "11111111-0000-0000-0000-000000000001", "the token is the service principal's")
        check(int(obj["expires_on"]) > int(obj["not_before"]), "expires_on is computed from expires_in")
    elog = fk.entra("/_control/log")
    check(any(r["client_id"] == "11111111-0000-0000-0000-000000000001" and r["auth"] == "secret" and r["status"] == 200
              and r["content_type"].startswith("application/x-www-form-urlencoded") for r in elog),
          "fake Entra ID got a form-encoded client_secret grant")
    vlog = fk.vault("/_control/log")
    check(any(r["path"] == "/secrets/sp-secret" and r["authorized"] and r["aud"] == "https://vault.azure.net"
              for r in vlog), "the vault was read with the node identity's token for https://vault.azure.net")

    # 1. type 2: password-protected PKCS#12, password in a second secret
    st, _, obj = token_json(b, ip["sp-cert"], resource="https://vault.azure.net")
    equal(st, 200, "type-2 identity: token through a password-protected PKCS#12 from the vault")
    if st == 200:
        equal(claims(obj["access_token"])["aud"], "https://vault.azure.net", "type-2 token for the right resource")
    elog = fk.entra("/_control/log")
    check(any(r["client_id"] == "22222222-0000-0000-0000-000000000002" and r["auth"] == "assertion" and r["verified"]
              and r["alg"] == "RS256" and r["status"] == 200 for r in elog),
          "fake Entra ID verified the client assertion's signature (RS256)")

    st, _, obj = token_json(b, ip["sp-pem"], resource="api://my-app/.default")
    equal(st, 200, "PEM certificate found through vaultUrl + clientPassword.name; scope already ending in /.default")
    if st == 200:
        equal(claims(obj["access_token"])["aud"], "api://my-app", "the /.default scope is kept as is")

    # 2. rotation
    reads_before = sum(1 for r in fk.vault("/_control/log") if r["path"] == "/secrets/sp-secret" and r["status"] == 200)
    fk.set_secret("sp-secret", "rotated-secret-two")
    fk.entra("/_control/add-secret", {"tenant": TENANT, "client_id": "11111111-0000-0000-0000-000000000001",
                                      "secret": "rotated-secret-two"})
    fk.entra("/_control/revoke", {"tenant": TENANT, "client_id": "11111111-0000-0000-0000-000000000001",
                                  "secret": "s3cr3t-one~&=+ value"})
    fk.entra("/_control/reset-log", {})
    st, _, obj = token_json(b, ip["sp-secret"], extra="&bypass_cache=true")
    equal(st, 200, "after rotation the next token (bypass_cache) works without a restart")
    reads_after = sum(1 for r in fk.vault("/_control/log") if r["path"] == "/secrets/sp-secret" and r["status"] == 200)
    equal(reads_after - reads_before, 1, "exactly one re-read of the vault after invalid_client")
    elog = [r for r in fk.entra("/_control/log") if r["client_id"] == "11111111-0000-0000-0000-000000000001"]
    equal([r["status"] for r in elog], [401, 200], "the old secret was refused once, the new one accepted")
    check("rotated-secret-two" not in b.log(), "the rotated secret is not in the log")

    # 3. errors
    st, _, obj = token_json(b, ip["sp-wrongtenant"])
    equal(st, 400, "wrong tenant: 400 from Entra ID passed on")
    check("AADSTS90002" in obj.get("error_description", ""), "wrong tenant: clear error_description (%s)" % obj)

    st, _, obj = token_json(b, ip["sp-expired"])
    equal(st, 400, "expired certificate: 400")
    check(obj.get("error") == "invalid_client" and "expired" in obj.get("error_description", ""),
          "expired certificate: clear error_description (%s)" % obj)

    st, _, obj = token_json(b, ip["sp-badpfx"])
    equal(st, 400, "malformed PKCS#12: 400")
    check("PKCS#12" in obj.get("error_description", ""), "malformed PKCS#12: clear error_description (%s)" % obj)

    fk.vault("/_control/knobs", {"forbidden": ["sp-forbidden"]})
    st, _, obj = token_json(b, ip["sp-forbidden"])
    equal(st, 403, "vault 403: the pod gets 403")
    check(obj.get("error") == "forbidden" and "Key Vault Secrets User" in obj.get("error_description", "")
          and "ForbiddenByRbac" in obj.get("error_description", ""), "vault 403: clear error_description (%s)" % obj)

    fk.vault("/_control/knobs", {"throttle": 1, "retry_after": 7})
    st, hdrs, obj = token_json(b, ip["sp-throttled"])
    equal(st, 429, "vault 429: the pod gets 429")
    equal(hdrs.get("retry-after"), "7", "vault 429: Retry-After passed on")
    check("throttling" in obj.get("error_description", ""), "vault 429: clear error_description (%s)" % obj)

    st, _, obj = token_json(b, ip["sp-evil"])
    equal(st, 400, "a vault outside allowedVaultHosts: 400")
    check("allowedVaultHosts" in obj.get("error_description", ""), "not-allowed vault: clear error (%s)" % obj)
    check(not any("evil" in r["path"] for r in fk.vault("/_control/log")), "nothing was sent for the evil vault")

    # Key Vault's challenge for another resource of the same host is followed once.
    fk.vault("/_control/knobs", {"resource": "https://127.0.0.1"})
    fk.vault("/_control/reset-log", {})
    st, _, obj = token_json(b, ip["sp-challenge"])
    equal(st, 200, "401 challenge for resource https://127.0.0.1: followed, token issued")
    auds = [r["aud"] for r in fk.vault("/_control/log") if r["path"] == "/secrets/sp-challenge"]
    equal(auds, ["https://vault.azure.net", "https://127.0.0.1"], "one retry with the challenged resource")
    fk.vault("/_control/knobs", {"resource": "https://vault.azure.net"})

    st, _, _ = b.health("/healthz")
    equal(st, 200, "the broker is still up")


if __name__ == "__main__":
    idbtest.run_main(main)
