# SPDX-License-Identifier: Apache-2.0
"""deploy/install-cni.sh, run for real against temporary directories: which network configuration it
changes and how (docs/kubernetes.md, "Install step").

The file it must change is the one the container runtime uses: the first *.conf, *.conflist or
*.json by name (libcni's ConfFiles, sorted), directories skipped, hidden files included. That is checked two
ways: against the same rule written here (runtime_pick), and against the real idbrokerd's conflist
watch (cni.confDir pointed at the directory), which answers /readyz 503 naming that file while it
lacks idbroker and 200 once idbroker follows the primary plugin in it.

Cases: a single-plugin .conf (and .json) is converted to <name>.conflist = {cniVersion, name,
plugins: [the plugin, idbroker]} and the original removed; 05-x.conf before 10-y.conflist: 05-x is
the one changed; a .json conflist gets idbroker appended; a hidden .conf that sorts first is the one
converted (libcni loads hidden files); directories, other extensions and the script's temporaries
are ignored; a file that is not JSON or not a network
configuration is left untouched; a second run changes nothing; watch mode converts again after the
primary rewrites its .conf or .json, keeping the new content; step 3 (`idbroker --guard`) is given the
runtime's file once it chains idbroker, and its failure is reported. The real-world conflists (bridge,
Calico, Azure CNI) are in test_k8s_deploy.py.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import idbtest  # noqa: E402
import k8stest as K  # noqa: E402
from idbtest import Broker, check, equal, run_main  # noqa: E402

SCRIPT = os.path.join(idbtest.SOURCE, "deploy", "install-cni.sh")
IDB = {"type": "idbroker"}
BRIDGE_CONF = {"cniVersion": "0.4.0", "name": "bridge-net", "type": "bridge", "bridge": "cni0", "isGateway": True,
               "ipMasq": True, "ipam": {"type": "host-local", "subnet": "10.22.0.0/16", "routes": [{"dst": "0.0.0.0/0"}]}}
PTP_CONF = {"cniVersion": "1.0.0", "name": "ptp-net", "type": "ptp", "mtu": 1460,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.30.0.0/16"}]]}}
LIST_Y = {"cniVersion": "1.0.0", "name": "y-net", "plugins": [{"type": "bridge", "bridge": "cni1"}, {"type": "portmap"}]}
LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}


def runtime_pick(netdir):
    """The file a runtime loads (libcni ConfFiles + sort.Strings): the extension is what follows the last
    dot (Go's filepath.Ext), hidden files count, directories do not."""
    names = sorted(n for n in os.listdir(netdir)
                   if "." in n and n[n.rindex("."):] in (".conf", ".conflist", ".json")
                   and not os.path.isdir(os.path.join(netdir, n)))
    return names[0] if names else None


def converted(single, plugin=IDB):
    """What a single-plugin configuration becomes: name and cniVersion moved up, the rest one plugin."""
    out = {k: single[k] for k in ("cniVersion", "name") if k in single}
    out["plugins"] = [{k: v for k, v in single.items() if k not in ("cniVersion", "name")}, plugin]
    return out


def write(netdir, name, obj):
    """As a primary CNI writes: a temporary name, then rename."""
    tmp = os.path.join(netdir, ".primary-tmp")
    with open(tmp, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj, indent=2))
    os.rename(tmp, os.path.join(netdir, name))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def snapshot(netdir):
    """name -> (bytes, inode, mtime) of every regular file, hidden ones included."""
    out = {}
    for n in sorted(os.listdir(netdir)):
        p = os.path.join(netdir, n)
        if os.path.isfile(p):
            st = os.stat(p)
            out[n] = (read(p), st.st_ino, st.st_mtime_ns)
    return out


