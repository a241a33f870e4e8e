#!/usr/bin/python3
"""The file a race test plants in place of a checked app. If it ever runs as a worker,
it leaves a marker (who ran it, and as whom) and exits without serving."""
import os
import time

MARKERS = "/tmp/sufcgi-sec-markers"
try:
    with open(os.path.join(MARKERS, f"ran-{os.getpid()}-{time.time_ns()}"), "w") as f:
        f.write(f"uid={os.getuid()} cwd={os.getcwd()}\n")
except OSError:
    pass
os._exit(3)
