"""The build's own tools, against inputs written by hand (no server needed).

packaging/apt-deb-src.py: the deb-src lines the build fetches lighttpd's source package
through are the machine's own apt sources (a mirror or proxy a host configured), in
both formats apt reads.

The fuzzing toolchain: cargo-fuzz's nightly-only sanitizer flags work on this stable
rustc with RUSTC_BOOTSTRAP=1 (what `make fuzz` and `make fuzz-smoke` rely on).
"""
from __future__ import annotations

import os
import shutil
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


def test_sanitizer_flags_cargo_fuzz_needs_work_on_stable_with_bootstrap(tmp_path):
    """cargo-fuzz builds with `-Zsanitizer=address` and sancov passes: nightly-only flags.
    On this machine's stable toolchain they work with RUSTC_BOOTSTRAP=1, as the Makefile's
    fuzz targets (and `make test`'s fuzz-smoke) run them; findings in SECURITY.md, Fuzzing.
    A toolchain check, not a property of the product (it was the security suite's p16)."""
    rustc = shutil.which("rustc") or str(Path.home() / ".cargo/bin/rustc")
    src = tmp_path / "t.rs"
    src.write_text("fn main() { let v = vec![1u8, 2, 3]; println!(\"{}\", v.iter().sum::<u8>()); }\n")
    flags = ["-Cpasses=sancov-module", "-Cllvm-args=-sanitizer-coverage-level=4",
             "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters", "-Zsanitizer=address",
             "-Cdebug-assertions", "-Cdebuginfo=1"]
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    res = subprocess.run([rustc, *flags, "-o", str(tmp_path / "t"), str(src)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "6"
    env.pop("RUSTC_BOOTSTRAP")
    res = subprocess.run([rustc, "-Zsanitizer=address", "-o", str(tmp_path / "u"), str(src)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0, "stable rustc accepted -Z flags without RUSTC_BOOTSTRAP"
