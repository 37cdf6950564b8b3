# SPDX-License-Identifier: Apache-2.0
"""The .deb (issue 9): CPack builds it from a release build configured for /usr, and it installs into a
clean root and runs.

1. Configure (once; later runs are incremental) a release build in $IDB_BUILD_DIR/deb-pkg with
   -DCMAKE_INSTALL_PREFIX=/usr -DBUILD_TESTING=OFF, build it, `cpack -G DEB`.
2. The package: name, version, shared-library Depends, a conffile for /etc/idbroker/idbrokerd.json, and
   the files: idbrokerd, idbrokerctl, the CNI plugin in /opt/cni/bin, the providers in the directory
   compiled into idbrokerd, the public headers and idbroker-provider.pc, the default configuration, the
   systemd unit, the documentation and the man pages.
3. `dpkg --root` into an empty root (an empty dpkg database; the shared libraries are Depends, so
   --force-depends), then, as root, the libraries the binaries need are copied in (ldd) and the root is
   chroot'ed into: `idbrokerd --version`, `--check-config` of the packaged configuration, and a real start
   on loopback loading the packaged mock provider from the compiled-in directory, answering /readyz.
   Without root: `dpkg -x` and the binaries run from the extracted tree.
4. `systemd-analyze verify` of the packaged unit, when systemd-analyze exists."""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idbtest import BUILD, SOURCE, check, equal, free_port, run_main  # noqa: E402

LIBDIR = "usr/lib/x86_64-linux-gnu"  # Debian's multiarch libdir on amd64 (GNUInstallDirs with /usr)


def run(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 280)
    return subprocess.run(argv, **kw)


def build_package():
    d = os.path.join(os.path.abspath(BUILD), "deb-pkg")
    if not os.path.exists(os.path.join(d, "CMakeCache.txt")):
        p = run(["cmake", "-S", SOURCE, "-B", d, "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_INSTALL_PREFIX=/usr",
                 "-DBUILD_TESTING=OFF"])
        check(p.returncode == 0, "configure a release build for /usr in %s %s" % (d, p.stderr[-500:]))
    p = run(["cmake", "--build", d, "-j2"])
    check(p.returncode == 0, "build it" + ("" if p.returncode == 0 else " (%s)" % (p.stdout + p.stderr)[-800:]))
    for old in glob.glob(os.path.join(d, "*.deb")):
        os.unlink(old)
    p = run(["cpack", "-G", "DEB"], cwd=d)
    debs = glob.glob(os.path.join(d, "*.deb"))
    check(p.returncode == 0 and len(debs) == 1,
          "cpack -G DEB makes one .deb" + ("" if p.returncode == 0 else " (%s)" % (p.stdout + p.stderr)[-500:]))
    return debs[0]


def field(info, name):
    m = re.search(r"^ %s: (.*)$" % name, info, re.M)
    return m.group(1) if m else None


def copy_libs(root, files):
    """Copies the shared libraries (and the loader) that `files` need into root, at the same paths."""
    p = run(["ldd"] + files)
    for lib in sorted(set(re.findall(r"(/\S+\.so[.\d]*)", p.stdout))):
        if lib.startswith(root):
            continue
        dst = root + lib
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            shutil.copy2(os.path.realpath(lib), dst)


