# SPDX-License-Identifier: Apache-2.0
"""Faults (issue 8 item 4): idbroker survives kills, outages and a full disk without losing a
registration, writing a torn file or leaving a pod unprotected. Each part runs in its own World
(netns_world.py): a fresh node namespace, the real bridge + host-local + idbroker chain and, where
needed, the real idbrokerd (files mode, mock provider) with one identity per pod, so a token's
client_id says whose it is.

  broker_kill   kill -9 of idbrokerd, again and again, while pods ask for tokens, pods are ADDed and
                `idbrokerctl register` makes the broker write registrations: after the last restart
                every successful ADD / register is listed by the broker and on disk, every state file
                parses, no temporary file is left, every pod gets its own token.
  plugin_kill   kill -9 of the idbroker CNI plugin at random moments of ADD: after each kill every state
                file parses; then a retried ADD (+ CHECK) succeeds, or a DEL leaves no record, no
                registration, no temporary file and no nftables element of the pod.
  broker_down   idbrokerd stopped for IDB_FAULT_DOWN_SECONDS (default 15; the issue's full minute is
                IDB_FAULT_DOWN_SECONDS=60, about 80 s for this part) while a pod is DELeted and another
                ADDed every second: meanwhile every pod's request is refused and the stand-in IMDS sees
                none; after the restart the pods ADDed meanwhile get their own token and those DELeted
                meanwhile are not registered (their addresses, reused, give the new pod its own identity).
  full_disk     stateDir on a full tmpfs: ADD fails with code 11 naming the state directory, changes no
                file, no nftables element and nothing in the pod's netns; after space is freed the
                retried ADD succeeds.

IDB_FAULT_PARTS (comma-separated names, default all), IDB_FAULT_BROKER_KILLS (default 10),
IDB_FAULT_PLUGIN_KILLS (default 100) and IDB_FAULT_DOWN_SECONDS tune it. No check depends on timing:
delays only decide where kills land.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    BUILD,
    IDBROKERD,
    MOCK_PROVIDER,
    World,
    check,
    elem_keys,
    equal,
    run_main,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from idbtest import binding_yaml, identity_yaml, pod_yaml  # noqa: E402

IDBROKERCTL = os.path.join(BUILD, "idbrokerctl")
VERSION = "1.0.0"
REFUSED = (7, 28)  # curl: connection refused, timed out
# curl, the broker killed mid-request: send failed (55: the kill's RST reached the connection queued on
# the dying listener before curl wrote its request), empty reply (52), reset while reading (56), body
# cut short (18: a 200 whose token never arrived, not a foreign token)
RESET = (18, 52, 55, 56)


# ---------------------------------------------------------------------------------------------------
# Helpers


def client_id(pod):
    """A client ID of the pod's own identity (uuid-shaped, derived from its container ID)."""
    h = pod.container_id
    return "%s-%s-%s-%s-%s" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])


def manifests(pods):
    """One AzureIdentity + binding per pod, and the pods themselves (files mode)."""
    return "".join(identity_yaml("id-" + p.name, client_id=client_id(p))
                   + binding_yaml("bind-" + p.name, "id-" + p.name, "sel-" + p.name)
                   + pod_yaml(p.name, "sel-" + p.name, uid="uid-" + p.container_id[:12]) for p in pods)


def token(pod, timeout=3):
    """(curl rc, http status, client_id of the token or None)."""
    rc, status, body = pod.curl(timeout=timeout)
    try:
        cid = json.loads(body).get("client_id") if body else None
    except ValueError:
        cid = None
    return rc, status, cid


