"""Worker lifecycle: idle/minimum workers, recycling, queueing and overload, timeouts,
memory limits, crashes, reloads, graceful restarts, isolation, per-app logs — and
stopping the server must not leave customer workers behind.

Each test runs twice, on Apache (event MPM) and on lighttpd, with the same
.htaccess files. Each starts its own server (only the lifecycle vhosts) and uses its
own test user (site_layout.LIFECYCLE_USERS), so worker counts per uid are exact and
a test that breaks its server breaks nothing else. Apps: tests/apps/lc_*.
Numbers worth reporting (503 latency, spawns during a crash loop, failures during
reloads...) are printed at the end and written to MEASURED_FILE.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import APPS, mkdir, put, wait_for
from site_layout import build_lifecycle_site

MEASURED: dict[str, object] = {}
# The server kind the current test runs on (measurements are reported per kind).
KIND = ["event"]
MEASURED_FILE = Path("/tmp/sufcgi-lifecycle-measured.json")
LOCK_FILE = Path("/tmp/sufcgi-lifecycle-tests.lock")


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def lc():
    """The lifecycle users and vhosts. Two runs of this module at once on one machine
    would share these users (and kill each other's workers in teardown), so a run
    holds LOCK_FILE: a second run waits for the first (bounded)."""
    with harness.exclusive(LOCK_FILE, "the lifecycle tests"):
        yield build_lifecycle_site()


@pytest.fixture(scope="module", autouse=True)
def _report_measurements(request):
    yield
    if not MEASURED:
        return
    MEASURED_FILE.write_text(json.dumps(MEASURED, indent=2, sort_keys=True) + "\n")
    lines = [f"lifecycle measurements (also in {MEASURED_FILE}):"]
    lines += [f"  {k}: {MEASURED[k]}" for k in sorted(MEASURED)]
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman:
        with capman.global_and_fixture_disabled():  # shown even though output is captured
            print("\n" + "\n".join(lines))


@pytest.fixture(params=("event", "lighttpd"))
def server(request, lc, sufcgi_module):
    """Factory: server(extra="") starts an Apache (or lighttpd) with the lifecycle vhosts.
    Teardown stops it, fails on crashed Apache processes (a test may allow pids it
    killed on purpose via a.allowed_crash_pids), and keeps the server root of a
    failed test."""
    started: list[harness.Apache] = []
    failed_before = request.session.testsfailed
    KIND[0] = request.param

    def start(extra: str = "") -> harness.Apache:
        a = harness.make_server(request.param, lc.vhosts(), extra)
        a.allowed_crash_pids = set()
        started.append(a)
        a.start()
        return a

    yield start
    crashes = []
    for a in started:
        a.stop()
        allowed = {f"pid {p} " for p in a.allowed_crash_pids}
        crashes += [l for l in a.crash_lines() if not any(p in l + " " for p in allowed)]
        if request.session.testsfailed > failed_before or crashes:
            print(f"\nApache server root kept for inspection: {a.root}")
        else:
            a.cleanup()
    if crashes:
        pytest.fail("Apache processes crashed during this test:\n" + "\n".join(crashes[:5]),
                    pytrace=False)


def log_of(a: harness.Apache, mark: int = 0, n: int = 4000) -> str:
    return f"\n--- error log {a.error_log} (last {n} chars since mark) ---\n{a.log_since(mark)[-n:]}"


def ok_json(a: harness.Apache, path: str, host: str, **kw) -> dict:
    r = a.get(path, host=host, **kw)
    assert r.status == 200, f"GET {path} (Host {host}): expected 200, got {r}{log_of(a)}"
    return r.json()


def workers(user) -> list[int]:
    return harness.processes_of_uids([user.uid])


def read_pid_file(path: Path, timeout: float = 10, box: list | None = None,
                  a: harness.Apache | None = None) -> int:
    """Pid an app wrote into its directory (last_sleep_pid...), waiting for it. With the
    `box` of an in_thread() request: fail at once if that request ended first."""
    def ready():
        if path.exists() and path.read_text().strip():
            return True
        return box is not None and len(box) > 0 and "ended"

    if wait_for(ready, timeout, f"{path}") == "ended" and not path.exists():
        pytest.fail(f"the request ended before the app wrote {path.name}: {box[0]!r}"
                    f"{log_of(a) if a else ''}", pytrace=False)
    return int(path.read_text().strip())


def poll(predicate, timeout: float) -> bool:
    """wait_for() that answers False on timeout instead of raising."""
    try:
        wait_for(predicate, timeout, "condition")
        return True
    except harness.HarnessError:
        return False


def wait_gone(pids, timeout: float) -> list[int]:
    """Wait until none of pids is alive; return those still alive after timeout."""
    try:
        wait_for(lambda: not [p for p in pids if harness.pid_alive(p)], timeout, "pids to exit")
    except harness.HarnessError:
        pass
    return [p for p in pids if harness.pid_alive(p)]


def in_thread(fn, *args, **kw):
    """Run fn in a thread; returns (thread, box) and box[0] is the result when done."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(fn(*args, **kw)), daemon=True)
    t.start()
    return t, box


def retry_after_ok(r: harness.Response) -> bool:
    v = r.header("Retry-After")
    return v is not None and v.strip().isdigit()


def summary(results) -> str:
    return "\n".join(f"  #{i}: {t!r}" for i, t in enumerate(results))


def brief(items, n: int = 8) -> str:
    """The first n of a list of failures, and how many there were."""
    items = list(items)
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return f"{items[:n]!r}{more}"


# ---------------------------------------------------------------- 0. stop (existing)

@pytest.mark.parametrize("mpm", harness.SERVERS)
def test_stop_leaves_no_workers_or_supervisor(site, sufcgi_module, mpm):
    a = harness.make_server(mpm, site.vhosts())
    lifecycle = site.alice.www / "lifecycle"
    try:
        a.start()
        r = a.get("/lifecycle/", host=site.ALICE)
        assert r.status == 200, (r, a.log_tail(10))
        worker = r.json()["pid"]
        assert worker in harness.processes_with_cwd_under(lifecycle)
        before_stop = set(a.all_descendants())
        assert worker in before_stop or harness.proc_uid(worker) == site.alice.uid
    finally:
        a.stop()
    # a.stop() waited for the master and gave the rest 5 s before killing leftovers
    assert a.leftovers == [], (f"processes still alive after Apache stopped (killed by the harness): "
                               f"{a.leftovers}")
    assert not harness.pid_alive(worker), f"worker {worker} outlived Apache"
    a.cleanup()


# ---------------------------------------------------------------- 1. minimum / idle

def test_idle_workers_are_stopped_after_idle_timeout(server, lc):
    a = server()
    u, host = lc.users["idle"], lc.host("idle")
    lc.app_dir("idle", "idle", "SuFcgiApp lc_app.py\nSuFcgiIdleTimeout 2\n")
    j = ok_json(a, "/idle/", host)
    done = time.monotonic()
    assert j["pid"] in workers(u), f"worker {j['pid']} not among {u.name}'s processes {workers(u)}"
    if wait_gone(workers(u), 10) or workers(u):
        pytest.fail(f"SuFcgiIdleTimeout 2: {u.name} still has workers {workers(u)} "
                    f"{time.monotonic() - done:.1f}s after the request{log_of(a)}", pytrace=False)
    MEASURED[KIND[0] + ": idle: seconds until 0 workers (IdleTimeout 2)"] = round(time.monotonic() - done, 2)


def test_min_workers_stay_when_idle(server, lc):
    a = server()
    u, host = lc.users["minw"], lc.host("minw")
    lc.app_dir("minw", "minw", "SuFcgiApp lc_app.py\nSuFcgiMinWorkers 2\nSuFcgiMaxWorkers 4\n"
                               "SuFcgiIdleTimeout 2\n")
    # Four at once: the pool grows above its minimum, then must shrink back to it.
    res = harness.concurrent_requests(a.port, ["/minw/sleep?s=1"] * 4, host=host, timeout=20)
    assert all(t.status == 200 for t in res), f"4 concurrent requests:\n{summary(res)}{log_of(a)}"
    peak = len(workers(u))
    MEASURED[KIND[0] + ": min workers: workers after 4 concurrent requests"] = peak
    if not poll(lambda: len(workers(u)) == 2, 12):
        pytest.fail(f"MinWorkers 2, IdleTimeout 2: expected 2 workers within 12 s, have "
                    f"{workers(u)} (peak {peak}){log_of(a)}", pytrace=False)
    kept = set(workers(u))
    time.sleep(5)  # well past the idle timeout: the minimum must not be stopped
    now = set(workers(u))
    assert len(now) == 2, (f"MinWorkers 2: {len(now)} workers {sorted(now)} 5 s later "
                           f"(were {sorted(kept)}){log_of(a)}")


# ---------------------------------------------------------------- 2. max requests

def test_max_requests_recycles_the_worker_every_n_requests(server, lc):
    a = server()
    u, host = lc.users["maxreq"], lc.host("maxreq")
    lc.app_dir("maxreq", "mr", "SuFcgiApp lc_app.py\nSuFcgiMaxRequests 3\nSuFcgiMaxWorkers 1\n")
    res = [harness.timed_request(a.port, f"/mr/fast?n={i}", host=host, timeout=20) for i in range(20)]
    bad = [(i, t) for i, t in enumerate(res) if t.status != 200]
    assert not bad, f"{len(bad)} of 20 sequential requests failed: {brief(bad)}{log_of(a)}"
    pids = [t.response.json()["pid"] for t in res]
    groups = [pids[i:i + 3] for i in range(0, 20, 3)]
    same_within = all(len(set(g)) == 1 for g in groups)
    new_between = all(groups[i][0] != groups[i + 1][0] for i in range(len(groups) - 1))
    assert same_within and new_between, \
        f"MaxRequests 3: expected a new pid every 3 requests, got pids {pids}{log_of(a)}"
    left = wait_gone(sorted(set(pids) - {pids[-1]}), 5)
    assert not left, f"recycled workers still alive: {left}{log_of(a)}"


def test_php_cgi_exiting_by_itself_after_max_requests_loses_no_request(server, lc):
    a = server()
    u, host = lc.users["php"], lc.host("php")
    d = lc.app_dir("php", "php", "SuFcgiWrapper /usr/bin/php-cgi .php\n"
                                 "SuFcgiEnv PHP_FCGI_MAX_REQUESTS 5\n", app=None)
    put(d / "pid.php", (APPS / "lc_pid.php").read_bytes(), u.ids, 0o644)
    seq = [harness.timed_request(a.port, "/php/pid.php", host=host, timeout=20) for _ in range(40)]
    bad = [(i, t) for i, t in enumerate(seq) if t.status != 200]
    MEASURED[KIND[0] + ": php PHP_FCGI_MAX_REQUESTS 5: sequential failures of 40"] = len(bad)
    assert not bad, f"{len(bad)} of 40 sequential requests failed: {brief(bad)}{log_of(a)}"
    pids = [int(t.response.body.strip()) for t in seq]
    assert len(set(pids)) >= 8, (f"php-cgi did not recycle itself every 5 requests "
                                 f"(PHP_FCGI_MAX_REQUESTS not passed?): pids {pids}")

    par: list[harness.Timed] = []
    lock = threading.Lock()

    def client():
        for _ in range(10):
            t = harness.timed_request(a.port, "/php/pid.php", host=host, timeout=20)
            with lock:
                par.append(t)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bad = [t for t in par if t.status != 200]
    MEASURED[KIND[0] + ": php PHP_FCGI_MAX_REQUESTS 5: failures of 40 from 4 threads"] = len(bad)
    assert len(par) == 40 and not bad, f"{len(bad)} of {len(par)} requests from 4 threads failed: {brief(bad)}{log_of(a)}"


# ---------------------------------------------------------------- 3. queue / overload

def _overload(a, host, path, n=6):
    warm = a.get(path.split("sleep")[0] + "fast", host=host)
    assert warm.status == 200, f"warm-up: {warm}{log_of(a)}"
    return harness.concurrent_requests(a.port, [path] * n, host=host, timeout=30)


def test_full_queue_gets_immediate_503_with_retry_after(server, lc):
    a = server()
    host = lc.host("queue")
    lc.app_dir("queue", "q", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 1\nSuFcgiQueueLimit 2\n")
    res = _overload(a, host, "/q/sleep?s=3")
    ok = [t for t in res if t.status == 200]
    busy = [t for t in res if t.status == 503]
    if busy:
        MEASURED[KIND[0] + ": queue full: slowest 503 (s)"] = round(max(t.elapsed for t in busy), 3)
    assert (len(ok), len(busy)) == (3, 3), \
        (f"MaxWorkers 1 + QueueLimit 2, 6 concurrent 3 s requests: expected 3x200 and 3x503, "
         f"got:\n{summary(res)}{log_of(a)}")
    no_retry = [t for t in busy if not retry_after_ok(t.response)]
    assert not no_retry, f"503 without a numeric Retry-After: {[t.response.headers for t in no_retry]}"
    slow = [t for t in busy if t.elapsed >= 1.0]
    assert not slow, f"503s for a full queue must be immediate (< 1 s): {slow}"


def test_busy_page_is_the_body_of_the_503(server, lc):
    a = server()
    u, host = lc.users["busy"], lc.host("busy")
    d = lc.app_dir("busy", "b", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 1\nSuFcgiQueueLimit 2\n"
                                "SuFcgiBusyPage busy.html\n")
    page = b"<html><body>lc busy page: please try again</body></html>\n"
    put(d / "busy.html", page, u.ids, 0o644)
    res = _overload(a, host, "/b/sleep?s=1")
    busy = [t for t in res if t.status == 503]
    assert len(busy) == 3, f"expected 3x503, got:\n{summary(res)}{log_of(a)}"
    wrong = [t.response.body[:200] for t in busy if t.response.body != page]
    assert not wrong, f"503 bodies are not busy.html ({page!r}): {wrong}"
    assert all(retry_after_ok(t.response) for t in busy), [t.response.headers for t in busy]


def test_queued_request_gets_503_after_queue_timeout(server, lc):
    a = server()
    host = lc.host("qtimeout")
    d = lc.app_dir("qtimeout", "qt", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 1\nSuFcgiQueueTimeout 1\n")
    ok_json(a, "/qt/fast", host)
    holder, box = in_thread(harness.timed_request, a.port, "/qt/sleep?s=3", host=host, timeout=20)
    read_pid_file(d / "last_sleep_pid", box=box, a=a)  # the only worker is now busy
    t = harness.timed_request(a.port, "/qt/fast", host=host, timeout=20)
    holder.join(25)
    MEASURED[KIND[0] + ": queue timeout 1: queued request answered after (s)"] = round(t.elapsed, 3)
    assert t.status == 503, f"queued request: expected 503, got {t!r}{log_of(a)}"
    assert retry_after_ok(t.response), f"no numeric Retry-After: {t.response.headers}"
    assert 0.5 <= t.elapsed <= 2.9, f"QueueTimeout 1: 503 after {t.elapsed:.2f}s (expected 0.5-2.9)"
    assert box and box[0].status == 200, f"the request holding the worker: {box}"


def test_requests_arriving_while_a_worker_starts_queue_behind_it(server, lc):
    """Spawning is on a request's critical path at most once: four requests that arrive
    while the pool's first worker is still starting (2 s) wait for it instead of each
    forking a worker of their own."""
    a = server()
    host = lc.host("slowstart")
    lc.app_dir("slowstart", "ss", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 4\nSuFcgiEnv LC_START_DELAY 2\n")
    mark = a.log_mark()
    res = harness.concurrent_requests(a.port, ["/ss/fast"] * 4, host=host, timeout=30)
    assert all(t.status == 200 for t in res), f"cold requests to a slow-starting app:\n{summary(res)}{log_of(a, mark)}"
    stamps = []
    for line in a.log_since(mark).splitlines():
        if "spawned worker pid" in line and "/ss/lc_app.py" in line:
            m = re.match(r"\[\w+ \w+ \d+ (\d+):(\d+):([\d.]+) \d+\]", line)
            assert m, f"unparsable log line: {line}"
            stamps.append(int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]))
    assert stamps, f"no spawn logged{log_of(a, mark)}"
    during_start = [t for t in stamps if t - stamps[0] < 1.5]
    MEASURED[KIND[0] + ": slow start: workers spawned while the first was starting"] = len(during_start)
    assert len(during_start) == 1, \
        f"{len(during_start)} workers spawned within 1.5 s of the first (start takes 2 s){log_of(a, mark)}"


def test_max_workers_per_owner_caps_the_owners_processes(server, lc):
    """SuFcgiMaxWorkersPerOwner (host) caps an owner's processes below the app's own
    SuFcgiMaxWorkers; the excess requests queue and are served."""
    a = server(extra="SuFcgiMaxWorkersPerOwner 2\n")
    host, user = lc.host("ceiling"), lc.users["ceiling"]
    lc.app_dir("ceiling", "cap", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 4\n")
    ok_json(a, "/cap/fast", host)
    res, seen = concurrent_counting(a, host, user, "/cap/sleep?s=1", 6)
    assert all(r.status == 200 for r in res), f"6 requests on a capped owner:\n{summary(res)}{log_of(a)}"
    MEASURED[KIND[0] + ": per-owner ceiling 2: most processes seen"] = max(seen)
    assert max(seen) <= 2, f"owner had {max(seen)} processes with SuFcgiMaxWorkersPerOwner 2{log_of(a)}"


def concurrent_counting(a, host, user, path, n):
    """n concurrent requests to path; also samples the owner's process count meanwhile.
    Returns (results, counts seen)."""
    seen = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            seen.append(len(workers(user)))
            time.sleep(0.05)

    t = threading.Thread(target=count, daemon=True)
    t.start()
    try:
        res = harness.concurrent_requests(a.port, [path] * n, host=host, timeout=30)
    finally:
        stop.set()
        t.join(5)
    return res, seen


def test_host_ceiling_clamps_a_customer_limit(server, lc):
    """SuFcgiCeiling MaxWorkers 1 (host) wins over SuFcgiMaxWorkers 4 (.htaccess)."""
    a = server(extra="SuFcgiCeiling MaxWorkers 1\n")
    host, user = lc.host("ceiling"), lc.users["ceiling"]
    lc.app_dir("ceiling", "clamp", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 4\n")
    ok_json(a, "/clamp/fast", host)
    res, seen = concurrent_counting(a, host, user, "/clamp/sleep?s=1", 3)
    assert all(r.status == 200 for r in res), f"3 requests on a clamped app:\n{summary(res)}{log_of(a)}"
    assert max(seen) == 1, f"{max(seen)} workers despite SuFcgiCeiling MaxWorkers 1{log_of(a)}"


# ---------------------------------------------------------------- 4. timeouts

def test_request_timeout_gives_504_and_replaces_the_worker(server, lc):
    a = server()
    host = lc.host("reqtimeout")
    d = lc.app_dir("reqtimeout", "rt", "SuFcgiApp lc_app.py\nSuFcgiRequestTimeout 2\nSuFcgiMaxWorkers 2\n")
    ok_json(a, "/rt/fast", host)
    holder, box = in_thread(harness.timed_request, a.port, "/rt/sleep?s=30", host=host, timeout=15)
    sleeper = read_pid_file(d / "last_sleep_pid", box=box, a=a)
    during = []
    while holder.is_alive() and len(during) < 100:
        during.append(harness.timed_request(a.port, "/rt/fast", host=host, timeout=15))
        time.sleep(0.2)
    holder.join(20)
    slow = box[0]
    MEASURED[KIND[0] + ": request timeout 2: /sleep answered after (s)"] = round(slow.elapsed, 3)
    assert slow.status == 504, f"/sleep with RequestTimeout 2: expected 504, got {slow!r}{log_of(a)}"
    assert 1.5 <= slow.elapsed <= 6, f"504 after {slow.elapsed:.2f}s (expected ~2-5 s)"
    left = wait_gone([sleeper], 5)
    assert not left, f"the worker {sleeper} that ran the timed-out request is still alive{log_of(a)}"
    after = [harness.timed_request(a.port, "/rt/fast", host=host, timeout=15) for _ in range(5)]
    bad = [t for t in during + after if t.status != 200]
    assert not bad, (f"/fast failed during/after the timeout ({len(during)} during, 5 after): "
                     f"{brief(bad)}{log_of(a)}")


def test_stalled_response_is_cut_after_server_timeout_and_worker_stopped(server, lc):
    a = server(extra="Timeout 3")
    host = lc.host("iotimeout")
    d = lc.app_dir("iotimeout", "io", "SuFcgiApp lc_app.py\n")
    ok_json(a, "/io/fast", host)
    res = harness.raw_get(a.port, host, "/io/stall", timeout=15)
    MEASURED[KIND[0] + ": I/O Timeout 3: stalled response closed after (s)"] = round(res.elapsed, 3)
    pid_file = d / "last_stall_pid"
    staller = int(pid_file.read_text()) if pid_file.exists() else None
    detail = (f"status {res.status}, headers {res.headers}, {len(res.body)} body bytes, "
              f"closed={res.closed} after {res.elapsed:.1f}s, error={res.error}{log_of(a)}")
    assert res.closed and res.elapsed <= 10, f"connection not closed within 10 s: {detail}"
    assert res.body.count(b"s") < 100000, f"the stalled response arrived complete: {detail}"
    assert staller is not None, f"the app never reached its stall point: {detail}"
    left = wait_gone([staller], 5)
    assert not left, f"the stalled worker {staller} was not stopped: {detail}"


# ---------------------------------------------------------------- 5. memory

def test_worker_above_memory_limit_is_stopped(server, lc):
    a = server()
    host = lc.host("memory")
    d = lc.app_dir("memory", "mem", "SuFcgiApp lc_app.py\nSuFcgiMemoryLimit 64M\n")
    ok_json(a, "/mem/fast", host)
    mark = a.log_mark()
    t = harness.timed_request(a.port, "/mem/alloc", host=host, timeout=30)
    MEASURED[KIND[0] + ": memory limit 64M: /alloc answered after (s)"] = round(t.elapsed, 3)
    assert t.status in (502, 503), f"/alloc with MemoryLimit 64M: expected 502/503, got {t!r}{log_of(a, mark)}"
    hog = read_pid_file(d / "last_alloc_pid", timeout=1)
    a.wait_log(mark, lambda s: "memory" in s.lower(), "an error-log line saying 'memory'")
    left = wait_gone([hog], 5)
    assert not left, f"the worker {hog} above its memory limit is still alive{log_of(a, mark)}"
    j = ok_json(a, "/mem/fast", host)
    assert j["pid"] != hog, f"the next request was served by the stopped worker {hog}"


# ---------------------------------------------------------------- 6. crashes

def test_worker_killed_during_request_gives_502_then_recovers(server, lc):
    a = server()
    host = lc.host("kill")
    d = lc.app_dir("kill", "k", "SuFcgiApp lc_app.py\n")
    ok_json(a, "/k/fast", host)
    holder, box = in_thread(harness.timed_request, a.port, "/k/sleep?s=8", host=host, timeout=20)
    victim = read_pid_file(d / "last_sleep_pid", box=box, a=a)
    # A worker dying within ~1 s of its start is a crash at start (backed off, 503):
    # kill one that has run for 2 s, as a worker killed in production would have.
    time.sleep(max(0.0, 2.0 - harness.proc_age(victim)))
    os.kill(victim, signal.SIGKILL)
    holder.join(25)
    assert box and box[0].status == 502, f"request whose worker was killed: expected 502, got {box}{log_of(a)}"
    j = ok_json(a, "/k/fast", host)
    assert j["pid"] != victim


def test_worker_killed_while_serving_its_first_request_is_not_a_crash_at_start(server, lc):
    """A worker that accepted a request has started, however soon it is killed (the OOM
    killer, an admin's kill -9): the next request gets a fresh worker at once, never a 503
    "backing off" for a pool whose only worker had just started. (The app's child keeps
    the killed request's connection open, so the supervisor always learns of the death
    before the server does: the case where it used to count as a crash at start.)"""
    a = server()
    host = lc.host("firstkill")
    for attempt in range(3):
        # A fresh pool each time (its own directory): the worker must be young.
        d = lc.app_dir("firstkill", f"fk{attempt}", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 1\n")
        holder, box = in_thread(harness.timed_request, a.port, f"/fk{attempt}/forkhold?hold=4", host=host, timeout=20)
        victim = read_pid_file(d / "last_sleep_pid", box=box, a=a)
        age = harness.proc_age(victim)
        mark = a.log_mark()
        os.kill(victim, signal.SIGKILL)
        if age < 0.8:
            break
        holder.join(25)
        # Too slow a start to test "within the crash window": again with a new pool.
    else:
        pytest.fail(f"the worker was never younger than 0.8 s when killed (last {age:.2f} s): machine too slow",
                    pytrace=False)
    MEASURED[KIND[0] + ": first-request kill: worker age at kill (s)"] = round(age, 2)
    a.wait_log(mark, lambda t: f"worker pid {victim} " in t and "signal 9" in t, "the supervisor to reap the killed worker")
    r = harness.timed_request(a.port, f"/fk{attempt}/fast", host=host, timeout=20)
    assert r.status == 200, f"the request after the kill: expected 200 from a new worker, got {r!r}{log_of(a)}"
    assert r.response.json()["pid"] != victim
    holder.join(25)
    assert box and box[0].status == 502, f"the killed worker's request: expected 502, got {box}{log_of(a)}"
    assert "backing off, next start" not in a.log_since(0), f"a started worker's kill was taken for a crash loop{log_of(a)}"


def test_kill_storm_loses_only_what_the_killed_workers_held(server, lc):
    """kill -9 of a random php-cgi worker every 0.4 s and a graceful restart, under load:
    no pool backs off, and no more requests fail than the killed workers held (each held at
    most its request and the pipelined ones in its backlog, scoreboard.rs PIPELINE_DEPTH 2)."""
    a = server()
    host = lc.host("killstorm")
    user = lc.users["killstorm"]
    d = lc.app_dir("killstorm", "ks", "SuFcgiWrapper /usr/bin/php-cgi .php\nSuFcgiMaxWorkers 3\n", app=None)
    put(d / "pid.php", (APPS / "lc_pid.php").read_bytes(), user.ids)
    assert a.get("/ks/pid.php", host=host).status == 200, log_of(a)
    proc, q = harness.hammer_in_process(a.port, host, "/ks/pid.php", 4, 6.0, pause_after_error=0.0)
    kills = 0
    t0 = time.monotonic()
    graceful_done = False
    while time.monotonic() - t0 < 5.5:
        pids = workers(user)
        if pids:
            try:
                os.kill(random.choice(pids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        if not graceful_done and time.monotonic() - t0 > 2.5:
            a.graceful()
            graceful_done = True
        time.sleep(0.4)
    counts = q.get(timeout=60)
    proc.join(10)
    failed = sum(n for k, n in counts.items() if k != "200")
    MEASURED[KIND[0] + ": kill storm: kills / statuses"] = (kills, counts)
    assert counts.get("200", 0) > 0, f"nothing was served: {counts}{log_of(a)}"
    log = a.log_since(0)
    assert "backing off, next start" not in log, f"a pool backed off under outside kills: {counts}{log_of(a)}"
    assert failed <= kills * 3, f"{failed} failed requests for {kills} killed workers: {counts}{log_of(a)}"


def test_app_dying_at_start_backs_off_with_503s(server, lc):
    a = server()
    host = lc.host("crashloop")
    lc.app_dir("crashloop", "cl", "SuFcgiApp lc_dies_at_start.py\n", app="lc_dies_at_start.py")
    res = []
    t0 = time.monotonic()
    for i in range(10):
        time.sleep(max(0.0, t0 + i * 0.6 - time.monotonic()))
        res.append(harness.timed_request(a.port, "/cl/", host=host, timeout=10))
    time.sleep(0.5)  # let the last exit be logged
    log = a.log_since(0)
    spawned = len([l for l in log.splitlines() if "spawned worker" in l])
    starts = log.count("exiting at start on purpose")  # the app's stderr, when it lands in this log
    MEASURED[KIND[0] + ": crash loop: 'spawned worker' lines during 10 requests over ~6 s"] = spawned
    MEASURED[KIND[0] + ": crash loop: app starts seen in the error log (its stderr)"] = starts
    MEASURED[KIND[0] + ": crash loop: statuses"] = [t.status for t in res]
    bad = [(i, t) for i, t in enumerate(res) if t.status != 503 or not retry_after_ok(t.response)]
    assert not bad, f"expected 10x 503 with Retry-After, bad ones: {brief(bad)}{log_of(a)}"
    assert 1 <= spawned <= 5, f"{spawned} 'spawned worker' lines (expected 1..5){log_of(a)}"
    assert starts <= 5, f"the app started {starts} times in ~6 s (fork storm? expected <= 5)"
    assert "backing off" in log, f"no 'backing off' line in the error log{log_of(a)}"


def test_supervisor_killed_is_replaced_and_old_workers_go(server, lc):
    a = server()
    host = lc.host("supervisor")
    lc.app_dir("supervisor", "sv", "SuFcgiApp lc_app.py\n")
    old = ok_json(a, "/sv/fast", host)["pid"]
    sups = harness.supervisor_pids_from_log(a)
    assert sups, f"no 'supervisor started, pid N' line{log_of(a)}"
    sup = sups[-1]
    assert harness.pid_alive(sup) and harness.proc_uid(sup) == 0, f"supervisor {sup} not a live root process"
    a.allowed_crash_pids.add(sup)
    os.kill(sup, signal.SIGKILL)
    t0 = time.monotonic()
    # One client, sequential requests (as a quiet site sees them), each allowed 15 s so
    # that a request that hangs shows as hanging.
    tries = []
    while time.monotonic() - t0 < 12:
        t = harness.timed_request(a.port, "/sv/fast", host=host, timeout=15)
        tries.append(t)
        # (a request in the first moments may still reach the old worker: it dies when
        # the kernel delivers its parent-death signal, not at the instant of the kill)
        if t.status == 200 and t.response.json().get("pid") != old:
            break
        time.sleep(0.2)
    timeline = "\n".join(f"  +{t.started - t0:.2f}s: {t!r}" for t in tries)
    hung = [t for t in tries if t.error is not None or t.elapsed > 10]
    recovered = tries[-1].status == 200 and tries[-1].response.json().get("pid") != old
    MEASURED[KIND[0] + ": supervisor kill -9: first 200 after (s)"] = \
        round(tries[-1].started + tries[-1].elapsed - t0, 2) if recovered else None
    MEASURED[KIND[0] + ": supervisor kill -9: requests before it / of which hung > 10 s"] = (len(tries) - recovered, len(hung))
    assert not hung, f"a request sent after the supervisor died hung for > 10 s:\n{timeline}{log_of(a)}"
    assert recovered, f"no 200 from a new worker within 12 s of killing the supervisor:\n{timeline}{log_of(a)}"
    after = [harness.timed_request(a.port, "/sv/fast", host=host, timeout=15) for _ in range(5)]
    assert all(t.status == 200 for t in after), f"after recovery: {after}{log_of(a)}"
    left = wait_gone([old], 5)
    assert not left, f"worker {old} of the killed supervisor still alive{log_of(a)}"
    assert all(t.response.json()["pid"] != old for t in after), f"the old worker {old} still answers"


# ---------------------------------------------------------------- 7. reload

def test_restart_file_app_change_and_htaccess_change_reach_new_workers(server, lc):
    a = server()
    u, host = lc.users["reload"], lc.host("reload")
    d = lc.app_dir("reload", "rl", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 2\n")
    mkdir(d / "tmp", u.ids)
    restart = put(d / "tmp" / "restart.txt", "", u.ids)
    os.utime(restart, (time.time() - 100, time.time() - 100))
    ok_json(a, "/rl/", host)
    load = harness.SteadyLoad(a.port, host, "/rl/").start()
    delays, lingering = {}, {}
    try:
        wait_for(lambda: len(load.ok_json_since(0)) >= 5, 10, "5 answers under steady load")

        def change(name, do, predicate):
            old = set(workers(u))
            since = time.monotonic()
            do()
            try:
                _, delay = load.wait_for_json(
                    since, lambda j: j["pid"] not in old and predicate(j), 6,
                    f"a request seeing the {name} (new pid)")
            except harness.HarnessError:
                delay = None
            if delay is None:
                pytest.fail(f"{name}: no request served by a new worker within 6 s (old workers "
                            f"{sorted(old)}); last answers: {load.ok_json_since(since)[-3:]}; "
                            f"failures so far: {len(load.failures())}{log_of(a)}", pytrace=False)
            delays[name] = round(delay, 2)
            lingering[name] = wait_gone(sorted(old), 10)

        change("restart file touch", lambda: os.utime(restart, None), lambda j: True)

        def rewrite_app():
            src = (APPS / "lc_app.py").read_text().replace('VERSION = "v1"', 'VERSION = "v2"')
            tmp = put(d / ".lc_app.py.new", src, u.ids, 0o755)
            os.replace(tmp, d / "lc_app.py")
        change("app rewrite", rewrite_app, lambda j: j["version"] == "v2")

        def edit_htaccess():
            tmp = put(d / ".htaccess.new", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 2\n"
                                           "SuFcgiEnv LC_MARK edited\n", u.ids)
            os.replace(tmp, d / ".htaccess")
        change(".htaccess edit", edit_htaccess,
               lambda j: "edited" in (j["mark_env"], j["mark_param"]))
    finally:
        load.stop()
    failures = load.failures()
    MEASURED[KIND[0] + ": reload: delay until a new worker answered (s)"] = delays
    MEASURED[KIND[0] + ": reload: requests / failures under load"] = (len(load.results), len(failures))
    assert not failures, f"{len(failures)} failed requests during the reloads: {brief(failures)}{log_of(a)}"
    slow = {k: v for k, v in delays.items() if v > 3.5}
    assert not slow, f"changes seen later than ~3 s: {slow}"
    lingering = {k: v for k, v in lingering.items() if v}
    assert not lingering, f"old workers still alive 10 s after the change: {lingering}{log_of(a)}"


# ---------------------------------------------------------------- 8. graceful restart and stop

def test_graceful_under_load_keeps_supervisor_and_stop_ends_all_workers(server, lc):
    a = server()
    host = lc.host("graceful")
    lc.app_dir("graceful", "gr", "SuFcgiApp lc_app.py\n")
    ok_json(a, "/gr/", host)
    sups = harness.supervisor_pids_from_log(a)
    assert sups, f"no 'supervisor started, pid N' line{log_of(a)}"
    load = harness.SteadyLoad(a.port, host, "/gr/", threads=4).start()
    try:
        time.sleep(1.5)
        a.graceful()
        time.sleep(2)
    finally:
        load.stop()
    failures = load.failures()
    MEASURED[KIND[0] + ": graceful: requests / failures under 4-thread load"] = (len(load.results), len(failures))
    assert not failures, f"{len(failures)} failed requests across the graceful restart: {brief(failures)}{log_of(a)}"
    now = harness.supervisor_pids_from_log(a)
    assert harness.pid_alive(sups[-1]) and now[-1] == sups[-1], \
        f"supervisor changed across graceful: {sups} -> {now}{log_of(a)}"

    # Every lifecycle user (not alice/bob: other suites may be running their workers).
    uids = [x.uid for x in lc.users.values()]
    harness.request_stop(a)
    t0 = time.monotonic()
    if not poll(lambda: not harness.processes_of_uids(uids), 5):
        left = harness.processes_of_uids(uids)
        pytest.fail(f"5 s after stop, {len(left)} worker processes of test users remain: {left}"
                    f"{log_of(a)}", pytrace=False)
    MEASURED[KIND[0] + ": stop: seconds until 0 worker processes"] = round(time.monotonic() - t0, 2)


# ---------------------------------------------------------------- 9. isolation

def test_one_owner_overloaded_does_not_slow_another(server, lc):
    a = server()
    slow_host, fast_host = lc.host("slow"), lc.host("fast")
    lc.app_dir("slow", "iso", "SuFcgiApp lc_app.py\nSuFcgiMaxWorkers 2\nSuFcgiQueueLimit 5\n")
    lc.app_dir("fast", "hello", "SuFcgiApp lc_app.py\n")
    ok_json(a, "/iso/fast", slow_host)
    for _ in range(5):
        ok_json(a, "/hello/fast", fast_host)

    def sample(until=None, n=None):
        out = []
        while (n is not None and len(out) < n) or (until is not None and time.monotonic() < until):
            out.append(harness.timed_request(a.port, "/hello/fast", host=fast_host, timeout=20))
        return out

    unloaded = sample(n=50)
    assert all(t.status == 200 for t in unloaded), f"unloaded B requests failed{log_of(a)}"
    med0 = harness.median([t.elapsed for t in unloaded])
    # 20 clients on the slow app, in another process (no GIL contention with this thread);
    # a client pauses 0.1 s after a non-200 so the 503s do not turn into a CPU load test.
    proc, q = harness.hammer_in_process(a.port, slow_host, "/iso/sleep?s=2", 20, 8.0)
    time.sleep(1.0)
    loaded = sample(until=time.monotonic() + 6.5)
    counts = q.get(timeout=60)
    proc.join(10)
    med1 = harness.median([t.elapsed for t in loaded]) if loaded else float("inf")
    MEASURED[KIND[0] + ": isolation: B median unloaded / loaded (ms)"] = (round(med0 * 1000, 2), round(med1 * 1000, 2))
    MEASURED[KIND[0] + ": isolation: A statuses under 20 clients"] = counts
    bad = [t for t in loaded if t.status != 200]
    assert not bad, f"owner B's requests failed while A was overloaded: {brief(bad)}{log_of(a)}"
    assert med1 <= 2 * med0 + 0.005, \
        (f"owner B's median latency under A's overload {med1 * 1000:.1f} ms > 2 x {med0 * 1000:.1f} ms "
         f"+ 5 ms (A's statuses: {counts})")


# ---------------------------------------------------------------- 10. SuFcgiLog

def test_sufcgi_log_gets_stderr_and_events_owned_by_the_owner(server, lc):
    a = server()
    u, host = lc.users["log"], lc.host("log")
    d = lc.app_dir("log", "lg", "SuFcgiApp lc_app.py\nSuFcgiLog logs/app.log\n")
    mkdir(d / "logs", u.ids)
    token = f"tok{os.getpid()}x{int(time.time())}"
    ok_json(a, f"/lg/stderr?token={token}", host)
    logf = d / "logs" / "app.log"
    if not poll(lambda: logf.exists() and f"lc-stderr-line {token}" in logf.read_text(errors="replace"), 5):
        got = logf.read_text(errors="replace")[-2000:] if logf.exists() else "(no file)"
        pytest.fail(f"SuFcgiLog: stderr line not in {logf}; it holds:\n{got}{log_of(a)}", pytrace=False)
    st = logf.stat()
    text = logf.read_text(errors="replace")
    assert st.st_uid == u.uid, f"{logf} owned by uid {st.st_uid}, expected {u.uid} ({u.name})"
    stamped = re.compile(r"\d\d:\d\d:\d\d")
    spawned = [l for l in text.splitlines() if "spawned" in l]
    assert any(stamped.search(l) for l in spawned), \
        f"no timestamped 'spawned' event in {logf}:\n{text[-2000:]}"
