# SPDX-License-Identifier: Apache-2.0
"""Soak of idbrokerd with the real CNI chain (issue 8 item 5; run by bench/soak.sh as root).

A fresh "node" network namespace runs the real idbrokerd (files mode, mock provider). PODS steady pods
(default 50), each a network namespace made by bridge + host-local + idbroker, ask
http://169.254.169.254 for tokens over the real redirect, each from its own thread that joined the
pod's namespace (setns), one new connection per request, every INTERVAL seconds, rotating over three
resources. Meanwhile:
- every second one "churn" pod is deleted (CNI DEL, namespace removed) and another one is created
  (CNI ADD) and asks for a token once (names come from a pool, as StatefulSet pods reuse theirs);
- every 5 s one steady pod's binding changes (its label flips between its two identities; the
  manifest file is replaced atomically and the broker picks it up);
- every 10 s the broker gets SIGHUP.

Each steady pod i owns identities soak-i-a and soak-i-b and nothing else; churn pods own soak-churn.
A reply is correct when it is 200 and its client_id (and the JWT's appid claim) is one of the pod's
own identities. Everything else is an unexpected error. The broker's RSS and open descriptors are
sampled with traffic paused, after a warm-up and at the end.

Environment: IDB_SOAK_SECONDS (default 600), IDB_SOAK_PODS (50), IDB_SOAK_INTERVAL (0.5),
IDB_SOAK_WARMUP (seconds, default min(60, duration/4)), IDB_SOAK_JSON (write the summary there too).
Prints a summary and one JSON line; exit status 1 when a goal is missed (unexpected errors, a foreign
identity, RSS growth >= 1 MiB, descriptors not flat).
"""
import base64
import http.client
import json
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import netns_world  # noqa: E402
from netns_world import World, setns  # noqa: E402

SECONDS = float(os.environ.get("IDB_SOAK_SECONDS", "600"))
PODS = int(os.environ.get("IDB_SOAK_PODS", "50"))
INTERVAL = float(os.environ.get("IDB_SOAK_INTERVAL", "0.5"))
WARMUP = float(os.environ.get("IDB_SOAK_WARMUP", str(min(60.0, SECONDS / 4))))
CHURN_POOL = 8
RESOURCES = ["https://management.azure.com/", "https://vault.azure.net", "https://storage.azure.com/"]
PATH = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource="


def cid(tag):
    """A client ID per identity name (deterministic, distinct)."""
    h = 0
    for ch in tag:
        h = (h * 131 + ord(ch)) % (16 ** 12)
    return "5a5a5a5a-0000-4000-8000-%012x" % h


IDENTITY = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata: {{name: {n}, namespace: default, annotations: {{idbroker.io/provider: mock}}}}
spec: {{type: 0, clientID: {cid}, resourceID: /subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{n}}}
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata: {{name: {n}, namespace: default}}
spec: {{azureIdentity: {n}, selector: {n}}}
---
"""
POD = """apiVersion: v1
kind: Pod
metadata: {{name: {n}, namespace: default, {uid}labels: {{aadpodidbinding: {label}}}}}
---
"""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.errors = []  # (time, where, what)
        self.foreign = 0
        self.churned = 0
        self.rebinds = 0
        self.reloads = 0
        self.by_status = {}

    def error(self, where, what):
        with self.lock:
            self.errors.append((round(time.time(), 3), where, str(what)[:300]))

    def status(self, st):
        with self.lock:
            self.by_status[st] = self.by_status.get(st, 0) + 1


def jwt_appid(token):
    try:
        p = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))).get("appid")
    except (IndexError, ValueError):
        return None


def judge(stats, where, status, body, own):
    stats.status(status)
    if status != 200:
        stats.error(where, "status %s: %s" % (status, body[:200]))
        return
    try:
        j = json.loads(body)
    except ValueError:
        stats.error(where, "not JSON: %r" % body[:200])
        return
    got = j.get("client_id")
    if got not in own or jwt_appid(j.get("access_token", "")) != got:
        with stats.lock:
            stats.foreign += 1
        stats.error(where, "FOREIGN identity %s (own: %s)" % (got, sorted(own)))
        return
    with stats.lock:
        stats.ok += 1


def proc_sample(pid):
    rss = anon = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1])
    return {"rss_kib": rss, "rss_anon_kib": anon, "fds": len(os.listdir("/proc/%d/fd" % pid)),
            "threads": len(os.listdir("/proc/%d/task" % pid))}


def broker_sample(pid):
    """The broker's own figures, plus those of its children (the provider host) in "children"."""
    s = proc_sample(pid)
    kids = []
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        pass
    s["children"] = {}
    for k in kids:
        try:
            with open("/proc/%d/comm" % k) as f:
                name = f.read().strip()
            s["children"]["%s:%d" % (name, k)] = proc_sample(k)
        except OSError:
            pass
    return s