def ctl(w, *args, timeout=10):
    p = subprocess.run([IDBROKERCTL, "-s", w.broker_socket, "-o", "json", "--timeout", str(timeout)] + list(args),
                       capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def broker_pods(w):
    """Container IDs the running broker has registered."""
    rc, out, err = ctl(w, "pods")
    check(rc == 0, "idbrokerctl pods answers (%s)" % err.strip())
    o = json.loads(out)
    if isinstance(o, dict):
        o = o.get("result", o.get("pods", []))
    return {r["containerId"] for r in o}


def state_problems(state_dir, allow_tmp=False):
    """Everything wrong with a state directory: files that do not parse (torn or half written),
    records/registrations whose content names another key, by-ip links to no record, and (unless
    allow_tmp) temporary files left behind."""
    bad = []
    for sub in ("pods", "cni"):
        d = os.path.join(state_dir, sub)
        if not os.path.isdir(d):
            continue
        for n in sorted(os.listdir(d)):
            path = os.path.join(d, n)
            if n.startswith(".tmp-"):
                if not allow_tmp:
                    bad.append("temporary file %s/%s" % (sub, n))
                continue
            if not n.endswith(".json"):
                continue
            try:
                with open(path) as f:
                    o = json.load(f)
            except (ValueError, OSError) as e:
                bad.append("%s/%s does not parse: %s" % (sub, n, e))
                continue
            if o.get("version") != 1 or "%s@%s.json" % (o.get("containerId"), o.get("ifName")) != n or not o.get("ips"):
                bad.append("%s/%s is not a complete record: %r" % (sub, n, o))
    d = os.path.join(state_dir, "cni", "by-ip")
    if os.path.isdir(d):
        for n in sorted(os.listdir(d)):
            if n.startswith(".tmp-"):
                if not allow_tmp:
                    bad.append("temporary link by-ip/%s" % n)
                continue
            target = os.readlink(os.path.join(d, n))
            if not os.path.exists(os.path.join(state_dir, "cni", target + ".json")):
                bad.append("by-ip/%s points to %s, which has no record" % (n, target))
    return bad


def pod_files(state_dir, pod):
    """The pod's own files in the state directory (records, registrations, temporary files, links)."""
    key = "%s@%s" % (pod.container_id, pod.ifname)
    out = []
    for sub in ("pods", "cni"):
        d = os.path.join(state_dir, sub)
        if os.path.isdir(d):
            out += ["%s/%s" % (sub, n) for n in os.listdir(d) if key in n]
    d = os.path.join(state_dir, "cni", "by-ip")
    if os.path.isdir(d):
        for n in os.listdir(d):
            p = os.path.join(d, n)
            if n.startswith(".tmp-") or (os.path.islink(p) and os.readlink(p) == key):
                out.append("cni/by-ip/" + n)
    return sorted(out)


def pod_elements(w, pod, veth):
    """nftables elements (idbroker's tables) that name the pod's address, MAC or host-side veth."""
    marks = {pod.ip, veth}
    mac = next((i.get("mac") for i in (pod.result or {}).get("interfaces", []) if i.get("sandbox")), None)
    if mac:
        marks.add(mac.lower())
    out = []
    for name, elems in w.all_elements().items():
        for k in elem_keys(elems):
            if any(str(x).lower() in marks for x in k):
                out.append((name, k))
    return out


def netns_snapshot(pod):
    """What the pod's own namespace looks like: links, addresses, routes, neighbours' rules."""
    return [pod.exec(argv).stdout for argv in (["ip", "-o", "link"], ["ip", "-o", "addr"], ["ip", "route"],
                                               ["ip", "-6", "route"], ["nft", "list", "ruleset"])]


def dir_snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = "-> " + os.readlink(p)
            else:
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, root)] = fh.read()
        for f in os.listdir(d):
            p = os.path.join(d, f)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = "-> " + os.readlink(p)
    return out


def summary(problems, n=3):
    return "; ".join(str(p) for p in problems[:n]) + (" …" if len(problems) > n else "")


# ---------------------------------------------------------------------------------------------------
# 1. kill -9 of the broker under load and during state writes


