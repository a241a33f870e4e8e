"""The build's own tools, against inputs written by hand (no server needed).

packaging/apt-deb-src.py: the deb-src lines the build fetches lighttpd's source package
through are the machine's own apt sources (a mirror or proxy a host configured), in
both formats apt reads.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import harness

SCRIPT = harness.REPO / "packaging" / "apt-deb-src.py"


def run(etc: Path) -> subprocess.CompletedProcess:
    return subprocess.run([harness.PYTHON, str(SCRIPT), str(etc)], capture_output=True, text=True)


def test_deb_src_lines_come_from_the_machines_own_sources(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# the host's mirror\n"
        "deb [signed-by=/etc/apt/keyrings/m.gpg] http://mirror.example.net/debian bookworm main contrib\n"
        "deb-src http://mirror.example.net/debian bookworm main\n"
        "   # deb http://commented.example/debian bookworm main\n")
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\n"
        "# a comment inside a stanza\n"
        "URIs: http://proxy.example:3142/debian http://deb2.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb deb-src\n"
        "URIs: http://sec.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main non-free-firmware\n"
        "Architectures: amd64\n"
        "\n"
        "Enabled: no\n"
        "Types: deb\n"
        "URIs: http://off.example/debian\n"
        "Suites: bookworm\n"
        "Components: main\n")
    (parts / "vendor.list.disabled-by-farm").write_text("deb http://disabled.example/apt x main\n")
    res = run(tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "deb-src [signed-by=/etc/apt/keyrings/m.gpg] http://mirror.example.net/debian bookworm main contrib",
        "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://proxy.example:3142/debian bookworm main",
        "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://proxy.example:3142/debian bookworm-updates main",
        "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb2.example/debian bookworm main",
        "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb2.example/debian bookworm-updates main",
        "deb-src [arch=amd64] http://sec.example/debian-security bookworm-security main non-free-firmware",
    ]


def test_no_deb_source_at_all_is_a_clear_error(tmp_path):
    res = run(tmp_path)
    assert res.returncode == 1 and "no 'deb' source configured" in res.stderr
