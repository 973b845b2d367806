"""Socket timeouts kept by the kernel (POSIX) or by Python (elsewhere, and TLS)."""

import socket
import ssl
import time

import pytest

from claude_proxy import socket_timeouts
from claude_proxy.socket_timeouts import reader, set_read_timeout, set_timeout, uses_kernel_timeouts

posix_only = pytest.mark.skipif(not socket_timeouts.KERNEL_TIMEOUTS, reason="kernel timeouts are POSIX only")


@posix_only
def test_a_plain_socket_blocks_with_its_timeout_in_the_kernel():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        set_timeout(ours, 0.2)
        assert ours.gettimeout() is None  # blocking: no poll() before each recv()
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) != bytes(16)
        theirs.sendall(b"hello\n")
        with reader(ours) as file:
            assert file.readline() == b"hello\n"
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                file.readline()  # nothing more comes: a timeout, not an end of file
            assert 0.15 < time.monotonic() - started < 5


@posix_only
def test_the_read_timeout_can_change_alone():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        set_timeout(ours, 30)
        set_read_timeout(ours, 0.1)
        with reader(ours) as file:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                file.read(1)
            assert time.monotonic() - started < 5
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16)[:8] == (30).to_bytes(8, "little")


@posix_only
def test_the_reader_keeps_the_socket_open_until_it_is_closed():
    ours, theirs = socket.socketpair()
    with theirs:
        set_timeout(ours, 5)
        file = reader(ours)
        ours.close()  # as http.client does with its connection's socket
        theirs.sendall(b"still there")
        assert file.read1(64) == b"still there"
        file.close()
        assert ours.fileno() == -1


def test_elsewhere_and_for_tls_python_keeps_the_timeout(monkeypatch):
    monkeypatch.setattr(socket_timeouts, "KERNEL_TIMEOUTS", False)  # as on Windows
    ours, theirs = socket.socketpair()
    with ours, theirs:
        set_timeout(ours, 0.2)
        assert ours.gettimeout() == 0.2
        set_read_timeout(ours, 0.1)
        assert ours.gettimeout() == 0.1
        with reader(ours) as file, pytest.raises(TimeoutError):
            file.read(1)


def test_a_tls_socket_keeps_pythons_timeout():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with context.wrap_socket(socket.socket(), server_hostname="localhost",
                             do_handshake_on_connect=False) as tls:
        assert not uses_kernel_timeouts(tls)
        set_timeout(tls, 0.3)
        assert tls.gettimeout() == 0.3
