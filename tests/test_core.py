"""Core behaviour of mod_sufcgi, run once per server: Apache under each MPM
(event, worker, prefork) and lighttpd, with the same .htaccess files.

The `server` fixture (conftest.py) is one server per kind with all test vhosts;
pytest groups the tests by server, so each starts once. The content lives
in tests/site_layout.py: one directory per behaviour.
"""
from __future__ import annotations

import http.client
import re

import pytest

import harness
from site_layout import REFUSED_IN_ALICE

SHARED_SERVER = True  # conftest's `server`: each test runs on every server kind
ALICE, BOB, LOW, MAIN, OWNED = "alice.test", "bob.test", "low.test", "main.test", "owned.test"
RSS_BOUND_KIB = 16 * 1024
BIG_POST = 100 << 20


def get_json(server, path: str, host: str, **kw) -> dict:
    r = server.get(path, host=host, **kw)
    assert r.status == 200, (f"GET {path} (Host {host}): expected 200, got {r.status}\n"
                             f"body: {r.body[:300]!r}\n--- error log ---\n{server.log_tail(15)}")
    return r.json()


def assert_runs_as(j: dict, user):
    assert (j["uid"], j["gid"], j["euid"]) == (user.uid, user.gid, user.uid), \
        f"{j['app']} worker ran as uid/gid/euid {j['uid']}/{j['gid']}/{j['euid']}, expected {user.uid}"
    if "egid" in j:
        assert j["egid"] == user.gid
    if "groups" in j:
        assert 0 not in j["groups"], f"worker kept root's supplementary group: {j['groups']}"
        assert set(j["groups"]) <= {user.gid}, f"unexpected supplementary groups {j['groups']}"


# ---------------------------------------------------------------- identity per app type

def test_flup_app_via_SuFcgiApp_runs_as_docroot_owner(server, site):
    j = get_json(server, "/app/", ALICE)
    assert j["app"] == "flup"
    assert_runs_as(j, site.alice)
    assert j["cwd"] == str(site.alice.www / "app")


def test_php_via_SuFcgiWrapper_runs_as_owner_with_script_filename(server, site):
    j = get_json(server, "/php/env.php?x=1", ALICE)
    assert j["app"] == "php"
    assert_runs_as(j, site.alice)
    assert j["env"]["SCRIPT_FILENAME"] == str(site.alice.www / "php" / "env.php")
    assert j["env"]["SCRIPT_NAME"] == "/php/env.php"
    assert j["env"]["QUERY_STRING"] == "x=1"


def test_SuFcgiWrapper_leaves_other_files_and_missing_scripts_to_apache(server, site):
    r = server.get("/php/plain.txt", host=ALICE)
    assert (r.status, r.body) == (200, b"plain text next to php\n")
    r = server.get("/php/missing.php", host=ALICE)
    assert r.status == 404, f"missing .php: expected 404, got {r.status} {r.body[:200]!r}"


def test_perl_script_via_AddHandler_runs_as_owner(server, site):
    j = get_json(server, "/perl/env.fcgi/extra?y=2", ALICE)
    assert j["app"] == "perl"
    assert_runs_as(j, site.alice)
    assert j["env"]["SCRIPT_NAME"] == "/perl/env.fcgi"
    assert j["env"]["PATH_INFO"] == "/extra"


def test_c_libfcgi_script_via_AddHandler_runs_as_owner(server, site):
    j = get_json(server, "/c/env.fcgi", ALICE)
    assert j["app"] == "c"
    assert_runs_as(j, site.alice)
    assert j["env"]["SCRIPT_NAME"] == "/c/env.fcgi"


# ---------------------------------------------------------------- mapping

@pytest.mark.parametrize("path, script_name, path_info, query", [
    ("/sub/mounted/hello/x?q=1", "/sub/mounted", "/hello/x", "q=1"),
    ("/sub/mounted/", "/sub/mounted", "/", ""),
    ("/sub/mounted/a%20b/c", "/sub/mounted", "/a b/c", ""),
])
def test_SuFcgiApp_at_subpath_sets_script_name_and_path_info(server, site, path, script_name,
                                                             path_info, query):
    env = get_json(server, path, ALICE)["env"]
    assert (env["SCRIPT_NAME"], env.get("PATH_INFO"), env["QUERY_STRING"]) == \
        (script_name, path_info, query)
    assert env["REQUEST_URI"] == path


