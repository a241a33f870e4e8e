"""SuFcgiAuthorizer: a customer's FastCGI AUTHORIZER app guards a directory tree.

For each request in the tree, before any handler, the authorizer (run as the
site's owner, like every sufcgi app) is asked about the request without its
body. 200 lets the request through and its `Variable-NAME` headers become
environment variables for later apps; any other answer goes to the client as
the app sent it.

User sufcgi-az (uid 2601) is this module's own; one Apache (event MPM), then
one lighttpd, serve it (lighttpd runs the request again once its authorizer let
it through, as its own mod_fastcgi authorizers do). Two runs of this module at once would share that user, so a run holds
LOCK_FILE.
"""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

import harness
from harness import Vhost, ensure_user, mkdir, put, put_app

LOCK_FILE = Path("/tmp/sufcgi-authz-tests.lock")
SITE = "authz.test"                 # AllowOverride All
AUTHCFG = "authcfg.authz.test"      # AllowOverride AuthConfig only
GOOD = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
BAD = {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}


class AuthzSite:
    def __init__(self):
        self.user = u = ensure_user("sufcgi-az", 2601)
        for child in u.www.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        guard = mkdir(u.www / "guard", u.ids)
        put(guard / ".htaccess", "SuFcgiAuthorizer authz.py\nAddHandler sufcgi-script .fcgi\n", u.ids)
        put_app(guard / "authz.py", "authz.py", u.ids)
        put_app(guard / "env.fcgi", "envapp.py", u.ids)
        put(guard / "secret.txt", "the secret\n", u.ids)
        public = mkdir(guard / "public", u.ids)
        put(public / ".htaccess", "SuFcgiAuthorizer off\n", u.ids)
        put(public / "open.txt", "open to all\n", u.ids)
        appguard = mkdir(u.www / "appguard", u.ids)
        put(appguard / ".htaccess", "SuFcgiApp app.py\nSuFcgiAuthorizer authz.py\n", u.ids)
        put_app(appguard / "app.py", "envapp.py", u.ids)
        put_app(appguard / "authz.py", "authz.py", u.ids)
        bare = mkdir(u.www / "bare", u.ids)
        put(bare / ".htaccess", "SuFcgiAuthorizer authz_bare.pl\n", u.ids)
        put_app(bare / "authz_bare.pl", "authz_bare.pl", u.ids)
        put(bare / "file.txt", "behind a bare authorizer\n", u.ids)
        authcfg = mkdir(u.www / "authcfg", u.ids)
        put(authcfg / ".htaccess", "SuFcgiAuthorizer authz.py\n", u.ids)
        put_app(authcfg / "authz.py", "authz.py", u.ids)
        put(authcfg / "file.txt", "guarded too\n", u.ids)

    def vhosts(self) -> list[Vhost]:
        # ServerSignature On (Debian's default) ends SERVER_SIGNATURE with a newline.
        return [Vhost(SITE, self.user.www, extra="  ServerSignature On"), Vhost(AUTHCFG, self.user.www, allow_override="AuthConfig")]


@pytest.fixture(scope="module")
def az_site():
    with harness.exclusive(LOCK_FILE, "the authorizer tests"):
        yield AuthzSite()


@pytest.fixture(scope="module", params=["event", "lighttpd"])
def apache(request, az_site, sufcgi_module):
    """Apache (event MPM), then lighttpd, with the same .htaccess files."""
    yield from harness.serve(request, harness.make_server(request.param, az_site.vhosts()))


def log_of(a: harness.Apache, mark: int = 0) -> str:
    return f"\n--- error log since mark ---\n{a.log_since(mark)[-4000:]}"


def test_without_credentials_the_authorizers_401_goes_to_the_client(apache, az_site):
    for creds in ({}, BAD):
        r = apache.get("/guard/secret.txt", host=SITE, headers=creds)
        assert r.status == 401, f"{r}{log_of(apache)}"
        assert r.header("WWW-Authenticate") == 'Basic realm="sufcgi test"'
        assert r.body == b"who are you?\n"
        assert (r.header("Content-Type") or "").startswith("text/plain")


