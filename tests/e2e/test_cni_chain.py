# SPDX-License-Identifier: Apache-2.0
"""The CNI protocol end to end (issue 3, test 1 and 8): the chain bridge + host-local + idbroker (and
ptp + host-local + idbroker) for every spec version, driven as a runtime drives it. ADD prints the
primary's result unchanged; CHECK, DEL (twice, also without netns and prevResult), GC, STATUS and
VERSION behave per spec; DEL leaves none of the pod's elements or state behind."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    SOURCE,
    VERSIONS,
    World,
    check,
    elem_keys,
    equal,
    run_main,
)


def pod_elements(w, pod):
    """Every idbroker set element that mentions the pod's address or host-side interfaces."""
    names = {pod.ip, pod.host_veth()}
    found = []
    for setname, elems in w.all_elements().items():
        for key in elem_keys(elems):
            if names & set(key):
                found.append((setname, key))
    return found


def strip_version(result):
    r = dict(result)
    r.pop("cniVersion", None)
    return r


def one_version(w, version):
    cl = w.conflist(version)
    pod = w.add_pod(cl, "v" + version.replace(".", ""))
    primary = strip_version(pod.primary)
    equal(strip_version(pod.result), primary, "%s: ADD prints the primary's result unchanged" % version)
    equal(pod.result.get("cniVersion"), version, "%s: ... in the input's cniVersion" % version)

    els = dict((s, k) for s, k in pod_elements(w, pod))
    check("inet/pods4" in els, "%s: the pod's (bridge . address) is in inet pods4" % version)
    check(
        "bridge/port_ip4" in els and "bridge/port_mac" in els,
        "%s: its veth port is bound to its address and MAC in the bridge table" % version,
    )
    files = w.state_files()
    check(
        any(f.startswith("pods/%s@eth0" % pod.container_id) for f in files),
        "%s: the registration is written" % version,
    )

    if version >= "0.4.0":
        code, out, err = w.chain("CHECK", cl, pod)
        equal((code, out), (0, None), "%s: CHECK passes (%s)" % (version, err.strip()[:200]))
    else:
        conf = w.plugin_conf(cl, cl["plugins"][-1], version, pod.result)
        code, out, err = w.invoke("idbroker", "CHECK", conf, pod)
        equal((code, out.get("code")), (1, 1), "%s: CHECK is refused before 0.4.0 (code 1)" % version)

    code, out, err = w.chain("DEL", cl, pod)
    equal(code, 0, "%s: DEL of the chain (%s)" % (version, err.strip()[:200]))
    equal(pod_elements(w, pod), [], "%s: DEL removed every element of the pod" % version)
    check(
        not [f for f in w.state_files() if pod.container_id in f],
        "%s: DEL removed the registration and record" % version,
    )
    # Again, the way a runtime retries: no netns, no prevResult.
    conf = w.plugin_conf(cl, cl["plugins"][-1], version)
    code, out, err = w.invoke("idbroker", "DEL", conf, pod, env={"CNI_NETNS": None})
    equal((code, out), (0, None), "%s: a second DEL without netns or prevResult succeeds" % version)
    w.remove_pod_netns(pod)


def gc_status_version(w):
    cl = w.conflist("1.1.0")
    keep = w.add_pod(cl, "keep")
    gone = w.add_pod(cl, "gone")
    conf = w.plugin_conf(cl, cl["plugins"][-1], "1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": keep.container_id, "ifname": "eth0"}]
    code, out, err = w.invoke("idbroker", "GC", conf)
    equal((code, out), (0, None), "GC succeeds (%s)" % err.strip()[:200])
    equal(pod_elements(w, gone), [], "GC removed the elements of an attachment not in valid-attachments")
    check(not [f for f in w.state_files() if gone.container_id in f], "... and its registration")
    check(pod_elements(w, keep) != [], "GC kept the valid attachment's elements")
    check([f for f in w.state_files() if keep.container_id in f], "... and its registration")
    rc, _, _ = keep.curl()
    equal(rc, 0, "the kept pod still reaches the broker after GC")

    del conf["cni.dev/valid-attachments"]
    code, out, err = w.invoke("idbroker", "GC", conf)
    equal((code, (out or {}).get("code")), (1, 7), "GC without cni.dev/valid-attachments is refused (7)")

    code, out, err = w.invoke("idbroker", "STATUS", conf)
    equal((code, out), (0, None), "STATUS succeeds when nftables can be programmed")

    code, out, err = w.invoke("idbroker", "VERSION", {"cniVersion": "1.1.0"})
    equal(code, 0, "VERSION succeeds")
    equal(out, {"cniVersion": "1.1.0", "supportedVersions": VERSIONS}, "VERSION lists every spec version")
    code, out, err = w.invoke("idbroker", "VERSION", None, stdin="")
    equal(out.get("supportedVersions") if out else None, VERSIONS, "VERSION also answers an empty stdin")