def test_AcceptPathInfo_off_makes_script_urls_with_path_info_not_found(server, site):
    """As under mod_cgi and mod_fcgid: `AcceptPathInfo Off` makes `/x.fcgi/foo` a 404 for
    AddHandler scripts, wrapped scripts and (set explicitly there) an app tree, as for a
    static file beside them; `Default` keeps CGI's rule, path info accepted."""
    j = get_json(server, "/perl/env.fcgi/foo", ALICE)
    assert j["env"]["PATH_INFO"] == "/foo", "AcceptPathInfo Default: path info accepted"
    assert get_json(server, "/php/env.php/foo", ALICE)["app"] == "php"
    if server.mpm == "lighttpd":
        # lighttpd has no AcceptPathInfo: its own mod_cgi and mod_fastcgi always take the
        # path info of an existing script, and so does the plugin (README: lighttpd).
        j = get_json(server, "/pathinfo_off/env.fcgi/foo", ALICE)
        assert j["env"]["PATH_INFO"] == "/foo"
        return
    for path in ("/pathinfo_off/env.fcgi/foo", "/pathinfo_off/env.php/foo", "/pathinfo_off/plain.txt/foo",
                 "/pathinfo_app_off/foo/bar"):
        r = server.get(path, host=ALICE)
        assert r.status == 404, f"GET {path} under AcceptPathInfo Off: {r}\n{server.log_tail(10)}"
    assert get_json(server, "/pathinfo_off/env.fcgi", ALICE)["app"] == "perl"
    assert get_json(server, "/pathinfo_off/env.php", ALICE)["app"] == "php"
    assert get_json(server, "/pathinfo_app_off/", ALICE)["app"] == "flup"


def test_log_lines_name_pools_by_server_name_and_port(server, site):
    harness.only_apache(server, "lighttpd names a pool by its configuration block")
    get_json(server, "/app/", ALICE)
    log = server.log_since(0)
    assert f"{ALICE}:{server.port} " in log, f"no pool named {ALICE}:{server.port}\n{server.log_tail(10)}"
    assert f"{ALICE}:0 " not in log


def test_SuFcgiApp_off_subtree_is_served_statically(server, site):
    r = server.get("/app/static/hello.txt", host=ALICE)
    assert (r.status, r.body) == (200, b"static hello\n"), r
    assert r.header("Content-Type", ).startswith("text/plain")


def test_app_file_is_never_served_as_static_text(server, site):
    for path, marker in [("/app/envapp.py", b"WSGIServer"), ("/perl/env.fcgi", b"use FCGI"),
                         ("/sub/mounted/envapp.py", b"WSGIServer")]:
        r = server.get(path, host=ALICE)
        assert marker not in r.body, f"{path} returned the app's source: {r.body[:200]!r}"
    r = server.get("/php/env.php", host=ALICE)
    assert b"<?php" not in r.body, "PHP source served"


def test_status_and_two_set_cookie_headers_pass_through(server, site):
    r = server.get("/app/?mode=cookies", host=ALICE)
    assert r.status == 201, r
    assert sorted(r.header_all("Set-Cookie")) == ["a=1; Path=/", "b=2; Path=/"]
    assert r.header("X-App") == "flup"
    assert r.body == b"created\n"


def test_app_stderr_reaches_the_error_log_line_by_line(server, site):
    """FastCGI STDERR is logged per line, even when a line arrives in pieces."""
    mark = server.log_mark()
    r = server.get("/app/?mode=stderr", host=ALICE)
    assert (r.status, r.body) == (200, b"logged\n"), r
    text = server.wait_log(mark, lambda t: "envapp stderr line two" in t, "the app's second stderr line")
    lines = [l for l in text.splitlines() if "envapp stderr" in l]
    assert len(lines) == 2 and "line one" in lines[0] and lines[1].endswith("envapp stderr line two"), lines


