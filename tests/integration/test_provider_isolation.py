#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""THREATS T19 with a real idbrokerd: providers run in the supervised provider host process
(providerIsolation "process", the default), so a provider that crashes costs its calls in flight a
503, never the broker; a provider that hangs costs a request a 503 at its deadline and cannot pile up
threads; the host is restarted after a crash or a kill -9, and a clean stop leaves no process behind.
issue_via goes through the channel; "inline" mode still works."""
import os
import signal
import threading
import time

from idbtest import (Broker, binding_yaml, check, equal, identity_yaml, parallel, pod_yaml,
                     run_main)

MAX_CALLS = 64  # PROVIDER_HOST_MAX_CALLS (broker/limits.h)
MAX_STUCK = 16  # PROVIDER_HOST_MAX_STUCK

# Test-only settings: no negative cache (a failure seen during a restart must not stick to the
# next request), no rate limit (the hang test sends a burst from one pod).
CONF = {"cache": {"negativeTtlMs": 0}, "rateLimit": {"requestsPerSecond": 0}}


def policy(*pods):
    """One identity, binding and pod per (pod name, provider)."""
    text = ""
    for name, provider in pods:
        text += identity_yaml("id-" + name, provider=provider)
        text += binding_yaml("b-" + name, "id-" + name, name)
        text += pod_yaml(name, name)
    return text


def register(b, pods):
    for i, (name, _) in enumerate(pods):
        b.register("default", name, "127.0.0.%d" % (i + 2))


def source(pods, name):
    return "127.0.0.%d" % ([p[0] for p in pods].index(name) + 2)


def wait_until(cond, what, timeout=30):
    """Waits for a condition (not a timing assertion: the timeout only bounds a broken run)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    check(False, "waited for: " + what)


def alive(pid):
    """Whether pid is a live process (a zombie counts as dead)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def threads(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def host_pid(b):
    return b.ctl_json("status").get("providerHostPid", 0)


def hosts_of(ppid):
    """Pids of the provider host processes whose parent is ppid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if int(fields[1]) == ppid and b"--provider-host" in cmd and fields[0] != "Z":
            out.append(int(d))
    return out


def ready(b):
    try:
        return b.health("/readyz")[0] == 200
    except OSError:
        return False


def wait_restarted(b, old_pid, restarts):
    wait_until(lambda: b.metric("idbroker_provider_restarts_total") >= restarts,
               "idbroker_provider_restarts_total reaches %d" % restarts)
    wait_until(lambda: ready(b) and host_pid(b) not in (0, old_pid),
               "a new provider host is up and /readyz is 200")


def stop_cleanly(b, pids):
    """SIGTERM: the broker exits 0 without sanitizer reports (Broker.stop checks), and takes every
    provider host with it."""
    broker_pid = b.proc.pid
    b.stop()
    left = [p for p in pids if alive(p)] + hosts_of(broker_pid)
    equal(left, [], "no provider host process is left after a clean stop")
    check("provider host exited with status 0" in b.log(),
          "the provider host exited by itself, with status 0, when its channel closed")


