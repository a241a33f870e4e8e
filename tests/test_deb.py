"""`make deb`: the Debian package, checked as a host would use it.

test_package_contents
    the .deb's control data and files (changes nothing on the system).
test_apt_install_a2enmod_graceful_serves_as_the_owner
    the host-side setup the README documents, on Debian's own Apache
    (/etc/apache2, apache2ctl): with the system Apache running (started here if
    it was not), `apt-get install ./sufcgi_*.deb`, `a2enmod sufcgi`,
    `apache2ctl graceful` — then the perl htaccess example in the DocumentRoot
    of the test user `sufcgi-deb` (uid 2501) must run as that user, in a
    persistent worker under the system Apache.

The second test changes the system and puts it back, whatever happens:
it purges the package (with the module still enabled, so the package's prerm
must disable it), removes its test site, restores ports.conf byte for byte,
stops the system Apache if it started it (or reloads it if it was running),
and removes the test user. A run interrupted half-way is repaired by the next
one (see _recover). Runs are serialised by /tmp/sufcgi-deb-tests.lock.

The .deb is built from the module the other integration tests use
(build/mod_sufcgi.so, or SUFCGI_MODULE) with packaging/debian/build-deb.sh,
the script `make deb` runs; SUFCGI_DEB=/path/to/sufcgi_*.deb tests a given
package instead.
"""
from __future__ import annotations

import fcntl
import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import harness

LOCK = Path("/tmp/sufcgi-deb-tests.lock")
USER, UID = "sufcgi-deb", 2501
SITE = "sufcgi-deb-test"
HOSTNAME = "sufcgi-deb.test"
ETC = Path("/etc/apache2")
PORTS_CONF = ETC / "ports.conf"
# Lives in /etc (not /tmp) so that an interrupted run's original survives for _recover.
PORTS_BACKUP = ETC / "ports.conf.sufcgi-deb-test-backup"
SITE_CONF = ETC / "sites-available" / f"{SITE}.conf"
# Present while the system Apache runs because this test started it.
STARTED_MARKER = Path("/var/lib/sufcgi-deb-test.started-apache")
PIDFILE = Path("/var/run/apache2/apache2.pid")
ERROR_LOG = Path("/var/log/apache2/error.log")
SOCKET_DIR = Path("/var/run/apache2/sufcgi")
EXAMPLE = harness.REPO / "htaccess-examples" / "perl"
BUILD_DEB = harness.REPO / "packaging" / "debian" / "build-deb.sh"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"}
RUNNING_AS = re.compile(rf"running as {USER} \(uid {UID}\)")


# ---------------------------------------------------------------- helpers

def run(*argv, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {res.returncode}:\n{res.stdout}{res.stderr}"
                             f"\n--- {ERROR_LOG} (tail) ---\n{log_tail()}")
    return res


def log_mark() -> int:
    try:
        return ERROR_LOG.stat().st_size
    except FileNotFoundError:
        return 0