def test_SuFcgiEnv_value_reaches_the_app(server, site):
    """Either in the worker's process environment or as a FastCGI param."""
    j = get_json(server, "/app/", ALICE)
    assert "hello-from-htaccess" in (j["process_env"].get("GREETING"), j["env"].get("GREETING")), \
        f"GREETING not in process env {sorted(j['process_env'])} nor params {sorted(j['env'])}"


def test_worker_process_environment_is_clean(server, site):
    """No Apache/root leftovers in the worker's own environment."""
    pe = get_json(server, "/app/", ALICE)["process_env"]
    leaked = [k for k in pe if k.startswith(("APACHE_", "LD_")) or k in ("PHPRC", "SUDO_USER")]
    assert not leaked, f"worker environment carries {leaked}"
    assert pe.get("HOME", str(site.alice.home)) != "/root"


# ---------------------------------------------------------------- connections, bodies

def test_keepalive_several_requests_on_one_connection(server, site):
    c = harness.KeepAliveClient(server.port, ALICE)
    try:
        paths = ["/app/one", "/app/static/hello.txt", "/app/two?x=1", "/php/env.php", "/app/three"]
        for p in paths:
            r = c.get(p)
            assert r.status == 200, f"{p} on a kept-alive connection: {r}"
        r = c.get("/app/four")
        assert r.json()["env"]["PATH_INFO"] == "/four"
    finally:
        c.close()


