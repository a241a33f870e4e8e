"""FastCGI multiplexing: an app is asked once (FCGI_GET_VALUES); where it answers
FCGI_MPXS_CONNS=1 a worker takes several requests at once and a server process
sends them over one connection; where it does not, never.

The app is flup's own threaded WSGIServer with multiplexing on (`mux`) or off
(`nomux`), one worker each (SuFcgiMaxWorkers 1). It counts, per process, the most
requests active at once and the connections from the web server it held then.
Under Apache's threaded MPMs one child runs several of the concurrent requests, and
lighttpd runs them all in its one process, so a multiplexing app holds fewer
connections than requests; under prefork each request is its own process and its
own connection. An app that does not multiplex
holds at least one connection per active request, on every server.
"""
from __future__ import annotations

import concurrent.futures
import socket
import struct
import time

import harness

SHARED_SERVER = True
HOST = "alice.test"
CONCURRENT = 6
HOLD_MS = 1500


def get(server, path):
    r = server.get(path, host=HOST)
    assert r.status == 200, f"GET {path}: {r}\n{server.log_tail(20)}"
    return r.json()


def burst(server, base: str) -> dict:
    """CONCURRENT requests that each stay in the app HOLD_MS, then the app's counters."""
    get(server, f"{base}?mode=reset")
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda _: server.get(f"{base}?mode=hold&ms={HOLD_MS}", host=HOST),
                                range(CONCURRENT)))
    assert [a.status for a in answers] == [200] * CONCURRENT, \
        f"{[(a.status, a.body[:200]) for a in answers]}\n{server.log_tail(20)}"
    assert len({a.json()["pid"] for a in answers}) == 1, "one worker (SuFcgiMaxWorkers 1)"
    return get(server, f"{base}?mode=stats")


def asked(server, base: str):
    """The first request makes the app be asked; the answer is logged when it multiplexes."""
    get(server, f"{base}?mode=stats")


def test_a_multiplexing_app_takes_several_requests_on_one_connection(server, site):
    mark = server.log_mark()
    asked(server, "/mux/")
    if server.mpm != "lighttpd":
        # (lighttpd asks on a thread of its own, which does not log.)
        harness.wait_for(lambda: "the app multiplexes" in server.log_since(mark), 10,
                         "the log line saying the app multiplexes")
    # One worker runs requests side by side only when it multiplexes (the
    # answer may land a moment after the first request: a burst or two).
    s = harness.wait_for(lambda: (lambda s: s if s["max_active"] >= 2 else None)(burst(server, "/mux/")),
                         20, "requests side by side on the one worker")
    if server.mpm != "prefork":
        # Several came from one process over one connection. (Under prefork
        # each request has a child and a connection of its own.)
        assert s["conns_at_max"] < s["max_active"], s


def test_an_app_that_does_not_multiplex_never_gets_two_requests_on_one_connection(server, site):
    asked(server, "/nomux/")
    # flup without multiplexing answers a second BEGIN_REQUEST on a busy connection
    # with FCGI_CANT_MPX_CONN, which would be a 503 here: every request is a 200.
    s = burst(server, "/nomux/")
    # A connection per request. (flup's threaded server accepts the connections
    # queued in its backlog at once, so it may still run several side by side.)
    assert s["conns_at_max"] >= s["max_active"], s


def test_status_page_shows_requests_per_worker(server, site):
    harness.only_apache(server, "the status page is Apache's (README, Known limits)")
    asked(server, "/mux/")
    asked(server, "/nomux/")

    def per_worker():
        pools = get(server, "/muxstatus/?json")["pools"]
        dirs = {p["directory"].rstrip("/").rsplit("/", 1)[-1]: p["requests_per_worker"] for p in pools}
        return {d: n for d, n in dirs.items() if d in ("mux", "nomux")}

    seen = harness.wait_for(lambda: (lambda d: d if d.get("mux") and d.get("nomux") else None)(per_worker()),
                            10, "both pools asked")
    assert seen == {"mux": 8, "nomux": 1}


def test_a_client_that_leaves_aborts_only_its_request(server, site):
    """A client walks away from a long answer: its request is aborted
    (FCGI_ABORT_REQUEST), the app's late records for it are dropped, and the
    requests beside it on the same connection, and the worker, carry on. (lighttpd
    reads an answer to its end even after the client left, so there the request
    simply ends.)"""
    asked(server, "/mux/")
    before = get(server, "/mux/?mode=stats")["pid"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        others = [pool.submit(lambda: server.get("/mux/?mode=hold&ms=2000", host=HOST)) for _ in range(4)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(f"GET /mux/?mode=stream&n=60&ms=30 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            # Gone at once, unread bytes and all (a reset, not a polite close).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert [o.result().status for o in others] == [200] * 4, server.log_tail(20)
    # The worker was not stopped, and serves requests side by side still.
    assert get(server, "/mux/?mode=stats")["pid"] == before, server.log_tail(20)
    assert burst(server, "/mux/")["max_active"] >= 2


def test_libfcgi_perl_and_php_apps_answer_the_question(server, site):
    """The question goes to apps nobody here wrote, after their first request: each
    answers at once (libfcgi needs a padded query for that), so no first request
    waits for the question to time out."""
    harness.only_apache(server, "lighttpd asks on a thread of its own, which does not log")
    mark = server.log_mark()
    for path in ("/c/env.fcgi", "/perl/env.fcgi", "/php/env.php"):
        r = server.get(path, host=HOST)
        assert r.status == 200, f"{path}: {r}\n{server.log_tail(20)}"
    log = server.log_since(mark)
    assert "did not answer FCGI_GET_VALUES" not in log, log
    assert "the app multiplexes" not in log, log
