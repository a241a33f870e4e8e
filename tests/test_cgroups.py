"""Per-owner cgroups (issue 15), on real cgroups: every process an owner's
workers start is in that owner's cgroup, the kernel holds the limits, and
stopping a worker (or the server, or killing the supervisor) stops
everything it started and leaves no cgroup. Also the fallback without
cgroups (RLIMIT_NPROC) and the Prometheus view of the status page.

On the machines CI runs on, cgroup v1 has the controllers (cpu, cpuacct,
memory, pids, freezer, one mount each) and v2 has none, so this is the v1
code path; the v2 one is unit-tested on a directory laid out like cgroupfs
(src/core/supervisor/cgroup_v2.rs). The harness itself checks after every
server stop that no `*sufcgi*` cgroup of that server is left.

One server per kind (Apache event MPM, lighttpd) for the shared tests, each
owner with its own user (uids picked free) and vhost; the fallback and the
server-stop tests start their own. Apps: tests/apps/cg_app.py.
Users sufcgi-cg-* (uids from 2600, or the next free ones).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

import harness
from harness import Vhost, mkdir, put, put_app, wait_for

LOCK_FILE = Path("/tmp/sufcgi-cgroup-tests.lock")
ADMIN = "admin.cg.test"
# Owners: a fork loop (SuFcgiOwnerMaxProcesses), a neighbour, an owner memory
# cap, a worker memory cap, stops and reloads, a killed supervisor; and the
# owners of the tests with servers of their own.
KEYS = ("a", "b", "m", "w", "s", "k", "f", "z")
OWNER_MAX_PROCESSES = 40
OWNER_MEMORY = "160M"
LIGHTTPD_HOST_PAGE = '$HTTP["url"] =~ "^/sufcgi-status" {\n  sufcgi.status = "enable"\n}'
APACHE_HOST_PAGES = ("<Location /sufcgi-status>\n  SetHandler sufcgi-status\n</Location>\n"
                     "<Location /sufcgi-metrics>\n  SetHandler sufcgi-metrics\n</Location>")


def host(key: str) -> str:
    return f"{key}.cg.test"


@pytest.fixture(scope="module")
def users():
    with harness.exclusive(LOCK_FILE, "the cgroup tests"):
        # Preferred uids 2600…; ensure_user takes the next free one where another account has it.
        us = {k: harness.ensure_user(f"sufcgi-cg-{k}", 2600 + i) for i, k in enumerate(KEYS)}
        harness.kill_pids(harness.processes_of_uids([u.uid for u in us.values()]))
        for u in us.values():
            for child in u.www.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            app_dir(u, "app", "SuFcgiApp cg_app.py\n")
        app_dir(us["w"], "app", "SuFcgiApp cg_app.py\nSuFcgiMemoryLimit 64M\n")
        app_dir(us["s"], "idle", "SuFcgiApp cg_app.py\nSuFcgiIdleTimeout 1\n")
        app_dir(us["s"], "rl", "SuFcgiApp cg_app.py\n")
        app_dir(us["b"], "metrics", None)
        put(us["b"].www / "metrics" / ".htaccess", "SetHandler sufcgi-metrics\n", us["b"].ids)
        yield us
        harness.kill_pids(harness.processes_of_uids([u.uid for u in us.values()]))


def app_dir(u: harness.User, name: str, htaccess: str | None) -> Path:
    d = mkdir(u.www / name, u.ids)
    if htaccess is not None:
        put_app(d / "cg_app.py", "cg_app.py", u.ids)
        put(d / ".htaccess", htaccess, u.ids)
    return d


def vhosts(us, admin_root: Path) -> list[Vhost]:
    extra = {"a": f"  SuFcgiOwnerMaxProcesses {OWNER_MAX_PROCESSES}", "m": f"  SuFcgiOwnerMemory {OWNER_MEMORY}"}
    return [Vhost(ADMIN, admin_root, allow_override="None")] + [Vhost(host(k), us[k].www, extra=extra.get(k, "")) for k in KEYS]


def make(kind: str, us, admin_root: Path, extra: str = "") -> harness.Server:
    if kind == "lighttpd":
        return harness.Lighttpd(vhosts=vhosts(us, admin_root), extra=LIGHTTPD_HOST_PAGE + "\n" + harness.apache_host_config_to_lighttpd(extra))
    return harness.Apache(mpm="event", vhosts=vhosts(us, admin_root), extra=APACHE_HOST_PAGES + "\n" + extra)


@pytest.fixture(scope="module", params=["event", "lighttpd"])
def cg(request, users, sufcgi_module):
    admin_root = Path(tempfile.mkdtemp(prefix="sufcgi-cg-admin-"))
    admin_root.chmod(0o755)
    srv = make(request.param, users, admin_root)
    srv.killed_supervisors = set()
    failed_before = request.session.testsfailed
    try:
        srv.start()
        yield srv, users
    finally:
        srv.stop()
        shutil.rmtree(admin_root, ignore_errors=True)
        crashes = [l for l in srv.crash_lines() if not any(f"pid {p} " in l + " " for p in srv.killed_supervisors)]
        if request.session.testsfailed == failed_before and not crashes:
            srv.cleanup()
        assert not crashes, "server processes crashed:\n" + "\n".join(crashes[:5])


def log_of(srv, mark: int = 0) -> str:
    return f"\n--- error log since mark ---\n{srv.log_since(mark)[-4000:]}"


def get_json(srv, key: str, path: str, timeout: float = 30) -> dict:
    r = srv.get(path, host=host(key), timeout=timeout)
    assert r.status == 200, f"GET {path} on {host(key)}: {r}{log_of(srv)}"
    return r.json()


def status(srv) -> dict:
    r = srv.get("/sufcgi-status?json", host=ADMIN)
    assert r.status == 200, f"status page: {r}{log_of(srv)}"
    return r.json()


def owner_of(st: dict, uid: int) -> dict:
    found = [o for o in st["owners"] if o["uid"] == uid]
    assert found, f"uid {uid} not among the status page's owners: {st['owners']}"
    return found[0]


def pools_of(st: dict, uid: int, directory: Path) -> list[dict]:
    return [p for p in st["pools"] if p["uid"] == uid and p["directory"].rstrip("/") == str(directory)]


def worker_group_re(srv, uid: int) -> re.Pattern:
    return re.compile(rf"/sufcgi/{re.escape(srv.cgroup_instance)}/owner-{uid}/worker-\d+\.\d+$")


def hierarchies(st: dict) -> list[str]:
    """The keys of /proc/PID/cgroup that must show the worker's own group (v1:
    every hierarchy but cpu's, which stops at the owner)."""
    iso = st["isolation"]
    if iso["hierarchy"] == "v2":
        return ["unified"]
    return [c for c in ("cpuacct", "memory", "pids", "freezer") if c in iso["controllers"]]


