"""Sending on a socket in one system call when it can take the data at once.

Every socket of the proxy has a timeout, and Python then makes each
``sendall()`` two system calls: a ``poll()`` for writability, then the
``send()``; yet a small answer or request always fits in the socket's send
buffer.  On POSIX such a socket is non-blocking underneath, so one
``write()`` takes all of the data, part of it, or none (``EAGAIN``), and
whatever is left goes through ``sendall()``, with its timeout, as before.
Elsewhere (Windows' ``os.write`` does not take sockets), and for TLS (the
bytes must go through the TLS layer), it is ``sendall()`` alone.
"""

import io
import os
import socket

DIRECT = os.name == "posix"


def send_all(sock, data):
    """``sock.sendall(data)``, in one ``write()`` where the socket takes it all."""
    if DIRECT and type(sock) is socket.socket:
        try:
            sent = os.write(sock.fileno(), data)
        except BlockingIOError:  # the send buffer is full: wait for room below
            sent = 0
        if sent >= len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)


class SocketWriter(io.BufferedIOBase):
    """``socketserver``'s unbuffered ``wfile``, writing with :func:`send_all`."""

    def __init__(self, sock):
        self._sock = sock

    def writable(self):
        return True

    def write(self, data):
        send_all(self._sock, data)
        with memoryview(data) as view:
            return view.nbytes

    def fileno(self):
        return self._sock.fileno()
