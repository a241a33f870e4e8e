"""Kept connections to workers (core::dispatch, core::parking, lighttpd's
shared_conn): once an app that does not multiplex was asked about it, a server
process keeps its connection to a worker from one request to the next
(FCGI_KEEP_CONN), parked in the scoreboard with that process; a request of
another process takes a parked worker over and the holder closes its
connection at once, so no worker waits behind a connection nobody uses.
tests/apps/keepconn.py tells which of its connections carried each request.
On every server (Apache under each MPM, lighttpd); the takeover between
children under prefork, where every child has one request thread.
"""
from __future__ import annotations

import concurrent.futures
import time

import pytest

import harness
from harness import KeepAliveClient, mkdir, put, put_app, wait_for

SHARED_SERVER = True

# The longest a request may wait for a worker another child parked. Without the
# hand-over, the holder would only give it back once idle for KEEP_IDLE (2 s,
# core/parking.rs); the hand-over itself takes well under a millisecond here
# (BENCHMARKS.md).
TAKEOVER_ALLOWED_S = 1.5


def _app(site, name: str, mode: str, workers: int = 1) -> str:
    d = site.alice.www / name
    if d.exists():
        harness.shutil.rmtree(d)
    mkdir(d, site.alice.ids)
    put_app(d / "keepconn.py", "keepconn.py", site.alice.ids)
    put(d / ".htaccess", f"SuFcgiApp keepconn.py {mode}\nSuFcgiMaxWorkers {workers}\n", site.alice.ids)
    return f"/{name}/"


def _get(c, server, path):
    r = c.get(path)
    assert r.status == 200, (r, server.log_tail(10))
    return r.json()


def _kept(c, server, path):
    """Requests on `c` until one comes on a kept connection (the first makes
    the app be asked about multiplexing, on a thread; then connections are kept)."""
    return wait_for(lambda: (lambda j: j if j["on_conn"] >= 2 else None)(_get(c, server, path)), 10,
                    "a request on a kept connection")


def test_one_connection_carries_a_childs_consecutive_requests(server, site):
    path = _app(site, "kc-keep", "keep")
    c = KeepAliveClient(server.port, site.ALICE)
    try:
        first = _get(c, server, path)
        _kept(c, server, path)
        runs = [_get(c, server, path) for _ in range(4)]
        assert {r["pid"] for r in [first, *runs]} == {first["pid"]}
        # One connection carries them all, one after another.
        assert len({r["conn"] for r in runs}) == 1, runs
        assert [r["on_conn"] for r in runs] == list(range(runs[0]["on_conn"], runs[0]["on_conn"] + 4)), runs
        kept = runs[-1]["conn"]
        # A request with a body goes out on a fresh connection (the kept one
        # could have been closed by the app meanwhile, and a body cannot be
        # sent twice), which is not kept after it either (the app might have
        # left some of the body unread).
        body = c.request("POST", path, b"x" * 5000)
        assert body.status == 200, (body, server.log_tail(10))
        assert body.json()["conn"] > kept and (body.json()["on_conn"], body.json()["body"]) == (1, 5000), body.json()
        after = _get(c, server, path)
        assert after["conn"] > body.json()["conn"] and after["on_conn"] == 1, after
    finally:
        c.close()


def test_the_end_of_an_answer_is_read_only_once_the_next_request_went_out(server, site):
    """On a kept connection the server only peeks at the end of an answer and
    reads it once the next request went out: read at once, it would wake the
    worker — asleep reading the connection by then — for nothing (the kernel
    wakes a sender whose data was read; BENCHMARKS.md, session 7). The app,
    waiting for its next request, sees its answer still unread."""
    path = _app(site, "kc-unread", "keep")
    c = KeepAliveClient(server.port, site.ALICE)
    try:
        _kept(c, server, path)
        # Longer than the app looks (UNREAD_WATCH_S in keepconn.py).
        time.sleep(1)
        j = _get(c, server, path)
        assert j["on_conn"] >= 3, j
        assert j["unread"] is not None and j["unread"] > 0, ("the server read the whole answer at once", j)
        # Read once the request went out: the next answer is whole, and so on.
        time.sleep(1)
        j2 = _get(c, server, path)
        assert (j2["conn"], j2["on_conn"]) == (j["conn"], j["on_conn"] + 1) and j2["unread"] > 0, j2
    finally:
        c.close()


def test_a_kept_connection_the_app_closed_while_idle_is_replaced_unseen(server, site):
    """The app closes a kept connection while nothing is on it, with the end
    of its last answer still unread by the server: the next request runs on a
    fresh connection, and what was left of the old answer is never taken for
    the new one."""
    path = _app(site, "kc-hangup", "hangup")
    c = KeepAliveClient(server.port, site.ALICE)
    try:
        _kept(c, server, path)
        last = _get(c, server, path)
        # Longer than the app waits before it hangs up (UNREAD_WATCH_S).
        time.sleep(1)
        j = _get(c, server, path)
        assert j["conn"] > last["conn"] and j["on_conn"] == 1, (last, j)
    finally:
        c.close()


