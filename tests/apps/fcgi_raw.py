"""Raw FastCGI 1.0 records for the test apps that speak the protocol by hand
(keepconn.py, sec_rawfcgi.py): they must send what no library would (a wrong
version, a length past the data, half a header) and see exactly what the
server sent (record lengths, FCGI_KEEP_CONN, management records).

Not an app: the harness copies it beside every app of tests/apps/ that
imports it (harness.put_app), since apps run from a copy in a site directory.
Its codec is checked against hand-written bytes in tests/test_harness.py.
"""
import struct

VERSION = 1
(BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, DATA,
 GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE) = range(1, 12)
KEEP_CONN = 1                 # BEGIN_REQUEST flag
MAX_CONTENT = 65535
HEADER = struct.Struct(">BBHHBx")   # version, type, request id, content length, padding length, reserved


def header(rtype, request_id, content_len, padding_len=0, version=VERSION):
    """A record header as given, true or not (a length past the data, a bad version)."""
    return HEADER.pack(version, rtype, request_id, content_len, padding_len)


def record(rtype, request_id, content=b"", version=VERSION):
    """One record holding `content` (at most MAX_CONTENT bytes), padded to a multiple of 8."""
    pad = (-len(content)) % 8
    return header(rtype, request_id, len(content), pad, version) + content + b"\0" * pad


def stream(rtype, request_id, data):
    """`data` as records of at most MAX_CONTENT bytes each, without the empty record
    that ends a stream."""
    return b"".join(record(rtype, request_id, data[i:i + MAX_CONTENT])
                    for i in range(0, len(data), MAX_CONTENT))


def end_request(request_id, app_status=0, protocol_status=0):
    return record(END_REQUEST, request_id, struct.pack(">IB3x", app_status, protocol_status))


def unknown_type(rtype):
    """The answer to a management record of a type the app does not know."""
    return record(UNKNOWN_TYPE, 0, bytes([rtype]) + b"\0" * 7)


def recv_exact(conn, n):
    """Exactly n bytes from a socket; EOFError if it closes first."""
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_header(conn):
    """The next record's header: (version, type, request id, content length, padding length)."""
    return HEADER.unpack(recv_exact(conn, HEADER.size))


def read_content(conn, content_len, padding_len):
    """The content of a record whose header was just read; its padding is read and dropped."""
    return recv_exact(conn, content_len + padding_len)[:content_len]


def read_record(conn):
    """The next whole record: (type, request id, content)."""
    _version, rtype, request_id, clen, plen = read_header(conn)
    return rtype, request_id, read_content(conn, clen, plen)


def name_values(content):
    """A PARAMS (or GET_VALUES) body as a dict of bytes: each length is one byte
    below 128, else four bytes big-endian with the high bit set."""
    out, i = {}, 0
    while i < len(content):
        lens = []
        for _ in range(2):
            if content[i] >> 7:
                lens.append(struct.unpack(">I", content[i:i + 4])[0] & 0x7FFFFFFF)
                i += 4
            else:
                lens.append(content[i])
                i += 1
        out[content[i:i + lens[0]]] = content[i + lens[0]:i + lens[0] + lens[1]]
        i += lens[0] + lens[1]
    return out
