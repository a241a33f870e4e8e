#!/usr/bin/python3
"""`make bench`: sufcgi against a static file, mod_proxy_fcgi (with and without
connection reuse) and mod_fcgid, one server at a time, with wrk.

Every server is the tests' harness Apache (tests/harness.py) with the same
event-MPM sizing, one vhost (AllowOverride All) whose DocumentRoot belongs to
the bench user, and the same libfcgi hello app (bench/hello.c). Only the line
that routes /…/hello.fcgi to the app differs. Results go to
bench/results/latest.json and a Markdown summary is printed. See BENCHMARKS.md
for what exactly is measured. Must run as root (useradd, Apache as root).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))
import extras  # noqa: E402
import neighbour  # noqa: E402
import harness  # noqa: E402
import wrkstats  # noqa: E402

USER, UID = "sufcgi-bench", 2050
BODY = b"Hello, world\n"           # what hello.c and the static file answer
APP_PROCS = 4                      # processes behind every FastCGI variant
# `--sufcgi-extra`: host lines added to the sufcgi variants' server config (an
# A/B of a host setting, e.g. "SuFcgiShortSlices off"; lighttpd gets them
# translated, as the tests' shared suites do).
SUFCGI_EXTRA = [""]
# Same MPM sizing for every server: a fixed set of children, none started or
# stopped while measuring (MaxSpareThreads covers them all).
# 4 x 32 threads: even when wrk's 64 connections land unevenly on the children,
# no child runs out of threads (the event MPM then resets keep-alive connections).
MPM_LINES = ["StartServers 4", "ServerLimit 4", "ThreadsPerChild 32", "ThreadLimit 32",
             "MinSpareThreads 32", "MaxSpareThreads 128", "MaxRequestWorkers 128"]
MPM_DIRECTIVES = {l.split()[0] for l in MPM_LINES}
WRK_TIMEOUT = "10s"                # latencies up to this are recorded (wrk's default is 2 s)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- the servers

class BenchApache(harness.Apache):
    """The harness Apache with the bench MPM sizing and quieter logging."""
    mpm_lines = MPM_LINES

    def config_text(self) -> str:
        out, replaced = [], False
        for line in super().config_text().split("\n"):
            word = line.split(" ", 1)[0]
            if word in MPM_DIRECTIVES:
                if not replaced:
                    out.extend(self.mpm_lines)
                    replaced = True
                continue
            out.append(line)
        if not replaced:
            raise harness.HarnessError("harness config has no MPM sizing lines to replace")
        return "\n".join(out)


class AppProcs:
    """APP_PROCS copies of the app sharing one listening Unix socket as fd 0
    (what `cgi-fcgi -start -connect SOCK app N` does), run as the bench user."""

    def __init__(self, app: Path, sock: Path, owner: tuple[int, int], n: int = APP_PROCS):
        self.sock = sock
        if sock.exists():
            sock.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(sock))
        self.listener.listen(1024)          # same backlog sufcgi gives its pool sockets
        os.chmod(sock, 0o666)

        def drop():
            os.setsid()
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])

        self.procs = [subprocess.Popen([str(app)], stdin=self.listener.fileno(),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       cwd=str(app.parent), preexec_fn=drop, close_fds=True,
                                       env={"PATH": "/usr/bin:/bin"})
                      for _ in range(n)]

    def stop(self):
        harness.kill_pids([p.pid for p in self.procs], grace=1)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.listener.close()
        try:
            self.sock.unlink()
        except FileNotFoundError:
            pass


def connected_unix_sockets(path: Path) -> int:
    """Established connections whose server end is bound to `path` (from /proc/net/unix)."""
    n = 0
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return -1
    for line in lines:
        parts = line.split()
        if len(parts) >= 8 and parts[7] == str(path) and parts[5] == "03":
            n += 1
    return n


def processes_running(exe: Path) -> int:
    """Live processes executing `exe` (how many app processes a variant really ran)."""
    n = 0
    for pid in harness.all_pids():
        try:
            if os.readlink(f"/proc/{pid}/exe") == str(exe) and harness.pid_alive(pid):
                n += 1
        except OSError:
            continue
    return n


class Site:
    """The bench user's docroot: one directory per variant, plus cold-start dirs."""

    def __init__(self, tmp: Path):
        self.user = harness.ensure_user(USER, UID)
        self.ids = self.user.ids
        self.www = self.user.www
        self.tmp = tmp
        for d in ("static", "proxy", "fcgid", "fcgid-cold", "su", "su-cold"):
            if (self.www / d).exists():
                shutil.rmtree(self.www / d)
        src = harness.put(tmp / "hello.c", (BENCH / "hello.c").read_bytes(), (0, 0))
        self.app = harness.compile_c_app(src, self.user.home / "bench-hello", self.ids)
        w, A = self.www, self.ids
        harness.put(harness.mkdir(w / "static", A) / "hello.txt", BODY, A)
        for d in ("proxy", "fcgid", "su"):
            harness.put(harness.mkdir(w / d, A) / "hello.fcgi", self.app.read_bytes(), A, 0o755)
        harness.mkdir(w / "fcgid-cold", A)
        harness.mkdir(w / "su-cold", A)
        harness.put(w / "su" / ".htaccess",
                    f"AddHandler sufcgi-script .fcgi\nSuFcgiMaxWorkers {APP_PROCS}\n", A)
        harness.put(w / "su-cold" / ".htaccess", "AddHandler sufcgi-script .fcgi\n", A)
        self.cold_serial = 0

    def fresh_app(self, d: str) -> str:
        """A new copy of the app under a new name: a pool/class nobody has started yet."""
        self.cold_serial += 1
        name = f"cold-{os.getpid()}-{self.cold_serial}.fcgi"
        harness.put(self.www / d / name, self.app.read_bytes(), self.ids, 0o755)
        return f"/{d}/{name}"

    def cleanup(self):
        for d in ("static", "proxy", "fcgid", "fcgid-cold", "su", "su-cold"):
            shutil.rmtree(self.www / d, ignore_errors=True)
        try:
            (self.user.home / "bench-hello").unlink()
        except FileNotFoundError:
            pass