def log_since(mark: int) -> str:
    try:
        with open(ERROR_LOG, "rb") as f:
            if f.seek(0, 2) < mark:  # rotated meanwhile
                mark = 0
            f.seek(mark)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def log_tail(n: int = 30) -> str:
    try:
        return "\n".join(ERROR_LOG.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return f"({ERROR_LOG} does not exist)"


def system_master() -> int | None:
    """Pid of the system Apache's parent (from Debian's PidFile), if it runs."""
    try:
        pid = int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == "apache2" and harness.pid_alive(pid) else None


def installed(pkg: str) -> bool:
    res = run("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
    return res.returncode == 0 and res.stdout.strip().endswith(" installed")


def module_enabled() -> bool:
    return run("a2query", "-m", "sufcgi", check=False).returncode == 0


def stop_system_apache():
    master = system_master()
    run("apache2ctl", "stop", check=False)
    if master:
        try:
            harness.wait_for(lambda: not harness.pid_alive(master), 20, "the system Apache to stop")
        except harness.HarnessError:
            harness.kill_pids([master] + harness.descendants(master), grace=1)
    STARTED_MARKER.unlink(missing_ok=True)


def graceful(what: str):
    """`apache2ctl graceful` (what `systemctl reload apache2` runs) and wait until it is done."""
    mark = log_mark()
    run("apache2ctl", "graceful")
    try:
        harness.wait_for(lambda: "resuming normal operations" in log_since(mark), 20,
                         f"'resuming normal operations' after graceful ({what})")
    except harness.HarnessError as e:
        raise AssertionError(f"{e}\n--- {ERROR_LOG} since graceful ---\n{log_since(mark)}") from None


def _recover():
    """Undo what an interrupted earlier run left behind (the lock is held)."""
    if SITE_CONF.exists():
        run("a2dissite", "-q", SITE, check=False)
        SITE_CONF.unlink()
    if STARTED_MARKER.exists():
        stop_system_apache()
    if PORTS_BACKUP.exists():
        os.replace(PORTS_BACKUP, PORTS_CONF)


def _site_conf(port: int, docroot: Path) -> str:
    # What a host writes for a customer: FileInfo is the override class of
    # AddHandler and of the sufcgi customer directives. No ExecCGI needed.
    return (f"# Written by tests/test_deb.py; removed when the test ends.\n"
            f"Listen 127.0.0.1:{port}\n"
            f"<VirtualHost 127.0.0.1:{port}>\n"
            f"    ServerName {HOSTNAME}\n"
            f"    DocumentRoot {docroot}\n"
            f"    <Directory {docroot}>\n"
            f"        AllowOverride FileInfo\n"
            f"        Require all granted\n"
            f"    </Directory>\n"
            f"</VirtualHost>\n")


def _install_example(user: harness.User) -> Path:
    d = harness.mkdir(user.www / "perl", user.ids, 0o755)
    harness.put(d / ".htaccess", (EXAMPLE / ".htaccess").read_bytes(), user.ids, 0o644)
    harness.put(d / "hello.fcgi", (EXAMPLE / "hello.fcgi").read_bytes(), user.ids, 0o755)
    return d


def _remove_user():
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        return
    harness.kill_pids(harness.processes_of_uids([UID]), grace=2)
    shutil.rmtree(pw.pw_dir, ignore_errors=True)
    run("userdel", USER, check=False)
    try:
        grp.getgrnam(USER)
        run("groupdel", USER, check=False)
    except KeyError:
        pass
    harness.TEST_UIDS.discard(UID)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def deb_lock():
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def deb(deb_lock) -> Path:
    given = os.environ.get("SUFCGI_DEB")
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"SUFCGI_DEB={given} does not exist", pytrace=False)
        yield path
        return
    if not harness.MODULE_PATH.is_file():
        pytest.fail(f"{harness.MODULE_PATH} does not exist: build it with `make build` "
                    "(the .deb is built from it)", pytrace=False)
    out = Path(tempfile.mkdtemp(prefix="sufcgi-deb-"))
    os.chmod(out, 0o755)  # apt's _apt user reads local .debs
    try:
        res = subprocess.run(["bash", str(BUILD_DEB), str(harness.MODULE_PATH), str(out)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"build-deb.sh failed:\n{res.stdout}{res.stderr}"
        path = Path(res.stdout.strip().splitlines()[-1])
        assert path.is_file(), f"build-deb.sh printed {path}, which does not exist"
        yield path
    finally:
        shutil.rmtree(out, ignore_errors=True)


def deb_field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "-f", str(deb), name).stdout.strip()


def apxs(var: str) -> str:
    return run("apxs", "-q", var).stdout.strip()


# ---------------------------------------------------------------- tests

def test_package_contents(deb):
    """Name, Depends on the httpd module ABI, conffiles, files, and a conf that changes nothing."""
    arch = run("dpkg", "--print-architecture").stdout.strip()
    version = deb_field(deb, "Version")
    assert deb.name == f"sufcgi_{version}_{arch}.deb"
    assert deb_field(deb, "Package") == "sufcgi"
    assert deb_field(deb, "Architecture") == arch

    # The module ABI: apache2-api-<MMN major> of the headers it was built with,
    # which the installed apache2-bin must provide.
    mmn = re.search(r"#define MODULE_MAGIC_NUMBER_MAJOR\s+(\d+)",
                    (Path(apxs("INCLUDEDIR")) / "ap_mmn.h").read_text()).group(1)
    depends = [d.strip() for d in deb_field(deb, "Depends").split(",")]
    assert f"apache2-api-{mmn}" in depends, depends
    provides = run("dpkg-query", "-W", "-f=${Provides}", "apache2-bin").stdout
    assert f"apache2-api-{mmn}" in [p.strip() for p in provides.split(",")], provides
    assert any(d.startswith("libc6") for d in depends), depends

    with tempfile.TemporaryDirectory() as tmp:
        run("dpkg-deb", "-R", str(deb), tmp)
        root = Path(tmp)
        conffiles = (root / "DEBIAN" / "conffiles").read_text().split()
        assert sorted(conffiles) == ["/etc/apache2/mods-available/sufcgi.conf",
                                     "/etc/apache2/mods-available/sufcgi.load"]
        for c in conffiles:
            assert (root / c.lstrip("/")).is_file(), c

        so = Path(apxs("LIBEXECDIR")) / "mod_sufcgi.so"
        assert (root / str(so).lstrip("/")).is_file()
        load = (root / "etc/apache2/mods-available/sufcgi.load").read_text()
        assert [l for l in load.splitlines() if l and not l.startswith("#")] == \
            [f"LoadModule sufcgi_module {so}"]

        # Safe defaults: nothing but the <IfModule> wrapper is in effect, and
        # every host directive is shown (commented) with its meaning.
        conf = (root / "etc/apache2/mods-available/sufcgi.conf").read_text()
        live = [l.strip() for l in conf.splitlines() if l.strip() and not l.strip().startswith("#")]
        assert live == ["<IfModule sufcgi_module>", "</IfModule>"], live
        for directive in ("SuFcgiOwner", "SuFcgiMinUid 1000", "SuFcgiMinGid 1000", "SuFcgiSocketDir",
                          "SuFcgiCeiling MaxWorkers 16", "SuFcgiCeiling MemoryLimit 4G",
                          "SuFcgiMaxWorkersPerOwner 32", "SuFcgiMaxWorkersTotal 512",
                          "SuFcgiBlockEnv", "SuFcgiPhpForbid", "php_admin_value", "php_admin_flag"):
            assert f"#{directive}" in conf, f"{directive} is not shown in sufcgi.conf"

        doc = root / "usr/share/doc/sufcgi"
        for f in ("README.md", "SECURITY.md", "copyright", "changelog.Debian.gz", "examples/perl/.htaccess",
                  "examples/perl/hello.fcgi", "examples/php/index.php", "examples/c/hello.c",
                  "examples/flask-wsgi/app.py"):
            assert (doc / f).is_file(), f"/usr/share/doc/sufcgi/{f} missing"
        for script in ("prerm", "postrm"):
            assert os.access(root / "DEBIAN" / script, os.X_OK)
        # dpkg-deb --root-owner-group: everything root-owned, nothing group/world-writable.
        listing = run("dpkg-deb", "-c", str(deb)).stdout.splitlines()
        for line in listing:
            mode, owner = line.split()[:2]
            assert owner == "root/root", line
            assert mode[5] != "w" and mode[8] != "w", line

    # lintian is not part of `make deps` (it is large); where it is installed,
    # the package must be clean (the two deliberate exceptions are overridden
    # in packaging/debian/lintian-overrides).
    if shutil.which("lintian"):
        res = run("lintian", "--tag-display-limit", "0", str(deb), check=False)
        tags = [l for l in res.stdout.splitlines() if re.match(r"[EW]: ", l)]
        assert not tags, "lintian:\n" + "\n".join(tags)


def test_apt_install_a2enmod_graceful_serves_as_the_owner(deb):
    _recover()
    was_running = system_master() is not None
    ports_before = PORTS_CONF.read_bytes()
    socket_dir_existed = SOCKET_DIR.exists()
    user_existed = True
    try:
        pwd.getpwnam(USER)
    except KeyError:
        user_existed = False
    port = harness.free_port()
    so = Path(apxs("LIBEXECDIR")) / "mod_sufcgi.so"
    mark = log_mark()
    primary: BaseException | None = None
    try:
        user = harness.ensure_user(USER, UID)
        _install_example(user)

        # A vhost for the customer on a loopback port. If this test starts the
        # system Apache, ports.conf is emptied for the run so that it listens on
        # that port only (not on *:80 / *:443).
        SITE_CONF.write_text(_site_conf(port, user.www))
        run("a2ensite", "-q", SITE)
        if was_running:
            graceful("test site added")
        else:
            shutil.copy2(PORTS_CONF, PORTS_BACKUP)
            PORTS_CONF.write_text("# Emptied by tests/test_deb.py for its run: Listen is in "
                                  f"sites-available/{SITE}.conf. Restored when the test ends.\n")
            STARTED_MARKER.write_text("started by tests/test_deb.py\n")
            run("apache2ctl", "start")
        harness.wait_for(lambda: harness.port_open(port), 20,
                         f"the system Apache to listen on 127.0.0.1:{port}")

        # Before the module: the example is not executed (the handler is unknown).
        r = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert not RUNNING_AS.search(r.body.decode(errors="replace")), r

        # The documented host-side setup.
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb.resolve()))
        assert installed("sufcgi")
        assert so.is_file()
        assert not module_enabled(), "installing the package must not enable the module by itself"
        run("a2enmod", "-q", "sufcgi")
        assert (ETC / "mods-enabled" / "sufcgi.load").is_symlink()
        assert (ETC / "mods-enabled" / "sufcgi.conf").is_symlink()
        run("apache2ctl", "configtest")
        graceful("a2enmod sufcgi")

        first = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert first.status == 200, f"{first}\n--- {ERROR_LOG} since start ---\n{log_since(mark)}"
        text = first.body.decode(errors="replace")
        assert RUNNING_AS.search(text), f"not run as {USER}: {text!r}\n{log_since(mark)}"
        worker = int(re.search(r"pid (\d+)", text).group(1))
        # A persistent worker of the system Apache's supervisor, as the owner.
        assert harness.proc_uid(worker) == UID
        master = system_master()
        assert master and worker in harness.descendants(master), \
            f"worker {worker} is not a descendant of the system Apache ({master})"
        second = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert second.status == 200 and RUNNING_AS.search(second.body.decode(errors="replace")), second
        assert f"(pid {worker}) has served 2 request(s)" in second.body.decode(), second

        # A later reload keeps serving.
        graceful("second reload")
        third = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert third.status == 200 and RUNNING_AS.search(third.body.decode(errors="replace")), \
            f"{third}\n{log_since(mark)}"
        assert not [l for l in log_since(mark).splitlines() if "exit signal" in l], log_since(mark)
    except BaseException as e:  # noqa: BLE001 - re-raised after the system is restored
        primary = e

    # ---- restore the system, then check that it was restored
    problems: list[str] = []

    def step(what, fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - every step runs
            problems.append(f"{what}: {e}")

    def stop_ours():
        if STARTED_MARKER.exists() or (not was_running and system_master()):
            stop_system_apache()
            # An honest supervisor stops its workers with httpd.
            try:
                harness.wait_for(lambda: not harness.processes_of_uids([UID]), 5,
                                 "the test user's workers to exit after apache2ctl stop")
            except harness.HarnessError as e:
                problems.append(str(e))

    def drop_site():
        run("a2dissite", "-q", SITE, check=False)
        SITE_CONF.unlink(missing_ok=True)

    def purge():
        # The module is still enabled here: the package's prerm must disable it.
        if installed("sufcgi") or run("dpkg-query", "-W", "sufcgi", check=False).returncode == 0:
            run("dpkg", "--purge", "sufcgi")

    def restore_ports():
        if PORTS_BACKUP.exists():
            os.replace(PORTS_BACKUP, PORTS_CONF)

    step("drop the test site", drop_site)
    step("stop the system Apache this test started", stop_ours)
    step("purge sufcgi", purge)
    step("restore ports.conf", restore_ports)
    # The package's scripts may (re)start Apache where invoke-rc.d's policy allows.
    step("stop the system Apache again", stop_ours)
    if was_running:
        step("reload the system Apache", lambda: graceful("restored configuration"))
    elif not socket_dir_existed:
        step("remove the socket dir", lambda: shutil.rmtree(SOCKET_DIR, ignore_errors=True))
    if not user_existed:
        step("remove the test user", _remove_user)

    if primary is not None:
        if problems:
            primary.add_note("restoring the system also failed:\n" + "\n".join(problems))
        raise primary
    assert not problems, "restoring the system failed:\n" + "\n".join(problems)
    assert not installed("sufcgi")
    assert run("dpkg-query", "-W", "sufcgi", check=False).returncode != 0, "sufcgi not purged"
    assert not so.exists()
    for f in ("mods-available/sufcgi.load", "mods-available/sufcgi.conf",
              "mods-enabled/sufcgi.load", "mods-enabled/sufcgi.conf", f"sites-enabled/{SITE}.conf"):
        assert not os.path.lexists(ETC / f), f"/etc/apache2/{f} left behind"
    assert not module_enabled()
    assert PORTS_CONF.read_bytes() == ports_before, "ports.conf differs from before the test"
    assert (system_master() is not None) == was_running, "the system Apache's state was not restored"
