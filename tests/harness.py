"""Test harness for sufcgi: a throw-away Apache, test users, files, HTTP helpers.

Everything here runs as root (the suite needs useradd/chown and starts Apache
as root so that it can switch to www-data). Waits are bounded and fail with a
message that says what was being waited for.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

APACHE_BIN = "/usr/sbin/apache2"
MODULES_DIR = Path("/usr/lib/apache2/modules")
REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
# The lead's build output; SUFCGI_MODULE overrides it (e.g. a release build).
MODULE_PATH = Path(os.environ.get("SUFCGI_MODULE", REPO / "build" / "mod_sufcgi.so"))
PYTHON = "/usr/bin/python3"  # Debian's: apps running as test users cannot see /root/.pyenv
MPMS = ("event", "worker", "prefork")
# Every server the shared suites run against: Apache under each MPM, and lighttpd.
SERVERS = MPMS + ("lighttpd",)
LIGHTTPD_BIN = "/usr/sbin/lighttpd"
LIGHTTPD_MODULES_DIR = Path("/usr/lib/lighttpd")
# The supervisor program both modules exec, built beside each (`make build`).
SUPERVISOR_PROGRAM = "sufcgi-supervisor"
LIGHTTPD_MODULE_PATH = Path(os.environ.get("SUFCGI_LIGHTTPD_MODULE", REPO / "build" / "lighttpd" / "mod_sufcgi.so"))
WWW_DATA = (pwd.getpwnam("www-data").pw_uid, grp.getgrnam("www-data").gr_gid)

# Stock modules every test server loads (core, so, http, log_config, logio, unixd, version are built in).
STOCK_MODULES = (
    "authz_core", "authz_user", "authn_core", "authn_file", "auth_basic",
    "mime", "dir", "alias", "env", "rewrite", "userdir", "proxy", "proxy_fcgi",
    "setenvif",
)

# uids of the users this suite creates: their processes are killed in teardown.
TEST_UIDS: set[int] = set()


class HarnessError(AssertionError):
    """A harness step failed (Apache would not start, a wait timed out...)."""


class ModuleMissing(HarnessError):
    pass


def require_module() -> Path:
    """Path of mod_sufcgi.so, or a clear failure (never a silent skip)."""
    if not MODULE_PATH.is_file():
        raise ModuleMissing(
            f"{MODULE_PATH} does not exist: build it with `make build` "
            "(tests that need the sufcgi module fail until it is there)")
    return MODULE_PATH


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, timeout: float = 600):
    """Hold an exclusive lock on lock_file for the block. Suites that create users
    take one: the teardown kills every process of the users a pytest process
    registered, so two runs of the same suite must not overlap."""
    with open(lock_file, "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"another run of {what} held {lock_file} for {timeout:.0f} s")
                time.sleep(1)
        yield


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll predicate() until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- users/files

@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def www(self) -> Path:
        return self.home / "www"

    @property
    def ids(self) -> tuple[int, int]:
        return (self.uid, self.gid)


def _uid_taken(i: int) -> bool:
    try:
        pwd.getpwuid(i)
        return True
    except KeyError:
        return False


def _gid_taken(i: int) -> bool:
    try:
        grp.getgrgid(i)
        return True
    except KeyError:
        return False


def free_id(preferred: int, limit: int | None = None, group_only: bool = False) -> int:
    """`preferred`, or the next id above it that no account (and no group) has, below
    `limit` (default preferred + 1000). The suites use their users' real ids, never the
    numbers they prefer, so a machine where a host's customer or another harness owns
    uid 2001 runs them all the same."""
    limit = limit if limit is not None else preferred + 1000
    for i in range(preferred, limit):
        if not _gid_taken(i) and (group_only or not _uid_taken(i)):
            return i
    raise HarnessError(f"no free {'gid' if group_only else 'uid/gid'} in {preferred}..{limit - 1} for a test account")


def ensure_group(name: str, preferred: int, limit: int | None = None) -> int:
    """The gid of group `name`, created with `preferred` (or the next free gid) if missing."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    gid = free_id(preferred, limit, group_only=True)
    subprocess.run(["groupadd", "-g", str(gid), name], check=True)
    return gid