class Env:
    def __init__(self, netdir):
        self.tmp = tempfile.mkdtemp(prefix="idb-icni-")
        # A stand-in for the plugin binary: `--guard` appends its stdin (as one JSON line) to guard.log and
        # exits with $FAKE_GUARD_RC (the real one is run in test_k8s_deploy.py and the e2e tests).
        self.src = os.path.join(self.tmp, "idbroker")
        self.guard_log = os.path.join(self.tmp, "guard.log")
        with open(self.src, "w") as f:
            f.write('#!/bin/sh\n[ "$1" = --guard ] || exit 2\njq -c . >>"%s"\n'
                    'if [ "${FAKE_GUARD_RC:-0}" != 0 ]; then echo "nftables says no" >&2; exit "$FAKE_GUARD_RC"; fi\n'
                    % self.guard_log)
        os.chmod(self.src, 0o755)
        self.bindir = os.path.join(self.tmp, "bin")
        self.netdir = netdir
        self.env = dict(os.environ, IDBROKER_CNI_BINARY=self.src, CNI_BIN_DIR=self.bindir, CNI_NET_DIR=netdir,
                        IDBROKER_CNI_INTERVAL="0.1")

    def run(self, shell="/bin/sh", **extra):
        r = subprocess.run(shell.split() + [SCRIPT], env=dict(self.env, **extra), capture_output=True, text=True,
                           timeout=60)
        check(r.returncode == 0, "the install step exits 0 (%s)" % r.stderr.strip()[-300:])
        return r.stderr

    def run_rc(self, **extra):
        r = subprocess.run(["/bin/sh", SCRIPT], env=dict(self.env, **extra), capture_output=True, text=True,
                           timeout=60)
        return r.returncode, r.stderr

    def guard_calls(self):
        """The configurations `idbroker --guard` was given since the last call."""
        try:
            with open(self.guard_log) as f:
                calls = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        os.unlink(self.guard_log)
        return calls

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def clear(netdir):
    for n in os.listdir(netdir):
        p = os.path.join(netdir, n)
        if os.path.isdir(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def readyz(br):
    st, _, body = br.health("/readyz")
    return st, body.decode()


def broker_sees_missing(br, netdir, name):
    """The broker's watch picked `name` (the runtime's file) and finds idbroker missing from it."""
    path = os.path.join(netdir, name)
    K.wait_for(lambda: (lambda r: r[0] == 503 and "'%s'" % path in r[1])(readyz(br)),
               "the broker checks %s and finds idbroker missing" % name)


def broker_sees_chained(br, name):
    K.wait_for(lambda: readyz(br)[0] == 200, "the broker finds idbroker chained in the runtime's file (%s)" % name)


def case_conf_single(br, e, shell):
    """A single-plugin .conf (the bridge plugin's documented form) becomes a .conflist."""
    d = e.netdir
    clear(d)
    write(d, "10-bridge.conf", BRIDGE_CONF)
    write(d, "99-loopback.conflist", LOOPBACK)
    lo = read(os.path.join(d, "99-loopback.conflist"))
    broker_sees_missing(br, d, "10-bridge.conf")
    err = e.run(shell)
    got = load(os.path.join(d, "10-bridge.conflist"))
    equal(got, converted(BRIDGE_CONF), "[%s] .conf converted: bridge first with all its fields, idbroker last, "
          "cniVersion and name at the top" % shell)
    equal(list(got), ["cniVersion", "name", "plugins"], "[%s] the list's keys in the usual order" % shell)
    check(not os.path.exists(os.path.join(d, "10-bridge.conf")), "[%s] the original .conf is removed" % shell)
    equal(runtime_pick(d), "10-bridge.conflist", "[%s] the runtime now picks the new .conflist" % shell)
    equal(read(os.path.join(d, "99-loopback.conflist")), lo, "[%s] the other configuration is untouched" % shell)
    check("converted single-plugin %s/10-bridge.conf into %s/10-bridge.conflist" % (d, d) in err,
          "[%s] the conversion is logged: %r" % (shell, err.strip()[-300:]))
    equal(os.stat(os.path.join(d, "10-bridge.conflist")).st_mode & 0o777, 0o644, "[%s] written with mode 0644" % shell)
    broker_sees_chained(br, "10-bridge.conflist")

    before = snapshot(d)
    err = e.run(shell)
    equal(snapshot(d), before, "[%s] a second run changes nothing (same bytes, inode, mtime)" % shell)
    check("converted" not in err and "inserted" not in err, "[%s] ... and logs no change" % shell)
    check(not [n for n in os.listdir(d) + os.listdir(e.bindir) if "tmp" in n], "[%s] no temporary left" % shell)


def case_order(br, e):
    """05-x.conf sorts before 10-y.conflist: the runtime uses 05-x, so 05-x is the one changed."""
    d = e.netdir
    clear(d)
    write(d, "05-x.conf", PTP_CONF)
    write(d, "10-y.conflist", LIST_Y)
    y = read(os.path.join(d, "10-y.conflist"))
    broker_sees_missing(br, d, "05-x.conf")
    e.run()
    equal(load(os.path.join(d, "05-x.conflist")), converted(PTP_CONF), "05-x.conf (first by name) is converted")
    equal(read(os.path.join(d, "10-y.conflist")), y, "10-y.conflist (not used by the runtime) is untouched")
    equal(runtime_pick(d), "05-x.conflist", "the runtime picks 05-x.conflist")
    broker_sees_chained(br, "05-x.conflist")

    # Byte order, not the locale's: "10-B" sorts before "10-a" (a real check where en_US.UTF-8 is
    # installed: bash sorts globs with strcoll; the script sets LC_ALL=C).
    for shell in ("/bin/sh", "bash --posix"):
        clear(d)
        write(d, "10-a.conflist", LIST_Y)
        write(d, "10-B.conflist", dict(LIST_Y, name="b-net"))
        e.run(shell, LC_ALL="en_US.UTF-8", LANG="en_US.UTF-8")
        equal([p["type"] for p in load(os.path.join(d, "10-B.conflist"))["plugins"]], ["bridge", "portmap", "idbroker"],
              "[%s] byte order whatever the locale: 10-B.conflist is chained" % shell)
        equal(load(os.path.join(d, "10-a.conflist")), LIST_Y, "[%s] ... and 10-a.conflist is not" % shell)

    # A conflist first, a .conf after it: only the conflist.
    clear(d)
    write(d, "05-a.conflist", LIST_Y)
    write(d, "10-b.conf", PTP_CONF)
    b = read(os.path.join(d, "10-b.conf"))
    e.run()
    equal(load(os.path.join(d, "05-a.conflist")), dict(LIST_Y, plugins=LIST_Y["plugins"] + [IDB]),
          "05-a.conflist first: idbroker appended to it")
    equal(read(os.path.join(d, "10-b.conf")), b, "... and the later .conf is untouched")
    check(not os.path.exists(os.path.join(d, "10-b.conflist")), "... and not converted")


def case_json(br, e):
    d = e.netdir
    # A .json holding a conflist: idbroker appended in place.
    clear(d)
    write(d, "10-net.json", LIST_Y)
    e.run()
    equal(load(os.path.join(d, "10-net.json")), dict(LIST_Y, plugins=LIST_Y["plugins"] + [IDB]),
          "a .json conflist: idbroker appended in place")
    equal(sorted(os.listdir(d)), ["10-net.json"], "... no other file made")
    before = snapshot(d)
    e.run()
    equal(snapshot(d), before, "... a second run changes nothing")

    # A single-plugin .json: converted as a .conf is.
    clear(d)
    write(d, "10-net.json", PTP_CONF)
    broker_sees_missing(br, d, "10-net.json")
    e.run()
    equal(load(os.path.join(d, "10-net.conflist")), converted(PTP_CONF), "a single-plugin .json is converted")
    equal(sorted(os.listdir(d)), ["10-net.conflist"], "... and removed")
    broker_sees_chained(br, "10-net.conflist")


def case_hidden(br, e):
    """libcni does not skip hidden files: a hidden .conf that sorts first is the runtime's file, and is
    the one converted; names below '.' in byte order ('-') sort before hidden ones."""
    d = e.netdir
    clear(d)
    write(d, ".00-hidden.conf", PTP_CONF)
    write(d, "10-real.conflist", LIST_Y)
    real = read(os.path.join(d, "10-real.conflist"))
    equal(runtime_pick(d), ".00-hidden.conf", "the runtime's file is the hidden .00-hidden.conf")
    broker_sees_missing(br, d, ".00-hidden.conf")
    e.run()
    equal(load(os.path.join(d, ".00-hidden.conflist")), converted(PTP_CONF), "the hidden .conf is converted")
    check(not os.path.exists(os.path.join(d, ".00-hidden.conf")), "... and removed")
    equal(read(os.path.join(d, "10-real.conflist")), real, "10-real.conflist untouched")
    broker_sees_chained(br, ".00-hidden.conflist")

    clear(d)
    write(d, ".b.conflist", LIST_Y)
    write(d, "-a.conflist", LOOPBACK)
    equal(runtime_pick(d), "-a.conflist", "'-' sorts before '.': the runtime's file is -a.conflist")
    broker_sees_missing(br, d, "-a.conflist")
    e.run()
    equal(load(os.path.join(d, "-a.conflist")), dict(LOOPBACK, plugins=LOOPBACK["plugins"] + [IDB]),
          "-a.conflist is the one chained")
    equal(load(os.path.join(d, ".b.conflist")), LIST_Y, ".b.conflist untouched")
    broker_sees_chained(br, "-a.conflist")


def case_ignored(br, e):
    """Directories, other extensions and the script's temporaries are not network configurations; a
    stale temporary of a killed run is cleaned up."""
    d = e.netdir
    clear(d)
    os.mkdir(os.path.join(d, "01-dir.conf"))
    write(d, "02-notes.txt", "not a network configuration")
    write(d, "03-old.conf.bak", PTP_CONF)
    write(d, ".idbroker-conflist.tmp.4242", LIST_Y)  # left by a run killed between write and rename
    write(d, "10-real.conflist", LIST_Y)
    keep = {n: read(os.path.join(d, n)) for n in ("02-notes.txt", "03-old.conf.bak")}
    equal(runtime_pick(d), "10-real.conflist", "the runtime's file is 10-real.conflist")
    broker_sees_missing(br, d, "10-real.conflist")
    e.run()
    equal(load(os.path.join(d, "10-real.conflist")), dict(LIST_Y, plugins=LIST_Y["plugins"] + [IDB]),
          "idbroker appended to 10-real.conflist")
    equal({n: read(os.path.join(d, n)) for n in keep}, keep, ".txt and .bak untouched")
    check(os.path.isdir(os.path.join(d, "01-dir.conf")) and not os.listdir(os.path.join(d, "01-dir.conf")),
          "a directory named *.conf is skipped")
    check(not [n for n in os.listdir(d) if n.startswith(".idbroker")], "the stale temporary is removed")
    broker_sees_chained(br, "10-real.conflist")


def case_untouched(e):
    """Not JSON, not a network configuration, or nothing to chain after: logged, left as it is."""
    d = e.netdir
    cases = [
        ("10-torn.conf", '{"cniVersion": "0.4.0", "type": "bridge",', "not JSON"),
        ("10-torn.conflist", '{"plugins": [', "not JSON"),
        ("10-two.conf", '{"type": "bridge", "name": "a"} {"type": "ptp", "name": "b"}', "not one JSON value"),
        ("10-array.json", "[1, 2]", "not a JSON object"),
        ("10-notype.conf", json.dumps({"cniVersion": "0.4.0", "name": "x"}), "neither"),
        ("10-single.conflist", json.dumps(PTP_CONF), ".conflist without a plugins array"),
        ("10-empty.conflist", json.dumps(dict(LIST_Y, plugins=[])), "empty plugins array"),
        ("10-alone.conf", json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "idbroker"}), "idbroker alone"),
        ("10-badname.conf", json.dumps(dict(PTP_CONF, name=7)), "not a string"),
    ]
    # A FIFO first (reading it would block): skipped, as the broker's watch does.
    clear(d)
    os.mkfifo(os.path.join(d, "05-fifo.conf"))
    write(d, "20-ok.conflist", LIST_Y)
    before = snapshot(d)
    err = e.run()
    equal(snapshot(d), before, "05-fifo.conf (a FIFO): nothing changed, the script did not block")
    check("not a regular file" in err, "... and the reason is logged: %r" % err.strip()[-200:])
    for name, text, why in cases:
        clear(d)
        write(d, name, text)
        write(d, "20-ok.conflist", LIST_Y)  # after it: not the runtime's file, not to be changed either
        before = snapshot(d)
        err = e.run()
        equal(snapshot(d), before, "%s (%s): nothing changed" % (name, why))
        check(why in err and name in err, "... and the reason is logged: %r" % err.strip()[-200:])


