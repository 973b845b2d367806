"""The usage record (usage.db): a row per request, written off the request path,
and a database that can be locked, read-only or garbage without a request noticing."""

import http.client
import json
import os
import socket
import sqlite3
import threading
import time
from contextlib import closing

import pytest

from claude_proxy import usage, usage_report
from claude_proxy.usage import MIGRATIONS, SCHEMA_VERSION, UsageRecord
from fakes import CutBody, Reply, Stream, error_json, eventually, message_events

STREAM_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
               "messages": [{"role": "user", "content": "hi"}]}


def rows(running, query="SELECT * FROM requests ORDER BY id", params=()):
    conn = sqlite3.connect(running.paths.usage)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(query, params)]
    finally:
        conn.close()


def attempts(running, request_id):
    return [(a["provider"], a["outcome"], a["passed_on"]) for a in rows(
        running, "SELECT * FROM attempts WHERE request_id = ? ORDER BY seq", (request_id,))]


def recorded(running, count):
    assert eventually(lambda: running.server.usage.recorded >= count), running.server.usage.stats()


def overloaded(status=529):
    return Reply(status, error_json(status, "overloaded_error", "busy"))


def open_stream(running, body=STREAM_BODY):
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    conn.request("POST", "/v1/messages", body=json.dumps(body),
                 headers={**running.auth(), "content-type": "application/json"})
    return conn, conn.getresponse()


def read_events(response, count):
    data = b""
    while data.count(b"\n\n") < count:
        data += response.read1(65536)
    return data


# --- what a row holds -----------------------------------------------------------------


def test_a_known_mix_of_requests_leaves_one_true_row_each(providers, proxy):
    first, second = providers(), providers()
    running = proxy(first, second, cooldown_minutes=0, provider_settings={"p2": {"models": {"*": "big-model"}}})

    first.queue(Reply(200))                                            # 1 plain
    assert running.post()[0] == 200
    first.queue(Stream(message_events(input_tokens=25, output_tokens=9)))  # 2 streamed
    conn, response = open_stream(running)
    response.read()
    conn.close()
    first.queue(overloaded(529))                                       # 3 failed over to p2
    second.queue(Reply(200))
    assert running.post()[0] == 200
    first.queue(overloaded(529))                                       # 4 all failed
    second.queue(overloaded(503))
    assert running.post()[0] == 503
    first.queue(Stream(message_events(), stall_after=3))               # 5 client cancelled mid-stream
    conn, response = open_stream(running)
    read_events(response, 3)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert first.client_hung_up.wait(5)
    first.queue(Stream(message_events(), cut_after=4))                 # 6 cut by the provider
    conn, response = open_stream(running)
    assert b"event: error" in response.read()
    conn.close()
    recorded(running, 6)

    plain, streamed, failed_over, all_failed, cancelled, cut = rows(running)
    assert {k: plain[k] for k in ("mode", "strategy", "pinned", "method", "path", "provider", "model",
                                  "model_sent", "status", "outcome", "error", "stream", "failovers")} == {
        "mode": "fallback", "strategy": "fallback", "pinned": None, "method": "POST", "path": "/v1/messages",
        "provider": "p1", "model": "claude-sonnet-4-5", "model_sent": "claude-sonnet-4-5", "status": 200,
        "outcome": "ok", "error": None, "stream": 0, "failovers": 0}
    assert tokens(plain) == (12, 7, 3, 0)
    assert 0 < plain["ttfb_ms"] <= plain["total_ms"] < 5000
    assert abs(plain["time"] - time.time()) < 60
    assert attempts(running, plain["id"]) == [("p1", "200", 0)]

    # message_start says output 1; message_delta's cumulative 9 wins
    assert (streamed["outcome"], streamed["stream"], tokens(streamed)) == ("ok", 1, (25, 9, 5, 2))

    assert (failed_over["provider"], failed_over["outcome"], failed_over["failovers"]) == ("p2", "failed over", 1)
    assert failed_over["model_sent"] == "big-model"  # p2's model map
    assert attempts(running, failed_over["id"]) == [("p1", "529", 1), ("p2", "200", 0)]

    assert (all_failed["provider"], all_failed["status"], all_failed["outcome"]) == (None, 503, "all failed")
    assert all_failed["ttfb_ms"] is None and tokens(all_failed) == (0, 0, 0, 0)
    assert attempts(running, all_failed["id"]) == [("p1", "529", 1), ("p2", "503", 0)]

    assert (cancelled["provider"], cancelled["outcome"], cancelled["stream"]) == ("p1", "client cancelled", 1)
    assert tokens(cancelled)[0] == 25  # announced by message_start: spent

    assert (cut["provider"], cut["outcome"], cut["stream"]) == ("p1", "cut", 1)
    assert cut["error"].startswith("cut mid-stream")
    assert tokens(cut)[0] == 25

    # and the totals `proxy.py usage --by provider` makes of them
    groups, total = usage_report.report(running.paths.usage, {}, ("provider",), 0, None, ["p1", "p2"])
    assert [(g.key, g.requests, g.failovers, g.failures) for g in groups] == [
        (("p1",), 4, 2, 1), (("p2",), 1, 0, 0), ((None,), 1, 0, 1)]
    assert (total.requests, total.failovers, total.failures) == (6, 2, 2)
    assert total.tokens == [sum(tokens(r)[i] for r in rows(running)) for i in range(4)]
    assert total.tokens[0] == 12 + 25 + 12 + 25 + 25