def ensure_user(name: str, uid: int, limit: int | None = None, gid: int | None = None) -> User:
    """Create (or reuse) a test user with a same-numbered primary group (or primary group
    `gid`), home 0755 and a `www/` document root, all owned by the user. `uid` is the
    preferred id: when another account has it, the next free one below `limit` is taken
    (an existing user of this name must be in that range too: ids that matter, such as
    "below SuFcgiMinUid", are ranges)."""
    limit = limit if limit is not None else uid + 1000
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        pw = None
    if pw is None:
        new_uid = free_id(uid, limit)
        if gid is None:
            group = ensure_group(name, new_uid, limit)
        else:
            group = gid
        subprocess.run(["useradd", "-u", str(new_uid), "-g", str(group), "-M", "-d", f"/home/{name}",
                        "-s", "/usr/sbin/nologin", name], check=True)
        pw = pwd.getpwnam(name)
    if not uid <= pw.pw_uid < limit:
        raise HarnessError(f"user {name} exists with uid {pw.pw_uid}, outside the {uid}..{limit - 1} this suite needs")
    if gid is not None and pw.pw_gid != gid:
        raise HarnessError(f"user {name} exists with primary gid {pw.pw_gid}, expected {gid}")
    user = User(name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
    TEST_UIDS.add(user.uid)
    mkdir(user.home, user.ids, 0o755)
    mkdir(user.www, user.ids, 0o755)
    return user


def mkdir(path: Path, owner: tuple[int, int], mode: int = 0o755) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def put(path: Path, content, owner: tuple[int, int], mode: int = 0o644) -> Path:
    """Write a file (str or bytes) with an exact owner and mode."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


# Modules of tests/apps/ that apps import rather than run (an app runs from its
# copy in a site directory, so what it imports must be copied beside it).
APP_HELPERS = ("fcgi_raw",)


def app_helpers(code: bytes) -> list[str]:
    """The helper modules (APP_HELPERS) an app's source imports."""
    return [h for h in APP_HELPERS
            if re.search(rb"^\s*(?:import|from)\s+" + h.encode() + rb"\b", code, re.M)]


def put_app_helpers(d: Path, code: bytes, owner: tuple[int, int]) -> None:
    """Copy into directory d the helper modules `code` imports, owned by owner."""
    for h in app_helpers(code):
        put(d / f"{h}.py", (APPS / f"{h}.py").read_bytes(), owner, 0o644)


def put_app(path: Path, app_name: str, owner: tuple[int, int], mode: int = 0o755) -> Path:
    """Copy one of tests/apps/ into place as an executable owned by owner, with
    the helper modules it imports beside it."""
    code = (APPS / app_name).read_bytes()
    put_app_helpers(Path(path).parent, code, owner)
    return put(path, code, owner, mode)


def compile_c_app(source: Path, dest: Path, owner: tuple[int, int]) -> Path:
    """Build a libfcgi app with `cc ... -lfcgi` and hand it to owner (0755)."""
    dest = Path(dest)
    res = subprocess.run(["cc", "-O2", "-Wall", "-o", str(dest), str(source), "-lfcgi"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise HarnessError(f"compiling {source} failed:\n{res.stderr}")
    os.chown(dest, *owner)
    os.chmod(dest, 0o755)
    return dest


def sha_password(password: str) -> str:
    """htpasswd-compatible {SHA} hash (no htpasswd binary needed)."""
    import base64
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


# ---------------------------------------------------------------- processes

def _proc_status(pid: int) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def proc_uid(pid: int) -> int | None:
    st = _proc_status(pid)
    return int(st["Uid"].split()[0]) if "Uid" in st else None


def proc_ppid(pid: int) -> int | None:
    st = _proc_status(pid)
    return int(st["PPid"]) if "PPid" in st else None


def pid_alive(pid: int) -> bool:
    st = _proc_status(pid)
    return bool(st) and not st.get("State", "").startswith("Z")


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        pp = proc_ppid(pid)
        if pp is not None:
            children.setdefault(pp, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def processes_of_uids(uids) -> list[int]:
    uids = set(uids)
    return [p for p in all_pids() if proc_uid(p) in uids and pid_alive(p)]


def sched_slice_ns(tid: int) -> int | None:
    """A thread's fair-scheduler slice (sched_getattr's runtime; Linux
    6.12+ reports every fair thread's, older kernels 0), None if it is gone."""
    import ctypes
    import platform
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(48)
    nr = {"x86_64": 315, "aarch64": 275}[platform.machine()]     # SYS_sched_getattr
    if libc.syscall(nr, tid, buf, 48, 0) != 0:
        return None
    return struct.unpack("IIQiIQQQ", buf.raw)[5]


def processes_with_cwd_under(path: Path) -> list[int]:
    path = str(path)
    out = []
    for p in all_pids():
        try:
            cwd = os.readlink(f"/proc/{p}/cwd")
        except OSError:
            continue
        if (cwd == path or cwd.startswith(path + "/")) and pid_alive(p):
            out.append(p)
    return out


def kill_pids(pids, grace: float = 3.0) -> list[int]:
    """SIGTERM, bounded wait, then SIGKILL. Returns the pids that were alive."""
    alive = [p for p in pids if pid_alive(p)]
    for p in alive:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in alive):
        time.sleep(0.05)
    for p in alive:
        if pid_alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return alive


def kill_test_user_processes() -> list[int]:
    return kill_pids(processes_of_uids(TEST_UIDS))


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    v = _proc_status(pid).get(key)
    if v is None:
        raise HarnessError(f"no {key} for pid {pid} (process gone?)")
    return int(v.split()[0])


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux clear_refs '5')."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def tcp_sockets():
    """Every TCP socket of the machine (IPv4 and IPv6) from /proc/net/tcp*:
    (local port, remote port, state as hex, inode)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9:
                yield int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3], f[9]


def listening_tcp_ports() -> set[int]:
    """TCP ports something listens on (state 0A), IPv4 and IPv6."""
    return {lport for lport, _, state, _ in tcp_sockets() if state == "0A"}


def _tcp_inode(server_port: int, client_port: int) -> str | None:
    """Inode of the server-side socket of the loopback connection client_port -> server_port."""
    for lport, rport, _, inode in tcp_sockets():
        if lport == server_port and rport == client_port:
            return inode
    return None


def pid_holding_connection(pids, server_port: int, client_port: int) -> int | None:
    inode = _tcp_inode(server_port, client_port)
    if not inode or inode == "0":
        return None
    target = f"socket:[{inode}]"
    for p in pids:
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    if os.readlink(f"/proc/{p}/fd/{fd}") == target:
                        return p
                except OSError:
                    continue
        except OSError:
            continue
    return None


# ---------------------------------------------------------------- HTTP

@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"response is not JSON ({e}): status {self.status}, "
                                 f"body {self.body[:500]!r}") from None

    def __repr__(self):
        return f"<Response {self.status} {self.reason} {self.body[:200]!r}>"


def _read_response(resp: http.client.HTTPResponse) -> Response:
    body = resp.read()
    return Response(resp.status, resp.reason, resp.getheaders(), body)


def request(port: int, path: str, *, host: str | None = None, method: str = "GET",
            headers: dict | None = None, body=None, timeout: float = 20) -> Response:
    """One request on a fresh connection. `host` is the Host header (name-based vhosts)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Host": f"{host}:{port}" if host else f"127.0.0.1:{port}", "Connection": "close"}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        return _read_response(conn.getresponse())
    finally:
        conn.close()


class KeepAliveClient:
    """Several requests on one HTTP/1.1 connection; fails if the server closes it."""

    def __init__(self, port: int, host: str, timeout: float = 30):
        self.port, self.host = port, host
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.connect()
        self.local_port = self.conn.sock.getsockname()[1]

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        h = {"Host": f"{self.host}:{self.port}"}
        if method != "GET":
            h["Content-Length"] = str(len(body or b""))
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        r = _read_response(resp)
        if self.conn.sock is None or self.conn.sock.getsockname()[1] != self.local_port:
            raise AssertionError("server closed the keep-alive connection")
        return r

    def close(self):
        self.conn.close()


def pattern_bytes(total: int, chunk: int = 1 << 20):
    """Deterministic, incompressible-looking body in chunks: yields bytes."""
    block = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(chunk // 32))
    sent = 0
    n = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        # vary each chunk so a stuck/duplicated chunk changes the digest
        piece = n.to_bytes(8, "big") + piece[8:] if len(piece) >= 8 else piece
        sent += len(piece)
        n += 1
        yield piece


def pattern_sha256(total: int) -> str:
    h = hashlib.sha256()
    for piece in pattern_bytes(total):
        h.update(piece)
    return h.hexdigest()


# ---------------------------------------------------------------- Apache

@dataclass
class Vhost:
    name: str
    docroot: Path
    extra: str = ""           # inside <VirtualHost>
    allow_override: str = "All"


# ---------------------------------------------------------------- cgroups
# The supervisor makes <its own cgroup>/sufcgi/<instance>/owner-<uid>/worker-<n>
# in each hierarchy (src/core/supervisor/cgroup.rs); <instance> is the server's
# socket directory made a name, as cgroup_fs::instance_name does it.

# Every instance name a server of this session used: none may be left at the end.
CGROUP_INSTANCES: set[str] = set()


def cgroup_instance_name(socket_dir) -> str:
    raw = os.fsencode(str(socket_dir)).lstrip(b"/")
    out = []
    for b in raw:
        c = chr(b)
        out.append("-" if c == "/" else c if (c.isascii() and (c.isalnum() or c in "._-")) else "_")
    name = "".join(out)
    if not name or name.startswith("."):
        name = "_" + name
    if len(name) > 100:
        h = 0xcbf29ce484222325
        for b in os.fsencode(str(socket_dir)):
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        name = f"{h:016x}-{name[-100:]}"
    return name


def cgroup_mounts() -> list[tuple[str, Path]]:
    """(kind, mount point) of every cgroup hierarchy: kind is the v1 controller
    list (e.g. "memory") or "unified" for v2."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(" "), right.split(" ")
        if len(f) < 5 or len(r) < 3:
            continue
        if r[0] == "cgroup2":
            out.append(("unified", Path(f[4])))
        elif r[0] == "cgroup":
            ctrls = [o for o in r[2].split(",") if o in ("cpu", "cpuacct", "memory", "pids", "freezer")]
            if ctrls:
                out.append((",".join(ctrls), Path(f[4])))
    return out


def own_cgroups(pid: int | str = "self") -> dict[str, Path]:
    """The cgroup directory of `pid` in each hierarchy (kind as in cgroup_mounts)."""
    paths = {}
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        ident, ctrl, path = line.split(":", 2)
        paths["unified" if ident == "0" and not ctrl else ctrl] = path
    out = {}
    for kind, mount in cgroup_mounts():
        key = kind if kind in paths else next((k for k in paths if set(kind.split(",")) <= set(k.split(","))), None)
        if key is not None:
            out[kind] = mount / paths[key].lstrip("/")
    return out


def sufcgi_cgroup_dirs(instance: str | None = None) -> list[Path]:
    """Every `…/sufcgi` directory in the cgroup hierarchies, or only the
    instance directories `…/sufcgi/<instance>`."""
    found = []
    for _, mount in cgroup_mounts():
        for root, dirs, _ in os.walk(mount):
            if os.path.basename(root) == "sufcgi":
                found.append(Path(root) / instance if instance else Path(root))
                dirs[:] = []
    return [p for p in found if p.is_dir()]


def cgroup_procs(group: Path) -> list[int]:
    """Pids in a cgroup and its subgroups."""
    out = []
    for root, _, _ in os.walk(group):
        try:
            out += [int(x) for x in (Path(root) / "cgroup.procs").read_text().split()]
        except OSError:
            pass
    return out


def remove_cgroup_tree(group: Path) -> None:
    """Kill what is in a cgroup tree and rmdir it, deepest first (clean-up of leftovers)."""
    kill_pids(cgroup_procs(group), grace=0.5)
    for root, dirs, _ in sorted(os.walk(group), key=lambda t: -len(t[0])):
        try:
            os.rmdir(root)
        except OSError:
            pass


def check_no_cgroups_left(server, timeout: float = 5) -> list[Path]:
    """After a server stopped: none of its cgroups may be left (and no empty
    `sufcgi` directory). Leftovers are removed, and returned."""
    inst = server.cgroup_instance

    def left():
        mine = sufcgi_cgroup_dirs(inst)
        empty_tops = [d for d in sufcgi_cgroup_dirs() if not any(x.is_dir() for x in d.iterdir())]
        return mine + empty_tops

    try:
        wait_for(lambda: not left(), timeout, f"cgroups of {inst} to go")
    except HarnessError:
        pass
    leftovers = left()
    for g in leftovers:
        remove_cgroup_tree(g)
        top = g if g.name == "sufcgi" else g.parent
        try:
            os.rmdir(top)
        except OSError:
            pass
    return leftovers


def _reap_after_stop(server) -> None:
    """The end of Apache.stop() and Lighttpd.stop(), once the server's own
    process is gone: give an honest supervisor a moment to reap its workers,
    then kill (and list in server.leftovers) whatever it left behind; then
    the same for its cgroups (server.cgroup_leftovers): any is a failure."""
    try:
        wait_for(lambda: not [p for p in server._known if pid_alive(p)], 5, "children to exit")
    except HarnessError:
        pass
    server.leftovers = [p for p in server._known if pid_alive(p)]
    kill_pids(server.leftovers, grace=1)
    kill_test_user_processes()
    server.master = None
    server.cgroup_leftovers = check_no_cgroups_left(server) if server.sufcgi else []
    if server.cgroup_leftovers:
        raise HarnessError(f"cgroups left after the server stopped (removed now): "
                           f"{[str(p) for p in server.cgroup_leftovers]}\n--- error log ---\n{server.log_tail(30)}")


class Server:
    """What Apache and Lighttpd share: the error log, HTTP to the server, the
    context-manager protocol and removing the server root. Subclasses have
    `error_log`, `port`, `root`, `start()` and `stop()`."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_mark(self) -> int:
        try:
            return self.error_log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        try:
            with open(self.error_log, "rb") as f:
                f.seek(mark)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, mark: int, predicate, what: str, timeout: float = 5) -> str:
        """Wait until the log written since mark satisfies predicate(text); return it.
        On timeout the failure shows the log lines that did arrive."""
        try:
            wait_for(lambda: predicate(self.log_since(mark)), timeout, what)
        except HarnessError as e:
            raise AssertionError(f"{e}\n--- error log since mark ---\n{self.log_since(mark)}") from None
        return self.log_since(mark)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no error log)"

    def get(self, path: str, host: str | None = None, **kw) -> Response:
        return request(self.port, path, host=host, **kw)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def cgroup_instance(self) -> str:
        """The name of this server's directory below `sufcgi/` in each cgroup hierarchy."""
        return cgroup_instance_name(self.socket_dir)

    def cgroup_dirs(self) -> list[Path]:
        """This server's instance directories (one per hierarchy in use)."""
        return sufcgi_cgroup_dirs(self.cgroup_instance)

    def owner_cgroups(self, uid: int) -> list[Path]:
        return [d / f"owner-{uid}" for d in self.cgroup_dirs() if (d / f"owner-{uid}").is_dir()]


@dataclass
class Apache(Server):
    """A private Apache: temp ServerRoot, generated httpd.conf, its own port.

    `sufcgi=True` adds `LoadModule sufcgi_module build/mod_sufcgi.so` (start()
    raises ModuleMissing if the file is not there)."""
    mpm: str = "event"
    vhosts: list = field(default_factory=list)
    extra: str = ""            # server-level config appended after the modules
    sufcgi: bool = True
    port: int = 0
    root: Path | None = None
    log_level: str = "info"

    def __post_init__(self):
        if self.mpm not in MPMS:
            raise ValueError(f"unknown MPM {self.mpm}")
        if not self.port:
            self.port = free_port()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix=f"sufcgi-httpd-{self.mpm}-"))
        self.root = Path(self.root)
        os.chmod(self.root, 0o755)  # www-data must reach run/ (sockets) below it
        self.conf = self.root / "httpd.conf"
        self.error_log = self.root / "error.log"
        self.access_log = self.root / "access.log"
        self.pidfile = self.root / "httpd.pid"
        self.run_dir = self.root / "run"
        self.run_dir.mkdir(exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        self.master: int | None = None
        self.leftovers: list[int] = []
        self.cgroup_leftovers: list[Path] = []
        self._known: set[int] = set()

    @property
    def socket_dir(self) -> Path:
        import re
        m = re.search(r"^\s*SuFcgiSocketDir\s+(\S+)", self.extra, re.M | re.I)
        return Path(m.group(1)) if m else self.run_dir / "sufcgi"

    # -- config
    def config_text(self) -> str:
        L = [
            f"ServerRoot {self.root}",
            f"Listen 127.0.0.1:{self.port}",
            f"PidFile {self.pidfile}",
            f"ErrorLog {self.error_log}",
            f"LogLevel {self.log_level}",
            f"DefaultRuntimeDir {self.run_dir}",
            "User www-data",
            "Group www-data",
            f"LoadModule mpm_{self.mpm}_module {MODULES_DIR}/mod_mpm_{self.mpm}.so",
        ]
        for m in STOCK_MODULES:
            L.append(f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so")
        if self.sufcgi:
            L.append(f"LoadModule sufcgi_module {require_module()}")
        if self.mpm == "prefork":
            L += ["StartServers 2", "MinSpareServers 1", "MaxSpareServers 4",
                  "MaxRequestWorkers 16", "ServerLimit 16"]
        else:
            L += ["StartServers 2", "ServerLimit 4", "ThreadsPerChild 8", "ThreadLimit 8",
                  "MinSpareThreads 4", "MaxSpareThreads 16", "MaxRequestWorkers 32"]
        L += [
            "ServerName localhost",
            "TypesConfig /etc/mime.types",
            "AddDefaultCharset Off",
            "KeepAlive On",
            "MaxKeepAliveRequests 100",
            "KeepAliveTimeout 15",
            "Timeout 60",
            'LogFormat "%h %l %u %t \\"%r\\" %>s %b %{Host}i pid=%P" sufcgi',
            f"CustomLog {self.access_log} sufcgi",
            "DirectoryIndex index.html",
            "<Directory />\n  AllowOverride None\n  Require all denied\n</Directory>",
            '<Files ".ht*">\n  Require all denied\n</Files>',
            self.extra,
        ]
        for v in self.vhosts:
            L.append(
                f"<VirtualHost 127.0.0.1:{self.port}>\n"
                f"  ServerName {v.name}\n"
                f"  DocumentRoot {v.docroot}\n"
                f"  <Directory {v.docroot}>\n"
                f"    Options FollowSymLinks ExecCGI\n"
                f"    AllowOverride {v.allow_override}\n"
                f"    Require all granted\n"
                f"  </Directory>\n"
                f"{v.extra}\n"
                f"</VirtualHost>")
        return "\n".join(L) + "\n"

    def write_config(self):
        self.conf.write_text(self.config_text())

    # -- lifecycle
    def _apachectl(self, *args) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        return subprocess.run([APACHE_BIN, "-f", str(self.conf), *args], env=env,
                              capture_output=True, text=True, timeout=60)

    def configtest(self) -> subprocess.CompletedProcess:
        self.write_config()
        return self._apachectl("-t")

    def start(self):
        self.write_config()
        if self.error_log.exists():
            self.error_log.unlink()
        if self.pidfile.exists():
            self.pidfile.unlink()
        res = self._apachectl("-k", "start")
        if res.returncode != 0:
            raise HarnessError(f"apache2 -k start failed ({res.returncode}):\n{res.stdout}{res.stderr}"
                               f"\n--- error log ---\n{self.log_tail()}")
        try:
            wait_for(lambda: self.pidfile.exists() and self.pidfile.read_text().strip(), 15,
                     f"{self.pidfile}")
            self.master = int(self.pidfile.read_text().strip())
            wait_for(lambda: port_open(self.port), 15, f"Apache to listen on 127.0.0.1:{self.port}")
        except HarnessError as e:
            self.stop()
            raise HarnessError(f"{e}\n--- error log ---\n{self.log_tail()}") from None
        self._remember()
        return self

    def _remember(self):
        if self.master:
            self._known.update(descendants(self.master))
        if self.sufcgi:
            CGROUP_INSTANCES.add(self.cgroup_instance)

    def graceful(self):
        self._remember()
        mark = self.log_mark()
        old_gen_children = set(self.child_pids())
        res = self._apachectl("-k", "graceful")
        if res.returncode != 0:
            raise HarnessError(f"graceful failed: {res.stdout}{res.stderr}")
        wait_for(lambda: "resuming normal operations" in self.log_since(mark), 20,
                 "'resuming normal operations' after graceful")
        wait_for(lambda: port_open(self.port), 15, "port after graceful")
        self._remember()
        return old_gen_children

    def stop(self, grace: float = 20):
        """Stop Apache and wait for the master to exit; kill everything it left behind
        (its descendants seen while running and any process of a test user).
        self.leftovers lists what had to be killed after the master was gone."""
        self._remember()
        if self.master and pid_alive(self.master):
            self._apachectl("-k", "stop")
            try:
                wait_for(lambda: not pid_alive(self.master), grace, "Apache master to exit")
            except HarnessError:
                kill_pids([self.master] + descendants(self.master), grace=1)
        _reap_after_stop(self)

    # -- processes
    def child_pids(self) -> list[int]:
        """Apache children serving requests (run as www-data), not the supervisor."""
        if not self.master:
            return []
        return [p for p in descendants(self.master)
                if proc_uid(p) == WWW_DATA[0] and pid_alive(p)
                and Path(f"/proc/{p}/comm").read_text().strip() == "apache2"]

    def all_descendants(self) -> list[int]:
        return descendants(self.master) if self.master else []

    # -- logs
    def crash_lines(self, mark: int = 0) -> list[str]:
        """Error-log lines reporting a process that died on a signal (segfault, abort...)."""
        return [l for l in self.log_since(mark).splitlines() if "exit signal" in l]


def only_apache(server, why: str):
    """Skip a shared test on lighttpd where the behaviour is Apache's own."""
    import pytest
    if server.mpm == "lighttpd":
        pytest.skip(f"Apache only: {why}")


# SuFcgiOwner* (lowercased) -> the lighttpd key; ints are unquoted there.
OWNER_LIMIT_KEYS = {"sufcgiownercpuweight": ("owner-cpu-weight", int), "sufcgiownercpumax": ("owner-cpu-max", str),
                    "sufcgiownermaxprocesses": ("owner-max-processes", int), "sufcgiownermemory": ("owner-memory", str)}


def _owner_limit_setting(name: str, value: str) -> str:
    key, kind = OWNER_LIMIT_KEYS[name]
    if kind is int:
        return f"sufcgi.{key} = {0 if value.lower() == 'none' else int(value)}"
    return f'sufcgi.{key} = "{value}"'


def _apache_extra_to_lighttpd(extra: str) -> str:
    """The per-vhost Apache lines that have a lighttpd equivalent (SuFcgiOwner, SuFcgiOwner*)."""
    out = []
    for line in extra.splitlines():
        w = line.split()
        if len(w) >= 2 and w[0].lower() == "sufcgiowner":
            out.append(f'  sufcgi.owner = "{w[1]}' + (f':{w[2]}"' if len(w) > 2 else '"'))
        elif len(w) >= 2 and w[0].lower() in OWNER_LIMIT_KEYS:
            out.append("  " + _owner_limit_setting(w[0].lower(), w[1]))
    return "\n".join(out)


def apache_host_config_to_lighttpd(extra: str) -> str:
    """Server-level Apache lines of the suites, as lighttpd settings (a shared
    test writes its host settings once, in Apache's form)."""
    out, ceilings, per_key = [], [], {}
    for line in extra.splitlines():
        w = line.split()
        if not w:
            continue
        name = w[0].lower()
        if name == "sufcgiceiling":
            ceilings.append(f'"{w[1]}" => "{w[2]}"')
        elif name in ("sufcgimaxworkersperowner", "sufcgimaxworkerstotal", "sufcgiminuid", "sufcgimingid",
                      "timeout"):
            key = {"sufcgimaxworkersperowner": "max-workers-per-owner", "sufcgimaxworkerstotal":
                   "max-workers-total", "sufcgiminuid": "min-uid", "sufcgimingid": "min-gid",
                   "timeout": "timeout"}[name]
            out.append(f"sufcgi.{key} = {int(w[1])}")
        elif name == "sufcgisocketdir":
            out.append(f'sufcgi.socket-dir = "{w[1]}"')
        elif name == "sufcgicgroups":
            out.append(f'sufcgi.cgroups = "{w[1]}"')
        elif name == "sufcgishortslices":
            out.append(f'sufcgi.short-slices = "{"enable" if w[1].lower() == "on" else "disable"}"')
        elif name in OWNER_LIMIT_KEYS:
            out.append(_owner_limit_setting(name, w[1]))
        elif name in ("sufcgiblockenv", "sufcgiphpforbid"):
            key = "block-env" if name == "sufcgiblockenv" else "php-forbid"
            per_key.setdefault(key, []).extend(w[1:])
        elif name.startswith("sufcgi"):
            raise ValueError(f"no lighttpd translation for {line!r}")
    if ceilings:
        out.append(f"sufcgi.ceilings = ( {', '.join(ceilings)} )")
    for key, vals in per_key.items():
        out.append(f"sufcgi.{key} = ( {', '.join(chr(34) + v + chr(34) for v in vals)} )")
    return "\n".join(out)


def make_server(kind: str, vhosts: list, extra: str = ""):
    """An Apache under MPM `kind`, or lighttpd, with `extra` written in Apache's form."""
    if kind == "lighttpd":
        return Lighttpd(vhosts=vhosts, extra=apache_host_config_to_lighttpd(extra))
    return Apache(mpm=kind, vhosts=vhosts, extra=extra)


@dataclass
class Lighttpd(Server):
    """A private lighttpd with mod_sufcgi: temp root, generated lighttpd.conf,
    its own port, started in the foreground (-D) as root so that the plugin
    can start its supervisor before lighttpd drops to www-data.

    Same interface as Apache for the shared suites. `vhosts` become
    `$HTTP["host"]` blocks; `extra` is lighttpd config text."""
    vhosts: list = field(default_factory=list)
    extra: str = ""
    sufcgi: bool = True
    port: int = 0
    root: Path | None = None
    mpm: str = "lighttpd"   # the shared suites label servers by this

    def __post_init__(self):
        if not self.port:
            self.port = free_port()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="sufcgi-lighttpd-"))
        self.root = Path(self.root)
        os.chmod(self.root, 0o755)
        self.conf = self.root / "lighttpd.conf"
        self.error_log = self.root / "error.log"
        self.pidfile = self.root / "lighttpd.pid"
        self.modules = self.root / "modules"
        self.run_dir = self.root / "run"
        self.run_dir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.master: int | None = None
        self.leftovers: list[int] = []
        self.cgroup_leftovers: list[Path] = []
        self._known: set[int] = set()

    @property
    def socket_dir(self) -> Path:
        import re
        m = re.search(r'sufcgi\.socket-dir\s*=\s*"([^"]+)"', self.extra)
        return Path(m.group(1)) if m else self.run_dir / "sufcgi"

    def config_text(self) -> str:
        main = self.vhosts[0].docroot if self.vhosts else self.root
        mods = ["mod_access", "mod_setenv"] + (["mod_sufcgi"] if self.sufcgi else [])
        L = [
            f'server.modules = ( {", ".join(repr(m).replace(chr(39), chr(34)) for m in mods)} )',
            f'server.bind = "127.0.0.1"',
            f"server.port = {self.port}",
            f'server.document-root = "{main}"',
            f'server.errorlog = "{self.error_log}"',
            f'server.pid-file = "{self.pidfile}"',
            'server.username = "www-data"',
            'server.groupname = "www-data"',
            'server.tag = "lighttpd"',
            'index-file.names = ( "index.html" )',
            'mimetype.assign = ( ".html" => "text/html", ".txt" => "text/plain", ".json" => "application/json", "" => "application/octet-stream" )',
            f'sufcgi.socket-dir = "{self.run_dir}/sufcgi"'
            if self.sufcgi and "sufcgi.socket-dir" not in self.extra else "",
            self.extra,
        ]
        for v in self.vhosts:
            L.append(f'$HTTP["host"] == "{v.name}" {{\n  server.document-root = "{v.docroot}"\n'
                     f'{_apache_extra_to_lighttpd(v.extra)}\n}}')
        return "\n".join(L) + "\n"

    def write_config(self):
        self.conf.write_text(self.config_text())
        self.modules.mkdir(exist_ok=True)
        for so in LIGHTTPD_MODULES_DIR.glob("mod_*.so"):
            link = self.modules / so.name
            if not link.exists():
                link.symlink_to(so)
        if self.sufcgi:
            if not LIGHTTPD_MODULE_PATH.is_file():
                raise ModuleMissing(f"{LIGHTTPD_MODULE_PATH} does not exist: build it with `make build`")
            # A copy, never a link: a rebuild must not change a running server's file.
            shutil.copy(LIGHTTPD_MODULE_PATH, self.modules / "mod_sufcgi.so.tmp")
            os.replace(self.modules / "mod_sufcgi.so.tmp", self.modules / "mod_sufcgi.so")
            # The supervisor program the plugin execs, looked for beside it.
            prog = LIGHTTPD_MODULE_PATH.parent / SUPERVISOR_PROGRAM
            if prog.is_file():
                shutil.copy(prog, self.modules / f"{SUPERVISOR_PROGRAM}.tmp")
                os.replace(self.modules / f"{SUPERVISOR_PROGRAM}.tmp", self.modules / SUPERVISOR_PROGRAM)

    def _argv(self, *extra) -> list[str]:
        return [LIGHTTPD_BIN, "-D", "-f", str(self.conf), "-m", str(self.modules), *extra]

    def configtest(self) -> subprocess.CompletedProcess:
        self.write_config()
        return subprocess.run(self._argv("-tt"), capture_output=True, text=True, timeout=60)

    def start(self):
        self.write_config()
        for f in (self.error_log, self.pidfile):
            if f.exists():
                f.unlink()
        # lighttpd opens its error log after dropping to www-data. The
        # supervisor (forked before that) logs to lighttpd's stderr: the same
        # file here, so one log shows both, as under Apache.
        self.error_log.touch()
        os.chown(self.error_log, *WWW_DATA)
        with open(self.error_log, "ab") as err:
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        self.master = self.proc.pid
        try:
            wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 15,
                     f"lighttpd to listen on 127.0.0.1:{self.port}")
            if self.proc.poll() is not None:
                raise HarnessError(f"lighttpd exited with {self.proc.returncode}")
        except HarnessError as e:
            self.stop()
            raise HarnessError(f"{e}\n--- error log ---\n{self.log_tail()}") from None
        self._remember()
        return self

    def _keeper_and_supervisor_pids(self) -> list[int]:
        """The plugin's root processes: the keeper (detached, not lighttpd's
        child) and the supervisors it started, from their log lines."""
        import re
        text = self.log_since(0)
        return [int(p) for p in re.findall(r"(?:keeper started|supervisor started), pid (\d+)", text)]

    def _remember(self):
        if self.master:
            self._known.update(descendants(self.master))
        if self.sufcgi:
            CGROUP_INSTANCES.add(self.cgroup_instance)
        for p in self._keeper_and_supervisor_pids():
            if pid_alive(p):
                self._known.add(p)
                self._known.update(descendants(p))

    def graceful(self):
        """lighttpd's graceful restart (SIGUSR1): reloads config and plugins in place."""
        self._remember()
        mark = self.log_mark()
        os.kill(self.master, signal.SIGUSR1)
        wait_for(lambda: "server started" in self.log_since(mark), 20, "lighttpd to restart after SIGUSR1")
        wait_for(lambda: port_open(self.port), 15, "port after graceful")
        self._remember()
        return set()

    def stop(self, grace: float = 20):
        self._remember()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        _reap_after_stop(self)

    def child_pids(self) -> list[int]:
        """Processes serving requests: lighttpd itself (it is single-process)."""
        return [self.master] if self.master and pid_alive(self.master) else []

    def all_descendants(self) -> list[int]:
        return descendants(self.master) if self.master else []

    def crash_lines(self, mark: int = 0) -> list[str]:
        if self.proc is not None and self.proc.poll() is not None and self.proc.returncode < 0:
            return [f"lighttpd died on signal {-self.proc.returncode}"]
        return []



