# SPDX-License-Identifier: Apache-2.0
"""Kubernetes mode at scale: 10 000 identities, 10 000 bindings and 250 pods listed at start.
Prints the time from the last LIST page to /readyz, the time to ready and the broker's memory
(VmRSS, RssAnon, RssFile, VmHWM, threads; the numbers recorded in docs/performance.md); checks
that every pod is decided correctly afterwards. Not a timing or memory assertion: the numbers are
reported, correctness is checked.

The figures in docs/performance.md are from a release build:
  IDB_BUILD_DIR=build/release /usr/bin/python3 tests/integration/test_k8s_scale.py
IDB_SCALE_IDS and IDB_SCALE_PODS (default 10000 and 250) change the size; 0 and 0 give the
fixed cost of kubernetes mode.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

N_IDS = int(os.environ.get("IDB_SCALE_IDS", "10000"))
N_PODS = int(os.environ.get("IDB_SCALE_PODS", "250"))


def memory(pid):
    """VmRSS, RssAnon, RssFile, VmHWM (KiB) and Threads from /proc/<pid>/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def build_type():
    try:
        with open(os.path.join(idbtest.BUILD, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    return line.split("=", 1)[1].strip() or "?"
    except OSError:
        pass
    return "?"


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
            st = b.ctl_json("status")
            equal((st["identities"], st["bindings"]), (N_IDS, N_IDS), "every identity and binding is in the store")
            # A second for the reflectors to settle into their watches (the LIST pages are freed and
            # trimmed by then); the memory is read once, with no assertion on it.
            time.sleep(1)
            m = memory(b.proc.pid)
            print("# scale (%s build): %d identities, %d bindings, %d pods; %d LIST pages; ready %.3f s after "
                  "start, %.3f s after the last LIST page (fake-side timestamp)"
                  % (build_type(), N_IDS, N_IDS, N_PODS, pages, t_ready - t0, t_ready - last_list))
            print("# memory: VmRSS %.1f MiB (RssAnon %.1f, RssFile %.1f), VmHWM %.1f MiB, %d threads"
                  % (m["VmRSS"] / 1024, m["RssAnon"] / 1024, m["RssFile"] / 1024, m["VmHWM"] / 1024,
                     m["Threads"]))
            for i in (0, 123, 249) if N_PODS >= 250 else ():
                ns = "ns%d" % ((i * 7) % 50)
                b.register(ns, "p%d" % i, "127.0.%d.%d" % (1 + i // 200, 2 + i % 200),
                           uid="00000000-0000-0000-0000-%012d" % i)
                e = b.explain(ns, "p%d" % i)
                equal(e.get("identity"), "%s/id%d" % (ns, i * 7), "pod p%d decided: its identity" % i)


if __name__ == "__main__":
    idbtest.run_main(main)
