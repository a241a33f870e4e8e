"""Security properties of sufcgi (issue 5), one test per numbered property: test_pN_*.

SECURITY.md lists each property, the threat it answers and its test. A property that
cannot hold by design is still a test: it asserts the documented limit, never skips.

Isolation: this module uses only its own users (sufcgi-sec-*, uids from 2201 and 520, or the
next free ones where those are taken: tests use each user's real ids)
and vhosts (*.sec.test); the harness kills every process of the users registered in
this pytest process at teardown, so a run holds LOCK_FILE and never touches the
users of the other suites. Apps: tests/apps/sec_* (raw FastCGI backends written in
Python that accept on fd 0; records through tests/apps/fcgi_raw.py) and tests/apps/envapp.py.
"""
from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import random
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import APPS, PYTHON, mkdir, put, put_app, wait_for

LOCK_FILE = Path("/tmp/sufcgi-security-tests.lock")
MARKERS = Path("/tmp/sufcgi-sec-markers")
ROOT = (0, 0)
EXTRA_GROUP = ("sufcgi-sec-extra", 2299)

# key -> uid; user sufcgi-sec-<key>, vhost <key>.sec.test (docroot: the user's www)
USERS = {
    "a": 2201, "b": 2202, "race": 2203, "fork": 2204, "storm": 2205, "crash": 2206,
    "php": 2207, "lowgid": 2208, "kill": 2209, "slow": 2210, "bad": 2211, "ud": 2212,
    "gid0": 2213, "low": 520,
}
LOWGID_GROUP = ("sufcgi-sec-lg", 521)


def host(key: str) -> str:
    return f"{key}.sec.test"


# ---------------------------------------------------------------- site

class SecSite:
    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="sufcgi-sec-site-"))
        os.chmod(self.base, 0o755)
        # Ids below SuFcgiMinUid/MinGid (1000) must stay below it.
        self.lowgid = harness.ensure_group(LOWGID_GROUP[0], LOWGID_GROUP[1], limit=1000)
        self.extra_gid = harness.ensure_group(*EXTRA_GROUP)
        self.u: dict[str, harness.User] = {}
        for key, uid in USERS.items():
            name = f"sufcgi-sec-{key}"
            limit = 1000 if uid < 1000 else None
            if key == "lowgid":
                self.u[key] = harness.ensure_user(name, uid, gid=self.lowgid)
            elif key == "gid0":
                self.u[key] = harness.ensure_user(name, uid, gid=0)
            else:
                self.u[key] = harness.ensure_user(name, uid, limit=limit)
        # sec-a has a supplementary group: workers must get exactly the owner's groups
        subprocess.run(["usermod", "-a", "-G", EXTRA_GROUP[0], "sufcgi-sec-a"], check=True)
        self.root_docroot = mkdir(self.base / "rootwww", ROOT)
        self.ud_docroot = mkdir(self.base / "udwww", ROOT)
        # /home/sufcgi-sec-ud2: a textual prefix match of sufcgi-sec-ud's home, not inside it
        self.ud2 = mkdir(Path("/home/sufcgi-sec-ud2"), self.u["ud"].ids)
        mkdir(self.ud2 / "www", self.u["ud"].ids)
        MARKERS.mkdir(exist_ok=True)
        os.chmod(MARKERS, 0o1777)

    def vhosts(self, keys=None) -> list[harness.Vhost]:
        keys = keys or [k for k in USERS]
        out = [harness.Vhost(host(k), self.u[k].www) for k in keys]
        out.append(harness.Vhost(host("root"), self.root_docroot))
        out.append(harness.Vhost(
            host("userdir"), self.ud_docroot,
            extra=("  UserDir /home/*2/www\n"
                   f"  <Directory {self.ud2}/www>\n"
                   "    Options FollowSymLinks ExecCGI\n"
                   "    AllowOverride All\n"
                   "    Require all granted\n"
                   "  </Directory>")))
        return out

    def app_dir(self, key: str, rel: str, htaccess: str, apps=("envapp.py",), mode=0o755) -> Path:
        """A fresh directory under user KEY's www holding `apps` (from tests/apps) and .htaccess."""
        user = self.u[key]
        d = user.www / rel
        shutil.rmtree(d, ignore_errors=True)
        mkdir(d, user.ids, mode)
        for a in apps:
            put_app(d / a, a, user.ids)
        put(d / ".htaccess", htaccess, user.ids)
        return d


@pytest.fixture(scope="module")
def sec():
    with harness.exclusive(LOCK_FILE, "the security tests"):
        s = SecSite()
        yield s
        harness.kill_test_user_processes()
        shutil.rmtree(s.base, ignore_errors=True)


@pytest.fixture(scope="module", params=("event", "lighttpd"))
def apache(sec, sufcgi_module, request):
    """One server with every *.sec.test vhost: Apache (event MPM), then lighttpd
    with the same .htaccess files. Named `apache` so that conftest's crash guard
    fails any test during which a server process crashed."""
    # Crashes are reported per test by conftest's _crash_guard.
    yield from harness.serve(request, harness.make_server(request.param, sec.vhosts()),
                             f"[security {request.param}] ", fail_on_crash=False)


@pytest.fixture(params=("event", "lighttpd"))
def server(sec, sufcgi_module, request):
    """Factory for tests that need their own server (host directives, stopping it)."""
    started: list[harness.Apache] = []
    failed_before = request.session.testsfailed

    def start(extra: str = "", keys=None, expect_start=True) -> harness.Apache:
        a = harness.make_server(request.param, sec.vhosts(keys), extra)
        started.append(a)
        if expect_start:
            a.start()
        return a

    yield start
    for a in started:
        a.stop()
        if request.session.testsfailed > failed_before:
            print(f"\nApache server root kept for inspection: {a.root}")
        else:
            a.cleanup()


def log_of(a: harness.Apache, mark: int = 0, n: int = 3000) -> str:
    return f"\n--- error log {a.error_log} since mark (last {n} chars) ---\n{a.log_since(mark)[-n:]}"


def workers_in(d: Path) -> list[int]:
    return harness.processes_with_cwd_under(d)


def ok_json(a, path, key, **kw) -> dict:
    r = a.get(path, host=host(key), **kw)
    assert r.status == 200, f"GET {path} on {host(key)}: expected 200, got {r}{log_of(a)}"
    return r.json()


def proc_status(pid: int) -> dict[str, str]:
    return harness._proc_status(pid)


def proc_environ(pid: int) -> dict[bytes, bytes]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    out = {}
    for item in raw.split(b"\0"):
        if item:
            k, _, v = item.partition(b"=")
            out[k] = v
    return out