# ---------------------------------------------------------------- standalone FastCGI

def serve(request, a: "Apache", label: str = "", fail_on_crash: bool = True):
    """For a pytest fixture (`yield from serve(request, Apache(...))`): start `a`,
    hand it to the tests, stop it. Its server root (with the error log) is kept
    when a test failed meanwhile or an Apache process crashed, removed otherwise."""
    failed_before = request.session.testsfailed
    try:
        a.start()
    except HarnessError:
        a.stop()
        raise
    yield a
    a.stop()
    crashes = a.crash_lines()
    if request.session.testsfailed > failed_before or crashes:
        print(f"\n{label}Apache server root kept for inspection: {a.root}")
    else:
        a.cleanup()
    if fail_on_crash:
        assert not crashes, "Apache processes crashed:\n" + "\n".join(crashes[:5])


class StandaloneFcgi:
    """Run an app as a FastCGI server on a Unix socket the way a spawner does:
    we bind+listen, hand the socket to the app as fd 0, drop to `owner`.
    Used for the mod_proxy_fcgi side of comparisons and harness self-tests."""

    def __init__(self, argv: list[str], sock_path: Path, owner: tuple[int, int] | None = None,
                 cwd: Path | None = None, env: dict | None = None):
        self.sock_path = Path(sock_path)
        if self.sock_path.exists():
            self.sock_path.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.sock_path))
        self.listener.listen(64)
        os.chmod(self.sock_path, 0o666)  # www-data connects to it
        fd = self.listener.fileno()

        def child_setup():
            os.setsid()
            if owner:
                os.setgroups([])
                os.setgid(owner[1])
                os.setuid(owner[0])

        self.proc = subprocess.Popen(
            argv, stdin=fd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=str(cwd) if cwd else None, preexec_fn=child_setup, close_fds=True,
            env=env if env is not None else {"PATH": "/usr/bin:/bin"})

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.listener.close()
        try:
            self.sock_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- lifecycle helpers