def ptp(w):
    for version in ("0.4.0", "1.0.0"):
        cl = w.conflist(version)
        pod = w.add_pod(cl, "p" + version.replace(".", ""))
        equal(strip_version(pod.result), strip_version(pod.primary), "ptp %s: ADD prints the primary's result" % version)
        veth = pod.host_veth()
        keys = elem_keys(w.set_elements("inet", "pods4"))
        check((veth, pod.ip) in keys, "ptp %s: the pod's (veth . address) is in inet pods4" % version)
        equal(elem_keys(w.set_elements("bridge", "ports")), [], "ptp %s: no bridge-port elements" % version)
        rc, status, body = pod.curl()
        equal((rc, status), (0, 200), "ptp %s: the pod reaches the broker through the redirect" % version)
        check('"client": "%s"' % pod.ip in body, "ptp %s: ... and the broker sees the pod's own address" % version)
        code, out, err = w.chain("CHECK", cl, pod)
        equal(code, 0, "ptp %s: CHECK passes" % version)
        code, out, err = w.chain("DEL", cl, pod)
        equal(code, 0, "ptp %s: DEL" % version)
        check((veth, pod.ip) not in elem_keys(w.set_elements("inet", "pods4")), "ptp %s: DEL removed the element" % version)
    equal(w.requests(w.imds_log), [], "ptp: the stand-in IMDS saw no pod request")


def example_conflist(w, path):
    """conf/*.conflist as shipped, with only the world's paths (and bridge name) substituted."""
    import json

    with open(os.path.join(SOURCE, "conf", path)) as f:
        cl = json.load(f)
    primary, idb = cl["plugins"]
    if primary["type"] == "bridge":
        primary["bridge"] = w.bridge
    primary["ipam"]["dataDir"] = w.ipam_dir
    idb.update(stateDir=w.state_dir, brokerSocket=w.broker_socket, logFile=w.cni_log)
    pod = w.add_pod(cl, "ex" + primary["type"])
    rc, status, body = pod.curl()
    check(rc == 0 and pod.ip in body, "conf/%s: the pod reaches the broker as itself" % path)
    code, _, _ = w.chain("CHECK", cl, pod)
    equal(code, 0, "conf/%s: CHECK" % path)
    code, _, _ = w.chain("DEL", cl, pod)
    equal(code, 0, "conf/%s: DEL" % path)
    equal(w.requests(w.imds_log), [], "conf/%s: the stand-in IMDS saw no pod request" % path)


def main():
    with World("chn") as w:
        w.start_imds()
        w.start_broker_standin()
        w.start_ctl()
        for version in VERSIONS:
            one_version(w, version)
        gc_status_version(w)
        syncs = w.requests(w.ctl_log)
        check(syncs and all(s.get("op") == "sync" and s.get("version") == 1 for s in syncs),
              "the broker was told about every change with op 'sync'")
        equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request")
        tables = set(w.tables())
        equal(tables & {("inet", "idbroker"), ("bridge", "idbroker")}, {("inet", "idbroker"), ("bridge", "idbroker")},
              "idbroker's two tables exist in the node namespace")
    with World("ptp", primary="ptp") as w:
        w.start_imds()
        w.start_broker_standin()
        ptp(w)
    for path, primary in (("10-idbroker.conflist", "bridge"), ("10-idbroker-ptp.conflist", "ptp")):
        with World("exa", primary=primary) as w:
            w.start_imds()
            w.start_broker_standin()
            example_conflist(w, path)


if __name__ == "__main__":
    run_main(main)
