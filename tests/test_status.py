"""The status page (`SetHandler sufcgi-status`): the server-config page lists every
pool; the same handler set by a customer lists only the pools of the owner the
supervisor derives for that directory, never another customer's.

Own users (sufcgi-st-a 2401, sufcgi-st-b 2402), own vhosts and one Apache (event MPM), then one lighttpd,
for the module; a run holds LOCK_FILE so two runs never share the users.
"""
from __future__ import annotations

import html
import json
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

import harness
from harness import Vhost, ensure_user, mkdir, put, put_app, wait_for

LOCK_FILE = Path("/tmp/sufcgi-status-tests.lock")
ADMIN, A_HOST, B_HOST = "admin.st.test", "a.st.test", "b.st.test"
# A's docroot again, with AllowOverride None but an AllowOverrideList (Apache only).
LIST_HOST = "list.st.test"
ROOT = (0, 0)
# A directory name that must come out escaped on the HTML page.
ODD_DIR = "x<b>&y"


# lighttpd: the host's page is a setting in lighttpd.conf (here for every host).
LIGHTTPD_HOST_PAGE = '$HTTP["url"] =~ "^/sufcgi-status" {\n  sufcgi.status = "enable"\n}'


@pytest.fixture(scope="module", params=["event", "lighttpd"])
def st(request, sufcgi_module):
    with harness.exclusive(LOCK_FILE, "the status tests"):
        a = ensure_user("sufcgi-st-a", 2401)
        b = ensure_user("sufcgi-st-b", 2402)
        users = [a, b]
        harness.kill_pids(harness.processes_of_uids([u.uid for u in users]))
        for u in users:
            for child in u.www.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            for name, extra in (("app", ""), ("recycled", "SuFcgiMaxRequests 1\n")):
                d = mkdir(u.www / name, u.ids)
                put_app(d / "envapp.py", "envapp.py", u.ids)
                put(d / ".htaccess", f"SuFcgiApp envapp.py\n{extra}", u.ids)
            d = mkdir(u.www / "status", u.ids)
            put(d / ".htaccess", "SetHandler sufcgi-status\n", u.ids)
            # Any .htaccess in the docroot: the host's /sufcgi-status is then narrowed.
            put(u.www / ".htaccess", "# customer settings\n", u.ids)
        d = mkdir(a.www / ODD_DIR, a.ids)
        put_app(d / "envapp.py", "envapp.py", a.ids)
        put(d / ".htaccess", "SuFcgiApp envapp.py\n", a.ids)
        # A directory inside A's site that A does not own.
        d = mkdir(a.www / "rootdir", ROOT)
        put(d / ".htaccess", "SetHandler sufcgi-status\n", ROOT)

        admin_root = Path(tempfile.mkdtemp(prefix="sufcgi-st-admin-"))
        admin_root.chmod(0o755)
        vhosts = [
            Vhost(ADMIN, admin_root, allow_override="None"),
            Vhost(A_HOST, a.www),
            Vhost(B_HOST, b.www),
        ]
        if request.param == "lighttpd":
            server = harness.Lighttpd(vhosts=vhosts, extra=LIGHTTPD_HOST_PAGE)
        else:
            vhosts.append(Vhost(LIST_HOST, a.www, allow_override="None",
                                extra=f"  <Directory {a.www}>\n    AllowOverrideList SetHandler\n  </Directory>"))
            server = harness.Apache(mpm="event", vhosts=vhosts,
                                    extra="<Location /sufcgi-status>\n  SetHandler sufcgi-status\n</Location>")
        try:
            server.start()
            yield server, a, b
        finally:
            server.stop()
            harness.kill_pids(harness.processes_of_uids([u.uid for u in users]))
            shutil.rmtree(admin_root, ignore_errors=True)


def log_of(a: harness.Apache) -> str:
    return f"\n--- error log ---\n{a.log_tail(20)}"


def status(a: harness.Apache, host: str, path: str = "/sufcgi-status", json_view: bool = True):
    r = a.get(path + ("?json" if json_view else ""), host=host)
    assert r.status == 200, f"GET {path} on {host}: {r}{log_of(a)}"
    if json_view:
        assert r.header("Content-Type").startswith("application/json")
        return r.json()
    assert r.header("Content-Type").startswith("text/html")
    return r.body.decode()


def app_pid(a: harness.Apache, host: str, path: str = "/app/") -> int:
    r = a.get(path, host=host)
    assert r.status == 200, f"GET {path} on {host}: {r}{log_of(a)}"
    return r.json()["pid"]


def pools_by_program(j: dict) -> dict:
    return {p["program"]: p for p in j["pools"]}


def test_status_pages_never_spawn(st):
    a, ua, ub = st
    j = status(a, ADMIN)
    assert j["view"] == "server" and j["pools"] == [] and j["truncated"] is False
    for host in (A_HOST, B_HOST):
        assert status(a, host, "/status/")["pools"] == []
        status(a, host, "/status/", json_view=False)
    assert harness.processes_of_uids([ua.uid, ub.uid]) == []