def gone(pids, timeout: float) -> list[int]:
    try:
        wait_for(lambda: not [p for p in pids if harness.pid_alive(p)], timeout, "processes to exit")
    except harness.HarnessError:
        pass
    return [p for p in pids if harness.pid_alive(p)]


def group_dirs(srv, rel: str) -> list[Path]:
    """A group's directory in every hierarchy (rel: `owner-U/worker-P.N`)."""
    return [d / rel for d in srv.cgroup_dirs() if (d / rel).is_dir()]


def rel_of(srv, cgroup_path: str) -> str:
    return cgroup_path.split(f"/sufcgi/{srv.cgroup_instance}/", 1)[1]


# ---------------------------------------------------------------- shared server

def test_workers_and_their_setsid_children_are_in_the_owners_cgroup(cg):
    srv, us = cg
    u = us["s"]
    st = status(srv)
    assert {"cpu", "memory", "pids"} <= set(st["isolation"]["controllers"]), \
        f"these machines have cpu, memory and pids controllers: {st['isolation']}{log_of(srv)}"
    assert srv.cgroup_dirs(), f"no …/sufcgi/{srv.cgroup_instance} cgroup directory{log_of(srv)}"
    j = get_json(srv, "s", "/app/spawn?n=2")
    assert len(j["children"]) == 2, j
    pat = worker_group_re(srv, u.uid)
    owner_pat = re.compile(rf"/sufcgi/{re.escape(srv.cgroup_instance)}/owner-{u.uid}$")
    for pid, cgs in [(j["pid"], j["cgroup"])] + [(int(p), c) for p, c in j["child_cgroups"].items()]:
        for h in hierarchies(st):
            assert pat.search(cgs.get(h, "")), f"pid {pid} is not in uid {u.uid}'s worker group in {h}: {cgs}"
        if st["isolation"]["hierarchy"] == "v1":
            assert owner_pat.search(cgs.get("cpu", "")), f"pid {pid} is not in uid {u.uid}'s cpu group: {cgs}"
    for child in j["children"]:
        assert os.getsid(child) == child, f"child {child} did not setsid()"
        assert os.getsid(child) != os.getsid(j["pid"])
    rel = rel_of(srv, j["cgroup"][hierarchies(st)[0]])
    dirs = group_dirs(srv, rel)
    assert len(dirs) == len(hierarchies(st)), f"{rel} is not in every hierarchy: {dirs}"
    for d in dirs:
        assert {j["pid"], *j["children"]} <= set(harness.cgroup_procs(d)), f"{d} does not list the worker and its children"
    o = owner_of(status(srv), u.uid)
    assert o["in_cgroup"] and o["processes"] >= 3, o
    assert o["limits"]["max_processes"] == 512, "the default SuFcgiOwnerMaxProcesses"
    assert (srv.owner_cgroups(u.uid)[0]).is_dir()