def app_exe(kind: str, site: Site) -> Path | None:
    """The executable whose processes serve `kind` (None for the static file)."""
    return {"proxy": site.app, "proxy_reuse": site.app, "fcgid": site.www / "fcgid" / "hello.fcgi",
            "sufcgi": site.www / "su" / "hello.fcgi", "lighttpd_fastcgi": site.app,
            "lighttpd_sufcgi": site.www / "su" / "hello.fcgi"}.get(kind)


def make_lighttpd(kind: str, site: Site, port: int):
    """lighttpd for one variant: mod_fastcgi to the shared app socket (its own
    process manager off, like the proxy variant), or the sufcgi plugin."""
    vhost = harness.Vhost("bench.test", site.www)
    if kind == "lighttpd_fastcgi":
        sock = site.tmp / f"{kind}.sock"
        app = AppProcs(site.app, sock, site.ids)
        extra = ('server.modules += ( "mod_fastcgi" )\n'
                 f'fastcgi.server = ( "/proxy/" => (( "socket" => "{sock}", "check-local" => "disable" )) )')
        return harness.Lighttpd(vhosts=[vhost], port=port, sufcgi=False, extra=extra), "/proxy/hello.fcgi", app
    extra = "sufcgi.max-workers-per-owner = 64\n" + harness.apache_host_config_to_lighttpd(SUFCGI_EXTRA[0])
    return harness.Lighttpd(vhosts=[vhost], port=port, extra=extra), "/su/hello.fcgi", None