def run_as(uid: int, gid: int, code: str, groups=(), stdin: str = "", timeout: float = 30) -> str:
    """Run a Python snippet as uid/gid (and supplementary groups); its stdout."""
    def drop():
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
    res = subprocess.run([PYTHON, "-c", code], input=stdin, capture_output=True, text=True,
                         preexec_fn=drop, timeout=timeout, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, f"snippet as {uid}:{gid} failed: {res.stderr}"
    return res.stdout


def socket_dir(a: harness.Apache) -> Path:
    return a.run_dir / "sufcgi"


# ---------------------------------------------------------------- 1. identity floors

def test_p1_owner_root_or_below_min_ids_never_gets_a_worker(apache, sec):
    cases = {
        "low": (f"uid {sec.u['low'].uid} is below SuFcgiMinUid",),
        "lowgid": (f"gid {sec.lowgid} is below SuFcgiMinGid",),
        "gid0": ("gid 0",),
        "root": ("uid 0",),
    }
    for key, words in cases.items():
        if key == "root":
            d = sec.root_docroot / "p1"
            shutil.rmtree(d, ignore_errors=True)
            mkdir(d, ROOT)
            put_app(d / "envapp.py", "envapp.py", ROOT)
            put(d / ".htaccess", "SuFcgiApp envapp.py\n", ROOT)
        else:
            d = sec.app_dir(key, "p1", "SuFcgiApp envapp.py\n")
        mark = apache.log_mark()
        r = apache.get("/p1/", host=host(key))
        assert r.status in (403, 500), f"{key}: expected 403/500, got {r}{log_of(apache, mark)}"
        text = apache.wait_log(mark, lambda t: any(w in t for w in words), f"the reason for {key}")
        assert any(w in text for w in words)
        assert not workers_in(d), f"{key}: a process runs in {d}"
    uids = [sec.u[k].uid for k in ("low", "lowgid", "gid0")]
    assert not harness.processes_of_uids(uids), "a refused owner has processes"
    # no worker as root or gid 0 anywhere under the supervisor
    sup = harness.supervisor_pids_from_log(apache)[-1]
    for p in harness.descendants(sup):
        st = proc_status(p)
        if st:
            assert st["Uid"].split()[0] != "0" and st["Gid"].split()[0] != "0", \
                f"supervisor child {p} runs with uid/gid 0: {st['Uid']} / {st['Gid']}"


# ---------------------------------------------------------------- 2. credentials

def _check_worker_creds(pid: int, user: harness.User):
    st = proc_status(pid)
    assert st, f"worker {pid} is gone"
    ids_u = " ".join([str(user.uid)] * 4)
    ids_g = " ".join([str(user.gid)] * 4)
    assert " ".join(st["Uid"].split()) == ids_u, f"Uid: {st['Uid']} (real, effective, saved, fs)"
    assert " ".join(st["Gid"].split()) == ids_g, f"Gid: {st['Gid']}"
    expected_groups = set(os.getgrouplist(user.name, user.gid))
    assert set(int(g) for g in st["Groups"].split()) == expected_groups, \
        f"Groups: {st['Groups']!r}, expected the owner's {sorted(expected_groups)}"
    assert st["NoNewPrivs"] == "1", f"NoNewPrivs: {st['NoNewPrivs']}"
    assert st["CapEff"] == "0000000000000000", f"CapEff: {st['CapEff']}"
    assert st["CapPrm"] == "0000000000000000", f"CapPrm: {st['CapPrm']}"


def test_p2_worker_credentials_are_exactly_the_owners(apache, sec):
    a = sec.u["a"]
    assert sec.extra_gid in os.getgrouplist(a.name, a.gid)
    sec.app_dir("a", "p2", "SuFcgiApp envapp.py\n")
    j = ok_json(apache, "/p2/", "a")
    _check_worker_creds(j["pid"], a)
    # .htaccess values that try to change identity change nothing
    sec.app_dir("a", "p2twist",
                "SuFcgiApp envapp.py --user=root --uid=0 root\n"
                "SuFcgiEnv USER root\nSuFcgiEnv LOGNAME root\nSuFcgiEnv HOME /root\n"
                "SuFcgiEnv SUDO_UID 0\n")
    j = ok_json(apache, "/p2twist/", "a")
    _check_worker_creds(j["pid"], a)
    assert j["argv"][1:] == ["--user=root", "--uid=0", "root"]
    # php-cgi through the wrapper, too
    d = sec.app_dir("a", "p2php", "SuFcgiWrapper /usr/bin/php-cgi .php\n", apps=())
    put(d / "env.php", (APPS / "env.php").read_bytes(), a.ids, 0o644)
    j = ok_json(apache, "/p2php/env.php", "a")
    _check_worker_creds(int(j["pid"]), a)


# ---------------------------------------------------------------- 3. file checks

def _refused(apache, key, path, words, d=None):
    mark = apache.log_mark()
    r = apache.get(path, host=host(key))
    assert r.status == 403, f"{path}: expected 403, got {r}{log_of(apache, mark)}"
    text = apache.wait_log(mark, lambda t: any(w in t for w in words), f"a log line naming {words} for {path}")
    if d is not None:
        assert not workers_in(d), f"{path}: a worker runs in {d}"
    return text


def test_p3_unsafe_files_are_refused_and_php_cgi_is_accepted(apache, sec):
    a, b = sec.u["a"], sec.u["b"]
    A, B = a.ids, b.ids
    ht = "SuFcgiApp envapp.py\n"
    cases = []

    def case(rel, words, setup):
        d = sec.app_dir("a", rel, ht)
        setup(d)
        cases.append((rel, words, d))

    case("p3_groupw", ("writable",), lambda d: os.chmod(d / "envapp.py", 0o775))
    case("p3_worldw", ("writable",), lambda d: os.chmod(d / "envapp.py", 0o757))
    case("p3_other", (f"owned by uid {b.uid}",), lambda d: os.chown(d / "envapp.py", *B))
    case("p3_setuid", ("setuid",), lambda d: os.chmod(d / "envapp.py", 0o4755))
    case("p3_setgid", ("setgid",), lambda d: os.chmod(d / "envapp.py", 0o2755))

    def symlink(d):
        put_app(d / "real.py", "envapp.py", A)
        (d / "envapp.py").unlink()
        os.symlink("real.py", d / "envapp.py")
        os.lchown(d / "envapp.py", *A)
    case("p3_symlink", ("symlink",), symlink)

    def hardlink(d):
        target = put_app(b.www / "p3_hl_target.py", "envapp.py", B)
        (d / "envapp.py").unlink()
        os.link(target, d / "envapp.py")
    case("p3_hardlink", (f"owned by uid {b.uid}", "hard link"), hardlink)
    case("p3_ht_groupw", ("config file",), lambda d: os.chmod(d / ".htaccess", 0o664))
    case("p3_ht_other", ("config file",), lambda d: os.chown(d / ".htaccess", *B))

    def ht_symlink(d):
        put(d / "real.ht", ht, A)
        (d / ".htaccess").unlink()
        os.symlink("real.ht", d / ".htaccess")
        os.lchown(d / ".htaccess", *A)
    case("p3_ht_symlink", ("config file", "symlink"), ht_symlink)
    case("p3_dir_groupw", ("writable",), lambda d: os.chmod(d, 0o775))
    case("p3_dir_other", (f"owned by uid {b.uid}",), lambda d: os.chown(d, *B))

    for rel, words, d in cases:
        _refused(apache, "a", f"/{rel}/", words, d)

    # wrapped scripts (php-cgi, an alternatives symlink, is accepted as the command)
    d = sec.app_dir("a", "p3_php", "SuFcgiWrapper /usr/bin/php-cgi .php\n", apps=())
    php = (APPS / "env.php").read_bytes()
    put(d / "ok.php", php, A)
    put(d / "other.php", php, B)
    put(d / "gw.php", php, A, 0o664)
    put(d / "suid.php", php, A, 0o4644)
    os.symlink("ok.php", d / "link.php")
    os.lchown(d / "link.php", *A)
    assert Path("/usr/bin/php-cgi").is_symlink()
    j = ok_json(apache, "/p3_php/ok.php", "a")
    assert j["uid"] == a.uid
    for name, words in [("other.php", (f"owned by uid {b.uid}",)), ("gw.php", ("writable",)),
                        ("suid.php", ("setuid",)), ("link.php", ("regular file", "symlink"))]:
        _refused(apache, "a", f"/p3_php/{name}", words)

    # wrapper commands: group-writable (own / root's) or another user's
    wrap = "#!/bin/sh\nexec /usr/bin/python3 envapp.py\n"
    d = sec.app_dir("a", "p3_wrap_gw", "SuFcgiWrapper {d}/wrap.sh .x\n")
    put(d / ".htaccess", f"SuFcgiWrapper {d}/wrap.sh .x\n", A)
    put(d / "wrap.sh", wrap, A, 0o775)
    put(d / "t.x", "x\n", A)
    _refused(apache, "a", "/p3_wrap_gw/t.x", ("writable",), d)
    bbin = mkdir(b.home / "bin", B)
    put(bbin / "wrap.sh", wrap, B, 0o755)
    d = sec.app_dir("a", "p3_wrap_other", f"SuFcgiWrapper {bbin}/wrap.sh .x\n")
    put(d / "t.x", "x\n", A)
    _refused(apache, "a", "/p3_wrap_other/t.x", ("neither root nor the pool owner",), d)
    rootdir = mkdir(sec.base / "wrapdir", ROOT)
    put(rootdir / "wrap.sh", wrap, ROOT, 0o775)
    d = sec.app_dir("a", "p3_wrap_rootgw", f"SuFcgiWrapper {rootdir}/wrap.sh .x\n")
    put(d / "t.x", "x\n", A)
    _refused(apache, "a", "/p3_wrap_rootgw/t.x", ("writable",), d)

    # containment compares whole components: /home/sufcgi-sec-ud2 is not inside /home/sufcgi-sec-ud
    ud = sec.u["ud"]
    d = sec.ud2 / "www" / "p3"
    shutil.rmtree(d, ignore_errors=True)
    mkdir(d, ud.ids)
    put_app(d / "envapp.py", "envapp.py", ud.ids)
    put(d / ".htaccess", "SuFcgiApp envapp.py\n", ud.ids)
    if apache.mpm != "lighttpd":  # mod_userdir's /~user mapping is Apache's (README: lighttpd limits)
        _refused(apache, "userdir", "/~sufcgi-sec-ud/p3/", ("not inside the home directory",), d)


def test_p3_a_wrapped_script_in_a_directory_others_may_write_is_refused(apache, sec):
    """The WordPress forums' "chmod 777 your uploads folder": another local user renames a
    file the owner's PHP wrote there (a PHP payload named upload.gif) to evil.php. The file
    is still the owner's and 0644, so only the directory tells: it and every directory up
    to the configuring .htaccess must be the owner's and writable by nobody else (suEXEC's
    and suPHP's rule). `php_flag engine off` directories keep serving their files as files."""
    a, b = sec.u["a"], sec.u["b"]
    A = a.ids
    d = sec.app_dir("a", "p3_wdir", "SuFcgiWrapper /usr/bin/php-cgi .php\n", apps=())
    payload = b"<?php echo 'payload ran as ' . posix_getuid();\n"
    put(d / "index.php", (APPS / "env.php").read_bytes(), A)
    up = mkdir(d / "up", A, 0o777)
    put(up / "upload.gif", payload, A)
    run_as(b.uid, b.gid, f"import os; os.rename({str(up / 'upload.gif')!r}, {str(up / 'evil.php')!r})")
    assert (up / "evil.php").stat().st_uid == a.uid, "the renamed file is still the owner's"
    assert ok_json(apache, "/p3_wdir/index.php", "a")["uid"] == a.uid, "the directory itself is fine"
    text = _refused(apache, "a", "/p3_wdir/up/evil.php", ("writable",))
    assert f"{up} is writable by group or others (mode 0777)" in text, f"the log line names the directory{log_of(apache)}"
    # The owner's own script in a group-writable directory, and one level deeper below it.
    gw = mkdir(d / "gw", A, 0o775)
    put(gw / "mine.php", payload, A)
    mkdir(gw / "deeper", A, 0o755)
    put(gw / "deeper" / "mine.php", payload, A)
    _refused(apache, "a", "/p3_wdir/gw/mine.php", (f"{gw} is writable",))
    _refused(apache, "a", "/p3_wdir/gw/deeper/mine.php", (f"{gw} is writable",))
    # An uploads directory with the PHP engine off serves its files as files (as mod_php does).
    off = mkdir(d / "off", A, 0o777)
    put(off / ".htaccess", "php_flag engine off\n", A)
    put(off / "shown.php", payload, A)
    r = apache.get("/p3_wdir/off/shown.php", host=host("a"))
    assert (r.status, r.body) == (200, payload), f"engine off: the file itself{log_of(apache)}"


def test_p3_a_config_file_made_writable_while_its_pool_runs_is_refused(apache, sec):
    """The once-a-second look at a running pool's files compares their mode and owner too,
    not only their content: an .htaccess made group-writable is refused from then on."""
    a = sec.u["a"]
    d = sec.app_dir("a", "p3_live_mode", "SuFcgiApp envapp.py\n")
    assert ok_json(apache, "/p3_live_mode/", "a")["uid"] == a.uid
    os.chmod(d / ".htaccess", 0o664)
    mark = apache.log_mark()
    wait_for(lambda: apache.get("/p3_live_mode/", host=host("a")).status == 403, 10,
             "the running pool's .htaccess, now group-writable, to be refused")
    apache.wait_log(mark, lambda t: "config file" in t and "writable" in t, "a log line naming the config file")
    # Every server process that had the pool cached has looked again (once a second).
    time.sleep(1.5)
    statuses = [apache.get("/p3_live_mode/", host=host("a")).status for _ in range(30)]
    assert set(statuses) == {403}, f"some requests still served by the running pool: {statuses}{log_of(apache, mark)}"
    os.chmod(d / ".htaccess", 0o644)
    wait_for(lambda: apache.get("/p3_live_mode/", host=host("a")).status == 200, 10, "the pool to serve again")


# ---------------------------------------------------------------- 4. check-vs-exec race

def _swap_race(apache, sec, rel, good: bytes, planted_owned_by_b: Path, seconds: float):
    """Swap <rel>/app.py (or the binary) for a symlink to / a copy of b's planted file
    thousands of times while 3 clients keep requests (and so spawns: SuFcgiMaxRequests 1)
    going. Returns (swaps, status counts, marker lines of planted runs)."""
    r_, b = sec.u["race"], sec.u["b"]
    for m in MARKERS.glob("ran-*"):
        m.unlink()
    bad = planted_owned_by_b.read_bytes()
    d = sec.app_dir("race", rel, "SuFcgiApp app\nSuFcgiMaxRequests 1\nSuFcgiMaxWorkers 2\n", apps=())
    put(d / "app", good, r_.ids, 0o755)
    harness.put_app_helpers(d, good, r_.ids)
    first = apache.get(f"/{rel}/", host=host("race"), method="POST", body=b"x")
    assert first.status == 200, f"the unswapped app must serve: {first}{log_of(apache)}"
    stop = threading.Event()
    swaps = [0]

    def swapper():
        i = 0
        while not stop.is_set():
            tmp = d / f".swap{i % 4}"
            try:
                if tmp.is_symlink() or tmp.exists():
                    tmp.unlink()
                if i % 2 == 0:
                    put(tmp, good, r_.ids, 0o755)
                elif i % 4 == 1:
                    os.symlink(planted_owned_by_b, tmp)
                    os.lchown(tmp, *r_.ids)
                else:
                    put(tmp, bad, b.ids, 0o755)
                os.rename(tmp, d / "app")
            except OSError:
                pass
            i += 1
            swaps[0] = i
            time.sleep(0.0005 if i % 2 else 0.002)

    counts: dict = {}
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            t = harness.timed_request(apache.port, f"/{rel}/", host=host("race"), method="POST",
                                      body=b"x", timeout=10)
            with lock:
                counts[str(t.status)] = counts.get(str(t.status), 0) + 1

    threads = [threading.Thread(target=swapper, daemon=True)] + \
              [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(20)
    put(d / "app", good, r_.ids, 0o755)
    time.sleep(0.5)
    ran = sorted(p.read_text().strip() for p in MARKERS.glob("ran-*"))
    return swaps[0], counts, ran


def test_p4_swapping_the_app_never_runs_an_unchecked_file(apache, sec, tmp_path):
    """Checks run on a path; every spawn (the first and each respawn) re-opens the
    program as the owner without following symlinks, compares it with the checked
    file (device and inode, owner, mode) and, for a binary, execs through that very
    descriptor: a swapped binary never runs. A script's interpreter opens the script
    again by its path (as every CGI and FastCGI runner does), so for scripts the
    property holds only up to that re-open: documented limit, asserted here: whatever
    ran, ran as the directory's owner — never as the planted file's owner, never root."""
    r_, b = sec.u["race"], sec.u["b"]
    # Binaries: check and exec through the same descriptor.
    good_elf = harness.compile_c_app(APPS / "env.c", tmp_path / "good", r_.ids).read_bytes()
    planted_elf = harness.compile_c_app(APPS / "sec_planted.c", b.home / "planted-elf", b.ids)
    swaps, counts, ran = _swap_race(apache, sec, "p4bin", good_elf, planted_elf, 8)
    print(f"\np4 binary: {swaps} swaps, responses {counts}, planted binary ran {len(ran)} times")
    assert swaps >= 1000, f"only {swaps} swaps"
    assert not ran, f"a planted binary ran {len(ran)} times ({swaps} swaps, {counts}): {ran[:3]}"
    # Scripts: the documented limit.
    planted_py = put_app(b.home / "planted.py", "sec_planted.py", b.ids)
    good_py = (APPS / "sec_rawfcgi.py").read_bytes()
    swaps, counts, ran = _swap_race(apache, sec, "p4", good_py, planted_py, 8)
    print(f"p4 script: {swaps} swaps, responses {counts}, planted script ran {len(ran)} times")
    assert swaps >= 1000, f"only {swaps} swaps"
    assert all(line.startswith(f"uid={r_.uid} ") for line in ran), \
        f"a planted script ran as someone other than the directory's owner {r_.uid}: {ran}"


# ---------------------------------------------------------------- 5. socket access

CONNECT = r"""
import socket, sys, json
out = {}
for p in json.loads(sys.stdin.read()):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(p)
        out[p] = "connected"
    except OSError as e:
        out[p] = e.__class__.__name__ + ":" + str(e.errno)
    s.close()
print(json.dumps(out))
"""


def test_p5_other_uids_cannot_reach_worker_or_supervisor_sockets(apache, sec):
    sec.app_dir("a", "p5", "SuFcgiApp envapp.py\n")
    ok_json(apache, "/p5/", "a")
    sdir = socket_dir(apache)
    st = os.lstat(sdir)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, harness.WWW_DATA[1], 0o750), \
        f"socket dir {sdir}: uid {st.st_uid} gid {st.st_gid} mode {oct(st.st_mode)}"
    socks = sorted(str(p) for p in sdir.glob("*.sock"))
    sup = str(sdir / "supervisor.sock")
    assert sup in socks and len(socks) >= 2, socks
    b = sec.u["b"]
    res = json.loads(run_as(b.uid, b.gid, CONNECT, stdin=json.dumps(socks)))
    assert all(v == "PermissionError:13" for v in res.values()), f"as uid {b.uid}: {res}"
    # a peer that passes the directory (group www-data) but is not httpd's uid: the
    # supervisor checks SO_PEERCRED and drops it without an answer
    mark = apache.log_mark()
    out = run_as(b.uid, b.gid, SUPERVISOR_CLIENT, groups=[harness.WWW_DATA[1]],
                 stdin=json.dumps({"path": sup, "frames": [_ensure_frame(1, 0, 1, "/x", "/", []).hex()]}))
    replies = json.loads(out)
    assert replies == [["closed"]], f"supervisor answered a non-httpd peer: {replies}"
    apache.wait_log(mark, lambda t: "refused supervisor connection" in t and f"uid {b.uid}" in t,
                    "the supervisor's refusal of a foreign peer")


# ---------------------------------------------------------------- 6. planted symlinks

def test_p6_planted_symlinks_at_socket_paths_fail_safely(server, sec):
    a = sec.u["a"]
    sec.app_dir("a", "p6", "SuFcgiApp envapp.py\n")
    victim_dir = Path("/tmp/sufcgi-sec-victimdir")
    shutil.rmtree(victim_dir, ignore_errors=True)
    mkdir(victim_dir, a.ids, 0o777)
    victim = put(Path("/tmp/sufcgi-sec-victimfile"), "victim\n", a.ids, 0o644)

    def unchanged():
        st, fst = os.lstat(victim_dir), os.lstat(victim)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (a.uid, a.gid, 0o777), \
            f"victim dir changed: {st.st_uid}:{st.st_gid} {oct(st.st_mode)}"
        assert (fst.st_uid, fst.st_gid, fst.st_mode & 0o7777) == (a.uid, a.gid, 0o644), \
            f"victim file changed: {fst.st_uid}:{fst.st_gid} {oct(fst.st_mode)}"
        assert victim.read_text() == "victim\n"

    # (a) SuFcgiSocketDir is a symlink (to a customer's world-writable directory)
    link = Path("/tmp/sufcgi-sec-sockdir-link")
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(victim_dir, link)
    srv = server(extra=f"SuFcgiSocketDir {link}", keys=["a"], expect_start=False)
    started = True
    try:
        srv.start()
    except harness.HarnessError:
        started = False
    if started:
        r = srv.get("/p6/", host=host("a"))
        assert r.status != 200, f"a worker was served through a symlinked socket dir: {r}"
        srv.stop()
    text = srv.log_since(0)
    assert "symlink" in text, f"no log line about the symlinked socket dir{log_of(srv)}"
    assert not list(victim_dir.iterdir()), f"files created in the symlink target: {list(victim_dir.iterdir())}"
    unchanged()
    link.unlink()

    # (b) symlinks pre-planted at socket paths inside a real socket dir
    sdir = Path("/tmp/sufcgi-sec-sockdir-real")
    shutil.rmtree(sdir, ignore_errors=True)
    mkdir(sdir, ROOT, 0o750)
    os.symlink(victim, sdir / "supervisor.sock")
    os.symlink(victim, sdir / "0000000000000001.0.sock")
    os.symlink(victim_dir, sdir / "0000000000000002.0.sock")
    srv = server(extra=f"SuFcgiSocketDir {sdir}", keys=["a"], expect_start=False)
    try:
        srv.start()
        j = ok_json(srv, "/p6/", "a")
        assert j["uid"] == a.uid
    except harness.HarnessError:
        pass  # refusing to start is a safe outcome too
    srv.stop()
    unchanged()
    assert victim.exists() and victim_dir.is_dir()
    shutil.rmtree(sdir, ignore_errors=True)


# ---------------------------------------------------------------- 7. who gets signalled

def test_p7_only_processes_the_supervisor_forked_are_signalled(server, sec):
    """Targets are the pids returned by fork() in the supervisor (still unreaped, so the
    pid cannot have been reused), signalled as their process group (-pid: the worker
    called setsid), and the members of the workers' cgroups, signalled while the group is
    frozen (so none can exit and have its pid reused meanwhile): everything a worker
    started, a descendant that called setsid() included. A pid an app writes into a file
    is never read. Without cgroups (SuFcgiCgroups off) the setsid() descendant is out of
    reach — the limit that remains, asserted in the second half."""
    k = sec.u["kill"]
    d = sec.app_dir("kill", "p7", "SuFcgiApp sec_family.py 2\nSuFcgiMaxRequests 1\n",
                    apps=("sec_family.py", "sec_rawfcgi.py"))
    victim = subprocess.Popen(["/bin/sleep", "300"], preexec_fn=lambda: (os.setsid(), os.setgid(k.gid),
                                                                          os.setuid(k.uid)))
    try:
        put(d / "victim_in", str(victim.pid), k.ids)
        srv = server(keys=["kill"])
        r = srv.get("/p7/", host=host("kill"), method="POST", body=b"1")
        assert r.status == 200, f"{r}{log_of(srv)}"
        fam = json.loads(wait_for(lambda: (d / "family.json").exists() and (d / "family.json").read_text(),
                                  10, "family.json"))
        assert (d / "app.pid").read_text().strip() == str(victim.pid)
        # max-requests recycling and a second worker generation
        for _ in range(3):
            srv.get("/p7/", host=host("kill"), method="POST", body=b"1")
        time.sleep(1)
        assert harness.pid_alive(victim.pid), "the pid the app wrote into app.pid was killed"
        harness.request_stop(srv)
        wait_for(lambda: not harness.pid_alive(srv.master), 20, "Apache to stop")
        wait_for(lambda: not any(harness.pid_alive(p) for p in fam["group"] + [fam["worker"]]), 10,
                 "the worker and the children in its process group to be stopped")
        assert harness.pid_alive(victim.pid), "a process the supervisor never forked was killed"
        # in the worker's cgroup, the setsid() grandchild stops with it
        wait_for(lambda: not harness.pid_alive(fam["setsid"]), 10, "the setsid() grandchild to be stopped (cgroup)")
        srv.stop()   # (the harness's clean-up also ends the victim, a test user's process)

        # the limit without cgroups: a descendant that called setsid() is not in the worker's group
        (d / "family.json").unlink()
        srv = server(extra="SuFcgiCgroups off", keys=["kill"])
        assert srv.get("/p7/", host=host("kill"), method="POST", body=b"1").status == 200
        fam = json.loads(wait_for(lambda: (d / "family.json").exists() and (d / "family.json").read_text(),
                                  10, "family.json"))
        harness.request_stop(srv)
        wait_for(lambda: not harness.pid_alive(srv.master), 20, "the server to stop")
        wait_for(lambda: not any(harness.pid_alive(p) for p in fam["group"] + [fam["worker"]]), 10,
                 "the worker and the children in its process group to be stopped")
        assert harness.pid_alive(fam["setsid"]), \
            "SuFcgiCgroups off, and the setsid() grandchild was stopped: update SECURITY.md (the limit no longer applies)"
    finally:
        victim.kill()
        victim.wait()


# ---------------------------------------------------------------- 8. supervisor protocol

# Limits: 7 u32, the memory limit (u64), the slow log (u32), X-Sendfile (u8).
LIMITS = struct.pack("<7IQIB", 4, 0, 300, 0, 100, 60, 0, 0, 0, 0)


def _b(x) -> bytes:
    x = x.encode() if isinstance(x, str) else x
    return struct.pack("<I", len(x)) + x


def _ensure_frame(generation: int, vhost: int, kind: int, program: str, workdir: str, args,
                  config_files=(), env=()) -> bytes:
    """TAG_ENSURE (1) frame of src/core/supervisor/protocol.rs, version 4."""
    body = struct.pack("<QIB", generation, vhost, kind) + _b(program)
    body += struct.pack("<I", len(args)) + b"".join(_b(a) for a in args)
    body += _b(workdir)
    body += struct.pack("<I", len(config_files)) + b"".join(_b(c) for c in config_files)
    body += struct.pack("<I", len(env)) + b"".join(_b(k) + _b(v) for k, v in env)
    body += LIMITS + b"\0" + b"\0" + b"\0"      # no restart file, no log file, no userdir user
    payload = bytes([4, 1]) + body
    return struct.pack("<I", len(payload)) + payload


SUPERVISOR_CLIENT = r"""
import json, socket, struct, sys
req = json.loads(sys.stdin.read())
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(req["path"])
out = []
def recv_exact(n):
    buf = b""
    while len(buf) < n:
        c = s.recv(n - len(buf))
        if not c:
            return None
        buf += c
    return buf
for f in req["frames"]:
    try:
        s.sendall(bytes.fromhex(f))
        head = recv_exact(4)
    except OSError:
        head = None
    if head is None:
        out.append(["closed"])
        break
    p = recv_exact(struct.unpack("<I", head)[0])
    tag = p[1]
    if tag == 4:
        status = struct.unpack("<H", p[2:4])[0]
        n = struct.unpack("<I", p[4:8])[0]
        out.append(["refused", status, p[8:8 + n].decode(errors="replace")])
    elif tag == 3:
        n = struct.unpack("<I", p[2:6])[0]
        slot, gen, uid, gid = struct.unpack("<4I", p[6 + n:22 + n])
        out.append(["ready", uid, gid, p[6:6 + n].decode(errors="replace")])
    else:
        out.append(["tag", tag])
print(json.dumps(out))
"""


def test_p8_a_compromised_child_cannot_get_a_worker_as_another_uid(apache, sec):
    a, b = sec.u["a"], sec.u["b"]
    da = sec.app_dir("a", "p8", "SuFcgiApp envapp.py\n")
    db = sec.app_dir("b", "p8", "SuFcgiApp envapp.py\n")
    ok_json(apache, "/p8/", "a")
    # the configuration generation (ap_state_query(AP_SQ_CONFIG_GEN)): the one the
    # supervisor does not call unknown
    sup_path = str(socket_dir(apache) / "supervisor.sock")
    probe = json.loads(run_as(harness.WWW_DATA[0], harness.WWW_DATA[1], SUPERVISOR_CLIENT, stdin=json.dumps(
        {"path": sup_path, "frames": [_ensure_frame(g, 0, 3, "/nonexistent", "/", []).hex() for g in range(8)]})))
    known = [g for g, rep in enumerate(probe) if "unknown configuration generation" not in str(rep)]
    assert known, f"no generation 0..7 known to the supervisor: {probe}"
    gen = known[-1]
    pwned = Path("/tmp/sufcgi-sec-p8-pwned")
    if pwned.exists():
        pwned.unlink()
    n_vhosts = len(sec.vhosts()) + 2
    attacks = []
    for v in range(n_vhosts):
        # another user's file, presented under every vhost index
        attacks.append(("b's app", v, _ensure_frame(gen, v, 1, str(db / "envapp.py"), str(db), [],
                                                    [str(db / ".htaccess")]), b.uid))
        # a root-owned program
        attacks.append(("root-owned program", v, _ensure_frame(gen, v, 3, "/usr/bin/id", "/usr/bin", []), None))
        # a root-owned interpreter as "wrapper" with attacker-chosen arguments, run in a
        # customer's directory that has no .htaccess configuring any such wrapper
        attacks.append(("root interpreter + attacker args", v, _ensure_frame(
            gen, v, 2, "/usr/bin/python3",
            str(da), ["-c", f"import os; open('{pwned}', 'a').write(str(os.getuid()) + chr(10))"]), None))
    frames = [f.hex() for _, _, f, _ in attacks]
    replies = []
    for i in range(0, len(frames), 12):   # one connection per batch
        out = run_as(harness.WWW_DATA[0], harness.WWW_DATA[1], SUPERVISOR_CLIENT,
                     stdin=json.dumps({"path": str(socket_dir(apache) / "supervisor.sock"),
                                       "frames": frames[i:i + 12]}))
        replies += json.loads(out)
    assert len(replies) == len(attacks), f"the supervisor dropped the connection: {replies}"
    wrong = []
    for (what, v, _, legit_uid), rep in zip(attacks, replies):
        if rep[0] == "ready":
            if legit_uid is None or rep[1] != legit_uid:
                wrong.append(f"{what} with vhost index {v}: READY as uid {rep[1]} gid {rep[2]}")
        else:
            assert rep[0] == "refused", rep
    time.sleep(1)
    ran = pwned.read_text().split() if pwned.exists() else []
    assert not wrong, ("a direct supervisor client got workers it should not:\n  " + "\n  ".join(wrong)
                       + (f"\nthe attacker's code ran as uid(s) {sorted(set(ran))}" if ran else ""))
    assert not ran


# ---------------------------------------------------------------- 9. environment allowlist

def test_p9_worker_environment_is_an_allowlist(apache, sec):
    a = sec.u["a"]
    d = sec.app_dir("a", "p9", "SuFcgiApp envapp.py\nSuFcgiEnv APP_MODE prod\n"
                               "SetEnv LD_PRELOAD /tmp/evil.so\nSetEnv PHPRC /tmp\n"
                               "SetEnv HTTP_PROXY http://setenv.invalid:1\n")
    hdrs = {"Proxy": "http://header.invalid:1", "LD-PRELOAD": "/tmp/evil.so", "PHPRC": "/tmp",
            "PHP-VALUE": "auto_prepend_file=/tmp/x"}
    j = ok_json(apache, "/p9/", "a", headers=hdrs)
    env = proc_environ(j["pid"])
    assert set(env) == {b"PATH", b"HOME", b"USER", b"LOGNAME", b"APP_MODE"}, \
        f"worker environment: {sorted(env)}"
    assert env[b"USER"] == a.name.encode() and env[b"HOME"] == str(a.home).encode()
    assert env[b"APP_MODE"] == b"prod"
    late = []
    if "HTTP_PROXY" in j["env"]:
        late.append(f"HTTP_PROXY reached the app as a param: {j['env']['HTTP_PROXY']!r}")
    # refused SuFcgiEnv names: 500, nothing spawned
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PHPRC", "PHP_VALUE", "PHP_ADMIN_VALUE",
                 "HTTP_PROXY", "PATH"):
        d = sec.app_dir("a", "p9_" + name.lower(), f"SuFcgiApp envapp.py\nSuFcgiEnv {name} x\n")
        r = apache.get(f"/p9_{name.lower()}/", host=host("a"))
        assert r.status == 500, f"SuFcgiEnv {name}: expected 500, got {r}"
        assert not workers_in(d)
    # php-cgi workers: the allowlist plus PHP_FCGI_MAX_REQUESTS=0
    d = sec.app_dir("php", "p9", "SuFcgiWrapper /usr/bin/php-cgi .php\n", apps=())
    put(d / "env.php", (APPS / "env.php").read_bytes(), sec.u["php"].ids, 0o644)
    j = ok_json(apache, "/p9/env.php", "php", headers=hdrs)
    env = proc_environ(int(j["pid"]))
    assert set(env) == {b"PATH", b"HOME", b"USER", b"LOGNAME", b"PHP_FCGI_MAX_REQUESTS"}, sorted(env)
    assert env[b"PHP_FCGI_MAX_REQUESTS"] == b"0"
    for bad in ("HTTP_PROXY", "PHP_VALUE", "PHP_ADMIN_VALUE", "PHPRC"):
        if bad in j["env"]:
            late.append(f"{bad} reached php as a param: {j['env'][bad]!r}")
    assert not late, "; ".join(late)


