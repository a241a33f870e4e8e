#!/usr/bin/python3
"""Raw FastCGI backend for the security tests: accepts on fd 0 (FCGI_LISTENSOCK_FILENO),
reads one request's records itself and answers with hand-made bytes.

argv[1] picks the behaviour:
  stdin        honest: JSON with the STDIN record lengths, the body's length and sha256
  badversion   a record with FastCGI version 9
  unknowntype  a record of type 77 before the response
  wrongid      STDOUT and END_REQUEST for request id 4242
  lenpast      a STDOUT record header claiming 60000 bytes, 10 sent, then close
  truncated    half a record header, then close
  bigheaders   70 KiB of response headers, then the body
  endless      header bytes without end (bounded at 4 MiB, then stalls)
  badstatus    Status: abc
  crheader     a header value holding a bare CR
  nulheader    a header value holding a NUL byte
  location     Location: /sec-other/secret.txt (no Status)
  status200loc Status: 200 with a Location to another path
Every mode but `stdin` writes nothing that a correct client should accept.
Records are read and written with fcgi_raw.py (copied beside this file).
"""
import hashlib
import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True   # leave no __pycache__ in the customer's directory
import fcgi_raw  # noqa: E402
from fcgi_raw import BEGIN_REQUEST, STDIN, STDOUT, end_request as end, record as rec  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else "stdin"


def read_request(conn):
    """Records until the empty STDIN record: (request id, STDIN record lengths, body)."""
    rid, lengths, body = 1, [], []
    while True:
        typ, rid_, content = fcgi_raw.read_record(conn)
        if typ == BEGIN_REQUEST:
            rid = rid_
        if typ == STDIN:
            if not content:
                return rid, lengths, b"".join(body)
            lengths.append(len(content))
            body.append(content)


def stdout_records(rid, data):
    return fcgi_raw.stream(STDOUT, rid, data)


def answer(conn, rid, lengths, body):
    if MODE == "stdin":
        payload = json.dumps({"records": lengths, "length": len(body),
                              "sha256": hashlib.sha256(body).hexdigest()}).encode()
        conn.sendall(stdout_records(rid, b"Content-Type: application/json\r\n\r\n" + payload)
                     + rec(STDOUT, rid) + end(rid))
    elif MODE == "badversion":
        conn.sendall(rec(STDOUT, rid, b"Content-Type: text/plain\r\n\r\nhi", version=9) + end(rid))
    elif MODE == "unknowntype":
        conn.sendall(rec(77, rid, b"junk") + stdout_records(rid, b"Content-Type: text/plain\r\n\r\nhi")
                     + end(rid))
    elif MODE == "wrongid":
        conn.sendall(stdout_records(4242, b"Content-Type: text/plain\r\n\r\nhi") + end(4242))
    elif MODE == "lenpast":
        conn.sendall(fcgi_raw.header(STDOUT, rid, 60000) + b"Status: 20")
    elif MODE == "truncated":
        conn.sendall(b"\x01\x06\x00")
    elif MODE == "bigheaders":
        head = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"y" * 60) for i in range(1100))
        conn.sendall(stdout_records(rid, b"Content-Type: text/plain\r\n" + head + b"\r\nbody")
                     + rec(STDOUT, rid) + end(rid))
    elif MODE == "endless":
        line = b"X-Endless: " + b"z" * 100 + b"\r\n"
        sent = 0
        try:
            while sent < (4 << 20):
                conn.sendall(rec(STDOUT, rid, line * 500))
                sent += len(line) * 500
        except OSError:
            return
        time.sleep(30)
    elif MODE == "badstatus":
        conn.sendall(stdout_records(rid, b"Status: abc\r\nContent-Type: text/plain\r\n\r\nhi")
                     + rec(STDOUT, rid) + end(rid))
    elif MODE == "crheader":
        conn.sendall(stdout_records(rid, b"Content-Type: text/plain\r\nX-Evil: a\rSet-Cookie: x=1\r\n\r\nhi")
                     + rec(STDOUT, rid) + end(rid))
    elif MODE == "nulheader":
        conn.sendall(stdout_records(rid, b"Content-Type: text/plain\r\nX-Evil: a\0b\r\n\r\nhi")
                     + rec(STDOUT, rid) + end(rid))
    elif MODE == "location":
        conn.sendall(stdout_records(rid, b"Location: /sec-other/secret.txt\r\n\r\n")
                     + rec(STDOUT, rid) + end(rid))
    elif MODE == "status200loc":
        conn.sendall(stdout_records(rid, b"Status: 200 OK\r\nLocation: /sec-other/secret.txt\r\n"
                                         b"Content-Type: text/plain\r\n\r\nfrom-backend")
                     + rec(STDOUT, rid) + end(rid))


def main():
    listener = socket.socket(fileno=0)
    while True:
        conn, _ = listener.accept()
        try:
            rid, lengths, body = read_request(conn)
            answer(conn, rid, lengths, body)
        except (EOFError, OSError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
