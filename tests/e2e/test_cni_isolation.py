# SPDX-License-Identifier: Apache-2.0
"""What the redirect must guarantee (issue 3, tests 2, 4, 5, 6; THREATS T1, T3, T4, T5, T9, T13): a pod's
metadata requests reach the broker, with its own address, and never the node's IMDS; a neighbour pod
cannot pose as it (extra address, raw source address, its MAC, ARP); a stopped broker means refused
connections, not a fall-through; a pod's own `nft flush ruleset` changes nothing; route_localnet stays 0;
connections opened before ADD lose their path. A control world without idbroker shows that each attack
works there, so these tests fail if the control is removed."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_world import (  # noqa: E402
    BROKER,
    BROKER_PORT,
    METADATA,
    PYTHON,
    World,
    check,
    elem_keys,
    equal,
    run_main,
    wait_for,
)

ARP_REPLY = r"""
import socket, struct, sys
ifname, my_mac, claimed_ip, dst_mac, dst_ip = sys.argv[1:6]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac(my_mac), socket.inet_aton(claimed_ip),
                  mac(dst_mac), socket.inet_aton(dst_ip))
for _ in range(3):
    s.send(mac(dst_mac) + mac(my_mac) + struct.pack("!H", 0x0806) + arp)
"""

# Opens a keep-alive connection to the metadata address, sends one request, then waits for the file
# argv[2] and sends a second request on the same connection; writes the outcome to argv[3].
KEEPALIVE = r"""
import http.client, os, sys, time
url, go, out = sys.argv[1:4]
c = http.client.HTTPConnection("169.254.169.254", 80, timeout=3)
c.request("GET", url, headers={"Metadata": "true"})
first = c.getresponse().read()
while not os.path.exists(go):
    time.sleep(0.05)
try:
    c.request("GET", url, headers={"Metadata": "true"})
    res = "answered %d %s" % (c.getresponse().status, "imds" if b"standin-imds" in first else "?")
except Exception as e:
    res = "failed " + type(e).__name__
