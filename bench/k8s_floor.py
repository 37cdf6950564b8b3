# SPDX-License-Identifier: Apache-2.0
"""Driver of bench/k8s-floor.sh: the memory floor of Kubernetes mode against the fake API server.

For ROUNDS rounds, alternating: bench/k8s-floor.c (the broker's libraries, no broker code) with 0,
1 and 5 TLS watches open, and idbrokerd itself in kubernetes mode against an empty cluster (5
reflectors), each read once its watches are open. Then the bytes of field text the store has to
keep for test_k8s_scale.py's objects (10 000 AzureIdentities, 10 000 bindings, 250 pods): what no
representation can go below. Prints a Markdown table of medians (MiB).

  python3 bench/k8s_floor.py FLOOR_BINARY ROUNDS
"""
import os
import statistics
import subprocess
import sys
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import k8stest as K  # noqa: E402


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out["VmRSS"], out["RssAnon"], out["RssFile"]


def floor(binary, fake, n):
    url = "https://127.0.0.1:%d/api/v1/pods?watch=true&resourceVersion=1&timeoutSeconds=120" % fake.api_port
    out = subprocess.run([binary, url, fake.ca, fake.token_file, str(n)], capture_output=True, text=True,
                         check=True).stdout.split()
    return tuple(int(x) for x in out)


def broker(fake):
    with K.KubeBroker(fake) as b:
        time.sleep(1)
        return status(b.proc.pid)


def raw_bytes(n_ids=10000, n_pods=250):
    """Field text (with its NUL) of the objects test_k8s_scale.py lists, as the store keeps it."""
    total = 0
    for i in range(n_ids):
        ns = "ns%d" % (i % 50)
        idn = K.identity("id%d" % i, ns=ns)
        md, sp = idn["metadata"], idn["spec"]
        texts = [md["name"], ns, "00000000-0000-0000-0000-000000000000", sp["clientID"], sp["resourceID"]]
        for k, v in md["annotations"].items():
            texts += [k, v]
        b = K.binding("b%d" % i, "id%d" % i, "sel%d" % i, ns=ns)
        texts += [b["metadata"]["name"], ns, b["spec"]["azureIdentity"], b["spec"]["selector"]]
        total += sum(len(t.encode()) + 1 for t in texts)
    for i in range(n_pods):
        texts = ["p%d" % i, "ns%d" % ((i * 7) % 50), "00000000-0000-0000-0000-%012d" % i, K.NODE,
                 "aadpodidbinding", "sel%d" % (i * 7), "127.0.%d.%d" % (1 + i // 200, 2 + i % 200)]
        total += sum(len(t.encode()) + 1 for t in texts)
    return total


def main():
    binary, rounds = sys.argv[1], int(sys.argv[2])
    rows = {"floor0": [], "floor1": [], "floor5": [], "broker": []}
    with K.FakeApi() as fake:
        for _ in range(rounds):
            for n in (0, 1, 5):
                rows["floor%d" % n].append(floor(binary, fake, n))
            rows["broker"].append(broker(fake))

    def med(key, i):
        return statistics.median(r[i] for r in rows[key]) / 1024

    labels = {
        "floor0": "libraries only, libcurl initialised, no connection",
        "floor1": "libraries + 1 TLS watch (one connection for everything)",
        "floor5": "libraries + 5 TLS watches (idbrokerd's reflectors)",
        "broker": "idbrokerd, kubernetes mode, empty cluster",
    }
    print("| process | VmRSS MiB | RssAnon | RssFile |")
    print("|---|---|---|---|")
    for k in ("floor0", "floor1", "floor5", "broker"):
        print("| %s | %.1f | %.1f | %.1f |" % (labels[k], med(k, 0), med(k, 1), med(k, 2)))
    raw = raw_bytes()
    print()
    print("Field text of 10 000 identities + 10 000 bindings + 250 pods (what the store must keep, "
          "with no struct, index or allocator overhead): %.2f MiB" % (raw / 1048576))


if __name__ == "__main__":
    main()