# ---------------------------------------------------------------- 10. header names

def test_p10_proxy_and_underscore_headers_never_become_colliding_params(apache, sec):
    sec.app_dir("a", "p10", "SuFcgiApp envapp.py\n")
    j = ok_json(apache, "/p10/", "a", headers={
        "Proxy": "http://evil.invalid:1",
        "X-Forwarded-For": "good", "X_Forwarded_For": "evil",
        "Content_Type": "evil", "Remote_User": "evil", "Auth_Type": "evil",
    })
    env = j["env"]
    assert "HTTP_PROXY" not in env, env.get("HTTP_PROXY")
    assert env.get("HTTP_X_FORWARDED_FOR") == "good", env.get("HTTP_X_FORWARDED_FOR")
    assert env.get("CONTENT_TYPE", "") != "evil"
    assert env.get("HTTP_CONTENT_TYPE", "") != "evil"
    assert env.get("HTTP_REMOTE_USER", "") != "evil" and env.get("REMOTE_USER", "") != "evil"
    assert "evil" not in [v for k, v in env.items() if k.startswith("HTTP_")], \
        {k: v for k, v in env.items() if v == "evil"}


# ---------------------------------------------------------------- 11. CR/LF/NUL

def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                c = s.recv(65536)
            except (socket.timeout, OSError):
                break
            if not c:
                break
            out += c
    return out