def test_worker_stop_and_app_reload_kill_everything_and_remove_the_group(cg):
    srv, us = cg
    u = us["s"]
    # 1. Idle stop (SuFcgiIdleTimeout 1).
    j = get_json(srv, "s", "/idle/spawn?n=2")
    rel = rel_of(srv, j["cgroup"][hierarchies(status(srv))[0]])
    procs = [j["pid"], *j["children"]]
    left = gone(procs, 15)
    assert not left, f"idle stop left {left} of {procs} alive{log_of(srv)}"
    wait_for(lambda: not group_dirs(srv, rel), 5, f"group {rel} to be removed")
    idle = pools_of(status(srv), u.uid, u.www / "idle")
    assert idle and idle[0]["stopped"]["idle"] >= 1, idle

    # 2. Reload: the restart file retires the pool; its worker and children go.
    j = get_json(srv, "s", "/rl/spawn?n=2")
    old = [j["pid"], *j["children"]]
    old_rel = rel_of(srv, j["cgroup"][hierarchies(status(srv))[0]])
    restart = u.www / "rl" / "tmp" / "restart.txt"
    mkdir(restart.parent, u.ids)
    put(restart, "", u.ids)
    os.utime(restart, (time.time() + 5, time.time() + 5))
    new = wait_for(lambda: (lambda x: x if x["pid"] != j["pid"] else None)(get_json(srv, "s", "/rl/")), 10,
                   "a new worker after touching the restart file")
    left = gone(old, 15)
    assert not left, f"reload left {left} of the old worker's processes alive{log_of(srv)}"
    wait_for(lambda: not group_dirs(srv, old_rel), 5, f"old group {old_rel} to be removed")
    new_rel = rel_of(srv, new["cgroup"][hierarchies(status(srv))[0]])
    assert new_rel != old_rel and group_dirs(srv, new_rel)

    # 3. A graceful restart keeps the supervisor, the worker and its group, and adds none.
    before = {p.name for p in srv.owner_cgroups(u.uid)[0].iterdir() if p.is_dir()}
    srv.graceful()
    again = get_json(srv, "s", "/rl/")
    assert again["pid"] == new["pid"], f"graceful restart replaced the worker: {new['pid']} -> {again['pid']}"
    after = {p.name for p in srv.owner_cgroups(u.uid)[0].iterdir() if p.is_dir()}
    assert after == before, f"worker groups changed across a graceful restart: {before} -> {after}"


def test_fork_loop_stops_at_owner_max_processes_and_the_other_owner_is_served(cg):
    srv, us = cg
    a, b = us["a"], us["b"]
    get_json(srv, "b", "/app/")
    j = get_json(srv, "a", "/app/forkloop?max=2000", timeout=60)
    assert j["error"] == "EAGAIN" and j["forked"] < OWNER_MAX_PROCESSES, \
        f"SuFcgiOwnerMaxProcesses {OWNER_MAX_PROCESSES}: the fork loop made {j['forked']} ({j['error']})"
    count = len(harness.processes_of_uids([a.uid]))
    assert count <= OWNER_MAX_PROCESSES, f"uid {a.uid} has {count} processes"
    pids_max = [(d / "pids.max").read_text().strip() for d in srv.owner_cgroups(a.uid) if (d / "pids.max").exists()]
    assert pids_max == [str(OWNER_MAX_PROCESSES)], pids_max
    for _ in range(5):
        assert get_json(srv, "b", "/app/")["uid"] == b.uid
    assert owner_of(status(srv), a.uid)["limits"]["max_processes"] == OWNER_MAX_PROCESSES, "the vhost's value"