def make_server(kind: str, site: Site, port: int) -> tuple[BenchApache, str, AppProcs | None]:
    """Apache for one variant: (server, URL path to load, external app processes)."""
    if kind.startswith("lighttpd"):
        return make_lighttpd(kind, site, port)
    www = site.www
    vhost = harness.Vhost("bench.test", www)
    extra, sufcgi, app, path = "", False, None, "/proxy/hello.fcgi"
    if kind == "static":
        path = "/static/hello.txt"
    elif kind in ("proxy", "proxy_reuse"):
        sock = site.tmp / f"{kind}.sock"
        app = AppProcs(site.app, sock, site.ids)
        vhost.extra = (f'  <Directory {www}/proxy>\n'
                       f'    SetHandler "proxy:unix:{sock}|fcgi://localhost/"\n'
                       f'  </Directory>')
        if kind == "proxy_reuse":
            # One pooled backend connection per Apache child (4 children -> 4 connections
            # for the 4 single-connection app processes). With the default pool size
            # (ThreadsPerChild) idle pooled connections would pin every app process and
            # requests on other connections would wait in the backlog until Timeout.
            extra = '<Proxy "fcgi://localhost/" enablereuse=on max=1>\n</Proxy>'
    elif kind == "fcgid":
        ipc = harness.mkdir(site.tmp / f"fcgid-ipc-{port}", harness.WWW_DATA, 0o750)
        extra = (f"LoadModule fcgid_module {harness.MODULES_DIR}/mod_fcgid.so\n"
                 f"FcgidIPCDir {ipc}\n"
                 f"FcgidProcessTableFile {site.tmp}/fcgid-shm-{port}\n"
                 f"FcgidMaxProcessesPerClass {APP_PROCS}\n")
        vhost.extra = (f"  <Directory {www}/fcgid>\n    AddHandler fcgid-script .fcgi\n  </Directory>\n"
                       f"  <Directory {www}/fcgid-cold>\n    AddHandler fcgid-script .fcgi\n"
                       f"  </Directory>")
        path = "/fcgid/hello.fcgi"
    elif kind == "sufcgi":
        sufcgi = True
        extra = "SuFcgiMaxWorkersPerOwner 64"   # room for the cold-start pools
        extra += "\n" + SUFCGI_EXTRA[0]
        path = "/su/hello.fcgi"
    else:
        raise ValueError(kind)
    a = BenchApache(mpm="event", port=port, sufcgi=sufcgi, vhosts=[vhost], extra=extra,
                    log_level="warn")
    return a, path, app


# ---------------------------------------------------------------- measuring

def http_get(port: int, path: str, timeout: float = 30) -> tuple[float, int, bytes]:
    """One GET on a fresh connection: (seconds from connect to the last byte, status, body)."""
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"User-Agent: sufcgi-bench\r\nConnection: close\r\n\r\n").encode()
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    elapsed = time.perf_counter() - t0
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return elapsed, status, body


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def check_answer(a: BenchApache, path: str) -> None:
    _, status, body = http_get(a.port, path)
    if status != 200 or body != BODY:
        raise harness.HarnessError(f"GET {path} -> {status} {body[:200]!r}\n"
                                   f"--- error log ---\n{a.log_tail(20)}")


