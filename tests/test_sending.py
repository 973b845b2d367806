"""Writing to sockets in one system call (claude_proxy/sending.py), and the
client reader's timeouts (claude_proxy/body.py): cheaper, never different."""

import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from claude_proxy.body import ClientReader  # noqa: E402
from claude_proxy.sending import SocketWriter, send_all  # noqa: E402


def _read_all(sock, size, out):
    while len(out) < size:
        data = sock.recv(65536)
        if not data:
            break
        out.extend(data)


def test_a_small_write_arrives_whole():
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5)
        assert SocketWriter(a).write(b"HTTP/1.1 200 OK\r\n\r\nhello") == 24
        assert b.recv(100) == b"HTTP/1.1 200 OK\r\n\r\nhello"


def test_a_write_larger_than_the_socket_takes_at_once_arrives_whole_and_in_order():
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5)
        data = bytes(range(256)) * 40000  # 10 MB: far over any send buffer, so the rest waits for room
        out = bytearray()
        reader = threading.Thread(target=_read_all, args=(b, len(data), out))
        reader.start()
        send_all(a, data)
        reader.join(10)
        assert bytes(out) == data


def test_a_socket_that_is_not_a_plain_one_gets_its_own_sendall():
    class Wrapped:  # a TLS socket, say: its bytes must go through its own layer
        def __init__(self):
            self.sent = []

        def sendall(self, data):
            self.sent.append(bytes(data))

    wrapped = Wrapped()
    send_all(wrapped, b"secret")
    assert wrapped.sent == [b"secret"]


def test_a_closed_client_is_an_oserror_as_with_sendall():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.close()
    try:
        send_all(a, b"x" * 100000)
        send_all(a, b"x")
    except OSError:
        pass
    else:
        raise AssertionError("writing to a closed peer must fail")
    finally:
        a.close()


class _CountingSocket(socket.socket):
    settimeouts = 0

    def settimeout(self, value):
        type(self).settimeouts += 1
        super().settimeout(value)


def test_a_request_that_arrives_in_one_read_costs_no_timeout_change_and_a_slow_one_gets_the_idle_timeout_back():
    a, b = socket.socketpair()
    client = _CountingSocket(fileno=a.detach())
    with client, b:
        client.settimeout(300)
        _CountingSocket.settimeouts = 0
        reader = ClientReader(client, idle=300, limit=30)
        buffer = bytearray(100)
        b.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert reader.readinto(buffer) == 18
        reader.request_received()
        assert _CountingSocket.settimeouts == 0

        b.sendall(b"POST / HTTP/1.1\r\n")
        reader.readinto(buffer)
        b.sendall(b"\r\n")
        reader.readinto(buffer)  # a second read of the same request: on the request's clock
        assert client.gettimeout() <= 30
        reader.request_received()
        assert client.gettimeout() == 300
