# SPDX-License-Identifier: Apache-2.0
"""Every configuration key is documented (issue 9).

The broker's keys come from the declarative table in broker/conf.c (`items[]`) and must each have a row
in docs/configuration.md (a table row whose first cell is the key in backticks; for an object such as
`cache`, a heading naming it) and appear in conf/idbrokerd.json, which lists every key with its default;
no documented row may name a key the table does not know. The CNI plugin's keys (cni-plugin/conf.c `conf_items[]`) must each have a row in
docs/cni.md. Run by ctest as integration/config_documented (no build needed)."""
import json
import os
import re
import sys

SOURCE = os.environ.get("IDB_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
failed = []


def check(cond, what):
    print("%s - %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        failed.append(what)


def read(rel):
    with open(os.path.join(SOURCE, rel)) as f:
        return f.read()


def table_block(text, start):
    """The C initialiser of the array declared at `start` (up to the closing '};')."""
    i = text.index(start)
    return text[i:text.index("};", i)]


def doc_rows(md):
    """First cells of markdown table rows that are one `key`."""
    return set(re.findall(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|", md, re.M))


def json_keys(obj, prefix=""):
    out = set()
    for k, v in obj.items():
        path = prefix + k
        out.add(path)
        if isinstance(v, dict) and path not in ("providers", "typeProviders"):
            out |= json_keys(v, path + ".")
    return out


def main():
    items = re.findall(r'\{"([A-Za-z0-9.]+)",\s*(IT_[A-Z_0-9]+)', table_block(read("broker/conf.c"),
                                                                                "conf_item items[]"))
    broker = [k for k, _ in items]
    check(len(broker) > 20, "broker/conf.c: %d keys in the table" % len(broker))
    md = read("docs/configuration.md")
    documented = doc_rows(md)
    headings = set(re.findall(r"^#+ .*?`([A-Za-z0-9_.]+)`", md, re.M))
    sample = json_keys(json.loads(read("conf/idbrokerd.json")))
    for key, kind in items:
        if kind == "IT_SECTION":
            check(key in headings, "docs/configuration.md has a section on '%s'" % key)
        else:
            check(key in documented, "docs/configuration.md documents '%s'" % key)
        check(key in sample, "conf/idbrokerd.json lists '%s'" % key)
    for key in sorted(documented - set(broker)):
        check(False, "docs/configuration.md documents '%s', which broker/conf.c does not know" % key)
    for key in sorted(sample - set(broker)):
        check(False, "conf/idbrokerd.json has '%s', which broker/conf.c does not know" % key)

    cni = re.findall(r'(?:PATH_ITEM\(|\{)"([A-Za-z0-9]+)"', table_block(read("cni-plugin/conf.c"),
                                                                       "conf_item conf_items[]"))
    check(len(cni) >= 8, "cni-plugin/conf.c: %d keys in the table" % len(cni))
    cni_doc = doc_rows(read("docs/cni.md"))
    for key in cni:
        check(key in cni_doc, "docs/cni.md documents the CNI plugin's key '%s'" % key)
    print("%d failed" % len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
