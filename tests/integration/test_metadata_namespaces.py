# SPDX-License-Identifier: Apache-2.0
"""THREATS T8 against the real idbrokerd: `metadataProxy.instanceNamespaces` proxies /metadata/instance to
the node's IMDS for the pods of the listed namespaces only. Two fake pods (127.0.0.x sources) in two
namespaces: the stand-in IMDS sees the allowed pod's requests and nothing else; the other pod, and a caller
that is no registered pod, get the blocked path's 403."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from idbtest import Broker, UpstreamIMDS, check, equal, run_main  # noqa: E402

BLOCKED = {"error": "forbidden", "error_description": "This metadata endpoint is blocked by idbroker on this node"}
INSTANCE = "/metadata/instance?api-version=2021-02-01"


def main():
    up = UpstreamIMDS(b'{"compute":{"vmId":"vm-1"}}')
    try:
        conf = {"metadataProxy": {"endpoint": "http://127.0.0.1:%d" % up.port,
                                  "instanceNamespaces": ["team-a"]}}
        with Broker("", conf=conf) as br:
            br.register("team-a", "pod-a", "127.0.0.2")
            br.register("team-b", "pod-b", "127.0.0.3")
            run_checks(br, up)
    finally:
        up.close()


def run_checks(br, up):
    st, _, b = br.request(INSTANCE, source="127.0.0.2")
    equal(st, 200, "team-a's pod gets /metadata/instance")
    equal(json.loads(b), {"compute": {"vmId": "vm-1"}}, "... the node IMDS's answer, passed through")
    st, _, _ = br.request("/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
                          source="127.0.0.2")
    equal(st, 200, "... and its sub-paths")
    equal(len(up.paths), 2, "the stand-in IMDS saw team-a's two requests")

    st, _, b = br.request(INSTANCE, source="127.0.0.3")
    equal(st, 403, "team-b's pod gets 403")
    equal(json.loads(b), BLOCKED, "... with the blocked path's IMDS-style body")
    st, _, b = br.request(INSTANCE, source="127.0.0.9")
    equal(st, 403, "a caller that is no registered pod gets 403")
    equal(json.loads(b), BLOCKED, "... with the same body")
    st, _, _ = br.request("/metadata/versions", source="127.0.0.2")
    equal(st, 403, "/metadata/versions stays blocked: it has no list of its own here")
    equal(len(up.paths), 2, "the stand-in IMDS saw nothing from anyone else")
    check(all(p.startswith("/metadata/instance") for p in up.paths), "... only /metadata/instance paths")

    # The pod leaves; a new pod of team-b takes its address: the allowance goes with the pod.
    br.ctl("unregister", "team-a/pod-a")
    br.register("team-b", "pod-c", "127.0.0.2")
    st, _, _ = br.request(INSTANCE, source="127.0.0.2")
    equal(st, 403, "a team-b pod reusing team-a's address gets 403")
    equal(len(up.paths), 2, "... and the stand-in IMDS sees nothing")


if __name__ == "__main__":
    run_main(main)
