# SPDX-License-Identifier: Apache-2.0
"""Every binary explains itself (issue 9): `--help` exits 0 with a usage text on stdout, `--version`
prints the project's version, and the CNI plugin run by a person (no CNI_COMMAND) says what it is on
stderr while still printing a CNI error object on stdout for a runtime."""
import json
import os
import re
import subprocess
import sys

BUILD = os.environ.get("IDB_BUILD_DIR", "build/debug")
SOURCE = os.environ.get("IDB_SOURCE_DIR", ".")
failed = 0


def check(cond, what):
    global failed
    print("%s - %s" % ("ok  " if cond else "FAIL", what), flush=True)
    if not cond:
        failed += 1


def run(argv, env=None):
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30,
                          env=env if env is not None else {"PATH": "/usr/bin:/bin"})


def main():
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        version = re.search(r"project\(idbroker VERSION ([0-9.]+)", f.read()).group(1)
    bins = {"idbrokerd": os.path.join(BUILD, "idbrokerd"), "idbrokerctl": os.path.join(BUILD, "idbrokerctl"),
            "idbroker (CNI)": os.path.join(BUILD, "cni", "idbroker")}
    for name, path in bins.items():
        p = run([path, "--help"])
        check(p.returncode == 0 and p.stdout.startswith("Usage:") and len(p.stdout.splitlines()) > 3,
              "%s --help: exit 0 and a usage text on stdout (%d lines)" % (name, len(p.stdout.splitlines())))
        p = run([path, "--version"])
        check(p.returncode == 0 and version in p.stdout, "%s --version prints %s (%r)" % (name, version,
                                                                                         p.stdout.strip()[:80]))
    for cmd in ("status", "pods", "explain", "token", "register"):
        p = run([bins["idbrokerctl"], cmd, "--help"])
        check(p.returncode == 0 and "Usage" in p.stdout, "idbrokerctl %s --help" % cmd)

    p = run([bins["idbroker (CNI)"]])
    check(p.returncode == 1 and json.loads(p.stdout).get("code") == 4,
          "CNI plugin without CNI_COMMAND: the CNI error object for a runtime on stdout")
    check("CNI plugin" in p.stderr and "--help" in p.stderr, "... and a hint for a person on stderr")
    p = run([bins["idbroker (CNI)"], "--bogus"])
    check(p.returncode == 2 and "Usage:" in p.stderr, "CNI plugin with an unknown argument: usage on stderr, exit 2")
    print("%s" % ("FAILED" if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