def _status(raw: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.\d (\d{3})", raw)
    return int(m.group(1)) if m else None


def test_p11_cr_lf_nul_in_params_give_400_before_any_backend(apache, sec):
    d = sec.app_dir("a", "p11", "SuFcgiApp envapp.py\n")
    d2 = sec.app_dir("a", "p11rw", "SuFcgiApp envapp.py\nRewriteEngine On\n"
                                   "RewriteRule ^x(.*)$ - [E=SEC_X:$1]\n")
    for path in ("/p11/a%0d%0aX-Injected:%20yes", "/p11/a%0ab", "/p11/a%0db", "/p11rw/x%0aevil"):
        mark = apache.log_mark()
        r = apache.get(path, host=host("a"))
        assert r.status == 400, f"{path}: expected 400, got {r}{log_of(apache, mark)}"
    # NUL: httpd itself refuses %00 in a path (404) before any handler
    r = apache.get("/p11/a%00b", host=host("a"))
    assert r.status in (400, 404), r
    assert not workers_in(d) and not workers_in(d2), "a worker was started for a refused request"


# ---------------------------------------------------------------- 12. bodies

def test_p12_body_limits_and_exact_stdin_bytes(apache, sec):
    spawned_for_413 = []
    # LimitRequestBody is Apache's own directive (lighttpd's limit is the host's
    # server.max-request-size, which lighttpd enforces before any module runs).
    if apache.mpm != "lighttpd":
        d = sec.app_dir("bad", "p12limit", "SuFcgiApp sec_rawfcgi.py stdin\nLimitRequestBody 1000\n",
                        apps=("sec_rawfcgi.py",))
        r = apache.get("/p12limit/", host=host("bad"), method="POST", body=b"z" * 5000)
        assert r.status == 413, r
        spawned_for_413 = workers_in(d)
        chunked = (b"POST /p12limit/ HTTP/1.1\r\nHost: bad.sec.test\r\nTransfer-Encoding: chunked\r\n"
                   b"Connection: close\r\n\r\n" + b"".join(b"400\r\n" + b"q" * 1024 + b"\r\n" for _ in range(5))
                   + b"0\r\n\r\n")
        raw = _raw(apache.port, chunked)
        assert _status(raw) == 413, raw[:200]

    sec.app_dir("bad", "p12", "SuFcgiApp sec_rawfcgi.py stdin\n", apps=("sec_rawfcgi.py",))
    rnd = random.Random(12)
    fake = [b"\x01\x05\x00\x01\xff\xff\x00\x00", b"\x01\x03\x00\x01\x00\x08\x00\x00" + b"\0" * 8,
            b"\x01\x06\x00\x01\x00\x00\x00\x00", b"\x01\x04\x00\x01\x00\x00\x00\x00", b"\0" * 8]
    sizes = [1, 7, 8, 9, 65535, 65536, 65537, 131071, 200000] + [rnd.randrange(1, 300000) for _ in range(8)]
    for n in sizes:
        parts, total = [], 0
        while total < n:
            p = rnd.choice(fake) if rnd.random() < 0.7 else bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
            parts.append(p)
            total += len(p)
        body = b"".join(parts)[:n]
        j = ok_json(apache, "/p12/", "bad", method="POST", body=body,
                    headers={"Content-Type": "application/octet-stream"})
        assert j["length"] == n and j["sha256"] == hashlib.sha256(body).hexdigest(), f"size {n}: {j}"
        assert max(j["records"]) <= 65535, f"STDIN record of {max(j['records'])} bytes"
    # chunked upload of FastCGI-looking bytes
    body = b"".join(fake) * 3000
    req = (b"POST /p12/ HTTP/1.1\r\nHost: bad.sec.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           + b"".join(b"%x\r\n" % len(body[i:i + 7000]) + body[i:i + 7000] + b"\r\n"
                      for i in range(0, len(body), 7000)) + b"0\r\n\r\n")
    raw = _raw(apache.port, req)
    assert _status(raw) == 200, raw[:300]
    j = json.loads(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[1]) if b"chunked" in raw.split(b"\r\n\r\n")[0].lower() \
        else json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert j["sha256"] == hashlib.sha256(body).hexdigest() and max(j["records"]) <= 65535
    assert not spawned_for_413, (f"a worker (pids {spawned_for_413}) was spawned for a request whose "
                                 "Content-Length exceeds LimitRequestBody (413 came only after)")


