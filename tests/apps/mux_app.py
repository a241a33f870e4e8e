#!/usr/bin/python3
"""FastCGI app for the multiplexing tests: flup's threaded WSGIServer on fd 0,
with multiplexing on when argv[1] is "mux" (it then answers FCGI_GET_VALUES with
FCGI_MPXS_CONNS=1) and off otherwise (FCGI_MPXS_CONNS=0). flup handles the
protocol; the one line of ours works around flup's Python 3 GET_VALUES bug (below).

Modes (`mode` query parameter):
  hold    counts itself active, notes how many requests are active and how many
          connections from the web server this process holds, sleeps `ms`
          milliseconds, and answers its pid
  stream  `n` chunks of 64 KiB, `ms` milliseconds apart (a long answer a client
          can walk away from)
  stats   JSON: pid, the most requests active at once (max_active), the
          connections held at that moment (conns_at_max) and the most connections
          ever held at once (max_conns)
  reset   zeroes the counters
"""
import json
import os
import stat
import sys
import threading
import time
from urllib.parse import parse_qs

from flup.server.fcgi import WSGIServer

LOCK = threading.Lock()
STATE = {"active": 0, "max_active": 0, "conns_at_max": 0, "max_conns": 0}


def connections():
    """Sockets this process holds besides fd 0 (the listening socket): the
    connections accepted from the web server."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        if fd == "0":
            continue
        try:
            if stat.S_ISSOCK(os.stat(f"/proc/self/fd/{fd}").st_mode):
                n += 1
        except OSError:
            pass
    return n


def app(environ, start_response):
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    mode = qs.get("mode", [""])[0]
    if mode == "hold":
        with LOCK:
            STATE["active"] += 1
            conns = connections()
            STATE["max_conns"] = max(STATE["max_conns"], conns)
            if STATE["active"] > STATE["max_active"]:
                STATE["max_active"] = STATE["active"]
                STATE["conns_at_max"] = conns
        try:
            time.sleep(int(qs.get("ms", ["500"])[0]) / 1000)
        finally:
            with LOCK:
                STATE["active"] -= 1
        body = {"pid": os.getpid()}
    elif mode == "stream":
        n, ms = int(qs.get("n", ["50"])[0]), int(qs.get("ms", ["50"])[0])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def chunks():
            for _ in range(n):
                yield b"x" * 65536
                time.sleep(ms / 1000)
        return chunks()
    elif mode == "reset":
        with LOCK:
            STATE.update(active=0, max_active=0, conns_at_max=0, max_conns=0)
        body = {"pid": os.getpid()}
    else:
        with LOCK:
            body = dict(STATE, pid=os.getpid())
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


if __name__ == "__main__":
    server = WSGIServer(app, multiplexed=len(sys.argv) > 1 and sys.argv[1] == "mux")
    # flup 1.0.3 under Python 3 looks the names it is asked for (bytes) up among
    # str keys, so it answers FCGI_GET_VALUES with nothing at all; keyed as bytes,
    # it says what it is.
    server.capability = {k.encode(): v for k, v in server.capability.items()}
    server.run()