def test_child_past_owner_memory_is_killed_and_the_other_owner_is_served(cg):
    srv, us = cg
    m = us["m"]
    mark = srv.log_mark()
    j = get_json(srv, "m", "/app/childalloc?mb=400", timeout=60)
    assert j["child_status"] == -signal.SIGKILL, f"a child past SuFcgiOwnerMemory {OWNER_MEMORY} ended with {j['child_status']}"
    assert get_json(srv, "b", "/app/")["uid"] == us["b"].uid
    o = owner_of(status(srv), m.uid)
    assert o["oom_kills"] >= 1 and o["limits"]["memory_bytes"] == 160 << 20, o
    assert o["memory_peak_bytes"] <= (160 << 20) + (1 << 20), o
    srv.wait_log(mark, lambda t: f"uid {m.uid}: the kernel's OOM killer" in t, "the owner's OOM kill in the log", timeout=6)


def test_worker_past_memory_limit_gets_502_and_is_counted_as_memory(cg):
    srv, us = cg
    w = us["w"]
    get_json(srv, "w", "/app/")
    mark = srv.log_mark()
    r = srv.get("/app/alloc", host=host("w"), timeout=60)
    assert r.status == 502, f"a worker past SuFcgiMemoryLimit 64M: expected 502, got {r}{log_of(srv, mark)}"
    text = srv.wait_log(mark, lambda t: "memory" in t and "SuFcgiMemoryLimit 64 MiB" in t, "the memory line with the limit")
    assert "the kernel ended it for memory" in text
    p = pools_of(status(srv), w.uid, w.www / "app")
    assert p and p[0]["stopped"]["memory"] == 1 and p[0]["cgroup"]["oom_kills"] >= 1, p
    assert get_json(srv, "w", "/app/")["uid"] == w.uid, "a fresh worker serves the next request"


def test_metrics_parse_as_prometheus_text_and_a_customer_sees_only_their_own(cg):
    from prometheus_client.parser import text_string_to_metric_families
    srv, us = cg
    get_json(srv, "b", "/app/")
    path = "/sufcgi-status?metrics" if srv.mpm == "lighttpd" else "/sufcgi-metrics"
    r = srv.get(path, host=ADMIN)
    assert r.status == 200 and r.header("Content-Type").startswith("text/plain; version=0.0.4"), r
    fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    for name in ("sufcgi_pool_requests", "sufcgi_pool_rejected_requests", "sufcgi_pool_spawns", "sufcgi_pool_worker_stops",
                 "sufcgi_pool_workers", "sufcgi_owner_cpu_seconds", "sufcgi_owner_memory_bytes", "sufcgi_owner_processes",
                 "sufcgi_owner_oom_kills", "sufcgi_owner_cpu_throttled_seconds", "sufcgi_isolation_info"):
        assert name in fams, f"no {name} family in:\n{r.body.decode()[:3000]}"
    assert fams["sufcgi_pool_requests"].type == "counter" and fams["sufcgi_owner_memory_bytes"].type == "gauge"
    b = str(us["b"].uid)
    cpu = [s for s in fams["sufcgi_owner_cpu_seconds"].samples if s.labels["uid"] == b]
    assert cpu and cpu[0].value > 0 and cpu[0].labels["user"] == us["b"].name, cpu
    reqs = [s for s in fams["sufcgi_pool_requests"].samples if s.labels["uid"] == b and s.labels["program"].endswith("/app/cg_app.py")]
    assert reqs and reqs[0].value >= 1 and reqs[0].labels["vhost"] and reqs[0].labels["kind"] == "app", reqs
    stops = {s.labels["reason"] for s in fams["sufcgi_pool_worker_stops"].samples}
    assert {"idle", "memory", "crashed"} <= stops, stops
    # B's own metrics page (SetHandler sufcgi-metrics in B's .htaccess): B alone.
    r = srv.get("/metrics/", host=host("b"))
    assert r.status == 200, f"customer metrics page: {r}{log_of(srv)}"
    mine = list(text_string_to_metric_families(r.body.decode()))
    uids = {s.labels.get("uid") for f in mine for s in f.samples} - {None}
    assert uids == {b}, f"a customer's metrics name other uids: {uids}"


