# SPDX-License-Identifier: Apache-2.0
"""THREATS T21: the primary CNI rewrites its conflist and drops idbroker.

A real flow in a fresh node namespace: a pod is set up by the primary alone and reaches the node's
IMDS (control). The install step (deploy/install-cni.sh, watch mode, as the DaemonSet's cni-watch
container runs it, in the node namespace) puts idbroker into the primary's conflist and installs
idbroker's tables (`idbroker --guard`) before any ADD: from then on that pod gets no answer from the
metadata address and CHECK finds it unprotected; tables deleted by hand are installed again. Pods
are added the way a runtime does it, reading the conflist from disk at every ADD (bridge +
host-local [+ idbroker]). Then the primary rewrites its file without idbroker (atomically, and once
more in place):

- the watcher puts idbroker back, once, at the end, keeping the primary's new content;
- a pod created in the gap (the watcher is held stopped so the gap is certain, not a race) never
  reaches the node's IMDS: idbroker's guard, installed by the install step, drops every pod packet to the
  metadata address that no pod element redirects (fail closed);
- that pod is detected: once idbroker is back, CHECK of its attachment fails (no record, code 102/103)
  while CHECK of a pod made before the gap passes; pods made after the repair are protected again.

Last, a primary that writes a single-plugin .conf sorting first: the watcher converts it into a
.conflist chaining idbroker (and removes the .conf), and that conflist works as a real chain.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    IDBROKER_CNI,
    SOURCE,
    World,
    check,
    equal,
    run_main,
    wait_for,
)

SCRIPT = os.path.join(SOURCE, "deploy", "install-cni.sh")
FNAME = "10-primary.conflist"


def types(path):
    try:
        with open(path) as f:
            return [p.get("type") for p in json.load(f)["plugins"]]
    except (OSError, ValueError, KeyError):
        return None


def main():
    if not os.path.exists("/usr/bin/jq"):
        print("SKIP: jq is not installed (the install step needs it)")
        sys.exit(77)
    with World("cfl") as w:
        w.start_imds()
        w.start_broker_standin()
        w.start_ctl()
        netdir, bindir = os.path.join(w.tmp, "net.d"), os.path.join(w.tmp, "bin")
        os.makedirs(netdir)
        conf_path = os.path.join(netdir, FNAME)
        primary = w.conflist("1.0.0", chained=None)
        with open(conf_path, "w") as f:
            json.dump(primary, f, indent=2)

        # A pod the runtime set up before the install step ran: the primary alone, no idbroker
        # anywhere on the node yet. Control: the gap is real, it reaches the node's IMDS.
        check(not [t for t in w.tables() if t[1] == "idbroker"], "before the install step: no idbroker table")
        early = w.new_pod("early")
        code, out, err = w.chain("ADD", primary, early)
        equal(code, 0, "ADD of a pod before the install step (bridge alone)")
        rc, status, _ = early.curl(timeout=2)
        equal((rc, status, len(w.requests(w.imds_log))), (0, 200, 1),
              "control: before the install step that pod reaches the node's IMDS")

        env = dict(os.environ, IDBROKER_CNI_BINARY=IDBROKER_CNI, CNI_BIN_DIR=bindir, CNI_NET_DIR=netdir,
                   IDBROKER_CNI_PLUGIN=json.dumps(w.idbroker_conf()), IDBROKER_CNI_WATCH="1",
                   IDBROKER_CNI_INTERVAL="0.2")
        # In the node namespace, as the DaemonSet's hostNetwork container: step 3 (idbroker --guard)
        # programs the node's nftables.
        watcher = subprocess.Popen(["ip", "netns", "exec", w.node, "/bin/sh", SCRIPT], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        w.procs.append(watcher)
        wait_for(lambda: types(conf_path) == ["bridge", "idbroker"], "the install step inserted idbroker")
        check(os.access(os.path.join(bindir, "idbroker"), os.X_OK), "... and installed the plugin binary")
        tables = {("inet", "idbroker"), ("bridge", "idbroker")}
        wait_for(lambda: tables <= set(w.tables()), "... and idbroker's tables, before any ADD with idbroker")

        # Fail closed from the install step on, not from the first ADD.
        rc, status, _ = early.curl(timeout=2)
        check(rc != 0 and status is None,
              "the pod set up before the install step now gets no answer from the metadata address (rc %d)" % rc)
        equal(len(w.requests(w.imds_log)), 1, "... and the node's IMDS saw nothing more")
        code, out, _ = w.chain("CHECK", w.conflist("1.0.0", chained="idbroker"), early)
        check(code != 0 and isinstance(out, dict) and out.get("code") in (102, 103),
              "CHECK finds that pod unprotected (code %s)" % (out.get("code") if isinstance(out, dict) else out))
        # Tables flushed away (an `nft flush ruleset`): the watcher installs them again.
        w.node_exec(["nft", "delete", "table", "inet", "idbroker"], check=True)
        w.node_exec(["nft", "delete", "table", "bridge", "idbroker"], check=True)
        wait_for(lambda: tables <= set(w.tables()), "tables deleted: the watcher installs them again")
        rc, status, _ = early.curl(timeout=2)
        check(rc != 0 and status is None and len(w.requests(w.imds_log)) == 1,
              "... and the pod set up before the install step is cut off again")

        def runtime_add(name):
            """ADD as a runtime does it: the conflist as it is on disk now."""
            with open(conf_path) as f:
                cl = json.load(f)
            pod = w.new_pod(name)
            code, out, err = w.chain("ADD", cl, pod)
            equal(code, 0, "ADD %s with the conflist on disk (%s)" % (name, "+".join(p["type"] for p in cl["plugins"])))
            return pod, cl

        before, cl_full = runtime_add("before")
        rc, status, body = before.curl()
        equal((rc, json.loads(body)["client"] if rc == 0 else None), (0, before.ip), "a pod added before the gap reaches the broker")

        # The primary rewrites its file (new content, no idbroker) while the watcher is held.
        os.killpg(watcher.pid, signal.SIGSTOP)
        rewritten = dict(primary, plugins=[dict(primary["plugins"][0], mtu=1400)])
        tmp = os.path.join(netdir, ".primary.tmp")
        with open(tmp, "w") as f:
            json.dump(rewritten, f)
        os.rename(tmp, conf_path)
        equal(types(conf_path), ["bridge"], "the primary rewrote its conflist without idbroker")
        gap, _ = runtime_add("gap")
        seen = len(w.requests(w.imds_log))
        rc, status, _ = gap.curl(timeout=2)
        check(rc != 0 and status is None, "a pod added in the gap gets no answer from the metadata address (rc %d)" % rc)
        equal(len(w.requests(w.imds_log)), seen, "... and the node's IMDS saw nothing (fail closed)")

        os.killpg(watcher.pid, signal.SIGCONT)
        wait_for(lambda: types(conf_path) == ["bridge", "idbroker"], "the watcher put idbroker back after the rewrite")
        with open(conf_path) as f:
            got = json.load(f)
        equal(got["plugins"][0].get("mtu"), 1400, "... keeping the primary's new content")
        equal(got["plugins"][1], w.idbroker_conf(), "... with idbroker's configuration")
        check(not [x for x in os.listdir(netdir) if x.startswith(".idbroker")], "no temporary file left")

        # Detection: CHECK with the repaired conflist.
        code, out, _ = w.chain("CHECK", got, gap)
        check(code != 0 and isinstance(out, dict) and out.get("code") in (102, 103),
              "CHECK finds the pod added in the gap unprotected (code %s)" % (out.get("code") if isinstance(out, dict) else out))
        code, out, _ = w.chain("CHECK", cl_full, before)
        equal(code, 0, "CHECK passes for the pod added before the gap")

        after, _ = runtime_add("after")
        rc, status, body = after.curl()
        equal((rc, json.loads(body)["client"] if rc == 0 else None), (0, after.ip), "a pod added after the repair reaches the broker")

        # An in-place rewrite (truncate and write, as some tools do) is repaired too.
        with open(conf_path, "w") as f:
            json.dump(primary, f)
        wait_for(lambda: types(conf_path) == ["bridge", "idbroker"], "an in-place rewrite is repaired too")
        time.sleep(0.5)  # not an assertion: two more watcher rounds
        equal(types(conf_path), ["bridge", "idbroker"], "idbroker is in the conflist once")

        # A primary that writes a single-plugin .conf sorting first: converted into a .conflist
        # (the .conf removed), which works as a real chain.
        single = dict(w.primary_conf(), cniVersion="1.0.0", name=primary["name"])
        with open(tmp, "w") as f:
            json.dump(single, f)
        os.rename(tmp, os.path.join(netdir, "05-single.conf"))
        conv_path = os.path.join(netdir, "05-single.conflist")
        wait_for(lambda: types(conv_path) == ["bridge", "idbroker"]
                 and not os.path.exists(os.path.join(netdir, "05-single.conf")),
                 "a single-plugin .conf is converted into a conflist chaining idbroker")
        with open(conv_path) as f:
            conv = json.load(f)
        pod = w.new_pod("conv")
        code, out, err = w.chain("ADD", conv, pod)
        equal(code, 0, "ADD with the converted conflist (%s)" % (err.strip()[-300:] if code else ""))
        rc, status, body = pod.curl()
        equal((rc, json.loads(body)["client"] if rc == 0 else None), (0, pod.ip),
              "a pod added with the converted conflist reaches the broker")
        equal([r for r in w.requests(w.imds_log)][1:], [],
              "the node's IMDS saw no pod request after the install step")


if __name__ == "__main__":
    run_main(main)
