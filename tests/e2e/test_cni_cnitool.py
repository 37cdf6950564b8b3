# SPDX-License-Identifier: Apache-2.0
"""The chain through a real CNI runtime (issue 3, test 1): libcni's cnitool, built from Debian's source
package by build-cnitool.sh when it is not there yet (IDB_CNITOOL, PATH or $IDB_BUILD_DIR/cnitool/).
cnitool loads the conflist from NETCONFPATH, runs bridge + host-local + idbroker with its own
prevResult handling, caches the result, and on DEL runs the list in reverse with that cached result."""
import glob
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    BUILD,
    DEBIAN_CNI,
    IDBROKER_CNI,
    World,
    check,
    elem_keys,
    equal,
    run_main,
)

CACHE = "/var/lib/cni/results"  # libcni's default cache; cnitool has no option for another


def find_cnitool():
    for c in (os.environ.get("IDB_CNITOOL"), shutil.which("cnitool"), os.path.join(BUILD, "cnitool", "cnitool")):
        if c and os.access(c, os.X_OK):
            return c
    dest = os.path.join(BUILD, "cnitool", "cnitool")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build-cnitool.sh")
    p = subprocess.run([script, dest], capture_output=True, text=True)
    if p.returncode == 0 and os.access(dest, os.X_OK):
        return dest
    print("could not build cnitool:\n" + p.stdout[-1000:] + p.stderr[-2000:])
    return None


def main():
    cnitool = find_cnitool()
    if not cnitool:
        print("SKIP: no cnitool (see tests/e2e/build-cnitool.sh)")
        return
    with World("cnt") as w:
        w.start_imds()
        w.start_broker_standin()
        w.start_ctl()
        netdir = os.path.join(w.tmp, "net.d")
        os.makedirs(netdir)
        try:
            for version in ("0.4.0", "1.0.0"):
                cl = w.conflist(version)
                with open(os.path.join(netdir, "10-%s.conflist" % version), "w") as f:
                    json.dump(dict(cl, name=cl["name"] + "-" + version.replace(".", "")), f)
                net = cl["name"] + "-" + version.replace(".", "")
                pod = w.new_pod("v" + version.replace(".", ""))
                env = dict(os.environ, NETCONFPATH=netdir, CNI_PATH=DEBIAN_CNI + ":" + os.path.dirname(IDBROKER_CNI),
                           CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + pod.name)

                def tool(cmd):
                    return subprocess.run(["ip", "netns", "exec", w.node, cnitool, cmd, net, pod.netns_path],
                                          capture_output=True, text=True, env=env)

                p = tool("add")
                equal(p.returncode, 0, "cnitool %s add (%s)" % (version, p.stderr.strip()[-300:]))
                pod.result = json.loads(p.stdout)
                equal(pod.result.get("cniVersion"), version, "cnitool %s: the result is in the list's version" % version)
                rc, status, body = pod.curl()
                check(rc == 0 and status == 200 and json.loads(body)["client"] == pod.ip,
                      "cnitool %s: the pod reaches the broker as itself" % version)
                regs = [f for f in w.state_files() if f.startswith("pods/cnitool-")]
                equal(len(regs), 1, "cnitool %s: one registration, keyed by cnitool's container id" % version)
                syncs = [s for s in w.requests(w.ctl_log) if s.get("containerId", "").startswith("cnitool-")]
                check(syncs, "cnitool %s: the broker was told" % version)
                p = tool("check")
                equal(p.returncode, 0, "cnitool %s check (%s)" % (version, p.stderr.strip()[-300:]))
                p = tool("del")
                equal(p.returncode, 0, "cnitool %s del (%s)" % (version, p.stderr.strip()[-300:]))
                check(pod.ip not in [k[1] for k in elem_keys(w.set_elements("inet", "pods4"))],
                      "cnitool %s: DEL removed the pod's element" % version)
                equal([f for f in w.state_files() if f.startswith("pods/")], [], "cnitool %s: and its registration" % version)
                p = tool("del")
                equal(p.returncode, 0, "cnitool %s: a second del (no cached result) succeeds" % version)
                w.remove_pod_netns(pod)
            equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request")
        finally:
            for f in glob.glob(os.path.join(CACHE, w.conflist("1.0.0")["name"] + "-*")):
                os.unlink(f)


if __name__ == "__main__":
    run_main(main)
