# SPDX-License-Identifier: Apache-2.0
"""Shared helpers for idbroker's network-namespace (e2e) tests: "node" worlds with pods made by a real CNI
chain, stand-in servers, and a tiny assertion harness.

A World is one fresh "node" network namespace with its own temporary directory (state, IPAM data, logs,
sockets). Pods are further namespaces that the CNI plugins (Debian's bridge/ptp/host-local/portmap and
build/cni/idbroker) wire to the node; every plugin runs inside the node namespace, like a runtime on a
node would run it, so nothing touches the machine's own namespace. World.close() (also called at exit
and by the context manager) stops every process the world started and removes its namespaces,
/etc/netns entries, tmpfs mounts and files, even when a test fails.

Must run as root with /usr/bin/python3. Stand-in servers are this same file run as a script:
    netns_world.py http ADDR PORT NAME LOGFILE       answers every GET with JSON naming the client
    netns_world.py ctl SOCKET LOGFILE [hang]          a control-socket stand-in (ok=true, or never replies)
"""
import atexit
import ctypes
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("IDB_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SOURCE = os.environ.get("IDB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
IDBROKER_CNI = os.path.join(BUILD, "cni", "idbroker")
IDBROKERD = os.path.join(BUILD, "idbrokerd")
MOCK_PROVIDER = os.path.join(BUILD, "providers", "mock.so")
DEBIAN_CNI = "/usr/lib/cni"
HERE = os.path.abspath(__file__)
PYTHON = "/usr/bin/python3"

METADATA = "169.254.169.254"
BROKER = "169.254.169.250"
BROKER_PORT = 2579
VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
# Debian's reference plugins (v1.1.1) know spec versions up to 1.0.0.
DEBIAN_MAX = "1.0.0"
TOKEN_URL = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"


# ---------------------------------------------------------------------------------------------------
# Assertions


class Failure(Exception):
    pass


_checks = {"passed": 0, "failed": 0}


def check(cond, what):
    """Records one assertion; raises on failure so the test stops with a clear message."""
    if cond:
        _checks["passed"] += 1
        print("ok   - %s" % what, flush=True)
        return
    _checks["failed"] += 1
    print("FAIL - %s" % what, flush=True)
    raise Failure(what)


def equal(got, want, what):
    if got != want:
        print("       got:  %r\n       want: %r" % (got, want), flush=True)
    check(got == want, what)


def run_main(fn):
    """Runs a test function (root only) and exits 1 on any failure, 77 when it cannot run here."""
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces)")
        sys.exit(77)
    if not os.path.exists(IDBROKER_CNI):
        print("FAIL: %s not built" % IDBROKER_CNI)
        sys.exit(1)
    try:
        fn()
    except Failure:
        pass
    except Exception as e:  # an unexpected error is a failure too
        import traceback

        traceback.print_exc()
        _checks["failed"] += 1
        print("FAIL - unexpected %s: %s" % (type(e).__name__, e), flush=True)
    print("%d passed, %d failed" % (_checks["passed"], _checks["failed"]), flush=True)
    sys.exit(1 if _checks["failed"] else 0)


CLONE_NEWNET = 0x40000000