# Written then renamed: the test polls for the file and must never read it half-written.
open(out + ".tmp", "w").write(res)
os.rename(out + ".tmp", out)
"""


def mac_of(pod):
    return [i for i in pod.result["interfaces"] if i.get("sandbox")][0]["mac"]


def bridge_mac(w):
    return json.loads(w.node_exec(["ip", "-j", "link", "show", w.bridge]).stdout)[0]["address"]


def neigh_mac(w, ip):
    out = json.loads(w.node_exec(["ip", "-j", "neigh", "show", ip, "dev", w.bridge]).stdout or "[]")
    return out[0].get("lladdr") if out else None


def fdb_port(w, mac):
    for e in json.loads(w.node_exec(["bridge", "-j", "fdb", "show", "br", w.bridge]).stdout or "[]"):
        if e.get("mac") == mac and "vlan" not in e:
            return e.get("ifname")
    return None


def arp_poison(w, attacker, victim):
    gw = attacker.result["ips"][0]["gateway"]
    attacker.exec([PYTHON, "-c", ARP_REPLY, "eth0", mac_of(attacker), victim.ip, bridge_mac(w), gw], check=True)


def mac_spoof(attacker, victim, look):
    """The attacker takes the victim's MAC and sends; look() runs while it still holds that MAC (the
    victim's own frames, e.g. IPv6 router solicitations, may move the bridge entry back at any time
    after), then the attacker gets its own MAC back."""
    own = mac_of(attacker)
    attacker.exec(["ip", "link", "set", "dev", "eth0", "address", mac_of(victim)], check=True)
    try:
        attacker.curl(timeout=1)
        look()
    finally:
        attacker.exec(["ip", "link", "set", "dev", "eth0", "address", own], check=True)


def no_arp_locktime(w):
    """An ARP reply may override the entry at once (no 1 s lock): the attack needs no timing."""
    w.node_exec(["ip", "ntable", "change", "name", "arp_cache", "dev", w.bridge, "locktime", "0"], check=True)


def setup_world(w):
    w.start_imds()


def control_world():
    """Without idbroker every attack below works: the tests that follow are meaningful."""
    with World("ctl") as w:
        setup_world(w)
        cl = w.conflist("1.0.0", chained=None)
        a = w.add_pod(cl, "a")
        b = w.add_pod(cl, "b")
        no_arp_locktime(w)
        rc, status, _ = a.curl()
        equal((rc, status), (0, 200), "control: without idbroker a pod reaches the stand-in IMDS")
        check(len(w.requests(w.imds_log)) == 1, "control: ... which records it")
        equal(neigh_mac(w, a.ip), mac_of(a), "control: the node knows A's MAC")
        arp_poison(w, b, a)
        wait_for(lambda: neigh_mac(w, a.ip) == mac_of(b), "control: B's forged ARP reply poisons the node's entry for A")
        equal(fdb_port(w, mac_of(a)), a.host_veth(), "control: the bridge has A's MAC on A's port")

        def moved():
            if fdb_port(w, mac_of(a)) == b.host_veth():
                return True
            b.curl(timeout=1)  # sends again: a frame of A's in between may have moved the entry back
            return False

        mac_spoof(b, a, lambda: wait_for(moved, "control: B using A's MAC moves it to B's port", tries=10))


def redirect_world():
    with World("iso") as w:
        setup_world(w)
        w.start_broker_standin()
        w.start_ctl()
        cl = w.conflist("1.0.0")
        a = w.add_pod(cl, "a")
        b = w.add_pod(cl, "b")
        no_arp_locktime(w)

        # The token path (T4: the redirect exists when ADD returns).
        rc, status, body = a.curl()
        equal((rc, status), (0, 200), "pod A reaches the broker via http://169.254.169.254")
        equal(json.loads(body)["client"], a.ip, "the broker sees A's own address")
        rc, status, body = b.curl()
        equal(json.loads(body)["client"] if rc == 0 else None, b.ip, "pod B reaches it with B's address")
        rc, status, body = a.curl(url="http://%s:%d/metadata/identity/oauth2/token" % (BROKER, BROKER_PORT))
        equal((rc, status), (0, 200), "a registered pod may also use the broker address directly")
        equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request")
        other = a.curl(url="http://%s:443/" % METADATA, timeout=1)
        check(other[0] != 0, "other ports of the metadata address are dropped")

        # T1: B poses as A.
        seen = len(w.requests(w.broker_log))
        b.exec(["ip", "addr", "add", a.ip + "/24", "dev", "eth0"], check=True)
        rc, _, _ = b.curl(source=a.ip, timeout=2)
        check(rc != 0, "B with A's address as an extra address, as source: no answer (rc %d)" % rc)
        rc, _, _ = b.curl(source=a.ip, timeout=2, url="http://%s:%d/x" % (BROKER, BROKER_PORT))
        check(rc != 0, "... nor directly at the broker address (rc %d)" % rc)
        b.exec(["ip", "addr", "del", a.ip + "/24", "dev", "eth0"], check=True)
        got = [r["client"] for r in w.requests(w.broker_log)[seen:]]
        check(a.ip not in got, "the broker saw no request with A's address from B")
        equal(neigh_mac(w, a.ip), mac_of(a), "the node knows A's MAC")
        arp_poison(w, b, a)
        time.sleep(0.3)  # not an assertion: lets a (wrongly) accepted reply land before we look
        equal(neigh_mac(w, a.ip), mac_of(a), "B's forged ARP reply for A's address is dropped")
        check(fdb_port(w, mac_of(a)) == a.host_veth(), "the bridge has A's MAC on A's port")
        mac_spoof(b, a, lambda: equal(fdb_port(w, mac_of(a)), a.host_veth(), "B sending with A's MAC does not move it"))
        rc, status, body = a.curl()
        equal((rc, json.loads(body)["client"] if rc == 0 else None), (0, a.ip), "A is still served as A")

        # T13: the pod's own rules do not matter.
        for argv in (["nft", "flush", "ruleset"], ["iptables", "-t", "nat", "-F"]):
            b.exec(argv)
        rc, status, body = b.curl()
        equal(json.loads(body)["client"] if rc == 0 else None, b.ip, "after flushing its own rules B still only reaches the broker")

        # T9: no route_localnet anywhere.
        for dev in ("all", "default", "lo", w.bridge):
            equal(w.sysctl("net.ipv4.conf.%s.route_localnet" % dev), "0", "route_localnet of %s stays 0" % dev)
        addrs = w.node_exec(["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout
        check(BROKER + "/32" in addrs, "the plugin put the broker address on lo (no dummy links here)")

        # T3: broker stopped -> refused or silence, never the IMDS.
        w.stop(w.broker)
        rc, _, _ = a.curl(timeout=2)
        check(rc in (7, 28, 56), "broker stopped: A's request is refused or times out (rc %d)" % rc)
        w.start_broker_standin()
        rc, status, _ = a.curl()
        equal((rc, status), (0, 200), "broker back: A is served again (the rules did not depend on it)")
        equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request at all")


def conntrack_world():
    """T5: a connection to the metadata address opened before ADD loses its path at ADD."""
    with World("ct") as w:
        # As on a real node (kube-proxy, masquerading), connection tracking is in use before any pod.
        w.node_exec(["nft", "add table inet idbtest; add chain inet idbtest c { type filter hook "
                     "prerouting priority 0; }; add rule inet idbtest c ct state established accept"], check=True)
        w.start_imds()
        w.start_broker_standin()
        cl = w.conflist("1.0.0")
        pod = w.new_pod("early")
        bridge_only = dict(cl, plugins=cl["plugins"][:1])
        code, out, err = w.chain("ADD", bridge_only, pod)
        equal(code, 0, "primary ADD alone")
        go, res = os.path.join(w.tmp, "go"), os.path.join(w.tmp, "result")
        w.start([PYTHON, "-c", KEEPALIVE, "/metadata/identity/oauth2/token", go, res], ns=pod.netns)
        wait_for(lambda: len(w.requests(w.imds_log)) == 1, "the early connection's first request at the IMDS")
        flows = w.node_exec(["conntrack", "-L", "-s", pod.ip, "-d", METADATA]).stdout
        check(pod.ip in flows, "conntrack has the early connection")
        conf = w.plugin_conf(cl, cl["plugins"][1], "1.0.0", pod.result)
        code, out, err = w.invoke("idbroker", "ADD", conf, pod)
        equal(code, 0, "idbroker ADD with the connection open")
        flows = w.node_exec(["conntrack", "-L", "-s", pod.ip, "-d", METADATA]).stdout
        check(pod.ip not in flows, "ADD flushed the pod's conntrack entries to the metadata address")
        open(go, "w").close()
        wait_for(lambda: os.path.exists(res), "the early connection's second request", tries=400)
        outcome = open(res).read()
        check(outcome.startswith("failed"), "its second request gets no answer (%s)" % outcome)
        equal(len(w.requests(w.imds_log)), 1, "the stand-in IMDS saw nothing after ADD")


NAT64_METADATA = "64:ff9b::a9fe:a9fe"


def dual_stack_world():
    """T22: a dual-stack pod reaches the broker over IPv4 and nothing over IPv6 spellings of the
    metadata address (a stand-in listens on the NAT64 spelling in the node: without idbroker a pod
    reaches it)."""
    with World("v6", subnet6="fd00:99::/64") as w:
        w.start_imds()
        w.start_broker_standin()
        w.node_exec(["ip", "-6", "addr", "add", NAT64_METADATA + "/128", "dev", "lo", "nodad"], check=True)
        nat64, nat64_log = w.start_http(NAT64_METADATA, 80, "nat64")
        cl = w.conflist("1.0.0")
        url6 = "http://[%s]/metadata/identity/oauth2/token" % NAT64_METADATA
        plain = w.add_pod(dict(cl, plugins=cl["plugins"][:1]), "plain")
        rc, status, _ = plain.curl(url=url6)
        equal((rc, status), (0, 200), "control: before idbroker, a pod reaches the NAT64 spelling")
        pod = w.add_pod(cl, "dual")
        v6 = [i["address"].split("/")[0] for i in pod.result["ips"] if ":" in i["address"]]
        check(len(v6) == 1, "the pod is dual-stack (%s, %s)" % (pod.ip, v6))
        check((w.bridge, v6[0]) in elem_keys(w.set_elements("inet", "pods6")), "its IPv6 address is in pods6")
        check((pod.host_veth(), v6[0]) in elem_keys(w.set_elements("bridge", "port_ip6")),
              "... and bound to its port in port_ip6")
        rc, status, body = pod.curl()
        equal((rc, json.loads(body)["client"] if rc == 0 else None), (0, pod.ip), "IPv4: the dual-stack pod reaches the broker")
        seen = len(w.requests(nat64_log))
        for p in (pod, plain):
            rc, _, _ = p.curl(url=url6, timeout=2)
            check(rc != 0, "%s: the NAT64 spelling of the metadata address is dropped (rc %d)" % (p.name, rc))
        equal(len(w.requests(nat64_log)), seen, "the NAT64 stand-in saw nothing after ADD")
        equal(w.requests(w.imds_log), [], "the stand-in IMDS saw no pod request")


def main():
    control_world()
    redirect_world()
    conntrack_world()
    dual_stack_world()


if __name__ == "__main__":
    run_main(main)