def test_post_body_echoed_byte_for_byte(server, site):
    body = b"".join(harness.pattern_bytes(8 << 20))
    r = server.get("/app/echo?mode=echo", host=ALICE, method="POST", body=body,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert len(r.body) == len(body) and r.body == body


def test_100mb_post_streamed_and_child_rss_bounded(server, site):
    """The Apache child that serves a 100 MB POST must not grow by more than 16 MiB."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    host = {"Host": f"{ALICE}:{server.port}"}
    try:
        conn.request("GET", "/app/warmup", headers=host)  # pool up, same child, same connection
        warm = conn.getresponse()
        warm.read()
        assert warm.status == 200
        child = harness.wait_for(lambda: harness.pid_holding_connection(
            server.child_pids(), server.port, conn.sock.getsockname()[1]), 10,
            "the Apache child holding our connection")
        harness.reset_peak_rss(child)
        before = harness.rss_kib(child)
        conn.request("POST", "/app/upload?mode=sha", body=harness.pattern_bytes(BIG_POST),
                     headers={**host, "Content-Length": str(BIG_POST),
                              "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        body = resp.read()
        peak = harness.rss_kib(child, "VmHWM")
    finally:
        conn.close()
    assert resp.status == 200, f"100 MB POST: got {resp.status} {body[:300]!r}\n{server.log_tail(10)}"
    j = __import__("json").loads(body)
    assert j["length"] == BIG_POST
    assert j["sha256"] == harness.pattern_sha256(BIG_POST), "body corrupted on the way to the app"
    growth = peak - before
    assert growth <= RSS_BOUND_KIB, (f"child {child} RSS grew by {growth} KiB "
                                     f"(VmRSS before {before} KiB, VmHWM after {peak} KiB)")


# ---------------------------------------------------------------- identities

def test_two_owners_are_isolated(server, site):
    a_pids, b_pids = set(), set()
    for _ in range(3):
        a = get_json(server, "/app/", ALICE)
        b = get_json(server, "/app/", BOB)
        assert_runs_as(a, site.alice)
        assert_runs_as(b, site.bob)
        a_pids.add(a["pid"])
        b_pids.add(b["pid"])
    assert not a_pids & b_pids, f"same worker pid served two owners: {a_pids & b_pids}"
    for pid in a_pids:
        assert harness.proc_uid(pid) in (site.alice.uid, None)


def test_SuFcgiOwner_sets_identity_for_root_owned_docroot(server, site):
    assert_runs_as(get_json(server, "/app/", OWNED), site.bob)


def test_userdir_request_runs_as_the_url_user(server, site):
    harness.only_apache(server, "mod_userdir's /~user mapping (lighttpd needs sufcgi.owner per host)")
    j = get_json(server, "/~sufcgi-alice/app/u/v", MAIN)
    assert_runs_as(j, site.alice)
    assert j["env"]["SCRIPT_NAME"] == "/~sufcgi-alice/app"
    assert j["env"]["PATH_INFO"] == "/u/v"


# ---------------------------------------------------------------- refusals

def _new_log_line(server, mark, keywords, what) -> str:
    pat = re.compile("|".join(re.escape(k) for k in keywords), re.I)
    text = server.wait_log(mark, lambda t: any(pat.search(l) for l in t.splitlines()),
                           f"an error-log line about {what} (one of {keywords})")
    return next(l for l in text.splitlines() if pat.search(l))


REFUSALS = {
    "root_owned_docroot": (MAIN, "/app/", ("root", "uid 0", "minimum", "min_uid", "MinUid", "below")),
    "uid_below_minimum": (LOW, "/app/", ("500", "minimum", "min_uid", "MinUid", "below")),
    **{name: (ALICE, f"/{d}/", kws) for name, (d, kws) in REFUSED_IN_ALICE.items()},
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_unsafe_identity_or_file_is_refused_with_403_and_logged(server, site, case):
    host, path, keywords = REFUSALS[case]
    mark = server.log_mark()
    r = server.get(path, host=host)
    assert r.status == 403, (f"{case}: GET {path} (Host {host}) expected 403, got {r.status} "
                             f"{r.body[:200]!r}\n--- log ---\n{server.log_since(mark)}")
    assert b'"uid"' not in r.body
    _new_log_line(server, mark, keywords, case)


BAD_DIRECTIVES = {
    # dir: (line number, reason keywords)
    "bad_maxworkers": (2, ("SuFcgiMaxWorkers", "lots")),
    "bad_ld_preload": (3, ("LD_PRELOAD",)),
    "bad_path_env": (1, ("PATH",)),
    "bad_phprc": (2, ("PHPRC",)),
}


@pytest.mark.parametrize("d", sorted(BAD_DIRECTIVES))
def test_bad_directive_value_gives_500_and_log_names_file_and_line(server, site, d):
    line_no, reasons = BAD_DIRECTIVES[d]
    htaccess = str(site.alice.www / d / ".htaccess")
    mark = server.log_mark()
    r = server.get(f"/{d}/", host=ALICE)
    assert r.status == 500, f"{d}: expected 500, got {r.status} {r.body[:200]!r}"
    line = _new_log_line(server, mark, (htaccess,), f"{htaccess}")
    text = server.log_since(mark)
    assert any(htaccess in l and re.search(rf"\bline {line_no}\b", l) and
               any(k in l for k in reasons) for l in text.splitlines()), \
        (f"no log line naming {htaccess}, 'line {line_no}' and one of {reasons}; got:\n{text}"
         f"\n(first line naming the file: {line})")


@pytest.mark.parametrize("d, directive", [("host_owner", "SuFcgiOwner"),
                                          ("host_minuid", "SuFcgiMinUid"),
                                          ("host_socketdir", "SuFcgiSocketDir")])
def test_host_only_directive_in_htaccess_gives_500(server, site, d, directive):
    mark = server.log_mark()
    r = server.get(f"/{d}/", host=ALICE)
    assert r.status == 500, f"{directive} in .htaccess: expected 500, got {r.status}"
    _new_log_line(server, mark, (f"{directive} not allowed here",), f"{directive} not allowed")


def test_backend_that_exits_without_answering_gives_502(server, site):
    mark = server.log_mark()
    r = server.get("/dies/", host=ALICE)
    assert r.status == 502, f"expected 502, got {r.status} {r.body[:200]!r}\n{server.log_since(mark)}"


def test_server_still_serves_after_refusals_and_errors(server, site):
    assert_runs_as(get_json(server, "/app/after", ALICE), site.alice)


# ---------------------------------------------------------------- restart (keep last: reloads config)

def test_graceful_restart_keeps_serving(server, site):
    get_json(server, "/app/", ALICE)
    server.graceful()
    j = get_json(server, "/app/after-graceful", ALICE)
    assert_runs_as(j, site.alice)
    assert_runs_as(get_json(server, "/app/", BOB), site.bob)
