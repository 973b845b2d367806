"""The benchmark's load generator: a worker process driven by ``bench/run.py``.

It reads one JSON command per line on stdin and answers with JSON lines on
stdout (the last line of each answer has ``"result"``); it exits when stdin
closes.  Keeping it in its own process keeps its CPU use off the proxy's core
and out of the orchestrator's way.

Clients are raw sockets with keep-alive, so per request the client spends only
a few tens of microseconds:

- ``latency``: one blocking connection, one request at a time (concurrency 1),
  optionally ``gap_ms`` apart;
- ``throughput``: N asyncio connections, each sending its next request as soon
  as the previous answer is complete, for a fixed time;
- ``streams``: N concurrent SSE streams; records when each event completes,
  and checks every stream byte for byte against what the fake provider sent.

What is sent and checked depends on a command's ``"shape"``:
``"anthropic"`` (the default: a Messages request; answers byte-identical to
the fake provider's), ``"openai"`` (a Chat Completions request straight to the
fake provider; answers byte-identical to its ``chat.completion`` and chunks) or
``"translated"`` (a Messages request the proxy translates for an OpenAI-type
provider: the answer's text must be the provider's, a stream must end with
``message_stop``).  Checks run after the clock stops.

Every wait is bounded: socket timeouts, and a deadline per command.
"""

import asyncio
import json
import math
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

perf = time.perf_counter


def summary(values, scale=1000.0):
    """Percentiles (nearest rank) of ``values`` (seconds), reported in ms by default."""
    if not values:
        return {"n": 0}
    data = sorted(values)
    n = len(data)

    def pct(q):
        return data[max(0, min(n - 1, math.ceil(q * n) - 1))] * scale

    return {"n": n, "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
            "max": data[-1] * scale, "mean": sum(data) / n * scale}


def expected_body(status):
    return wire.MESSAGE_JSON if status == 200 else wire.RATE_LIMIT_JSON


def request_body(cmd, stream=False, knobs=None):
    """The body a command sends, in its ``shape``."""
    if cmd.get("shape") == "openai":
        return wire.chat_request_body(stream, knobs)
    return wire.request_body(stream, cmd.get("pad", 0), knobs if cmd.get("shape") == "translated" else None)


def answer_ok(cmd, status, body):
    """Is a non-stream answer what the command's ``shape`` expects?"""
    shape = cmd.get("shape")
    if shape == "openai":
        return status == 200 and body == wire.CHAT_COMPLETION_JSON
    if shape == "translated":
        try:
            message = json.loads(body)
            return status == 200 and message["type"] == "message" and \
                message["content"] == [{"type": "text", "text": wire.ANSWER_TEXT}]
        except (ValueError, KeyError, TypeError):
            return False
    expect = cmd.get("expect_status", 200)
    return status == expect and body == expected_body(expect)


# --- blocking client (concurrency 1) -------------------------------------------

