"""`proxy.py usage` and `proxy.py status` run as real processes: the record
survives a restart, reports work with the daemon stopped, and status shows
today's figures per provider."""

import datetime
import json
import sqlite3

from daemon_support import PROXY, assert_one_line_error, fake, url_of, workspace  # noqa: F401 (fixtures)
from fakes import Reply, error_json, request

PRICES = {"p1": {"*": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}}


def post(workspace, config, prefix=""):
    record = workspace.record(config)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    return request(url_of(record) + prefix, "POST", "/v1/messages", body,
                   {"x-api-key": workspace.token(config), "content-type": "application/json"})[0]


def test_the_record_survives_a_restart_and_is_read_with_the_daemon_stopped(workspace, fake):
    first, second = fake(), fake()
    config = workspace.config([("p1", first.url), ("p2", second.url)], prices=PRICES, cooldown_minutes=0)
    workspace.keys(KEY_P1="secret-p1", KEY_P2="secret-p2")

    assert workspace.run("start", config=config).returncode == 0
    assert post(workspace, config) == 200
    first.queue(Reply(529, error_json(529, "overloaded_error", "busy")))
    assert post(workspace, config) == 200  # failed over to p2
    assert workspace.run("stop", config=config).returncode == 0

    assert workspace.run("start", config=config).returncode == 0
    assert post(workspace, config) == 200
    status = workspace.run("status", config=config)
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    today = lines.index("  today, per provider (local time; `proxy.py usage` for more):")
    # 2 answered by p1, each 12 in, 7 out, 3 cache read (the fake's answer): 0.000201 $ -> $0.00
    assert lines[today + 1].split() == ["p1", "2", "requests,", "1", "failover,", "tokens", "in", "24", "out",
                                        "14", "cache", "read", "6", "write", "0,", "cost", "$0.00"]
    assert lines[today + 2].split()[:3] == ["p2", "1", "request,"] and lines[today + 2].endswith("cost ?")
    as_json = json.loads(workspace.run("status", "--json", config=config).stdout)
    assert [(r["provider"], r["requests"], r["failovers"]) for r in as_json["today"]] == [("p1", 2, 1), ("p2", 1, 0)]
    assert as_json["today"][0]["cost_usd"] == round((24 * 3 + 14 * 15 + 6 * 0.3) / 1e6, 6)
    assert as_json["usage_record"]["dropped"] == 0 and as_json["usage_record"]["problem"] is None
    assert workspace.run("stop", config=config).returncode == 0

    report = workspace.run("usage", "--by", "day,provider", "--json", config=config)
    assert report.returncode == 0, report.stderr
    day = datetime.date.today().isoformat()
    assert [(g["day"], g["provider"], g["requests"], g["failovers"], g["input_tokens"])
            for g in json.loads(report.stdout)] == [(day, "p1", 2, 1, 24), (day, "p2", 1, 0, 12)]
    table = workspace.run("usage", "--by", "day,provider", config=config, env={"COLUMNS": "100"})
    assert table.returncode == 0
    assert max(len(line) for line in table.stdout.splitlines()) <= 100
    assert table.stdout.splitlines()[-1].split()[:2] == ["total", "3"] or any(
        line.split()[:2] == ["total", "3"] for line in table.stdout.splitlines())
    csv_text = workspace.run("usage", "--csv", config=config).stdout.splitlines()
    assert csv_text[0].startswith("provider,requests,failovers,failures,input_tokens")
    assert len(csv_text) == 3


def test_days_are_the_users_local_days(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    state = workspace.state(config)
    when = datetime.datetime(2026, 1, 15, 20, 0, tzinfo=datetime.timezone.utc).timestamp()
    conn = sqlite3.connect(state.dir / "usage.db")
    from claude_proxy.usage import MIGRATIONS
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO requests (time, mode, method, path, provider, outcome, stream, failovers, total_ms, "
                 "input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens) "
                 "VALUES (?, 'fallback', 'POST', '/v1/messages', 'p1', 'ok', 0, 0, 5, 1, 1, 0, 0)", (when,))
    conn.commit()
    conn.close()

    def days(tz, *args):
        result = workspace.run("usage", "--by", "day", "--json", "--since", "2026-01-01", *args, config=config,
                               env={"TZ": tz})
        assert result.returncode == 0, result.stderr
        return [g["day"] for g in json.loads(result.stdout)]

    assert days("UTC0") == ["2026-01-15"]
    assert days("JST-9") == ["2026-01-16"]  # 20:00 UTC is 05:00 the next morning in Tokyo
    assert days("JST-9", "--until", "2026-01-15") == []
    assert days("EST5", "--since", "2026-01-15", "--until", "2026-01-15") == ["2026-01-15"]


def test_usage_errors_are_one_line(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    assert_one_line_error(workspace.run("usage", "--since", "last week", config=config))
    (workspace.state(config).dir / "usage.db").write_bytes(b"garbage" * 1000)
    assert_one_line_error(workspace.run("usage", config=config))
