"""OpenAI-compatible providers (``"type": "openai"``) inside the failover chain,
through the running proxy, with real clients: the official ``anthropic`` SDK
and, when installed, Claude Code.  The fake provider speaks Chat Completions
on 127.0.0.1 and streams in fragments, as real ones do."""

import json
import os

import pytest

from fakes import MESSAGE, Reply, Stream, eventually, message_events
from sdk_clients import sdk
from test_claude_code import CLAUDE, run_claude


def chunk(delta=None, finish=None, usage=None, choices=True):
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-fake",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}


def text_stream(text="Hello from the OpenAI side", usage=USAGE):
    pieces = [text[i:i + 5] for i in range(0, len(text), 5)]
    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"content": piece}) for piece in pieces]
    return frames + [chunk(finish="stop"), chunk(choices=False, usage=usage), DONE]


def tool_stream():
    """Text, then two parallel tool calls whose arguments arrive in fragments."""
    first = '{"city": "Paris", "unit": "c"}'
    second = '{"city": "Oslo"}'
    frames = [chunk({"role": "assistant", "content": "Let me check."})]
    frames.append(chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]}))
    frames += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": first[i:i + 7]}}]})
               for i in range(0, len(first), 7)]
    frames.append(chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]}))
    frames += [chunk({"tool_calls": [{"index": 1, "function": {"arguments": second[i:i + 4]}}]})
               for i in range(0, len(second), 4)]
    return frames + [chunk(finish="tool_calls"), chunk(choices=False, usage=USAGE), DONE]


def openai_stream(frames, **kwargs):
    return Stream(frames, headers={"Content-Type": "text/event-stream"}, **kwargs)


def completion(content="Hello from the OpenAI side", tool_calls=None, finish="stop"):
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                      "prompt_tokens_details": {"cached_tokens": 80}}}


def openai_error(status, message, kind="server_error", code=None, headers=None):
    return Reply(status, {"error": {"message": message, "type": kind, "code": code}}, headers=headers or {})


WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                                   "unit": {"type": "string"}},
                                 "required": ["city"]}}


@pytest.fixture
def openai_proxy(proxy):
    """``openai_proxy(fake, ...)``: a proxy whose providers named ``oai*`` are OpenAI-type."""
    def start(*fakes, names, **settings):
        provider_settings = {}
        for name, fake in zip(names, fakes):
            if name.startswith("oai"):
                provider_settings[name] = {"type": "openai", "models": {"*": "gpt-fake"}}
        fakes = [fake if not names[i].startswith("oai") else fake.url + "/v1" for i, fake in enumerate(fakes)]
        return proxy(*fakes, names=names, provider_settings=provider_settings, **settings)
    return start


# --- one OpenAI provider --------------------------------------------------------------------


def test_the_sdk_gets_a_translated_answer_and_the_provider_a_translated_request(providers, openai_proxy):
    tool_calls = [{"id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    fake = providers(Reply(200, completion("Checking.", tool_calls, finish="tool_calls")))
    running = openai_proxy(fake, names=["oai"])

    message = sdk(running).messages.create(
        model="claude-sonnet-4-5", max_tokens=64, system=[{"type": "text", "text": "Be brief."}],
        tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "Weather in Paris?"}])

    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Checking."
    assert (message.content[1].name, message.content[1].input) == ("get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use" and message.model == "claude-sonnet-4-5"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.output_tokens) == (20, 80, 20)
    (sent,) = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer secret-key-oai-0"
    assert "x-api-key" not in sent.headers and not any(h.startswith("anthropic-") for h in sent.headers)
    body = sent.json()
    assert body["model"] == "gpt-fake" and body["max_tokens"] == 64
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Weather in Paris?"}]
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert eventually(lambda: running.policy.snapshot()[0]["tokens"]["output"] == 20)


