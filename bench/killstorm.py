#!/usr/bin/python3
"""Kill storm: what outside SIGKILLs (the OOM killer, an admin) cost under load.

One owner, two pools — the libfcgi hello app (AddHandler, 4 workers) and php-cgi
(SuFcgiWrapper, 3 workers) — each under a steady load of 4 client threads (in a
process of their own each), while a random worker of the owner is killed with
SIGKILL every --kill-every seconds and the server gets a graceful restart every
--graceful-every seconds. Reports, per pool, the answers by status, how many
workers were killed, and how often the error log says a pool backed off.

A killed worker takes with it the request it was serving and those waiting in
its socket's backlog (at most 1 + PIPELINE_DEPTH = 3 under Apache); nothing else
should fail, and no pool should back off for workers that had started.

    /usr/bin/python3 bench/killstorm.py --seconds 120 --server event
    SUFCGI_MODULE=/path/old/mod_sufcgi.so ... (another build, for a before/after)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
import harness  # noqa: E402

USER, UID = "sufcgi-ks", 2060
HOST = "ks.test"


def site() -> harness.User:
    u = harness.ensure_user(USER, UID)
    for name in ("c", "php"):
        d = u.www / name
        if d.exists():
            for f in d.iterdir():
                f.unlink()
        harness.mkdir(d, u.ids)
    src = harness.put(Path("/tmp") / f"ks-hello-{os.getpid()}.c", (BENCH / "hello.c").read_bytes(), (0, 0))
    harness.compile_c_app(src, u.www / "c" / "hello.fcgi", u.ids)
    src.unlink()
    harness.put(u.www / "c" / ".htaccess", "AddHandler sufcgi-script .fcgi\nSuFcgiMaxWorkers 4\n", u.ids)
    harness.put(u.www / "php" / "pid.php", (BENCH.parent / "tests" / "apps" / "lc_pid.php").read_bytes(), u.ids)
    harness.put(u.www / "php" / ".htaccess", "SuFcgiWrapper /usr/bin/php-cgi .php\nSuFcgiMaxWorkers 3\n", u.ids)
    return u


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--kill-every", type=float, default=0.7)
    ap.add_argument("--graceful-every", type=float, default=8)
    ap.add_argument("--server", default="event", help="event, worker, prefork or lighttpd")
    ap.add_argument("--threads", type=int, default=4, help="client threads per pool")
    args = ap.parse_args()
    u = site()
    a = harness.make_server(args.server, [harness.Vhost(HOST, u.www)])
    a.start()
    try:
        paths = {"libfcgi": "/c/hello.fcgi", "php-cgi": "/php/pid.php"}
        for p in paths.values():
            r = a.get(p, host=HOST)
            assert r.status == 200, f"{p}: {r}"
        mark = a.log_mark()
        loads = {k: harness.hammer_in_process(a.port, HOST, p, args.threads, args.seconds, pause_after_error=0.0)
                 for k, p in paths.items()}
        kills, gracefuls = 0, 0
        t0 = time.monotonic()
        next_graceful = t0 + args.graceful_every
        while time.monotonic() - t0 < args.seconds:
            pids = harness.processes_of_uids([u.uid])
            if pids:
                try:
                    os.kill(random.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            if time.monotonic() >= next_graceful:
                a.graceful()
                gracefuls += 1
                next_graceful += args.graceful_every
            time.sleep(args.kill_every)
        counts = {k: q.get(timeout=args.seconds + 60) for k, (_, q) in loads.items()}
        log = a.log_since(mark)
        out = {
            "server": args.server,
            "module": str(harness.LIGHTTPD_MODULE_PATH if args.server == "lighttpd" else harness.MODULE_PATH),
            "seconds": args.seconds,
            "kills": kills,
            "gracefuls": gracefuls,
            "answers": counts,
            "failed": {k: sum(n for s, n in c.items() if s != "200") for k, c in counts.items()},
            "backoff_lines": log.count("backing off, next start"),
            "crash_at_start_lines": log.count("crashed within"),
        }
        print(json.dumps(out, indent=2))
        return 0
    finally:
        a.stop()
        a.cleanup()


if __name__ == "__main__":
    sys.exit(main())
