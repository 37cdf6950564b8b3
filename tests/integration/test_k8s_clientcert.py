# SPDX-License-Identifier: Apache-2.0
"""Kubernetes mode, kubeconfig client-certificate authentication, over a real mTLS handshake with the
fake API server (which asks for a client certificate and verifies it against its own client CA, as
kube-apiserver does). The fake accepts no bearer token at all here, so a request succeeds only if the
broker presented the certificate.

- client-certificate-data/client-key-data inline, and client-certificate/client-key as files
  (relative to the kubeconfig): the broker becomes ready, lists and watches, decides a pod
  (identity + binding + pod -> token) and writes its AzureAssignedIdentity; every request it sent
  carried no Authorization header and was authenticated by the certificate (user "idbroker")
- the fake stops accepting the certificate (as if revoked): the broker's requests get 401 and it
  says so; accepted again: it recovers
- a certificate from another CA: the handshake is refused, the broker stays up and not ready, its
  log names the API server and the TLS failure, and holds no key material
- a client-key (or client-certificate) file that does not exist, or a certificate without a key: the
  broker (and idbrokerd --check-config) refuses to start, naming the file or the key
- kubectl with the same kubeconfigs: works with the good certificate, fails with the rogue one;
  python3-kubernetes likewise
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

UID1 = "11111111-1111-1111-1111-111111111111"
UID2 = "22222222-2222-2222-2222-222222222222"


def aai_status(fake, name):
    o = K.aai_by_name(fake).get(name)
    return (o.get("status") or {}).get("status") if o else None


def cert_broker(fake, kubeconfig, wait_ready=True):
    b = K.KubeBroker(fake, start=False)
    b.conf["source"]["kubeconfig"] = kubeconfig
    b.write_conf()
    try:
        b.start(wait_ready=wait_ready)
    except BaseException:
        b.close()
        raise
    return b


def key_texts(fake):
    """What of the client keys a log could leak: each PEM body line, and the start of the base64 of
    the whole PEM (as client-key-data holds it)."""
    out = []
    for name in ("client.key", "rogue-client.key"):
        pem = open(os.path.join(fake.dir, name), "rb").read()
        out.append(base64.b64encode(pem).decode()[:40])
        out += [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
    return out


def check_cert_only(fake, what):
    reqs = fake.requests()
    check(reqs, what + ": the broker sent requests")
    bad = [r for r in reqs if r.get("authorization") or r.get("authBy") != "cert"
           or r.get("user") != "idbroker"]
    check(not bad, what + ": every request had no Authorization header and was authenticated by "
          "the client certificate, user 'idbroker' (%s)" % bad[:2])
    check([r for r in reqs if r.get("watch")], what + ": the broker watches")
    check([r for r in reqs if r["method"] == "PATCH" and r["status"] in (200, 201)],
          what + ": the AAI write (server-side apply) was authenticated too")


def scenario(fake, kubeconfig, what):
    """The broker authenticating with `kubeconfig`'s client certificate alone."""
    fake.clear_requests()
    with cert_broker(fake, kubeconfig) as b:
        check(b.ready(), what + ": ready after the first LIST of every kind")
        b.register("default", "p1", "127.0.0.5", uid=UID1)
        equal(b.token(source="127.0.0.5")[0], 200, what + ": the bound pod gets a token")
        K.wait_for(lambda: aai_status(fake, "p1-default-id1") == "Assigned",
                   what + ": AAI p1-default-id1 is written and Assigned")
        # A pod that appears now reaches the broker through its watch.
        fake.put(K.pod("p2", "127.0.0.6", "sel1", uid=UID2))
        b.register("default", "p2", "127.0.0.6", uid=UID2)
        K.wait_for(lambda: b.token(source="127.0.0.6")[0] == 200,
                   what + ": a pod added after the LIST (seen by the watch) gets a token")
        K.wait_for(lambda: aai_status(fake, "p2-default-id1") == "Assigned",
                   what + ": AAI p2-default-id1 is Assigned")
        check_cert_only(fake, what)
        b.ctl("unregister", "default/p2")
    fake.delete("pods", "default", "p2")
    for name in list(K.aai_by_name(fake)):
        fake.delete("azureassignedidentities", "default", name)


