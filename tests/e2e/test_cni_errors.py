# SPDX-License-Identifier: Apache-2.0
"""Errors, idempotency and concurrency of the idbroker CNI plugin (issue 3, tests 3, 5, 7; THREATS T2,
T4): every bad input gets the spec's code and leaves no rule or state behind; ADD fails with 11 and
leaves nothing when nftables cannot be programmed; STATUS says 50 then; duplicate ADD and DEL are
idempotent; a broker that is down or hangs does not fail ADD; parallel ADD/DEL are safe; an address
handed out again never keeps its old owner's registration."""
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    World,
    check,
    elem_keys,
    equal,
    run_main,
)

NO_NET_ADMIN = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"]


def err_code(out):
    return out.get("code") if isinstance(out, dict) else None


def nothing_left(w, what):
    equal(w.state_files(), [], "%s: no registration or record" % what)
    elems = {k: v for k, v in w.all_elements().items() if v and not k.endswith("/base_rev")}
    equal(elems, {}, "%s: no set elements" % what)


def invoke_no_net_admin(w, command, conf, pod=None):
    """The plugin without CAP_NET_ADMIN: nftables (and netlink changes) fail with EPERM."""
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command}
    if pod is not None:
        e.update(CNI_CONTAINERID=pod.container_id, CNI_IFNAME=pod.ifname, CNI_NETNS=pod.netns_path)
    p = subprocess.run(["ip", "netns", "exec", w.node] + NO_NET_ADMIN + [w.plugin_path("idbroker")],
                       input=json.dumps(conf), capture_output=True, text=True, env=e)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out, p.stderr


def bad_inputs(w):
    cl = w.conflist("1.0.0")
    pod = w.new_pod("bad")
    primary = dict(cl, plugins=cl["plugins"][:1])
    code, out, _ = w.chain("ADD", primary, pod)
    equal(code, 0, "primary ADD for the bad-input pod")
    good = w.plugin_conf(cl, cl["plugins"][1], "1.0.0", pod.result)

    def expect(label, want, conf=None, stdin=None, env=None, command="ADD"):
        code, out, err = w.invoke("idbroker", command, conf if conf is not None else good, pod,
                                  env=env, stdin=stdin)
        equal((code, err_code(out)), (1, want), "%s -> code %d (%s)" % (label, want, (out or {}).get("msg")))
        check("msg" in out and "cniVersion" in out, "%s: a CNI error object on stdout" % label)

    expect("malformed stdin", 6, stdin='{"cniVersion": "1.0.0", ')
    expect("trailing garbage after the object", 6, stdin='{"cniVersion": "1.0.0"} x')
    expect("stdin over 1 MiB", 6, stdin='{"cniVersion": "1.0.0", "pad": "%s"}' % ("x" * (1 << 20)))
    expect("no CNI_COMMAND", 4, env={"CNI_COMMAND": None})
    expect("unknown CNI_COMMAND", 4, env={"CNI_COMMAND": "FROB"})
    expect("no CNI_CONTAINERID", 4, env={"CNI_CONTAINERID": None})
    expect("CNI_CONTAINERID with a path", 4, env={"CNI_CONTAINERID": "../../etc/x"})
    expect("no CNI_IFNAME", 4, env={"CNI_IFNAME": None})
    expect("no CNI_NETNS at ADD", 4, env={"CNI_NETNS": None})
    expect("unknown cniVersion", 1, conf=dict(good, cniVersion="2.7.0"))
    expect("no cniVersion", 1, conf={k: v for k, v in good.items() if k != "cniVersion"})
    expect("no prevResult (not chained)", 7, conf={k: v for k, v in good.items() if k != "prevResult"})
    expect("prevResult without IPs", 7, conf=dict(good, prevResult=dict(pod.result, ips=[])))
    host_only = dict(pod.result, ips=[dict(pod.result["ips"][0], interface=0)])
    expect("prevResult with only host-side IPs", 7, conf=dict(good, prevResult=host_only))
    expect("prevResult with a bad address", 7,
           conf=dict(good, prevResult=dict(pod.result, ips=[{"address": "10.1.2.300/24"}])))
    expect("brokerPort not a number", 7, conf=dict(good, brokerPort="2579"))
    expect("brokerPort out of range", 7, conf=dict(good, brokerPort=70000))
    expect("brokerAddress on loopback", 7, conf=dict(good, brokerAddress="127.0.0.1"))
    expect("metadataAddress not an address", 7, conf=dict(good, metadataAddress="imds"))
    expect("logLevel unknown", 7, conf=dict(good, logLevel="loud"))
    expect("CHECK before 0.4.0", 1, conf=dict(good, cniVersion="0.3.1"), command="CHECK")
    expect("GC before 1.1.0", 1, conf=dict(good, cniVersion="1.0.0"), command="GC")
    equal([t for t in w.tables() if t[1] == "idbroker"], [], "no idbroker table was created by failed ADDs")
    nothing_left(w, "after every bad input")

    code, out, err = w.invoke("idbroker", "ADD", dict(good, someFutureKey={"x": 1}), pod)
    equal(code, 0, "unknown configuration keys are ignored")
    first = w.all_elements()
    code, out2, err = w.invoke("idbroker", "ADD", good, pod)
    equal((code, out2), (0, out), "a duplicate ADD succeeds with the same output")
    equal(w.all_elements(), first, "... and leaves exactly the same elements")
    regs = [f for f in w.state_files() if f.startswith("pods/")]
    equal(len(regs), 1, "... and one registration")
    code, out, err = w.invoke("idbroker", "DEL", good, pod)
    code2, out2, err = w.invoke("idbroker", "DEL", good, pod)
    equal((code, code2), (0, 0), "DEL twice")
    nothing_left(w, "after DEL")


