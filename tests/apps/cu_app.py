#!/usr/bin/python3
"""FastCGI app for the customer-visibility tests (flup WSGIServer on fd 0).

Chosen by the first path segment after the mount:
  (default)  JSON: pid
  xs         answers X-Sendfile: ?path= (URL-decoded here) with a body the server must drop;
             ?ct= sets a Content-Type
  xs2        answers X-Sendfile2: ?v= (lighttpd's form: URL-encoded path, space, range)
  crash      exits with status 3 in the middle of the request
  fcgierr    writes "cu-fcgi-stderr <token>" to wsgi.errors (FastCGI STDERR)
  spam       writes ?n= lines to its own fd 2 (the supervisor's pipe), then answers
  block      connects to 127.0.0.1:?port= and waits for data (recv) before answering
"""
import json
import os
import socket
from urllib.parse import parse_qs

from flup.server.fcgi import WSGIServer


def app(environ, start_response):
    what = (environ.get("PATH_INFO", "") or "/").strip("/").split("/")[0]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    arg = lambda k, d="": qs.get(k, [d])[0]
    if what == "xs":
        headers = [("X-Sendfile", arg("path")), ("Content-Length", "8")]
        if arg("ct"):
            headers.append(("Content-Type", arg("ct")))
        start_response("200 OK", headers)
        return [b"app body"]
    if what == "xs2":
        start_response("200 OK", [("X-Sendfile2", arg("v")), ("Content-Type", "text/plain")])
        return [b"app body"]
    if what == "crash":
        os._exit(3)
    if what == "fcgierr":
        environ["wsgi.errors"].write(f"cu-fcgi-stderr {arg('token')}\n")
        environ["wsgi.errors"].flush()
    if what == "spam":
        n = int(arg("n", "10"))
        for i in range(n):
            os.write(2, f"cu-spam line {i}\n".encode())
    if what == "block":
        s = socket.create_connection(("127.0.0.1", int(arg("port"))))
        s.recv(1)
        s.close()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"pid": os.getpid()}).encode()]


if __name__ == "__main__":
    WSGIServer(app).run()
