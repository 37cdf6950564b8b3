# SPDX-License-Identifier: Apache-2.0
"""Shared helpers for idbroker's integration tests: start the real idbrokerd in files mode on loopback,
register fake pods (each a 127.0.0.x source address), and talk HTTP to it over real sockets.

Every Broker() owns a temporary directory (config, state, control socket, plugins, manifests) that is
removed by close() even when a test fails; use it as a context manager.
"""
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("IDB_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build/debug"))
SOURCE = os.environ.get("IDB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
IDBROKERD = os.path.join(BUILD, "idbrokerd")
IDBROKERCTL = os.path.join(BUILD, "idbrokerctl")

# A command that wraps idbrokerd, e.g. scripts/valgrind.sh sets
# IDB_BROKER_WRAPPER="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite".
# A wrapped broker must still exit 0 on SIGTERM: the wrapper's error exit code fails stop().
BROKER_WRAPPER = shlex.split(os.environ.get("IDB_BROKER_WRAPPER", ""))
# Start-up and shutdown under a wrapper (valgrind) are many times slower.
SLOW = 10 if BROKER_WRAPPER else 1

IMDS_PATH = "/metadata/identity/oauth2/token"
API = "2018-02-01"


class Failure(Exception):
    pass


_checks = {"passed": 0, "failed": 0}


def check(cond, what):
    """Records one assertion; raises on failure so the test stops with a clear message."""
    if cond:
        _checks["passed"] += 1
        print("ok   - %s" % what, flush=True)
        return
    _checks["failed"] += 1
    print("FAIL - %s" % what, flush=True)
    e = Failure(what)
    e.counted = True
    raise e


def equal(got, want, what):
    if got != want:
        print("       got:  %r\n       want: %r" % (got, want), flush=True)
    check(got == want, what)


def run_main(fn):
    """Runs a test function and prints the plain closing line; exit code 1 on any failure."""
    try:
        fn()
    except Failure as e:
        if not getattr(e, "counted", False):  # raised directly (e.g. the broker did not start)
            _checks["failed"] += 1
            print("FAIL - %s" % e, flush=True)
    except Exception as e:  # an unexpected error is a failure too
        _checks["failed"] += 1
        import traceback
        traceback.print_exc()
        print("FAIL - unexpected %s: %s" % (type(e).__name__, e), flush=True)
    print("%d passed, %d failed" % (_checks["passed"], _checks["failed"]), flush=True)
    sys.exit(1 if _checks["failed"] else 0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class UpstreamIMDS:
    """A stand-in for the node's real IMDS on 127.0.0.1: answers every GET with `body` and records
    the path of each request (`paths`; `count` is how many)."""

    def __init__(self, body=b'{"upstream":true}'):
        from http.server import BaseHTTPRequestHandler, HTTPServer
        self.paths = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class S(HTTPServer):
            def server_bind(self):  # no getfqdn (ENVIRONMENT.md)
                self.socket.bind(self.server_address)
                self.server_address = self.socket.getsockname()

        self.port = free_port()
        self.srv = S(("127.0.0.1", self.port), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    @property
    def count(self):
        return len(self.paths)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


IDENTITY = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    idbroker.io/provider: {provider}
spec:
  type: 0
  clientID: {client_id}
  resourceID: /subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}
---
"""

BINDING = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata:
  name: {name}
  namespace: {ns}
spec:
  azureIdentity: {identity}
  selector: {selector}
  weight: {weight}
---
"""

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
{uid}  labels:
    aadpodidbinding: {label}
---
"""


def identity_yaml(name, ns="default", client_id=None, provider="mock"):
    return IDENTITY.format(name=name, ns=ns, provider=provider,
                           client_id=client_id or "00000000-0000-0000-0000-%012d" % (abs(hash(name)) % 10**12))


def binding_yaml(name, identity, selector, ns="default", weight=0):
    return BINDING.format(name=name, identity=identity, selector=selector, ns=ns, weight=weight)


def pod_yaml(name, label, ns="default", uid=None):
    return POD.format(name=name, ns=ns, label=label, uid=("  uid: %s\n" % uid) if uid else "")


class Broker:
    """A real idbrokerd on 127.0.0.1 in files mode, in its own temp directory."""

    def __init__(self, manifests="", conf=None, providers=None, test_plugins=(), start=True):
        self.dir = tempfile.mkdtemp(prefix="idb-it-")
        os.chmod(self.dir, 0o755)
        self.state = os.path.join(self.dir, "state")
        self.source = os.path.join(self.dir, "identities")
        self.plugins = os.path.join(self.dir, "providers")
        self.sock = os.path.join(self.dir, "run", "idbrokerd.sock")
        self.jwks = os.path.join(self.dir, "jwks.json")
        self.log_path = os.path.join(self.dir, "idbrokerd.log")
        os.makedirs(self.source)
        os.makedirs(self.plugins, mode=0o755)
        os.chmod(self.plugins, 0o755)
        for so in ["mock"]:
            self._install_plugin(os.path.join(BUILD, "providers", so + ".so"))
        for so in test_plugins:
            self._install_plugin(os.path.join(BUILD, "test-plugins", so + ".so"))
        self.port = free_port()
        self.health_port = free_port()
        self.write_manifests(manifests)
        cfg = {
            "nodeName": "it-node",
            "listen": "127.0.0.1:%d" % self.port,
            "healthListen": "127.0.0.1:%d" % self.health_port,
            "controlSocket": self.sock,
            "stateDir": self.state,
            "pluginDir": self.plugins,
            "source": {"kind": "files", "dir": self.source, "pollIntervalMs": 200},
            "providers": providers if providers is not None else {
                "mock": {"jwksFile": self.jwks, "lifetimeSeconds": 3600}},
            "typeProviders": {"0": "mock", "1": "mock", "2": "mock"},
            "log": {"level": "debug", "format": "json"},
            # The host's own CNI configuration is none of the test's business (tests that check the
            # conflist watch point this at a directory of their own).
            "cni": {"confDir": ""},
        }
        for k, v in (conf or {}).items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
        self.conf = cfg
        self.conf_path = os.path.join(self.dir, "idbrokerd.json")
        self.write_conf()
        self.proc = None
        self.logf = None
        if start:
            self.start()

    def _install_plugin(self, src):
        dst = os.path.join(self.plugins, os.path.basename(src))
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755)

    def write_conf(self):
        with open(self.conf_path, "w") as f:
            json.dump(self.conf, f, indent=2)

    def write_manifests(self, text, name="policy.yaml"):
        tmp = os.path.join(self.source, "." + name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.source, name))

    def start(self, wait_ready=True):
        for attempt in range(3):
            try:
                return self._start(wait_ready)
            except Failure as e:
                # free_port() releases the port before the broker binds it: another test running in
                # parallel may take it in between. Only then, and only for the ports chosen here,
                # start again on fresh ones.
                if "Address already in use" not in str(e) or attempt == 2 or \
                        self.conf.get("listen") != "127.0.0.1:%d" % self.port or \
                        self.conf.get("healthListen") != "127.0.0.1:%d" % self.health_port:
                    raise
                if self.logf:
                    self.logf.close()
                    self.logf = None
                self.port, self.health_port = free_port(), free_port()
                self.conf["listen"] = "127.0.0.1:%d" % self.port
                self.conf["healthListen"] = "127.0.0.1:%d" % self.health_port
                self.write_conf()

    def _start(self, wait_ready):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(BROKER_WRAPPER + [IDBROKERD, "--config", self.conf_path], stdout=self.logf,
                                     stderr=self.logf, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failure("idbrokerd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                st, _, _ = self.health("/readyz")
                if st == 200 or not wait_ready:
                    if os.path.exists(self.sock):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise Failure("idbrokerd did not become ready:\n" + self.log())

    def stop(self, sig=signal.SIGTERM):
        """Stops the broker. A SIGTERM stop must be clean: exit status 0 and no sanitizer report (in
        the ASan build a leak or any memory error shows up here)."""
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout=20 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = "hung"
        elif self.proc:
            rc = self.proc.returncode
        if self.logf:
            self.logf.close()
            self.logf = None
        self.proc = None
        if sig == signal.SIGTERM and rc is not None:
            log = self.log()
            bad = [m for m in ("AddressSanitizer", "LeakSanitizer", "runtime error:") if m in log]
            if BROKER_WRAPPER and re.search(r"ERROR SUMMARY: [1-9]|definitely lost: [1-9]", log):
                bad.append("valgrind")
            if rc != 0 or bad:
                print(log[-4000:])
            check(rc == 0 and not bad, "idbrokerd stopped cleanly on SIGTERM (status %s%s)"
                  % (rc, ", sanitizer: " + ",".join(bad) if bad else ""))

    def kill9(self):
        self.stop(signal.SIGKILL)

    def close(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_records(self):
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # --- control ---
    def ctl(self, *args, check_rc=True):
        p = subprocess.run([IDBROKERCTL, "--socket", self.sock] + list(args), capture_output=True,
                           text=True, timeout=30)
        if check_rc and p.returncode != 0:
            raise Failure("idbrokerctl %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
        return p

    def ctl_json(self, *args):
        return json.loads(self.ctl("-o", "json", *args).stdout)

    def register(self, ns, name, ip, uid=None, container_id=None):
        args = ["register", "%s/%s" % (ns, name), "--ip", ip]
        if uid:
            args += ["--uid", uid]
        if container_id:
            args += ["--container-id", container_id]
        self.ctl(*args)

    # --- HTTP ---
    def request(self, path, source="127.0.0.2", headers=None, method="GET", host=None, port=None):
        """One request from `source`; returns (status, headers dict (lower-case), body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30,
                                          source_address=(source, 0))
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host is not False:
                conn.putheader("Host", host or "169.254.169.254")
            for k, v in (headers if headers is not None else {"Metadata": "true"}).items():
                conn.putheader(k, v)
            conn.endheaders()
            r = conn.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            conn.close()

    def token(self, resource="https://management.azure.com/", source="127.0.0.2", extra="",
              headers=None):
        q = "%s?api-version=%s&resource=%s%s" % (IMDS_PATH, API, resource, extra)
        return self.request(q, source=source, headers=headers)

    def health(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def metric(self, name, labels=None):
        """Sum of a metric's samples matching all given labels."""
        _, _, body = self.health("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
            if not m or m.group(1) != name:
                continue
            lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(lab.get(k) == v for k, v in (labels or {}).items()):
                total += float(m.group(3))
        return total

    def provider_calls(self, provider):
        return self.metric("idbroker_provider_requests_total", {"provider": provider})


def parallel(n, fn):
    """Runs fn(i) on n threads at once (released together); returns the results in order."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # recorded, checked by the caller
            results[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results
