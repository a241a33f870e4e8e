#!/usr/bin/python3
"""A broken FastCGI backend: accepts one connection on fd 0, reads a little,
then exits without writing a single record (the server must answer 502)."""
import os
import socket

listener = socket.socket(fileno=0)
conn, _ = listener.accept()
try:
    conn.recv(4096)
finally:
    os._exit(3)
