"""Short scheduler slices (`SuFcgiShortSlices`, lighttpd `sufcgi.short-slices`;
src/core/latency.rs): the server's request threads and every worker that is
not CPU-bound run with the kernel's shortest fair-scheduler slice, so that
when they wake they preempt another owner's CPU-bound workers instead of
waiting out their slice; a worker that burns CPU is given the kernel's
default slice back, and the short one again once it calms down. What this
buys is measured by `make bench` (BENCHMARKS.md "Neighbour"); these tests
check, on the real kernel, who has which slice (`sched_getattr`), and make
no timing assertion (the waits are generous upper bounds).

Linux 6.12+ only (older kernels ignore the slice and report none: skipped).
Servers: Apache event and prefork (the slice is set in child_init, before
the MPM starts its threads), lighttpd. User sufcgi-sl-a (uid 2680, or the
next free one). App: tests/apps/cg_app.py (flup, threaded).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

import harness
from harness import Vhost, mkdir, put, put_app, wait_for

SHORT_NS = 100_000          # core::latency::SHORT_SLICE_NS
HOST = "a.sl.test"
ADMIN = "admin.sl.test"
APACHE_PAGE = "<Location /sufcgi-status>\n  SetHandler sufcgi-status\n</Location>"
LIGHTTPD_PAGE = '$HTTP["url"] =~ "^/sufcgi-status" {\n  sufcgi.status = "enable"\n}'
DEFAULT_NS = harness.sched_slice_ns(os.getpid()) or 0

pytestmark = pytest.mark.skipif(DEFAULT_NS == 0, reason="this kernel has no custom scheduler slices (Linux < 6.12)")


@pytest.fixture(scope="module")
def owner():
    u = harness.ensure_user("sufcgi-sl-a", 2680)
    harness.kill_pids(harness.processes_of_uids([u.uid]))
    for name in ("app", "burn"):
        d = mkdir(u.www / name, u.ids)
        put_app(d / "cg_app.py", "cg_app.py", u.ids)
        # One worker: the burning request is served by the worker the test watches.
        put(d / ".htaccess", "SuFcgiApp cg_app.py\nSuFcgiMaxWorkers 1\n", u.ids)
    yield u
    harness.kill_pids(harness.processes_of_uids([u.uid]))
    for name in ("app", "burn"):
        shutil.rmtree(u.www / name, ignore_errors=True)


@pytest.fixture(scope="module")
def admin_root():
    """The host's status page's vhost (the owner's has an .htaccess per app)."""
    d = Path(tempfile.mkdtemp(prefix="sufcgi-sl-admin-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def server(kind: str, u, admin: Path, extra: str = "") -> harness.Server:
    vh = [Vhost(ADMIN, admin, allow_override="None"), Vhost(HOST, u.www)]
    if kind == "lighttpd":
        return harness.Lighttpd(vhosts=vh, extra=LIGHTTPD_PAGE + "\n" + harness.apache_host_config_to_lighttpd(extra))
    return harness.Apache(mpm=kind, vhosts=vh, extra=APACHE_PAGE + "\n" + extra)


def slices_said(srv) -> str:
    """What the status page says of the slices in force."""
    r = srv.get("/sufcgi-status?json", host=ADMIN)
    assert r.status == 200, f"status page: {r}"
    return r.json()["isolation"]["slices"]


@pytest.fixture(params=["event", "prefork", "lighttpd"])
def kind(request, sufcgi_module):
    return request.param


def slices(pid: int) -> dict[int, int | None]:
    """Every thread of `pid` and its slice."""
    try:
        return {t: harness.sched_slice_ns(t) for t in (int(x) for x in os.listdir(f"/proc/{pid}/task"))}
    except FileNotFoundError:
        return {}


def all_have(pid: int, ns: int) -> bool:
    s = {v for v in slices(pid).values() if v is not None}
    return s == {ns}


def worker_pid(srv, path: str) -> int:
    r = srv.get(path, host=HOST, timeout=30)
    assert r.status == 200, f"GET {path}: {r}\n{srv.log_tail(20)}"
    return r.json()["pid"]


def test_server_threads_and_an_idle_worker_have_short_slices_a_burning_worker_the_default(kind, owner, admin_root):
    srv = server(kind, owner, admin_root)
    flag = Path(tempfile.mkdtemp(prefix="sufcgi-sl-")) / "stop"
    flag.parent.chmod(0o755)
    srv.start()
    try:
        for p in srv.child_pids():
            assert all_have(p, SHORT_NS), f"server process {p}'s threads: {slices(p)}"
        idle = worker_pid(srv, "/app/")
        burner = worker_pid(srv, "/burn/")
        assert all_have(idle, SHORT_NS) and all_have(burner, SHORT_NS), \
            f"workers start with the short slice: {slices(idle)} {slices(burner)}"
        answer = {}
        t = threading.Thread(target=lambda: answer.update(r=srv.get(f"/burn/burn?s=60&until={flag}", host=HOST, timeout=90)))
        t.start()
        try:
            wait_for(lambda: all_have(burner, DEFAULT_NS), 30, "the burning worker to get the default slice")
            assert all_have(idle, SHORT_NS), f"the idle worker keeps its short slice: {slices(idle)}"
            for p in srv.child_pids():
                assert all_have(p, SHORT_NS), f"server process {p}'s threads: {slices(p)}"
        finally:
            flag.touch()
            t.join(90)
        assert answer["r"].status == 200, answer
        wait_for(lambda: all_have(burner, SHORT_NS), 30, "the calmed-down worker to get the short slice back")
        assert slices_said(srv).startswith("short for the server"), slices_said(srv)
    finally:
        srv.stop()
        srv.cleanup()
        shutil.rmtree(flag.parent, ignore_errors=True)


def test_short_slices_off_leaves_the_kernels_default(kind, owner, admin_root):
    srv = server(kind, owner, admin_root, "SuFcgiShortSlices off")
    srv.start()
    try:
        for p in srv.child_pids():
            assert all_have(p, DEFAULT_NS), f"server process {p}'s threads: {slices(p)}"
        w = worker_pid(srv, "/app/")
        assert all_have(w, DEFAULT_NS), f"worker {w}'s threads: {slices(w)}"
        assert "SuFcgiShortSlices off" in slices_said(srv), slices_said(srv)
    finally:
        srv.stop()
        srv.cleanup()
