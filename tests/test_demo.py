"""`make demo` keeps working: tests/demo.py --check serves every htaccess example
through Apache and checks each answer (on a free port, not 8080)."""
from __future__ import annotations

import subprocess
import sys

import harness


def test_demo_serves_every_example():
    harness.require_module()
    port = harness.free_port()
    res = subprocess.run([sys.executable, str(harness.REPO / "tests" / "demo.py"), "--check", "--port", str(port)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"demo.py --check failed:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}"
    checked = [line for line in res.stdout.splitlines() if line.startswith("--- ")]
    assert len(checked) >= 9, f"fewer checks than expected:\n{res.stdout[-4000:]}"
