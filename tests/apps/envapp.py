#!/usr/bin/python3
"""FastCGI test app (flup WSGIServer on fd 0, the FCGI_LISTENSOCK_FILENO).

Modes, chosen by the `mode` query parameter:
  (none)   JSON: uid, gid, euid, egid, groups, pid, cwd, argv, the CGI environ (env)
           and the worker's process environment (process_env)
  echo     reads the whole body, then returns it
  sha      JSON: length and sha256 of the body, read in chunks (never whole)
  cookies  Status 201, two Set-Cookie headers, small text body
  slowsha  like sha but sleeps briefly between chunks (keeps the backend slower than the client)
  stderr   writes two lines to wsgi.errors (FastCGI STDERR), the second in two flushed pieces
"""
import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs

from flup.server.fcgi import WSGIServer

CHUNK = 64 * 1024


def _mode(environ):
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    return qs.get("mode", [""])[0]


def _env_json(environ):
    env = {}
    for k, v in environ.items():
        if isinstance(v, str):
            env[k] = v
    return {
        "app": "flup",
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "egid": os.getegid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "argv": sys.argv,
        "env": env,
        # the worker's own process environment (where SuFcgiEnv values may land)
        "process_env": dict(os.environ),
    }


def app(environ, start_response):
    mode = _mode(environ)
    body_in = environ["wsgi.input"]
    if mode == "echo":
        # Read the whole body before answering: a client that sends everything
        # before reading (most do) would otherwise deadlock on full socket buffers.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        chunks = []
        left = length
        while left > 0:
            chunk = body_in.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            chunks.append(chunk)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(length - left))])
        return chunks
    if mode in ("sha", "slowsha"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        h = hashlib.sha256()
        got = 0
        while got < length:
            chunk = body_in.read(min(CHUNK, length - got))
            if not chunk:
                break
            got += len(chunk)
            h.update(chunk)
            if mode == "slowsha":
                time.sleep(0.001)
        out = json.dumps({"length": got, "sha256": h.hexdigest(), "pid": os.getpid()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [out]
    if mode == "stderr":
        err = environ["wsgi.errors"]
        err.write("envapp stderr line one\n")
        err.flush()
        err.write("envapp stderr line ")
        err.flush()
        err.write("two\n")
        err.flush()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"logged\n"]
    if mode == "cookies":
        start_response("201 Created", [
            ("Content-Type", "text/plain"),
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; Path=/"),
            ("X-App", "flup"),
        ])
        return [b"created\n"]
    out = json.dumps(_env_json(environ), sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


if __name__ == "__main__":
    # No bindAddress: flup then accepts on fd 0, the socket the spawner handed us.
    WSGIServer(app).run()
