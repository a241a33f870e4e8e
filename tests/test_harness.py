"""Self-tests of the harness and the test apps against stock Apache modules only
(mod_proxy_fcgi in front of the apps run as standalone FastCGI servers).
They need no sufcgi module: when they fail, the harness is broken, not sufcgi."""
from __future__ import annotations

import json

import pytest

import harness


def _stock(site, mpm, directory_extra: str, sock) -> harness.Apache:
    vhosts = []
    for v in site.vhosts():
        if v.name == site.ALICE:
            v.allow_override = "None"
            v.extra += "\n" + directory_extra
            vhosts.append(v)
    return harness.Apache(mpm=mpm, sufcgi=False, vhosts=vhosts)


@pytest.mark.parametrize("mpm", harness.MPMS)
def test_stock_apache_starts_serves_static_and_stops_cleanly(site, mpm):
    a = _stock(site, mpm, "", None)
    with a:
        r = a.get("/index.html", host=site.ALICE)
        assert r.status == 200 and r.body == b"alice index\n"
        assert a.child_pids(), "no www-data children found"
        # the .htaccess (with sufcgi directives) is never served
        assert a.get("/app/.htaccess", host=site.ALICE).status == 403
    assert a.master is None and a.leftovers == []
    a.cleanup()


APP_CASES = {
    "flup": lambda site: [harness.PYTHON, str(site.alice.www / "app" / "envapp.py")],
    "perl": lambda site: [str(site.alice.www / "perl" / "env.fcgi")],
    "c": lambda site: [str(site.alice.www / "c" / "env.fcgi")],
}


@pytest.mark.parametrize("kind", sorted(APP_CASES))
def test_test_apps_report_uid_and_env_behind_mod_proxy_fcgi(site, kind):
    sock = site.base / f"selftest-{kind}.sock"
    extra = (f'  <Location /selftest>\n    SetHandler "proxy:unix:{sock}|fcgi://localhost"\n'
             f'  </Location>')
    with harness.StandaloneFcgi(APP_CASES[kind](site), sock, owner=site.alice.ids,
                                cwd=site.alice.www), _stock(site, "event", extra, sock) as a:
        r = a.get("/selftest/a?b=c", host=site.ALICE, headers={"X-Probe": "1"})
        assert r.status == 200, (r, a.log_tail())
        j = r.json()
        assert (j["app"], j["uid"], j["gid"]) == (kind, site.alice.uid, site.alice.gid)
        assert j["env"]["QUERY_STRING"] == "b=c"
        assert j["env"]["HTTP_X_PROBE"] == "1"


