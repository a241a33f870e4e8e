#!/usr/bin/python3
"""`make bench`'s `conncost` extra (issue 16): what a connection per request
costs a FastCGI app that serves one connection at a time, with no web server
in between, so that the part of a request's cost a kept connection could
save is known apart from the server's thread hand-offs.

bench/conncost.c drives 4 copies of the bench's libfcgi hello app (each on
its own Unix socket, as sufcgi's workers are) at saturation, three ways:
`fresh` (a connection per request, 16 client threads round robin, so the
next connection waits in a worker's backlog, as with sufcgi's pipelining
and mod_proxy_fcgi's shared backlog), `queue` (16 threads sharing 4 kept
connections: the thread that reads an answer writes the next waiting
thread's request and wakes it, what kept connections under load cost a
server whose requests have threads of their own) and `kept` (one thread per
kept connection: the floor). ROUNDS rounds, the order reversed every round.
Reported per mode, median (min–max): req/s, the apps' CPU µs and context
switches per request, the client's CPU µs and context switches per request.

Standalone: `bench/conncost.py [--rounds N] [--seconds S]` (needs gcc and
libfcgi-dev, as `make bench` does); prints the summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MODES = ("fresh", "queue", "kept")
WORKERS = 4
THREADS = 16
ROUNDS = 4
SECONDS = 4
KEYS = ("req_s", "app_us_per_req", "app_switches_per_req", "client_us_per_req", "client_switches_per_req")


def _build(tmp: Path) -> tuple[Path, Path]:
    app, client = tmp / "hello", tmp / "conncost"
    subprocess.run(["cc", "-O2", "-o", str(app), str(BENCH / "hello.c"), "-lfcgi"], check=True)
    subprocess.run(["cc", "-O2", "-o", str(client), str(BENCH / "conncost.c"), "-lpthread"], check=True)
    return app, client


def _one(client: Path, app: Path, mode: str, seconds: int, sockdir: Path) -> dict:
    out = subprocess.run([str(client), mode, str(WORKERS), str(THREADS), str(seconds), str(app), str(sockdir)],
                         check=True, capture_output=True, text=True, timeout=seconds + 30)
    return json.loads(out.stdout)


def _spread(xs: list[float]) -> dict:
    s = sorted(xs)
    n = len(s)
    return {"median": (s[n // 2] + s[(n - 1) // 2]) / 2, "min": s[0], "max": s[-1]}


def run(rounds: int = ROUNDS, seconds: int = SECONDS, gate=None) -> dict:
    """The runs and their summary; `gate` (the bench's quiet-machine gate) is
    waited for before each round."""
    samples: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="sufcgi-conncost-") as d:
        tmp = Path(d)
        app, client = _build(tmp)
        for r in range(rounds):
            if gate is not None:
                gate.wait()
            for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
                samples[mode].append(_one(client, app, mode, seconds, tmp))
    summary = {m: {k: _spread([s[k] for s in samples[m]]) for k in KEYS} for m in MODES}
    # Per round: CPU per request (app + client) a mode saves against `fresh`.
    saved = {m: _spread([f["app_us_per_req"] + f["client_us_per_req"] - s["app_us_per_req"] - s["client_us_per_req"]
                         for f, s in zip(samples["fresh"], samples[m])]) for m in ("queue", "kept")}
    return {"workers": WORKERS, "threads": THREADS, "rounds": rounds, "seconds": seconds,
            "samples": samples, "summary": summary, "us_saved_per_req": saved}


def markdown(x: dict) -> list[str]:
    def cell(v: dict, digits: int) -> str:
        return f"{v['median']:.{digits}f} ({v['min']:.{digits}f}–{v['max']:.{digits}f})"
    L = [f"| conncost (issue 16): {x['workers']} libfcgi hello apps, no web server, median (min–max) of "
         f"{x['rounds']} rounds | req/s | app µs / request | app context switches / request | client µs / request "
         "| client context switches / request | app + client µs saved / request against fresh |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    names = {"fresh": f"fresh: a connection per request ({x['threads']} client threads)",
             "queue": f"queue: {x['threads']} client threads share the kept connections",
             "kept": "kept: one client thread per kept connection"}
    for m in MODES:
        s = x["summary"][m]
        saved = cell(x["us_saved_per_req"][m], 1) if m in x["us_saved_per_req"] else "—"
        L.append(f"| {names[m]} | {cell(s['req_s'], 0)} | {cell(s['app_us_per_req'], 1)} | "
                 f"{cell(s['app_switches_per_req'], 2)} | {cell(s['client_us_per_req'], 1)} | "
                 f"{cell(s['client_switches_per_req'], 2)} | {saved} |")
    return L


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--seconds", type=int, default=SECONDS)
    args = ap.parse_args()
    x = run(args.rounds, args.seconds)
    print(json.dumps({k: v for k, v in x.items() if k != "samples"}, indent=1))
    print("\n".join(markdown(x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
