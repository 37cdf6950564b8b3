# SPDX-License-Identifier: Apache-2.0
"""The broker as a whole, with the real idbrokerd: single-flight, durability across SIGKILL, SIGHUP and
file reloads, selection rules, provider failures and hangs, rate limiting, health and metrics, JWT
verification of mock tokens with an independent verifier, and idbrokerctl."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from idbtest import (SOURCE, Broker, binding_yaml, check, equal, identity_yaml,  # noqa: E402
                     parallel, pod_yaml, run_main)

R = "https://management.azure.com/"
CID1 = "00000000-0000-0000-0000-000000000001"
CID2 = "00000000-0000-0000-0000-000000000002"


def j(b):
    return json.loads(b.decode())


def test_singleflight():
    # 8 pods share one identity: 25 requests each stay within the per-pod connection and rate limits.
    pol = identity_yaml("id", client_id=CID1, provider="good") + binding_yaml("b", "id", "s")
    for k in range(8):
        pol += pod_yaml("p%d" % k, "s")
    with Broker(pol, providers={"good": {"delayMs": 300}}, test_plugins=["good"]) as br:
        for k in range(8):
            br.register("default", "p%d" % k, "127.0.0.%d" % (10 + k))
        res = parallel(200, lambda i: br.token(R, source="127.0.0.%d" % (10 + i % 8)))
        ok = [r for r in res if not isinstance(r, Exception) and r[0] == 200]
        equal(len(ok), 200, "200 concurrent cold requests all get 200")
        equal(len({j(r[2])["access_token"] for r in ok}), 1, "they all get the same token")
        equal(br.provider_calls("good"), 1, "200 concurrent cold requests -> 1 provider call")


def test_provider_failures():
    pol = (identity_yaml("id", client_id=CID1, provider="good") + binding_yaml("b", "id", "s")
           + pod_yaml("p", "s") + identity_yaml("slow", client_id=CID2, provider="hang")
           + binding_yaml("b2", "slow", "h") + pod_yaml("q", "h"))
    with Broker(pol, providers={"good": {"fail": "unavailable"}, "hang": {}},
                conf={"providerTimeoutMs": 1000, "cache": {"negativeTtlMs": 0}},
                test_plugins=["good", "hang"]) as br:
        br.register("default", "p", "127.0.0.2")
        br.register("default", "q", "127.0.0.3")
        st, h, b = br.token(R)
        equal(st, 503, "transient provider failure -> 503")
        check(int(h.get("retry-after", "0")) > 0, "503 carries Retry-After")
        t0 = time.time()
        st, h, b = br.token(R, source="127.0.0.3")
        took = time.time() - t0
        equal(st, 503, "hanging provider -> 503 at the deadline")
        check("retry-after" in h, "hang 503 carries Retry-After")
        print("     (hang answered after %.2f s with a 1 s provider deadline)" % took)
        st, _, _ = br.health("/healthz")
        equal(st, 200, "broker still alive after a hanging provider")
        st, _, _ = br.token(R)
        equal(st, 503, "other requests keep flowing while a provider hangs")
    with Broker(pol, providers={"good": {"fail": "4xx"}, "hang": {}}, test_plugins=["good", "hang"]) as br:
        br.register("default", "p", "127.0.0.2")
        st, _, b = br.token(R)
        check(400 <= st < 500, "provider 4xx is passed to the pod (%d)" % st)
        check("error" in j(b), "provider 4xx body is IMDS-shaped")


def test_selection_rules():
    pol = (identity_yaml("id-b", client_id=CID2) + identity_yaml("id-a", client_id=CID1)
           + binding_yaml("b1", "id-b", "s") + binding_yaml("b2", "id-a", "s")
           + pod_yaml("p", "s")
           + identity_yaml("x", ns="other", client_id="00000000-0000-0000-0000-0000000000cc")
           + binding_yaml("bx", "x", "s", ns="other"))
    with Broker(pol) as br:
        br.register("default", "p", "127.0.0.2")
        st, _, b = br.token(R)
        equal(j(b).get("client_id"), CID1, "equal weights: identity name decides (id-a before id-b)")
        st, _, b = br.token(R, extra="&client_id=00000000-0000-0000-0000-0000000000cc")
        equal(st, 400, "identity of another namespace is not granted (namespaced, T11)")
        br.conf["strictSelection"] = True
        br.write_conf()
        br.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while time.time() < deadline and br.token(R)[0] != 400:
            time.sleep(0.1)
        st, _, b = br.token(R)
        equal(st, 400, "strictSelection: several bound, none requested -> 400")
        check("Multiple user assigned identities exist" in j(b).get("error_description", ""),
              "strictSelection uses IMDS' multiple-identities message")
        st, _, b = br.token(R, extra="&client_id=%s" % CID2)
        equal(st, 200, "strictSelection with a selector works")


def test_durability_and_reload():
    pol = identity_yaml("id", client_id=CID1) + binding_yaml("b", "id", "s") + pod_yaml("p", "s") + pod_yaml("p2", "s")
    with Broker(pol) as br:
        br.register("default", "p", "127.0.0.2", uid="uid-p")
        br.register("default", "p2", "127.0.0.3")
        st, _, b = br.token(R)
        tok = j(b)["access_token"]
        equal(st, 200, "token before restart")

        br.kill9()
        br.start()
        pods = br.ctl_json("pods")
        equal(sorted(p["podName"] for p in pods), ["p", "p2"], "SIGKILL + restart: every registration is back")
        st, _, _ = br.token(R)
        equal(st, 200, "pod served after restart")

        st, _, b = br.token(R)
        tok = j(b)["access_token"]
        calls = br.provider_calls("mock")
        br.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        check(br.proc.poll() is None, "broker survives SIGHUP")
        equal(len(br.ctl_json("pods")), 2, "SIGHUP keeps registrations")
        st, _, b = br.token(R)
        equal(j(b)["access_token"], tok, "SIGHUP keeps valid cached tokens")
        equal(br.provider_calls("mock"), calls, "no provider call after reload")
        br.ctl("reload")
        st, _, b = br.token(R)
        equal(j(b)["access_token"], tok, "idbrokerctl reload keeps valid cached tokens")

        # a broken file: the last good policy stays, the error names file, document and field
        br.write_manifests("apiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\n"
                           "metadata: {name: z}\nspec: {azureIdentity: id, selector: s, weight: heavy}\n",
                           name="zz-broken.yaml")
        deadline = time.time() + 5
        while time.time() < deadline and "zz-broken.yaml" not in br.log():
            time.sleep(0.1)
        check("zz-broken.yaml" in br.log() and "spec.weight" in br.log(),
              "bad file reported with file and field")
        st, _, _ = br.token(R)
        equal(st, 200, "last good policy stays in force after a bad file")
        os.unlink(os.path.join(br.source, "zz-broken.yaml"))

        # unbinding takes effect on the next request, warm cache or not (T15)
        br.write_manifests(identity_yaml("id", client_id=CID1) + pod_yaml("p", "s") + pod_yaml("p2", "s"))
        deadline = time.time() + 5
        st = 200
        while time.time() < deadline and st == 200:
            st, _, _ = br.token(R)
            time.sleep(0.05)
        equal(st, 400, "binding deleted -> denied despite a warm cache")

        # UID mismatch between registration and policy: wait, then 503 + Retry-After (T2)
        br.write_manifests(identity_yaml("id", client_id=CID1) + binding_yaml("b", "id", "s")
                           + pod_yaml("p", "s", uid="uid-other") + pod_yaml("p2", "s"))
        time.sleep(0.6)
        br.conf["syncTimeoutMs"] = 300
        br.write_conf()
        br.ctl("reload")
        st, h, _ = br.token(R)
        equal(st, 503, "registration UID differs from the pod's -> 503")
        check("retry-after" in h, "503 carries Retry-After")

        br.ctl("unregister", "default/p2")
        equal(len(br.ctl_json("pods")), 1, "unregister removes the registration")
        st, _, _ = br.token(R, source="127.0.0.3")
        equal(st, 403, "unregistered pod -> 403")
        check(not os.path.exists(os.path.join(br.state, "pods", "ctl-default-p2@eth0.json")),
              "unregister removes the state file")


def test_rate_limit():
    pol = identity_yaml("id", client_id=CID1) + binding_yaml("b", "id", "s") + pod_yaml("p", "s") + pod_yaml("q", "s")
    with Broker(pol, conf={"rateLimit": {"requestsPerSecond": 1, "burst": 3}}) as br:
        br.register("default", "p", "127.0.0.2")
        br.register("default", "q", "127.0.0.3")
        codes = [br.token(R)[0] for _ in range(6)]
        check(codes[:3] == [200, 200, 200] and 429 in codes[3:], "per-pod rate limit -> 429 (%s)" % codes)
        st, h, _ = br.token(R)
        check(st != 429 or int(h.get("retry-after", "0")) >= 1, "429 carries Retry-After")
        st, _, _ = br.token(R, source="127.0.0.3")
        equal(st, 200, "another pod is still served")


def test_health_metrics_jwt_ctl():
    pol = identity_yaml("id", client_id=CID1) + binding_yaml("b", "id", "s") + pod_yaml("p", "s")
    with Broker(pol) as br:
        br.register("default", "p", "127.0.0.2")
        equal(br.health("/healthz")[0], 200, "/healthz 200")
        equal(br.health("/readyz")[0], 200, "/readyz 200")
        st, h, body = br.health("/metrics")
        equal(st, 200, "/metrics 200")
        check(h.get("content-type", "").startswith("text/plain"), "metrics in text format")
        st, _, b = br.token(R)
        tok = j(b)["access_token"]
        check(br.metric("idbroker_http_requests_total", {"code": "200"}) >= 1, "requests counted by code")
        p = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "tests/fixtures/jwt_verify.py"),
                            br.jwks, tok, "--aud", R], capture_output=True, text=True)
        equal(p.returncode, 0, "mock token verifies with python3-jwt against the JWKS (%s)" % p.stderr.strip())
        if p.returncode == 0:
            claims = json.loads(p.stdout)
            equal(claims.get("appid"), CID1, "appid claim is the client ID")
            check(claims.get("xms_mirid", "").endswith("/id"), "xms_mirid claim is the resource ID")
        bad = os.path.join(br.dir, "other-jwks.json")
        with open(br.jwks) as f:
            jw = json.load(f)
        jw["keys"][0]["n"] = jw["keys"][0]["n"][:-4] + ("AAAA" if not jw["keys"][0]["n"].endswith("AAAA") else "BBBB")
        with open(bad, "w") as f:
            json.dump(jw, f)
        p = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "tests/fixtures/jwt_verify.py"),
                            bad, tok, "--aud", R], capture_output=True, text=True)
        check(p.returncode != 0, "token does not verify against another key")

        st = br.ctl_json("status")
        equal((st["pods"], st["identities"], st["bindings"], st["ready"]), (1, 1, 1, True), "idbrokerctl status")
        ids = br.ctl_json("identities")
        equal(ids[0]["spec"]["clientID"], CID1, "idbrokerctl identities")
        equal(br.ctl_json("bindings")[0]["spec"]["selector"], "s", "idbrokerctl bindings")
        equal(br.ctl_json("providers")[0]["name"], "mock", "idbrokerctl providers")
        ex = br.ctl_json("explain", "default/p")
        equal(ex.get("decision"), "granted", "explain says granted")
        t = br.ctl_json("token", "default/p", "--resource", R)
        equal(t.get("client_id"), CID1, "idbrokerctl token issues as the pod")
        out = br.ctl("pods").stdout
        check("127.0.0.2" in out and "NAMESPACE" in out, "idbrokerctl pods prints a table")
        p = br.ctl("explain", "default/nope", check_rc=False)
        check(p.returncode == 0 or "not registered" in (p.stdout + p.stderr), "explain of an unknown pod says why")
        check("eyJ" not in br.log(), "no token material in the log")


def main():
    test_singleflight()
    test_provider_failures()
    test_selection_rules()
    test_durability_and_reload()
    test_rate_limit()
    test_health_metrics_jwt_ctl()


run_main(main)
