#!/usr/bin/python3
"""Security-test app: before serving, a worker starts a small family of processes,
then becomes sec_rawfcgi.py (same pid, same fd 0).

argv[1] = N: N children that stay in the worker's process group (they sleep);
plus one child that calls setsid() (it leaves the group) and sleeps.
A fork the kernel refuses (EAGAIN: the owner's process limit) ends the family early.
Writes ./family.json {worker, group: [...], setsid: pid, refused: errno name or null}. If ./victim_in exists, its
content (a pid the worker did not start) is written to ./app.pid, the way an app
writes "its" pid file: the supervisor must never act on such a file.
"""
import errno
import json
import os
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2
N = max(0, min(N, 64))  # a bound, so a mistake here cannot fork-bomb the test machine


def main():
    group, refused = [], None
    for _ in range(N):
        try:
            pid = os.fork()
        except OSError as e:
            refused = errno.errorcode.get(e.errno, str(e.errno))
            break
        if pid == 0:
            try:
                os.close(0)
            except OSError:
                pass
            time.sleep(120)
            os._exit(0)
        group.append(pid)
    pid = os.fork() if refused is None else -1
    if pid == 0:
        os.setsid()
        try:
            os.close(0)
        except OSError:
            pass
        time.sleep(120)
        os._exit(0)
    escaped = pid
    if os.path.exists("victim_in"):
        with open("victim_in") as f:
            victim = f.read().strip()
        with open(".app.pid.tmp", "w") as f:
            f.write(victim)
        os.replace(".app.pid.tmp", "app.pid")
    with open(".family.tmp", "w") as f:
        json.dump({"worker": os.getpid(), "group": group, "setsid": escaped, "refused": refused}, f)
    os.replace(".family.tmp", "family.json")
    here = os.path.dirname(os.path.abspath(__file__))
    os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.join(here, "sec_rawfcgi.py"), "stdin"])


if __name__ == "__main__":
    main()