def test_the_sdk_assembles_a_streamed_answer_with_two_parallel_tool_calls(providers, openai_proxy):
    fake = providers(openai_stream(tool_stream()))
    running = openai_proxy(fake, names=["oai"])

    with sdk(running).messages.stream(model="claude-sonnet-4-5", max_tokens=64, tools=[WEATHER_TOOL],
                                      messages=[{"role": "user", "content": "Paris and Oslo?"}]) as stream:
        final = stream.get_final_message()

    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Let me check."
    assert [(b.id, b.input) for b in final.content[1:]] == [
        ("call_a", {"city": "Paris", "unit": "c"}), ("call_b", {"city": "Oslo"})]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 12)
    sent = fake.requests[0].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert eventually(lambda: running.policy.snapshot()[0]["tokens"]["output"] == 12)


def test_count_tokens_and_models_are_answered_by_the_proxy(providers, openai_proxy):
    fake = providers()
    running = openai_proxy(fake, names=["oai"])
    client = sdk(running)

    bare = client.messages.count_tokens(model="claude-sonnet-4-5",
                                        messages=[{"role": "user", "content": "hello there " * 50}])
    with_tools = client.messages.count_tokens(model="claude-sonnet-4-5", tools=[WEATHER_TOOL],
                                              messages=[{"role": "user", "content": "hello there " * 50}])
    models = client.models.list()

    assert 100 < bare.input_tokens < with_tools.input_tokens
    assert [model.id for model in models.data] == ["gpt-fake"]
    assert fake.requests == []  # neither reached the provider


def test_a_cut_openai_stream_ends_with_an_error_event(providers, openai_proxy):
    frames = text_stream()
    fake = providers(openai_stream(frames, cut_after=4))
    running = openai_proxy(fake, names=["oai"])

    status, _, body = running.post({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                                    "messages": [{"role": "user", "content": "hi"}]})

    assert status == 200
    events = [line for line in body.decode().splitlines() if line.startswith("event: ")]
    assert events[0] == "event: message_start" and events[-1] == "event: error"
    assert "event: message_stop" not in events and b"[DONE]" not in body
    assert eventually(lambda: running.policy.snapshot()[0]["failures"] == 1)  # booked after the last byte


# --- in the failover chain ----------------------------------------------------------------


def test_an_anthropic_provider_at_529_fails_over_to_an_openai_one_and_back(providers, openai_proxy):
    anthropic_fake = providers(Reply(529, {"type": "error", "error": {"type": "overloaded_error",
                                                                       "message": "Overloaded"}}))
    openai_fake = providers(openai_stream(text_stream("From OpenAI")))
    running = openai_proxy(anthropic_fake, openai_fake, names=["anthro", "oai"], cooldown_minutes=0.01)

    with sdk(running).messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        first = stream.get_final_message()
    assert first.content[0].text == "From OpenAI"

    anthropic_fake.default = Stream(message_events(text="From Anthropic"))
    openai_fake.default = openai_error(429, "Rate limited", "rate_limit_exceeded", headers={"retry-after": "30"})
    running.policy.clock = lambda: 10 ** 9  # the anthropic provider's short cooldown is over
    with sdk(running).messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        second = stream.get_final_message()
    assert second.content[0].text == "From Anthropic"


def test_an_openai_429_cools_it_down_and_fails_over(providers, openai_proxy):
    openai_fake = providers(openai_error(429, "Rate limit reached", "requests", headers={"retry-after": "20"}))
    anthropic_fake = providers(Reply(200, {**MESSAGE, "content": [{"type": "text", "text": "backup"}]}))
    running = openai_proxy(openai_fake, anthropic_fake, names=["oai", "anthro"])

    message = sdk(running).messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                           messages=[{"role": "user", "content": "hi"}])

    assert message.content[0].text == "backup"
    assert running.policy.cooling_for(running.config.providers[0]) == pytest.approx(20, abs=1)


def test_when_all_fail_the_client_gets_the_last_status_in_anthropics_shape(providers, openai_proxy):
    first = providers(Reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}}))
    last = providers(openai_error(503, "The engine is currently overloaded"))
    running = openai_proxy(first, last, names=["anthro", "oai"])

    status, headers, body = running.post()

    assert status == 529
    assert json.loads(body) == {"type": "error", "error": {"type": "overloaded_error",
                                                            "message": "The engine is currently overloaded"}}