# (added for test_lifecycle.py: timed and concurrent requests, steady load,
#  the supervisor's pid, a raw reader for responses that stall)

import re as _re
import statistics as _statistics
import threading as _threading


@dataclass
class Timed:
    """One request's outcome: a Response, or the exception that ended it."""
    response: Response | None
    error: BaseException | None
    started: float      # time.monotonic() when sent
    elapsed: float

    @property
    def status(self) -> int | None:
        return self.response.status if self.response else None

    def __repr__(self):
        if self.response:
            r = self.response
            return f"<{r.status} {r.reason} {r.body[:60]!r} after {self.elapsed:.2f}s>"
        return f"<error {self.error!r} after {self.elapsed:.2f}s>"


def timed_request(port: int, path: str, host: str | None = None, **kw) -> Timed:
    """request() that never raises: the outcome and how long it took."""
    t0 = time.monotonic()
    try:
        r = request(port, path, host=host, **kw)
        return Timed(r, None, t0, time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - the test reports whatever happened
        return Timed(None, e, t0, time.monotonic() - t0)


def concurrent_requests(port: int, paths: list[str], host: str | None = None,
                        timeout: float = 20) -> list[Timed]:
    """Send all requests at once (threads released by a barrier); results in order."""
    out: list[Timed | None] = [None] * len(paths)
    barrier = _threading.Barrier(len(paths))

    def one(i, p):
        barrier.wait()
        out[i] = timed_request(port, p, host=host, timeout=timeout)

    threads = [_threading.Thread(target=one, args=(i, p), daemon=True) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return [o if o is not None else Timed(None, HarnessError("thread did not finish"), 0, timeout)
            for o in out]


class SteadyLoad:
    """`threads` clients doing sequential requests to one path until stop().
    Every outcome is kept (Timed plus the response JSON when there is one)."""

    def __init__(self, port: int, host: str, path: str, threads: int = 1, timeout: float = 20):
        self.port, self.host, self.path, self.timeout = port, host, path, timeout
        self.results: list[Timed] = []
        self._lock = _threading.Lock()
        self._stop = _threading.Event()
        self._threads = [_threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set():
            t = timed_request(self.port, self.path, host=self.host, timeout=self.timeout)
            with self._lock:
                self.results.append(t)
            if t.status != 200:
                time.sleep(0.05)  # keep a broken server from turning this into a busy loop

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def snapshot(self) -> list[Timed]:
        with self._lock:
            return list(self.results)

    def failures(self) -> list[Timed]:
        return [t for t in self.snapshot() if t.status != 200]

    def ok_json_since(self, since: float) -> list[dict]:
        """JSON bodies of the 200s sent at or after `since` (time.monotonic())."""
        out = []
        for t in self.snapshot():
            if t.status == 200 and t.started >= since:
                try:
                    out.append(json.loads(t.response.body))
                except ValueError:
                    pass
        return out

    def wait_for_json(self, since: float, predicate, timeout: float, what: str) -> tuple[dict, float]:
        """First 200 sent after `since` whose JSON satisfies predicate; and its delay from since."""
        def found():
            for t in self.snapshot():
                if t.status == 200 and t.started >= since:
                    try:
                        j = json.loads(t.response.body)
                    except ValueError:
                        continue
                    if predicate(j):
                        return (j, t.started + t.elapsed - since)
            return None
        return wait_for(found, timeout, what)


def median(values) -> float:
    return _statistics.median(values)


def proc_age(pid: int) -> float:
    """Seconds since the process started (from /proc), 0.0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime


def supervisor_pids_from_log(apache: "Apache") -> list[int]:
    """Pids from the `supervisor started, pid N` lines, oldest first."""
    return [int(m) for m in _re.findall(r"supervisor started, pid (\d+)", apache.log_since(0))]


@dataclass
class RawResult:
    status: int | None
    headers: dict
    body: bytes
    closed: bool          # the server closed the connection (EOF) before our timeout
    elapsed: float        # until EOF or timeout
    error: str | None = None


def raw_get(port: int, host: str, path: str, timeout: float) -> RawResult:
    """GET with a raw socket, reading until EOF or `timeout` seconds in all: shows a
    response that stops half-way (http.client would only raise IncompleteRead)."""
    t0 = time.monotonic()
    data = b""
    closed, error = False, None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError as e:  # a reset counts as closed
                closed, error = True, repr(e)
                break
            if not chunk:
                closed = True
                break
            data += chunk
    elapsed = time.monotonic() - t0
    head, sep, body = data.partition(b"\r\n\r\n")
    status, headers = None, {}
    if sep:
        lines = head.decode(errors="replace").split("\r\n")
        parts = lines[0].split()
        if len(parts) >= 2 and parts[1].isdigit():
            status = int(parts[1])
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
    else:
        body = data
    return RawResult(status, headers, body, closed, elapsed, error)


def hammer(port: int, host: str, path: str, clients: int, duration: float,
           pause_after_error: float = 0.1, timeout: float = 20) -> dict[str, int]:
    """`clients` threads doing sequential requests for `duration` seconds; counts by
    status ("error" for exceptions). Meant to run in its own process (see
    hammer_in_process) so its threads do not compete with the measuring thread's GIL."""
    counts: dict[str, int] = {}
    lock = _threading.Lock()
    deadline = time.monotonic() + duration

    def run():
        while time.monotonic() < deadline:
            t = timed_request(port, path, host=host, timeout=timeout)
            key = str(t.status) if t.status else "error"
            with lock:
                counts[key] = counts.get(key, 0) + 1
            if t.status != 200:
                time.sleep(pause_after_error)

    threads = [_threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + timeout + 5)
    return counts


def hammer_in_process(*args, **kw):
    """Start hammer() in a forked process; returns (process, queue) — queue.get() gives the counts."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put(hammer(*args, **kw)), daemon=True)
    p.start()
    return p, q


def request_stop(apache: "Apache") -> None:
    """`apache2 -k stop` only: no waiting and no clean-up (Apache.stop() does both), so a
    test can watch what goes away by itself."""
    apache._remember()
    if isinstance(apache, Lighttpd):
        if apache.proc and apache.proc.poll() is None:
            apache.proc.terminate()
        return
    apache._apachectl("-k", "stop")