def test_a_kept_connection_the_app_dropped_is_replaced_unseen(server, site):
    """The app hangs up on a kept connection as the next request arrives: that
    request runs again on a fresh connection, and the client sees a plain 200."""
    path = _app(site, "kc-drop", "drop")
    c = KeepAliveClient(server.port, site.ALICE)
    mark = server.log_mark()
    try:
        _get(c, server, path)
        wait_for(lambda: _get(c, server, path)["dropped"] >= 1, 10, "a request the app hung up on, run again")
        runs = [_get(c, server, path) for _ in range(4)]
        assert runs[-1]["dropped"] >= 3, runs
        assert "closed the connection" not in server.log_since(mark), server.log_since(mark)
    finally:
        c.close()


def test_a_post_the_app_may_have_read_is_never_sent_twice(server, site):
    """A POST without a body that went out on a kept connection the app then
    hung up on is a 502, never sent again: the app may have acted on it. (One
    with a body never goes out on a kept connection.)"""
    path = _app(site, "kc-droppost", "droppost")
    log = site.alice.www / "kc-droppost" / "posts.log"
    c = KeepAliveClient(server.port, site.ALICE)
    try:
        _kept(c, server, path)
        r = c.request("POST", path, b"")
        assert r.status == 502, (r, server.log_tail(10))
        assert len(log.read_text().splitlines()) == 1, log.read_text()
        # And the app keeps being served; a POST with a body is answered (on a
        # fresh connection, which the app does not hang up on).
        _kept(c, server, path)
        r = c.request("POST", path, b"0123456789")
        assert r.status == 200 and r.json()["body"] == 10, (r, server.log_tail(10))
        assert len(log.read_text().splitlines()) == 1, log.read_text()
    finally:
        c.close()


def test_the_multiplexing_question_never_delays_a_response(server, site):
    """An app that ignores FCGI_GET_VALUES (legal for a simple responder): the
    pool's first request is answered while the question still waits for its
    answer, not after it gave up on it."""
    path = _app(site, f"kc-ignore-{server.mpm}", "ignore")
    r = server.get(path, host=site.ALICE)
    answered = time.time()
    assert r.status == 200, (r, server.log_tail(10))
    # The app's one worker is held by the question until the server gives up
    # on it (1 s); the next request is served after that and tells when.
    j = wait_for(lambda: (lambda j: j if j["probe_closed"] else None)(server.get(path, host=site.ALICE).json()), 10,
                 "the question given up")
    assert j["probe_seen"] is not None
    assert answered < j["probe_closed"], (answered, j)


def test_another_child_takes_over_a_parked_worker(server, site):
    """Prefork, one worker: a child keeps its connection to the worker while its
    client stays connected (so the child serves nobody else); requests in other
    children take the worker over, each in well under the holder's idle close,
    and the holder's next request takes it back."""
    if server.mpm != "prefork":
        pytest.skip("needs children with one request thread each (prefork)")
    path = _app(site, "kc-takeover", "keep")
    holder = KeepAliveClient(server.port, site.ALICE)
    try:
        _kept(holder, server, path)
        conns, slowest = set(), 0.0
        for _ in range(6):
            t0 = time.monotonic()
            r = server.get(path, host=site.ALICE, timeout=10)
            slowest = max(slowest, time.monotonic() - t0)
            assert r.status == 200, (r, server.log_tail(10))
            conns.add(r.json()["conn"])
            conns.add(_get(holder, server, path)["conn"])
        assert slowest < TAKEOVER_ALLOWED_S, (slowest, server.log_tail(10))
        # Each request in another child got the worker on a connection of its own.
        assert len(conns) >= 6, conns
    finally:
        holder.close()


def test_every_request_is_served_under_load_with_one_worker(server, site):
    """Many clients at once, one worker, kept connections: every request 200."""
    path = _app(site, "kc-load", "keep")
    c = KeepAliveClient(server.port, site.ALICE)
    try:
        _kept(c, server, path)
    finally:
        c.close()

    def client(_):
        k = KeepAliveClient(server.port, site.ALICE)
        try:
            return [k.get(path).status for _ in range(15)] + [server.get(path, host=site.ALICE).status]
        finally:
            k.close()

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        statuses = [s for run in ex.map(client, range(8)) for s in run]
    assert statuses == [200] * len(statuses), (sorted(set(statuses)), server.log_tail(20))