def case_never_removes(e):
    """idbroker already chained (anywhere, with any configuration): left as it is, whatever the new
    run's plugin configuration."""
    d = e.netdir
    clear(d)
    mid = dict(LIST_Y, plugins=[LIST_Y["plugins"][0], {"type": "idbroker", "logLevel": "debug"}, LIST_Y["plugins"][1]])
    write(d, "10-y.conflist", mid)
    before = snapshot(d)
    e.run(IDBROKER_CNI_PLUGIN=json.dumps({"type": "idbroker", "logLevel": "info"}))
    equal(snapshot(d), before, "idbroker already in the list: not moved, not replaced, not added again")


def case_custom_plugin(e):
    d = e.netdir
    clear(d)
    write(d, "10-bridge.conf", BRIDGE_CONF)
    plugin = {"type": "idbroker", "brokerSocket": "/run/idbroker/idbrokerd.sock", "logLevel": "info"}
    e.run(IDBROKER_CNI_PLUGIN=json.dumps(plugin))
    equal(load(os.path.join(d, "10-bridge.conflist")), converted(BRIDGE_CONF, plugin),
          "IDBROKER_CNI_PLUGIN is what is chained on conversion")
    single = {k: v for k, v in BRIDGE_CONF.items() if k != "cniVersion"}
    clear(d)
    write(d, "10-bridge.conf", single)
    e.run()
    equal(load(os.path.join(d, "10-bridge.conflist")), converted(single),
          "no cniVersion in the .conf: none in the list either (the runtime's default applies to both)")