def test_crash():
    pods = [("p-mock", "mock"), ("p-crash", "crash"), ("p-via", "via")]
    with Broker(manifests=policy(*pods), test_plugins=("crash", "via"), conf=CONF,
                providers={"mock": {}, "crash": {}, "via": {"target": "mock"}}) as b:
        register(b, pods)
        st = b.ctl_json("status")
        equal(st["providerIsolation"], "process", "providers run in the provider host by default")
        pid1 = st["providerHostPid"]
        check(pid1 > 0 and alive(pid1) and pid1 != b.proc.pid, "the provider host runs")
        equal(hosts_of(b.proc.pid), [pid1], "it is the broker's only provider host child")
        provs = {p["name"]: p for p in b.ctl_json("providers")}
        equal(sorted(provs), ["crash", "mock", "via"], "the host reported every provider")
        check(provs["crash"]["path"].endswith("/crash.so") and provs["crash"]["version"] ==
              "1.0-test" and provs["crash"]["abiMajor"] == 1,
              "the control socket shows the metadata the host reported")

        st, _, _ = b.token(source=source(pods, "p-mock"))
        equal(st, 200, "mock serves before any crash")

        # issue_via through the channel: via (in the host) asks the broker, whose cache asks mock
        # (in the host again).
        st, _, body = b.token(source=source(pods, "p-via"))
        equal(st, 200, "a provider's issue_via is served through the channel")
        import json
        tok = json.loads(body)["access_token"]
        check(tok.startswith("via:") and tok[4:].count(".") == 2,
              "the via provider got mock's JWT through issue_via")

        for n in (1, 2):
            before = b.metric("idbroker_provider_restarts_total")
            pid = host_pid(b)
            st, hdrs, _ = b.token(source=source(pods, "p-crash"),
                                  resource="https://crash-%d.example/" % n)
            equal(st, 503, "crash #%d: the pod gets 503" % n)
            check(hdrs.get("retry-after", "").isdigit(), "crash #%d: with Retry-After" % n)
            check(b.proc.poll() is None, "crash #%d: the broker is still running" % n)
            equal(b.health("/healthz")[0], 200, "crash #%d: /healthz is 200" % n)
            # A cached token needs no provider: served during the restart too.
            st, _, _ = b.token(source=source(pods, "p-mock"))
            equal(st, 200, "crash #%d: mock's cached token is served while the host restarts" % n)
            wait_restarted(b, pid, before + 1)
            equal(b.metric("idbroker_provider_restarts_total"), before + 1,
                  "crash #%d: one restart counted" % n)
            st, _, _ = b.token(source=source(pods, "p-mock"),
                               resource="https://after-crash-%d.example/" % n)
            equal(st, 200, "crash #%d: the new host serves mock" % n)
        check("was killed by signal 11 (SIGSEGV)" in b.log() and "crash x1" in b.log(),
              "the log names the signal and the provider whose call was in flight")
        st, _, _ = b.token(source=source(pods, "p-via"), resource="https://via-after.example/")
        equal(st, 200, "issue_via works in the restarted host")
        stop_cleanly(b, [pid1, host_pid(b)])


def test_hang():
    # Two pods, so that more calls than the host's cap run at once within the per-pod connection cap.
    pods = [("p-mock", "mock"), ("p-hang-a", "hang"), ("p-hang-b", "hang")]
    n_hang = MAX_CALLS + 8
    with Broker(manifests=policy(*pods), test_plugins=("hang",),
                conf=dict(CONF, providerTimeoutMs=2000),
                providers={"mock": {}, "hang": {}}) as b:
        register(b, pods)
        equal(b.token(source=source(pods, "p-mock"))[0], 200, "mock serves")
        pid1 = host_pid(b)
        broker_threads = threads(b.proc.pid)

        # Sample the host's threads while the hanging calls run.
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], threads(pid1))
                time.sleep(0.01)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            results = parallel(n_hang, lambda i: b.token(
                source=source(pods, "p-hang-a" if i % 2 else "p-hang-b"),
                resource="https://hang-%d.example/" % i))
            # Other requests keep flowing while calls hang.
            during = b.token(source=source(pods, "p-mock"))[0]
        finally:
            done.set()
            sampler.join()
        codes = [r[0] if isinstance(r, tuple) else repr(r) for r in results]
        equal(codes, [503] * n_hang, "every request to the hanging provider gets 503 (%d calls)"
              % n_hang)
        check(all(r[1].get("retry-after") for r in results), "with Retry-After")
        equal(during, 200, "a cached mock token is served meanwhile")
        check(0 < peak[0] <= MAX_CALLS + 2,
              "the host's threads stay bounded: peak %d for %d hanging calls, cap %d"
              % (peak[0], n_hang, MAX_CALLS))
        # MAX_STUCK stuck calls of one provider make the broker restart the host.
        wait_restarted(b, pid1, 1)
        check("stuck past their deadline" in b.log(), "the log says why the host was restarted")
        check(not alive(pid1), "the host with the stuck threads is gone")
        check(threads(host_pid(b)) <= 4, "the new host has no stuck threads (%d threads)"
              % threads(host_pid(b)))
        # The broker's own workers returned at the deadline: no thread waits for the plugin.
        wait_until(lambda: threads(b.proc.pid) <= broker_threads + 2,
                   "the broker's thread count returns to %d (+2)" % broker_threads)
        equal(b.token(source=source(pods, "p-mock"), resource="https://after-hang.example/")[0],
              200, "mock serves new tokens after the restart")
        # A single hang below the threshold: a 503 at the deadline, no restart.
        st, _, _ = b.token(source=source(pods, "p-hang-a"), resource="https://one-more.example/")
        equal(st, 503, "one more hanging call: 503")
        equal(b.metric("idbroker_provider_restarts_total"), 1, "and no restart for a single one")
        # The host is told to stop while a call still hangs in it: it exits at once anyway.
        stop_cleanly(b, [pid1, host_pid(b)])