def setns(path):
    """Moves the calling thread into the network namespace at path (benches time plugins without
    `ip netns exec` in between)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns " + path)
    finally:
        os.close(fd)


def wait_for(cond, what, tries=200, delay=0.05):
    """Polls cond() (no timing assertion: only an upper bound against hanging forever)."""
    for _ in range(tries):
        v = cond()
        if v:
            check(True, what)
            return v
        time.sleep(delay)
    check(False, "waited for %s" % what)


# ---------------------------------------------------------------------------------------------------
# Worlds


def _run(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(argv, **kw)


class Pod:
    def __init__(self, world, name, netns, container_id, ifname="eth0"):
        self.world = world
        self.name = name  # short name used in CNI_ARGS
        self.netns = netns  # namespace name
        self.container_id = container_id
        self.ifname = ifname
        self.result = None  # the chain's final result (what the runtime caches)
        self.primary = None  # the primary plugin's result

    @property
    def netns_path(self):
        return "/var/run/netns/" + self.netns

    @property
    def ip(self):
        for ip in self.result["ips"]:
            if ":" not in ip["address"]:
                return ip["address"].split("/")[0]
        return self.result["ips"][0]["address"].split("/")[0]

    def host_veth(self):
        """The host-side interface named in the result (the one without sandbox that is no bridge)."""
        names = [i["name"] for i in self.result["interfaces"] if not i.get("sandbox")]
        return [n for n in names if n != self.world.bridge][0]

    def exec(self, argv, **kw):
        return self.world.netns_exec(self.netns, argv, **kw)

    def curl(self, url=TOKEN_URL, source=None, timeout=3, headers=("Metadata: true",)):
        """GET url from inside the pod. Returns (curl exit code, http status or None, body)."""
        argv = ["curl", "-sS", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}"]
        for h in headers:
            argv += ["-H", h]
        if source:
            argv += ["--interface", source]
        argv.append(url)
        p = self.exec(argv)
        body, _, code = p.stdout.rpartition("\n")
        return p.returncode, (int(code) if code.isdigit() and code != "000" else None), body


class World:
    """One node namespace with its own directories; pods are made through CNI chains."""

    def __init__(self, tag="w", primary="bridge", subnet="10.99.0.0/24", subnet6=None):
        self.id = tag[:3] + secrets.token_hex(3)
        self.node = "idb-%s-node" % self.id
        self.bridge = "idb%s" % self.id  # <= 15 characters
        self.primary = primary
        self.subnet = subnet
        self.subnet6 = subnet6
        self.tmp = tempfile.mkdtemp(prefix="idb-e2e-%s-" % self.id)
        self.state_dir = os.path.join(self.tmp, "state")
        self.ipam_dir = os.path.join(self.tmp, "ipam")
        self.run_dir = os.path.join(self.tmp, "run")
        os.makedirs(self.run_dir, mode=0o700)
        self.broker_socket = os.path.join(self.run_dir, "idbrokerd.sock")
        self.cni_log = os.path.join(self.tmp, "idbroker-cni.log")
        self.namespaces = []
        self.mounts = []
        self.procs = []
        self.pods = {}
        self.closed = False
        atexit.register(self.close)
        self._add_netns(self.node)
        self.netns_exec(self.node, ["ip", "link", "set", "lo", "up"], check=True)

    # -- namespaces and commands ---------------------------------------------------------------

    def _add_netns(self, name):
        # A private resolver first: lookups inside must never reach the machine's resolver.
        d = "/etc/netns/" + name
        os.makedirs(d, exist_ok=True)
        with open(d + "/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        with open(d + "/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n")
        _run(["ip", "netns", "add", name], check=True)
        self.namespaces.append(name)

    def netns_exec(self, ns, argv, **kw):
        return _run(["ip", "netns", "exec", ns] + list(argv), **kw)

    def node_exec(self, argv, **kw):
        return self.netns_exec(self.node, argv, **kw)

    def sysctl(self, key):
        p = self.node_exec(["cat", "/proc/sys/" + key.replace(".", "/")])
        return p.stdout.strip()

    # -- configuration -------------------------------------------------------------------------

    def idbroker_conf(self, **extra):
        c = {
            "type": "idbroker",
            "stateDir": self.state_dir,
            "brokerSocket": self.broker_socket,
            "logFile": self.cni_log,
            "logLevel": "debug",
        }
        c.update(extra)
        return c

    def ipam(self):
        ranges = [[{"subnet": self.subnet}]]
        routes = [{"dst": "0.0.0.0/0"}]
        if self.subnet6:
            ranges.append([{"subnet": self.subnet6}])
            routes.append({"dst": "::/0"})
        return {"type": "host-local", "ranges": ranges, "routes": routes, "dataDir": self.ipam_dir}

    def primary_conf(self):
        if self.primary == "ptp":
            return {"type": "ptp", "ipMasq": False, "ipam": self.ipam()}
        return {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": self.ipam(),
        }

    def conflist(self, version, chained="idbroker", **extra):
        plugins = [self.primary_conf()]
        if chained == "idbroker":
            plugins.append(self.idbroker_conf(**extra))
        elif chained == "portmap":
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        return {"cniVersion": version, "name": "idbtest-" + self.id, "plugins": plugins}

    # -- the CNI protocol, as a runtime speaks it ----------------------------------------------

    def plugin_path(self, ptype):
        if ptype == "idbroker":
            return IDBROKER_CNI
        return os.path.join(DEBIAN_CNI, ptype)

    def _plugin_env(self, command, pod=None, netns=None, env=None):
        e = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_PATH": DEBIAN_CNI + ":" + os.path.dirname(IDBROKER_CNI),
        }
        if pod is not None:
            e["CNI_CONTAINERID"] = pod.container_id
            e["CNI_IFNAME"] = pod.ifname
            e["CNI_NETNS"] = pod.netns_path if netns is None else netns
            e["CNI_ARGS"] = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s;K8S_POD_UID=%s" % (
                pod.name,
                "uid-" + pod.container_id[:12],
            )
        if env:
            for k, v in env.items():
                if v is None:
                    e.pop(k, None)
                else:
                    e[k] = v
        return e

    def invoke(self, ptype, command, conf, pod=None, netns=None, env=None, stdin=None):
        """Runs one plugin inside the node namespace. Returns (exit code, parsed stdout or text,
        stderr). `conf` is a dict (or stdin text when `stdin` is given)."""
        text = stdin if stdin is not None else json.dumps(conf)
        p = subprocess.run(
            ["ip", "netns", "exec", self.node, self.plugin_path(ptype)],
            input=text,
            capture_output=True,
            text=True,
            env=self._plugin_env(command, pod, netns, env),
        )
        out = p.stdout
        try:
            out = json.loads(p.stdout) if p.stdout.strip() else None
        except ValueError:
            pass
        return p.returncode, out, p.stderr

    def invoke_async(self, ptype, command, conf, pod=None, env=None):
        """Starts one plugin like invoke() without waiting: returns the Popen, whose pid is the
        plugin itself (ip netns exec execs it), e.g. to kill it mid-command. Its stdin (the
        configuration) is written and closed; stdout and stderr are discarded."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.node, self.plugin_path(ptype)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._plugin_env(command, pod, None, env),
        )
        try:
            p.stdin.write(json.dumps(conf).encode())
            p.stdin.close()
        except BrokenPipeError:
            pass
        return p

    @staticmethod
    def plugin_conf(conflist, plugin, version, prev=None):
        c = dict(plugin)
        c["name"] = conflist["name"]
        c["cniVersion"] = version
        if prev is not None:
            c["prevResult"] = prev
        return c

    def _debian_version(self, version):
        # Debian's plugins stop at 1.0.0; 1.1.0 results have the 1.0.0 shape, so a 1.1.0 chain runs
        # them at 1.0.0 and hands their result on as 1.1.0.
        return DEBIAN_MAX if version == "1.1.0" else version

    def chain(self, command, conflist, pod, prev=None, env=None):
        """ADD / CHECK / DEL of a whole conflist, as libcni does it. Returns (code, output, stderr) of
        the last plugin run (or the first failing one). ADD stores pod.result and pod.primary."""
        version = conflist["cniVersion"]
        plugins = conflist["plugins"]
        order = list(reversed(plugins)) if command == "DEL" else plugins
        result = None
        for pl in order:
            v = version if pl["type"] == "idbroker" else self._debian_version(version)
            if command == "ADD":
                p = result
                if p is not None:
                    p = dict(p)
                    p["cniVersion"] = v
                conf = self.plugin_conf(conflist, pl, v, p)
            else:
                p = prev if prev is not None else pod.result
                if p is not None:
                    p = dict(p)
                    p["cniVersion"] = v
                conf = self.plugin_conf(conflist, pl, v, p)
            code, out, err = self.invoke(pl["type"], command, conf, pod, env=env)
            if code != 0:
                return code, out, err
            if command == "ADD":
                if result is None:
                    pod.primary = out
                result = out
        if command == "ADD":
            pod.result = result
            return 0, result, ""
        return 0, None, ""

    def new_pod(self, name=None):
        name = name or "pod%d" % (len(self.pods) + 1)
        ns = "idb-%s-%s" % (self.id, name)
        self._add_netns(ns)
        self.netns_exec(ns, ["ip", "link", "set", "lo", "up"], check=True)
        pod = Pod(self, name, ns, secrets.token_hex(32))
        self.pods[name] = pod
        return pod

    def add_pod(self, conflist, name=None):
        pod = self.new_pod(name)
        code, out, err = self.chain("ADD", conflist, pod)
        if code != 0:
            check(False, "ADD of %s: %s %s" % (pod.name, out, err))
        return pod

    def remove_pod_netns(self, pod):
        _run(["ip", "netns", "del", pod.netns])
        shutil.rmtree("/etc/netns/" + pod.netns, ignore_errors=True)
        if pod.netns in self.namespaces:
            self.namespaces.remove(pod.netns)

    # -- stand-ins -----------------------------------------------------------------------------

    def start(self, argv, ns=None):
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns or self.node] + argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def start_http(self, addr, port, name):
        """A stand-in HTTP server in the node namespace. Returns (process, log path)."""
        log = os.path.join(self.tmp, name + ".jsonl")
        open(log, "w").close()
        p = self.start([PYTHON, HERE, "http", addr, str(port), name, log])
        wait_for(lambda: self.listening(addr, port), "%s stand-in on %s:%d" % (name, addr, port))
        return p, log

    def listening(self, addr, port):
        out = self.node_exec(["ss", "-Hltn", "src", "%s:%d" % (_host(addr), port)]).stdout
        return bool(out.strip())

    def start_imds(self):
        """The stand-in "real IMDS": 169.254.169.254:80 on the node's lo. It must never see a pod."""
        self.node_exec(["ip", "addr", "add", METADATA + "/32", "dev", "lo"], check=True)
        self.imds, self.imds_log = self.start_http(METADATA, 80, "imds")
        return self.imds

    def start_broker_standin(self):
        """A stand-in token endpoint on brokerAddress:brokerPort (binds before the address exists)."""
        self.broker, self.broker_log = self.start_http(BROKER, BROKER_PORT, "broker")
        return self.broker

    def start_ctl(self, hang=False):
        self.ctl_log = os.path.join(self.tmp, "ctl.jsonl")
        open(self.ctl_log, "w").close()
        argv = [PYTHON, HERE, "ctl", self.broker_socket, self.ctl_log] + (["hang"] if hang else [])
        p = self.start(argv)
        wait_for(lambda: os.path.exists(self.broker_socket), "control socket stand-in")
        return p

    def start_real_broker(self, manifests, health_port=2580, providers=None, conf_extra=None):
        """The real idbrokerd in the node namespace: files mode, mock provider, the world's state
        directory and control socket, listening on the default broker address. Returns the process.
        providers: {name: config} of further providers from BUILD/providers/<name>.so; conf_extra:
        top-level configuration keys that replace the defaults (both apply at the first start)."""
        d = os.path.join(self.tmp, "broker")
        if not hasattr(self, "broker_dir"):
            self.broker_dir = d
            os.makedirs(os.path.join(d, "identities"))
            os.makedirs(os.path.join(d, "providers"))
            for name in ["mock"] + sorted(providers or {}):
                dst = os.path.join(d, "providers", name + ".so")
                shutil.copyfile(os.path.join(os.path.dirname(MOCK_PROVIDER), name + ".so"), dst)
                os.chmod(dst, 0o755)
            conf = {
                "nodeName": "node-" + self.id,
                "listen": "%s:%d" % (BROKER, BROKER_PORT),
                "healthListen": "127.0.0.1:%d" % health_port,
                "controlSocket": self.broker_socket,
                "stateDir": self.state_dir,
                "pluginDir": os.path.join(d, "providers"),
                "source": {"kind": "files", "dir": os.path.join(d, "identities"), "pollIntervalMs": 200},
                "providers": {"mock": {"jwksFile": os.path.join(d, "jwks.json"), "lifetimeSeconds": 3600}},
                "typeProviders": {"0": "mock", "1": "mock", "2": "mock"},
                "log": {"level": "debug", "format": "json"},
                "cni": {"confDir": ""},  # not the host's /etc/cni/net.d
            }
            conf["providers"].update(providers or {})
            conf.update(conf_extra or {})
            with open(os.path.join(d, "idbrokerd.json"), "w") as f:
                json.dump(conf, f)
        with open(os.path.join(d, "identities", "policy.yaml"), "w") as f:
            f.write(manifests)
        self.health_port = health_port
        self.broker_log = os.path.join(d, "idbrokerd.log")
        logf = open(self.broker_log, "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.node, IDBROKERD, "--config", os.path.join(d, "idbrokerd.json")],
                             stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.procs.append(p)

        def ready():
            if p.poll() is not None:
                check(False, "idbrokerd exited (%s): %s" % (p.returncode, open(self.broker_log).read()[-2000:]))
            r = self.node_exec(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                                "http://127.0.0.1:%d/readyz" % health_port])
            return r.stdout == "200" and os.path.exists(self.broker_socket)

        wait_for(ready, "idbrokerd ready in the node namespace")
        return p

    @staticmethod
    def requests(log):
        with open(log) as f:
            return [json.loads(l) for l in f if l.strip()]

    # -- inspection ----------------------------------------------------------------------------

    def ruleset(self):
        p = self.node_exec(["nft", "-j", "list", "ruleset"], check=True)
        return json.loads(p.stdout)["nftables"]

    def set_elements(self, family, name):
        """Elements of set `name` in table <family> idbroker, as printed by nft -j."""
        out = []
        for item in self.ruleset():
            s = item.get("set")
            if s and s["family"] == family and s["table"] == "idbroker" and s["name"] == name:
                out.extend(s.get("elem", []))
        return out

    def all_elements(self):
        out = {}
        for item in self.ruleset():
            s = item.get("set")
            if s and s["table"] == "idbroker":
                out["%s/%s" % (s["family"], s["name"])] = s.get("elem", [])
        return out

    def tables(self):
        return [(i["table"]["family"], i["table"]["name"]) for i in self.ruleset() if "table" in i]

    def state_files(self):
        out = []
        for root, _, files in os.walk(self.state_dir):
            for f in files:
                if f != "lock":
                    out.append(os.path.relpath(os.path.join(root, f), self.state_dir))
        for root, _, _ in os.walk(os.path.join(self.state_dir, "cni", "by-ip")):
            for f in os.listdir(root):
                p = os.path.join(root, f)
                if os.path.islink(p):
                    out.append(os.path.relpath(p, self.state_dir))
        return sorted(set(out))

    def mount_tmpfs(self, path, size):
        """A tmpfs of `size` (mount's size= syntax, e.g. "256k") on `path` (made if missing, inside
        the world's directory); close() unmounts it, also when a test fails."""
        os.makedirs(path, exist_ok=True)
        _run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "idb-e2e", path], check=True)
        self.mounts.append(path)
        return path

    # -- teardown ------------------------------------------------------------------------------

    def close(self):
        if self.closed:
            return
        self.closed = True
        for p in self.procs:
            try:
                self.stop(p)
            except Exception:
                pass
        for ns in reversed(self.namespaces):
            _run(["ip", "netns", "del", ns])
            shutil.rmtree("/etc/netns/" + ns, ignore_errors=True)
        for m in reversed(self.mounts):
            _run(["umount", "-l", m])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def _host(addr):
    return "[%s]" % addr if ":" in addr else addr