class BlockingConn:
    def __init__(self, host, port, timeout=10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None

    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def request(self, raw):
        if self.sock is None:
            self.connect()
        sock = self.sock
        sock.sendall(raw)
        parser = wire.ResponseParser()
        while True:
            data = sock.recv(262144)
            if not data:
                self.close()
                if parser.eof():
                    return parser
                raise ConnectionError("server closed the connection mid-response")
            if parser.feed(data):
                break
        if not parser.keep_alive:
            self.close()
        return parser


def op_latency(cmd):
    """Sequential requests on one keep-alive connection; per-request wall time."""
    raw = wire.build_request("POST", cmd["path"], f"{cmd['host']}:{cmd['port']}",
                             cmd.get("headers"), request_body(cmd))
    conn = BlockingConn(cmd["host"], cmd["port"])
    deadline = perf() + cmd.get("max_seconds", 30.0)
    gap = cmd.get("gap_ms", 0.0) / 1000.0
    samples, bad, errors = [], 0, []
    try:
        conn.connect()
        for _ in range(cmd.get("warmup", 20)):
            conn.request(raw)
        for _ in range(cmd["n"]):
            if perf() > deadline:
                errors.append("deadline reached")
                break
            if gap:
                time.sleep(gap)  # idle between requests, as a client session is
            t0 = perf()
            try:
                resp = conn.request(raw)
            except (OSError, wire.ProtocolError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                if len(errors) > 10:
                    break
                continue
            samples.append(perf() - t0)
            if not answer_ok(cmd, resp.status, bytes(resp.body)):
                bad += 1
    except (OSError, wire.ProtocolError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    return {"latency": summary(samples), "requests_total": len(samples) + cmd.get("warmup", 20),
            "bad": bad, "errors": errors[:5], "error_count": len(errors)}


# --- asyncio client --------------------------------------------------------------

class AsyncConn(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.parser = None
        self.waiter = None
        self.on_first_event = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        parser = self.parser
        if parser is None:
            return
        try:
            done = parser.feed(data, perf())
        except wire.ProtocolError as exc:
            self._resolve(exc)
            return
        if self.on_first_event is not None and parser.events:
            callback, self.on_first_event = self.on_first_event, None
            callback()
        if done:
            self._resolve(None)

    def _resolve(self, exc):
        waiter, parser = self.waiter, self.parser
        self.waiter = self.parser = None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(parser)
            else:
                waiter.set_exception(exc)

    def connection_lost(self, exc):
        self.lost = True
        if self.parser is not None:
            if self.parser.eof():
                self._resolve(None)
            else:
                self._resolve(ConnectionError("connection closed mid-response"))

    def request(self, raw, sse=False):
        if self.lost:
            raise ConnectionError("connection is closed")
        self.parser = wire.ResponseParser(sse=sse)
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter

    def close(self):
        if self.transport is not None:
            self.transport.close()


async def open_conn(host, port):
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(AsyncConn, host, port)
    return conn


async def open_many(host, port, n):
    t0 = perf()
    results = await asyncio.gather(*(open_conn(host, port) for _ in range(n)), return_exceptions=True)
    conns = [r for r in results if isinstance(r, AsyncConn)]
    errors = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, AsyncConn)]
    return conns, errors, perf() - t0


async def op_throughput(cmd):
    """``concurrency`` connections, each sending its next request when the last answer is in.

    Connections start spread over ``stagger_ms`` (so requests do not arrive in
    lock-step bursts) and only answers completed inside a window of
    ``duration`` seconds, which opens once every connection is running, count.
    """
    host, port, c = cmd["host"], cmd["port"], cmd["concurrency"]
    raw = wire.build_request("POST", cmd["path"], f"{host}:{port}", cmd.get("headers"), request_body(cmd))
    body = expected_body(200)
    stagger = cmd.get("stagger_ms", 0.0) / 1000.0
    conns, errors, connect_s = await open_many(host, port, c)
    latencies, bad, sent = [], 0, len(conns)
    try:
        # Warm-up: one request per connection, untimed (the proxy opens its upstream connections).
        await asyncio.gather(*(conn.request(raw) for conn in conns), return_exceptions=True)
        start = perf()
        t0 = start + stagger
        t1 = t0 + cmd["duration"]

        async def worker(index, conn):
            nonlocal bad, sent
            done = 0
            wait = start + index * stagger / max(1, len(conns)) - perf()
            if wait > 0:
                await asyncio.sleep(wait)
            while True:
                now = perf()
                if now >= t1:
                    return done
                sent += 1
                try:
                    resp = await conn.request(raw)
                except (OSError, wire.ProtocolError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return done
                end = perf()
                if resp.status != 200 or bytes(resp.body) != body:
                    bad += 1
                if t0 <= end <= t1:
                    done += 1
                    latencies.append(end - now)

        counts = await asyncio.gather(*(worker(i, conn) for i, conn in enumerate(conns)))
    finally:
        for conn in conns:
            conn.close()
    completed = sum(counts)
    duration = cmd["duration"]
    return {"completed": completed, "requests_total": sent, "window_s": duration, "rps": completed / duration,
            "connections": len(conns), "connect_s": connect_s, "latency": summary(latencies),
            "bad": bad, "errors": errors[:5], "error_count": len(errors)}


def compare_stream(received, expected):
    """(lost, reordered, unexpected) events of one stream."""
    exp_set = set(expected)
    got_set = set(received)
    lost = len(exp_set - got_set)
    unexpected = sum(1 for e in received if e not in exp_set)
    common = [e for e in received if e in exp_set]
    order = {e: i for i, e in enumerate(expected)}
    reordered = sum(1 for a, b in zip(common, common[1:]) if order[a] > order[b])
    return lost, reordered, unexpected


async def op_streams(cmd, notify):
    host, port, n = cmd["host"], cmd["port"], cmd["n"]
    deltas, pace = cmd["deltas"], cmd["pace_ms"]
    seed_base = cmd.get("seed_base", 0)
    shape = cmd.get("shape", "anthropic")
    conns, errors, connect_s = await open_many(host, port, n)
    opened = 0
    all_open = asyncio.get_running_loop().create_future()

    def first_event():
        nonlocal opened
        opened += 1
        if opened == len(conns) and not all_open.done():
            all_open.set_result(perf())

    raws = []
    for i in range(len(conns)):
        headers = dict(cmd.get("headers") or {})
        knobs = {"seed": seed_base + i, "deltas": deltas, "pace": pace}
        headers.update({wire.KNOBS[name]: str(value) for name, value in knobs.items()})
        raws.append(wire.build_request("POST", cmd["path"], f"{host}:{port}", headers,
                                       request_body(cmd, True, knobs)))
    loop = asyncio.get_running_loop()
    ramp = cmd.get("ramp_ms", 0.0) / 1000.0
    sends = [0.0] * len(conns)
    futures = [loop.create_future() for _ in conns]

    def send(i):
        conn = conns[i]
        conn.on_first_event = first_event
        sends[i] = perf()
        try:
            fut = conn.request(raws[i], sse=True)
        except OSError as exc:
            futures[i].set_exception(exc)
            return
        fut.add_done_callback(lambda f, out=futures[i]: out.set_exception(f.exception())
                              if f.exception() else out.set_result(f.result()))

    try:
        # Requests are built beforehand; starts are spread evenly over ramp_ms.
        t_start = loop.time() + 0.001
        for i in range(len(conns)):
            loop.call_at(t_start + i * ramp / max(1, len(conns)), send, i)

        async def announce():
            t = await all_open
            notify({"event": "all_open", "after_s": t - min(sends)})

        announcer = asyncio.ensure_future(announce())
        results = await asyncio.gather(*futures, return_exceptions=True)
        announcer.cancel()
    finally:
        for conn in conns:
            conn.close()

    ttfe, gaps = [], []
    expected_events = received_events = lost = reordered = unexpected = 0
    identical = mismatched = failed = 0
    for i, (t_send, res) in enumerate(zip(sends, results)):
        expected = (wire.chat_events if shape == "openai" else wire.stream_events)(seed_base + i, deltas)
        expected_events += len(expected)
        if isinstance(res, BaseException):
            failed += 1
            lost += len(expected)
            errors.append(f"{type(res).__name__}: {res}")
            continue
        received_events += len(res.events)
        if res.status != 200:
            failed += 1
            lost += len(expected)
            errors.append(f"status {res.status}")
            continue
        if shape == "translated":
            # Another shape of events (and ids of the proxy's): the text and the ending must be the provider's.
            text, ended = wire.translated_text(res.events)
            expected_events += len(res.events) - len(expected)
            if text == wire.stream_text(seed_base + i, deltas) and ended:
                identical += 1
            else:
                mismatched += 1
        else:
            lo, re_, un = compare_stream(res.events, expected)
            lost, reordered, unexpected = lost + lo, reordered + re_, unexpected + un
            if bytes(res.body) == b"".join(expected):
                identical += 1
            else:
                mismatched += 1
        times = res.event_times
        if times:
            ttfe.append(times[0] - t_send)
            gaps.extend(b - a for a, b in zip(times, times[1:]))
    lost += (n - len(conns)) * (deltas + 5)
    return {"streams": n, "connected": len(conns), "connect_s": connect_s,
            "ttfe": summary(ttfe), "gap": summary(gaps),
            "events_expected": expected_events + (n - len(conns)) * (deltas + 5),
            "events_received": received_events, "lost": lost, "reordered": reordered,
            "unexpected": unexpected, "byte_identical_streams": identical,
            "mismatched_streams": mismatched, "failed_streams": failed,
            "errors": errors[:5], "error_count": len(errors)}


def run_command(cmd, notify):
    op = cmd["op"]
    timeout = cmd.get("timeout", 60.0)
    if op == "latency":
        cmd.setdefault("max_seconds", timeout)
        return op_latency(cmd)
    if op == "throughput":
        return asyncio.run(asyncio.wait_for(op_throughput(cmd), timeout))
    if op == "streams":
        return asyncio.run(asyncio.wait_for(op_streams(cmd, notify), timeout))
    if op == "ping":
        return {"pong": True, "pid": os.getpid()}
    raise ValueError(f"unknown op {op!r}")


def main():
    out = sys.stdout

    def notify(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            result = run_command(cmd, notify)
            notify({"result": result})
        except Exception as exc:  # report, keep serving: the orchestrator decides
            notify({"result": None, "error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
