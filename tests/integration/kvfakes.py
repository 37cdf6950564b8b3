# SPDX-License-Identifier: Apache-2.0
"""Starts the keyvault provider's fakes for a test: a test CA made now, tests/fixtures/fake-entra.py and
tests/fixtures/fake-keyvault.py on 127.0.0.1 over TLS, and a client for their control endpoints.
Use as a context manager; close() stops both and leaves the directory to the caller.
"""
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request

SOURCE = os.path.abspath(os.environ.get("IDB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../..")))
FIXTURES = os.path.join(SOURCE, "tests", "fixtures")
sys.path.insert(0, FIXTURES)

import kvpki  # noqa: E402


class Fakes:
    def __init__(self, directory, vault_jwks=()):
        self.dir = directory
        self.procs = []
        self.ca_key, self.ca_cert, self.ca_file = kvpki.make_ca(directory)
        self.cert, self.key = kvpki.make_server(directory, self.ca_key, self.ca_cert)
        self.ssl = ssl.create_default_context(cafile=self.ca_file)
        self.entra_jwks = os.path.join(directory, "entra-jwks.json")
        self.entra_port = self._start("fake-entra.py", "entra", ["--jwks-out", self.entra_jwks])
        args = []
        for j in list(vault_jwks) + [self.entra_jwks]:
            args += ["--jwks", j]
        self.vault_port = self._start("fake-keyvault.py", "vault", args)
        self.entra_url = "https://127.0.0.1:%d" % self.entra_port
        self.vault_url = "https://127.0.0.1:%d" % self.vault_port

    def _start(self, script, name, extra):
        port_file = os.path.join(self.dir, name + ".port")
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        p = subprocess.Popen(["/usr/bin/python3", os.path.join(FIXTURES, script), "--cert", self.cert, "--key",
                              self.key, "--port-file", port_file] + extra, stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        deadline = time.time() + 30
        while time.time() < deadline:
            if p.poll() is not None:
                raise RuntimeError("%s exited: %s" % (script, self.log(name)))
            if os.path.exists(port_file):
                with open(port_file) as f:
                    return int(f.read())
            time.sleep(0.05)
        raise RuntimeError("%s did not start" % script)

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _call(self, base, path, obj=None):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.ssl, timeout=30) as r:
            return json.loads(r.read())

    def entra(self, path, obj=None):
        return self._call(self.entra_url, path, obj)

    def vault(self, path, obj=None):
        return self._call(self.vault_url, path, obj)

    def set_secret(self, name, value, content_type=None):
        obj = {"name": name, "value": value}
        if content_type:
            obj["contentType"] = content_type
        return self.vault("/_control/secret", obj)

    def register_app(self, tenant, client_id, secrets=(), certs=()):
        self.entra("/_control/app", {"tenant": tenant, "client_id": client_id, "secrets": list(secrets),
                                     "certs": [kvpki.pem_cert(c).decode() for c in certs]})

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
