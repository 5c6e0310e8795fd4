"""A POST written to the socket by hand: what an oversized upload looks like to a server that
answers 413 before reading it.

An HTTP client that is still writing a 50 MB body when the server answers and closes sees a
broken pipe or a reset, not the answer (whether it gets to read the 413 first is a race with
the machine's load). This one watches for the answer between 64 KiB writes, stops writing when
it comes, and reads it whole.
"""

from __future__ import annotations

import select
import socket


def raw_post(port: int, path: str, headers: str, body_bytes: int, *, chunked: bool = False,
             content_type: str = "application/json") -> tuple[bytes, int]:
    """POST ``body_bytes`` of filler to ``path`` (``headers``: extra lines, each ending in
    CRLF), 64 KiB at a time; (the answer's bytes, bytes of body sent before it came)."""
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {body_bytes}"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\n{headers}{framing}\r\n"
                     f"Content-Type: {content_type}\r\n\r\n".encode())
        try:
            while sent < body_bytes:
                if select.select([sock], [], [], 0.002)[0]:
                    break                                   # the server answered already
                frame = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
                sock.sendall(frame)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while part := sock.recv(65536):     # the server closes after its answer
                answer += part
        except ConnectionResetError:            # what it had not read, it reset
            pass
        return answer, sent