def test_200_lets_a_static_file_through(apache, az_site):
    r = apache.get("/guard/secret.txt", host=SITE, headers=GOOD)
    assert (r.status, r.body) == (200, b"the secret\n"), f"{r}{log_of(apache)}"
    names = {k.lower() for k, _ in r.headers}
    assert not any(n.startswith("variable-") for n in names) and "x-ignored" not in names, \
        f"a 200's headers are the server's, not the client's: {r.headers}"
    assert b"ignored body" not in r.body


def test_variables_reach_a_later_app_and_the_authorizer_runs_as_the_owner(apache, az_site):
    mark = apache.log_mark()
    r = apache.get("/guard/env.fcgi", host=SITE, headers=GOOD)
    assert r.status == 200, f"{r}{log_of(apache, mark)}"
    j = r.json()
    env, uid = j["env"], az_site.user.uid
    assert j["uid"] == uid, "the app behind the authorizer runs as the owner"
    assert env["AUTHZ_UID"] == str(uid), f"the authorizer ran as uid {env['AUTHZ_UID']}, not the owner {uid}"
    assert harness.proc_uid(int(env["AUTHZ_PID"])) in (uid, None)
    assert env["REMOTE_USER"] == "alice", "Variable-REMOTE_USER becomes REMOTE_USER"
    # What the authorizer was sent: no body, CONTENT_LENGTH 0, the Basic credentials.
    assert (env["AUTHZ_BODY_LEN"], env["AUTHZ_CONTENT_LENGTH"]) == ("0", "0")
    assert env["AUTHZ_SAW_USER"] == "alice:secret"
    assert "LD_PRELOAD" not in env and "LD_PRELOAD" not in j.get("process_env", {})
    assert "HTTP_X_IGNORED" not in env
    apache.wait_log(mark, lambda t: "Variable-LD_PRELOAD" in t, "a log line about the refused Variable-LD_PRELOAD")


def test_the_authorizer_gets_no_body_and_the_app_gets_all_of_it(apache, az_site):
    body = b"x" * 100_000
    r = apache.get("/guard/env.fcgi?mode=sha", host=SITE, method="POST", body=body, headers=GOOD)
    assert r.status == 200, f"{r}{log_of(apache)}"
    assert r.json()["length"] == len(body)
    r = apache.get("/guard/env.fcgi", host=SITE, method="POST", body=b"abc", headers=GOOD)
    env = r.json()["env"]
    assert (env["CONTENT_LENGTH"], env["AUTHZ_CONTENT_LENGTH"], env["AUTHZ_BODY_LEN"]) == ("3", "0", "0")


def test_a_redirect_goes_to_the_client(apache, az_site):
    r = apache.get("/guard/secret.txt?redirect", host=SITE)
    assert r.status == 302, f"{r}{log_of(apache)}"
    assert r.header("Location") == "http://example.invalid/login"
    assert b"the secret" not in r.body


def test_any_other_answer_goes_to_the_client_as_is(apache, az_site):
    r = apache.get("/guard/secret.txt?teapot", host=SITE)
    assert r.status == 418, f"{r}{log_of(apache)}"
    assert r.header("Content-Type") == "application/x-tea"
    assert r.header("X-Authz") == "tea"
    assert r.body == b"short and stout\x00\xff"


def test_off_in_a_subdirectory_lifts_it(apache, az_site):
    r = apache.get("/guard/public/open.txt", host=SITE)
    assert (r.status, r.body) == (200, b"open to all\n"), f"{r}{log_of(apache)}"
    assert apache.get("/guard/secret.txt", host=SITE).status == 401, "the parent stays guarded"


def test_a_malformed_answer_is_a_502_with_a_log_line(apache, az_site):
    mark = apache.log_mark()
    r = apache.get("/guard/secret.txt?malformed", host=SITE, headers=GOOD)
    assert r.status in (500, 502), f"{r}{log_of(apache, mark)}"
    assert b"the secret" not in r.body
    apache.wait_log(mark, lambda t: "sufcgi: authorizer" in t and "malformed" in t,
                    "a log line saying the authorizer's answer was malformed")
    # The pool survives: the next request is answered normally.
    assert apache.get("/guard/secret.txt", host=SITE, headers=GOOD).status == 200


def test_allowed_under_AllowOverride_AuthConfig(apache, az_site):
    r = apache.get("/authcfg/file.txt", host=AUTHCFG)
    assert r.status == 401, f"SuFcgiAuthorizer must be allowed by AllowOverride AuthConfig: {r}{log_of(apache)}"
    r = apache.get("/authcfg/file.txt", host=AUTHCFG, headers=GOOD)
    assert (r.status, r.body) == (200, b"guarded too\n")