def broker_kill():
    kills = int(os.environ.get("IDB_FAULT_BROKER_KILLS", "10"))
    with World("fk") as w:
        cl = w.conflist(VERSION)
        pods = [w.new_pod("k%d" % i) for i in range(14)]
        w.start_imds()
        broker = w.start_real_broker(manifests(pods))
        first, later = pods[:6], pods[6:]
        for p in first:
            code, out, err = w.chain("ADD", cl, p)
            equal(code, 0, "ADD %s before the kills" % p.name)

        live = list(first)
        stop = threading.Event()
        lock = threading.Lock()
        results = {"ok": 0, "refused": 0, "other": [], "foreign": [], "adds": [], "add_failed": [],
                   "registered": [], "register_failed": 0}

        def requester(seed):
            rnd = random.Random(seed)
            while not stop.is_set():
                with lock:
                    p = rnd.choice(live)
                rc, status, cid = token(p, timeout=2)
                with lock:
                    if rc == 0 and status == 200 and cid == client_id(p):
                        results["ok"] += 1
                    elif status == 200 and cid is not None:
                        results["foreign"].append((p.name, cid))
                    elif rc in REFUSED + RESET or (rc == 0 and status == 503):
                        results["refused"] += 1  # broker down, or up and not loaded yet
                    else:
                        results["other"].append((p.name, rc, status))

        def adder():
            for p in later:
                if stop.is_set():
                    break
                code, out, err = w.chain("ADD", cl, p)
                with lock:
                    if code == 0:
                        results["adds"].append(p)
                        live.append(p)
                    else:
                        results["add_failed"].append((p.name, out, err))
                time.sleep(0.3)

        def registrar():
            i = 0
            while not stop.is_set():
                i += 1
                cid = "ctlfault%04d" % i
                rc, _, _ = ctl(w, "register", "default/ctl-%d" % i, "--ip", "10.98.%d.%d" % (i // 200, i % 200 + 1),
                               "--container-id", cid, timeout=2)
                with lock:
                    if rc == 0:
                        results["registered"].append(cid)
                    else:
                        results["register_failed"] += 1
                time.sleep(0.05)

        threads = [threading.Thread(target=requester, args=(s,)) for s in range(3)]
        threads += [threading.Thread(target=adder), threading.Thread(target=registrar)]
        for t in threads:
            t.start()
        torn = []
        try:
            rnd = random.Random()
            for k in range(kills):
                time.sleep(rnd.uniform(0.3, 1.2))
                broker.send_signal(signal.SIGKILL)
                broker.wait()
                # While it is dead: whatever it was writing is either complete or a temporary file.
                torn += state_problems(w.state_dir, allow_tmp=True)
                time.sleep(rnd.uniform(0, 0.5))
                broker = w.start_real_broker(manifests(pods))
            threads[3].join(60)  # the adder: every later pod ADDed
        finally:
            stop.set()
            for t in threads:
                t.join(60)

        print("     %d kills; %d tokens, %d refused while down/starting; %d pods ADDed during the kills, "
              "%d broker registrations written (%d register calls failed: broker down)"
              % (kills, results["ok"], results["refused"], len(results["adds"]), len(results["registered"]),
                 results["register_failed"]), flush=True)
        equal(torn, [], "after each of %d kills -9 every state file parses" % kills)
        equal(results["add_failed"], [], "every ADD during the kills succeeded (a dead broker does not fail ADD)")
        equal(results["foreign"], [], "no pod ever got another pod's token")
        equal(results["other"], [], "no request failed other than refused / reset / 503 around the kills")
        check(results["ok"] > 0 and results["registered"], "tokens were served and registrations written between kills")

        # The last broker: everything made by a successful ADD or register is there, nothing is torn.
        listed = broker_pods(w)
        want = {p.container_id for p in first + results["adds"]} | set(results["registered"])
        equal(sorted(want - listed), [], "all %d registrations (%d ADDs, %d by idbrokerctl) are listed by the restarted broker"
              % (len(want), len(first) + len(results["adds"]), len(results["registered"])))
        on_disk = {n.split("@")[0] for n in os.listdir(os.path.join(w.state_dir, "pods")) if n.endswith(".json")}
        equal(sorted(want - on_disk), [], "... and each has its file in stateDir/pods")
        equal(state_problems(w.state_dir), [], "no state file is torn and no temporary file is left")
        wrong = []
        for p in live:
            rc, status, cid = token(p)
            if (status, cid) != (200, client_id(p)):
                wrong.append((p.name, rc, status, cid))
        equal(wrong, [], "each of the %d pods gets its own token from the restarted broker" % len(live))
        equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request")
        check("AddressSanitizer" not in open(w.broker_log).read(), "no sanitizer report from idbrokerd")


# ---------------------------------------------------------------------------------------------------
# 2. kill -9 of the CNI plugin during ADD


def plugin_kill():
    kills = int(os.environ.get("IDB_FAULT_PLUGIN_KILLS", "100"))
    with World("pk") as w:
        prim = w.conflist(VERSION, chained=None)
        cl = w.conflist(VERSION)
        pods = [w.new_pod("c%d" % i) for i in range(3)]
        for p in pods:
            code, out, err = w.chain("ADD", prim, p)
            equal(code, 0, "primary ADD of %s" % p.name)
            p.veth = p.host_veth()

        def conf(p):
            return w.plugin_conf(cl, cl["plugins"][1], VERSION, p.result)

        # How long an undisturbed ADD takes (only to spread the kills over it).
        t0 = time.monotonic()
        code, _, err = w.invoke("idbroker", "ADD", conf(pods[0]), pods[0])
        t_add = time.monotonic() - t0
        equal(code, 0, "an undisturbed ADD (%.0f ms)" % (t_add * 1000))
        code, _, err = w.invoke("idbroker", "DEL", conf(pods[0]), pods[0])
        equal(code, 0, "... and its DEL")

        rnd = random.Random()
        added = {p.name: False for p in pods}
        killed = finished = retried = deleted = 0
        problems, stages = [], {}
        for i in range(kills):
            p = pods[i % len(pods)]
            proc = w.invoke_async("idbroker", "ADD", conf(p), p)
            time.sleep(rnd.uniform(0, t_add * 1.2))
            proc.kill()
            rc = proc.wait()
            if rc == -signal.SIGKILL:
                killed += 1
            else:
                finished += 1
            problems += ["kill %d: %s" % (i, x) for x in state_problems(w.state_dir, allow_tmp=True)]
            files = pod_files(w.state_dir, p)
            tmp = any(".tmp-" in f for f in files)
            rec = "cni/%s@eth0.json" % p.container_id in files
            reg = "pods/%s@eth0.json" % p.container_id in files
            stage = ("registered" if reg else "record only" if rec else "nothing") + (" + temporary file" if tmp else "")
            stages[stage] = stages.get(stage, 0) + 1
            if rnd.random() < 0.5:
                code, out, err = w.invoke("idbroker", "ADD", conf(p), p)
                if code != 0:
                    problems.append("kill %d: retried ADD of %s failed: %s %s" % (i, p.name, out, err))
                code, out, err = w.invoke("idbroker", "CHECK", conf(p), p)
                if code != 0:
                    problems.append("kill %d: CHECK after the retried ADD of %s failed: %s" % (i, p.name, out))
                added[p.name] = True
                retried += 1
            else:
                code, out, err = w.invoke("idbroker", "DEL", conf(p), p)
                if code != 0:
                    problems.append("kill %d: DEL of %s failed: %s %s" % (i, p.name, out, err))
                left = pod_files(w.state_dir, p)
                if left:
                    problems.append("kill %d: DEL of %s left %s" % (i, p.name, left))
                elems = pod_elements(w, p, p.veth)
                if elems:
                    problems.append("kill %d: DEL of %s left nftables elements %s" % (i, p.name, elems))
                added[p.name] = False
                deleted += 1
            problems += ["kill %d (after retry/DEL): %s" % (i, x) for x in state_problems(w.state_dir)]
        print("     %d kills: %d landed while ADD ran, %d after it had finished; then %d retried ADDs, %d DELs"
              % (kills, killed, finished, retried, deleted), flush=True)
        print("     the pod's files right after the kill: %s"
              % ", ".join("%s %d" % kv for kv in sorted(stages.items())), flush=True)
        check(killed > 0, "kills landed in the middle of ADD (%d of %d)" % (killed, kills))
        equal(problems, [], "after every kill all state files parse; a retried ADD + CHECK succeeds; a DEL leaves no "
              "file and no nftables element of the pod (%s)" % summary(problems))
        for p in pods:
            code, out, err = w.chain("DEL", cl, p)
            equal(code, 0, "DEL of %s through the chain" % p.name)
        equal(w.state_files(), [], "the state directory holds nothing after the DELs")
        equal(state_problems(w.state_dir), [], "... and no temporary file")
        rest = {k: v for k, v in w.all_elements().items() if v and not k.endswith("/base_rev")}
        equal(rest, {}, "idbroker's sets are empty after the DELs")


# ---------------------------------------------------------------------------------------------------
# 3. broker stopped under pod churn


def broker_down():
    down = float(os.environ.get("IDB_FAULT_DOWN_SECONDS", "15"))
    with World("bd") as w:
        cl = w.conflist(VERSION)
        # A small range: pods ADDed during the outage reuse addresses of pods DELeted during it.
        cl["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.99.0.0/24", "rangeStart": "10.99.0.50",
                                                "rangeEnd": "10.99.0.57"}]]
        n_new = int(down) + 2
        pool = [w.new_pod("d%d" % i) for i in range(4 + n_new)]
        w.start_imds()
        broker = w.start_real_broker(manifests(pool))
        live = []
        for p in pool[:4]:
            code, out, err = w.chain("ADD", cl, p)
            equal(code, 0, "ADD %s before the outage" % p.name)
            live.append(p)
        for p in live:
            equal(token(p)[1:], (200, client_id(p)), "%s gets its own token before the outage" % p.name)

        w.stop(broker)
        fresh = iter(pool[4:])
        added_down, deleted_down, leaks, failed = [], [], [], []
        requests = 0
        t_end = time.monotonic() + down
        while time.monotonic() < t_end:
            tick = time.monotonic()
            for p in live:
                rc, status, cid = token(p, timeout=2)
                requests += 1
                if rc not in REFUSED:
                    leaks.append((p.name, rc, status, cid))
            victim = live.pop(0)
            code, out, err = w.chain("DEL", cl, victim)
            if code != 0:
                failed.append(("DEL", victim.name, out, err))
            deleted_down.append(victim)
            w.remove_pod_netns(victim)
            p = next(fresh, None)
            if p is None:
                break
            code, out, err = w.chain("ADD", cl, p)
            if code != 0:
                failed.append(("ADD", p.name, out, err))
            else:
                added_down.append(p)
                live.append(p)
            time.sleep(max(0, 1 - (time.monotonic() - tick)))
        print("     %.0f s down: %d requests, %d pods DELeted and %d ADDed meanwhile"
              % (down, requests, len(deleted_down), len(added_down)), flush=True)
        equal(failed, [], "every ADD and DEL during the outage succeeded")
        equal(leaks, [], "while the broker was down every one of %d requests was refused or timed out" % requests)
        equal(w.requests(w.imds_log), [], "... and none reached the stand-in IMDS")

        w.start_real_broker(manifests(pool))
        wrong = []
        for p in live:
            rc, status, cid = token(p)
            if (status, cid) != (200, client_id(p)):
                wrong.append((p.name, rc, status, cid))
        check(any(p in added_down for p in live), "pods ADDed during the outage are alive")
        equal(wrong, [], "after the restart each live pod (%d ADDed during the outage) gets its own token"
              % len([p for p in live if p in added_down]))
        reused = [p.name for p in live if any(p.ip == d.ip for d in deleted_down)]
        check(reused, "pods ADDed during the outage reuse addresses of pods DELeted during it (%s)" % reused)
        listed = broker_pods(w)
        equal(sorted(p.name for p in deleted_down if p.container_id in listed), [],
              "none of the %d pods DELeted during the outage is registered with the broker" % len(deleted_down))
        equal(sorted(p.name for p in live if p.container_id not in listed), [], "every live pod is")
        regs = os.listdir(os.path.join(w.state_dir, "pods"))
        equal(sorted(p.name for p in deleted_down if any(p.container_id in n for n in regs)), [],
              "... and none of them has a file left in stateDir/pods")
        equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request at any time")