def test_server_page_lists_every_pool(st):
    a, ua, ub = st
    pid_a, pid_b = app_pid(a, A_HOST), app_pid(a, B_HOST)

    def settled():
        # The response reaches us just before the worker is released.
        j = status(a, ADMIN)
        states = [w["state"] for p in j["pools"] for w in p["workers"] if w["pid"] in (pid_a, pid_b)]
        return j if states == ["idle", "idle"] else None

    j = wait_for(settled, 5, "both workers idle on the status page")
    assert j["view"] == "server"
    pools = pools_by_program(j)
    pa, pb = pools[str(ua.www / "app" / "envapp.py")], pools[str(ub.www / "app" / "envapp.py")]
    for p, user, pid, host in ((pa, ua, pid_a, A_HOST), (pb, ub, pid_b, B_HOST)):
        assert (p["uid"], p["gid"], p["user"]) == (user.uid, user.gid, user.name)
        assert p["vhost"].startswith(host) or f"== \"{host}\"" in p["vhost"]  # lighttpd: its condition
        assert p["kind"] == "app" and p["state"] == "active"
        assert p["directory"].rstrip("/") == str(user.www / "app")
        assert p["spawns"] >= 1 and p["requests"] >= 1 and p["rejected"] == 0 and p["waiting"] == 0
        assert set(p["stopped"]) == {"idle", "max_requests", "reload", "timeout", "memory",
                                     "retired", "crashed", "exited"}
        w = {x["pid"]: x for x in p["workers"]}
        assert pid in w, f"worker {pid} not on the page: {p}"
        assert w[pid]["state"] == "idle" and w[pid]["requests"] >= 1
        assert w[pid]["rss_bytes"] > 1 << 20 and w[pid]["age_seconds"] >= 0
    page = status(a, ADMIN, json_view=False)
    for u in (ua, ub):
        assert str(u.www / "app" / "envapp.py") in page and f"{u.name} (uid {u.uid}" in page
    assert str(pid_a) in page and str(pid_b) in page


def test_customer_sees_only_own_pools(st):
    a, ua, ub = st
    pid_a, pid_b = app_pid(a, A_HOST), app_pid(a, B_HOST)
    for me, other, host, my_pid, other_pid in ((ua, ub, A_HOST, pid_a, pid_b),
                                                (ub, ua, B_HOST, pid_b, pid_a)):
        r = a.get("/status/?json", host=host)
        assert r.status == 200, f"{r}{log_of(a)}"
        j = r.json()
        assert j["view"] == "owner"
        assert j["pools"] and {p["uid"] for p in j["pools"]} == {me.uid}
        assert any(my_pid in [w["pid"] for w in p["workers"]] for p in j["pools"])
        page = a.get("/status/", host=host).body.decode()
        for body in (r.body.decode(), page):
            assert str(other.www) not in body and other.name not in body
            assert str(other_pid) not in body
        assert str(me.www / "app" / "envapp.py") in page
    # Both are on the host's page.
    programs = pools_by_program(status(a, ADMIN))
    assert str(ua.www / "app" / "envapp.py") in programs and str(ub.www / "app" / "envapp.py") in programs


def test_host_location_on_a_customer_vhost_is_narrowed(st):
    """The host's <Location /sufcgi-status> on a vhost whose docroot has a customer
    .htaccess (which could have set the handler): only that owner's pools. On
    lighttpd the host's page is a lighttpd.conf setting no customer file can
    make, so it is the host's full page wherever the host turned it on."""
    a, ua, ub = st
    app_pid(a, A_HOST), app_pid(a, B_HOST)
    j = status(a, A_HOST)
    if a.mpm == "lighttpd":
        assert j["view"] == "server" and {p["uid"] for p in j["pools"]} >= {ua.uid, ub.uid}
    else:
        assert j["view"] == "owner" and {p["uid"] for p in j["pools"]} == {ua.uid}


def test_an_allow_override_list_narrows_the_host_page_too(st):
    """A customer .htaccess read only because of an AllowOverrideList (no
    FileInfo) could have set the handler as well: narrowed too."""
    a, ua, ub = st
    if a.mpm == "lighttpd":
        pytest.skip("Apache's AllowOverrideList")
    app_pid(a, A_HOST), app_pid(a, B_HOST)
    j = status(a, LIST_HOST)
    assert j["view"] == "owner" and {p["uid"] for p in j["pools"]} == {ua.uid}, j


def test_status_in_a_directory_the_owner_does_not_own_is_refused(st):
    a, ua, ub = st
    mark = a.log_mark()
    r = a.get("/rootdir/?json", host=A_HOST)
    assert r.status == 403, r
    a.wait_log(mark, lambda t: "status page refused" in t, "the refusal in the error log")


def test_html_escapes_every_string(st):
    a, ua, ub = st
    app_pid(a, A_HOST, "/" + quote(ODD_DIR) + "/")
    odd = str(ua.www / ODD_DIR / "envapp.py")
    assert odd in pools_by_program(status(a, A_HOST, "/status/"))
    page = status(a, ADMIN, json_view=False)
    assert ODD_DIR not in page
    assert html.escape(odd, quote=True).replace("&#x27;", "&#39;") in page
    # The JSON page escapes markup characters too (and still decodes to the name).
    raw = a.get("/sufcgi-status?json", host=ADMIN).body.decode()
    assert "<" not in raw and ">" not in raw
    assert odd in [p["program"] for p in json.loads(raw)["pools"]]


def test_stopped_workers_are_counted_by_reason(st):
    a, ua, ub = st
    pids = {app_pid(a, A_HOST, "/recycled/") for _ in range(3)}
    assert len(pids) == 3, "SuFcgiMaxRequests 1: every request on a fresh worker"
    prog = str(ua.www / "recycled" / "envapp.py")

    def counted():
        p = pools_by_program(status(a, A_HOST, "/status/"))[prog]
        return p if p["stopped"]["max_requests"] >= 2 else None

    p = wait_for(counted, 10, "two workers stopped for max requests on the status page")
    assert p["spawns"] >= 3 and p["requests"] >= 3
    assert p["stopped"]["crashed"] == 0


def test_only_get(st):
    a, ua, ub = st
    r = a.get("/sufcgi-status", host=ADMIN, method="POST", body=b"x")
    assert r.status == 405, r
