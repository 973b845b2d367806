#!/usr/bin/env python3
"""The frame's ceiling: ``ThreadingHTTPServer`` + ``http.client``, and nothing else.

What a forwarder built on the same standard-library frame as the proxy costs
when it does nothing but forward: no config beyond the first provider's
address, no failover, no plan, no keys, no log, no usage record, no feed, no
checks of the request beyond what ``BaseHTTPRequestHandler`` itself does.
Stand it in for the proxy to see where the frame tops out on this machine:

    python bench/run.py --only latency,throughput --proxy bench/bare_forwarder.py

It takes the proxy's command line (``serve --config PATH --port 0 ...``),
writes ``proxy.pid`` with its port in the working folder as the proxy does,
answers ``GET /health`` and ``POST /shutdown``, and sends every other request
to the config's first provider (its ``base_url`` path + the request's path)
on one keep-alive connection per client connection.  An answer with a
Content-Length goes back in one write; any other is relayed as it arrives,
chunked.  Not a product: it trusts the provider and the client.
"""

import argparse
import http.client
import http.server
import json
import os
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None  # (host, port, base path), set by main()

    def setup(self):
        super().setup()
        host, port, _ = self.upstream
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def finish(self):
        super().finish()
        self.conn.close()

    def do_GET(self):
        self._answer(200, b'{"status":"ok"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.startswith("/shutdown"):
            self._answer(200, b"{}")
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        self.conn.request("POST", self.upstream[2] + self.path, body, headers)
        response = self.conn.getresponse()
        head = [f"HTTP/1.1 {response.status} {response.reason}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        if response.length is not None:
            data = response.read()
            head.append(f"Content-Length: {len(data)}\r\n\r\n")
            self.wfile.write("".join(head).encode("latin-1") + data)
            return
        head.append("Transfer-Encoding: chunked\r\n\r\n")
        self.wfile.write("".join(head).encode("latin-1"))
        while data := response.read1(65536):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")

    def _answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as f:
        first = json.load(f)["providers"][0]
    url = urllib.parse.urlsplit(first["base_url"])
    Handler.upstream = (url.hostname, url.port or 80, url.path.rstrip("/"))
    http.server.ThreadingHTTPServer.request_queue_size = 1024  # the default 5 drops connections at c=64
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    with open("proxy.pid", "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "port": server.server_address[1]}, f)
    server.serve_forever()


if __name__ == "__main__":
    main()