def no_net_admin(w):
    cl = w.conflist("1.1.0")
    ok = w.add_pod(cl, "ok")  # the broker address exists from here on
    pod = w.new_pod("nocap")
    code, out, _ = w.chain("ADD", dict(cl, plugins=cl["plugins"][:1]), pod)
    before_files, before_elems = w.state_files(), w.all_elements()
    conf = w.plugin_conf(cl, cl["plugins"][1], "1.1.0", pod.result)
    code, out, err = invoke_no_net_admin(w, "ADD", conf, pod)
    equal((code, err_code(out)), (1, 11), "ADD that cannot program nftables -> code 11 (%s)" % (out or {}).get("details", "")[:120])
    equal(w.state_files(), before_files, "... and leaves no registration behind")
    equal(w.all_elements(), before_elems, "... and no element")
    code, out, err = invoke_no_net_admin(w, "STATUS", conf)
    equal((code, err_code(out)), (1, 50), "STATUS when nftables cannot be programmed -> code 50")
    code, out, err = w.invoke("idbroker", "STATUS", conf)
    equal(code, 0, "STATUS with CAP_NET_ADMIN -> ok")

    # CHECK notices what is missing.
    okconf = w.plugin_conf(cl, cl["plugins"][1], "1.1.0", ok.result)
    code, out, _ = w.invoke("idbroker", "CHECK", okconf, ok)
    equal(code, 0, "CHECK of an intact pod")
    w.node_exec(["nft", "delete element inet idbroker pods4 { %s . %s }" % (w.bridge, ok.ip)], check=True)
    code, out, _ = w.invoke("idbroker", "CHECK", okconf, ok)
    equal((code, err_code(out)), (1, 102), "CHECK with the pod's element gone -> 102")
    code, out, _ = w.invoke("idbroker", "ADD", okconf, ok)
    equal(code, 0, "ADD again repairs it")
    code, out, _ = w.invoke("idbroker", "CHECK", okconf, ok)
    equal(code, 0, "CHECK passes again")
    # Tampering with the node's rules: GC (and STATUS's full base) rewrite them.
    w.node_exec(["nft", "flush chain inet idbroker nat_pre"], check=True)
    code, out, _ = w.invoke("idbroker", "CHECK", okconf, ok)
    equal((code, err_code(out)), (1, 102), "CHECK with the redirect rule flushed -> 102")
    rc, _, _ = ok.curl(timeout=1)
    check(rc != 0, "without the redirect the pod reaches nothing (the guard still drops)")
    gc = dict(okconf, **{"cni.dev/valid-attachments": [{"containerID": ok.container_id, "ifname": "eth0"}]})
    gc.pop("prevResult")
    code, out, _ = w.invoke("idbroker", "GC", gc)
    equal(code, 0, "GC")
    code, out, _ = w.invoke("idbroker", "CHECK", okconf, ok)
    equal(code, 0, "GC rewrote idbroker's chains")
    rc, status, _ = ok.curl()
    equal((rc, status), (0, 200), "the pod is served again")
    # A new configuration (another revision) rewrites the chains at the next ADD.
    other = dict(okconf, metadataPort=8080)
    code, out, _ = w.invoke("idbroker", "ADD", other, ok)
    equal(code, 0, "ADD with another metadataPort")
    rules = w.node_exec(["nft", "list chain inet idbroker nat_pre"]).stdout
    check("tcp dport 8080" in rules and "tcp dport 80 " not in rules, "the redirect follows the new configuration")
    code, out, _ = w.invoke("idbroker", "ADD", okconf, ok)
    equal(code, 0, "ADD with the original configuration")
    os.unlink(os.path.join(w.state_dir, "pods", "%s@eth0.json" % ok.container_id))
    code, out, _ = w.invoke("idbroker", "CHECK", okconf, ok)
    equal((code, err_code(out)), (1, 103), "CHECK without the registration -> 103")


