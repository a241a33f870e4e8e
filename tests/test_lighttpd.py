"""What only lighttpd has: its preflight check, its host settings in lighttpd.conf,
reloads that re-run every plugin hook unprivileged. (Everything the two servers share
runs on both in test_core, test_lifecycle and test_security.)"""
from __future__ import annotations

import os
import signal
import subprocess

import harness


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


# Kept connections to workers: tests/test_keepconn.py (every server).
