"""The extra measurements of `make bench` (issue 4), beside the load tests:

- busy503: time to answer 503 when a pool's queue is full, against a plain 404
  of the same server (the floor);
- upload:  RSS growth of the Apache child that streams a 1 GiB upload to an app;
- owners:  supervisor RSS with 5,000 owners configured, each with a pool, idle
           (0 workers);
- cold200: 200 different owners' apps requested at once, from cold;
- neighbour: owner B's hello app (sequential requests, p50/p99) alone and while
           owner A's 16 workers burn both CPUs, with the defaults, short
           slices off and cgroups off, interleaved (issue 15; neighbour.py);
- handover: under prefork with one worker, the time a request in one child
  takes to get the worker another child keeps a connection to (issue 16);
- notes:   the sufcgi-* request notes, unused / set / logged (notes_ab.py);
- conncost: what a connection per request costs a libfcgi app and its
           client, against a kept one, with no web server (conncost.py).

Called from bench.py (`--extras`); `b` is the bench module (its Apache class,
logger, quiet-machine gate). See BENCHMARKS.md for what is measured and why.
"""
from __future__ import annotations

import grp
import http.client
import math
import os
import pwd
import selectors
import shutil
import socket
import subprocess
import time
from pathlib import Path

import harness

EXTRAS = ("busy503", "upload", "owners", "cold200", "neighbour", "handover", "notes", "conncost")
BENCH = Path(__file__).resolve().parent

BUSY_SAMPLES = 2000          # 503s measured (and as many 404s, interleaved)
HANDOVER_SAMPLES = 500
BUSY_WARMUP = 200
UPLOAD_BYTES = 1 << 30
OWNER_PREFIX, OWNER_UID0 = "sufcgi-o", 40000   # owner i: sufcgi-o0042, uid 40042
OWNER_HOMES = Path("/var/lib/sufcgi-bench/owners")   # owner i's home and docroot: …/0042
COLD_OWNERS = 200
HIT_WINDOW = 8               # requests in flight while giving every owner a pool
DRAIN_LIMIT_S = 120          # bound on waiting for idle workers to exit
# Room for the 200 simultaneous first requests (each holds a thread until its
# worker answers): 4 children x 64 threads.
OWNERS_MPM_LINES = ["StartServers 4", "ServerLimit 4", "ThreadsPerChild 64", "ThreadLimit 64",
                    "MinSpareThreads 64", "MaxSpareThreads 256", "MaxRequestWorkers 256"]


# ---------------------------------------------------------------- raw HTTP

def request_bytes(host: str, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sufcgi-bench\r\n"
            f"Connection: close\r\n\r\n").encode()


def response_complete(buf: bytes) -> bool:
    """Whether buf holds a whole response (Content-Length or chunked); without
    either, only the server's close ends it."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                return len(body) >= int(value.strip())
            except ValueError:
                return False
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return body.endswith(b"0\r\n\r\n")
    return False


def parse(buf: bytes) -> tuple[int, dict, bytes]:
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        status = 0
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def send_timed(s: socket.socket, req: bytes) -> tuple[float, bytes]:
    """Send `req` on `s` and read its response: the time from sending to its last byte."""
    buf = b""
    t0 = time.perf_counter()
    s.sendall(req)
    while not response_complete(buf):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return time.perf_counter() - t0, buf


def timed_get(port: int, req: bytes, timeout: float = 10) -> tuple[float, int, dict, bytes]:
    """Connect (not timed), then time from sending the request to its last byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        elapsed, buf = send_timed(s, req)
    status, headers, body = parse(buf)
    return elapsed, status, headers, body


