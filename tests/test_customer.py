"""What a customer without a shell can see (issue 18): their SuFcgiLog (refusals
with the reason, errors, the app's stderr, lifecycle events, slow requests; rate
limited; anywhere they can write), the refusal pages a visitor sees (no paths, no
stderr), their status page (last refusal, last exit, stderr lines, back-off), the
host's access-log values per request, and X-Sendfile confined to the owner's files.

Own users (sufcgi-cu-a, sufcgi-cu-b: the first free uids from 2701 and 2702, below 2750), own vhosts; one server per kind (event, prefork, lighttpd), the
1 GiB X-Sendfile case on event and lighttpd only. What a customer sees is also
written to EVIDENCE (the closing note of the issue quotes it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import Vhost, ensure_user, mkdir, put, put_app, wait_for

LOCK_FILE = Path("/tmp/sufcgi-customer-tests.lock")
EVIDENCE = Path("/tmp/sufcgi-customer-evidence")
A_HOST, B_HOST = "a.cu.test", "b.cu.test"
ROOT = (0, 0)
BIG = 1 << 30
NOTES = ("sufcgi-queue-ms", "sufcgi-worker-pid", "sufcgi-worker-cpu-ms", "sufcgi-pool")


def app_dir(user, name: str, htaccess: str, app: str = "cu_app.py", mode: int = 0o755) -> Path:
    d = mkdir(user.www / name, user.ids)
    if app:
        put_app(d / app, app, user.ids, mode)
    put(d / ".htaccess", htaccess, user.ids)
    return d


class Site:
    def __init__(self, server, a, b):
        self.s, self.a, self.b = server, a, b
        self.log = a.home / "logs" / "app.log"

    def get(self, path: str, **kw) -> harness.Response:
        return self.s.get(path, host=A_HOST, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, pattern: str, what: str, timeout: float = 10) -> str:
        """The customer log once a line matches `pattern` (a regex); that line."""
        rx = re.compile(pattern)
        found: list[str] = []

        def seen():
            found[:] = [l for l in self.log_text().splitlines() if rx.search(l)]
            return bool(found)
        try:
            wait_for(seen, timeout, what)
        except harness.HarnessError:
            pytest.fail(f"{what}: no line matching {pattern!r} in {self.log}:\n{self.log_text()[-3000:]}"
                        f"\n--- server error log ---\n{self.s.log_tail(30)}", pytrace=False)
        return found[-1]

    def status(self) -> dict:
        r = self.get("/status/?json")
        assert r.status == 200, f"customer status page: {r}\n{self.s.log_tail(20)}"
        return r.json()

    def pool(self, directory: str, state: str | None = None, timeout: float = 5) -> dict:
        d = str(self.a.www / directory)
        box: list[dict] = []

        def find():
            box[:] = [p for p in self.status()["pools"] if p["directory"].rstrip("/") == d and (state is None or p["state"] == state)]
            return bool(box)
        try:
            wait_for(find, timeout, f"pool of {d}")
        except harness.HarnessError:
            pytest.fail(f"no pool of {d} (state {state}) on the status page: {self.status()}", pytrace=False)
        return box[0]


def evidence(name: str, text: str):
    EVIDENCE.mkdir(exist_ok=True)
    (EVIDENCE / name).write_text(text)


@pytest.fixture(scope="module", params=["event", "worker", "prefork", "lighttpd"])
def cu(request, sufcgi_module):
    with harness.exclusive(LOCK_FILE, "the customer tests"):
        a = ensure_user("sufcgi-cu-a", 2701, limit=2750)
        b = ensure_user("sufcgi-cu-b", 2702, limit=2750)
        users = [a, b]
        harness.kill_pids(harness.processes_of_uids([u.uid for u in users]))
        for u in users:
            for child in list(u.home.iterdir()):
                if child.name != "www":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            for child in list(u.www.iterdir()):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        mkdir(a.home / "logs", a.ids)
        # The log is named three ways (relative with .., ~/, and the same file).
        app_dir(a, "app", "SuFcgiApp cu_app.py\nSuFcgiLog ../../logs/app.log\nSuFcgiSlowLog 1\n")
        app_dir(a, "xs", "SuFcgiApp cu_app.py\nSuFcgiLog ~/logs/app.log\nSuFcgiXSendfile on\n"
                         "SuFcgiMaxWorkers 1\nSuFcgiQueueLimit 0\n")
        app_dir(a, "noxs", "SuFcgiApp cu_app.py\n")
        app_dir(a, "refused", "SuFcgiApp cu_app.py\nSuFcgiLog ~/logs/app.log\n", mode=0o775)
        app_dir(a, "crashy", "SuFcgiApp lc_dies_at_start.py\nSuFcgiLog ~/logs/app.log\n", app="lc_dies_at_start.py")
        app_dir(a, "badlog", "SuFcgiApp cu_app.py\nSuFcgiLog /etc/sufcgi-cu-test.log\n")
        # A log path that is a symlink to root's file (the owner planted it).
        sl = app_dir(a, "symlog", "SuFcgiApp cu_app.py\nSuFcgiLog root.log\n")
        php = app_dir(a, "php", "SuFcgiWrapper /usr/bin/php-cgi .php\nSuFcgiLog ~/logs/app.log\n"
                                "php_flag display_errors off\nphp_flag log_errors on\n", app="")
        # An FTP client's umask 002: group-writable.
        put(php / "index.php", "<?php echo 'never runs';\n", a.ids, 0o664)
        put(php / "ok.php", "<?php trigger_error('cu-warning ' . ($_GET['t'] ?? ''), E_USER_WARNING); echo 'ok';\n", a.ids)
        st = mkdir(a.www / "status", a.ids)
        put(st / ".htaccess", "SetHandler sufcgi-status\n", a.ids)
        files = mkdir(a.www / "files", a.ids)
        put(files / "small.txt", "0123456789abcdef\n", a.ids)
        with open(files / "big.bin", "wb") as f:
            f.truncate(BIG)  # sparse: no disk, no time
        os.chown(files / "big.bin", *a.ids)
        put(b.www / "secret.txt", "bob's secret\n", b.ids)
        os.symlink(b.www / "secret.txt", files / "link_b.txt")
        os.lchown(files / "link_b.txt", *a.ids)
        rootfile = put(a.home / "rootfile", "root's\n", ROOT, 0o644)
        os.link(rootfile, files / "hard_root.txt")
        os.symlink(rootfile, sl / "root.log")
        os.lchown(sl / "root.log", *a.ids)

        vhosts = [Vhost(A_HOST, a.www), Vhost(B_HOST, b.www)]
        if request.param == "lighttpd":
            server = harness.Lighttpd(vhosts=vhosts)
            server.access_log = server.root / "access.log"
            server.access_log.touch()
            os.chown(server.access_log, *harness.WWW_DATA)  # lighttpd opens it after dropping root
            server.extra = ('server.modules += ( "mod_accesslog" )\n'
                            f'accesslog.filename = "{server.access_log}"\n'
                            'accesslog.format = "%>s %U ' + " ".join(f"%{{{n}}}e" for n in NOTES) + '"')
        else:
            server = harness.Apache(mpm=request.param, vhosts=vhosts)
            server.cu_log = server.root / "cu_access.log"
            server.extra = ('LogFormat "%>s %U ' + " ".join(f"%{{{n}}}n" for n in NOTES) + '" cu\n'
                            f"CustomLog {server.cu_log} cu")
            server.access_log = server.cu_log
        try:
            server.start()
            yield Site(server, a, b)
        finally:
            server.stop()
            harness.kill_pids(harness.processes_of_uids([u.uid for u in users]))


def no_secrets(body: bytes, *words: str):
    text = body.decode(errors="replace")
    for w in ("/home", "sufcgi-cu", "writable", "mode", "Traceback", *words):
        assert w not in text, f"the error page shows {w!r}:\n{text}"


# ---------------------------------------------------------------- refusals

def test_group_writable_script_gets_a_helpful_page_a_log_line_and_a_status_entry(cu):
    r = cu.get("/php/index.php")
    assert r.status == 403, r
    body = r.body.decode()
    assert "SuFcgiLog" in body and "status page" in body, body
    no_secrets(r.body, "index.php")
    line = cu.wait_log(r"\[refused\] 403: .*index\.php is writable by group or others \(mode 0664\)", "the refusal")
    pool = cu.pool("php")
    assert "index.php is writable by group or others (mode 0664)" in pool["last_refusal"]["text"], pool
    assert pool["last_refusal"]["status"] == 403
    page = cu.get("/status/").body.decode()
    assert "last refusal" in page
    if cu.s.mpm in ("event", "lighttpd"):
        evidence(f"{cu.s.mpm}-refused-page.html", body)
        evidence(f"{cu.s.mpm}-log-refused.txt", line + "\n")
        evidence(f"{cu.s.mpm}-status-php.json", json.dumps(pool, indent=2) + "\n")
    # The log is the owner's file.
    assert cu.log.stat().st_uid == cu.a.uid


def test_a_pool_the_supervisor_refuses_is_logged_and_listed(cu):
    r = cu.get("/refused/")
    assert r.status == 403, r
    no_secrets(r.body, "cu_app.py")
    cu.wait_log(r"\[refused\] 403: .*cu_app\.py is writable by group or others \(mode 0775\)", "the supervisor's refusal")
    pool = cu.pool("refused", "refused")
    assert pool["workers"] == [] and "writable" in pool["last_refusal"]["text"], pool
    page = cu.get("/status/").body.decode()
    if cu.s.mpm in ("event", "lighttpd"):
        evidence(f"{cu.s.mpm}-status-page.html", page)
    # The same refusal again is counted, not written again (within a minute).
    before = cu.log_text().count("cu_app.py is writable")
    for _ in range(3):
        time.sleep(1.1)  # past the children's one-second refusal cache
        assert cu.get("/refused/").status == 403
    assert cu.log_text().count("cu_app.py is writable") == before, cu.log_text()[-2000:]


# ---------------------------------------------------------------- the log's content

def test_php_warnings_and_worker_events_reach_the_owners_log(cu):
    token = f"t{os.getpid()}{cu.s.mpm}"
    r = cu.get(f"/php/ok.php?t={token}")
    assert r.status == 200 and r.body == b"ok", r
    line = cu.wait_log(rf"\[stderr\] .*PHP Warning: +cu-warning {token}", "the PHP warning")
    cu.wait_log(r"\[event\] spawned worker pid \d+", "the spawn")
    pool = cu.pool("php")
    assert any(f"cu-warning {token}" in l for l in pool["stderr"]), pool["stderr"]
    if cu.s.mpm in ("event", "lighttpd"):
        evidence(f"{cu.s.mpm}-log-php-warning.txt", line + "\n")


def test_a_crash_is_a_502_with_the_exit_in_the_log_and_on_the_status_page(cu):
    assert cu.get("/app/").status == 200
    r = cu.get("/app/crash")
    assert r.status == 502, r
    no_secrets(r.body)
    cu.wait_log(r"\[error\] 502: ", "the 502 and its reason")
    # (Whether the supervisor was about to stop it for the broken request or not.)
    cu.wait_log(r"\[event\] worker pid \d+ (stopped \(.*\): )?exited with status 3", "the exit status")
    pool = cu.pool("app")
    assert pool["last_exit"] and "exited with status 3" in pool["last_exit"]["text"], pool


def test_an_app_that_dies_at_start_shows_its_back_off(cu):
    for _ in range(6):
        r = cu.get("/crashy/")
        assert r.status in (502, 503), r
    pool = cu.pool("crashy", "backoff", timeout=10)
    assert pool["backoff_until"] and pool["backoff_until"] >= int(time.time()) - 1, pool
    assert any("exiting at start on purpose" in l for l in pool["stderr"]), pool
    cu.wait_log(r"\[event\] worker crashed within \d+ ms of its start; backing off", "the back-off")
    r = cu.get("/crashy/")
    assert r.status == 503 and r.header("Retry-After"), r
    if cu.s.mpm in ("event", "lighttpd"):
        evidence(f"{cu.s.mpm}-status-backoff.json", json.dumps(pool, indent=2) + "\n")


def test_a_hot_loop_cannot_fill_the_disk(cu):
    size = cu.log.stat().st_size if cu.log.exists() else 0
    r = cu.get("/app/spam?n=5000")
    assert r.status == 200, r
    cu.wait_log(r"\[log\] \d+ lines suppressed \(more than 50 a second\)", "the suppressed-lines note", timeout=15)
    written = cu.log_text().count("cu-spam line")
    assert written < 1000, f"{written} of 5000 spam lines written"
    assert cu.log.stat().st_size - size < 200_000


def test_p24_the_log_is_written_only_as_the_owner_where_the_owner_named_it(cu):
    # Outside the owner's reach: not created (root could), shown, the site works.
    r = cu.get("/badlog/")
    assert r.status == 200, f"a SuFcgiLog outside the owner's reach is no 500: {r}"
    pool = cu.pool("badlog")
    assert pool["log"]["file"] == "/etc/sufcgi-cu-test.log", pool
    wait_for(lambda: "Permission denied" in (cu.pool("badlog")["log"]["error"] or ""), 5, "the open error")
    assert not Path("/etc/sufcgi-cu-test.log").exists()
    # A symlink at the log's path is never followed.
    root_before = (cu.a.home / "rootfile").read_bytes()
    assert cu.get("/symlog/").status == 200
    wait_for(lambda: "symbolic links" in (cu.pool("symlog")["log"]["error"] or ""), 5, "the ELOOP error")
    assert (cu.a.home / "rootfile").read_bytes() == root_before
    # The owner's log is theirs (created as them).
    cu.wait_log(r"\[event\] ", "any line")
    st = cu.log.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (cu.a.uid, cu.a.gid, 0o640), st


# ---------------------------------------------------------------- slow requests

def test_a_slow_request_says_where_it_is_blocked(cu):
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(1)
    port = lsn.getsockname()[1]
    box: list = []
    t = threading.Thread(target=lambda: box.append(cu.get(f"/app/block?port={port}", timeout=30)))
    t.start()
    try:
        conn, _ = lsn.accept()
        line = cu.wait_log(rf"\[slow\] GET /app/block\?port={port} still running after", "the slow entry")
        assert re.search(r"worker pid \d+, CPU \d+\.\d\d s, RSS \d+\.\d MiB", line), line
        assert re.search(rf"recvfrom on TCP 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{port}", line), line
        if cu.s.mpm in ("event", "lighttpd"):
            evidence(f"{cu.s.mpm}-log-slow.txt", line + "\n")
        conn.send(b"x")
        conn.close()
    finally:
        lsn.close()
        t.join(30)
    assert box and box[0].status == 200, box


# ---------------------------------------------------------------- the host's access log

def test_each_request_leaves_its_cost_for_the_access_log(cu):
    url = f"/app/cost-{os.getpid()}-{time.monotonic_ns()}"
    r = cu.get(url)
    assert r.status == 200
    pid = r.json()["pid"]

    def line():
        text = cu.s.access_log.read_text() if cu.s.access_log.exists() else ""
        return [l for l in text.splitlines() if f" {url} " in l]
    wait_for(line, 10, "the access log line")
    fields = line()[-1].split()
    status, _, queue, wpid, cpu, pool = fields[:6]
    assert status == "200" and queue.isdigit() and int(wpid) == pid and re.fullmatch(r"\d+\.\d{3}", cpu), fields
    assert pool == f"app:{cu.a.www}/app/cu_app.py", fields


# ---------------------------------------------------------------- X-Sendfile

def xs(cu, path: str, **kw) -> harness.Response:
    from urllib.parse import quote
    return cu.get(f"/xs/xs?path={quote(str(path), safe='')}", **kw)


def test_x_sendfile_sends_the_owners_file_as_a_static_file(cu):
    f = cu.a.www / "files" / "small.txt"
    r = xs(cu, f)
    assert r.status == 200 and r.body == b"0123456789abcdef\n", r
    assert r.header("X-Sendfile") is None and r.header("Content-Length") == "17", r.headers
    assert r.header("Last-Modified") and r.header("ETag"), r.headers
    assert r.header("Content-Type").startswith("text/plain"), r.headers
    part = xs(cu, f, headers={"Range": "bytes=2-5"})
    assert part.status == 206 and part.body == b"2345", part
    same = xs(cu, f, headers={"If-None-Match": r.header("ETag")})
    assert same.status == 304 and same.body == b"", same
    head = xs(cu, f, method="HEAD")
    assert head.status == 200 and head.body == b"" and head.header("Content-Length") == "17", head
    # Without SuFcgiXSendfile the header is the app's business: nothing is sent for it.
    plain = cu.get("/noxs/xs?path=" + str(f))
    assert plain.status == 200 and plain.body == b"app body", plain


@pytest.mark.parametrize("case", ["traversal", "symlink_to_other_owner", "hard_link_to_root_file", "proc", "outside"])
def test_p23_x_sendfile_never_sends_what_is_not_the_owners(cu, case):
    files = cu.a.www / "files"
    path = {
        "traversal": f"{files}/../../../../etc/passwd",
        "symlink_to_other_owner": f"{files}/link_b.txt",
        "hard_link_to_root_file": f"{files}/hard_root.txt",
        "proc": "/proc/self/environ",
        "outside": "/etc/hostname",
    }[case]
    r = xs(cu, path)
    assert r.status == 403, r
    assert b"bob's secret" not in r.body and b"root's" not in r.body and b"app body" not in r.body, r
    no_secrets(r.body, "X-Sendfile", "passwd")
    cu.wait_log(r"\[refused\] 403: X-Sendfile ", "the X-Sendfile refusal")


def test_lighttpd_x_sendfile2_sends_ranges_of_the_owners_files_only(cu):
    if cu.s.mpm != "lighttpd":
        pytest.skip("X-Sendfile2 is lighttpd's")
    from urllib.parse import quote
    files = cu.a.www / "files"
    v = f"{quote(str(files / 'small.txt'))} 2-5, {quote(str(files / 'small.txt'))} 10-"
    r = cu.get("/xs/xs2?v=" + quote(v, safe=""))
    assert r.status == 200 and r.body == b"2345abcdef\n", r
    bad = f"{quote(str(files / 'small.txt'))} 0-1, {quote(str(files / 'link_b.txt'))} 0-3"
    r = cu.get("/xs/xs2?v=" + quote(bad, safe=""))
    assert r.status == 403 and b"bob" not in r.body and b"01" not in r.body, r


def test_x_sendfile_of_1_gib_keeps_memory_bounded_and_the_worker_free(cu):
    if cu.s.mpm in ("prefork", "worker"):
        pytest.skip("the 1 GiB case runs on event and lighttpd")
    from urllib.parse import quote
    procs = cu.s.child_pids()
    for p in procs:
        harness.reset_peak_rss(p)
    base = {p: harness.rss_kib(p, "VmHWM") for p in procs}
    sock = socket.create_connection(("127.0.0.1", cu.s.port), timeout=30)
    path = quote(str(cu.a.www / "files" / "big.bin"), safe="")
    sock.sendall(f"GET /xs/xs?path={path} HTTP/1.1\r\nHost: {A_HOST}\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    header, got = head.split(b"\r\n\r\n", 1)
    assert b" 200 " in header.split(b"\r\n")[0] and f"Content-Length: {BIG}".encode() in header, header
    # The worker is free while the file goes out (one worker, no queue: a
    # held worker would make this a 503).
    r = cu.get("/xs/")
    assert r.status == 200, f"the app's only worker was not free while the file was sent: {r}"
    n = len(got)
    buf = bytearray(1 << 20)
    while True:
        k = sock.recv_into(buf)
        if not k:
            break
        n += k
    sock.close()
    assert n == BIG, f"{n} bytes of {BIG}"
    grown = {p: harness.rss_kib(p, "VmHWM") - base[p] for p in procs if harness.pid_alive(p)}
    assert all(g < 64 * 1024 for g in grown.values()), f"peak RSS grew by (KiB) {grown}"