def test_an_error_as_the_first_stream_chunk_fails_over(providers, openai_proxy):
    broken = providers(openai_stream([b'data: {"error": {"message": "upstream exploded"}}\n\n']))
    backup = providers(openai_stream(text_stream("second try")))
    running = openai_proxy(broken, backup, names=["oai1", "oai2"])

    with sdk(running).messages.stream(model="m", max_tokens=8,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        assert stream.get_final_message().content[0].text == "second try"
    assert running.policy.snapshot()[0]["state"] == "cooling"


def test_a_context_overflow_reads_like_anthropics_so_the_client_compacts(providers, openai_proxy):
    fake = providers(openai_error(400, "This model's maximum context length is 128000 tokens. However, "
                                       "your messages resulted in 130512 tokens.", "invalid_request_error",
                                  code="context_length_exceeded"))
    running = openai_proxy(fake, names=["oai"])

    status, headers, body = running.post()

    assert status == 400 and headers["content-type"] == "application/json"
    message = json.loads(body)["error"]["message"]
    assert message.startswith("prompt is too long: 130512 tokens > 128000 maximum")


def test_thinking_signed_by_the_proxy_never_reaches_an_anthropic_provider(providers, openai_proxy):
    anthropic_fake = providers(Reply(200))
    running = openai_proxy(anthropic_fake, names=["anthro"])
    history = [{"role": "user", "content": "think"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": "hmm", "signature": "claude-proxy:reasoning"},
                   {"type": "text", "text": "done"}]},
               {"role": "user", "content": "again"}]

    status, _, _ = running.post({"model": "m", "max_tokens": 8, "messages": history})

    assert status == 200
    sent = anthropic_fake.requests[0].json()["messages"]
    assert sent[1]["content"] == [{"type": "text", "text": "done"}]


# --- Claude Code itself ---------------------------------------------------------------------


class ToolRoundTrip:
    """First answer: a Read tool call of ``path``; once a tool result comes back, an answer
    quoting it.  Claude Code's background requests (titles, haiku) get a plain answer."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self, handler):
        body = handler.server.provider.requests[-1].json()
        tools = [tool["function"]["name"] for tool in body.get("tools", [])]
        results = [m for m in body["messages"] if m["role"] == "tool"]
        if results:
            frames = text_stream(f"The file says: {results[-1]['content'].strip()}")
        elif "Read" in tools:
            arguments = json.dumps({"file_path": self.path})
            frames = [chunk({"role": "assistant", "content": ""}),
                      chunk({"tool_calls": [{"index": 0, "id": "call_read", "type": "function",
                                             "function": {"name": "Read", "arguments": arguments[:10]}}]}),
                      chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[10:]}}]}),
                      chunk(finish="tool_calls"), chunk(choices=False, usage=USAGE), DONE]
        else:
            frames = text_stream("ok")
        openai_stream(frames)(handler)


@pytest.mark.skipif(CLAUDE is None, reason="Claude Code is not installed (set CLAUDE_CODE_BIN)")
def test_claude_code_uses_a_tool_through_an_openai_provider(tmp_path, providers, openai_proxy):
    home = tmp_path / "home"
    home.mkdir()
    secret = home / "note.txt"
    secret.write_text("the magic word is tangerine\n", encoding="utf-8")
    fake = providers(ToolRoundTrip(secret))
    running = openai_proxy(fake, names=["oai"])

    code, output, log = run_claude(running.url, running.token, home,
                                   prompt=f"Read {secret} and tell me what it says")

    assert code == 0, log
    assert "tangerine" in output["result"], output
    tool_messages = [m for r in fake.requests for m in r.json()["messages"] if m["role"] == "tool"]
    assert tool_messages and "tangerine" in tool_messages[-1]["content"]
    assert tool_messages[-1]["tool_call_id"] == "call_read"
    assert os.fspath(secret) in json.dumps(fake.requests[-1].json())
