# SPDX-License-Identifier: Apache-2.0
"""Kubernetes mode at scale: 10 000 identities, 10 000 bindings and 250 pods listed at start.
Prints the time from the last LIST page to /readyz, the time to ready and the broker's RSS (the
numbers recorded in docs/performance.md); checks that every pod is decided correctly afterwards.
Not a timing assertion: the numbers are reported, correctness is checked.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

N_IDS, N_PODS = 10000, 250


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    with K.FakeApi() as fake:
        batch = []
        for i in range(N_IDS):
            ns = "ns%d" % (i % 50)
            batch.append(K.identity("id%d" % i, ns=ns))
            batch.append(K.binding("b%d" % i, "id%d" % i, "sel%d" % i, ns=ns))
            if len(batch) >= 2000:
                fake.put_many(batch)
                batch = []
        for i in range(N_PODS):
            batch.append(K.pod("p%d" % i, "127.0.%d.%d" % (1 + i // 200, 2 + i % 200), "sel%d" % (i * 7),
                               ns="ns%d" % ((i * 7) % 50), uid="00000000-0000-0000-0000-%012d" % i))
        fake.put_many(batch)
        t0 = time.time()
        with K.KubeBroker(fake, wait_ready=False) as b:
            K.wait_for(b.ready, "ready after listing %d identities, %d bindings, %d pods" % (N_IDS, N_IDS, N_PODS),
                       timeout=120, interval=0.01)
            t_ready = time.time()
            last_list = max(r["time"] for r in fake.requests() if not r.get("watch") and r["method"] == "GET")
            pages = len([r for r in fake.requests() if not r.get("watch") and r["method"] == "GET"])
            rss = rss_kib(b.proc.pid)
            st = b.ctl_json("status")
            equal((st["identities"], st["bindings"]), (N_IDS, N_IDS), "every identity and binding is in the store")
            print("# scale: %d LIST pages; ready %.3f s after start, %.3f s after the last LIST page "
                  "(fake-side timestamp); RSS %d KiB" % (pages, t_ready - t0, t_ready - last_list, rss))
            for i in (0, 123, 249):
                ns = "ns%d" % ((i * 7) % 50)
                b.register(ns, "p%d" % i, "127.0.%d.%d" % (1 + i // 200, 2 + i % 200),
                           uid="00000000-0000-0000-0000-%012d" % i)
                e = b.explain(ns, "p%d" % i)
                equal(e.get("identity"), "%s/id%d" % (ns, i * 7), "pod p%d decided: its identity" % i)


if __name__ == "__main__":
    idbtest.run_main(main)
