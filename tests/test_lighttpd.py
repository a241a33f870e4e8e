"""What only lighttpd has: its preflight check, its host settings in lighttpd.conf,
reloads that re-run every plugin hook unprivileged. (Everything the two servers share
runs on both in test_core, test_lifecycle and test_security.)"""
from __future__ import annotations

import os
import signal
import subprocess

import harness
from harness import wait_for


def new_root_processes(before: set[int]) -> list[int]:
    return [p for p in harness.all_pids() if p not in before and harness.proc_uid(p) == 0
            and harness.pid_alive(p) and "lighttpd" in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")]


def test_preflight_check_forks_nothing(site, sufcgi_module):
    """`lighttpd -tt` (Debian runs it before every start) loads the plugin as root:
    it must check the settings and start no supervisor."""
    srv = harness.Lighttpd(vhosts=site.vhosts())
    try:
        before = set(harness.all_pids())
        res = srv.configtest()
        assert res.returncode == 0, f"lighttpd -tt failed: {res.stdout}{res.stderr}"
        assert not new_root_processes(before), "lighttpd -tt left a process behind"
        assert not (srv.run_dir / "sufcgi").exists(), "lighttpd -tt created the socket directory"
    finally:
        srv.cleanup()


def test_bad_setting_stops_the_start_with_the_reason(site, sufcgi_module):
    srv = harness.Lighttpd(vhosts=site.vhosts(), extra='sufcgi.owner = "sufcgi-no-such-user"')
    try:
        try:
            srv.start()
            started = True
        except harness.HarnessError:
            started = False
        assert not started, "lighttpd started with sufcgi.owner naming no user"
        assert "sufcgi-no-such-user" in srv.log_since(0) and "no such user" in srv.log_since(0), srv.log_tail(10)
    finally:
        srv.stop()
        srv.cleanup()


def test_reload_that_changes_identities_answers_503_until_restart(site, sufcgi_module):
    """SIGUSR1 re-runs the plugin unprivileged: it keeps the supervisor, and refuses
    (503, logged) rather than map requests onto a changed identity table."""
    srv = harness.Lighttpd(vhosts=site.vhosts())
    try:
        srv.start()
        r = srv.get("/app/", host=site.ALICE)
        assert r.status == 200, (r, srv.log_tail(10))
        alice_pid = r.json()["pid"]
        keeper = [p for p in srv._keeper_and_supervisor_pids() if harness.pid_alive(p)]

        # Same configuration: the reload changes nothing.
        srv.graceful()
        r = srv.get("/app/", host=site.ALICE)
        assert r.status == 200 and r.json()["pid"] == alice_pid, (r, srv.log_tail(10))
        assert all(harness.pid_alive(p) for p in keeper), "the supervisor did not survive the reload"

        # A new block moves every context after it: the others keep their identity
        # (mapped by content, not position); the changed one is refused until a
        # full restart, never served as someone else.
        srv.extra = '$HTTP["host"] == "bob.test" {\n  sufcgi.owner = "sufcgi-alice"\n}'
        srv.write_config()
        mark = srv.log_mark()
        srv.graceful()
        r = srv.get("/app/", host=site.ALICE)
        assert r.status == 200 and r.json()["uid"] == site.alice.uid, (r, srv.log_since(mark))
        r = srv.get("/app/", host=site.BOB)
        assert r.status == 503 and r.header("Retry-After"), (r, srv.log_since(mark))
        assert "restart" in srv.log_since(mark), srv.log_since(mark)
    finally:
        srv.stop()
        srv.cleanup()


# ---------------------------------------------------------------- kept connections
# lighttpd is one process, so it keeps its connection to a worker of an app that
# does not multiplex from one request to the next (FCGI_KEEP_CONN), where Apache's
# children cannot (BENCHMARKS.md). tests/apps/lt_keepconn.py tells which of its
# connections carried each request.

def _keepconn_server(site, mode: str):
    from harness import APPS, mkdir, put
    d = mkdir(site.alice.www / f"keepconn-{mode}", site.alice.ids)
    put(d / "lt_keepconn.py", (APPS / "lt_keepconn.py").read_bytes(), site.alice.ids, 0o755)
    # One worker, so every request goes to the same process.
    put(d / ".htaccess", f"SuFcgiApp lt_keepconn.py {mode}\nSuFcgiMaxWorkers 1\n", site.alice.ids)
    srv = harness.Lighttpd(vhosts=site.vhosts())
    srv.start()
    return srv, f"/keepconn-{mode}/"


def _get(srv, site, path):
    r = srv.get(path, host=site.ALICE)
    assert r.status == 200, (r, srv.log_tail(10))
    return r.json()


def test_the_connection_to_a_worker_is_kept_between_requests(site, sufcgi_module):
    srv, path = _keepconn_server(site, "keep")
    try:
        # The first request has a connection of its own; then the app is asked
        # about multiplexing (on a thread), and once it has answered,
        # connections are kept.
        first = _get(srv, site, path)
        wait_for(lambda: _get(srv, site, path)["on_conn"] >= 2, 10, "a request on a kept connection")
        runs = [_get(srv, site, path) for _ in range(4)]
        assert {r["pid"] for r in [first, *runs]} == {first["pid"]}
        # One connection carries them all, one after another.
        assert len({r["conn"] for r in runs}) == 1, runs
        assert [r["on_conn"] for r in runs] == list(range(runs[0]["on_conn"], runs[0]["on_conn"] + 4)), runs
        kept = runs[-1]["conn"]
        # A request with a body goes out on it too, but the connection is not kept
        # after it (the app might have left some of the body unread).
        body = harness.request(srv.port, path, host=site.ALICE, method="POST", body=b"x" * 5000)
        assert body.status == 200, (body, srv.log_tail(10))
        assert (body.json()["conn"], body.json()["body"]) == (kept, 5000), body.json()
        after = _get(srv, site, path)
        assert after["conn"] > kept and after["on_conn"] == 1, after
    finally:
        srv.stop()
        srv.cleanup()


def test_a_kept_connection_the_app_dropped_is_replaced_unseen(site, sufcgi_module):
    """The app hangs up on a kept connection as the next request arrives: that
    request runs again on a fresh connection, and the client sees a plain 200."""
    srv, path = _keepconn_server(site, "drop")
    try:
        _get(srv, site, path)
        wait_for(lambda: _get(srv, site, path)["dropped"] >= 1, 10, "a request the app hung up on, run again")
        runs = [_get(srv, site, path) for _ in range(4)]
        assert runs[-1]["dropped"] >= 3, runs
        assert "closed the connection" not in srv.log_since(0), srv.log_tail(10)
    finally:
        srv.stop()
        srv.cleanup()
