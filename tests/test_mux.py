"""FastCGI multiplexing: an app is asked once (FCGI_GET_VALUES); where it answers
FCGI_MPXS_CONNS=1 a worker takes several requests at once and a server process
sends them over one connection; where it does not, never.

The app is flup's own threaded WSGIServer with multiplexing on (`mux`) or off
(`nomux`), one worker each (SuFcgiMaxWorkers 1). It counts, per process, the most
requests active at once and the connections from the web server it held then.
Under Apache's threaded MPMs one child runs several of the concurrent requests, so
a multiplexing app holds fewer connections than requests; under prefork each
request is its own process and its own connection. An app that does not multiplex
holds at least one connection per active request, on every server.
"""
from __future__ import annotations

import concurrent.futures

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
    harness.only_apache(server, "the lighttpd plugin never multiplexes (README, Known limits)")
    mark = server.log_mark()
    asked(server, "/mux/")
    harness.wait_for(lambda: "the app multiplexes" in server.log_since(mark), 10,
                     "the log line saying the app multiplexes")
    s = burst(server, "/mux/")
    # One worker ran requests side by side, which it is only given when it multiplexes.
    assert s["max_active"] >= 2, s
    if server.mpm in ("event", "worker"):
        # Several of them came from one child over one connection. (Under
        # prefork each request has a child and a connection of its own.)
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
