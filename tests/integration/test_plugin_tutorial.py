# SPDX-License-Identifier: Apache-2.0
"""The plugin tutorial (docs/plugins.md) works as written (issue 9).

1. `cmake --install` of the build into a temporary root (the "installed" header and idbroker-provider.pc);
   json-c's development files are linked into that root too, as a sysroot has them.
2. A copy of docs/examples/hello-provider/ is built with its own Makefile, out of tree, with
   PKG_CONFIG_PATH / PKG_CONFIG_SYSROOT_DIR pointing into the root and nothing of the source tree;
   `make install DESTDIR=...` puts hello.so under the plugindir that pkg-config names.
3. The broker's loader (build/tools/mint-token) loads it and it issues; a refused audience and a bad
   configuration fail as the tutorial says.
4. The real idbrokerd loads it next to mock, and a pod bound to an identity annotated
   idbroker.io/provider: hello gets the tutorial's token over HTTP, with the greeting annotation; a refused
   audience reaches the pod as IMDS' 400 with the provider's error body."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idbtest import BUILD, SOURCE, Broker, binding_yaml, check, equal, pod_yaml, run_main  # noqa: E402

MINT = os.path.join(BUILD, "tools", "mint-token")
EXAMPLE = os.path.join(SOURCE, "docs", "examples", "hello-provider")

IDENTITY = """apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: id-hello
  namespace: default
  annotations:
    idbroker.io/provider: hello
    hello.example.com/greeting: howdy
spec:
  type: 0
  clientID: 00000000-0000-0000-0000-0000000000e1
---
"""


def run(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 240)
    return subprocess.run(argv, **kw)


def main():
    for tool in ("make", "cc", "pkg-config"):
        if not shutil.which(tool):
            print("SKIP: %s not found" % tool)
            return
    tmp = tempfile.mkdtemp(prefix="idb-tutorial-")
    try:
        tutorial(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tutorial(tmp):
    root = os.path.join(tmp, "root")
    p = run(["cmake", "--install", BUILD], env=dict(os.environ, DESTDIR=root))
    check(p.returncode == 0, "cmake --install into a temporary root" + ("" if p.returncode == 0 else p.stderr[-500:]))
    pcdir = None
    for d, _, files in os.walk(root):
        if "idbroker-provider.pc" in files:
            pcdir = d
    check(pcdir is not None, "idbroker-provider.pc is installed")
    os.makedirs(os.path.join(root, "usr", "include"), exist_ok=True)
    os.symlink("/usr/include/json-c", os.path.join(root, "usr", "include", "json-c"))

    src = os.path.join(tmp, "hello-provider")
    shutil.copytree(EXAMPLE, src)
    for f in os.listdir(src):
        check(f in ("hello.c", "Makefile"), "the example is hello.c and its Makefile only (%s)" % f)
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir + ":/usr/lib/x86_64-linux-gnu/pkgconfig:/usr/share/pkgconfig",
               PKG_CONFIG_SYSROOT_DIR=root, PKG_CONFIG_LIBDIR="")
    p = run(["make", "-C", src], env=env)
    check(p.returncode == 0, "make builds hello.so out of tree (-Wall -Wextra -Wpedantic -Werror, -z defs)"
          + ("" if p.returncode == 0 else ": " + (p.stdout + p.stderr)[-1500:]))
    check(("-I" + os.path.join(root, "usr")) in p.stdout, "... with the installed header's include path")
    stage = os.path.join(tmp, "stage")
    p = run(["make", "-C", src, "install", "DESTDIR=" + stage], env=env)
    plugindir = run(["pkg-config", "--variable=plugindir", "idbroker-provider"], env=env).stdout.strip()
    installed = [os.path.join(d, f) for d, _, fs in os.walk(stage) for f in fs]
    check(p.returncode == 0 and len(installed) == 1 and installed[0].endswith("/idbroker/providers/hello.so")
          and plugindir.rstrip("/").endswith("/idbroker/providers"),
          "make install puts hello.so in the plugindir of idbroker-provider.pc (%s)" % installed)
    p = run(["nm", "-D", "--defined-only", os.path.join(src, "hello.so")])
    syms = [l.split()[-1] for l in p.stdout.splitlines() if not l.split()[-1].startswith("_")]
    equal(syms, ["idb_plugin_v1"], "the only exported symbol is idb_plugin_v1")

    plugins = os.path.join(tmp, "plugins")
    os.mkdir(plugins)
    os.chmod(plugins, 0o755)
    shutil.copy(os.path.join(src, "hello.so"), os.path.join(plugins, "hello.so"))
    os.chmod(os.path.join(plugins, "hello.so"), 0o755)
    conf = json.dumps({"audiences": ["https://vault.azure.net"], "lifetimeSeconds": 300})
    p = run([MINT, "--identity", "team-a/reader", plugins, "hello", conf, "https://vault.azure.net"])
    equal((p.returncode, p.stdout.strip()), (0, "hello.team-a.reader.hello"),
          "the broker's loader loads hello.so and it issues the tutorial's token")
    check("[provider:hello] ready: lifetime 300s, 1 audience(s)" in p.stderr, "... and logs its init line")
    p = run([MINT, "--identity", "team-a/reader", "--annotation", "hello.example.com/greeting=hi", plugins, "hello",
             conf, "https://vault.azure.net"])
    equal(p.stdout.strip(), "hello.team-a.reader.hi", "the identity's greeting annotation is used")
    p = run([MINT, plugins, "hello", conf, "https://storage.azure.com"])
    check(p.returncode == 1, "an audience not in the list is refused (%s)" % p.stderr.strip().splitlines()[-1:])
    p = run([MINT, plugins, "hello", '{"lifetime": 5}', "https://vault.azure.net"])
    check(p.returncode == 1 and "unknown key 'lifetime'" in p.stderr, "a bad key fails init, and the log names it")

    manifests = IDENTITY + binding_yaml("b-hello", "id-hello", "hello") + pod_yaml("pod-h", "hello")
    b = Broker(manifests, providers={"hello": {"audiences": ["https://vault.azure.net"]}}, start=False)
    try:
        shutil.copy(os.path.join(src, "hello.so"), os.path.join(b.plugins, "hello.so"))
        os.chmod(os.path.join(b.plugins, "hello.so"), 0o755)
        b.start()
        check("hello" in b.ctl("providers").stdout, "idbrokerd loads hello.so (idbrokerctl providers)")
        b.register("default", "pod-h", "127.0.0.2")
        st, _, body = b.token("https://vault.azure.net", source="127.0.0.2")
        j = json.loads(body)
        equal((st, j.get("access_token")), (200, "hello.default.id-hello.howdy"),
              "a pod bound to an identity served by hello gets its token over HTTP")
        st, _, body = b.token("https://storage.azure.com", source="127.0.0.2")
        equal((st, json.loads(body).get("error")), (400, "invalid_resource"),
              "a refused audience reaches the pod as the provider's 400")
    finally:
        b.close()


if __name__ == "__main__":
    run_main(main)
