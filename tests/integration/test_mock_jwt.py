#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The mock provider's tokens verify with PyJWT against the JWKS it publishes, and only against it.

Runs build/tools/mint-token (the broker's real loader and host API) and tests/fixtures/jwt_verify.py.
Needs IDB_BUILD_DIR and IDB_SOURCE_DIR (set by ctest). One line per check; exits 1 on any failure.
"""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

BUILD = os.environ.get("IDB_BUILD_DIR", "build")
SOURCE = os.environ.get("IDB_SOURCE_DIR", ".")
MINT = os.path.join(BUILD, "tools", "mint-token")
PROVIDERS = os.path.join(BUILD, "providers")
VERIFY = os.path.join(SOURCE, "tests", "fixtures", "jwt_verify.py")
AUD = "https://vault.azure.net"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISS = "https://sts.windows.net/%s/" % TENANT

failures = 0


def check(name, ok, detail=""):
    global failures
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""))
    if not ok:
        failures += 1


def mint(conf, *extra, resource=AUD):
    p = subprocess.run([MINT, *extra, PROVIDERS, "mock", json.dumps(conf), resource],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("mint-token failed: %s" % p.stderr.strip())
    return p.stdout.strip()


def verify(jwks, token, *extra, aud=AUD):
    p = subprocess.run(["/usr/bin/python3", VERIFY, jwks, token, "--aud", aud, *extra],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else p.stderr.strip())


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main():
    tmp = tempfile.mkdtemp(prefix="idb-mockjwt-")
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % failures)
    return 1 if failures else 0


def run(tmp):
    jwks_a = os.path.join(tmp, "a.json")
    conf = {"tenantId": TENANT, "jwksFile": jwks_a, "lifetimeSeconds": 900}
    tok = mint(conf, "--identity", "team-a/reader", "--client-id", "11111111-aaaa-bbbb-cccc-000000000001",
               "--resource-id", "/subscriptions/s/resourceGroups/g/providers/"
               "Microsoft.ManagedIdentity/userAssignedIdentities/reader",
               "--annotation", "idbroker.io/object-id=22222222-aaaa-bbbb-cccc-000000000002")
    rc, claims = verify(jwks_a, tok, "--iss", ISS)
    check("token verifies against its JWKS with PyJWT", rc == 0, str(claims))
    if rc != 0:
        return
    check("aud is the resource", claims["aud"] == AUD)
    check("iss and tid come from tenantId", claims["iss"] == ISS and claims["tid"] == TENANT)
    check("oid and sub come from the object-id annotation",
          claims["oid"] == claims["sub"] == "22222222-aaaa-bbbb-cccc-000000000002")
    check("appid is the client id", claims["appid"] == "11111111-aaaa-bbbb-cccc-000000000001")
    check("xms_mirid is the resource id", claims["xms_mirid"].endswith("/userAssignedIdentities/reader"))
    check("lifetime is lifetimeSeconds", claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"])
    check("uti and jti are set", claims["jti"] == claims["uti"] and len(claims["jti"]) >= 16)

    with open(jwks_a, encoding="utf-8") as f:
        key = json.load(f)["keys"][0]
    canon = json.dumps({"e": key["e"], "kty": "RSA", "n": key["n"]}, separators=(",", ":"), sort_keys=True)
    header = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
    check("kid is the RFC 7638 thumbprint", key["kid"] == b64url(hashlib.sha256(canon.encode()).digest())
          and header["kid"] == key["kid"], "%s vs %s" % (key["kid"], header))
    check("JWKS file is 0644", (os.stat(jwks_a).st_mode & 0o7777) == 0o644)

    rc, _ = verify(jwks_a, tok, aud="https://management.azure.com/")
    check("wrong audience is rejected", rc == 1)
    rc, _ = verify(jwks_a, tok, "--iss", "https://login.microsoftonline.com/%s/v2.0" % TENANT)
    check("wrong issuer is rejected", rc == 1)

    # A second instance generates its own key: its JWKS must not verify the first token.
    jwks_b = os.path.join(tmp, "b.json")
    tok_b = mint({"jwksFile": jwks_b}, "--identity", "team-a/reader")
    rc, _ = verify(jwks_b, tok_b)
    check("second key's token verifies against its own JWKS", rc == 0)
    rc, err = verify(jwks_b, tok)
    check("token is rejected by another JWKS (kid lookup)", rc == 1 and "no key with kid" in err, err)
    rc, err = verify(jwks_b, tok, "--any-key")
    check("token is rejected by another JWKS (signature)", rc == 1 and "InvalidSignature" in err, err)
    rc, claims_b = verify(jwks_b, tok_b)
    check("derived oid is a stable UUID for namespace/name",
          rc == 0 and len(claims_b["oid"]) == 36 and claims_b["oid"][14] == "8"
          and verify(jwks_b, mint({"jwksFile": jwks_b}, "--identity", "team-a/reader"))[1]["oid"]
          == claims_b["oid"])

    # A configured signing key: two instances publish the same key, so tokens cross-verify.
    pem = os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", pem], check=True, capture_output=True, timeout=60)
    os.chmod(pem, 0o600)
    jwks_c1, jwks_c2 = os.path.join(tmp, "c1.json"), os.path.join(tmp, "c2.json")
    mint({"signingKeyFile": pem, "jwksFile": jwks_c1})
    tok_c = mint({"signingKeyFile": pem, "jwksFile": jwks_c2})
    rc, _ = verify(jwks_c1, tok_c, "--iss", "https://sts.windows.net/00000000-0000-0000-0000-000000000000/")
    check("signingKeyFile: a token of one instance verifies with another's JWKS", rc == 0)


if __name__ == "__main__":
    sys.exit(main())