def tokens(row):
    return (row["input_tokens"], row["output_tokens"], row["cache_read_input_tokens"],
            row["cache_creation_input_tokens"])


def test_a_request_no_provider_can_take_is_recorded(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, names=["alpha"], environ={})  # no key: no usable provider
    assert running.post()[0] == 503
    recorded(running, 1)
    (row,) = rows(running)
    assert (row["outcome"], row["status"], row["provider"], row["failovers"]) == ("no provider", 503, None, 0)


def test_a_pinned_request_and_a_cut_json_body(providers, proxy):
    provider = providers(CutBody())
    running = proxy(provider, names=["alpha"])
    provider.queue(Reply(200))
    assert running.post(prefix="/provider/alpha")[0] == 200
    assert running.post(prefix="/provider/alpha")[0] == 502  # cut before the commit point: a failure
    recorded(running, 2)
    answered, cut = rows(running)
    assert (answered["mode"], answered["pinned"], answered["strategy"], answered["provider"]) == (
        "pinned", "alpha", None, "alpha")
    assert (cut["outcome"], cut["status"], cut["provider"], cut["failovers"]) == ("all failed", 502, None, 0)
    assert attempts(running, cut["id"]) == [("alpha", "protocol", 0)] or attempts(running, cut["id"])[0][0] == "alpha"


def test_no_body_key_or_token_is_ever_stored(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "SECRET-PROMPT"}]}
    assert running.post(body)[0] == 200
    recorded(running, 1)
    running.stop()
    data = b"".join(p.read_bytes() for p in running.paths.dir.glob("usage.db*"))
    assert b"SECRET-PROMPT" not in data and b"Hello from the fake" not in data
    assert running.token.encode() not in data and b"secret-key-p1" not in data


def test_usage_record_false_writes_nothing(providers, proxy):
    running = proxy(providers(Reply(200)), usage_record=False)
    assert running.post()[0] == 200
    running.stop()
    assert not running.paths.usage.exists()


# --- the database going wrong while the daemon runs ---------------------------------------


def usage_lines(running, text):
    return [line for line in running.log_text().splitlines() if "usage record" in line and text in line]


def test_a_read_only_database_is_logged_once_and_requests_go_on(providers, proxy):
    running = proxy(providers(Reply(200)))
    assert running.post()[0] == 200
    recorded(running, 1)
    running.paths.usage.chmod(0o444)
    try:
        for _ in range(3):
            assert running.post()[0] == 200
        assert eventually(lambda: running.server.usage.unwritten == 3)
        assert len(usage_lines(running, "read-only")) == 1
        assert "chmod u+w" in usage_lines(running, "read-only")[0]
        assert "read-only" in running.server.usage.stats()["problem"]
    finally:
        running.paths.usage.chmod(0o644)
    assert running.post()[0] == 200
    recorded(running, 2)
    assert running.server.usage.stats()["problem"] is None
    assert len(usage_lines(running, "written again")) == 1
    assert len(rows(running)) == 2


def test_a_database_filled_with_garbage_is_moved_aside_and_a_new_one_started(providers, proxy):
    running = proxy(providers(Reply(200)))
    assert running.post()[0] == 200
    recorded(running, 1)
    running.paths.usage.write_bytes(b"this is not a database\n" * 500)  # in place, while it is open

    for _ in range(2):
        assert running.post()[0] == 200
    recorded(running, 3)

    aside = [p for p in running.paths.dir.iterdir() if p.name.startswith("usage.db.corrupt-")]
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))], aside
    assert len(usage_lines(running, "moved it aside")) == 1
    assert len(rows(running)) == 2  # the new file has what came after
    assert "Traceback" not in running.log_text()


