#!/usr/bin/python3
"""Per-request profile of one bench variant: Apache with one child (event
MPM, otherwise the bench's configuration) under callgrind, `strace -c`, or
nothing (`--tool none`: keep it running to point perf/wrk at it).

    bench/profile.py --kind sufcgi --tool callgrind --requests 2000
    bench/profile.py --kind proxy  --tool strace    --requests 500

Not `httpd -X`: sufcgi's child_init closes the supervisor's control channel
(only the parent may hold it), which in a one-process httpd stops the
supervisor. So the parent runs in the foreground with a single child, and
only that child is measured (valgrind follows the fork; one output file per
process, the child's is the one with the requests).
curl sends the requests (keep-alive, HTTP/1.1, one at a time), after a warm-up.
callgrind_control cannot reach the child (it switched to www-data after the
fork), so callgrind counts the child's whole life: run it twice with
different --requests and take the difference (bench/cgdiff.py) to get the
cost of exactly the extra requests. strace is attached after the warm-up, to
every thread of the child.
Output files land in --out (default /tmp/sufcgi-profile). Must run as root.
See BENCHMARKS.md, "Profile (callgrind)".
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench  # noqa: E402
import harness  # noqa: E402  (bench.py put tests/ on sys.path)

# Its own user, so a `make bench` running meanwhile is not disturbed.
bench.USER, bench.UID = "sufcgi-perf", 2060


def load(port: int, path: str, n: int, out: Path) -> None:
    """n keep-alive GETs, one at a time, over HTTP/1.1 (curl reuses its connection
    across the URLs of one config file). Not `ab -k`: ab speaks HTTP/1.0,
    whose keep-alive needs a Content-Length, which mod_proxy_fcgi's streamed
    answers lack: each of its requests would pay a new TCP connection."""
    url = f"http://127.0.0.1:{port}{path}"
    cfg = out / f"curl-{port}.cfg"
    cfg.write_text(f'url = "{url}"\noutput = "/dev/null"\n' * n)
    res = subprocess.run(["curl", "-s", "--fail-early", "-f", "-K", str(cfg),
                          "-w", "%{http_code} %{num_connects}\n"],
                         capture_output=True, text=True, timeout=3600)
    cfg.unlink()
    lines = res.stdout.split()
    codes, connects = lines[0::2], lines[1::2]
    if res.returncode != 0 or len(codes) != n or set(codes) != {"200"}:
        raise harness.HarnessError(f"curl: rc {res.returncode}, {len(codes)} answers, codes {set(codes)}")
    # The bench configuration's MaxKeepAliveRequests 100 closes a connection
    # every 100 requests, as under wrk.
    if sum(int(c) for c in connects) > -(-n // 100):
        raise harness.HarnessError(f"curl opened {sum(int(c) for c in connects)} connections for {n} requests")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="sufcgi", choices=["sufcgi", "proxy", "static"])
    ap.add_argument("--tool", default="callgrind", choices=["callgrind", "strace", "none"])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--out", default="/tmp/sufcgi-profile")
    ap.add_argument("--label", default="", help="suffix for the output file names")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o1777)      # the child runs as www-data and writes its own dump
    tag = f"{args.kind}{'-' + args.label if args.label else ''}"

    tmp = Path(harness.tempfile.mkdtemp(prefix="sufcgi-profile-"))
    os.chmod(tmp, 0o755)
    site = bench.Site(tmp)
    port = harness.free_port()
    a, path, app = bench.make_server(args.kind, site, port)
    # One child, so every request lands in the process being measured.
    a.mpm_lines = ["StartServers 1", "ServerLimit 1", "ThreadsPerChild 32", "ThreadLimit 32",
                   "MinSpareThreads 1", "MaxSpareThreads 32", "MaxRequestWorkers 32"]
    a.write_config()
    cmd = [harness.APACHE_BIN, "-DFOREGROUND", "-f", str(a.conf)]
    if args.tool == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", "--trace-children=no", "--vgdb=no",
               f"--callgrind-out-file={out}/callgrind.{tag}.%p"] + cmd
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(out / f"{tag}.stderr", "w"))
    started: set[int] = {proc.pid}
    try:
        harness.wait_for(lambda: harness.port_open(port), 120, "Apache to listen")
        bench.check_answer(a, path)
        load(port, path, args.warmup, out)
        started.update(harness.descendants(proc.pid))
        kids = [p for p in harness.descendants(proc.pid) if harness.proc_uid(p) == harness.WWW_DATA[0]]
        if len(kids) != 1:
            raise harness.HarnessError(f"expected one www-data child, found {kids}")
        child = kids[0]
        tracer = None
        if args.tool == "strace":
            tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(out / f"strace.{tag}.txt"),
                                       "-p", str(child)], stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        t0 = time.time()
        load(port, path, args.requests, out)
        dt = time.time() - t0
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
        (out / f"{tag}.child").write_text(f"{child}\n")
        print(f"{tag}: child {child}: {args.requests} requests in {dt:.1f} s")
        if args.tool == "none":
            print(f"Apache pid {proc.pid} (child {child}) on port {port}, path {path}; Enter stops it")
            sys.stdin.readline()
    finally:
        started.update(harness.descendants(proc.pid))
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        time.sleep(0.5)
        harness.kill_pids([p for p in started if harness.pid_alive(p)], grace=1)
        harness.kill_test_user_processes()
        if app is not None:
            app.stop()
        if a.error_log.exists():
            harness.shutil.copy(a.error_log, out / f"{tag}.error.log")
        a.cleanup()
        site.cleanup()
        harness.shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
