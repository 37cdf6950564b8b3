# SPDX-License-Identifier: Apache-2.0
"""Kubernetes mode, API server outages (THREATS T20):

- API down at start: not ready, no crash, requests get 503 + Retry-After; ready and serving once
  the API is back
- API down later: pods already decided keep getting tokens (cache and provider), a new pod gets
  503 + Retry-After (never a token), and after the outage the new pod is served
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
from idbtest import check, equal  # noqa: E402
import k8stest as K  # noqa: E402

UID1 = "11111111-1111-1111-1111-111111111111"
UID2 = "22222222-2222-2222-2222-222222222222"


def main():
    with K.FakeApi() as fake:
        fake.put(K.identity("id1"))
        fake.put(K.binding("b1", "id1", "sel1"))
        fake.put(K.pod("p1", "127.0.0.5", "sel1", uid=UID1))

        # --- down at start ---
        fake.fault("down", count=None)
        with K.KubeBroker(fake, wait_ready=False) as b:
            K.wait_for(lambda: len(fake.requests()) >= 5, "the broker keeps trying while the API is down")
            check(b.proc.poll() is None, "no crash while the API is down")
            st, _, body = b.health("/readyz")
            equal(st, 503, "not ready while the API is down")
            b.register("default", "p1", "127.0.0.5", uid=UID1)
            st, h, _ = b.token(source="127.0.0.5")
            equal(st, 503, "no decision yet: 503")
            check("retry-after" in h, "with Retry-After")
            fake.clear_faults()
            K.wait_for(b.ready, "ready once the API is back", timeout=40)
            equal(b.token(source="127.0.0.5")[0], 200, "serving once the API is back")

            # --- down later ---
            fake.fault("down", count=None)
            fake.drop_watches()
            K.wait_for(lambda: [r for r in fake.requests() if r.get("fault") == "down"],
                       "the API is down again")
            equal(b.token(source="127.0.0.5")[0], 200, "a decided pod keeps its token (cache)")
            equal(b.token(source="127.0.0.5", extra="&bypass_cache=true")[0], 200,
                  "and from the provider, bypassing the cache")
            equal(b.token(resource="https://vault.azure.net", source="127.0.0.5")[0], 200,
                  "and for another resource")
            b.register("default", "p2", "127.0.0.6", uid=UID2)
            st, h, body = b.token(source="127.0.0.6")
            equal(st, 503, "a new pod during the outage: 503, never a token")
            check("retry-after" in h, "with Retry-After")
            check(b"access_token" not in body, "no token in the body")
            check(b.ready(), "still ready: the last known policy stays in force")
            fake.put(K.pod("p2", "127.0.0.6", "sel1", uid=UID2))
            fake.clear_faults()
            K.wait_for(lambda: b.token(source="127.0.0.6")[0] == 200, "the new pod is served after the outage",
                       timeout=40)


if __name__ == "__main__":
    idbtest.run_main(main)