def main():
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces)")
        return 2
    stats = Stats()
    with World("sk", subnet="10.97.0.0/22") as w:
        cl = w.conflist("1.0.0")
        steady = [w.new_pod("s%d" % i) for i in range(PODS)]
        label = {p.name: "soak-%d-a" % i for i, p in enumerate(steady)}
        own = {p.name: {cid("soak-%d-a" % i), cid("soak-%d-b" % i)} for i, p in enumerate(steady)}
        churn_own = {cid("soak-churn")}
        manifest_lock = threading.Lock()

        def manifests():
            out = IDENTITY.format(n="soak-churn", cid=cid("soak-churn"))
            for i, p in enumerate(steady):
                for s in "ab":
                    out += IDENTITY.format(n="soak-%d-%s" % (i, s), cid=cid("soak-%d-%s" % (i, s)))
                out += POD.format(n=p.name, uid="uid: uid-%s, " % p.container_id[:12], label=label[p.name])
            for k in range(CHURN_POOL):
                out += POD.format(n="churn%d" % k, uid="", label="soak-churn")
            return out

        broker = w.start_real_broker(manifests())
        policy_file = os.path.join(w.broker_dir, "identities", "policy.yaml")
        conf_file = os.path.join(w.broker_dir, "idbrokerd.json")
        with open(conf_file) as f:
            conf = json.load(f)
        conf["log"]["level"] = "info"  # audit records only: the log would grow by debug lines
        with open(conf_file, "w") as f:
            json.dump(conf, f)
        broker.send_signal(signal.SIGHUP)

        def write_policy():
            with manifest_lock:
                text = manifests()
                tmp = policy_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                os.rename(tmp, policy_file)

        t0 = time.time()
        for p in steady:
            code, out, err = w.chain("ADD", cl, p)
            if code != 0:
                print("soak: ADD of %s failed: %s %s" % (p.name, out, err))
                return 1
        print("soak: %d steady pods added in %.1f s" % (PODS, time.time() - t0), flush=True)

        stop = threading.Event()
        running = threading.Event()
        running.set()
        idle = threading.Semaphore(0)

        def worker(pod, idx):
            setns(pod.netns_path)  # this thread only: its sockets are the pod's
            rnd = random.Random(idx)
            n = 0
            while not stop.is_set():
                if not running.is_set():
                    idle.release()
                    running.wait()
                    continue
                res = RESOURCES[n % len(RESOURCES)]
                n += 1
                try:
                    c = http.client.HTTPConnection(netns_world.METADATA, 80, timeout=15)
                    c.request("GET", PATH + res, headers={"Metadata": "true"})
                    r = c.getresponse()
                    body = r.read().decode("utf-8", "replace")
                    c.close()
                    judge(stats, pod.name, r.status, body, own[pod.name])
                except OSError as e:
                    stats.status("exception")
                    stats.error(pod.name, "%s: %s" % (type(e).__name__, e))
                time.sleep(INTERVAL * (0.5 + rnd.random()))

        threads = [threading.Thread(target=worker, args=(p, i), daemon=True) for i, p in enumerate(steady)]
        for t in threads:
            t.start()

        def pause_and_sample():
            running.clear()
            for _ in threads:
                idle.acquire(timeout=30)
            time.sleep(1.0)  # let connection threads finish
            s = broker_sample(broker.pid)
            running.set()
            return s

        churn = []  # live churn pods, oldest first
        churn_seq = 0
        start = time.time()
        warm = None
        samples = []
        next_rebind = start + 5
        next_hup = start + 10
        next_sample = start + 30
        while time.time() - start < SECONDS:
            tick = time.time()
            if broker.poll() is not None:
                stats.error("broker", "exited with %s" % broker.returncode)
                break
            if warm is None and tick - start >= WARMUP:
                warm = pause_and_sample()
                print("soak: after %.0f s warm-up: %s" % (WARMUP, warm), flush=True)
            elif tick >= next_sample:
                samples.append(broker_sample(broker.pid))
                next_sample = tick + 30
            # Churn: delete the oldest, add a new one that asks once.
            if len(churn) >= CHURN_POOL // 2:
                old = churn.pop(0)
                code, out, err = w.chain("DEL", cl, old)
                if code != 0:
                    stats.error("churn", "DEL %s: %s %s" % (old.name, out, err[-200:]))
                w.remove_pod_netns(old)
                w.pods.pop(old.name, None)
            name = "churn%d" % (churn_seq % CHURN_POOL)
            churn_seq += 1
            if name not in w.pods:
                pod = w.new_pod(name)
                code, out, err = w.chain("ADD", cl, pod)
                if code != 0:
                    stats.error("churn", "ADD %s: %s %s" % (name, out, err[-200:]))
                else:
                    churn.append(pod)
                    rc, status, body = pod.curl(timeout=15)
                    judge(stats, name, status, body, churn_own)
                    with stats.lock:
                        stats.churned += 1
            if tick >= next_rebind:
                i = random.randrange(PODS)
                p = steady[i]
                label[p.name] = "soak-%d-b" % i if label[p.name].endswith("-a") else "soak-%d-a" % i
                write_policy()
                with stats.lock:
                    stats.rebinds += 1
                next_rebind = tick + 5
            if tick >= next_hup:
                broker.send_signal(signal.SIGHUP)
                with stats.lock:
                    stats.reloads += 1
                next_hup = tick + 10
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))

        end = pause_and_sample() if broker.poll() is None else None
        stop.set()
        running.set()
        for t in threads:
            t.join(timeout=30)
        log = open(w.broker_log, errors="replace").read()
        summary = {
            "seconds": round(time.time() - start),
            "pods": PODS,
            "requests_ok": stats.ok,
            "by_status": {str(k): v for k, v in stats.by_status.items()},
            "unexpected_errors": len(stats.errors),
            "foreign_identity": stats.foreign,
            "churned_pods": stats.churned,
            "binding_changes": stats.rebinds,
            "sighup_reloads": stats.reloads,
            "warm": warm,
            "end": end,
            "samples": samples,
            "rss_growth_kib": (end["rss_kib"] - warm["rss_kib"]) if warm and end else None,
            "rss_anon_growth_kib": (end["rss_anon_kib"] - warm["rss_anon_kib"]) if warm and end else None,
            "fds_warm_end": [warm["fds"], end["fds"]] if warm and end else None,
            "sanitizer_or_crash": any(m in log for m in ("AddressSanitizer", "runtime error:", "LeakSanitizer")),
            "first_errors": stats.errors[:10],
        }
    ok = (summary["unexpected_errors"] == 0 and summary["foreign_identity"] == 0
          and summary["rss_growth_kib"] is not None and summary["rss_growth_kib"] < 1024
          and summary["fds_warm_end"][0] == summary["fds_warm_end"][1]
          and not summary["sanitizer_or_crash"])
    print("soak: %d s, %d pods: %d tokens, by status %s" % (summary["seconds"], PODS, stats.ok, summary["by_status"]))
    print("soak: unexpected errors %d (goal 0), foreign identity %d (goal 0)" % (len(stats.errors), stats.foreign))
    print("soak: churned pods %d, binding changes %d, SIGHUP reloads %d" % (stats.churned, stats.rebinds, stats.reloads))
    if warm and end:
        print("soak: broker RSS %d -> %d KiB (growth %+d KiB, goal < 1024; anon %+d KiB), fds %d -> %d (goal flat), threads %d -> %d"
              % (warm["rss_kib"], end["rss_kib"], summary["rss_growth_kib"], summary["rss_anon_growth_kib"],
                 warm["fds"], end["fds"], warm["threads"], end["threads"]))
    if warm and end:
        for k, v in end["children"].items():
            w0 = warm["children"].get(k)
            if w0:
                print("soak: child %s RSS %d -> %d KiB (%+d KiB), fds %d -> %d" % (
                    k, w0["rss_kib"], v["rss_kib"], v["rss_kib"] - w0["rss_kib"], w0["fds"], v["fds"]))
            else:
                print("soak: child %s at the end only (restarted?): %s" % (k, v))
    for e in stats.errors[:10]:
        print("soak: error %s" % (e,))
    print("soak: " + ("PASS" if ok else "MISS"))
    line = json.dumps(summary, sort_keys=True)
    print(line)
    if os.environ.get("IDB_SOAK_JSON"):
        with open(os.environ["IDB_SOAK_JSON"], "w") as f:
            f.write(line + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