def revoked(fake):
    """The certificate stops being accepted while the broker runs, then is accepted again."""
    with cert_broker(fake, os.path.join(fake.dir, "kubeconfig-cert")) as b:
        b.register("default", "p1", "127.0.0.5", uid=UID1)
        equal(b.token(source="127.0.0.5")[0], 200, "revocation: token before")
        fake.ctl("POST", "/client-certs", {"accept": False})
        fake.clear_requests()
        fake.drop_watches()
        K.wait_for(lambda: [r for r in fake.requests() if r["status"] == 401 and r.get("clientCert")],
                   "revocation: the broker's next requests (certificate presented) get 401")
        K.wait_for(lambda: "401" in b.log() and "Unauthorized" in b.log(),
                   "revocation: the broker logs the 401 Unauthorized")
        check(b.proc.poll() is None, "revocation: the broker keeps running")
        fake.ctl("POST", "/client-certs", {"accept": True})
        fake.put(K.pod("p3", "127.0.0.7", "sel1", uid=UID2))
        b.register("default", "p3", "127.0.0.7", uid=UID2)
        K.wait_for(lambda: b.token(source="127.0.0.7")[0] == 200,
                   "revocation lifted: the broker recovers (a new pod gets a token)", timeout=60)
        b.ctl("unregister", "default/p3")
    fake.delete("pods", "default", "p3")


def rogue(fake):
    """A client certificate from another CA: no handshake, not ready, a clear log line."""
    before = fake.state()["tlsErrors"]
    fake.clear_requests()
    server = "https://127.0.0.1:%d" % fake.api_port
    with cert_broker(fake, os.path.join(fake.dir, "kubeconfig-cert-rogue"), wait_ready=False) as b:
        K.wait_for(lambda: fake.state()["tlsErrors"] > before,
                   "rogue CA: the fake refused the broker's handshake")

        def failures():
            return [r["msg"] for r in b.log_records() if "list failed" in r.get("msg", "")]
        K.wait_for(lambda: len(failures()) >= 5, "rogue CA: the broker logs its failed LISTs")
        check(not [r for r in fake.requests() if r.get("auth")], "rogue CA: no request was authenticated")
        check(b.proc.poll() is None, "rogue CA: the broker keeps running (no crash)")
        equal(b.health("/readyz")[0], 503, "rogue CA: the broker is not ready (/readyz 503)")
        f = failures()
        check(all(server in m for m in f), "rogue CA: each failure names the API server %s (%s)" % (server, f[0]))
        check(all("client certificate" in m for m in f),
              "rogue CA: each failure says the API server may have refused the client certificate")
        # libcurl's own words follow: the TLS alert ("unknown ca") when it arrived before the
        # server closed, else a reset connection (a race a real API server has too).
        print("# rogue CA: %s" % f[0])
        log = b.log()
        leaked = [t for t in key_texts(fake) if t in log]
        check(not leaked, "rogue CA: no key material in the broker's log")


def kubeconfig_with(fake, tmp, user, name):
    kc = json.load(open(os.path.join(fake.dir, "kubeconfig-cert-files")))
    kc["users"][0]["user"] = user
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        json.dump(kc, f)
    return path


def refused_at_start(fake, kubeconfig, needles, what):
    """The broker with `kubeconfig` refuses to start, its message holding every needle; so does
    idbrokerd --check-config."""
    b = K.KubeBroker(fake, start=False)
    try:
        b.conf["source"]["kubeconfig"] = kubeconfig
        b.write_conf()
        try:
            b.start(wait_ready=False)
            started = True
        except idbtest.Failure:
            started = False
        rc = b.proc.returncode if b.proc else None
        if not started:
            b.proc = None  # exited on purpose: not a failed SIGTERM stop
        check(not started and rc == 1, what + ": the broker refuses to start (exit status %s)" % rc)
        log = b.log().strip()
        check(all(n in log for n in needles), what + ": the message names %s (%s)" % (needles, log[-300:]))
        p = subprocess.run([idbtest.IDBROKERD, "--config", b.conf_path, "--check-config"], capture_output=True,
                           text=True, timeout=30)
        check(p.returncode != 0 and all(n in p.stderr for n in needles),
              what + ": idbrokerd --check-config refuses it too (%s)" % p.stderr.strip())
    finally:
        b.close()


def bad_config(fake, tmp):
    crt, key = os.path.join(fake.dir, "client.crt"), os.path.join(fake.dir, "client.key")
    missing = os.path.join(tmp, "no-such-dir", "client.key")
    refused_at_start(fake, kubeconfig_with(fake, tmp, {"client-certificate": crt, "client-key": missing},
                                           "kc-missing-key"),
                     [missing, "client-key"], "missing client-key file")
    refused_at_start(fake, kubeconfig_with(fake, tmp, {"client-certificate": missing.replace(".key", ".crt"),
                                                       "client-key": key}, "kc-missing-cert"),
                     [missing.replace(".key", ".crt"), "client-certificate"], "missing client-certificate file")
    refused_at_start(fake, kubeconfig_with(fake, tmp, {"client-certificate": crt}, "kc-no-key"),
                     ["client-certificate", "without", "client-key"], "a certificate without a key")
    missing_token = os.path.join(tmp, "no-such-dir", "token")
    refused_at_start(fake, kubeconfig_with(fake, tmp, {"tokenFile": missing_token}, "kc-missing-token"),
                     [missing_token, "tokenFile"], "missing tokenFile")