def run_wrk(port: int, path: str, conns: int, seconds: int, tmp: Path) -> dict:
    out = tmp / f"wrk-{port}-{conns}-{seconds}.json"
    env = dict(os.environ, BENCH_WRK_OUT=str(out))
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}",
           "-s", str(BENCH / "latency.lua"), f"http://127.0.0.1:{port}{path}"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if res.returncode != 0 or not out.exists():
        raise harness.HarnessError(f"wrk failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    raw = json.loads(out.read_text())
    out.unlink()
    stats = wrkstats.per_request(raw, conns)
    return {
        "connections": conns,
        "duration_s": raw["duration_us"] / 1e6,
        "requests": raw["requests"],
        # Successful answers only: wrk counts 4xx/5xx responses as completed requests.
        "req_per_s": round((raw["requests"] - raw["errors"]["status"]) / (raw["duration_us"] / 1e6), 1),
        "req_per_s_all_responses": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "errors": raw["errors"],
        **stats,
        "wrk_stdout": res.stdout,
    }


MAX_ATTEMPTS = 3


def measure(run, warmup, gate: QuietGate) -> dict:
    """run() under a BusyWatch; if a test suite or build ran meanwhile, wait for
    quiet (within the gate's budget) and repeat, at most MAX_ATTEMPTS times.
    The result records what ran alongside it and which attempt it is."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if warmup is not None:
            warmup()                                   # discarded
        with BusyWatch() as watch:
            r = run()
        r["busy_during"], r["attempt"] = list(watch.seen), attempt
        if not watch.seen:
            break
        if attempt == MAX_ATTEMPTS or gate.remaining() <= 0:
            log(f"  other work ran during this measurement, keeping it: {list(watch.seen)[:3]}")
            break
        log(f"  other work ran during this measurement, repeating it: {list(watch.seen)[:3]}")
        gate.wait()
    return r


def cold_start(a: BenchApache, site: Site, d: str, samples: int) -> dict:
    """First request to a never-started app (fresh file each time), then the same URL again."""
    cold, warm, bad = [], [], []
    for _ in range(samples):
        path = site.fresh_app(d)
        t, status, body = http_get(a.port, path)
        if status != 200 or body != BODY:
            bad.append(f"{path}: {status} {body[:80]!r}")
            continue
        cold.append(t)
        t2, status2, body2 = http_get(a.port, path)
        if status2 == 200 and body2 == BODY:
            warm.append(t2)
        time.sleep(0.1)
    if bad:
        log(f"cold start on {d}: {len(bad)} failed, e.g. {bad[0]}\n{a.log_tail(10)}")

    def ms(xs):
        xs = sorted(xs)
        if not xs:
            return {"n": 0}
        return {"n": len(xs), "median_ms": round(statistics.median(xs) * 1e3, 2),
                "p90_ms": round(xs[min(len(xs) - 1, int(0.9 * len(xs) + 0.5) - 1)] * 1e3, 2),
                "min_ms": round(xs[0] * 1e3, 2), "max_ms": round(xs[-1] * 1e3, 2)}
    return {"cold": ms(cold), "warm": ms(warm), "failures": bad}


# ---------------------------------------------------------------- environment

BUSY_NAMES = {"pytest", "py.test", "cargo", "rustc", "clippy-driver"}
# Programs that only wrap the work or wait for the heavy-run lock (a shell
# `bash -c "timeout … pytest"` too): the work counts when it runs, as a
# process of its own.
WRAPPERS = {"flock", "timeout", "nice", "ionice", "bash", "sh", "make", "env"}


def busy_processes() -> list[str]:
    """Other work that would skew the numbers: test suites and Rust builds
    (`pgrep -f pytest`, `pgrep -f 'cargo|rustc'`, but matched on whole argv
    words so that a PATH containing ~/.cargo/bin does not count)."""
    mine = {os.getpid(), os.getppid()}
    out = []
    for pid in harness.all_pids():
        if pid in mine:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [os.path.basename(a.decode(errors="replace")) for a in argv if a]
        # `flock LOCK pytest …` and `timeout N …` only wait for (or wrap) the
        # command: it counts when it runs, as a process of its own.
        if words and words[0] in WRAPPERS:
            continue
        if BUSY_NAMES.intersection(words):
            out.append(f"{pid} " + " ".join(words)[:100])
    return out


class BusyWatch:
    """Samples busy_processes() every 2 s while a measurement runs, so a test
    suite or build that starts mid-run is recorded next to the numbers."""

    def __init__(self):
        self.seen: dict[str, None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for p in busy_processes():
                self.seen.setdefault(p, None)
            self._stop.wait(2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class QuietGate:
    """Waits until no test suite or build runs. `max_wait` seconds is the budget
    for the whole bench; once something was seen, the machine must stay quiet
    for SETTLE_S before measuring (helpers run suites back to back)."""
    SETTLE_S = 5

    def __init__(self, max_wait: float):
        self.deadline = time.monotonic() + max_wait
        self.waited = 0.0

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait(self) -> list[str]:
        """Returns what is still busy when the budget ran out ([] when quiet)."""
        start = time.monotonic()
        busy = busy_processes()
        if not busy or self.remaining() <= 0:
            return busy                     # BusyWatch records what runs alongside
        log(f"waiting (budget left {self.remaining():.0f} s) for: {busy[:3]}")
        quiet_since = None
        while True:
            now = time.monotonic()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            if quiet_since is not None and now - quiet_since >= self.SETTLE_S:
                break
            if now >= self.deadline:
                break
            time.sleep(1)
            busy = busy_processes()
        self.waited += time.monotonic() - start
        if busy:
            log(f"machine still busy, wait budget used up; measuring anyway: {busy[:3]}")
        return busy


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    def deb_version(pkg):
        return first_line(["dpkg-query", "-W", "-f", "${Version}", pkg])

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "apache": first_line([harness.APACHE_BIN, "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "libapache2-mod-fcgid": deb_version("libapache2-mod-fcgid"),
        "libfcgi": deb_version("libfcgi-dev"),
        "sufcgi_module": module_identity(),
    }


def module_identity() -> dict:
    """Which build of mod_sufcgi.so was measured (it is rebuilt often)."""
    import hashlib
    p = harness.MODULE_PATH
    try:
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    except OSError:
        return {"path": str(p), "missing": True}
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
    return {"path": str(p), "size": st.st_size, "sha256_16": digest,
            "mtime": mtime.isoformat(timespec="seconds")}


# ---------------------------------------------------------------- report

SERVERS = [
    ("static", "Apache, static file (ceiling)"),
    ("proxy", "mod_proxy_fcgi"),
    ("proxy_reuse", "mod_proxy_fcgi enablereuse=on"),
    ("fcgid", "mod_fcgid"),
    ("sufcgi", "sufcgi"),
    ("lighttpd_fastcgi", "lighttpd + mod_fastcgi"),
    ("lighttpd_sufcgi", "lighttpd + sufcgi"),
]
LABEL = dict(SERVERS)


def fmt_ms(us: int | float) -> str:
    return f"{us / 1000:.2f}"


def markdown(results: dict) -> str:
    L = []
    if not results["load"] and not results["cold_start"]:      # extras only
        return extras.markdown(results.get("extras", {}))
    L.append("| server | conns | req/s | p50 ms | p99 ms | p99.9 ms | max ms | non-2xx | socket errors "
             "| wrk-corrected p99 / p99.9 ms |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, _ in SERVERS:
        for r in results["load"].get(kind, []):
            pr, wc = r["per_request"], r["wrk_corrected"]
            e = r["errors"]
            sock_errs = e["connect"] + e["read"] + e["write"] + e["timeout"]
            L.append(f"| {LABEL[kind]} | {r['connections']} | {r['req_per_s']:,.0f} | "
                     f"{fmt_ms(pr['p50_us'])} | {fmt_ms(pr['p99_us'])} | {fmt_ms(pr['p99.9_us'])} | "
                     f"{fmt_ms(pr['max_us'])} | {e['status']} | {sock_errs} | "
                     f"{fmt_ms(wc['p99_us'])} / {fmt_ms(wc['p99.9_us'])} |")
    busy = sorted({b for runs in results["load"].values() for r in runs for b in r.get("busy_during", [])}
                  | {b for c in results["cold_start"].values() for b in c.get("busy_during", [])})
    if busy or results.get("quiet", {}).get("busy_at_start"):
        L.append("")
        L.append("Note: other work (test suites / builds) ran during the measurement: "
                 + "; ".join((busy or results["quiet"]["busy_at_start"])[:3]))
    L.append("")
    L.append("| ratio (req/s) | " + " | ".join(f"{c} conns" for c in results["connections"]) + " |")
    L.append("|---|" + "---:|" * len(results["connections"]))
    for name, ratios in results["ratios"].items():
        L.append(f"| {name} | " + " | ".join(
            "n/a" if ratios.get(str(c)) is None else f"{ratios[str(c)]:.2f}"
            for c in results["connections"]) + " |")
    L.append("")
    L.append("| first request to a new app (N fresh files) | cold median ms | cold p90 ms "
             "| same URL again: median ms | p90 ms |")
    L.append("|---|---:|---:|---:|---:|")
    for kind, c in results["cold_start"].items():
        cold, warm = c["cold"], c["warm"]
        if not cold.get("n"):
            L.append(f"| {LABEL[kind]} | failed | | | |")
            continue
        L.append(f"| {LABEL[kind]} (N={cold['n']}) | {cold['median_ms']:.2f} | {cold['p90_ms']:.2f} "
                 f"| {warm.get('median_ms', float('nan')):.2f} | {warm.get('p90_ms', float('nan')):.2f} |")
    if results.get("extras"):
        L.append("")
        L.append(extras.markdown(results["extras"]))
        busy_x = sorted({b for v in results["extras"].values() if isinstance(v, dict)
                         for b in v.get("busy_during", [])}
                        | {b for k in ("cold200", "idle") for b in
                           results["extras"].get("owners", {}).get(k, {}).get("busy_during", [])})
        if busy_x:
            L.append("")
            L.append("Note: other work ran during the extra measurements: " + "; ".join(busy_x[:3]))
    return "\n".join(L)


def ratios(load: dict, conns: list[int]) -> dict:
    def rps(kind, c):
        for r in load.get(kind, []):
            if r["connections"] == c:
                return r["req_per_s"]
        return None
    out = {}
    for other in ("proxy", "proxy_reuse", "fcgid", "static"):
        row = {}
        for c in conns:
            s, o = rps("sufcgi", c), rps(other, c)
            row[str(c)] = round(s / o, 3) if s and o else None
        out[f"sufcgi / {LABEL[other]}"] = row
    row = {}
    for c in conns:
        s, o = rps("lighttpd_sufcgi", c), rps("lighttpd_fastcgi", c)
        row[str(c)] = round(s / o, 3) if s and o else None
    out["lighttpd + sufcgi / lighttpd + mod_fastcgi"] = row
    return out


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="measured seconds per run")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up seconds before each run")
    ap.add_argument("--connections", default="16,64")
    ap.add_argument("--cold-samples", type=int, default=20)
    ap.add_argument("--servers", default=",".join(k for k, _ in SERVERS))
    ap.add_argument("--max-wait", type=float, default=900,
                    help="seconds (in all) to wait for pytest/cargo/rustc to finish, before the "
                         "first measurement and before repeating one they disturbed")
    ap.add_argument("--extras", default="all",
                    help="extra measurements after the load tests, comma-separated: "
                         f"{','.join(extras.EXTRAS)}, all or none (see BENCHMARKS.md)")
    ap.add_argument("--owners", type=int, default=5000,
                    help="owners (one vhost and one user each) for the 'owners' extra")
    ap.add_argument("--neighbour-runs", type=int, default=neighbour.NEIGHBOUR_RUNS,
                    help="samples per mode (defaults, short slices off, cgroups off) for the 'neighbour' extra")
    ap.add_argument("--remove-owner-users", action="store_true",
                    help="delete the sufcgi-oNNNN users at the end (they are kept for the next run "
                         "otherwise: creating 5,000 takes a minute or two)")
    ap.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep each Apache server root (config, error.log) and print where")
    ap.add_argument("--sufcgi-extra", default="",
                    help="server config lines (Apache form, \\n between lines) for the sufcgi variants, for an A/B of a host setting")
    args = ap.parse_args()
    SUFCGI_EXTRA[0] = args.sufcgi_extra.replace("\\n", "\n")
    if os.geteuid() != 0:
        print("make bench must run as root (it creates a user and starts Apache)", file=sys.stderr)
        return 2
    which = ([] if args.extras == "none" else list(extras.EXTRAS) if args.extras == "all"
             else [e for e in args.extras.split(",") if e])
    for e in which:
        if e not in extras.EXTRAS:
            ap.error(f"unknown extra {e}; known: {', '.join(extras.EXTRAS)}")
    if "sufcgi" in args.servers.split(",") or which:
        harness.require_module()
    conns = [int(c) for c in args.connections.split(",")]
    kinds = [k for k in args.servers.split(",") if k]
    for k in kinds:
        if k not in LABEL:
            ap.error(f"unknown server {k}; known: {', '.join(LABEL)}")

    # SIGTERM (e.g. from a timeout) unwinds through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="sufcgi-bench-"))
    os.chmod(tmp, 0o755)        # www-data reaches the proxy sockets in here
    site = None
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "wrk_threads": 1,
                     "wrk_timeout": WRK_TIMEOUT, "app_processes": APP_PROCS,
                     "mpm": "event", "mpm_config": MPM_LINES, "cold_samples": args.cold_samples,
                     "extras": which, "owners": args.owners},
        "connections": conns,
        "load": {}, "cold_start": {}, "app_processes_after_load": {},
        "backend_connections_after_load": {},
    }
    try:
        site = Site(tmp)
        gate = QuietGate(args.max_wait)
        busy = gate.wait()
        results["quiet"] = {"busy_at_start": busy, "loadavg_at_start": os.getloadavg()}
        for kind in kinds:
            gate.wait()
            port = harness.free_port()
            a, path, app = make_server(kind, site, port)
            log(f"{LABEL[kind]}: starting on 127.0.0.1:{port}")
            try:
                a.start()
                check_answer(a, path)
                runs = []
                for c in conns:
                    r = measure(lambda: run_wrk(port, path, c, args.duration, tmp),
                                lambda: run_wrk(port, path, c, args.warmup, tmp), gate)
                    pr = r["per_request"]
                    log(f"  {c:3d} conns: {r['req_per_s']:9.0f} req/s  p50 {fmt_ms(pr['p50_us'])} "
                        f"p99 {fmt_ms(pr['p99_us'])} p99.9 {fmt_ms(pr['p99.9_us'])} "
                        f"max {fmt_ms(pr['max_us'])} ms  errors {r['errors']}")
                    runs.append(r)
                results["load"][kind] = runs
                exe = app_exe(kind, site)
                if exe is not None:
                    results["app_processes_after_load"][kind] = processes_running(exe)
                if app is not None:
                    # Sanity check for enablereuse: pooled connections stay open when idle.
                    results["backend_connections_after_load"][kind] = \
                        connected_unix_sockets(app.sock)
                if kind in ("sufcgi", "fcgid") and args.cold_samples > 0:
                    d = "su-cold" if kind == "sufcgi" else "fcgid-cold"
                    results["cold_start"][kind] = measure(
                        lambda: cold_start(a, site, d, args.cold_samples), None, gate)
                    cs = results["cold_start"][kind]
                    log(f"  cold start: median {cs['cold'].get('median_ms')} ms, "
                        f"p90 {cs['cold'].get('p90_ms')} ms; warm median "
                        f"{cs['warm'].get('median_ms')} ms")
            finally:
                a.stop()
                if app is not None:
                    app.stop()
                if a.leftovers:
                    log(f"  killed leftover processes after stop: {a.leftovers}")
                if args.keep_logs:
                    log(f"  server root kept: {a.root}")
                else:
                    a.cleanup()
        if which:
            results["extras"] = extras.run(sys.modules[__name__], site, tmp, gate, which, args.owners,
                                           neighbour_runs=args.neighbour_runs)
        results["quiet"]["waited_s"] = round(gate.waited)
        # The module is rebuilt often: each server loads whatever build is there when
        # it starts, so a build replaced mid-run shows up as a difference here.
        results["machine"]["sufcgi_module_at_end"] = module_identity()
        results["ratios"] = ratios(results["load"], conns)
        results["loadavg_at_end"] = os.getloadavg()
    finally:
        harness.kill_test_user_processes()
        if args.remove_owner_users:
            extras.remove_owner_users(sys.modules[__name__])
        if site is not None:
            site.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(markdown(results))
    print()
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
