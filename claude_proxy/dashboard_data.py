"""What the dashboard's pictures need from ``usage.db`` (``GET /dashboard/data``).

Read as ``proxy.py usage`` reads it (:mod:`usage_report`): a read-only
connection, opened for one answer and closed, so the writer is never in its
way.  Days are local days; times are epoch seconds, when the request began.

The answer (JSON):

- ``usage_record``: false when the record is off; then every list is empty
  and the page draws tokens since the proxy started, from ``/status``;
- ``now``: the daemon's clock when it was read;
- ``days``: the local days of the tokens picture, oldest first, today last;
- ``tokens``: per day and provider that answered: input, output, cache read
  and cache write tokens, and requests;
- ``ttft``: the answers of the last ``TTFT_WINDOW`` seconds: when, which
  provider, its time to first byte in ms (at most ``MAX_POINTS``, the newest);
- ``failovers``: the last ``FAILOVER_WINDOW`` seconds' failovers: when, the
  provider that failed and passed the request on, what it answered, and the
  provider that answered in the end (at most ``MAX_POINTS``, the newest);
- ``keys``: per provider, its keys masked (``config.mask_key``), never a key;
- ``problem``: why the database could not be read, or None.
"""

import datetime
import sqlite3
import time

from .config import mask_key
from .usage import connect_for_reading
from .usage_report import time_range

TTFT_WINDOW = 3600.0          # seconds of times to first token drawn
FAILOVER_WINDOW = 24 * 3600.0  # seconds of failovers drawn
MAX_POINTS = 5000              # rows of each kind sent at most (the newest)


def figures(usage_path, days, providers=(), now=None):
    """The data endpoint's answer for the last ``days`` local days (today included).

    ``usage_path`` is the usage record's database, None when the record is off;
    ``providers`` the configured ones (for their masked keys)."""
    now = time.time() if now is None else now
    start, _ = time_range(f"{days}d", None, now)
    first = datetime.date.fromtimestamp(start)
    answer = {
        "usage_record": usage_path is not None, "now": now,
        "days": [(first + datetime.timedelta(days=n)).isoformat() for n in range(days)],
        "tokens": [], "ttft": [], "failovers": [],
        "ttft_window_seconds": TTFT_WINDOW, "failover_window_seconds": FAILOVER_WINDOW,
        "keys": {p.name: [mask_key(key) for key in p.api_keys] for p in providers},
        "problem": None,
    }
    if usage_path is None or not usage_path.exists():
        return answer
    try:
        conn = connect_for_reading(usage_path)
    except sqlite3.Error as exc:  # unreadable (permissions, not a database): the page says why
        answer["problem"] = f"cannot read {usage_path.name}: {exc}"
        return answer
    try:
        answer["tokens"] = [
            {"day": day, "provider": provider, "input": inp, "output": out, "cache_read": read,
             "cache_creation": write, "requests": count}
            for day, provider, inp, out, read, write, count in conn.execute(
                "SELECT date(time, 'unixepoch', 'localtime'), provider, sum(input_tokens), sum(output_tokens), "
                "sum(cache_read_input_tokens), sum(cache_creation_input_tokens), count(*) FROM requests "
                "WHERE time >= ? AND provider IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2", (start,))]
        answer["ttft"] = [
            {"time": at, "provider": provider, "ttft_ms": ttfb}
            for at, provider, ttfb in reversed(conn.execute(
                "SELECT time, provider, ttfb_ms FROM requests WHERE time >= ? AND ttfb_ms IS NOT NULL "
                "AND provider IS NOT NULL ORDER BY time DESC LIMIT ?", (now - TTFT_WINDOW, MAX_POINTS)).fetchall())]
        answer["failovers"] = [
            {"time": at, "provider": provider, "outcome": outcome, "answered_by": answered_by}
            for at, provider, outcome, answered_by in reversed(conn.execute(
                "SELECT r.time, a.provider, a.outcome, r.provider FROM requests r "
                "JOIN attempts a ON a.request_id = r.id WHERE r.time >= ? AND a.passed_on = 1 "
                "ORDER BY r.time DESC, a.seq DESC LIMIT ?", (now - FAILOVER_WINDOW, MAX_POINTS)).fetchall())]
    except sqlite3.Error as exc:  # locked for longer than the busy timeout, or not our database
        answer["tokens"], answer["ttft"], answer["failovers"] = [], [], []
        answer["problem"] = f"cannot read {usage_path.name}: {exc}"
    finally:
        conn.close()
    return answer