# ---------------------------------------------------------------- 13. php settings

INI_PHP = """<?php
header('Content-Type: application/json');
echo json_encode(array('memory_limit' => ini_get('memory_limit'),
    'auto_prepend_file' => ini_get('auto_prepend_file'), 'pid' => getmypid(),
    'php_value' => isset($_SERVER['PHP_VALUE']) ? $_SERVER['PHP_VALUE'] : null,
    'php_admin_value' => isset($_SERVER['PHP_ADMIN_VALUE']) ? $_SERVER['PHP_ADMIN_VALUE'] : null));
"""


def test_p13_a_request_cannot_change_php_settings(apache, sec):
    p = sec.u["php"]
    d = sec.app_dir("php", "p13",
                    "SuFcgiWrapper /usr/bin/php-cgi .php\nSuFcgiMaxWorkers 1\nRewriteEngine On\n"
                    "RewriteRule ^set\\.php$ - [E=PHP_VALUE:memory_limit=7M,E=PHP_ADMIN_VALUE:memory_limit=9M]\n",
                    apps=())
    put(d / "ini.php", INI_PHP, p.ids)
    put(d / "set.php", INI_PHP, p.ids)
    base = ok_json(apache, "/p13/ini.php", "php")
    evil = {"PHP_VALUE": "memory_limit=5M", "PHP-VALUE": "memory_limit=5M",
            "PHP-ADMIN-VALUE": "memory_limit=6M"}
    s = ok_json(apache, "/p13/set.php", "php", headers=evil)
    after = ok_json(apache, "/p13/ini.php", "php")
    assert s["pid"] == after["pid"] == base["pid"], "expected one php worker for the whole test"
    assert s["memory_limit"] == base["memory_limit"], f"the request changed its own settings: {s}"
    assert after["memory_limit"] == base["memory_limit"], f"settings leaked into the next request: {after}"
    assert (s["php_value"], s["php_admin_value"]) == (None, None), \
        (f"PHP_VALUE/PHP_ADMIN_VALUE reached php as FastCGI params (php-cgi ignores them, "
         f"memory_limit stayed {s['memory_limit']}; php-fpm would apply them): {s}")


