# SPDX-License-Identifier: Apache-2.0
"""CNI benchmark (issue 3 acceptance; docs/performance.md): run by bench/cni.sh as root.

1. ADD+DEL of `bridge + host-local + idbroker` against `bridge + host-local + portmap` (Debian's, with one
   hostPort mapping per pod, as portmap is used), N pods each, alternating, each pod a real network
   namespace. Times are taken around each plugin's own process (the chained plugin alone) and around the
   whole chain.
2. idbroker ADD with 1 pod present against 1000 pods present: the other pods are bridge ports (veth
   pairs in the node namespace) registered through the plugin, so the sets really hold 1000 pods.

Everything runs inside a fresh node namespace (this process joins it with setns, so no `ip netns exec` is
timed) that is removed at the end. Prints medians in milliseconds.
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import netns_world  # noqa: E402
from netns_world import World, setns  # noqa: E402

PODS = int(os.environ.get("IDB_BENCH_PODS", "200"))
SCALE = int(os.environ.get("IDB_BENCH_SCALE", "1000"))
PROBES = int(os.environ.get("IDB_BENCH_PROBES", "150"))


def plugin(w, ptype, command, conf, env):
    """One plugin process in the current (node) namespace. Returns (seconds, parsed output)."""
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
         "CNI_PATH": netns_world.DEBIAN_CNI + ":" + os.path.dirname(netns_world.IDBROKER_CNI)}
    e.update(env)
    text = json.dumps(conf)
    t0 = time.perf_counter()
    p = subprocess.run([w.plugin_path(ptype)], input=text, capture_output=True, text=True, env=e)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError("%s %s failed: %s %s" % (ptype, command, p.stdout, p.stderr[-500:]))
    return dt, (json.loads(p.stdout) if p.stdout.strip() else None)


def pod_env(pod):
    return {"CNI_CONTAINERID": pod.container_id, "CNI_IFNAME": "eth0", "CNI_NETNS": pod.netns_path,
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=%s" % pod.name}


def run_chain(w, cl, pod, port):
    """ADD then DEL of the conflist; returns {(plugin type, command): seconds, ("chain", cmd): s}."""
    times = {}
    env = pod_env(pod)
    result = None
    total = 0.0
    for pl in cl["plugins"]:
        conf = w.plugin_conf(cl, pl, cl["cniVersion"], result)
        if pl["type"] == "portmap":
            conf["runtimeConfig"] = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}
        dt, result = plugin(w, pl["type"], "ADD", conf, env)
        times[(pl["type"], "ADD")] = dt
        total += dt
    times[("chain", "ADD")] = total
    total = 0.0
    for pl in reversed(cl["plugins"]):
        conf = w.plugin_conf(cl, pl, cl["cniVersion"], result)
        if pl["type"] == "portmap":
            conf["runtimeConfig"] = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}
        dt, _ = plugin(w, pl["type"], "DEL", conf, env)
        times[(pl["type"], "DEL")] = dt
        total += dt
    times[("chain", "DEL")] = total
    return times


def ms(v):
    return "%.2f" % (v * 1000)


def compare(w):
    cl_idb = w.conflist("1.0.0", chained="idbroker", logLevel="warning")
    cl_pm = w.conflist("1.0.0", chained="portmap")
    samples = {"idbroker": [], "portmap": []}
    for i in range(PODS):
        for name, cl in (("idbroker", cl_idb), ("portmap", cl_pm)) if i % 2 == 0 else (("portmap", cl_pm), ("idbroker", cl_idb)):
            pod = w.new_pod("%s%d" % (name[:2], i))
            samples[name].append(run_chain(w, cl, pod, 20000 + i))
            w.remove_pod_netns(pod)

    def med(name, key):
        return statistics.median(s[key] for s in samples[name])

    def med_sum(name, keys):
        return statistics.median(sum(s[k] for k in keys) for s in samples[name])

    rows = []
    for name in ("idbroker", "portmap"):
        rows.append((name, med(name, (name, "ADD")), med(name, (name, "DEL")),
                     med_sum(name, [(name, "ADD"), (name, "DEL")]),
                     med_sum(name, [("chain", "ADD"), ("chain", "DEL")])))
    print("\n== ADD+DEL, %d pods per chain, alternating (median ms per pod) ==" % PODS)
    print("%-10s %10s %10s %12s %16s" % ("chained", "ADD", "DEL", "ADD+DEL", "whole chain"))
    for r in rows:
        print("%-10s %10s %10s %12s %16s" % (r[0], ms(r[1]), ms(r[2]), ms(r[3]), ms(r[4])))
    print("ratio idbroker/portmap: chained plugin ADD+DEL %.3f, whole chain ADD+DEL %.3f"
          % (rows[0][3] / rows[1][3], rows[0][4] / rows[1][4]))
    return rows


def synthetic(w, i, bridge):
    """A registered 'pod' without a namespace: a veth pair in the node, one end a bridge port."""
    host, peer = "bh%d" % i, "bp%d" % i
    ip = "10.77.%d.%d/16" % (i // 250, i % 250 + 2)
    prev = {"cniVersion": "1.0.0",
            "interfaces": [{"name": bridge}, {"name": host},
                           {"name": "eth0", "mac": "02:00:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255),
                            "sandbox": "/var/run/netns/bench-%d" % i}],
            "ips": [{"interface": 2, "address": ip, "gateway": "10.77.0.1"}]}
    return host, peer, prev


def make_ports(w, first, count, bridge):
    lines = []
    for i in range(first, first + count):
        host, peer, _ = synthetic(w, i, bridge)
        lines.append("link add %s type veth peer name %s" % (host, peer))
        lines.append("link set %s master %s up" % (host, bridge))
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)


def idb_add_del(w, cl, i, bridge, measure=True):
    _, _, prev = synthetic(w, i, bridge)
    conf = w.plugin_conf(cl, cl["plugins"][-1], "1.0.0", prev)
    env = {"CNI_CONTAINERID": "bench%06d" % i, "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/bench-%d" % i}
    dt, _ = plugin(w, "idbroker", "ADD", conf, env)
    if measure:
        dd, _ = plugin(w, "idbroker", "DEL", conf, env)
        return dt, dd
    return dt, None


def scale(w):
    cl = w.conflist("1.0.0", chained="idbroker", logLevel="warning")
    bridge = w.bridge
    # The bridge exists from the comparison above; the probe is port 0, the population 1..SCALE.
    make_ports(w, 0, 2, bridge)
    idb_add_del(w, cl, 1, bridge, measure=False)  # 1 pod present
    one = [idb_add_del(w, cl, 0, bridge) for _ in range(PROBES)]
    make_ports(w, 2, SCALE - 1, bridge)
    for i in range(2, SCALE + 1):
        idb_add_del(w, cl, i, bridge, measure=False)
    n = len(netns_world.elem_keys(w.set_elements("inet", "pods4")))
    many = [idb_add_del(w, cl, 0, bridge) for _ in range(PROBES)]
    a1, am = statistics.median(x[0] for x in one), statistics.median(x[0] for x in many)
    d1, dm = statistics.median(x[1] for x in one), statistics.median(x[1] for x in many)
    print("\n== idbroker with 1 pod present vs %d (inet pods4 holds %d elements), %d probes (median ms) =="
          % (SCALE, n, PROBES))
    print("%-10s %10s %10s" % ("pods", "ADD", "DEL"))
    print("%-10d %10s %10s" % (1, ms(a1), ms(d1)))
    print("%-10d %10s %10s" % (SCALE, ms(am), ms(dm)))
    print("growth ADD %.3fx, DEL %.3fx" % (am / a1, dm / d1))


def main():
    if os.geteuid() != 0:
        sys.exit("bench/cni.sh needs root")
    with World("ben") as w:
        w.start_ctl()
        setns("/var/run/netns/" + w.node)
        compare(w)
        scale(w)


if __name__ == "__main__":
    main()
