#!/usr/bin/python3
"""FastCGI app for the cgroup tests (flup WSGIServer on fd 0). JSON answers.

  (default)        pid, uid and this process's cgroups (/proc/self/cgroup)
  spawn?n=N        forks N children that call setsid() and sleep (as a daemon
                   an app starts would); their pids and cgroups
  forkloop?max=M   forks setsid() sleepers until fork fails or M are made
  childalloc?mb=N  a child touches N MiB in 8 MiB steps; how it ended
                   (exit status, or -signal)
  alloc            this worker touches 10 MiB every 0.05 s without bound
  burn?s=S&until=F burns CPU for S seconds, or until file F exists
"""
import errno
import json
import os
import time
from urllib.parse import parse_qs

from flup.server.fcgi import WSGIServer

SLEEP = 600


def cgroups(pid="self"):
    out = {}
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                ident, ctrl, path = line.rstrip("\n").split(":", 2)
                out[ctrl or "unified"] = path
    except OSError:
        pass
    return out


def sleeper():
    """In a fresh child: a session of its own, nothing inherited, then sleep."""
    try:
        os.setsid()
        os.closerange(0, 1024)
        time.sleep(SLEEP)
    finally:
        os._exit(0)


def fork_sleepers(n):
    pids, err = [], None
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as e:
            err = errno.errorcode.get(e.errno, str(e.errno))
            break
        if pid == 0:
            sleeper()
        pids.append(pid)
    return pids, err


def child_alloc(mb):
    pid = os.fork()
    if pid == 0:
        try:
            hog = []
            for _ in range(0, mb, 8):
                hog.append(b"\x5a" * (8 << 20))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def app(environ, start_response):
    what = (environ.get("PATH_INFO", "") or "/").strip("/").split("/")[0]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    out = {"pid": os.getpid(), "uid": os.getuid(), "cgroup": cgroups()}
    if what == "spawn":
        pids, err = fork_sleepers(int(qs.get("n", ["1"])[0]))
        time.sleep(0.2)  # let them setsid()
        out.update(children=pids, error=err, child_cgroups={p: cgroups(p) for p in pids})
    elif what == "forkloop":
        pids, err = fork_sleepers(int(qs.get("max", ["100000"])[0]))
        out.update(forked=len(pids), error=err)
    elif what == "childalloc":
        out.update(child_status=child_alloc(int(qs.get("mb", ["64"])[0])))
    elif what == "burn":
        until = qs.get("until", [""])[0]
        end = time.monotonic() + float(qs.get("s", ["1"])[0])
        n = 0
        while time.monotonic() < end and not (until and n % 4096 == 0 and os.path.exists(until)):
            n += 1
        out.update(burned=n)
    elif what == "alloc":
        hog = []
        for _ in range(200):  # 2 GiB: far past any limit the tests set
            hog.append(b"\x5a" * (10 << 20))
            time.sleep(0.05)
        out.update(not_stopped=len(hog) * 10)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]


if __name__ == "__main__":
    WSGIServer(app).run()
