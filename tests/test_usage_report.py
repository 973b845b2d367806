"""`proxy.py usage`: the figures per group, the three formats, the date filters
(rows with fixed times, a fixed clock), and the command itself."""

import csv
import datetime
import io
import json

import pytest

from claude_proxy import usage_report
from claude_proxy.config import load_config
from claude_proxy.errors import UsageError
from test_usage_record import entry, write_entries

KEYS = ["requests", "failovers", "failures", "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens", "cost_usd", "median_ttfb_ms"]
PRICES = {"minimax": {"MiniMax-M2*": {"input": 0.3, "output": 1.2, "cache_read": 0.03, "cache_write": 0.375}}}


def local(y, m, d, hour=12, minute=0):
    return datetime.datetime(y, m, d, hour, minute).timestamp()  # naive: this machine's local time


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": [
        {"name": "minimax", "base_url": "http://127.0.0.1:9", "api_key_env": "K1", "models": {"*": "MiniMax-M2"}},
        {"name": "moonshot", "base_url": "http://127.0.0.1:9", "api_key_env": "K2", "models": {"*": "kimi-k2"}}],
        "prices": PRICES}))
    return load_config(path, environ={})


@pytest.fixture
def db(tmp_path, config):
    """A known mix over three local days (Jan 14, 15, 16 2026)."""
    minimax, moonshot = config.providers
    write_entries(tmp_path / "usage.db", config, [
        # Jan 14: one plain answer from minimax
        entry(local(2026, 1, 14), minimax, tried=["minimax=200"], tokens=(1000, 100, 0, 0), ttfb=0.2),
        # Jan 15: minimax answers twice (one streamed, one cut), fails over once to moonshot, all fail once
        entry(local(2026, 1, 15, 9), minimax, tried=["minimax=200"], tokens=(2000, 200, 1_000_000, 10_000),
              ttfb=0.1, stream=True),
        entry(local(2026, 1, 15, 10), minimax, tried=["minimax=200"], tokens=(500, 5, 0, 0), ttfb=0.3,
              stream=True, failure="cut mid-stream (closed)"),
        entry(local(2026, 1, 15, 11), moonshot, tried=["minimax=529", "moonshot=200"], tokens=(300, 30, 0, 0),
              ttfb=0.9, model="claude-haiku-4-5"),
        entry(local(2026, 1, 15, 12), None, outcome="all failed", tried=["minimax=529", "moonshot=503"],
              tokens=(0, 0, 0, 0), ttfb=None, status=503),
        # Jan 16, just before midnight: a client that hung up mid-stream
        entry(local(2026, 1, 16, 23, 59), minimax, outcome="client cancelled", tried=["minimax=200"],
              tokens=(400, 1, 0, 0), ttfb=0.4, stream=True),
    ])
    return tmp_path / "usage.db"


def run(db, config, fmt="json", **kw):
    out = io.StringIO()
    kw.setdefault("since", "2026-01-01")
    usage_report.usage(db, config.prices, fmt=fmt, provider_order=config.provider_names, out=out, **kw)
    text = out.getvalue()
    return json.loads(text) if fmt == "json" else text


def pick(group, *names):
    return tuple(group[n] for n in names)


def test_by_provider_counts_what_each_provider_answered_and_passed_on(db, config):
    minimax, moonshot, none = run(db, config, by="provider")
    assert list(minimax) == ["provider", *KEYS]  # exactly these keys, in this order
    assert pick(minimax, "provider", "requests", "failovers", "failures") == ("minimax", 4, 2, 1)
    assert pick(minimax, "input_tokens", "output_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens") == (3900, 306, 1_000_000, 10_000)
    assert minimax["cost_usd"] == pytest.approx((3900 * 0.3 + 306 * 1.2 + 1_000_000 * 0.03 + 10_000 * 0.375) / 1e6,
                                                abs=1e-6)
    assert minimax["median_ttfb_ms"] == pytest.approx(250.0)  # of 200, 100, 300, 400
    assert pick(moonshot, "provider", "requests", "failovers", "failures", "input_tokens") == (
        "moonshot", 1, 0, 0, 300)
    assert moonshot["cost_usd"] is None  # no price for moonshot
    assert moonshot["median_ttfb_ms"] == 900.0
    assert pick(none, "provider", "requests", "failovers", "failures", "cost_usd", "median_ttfb_ms") == (
        None, 1, 0, 1, 0.0, None)


def test_by_day_counts_every_request_of_the_local_day(db, config):
    days = run(db, config, by="day")
    assert [pick(d, "day", "requests", "failovers", "failures", "input_tokens") for d in days] == [
        ("2026-01-14", 1, 0, 0, 1000),
        ("2026-01-15", 4, 2, 2, 2800),  # 2 passed on (minimax twice); cut and all failed
        ("2026-01-16", 1, 0, 0, 400),   # 23:59 local is still the 16th
    ]
    assert days[1]["cost_usd"] is None  # moonshot's tokens have no price
    assert days[0]["cost_usd"] == pytest.approx((1000 * 0.3 + 100 * 1.2) / 1e6)


def test_by_model_is_the_model_the_client_asked_for(db, config):
    models = run(db, config, by="model")
    assert [pick(m, "model", "requests", "failovers") for m in models] == [
        ("claude-haiku-4-5", 1, 1), ("claude-sonnet-4-5", 5, 1)]