def concurrent_gets(port: int, reqs: list[bytes], window: int | None, timeout: float = 60) -> list[dict]:
    """Send reqs on their own connections from one thread (selectors, no GIL
    contention between clients). window=None: connect them all first, then send
    them all back to back ("at once"); else keep `window` in flight.
    Each result: sent/done (perf_counter), status, body or error."""
    sel = selectors.DefaultSelector()
    results: list[dict] = [{} for _ in reqs]
    todo = list(range(len(reqs)))
    conns: dict[int, tuple[socket.socket, bytearray]] = {}

    def connect(i):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def send(i, s):
        results[i]["sent"] = time.perf_counter()
        s.sendall(reqs[i])            # a few hundred bytes: never blocks
        s.setblocking(False)
        buf = bytearray()
        conns[i] = (s, buf)
        sel.register(s, selectors.EVENT_READ, i)

    if window is None:
        socks = [connect(i) for i in todo]
        for i, s in zip(todo, socks):
            send(i, s)
        todo = []
    deadline = time.monotonic() + timeout
    while todo or conns:
        while todo and len(conns) < (window or 0):
            i = todo.pop(0)
            try:
                send(i, connect(i))
            except OSError as e:
                results[i].update(error=repr(e), done=time.perf_counter())
        if not conns:
            continue
        if time.monotonic() > deadline:
            for i, (s, _) in list(conns.items()):
                results[i].update(error="timeout", done=time.perf_counter())
                sel.unregister(s)
                s.close()
            conns.clear()
            break
        for key, _ in sel.select(timeout=1):
            i = key.data
            s, buf = conns[i]
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                chunk, results[i]["error"] = b"", repr(e)
            if chunk:
                buf += chunk
            if not chunk or response_complete(bytes(buf)):
                results[i]["done"] = time.perf_counter()
                status, _, body = parse(bytes(buf))
                results[i].update(status=status, body=body)
                sel.unregister(s)
                s.close()
                del conns[i]
    sel.close()
    return results


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return xs[max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))]


def summary_ms(secs: list[float]) -> dict:
    xs = sorted(secs)
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50_ms": round(pct(xs, 50) * 1e3, 3), "p90_ms": round(pct(xs, 90) * 1e3, 3),
            "p99_ms": round(pct(xs, 99) * 1e3, 3), "max_ms": round(xs[-1] * 1e3, 3),
            "mean_ms": round(sum(xs) / len(xs) * 1e3, 3)}


# ---------------------------------------------------------------- processes

def supervisor_pid(a) -> int:
    """The supervisor: the one root-owned child of httpd's parent."""
    kids = [p for p in harness.descendants(a.master)
            if harness.proc_ppid(p) == a.master and harness.proc_uid(p) == 0 and harness.pid_alive(p)]
    if len(kids) != 1:
        raise harness.HarnessError(f"expected one root child of {a.master} (the supervisor), found {kids}")
    return kids[0]


def status_kib(pid: int) -> dict:
    return {k: harness.rss_kib(pid, k) for k in ("VmRSS", "VmHWM")}


def memory_kib(pid: int) -> dict:
    """VmRSS/VmHWM and how the resident set splits: the supervisor is forked from
    httpd's parent, so its VmRSS also counts the parent's pages (the parsed
    configuration of every vhost) that it shares copy-on-write; Private_* and
    Pss (shared pages divided among their sharers) are what it adds itself."""
    out = status_kib(pid)
    for k in ("RssAnon", "RssFile", "RssShmem"):
        out[k] = harness.rss_kib(pid, k)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, _, v = line.partition(":")
            if k in ("Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty"):
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# ---------------------------------------------------------------- busy503 + upload

class ExtrasSite:
    """x-busy/ (SuFcgiMaxWorkers 1, SuFcgiQueueLimit 0) and x-upload/ in the bench
    user's docroot, both served by extras_app."""

    def __init__(self, site, tmp: Path):
        self.site = site
        src = harness.put(tmp / "extras_app.c", (BENCH / "extras_app.c").read_bytes(), (0, 0))
        self.app = harness.compile_c_app(src, site.user.home / "bench-extras-app", site.ids)
        w, A = site.www, site.ids
        for d, conf in (("x-busy", "AddHandler sufcgi-script .fcgi\nSuFcgiMaxWorkers 1\n"
                                   "SuFcgiQueueLimit 0\n"),
                        ("x-upload", "AddHandler sufcgi-script .fcgi\n"),
                        ("x-handover", "AddHandler sufcgi-script .fcgi\nSuFcgiMaxWorkers 1\n")):
            shutil.rmtree(w / d, ignore_errors=True)
            harness.mkdir(w / d, A)
            harness.put(w / d / "x.fcgi", self.app.read_bytes(), A, 0o755)
            harness.put(w / d / ".htaccess", conf, A)

    def cleanup(self):
        for d in ("x-busy", "x-upload", "x-handover"):
            shutil.rmtree(self.site.www / d, ignore_errors=True)
        try:
            self.app.unlink()
        except FileNotFoundError:
            pass


