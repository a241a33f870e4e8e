#!/usr/bin/python3
"""FastCGI AUTHORIZER test app (flup on fd 0, FCGI_AUTHORIZER role only).

Its decision, by the request it is asked about:
  QUERY_STRING contains "redirect"   302 to /login (no body)
  QUERY_STRING contains "malformed"  a header line that is not a header (502)
  QUERY_STRING contains "lighty"     200 with Variable-X-LIGHTTPD-FCGI-AUTH (a name with '-')
  QUERY_STRING contains "teapot"     418 with its own Content-Type and body
  Basic credentials alice:secret     200 with Variable- headers: who it ran as,
                                     what it was sent (body length, CONTENT_LENGTH,
                                     PATH_INFO/SCRIPT_NAME presence) and REMOTE_USER
  anything else                      401 with WWW-Authenticate and a body
"""
import base64
import os

from flup.server.fcgi import WSGIServer
from flup.server.fcgi_base import FCGI_AUTHORIZER


def creds(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("Basic "):
        return None
    try:
        return base64.b64decode(auth[6:]).decode()
    except Exception:
        return None


def app(environ, start_response):
    qs = environ.get("QUERY_STRING", "")
    if "redirect" in qs:
        start_response("302 Found", [("Location", "http://example.invalid/login")])
        return [b""]
    if "malformed" in qs:
        start_response("200 OK", [("Not A Header", "x")])
        return [b""]
    if "lighty" in qs:
        # Names with '-', as lighttpd's own tests send them: mapped to '_'
        # (X_LIGHTTPD_FCGI_AUTH), and a refused name stays refused (LD_PRELOAD).
        start_response("200 OK", [("Variable-X-LIGHTTPD-FCGI-AUTH", "from-the-authorizer"),
                                  ("Variable-LD-PRELOAD", "/tmp/evil.so")])
        return [b""]
    if "teapot" in qs:
        start_response("418 I'm a teapot", [("Content-Type", "application/x-tea"), ("X-Authz", "tea")])
        return [b"short and stout\x00\xff"]
    if creds(environ) == "alice:secret":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [
            ("Variable-AUTHZ_UID", str(os.getuid())),
            ("Variable-AUTHZ_PID", str(os.getpid())),
            ("Variable-AUTHZ_BODY_LEN", str(len(body))),
            ("Variable-AUTHZ_CONTENT_LENGTH", environ.get("CONTENT_LENGTH", "unset")),
            ("Variable-AUTHZ_SAW_USER", environ.get("REMOTE_USER", "") + ":" + environ.get("REMOTE_PASSWD", "")),
            ("Variable-REMOTE_USER", "alice"),
            ("Variable-LD_PRELOAD", "/tmp/evil.so"),
            ("X-Ignored", "1"),
        ])
        return [b"ignored body of a 200\n"]
    start_response("401 Unauthorized", [
        ("WWW-Authenticate", 'Basic realm="sufcgi test"'),
        ("Content-Type", "text/plain"),
    ])
    return [b"who are you?\n"]


if __name__ == "__main__":
    WSGIServer(app, roles=(FCGI_AUTHORIZER,)).run()