def case_guard(e):
    """Step 3: `idbroker --guard` is given the runtime's file once it chains idbroker (the plugin takes
    the entry: tests/unit/test-cni-conf.c, test_k8s_deploy.py), at every run; a failure fails a
    one-shot run and is logged in watch mode; IDBROKER_CNI_GUARD=0 skips it; with no file chaining
    idbroker there is nothing to install yet."""
    d = e.netdir
    clear(d)
    e.guard_calls()
    plugin = {"type": "idbroker", "brokerPort": 2600, "logLevel": "info"}
    write(d, "10-y.conflist", LIST_Y)
    e.run(IDBROKER_CNI_PLUGIN=json.dumps(plugin))
    want = dict(LIST_Y, plugins=LIST_Y["plugins"] + [plugin])
    equal(e.guard_calls(), [want], "guard: given the runtime's file, with idbroker chained")
    e.run(IDBROKER_CNI_PLUGIN=json.dumps(IDB))
    equal(e.guard_calls(), [want], "guard: a second run gives it again (the plugin keeps current tables as they are)")
    e.run(IDBROKER_CNI_GUARD="0")
    equal(e.guard_calls(), [], "guard: IDBROKER_CNI_GUARD=0 skips it")
    clear(d)
    write(d, "10-y.conflist", LIST_Y)

    rc, err = e.run_rc(FAKE_GUARD_RC="1")
    equal(rc, 1, "guard: nftables cannot be programmed -> the one-shot run fails (the init container restarts)")
    check("could not install idbroker's nftables tables: nftables says no" in err,
          "... and says why: %r" % err.strip()[-200:])
    e.guard_calls()

    clear(d)
    write(d, "10-x.txt", LIST_Y)
    rc, err = e.run_rc()
    check(rc == 0 and e.guard_calls() == [], "guard: no network configuration yet -> nothing to install, exit 0")
    write(d, "10-y.conflist", dict(LIST_Y, plugins=[]))
    rc, err = e.run_rc()
    check(rc == 0 and e.guard_calls() == [] and "no idbroker entry" in err,
          "guard: a file idbroker could not be chained into -> nothing installed, said, exit 0 (%r)" % err.strip()[-200:])

    # Watch mode: a failing guard is logged once and retried every round; the chaining goes on.
    clear(d)
    write(d, "10-y.conflist", LIST_Y)
    proc = subprocess.Popen(["/bin/sh", SCRIPT], env=dict(e.env, IDBROKER_CNI_WATCH="1", FAKE_GUARD_RC="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        K.wait_for(lambda: len(_peek(e)) >= 3, "[watch] guard tried again every round")
        equal([p.get("type") for p in (load(os.path.join(d, "10-y.conflist")) or {}).get("plugins", [])],
              ["bridge", "portmap", "idbroker"], "[watch] a failing guard does not stop the chaining")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    equal(err.count("could not install idbroker's nftables tables"), 1,
          "[watch] the failure is logged once, not every round")
    e.guard_calls()


def _peek(e):
    try:
        with open(e.guard_log) as f:
            return [line for line in f if line.strip()]
    except FileNotFoundError:
        return []


def case_watch(br, e):
    """Watch mode: the primary writes its single-plugin file again (new content, no idbroker) and it is
    converted again, every time."""
    d = e.netdir
    for ext in (".conf", ".json"):
        clear(d)
        src, out = "10-bridge" + ext, "10-bridge.conflist"
        write(d, src, BRIDGE_CONF)
        proc = subprocess.Popen(["/bin/sh", SCRIPT], env=dict(e.env, IDBROKER_CNI_WATCH="1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            K.wait_for(lambda: load(os.path.join(d, out)) == converted(BRIDGE_CONF)
                       and not os.path.exists(os.path.join(d, src)), "[watch %s] converted" % ext)
            broker_sees_chained(br, out)
            for mtu in (1400, 1300):
                new = dict(BRIDGE_CONF, mtu=mtu)
                write(d, src, new)
                K.wait_for(lambda: load(os.path.join(d, out)) == converted(new)
                           and not os.path.exists(os.path.join(d, src)),
                           "[watch %s] the primary rewrote %s (mtu %d): converted again, its new content kept"
                           % (ext, src, mtu))
                broker_sees_chained(br, out)
            # The primary rewrites a conflist in place, without idbroker: appended again.
            write(d, out, {"cniVersion": "0.4.0", "name": "bridge-net", "plugins": [dict(BRIDGE_CONF, mtu=1200)]})
            K.wait_for(lambda: [p.get("type") for p in (load(os.path.join(d, out)) or {}).get("plugins", [])]
                       == ["bridge", "idbroker"], "[watch %s] a rewritten conflist gets idbroker back" % ext)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        check(not [n for n in os.listdir(d) if n.startswith(".idbroker")], "[watch %s] no temporary left" % ext)


def main():
    if not shutil.which("jq"):
        print("SKIP: jq is not installed (the install step needs it)")
        sys.exit(77)
    root = tempfile.mkdtemp(prefix="idb-icni-net-")
    netdir = os.path.join(root, "net.d")
    os.makedirs(netdir)
    e = Env(netdir)
    try:
        with Broker("", conf={"cni": {"confDir": netdir}}) as br:
            case_conf_single(br, e, "/bin/sh")
            case_conf_single(br, e, "bash --posix")
            case_order(br, e)
            case_json(br, e)
            case_hidden(br, e)
            case_ignored(br, e)
            case_untouched(e)
            case_never_removes(e)
            case_custom_plugin(e)
            case_guard(e)
            case_watch(br, e)
    finally:
        e.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
