# SPDX-License-Identifier: Apache-2.0
"""DESIGN §3 against the real idbrokerd (files mode, mock provider) over real sockets: every path variant,
header rule, query rule, selector, the exact success JSON and the IMDS error shapes and codes. Fake pods are
127.0.0.x source addresses registered with idbrokerctl."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from idbtest import (API, IMDS_PATH, Broker, UpstreamIMDS, binding_yaml, check, equal,  # noqa: E402
                     identity_yaml, pod_yaml, run_main)

CID_A = "00000000-0000-0000-0000-0000000000a1"
CID_A2 = "00000000-0000-0000-0000-0000000000a2"
CID_OTHER = "00000000-0000-0000-0000-0000000000ff"
METADATA_ERR = {"error": "invalid_request", "error_description": "Required metadata header not specified"}
NOT_FOUND_ERR = {"error": "invalid_request", "error_description": "Identity not found"}


def policy():
    return (identity_yaml("id-a", client_id=CID_A)
            + identity_yaml("id-a2", client_id=CID_A2)
            + identity_yaml("id-other", client_id=CID_OTHER)
            + binding_yaml("bind-a", "id-a", "sel-a", weight=10)
            + binding_yaml("bind-a2", "id-a2", "sel-a", weight=5)
            + binding_yaml("bind-other", "id-other", "sel-other")
            + pod_yaml("pod-a", "sel-a")
            + pod_yaml("pod-b", "nothing-binds-this")
            + pod_yaml("pod-o", "sel-other"))


def body_json(b):
    return json.loads(b.decode())


def main():
    up = UpstreamIMDS()
    try:
        with Broker(policy(), conf={"metadataProxy": {"endpoint": "http://127.0.0.1:%d" % up.port}}) as br:
            br.register("default", "pod-a", "127.0.0.2")
            br.register("default", "pod-b", "127.0.0.3")
            br.register("default", "pod-o", "127.0.0.4")
            run_checks(br, up)
    finally:
        up.close()


def run_checks(br, up):
    R = "https://management.azure.com/"

    # --- success shape ---
    st, h, b = br.token(R)
    equal(st, 200, "bound pod gets 200")
    equal(h.get("content-type"), "application/json; charset=utf-8", "content type is IMDS'")
    check("imds" not in h.get("server", "").lower(), "no Server: IMDS header")
    j = body_json(b)
    equal(sorted(j), sorted(["access_token", "client_id", "expires_in", "expires_on", "ext_expires_in",
                             "not_before", "resource", "token_type"]), "exact success keys")
    check(all(isinstance(v, str) for v in j.values()), "every value is a JSON string")
    equal(j["resource"], R, "resource echoed")
    equal(j["token_type"], "Bearer", "token_type Bearer")
    equal(j["client_id"], CID_A, "highest-weight identity chosen by default")
    check(int(j["expires_on"]) > time.time() + 3000, "expires_on is an epoch in the future")
    check(0 < int(j["expires_in"]) <= 3600, "expires_in is seconds left")
    check(j["access_token"].count(".") == 2, "access token is a JWT")
    first_token = j["access_token"]

    # --- cache ---
    calls = br.provider_calls("mock")
    st, _, b = br.token(R)
    equal(body_json(b)["access_token"], first_token, "second request served from cache")
    equal(br.provider_calls("mock"), calls, "cache hit makes no provider call")
    st, _, b = br.token(R, extra="&bypass_cache=true")
    equal(st, 200, "bypass_cache=true works")
    equal(br.provider_calls("mock"), calls + 1, "bypass_cache makes a provider call")

    # --- paths ---
    for p in [IMDS_PATH, IMDS_PATH + "/", "/Metadata/identity/oauth2/token", "/METADATA/identity/oauth2/token/"]:
        st, _, _ = br.request("%s?api-version=%s&resource=%s" % (p, API, R))
        equal(st, 200, "path %s is the token endpoint" % p)
    for p in ["//metadata/identity/oauth2/token", "/metadata//identity/oauth2/token",
              "/metadata/./identity/oauth2/token", "/metadata/identity/../identity/oauth2/token",
              "/metadata/identity/oauth2/token;x=1", "%2Fmetadata/identity/oauth2/token",
              "/metadata%2Fidentity/oauth2/token", "/metadata/identity/oauth2/token//",
              "/metadata/identity/oauth2/%2e%2e/oauth2/token", "/metadata/identity/oauth2/token%00"]:
        st, _, _ = br.request("%s?api-version=%s&resource=%s" % (p, API, R))
        check(st in (400, 404), "variant %s is rejected (%d)" % (p, st))
    st, _, b = br.request("/metadata/instance?api-version=2021-02-01")
    equal(st, 403, "/metadata/instance blocked by default")
    st, _, _ = br.request("/metadata/versions")
    equal(st, 403, "/metadata/versions blocked by default")
    st, _, _ = br.request("/something/else")
    equal(st, 404, "other paths 404")
    equal(up.count, 0, "the upstream IMDS saw none of these requests")

    # --- headers ---
    st, _, b = br.request(IMDS_PATH, headers={})
    equal(st, 400, "DefaultAzureCredential probe (no query, no Metadata) answered 400")
    equal(body_json(b), METADATA_ERR, "probe gets the metadata error body")
    st, _, b = br.request("%s?api-version=%s&resource=%s" % (IMDS_PATH, API, R), headers={})
    equal((st, body_json(b)), (400, METADATA_ERR), "missing Metadata header -> 400 exact body")
    st, _, b = br.request("%s?api-version=%s&resource=%s" % (IMDS_PATH, API, R), headers={"Metadata": "false"})
    equal(st, 400, "Metadata: false -> 400")
    st, _, _ = br.token(R, headers={"Metadata": "true", "X-Forwarded-For": "10.0.0.1"})
    equal(st, 400, "X-Forwarded-For -> 400")
    st, _, _ = br.token(R, headers={"Metadata": "true", "Forwarded": "for=10.0.0.1"})
    equal(st, 400, "Forwarded -> 400")
    st, h, _ = br.request("%s?api-version=%s&resource=%s" % (IMDS_PATH, API, R), method="POST")
    equal(st, 405, "POST -> 405")
    check("GET" in h.get("allow", ""), "405 carries Allow: GET")
    st, _, _ = br.request("%s?api-version=%s&resource=%s" % (IMDS_PATH, API, R), host="evil.example")
    equal(st, 403, "Host: evil -> 403")
    st, _, _ = br.request("%s?api-version=%s&resource=%s" % (IMDS_PATH, API, R), host="169.254.169.254:80")
    equal(st, 200, "Host: 169.254.169.254:80 accepted")
    st, _, _ = br.token(R, headers={"Metadata": "true", "podns": "default", "podname": "pod-o"})
    j = body_json(br.token(R, headers={"Metadata": "true", "podns": "default", "podname": "pod-o"})[2])
    equal(j.get("client_id"), CID_A, "identity is never taken from podns/podname headers")

    # --- query ---
    st, _, b = br.request("%s?resource=%s" % (IMDS_PATH, R))
    equal(st, 400, "missing api-version -> 400")
    check("newest-versions" in body_json(b), "api-version error lists newest-versions")
    st, _, b = br.request("%s?api-version=2017-01-01&resource=%s" % (IMDS_PATH, R))
    equal(st, 400, "old api-version -> 400")
    check("newest-versions" in body_json(b), "invalid api-version error lists newest-versions")
    st, _, b = br.request("%s?api-version=%s" % (IMDS_PATH, API))
    equal(st, 400, "missing resource -> 400")
    equal(body_json(b).get("error"), "invalid_request", "missing resource is invalid_request")
    st, _, _ = br.request("%s?api-version=%s&resource=%s&resource=%s" % (IMDS_PATH, API, R, R))
    equal(st, 400, "duplicate key -> 400")
    st, _, _ = br.token(R, extra="&client_id=%s&mi_res_id=x" % CID_A)
    equal(st, 400, "two identity selectors -> 400")
    st, _, b = br.token("https%3A%2F%2Fvault.azure.net")
    equal(body_json(b).get("resource"), "https://vault.azure.net", "resource is percent-decoded once")

    # --- selectors ---
    st, _, b = br.token(R, extra="&client_id=%s" % CID_A2)
    equal((st, body_json(b).get("client_id")), (200, CID_A2), "client_id picks a bound identity")
    st, _, b = br.token(R, extra="&client_id=%s" % CID_A2.upper())
    equal(st, 200, "client_id compares case-insensitively")
    st, _, b = br.token(R, extra="&client_id=%s" % CID_OTHER)
    equal((st, body_json(b)), (400, NOT_FOUND_ERR), "foreign client_id -> 400 Identity not found (T12)")
    rid = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-a2"
    for key in ("msi_res_id", "mi_res_id"):
        st, _, b = br.token(R, extra="&%s=%s" % (key, rid))
        equal((st, body_json(b).get("client_id")), (200, CID_A2), "%s picks a bound identity" % key)
    rid_o = rid.replace("id-a2", "id-other")
    st, _, b = br.token(R, extra="&mi_res_id=%s" % rid_o)
    equal(st, 400, "foreign mi_res_id -> 400")
    for key in ("object_id", "principal_id"):
        st, _, b = br.token(R, extra="&%s=11111111-2222-3333-4444-555555555555" % key)
        equal((st, body_json(b)), (400, NOT_FOUND_ERR), "%s of no bound identity -> 400" % key)

    # --- callers ---
    st, _, b = br.token(R, source="127.0.0.3")
    equal((st, body_json(b)), (400, NOT_FOUND_ERR), "pod without binding -> 400 Identity not found")
    st, _, b = br.token(R, source="127.0.0.9")
    equal(st, 403, "unregistered source -> 403")
    check("node itself" in body_json(b).get("error_description", ""),
          "a node address (hostNetwork pod, node process) is told why (T10)")
    st, _, b = br.token(R, source="127.0.0.4")
    equal((st, body_json(b).get("client_id")), (200, CID_OTHER), "each pod gets its own identity")

    # --- no token material in logs (T17) ---
    log = br.log()
    check("eyJ" not in log, "no token material in the broker log")
    audits = [r for r in br.log_records() if r.get("audit") == "token"]
    check(any(r.get("decision") == "issued" for r in audits), "audit records for issued tokens")
    check(any(r.get("decision") == "denied" for r in audits), "audit records for denied tokens")
    check(all("access_token" not in json.dumps(r) for r in audits), "audit records carry no token")


run_main(main)