# ---------------------------------------------------------------------------------------------------
# 4. full disk for the state directory


def full_disk():
    with World("fd") as w:
        mnt = w.mount_tmpfs(os.path.join(w.tmp, "full"), "256k")
        state = os.path.join(mnt, "state")
        prim = w.conflist(VERSION, chained=None)
        cl = w.conflist(VERSION, stateDir=state)
        a = w.add_pod(cl, "fa")
        check(os.path.exists(os.path.join(state, "pods", "%s@eth0.json" % a.container_id)), "pod A registered on the tmpfs")

        b = w.new_pod("fb")
        code, out, err = w.chain("ADD", prim, b)
        equal(code, 0, "primary ADD of pod B")
        b_conf = w.plugin_conf(cl, cl["plugins"][1], VERSION, b.result)
        veth = b.host_veth()

        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            equal(e.errno, 28, "the tmpfs is full (ENOSPC)")
        finally:
            os.close(fd)
        files_before = dir_snapshot(state)
        elems_before = w.all_elements()
        ns_before = netns_snapshot(b)

        code, out, err = w.invoke("idbroker", "ADD", b_conf, b)
        check(code != 0 and isinstance(out, dict), "ADD on a full state directory fails with a CNI error (%s)" % out)
        equal(out.get("code"), 11, "... code 11 (try again later)")
        text = "%s %s" % (out.get("msg"), out.get("details"))
        check(state in text, "... naming the state directory: %s" % text)
        equal(dir_snapshot(state), files_before, "no file in the state directory changed (nothing half written)")
        equal(pod_elements(w, b, veth), [], "no nftables element names pod B")
        equal(w.all_elements(), elems_before, "idbroker's sets are as before")
        equal(netns_snapshot(b), ns_before, "pod B's netns is unchanged")
        code, _, _ = w.invoke("idbroker", "CHECK", w.plugin_conf(cl, cl["plugins"][1], VERSION, a.result), a)
        equal(code, 0, "pod A's registration and rules are intact (CHECK)")

        # Room for one page: the record fits, the registration does not (the undo path).
        os.truncate(filler, os.path.getsize(filler) - 4096)
        code, out, err = w.invoke("idbroker", "ADD", b_conf, b)
        check(code != 0 and isinstance(out, dict) and out.get("code") == 11 and "registration" in out.get("msg", ""),
              "with room for the record only, ADD fails at the registration with code 11 (%s)" % out)
        equal(dir_snapshot(state), files_before, "... and leaves no file changed either")
        equal(w.all_elements(), elems_before, "... and removed the elements it had installed")
        equal(netns_snapshot(b), ns_before, "... and pod B's netns is unchanged")

        os.unlink(filler)
        code, out, err = w.invoke("idbroker", "ADD", b_conf, b)
        equal(code, 0, "space freed: the retried ADD succeeds (%s)" % (out if code else ""))
        code, out, _ = w.invoke("idbroker", "CHECK", b_conf, b)
        equal(code, 0, "... and CHECK finds pod B registered and redirected (%s)" % (out if code else ""))
        equal(state_problems(state), [], "every state file parses, none is temporary")
        for p in (a, b):
            code, out, err = w.chain("DEL", cl, p)
            equal(code, 0, "DEL %s" % p.name)
        equal(sorted(os.listdir(os.path.join(state, "pods"))), [], "no registration is left")


PARTS = {"broker_kill": broker_kill, "plugin_kill": plugin_kill, "broker_down": broker_down, "full_disk": full_disk}


def main():
    if not (os.path.exists(IDBROKERD) and os.path.exists(MOCK_PROVIDER) and os.path.exists(IDBROKERCTL)):
        print("SKIP: idbrokerd, idbrokerctl or the mock provider is not built")
        sys.exit(77)
    names = [n for n in os.environ.get("IDB_FAULT_PARTS", ",".join(PARTS)).split(",") if n]
    for n in names:
        print("# %s" % n, flush=True)
        t0 = time.monotonic()
        PARTS[n]()
        print("     (%s took %.1f s)" % (n, time.monotonic() - t0), flush=True)


if __name__ == "__main__":
    run_main(main)