# ---------------------------------------------------------------- 14/15. hostile backends

BAD_MODES = ["badversion", "unknowntype", "wrongid", "lenpast", "truncated", "endless",
             "badstatus", "crheader", "nulheader"]


def _bad_dir(sec, mode):
    return sec.app_dir("bad", f"m_{mode}", f"SuFcgiApp sec_rawfcgi.py {mode}\nSuFcgiMaxWorkers 1\n",
                       apps=("sec_rawfcgi.py",))


def test_p14_malformed_fastcgi_from_a_backend_is_a_502(apache, sec):
    children = set(apache.child_pids())
    bad = []
    for mode in BAD_MODES:
        _bad_dir(sec, mode)
        mark = apache.log_mark()
        t0 = time.monotonic()
        r = harness.timed_request(apache.port, f"/m_{mode}/", host=host("bad"), timeout=20)
        if r.status != 502:
            bad.append(f"{mode}: {r!r}")
            continue
        try:
            apache.wait_log(mark, lambda t: "sufcgi" in t and f"m_{mode}" in t or "sufcgi:" in t,
                            f"a log line for {mode}", timeout=5)
        except AssertionError as e:
            bad.append(f"{mode}: 502 but no log line ({e})")
        assert time.monotonic() - t0 < 15
    assert not bad, "malformed backends not answered 502:\n  " + "\n  ".join(bad) + log_of(apache)
    assert children <= set(apache.child_pids()), "an Apache child went away"
    assert not apache.crash_lines()
    sec.app_dir("bad", "p14ok", "SuFcgiApp sec_rawfcgi.py stdin\n", apps=("sec_rawfcgi.py",))
    ok_json(apache, "/p14ok/", "bad")


