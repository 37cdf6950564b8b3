# SPDX-License-Identifier: Apache-2.0
"""THREATS T21 against the real idbrokerd: while the network configuration a runtime would use (the first
*.conflist/*.conf/*.json of `cni.confDir` by name) has no idbroker plugin, /readyz is 503 naming the file,
idbroker_cni_chain_ok is 0 and the log has one warning per transition; when idbroker is back, all of it is
undone. Files mode with a temporary conf dir, then kubernetes mode against the fake API server, where the
broker posts a Warning Event on its Node (and a Normal one when repaired)."""
import json
import datetime
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import k8stest as K  # noqa: E402
from idbtest import (Broker, binding_yaml, check, equal, identity_yaml, pod_yaml,  # noqa: E402
                     run_main)

CHAINED = {"cniVersion": "1.0.0", "name": "k8s-pod-network",
           "plugins": [{"type": "bridge", "bridge": "cni0"}, {"type": "portmap"}, {"type": "idbroker"}]}
UNCHAINED = {"cniVersion": "1.0.0", "name": "k8s-pod-network",
             "plugins": [{"type": "bridge", "bridge": "cni0"}, {"type": "portmap"}]}


def write(netdir, name, obj):
    """As the primary CNI and install-cni.sh write: a temporary name, then rename."""
    tmp = os.path.join(netdir, ".tmp-" + name)
    with open(tmp, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    os.rename(tmp, os.path.join(netdir, name))


def readyz(br):
    st, _, body = br.health("/readyz")
    return st, body.decode()


def missing_warnings(br):
    return [r for r in br.log_records()
            if r.get("level") == "warning" and "idbroker is missing from the CNI network configuration"
            in r.get("message", r.get("msg", ""))]


def files_mode(netdir):
    primary = os.path.join(netdir, "10-k8s.conflist")
    write(netdir, "10-k8s.conflist", CHAINED)
    policy = identity_yaml("id-a") + binding_yaml("bind-a", "id-a", "sel-a") + pod_yaml("pod-a", "sel-a")
    with Broker(policy, conf={"cni": {"confDir": netdir}}) as br:
        br.register("default", "pod-a", "127.0.0.2")
        equal(readyz(br)[0], 200, "chained conflist: ready")
        equal(br.metric("idbroker_cni_chain_ok"), 1.0, "chained conflist: idbroker_cni_chain_ok 1")

        # The primary CNI rewrites its conflist and drops idbroker.
        write(netdir, "10-k8s.conflist", UNCHAINED)
        st, body = K.wait_for(lambda: readyz(br)[0] == 503 and readyz(br), "rewritten without idbroker: 503")
        check(primary in body and "idbroker is missing" in body, "the reason names the file: %r" % body)
        equal(br.metric("idbroker_cni_chain_ok"), 0.0, "idbroker_cni_chain_ok 0")
        equal(br.metric("idbroker_ready"), 0.0, "idbroker_ready 0")
        equal(br.token()[0], 200, "a pod already running is still served meanwhile")
        K.wait_for(lambda: len(missing_warnings(br)) == 1, "one warning in the log")

        # install-cni.sh (watch mode) puts it back.
        write(netdir, "10-k8s.conflist", CHAINED)
        K.wait_for(lambda: readyz(br)[0] == 200, "idbroker re-inserted: ready again")
        equal(br.metric("idbroker_cni_chain_ok"), 1.0, "idbroker_cni_chain_ok back to 1")
        check(any("idbroker is back" in r.get("message", r.get("msg", "")) for r in br.log_records()),
              "the log says it is back")

        # A file that sorts first wins, as in the runtime: a single-plugin .conf chains nothing.
        write(netdir, "05-other.conf", {"cniVersion": "0.4.0", "name": "x", "type": "bridge"})
        st, body = K.wait_for(lambda: readyz(br)[0] == 503 and readyz(br), "an earlier .conf without idbroker: 503")
        check(os.path.join(netdir, "05-other.conf") in body, "the reason names that file: %r" % body)
        os.unlink(os.path.join(netdir, "05-other.conf"))
        K.wait_for(lambda: readyz(br)[0] == 200, "removed: ready again")

        # A torn or garbage file is not usable either.
        write(netdir, "10-k8s.conflist", '{"plugins": [')
        st, body = K.wait_for(lambda: readyz(br)[0] == 503 and readyz(br), "garbage conflist: 503")
        check("not JSON" in body, "the reason says why: %r" % body)
        write(netdir, "10-k8s.conflist", CHAINED)
        K.wait_for(lambda: readyz(br)[0] == 200, "repaired: ready")
        equal(len(missing_warnings(br)), 2, "one warning per transition to 'missing', not one per check")


def kube_mode(netdir):
    write(netdir, "10-k8s.conflist", CHAINED)
    with K.FakeApi() as fake:
        with K.KubeBroker(fake, conf={"cni": {"confDir": netdir}}) as br:
            equal([e for e in fake.objects("events")], [], "no Event while the conflist chains idbroker")
            write(netdir, "10-k8s.conflist", UNCHAINED)
            evs = K.wait_for(lambda: [e for e in fake.objects("events")
                                      if e.get("reason") == "IdbrokerMissingFromConflist"],
                             "a Warning Event is posted")
            e = evs[0]
            equal(e["type"], "Warning", "type Warning")
            equal((e["involvedObject"]["kind"], e["involvedObject"]["name"]), ("Node", K.NODE),
                  "involvedObject is the broker's Node")
            equal(e["metadata"]["namespace"], "default", "in namespace default, as kubelet's node events")
            check(os.path.join(netdir, "10-k8s.conflist") in e["message"], "the message names the file")
            equal(e["source"]["component"], "idbrokerd", "source component idbrokerd")
            equal(readyz(br)[0], 503, "not ready meanwhile")

            write(netdir, "10-k8s.conflist", CHAINED)
            K.wait_for(lambda: [e for e in fake.objects("events") if e.get("reason") == "IdbrokerBackInConflist"
                                and e.get("type") == "Normal"], "a Normal Event when it is back")
            K.wait_for(lambda: readyz(br)[0] == 200, "ready again")
            equal(len([e for e in fake.objects("events") if e.get("reason") == "IdbrokerMissingFromConflist"]), 1,
                  "one Warning Event for the one transition")
            posts = [r for r in fake.requests() if r.get("method") == "POST" and "/events" in r.get("path", "")]
            check(posts and all(r.get("status") == 201 for r in posts), "the POSTs were accepted (201)")

            # The API server does not take Events for a while: the transition's Event is posted
            # once it does, with the time of the transition, not lost.
            fake.fault("500", count=None, match="/api/v1/namespaces/default/events")
            write(netdir, "10-k8s.conflist", UNCHAINED)
            K.wait_for(lambda: readyz(br)[0] == 503, "unchained again: 503")
            K.wait_for(lambda: len([r for r in fake.requests() if r.get("method") == "POST"
                                    and "/events" in r.get("path", "") and r.get("status") == 500]) >= 2,
                       "the Event is tried again while the API server answers 500")
            t_fail = time.time()
            equal(len([e for e in fake.objects("events") if e.get("reason") == "IdbrokerMissingFromConflist"]), 1,
                  "meanwhile no new Warning Event is stored")
            check(any("will try again" in r.get("message", r.get("msg", "")) for r in br.log_records()),
                  "the log says the Event will be tried again")
            fake.clear_faults()
            evs = K.wait_for(lambda: [e for e in fake.objects("events")
                                      if e.get("reason") == "IdbrokerMissingFromConflist"][1:],
                             "the Warning Event is posted once the API server takes it again", timeout=90)
            stamp = datetime.datetime.strptime(evs[0]["firstTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            check(stamp <= t_fail, "it carries the time of the transition (%s), not of the retry" %
                  evs[0]["firstTimestamp"])

            # Refused for good (403: the RBAC does not allow it): dropped, not tried forever.
            fake.fault("403", count=None, match="/api/v1/namespaces/default/events")
            write(netdir, "10-k8s.conflist", CHAINED)
            K.wait_for(lambda: any("dropping it" in r.get("message", r.get("msg", "")) for r in br.log_records()),
                       "a 403 drops the Event, with a log line")
            n403 = len([r for r in fake.requests() if r.get("status") == 403])
            K.wait_for(lambda: readyz(br)[0] == 200, "ready again")
            time.sleep(2.5)
            equal(len([r for r in fake.requests() if r.get("status") == 403]), n403, "and it is not posted again")
            fake.clear_faults()


def main():
    netdir = tempfile.mkdtemp(prefix="idb-netd-")
    try:
        files_mode(netdir)
        kube_mode(netdir)
    finally:
        shutil.rmtree(netdir, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
