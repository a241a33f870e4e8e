#!/usr/bin/python3
"""FastCGI app for the worker-lifecycle tests (flup WSGIServer on fd 0).

Misbehaves on purpose, chosen by the first path segment after the mount:
  (default)  JSON: pid, version, LC_MARK (process env and CGI param), in-flight count
  fast       same JSON, at once
  sleep      sleeps ?s=N seconds (default 30), then the JSON; writes its pid to
             ./last_sleep_pid first so a test can find (and kill) the worker
  forkhold   forks a child that keeps the request's connection open for ?hold=N
             seconds (default 3), writes ./last_sleep_pid, then sleeps 30 s: a
             server sees the worker's death only when that child exits
  stall      headers with Content-Length 100000, 1000 bytes, then stalls 60 s
  alloc      allocates and touches 10 MB every 0.1 s without bound (safety cap
             1 GiB: then it answers 200 "not stopped"); writes ./last_alloc_pid
  stderr     writes "lc-stderr-line <token>" to its own stderr (fd 2) and to
             the FastCGI stderr stream, then the JSON
The version string below is rewritten by the reload test.
LC_START_DELAY (environment, seconds) makes the worker slow to start.
"""
import json
import os
import threading
import time
from urllib.parse import parse_qs

from flup.server.fcgi import WSGIServer

VERSION = "v1"

_lock = threading.Lock()
_inflight = 0


def _write_pid(name):
    # Written by the worker (the owner) in its working directory, atomically.
    tmp = f".{name}.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, name)


def _json(environ, inflight, **extra):
    out = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "version": VERSION,
        "mark_env": os.environ.get("LC_MARK"),
        "mark_param": environ.get("LC_MARK"),
        "inflight": inflight,
        "path": environ.get("PATH_INFO", ""),
    }
    out.update(extra)
    return json.dumps(out).encode()


def app(environ, start_response):
    global _inflight
    with _lock:
        _inflight += 1
        inflight = _inflight
    try:
        return _handle(environ, start_response, inflight)
    finally:
        with _lock:
            _inflight -= 1


def _handle(environ, start_response, inflight):
    path = environ.get("PATH_INFO", "") or "/"
    what = path.strip("/").split("/")[0]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if what == "sleep":
        _write_pid("last_sleep_pid")
        time.sleep(float(qs.get("s", ["30"])[0]))
    elif what == "forkhold":
        hold = float(qs.get("hold", ["3"])[0])
        if os.fork() == 0:
            time.sleep(hold)
            os._exit(0)
        _write_pid("last_sleep_pid")
        time.sleep(30)
    elif what == "stall":
        # Stream: flup sends each write at once (unbuffered output stream).
        write = start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                          ("Content-Length", "100000"),
                                          ("X-Pid", str(os.getpid()))])
        write(b"s" * 1000)
        _write_pid("last_stall_pid")
        time.sleep(60)
        return [b"s" * 99000]
    elif what == "alloc":
        _write_pid("last_alloc_pid")
        hog = []
        for _ in range(103):  # 103 x 10 MiB > 1 GiB: the safety cap
            hog.append(b"\x5a" * (10 << 20))  # memset: really resident
            time.sleep(0.1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"not stopped: allocated %d MiB\n" % (10 * len(hog))]
    elif what == "stderr":
        token = qs.get("token", ["none"])[0]
        line = f"lc-stderr-line {token} pid {os.getpid()}\n".encode()
        try:
            os.write(2, line)
        except OSError:
            pass
        environ["wsgi.errors"].write(f"lc-fcgi-stderr-line {token}\n")
        environ["wsgi.errors"].flush()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [_json(environ, inflight)]


if __name__ == "__main__":
    time.sleep(float(os.environ.get("LC_START_DELAY", "0")))
    WSGIServer(app).run()
