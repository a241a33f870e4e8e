"""The document roots, users and vhosts the integration tests run against.

Built once per session; every case lives in its own directory so tests never
have to rewrite files (and can run in any order under any MPM).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import (APPS, User, Vhost, compile_c_app, ensure_user, mkdir, put, put_app,
                     sha_password)

ROOT = (0, 0)
HTPASSWD_USER, HTPASSWD_PASSWORD = "tester", "s3cret"

# Apps that must be refused and why (directory under alice's www, log keywords).
# The keywords are alternatives: one of them must appear in the new log lines.
REFUSED_IN_ALICE = {
    "app_owned_by_other_user": ("badowner", ("owner", "owned")),
    "group_writable_app": ("groupw", ("writable",)),
    "symlinked_app": ("symlink", ("symlink", "link")),
}


@dataclass
class Site:
    base: Path
    alice: User
    bob: User
    low: User
    root_docroot: Path
    owner_docroot: Path
    htpasswd: Path
    c_app_source: Path

    # vhost names (all name-based on one port; "main.test" is the default vhost)
    MAIN = "main.test"
    ALICE = "alice.test"
    BOB = "bob.test"
    LOW = "low.test"
    OWNED = "owned.test"

    def vhosts(self, alice_extra: str = "") -> list[Vhost]:
        return [
            Vhost(self.MAIN, self.root_docroot,
                  extra=("  UserDir www\n"
                         "  UserDir disabled root\n"
                         "  <Directory /home/*/www>\n"
                         "    Options FollowSymLinks ExecCGI\n"
                         "    AllowOverride All\n"
                         "    Require all granted\n"
                         "  </Directory>")),
            Vhost(self.ALICE, self.alice.www, extra=alice_extra + "\n" + self.auth_block("/cmp/private")),
            Vhost(self.BOB, self.bob.www),
            Vhost(self.LOW, self.low.www),
            Vhost(self.OWNED, self.owner_docroot, extra="  SuFcgiOwner sufcgi-bob sufcgi-bob"),
        ]

    def auth_block(self, location: str) -> str:
        return (f"  <Location {location}>\n"
                f"    AuthType Basic\n"
                f"    AuthName sufcgi-test\n"
                f"    AuthUserFile {self.htpasswd}\n"
                f"    Require valid-user\n"
                f"  </Location>")


def _flup_app_dir(d: Path, owner, htaccess: str | None = None, app_name: str = "envapp.py"):
    mkdir(d, owner)
    put_app(d / app_name, app_name, owner)
    put(d / ".htaccess", htaccess if htaccess is not None else f"SuFcgiApp {app_name}\n", owner)


def build_site() -> Site:
    base = Path(tempfile.mkdtemp(prefix="sufcgi-site-"))
    os.chmod(base, 0o755)
    alice = ensure_user("sufcgi-alice", 2001)
    bob = ensure_user("sufcgi-bob", 2002)
    low = ensure_user("sufcgi-low", 500, limit=1000)  # below SuFcgiMinUid
    A, B = alice.ids, bob.ids
    w = alice.www

    # --- alice: one directory per behaviour
    _flup_app_dir(w / "app", A, "SuFcgiApp envapp.py\nSuFcgiEnv GREETING hello-from-htaccess\n")
    mkdir(w / "app" / "static", A)
    put(w / "app" / "static" / ".htaccess", "SuFcgiApp off\n", A)
    put(w / "app" / "static" / "hello.txt", "static hello\n", A)
    put(w / "index.html", "alice index\n", A)

    mkdir(w / "sub", A)
    _flup_app_dir(w / "sub" / "mounted", A)

    mkdir(w / "php", A)
    put(w / "php" / ".htaccess", "SuFcgiWrapper /usr/bin/php-cgi .php\n", A)
    put(w / "php" / "env.php", (APPS / "env.php").read_bytes(), A, 0o644)
    put(w / "php" / "plain.txt", "plain text next to php\n", A)

    mkdir(w / "perl", A)
    put(w / "perl" / ".htaccess", "AddHandler sufcgi-script .fcgi\n", A)
    put_app(w / "perl" / "env.fcgi", "env.pl", A)

    c_src = base / "env.c"
    put(c_src, (APPS / "env.c").read_bytes(), ROOT)
    mkdir(w / "c", A)
    put(w / "c" / ".htaccess", "AddHandler sufcgi-script .fcgi\n", A)
    compile_c_app(c_src, w / "c" / "env.fcgi", A)

    # AcceptPathInfo Off (httpd's core directive, allowed by FileInfo): script URLs
    # with path info are 404, as under mod_cgi and mod_fcgid; an app tree too.
    mkdir(w / "pathinfo_off", A)
    put(w / "pathinfo_off" / ".htaccess",
        "AddHandler sufcgi-script .fcgi\nSuFcgiWrapper /usr/bin/php-cgi .php\nAcceptPathInfo Off\n", A)
    put_app(w / "pathinfo_off" / "env.fcgi", "env.pl", A)
    put(w / "pathinfo_off" / "env.php", (APPS / "env.php").read_bytes(), A, 0o644)
    put(w / "pathinfo_off" / "plain.txt", "plain\n", A)
    _flup_app_dir(w / "pathinfo_app_off", A, "SuFcgiApp envapp.py\nAcceptPathInfo Off\n")

    # The C env app mounted with SuFcgiApp: compared against mod_proxy_fcgi.
    mkdir(w / "cmp", A)
    compile_c_app(c_src, w / "cmp" / "envc", A)
    put(w / "cmp" / ".htaccess", "SuFcgiApp envc\n", A)

    # refusals inside alice's tree
    _flup_app_dir(w / "badowner", A)
    put_app(w / "badowner" / "envapp.py", "envapp.py", B)          # app owned by bob
    _flup_app_dir(w / "groupw", A)
    os.chmod(w / "groupw" / "envapp.py", 0o775)                    # group-writable app
    mkdir(w / "symlink", A)
    put_app(w / "symlink" / "real.py", "envapp.py", A)
    link = w / "symlink" / "envapp.py"
    if link.exists() or link.is_symlink():
        link.unlink()
    os.symlink("real.py", link)
    os.lchown(link, *A)
    put(w / "symlink" / ".htaccess", "SuFcgiApp envapp.py\n", A)

    # bad directive values: (dir, htaccess text) -> expected "line N"
    _flup_app_dir(w / "bad_maxworkers", A, "SuFcgiApp envapp.py\nSuFcgiMaxWorkers lots\n")
    _flup_app_dir(w / "bad_ld_preload", A, "SuFcgiApp envapp.py\n\nSuFcgiEnv LD_PRELOAD /tmp/x.so\n")
    _flup_app_dir(w / "bad_path_env", A, "SuFcgiEnv PATH /tmp\nSuFcgiApp envapp.py\n")
    _flup_app_dir(w / "bad_phprc", A, "SuFcgiApp envapp.py\nSuFcgiEnv PHPRC /tmp\n")
    # host-only directives in .htaccess
    _flup_app_dir(w / "host_owner", A, "SuFcgiApp envapp.py\nSuFcgiOwner sufcgi-bob\n")
    _flup_app_dir(w / "host_minuid", A, "SuFcgiMinUid 0\nSuFcgiApp envapp.py\n")
    _flup_app_dir(w / "host_socketdir", A, "SuFcgiSocketDir /tmp\nSuFcgiApp envapp.py\n")

    # a backend that accepts and exits without answering
    mkdir(w / "dies", A)
    put_app(w / "dies" / "dies.py", "dies.py", A)
    put(w / "dies" / ".htaccess", "SuFcgiApp dies.py\n", A)

    # multiplexing (test_mux): the same flup app with multiplexing on and off,
    # one worker each, and a customer status page beside them
    _flup_app_dir(w / "mux", A, "SuFcgiApp mux_app.py mux\nSuFcgiMaxWorkers 1\n", app_name="mux_app.py")
    _flup_app_dir(w / "nomux", A, "SuFcgiApp mux_app.py\nSuFcgiMaxWorkers 1\n", app_name="mux_app.py")
    mkdir(w / "muxstatus", A)
    put(w / "muxstatus" / ".htaccess", "SetHandler sufcgi-status\n", A)

    # used by the stop/no-leftover test only (workers found by their cwd)
    _flup_app_dir(w / "lifecycle", A)

    # --- bob: the second owner
    _flup_app_dir(bob.www / "app", B)

    # --- low uid (500 < SuFcgiMinUid default 1000)
    _flup_app_dir(low.www / "app", low.ids)

    # --- root-owned docroot with an app: owner would be root -> refused
    root_docroot = mkdir(base / "rootwww", ROOT)
    put(root_docroot / "index.html", "root index\n", ROOT)
    _flup_app_dir(root_docroot / "app", ROOT)

    # --- root-owned docroot, SuFcgiOwner bob; the app dir belongs to bob
    owner_docroot = mkdir(base / "ownerwww", ROOT)
    _flup_app_dir(owner_docroot / "app", B)

    htpasswd = put(base / "htpasswd", f"{HTPASSWD_USER}:{sha_password(HTPASSWD_PASSWORD)}\n",
                   ROOT, 0o644)
    return Site(base, alice, bob, low, root_docroot, owner_docroot, htpasswd, c_src)


# ---------------------------------------------------------------- worker-lifecycle tests
# One user (and one name-based vhost, KEY.lc.test, docroot = the user's www) per
# lifecycle test: worker counts are taken per uid, so no test sees another's workers.

LIFECYCLE_USERS = {
    "idle": 2101, "minw": 2102, "maxreq": 2103, "php": 2104, "queue": 2105, "busy": 2106,
    "qtimeout": 2107, "reqtimeout": 2108, "iotimeout": 2109, "memory": 2110, "kill": 2111,
    "crashloop": 2112, "supervisor": 2113, "reload": 2114, "graceful": 2115, "slow": 2116,
    "fast": 2117, "log": 2118, "slowstart": 2119, "ceiling": 2120, "firstkill": 2121, "killstorm": 2122,
}


@dataclass
class LifecycleSite:
    users: dict

    @staticmethod
    def host(key: str) -> str:
        return f"{key}.lc.test"

    def vhosts(self) -> list[Vhost]:
        return [Vhost(self.host(k), u.www) for k, u in self.users.items()]

    def app_dir(self, key: str, name: str, htaccess: str, app: str = "lc_app.py") -> Path:
        """A fresh directory NAME in user KEY's www: `app` (from tests/apps) and .htaccess."""
        import shutil
        user = self.users[key]
        d = user.www / name
        shutil.rmtree(d, ignore_errors=True)
        mkdir(d, user.ids)
        if app:
            put_app(d / app, app, user.ids)
        put(d / ".htaccess", htaccess, user.ids)
        return d


def build_lifecycle_site() -> LifecycleSite:
    return LifecycleSite({k: ensure_user(f"sufcgi-lc-{k}", uid) for k, uid in LIFECYCLE_USERS.items()})
