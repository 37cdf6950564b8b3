# SPDX-License-Identifier: Apache-2.0
"""Kubernetes mode, the watch protocol against the fake API server, each fault recovered from
without a restart:

- a dropped watch resumes from the last resourceVersion (no relist); a watch that ends resumes too
- bookmarks move the resourceVersion of a kind that sees no events
- 410 after compaction (ERROR event and HTTP 410) -> relist, and objects deleted meanwhile go
- 429 with Retry-After is honoured; 500, garbage, a stream cut mid-event and an oversized object
  are recovered from; a rotated token is re-read after a 401
- backoff grows between failed attempts
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

GP = "/apis/aadpodidentity.k8s.io/v1/"
IDS, BINDS, PODS = GP + "azureidentities", GP + "azureidentitybindings", "/api/v1/pods"
EXC = GP + "azurepodidentityexceptions"
UID1 = "11111111-1111-1111-1111-111111111111"


def reqs(fake, path, since=0.0):
    return [r for r in fake.requests() if r["path"] == path and r["time"] >= since]


def lists(fake, path, since=0.0):
    return [r for r in reqs(fake, path, since) if not r.get("watch")]


def watches(fake, path, since=0.0):
    return [r for r in reqs(fake, path, since) if r.get("watch")]


def identity_names(b):
    return sorted(i["metadata"]["name"] for i in b.ctl_json("identities"))


def main():
    with K.FakeApi() as fake:
        fake.settings(bookmarkSeconds=0.3)
        fake.put(K.identity("id1"))
        fake.put(K.binding("b1", "id1", "sel1"))
        fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))
        with K.KubeBroker(fake) as b:
            b.register("default", "p1", "127.0.0.5", uid=UID1)
            equal(b.token(source="127.0.0.5")[0], 200, "token before any fault")
            check(all(r["query"].get("allowWatchBookmarks") == "true" for r in watches(fake, IDS)),
                  "watches ask for bookmarks")
            tos = [int(r["query"]["timeoutSeconds"]) for r in watches(fake, PODS) + watches(fake, IDS)]
            check(all(300 <= t < 600 for t in tos), "timeoutSeconds is randomised in [300, 600)")
            check(all(r["query"].get("fieldSelector") == "spec.nodeName=" + K.NODE
                      for r in reqs(fake, PODS)), "pods are selected by spec.nodeName")
            check(all(r["query"].get("labelSelector") == "nodename=" + K.NODE
                      for r in reqs(fake, GP + "azureassignedidentities")), "AAIs by label nodename")

            # --- dropped watch: resume from the last resourceVersion, no relist ---
            t0 = time.time()
            o = fake.put(K.identity("id2"))
            rv2 = int(o["metadata"]["resourceVersion"])
            K.wait_for(lambda: "id2" in identity_names(b), "a new identity arrives by watch")
            fake.drop_watches()
            K.wait_for(lambda: [w for w in watches(fake, IDS, t0) if int(w["resourceVersion"]) >= rv2],
                       "after a cut stream the watch resumes from a resourceVersion >= the last event")
            equal(lists(fake, IDS, t0), [], "no relist after a dropped watch")
            fake.put(K.identity("id3"))
            K.wait_for(lambda: "id3" in identity_names(b), "changes flow again after the drop")

            # --- bookmarks: the pods watch sees no events but its resourceVersion moves ---
            t1 = time.time()
            head = int(fake.put(K.identity("id4"))["metadata"]["resourceVersion"])
            time.sleep(1.0)  # a few bookmark intervals of the fake
            fake.end_watches()
            K.wait_for(lambda: [w for w in watches(fake, PODS, t1) if int(w["resourceVersion"]) >= head],
                       "the pods watch resumes from a bookmark's resourceVersion")
            equal(lists(fake, PODS, t1), [], "no relist of pods after a clean end")


            # --- backoff grows ---
            t9 = time.time()
            fake.fault("down", count=None, match=EXC)
            fake.end_watches()
            K.wait_for(lambda: len(reqs(fake, EXC, t9)) >= 4, "several failed attempts", timeout=30)
            fake.clear_faults()
            ts = [r["time"] for r in reqs(fake, EXC, t9)][:4]
            gaps = [ts[i + 1] - ts[i] for i in range(3)]
            check(gaps[1] > gaps[0] and gaps[2] > gaps[1] and gaps[0] >= 0.75,
                  "backoff grows: %s s" % ", ".join("%.2f" % g for g in gaps))
            fake.put(K.exception("exc1", {"app": "legacy"}))
            K.wait_for(lambda: [e for e in b.ctl_json("exceptions") if e["metadata"]["name"] == "exc1"],
                       "recovered after the API came back", timeout=30)


            # --- 429 with Retry-After ---
            t4 = time.time()
            fake.fault("429", count=1, retryAfter=2, match=PODS)
            fake.end_watches()
            hit = K.wait_for(lambda: [r for r in reqs(fake, PODS, t4) if r.get("fault") == "429"], "429 served")
            nxt = K.wait_for(lambda: [r for r in reqs(fake, PODS, hit[0]["time"] + 0.001)], "next attempt after 429")
            gap = nxt[0]["time"] - hit[0]["time"]
            check(gap >= 1.9, "Retry-After: 2 honoured (next attempt after %.2f s)" % gap)
            fake.put(K.pod("p1", "127.0.0.5", "other", uid=UID1))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 400, "pod change arrives after the 429")
            fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 200, "and back")

            # --- 503 with Retry-After on a LIST, and 500 ---
            t5 = time.time()
            fake.fault("503", count=1, retryAfter=1, match=PODS)
            fake.fault("gone", count=1, match=PODS)  # forces the relist that meets the 503
            fake.end_watches()
            K.wait_for(lambda: [r for r in lists(fake, PODS, t5) if r.get("fault") == "503"], "503 on a LIST")
            fake.put(K.pod("p1", "127.0.0.5", "other", uid=UID1))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 400, "pod change arrives after the 503")
            fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 200, "and back")

            # --- garbage in the stream ---
            t6 = time.time()
            fake.fault("garbage", count=1, match=IDS)
            fake.end_watches()
            K.wait_for(lambda: [r for r in watches(fake, IDS, t6) if r.get("fault") == "garbage"], "garbage sent")
            fake.put(K.identity("id6"))
            K.wait_for(lambda: "id6" in identity_names(b), "recovered from a garbage stream", timeout=40)
            check("x" not in identity_names(b), "nothing from the garbage stream was applied")

            # --- a stream cut mid-event ---
            t7 = time.time()
            fake.fault("drop", count=1, match=IDS)
            fake.end_watches()
            K.wait_for(lambda: [r for r in watches(fake, IDS, t7) if r.get("fault") == "drop"], "watch armed to cut")
            fake.put(K.identity("id7"))
            K.wait_for(lambda: "id7" in identity_names(b), "recovered from a cut mid-event", timeout=40)

            # --- an oversized object: the event is over the cap, the relist gets it ---
            big = K.identity("idbig")
            big["metadata"]["annotations"]["example.com/blob"] = "x" * (4 * 1024 * 1024)
            fake.put(big)
            K.wait_for(lambda: "idbig" in identity_names(b), "an object over the event cap arrives by relist",
                       timeout=40)
            fake.put(K.identity("id8"))
            K.wait_for(lambda: "id8" in identity_names(b), "changes flow after the oversized event")

            # --- 410 as an ERROR event: relist, and what was deleted meanwhile goes ---
            t2 = time.time()
            fake.fault("500", count=None, match=BINDS)
            fake.drop_watches()
            K.wait_for(lambda: [r for r in reqs(fake, BINDS, t2) if r.get("fault") == "500"],
                       "the bindings reflector is cut off")
            fake.delete("azureidentitybindings", "default", "b1")
            equal(b.token(source="127.0.0.5")[0], 200, "the broker has not seen the delete yet")
            fake.compact()
            fake.clear_faults()
            relists = b.metric("idbroker_watch_relists_total")
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 400,
                       "410 after compaction: relisted, the deleted binding is gone", timeout=30)
            check(lists(fake, BINDS, t2), "the bindings were listed again")
            check(b.metric("idbroker_watch_relists_total") > relists, "the relist is counted")

            # --- 410 as HTTP status ---
            fake.put(K.binding("b1", "id1", "sel1"))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 200, "binding back")
            fake.settings(watch410="http")
            t3 = time.time()
            fake.fault("500", count=None, match=IDS)
            fake.drop_watches()
            K.wait_for(lambda: [r for r in reqs(fake, IDS, t3) if r.get("fault") == "500"],
                       "the identities reflector is cut off")
            fake.delete("azureidentities", "default", "id1")
            fake.compact()
            fake.clear_faults()
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 400,
                       "HTTP 410: relisted, the deleted identity is gone", timeout=30)
            check([r for r in watches(fake, IDS, t3) if r["status"] == 410], "the watch got HTTP 410")
            fake.settings(watch410="event")
            fake.put(K.identity("id1"))
            K.wait_for(lambda: b.token(source="127.0.0.5")[0] == 200, "identity back")

            # --- token rotation: 401, re-read, go on ---
            t8 = time.time()
            fake.set_tokens(["test-token-2"])
            with open(fake.token_file + ".tmp", "w") as f:
                f.write("test-token-2\n")
            os.rename(fake.token_file + ".tmp", fake.token_file)
            fake.end_watches()
            fake.put(K.identity("id9"))
            K.wait_for(lambda: "id9" in identity_names(b), "token rotated: the broker re-read it")
            check([r for r in reqs(fake, IDS, t8) if r["status"] == 401], "the old token got a 401 first")

            equal(b.token(source="127.0.0.5")[0], 200, "token after all faults")
            check(b.ready(), "still ready")

if __name__ == "__main__":
    idbtest.run_main(main)
