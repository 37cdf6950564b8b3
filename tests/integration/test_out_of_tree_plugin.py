#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A provider built out of tree, against the installed header and pkg-config file alone, loads.

Installs the build (IDB_BUILD_DIR) with `cmake --install` into a temporary DESTDIR, compiles a tiny
provider with `cc $(pkg-config --cflags idbroker-provider)` (PKG_CONFIG_PATH and
PKG_CONFIG_SYSROOT_DIR pointing into the temporary tree), and loads it with build/tools/mint-token,
i.e. the broker's own loader. One line per check; exits 1 on any failure; removes the temporary tree.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

BUILD = os.environ.get("IDB_BUILD_DIR", "build")
MINT = os.path.join(BUILD, "tools", "mint-token")

PROVIDER = r"""
/* A third-party provider: includes nothing of idbroker but the installed public header. */
#include <stdio.h>
#include <string.h>

#include <idbroker/provider.h>

static const struct idb_host_api *host;

static int oot_init(const struct idb_host_api *h, const char *conf, void **ret_state)
{
    if (h->size < offsetof(struct idb_host_api, issue_via) + sizeof(h->issue_via))
        return -22;
    host = h;
    host->log(IDB_LOG_INFO, "oot-demo", "init with %s", conf);
    *ret_state = NULL;
    return 0;
}

static int oot_issue(void *state, const struct idb_token_req *req, struct idb_token *ret)
{
    (void)state;
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "oot-token:%s:%s/%s", req->resource, req->identity_namespace,
                     req->identity_name);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return IDB_E_UPSTREAM_BAD_REPLY;
    ret->access_token = host->alloc((size_t)n + 1);
    if (!ret->access_token)
        return -12;
    memcpy(ret->access_token, buf, (size_t)n + 1);
    ret->expires_on = host->now_realtime() + 600;
    return 0;
}

static void oot_destroy(void *state)
{
    (void)state;
}

IDB_EXPORT const struct idb_provider idb_plugin_v1 = {
    .abi_major = IDB_PLUGIN_ABI_MAJOR,
    .abi_minor = IDB_PLUGIN_ABI_MINOR,
    .size = sizeof(struct idb_provider),
    .name = "oot-demo",
    .version = "0.0.1",
    .init = oot_init,
    .issue = oot_issue,
    .destroy = oot_destroy,
};
"""

failures = 0


def check(name, ok, detail=""):
    global failures
    print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""))
    if not ok:
        failures += 1
    return ok


def run(cmd, env=None, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, **kw)


def main():
    tmp = tempfile.mkdtemp(prefix="idb-oot-")
    try:
        test(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % failures)
    return 1 if failures else 0


def test(tmp):
    root = os.path.join(tmp, "root")
    env = dict(os.environ, DESTDIR=root)
    p = run(["cmake", "--install", BUILD], env=env)
    if not check("cmake --install into a temporary DESTDIR", p.returncode == 0, p.stderr.strip()[-2000:]):
        return
    pcs = glob.glob(os.path.join(root, "**", "pkgconfig", "idbroker-provider.pc"), recursive=True)
    headers = glob.glob(os.path.join(root, "**", "include", "idbroker", "provider.h"), recursive=True)
    if not check("idbroker-provider.pc and idbroker/provider.h are installed", len(pcs) == 1 and len(headers) == 1,
                 "%s %s" % (pcs, headers)):
        return

    penv = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]), PKG_CONFIG_SYSROOT_DIR=root,
                PKG_CONFIG_LIBDIR="")
    p = run(["pkg-config", "--cflags", "idbroker-provider"], env=penv)
    cflags = p.stdout.split()
    inc = os.path.dirname(os.path.dirname(headers[0]))
    check("pkg-config --cflags points at the installed headers", p.returncode == 0 and cflags == ["-I" + inc],
          "%r (rc %d, %s), want -I%s" % (p.stdout, p.returncode, p.stderr.strip(), inc))
    p = run(["pkg-config", "--variable=abi_major", "idbroker-provider"], env=penv)
    with open(headers[0], encoding="utf-8") as f:
        m = re.search(r"#define IDB_PLUGIN_ABI_MAJOR (\d+)", f.read())
    check("pkg-config abi_major matches the header", m and p.stdout.strip() == m.group(1),
          "%r vs %r" % (p.stdout, m and m.group(1)))
    p = run(["pkg-config", "--variable=plugindir", "idbroker-provider"], env=penv)
    check("pkg-config names the plugin directory", p.returncode == 0 and "/idbroker/providers" in p.stdout)

    src_dir = os.path.join(tmp, "src")
    os.mkdir(src_dir)
    src = os.path.join(src_dir, "oot-demo.c")
    with open(src, "w", encoding="utf-8") as f:
        f.write(PROVIDER)
    plugins = os.path.join(tmp, "plugins")
    os.mkdir(plugins, 0o755)
    os.chmod(plugins, 0o755)
    so = os.path.join(plugins, "oot-demo.so")
    p = run(["cc", "-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-shared", "-fPIC",
             "-fvisibility=hidden", *cflags, "-o", so, src])
    if not check("cc -shared -fPIC $(pkg-config --cflags idbroker-provider) builds the provider",
                 p.returncode == 0, p.stderr.strip()):
        return
    os.chmod(so, 0o755)
    if shutil.which("c++"):
        p = run(["c++", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", *cflags, "-x", "c++", "-"],
                input="#include <idbroker/provider.h>\nint main() { return IDB_PLUGIN_ABI_MAJOR - 1; }\n")
        check("the installed header compiles as C++", p.returncode == 0, p.stderr.strip())

    p = run(["nm", "-D", "--defined-only", so])
    syms = [line.split()[-1] for line in p.stdout.splitlines() if line.split()[1:2] != ["w"]]
    check("built with hidden visibility, its only exported symbol is idb_plugin_v1",
          p.returncode == 0 and [s for s in syms if not s.startswith("_")] == ["idb_plugin_v1"], str(syms))

    p = run([MINT, "--identity", "ns1/id1", plugins, "oot-demo", '{"x": 1}', "https://example.org"])
    check("the broker's loader loads it and it issues a token",
          p.returncode == 0 and p.stdout.strip() == "oot-token:https://example.org:ns1/id1",
          "rc %d stdout %r stderr %r" % (p.returncode, p.stdout, p.stderr))
    check("its log line carries the [provider:oot-demo] prefix", "[provider:oot-demo] init with" in p.stderr,
          p.stderr)

    # The same file under another name is refused: the name inside must match the file name.
    shutil.copy(so, os.path.join(plugins, "renamed.so"))
    os.chmod(os.path.join(plugins, "renamed.so"), 0o755)
    p = run([MINT, plugins, "renamed", "{}", "https://example.org"])
    check("a renamed copy is refused", p.returncode == 1 and "calls itself 'oot-demo'" in p.stderr, p.stderr)


if __name__ == "__main__":
    sys.exit(main())
