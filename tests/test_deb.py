"""`make deb`: the Debian packages, checked as a host would use them.

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

Both packages ship a systemd drop-in, `Delegate=yes` for apache2.service /
lighttpd.service (the server's cgroup subtree is then its own, for the
per-owner cgroups). There is no running systemd on these machines: the tests
check the file, and that systemd's own unit loader (`systemd-analyze verify`,
offline) reads the installed unit with it and resolves `Delegate: yes`; the
workers of the system server run in their owner's cgroup below the server's,
and nothing is left of those cgroups when it stops.

The lighttpd package, lighttpd-mod-sufcgi, the same way:

test_lighttpd_package_contents
    control data (Depends pins the lighttpd release the plugin was built
    against) and files, and a conf-available file that changes nothing but
    loading the plugin.
test_lighttpd_apt_install_lighty_enable_mod_restart_serves_as_the_owner
    on Debian's own lighttpd (/etc/lighttpd, its init script through
    `service`): `apt-get install ./lighttpd-mod-sufcgi_*.deb`,
    `lighty-enable-mod sufcgi`, `service lighttpd restart` (a restart: the
    plugin must be loaded by root) — then the same perl example, in the same
    user's document root (a `$HTTP["host"]` block of a conf-enabled snippet),
    must run as that user in a persistent worker of the system lighttpd's
    supervisor.

It restores the system the same way: removes its conf-enabled snippet, stops
the system lighttpd if it started it (restarts it if it was running), purges
the package with the plugin still enabled (its prerm must disable it), and
puts lighttpd.conf back byte for byte. If the test starts the system lighttpd,
lighttpd.conf is changed for the run to listen on 127.0.0.1:<free port> only
(not on port 80, nor on [::]:80 through use-ipv6.pl), as ports.conf is
emptied for Apache. Built from build/lighttpd/mod_sufcgi.so (or
SUFCGI_LIGHTTPD_MODULE) with packaging/lighttpd/build-deb.sh;
SUFCGI_LIGHTTPD_DEB=/path/to/lighttpd-mod-sufcgi_*.deb tests a given package.
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


class Restore:
    """Putting the system back after a test that changed it: every step runs,
    failures are collected; the test's own failure, if any, comes first."""

    def __init__(self):
        self.problems: list[str] = []

    def step(self, what, fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - every step runs
            self.problems.append(f"{what}: {e}")

    def finish(self, primary: BaseException | None):
        if primary is not None:
            if self.problems:
                primary.add_note("restoring the system also failed:\n" + "\n".join(self.problems))
            raise primary
        assert not self.problems, "restoring the system failed:\n" + "\n".join(self.problems)

def run(*argv, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {res.returncode}:\n{res.stdout}{res.stderr}"
                             f"\n--- {ERROR_LOG} (tail) ---\n{log_tail()}")
    return res


def log_mark(log: Path = ERROR_LOG) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def log_since(mark: int, log: Path = ERROR_LOG) -> str:
    try:
        with open(log, "rb") as f:
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


def pid_of_running(pidfile: Path, comm: str) -> int | None:
    """Pid from a system server's pid file, if that process runs and is `comm`."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if name == comm and harness.pid_alive(pid) else None


def system_master() -> int | None:
    """Pid of the system Apache's parent (from Debian's PidFile), if it runs."""
    return pid_of_running(PIDFILE, "apache2")


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


def built_deb(env_var: str, script: Path, module: Path, env: dict | None = None):
    """For a fixture: the .deb `env_var` names, else one built by `script` from
    `module` into a temp dir (removed afterwards)."""
    given = os.environ.get(env_var)
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"{env_var}={given} does not exist", pytrace=False)
        yield path
        return
    if not module.is_file():
        pytest.fail(f"{module} does not exist: build it with `make build` "
                    "(the .deb is built from it)", pytrace=False)
    out = Path(tempfile.mkdtemp(prefix="sufcgi-deb-"))
    os.chmod(out, 0o755)  # apt's _apt user reads local .debs
    try:
        res = subprocess.run(["bash", str(script), str(module), str(out)], env={**os.environ, **(env or {})},
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{script.relative_to(harness.REPO)} failed:\n{res.stdout}{res.stderr}"
        path = Path(res.stdout.strip().splitlines()[-1])
        assert path.is_file(), f"build-deb.sh printed {path}, which does not exist"
        yield path
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def deb(deb_lock) -> Path:
    yield from built_deb("SUFCGI_DEB", BUILD_DEB, harness.MODULE_PATH)


def deb_field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "-f", str(deb), name).stdout.strip()


def apxs(var: str) -> str:
    return run("apxs", "-q", var).stdout.strip()


# ---------------------------------------------------------------- tests

DROPIN = "sufcgi-delegate.conf"
UNIT_DIR = Path("/lib/systemd/system")


def _assert_dropin_file(path: Path):
    """The drop-in: one [Service] section, Delegate=yes, nothing else in effect."""
    import configparser
    cp = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#", ";"))
    cp.optionxform = str
    cp.read_string(path.read_text())
    assert cp.sections() == ["Service"] and dict(cp["Service"]) == {"Delegate": "yes"}, path.read_text()
    assert path.stat().st_mode & 0o777 == 0o644


def _assert_dropin_honoured(unit: str):
    """systemd's unit loader (`systemd-analyze verify`, which needs no running
    systemd) loads the installed unit with the drop-in and resolves Delegate=yes."""
    if not shutil.which("systemd-analyze"):
        print(f"\nsystemd-analyze is not installed: the {unit} drop-in was checked as a file only")
        return
    units_load = Path("/run/systemd/systemd-units-load")   # systemd-analyze leaves this behind
    existed = units_load.exists()
    try:
        res = subprocess.run(["systemd-analyze", "verify", str(UNIT_DIR / unit)], env={**ENV, "SYSTEMD_LOG_LEVEL": "debug"},
                             capture_output=True, text=True, timeout=120)
    finally:
        if not existed:
            units_load.unlink(missing_ok=True)
    out = res.stdout + res.stderr
    assert re.search(rf"DropIn Path: \S*/systemd/system/{re.escape(unit)}\.d/{DROPIN}$", out, re.M), \
        f"systemd does not read the drop-in for {unit}:\n{out[-3000:]}"
    assert re.search(r"^\s*Delegate: yes$", out, re.M), f"Delegate is not yes for {unit}:\n{out[-3000:]}"


def _assert_in_owner_cgroup(worker: int, socket_dir: Path, uid: int):
    """The worker is in its owner's cgroup below the system server's own, in every hierarchy used."""
    inst = harness.cgroup_instance_name(socket_dir)
    cg = Path(f"/proc/{worker}/cgroup").read_text()
    assert re.search(rf":/(\S*/)?sufcgi/{re.escape(inst)}/owner-{uid}/worker-\d+\.\d+$", cg, re.M), \
        f"worker {worker} is not in uid {uid}'s cgroup of {inst}:\n{cg}"


def _assert_supervisor_program(moddir: Path):
    """The supervisor program the module execs: beside it, 0755, stripped."""
    prog = moddir / harness.SUPERVISOR_PROGRAM
    assert prog.is_file(), f"{prog} missing"
    assert prog.stat().st_mode & 0o777 == 0o755
    assert not run("nm", "--defined-only", str(prog), check=False).stdout.strip(), "not stripped"


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
        _assert_supervisor_program(root / str(so.parent).lstrip("/"))
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
                          "SuFcgiBlockEnv", "SuFcgiPhpForbid", "php_admin_value", "php_admin_flag",
                          "SuFcgiCgroups on", "SuFcgiOwnerCpuWeight 100", "SuFcgiOwnerCpuMax none",
                          "SuFcgiOwnerMaxProcesses 512", "SuFcgiOwnerMemory none", "SuFcgiRequestNotes auto",
                          "SuFcgiShortSlices on"):
            assert f"#{directive}" in conf, f"{directive} is not shown in sufcgi.conf"

        doc = root / "usr/share/doc/sufcgi"
        for f in ("README.md", "SECURITY.md", "copyright", "changelog.Debian.gz", "examples/perl/.htaccess",
                  "examples/perl/hello.fcgi", "examples/php/index.php", "examples/c/hello.c",
                  "examples/flask-wsgi/app.py"):
            assert (doc / f).is_file(), f"/usr/share/doc/sufcgi/{f} missing"
        for script in ("prerm", "postinst", "postrm"):
            assert os.access(root / "DEBIAN" / script, os.X_OK)
        _assert_dropin_file(root / str(UNIT_DIR).lstrip("/") / "apache2.service.d" / DROPIN)
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
        _assert_dropin_file(UNIT_DIR / "apache2.service.d" / DROPIN)
        _assert_dropin_honoured("apache2.service")
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
        # Its supervisor is the packaged program, exec'd beside the module.
        sup = harness.proc_ppid(worker)
        assert os.readlink(f"/proc/{sup}/exe") == str(so.parent / harness.SUPERVISOR_PROGRAM), sup
        _assert_in_owner_cgroup(worker, SOCKET_DIR, UID)
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
    restore = Restore()
    step, problems = restore.step, restore.problems

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

    restore.finish(primary)
    assert not installed("sufcgi")
    assert run("dpkg-query", "-W", "sufcgi", check=False).returncode != 0, "sufcgi not purged"
    assert not so.exists()
    assert not (UNIT_DIR / "apache2.service.d" / DROPIN).exists(), "the systemd drop-in was left behind"
    if not was_running:
        left = harness.sufcgi_cgroup_dirs(harness.cgroup_instance_name(SOCKET_DIR))
        assert not left, f"cgroups left after the system Apache stopped: {left}"
    for f in ("mods-available/sufcgi.load", "mods-available/sufcgi.conf",
              "mods-enabled/sufcgi.load", "mods-enabled/sufcgi.conf", f"sites-enabled/{SITE}.conf"):
        assert not os.path.lexists(ETC / f), f"/etc/apache2/{f} left behind"
    assert not module_enabled()
    assert PORTS_CONF.read_bytes() == ports_before, "ports.conf differs from before the test"
    assert (system_master() is not None) == was_running, "the system Apache's state was not restored"


# ================================================================ lighttpd

LT_PKG = "lighttpd-mod-sufcgi"
LT_ETC = Path("/etc/lighttpd")
LT_CONF = LT_ETC / "lighttpd.conf"
# Lives in /etc (not /tmp) so that an interrupted run's original survives for _lt_recover.
LT_CONF_BACKUP = LT_ETC / "lighttpd.conf.sufcgi-deb-test-backup"
# The customer's site: a plain file in conf-enabled (lighttpd.conf includes conf-enabled/*.conf).
LT_SITE = LT_ETC / "conf-enabled" / "99-sufcgi-deb-test.conf"
LT_AVAILABLE = LT_ETC / "conf-available" / "20-sufcgi.conf"
LT_ENABLED = LT_ETC / "conf-enabled" / "20-sufcgi.conf"
LT_SO = harness.LIGHTTPD_MODULES_DIR / "mod_sufcgi.so"
# Present while the system lighttpd runs because this test started it.
LT_STARTED_MARKER = Path("/var/lib/sufcgi-deb-test.started-lighttpd")
# Present while the package may be installed because this test installed it.
LT_INSTALLED_MARKER = Path("/var/lib/sufcgi-deb-test.installed-lighttpd-mod-sufcgi")
LT_PIDFILE = Path("/run/lighttpd.pid")   # Debian's server.pid-file and its init script's PIDFILE
LT_ERROR_LOG = Path("/var/log/lighttpd/error.log")
LT_SOCKET_DIR = Path("/run/sufcgi-lighttpd")
LT_BUILD_DEB = harness.REPO / "packaging" / "lighttpd" / "build-deb.sh"
LT_SRC = harness.REPO / "build" / "lighttpd-src"


def lt_system_master() -> int | None:
    """Pid of the system lighttpd (from Debian's pid file), if it runs."""
    return pid_of_running(LT_PIDFILE, "lighttpd")


def lt_enabled() -> bool:
    return any(os.path.lexists(p) for p in (LT_ETC / "conf-enabled").glob("*-sufcgi.conf"))


def lt_configtest(what: str):
    """`lighttpd -tt` on the system configuration (what the init script checks first)."""
    res = run(harness.LIGHTTPD_BIN, "-tt", "-f", str(LT_CONF), check=False)
    assert res.returncode == 0, f"lighttpd's configuration is not valid {what}:\n{res.stdout}{res.stderr}"


def lt_service(action: str, stderr_log: Path | None, what: str):
    """`service lighttpd ACTION`. Its output goes to a file, never to a pipe: the
    daemon and the plugin's keeper and supervisor (forked before lighttpd drops
    root) inherit stderr and keep it open."""
    with open(stderr_log or os.devnull, "ab") as out:
        res = subprocess.run(["service", "lighttpd", action], env=ENV, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=out, timeout=180)
    if res.returncode != 0:
        raise AssertionError(f"`service lighttpd {action}` ({what}) exited {res.returncode}\n"
                             f"--- output ---\n{_read(stderr_log)}\n--- {LT_ERROR_LOG} (tail) ---\n"
                             f"{log_since(max(0, log_mark(LT_ERROR_LOG) - 4000), LT_ERROR_LOG)}")


def _read(path: Path | None) -> str:
    if path is None:
        return "(not kept)"
    try:
        return path.read_text(errors="replace")[-6000:]
    except OSError:
        return f"({path} unreadable)"


def lt_stop_system_lighttpd(stderr_log: Path | None):
    master = lt_system_master()
    try:
        lt_service("stop", stderr_log, "stop")
    except AssertionError:
        pass
    if master:
        try:
            harness.wait_for(lambda: not harness.pid_alive(master), 30, "the system lighttpd to stop")
        except harness.HarnessError:
            harness.kill_pids([master] + harness.descendants(master), grace=1)
    LT_STARTED_MARKER.unlink(missing_ok=True)


def lt_restart(port: int, stderr_log: Path | None, what: str) -> int:
    """`service lighttpd restart` and wait until the new lighttpd serves on port; its pid."""
    old = lt_system_master()
    mark = log_mark(LT_ERROR_LOG)
    lt_service("restart", stderr_log, what)
    try:
        harness.wait_for(lambda: (lt_system_master() not in (None, old)) and harness.port_open(port), 30,
                         f"the system lighttpd to serve 127.0.0.1:{port} after `service lighttpd restart` ({what})")
    except harness.HarnessError as e:
        raise AssertionError(f"{e}\n--- {LT_ERROR_LOG} since ---\n{log_since(mark, LT_ERROR_LOG)}"
                             f"\n--- stderr ---\n{_read(stderr_log)}") from None
    return lt_system_master()


def _lt_listen_only_on(text: str, port: int) -> str:
    """lighttpd.conf for a run of the system lighttpd that this test starts: the
    same file, listening on 127.0.0.1:port only."""
    lines = text.splitlines(keepends=True)
    port_re = re.compile(r"^server\.port\s*=\s*\d+\s*(#.*)?$")
    at = [i for i, l in enumerate(lines) if port_re.match(l.strip()) and not l[:1].isspace()]
    if len(at) != 1:
        raise AssertionError(f"{LT_CONF}: expected one top-level `server.port = N` line, found {len(at)}: "
                             "cannot move the system lighttpd off its port for the test")
    mine = "# tests/test_deb.py: "
    out = []
    for i, l in enumerate(lines):
        t = l.strip()
        if i == at[0]:
            out.append(f'server.bind = "127.0.0.1"  {mine}was the next line\n')
            out.append(f"server.port = {port}  {mine}was: {t}\n")
        elif re.match(r"server\.bind\s*=", t) and not l[:1].isspace():
            out.append(f"#{l.rstrip()}  {mine}replaced\n")
        elif re.match(r'include_shell\s+"/usr/share/lighttpd/use-ipv6\.pl', t):
            out.append(f"#{l.rstrip()}  {mine}no [::] listener\n")  # it would add [::]:<port>
        else:
            out.append(l)
    return (f"# Changed by tests/test_deb.py for its run (listens on 127.0.0.1:{port} only); "
            f"restored when the test ends.\n" + "".join(out))


def _lt_site_conf(port: int, docroot: Path) -> str:
    # What a host writes for a customer: a host block with its document root;
    # the workers run as the owner of that directory (no sufcgi.owner needed).
    return (f"# Written by tests/test_deb.py; removed when the test ends.\n"
            f'$SERVER["socket"] == "127.0.0.1:{port}" {{\n'
            f'    $HTTP["host"] == "{HOSTNAME}" {{\n'
            f'        server.document-root = "{docroot}"\n'
            f"    }}\n"
            f"}}\n")


def _lt_purge():
    if run("dpkg-query", "-W", LT_PKG, check=False).returncode == 0:
        run("dpkg", "--purge", LT_PKG)
    LT_INSTALLED_MARKER.unlink(missing_ok=True)


def _lt_recover():
    """Undo what an interrupted earlier run left behind (the lock is held)."""
    LT_SITE.unlink(missing_ok=True)
    if LT_STARTED_MARKER.exists():
        lt_stop_system_lighttpd(None)
    if LT_INSTALLED_MARKER.exists():
        _lt_purge()
    if LT_CONF_BACKUP.exists():
        os.replace(LT_CONF_BACKUP, LT_CONF)


def _lt_ancestors(pid: int) -> list[int]:
    out = []
    while True:
        pid = harness.proc_ppid(pid) or 0
        if pid <= 1:
            return out
        out.append(pid)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


@pytest.fixture(scope="module")
def lighttpd_deb(deb_lock) -> Path:
    yield from built_deb("SUFCGI_LIGHTTPD_DEB", LT_BUILD_DEB, harness.LIGHTTPD_MODULE_PATH,
                         {"LIGHTTPD_SRC": str(LT_SRC)})


def _upstream(debian_version: str) -> str:
    return debian_version.split(":", 1)[-1].rsplit("-", 1)[0]


def test_lighttpd_package_contents(lighttpd_deb):
    """Name, Depends on exactly the lighttpd release, conffile, files, and a conf that only loads the plugin."""
    deb = lighttpd_deb
    arch = run("dpkg", "--print-architecture").stdout.strip()
    version = deb_field(deb, "Version")
    assert deb.name == f"{LT_PKG}_{version}_{arch}.deb"
    assert deb_field(deb, "Package") == LT_PKG
    assert deb_field(deb, "Architecture") == arch

    # lighttpd loads a plugin only if its version is lighttpd's own: Depends
    # pins the upstream release the plugin was built against (the installed
    # lighttpd's, as the build refuses headers of another version).
    built_for = (LT_SRC / ".debian-version").read_text().strip() if (LT_SRC / ".debian-version").exists() \
        else run("dpkg-query", "-W", "-f=${Version}", "lighttpd").stdout
    up = _upstream(built_for)
    major_minor, patch = up.rsplit(".", 1)
    depends = [d.strip() for d in deb_field(deb, "Depends").split(",")]
    assert f"lighttpd (>= {up})" in depends, depends
    assert f"lighttpd (<< {major_minor}.{int(patch) + 1}~)" in depends, depends
    assert any(d.startswith("libc6") for d in depends), depends
    assert not any(d.startswith("apache2") for d in depends), depends
    installed_version = run("dpkg-query", "-W", "-f=${Version}", "lighttpd").stdout
    for d in depends:
        m = re.fullmatch(r"lighttpd \((>=|<<) (\S+)\)", d)
        if m:
            op = {">=": "ge", "<<": "lt"}[m.group(1)]
            assert run("dpkg", "--compare-versions", installed_version, op, m.group(2), check=False) \
                .returncode == 0, f"the installed lighttpd {installed_version} does not satisfy {d}"

    with tempfile.TemporaryDirectory() as tmp:
        run("dpkg-deb", "-R", str(deb), tmp)
        root = Path(tmp)
        conffiles = (root / "DEBIAN" / "conffiles").read_text().split()
        assert conffiles == [str(LT_AVAILABLE)]
        assert (root / str(LT_AVAILABLE).lstrip("/")).is_file()

        so = root / str(LT_SO).lstrip("/")
        assert so.is_file()
        _assert_supervisor_program(so.parent)
        assert so.stat().st_mode & 0o777 == 0o644
        syms = run("nm", "-D", "--defined-only", str(so)).stdout
        assert re.search(r" T mod_sufcgi_plugin_init$", syms, re.M), "not a lighttpd plugin"
        assert not run("nm", "--defined-only", str(so), check=False).stdout.strip(), "not stripped"

        # Safe defaults: only the server.modules line is in effect, and every
        # setting of src/lighttpd/settings.rs is shown (commented) with its default.
        conf = (root / str(LT_AVAILABLE).lstrip("/")).read_text()
        live = [l.strip() for l in conf.splitlines() if l.strip() and not l.strip().startswith("#")]
        assert live == ['server.modules += ( "mod_sufcgi" )'], live
        for setting in ('sufcgi.owner = "alice"', "sufcgi.min-uid = 1000", "sufcgi.min-gid = 1000",
                        'sufcgi.socket-dir = "/run/sufcgi-lighttpd"', "sufcgi.max-workers-per-owner = 32",
                        "sufcgi.max-workers-total = 512", "sufcgi.ceilings = (", '"MaxWorkers"     => "16"',
                        '"MemoryLimit"    => "4G"', "sufcgi.block-env = (", "sufcgi.php-forbid = (",
                        "sufcgi.timeout = 60", 'sufcgi.cgroups = "on"', "sufcgi.owner-cpu-weight = 100",
                        'sufcgi.owner-cpu-max = "none"', "sufcgi.owner-max-processes = 512",
                        'sufcgi.owner-memory = "none"', 'sufcgi.short-slices = "enable"'):
            assert f"#{setting}" in conf or f"#    {setting}" in conf, \
                f"{setting} is not shown in 20-sufcgi.conf"
        keys = set(re.findall(r'c"(sufcgi\.[a-z-]+)"', (harness.REPO / "src/lighttpd/settings.rs").read_text()))
        assert keys and all(f"#{k} = " in conf or f"    {k} = " in conf for k in keys), \
            (keys, "a setting of src/lighttpd/settings.rs is missing from 20-sufcgi.conf")

        doc = root / "usr/share/doc" / LT_PKG
        for f in ("README.md", "SECURITY.md", "copyright", "changelog.Debian.gz", "examples/perl/.htaccess",
                  "examples/perl/hello.fcgi", "examples/php/index.php", "examples/c/hello.c"):
            assert (doc / f).is_file(), f"/usr/share/doc/{LT_PKG}/{f} missing"
        for script in ("prerm", "postinst", "postrm"):
            assert os.access(root / "DEBIAN" / script, os.X_OK)
        _assert_dropin_file(root / str(UNIT_DIR).lstrip("/") / "lighttpd.service.d" / DROPIN)
        listing = run("dpkg-deb", "-c", str(deb)).stdout.splitlines()
        for line in listing:
            mode, owner = line.split()[:2]
            assert owner == "root/root", line
            assert mode[5] != "w" and mode[8] != "w", line
        # Nothing the Apache package ships: both can be installed together.
        assert not any("/apache2/" in l for l in listing), listing

    # The conf-available file, uncommented, is a valid configuration: every
    # value shown is accepted by lighttpd and the plugin (`lighttpd -tt`).
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        run("dpkg-deb", "-x", str(deb), str(t / "root"))
        mods = t / "modules"
        mods.mkdir()
        for so in harness.LIGHTTPD_MODULES_DIR.glob("mod_*.so"):
            (mods / so.name).symlink_to(so)
        shutil.copy(t / "root" / str(LT_SO).lstrip("/"), mods / "mod_sufcgi.so")
        conf = (t / "root" / str(LT_AVAILABLE).lstrip("/")).read_text()
        # The settings and the lines of the ceilings list (not the example
        # host block: its user does not exist).
        on = [l[1:] if re.match(r'#(sufcgi\.|    "|\))', l) else l for l in conf.splitlines()]
        assert sum(1 for l in on if l.startswith("sufcgi.")) == len(keys) - 1, on
        (t / "sufcgi.conf").write_text("\n".join(on) + "\n")
        (t / "lighttpd.conf").write_text(f'server.document-root = "{t}"\nserver.bind = "127.0.0.1"\n'
                                         f"server.port = {harness.free_port()}\n"
                                         f'include "{t}/sufcgi.conf"\n')
        res = run(harness.LIGHTTPD_BIN, "-tt", "-f", str(t / "lighttpd.conf"), "-m", str(mods), check=False)
        assert res.returncode == 0, f"20-sufcgi.conf uncommented is not valid:\n{res.stdout}{res.stderr}"

    if shutil.which("lintian"):
        res = run("lintian", "--tag-display-limit", "0", str(deb), check=False)
        tags = [l for l in res.stdout.splitlines() if re.match(r"[EW]: ", l)]
        assert not tags, "lintian:\n" + "\n".join(tags)


def test_lighttpd_apt_install_lighty_enable_mod_restart_serves_as_the_owner(lighttpd_deb):
    deb = lighttpd_deb
    _lt_recover()
    if run("dpkg-query", "-W", LT_PKG, check=False).returncode == 0:
        pytest.fail(f"{LT_PKG} is installed, not by this test: it would purge it", pytrace=False)
    was_running = lt_system_master() is not None
    conf_before = LT_CONF.read_bytes()
    socket_dir_existed = LT_SOCKET_DIR.exists()
    user_existed = True
    try:
        pwd.getpwnam(USER)
    except KeyError:
        user_existed = False
    port = harness.free_port()
    listening_before = harness.listening_tcp_ports()
    out_dir = Path(tempfile.mkdtemp(prefix="sufcgi-deb-lighttpd-"))
    stderr_log = out_dir / "stderr.log"   # the keeper's and supervisor's log (lighttpd's stderr)
    mark = log_mark(LT_ERROR_LOG)
    primary: BaseException | None = None

    def diag() -> str:
        return (f"\n--- {LT_ERROR_LOG} since start ---\n{log_since(mark, LT_ERROR_LOG)}"
                f"\n--- lighttpd's stderr ---\n{_read(stderr_log)}")

    try:
        user = harness.ensure_user(USER, UID)
        _install_example(user)

        # The customer's site on a loopback port. If this test starts the
        # system lighttpd, lighttpd.conf is changed for the run so that it
        # listens on that port only.
        LT_SITE.write_text(_lt_site_conf(port, user.www))
        if was_running:
            lt_restart(port, stderr_log, "test site added")
        else:
            new_conf = _lt_listen_only_on(conf_before.decode(), port)
            shutil.copy2(LT_CONF, LT_CONF_BACKUP)
            LT_CONF.write_text(new_conf)
            LT_STARTED_MARKER.write_text("started by tests/test_deb.py\n")
            lt_service("start", stderr_log, "start")
        harness.wait_for(lambda: lt_system_master() and harness.port_open(port), 20,
                         f"the system lighttpd to listen on 127.0.0.1:{port}")
        if not was_running:
            new = harness.listening_tcp_ports() - listening_before
            assert 80 not in new and 443 not in new, f"the system lighttpd listens on {sorted(new)}"

        # Before the plugin: the example is not executed.
        r = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert not RUNNING_AS.search(r.body.decode(errors="replace")), r

        # The documented host-side setup.
        LT_INSTALLED_MARKER.write_text("installed by tests/test_deb.py\n")
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb.resolve()))
        assert run("dpkg-query", "-W", "-f=${Status}", LT_PKG).stdout.endswith(" installed")
        assert LT_SO.is_file() and LT_AVAILABLE.is_file()
        assert not lt_enabled(), "installing the package must not enable the plugin by itself"
        _assert_dropin_file(UNIT_DIR / "lighttpd.service.d" / DROPIN)
        _assert_dropin_honoured("lighttpd.service")
        res = run("lighty-enable-mod", "sufcgi")
        assert "Enabling sufcgi: ok" in res.stdout, res.stdout
        assert LT_ENABLED.is_symlink() and LT_ENABLED.resolve() == LT_AVAILABLE
        lt_configtest("with the plugin enabled")
        master = lt_restart(port, stderr_log, "lighty-enable-mod sufcgi")

        first = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert first.status == 200, f"{first}{diag()}"
        text = first.body.decode(errors="replace")
        assert RUNNING_AS.search(text), f"not run as {USER}: {text!r}{diag()}"
        worker = int(re.search(r"pid (\d+)", text).group(1))
        # A persistent worker as the owner, started by the plugin's root
        # processes forked from the system lighttpd (its keeper is detached
        # from lighttpd, so it is an ancestor by command line, not by pid).
        assert harness.proc_uid(worker) == UID
        roots = [p for p in _lt_ancestors(worker) if harness.proc_uid(p) == 0
                 and _cmdline(p)[:1] == [harness.LIGHTTPD_BIN] and str(LT_CONF) in _cmdline(p)]
        assert roots, f"worker {worker} is not run by the system lighttpd's supervisor " \
                      f"(ancestors {[(p, _cmdline(p)) for p in _lt_ancestors(worker)]})"
        assert harness.proc_uid(master) == harness.WWW_DATA[0], "the system lighttpd did not drop root"
        _assert_in_owner_cgroup(worker, LT_SOCKET_DIR, UID)
        second = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert second.status == 200 and RUNNING_AS.search(second.body.decode(errors="replace")), second
        assert f"(pid {worker}) has served 2 request(s)" in second.body.decode(), second

        # A later restart keeps serving, and the old supervisor's workers are gone.
        lt_restart(port, stderr_log, "second restart")
        harness.wait_for(lambda: not harness.pid_alive(worker), 10,
                         f"the old worker {worker} to exit after the restart")
        third = harness.request(port, "/perl/hello.fcgi", host=HOSTNAME)
        assert third.status == 200 and RUNNING_AS.search(third.body.decode(errors="replace")), f"{third}{diag()}"
        bad = [l for l in (log_since(mark, LT_ERROR_LOG) + _read(stderr_log)).splitlines()
               if "panicked" in l or "died" in l or "exit signal" in l]
        assert not bad, diag()
    except BaseException as e:  # noqa: BLE001 - re-raised after the system is restored
        primary = e

    # ---- restore the system, then check that it was restored
    restore = Restore()
    step, problems = restore.step, restore.problems

    def stop_ours():
        if LT_STARTED_MARKER.exists() or (not was_running and lt_system_master()):
            lt_stop_system_lighttpd(stderr_log)
            # The keeper stops the supervisor and every worker with lighttpd.
            try:
                harness.wait_for(lambda: not harness.processes_of_uids([UID]), 10,
                                 "the test user's workers to exit after `service lighttpd stop`")
            except harness.HarnessError as e:
                problems.append(str(e))

    def purge():
        # The plugin is still enabled here: the package's prerm must disable it.
        _lt_purge()

    def restore_conf():
        if LT_CONF_BACKUP.exists():
            os.replace(LT_CONF_BACKUP, LT_CONF)

    step("drop the test site", lambda: LT_SITE.unlink(missing_ok=True))
    step("stop the system lighttpd this test started", stop_ours)
    step(f"purge {LT_PKG}", purge)
    step("restore lighttpd.conf", restore_conf)
    if was_running:
        # Restarted with the restored configuration; not with this test's stderr file.
        step("restart the system lighttpd", lambda: lt_service("restart", None, "restored configuration"))
    if not socket_dir_existed:
        # No lighttpd of the system's has the plugin loaded any more.
        step("remove the socket dir", lambda: shutil.rmtree(LT_SOCKET_DIR, ignore_errors=True))
    if not user_existed:
        step("remove the test user", _remove_user)
    if primary is None and not problems:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        print(f"\nlighttpd's stderr kept in {stderr_log}")

    restore.finish(primary)
    assert run("dpkg-query", "-W", LT_PKG, check=False).returncode != 0, f"{LT_PKG} not purged"
    assert not os.path.lexists(LT_SO)
    assert not (UNIT_DIR / "lighttpd.service.d" / DROPIN).exists(), "the systemd drop-in was left behind"
    if not was_running:
        left = harness.sufcgi_cgroup_dirs(harness.cgroup_instance_name(LT_SOCKET_DIR))
        assert not left, f"cgroups left after the system lighttpd stopped: {left}"
    for f in (LT_AVAILABLE, LT_ENABLED, LT_SITE):
        assert not os.path.lexists(f), f"{f} left behind"
    assert not lt_enabled()
    assert LT_CONF.read_bytes() == conf_before, "lighttpd.conf differs from before the test"
    lt_configtest("after the purge")
    assert (lt_system_master() is not None) == was_running, "the system lighttpd's state was not restored"
