#!/usr/bin/python3
"""Raw FastCGI backend for the kept-connection tests: accepts on fd 0, serves
requests one at a time, and answers JSON saying which connection (numbered in
accept order) carried the request and how many requests that connection had.

argv[1] picks the behaviour:
  keep  honours FCGI_KEEP_CONN: waits on the connection for the next request
  drop  serves the first request of a connection, then hangs up as soon as the
        next one arrives on it, unanswered (an app that went away under a
        kept connection); `dropped` counts those
A management record (FCGI_GET_VALUES) is answered FCGI_UNKNOWN_TYPE.
"""
import json
import os
import socket
import struct
import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else "keep"
BEGIN, END, PARAMS, STDIN, STDOUT, UNKNOWN_TYPE = 1, 3, 4, 5, 6, 11
state = {"conns": 0, "dropped": 0}


def rec(typ, rid, content=b""):
    pad = (-len(content)) % 8
    return struct.pack(">BBHHBB", 1, typ, rid, len(content), pad, 0) + content + b"\0" * pad


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_request(conn, on_first_byte=None):
    """Records until the empty STDIN record: (request id, keep_conn, body length)."""
    rid, keep, body = 1, False, 0
    while True:
        head = recv_exact(conn, 8)
        if on_first_byte:
            on_first_byte()
        _ver, typ, rid_, clen, plen, _ = struct.unpack(">BBHHBB", head)
        content = recv_exact(conn, clen + plen)[:clen]
        if rid_ == 0:
            conn.sendall(rec(UNKNOWN_TYPE, 0, bytes([typ]) + b"\0" * 7))
            continue
        if typ == BEGIN:
            rid, keep = rid_, bool(content[2] & 1)
        if typ == STDIN:
            if clen == 0:
                return rid, keep, body
            body += clen


def answer(conn, rid, on_conn, body):
    doc = json.dumps({"conn": state["conns"], "on_conn": on_conn, "body": body,
                      "dropped": state["dropped"], "pid": os.getpid()}).encode()
    out = b"Content-Type: application/json\r\n\r\n" + doc
    conn.sendall(rec(STDOUT, rid, out) + rec(STDOUT, rid) + rec(END, rid, b"\0" * 8))


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
                rid, keep, body = read_request(conn, drop)
                on_conn += 1
                answer(conn, rid, on_conn, body)
                if not keep:
                    break
        except (EOFError, OSError, Dropped):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
