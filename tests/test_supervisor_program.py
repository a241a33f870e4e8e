"""The supervisor program: the module (or lighttpd plugin) forks from the root
parent and execs `sufcgi-supervisor` from beside itself, so the supervisor does
not keep the server's memory. A missing program, or one that is not root's alone,
is never run: the error log says why and the forked child runs the supervisor in
place (the same supervisor, bigger), so requests are served either way.

Each test runs on Apache (event MPM) and on lighttpd. The module is copied into a
directory of the test's own when the test needs the program missing or unsafe."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

import harness

HOST = "alice.test"
PROGRAM = harness.SUPERVISOR_PROGRAM


def supervisor_pids(server) -> list[int]:
    """Live supervisor pids, from their start lines (Apache: the module's
    info line; lighttpd: the keeper's notice)."""
    text = server.log_since(0)
    pids = [int(p) for p in re.findall(r"supervisor started, pid (\d+)", text)]
    return [p for p in pids if harness.pid_alive(p)]


def exe_and_maps(pid: int) -> tuple[str, str]:
    return os.readlink(f"/proc/{pid}/exe"), Path(f"/proc/{pid}/maps").read_text()


def serves(server):
    r = server.get("/app/", host=HOST)
    assert r.status == 200, f"{r}\n{server.log_tail(20)}"
    assert r.json()["app"] == "flup"


@pytest.fixture(params=("event", "lighttpd"))
def start(request, site, sufcgi_module, monkeypatch):
    """start(module_dir=None): a server with the test vhosts, loading the module
    from `module_dir` (a copy) when given."""
    started = []

    def run(module_dir: Path | None = None):
        if module_dir is not None:
            if request.param == "lighttpd":
                monkeypatch.setattr(harness, "LIGHTTPD_MODULE_PATH", module_dir / "mod_sufcgi.so")
            else:
                monkeypatch.setattr(harness, "MODULE_PATH", module_dir / "mod_sufcgi.so")
        s = harness.make_server(request.param, site.vhosts())
        started.append(s)
        s.start()
        return s

    yield run
    for s in started:
        s.stop()
        s.cleanup()


def module_copy(tmp_path: Path, kind: str, program: bytes | None, mode: int = 0o755) -> Path:
    """The module alone in a root-owned 0755 directory, with `program` beside it."""
    d = tmp_path / "modules"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    src = harness.LIGHTTPD_MODULE_PATH if kind == "lighttpd" else harness.MODULE_PATH
    shutil.copy(src, d / "mod_sufcgi.so")
    if program is not None:
        (d / PROGRAM).write_bytes(program)
        os.chmod(d / PROGRAM, mode)
    return d


def test_the_supervisor_execs_its_own_program(start):
    s = start()
    serves(s)
    pids = supervisor_pids(s)
    assert len(pids) == 1, pids
    exe, maps = exe_and_maps(pids[0])
    assert os.path.basename(exe) == PROGRAM, exe
    # Nothing of the server's image is mapped: neither its binary nor the module.
    assert "mod_sufcgi.so" not in maps and "apache2" not in maps and "/lighttpd\n" not in maps, maps
    # The program is the one beside the module the server loaded.
    module = harness.LIGHTTPD_MODULE_PATH if s.mpm == "lighttpd" else harness.MODULE_PATH
    assert Path(exe).read_bytes() == (module.parent / PROGRAM).read_bytes()
    assert "runs inside a copy of the server" not in s.log_since(0)


def test_without_the_program_the_supervisor_runs_in_place(start, tmp_path, request):
    kind = request.node.callspec.params["start"]
    s = start(module_copy(tmp_path, kind, program=None))
    serves(s)
    log = s.log_since(0)
    assert "runs inside a copy of the server" in log and PROGRAM in log, log[-2000:]
    pids = supervisor_pids(s)
    assert len(pids) == 1, pids
    exe, _ = exe_and_maps(pids[0])
    assert os.path.basename(exe) != PROGRAM, exe


@pytest.mark.parametrize("unsafe", ["group-writable", "not-root's"])
def test_an_unsafe_program_is_never_run(start, tmp_path, request, unsafe, site):
    kind = request.node.callspec.params["start"]
    if kind == "lighttpd" and unsafe == "not-root's":
        pytest.skip("the lighttpd harness copies the program (as root) into its own modules dir")
    marker = tmp_path / "ran"
    program = f"#!/bin/sh\ntouch {marker}\nexit 1\n".encode()
    d = module_copy(tmp_path, kind, program, mode=0o775 if unsafe == "group-writable" else 0o755)
    if unsafe == "not-root's":
        os.chown(d / PROGRAM, site.alice.uid, site.alice.gid)
    s = start(d)
    serves(s)
    assert not marker.exists(), "an unsafe supervisor program was run as root"
    log = s.log_since(0)
    assert "runs inside a copy of the server" in log, log[-2000:]
    assert re.search(rf"{re.escape(PROGRAM)} is not owned by root or is writable by others", log), log[-2000:]


def test_the_program_is_not_for_running_by_hand():
    """Started by hand it says what it is for; from another build (a package
    upgraded under a running server) it names both protocol versions."""
    import subprocess
    prog = harness.MODULE_PATH.parent / PROGRAM
    res = subprocess.run([str(prog)], capture_output=True, text=True, timeout=10)
    assert res.returncode == 2 and "not by hand" in res.stderr, res
    res = subprocess.run([str(prog), "--server-pid", str(os.getpid()), "--socket", "/nonexistent/s.sock",
                          "--scoreboard", "1,1", "--protocol", "250"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 1, res
    assert re.search(r"\[sufcgi:error\] .*speaks supervisor protocol \d+, the module 250", res.stderr), res.stderr
