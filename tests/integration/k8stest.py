# SPDX-License-Identifier: Apache-2.0
"""Helpers for the Kubernetes-mode integration tests: the fake API server
(tests/fixtures/fake-apiserver.py) as a child process with its control API, object builders, and a
real idbrokerd in kubernetes mode (idbtest.Broker with "source": {"kind": "kubernetes"}).
"""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import Failure  # noqa: E402

FAKE = os.path.join(idbtest.SOURCE, "tests", "fixtures", "fake-apiserver.py")
NODE = "it-node"
GROUP_V = "aadpodidentity.k8s.io/v1"


class FakeApi:
    """The fake API server in its own temporary directory; close() stops it and removes it."""

    def __init__(self, token="test-token-1"):
        self.dir = tempfile.mkdtemp(prefix="idb-fakeapi-")
        self.token = token
        self.proc = subprocess.Popen(["/usr/bin/python3", FAKE, "--dir", self.dir, "--token", token],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "fake.log"), "wb"))
        ports = os.path.join(self.dir, "ports.json")
        deadline = time.time() + 30
        while not os.path.exists(ports):
            if self.proc.poll() is not None or time.time() > deadline:
                raise Failure("fake API server did not start: " + self.log())
            time.sleep(0.05)
        with open(ports) as f:
            p = json.load(f)
        self.api_port, self.control_port = p["api"], p["control"]
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.kubeconfig_static = os.path.join(self.dir, "kubeconfig-static")
        self.token_file = os.path.join(self.dir, "token")
        self.ca = os.path.join(self.dir, "ca.crt")

    def log(self):
        try:
            with open(os.path.join(self.dir, "fake.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def close(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- control API ---
    def ctl(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            text = r.read()
            return r.status, (json.loads(text) if text else None)
        finally:
            c.close()

    def put(self, obj):
        st, o = self.ctl("POST", "/objects", obj)
        if st != 200:
            raise Failure("fake: put failed: %s %s" % (st, o))
        return o

    def put_many(self, objs):
        st, o = self.ctl("POST", "/objects", objs)
        if st != 200:
            raise Failure("fake: put failed: %s %s" % (st, o))
        return o

    def delete(self, plural, ns, name):
        return self.ctl("DELETE", "/objects/%s/%s/%s" % (plural, ns, name))[0] == 200

    def objects(self, plural):
        return self.ctl("GET", "/objects/" + plural)[1]

    def compact(self):
        self.ctl("POST", "/compact", {})

    def fault(self, typ, count=1, **kw):
        kw.update({"type": typ, "count": count})
        self.ctl("POST", "/fault", kw)

    def clear_faults(self):
        self.ctl("POST", "/clear-faults", {})

    def settings(self, **kw):
        self.ctl("POST", "/settings", kw)

    def drop_watches(self):
        self.ctl("POST", "/drop-watches", {})

    def end_watches(self):
        self.ctl("POST", "/end-watches", {})

    def set_tokens(self, tokens):
        self.ctl("POST", "/tokens", {"tokens": tokens})

    def requests(self):
        return self.ctl("GET", "/requests")[1]

    def clear_requests(self):
        self.ctl("POST", "/requests/clear", {})

    def state(self):
        return self.ctl("GET", "/state")[1]


def identity(name, ns="default", client_id=None, provider="mock"):
    return {"apiVersion": GROUP_V, "kind": "AzureIdentity",
            "metadata": {"name": name, "namespace": ns, "annotations": {"idbroker.io/provider": provider}},
            "spec": {"type": 0, "clientID": client_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, ns + "/" + name)),
                     "resourceID": "/subscriptions/0000/resourceGroups/rg/providers/"
                                   "Microsoft.ManagedIdentity/userAssignedIdentities/" + name}}


def binding(name, identity_name, selector, ns="default", weight=0):
    return {"apiVersion": GROUP_V, "kind": "AzureIdentityBinding",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"azureIdentity": identity_name, "selector": selector, "weight": weight}}


def exception(name, labels, ns="default"):
    return {"apiVersion": GROUP_V, "kind": "AzurePodIdentityException",
            "metadata": {"name": name, "namespace": ns}, "spec": {"podLabels": labels}}


def pod(name, ip, label=None, ns="default", uid=None, node=NODE, labels=None):
    lab = dict(labels or {})
    if label is not None:
        lab["aadpodidbinding"] = label
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid or str(uuid.uuid4()), "labels": lab},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


class KubeBroker(idbtest.Broker):
    """A real idbrokerd whose policy source is the fake API server."""

    def __init__(self, fake, conf=None, start=True, wait_ready=True):
        super().__init__(conf=conf, start=False)
        self.fake = fake
        self.conf["nodeName"] = NODE
        self.conf["source"] = {"kind": "kubernetes", "kubeconfig": fake.kubeconfig}
        self.conf["syncTimeoutMs"] = (conf or {}).get("syncTimeoutMs", 1500)
        self.write_conf()
        if start:
            self.start(wait_ready=wait_ready)

    def ready(self):
        try:
            return self.health("/readyz")[0] == 200
        except OSError:
            return False

    def explain(self, ns, name):
        return self.ctl_json("explain", "%s/%s" % (ns, name))


def wait_for(cond, what, timeout=20.0, interval=0.05):
    """Polls cond() until it is true; fails the test with `what` after timeout (a bound, not a
    timing assertion: the condition is expected well before)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            idbtest.check(True, what)
            return last
        time.sleep(interval)
    idbtest.check(False, what + " (still %r after %.0f s)" % (last, timeout))


def status_of(r):
    return r[0]


def aai_by_name(fake):
    return {o["metadata"]["name"]: o for o in fake.objects("azureassignedidentities")}
