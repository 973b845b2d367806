"""Configuration: finding config.json, reading it and .env, and explaining mistakes.

Everything here is in-process and quick; the command line's handling of the
same mistakes (exit codes, no tracebacks) is in test_cli.py.
"""

import json
from pathlib import Path

import pytest

from claude_proxy.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG,
    env_file_exposed,
    load_config,
    parse_env,
    read_env_file,
    resolve_config_path,
)
from claude_proxy.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

#: The config users already have, byte for byte as the issue gives it.
USERS_CONFIG = (
    '{"proxy_port": 8787, "providers": [{"name": "minimax", "base_url": '
    '"https://api.minimax.io/anthropic", "api_key_env": "MINIMAX_API_KEY"}, {"name": "moonshot", '
    '"base_url": "https://api.moonshot.ai/anthropic", "api_key_env": "MOONSHOT_API_KEY"}], '
    '"cooldown_minutes": 30}'
)


def provider(name="p1", **extra):
    return {"name": name, "base_url": "http://127.0.0.1:9/anthropic", "api_key_env": "P1_KEY", **extra}


def write_config(tmp_path, data, name="config.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def problems_of(path, environ=None):
    """The ConfigError problems loading ``path`` raises (the test fails if it loads)."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {}, must_exist=True)
    for problem in caught.value.problems:
        assert "\n" not in problem, f"a problem must be one line: {problem!r}"
    return caught.value.problems


def only_problem(path):
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


# --- the config users already have ---------------------------------------------------


def test_the_users_config_loads_verbatim(tmp_path):
    path = write_config(tmp_path, USERS_CONFIG)

    config = load_config(path, environ={"MINIMAX_API_KEY": "mm-key", "MOONSHOT_API_KEY": "ms-key"})

    assert config.exists
    assert config.port == 8787
    assert config.host == "127.0.0.1"
    assert config.cooldown_seconds == 30 * 60
    assert [(p.name, p.base_url, p.api_key_env, p.api_key) for p in config.providers] == [
        ("minimax", "https://api.minimax.io/anthropic", "MINIMAX_API_KEY", "mm-key"),
        ("moonshot", "https://api.moonshot.ai/anthropic", "MOONSHOT_API_KEY", "ms-key"),
    ]
    assert all(p.usable and p.models == {} for p in config.providers)


def test_the_users_config_has_the_documented_defaults(tmp_path):
    config = load_config(write_config(tmp_path, USERS_CONFIG), environ={})

    assert config.require_token is True
    assert config.max_body_bytes == 10 * 1024 * 1024
    assert {429, 500, 502, 503, 504, 529} <= config.failover_statuses
    assert not {400, 401, 403, 404, 413} & config.failover_statuses
    assert config.state_dir == tmp_path


def test_config_saved_with_a_bom_by_notepad_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + USERS_CONFIG.replace(", ", ",\r\n").encode())

    config = load_config(path, environ={})

    assert [p.name for p in config.providers] == ["minimax", "moonshot"]


def test_config_example_is_the_built_in_default():
    example = json.loads((ROOT / "config.example.json").read_text(encoding="utf-8"))

    assert example == DEFAULT_CONFIG


def test_config_example_loads_and_maps_claude_models(tmp_path):
    path = write_config(tmp_path, (ROOT / "config.example.json").read_text(encoding="utf-8"))

    config = load_config(path, environ={})

    minimax, moonshot = config.providers
    assert (minimax.name, moonshot.name) == ("minimax", "moonshot")
    assert moonshot.map_model("claude-haiku-4-5") == "kimi-k2-turbo-preview"
    assert moonshot.map_model("claude-sonnet-4-5") == "kimi-k2-0905-preview"
    assert minimax.map_model("claude-opus-4-1") == "MiniMax-M2"


def test_env_example_names_every_key_the_example_config_needs_and_sets_none():
    example = json.loads((ROOT / "config.example.json").read_text(encoding="utf-8"))
    values, warnings = read_env_file(ROOT / ".env.example")

    assert warnings == []
    assert {p["api_key_env"] for p in example["providers"]} <= set(values)
    assert not any(values.values()), "the example must not ship a key value"


def test_defaults_are_not_shared_between_loads(tmp_path):
    missing = tmp_path / "config.json"
    first = load_config(missing, environ={})
    first.providers[0].models["*"] = "changed"

    second = load_config(missing, environ={})

    assert second.providers[0].models == {"*": "MiniMax-M2"}
    assert DEFAULT_CONFIG["providers"][0]["models"] == {"*": "MiniMax-M2"}


# --- where the config comes from --------------------------------------------------------


def test_config_option_wins_over_the_environment_variable(tmp_path):
    path, explicit = resolve_config_path(str(tmp_path / "a.json"),
                                         environ={CONFIG_ENV_VAR: str(tmp_path / "b.json")})

    assert (path, explicit) == (tmp_path / "a.json", True)


def test_environment_variable_is_used_without_the_option(tmp_path):
    path, explicit = resolve_config_path(None, environ={CONFIG_ENV_VAR: str(tmp_path / "b.json")})

    assert (path, explicit) == (tmp_path / "b.json", True)


def test_default_is_config_json_beside_proxy_py_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    path, explicit = resolve_config_path(None, environ={})

    assert (path, explicit) == (ROOT / "config.json", False)
    assert (ROOT / "proxy.py").is_file()


def test_a_relative_config_option_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    path, _ = resolve_config_path("sub/my.json", environ={})

    assert path == tmp_path / "sub" / "my.json"


def test_missing_default_file_runs_on_the_built_in_defaults(tmp_path):
    config = load_config(tmp_path / "config.json", environ={})

    assert not config.exists
    assert config.port == DEFAULT_CONFIG["proxy_port"]
    assert config.cooldown_seconds == DEFAULT_CONFIG["cooldown_minutes"] * 60
    assert [p.name for p in config.providers] == [p["name"] for p in DEFAULT_CONFIG["providers"]]
    assert not any(p.usable for p in config.providers)


def test_an_explicitly_named_missing_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere.json"

    with pytest.raises(ConfigError) as caught:
        load_config(missing, environ={}, must_exist=True)

    assert caught.value.problems == [caught.value.problems[0]]
    assert str(missing) in caught.value.problems[0]


def test_a_directory_named_as_the_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, environ={}, must_exist=True)

    assert str(tmp_path) in str(caught.value)


def test_state_directory_defaults_to_the_configs_folder_and_is_relative_to_it(tmp_path):
    default = load_config(write_config(tmp_path, {"providers": [provider()]}), environ={})
    relative = load_config(write_config(tmp_path, {"providers": [provider()], "state_dir": "run"},
                                        name="other.json"), environ={})

    assert default.state_dir == tmp_path
    assert relative.state_dir == tmp_path / "run"


# --- .env ---------------------------------------------------------------------------------


@pytest.mark.parametrize("line, value", [
    ("KEY=plain", "plain"),
    ("export KEY=exported", "exported"),
    ("export\tKEY=tab-exported", "tab-exported"),
    ("  KEY = spaced  ", "spaced"),
    ("KEY='single quoted'", "single quoted"),
    ('KEY="double quoted"', "double quoted"),
    ("KEY=value # inline comment", "value"),
    ('KEY="quoted # not a comment" # a comment', "quoted # not a comment"),
    ("KEY='a#b'", "a#b"),
    ("KEY=abc#def", "abc#def"),
    ("KEY=a=b==", "a=b=="),
    ("KEY='$NOT_EXPANDED'", "$NOT_EXPANDED"),
    ('KEY="  kept spaces  "', "  kept spaces  "),
])
def test_env_values_as_people_write_them(line, value):
    values, warnings = parse_env(line + "\n")

    assert values == {"KEY": value}
    assert warnings == []


def test_env_comments_and_blank_lines_are_ignored():
    text = "# a comment\n\n   \nKEY=v\n  # indented comment\n#OTHER=x\n"

    values, warnings = parse_env(text)

    assert values == {"KEY": "v"}
    assert warnings == []


def test_env_from_windows_notepad_with_bom_and_crlf(tmp_path):
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfexport FIRST=one\r\n# comment\r\n\r\nSECOND=\"two\"\r\nTHIRD=three\r\n")

    values, warnings = read_env_file(path)

    assert values == {"FIRST": "one", "SECOND": "two", "THIRD": "three"}
    assert warnings == []


def test_a_missing_env_file_is_empty(tmp_path):
    assert read_env_file(tmp_path / ".env") == ({}, [])


def test_a_malformed_env_line_is_a_warning_naming_the_line_not_an_error():
    values, warnings = parse_env("GOOD=1\nthis is not an assignment\nBAD='unterminated\n", "my.env")

    assert values == {"GOOD": "1"}
    assert len(warnings) == 2
    assert "my.env" in warnings[0] and "line 2" in warnings[0]
    assert "line 3" in warnings[1]


def test_keys_come_from_the_env_file_beside_the_config(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("P1_KEY=from-the-working-directory\n", encoding="utf-8")
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / ".env").write_text("P1_KEY=from-beside-the-config\n", encoding="utf-8")
    monkeypatch.chdir(elsewhere)

    config = load_config(write_config(folder, {"providers": [provider()]}), environ={})

    assert config.providers[0].api_key == "from-beside-the-config"
    assert config.env_path == folder / ".env"


def test_the_environment_wins_over_the_env_file(tmp_path):
    (tmp_path / ".env").write_text("P1_KEY=from-file\n", encoding="utf-8")

    config = load_config(write_config(tmp_path, {"providers": [provider()]}),
                         environ={"P1_KEY": "from-environment"})

    assert config.providers[0].api_key == "from-environment"
    assert config.providers[0].key_source == "environment"


def test_an_empty_env_value_means_unset(tmp_path):
    (tmp_path / ".env").write_text('P1_KEY=\nP2_KEY=""\n', encoding="utf-8")
    second = {**provider("p2"), "api_key_env": "P2_KEY"}

    config = load_config(write_config(tmp_path, {"providers": [provider(), second]}), environ={})

    assert [p.api_key for p in config.providers] == [None, None]
    assert not any(p.usable for p in config.providers)


def test_an_empty_environment_variable_does_not_hide_the_env_file(tmp_path):
    (tmp_path / ".env").write_text("P1_KEY=from-file\n", encoding="utf-8")

    config = load_config(write_config(tmp_path, {"providers": [provider()]}), environ={"P1_KEY": ""})

    assert config.providers[0].api_key == "from-file"


def test_env_warnings_reach_the_config(tmp_path):
    (tmp_path / ".env").write_text("P1_KEY=ok\nnonsense line\n", encoding="utf-8")

    config = load_config(write_config(tmp_path, {"providers": [provider()]}), environ={})

    assert config.providers[0].api_key == "ok"
    assert any("line 2" in warning for warning in config.warnings)


@pytest.mark.parametrize("mode, os_name, exposed", [
    (0o100600, "posix", False), (0o100400, "posix", False), (0o100640, "posix", True),
    (0o100604, "posix", True), (0o100644, "posix", True), (0o100644, "nt", False),
    (0o100666, "nt", False),
])
def test_an_env_file_is_exposed_when_posix_modes_let_others_read_it(mode, os_name, exposed):
    assert env_file_exposed(mode, os_name) is exposed


def test_a_key_never_appears_in_the_configs_repr(tmp_path):
    config = load_config(write_config(tmp_path, {"providers": [provider()]}),
                         environ={"P1_KEY": "sk-very-secret-value"})

    assert "sk-very-secret-value" not in repr(config)
    assert "sk-very-secret-value" not in repr(config.providers[0])


# --- values -----------------------------------------------------------------------------


@pytest.mark.parametrize("minutes, seconds", [(0.5, 30.0), (0.05, 3.0), (0, 0.0), (90, 5400.0)])
def test_cooldown_minutes_accepts_fractions(tmp_path, minutes, seconds):
    config = load_config(write_config(tmp_path, {"providers": [provider()], "cooldown_minutes": minutes}),
                         environ={})

    assert config.cooldown_seconds == pytest.approx(seconds)


@pytest.mark.parametrize("value", [-1, "30", True, None])
def test_a_bad_cooldown_names_the_field(tmp_path, value):
    path = write_config(tmp_path, {"providers": [provider()], "cooldown_minutes": value})

    assert "cooldown_minutes" in only_problem(path)


def test_failover_statuses_take_codes_and_classes(tmp_path):
    path = write_config(tmp_path, {"providers": [provider()], "failover_statuses": [408, 429, "5xx"]})

    statuses = load_config(path, environ={}).failover_statuses

    assert statuses == frozenset({408, 429, *range(500, 600)})


def test_failover_status_classes_are_case_insensitive(tmp_path):
    path = write_config(tmp_path, {"providers": [provider()], "failover_statuses": ["5XX"]})

    assert load_config(path, environ={}).failover_statuses == frozenset(range(500, 600))


def test_failover_statuses_replace_the_default_set(tmp_path):
    path = write_config(tmp_path, {"providers": [provider()], "failover_statuses": [529]})

    assert load_config(path, environ={}).failover_statuses == frozenset({529})


@pytest.mark.parametrize("value", [["6xx"], [429, "often"], [42], [True], ["429"]])
def test_a_bad_failover_status_names_the_field(tmp_path, value):
    path = write_config(tmp_path, {"providers": [provider()], "failover_statuses": value})

    assert "failover_statuses" in only_problem(path)


def test_underscore_keys_are_comments_at_both_levels(tmp_path):
    path = write_config(tmp_path, {"_comment": "mine", "_note": [1, 2],
                                   "providers": [provider(_why="first choice")]})

    config = load_config(path, environ={})

    assert [p.name for p in config.providers] == ["p1"]


def test_per_provider_settings_are_read(tmp_path):
    path = write_config(tmp_path, {"read_timeout": 120, "providers": [provider(
        enabled=False, auth_header="x-api-key", headers={"X-Extra": "1"},
        models={"claude-*": "other"}, connect_timeout=2.5)]})

    p = load_config(path, environ={"P1_KEY": "k"}).providers[0]

    assert (p.enabled, p.auth_header, p.headers, p.models) == (False, "x-api-key", {"X-Extra": "1"},
                                                               {"claude-*": "other"})
    assert (p.connect_timeout, p.read_timeout) == (2.5, 120.0)
    assert not p.usable


# --- mistakes, each named ------------------------------------------------------------------


def test_invalid_json_names_the_file_line_and_column(tmp_path):
    path = write_config(tmp_path, '{\n  "proxy_port": 8787,\n  "providers": [,]\n}\n')

    problem = only_problem(path)

    assert str(path) in problem
    assert "line 3" in problem
    assert "column 17" in problem


def test_a_trailing_comma_is_reported_where_it_is(tmp_path):
    path = write_config(tmp_path, '{"providers": [],\n "cooldown_minutes": 30,\n}')

    problem = only_problem(path)

    assert "line 3" in problem and "column 1" in problem


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes('{"providers": [], "_x": "caf\u00e9"}'.encode("latin-1"))

    problem = only_problem(path)

    assert str(path) in problem


def test_a_top_level_that_is_not_an_object_is_an_error(tmp_path):
    path = write_config(tmp_path, "[]")

    assert str(path) in only_problem(path)


def test_missing_base_url_names_the_provider_and_field(tmp_path):
    entry = provider("moonshot")
    del entry["base_url"]
    path = write_config(tmp_path, {"providers": [entry]})

    problem = only_problem(path)

    assert str(path) in problem
    assert "base_url" in problem and "moonshot" in problem


@pytest.mark.parametrize("url", ["api.moonshot.ai/anthropic", "ftp://x/anthropic", "https://", 42])
def test_a_base_url_that_is_not_http_names_the_field(tmp_path, url):
    path = write_config(tmp_path, {"providers": [provider(base_url=url)]})

    assert "base_url" in only_problem(path)


def test_missing_api_key_env_names_the_field(tmp_path):
    entry = provider()
    del entry["api_key_env"]

    assert "api_key_env" in only_problem(write_config(tmp_path, {"providers": [entry]}))


def test_a_key_value_given_as_api_key_env_is_refused(tmp_path):
    path = write_config(tmp_path, {"providers": [provider(api_key_env="sk-abc-123")]})

    assert "api_key_env" in only_problem(path)


def test_duplicate_provider_names_are_an_error_whatever_their_case(tmp_path):
    path = write_config(tmp_path, {"providers": [provider("Moonshot"), provider("moonshot")]})

    problem = only_problem(path)

    assert "duplicate" in problem.lower() and "moonshot" in problem.lower()
    assert "providers[1]" in problem


def test_an_unknown_top_level_key_is_named(tmp_path):
    path = write_config(tmp_path, {"providers": [provider()], "cooldown_minute": 5})

    assert '"cooldown_minute"' in only_problem(path)


def test_an_unknown_provider_key_is_named_with_its_provider(tmp_path):
    path = write_config(tmp_path, {"providers": [provider("kimi", api_key="sk-oops")]})

    problem = only_problem(path)

    assert '"api_key"' in problem and "kimi" in problem
    assert "sk-oops" not in problem


@pytest.mark.parametrize("value", ["Bearer", "authorization", "", None])
def test_a_bad_auth_header_names_the_field(tmp_path, value):
    path = write_config(tmp_path, {"providers": [provider(auth_header=value)]})

    assert "auth_header" in only_problem(path)


@pytest.mark.parametrize("url, wanted", [
    ("https://例え.jp/anthropic", "printable ASCII"),
    ("https://api.example.com/an thropic", "printable ASCII"),
    ("https://api.example.com:99999/anthropic", "port"),
    ("https://api.example.com:abc/anthropic", "port"),
    ("https://ex\uff03ample.com/x", "printable ASCII"),
    ("http://[::1/x", "http:// or https:// URL"),
])
def test_a_base_url_that_cannot_be_requested_is_refused(tmp_path, url, wanted):
    path = write_config(tmp_path, {"providers": [provider(base_url=url)]})

    problem = only_problem(path)
    assert '"base_url"' in problem and wanted in problem


@pytest.mark.parametrize("headers, wanted", [
    ({"Host": "elsewhere"}, "'Host' is set by the proxy itself"),
    ({"content-length": "1"}, "'content-length' is set by the proxy itself"),
    ({"X-Org": "team\x01"}, "the value of 'X-Org' has a line break or a character"),
    ({"X Org": "team"}, "'X Org' is not a valid header name"),
    ({"X-Org": "team\r\nX-Evil: 1"}, "the value of 'X-Org' has a line break"),
    ({"X-Org": "équipe \u2019one\u2019"}, "the value of 'X-Org' has a line break or a character"),
])
def test_extra_headers_that_http_cannot_carry_are_refused(tmp_path, headers, wanted):
    path = write_config(tmp_path, {"providers": [provider(headers=headers)]})

    assert wanted in only_problem(path)


def test_a_key_with_a_character_a_header_cannot_carry_skips_its_provider(tmp_path):
    path = write_config(tmp_path, {"providers": [provider()]})

    config = load_config(path, environ={"P1_KEY": "\u201csk-pasted-with-quotes\u201d"})

    [p1] = config.providers
    assert not p1.usable and p1.api_key is None
    said = p1.missing_key(config.env_path)  # what every message about the missing key says
    assert said.startswith("P1_KEY in the environment has a character an HTTP header cannot carry")
    assert "sk-pasted" not in said and "is not set" not in said


@pytest.mark.parametrize("choice", ["x-api-key", "bearer", "both"])
def test_each_auth_header_choice_is_accepted(tmp_path, choice):
    path = write_config(tmp_path, {"providers": [provider(auth_header=choice)]})

    assert load_config(path, environ={}).providers[0].auth_header == choice


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "my-laptop.lan"])
def test_a_non_loopback_host_without_a_token_is_refused(tmp_path, host):
    path = write_config(tmp_path, {"providers": [provider()], "proxy_host": host, "require_token": False})

    problem = only_problem(path)

    assert "require_token" in problem and host in problem


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_a_loopback_host_may_go_without_a_token(tmp_path, host):
    path = write_config(tmp_path, {"providers": [provider()], "proxy_host": host, "require_token": False})

    config = load_config(path, environ={})

    assert (config.host, config.require_token) == (host, False)


def test_a_non_loopback_host_with_a_token_is_allowed(tmp_path):
    path = write_config(tmp_path, {"providers": [provider()], "proxy_host": "0.0.0.0"})

    assert load_config(path, environ={}).host == "0.0.0.0"


@pytest.mark.parametrize("port", [-1, 65536, "8787", 87.5, True])
def test_a_bad_port_names_the_field(tmp_path, port):
    path = write_config(tmp_path, {"providers": [provider()], "proxy_port": port})

    assert "proxy_port" in only_problem(path)


@pytest.mark.parametrize("providers", [[], {}, None, "minimax"])
def test_providers_must_be_a_non_empty_list(tmp_path, providers):
    path = write_config(tmp_path, {"providers": providers})

    assert "providers" in only_problem(path)


@pytest.mark.parametrize("field, value", [
    ("models", ["*", "x"]), ("models", {"*": 1}), ("headers", {"X-A": 1}), ("enabled", "yes"),
    ("read_timeout", 0), ("connect_timeout", "10"), ("name", "has space"),
])
def test_a_bad_provider_setting_names_the_field(tmp_path, field, value):
    path = write_config(tmp_path, {"providers": [provider(**{field: value})]})

    assert f'"{field}"' in only_problem(path)


def test_every_problem_is_reported_at_once_one_line_each(tmp_path):
    broken = provider("b")
    del broken["base_url"]
    path = write_config(tmp_path, {"providers": [provider("a", auth_header="not a header"), broken],
                                   "proxy_port": "x", "extra": 1})

    problems = problems_of(path)

    assert len(problems) == 4
    assert all(problem.startswith(str(path)) for problem in problems)
    joined = "\n".join(problems)
    for field in ("auth_header", "base_url", "proxy_port", '"extra"'):
        assert field in joined


@pytest.mark.parametrize("sample", [
    {"providers": [provider(models=None)]},
    {"providers": [provider(headers=[])]},
    {"providers": [provider(name=7)]},
    {"providers": [7]},
    {"providers": [provider()], "state_dir": 5},
    {"providers": [provider()], "proxy_host": 1},
    {"providers": [provider()], "require_token": "no"},
    {"providers": [provider()], "max_body_mb": 0},
    {"providers": [provider()], "max_connections": 0},
    {"providers": [provider()], "max_connections": 10.5},
    {"providers": [provider()], "receive_timeout": "60"},
    {"providers": [provider()], "allowed_hosts": {"a": 1}},
], ids=["models-null", "headers-list", "name-int", "provider-int", "state_dir-int", "host-int",
        "require_token-str", "max_body_mb-0", "max_connections-0", "max_connections-float",
        "receive_timeout-str", "allowed_hosts-object"])
def test_a_wrong_type_is_a_config_error_never_a_crash(tmp_path, sample):
    path = write_config(tmp_path, sample)

    problem = only_problem(path)

    assert problem.startswith(str(path))


def test_a_config_with_comments_hints_at_the_comment_key(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('// my providers\n{"providers": []}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: invalid JSON at line 1, column 1")
    assert problem.endswith('(JSON has no comments: use a key such as "_comment": "..." instead)')


def test_a_key_pasted_into_api_key_env_is_not_echoed_back(tmp_path):
    path = tmp_path / "config.json"
    key = "fake-key-0123456789abcdefWXYZ"
    path.write_text(json.dumps({"providers": [{"name": "p", "base_url": "https://x.test",
                                               "api_key_env": key}]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert key not in problem
    assert "'****WXYZ'" in problem and "a key belongs in .env" in problem


def test_allowed_hosts_are_lowercased_and_ipv6_addresses_bracketed(tmp_path):
    path = write_config(tmp_path, {"providers": [provider()],
                                   "allowed_hosts": ["My-Laptop.Local", "192.168.1.20", "fd00::1", "[::2]"]})

    assert load_config(path, environ={}).allowed_hosts == (
        "my-laptop.local", "192.168.1.20", "[fd00::1]", "[::2]")


@pytest.mark.parametrize("entry", ["evil.example:8787", "http://evil.example", "", 7, "a b"])
def test_an_allowed_host_that_is_not_a_bare_name_is_refused(tmp_path, entry):
    path = write_config(tmp_path, {"providers": [provider()], "allowed_hosts": [entry]})

    assert '"allowed_hosts"' in only_problem(path)


def test_an_openai_provider_takes_its_options_and_defaults_to_a_bearer_key(tmp_path):
    path = write_config(tmp_path, {"providers": [
        provider("oai", type="openai", openai={"max_output_tokens": 8192, "drop_params": ["top_k", "stop"],
                                              "max_tokens_field": "max_completion_tokens"}),
        provider("azure", type="openai", auth_header="api-key",
                 openai={"chat_path": "/chat/completions?api-version=2024-10-21"}),
        provider("plain")]})
    oai, azure, plain = load_config(path, environ={}).providers
    assert (oai.type, oai.auth_header, oai.chat_path) == ("openai", "bearer", "/chat/completions")
    assert oai.openai.max_output_tokens == 8192 and oai.openai.drop_params == ("top_k", "stop")
    assert oai.openai.max_tokens_field == "max_completion_tokens"
    assert (azure.auth_header, azure.chat_path) == ("api-key", "/chat/completions?api-version=2024-10-21")
    assert azure.openai.reasoning == "reasoning_effort"  # the defaults fit OpenAI itself
    assert (plain.type, plain.auth_header, plain.openai) == ("anthropic", "both", None)


@pytest.mark.parametrize("settings, wanted", [
    ({"type": "gemini"}, '"type" must be "anthropic"'),
    ({"type": "openai", "openai": {"max_output_tokens": 0}}, '"openai": max_output_tokens must be'),
    ({"type": "openai", "openai": {"reasoning": "loud"}}, '"openai": reasoning'),
    ({"type": "openai", "openai": {"colour": 1}}, '"openai": unknown option "colour"'),
    ({"type": "openai", "openai": {"chat_path": "chat"}}, '"chat_path" must be a path'),
    ({"openai": {"max_output_tokens": 10}}, 'apply only to a provider with "type": "openai"'),
    ({"auth_header": "Bearer"}, '"auth_header" must be one of'),
])
def test_openai_settings_that_cannot_work_are_one_line_each(tmp_path, settings, wanted):
    path = write_config(tmp_path, {"providers": [provider("p", **settings)]})
    assert wanted in only_problem(path)
