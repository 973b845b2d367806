"""Model fallback inside a provider: a ``models`` value that is a list is tried
in order at that provider before the next provider; cooldowns then apply per
provider and model."""

import json

import pytest

from fakes import MESSAGE, Reply, closed_port, eventually


class ByModel:
    """Answer each request by the model it names: a Reply per model, else a 200 naming it."""

    def __init__(self, **replies):
        self.replies = replies

    def __call__(self, handler):
        model = handler.server.provider.requests[-1].json()["model"]
        reply = self.replies.get(model.replace("-", "_")) or Reply(
            200, {**MESSAGE, "model": model, "content": [{"type": "text", "text": f"from {model}"}]})
        reply(handler)


def busy(status=429, seconds=None):
    headers = {"retry-after": str(seconds)} if seconds is not None else {}
    return Reply(status, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
                 headers=headers)


def sent_models(fake):
    return [request.json()["model"] for request in fake.requests]


def text_of(body):
    return json.loads(body)["content"][0]["text"]


LISTED = {"models": {"claude-*opus*": ["big-1", "big-2"], "*": "small"}}


def test_a_429_for_one_model_moves_to_the_next_model_of_the_same_provider(providers, proxy):
    first = providers(ByModel(big_1=busy(seconds=60)))
    second = providers(ByModel())
    running = proxy(first, second, provider_settings={"p1": LISTED})

    status, _, body = running.post({"model": "claude-opus-4-5", "max_tokens": 8, "messages": []})

    assert (status, text_of(body)) == (200, "from big-2")
    assert sent_models(first) == ["big-1", "big-2"] and second.requests == []
    row = running.policy.snapshot()[0]
    assert row["state"] == "ready"  # only big-1 cools
    assert [m["model"] for m in row["models_cooling"]] == ["big-1"]
    assert 55 < row["models_cooling"][0]["seconds_left"] <= 60

    running.post({"model": "claude-opus-4-5", "max_tokens": 8, "messages": []})
    assert sent_models(first)[2:] == ["big-2"]  # the cooling model waits its turn
    running.post({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": []})
    assert sent_models(first)[3:] == ["small"]  # other globs are not affected


def test_when_every_model_of_a_provider_fails_the_next_provider_answers(providers, proxy):
    first = providers(ByModel(big_1=busy(529), big_2=busy(500)))
    second = providers(ByModel())
    running = proxy(first, second, provider_settings={"p1": LISTED})

    status, _, body = running.post({"model": "claude-opus-4-5", "max_tokens": 8, "messages": []})
    assert (status, text_of(body)) == (200, "from claude-opus-4-5")
    assert sent_models(first) == ["big-1", "big-2"]

    # Both its models cool now, so the provider goes last for such requests, not for others.
    assert running.policy.plan(model="claude-opus-4-5")[0].name == "p2"
    assert running.policy.plan(model="claude-haiku-4-5")[0].name == "p1"


def test_a_connection_failure_moves_to_the_next_provider_not_the_next_model(providers, proxy):
    second = providers(ByModel())
    running = proxy(f"http://127.0.0.1:{closed_port()}", second, provider_settings={"p1": LISTED})

    status, _, body = running.post({"model": "claude-opus-4-5", "max_tokens": 8, "messages": []})

    assert (status, text_of(body)) == (200, "from claude-opus-4-5")
    assert running.policy.snapshot()[0]["state"] == "cooling"  # the provider, not a model
    assert running.policy.snapshot()[0]["models_cooling"] == []
    assert eventually(lambda: "p1[big-1]=refused p2=200" in running.log_text())  # logged after the answer
    assert "p1[big-2]" not in running.log_text()


def test_a_success_clears_that_models_cooldown(providers, proxy):
    first = providers(ByModel(big_1=busy(seconds=60)))
    running = proxy(first, provider_settings={"p1": LISTED})
    running.post({"model": "claude-opus-4-5", "max_tokens": 8, "messages": []})
    first.default = ByModel()
    clock = [running.policy.clock()]
    running.policy.clock = lambda: clock[0]

    running.post({"model": "claude-opus-4-5", "max_tokens": 8, "messages": []})  # big-2 answers
    assert [m["model"] for m in running.policy.snapshot()[0]["models_cooling"]] == ["big-1"]
    clock[0] += 61
    running.post({"model": "claude-opus-4-5", "max_tokens": 8, "messages": []})  # big-1 again, and well
    assert sent_models(first)[-1] == "big-1"
    assert running.policy.snapshot()[0]["models_cooling"] == []


@pytest.mark.parametrize("models", [{"*": []}, {"*": ["ok", ""]}, {"*": ["ok", 3]}])
def test_a_model_list_must_hold_model_names(tmp_path, models):
    from claude_proxy.config import load_config
    from claude_proxy.errors import ConfigError
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": [{"name": "p", "base_url": "https://x.test", "api_key_env": "K",
                                               "models": models}]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert '"models" must map model globs to a model name or a list of them' in str(caught.value)
