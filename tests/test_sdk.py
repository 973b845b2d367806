"""The official ``anthropic`` Python SDK (a test-only dependency) through the proxy.

The client is built with ``max_retries=0`` so every failover seen here is the
proxy's, never the SDK quietly retrying.  Fake providers are real HTTP
servers on 127.0.0.1; the proxy runs in-process (see conftest.py).
"""

import anthropic
import pytest
from fakes import MESSAGE, OVERLOADED_EVENT, Reply, Stream, error_json, message_events
from sdk_clients import sdk

MODEL = "claude-proxy-test-model"  # a name no SDK release will list as deprecated
HELLO = [{"role": "user", "content": "say hi"}]


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch):
    """The SDK reads these when set; the tests pass everything explicitly."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def overloaded():
    return Reply(529, error_json(529, "overloaded_error", "Overloaded"))


def credential_values(recorded):
    return [value for name, value in recorded.header_list if name.lower() in ("x-api-key", "authorization")]


# --- fallback mode -------------------------------------------------------------------------


def test_create_fails_over_from_a_529_to_the_next_provider(providers, proxy):
    first, second = providers(overloaded()), providers()
    running = proxy(first, second)

    message = sdk(running).messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert message.content[0].text == MESSAGE["content"][0]["text"]
    assert message.stop_reason == "end_turn"
    assert (len(first.requests), len(second.requests)) == (1, 1)
    assert second.requests[0].path == "/v1/messages"


def test_create_reports_the_providers_usage(providers, proxy):
    running = proxy(providers(overloaded()), providers())

    usage = sdk(running).messages.create(model=MODEL, max_tokens=64, messages=HELLO).usage

    assert (usage.input_tokens, usage.output_tokens) == (12, 7)
    assert usage.cache_read_input_tokens == 3


def test_the_sdks_credential_never_reaches_a_provider(providers, proxy):
    first, second = providers(overloaded()), providers()
    running = proxy(first, second)

    sdk(running).messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    for recorded in first.requests + second.requests:
        assert all(running.token not in value for value in recorded.headers.values())
    assert credential_values(first.requests[0]) and \
        all("secret-key-p1-0" in value for value in credential_values(first.requests[0]))
    assert credential_values(second.requests[0]) and \
        all("secret-key-p2-1" in value for value in credential_values(second.requests[0]))


def test_stream_helper_fails_over_from_a_529_and_yields_the_text(providers, proxy):
    first = providers(overloaded())
    second = providers(Stream(message_events(text="Streamed through the proxy", pieces=4)))
    running = proxy(first, second)

    with sdk(running).messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Streamed through the proxy"
    assert final.content[0].text == "Streamed through the proxy"
    assert final.stop_reason == "end_turn"
    assert (len(first.requests), len(second.requests)) == (1, 1)
    assert second.requests[0].json()["stream"] is True


def test_stream_helper_reports_the_streams_usage(providers, proxy):
    running = proxy(providers(overloaded()),
                    providers(Stream(message_events(input_tokens=321, output_tokens=45))))

    with sdk(running).messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        usage = stream.get_final_message().usage

    assert (usage.input_tokens, usage.output_tokens) == (321, 45)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (5, 2)


def test_stream_true_fails_over_from_an_error_first_event(providers, proxy):
    first = providers(Stream([OVERLOADED_EVENT]))
    second = providers(Stream(message_events(text="after an overloaded first event")))
    running = proxy(first, second)

    events = list(sdk(running).messages.create(model=MODEL, max_tokens=64, messages=HELLO, stream=True))

    assert events[0].type == "message_start"
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == \
        "after an overloaded first event"
    assert events[-1].type == "message_stop"
    assert (len(first.requests), len(second.requests)) == (1, 1)


# --- pinned mode ------------------------------------------------------------------------------


def test_pinned_base_url_sends_create_to_that_provider_only(providers, proxy):
    first, second = providers(), providers(Reply(body={**MESSAGE, "model": "pinned-model"}))
    running = proxy(first, second)

    message = sdk(running, "/provider/p2").messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert message.model == "pinned-model"
    assert first.requests == []
    assert [r.path for r in second.requests] == ["/v1/messages"]


def test_pinned_base_url_streams_from_that_provider_only(providers, proxy):
    first = providers(Stream(message_events(text="wrong one")))
    second = providers(Stream(message_events(text="pinned stream")))
    running = proxy(first, second)

    with sdk(running, "/provider/p2").messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)

    assert text == "pinned stream"
    assert first.requests == []


def test_pinned_provider_failure_reaches_the_sdk_without_failover(providers, proxy):
    first, second = providers(overloaded()), providers()
    running = proxy(first, second)

    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(running, "/provider/p1").messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert second.requests == []


def test_pinned_to_an_unknown_provider_is_a_bad_request_listing_the_names(providers, proxy):
    running = proxy(providers(), providers())

    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(running, "/provider/nosuch").messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    message = caught.value.body["error"]["message"]
    assert "nosuch" in message and "p1" in message and "p2" in message


# --- when everything fails -------------------------------------------------------------------------


def test_every_provider_rate_limited_gives_the_sdk_a_real_429_with_retry_after(providers, proxy):
    first = providers(Reply(429, error_json(429, "rate_limit_error", "first is busy"),
                            headers={"retry-after": "11"}))
    second = providers(Reply(429, error_json(429, "rate_limit_error", "second is busy"),
                             headers={"retry-after": "7", "anthropic-ratelimit-requests-remaining": "0"}))
    running = proxy(first, second)

    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk(running).messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "7"
    assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert error.body["error"] == {"type": "rate_limit_error", "message": "second is busy"}
    assert (len(first.requests), len(second.requests)) == (1, 1)


def test_every_provider_rate_limited_while_streaming_is_a_429_too(providers, proxy):
    limited = Reply(429, error_json(429, "rate_limit_error", "busy"), headers={"retry-after": "3"})
    running = proxy(providers(limited), providers(limited))

    with pytest.raises(anthropic.RateLimitError) as caught, \
            sdk(running).messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        stream.get_final_message()

    assert caught.value.response.headers["retry-after"] == "3"


def test_a_wrong_token_is_an_authentication_error(providers, proxy):
    provider = providers()
    running = proxy(provider)
    client = sdk(running, api_key="not-the-token")

    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert caught.value.body["error"]["type"] == "authentication_error"
    assert provider.requests == []