def busy503(b, a, samples: int) -> dict:
    """One request holds the pool's only worker (the app sleeps); every further
    request finds the queue full (limit 0) and is answered 503 at once. Each
    sample: a fresh connection (connect not timed), time from sending the
    request to its last byte. 503s and 404s alternate so that drift in the
    machine's load hits both the same."""
    host = f"bench.test:{a.port}"
    ok_path, busy_path, floor_path = "/x-busy/x.fcgi?sleep=0", "/x-busy/x.fcgi", "/x-busy/none.txt"
    _, st, _, body = timed_get(a.port, request_bytes(host, ok_path))
    if st != 200:
        raise harness.HarnessError(f"{ok_path} -> {st} {body[:200]!r}\n{a.log_tail(10)}")
    hold = None

    def held() -> bool:
        """The holder is in the worker once a further request is refused. The
        two race inside httpd: when the other one got the worker first, the
        holder itself was refused (it has an answer) and is sent again."""
        nonlocal hold
        if hold is not None:
            hold.setblocking(False)
            try:
                answered = bool(hold.recv(1, socket.MSG_PEEK))
            except BlockingIOError:
                answered = False
            hold.setblocking(True)
            if answered:
                hold.close()
                hold = None
        if hold is None:
            hold = socket.create_connection(("127.0.0.1", a.port), timeout=10)
            hold.sendall(request_bytes(host, "/x-busy/x.fcgi?sleep=120"))
            time.sleep(0.05)
        return timed_get(a.port, request_bytes(host, busy_path))[1] == 503

    try:
        harness.wait_for(held, 10, "the x-busy pool to answer 503 (worker held by a sleeping request)")
        req503, req404 = request_bytes(host, busy_path), request_bytes(host, floor_path)
        for _ in range(BUSY_WARMUP):
            timed_get(a.port, req503)
            timed_get(a.port, req404)
        t503, t404, bad, no_retry = [], [], [], 0
        t_start = time.monotonic()
        for _ in range(samples):
            t, st, hd, body = timed_get(a.port, req503)
            if st == 503:
                t503.append(t)
                no_retry += "retry-after" not in hd
            else:
                bad.append(f"busy: {st} {body[:80]!r}")
            t, st, hd, body = timed_get(a.port, req404)
            if st == 404:
                t404.append(t)
            else:
                bad.append(f"floor: {st} {body[:80]!r}")
        took = time.monotonic() - t_start
        # The holder must still be waiting for its answer: otherwise some 503s
        # were not "queue full".
        hold.setblocking(False)
        try:
            hold.recv(1)                 # an answer or a close: the worker was let go
            still_held = False
        except BlockingIOError:
            still_held = True
    finally:
        if hold is not None:
            hold.close()
    s503, s404 = summary_ms(t503), summary_ms(t404)
    r = {"samples": samples, "busy_503": s503, "floor_404": s404, "unexpected": bad[:10],
         "unexpected_count": len(bad), "503_without_retry_after": no_retry,
         "worker_held_throughout": still_held, "seconds": round(took, 1)}
    if s503.get("n") and s404.get("n"):
        r["module_ms"] = {k: round(s503[k] - s404[k], 3) for k in ("p50_ms", "p99_ms")}
    b.log(f"  503 queue full: p50 {s503.get('p50_ms')} p99 {s503.get('p99_ms')} max {s503.get('max_ms')} ms; "
          f"404 floor: p50 {s404.get('p50_ms')} p99 {s404.get('p99_ms')} max {s404.get('max_ms')} ms"
          + (f"; {len(bad)} unexpected answers, e.g. {bad[0]}" if bad else ""))
    return r


