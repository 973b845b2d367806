"""Several keys per provider: rotated per request; a 429 or a refused key moves on
to the next key at once, and the provider cools only when none is left."""

import json

import pytest

from daemon_support import fake, workspace  # noqa: F401  (fixtures)

from fakes import MESSAGE, Reply, eventually


class ByKey:
    """Answer by the key the request carries: a Reply per key, else a 200 naming the key."""

    def __init__(self, **replies):
        self.replies = replies

    def __call__(self, handler):
        key = handler.headers.get("x-api-key", "")
        reply = self.replies.get(key.replace("-", "_")) or Reply(
            200, {**MESSAGE, "content": [{"type": "text", "text": key}]})
        reply(handler)


def keys_sent(fake):
    return [request.headers.get("x-api-key") for request in fake.requests]


THREE = {"KEY_MM": "mm-key-aaaa1111, mm-key-bbbb2222 ,mm-key-cccc3333"}


def test_three_keys_take_turns(providers, proxy):
    fake = providers(ByKey())
    running = proxy(fake, names=["mm"], environ=THREE)

    for _ in range(6):
        assert running.post()[0] == 200

    assert keys_sent(fake) == ["mm-key-aaaa1111", "mm-key-bbbb2222", "mm-key-cccc3333"] * 2
    keys = running.policy.snapshot()[0]["keys"]
    assert [k["key"] for k in keys] == ["****1111", "****2222", "****3333"]
    assert eventually(lambda: [k["requests"] for k in running.policy.snapshot()[0]["keys"]] == [2, 2, 2])


def test_a_rate_limited_key_sits_out_its_cooldown_without_failing_the_provider_over(providers, proxy):
    limited = Reply(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
                    headers={"retry-after": "40"})
    fake = providers(ByKey(mm_key_bbbb2222=limited))
    backup = providers(Reply(200))
    running = proxy(fake, backup, names=["mm", "moon"], environ={**THREE, "KEY_MOON": "moon-key"})

    answers = [json.loads(running.post()[2])["content"][0]["text"] for _ in range(4)]

    assert answers == ["mm-key-aaaa1111", "mm-key-cccc3333", "mm-key-cccc3333", "mm-key-aaaa1111"]
    assert backup.requests == []  # Moonshot is used only when all three are out
    row = running.policy.snapshot()[0]
    assert row["state"] == "ready"
    cooling = [k for k in row["keys"] if k["state"] == "cooling"]
    assert [k["key"] for k in cooling] == ["****2222"] and 35 < cooling[0]["cooldown_seconds_left"] <= 40
    assert keys_sent(fake).count("mm-key-bbbb2222") == 1  # it was not asked again while cooling


def test_the_provider_fails_over_only_when_every_key_is_out(providers, proxy):
    limited = Reply(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
    fake = providers(limited)
    backup = providers(Reply(200, {**MESSAGE, "content": [{"type": "text", "text": "moonshot"}]}))
    running = proxy(fake, backup, names=["mm", "moon"], environ={**THREE, "KEY_MOON": "moon-key"})

    status, _, body = running.post()

    assert (status, json.loads(body)["content"][0]["text"]) == (200, "moonshot")
    assert sorted(keys_sent(fake)) == ["mm-key-aaaa1111", "mm-key-bbbb2222", "mm-key-cccc3333"]
    assert running.policy.snapshot()[0]["state"] == "cooling"


def test_a_refused_key_is_put_aside_and_reported(providers, proxy, capsys):
    refused = Reply(401, {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}})
    fake = providers(ByKey(mm_key_aaaa1111=refused))
    running = proxy(fake, names=["mm"], environ=THREE)

    answers = [json.loads(running.post()[2])["content"][0]["text"] for _ in range(4)]

    assert "mm-key-aaaa1111" not in answers and len(answers) == 4
    assert keys_sent(fake).count("mm-key-aaaa1111") == 1  # never again
    keys = running.policy.snapshot()[0]["keys"]
    assert keys[0]["state"] == "refused" and keys[0]["last_error"] == "401 key refused"
    log = running.log_text()
    assert "key ****1111 refused" in log and "mm-key-aaaa1111" not in log


def test_keys_from_several_variables_and_a_comma_list(tmp_path):
    from claude_proxy.config import load_config
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": [{"name": "mm", "base_url": "https://x.test",
                                               "api_key_env": ["MM_KEY_A", "MM_KEYS"]}]}), encoding="utf-8")
    (tmp_path / ".env").write_text("MM_KEYS= key-two , key-three\n", encoding="utf-8")

    (provider,) = load_config(path, environ={"MM_KEY_A": "key-one"}).providers

    assert provider.api_keys == ["key-one", "key-two", "key-three"]
    assert provider.api_key_env == "MM_KEY_A, MM_KEYS"
    assert "key-" not in repr(provider)


@pytest.mark.parametrize("value", ["k1,,k2", "k1, ,k2", "k1,"])
def test_an_empty_key_between_commas_names_the_variable(tmp_path, value):
    from claude_proxy.config import load_config
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": [{"name": "mm", "base_url": "https://x.test",
                                               "api_key_env": "MM_KEYS"}]}), encoding="utf-8")

    (provider,) = load_config(path, environ={"MM_KEYS": value}).providers

    assert not provider.usable
    assert provider.key_problem == ("MM_KEYS in the environment has an empty entry between its commas; "
                                    "separate several keys with single commas")


def test_status_shows_each_key_by_its_mask(workspace, fake):
    from daemon_support import url_of
    from fakes import request
    config = workspace.config([{"name": "mm", "base_url": fake().url, "api_key_env": "MM_KEYS"}])
    workspace.keys(MM_KEYS="secret-key-0001,secret-key-0002")
    workspace.run("start", "--quiet", config=config)
    url = url_of(workspace.record(config))
    request(url, headers={"x-api-key": workspace.token(config)}, body={"model": "m", "messages": []})

    shown = workspace.run("status", config=config).stdout

    assert "keys: ****0001 ready (1 request), ****0002 ready (0 requests)" in shown
    assert "secret-key" not in shown