def test_kill9_host():
    pods = [("p-mock", "mock")]
    with Broker(manifests=policy(*pods), conf=CONF) as b:
        register(b, pods)
        equal(b.token(source=source(pods, "p-mock"))[0], 200, "mock serves")
        pid1 = host_pid(b)
        os.kill(pid1, signal.SIGKILL)
        wait_restarted(b, pid1, 1)
        check("was killed by signal 9 (SIGKILL)" in b.log(), "the log says how the host died")
        equal(b.token(source=source(pods, "p-mock"), resource="https://after-kill.example/")[0],
              200, "the restarted host serves")
        stop_cleanly(b, [pid1, host_pid(b)])


def test_crash_at_load():
    pods = [("p-mock", "mock")]
    with Broker(manifests=policy(*pods), test_plugins=("initcrash",), conf=CONF,
                providers={"initcrash": {}, "mock": {}}, start=False) as b:
        b.start(wait_ready=False)
        register(b, pods)
        check("provider 'initcrash' refused: the provider host was killed by signal 11" in b.log(),
              "a provider that crashes in init() is refused, and the log says how the host died")
        check(b.proc.poll() is None, "the broker runs on")
        st, _, body = b.health("/readyz")
        check(st == 503 and b"failed to load" in body, "/readyz says a provider failed to load")
        equal([p["name"] for p in b.ctl_json("providers")], ["mock"], "mock is loaded")
        equal(b.token(source=source(pods, "p-mock"))[0], 200, "and serves from the new host")
        stop_cleanly(b, [host_pid(b)])


def test_kill9_broker():
    pods = [("p-mock", "mock")]
    with Broker(manifests=policy(*pods), conf=CONF) as b:
        register(b, pods)
        pid = host_pid(b)
        b.kill9()
        wait_until(lambda: not alive(pid), "the provider host dies with the broker (SIGKILL)")
        check(True, "no orphan provider host after kill -9 of the broker")


def test_inline():
    pods = [("p-mock", "mock"), ("p-via", "via")]
    with Broker(manifests=policy(*pods), test_plugins=("via",),
                conf=dict(CONF, providerIsolation="inline"),
                providers={"mock": {}, "via": {}}) as b:
        register(b, pods)
        st = b.ctl_json("status")
        equal(st["providerIsolation"], "inline", "status says inline")
        check("providerHostPid" not in st, "and shows no provider host")
        equal(hosts_of(b.proc.pid), [], "no provider host process runs")
        equal(b.token(source=source(pods, "p-mock"))[0], 200, "mock serves inline")
        st, _, body = b.token(source=source(pods, "p-via"))
        equal(st, 200, "issue_via works inline")
        check(b'"access_token":"via:' in body, "with the via provider's token")
        b.stop()


def main():
    test_crash()
    test_hang()
    test_kill9_host()
    test_crash_at_load()
    test_kill9_broker()
    test_inline()


if __name__ == "__main__":
    run_main(main)