def kubectl_part(fake, tmp):
    kubectl = None
    for p in ["/usr/bin/kubectl.kubernetes-client", "/opt/debian-kubectl/usr/bin/kubectl"]:
        if os.access(p, os.X_OK):
            kubectl = p
            break
    kubectl = os.environ.get("IDB_KUBECTL") or kubectl or shutil.which("kubectl")
    if not kubectl:
        print("skip - no kubectl (install Debian's kubernetes-client)")
        return
    print("# kubectl: %s" % kubectl)
    fake.clear_requests()
    for name in ("kubeconfig-cert", "kubeconfig-cert-files"):
        p = subprocess.run([kubectl, "--kubeconfig", os.path.join(fake.dir, name), "--cache-dir",
                            os.path.join(tmp, "cache-" + name), "get", "azureidentities", "-A", "-o", "name"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 0 and "azureidentity.aadpodidentity.k8s.io/id1" in p.stdout,
              "kubectl --kubeconfig %s get azureidentities -A works (%s)" % (name, (p.stdout + p.stderr).strip()))
    reqs = fake.requests()
    check(reqs and all(r.get("authBy") == "cert" and not r.get("authorization") for r in reqs),
          "kubectl's requests were authenticated by its client certificate")
    before = fake.state()["tlsErrors"]
    p = subprocess.run([kubectl, "--kubeconfig", os.path.join(fake.dir, "kubeconfig-cert-rogue"), "--cache-dir",
                        os.path.join(tmp, "cache-rogue"), "get", "azureidentities", "-A"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode != 0 and "certificate" in p.stderr,
          "kubectl with the rogue-CA certificate fails (%s)" % p.stderr.strip()[-200:])
    check(fake.state()["tlsErrors"] > before, "the fake refused kubectl's rogue handshake")


def python_part(fake):
    """python3-kubernetes (its urllib3 TLS stack, not curl's or Go's) with the same kubeconfigs."""
    try:
        from kubernetes import client, config
    except ImportError:
        print("skip - python3-kubernetes is not installed")
        return
    fake.clear_requests()
    for name in ("kubeconfig-cert", "kubeconfig-cert-files"):
        api = config.new_client_from_config(config_file=os.path.join(fake.dir, name))
        try:
            ids = client.CustomObjectsApi(api).list_cluster_custom_object("aadpodidentity.k8s.io", "v1",
                                                                           "azureidentities")
            pods = client.CoreV1Api(api).list_pod_for_all_namespaces(field_selector="spec.nodeName=" + K.NODE)
        finally:
            api.close()
        check("id1" in [i["metadata"]["name"] for i in ids["items"]] and
              [p.metadata.name for p in pods.items] == ["p1"],
              "python3-kubernetes with %s lists identities and pods" % name)
    reqs = fake.requests()
    check(reqs and all(r.get("authBy") == "cert" and not r.get("authorization") for r in reqs),
          "python3-kubernetes' requests were authenticated by its client certificate")
    before = fake.state()["tlsErrors"]
    api = config.new_client_from_config(config_file=os.path.join(fake.dir, "kubeconfig-cert-rogue"))
    api.configuration.retries = 0
    try:
        client.CoreV1Api(api).list_pod_for_all_namespaces(_request_timeout=10)
        failed = None
    except Exception as e:  # urllib3 wraps the TLS alert in MaxRetryError / SSLError
        failed = e
    finally:
        api.close()
    check(failed is not None, "python3-kubernetes with the rogue-CA certificate fails (%s)" % str(failed)[-160:])
    check(fake.state()["tlsErrors"] > before, "the fake refused python3-kubernetes' rogue handshake")


def main():
    tmp = tempfile.mkdtemp(prefix="idb-cc-")
    try:
        with K.FakeApi() as fake:
            fake.set_tokens([])  # no bearer token is accepted: certificates only
            fake.put(K.identity("id1"))
            fake.put(K.binding("b1", "id1", "sel1"))
            fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))
            scenario(fake, os.path.join(fake.dir, "kubeconfig-cert"), "inline cert/key data")
            scenario(fake, os.path.join(fake.dir, "kubeconfig-cert-files"), "cert/key files")
            revoked(fake)
            rogue(fake)
            bad_config(fake, tmp)
            kubectl_part(fake, tmp)
            python_part(fake)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    idbtest.run_main(main)