def test_flup_app_modes_behind_mod_proxy_fcgi(site):
    sock = site.base / "selftest-modes.sock"
    extra = (f'  <Location /selftest>\n    SetHandler "proxy:unix:{sock}|fcgi://localhost"\n'
             f'  </Location>')
    with harness.StandaloneFcgi([harness.PYTHON, str(site.alice.www / "app" / "envapp.py")], sock,
                                owner=site.alice.ids, cwd=site.alice.www), \
            _stock(site, "event", extra, sock) as a:
        r = a.get("/selftest/?mode=cookies", host=site.ALICE)
        assert r.status == 201
        assert sorted(r.header_all("Set-Cookie")) == ["a=1; Path=/", "b=2; Path=/"]
        body = b"".join(harness.pattern_bytes(3 << 20))
        r = a.get("/selftest/?mode=echo", host=site.ALICE, method="POST", body=body,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status == 200 and r.body == body
        r = a.get("/selftest/?mode=sha", host=site.ALICE, method="POST",
                  body=harness.pattern_bytes(5 << 20),
                  headers={"Content-Length": str(5 << 20)})
        assert r.json()["sha256"] == harness.pattern_sha256(5 << 20)


def test_php_test_script_via_php_cgi(site, tmp_path):
    """php-cgi runs env.php (CGI mode here; the FastCGI path is sufcgi's job)."""
    import subprocess
    script = site.alice.www / "php" / "env.php"
    out = subprocess.run(["/usr/bin/php-cgi"], env={"REDIRECT_STATUS": "200",
                         "SCRIPT_FILENAME": str(script), "REQUEST_METHOD": "GET",
                         "GATEWAY_INTERFACE": "CGI/1.1"}, capture_output=True, check=True).stdout
    j = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert j["app"] == "php" and j["uid"] == 0 and j["env"]["SCRIPT_FILENAME"] == str(script)


def test_serving_child_found_and_rss_readable(site):
    a = _stock(site, "prefork", "", None)
    with a:
        import socket
        s = socket.create_connection(("127.0.0.1", a.port))
        try:
            s.sendall(f"GET /index.html HTTP/1.1\r\nHost: {site.ALICE}\r\n\r\n".encode())
            s.recv(4096)
            pid = harness.wait_for(lambda: harness.pid_holding_connection(
                a.child_pids(), a.port, s.getsockname()[1]), 5, "serving child")
            harness.reset_peak_rss(pid)
            assert harness.rss_kib(pid, "VmHWM") >= harness.rss_kib(pid) > 0
        finally:
            s.close()
    a.cleanup()


@pytest.mark.parametrize("example, argv, path, expect", [
    ("flask-wsgi", [harness.PYTHON, "app.py"], "/x/", b"running as sufcgi-alice"),
    ("flask-wsgi", [harness.PYTHON, "app.py"], "/x/hello/you", b'"hello":"you"'),
    ("perl", ["./hello.fcgi"], "/x/hello.fcgi", b"Hello from Perl, running as sufcgi-alice"),
    ("c", ["./hello.fcgi"], "/x/hello.fcgi", b"Hello from C, running as sufcgi-alice"),
])
def test_example_apps_answer_behind_mod_proxy_fcgi(site, example, argv, path, expect):
    import demo
    home = harness.mkdir(site.base / "examples-home", site.alice.ids)
    user = harness.User(site.alice.name, site.alice.uid, site.alice.gid, home)
    harness.mkdir(user.www, user.ids)
    www = demo.install_examples(user)
    sock = site.base / f"example-{example}.sock"
    extra = (f'  <Location /x>\n    SetHandler "proxy:unix:{sock}|fcgi://localhost"\n'
             f'    ProxyFCGISetEnvIf "true" SCRIPT_NAME "/x"\n'
             f'    ProxyFCGISetEnvIf "%{{REQUEST_URI}} =~ m#^/x(/.*)$#" PATH_INFO "$1"\n'
             f'  </Location>')
    with harness.StandaloneFcgi(argv, sock, owner=user.ids, cwd=www / example), \
            _stock(site, "event", extra, sock) as a:
        r = a.get(path, host=site.ALICE)
        assert r.status == 200 and expect in r.body, (r, a.log_tail(5))


def test_php_example_via_php_cgi(site):
    import subprocess
    script = harness.REPO / "htaccess-examples" / "php" / "index.php"
    out = subprocess.run(["/usr/bin/php-cgi"], env={"REDIRECT_STATUS": "200",
                         "SCRIPT_FILENAME": str(script), "REQUEST_METHOD": "GET",
                         "GATEWAY_INTERFACE": "CGI/1.1"}, capture_output=True, check=True).stdout
    assert b"Hello from PHP, running as root" in out


def test_a_test_user_whose_preferred_uid_is_taken_gets_the_next_free_one():
    """A machine where a host's customer (or another harness) already has uid 2001 runs
    the suites all the same: ensure_user takes the next free uid/gid, and the suites use
    each user's real ids. Here the "customer" is a throw-away account on that uid."""
    import pwd
    import subprocess
    blocker, probe = "sufcgi-hx-blocker", "sufcgi-hx-probe"
    for name in (probe, blocker):
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)
    taken = harness.free_id(2950)
    try:
        subprocess.run(["useradd", "-u", str(taken), "-U", "-M", "-s", "/usr/sbin/nologin", blocker], check=True)
        u = harness.ensure_user(probe, taken)
        assert u.uid != taken and u.uid > taken and u.gid == u.uid, (u, taken)
        assert pwd.getpwnam(blocker).pw_uid == taken, "the other account is left alone"
        assert harness.ensure_user(probe, taken).uid == u.uid, "reused on the next call"
        with pytest.raises(harness.HarnessError, match="outside"):
            harness.ensure_user(probe, taken, limit=taken + 1)
    finally:
        import shutil
        for name in (probe, blocker):
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(f"/home/{probe}", ignore_errors=True)