def test_a_database_that_is_garbage_at_start_is_moved_aside(providers, proxy, tmp_path):
    (tmp_path / "usage.db").write_bytes(b"\x00garbage" * 100)
    running = proxy(providers(Reply(200)))
    assert running.post()[0] == 200
    recorded(running, 1)
    assert len(rows(running)) == 1
    assert len(usage_lines(running, "moved it aside")) == 1


def test_a_locked_database_waits_and_a_full_queue_drops_without_slowing_requests(providers, proxy, monkeypatch):
    monkeypatch.setattr(usage, "BUSY_TIMEOUT", 0.05)
    monkeypatch.setattr(usage, "LOCKED_RETRY", 0.05)
    running = proxy(providers(Reply(200)))
    assert running.post()[0] == 200
    recorded(running, 1)
    running.server.usage.close()
    running.server.usage = UsageRecord(running.paths.usage, running.config, queue_size=2)

    holder = sqlite3.connect(running.paths.usage, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
    try:
        started = time.monotonic()
        for _ in range(8):
            assert running.post()[0] == 200
        assert time.monotonic() - started < 5  # each request is as quick as ever
        assert eventually(lambda: running.server.usage.dropped >= 1 and running.server.usage.problem)
        dropped = running.server.usage.dropped
        assert dropped <= 8 - 1 - 2  # one in the writer's hands, two queued
        status = json.loads(_get(running, "/status"))["usage_record"]
        assert status["dropped"] == dropped and "locked" in status["problem"]
        assert len(usage_lines(running, "locked")) == 1
        assert len(usage_lines(running, "dropped")) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    recorded(running, 8 - dropped)
    assert len(rows(running)) == 1 + 8 - dropped


def _get(running, path):
    from fakes import request

    status, _, body = request(running.url, "GET", path, headers=running.auth())
    assert status == 200
    return body


# --- schema and retention -------------------------------------------------------------------


def entry(when, provider=None, outcome="answered", model="claude-sonnet-4-5", tried=(), tokens=(1, 2, 3, 4),
          ttfb=0.1, status=200, stream=False, failure=None):
    body = json.dumps({"model": model, "messages": []}).encode() if model else b""
    return usage.Entry(time=when, method="POST", path="/v1/messages", mode="fallback", session="fallback",
                       tried=list(tried),
                       provider=provider, status=status, outcome=outcome, failure=failure, stream=stream,
                       ttfb=ttfb, total=(ttfb or 0) + 0.5, tokens=tokens, body=body)


def write_entries(path, config, entries, retention_days=0, **kw):
    record = UsageRecord(path, config, retention_days=retention_days, **kw)
    for item in entries:
        record.add(item)
    record.close()
    assert record.recorded == len(entries), record.stats()
    return record


@pytest.fixture
def config(tmp_path):
    from claude_proxy.config import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": [
        {"name": "p1", "base_url": "http://127.0.0.1:9", "api_key_env": "K1"},
        {"name": "p2", "base_url": "http://127.0.0.1:9", "api_key_env": "K2", "models": {"*": "m2"}}]}))
    return load_config(path, environ={})