def broker_down_or_hanging(w):
    cl = w.conflist("1.0.0")
    pod = w.add_pod(cl, "nobroker")
    check(pod.result is not None, "ADD with no broker listening succeeds")
    log = open(w.cni_log).read()
    check("cannot notify the broker" in log, "... and logs a warning")
    hang = w.start_ctl(hang=True)
    pod2 = w.add_pod(cl, "hang")
    check(pod2.result is not None, "ADD with a broker that never answers succeeds (bounded wait)")
    code, _, _ = w.chain("DEL", cl, pod2)
    equal(code, 0, "DEL with a broker that never answers succeeds")
    w.stop(hang)
    os.unlink(w.broker_socket)


def parallel(w):
    cl = w.conflist("1.0.0")
    pods = [w.new_pod("par%d" % i) for i in range(8)]
    results = {}

    def run(cmd, p):
        results[(cmd, p.name)] = w.chain(cmd, cl, p)[0]

    for cmd in ("ADD", "DEL"):
        ts = [threading.Thread(target=run, args=(cmd, p)) for p in pods]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        equal(sorted(set(v for k, v in results.items() if k[0] == cmd)), [0], "8 parallel %ss succeed" % cmd)
        ips = set(k[1] for k in elem_keys(w.set_elements("inet", "pods4")))
        mine = set(p.ip for p in pods)
        if cmd == "ADD":
            equal(ips & mine, mine, "every parallel pod has its element")
            regs = [f for f in w.state_files() if f.startswith("pods/")]
            check(all(any(p.container_id in f for f in regs) for p in pods), "... and its registration")
        else:
            equal(ips & mine, set(), "parallel DELs removed every element")
            check(not [f for f in w.state_files() if any(p.container_id in f for p in pods)], "... and every registration")


def ip_reuse():
    """T2: a reused address never keeps its old owner's registration, with or without the old DEL."""
    with World("reu", subnet="10.98.0.0/24") as w:
        w.start_broker_standin()
        cl = w.conflist("1.0.0")
        cl["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.98.0.0/24", "rangeStart": "10.98.0.50", "rangeEnd": "10.98.0.50"}]]
        a = w.add_pod(cl, "a")
        equal(a.ip, "10.98.0.50", "A gets the only address")
        code, _, _ = w.chain("DEL", cl, a)
        b = w.add_pod(cl, "b")
        equal(b.ip, a.ip, "B gets A's address after A's DEL")
        regs = [f for f in w.state_files() if f.startswith("pods/")]
        equal(regs, ["pods/%s@eth0.json" % b.container_id], "only B is registered")

        # A runtime that lost B's DEL: the IPAM frees the address, idbroker never hears of it.
        ipam_conf = w.plugin_conf(cl, cl["plugins"][0], "1.0.0", b.result)
        code, _, _ = w.invoke("bridge", "DEL", ipam_conf, b)
        w.remove_pod_netns(b)
        c = w.add_pod(cl, "c")
        equal(c.ip, b.ip, "C gets the address B never released through idbroker")
        regs = [f for f in w.state_files() if f.startswith("pods/")]
        equal(regs, ["pods/%s@eth0.json" % c.container_id], "C's ADD evicted B's stale registration")
        keys = elem_keys(w.set_elements("bridge", "port_ip4"))
        equal([k for k in keys if k[1] == c.ip], [(c.host_veth(), c.ip)], "the address is bound to C's port only")
        rc, status, body = c.curl()
        check(rc == 0 and c.ip in body, "C is served")


def main():
    with World("err") as w:
        bad_inputs(w)
        w.start_broker_standin()
        no_net_admin(w)
        broker_down_or_hanging(w)
        w.start_ctl()
        parallel(w)
    ip_reuse()


if __name__ == "__main__":
    run_main(main)
