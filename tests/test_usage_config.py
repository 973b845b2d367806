"""The config keys of the usage record, prices and the request log: defaults, and
every mistake as one line naming the file and the field."""

import pytest

from claude_proxy.config import Price, load_config, price_of
from test_config import only_problem, provider, write_config


def test_the_defaults(tmp_path):
    config = load_config(write_config(tmp_path, {"providers": [provider()]}), environ={})
    assert config.usage_record is True
    assert config.usage_retention_days == 90
    assert config.prices == {}
    assert config.request_log is None


def test_prices_are_read_per_provider_and_glob_in_order(tmp_path):
    config = load_config(write_config(tmp_path, {"providers": [provider("minimax")], "prices": {"MiniMax": {
        "MiniMax-M2*": {"input": 0.3, "output": 1.2, "cache_read": 0.03, "cache_write": 0.375},
        "*": {"input": 1, "output": 2}, "_comment": "USD per million tokens"}}}), environ={})
    assert price_of(config.prices, "minimax", "minimax-m2-preview") == Price(0.3, 1.2, 0.03, 0.375)
    assert price_of(config.prices, "minimax", "other") == Price(1.0, 2.0, None, None)
    assert price_of(config.prices, "moonshot", "other") is None
    assert config.warnings == []


def test_prices_for_a_provider_not_configured_are_a_warning(tmp_path):
    config = load_config(write_config(tmp_path, {"providers": [provider()], "prices": {
        "gone": {"*": {"input": 1, "output": 2}}}}), environ={})
    assert any('"gone", which is not a configured provider' in w for w in config.warnings)


@pytest.mark.parametrize("prices, wanted", [
    ([], '"prices" must map provider names'),
    ({"p1": 3}, '"prices": "p1": must map model globs to prices'),
    ({"p1": {"*": 3}}, '"prices": "p1": "*" must be {"input"'),
    ({"p1": {"*": {"input": 1}}}, '"prices": "p1": "*": missing "output"'),
    ({"p1": {"*": {"input": 1, "output": -2}}}, '"output" must be a number of US dollars per million tokens'),
    ({"p1": {"*": {"input": 1, "output": True}}}, '"output" must be a number'),
    ({"p1": {"*": {"input": 1, "output": 2, "cache": 1}}}, 'unknown key "cache"'),
])
def test_price_mistakes_are_one_line_naming_the_field(tmp_path, prices, wanted):
    problem = only_problem(write_config(tmp_path, {"providers": [provider()], "prices": prices}))
    assert wanted in problem and str(tmp_path / "config.json") in problem


@pytest.mark.parametrize("settings, wanted", [
    ({"usage_retention_days": -1}, '"usage_retention_days" must be a number of at least 0'),
    ({"usage_record": "yes"}, '"usage_record" must be true or false'),
    ({"request_log": "requests.jsonl"}, '"request_log" must be an object like'),
    ({"request_log": {"path": ""}}, '"request_log": "path" must be a file path'),
    ({"request_log": {"bodies": "yes"}}, '"request_log": "bodies" must be true or false'),
    ({"request_log": {"max_mb": 0}}, '"request_log": "max_mb" must be a number of at least 0.001'),
    ({"request_log": {"keep": 1.5}}, '"request_log": "keep" must be a whole number'),
    ({"request_log": {"body": True}}, '"request_log": unknown key "body"'),
])
def test_usage_and_request_log_mistakes_are_one_line(tmp_path, settings, wanted):
    problem = only_problem(write_config(tmp_path, {"providers": [provider()], **settings}))
    assert wanted in problem


def test_the_request_log_path_is_in_the_state_directory(tmp_path):
    config = load_config(write_config(tmp_path, {"providers": [provider()], "state_dir": "state",
                                                 "request_log": {"bodies": True, "max_mb": 1, "keep": 2,
                                                                 "max_body_kb": 4}}), environ={})
    log = config.request_log
    assert log.path == (tmp_path / "state" / "requests.jsonl").resolve()
    assert (log.bodies, log.max_bytes, log.keep, log.max_body_bytes) == (True, 1024 * 1024, 2, 4096)
    assert load_config(write_config(tmp_path, {"providers": [provider()], "request_log": None}),
                       environ={}).request_log is None
