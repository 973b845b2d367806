"""A bare TCP byte relay: the floor for any proxy's added latency on this machine.

``bench/run.py`` pins it to the proxy's CPU and measures it like the proxy: what
it adds is the cost of one more process and two more loopback hops (wake-ups,
cross-CPU hand-offs, four extra socket calls per request), with no HTTP work
at all.  The proxy's added latency minus this is what its own code costs.

One thread, ``selectors``, blocking sends (the benchmark's messages are small).
Prints ``{"port": N}`` once listening; exits when stdin (a pipe) closes.
"""

import argparse
import json
import os
import selectors
import socket
import stat
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--upstream-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    try:
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            sel.register(0, selectors.EVENT_READ, "stdin")
    except OSError:
        pass
    print(json.dumps({"port": listener.getsockname()[1], "pid": os.getpid()}), flush=True)

    peers = {}

    def close(sock):
        other = peers.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            peers.pop(s, None)
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not os.read(0, 4096):
                    return 0
            elif key.data == "accept":
                client, _ = listener.accept()
                try:
                    upstream = socket.create_connection((args.upstream_host, args.upstream_port))
                except OSError:
                    client.close()
                    continue
                for s in (client, upstream):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(s, selectors.EVENT_READ, "pump")
                peers[client], peers[upstream] = upstream, client
            else:
                sock = key.fileobj
                try:
                    data = sock.recv(262144)
                    if data:
                        peers[sock].sendall(data)
                        continue
                except (OSError, KeyError):
                    pass
                close(sock)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