def test_by_day_and_provider(db, config):
    rows = run(db, config, by="day,provider")
    assert [pick(r, "day", "provider", "requests", "failovers", "failures") for r in rows] == [
        ("2026-01-14", "minimax", 1, 0, 0),
        ("2026-01-15", "minimax", 2, 2, 1),
        ("2026-01-15", "moonshot", 1, 0, 0),
        ("2026-01-15", None, 1, 0, 1),
        ("2026-01-16", "minimax", 1, 0, 0),
    ]


def test_by_provider_and_model(db, config):
    rows = run(db, config, by="provider,model")
    assert [pick(r, "provider", "model", "requests", "failovers") for r in rows] == [
        ("minimax", "claude-haiku-4-5", 0, 1),
        ("minimax", "claude-sonnet-4-5", 4, 1),
        ("moonshot", "claude-haiku-4-5", 1, 0),
        (None, "claude-sonnet-4-5", 1, 0),
    ]


def test_the_table_has_the_figures_and_totals_at_the_bottom(db, config):
    text = run(db, config, fmt="table", by="provider", width=200)
    lines = text.splitlines()
    assert lines[0] == "claude-proxy usage since 2026-01-01 (local time), by provider"
    header = lines[3].split()
    assert header == ["provider", "requests", "failovers", "failures", "in", "out", "read", "write", "cost", "p50"]
    assert lines[4].split() == ["minimax", "4", "2", "1", "3,900", "306", "1,000,000", "10,000", "$0.04", "250",
                                "ms"]
    assert lines[5].split()[:2] == ["moonshot", "1"] and "?" in lines[5].split()
    assert lines[6].split()[:4] == ["(none)", "1", "0", "1"]
    assert set(lines[7]) <= {"-", " "}
    assert lines[8].split()[:8] == ["total", "6", "2", "2", "4,200", "336", "1,000,000", "10,000"]
    assert lines[8].split()[8] == "?"  # a total with an unpriced part is not a price
    assert '"?": tokens without a price' in text


@pytest.mark.parametrize("width", [20, 32, 40, 50, 60, 72, 80, 100, 120])
@pytest.mark.parametrize("by", ["provider", "day,provider", "provider,model"])
def test_no_line_is_wider_than_the_terminal(db, config, width, by):
    text = run(db, config, fmt="table", by=by, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "total" in text
    if width < 100:
        assert "--csv and --json have every column" in " ".join(text.split())


def test_the_terminal_width_is_the_default(db, config, monkeypatch):
    monkeypatch.setenv("COLUMNS", "45")
    text = run(db, config, fmt="table", by="provider")
    assert max(len(line) for line in text.splitlines()) <= 45


def test_without_prices_there_is_no_cost_column_and_json_says_null(db, config):
    config.prices = {}
    text = run(db, config, fmt="table", by="provider", width=200)
    assert "cost" not in text.splitlines()[3] and "no \"prices\" in the config" in text
    assert {g["cost_usd"] for g in run(db, config, by="provider") if g["input_tokens"]} == {None}


def test_csv_has_the_same_columns_as_json_with_a_header(db, config):
    as_json = run(db, config, by="day,provider")
    rows = list(csv.reader(io.StringIO(run(db, config, fmt="csv", by="day,provider"))))
    assert rows[0] == list(as_json[0])
    assert len(rows) == 1 + len(as_json)
    for row, group in zip(rows[1:], as_json):
        assert row == ["" if v is None else str(v) for v in group.values()]


# --- dates ------------------------------------------------------------------------------


def test_since_and_until_name_local_days_and_until_includes_its_day(db, config):
    def days(**kw):
        return [d["day"] for d in run(db, config, by="day", **kw)]

    assert days(since="2026-01-15") == ["2026-01-15", "2026-01-16"]
    assert days(since="2026-01-14", until="2026-01-15") == ["2026-01-14", "2026-01-15"]
    assert days(since="2026-01-16", until="2026-01-16") == ["2026-01-16"]
    assert days(since="2026-01-17") == []


def test_today_yesterday_and_n_days_count_back_from_a_fixed_clock(db, config):
    now = local(2026, 1, 16, 8)

    def days(since, until=None):
        return [d["day"] for d in run(db, config, by="day", since=since, until=until, now=now)]

    assert days("today") == ["2026-01-16"]
    assert days("yesterday", "yesterday") == ["2026-01-15"]
    assert days("2d") == ["2026-01-15", "2026-01-16"]
    assert days("7d") == ["2026-01-14", "2026-01-15", "2026-01-16"]
    assert days("30d", "yesterday") == ["2026-01-14", "2026-01-15"]


@pytest.mark.parametrize("since, until, wanted", [
    ("tomorrow", None, "--since 'tomorrow': use today, yesterday, Nd"),
    ("0d", None, "--since '0d'"),
    ("2026-02-30", None, "--since '2026-02-30'"),
    ("2026-01-15", "2026-01-14", "--until 2026-01-14 is before --since 2026-01-15"),
])
def test_bad_dates_are_one_clear_error(db, config, since, until, wanted):
    with pytest.raises(UsageError) as caught:
        run(db, config, since=since, until=until)
    assert wanted in str(caught.value)


def test_no_database_yet_is_an_empty_report(tmp_path, config):
    assert run(tmp_path / "usage.db", config) == []
    assert "no requests recorded" in " ".join(run(tmp_path / "usage.db", config, fmt="table").split())


def test_today_by_provider_for_status(db, config):
    today = usage_report.today_by_provider(db, config.prices, config.provider_names, now=local(2026, 1, 15, 18))
    assert [pick(r, "provider", "requests", "failovers", "failures") for r in today] == [
        ("minimax", 2, 2, 1), ("moonshot", 1, 0, 0), (None, 1, 0, 1)]