def upload(b, a, total: int) -> dict:
    """1 GiB POST on a kept-alive connection to an app that discards it; VmHWM of
    the child holding that connection, reset right before (clear_refs 5)."""
    host = {"Host": f"bench.test:{a.port}"}
    block = os.urandom(1 << 20)

    def body():
        sent = 0
        while sent < total:
            piece = block[: min(len(block), total - sent)]
            sent += len(piece)
            yield piece

    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=300)
    try:
        conn.request("GET", "/x-upload/x.fcgi", headers=host)   # pool up, and find our child
        warm = conn.getresponse()
        wbody = warm.read()
        if warm.status != 200:
            raise harness.HarnessError(f"/x-upload/x.fcgi -> {warm.status} {wbody[:200]!r}\n{a.log_tail(10)}")
        child = harness.wait_for(lambda: harness.pid_holding_connection(
            a.child_pids(), a.port, conn.sock.getsockname()[1]), 10, "the Apache child holding our connection")
        harness.reset_peak_rss(child)
        before = status_kib(child)
        t0 = time.perf_counter()
        conn.request("POST", "/x-upload/x.fcgi", body=body(),
                     headers={**host, "Content-Length": str(total),
                              "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        rbody = resp.read()
        took = time.perf_counter() - t0
        after = status_kib(child)
    finally:
        conn.close()
    ok = resp.status == 200 and rbody.strip() == f"read {total}".encode()
    growth = after["VmHWM"] - before["VmRSS"]
    r = {"bytes": total, "status": resp.status, "app_answer": rbody[:100].decode(errors="replace"),
         "complete": ok, "child_pid": child, "before_kib": before, "after_kib": after,
         "growth_kib": growth, "seconds": round(took, 2), "mib_per_s": round(total / took / 2**20, 1)}
    b.log(f"  1 GiB upload: child {child} VmRSS before {before['VmRSS']} KiB, VmHWM after "
          f"{after['VmHWM']} KiB: growth {growth} KiB; {r['mib_per_s']} MiB/s; app: {r['app_answer']!r}")
    return r


def keepalive_get(s: socket.socket, req: bytes) -> tuple[float, int]:
    """One request on a kept-alive connection: its time and status."""
    elapsed, buf = send_timed(s, req)
    return elapsed, parse(buf)[0]


def handover(b, a, samples: int) -> dict:
    """Prefork, one worker (its app the bench's hello app): each sample, a
    client on a kept-alive connection makes two requests in one child (that
    child keeps its connection to the worker: the second is timed, `kept`),
    then, while that client stays connected (its child serves nobody else),
    a request on a fresh connection (another child) is timed: it takes the
    worker over, and the holder's keeper closes its connection (`taken_over`).
    A request on a fresh connection costs httpd more than one on a kept-alive
    one anyway: the same pair of requests for a plain 404 of the same server
    (`floor_kept`, `floor_fresh`) measures that, and the hand-over is
    (taken_over − kept) − (floor_fresh − floor_kept). Connects are not timed."""
    host = f"bench.test:{a.port}"
    path = "/x-handover/x.fcgi?sleep=0"
    floor = "/x-handover/none.txt"
    ka = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sufcgi-bench\r\n\r\n").encode()
    ka_floor = ka.replace(path.encode(), floor.encode())
    fresh, fresh_floor = request_bytes(host, path), request_bytes(host, floor)
    # The first requests make the app be asked whether it multiplexes; then
    # connections are kept.
    for _ in range(20):
        timed_get(a.port, fresh)
    got: dict[str, list[float]] = {"kept": [], "taken_over": [], "floor_kept": [], "floor_fresh": []}
    bad: list[str] = []

    def note(kind: str, t: float, st: int, want: int):
        if st == want:
            got[kind].append(t)
        else:
            bad.append(f"{kind}: {st}")

    t_start = time.monotonic()
    for _ in range(samples):
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as c1:
            c1.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keepalive_get(c1, ka)
            note("kept", *keepalive_get(c1, ka), 200)
            note("floor_kept", *keepalive_get(c1, ka_floor), 404)
            note("taken_over", *timed_get(a.port, fresh)[:2], 200)
            note("floor_fresh", *timed_get(a.port, fresh_floor)[:2], 404)
    took = time.monotonic() - t_start
    sm = {k: summary_ms(v) for k, v in got.items()}
    r = {"samples": samples, **sm, "unexpected": bad[:10], "unexpected_count": len(bad), "seconds": round(took, 1)}
    if all(v.get("n") for v in sm.values()):
        r["handover_ms"] = {k: round((sm["taken_over"][k] - sm["kept"][k]) - (sm["floor_fresh"][k] - sm["floor_kept"][k]), 3)
                            for k in ("p50_ms", "p99_ms")}
    sk, st_ = sm["kept"], sm["taken_over"]
    b.log(f"  hand-over: kept p50 {sk.get('p50_ms')} p99 {sk.get('p99_ms')} ms; taken over p50 "
          f"{st_.get('p50_ms')} p99 {st_.get('p99_ms')} max {st_.get('max_ms')} ms"
          + (f"; {len(bad)} unexpected, e.g. {bad[0]}" if bad else ""))
    return r


def run_handover(b, site, tmp: Path, gate) -> dict:
    xs = ExtrasSite(site, tmp)
    port = harness.free_port()
    vhost = harness.Vhost("bench.test", site.www)
    a = harness.Apache(mpm="prefork", port=port, sufcgi=True, vhosts=[vhost], log_level="warn")
    b.log(f"extras (hand-over, prefork): starting on 127.0.0.1:{port}")
    try:
        a.start()
        gate.wait()
        return b.measure(lambda: handover(b, a, HANDOVER_SAMPLES), None, gate)
    finally:
        a.stop()
        a.cleanup()
        xs.cleanup()


def run_busy_upload(b, site, tmp: Path, gate, which: list[str]) -> dict:
    out = {}
    xs = ExtrasSite(site, tmp)
    port = harness.free_port()
    vhost = harness.Vhost("bench.test", site.www)
    a = b.BenchApache(mpm="event", port=port, sufcgi=True, vhosts=[vhost], log_level="warn",
                      extra="LimitRequestBody 0")   # the 1 GiB upload (2.4.54+ caps bodies at 1 GiB)
    b.log(f"extras (503 / upload): starting on 127.0.0.1:{port}")
    try:
        a.start()
        if "busy503" in which:
            out["busy503"] = b.measure(lambda: busy503(b, a, BUSY_SAMPLES), None, gate)
        if "upload" in which:
            gate.wait()
            out["upload"] = b.measure(lambda: upload(b, a, UPLOAD_BYTES), None, gate)
    finally:
        a.stop()
        a.cleanup()
        xs.cleanup()
    return out


# ---------------------------------------------------------------- owners

def owner_name(i: int) -> str:
    return f"{OWNER_PREFIX}{i:04d}"


def owner_home(i: int) -> Path:
    return OWNER_HOMES / f"{i:04d}"


def ensure_owner_users(b, n: int) -> tuple[list[tuple[int, int]], float, int]:
    """Users sufcgi-o0000… (uid 40000+i, own group, home OWNER_HOMES/NNNN, which is
    also their vhost's DocumentRoot), created where missing and kept for later
    runs (see --remove-owner-users). Returns ([(uid, gid)], seconds spent creating,
    how many were created).

    One `newusers` run writes them all with one lock and one commit of
    /etc/passwd, /etc/group and the shadow files; `useradd` per user costs 15 to
    130 ms here (a dozen fsyncs each), minutes for 5,000. The password field is
    left empty so that nothing is hashed: newusers commits the accounts, then its
    PAM step ("No password has been supplied") fails and it exits 1, leaving
    every account locked ('!' in /etc/shadow). So its exit status is not the
    verdict: the accounts are checked afterwards, and any still missing are
    created with useradd."""
    by_name = {p.pw_name: p for p in pwd.getpwall()}
    by_uid = {p.pw_uid: p.pw_name for p in by_name.values()}
    groups = {g.gr_name for g in grp.getgrall()}
    missing = []
    for i in range(n):
        name, uid = owner_name(i), OWNER_UID0 + i
        p = by_name.get(name)
        if p is not None:
            if p.pw_uid != uid:
                raise harness.HarnessError(f"user {name} exists with uid {p.pw_uid}, expected {uid}")
        elif uid in by_uid:
            raise harness.HarnessError(f"uid {uid} belongs to {by_uid[uid]}, wanted for {name}")
        else:
            missing.append(i)
    t0 = time.monotonic()
    harness.mkdir(OWNER_HOMES, (0, 0), 0o755)
    batch = [i for i in missing if owner_name(i) not in groups]
    if batch:
        b.log(f"creating {len(batch)} owner users with newusers "
              f"({owner_name(batch[0])}…, uid {OWNER_UID0 + batch[0]}…)")
        lines = "".join(f"{owner_name(i)}::{OWNER_UID0 + i}:{OWNER_UID0 + i}:sufcgi bench owner:"
                        f"{owner_home(i)}:/usr/sbin/nologin\n" for i in batch)
        subprocess.run(["newusers"], input=lines.encode(), capture_output=True, timeout=600)
    by_name = {p.pw_name: p for p in pwd.getpwall()}
    rest = [i for i in missing if owner_name(i) not in by_name]
    if rest:
        b.log(f"creating {len(rest)} owner users with useradd")
    groups = {g.gr_name for g in grp.getgrall()}
    for i in rest:
        name = owner_name(i)
        group = ["-g", name] if name in groups else ["-U"]
        subprocess.run(["useradd", *group, "-u", str(OWNER_UID0 + i), "-M", "-d", str(owner_home(i)),
                        "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
    created_s = time.monotonic() - t0
    by_name = {p.pw_name: p for p in pwd.getpwall()}
    ids = [(by_name[owner_name(i)].pw_uid, by_name[owner_name(i)].pw_gid) for i in range(n)]
    harness.TEST_UIDS.update(u for u, _ in ids)      # their processes are killed at the end
    return ids, created_s, len(missing)


def remove_owner_users(b) -> int:
    names = [p.pw_name for p in pwd.getpwall()
             if p.pw_name.startswith(OWNER_PREFIX) and p.pw_name[len(OWNER_PREFIX):].isdigit()]
    harness.kill_pids(harness.processes_of_uids({pwd.getpwnam(n).pw_uid for n in names}), grace=1)
    b.log(f"removing {len(names)} owner users (userdel, one by one: slow)")
    for name in names:
        subprocess.run(["userdel", name], capture_output=True)
    shutil.rmtree(OWNER_HOMES, ignore_errors=True)
    return len(names)


def run_owners(b, site, tmp: Path, gate, which: list[str], n_owners: int) -> dict:
    n = n_owners if "owners" in which else COLD_OWNERS
    out: dict = {"owners": n, "vhosts": n}
    ids, created_s, created = ensure_owner_users(b, n)
    out["users_created"], out["users_created_s"] = created, round(created_s, 1)
    t0 = time.monotonic()
    hello = site.app.read_bytes()
    vhosts = []
    for i, owner in enumerate(ids):
        d = harness.mkdir(owner_home(i), owner, 0o755)
        harness.put(d / "app.fcgi", hello, owner, 0o755)
        harness.put(d / ".htaccess", "AddHandler sufcgi-script .fcgi\n", owner)
        vhosts.append(harness.Vhost(f"o{i:04d}.b", d))
    out["setup_s"] = round(time.monotonic() - t0, 1)

    class Big(b.BenchApache):
        mpm_lines = OWNERS_MPM_LINES

    port = harness.free_port()
    # IdleTimeout ceiling 1 s: every pool drops to 0 workers a second after its
    # request (the customer default of 300 s is clamped to it).
    a = Big(mpm="event", port=port, sufcgi=True, vhosts=vhosts, log_level="warn",
            extra=f"SuFcgiCeiling IdleTimeout 1\nSuFcgiMaxWorkersTotal {n + 1000}")
    owner_uids = {u for u, _ in ids}
    b.log(f"extras (owners): {n} vhosts, one owner each, starting on 127.0.0.1:{port}")
    try:
        t0 = time.monotonic()
        a.start()
        out["apache_start_s"] = round(time.monotonic() - t0, 1)
        sup = supervisor_pid(a)
        time.sleep(1)
        out["supervisor_pid"] = sup
        out["supervisor_kib_no_pools"] = memory_kib(sup)
        out["httpd_parent_kib"] = memory_kib(a.master)
        reqs = [request_bytes(f"o{i:04d}.b:{port}", "/app.fcgi") for i in range(n)]

        if "cold200" in which:
            gate.wait()
            with b.BusyWatch() as watch:
                res = concurrent_gets(port, reqs[:COLD_OWNERS], window=None, timeout=60)
            good = [r for r in res if r.get("status") == 200 and r.get("body") == b.BODY]
            bad = [f"{r.get('status')} {r.get('error', '')} {r.get('body', b'')[:60]!r}"
                   for r in res if r not in good]
            first = min(r["sent"] for r in res if "sent" in r)
            last = max(r["done"] for r in res if "done" in r)
            c = {"owners": COLD_OWNERS, "ok": len(good), "failed": bad[:10], "failed_count": len(bad),
                 "wall_s": round(last - first, 3),
                 "per_request": summary_ms([r["done"] - r["sent"] for r in good]),
                 "busy_during": list(watch.seen)}
            out["cold200"] = c
            b.log(f"  200 owners from cold at once: {len(good)} ok, wall {c['wall_s']} s, "
                  f"p50 {c['per_request'].get('p50_ms')} p99 {c['per_request'].get('p99_ms')} "
                  f"max {c['per_request'].get('max_ms')} ms" + (f"; failed e.g. {bad[0]}" if bad else ""))

        if "owners" in which:
            gate.wait()
            with b.BusyWatch() as watch:
                t0 = time.monotonic()
                rest = list(range(COLD_OWNERS if "cold200" in which else 0, n))
                res = concurrent_gets(port, [reqs[i] for i in rest], window=HIT_WINDOW, timeout=600)
                failed = [i for i, r in zip(rest, res) if r.get("status") != 200]
                retried_ok = 0
                if failed:                        # once more, one at a time
                    time.sleep(2)
                    for i in failed:
                        if timed_get(port, reqs[i])[1] == 200:
                            retried_ok += 1
                hits_s = time.monotonic() - t0
                live = len(harness.processes_of_uids(owner_uids))
                with_workers = memory_kib(sup)
                t1 = time.monotonic()
                try:
                    harness.wait_for(lambda: not harness.processes_of_uids(owner_uids), DRAIN_LIMIT_S,
                                     "every owner's workers to exit (idle timeout 1 s)", interval=0.5)
                    drained = True
                except harness.HarnessError:
                    drained = False
                drain_s = time.monotonic() - t1
                time.sleep(2)            # let the supervisor finish its bookkeeping
                idle = memory_kib(sup)
            sockdir = a.run_dir / "sufcgi"    # worker sockets: gone with their workers
            try:
                sockets = sum(1 for p in sockdir.iterdir() if p.is_socket())
            except OSError:
                sockets = -1
            o = {"hit": len(rest), "hit_failed_first_try": len(failed), "hit_retried_ok": retried_ok,
                 "hits_s": round(hits_s, 1), "live_workers_after_hits": live,
                 "supervisor_kib_with_workers": with_workers, "drained": drained,
                 "drain_s": round(drain_s, 1),
                 "workers_left": len(harness.processes_of_uids(owner_uids)),
                 "supervisor_kib_idle": idle, "supervisor_fds_idle": fd_count(sup),
                 "sockets_in_socket_dir_idle": sockets, "busy_during": list(watch.seen)}
            out["idle"] = o
            b.log(f"  {n} owners hit in {o['hits_s']} s ({len(failed)} failed first, {retried_ok} ok on retry); "
                  f"{live} workers live after; drained in {o['drain_s']} s; supervisor VmRSS idle "
                  f"{idle['VmRSS']} KiB (no pools: {out['supervisor_kib_no_pools']['VmRSS']} KiB, "
                  f"VmHWM {idle['VmHWM']} KiB; anon {idle['RssAnon']} KiB of which private {idle.get('Private_Dirty')} KiB, "
                  f"shmem {idle['RssShmem']} KiB, file {idle['RssFile']} KiB); "
                  f"{sockets} sockets left in the socket dir")
    finally:
        a.stop()
        if a.leftovers:
            b.log(f"  killed leftover processes after stop: {a.leftovers[:10]}")
        harness.kill_pids(harness.processes_of_uids(owner_uids), grace=1)
        a.cleanup()
        for i in range(n):                       # the homes stay (they belong to the users)
            for f in ("app.fcgi", ".htaccess"):
                try:
                    (owner_home(i) / f).unlink()
                except FileNotFoundError:
                    pass
    return out


def run(b, site, tmp: Path, gate, which: list[str], n_owners: int, neighbour_runs: int | None = None) -> dict:
    out: dict = {"sufcgi_module": b.module_identity()}   # the build the extras' servers load
    if {"busy503", "upload"} & set(which):
        gate.wait()
        out.update(run_busy_upload(b, site, tmp, gate, which))
    if "handover" in which:
        out["handover"] = run_handover(b, site, tmp, gate)
    if {"owners", "cold200"} & set(which):
        out["owners"] = run_owners(b, site, tmp, gate, which, n_owners)
    if "neighbour" in which:
        gate.wait()
        import neighbour
        out["neighbour"] = neighbour.run_neighbour(b, site, tmp, gate, neighbour_runs or neighbour.NEIGHBOUR_RUNS)
    if "notes" in which:
        import notes_ab
        out["notes"] = notes_ab.run(b, site, tmp, gate)
    if "conncost" in which:
        import conncost
        out["conncost"] = conncost.run(gate=gate)
    return out


TARGETS = {"busy503": "p99 < 1 ms", "upload": "growth < 16 MiB", "owners": "< 32 MiB supervisor RSS",
           "neighbour": "cgroups on: B's p50 ≤ 2×, p99 ≤ 3× B alone"}


def markdown(x: dict) -> str:
    L = ["| extra measurement (issue 4) | result | target |", "|---|---|---|"]
    if "neighbour" in x and len(x) <= 2:      # the neighbour scenario alone (and sufcgi_module)
        import neighbour
        return "\n".join(neighbour.neighbour_markdown(x["neighbour"]))
    if "busy503" in x:
        r = x["busy503"]
        s, f = r["busy_503"], r["floor_404"]
        if s.get("n"):
            L.append(f"| 503, pool queue full (SuFcgiMaxWorkers 1, SuFcgiQueueLimit 0), N={s['n']} | "
                     f"p50 {s['p50_ms']:.3f} / p99 {s['p99_ms']:.3f} / max {s['max_ms']:.3f} ms | {TARGETS['busy503']} |")
        if f.get("n"):
            L.append(f"| plain 404 of the same server (floor), N={f['n']} | "
                     f"p50 {f['p50_ms']:.3f} / p99 {f['p99_ms']:.3f} / max {f['max_ms']:.3f} ms | |")
        if "module_ms" in r:
            L.append(f"| 503 − 404 (≈ module time) | p50 {r['module_ms']['p50_ms']:+.3f} / "
                     f"p99 {r['module_ms']['p99_ms']:+.3f} ms | |")
    if "handover" in x:
        r = x["handover"]
        k, t = r["kept"], r["taken_over"]
        if k.get("n") and t.get("n"):
            L.append(f"| prefork, 1 worker: request on this child's kept connection, N={k['n']} | "
                     f"p50 {k['p50_ms']:.3f} / p99 {k['p99_ms']:.3f} / max {k['max_ms']:.3f} ms | |")
            L.append(f"| the same worker taken over by another child (the holder's keeper closes its connection), N={t['n']} | "
                     f"p50 {t['p50_ms']:.3f} / p99 {t['p99_ms']:.3f} / max {t['max_ms']:.3f} ms | |")
            f0, f1 = r["floor_kept"], r["floor_fresh"]
            L.append(f"| plain 404 of the same server on a kept-alive / a fresh connection (floor) | "
                     f"p50 {f0['p50_ms']:.3f} / {f1['p50_ms']:.3f}, p99 {f0['p99_ms']:.3f} / {f1['p99_ms']:.3f} ms | |")
            L.append(f"| hand-over: (taken over − kept) − (fresh − kept-alive 404) | p50 {r['handover_ms']['p50_ms']:+.3f} / "
                     f"p99 {r['handover_ms']['p99_ms']:+.3f} ms | issue 16: measured |")
    if "upload" in x:
        r = x["upload"]
        L.append(f"| 1 GiB upload to a discarding app: Apache child VmHWM − VmRSS before | "
                 f"{r['growth_kib'] / 1024:.1f} MiB ({r['before_kib']['VmRSS']} → {r['after_kib']['VmHWM']} KiB; "
                 f"{r['mib_per_s']} MiB/s; {'complete' if r['complete'] else 'INCOMPLETE: ' + r['app_answer']}) "
                 f"| {TARGETS['upload']} |")
    o = x.get("owners")
    if o and "idle" in o:
        i = o["idle"]
        L.append(f"| supervisor VmRSS, {o['owners']} owners (vhosts), a pool each, 0 workers | "
                 f"{i['supervisor_kib_idle']['VmRSS'] / 1024:.1f} MiB (no pools yet: "
                 f"{o['supervisor_kib_no_pools']['VmRSS'] / 1024:.1f}; with {i['live_workers_after_hits']} workers "
                 f"live: {i['supervisor_kib_with_workers']['VmRSS'] / 1024:.1f}; VmHWM "
                 f"{i['supervisor_kib_idle']['VmHWM'] / 1024:.1f}) | {TARGETS['owners']} |")
        def split(m):
            mib = lambda k: m.get(k, 0) / 1024  # noqa: E731
            return (f"anon {mib('RssAnon'):.1f} (private {mib('Private_Dirty'):.1f}), shmem {mib('RssShmem'):.1f}, "
                    f"file {mib('RssFile'):.1f}; Pss {mib('Pss'):.1f}")
        L.append(f"| the same VmRSS split (status, smaps_rollup), idle / no pools yet | "
                 f"{split(i['supervisor_kib_idle'])} / {split(o['supervisor_kib_no_pools'])} MiB | |")
    if o and "cold200" in o:
        c = o["cold200"]
        p = c["per_request"]
        L.append(f"| {c['owners']} owners' apps from cold, all at once ({c['ok']} ok) | wall {c['wall_s']:.3f} s; "
                 f"per request p50 {p.get('p50_ms', float('nan')):.1f} / p99 {p.get('p99_ms', float('nan')):.1f} / "
                 f"max {p.get('max_ms', float('nan')):.1f} ms | — |")
    if "neighbour" in x:
        import neighbour
        L += [""] + neighbour.neighbour_markdown(x["neighbour"])
    if "notes" in x:
        import notes_ab
        L.append(notes_ab.markdown(x["notes"]))
    if "conncost" in x:
        import conncost
        L += [""] + conncost.markdown(x["conncost"])
    return "\n".join(L)
