"""Socket timeouts kept by the kernel: one system call per read.

A Python socket with a timeout is non-blocking underneath, and each
``recv()`` on it is two system calls, each releasing and taking back the
interpreter lock: a ``poll()`` that waits for data, then the ``recv()``.
Every read of a request and of a provider's answer paid for both.

On POSIX a plain TCP socket can instead stay blocking with the timeout
given to the kernel (``SO_RCVTIMEO`` and ``SO_SNDTIMEO``): a read is then
one ``recv()`` that returns the data, or fails with ``EAGAIN`` once the
timeout has passed.  :class:`TimedSocketIO` turns that failure back into
the ``TimeoutError`` the rest of the proxy expects.

This is a platform decision, made here only: on Windows a send or receive
that times out leaves the socket in an undefined state (the Winsock
documentation of ``SO_RCVTIMEO``), and TLS sockets must go through the TLS
layer, so both keep Python's own timeouts.
"""

import io
import os
import socket
import struct

KERNEL_TIMEOUTS = os.name == "posix" and hasattr(socket, "SO_RCVTIMEO")


def uses_kernel_timeouts(sock):
    """Does ``sock`` get its timeouts from the kernel (see the module's docstring)?"""
    return KERNEL_TIMEOUTS and type(sock) is socket.socket


def set_timeout(sock, seconds):
    """Give ``sock`` a timeout of ``seconds`` for each read and each write: in the
    kernel where :func:`uses_kernel_timeouts`, else as ``sock.settimeout``."""
    if not uses_kernel_timeouts(sock):
        sock.settimeout(seconds)
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))
    if sock.gettimeout() is not None:
        sock.settimeout(None)  # blocking, so that the kernel's timeout is the one that counts


def set_read_timeout(sock, seconds):
    """Change the read timeout of a socket given one by :func:`set_timeout`."""
    if uses_kernel_timeouts(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
    else:
        sock.settimeout(seconds)


def _timeval(seconds):
    """A ``struct timeval`` (two C longs; on 64-bit macOS the second is an int and
    padding, which a little-endian long fills the same way)."""
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))


class TimedSocketIO(socket.SocketIO):
    """``socket.SocketIO`` (what ``makefile`` reads through) that reports a read
    timed out by the kernel as ``TimeoutError``, as a Python timeout is.

    ``SocketIO`` takes ``EAGAIN`` for "no data yet on a non-blocking socket" and
    returns None; on a blocking socket with ``SO_RCVTIMEO`` it means the
    timeout passed."""

    def readinto(self, buffer):
        count = super().readinto(buffer)
        if count is None:
            self._timeout_occurred = True  # as SocketIO does: the stream may be cut mid-message
            raise TimeoutError("timed out")
        return count


def reader(sock):
    """A buffered reader of ``sock`` that raises ``TimeoutError`` however its timeout
    is kept (``sock.makefile("rb")`` otherwise)."""
    if not uses_kernel_timeouts(sock):
        return sock.makefile("rb")
    sock._io_refs += 1  # as makefile() does: the socket stays open until the reader is closed
    return io.BufferedReader(TimedSocketIO(sock, "rb"))