def test_a_new_database_is_at_the_current_schema_in_wal_mode(tmp_path, config):
    write_entries(tmp_path / "usage.db", config, [entry(1_700_000_000.0, config.providers[0])])
    with closing(sqlite3.connect(tmp_path / "usage.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    if os.name == "posix":
        assert (tmp_path / "usage.db").stat().st_mode & 0o077 == 0


def test_a_database_from_a_newer_version_is_left_alone(tmp_path, config, caplog):
    path = tmp_path / "usage.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    record = UsageRecord(path, config)
    record.add(entry(1_700_000_000.0, config.providers[0]))
    record.add(entry(1_700_000_001.0, config.providers[0]))
    record.close()
    assert (record.recorded, record.unwritten) == (0, 2)
    assert "newer claude-proxy" in record.problem
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_migrations_bring_an_older_database_up_to_date(tmp_path, config, monkeypatch):
    path = tmp_path / "usage.db"
    write_entries(path, config, [entry(1_700_000_000.0, config.providers[0])])
    later = MIGRATIONS + [("ALTER TABLE requests ADD COLUMN note TEXT",)]
    monkeypatch.setattr(usage, "MIGRATIONS", later)
    monkeypatch.setattr(usage, "SCHEMA_VERSION", len(later))
    write_entries(path, config, [entry(1_700_000_100.0, config.providers[0])])
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(later)
        assert conn.execute("SELECT count(*), count(note) FROM requests").fetchone() == (2, 0)


def test_each_request_of_a_batch_keeps_its_own_attempts(tmp_path, config):
    """Rows written together (one transaction, ids given by the writer) are linked right,
    and a later batch, after pruning, goes on from the last id."""
    now = 1_800_000_000.0
    p1, p2 = config.providers
    path = tmp_path / "usage.db"
    write_entries(path, config, [entry(now - 10 * 86400, p2, tried=["p1=529", "p2=200"]),
                                 entry(now - 5, p1, tried=["p1=200"]),
                                 entry(now - 4, p2, tried=["p1=timeout", "p2=200"])])
    record = UsageRecord(path, config, retention_days=5, clock=lambda: now)
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            assert record.prune(conn) == 1
    finally:
        record.close()
    write_entries(path, config, [entry(now - 3, p1, tried=["p1=200"]),
                                 entry(now - 2, p2, tried=["p1=429", "p2=200"])])
    with closing(sqlite3.connect(path)) as conn:
        linked = {time: [(seq, provider, outcome, passed_on) for _, seq, provider, _, outcome, passed_on in
                         conn.execute("SELECT * FROM attempts WHERE request_id = ? ORDER BY seq", (rid,))]
                  for rid, time in conn.execute("SELECT id, time FROM requests ORDER BY id")}
    assert linked == {
        now - 5: [(0, "p1", "200", 0)],
        now - 4: [(0, "p1", "timeout", 1), (1, "p2", "200", 0)],
        now - 3: [(0, "p1", "200", 0)],
        now - 2: [(0, "p1", "429", 1), (1, "p2", "200", 0)],
    }


def test_a_batch_larger_than_one_statement_is_written_whole(tmp_path, config):
    p1, p2 = config.providers
    path = tmp_path / "usage.db"
    count = 3 * (usage.MAX_PARAMETERS // 6) + 1  # attempts: 6 values a row, over three statements
    write_entries(path, config, [entry(1_800_000_000.0 + i, p2, tried=[f"p1={500 + i}", "p2=200"])
                                 for i in range(count)])
    with closing(sqlite3.connect(path)) as conn:
        got = conn.execute("SELECT r.time - 1800000000, a.outcome FROM requests r JOIN attempts a "
                           "ON a.request_id = r.id AND a.seq = 0 ORDER BY r.id").fetchall()
        assert conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 2 * count
    assert got == [(float(i), str(500 + i)) for i in range(count)]


def test_a_row_at_the_highest_id_does_not_stop_the_record(tmp_path, config):
    """A hand-made row at the top of SQLite's id range: new rows take free ids, as SQLite
    itself would give them, instead of failing every batch from then on."""
    p1, p2 = config.providers
    path = tmp_path / "usage.db"
    write_entries(path, config, [entry(1_800_000_000.0, p1, tried=["p1=200"])])
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE requests SET id = ?", (usage.MAX_ROWID,))
        conn.execute("UPDATE attempts SET request_id = ?", (usage.MAX_ROWID,))
        conn.commit()
    write_entries(path, config, [entry(1_800_000_001.0 + i, p2, tried=[f"p1={500 + i}", "p2=200"])
                                 for i in range(3)])
    with closing(sqlite3.connect(path)) as conn:
        got = conn.execute("SELECT r.time - 1800000000, a.outcome FROM requests r JOIN attempts a "
                           "ON a.request_id = r.id AND a.seq = 0 ORDER BY r.time").fetchall()
    assert got == [(0.0, "200"), (1.0, "500"), (2.0, "501"), (3.0, "502")]


def test_retention_prunes_old_rows_and_their_attempts(tmp_path, config):
    now = 1_800_000_000.0
    p1, p2 = config.providers
    path = tmp_path / "usage.db"
    write_entries(path, config, [
        entry(now - 10 * 86400, p2, tried=["p1=529", "p2=200"]),
        entry(now - 3 * 86400, p1, tried=["p1=200"]),
        entry(now - 3600, p1, tried=["p1=200"]),
    ])
    record = UsageRecord(path, config, retention_days=5, clock=lambda: now)
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            assert record.prune(conn) == 1
            assert [r[0] for r in conn.execute("SELECT time FROM requests ORDER BY time")] == [
                now - 3 * 86400, now - 3600]
            assert conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 2
    finally:
        record.close()


def test_the_daemon_prunes_in_the_background(providers, proxy, tmp_path):
    from claude_proxy.config import load_config

    now = time.time()
    config_path = tmp_path / "seed.json"
    config_path.write_text(json.dumps({"providers": [{"name": "p1", "base_url": "http://127.0.0.1:9",
                                                      "api_key_env": "K1"}]}))
    seed = load_config(config_path, environ={})
    write_entries(tmp_path / "usage.db", seed, [entry(now - 40 * 86400, seed.providers[0], tried=["p1=200"]),
                                                entry(now - 3600, seed.providers[0], tried=["p1=200"])])
    running = proxy(providers(Reply(200)), usage_retention_days=30)
    assert eventually(lambda: len(rows(running)) == 1)
    assert rows(running)[0]["time"] == pytest.approx(now - 3600, abs=5)


def test_the_model_is_read_wherever_it_is_in_the_body():
    assert usage.requested_model(b'{"model": "claude-x", "messages": []}') == "claude-x"
    assert usage.requested_model(b'{"messages": [{"model": "inner"}], "model": "outer"}') == "outer"
    assert usage.requested_model(b'{"model": "a\\u00e9"}') == "a\u00e9"
    assert usage.requested_model(b"not json") is None
    assert usage.requested_model(b"") is None


def test_add_never_raises_or_waits_even_when_the_writer_is_gone(tmp_path, config):
    record = UsageRecord(tmp_path / "usage.db", config, queue_size=1)
    record.close()
    started = time.monotonic()
    for _ in range(5):
        record.add(entry(1.0, config.providers[0]))
    assert time.monotonic() - started < 0.5
    assert record.dropped == 4


def test_concurrent_requests_are_all_recorded(providers, proxy):
    running = proxy(providers(Reply(200)))
    results = []

    def work():
        for _ in range(10):
            results.append(running.post()[0])

    threads = [threading.Thread(target=work) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 50
    recorded(running, 50)
    assert len(rows(running)) == 50


def test_model_fallback_inside_a_provider_is_not_a_failover(providers, proxy):
    first, second = providers(), providers(Reply(200))
    running = proxy(first, second, cooldown_minutes=0,
                    provider_settings={"p1": {"models": {"*": ["model-a", "model-b"]}}})
    first.queue(overloaded(529), Reply(200))  # model-a is busy, model-b answers
    assert running.post()[0] == 200
    first.queue(overloaded(529), overloaded(529))  # both busy: on to p2
    assert running.post()[0] == 200
    recorded(running, 2)
    same, moved = rows(running)
    assert (same["provider"], same["model_sent"], same["outcome"], same["failovers"]) == ("p1", "model-b", "ok", 0)
    assert [(a["provider"], a["model"], a["outcome"], a["passed_on"]) for a in rows(
        running, "SELECT * FROM attempts WHERE request_id = ? ORDER BY seq", (same["id"],))] == [
        ("p1", "model-a", "529", 0), ("p1", "model-b", "200", 0)]
    assert (moved["provider"], moved["outcome"], moved["failovers"]) == ("p2", "failed over", 1)
    assert attempts(running, moved["id"]) == [("p1", "529", 0), ("p1", "529", 1), ("p2", "200", 0)]


def test_the_model_is_recorded_when_the_body_names_it_last(providers, proxy):
    running = proxy(providers(Reply(200)))
    body = b'{"max_tokens": 5, "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}], "model": "late"}'
    assert running.post(body)[0] == 200
    recorded(running, 1)
    assert rows(running)[0]["model"] == "late"


def test_a_session_with_its_own_strategy_is_recorded_with_it(providers, proxy):
    running = proxy(providers(Reply(200)), providers(Reply(200)))
    assert running.post(prefix="/strategy/round_robin")[0] == 200
    assert running.post()[0] == 200
    recorded(running, 2)
    own, default = rows(running)
    assert (own["mode"], own["strategy"], own["pinned"]) == ("strategy", "round_robin", None)
    assert (default["mode"], default["strategy"], default["pinned"]) == ("fallback", "fallback", None)
