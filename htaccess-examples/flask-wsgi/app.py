#!/usr/bin/python3
"""A Flask app served as a persistent FastCGI app by sufcgi (`SuFcgiApp app.py`).

flup's WSGIServer with no bind address accepts on fd 0, the listening socket
sufcgi hands to every worker. Needs Flask and flup for the system python3
(Debian: apt-get install python3-flask; pip install flup).
"""
import os
import pwd

from flask import Flask, jsonify, request
from flup.server.fcgi import WSGIServer

app = Flask(__name__)


@app.route("/")
def index():
    user = pwd.getpwuid(os.getuid()).pw_name
    greeting = os.environ.get("APP_GREETING", "Hello")
    return (f"{greeting}, running as {user} (uid {os.getuid()}, pid {os.getpid()})\n"
            f"mounted at SCRIPT_NAME={request.script_root!r}\n",
            200, {"Content-Type": "text/plain"})


@app.route("/hello/<name>")
def hello(name):
    return jsonify(hello=name, path_info=request.path, script_name=request.script_root)


if __name__ == "__main__":
    WSGIServer(app).run()