def test_p15_huge_headers_and_location_tricks(apache, sec):
    bw = sec.u["bad"]
    mkdir(bw.www / "sec-other", bw.ids)
    put(bw.www / "sec-other" / "secret.txt", "TOP-SECRET-OTHER\n", bw.ids)
    _bad_dir(sec, "bigheaders")
    r = apache.get("/m_bigheaders/", host=host("bad"))
    assert r.status == 502, r
    _bad_dir(sec, "location")
    r = apache.get("/m_location/", host=host("bad"))
    assert r.status == 302, f"Location without Status: expected a 302 to the client, got {r}"
    assert (r.header("Location") or "").endswith("/sec-other/secret.txt"), r.headers
    assert b"TOP-SECRET" not in r.body
    _bad_dir(sec, "status200loc")
    r = apache.get("/m_status200loc/", host=host("bad"))
    assert b"TOP-SECRET" not in r.body, f"internal redirect happened: {r}"
    assert r.status == 200 and r.body == b"from-backend", r


# ---------------------------------------------------------------- 16. slow bodies

def test_p16_a_slow_body_does_not_hold_the_only_worker(apache, sec):
    sec.app_dir("slow", "p16", "SuFcgiApp sec_rawfcgi.py stdin\nSuFcgiMaxWorkers 1\n",
                apps=("sec_rawfcgi.py",))
    ok_json(apache, "/p16/", "slow", method="POST", body=b"warm")
    n = 8
    slow_status = []

    def slow_client():
        with socket.create_connection(("127.0.0.1", apache.port), timeout=30) as s:
            s.sendall(b"POST /p16/ HTTP/1.1\r\nHost: slow.sec.test\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % n)
            for _ in range(n):
                time.sleep(1)
                s.sendall(b"s")
            data = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
            slow_status.append(_status(data))

    t = threading.Thread(target=slow_client, daemon=True)
    t.start()
    time.sleep(2)
    other = harness.timed_request(apache.port, "/p16/", host=host("slow"), method="POST",
                                  body=b"fast", timeout=30)
    t.join(40)
    workers = harness.processes_of_uids([sec.u["slow"].uid])
    print(f"\np16: request during a 1 byte/s upload: {other!r}; slow upload: {slow_status}; "
          f"workers of the owner: {len(workers)}")
    assert other.status == 200, other
    assert other.elapsed < 3, (f"a request waited {other.elapsed:.1f} s behind a client uploading "
                               f"1 byte/s (the worker is claimed before the body is read)")


# ---------------------------------------------------------------- 17. caps and backoff

def test_p17_per_owner_caps_and_backoff_hold(server, sec):
    f, c = sec.u["fork"], sec.u["crash"]
    for i in range(4):
        sec.app_dir("fork", f"p17_{i}", "SuFcgiApp sec_rawfcgi.py stdin\nSuFcgiMinWorkers 2\n"
                                        "SuFcgiMaxWorkers 4\n", apps=("sec_rawfcgi.py",))
    fam = sec.app_dir("fork", "p17_family", "SuFcgiApp sec_family.py 20\n",
                      apps=("sec_family.py", "sec_rawfcgi.py"))
    sec.app_dir("crash", "p17", "SuFcgiApp lc_dies_at_start.py\n", apps=("lc_dies_at_start.py",))
    srv = server(extra="SuFcgiMaxWorkersPerOwner 3", keys=["fork", "crash"])
    statuses = [srv.get(f"/p17_{i}/", host=host("fork"), method="POST", body=b"x").status for i in range(4)]
    peak = 0
    t_end = time.monotonic() + 3
    while time.monotonic() < t_end:
        ws = [p for p in harness.processes_of_uids([f.uid])]
        peak = max(peak, len(ws))
        time.sleep(0.1)
    print(f"\np17: statuses {statuses}, peak workers of one owner with cap 3: {peak}")
    assert peak <= 3, f"{peak} processes for one owner with SuFcgiMaxWorkersPerOwner 3"
    assert statuses.count(200) >= 1 and all(s in (200, 503) for s in statuses), statuses

    # crash loop: backoff bounds the spawns
    mark = srv.log_mark()
    t_end = time.monotonic() + 8
    codes: dict = {}
    while time.monotonic() < t_end:
        r = harness.timed_request(srv.port, "/p17/", host=host("crash"), timeout=10)
        codes[r.status] = codes.get(r.status, 0) + 1
        time.sleep(0.05)
    spawns = srv.log_since(mark).count("exiting at start on purpose")
    print(f"p17: crash loop for 8 s: {spawns} spawns, responses {codes}")
    assert spawns <= 15, f"{spawns} spawns of an app that exits at start within 8 s"
    assert codes.get(503, 0) > 0

    # the processes a worker forks itself are capped too (SuFcgiOwnerMaxProcesses: the
    # owner's pids.max, RLIMIT_NPROC without cgroups), and stop with it, setsid() or not
    harness.kill_pids(harness.processes_of_uids([f.uid]))
    srv.stop()
    for extra in ("SuFcgiOwnerMaxProcesses 12", "SuFcgiOwnerMaxProcesses 12\nSuFcgiCgroups off"):
        (fam / "family.json").unlink(missing_ok=True)
        srv2 = server(extra=extra, keys=["fork"])
        r = srv2.get("/p17_family/", host=host("fork"), method="POST", body=b"x")
        assert r.status == 200, f"{extra}: {r}{log_of(srv2)}"
        info = json.loads(wait_for(lambda: (fam / "family.json").exists() and (fam / "family.json").read_text(),
                                   10, "family.json"))
        alive = [p for p in info["group"] if harness.pid_alive(p)]
        assert info["refused"] == "EAGAIN" and len(alive) < 12, f"{extra}: {len(alive)} of 20 children forked ({info})"
        assert len(harness.processes_of_uids([f.uid])) <= 12
        harness.request_stop(srv2)
        wait_for(lambda: not any(harness.pid_alive(p) for p in info["group"]), 20,
                 "the worker's children to be stopped with the server")
        harness.kill_pids(harness.processes_of_uids([f.uid]))


# ---------------------------------------------------------------- 18. refusal storm

def test_p18_2000_misconfigured_apps_cause_no_fork_storm(apache, sec):
    s = sec.u["storm"]
    root = s.www / "p18"
    shutil.rmtree(root, ignore_errors=True)
    mkdir(root, s.ids)
    code = (APPS / "sec_rawfcgi.py").read_bytes()
    for i in range(2000):
        d = mkdir(root / f"d{i:04d}", s.ids)
        if i % 2:
            put(d / "app.py", code, s.ids, 0o775)       # group-writable: refused
            harness.put_app_helpers(d, code, s.ids)
            put(d / ".htaccess", "SuFcgiApp app.py\n", s.ids)
        else:
            put(d / ".htaccess", "SuFcgiApp missing.py\n", s.ids)   # no such file
    sup = harness.supervisor_pids_from_log(apache)[-1]
    # warm the supervisor's code paths first
    apache.get("/p18/d0000/", host=host("storm"))
    rss0 = harness.rss_kib(sup)
    kids0 = len(harness.descendants(sup))
    counts: dict = {}
    lock = threading.Lock()
    peak = [0]
    idx = iter(range(2000))

    def client():
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                return
            t = harness.timed_request(apache.port, f"/p18/d{i:04d}/", host=host("storm"), timeout=20)
            with lock:
                counts[t.status] = counts.get(t.status, 0) + 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and time.monotonic() - t0 < 120:
        peak[0] = max(peak[0], len(harness.descendants(sup)) - kids0)
        time.sleep(0.05)
    for t in threads:
        t.join(5)
    elapsed = time.monotonic() - t0
    rss1 = harness.rss_kib(sup)
    print(f"\np18: 2000 refused apps in {elapsed:.1f} s, statuses {counts}, supervisor RSS "
          f"{rss0} -> {rss1} KiB, peak extra supervisor descendants {peak[0]}")
    assert sum(counts.values()) == 2000
    assert set(counts) <= {403, 404, 500}, counts
    assert not harness.processes_of_uids([s.uid]), "a refused app has processes"
    assert peak[0] == 0, f"{peak[0]} processes forked for refused apps"
    assert rss1 - rss0 < 8 * 1024, f"supervisor RSS grew {rss1 - rss0} KiB"
