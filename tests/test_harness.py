"""Self-tests of the harness and the test apps against stock Apache modules only
(mod_proxy_fcgi in front of the apps run as standalone FastCGI servers).
They need no sufcgi module: when they fail, the harness is broken, not sufcgi."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess

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


# ---------------------------------------------------------------- tests/apps/fcgi_raw.py

def _load_fcgi_raw():
    spec = importlib.util.spec_from_file_location("fcgi_raw", harness.APPS / "fcgi_raw.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fr = _load_fcgi_raw()


def test_fcgi_raw_writes_records_as_the_spec_lays_them_out():
    # version 1, STDOUT (6), id 1, 2 content bytes, 6 bytes of padding, reserved
    assert fr.record(fr.STDOUT, 1, b"hi") == b"\x01\x06\x00\x01\x00\x02\x06\x00hi\0\0\0\0\0\0"
    assert fr.record(fr.STDOUT, 0x1234) == b"\x01\x06\x12\x34\x00\x00\x00\x00"
    assert fr.record(fr.STDIN, 1, b"12345678") == b"\x01\x05\x00\x01\x00\x08\x00\x00" b"12345678"
    assert fr.record(fr.STDOUT, 1, b"x", version=9) == b"\x09\x06\x00\x01\x00\x01\x07\x00x" + b"\0" * 7
    assert fr.end_request(3) == b"\x01\x03\x00\x03\x00\x08\x00\x00" + b"\0" * 8
    # the bytes of record.rs's end_request_bytes
    assert fr.end_request(1, 0x01020304, 2) == bytes([1, 3, 0, 1, 0, 8, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0])
    assert fr.unknown_type(77) == b"\x01\x0b\x00\x00\x00\x08\x00\x00\x4d" + b"\0" * 7
    # a header that claims more than follows
    assert fr.header(fr.STDOUT, 5, 60000) == b"\x01\x06\x00\x05\xea\x60\x00\x00"
    # 70144 bytes: one full record (65535 bytes, 1 of padding), then 4609 (0x1201) with 7
    data = bytes(range(256)) * 274
    s = fr.stream(fr.STDOUT, 1, data)
    assert s[:8] == b"\x01\x06\x00\x01\xff\xff\x01\x00" and s[8:8 + 65535] == data[:65535]
    assert s[8 + 65535:8 + 65536] == b"\0"
    rest = s[8 + 65536:]
    assert rest[:8] == b"\x01\x06\x00\x01\x12\x01\x07\x00" and rest[8:8 + 4609] == data[65535:]
    assert rest[8 + 4609:] == b"\0" * 7
    assert fr.stream(fr.STDOUT, 1, b"") == b"", "no records for no data (the terminator is separate)"


def test_fcgi_raw_reads_records_and_drops_their_padding():
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"\x01\x01\x00\x07\x00\x08\x00\x00" b"\x00\x01\x01\x00\x00\x00\x00\x00"  # BEGIN_REQUEST 7, keep
                  b"\x01\x04\x00\x07\x00\x05\x03\x00" b"\x01\x02Aab" b"\0\0\0"             # PARAMS A=ab, padded
                  b"\x01\x05\x00\x07\x00\x00\x00\x00"                                       # empty STDIN
                  b"\x01\x05\x00")                                                           # half a header
        b.shutdown(socket.SHUT_WR)
        assert fr.read_record(a) == (fr.BEGIN_REQUEST, 7, b"\x00\x01\x01\x00\x00\x00\x00\x00")
        assert fr.read_header(a) == (1, fr.PARAMS, 7, 5, 3)
        assert fr.read_content(a, 5, 3) == b"\x01\x02Aab"
        assert fr.read_record(a) == (fr.STDIN, 7, b""), "the padding before it was consumed"
        with pytest.raises(EOFError):
            fr.read_record(a)


def test_fcgi_raw_name_values_with_one_and_four_byte_lengths():
    body = (b"\x0e\x03REQUEST_METHODGET"                 # 14 and 3: one byte each
            + b"\x01\x80\x00\x00\x80V" + b"x" * 128      # a value of 128: the four-byte form
            + b"\x80\x00\x01\x2c\x00" + b"n" * 300)      # a name of 300, an empty value
    assert fr.name_values(body) == {b"REQUEST_METHOD": b"GET", b"V": b"x" * 128, b"n" * 300: b""}
    assert fr.name_values(b"") == {}


def test_apps_get_the_helpers_they_import_copied_beside_them(tmp_path):
    for app in ("keepconn.py", "sec_rawfcgi.py"):
        assert harness.app_helpers((harness.APPS / app).read_bytes()) == ["fcgi_raw"], app
    assert harness.app_helpers((harness.APPS / "envapp.py").read_bytes()) == []
    assert harness.app_helpers(b"import fcgi_rawer\nx = 'import fcgi_raw'\n") == []
    me = (os.getuid(), os.getgid())
    harness.put_app(tmp_path / "envapp.py", "envapp.py", me)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envapp.py"]
    harness.put_app(tmp_path / "app.py", "sec_rawfcgi.py", me)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.py", "envapp.py", "fcgi_raw.py"]
    assert (tmp_path / "fcgi_raw.py").read_bytes() == (harness.APPS / "fcgi_raw.py").read_bytes()
    # The copy runs from where it was put (the helper found beside it), on fd 0 as
    # under the supervisor, and leaves no __pycache__ there.
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "app.sock"))
    listener.listen(1)
    proc = subprocess.Popen([harness.PYTHON, str(tmp_path / "app.py"), "stdin"], stdin=listener.fileno(),
                            cwd="/", env={"PATH": "/usr/bin:/bin"}, stderr=subprocess.PIPE)
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(str(tmp_path / "app.sock"))
            c.sendall(b"\x01\x01\x00\x01\x00\x08\x00\x00" b"\x00\x01\x00\x00\x00\x00\x00\x00"
                      b"\x01\x04\x00\x01\x00\x00\x00\x00"
                      b"\x01\x05\x00\x01\x00\x03\x05\x00abc\0\0\0\0\0"
                      b"\x01\x05\x00\x01\x00\x00\x00\x00")
            out = b""
            while True:
                rtype, rid, content = fr.read_record(c)
                assert rid == 1
                if rtype == fr.END_REQUEST:
                    break
                assert rtype == fr.STDOUT
                out += content
        head, body = out.split(b"\r\n\r\n", 1)
        assert head == b"Content-Type: application/json"
        assert json.loads(body) == {"records": [3], "length": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        listener.close()
    assert not (tmp_path / "__pycache__").exists()
    assert b"Error" not in err, err