def main():
    for tool in ("cpack", "dpkg", "dpkg-deb"):
        if not shutil.which(tool):
            print("SKIP: %s not found" % tool)
            return
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        version = re.search(r"project\(idbroker VERSION ([0-9.]+)", f.read()).group(1)
    deb = build_package()
    equal(os.path.basename(deb), "idbroker_%s_amd64.deb" % version, "the package's file name")

    info = run(["dpkg-deb", "-I", deb]).stdout
    equal((field(info, "Package"), field(info, "Version"), field(info, "Architecture")),
          ("idbroker", version, "amd64"), "control: package, version, architecture")
    deps = field(info, "Depends") or ""
    for lib in ("libc6", "libcurl4", "libjson-c5", "libmicrohttpd12", "libnftables1", "libssl3", "libyaml-0-2"):
        check(lib in deps, "Depends names %s (dpkg-shlibdeps)" % lib)
    conffiles = run(["dpkg-deb", "--info", deb, "conffiles"]).stdout.split()
    equal(conffiles, ["/etc/idbroker/idbrokerd.json"], "the configuration is a conffile")

    listing = run(["dpkg-deb", "-c", deb]).stdout
    files = set(re.sub(r"^\./", "/", l.split()[-1]) for l in listing.splitlines())
    want = ["/usr/sbin/idbrokerd", "/usr/sbin/idbrokerctl", "/opt/cni/bin/idbroker",
            "/%s/idbroker/providers/mock.so" % LIBDIR, "/%s/idbroker/providers/azure-msi.so" % LIBDIR,
            "/%s/idbroker/providers/keyvault.so" % LIBDIR, "/usr/include/idbroker/provider.h",
            "/usr/include/idbroker/errno.h", "/usr/include/idbroker/ctl-proto.h",
            "/%s/pkgconfig/idbroker-provider.pc" % LIBDIR, "/etc/idbroker/idbrokerd.json",
            "/etc/idbroker/identities/", "/usr/lib/systemd/system/idbrokerd.service",
            "/usr/lib/systemd/system/idbroker-guard.service",
            "/usr/share/doc/idbroker/operating.md", "/usr/share/doc/idbroker/configuration.md",
            "/usr/share/doc/idbroker/troubleshooting.md", "/usr/share/doc/idbroker/plugins.md",
            "/usr/share/doc/idbroker/examples/hello-provider/hello.c",
            "/usr/share/doc/idbroker/examples/hello-provider/Makefile", "/usr/share/doc/idbroker/compatibility.md",
            "/usr/share/man/man8/idbrokerd.8", "/usr/share/man/man8/idbrokerctl.8",
            "/usr/share/man/man8/idbroker-cni.8"]
    for f in want:
        check(f in files or f.rstrip("/") + "/" in files, "the package has %s" % f)

    tmp = tempfile.mkdtemp(prefix="idb-deb-")
    proc = None
    try:
        root = os.path.join(tmp, "root")
        is_root = os.geteuid() == 0
        if is_root:
            for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
                os.makedirs(os.path.join(root, d))
            open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
            p = run(["dpkg", "--root=" + root, "--force-depends", "-i", deb])
            check(p.returncode == 0, "dpkg --root=CLEAN_ROOT --force-depends -i the .deb"
                  + ("" if p.returncode == 0 else " (%s)" % p.stderr.strip()[-300:]))
            p = run(["dpkg", "--root=" + root, "-s", "idbroker"])
            check("Status: install ok installed" in p.stdout, "dpkg in the clean root: idbroker is installed")
        else:
            p = run(["dpkg", "-x", deb, root])
            check(p.returncode == 0, "dpkg -x the .deb into an empty directory (not root: no dpkg --root)")
        sbin = os.path.join(root, "usr/sbin")
        providers = os.path.join(root, LIBDIR, "idbroker/providers")
        with open(os.path.join(sbin, "idbrokerd"), "rb") as f:
            check(("/%s/idbroker/providers" % LIBDIR).encode() in f.read(),
                  "idbrokerd's compiled-in provider directory is where the package puts the providers")

        if is_root:
            copy_libs(root, [os.path.join(sbin, "idbrokerd"), os.path.join(sbin, "idbrokerctl"),
                             os.path.join(root, "opt/cni/bin/idbroker")] + glob.glob(providers + "/*.so"))
            prefix = ["chroot", root]
            bin_of = lambda p: p  # noqa: E731
        else:
            prefix = []
            bin_of = lambda p: root + p  # noqa: E731
        p = run(prefix + [bin_of("/usr/sbin/idbrokerd"), "--version"])
        check(p.returncode == 0 and p.stdout.startswith("idbrokerd %s" % version),
              "idbrokerd --version from the clean root%s: %s" % (" (chroot)" if is_root else "", p.stdout.strip()))
        for b in ("/usr/sbin/idbrokerctl", "/opt/cni/bin/idbroker"):
            p = run(prefix + [bin_of(b), "--version"])
            check(p.returncode == 0 and version in p.stdout, "%s --version: %s" % (b, p.stdout.strip()))
        if not is_root:
            return

        p = run(prefix + ["/usr/sbin/idbrokerd", "--check-config"])
        check(p.returncode == 0, "idbrokerd --check-config of the packaged /etc/idbroker/idbrokerd.json: %s"
              % (p.stdout + p.stderr).strip()[-300:])

        # A real start in the chroot, loopback only, with the packaged mock provider from the default
        # (compiled-in) provider directory.
        port, hport = free_port(), free_port()
        conf = {"nodeName": "deb-node", "listen": "127.0.0.1:%d" % port, "healthListen": "127.0.0.1:%d" % hport,
                "controlSocket": "/run/idbroker/idbrokerd.sock", "stateDir": "/var/lib/idbroker",
                "providers": {"mock": {}}, "typeProviders": {"0": "mock", "1": "mock", "2": "mock"}}
        with open(os.path.join(root, "etc/idbroker/test.json"), "w") as f:
            json.dump(conf, f)
        logf = open(os.path.join(tmp, "idbrokerd.log"), "wb")
        proc = subprocess.Popen(prefix + ["/usr/sbin/idbrokerd", "--config", "/etc/idbroker/test.json"],
                                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        ready = None
        for _ in range(200):
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % hport, timeout=2) as r:
                    ready = r.status
                    break
            except (OSError, socket.timeout):
                time.sleep(0.05)
        with open(os.path.join(tmp, "idbrokerd.log")) as f:
            log = f.read()
        check(ready == 200, "idbrokerd started in the chroot loads the packaged mock provider and is ready"
              + ("" if ready == 200 else " (%s)" % log[-500:].strip()))
        p = run(["chroot", root, "/usr/sbin/idbrokerctl", "providers"])
        check(p.returncode == 0 and "mock" in p.stdout, "idbrokerctl providers in the chroot lists mock")
        proc.terminate()
        equal(proc.wait(20), 0, "idbrokerd in the chroot stops cleanly on SIGTERM")
        proc = None

        # idbroker-guard.service's command, in a network namespace of its own: the packaged plugin
        # installs the tables from the packaged example conflist (the unit reads it on stdin).
        conflist = os.path.join(root, "usr/share/doc/idbroker/10-idbroker.conflist")
        with open(conflist) as f:
            p = subprocess.run(["unshare", "--net", "--", "chroot", root, "/opt/cni/bin/idbroker", "--guard"],
                               stdin=f, capture_output=True, text=True, timeout=30)
        check(p.returncode == 0 and "installed idbroker's nftables tables" in p.stderr,
              "idbroker-guard.service's command: the packaged plugin installs the tables from the example "
              "conflist (%s)" % p.stderr.strip()[-300:])

        if shutil.which("systemd-analyze"):
            # The units' programs live in the clean root: point them there and let systemd check the rest.
            d = os.path.join(tmp, "unit")
            os.makedirs(d)
            for name, needles in (("idbrokerd.service", ("ReadWritePaths=/var/lib/idbroker /run/idbroker",)),
                                  ("idbroker-guard.service", ("ExecStart=/opt/cni/bin/idbroker --guard",
                                                              "After=nftables.service"))):
                with open(os.path.join(root, "usr/lib/systemd/system", name)) as f:
                    unit = f.read()
                with open(os.path.join(d, name), "w") as f:
                    f.write(unit.replace("/usr/sbin/", root + "/usr/sbin/")
                            .replace("/opt/cni/bin/", root + "/opt/cni/bin/"))
                p = run(["systemd-analyze", "verify", os.path.join(d, name)])
                out = (p.stdout + p.stderr).strip()
                equal((p.returncode, out), (0, ""), "systemd-analyze verify of the packaged %s" % name)
                for opt in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                            "CapabilityBoundingSet=CAP_NET_ADMIN") + needles:
                    check(re.search(r"^%s$" % re.escape(opt), unit, re.M), "%s sets %s" % (name, opt))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