def test_supervisor_killed_is_restarted_and_leaves_no_orphan_cgroup(cg):
    srv, us = cg
    k = us["k"]
    j = get_json(srv, "k", "/app/spawn?n=2")
    st = status(srv)
    rel = rel_of(srv, j["cgroup"][hierarchies(st)[0]])
    sups = harness.supervisor_pids_from_log(srv)
    sup = sups[-1]
    assert harness.pid_alive(sup) and harness.proc_uid(sup) == 0
    srv.killed_supervisors.add(sup)
    mark = srv.log_mark()
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: len(harness.supervisor_pids_from_log(srv)) > len(sups), 20, "a new supervisor")
    left = gone([j["pid"], *j["children"]], 15)
    assert not left, f"processes of the killed supervisor's worker are still alive: {left}{log_of(srv, mark)}"
    srv.wait_log(mark, lambda t: "left by an earlier supervisor" in t, "the new supervisor's clean-up line")
    fresh = wait_for(lambda: (lambda r: r.json() if r.status == 200 else None)(srv.get("/app/", host=host("k"))), 20,
                     "a 200 from a new worker")
    groups = {p.name for d in srv.owner_cgroups(k.uid) for p in d.iterdir() if p.is_dir()}
    assert groups == {rel_of(srv, fresh["cgroup"][hierarchies(st)[0]]).split("/")[1]}, \
        f"uid {k.uid}'s groups after the restart: {groups} (old one was {rel})"


# ---------------------------------------------------------------- servers of their own

@pytest.fixture(params=["event", "lighttpd"])
def own(request, users, sufcgi_module):
    admin_root = Path(tempfile.mkdtemp(prefix="sufcgi-cg-admin-"))
    admin_root.chmod(0o755)
    started = []

    def start(extra: str = ""):
        s = make(request.param, users, admin_root, extra)
        started.append(s)
        s.start()
        return s

    yield start
    for s in started:
        s.stop()
        s.cleanup()
    shutil.rmtree(admin_root, ignore_errors=True)


def test_without_cgroups_rlimit_nproc_caps_the_owners_processes(own, users):
    f = users["f"]
    srv = own(f"SuFcgiCgroups off\nSuFcgiOwnerMaxProcesses 30")
    iso = status(srv)["isolation"]
    assert (iso["mode"], iso["hierarchy"], iso["controllers"]) == ("off", "none", []), iso
    j = get_json(srv, "f", "/app/")
    limits = Path(f"/proc/{j['pid']}/limits").read_text()
    assert re.search(r"^Max processes\s+30\s+30\s", limits, re.M), limits
    loop = get_json(srv, "f", "/app/forkloop?max=2000", timeout=60)
    assert loop["error"] == "EAGAIN" and loop["forked"] < 30, loop
    assert len(harness.processes_of_uids([f.uid])) <= 30
    assert not srv.cgroup_dirs(), f"SuFcgiCgroups off made cgroups: {srv.cgroup_dirs()}"
    harness.kill_pids(harness.processes_of_uids([f.uid]))


def test_server_stop_leaves_no_process_of_the_owner_and_no_cgroup(own, users):
    z = users["z"]
    srv = own()
    j = get_json(srv, "z", "/app/spawn?n=3")
    procs = [j["pid"], *j["children"]]
    assert srv.cgroup_dirs()
    harness.request_stop(srv)
    wait_for(lambda: not harness.pid_alive(srv.master), 20, "the server to exit")
    left = gone(procs, 10)
    assert not left and not harness.processes_of_uids([z.uid]), \
        f"after the server stopped, uid {z.uid} still has {harness.processes_of_uids([z.uid])}"
    wait_for(lambda: not srv.cgroup_dirs(), 5, "the server's cgroups to go")