def elem_keys(elems):
    """nft -j set elements -> comparable tuples (concatenations become tuples of strings)."""
    out = []
    for e in elems:
        if isinstance(e, dict) and "concat" in e:
            out.append(tuple(str(x) for x in e["concat"]))
        elif isinstance(e, dict) and "elem" in e:
            out.extend(elem_keys([e["elem"]["val"]]))
        else:
            out.append((str(e),))
    return out


# ---------------------------------------------------------------------------------------------------
# Stand-in servers (run as: netns_world.py http|ctl ...)


def _serve_http(addr, port, name, log):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, for the pre-existing connection test (T5)

        def do_GET(self):
            rec = {"server": name, "client": self.client_address[0], "path": self.path,
                   "metadata": self.headers.get("Metadata")}
            if self.path != "/ready":
                with open(log, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            body = json.dumps({"access_token": "standin-" + name, "client": rec["client"],
                               "expires_on": str(int(time.time()) + 3600), "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

        def server_bind(self):
            # No getfqdn() (it would ask a resolver); IP_FREEBIND so the stand-in can start before
            # the plugin has made the broker address local.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
            self.socket.bind(self.server_address)
            self.server_name = addr
            self.server_port = port

    Server((addr, port), Handler).serve_forever()


def _serve_ctl(path, log, hang):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o600)
    s.listen(64)
    held = []
    while True:
        c, _ = s.accept()
        if hang:
            held.append(c)  # accept and never answer
            continue
        data = b""
        while not data.endswith(b"\n"):
            k = c.recv(65536)
            if not k:
                break
            data += k
        try:
            req = json.loads(data)
        except ValueError:
            req = {"raw": data.decode(errors="replace")}
        with open(log, "a") as f:
            f.write(json.dumps(req) + "\n")
        c.sendall(json.dumps({"version": 1, "ok": True, "result": {}}).encode() + b"\n")
        c.close()


if __name__ == "__main__":
    if sys.argv[1] == "http":
        _serve_http(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "ctl":
        _serve_ctl(sys.argv[2], sys.argv[3], len(sys.argv) > 4 and sys.argv[4] == "hang")
