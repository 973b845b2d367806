#!/usr/bin/env python3
"""What the usage record (usage.db) costs per request, measured in-process.

    python bench/usage_writer.py            # about 10 seconds
    python bench/usage_writer.py --n 20000

Three figures, each the median of --rounds runs:

1. the hand-over on the request thread: ``Entry.of(exchange)`` and
   ``UsageRecord.add(entry)`` (a copy of a few fields, the model read from
   the body's first bytes, ``put_nowait``): all a request ever pays, as CPU
   time of its thread;
2. the writer's work for one request when requests come one at a time
   (light use: one row, one transaction each): CPU time per request;
3. the same when they come faster than a transaction (busy: up to 500 rows
   per transaction): CPU time per request.

The writer runs in its own thread beside the request threads; 2 and 3 are
CPU it takes from the process (it releases the GIL inside SQLite), never
time a request waits.  Standard library only; the database is a temporary
file (WAL mode, synchronous=NORMAL, as in the proxy).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from claude_proxy.cancel import Cancel  # noqa: E402
from claude_proxy.config import load_config  # noqa: E402
from claude_proxy.forward import Exchange  # noqa: E402
from claude_proxy.relay import Usage  # noqa: E402
from claude_proxy.usage import Entry, UsageRecord  # noqa: E402

BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
                   "messages": [{"role": "user", "content": "x" * 200_000}]}).encode()


def exchange(config):
    """An exchange as a streamed, failed-over request leaves it."""
    ex = Exchange("POST", "/v1/messages?beta=true", "/v1/messages?beta=true", "fallback", BODY,
                  [("x-api-key", "t"), ("content-type", "application/json")], time.monotonic() - 2.5)
    ex.cancel = Cancel() if callable(Cancel) else None
    ex.first_byte = ex.started + 0.4
    ex.tried = ["a=529", "b=200"]
    usage = Usage()
    usage.update({"input_tokens": 1234, "output_tokens": 567, "cache_read_input_tokens": 40000,
                  "cache_creation_input_tokens": 800})
    ex.ended("answered", config.providers[1], 200, usage, None, True)
    return ex


def hand_over(record, config, n):
    ex = exchange(config)
    started = time.thread_time()  # this thread's CPU: not the writer's, nor waits for the GIL
    for _ in range(n):
        record.add(Entry.of(ex))
    return (time.thread_time() - started) / n


def writer_cpu(record, entries):
    """CPU seconds per entry for ``record._write`` given batches ``entries`` (a list of lists)."""
    started = time.thread_time()
    for batch in entries:
        record._write(batch)
    return (time.thread_time() - started) / sum(len(b) for b in entries)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="requests per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "config.json").write_text(json.dumps({"providers": [
            {"name": "a", "base_url": "http://127.0.0.1:9", "api_key_env": "A"},
            {"name": "b", "base_url": "http://127.0.0.1:9", "api_key_env": "B"}]}))
        config = load_config(folder / "config.json", environ={})
        handover, single, batched = [], [], []
        for number in range(args.rounds):
            # 1: the request thread's part, with the writer thread draining as in the proxy
            record = UsageRecord(folder / f"usage-{number}.db", config, queue_size=args.n + 1)
            handover.append(hand_over(record, config, args.n))
            record.close(60)
            assert record.recorded == args.n, record.stats()
            # 2 and 3: the writer's part, on this thread (the writer thread idles meanwhile)
            record = UsageRecord(folder / f"direct-{number}.db", config, retention_days=0)
            entry = Entry.of(exchange(config))
            single.append(writer_cpu(record, [[entry] for _ in range(args.n // 5)]))
            batched.append(writer_cpu(record, [[entry] * 500 for _ in range(args.n // 500)]))
            record.close()
    print(f"usage.db cost per request (median of {args.rounds} rounds of {args.n}; "
          f"Python {sys.version.split()[0]}, SQLite {__import__('sqlite3').sqlite_version})")
    print(f"  request thread, hand-over (Entry.of + add):       {statistics.median(handover) * 1e6:7.1f} us")
    print(f"  writer thread, one request per transaction (CPU): {statistics.median(single) * 1e6:7.1f} us")
    print(f"  writer thread, 500 per transaction (CPU):         {statistics.median(batched) * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