def test_a_denied_request_with_a_body_leaves_the_connection_usable(apache, az_site):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=20)
    try:
        h = {"Host": SITE}
        conn.request("POST", "/guard/secret.txt", body=b"y" * 50_000, headers=h)
        r = conn.getresponse()
        assert (r.status, r.read()) == (401, b"who are you?\n")
        conn.request("GET", "/guard/secret.txt", headers={**h, **GOOD})
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"the secret\n"), "the unread body must not be taken for the next request"
        conn.request("HEAD", "/guard/secret.txt?teapot", headers=h)
        r = conn.getresponse()
        assert (r.status, r.read()) == (418, b"")
    finally:
        conn.close()


def test_the_perl_example_guards_its_directory(apache, az_site):
    """htaccess-examples/authorizer: a libfcgi (Perl FCGI) authorizer checking Basic auth."""
    src = Path(__file__).resolve().parent.parent / "htaccess-examples" / "authorizer"
    u = az_site.user
    dest = mkdir(u.www / "example", u.ids)
    mkdir(dest / "public", u.ids)
    for f in src.rglob("*"):
        if f.is_file():
            put(dest / f.relative_to(src), f.read_bytes(), u.ids, 0o755 if f.name.endswith(".pl") else 0o644)
    r = apache.get("/example/private.txt", host=SITE)
    assert r.status == 401 and r.header("WWW-Authenticate") == 'Basic realm="members"', f"{r}{log_of(apache)}"
    demo = {"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()}
    r = apache.get("/example/private.txt", host=SITE, headers=demo)
    assert (r.status, r.body) == (200, b"Only members may read this file.\n"), f"{r}{log_of(apache)}"
    assert apache.get("/example/public/hello.txt", host=SITE).status == 200
    assert apache.get("/example/.htusers", host=SITE, headers=demo).status == 403


def test_an_app_tree_with_path_info_is_guarded_too(apache, az_site):
    assert apache.get("/appguard/foo/bar", host=SITE).status == 401
    r = apache.get("/appguard/foo/bar?x=1", host=SITE, headers=GOOD)
    assert r.status == 200, f"{r}{log_of(apache)}"
    env = r.json()["env"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/appguard", "/foo/bar", "x=1")
    assert env["AUTHZ_UID"] == str(az_site.user.uid) and env["REMOTE_USER"] == "alice"
    assert int(env["AUTHZ_PID"]) != r.json()["pid"], "the authorizer and the app are separate pools"


def test_variable_names_with_dashes_become_underscores(apache, az_site):
    """lighttpd's and mod_fcgid's mapping: Variable-X-LIGHTTPD-FCGI-AUTH sets X_LIGHTTPD_FCGI_AUTH;
    a refused name spelt with dashes (LD-PRELOAD) stays refused."""
    mark = apache.log_mark()
    r = apache.get("/guard/env.fcgi?lighty", host=SITE)
    assert r.status == 200, f"{r}{log_of(apache, mark)}"
    j = r.json()
    env = j["env"]
    assert env.get("X_LIGHTTPD_FCGI_AUTH") == "from-the-authorizer", f"{env}{log_of(apache, mark)}"
    assert "LD_PRELOAD" not in env and "LD_PRELOAD" not in j.get("process_env", {})
    apache.wait_log(mark, lambda t: "LD-PRELOAD" in t, "a log line about the refused Variable-LD-PRELOAD")


def test_a_bare_empty_header_block_from_an_authorizer_is_a_200(apache, az_site):
    """The FastCGI spec's example authorizers answer "let it through" with the blank line
    alone (no header): lighttpd and mod_fcgid take it as 200, and so does sufcgi, for the
    AUTHORIZER role only (a responder's empty block stays an error: the unit tests of
    core::fastcgi::response)."""
    mark = apache.log_mark()
    r = apache.get("/bare/file.txt", host=SITE)
    assert (r.status, r.body) == (200, b"behind a bare authorizer\n"), f"{r}{log_of(apache, mark)}"
    r = apache.get("/bare/file.txt?deny", host=SITE)
    assert (r.status, r.body) == (403, b"no\n"), f"{r}{log_of(apache, mark)}"
