#!/usr/bin/python3
"""Raw FastCGI backend for the kept-connection tests (tests/test_keepconn.py):
accepts on fd 0, serves requests one at a time, and answers JSON saying which
connection (numbered in accept order) carried the request, how many requests
that connection had, and what it saw of the server's behaviour.

argv[1] picks the behaviour:
  keep      honours FCGI_KEEP_CONN: waits on the connection for the next request
  drop      serves the first request of a connection, then hangs up as soon as
            the next one arrives on it, unanswered (an app that went away under
            a kept connection); `dropped` counts those
  droppost  keeps connections, but reads a POST that comes on a kept connection
            to its end, notes it in posts.log (in its directory) and hangs up
            unanswered (so the app may have acted on it: it must never be sent
            twice)
  hangup    keeps connections, but closes one that stayed unused for
            UNREAD_WATCH_S after an answer (an app with an idle timeout)
  ignore    keeps connections and never answers FCGI_GET_VALUES: it waits on
            the question's connection until the server gives up on it;
            `probe_seen` / `probe_closed` are when (time.time()) it came / ended
A management record (FCGI_GET_VALUES) is otherwise answered FCGI_UNKNOWN_TYPE.
After an answer on a connection the server keeps, the app looks for up to
UNREAD_WATCH_S whether the server has read all of it (SIOCOUTQ: bytes it
sent that its peer has not read) and says in its next answer how many bytes
were still unread then (`unread`; None when the next request came first).
Records are read and written with fcgi_raw.py (copied beside this file).
"""
import fcntl
import json
import os
import select
import socket
import struct
import sys
import termios
import time

sys.dont_write_bytecode = True   # leave no __pycache__ in the customer's directory
import fcgi_raw  # noqa: E402
from fcgi_raw import BEGIN_REQUEST, STDIN, STDOUT, PARAMS, record  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else "keep"
state = {"conns": 0, "dropped": 0, "probe_seen": None, "probe_closed": None, "unread": None}
UNREAD_WATCH_S = 0.3


def unread_by_server(conn):
    """What the server left unread of the last answer, once UNREAD_WATCH_S
    passed without the next request (None when it came first)."""
    end = time.monotonic() + UNREAD_WATCH_S
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        if select.select([conn], [], [], min(left, 0.01))[0]:
            return None
    return struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


class Ignored(Exception):
    pass


def read_request(conn, on_first_byte=None):
    """Records until the empty STDIN record: (request id, keep_conn, body length, method)."""
    rid, keep, body, env = 1, False, 0, b""
    while True:
        _ver, typ, rid_, clen, plen = fcgi_raw.read_header(conn)
        if on_first_byte:
            on_first_byte()
            on_first_byte = None
        content = fcgi_raw.read_content(conn, clen, plen)
        if rid_ == 0:
            if MODE == "ignore":
                raise Ignored
            conn.sendall(fcgi_raw.unknown_type(typ))
            continue
        if typ == BEGIN_REQUEST:
            rid, keep = rid_, bool(content[2] & fcgi_raw.KEEP_CONN)
        if typ == PARAMS:
            env += content
        if typ == STDIN:
            if clen == 0:
                return rid, keep, body, fcgi_raw.name_values(env).get(b"REQUEST_METHOD", b"")
            body += clen


def answer(conn, rid, on_conn, body):
    doc = json.dumps({"conn": state["conns"], "on_conn": on_conn, "body": body, "dropped": state["dropped"],
                      "probe_seen": state["probe_seen"], "unread": state["unread"],
                      "probe_closed": state["probe_closed"], "pid": os.getpid()}).encode()
    out = b"Content-Type: application/json\r\n\r\n" + doc
    conn.sendall(record(STDOUT, rid, out) + record(STDOUT, rid) + fcgi_raw.end_request(rid))


class Dropped(Exception):
    pass


def main():
    listener = socket.socket(fileno=0)
    while True:
        conn, _ = listener.accept()
        state["conns"] += 1
        on_conn = 0
        try:
            while True:
                def drop():
                    if MODE == "drop" and on_conn >= 1:
                        state["dropped"] += 1
                        raise Dropped
                rid, keep, body, method = read_request(conn, drop)
                if MODE == "droppost" and method == b"POST" and on_conn >= 1:
                    # Counted in a file: the server stops a worker after a
                    # broken exchange, and the next one starts from zero.
                    with open("posts.log", "a") as f:
                        f.write(f"{os.getpid()} {body}\n")
                    raise Dropped
                on_conn += 1
                answer(conn, rid, on_conn, body)
                if not keep:
                    break
                state["unread"] = unread_by_server(conn)
                if MODE == "hangup" and state["unread"] is not None:
                    break
        except Ignored:
            state["conns"] -= 1
            state["probe_seen"] = time.time()
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass
            state["probe_closed"] = time.time()
        except (EOFError, OSError, Dropped):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
