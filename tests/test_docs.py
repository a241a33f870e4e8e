"""The README's directive reference stays in sync with what the module registers:
every directive httpd lists for mod_sufcgi.c (`apache2 -L`) has a row in the README's
host or customer table, and every directive named there is registered."""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import harness

README = harness.REPO / "README.md"


def registered_directives() -> set[str]:
    module = harness.require_module()
    with tempfile.TemporaryDirectory(prefix="sufcgi-docs-") as root:
        conf = Path(root) / "httpd.conf"
        (Path(root) / "logs").mkdir()
        conf.write_text(
            f"ServerRoot {root}\nServerName localhost\nErrorLog {root}/logs/error.log\n"
            f"LoadModule mpm_event_module {harness.MODULES_DIR}/mod_mpm_event.so\n"
            f"LoadModule sufcgi_module {module}\n")
        out = subprocess.run([harness.APACHE_BIN, "-f", str(conf), "-L"], capture_output=True, text=True, timeout=30)
    names = set(re.findall(r"^(\S+) \(mod_sufcgi\.c\)$", out.stdout, re.M))
    assert names, f"apache2 -L listed no mod_sufcgi.c directive:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
    return names


def documented_directives() -> set[str]:
    names = set()
    for line in README.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ")[0]
        for m in re.finditer(r"`((?:SuFcgi|php_)\w+)", first_cell):
            names.add(m.group(1))
    return names


def test_every_registered_directive_is_documented_and_vice_versa():
    reg, doc = registered_directives(), documented_directives()
    assert not reg - doc, f"registered but missing from README's tables: {sorted(reg - doc)}"
    assert not doc - reg, f"in README's tables but not registered: {sorted(doc - reg)}"


def test_every_ceiling_name_is_a_customer_directive():
    reg = registered_directives()
    text = README.read_text()
    section = text[text.index("`SuFcgiCeiling` names"):]
    table = section[section.index("\n|"):]
    table = table[:table.index("\n\n")]   # that table only
    names = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert names, "no ceiling table in README"
    missing = [n for n in names if f"SuFcgi{n}" not in reg]
    assert not missing, f"ceiling names that are no customer directive: {missing}"
