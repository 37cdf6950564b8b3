# SPDX-License-Identifier: Apache-2.0
"""/metrics passes `promtool check metrics` (Debian's prometheus package) after real traffic (issue 9):
names follow Prometheus conventions (base units, `_total` on counters, HELP and TYPE for each family),
no high-cardinality labels (no pod, identity, resource or address in a label) and no secrets (no token,
no client id). Traffic: issued tokens (miss and cache hit), an unknown pod, a missing Metadata header, a
bad query, a provider error, a rate-limited pod, control-socket calls. Without promtool the test prints
SKIP and passes (apt-get install prometheus; scripts/deps.sh installs it)."""
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idbtest import (  # noqa: E402
    Broker,
    binding_yaml,
    check,
    equal,
    identity_yaml,
    pod_yaml,
    run_main,
)

CLIENT = "00000000-0000-0000-0000-00000000abcd"
MANIFESTS = (identity_yaml("id-a", client_id=CLIENT) + binding_yaml("b-a", "id-a", "a") + pod_yaml("pod-a", "a") +
             pod_yaml("pod-b", "nothing") + pod_yaml("pod-c", "a"))


def main():
    promtool = shutil.which("promtool")
    if not promtool:
        print("SKIP: promtool not found (apt-get install prometheus)")
        return
    with Broker(MANIFESTS, conf={"rateLimit": {"requestsPerSecond": 1, "burst": 8}}) as b:
        b.register("default", "pod-a", "127.0.0.2")
        b.register("default", "pod-b", "127.0.0.3")
        b.register("default", "pod-c", "127.0.0.4")
        tokens = []
        for res in ("https://vault.azure.net", "https://vault.azure.net", "https://storage.azure.com/"):
            st, _, body = b.token(res, source="127.0.0.2")
            equal(st, 200, "pod-a gets a token for %s" % res)
            tokens.append(body.decode())
        st, _, _ = b.token(source="127.0.0.3")
        equal(st, 400, "pod-b (no binding): 400")
        st, _, _ = b.token(source="127.0.0.5")
        check(st in (400, 403), "an unregistered source: %d" % st)
        st, _, _ = b.token(source="127.0.0.2", headers={})
        equal(st, 400, "no Metadata header: 400")
        st, _, _ = b.request("/metadata/identity/oauth2/token?api-version=2018-02-01", source="127.0.0.2")
        equal(st, 400, "no resource: 400")
        st, _, _ = b.request("/metadata/instance?api-version=2021-02-01", source="127.0.0.2")
        check(st in (403, 404), "/metadata/instance (not proxied): %d" % st)
        codes = [b.token("https://r%d.example" % i, source="127.0.0.4")[0] for i in range(12)]
        check(429 in codes, "pod-c over its rate limit gets 429 (%s)" % codes)
        b.ctl("status")
        b.ctl("explain", "default/pod-b")

        st, headers, body = b.health("/metrics")
        equal(st, 200, "GET /metrics: 200")
        text = body.decode()
        check(headers.get("content-type", "").startswith("text/plain"),
              "Content-Type %s (the text exposition format)" % headers.get("content-type"))
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        out = (p.stdout + p.stderr).strip()
        if out:
            print(out)
        equal((p.returncode, out), (0, ""), "promtool check metrics: no error and no lint warning")

        samples = [l for l in text.splitlines() if l and not l.startswith("#")]
        check(len(samples) >= 10, "%d samples exposed" % len(samples))
        families = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
        for name, kind in families:
            check(name.startswith("idbroker_") or name.startswith("process_"),
                  "family %s is namespaced (idbroker_)" % name)
            if kind == "counter":
                check(name.endswith("_total"), "counter %s ends in _total" % name)
        labels = set()
        for l in samples:
            labels |= set(re.findall(r'(\w+)="', l))
        bad = labels & {"pod", "namespace", "identity", "client_id", "resource", "ip", "address", "uid", "container"}
        equal(sorted(bad), [], "no high-cardinality label (labels: %s)" % ", ".join(sorted(labels)))
        for secret in tokens:
            tok = re.search(r'"access_token"\s*:\s*"([^"]+)"', secret).group(1)
            check(tok not in text and tok.split(".")[2] not in text, "no token in /metrics")
        check(CLIENT not in text and "127.0.0." not in text and "pod-a" not in text,
              "no client id, pod address or pod name in /metrics")
        check(b.metric("idbroker_http_requests_total") >= 8, "the request counter counted the traffic (%g)"
              % b.metric("idbroker_http_requests_total"))


if __name__ == "__main__":
    run_main(main)
