"""A Chat Completions stream turned into an Anthropic Messages stream (TRANSLATION.md §3).

Upstream streams are built chunk by chunk, fed in one piece, one event at a
time, split at every byte position or at random positions (hypothesis), and
the Anthropic events that come out are compared exactly.  The last tests run
the translated stream through the official ``anthropic`` SDK.
"""

import json

import anthropic
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claude_proxy.openai_answer import MISSING_TOOL_NAME, PROXY_SIGNATURE, StreamTranslator
from claude_proxy.openai_request import Names, OpenAIOptions, to_chat_completions
from claude_proxy.sse import event_name_and_data, split_events

MODEL = "claude-sonnet-4-5"
ESTIMATE = 42
DONE = b"data: [DONE]\n\n"


# --- building upstream streams -------------------------------------------------------------------


def sse(payload):
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chunk(delta=None, finish_reason=None, usage=None, **extra):
    """One chat.completion.chunk with one choice."""
    payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
               "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}], **extra}
    if usage is not None:
        payload["usage"] = usage
    return sse(payload)


def usage_chunk(prompt=10, completion=5, **details):
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if details:
        usage["prompt_tokens_details"] = details
    return sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})


def tool_fragment(index=0, call_id=None, name=None, arguments=None):
    fragment = {"index": index} if index is not None else {}
    if call_id is not None:
        fragment["id"] = call_id
        fragment["type"] = "function"
    function = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    fragment["function"] = function
    return chunk({"tool_calls": [fragment]})


# --- running the translator ----------------------------------------------------------------------


def run(*pieces, names=None, finish=True):
    """The translator and every frame it wrote, after feeding ``pieces`` one by one."""
    translator = StreamTranslator(MODEL, names or Names(), ESTIMATE, message_id="msg_test")
    out = translator.start()
    for piece in pieces:
        out += translator.feed(piece)
    if finish:
        out += translator.finish()
    return translator, out


def frames(raw):
    """``[(event name, payload)]`` of Anthropic SSE bytes; every frame must name its event."""
    assert b"[DONE]" not in raw
    parsed = []
    for event in split_events(raw):
        name, data = event_name_and_data(event)
        payload = json.loads(data)
        assert name == payload["type"], event
        parsed.append((name, payload))
    return parsed


def body_of(raw):
    """The frames after message_start and ping."""
    parsed = frames(raw)
    assert [name for name, _ in parsed[:2]] == ["message_start", "ping"]
    return parsed[2:]


def events_of(*pieces, **kwargs):
    return body_of(run(*pieces, **kwargs)[1])


# --- expected Anthropic frames -------------------------------------------------------------------


def start(index, block):
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def delta(index, value):
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": value})


def text_delta(index, text):
    return delta(index, {"type": "text_delta", "text": text})


def thinking_delta(index, text):
    return delta(index, {"type": "thinking_delta", "thinking": text})


def signature(index):
    return delta(index, {"type": "signature_delta", "signature": PROXY_SIGNATURE})


def json_delta(index, partial):
    return delta(index, {"type": "input_json_delta", "partial_json": partial})


def stop(index):
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


TEXT = {"type": "text", "text": ""}
THINKING = {"type": "thinking", "thinking": "", "signature": ""}


def tool(call_id, name):
    return {"type": "tool_use", "id": call_id, "name": name, "input": {}}


def usage(input_tokens=10, output_tokens=5, read=0, creation=0):
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read, "output_tokens": output_tokens}


def message_delta(stop_reason, figures):
    return ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                              "usage": figures})


MESSAGE_STOP = ("message_stop", {"type": "message_stop"})


def error_event(message):
    return ("error", {"type": "error", "error": {"type": "api_error", "message": message}})


def assert_well_formed(parsed):
    """The order rules a client relies on, for any stream this translator writes."""
    names = [name for name, _ in parsed]
    assert names[:2] == ["message_start", "ping"]
    open_block, next_index, kinds = None, 0, {}
    for name, payload in parsed[2:]:
        if name == "content_block_start":
            assert open_block is None and payload["index"] == next_index
            open_block, next_index = payload["index"], next_index + 1
            kinds[open_block] = payload["content_block"]["type"]
            last_delta = None
        elif name == "content_block_delta":
            assert payload["index"] == open_block
            last_delta = payload["delta"]["type"]
            expected = {"text": ("text_delta",), "thinking": ("thinking_delta", "signature_delta"),
                        "tool_use": ("input_json_delta",)}[kinds[open_block]]
            assert last_delta in expected
        elif name == "content_block_stop":
            assert payload["index"] == open_block
            if kinds[open_block] == "thinking":
                assert last_delta == "signature_delta"
            open_block = None
    if names[-1] == "error":  # a stream that failed ends there, as Anthropic's own do
        return
    assert open_block is None and names[-2:] == ["message_delta", "message_stop"]


# --- start ---------------------------------------------------------------------------------------


def test_start_is_message_start_with_the_estimate_then_ping():
    translator = StreamTranslator(MODEL, Names(), 1234, message_id="msg_x")

    assert frames(translator.start()) == [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_x", "type": "message", "role": "assistant", "model": MODEL, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 1234, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 0}}}),
        ("ping", {"type": "ping"}),
    ]
    assert translator.start().startswith(b"event: message_start\ndata: {")


def test_a_generated_message_id():
    message = frames(StreamTranslator(MODEL, Names(), 0).start())[0][1]["message"]
    assert message["id"].startswith("msg_") and len(message["id"]) == 28


# --- §6 case 16: text, then usage after finish_reason ------------------------------------------

TEXT_STREAM = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
               chunk({}, "stop"), usage_chunk(10, 5), DONE]
TEXT_EVENTS = [start(0, TEXT), text_delta(0, "Hel"), text_delta(0, "lo"), stop(0),
               message_delta("end_turn", usage(10, 5)), MESSAGE_STOP]


def test_a_text_stream_with_trailing_usage():
    translator, out = run(*TEXT_STREAM)

    assert body_of(out) == TEXT_EVENTS
    assert translator.usage == usage(10, 5) and translator.error is None


def test_each_chunk_is_translated_as_soon_as_it_is_complete_and_message_delta_is_held():
    translator = StreamTranslator(MODEL, Names(), ESTIMATE, message_id="msg_test")
    translator.start()
    outputs = [frames(translator.feed(piece)) for piece in TEXT_STREAM]

    assert outputs == [[], [start(0, TEXT), text_delta(0, "Hel")], [text_delta(0, "lo")], [stop(0)], [],
                       [message_delta("end_turn", usage(10, 5)), MESSAGE_STOP]]
    assert translator.finish() == b""


def test_half_an_event_waits_for_its_end():
    translator = StreamTranslator(MODEL, Names(), ESTIMATE)
    translator.start()
    piece = chunk({"content": "Hi"})

    assert translator.feed(piece[:-1]) == b""
    assert frames(translator.feed(piece[-1:])) == [start(0, TEXT), text_delta(0, "Hi")]


def test_eof_after_finish_reason_without_done_ends_the_message():
    assert events_of(chunk({"content": "Hi"}), chunk({}, "stop"), usage_chunk(3, 1)) == [
        start(0, TEXT), text_delta(0, "Hi"), stop(0), message_delta("end_turn", usage(3, 1)), MESSAGE_STOP]


def test_done_without_finish_reason_closes_and_infers():
    assert events_of(chunk({"content": "Hi"}), DONE) == [
        start(0, TEXT), text_delta(0, "Hi"), stop(0), message_delta("end_turn", usage(ESTIMATE, 1)), MESSAGE_STOP]
    assert events_of(tool_fragment(0, "c1", "Now", "{}"), DONE) == [
        start(0, tool("c1", "Now")), json_delta(0, "{}"), stop(0),
        message_delta("tool_use", usage(ESTIMATE, 1)), MESSAGE_STOP]


def test_anything_after_done_is_dropped():
    translator, out = run(chunk({"content": "Hi"}), chunk({}, "stop"), DONE, chunk({"content": "more"}),
                          b"data: {\"error\": {\"message\": \"late\"}}\n\n")

    assert body_of(out)[-2:] == [message_delta("end_turn", usage(ESTIMATE, 1)), MESSAGE_STOP]
    assert translator.error is None


def test_content_after_finish_reason_is_ignored_but_usage_is_read():
    assert events_of(chunk({"content": "Hi"}, "stop"), chunk({"content": "late"}), usage_chunk(7, 2), DONE) == [
        start(0, TEXT), text_delta(0, "Hi"), stop(0), message_delta("end_turn", usage(7, 2)), MESSAGE_STOP]


def test_without_provider_usage_output_is_estimated_from_characters_written():
    translator, out = run(chunk({"content": "x" * 9}), chunk({}, "stop"), DONE)

    assert body_of(out)[-2] == message_delta("end_turn", usage(ESTIMATE, 3))
    assert translator.usage == usage(ESTIMATE, 3)


def test_cached_tokens_in_the_stream_usage():
    translator, out = run(chunk({"content": "x"}), chunk({}, "stop"), usage_chunk(1000, 50, cached_tokens=800),
                          DONE)

    assert body_of(out)[-2] == message_delta("end_turn", usage(200, 50, read=800))
    assert translator.usage == usage(200, 50, read=800)


def test_groq_usage_in_x_groq():
    groq_final = chunk({}, "stop", x_groq={"id": "req_1", "usage": {"prompt_tokens": 8, "completion_tokens": 2}})

    assert events_of(chunk({"content": "Hi"}), groq_final, DONE)[-2] == message_delta("end_turn", usage(8, 2))


def test_usage_on_every_chunk_keeps_the_last():
    events = events_of(chunk({"content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1}),
                       chunk({"content": "b"}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 2}), DONE)

    assert events[-2] == message_delta("end_turn", usage(5, 2))


def test_usage_without_prompt_tokens_keeps_the_input_estimate():
    events = events_of(chunk({"content": "a"}, "stop", usage={"completion_tokens": 4}), DONE)

    assert events[-2] == message_delta("end_turn", usage(ESTIMATE, 4))


@pytest.mark.parametrize("finish_reason, stop_reason", [
    ("length", "max_tokens"), ("content_filter", "refusal"), ("eos_token", "end_turn"),
])
def test_stop_reasons_in_a_stream(finish_reason, stop_reason):
    assert events_of(chunk({"content": "a"}), chunk({}, finish_reason), DONE)[-2][1]["delta"]["stop_reason"] \
        == stop_reason


# --- §6 case 17: text, then two tool calls over several fragments ----------------------------------

TWO_CALLS = [
    chunk({"role": "assistant", "content": "Reading both."}),
    tool_fragment(0, "call_a", "Read", ""),
    tool_fragment(0, arguments='{"pa'), tool_fragment(0, arguments='th": '), tool_fragment(0, arguments='"a.'),
    tool_fragment(0, arguments='py"'), tool_fragment(0, arguments="}"),
    tool_fragment(1, "call_b", "Grep", ""),
    tool_fragment(1, arguments='{"pat'), tool_fragment(1, arguments='tern"'), tool_fragment(1, arguments=': "x'),
    tool_fragment(1, arguments='", "n": '), tool_fragment(1, arguments="2}"),
    chunk({}, "tool_calls"),
    usage_chunk(100, 30),
    DONE,
]


def test_text_then_two_tool_calls_in_fragments():
    translator, out = run(*TWO_CALLS)
    events = body_of(out)

    assert events == [
        start(0, TEXT), text_delta(0, "Reading both."), stop(0),
        start(1, tool("call_a", "Read")),
        json_delta(1, '{"pa'), json_delta(1, 'th": '), json_delta(1, '"a.'), json_delta(1, 'py"'),
        json_delta(1, "}"), stop(1),
        start(2, tool("call_b", "Grep")),
        json_delta(2, '{"pat'), json_delta(2, 'tern"'), json_delta(2, ': "x'), json_delta(2, '", "n": '),
        json_delta(2, "2}"), stop(2),
        message_delta("tool_use", usage(100, 30)), MESSAGE_STOP,
    ]
    inputs = {}
    for name, payload in events:
        if name == "content_block_delta":
            inputs[payload["index"]] = inputs.get(payload["index"], "") + payload["delta"].get("partial_json", "")
    assert json.loads(inputs[1]) == {"path": "a.py"} and json.loads(inputs[2]) == {"pattern": "x", "n": 2}


def test_arguments_that_came_before_the_name_are_sent_when_it_comes():
    events = events_of(tool_fragment(0, "c1", None, '{"a"'), tool_fragment(0, None, "Read", ":1}"),
                       chunk({}, "tool_calls"), DONE)

    assert events[:3] == [start(0, tool("c1", "Read")), json_delta(0, '{"a":1}'), stop(0)]


def test_a_call_without_arguments_gets_an_empty_object():
    assert events_of(tool_fragment(0, "c1", "Now"), chunk({}, "tool_calls"), DONE)[:3] == [
        start(0, tool("c1", "Now")), json_delta(0, "{}"), stop(0)]


def test_object_arguments_are_stringified():
    assert events_of(tool_fragment(0, "c1", "Read", {"p": "a"}), chunk({}, "tool_calls"), DONE)[:3] == [
        start(0, tool("c1", "Read")), json_delta(0, '{"p":"a"}'), stop(0)]


def test_arguments_are_sent_before_they_are_valid_json():
    translator = StreamTranslator(MODEL, Names(), 0)
    translator.start()
    translator.feed(tool_fragment(0, "c1", "Read", ""))

    assert frames(translator.feed(tool_fragment(0, arguments='{"p": "a'))) == [json_delta(0, '{"p": "a')]


# --- §6 case 18: parallel calls sharing an index, or without one -----------------------------------


@pytest.mark.parametrize("index", [0, None])
def test_two_complete_calls_sharing_an_index_are_two_blocks(index):
    events = events_of(tool_fragment(index, "call_1", "Read", '{"p":"a"}'),
                       tool_fragment(index, "call_2", "Read", '{"p":"b"}'),
                       chunk({}, "stop"), DONE)

    assert events == [start(0, tool("call_1", "Read")), json_delta(0, '{"p":"a"}'), stop(0),
                      start(1, tool("call_2", "Read")), json_delta(1, '{"p":"b"}'), stop(1),
                      message_delta("tool_use", usage(ESTIMATE, 5)), MESSAGE_STOP]


def test_two_complete_calls_without_ids_sharing_index_0_are_two_blocks():
    events = events_of(tool_fragment(0, None, "Read", '{"p":"a"}'), tool_fragment(0, None, "Grep", '{"q":1}'),
                       chunk({}, "stop"), DONE)

    assert [(payload["content_block"]["name"]) for name, payload in events if name == "content_block_start"] \
        == ["Read", "Grep"]
    assert [payload["delta"]["partial_json"] for name, payload in events if name == "content_block_delta"] \
        == ['{"p":"a"}', '{"q":1}']


def test_gemini_whole_calls_in_one_chunk():
    gemini = chunk({"role": "assistant", "tool_calls": [
        {"function": {"name": "Read", "arguments": '{"p":"a"}'}, "id": "g1", "type": "function"},
        {"function": {"name": "Glob", "arguments": '{"g":"*"}'}, "id": "g2", "type": "function"}]}, "stop")

    assert events_of(gemini, DONE) == [
        start(0, tool("g1", "Read")), json_delta(0, '{"p":"a"}'), stop(0),
        start(1, tool("g2", "Glob")), json_delta(1, '{"g":"*"}'), stop(1),
        message_delta("tool_use", usage(ESTIMATE, 5)), MESSAGE_STOP]


# --- §6 case 19: empty-string ids and names, cumulative re-sends ------------------------------------


def test_continuations_with_empty_id_and_name_stay_in_one_block():
    events = events_of(tool_fragment(0, "c1", "Read", '{"p"'), tool_fragment(0, "", "", ':"a"'),
                       tool_fragment(0, "", "", "}"), chunk({}, "tool_calls"), DONE)

    assert events[:5] == [start(0, tool("c1", "Read")), json_delta(0, '{"p"'), json_delta(0, ':"a"'),
                          json_delta(0, "}"), stop(0)]


def test_cumulative_re_sends_emit_only_what_is_new():
    events = events_of(tool_fragment(0, "c1", "Read", '{"p"'), tool_fragment(0, "c1", "Read", '{"p":"a'),
                       tool_fragment(0, "c1", "Read", '{"p":"a"}'), tool_fragment(0, "c1", "Read", '{"p":"a"}'),
                       chunk({}, "tool_calls"), DONE)

    assert events[:5] == [start(0, tool("c1", "Read")), json_delta(0, '{"p"'), json_delta(0, ':"a'),
                          json_delta(0, '"}'), stop(0)]


def test_a_whole_call_re_sent_with_finish_reason_is_not_doubled():
    events = events_of(tool_fragment(0, "c1", "Read", '{"p":"a"}'),
                       chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Read",
                                                                                   "arguments": '{"p":"a"}'}}]},
                             "tool_calls"), DONE)

    assert events[:3] == [start(0, tool("c1", "Read")), json_delta(0, '{"p":"a"}'), stop(0)]


# --- §6 case 20: reasoning ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_then_content(field):
    events = events_of(chunk({"role": "assistant", field: "Let me"}), chunk({field: " think."}),
                       chunk({"content": "Answer"}), chunk({}, "stop"), DONE)

    assert events == [start(0, THINKING), thinking_delta(0, "Let me"), thinking_delta(0, " think."),
                      signature(0), stop(0), start(1, TEXT), text_delta(1, "Answer"), stop(1),
                      message_delta("end_turn", usage(ESTIMATE, 5)), MESSAGE_STOP]


def test_openrouter_reasoning_details():
    details = [{"type": "reasoning.text", "text": "hm", "format": "unknown", "index": 0}]

    assert events_of(chunk({"reasoning_details": details}), chunk({}, "stop"), DONE)[:4] == [
        start(0, THINKING), thinking_delta(0, "hm"), signature(0), stop(0)]


def test_a_thinking_block_open_at_the_end_gets_its_signature():
    assert events_of(chunk({"reasoning_content": "hm"}), chunk({}, "stop"), DONE)[:4] == [
        start(0, THINKING), thinking_delta(0, "hm"), signature(0), stop(0)]


# --- §6 case 21: everything in one chunk ------------------------------------------------------------


def test_reasoning_content_tool_call_and_finish_in_one_chunk():
    everything = chunk({"role": "assistant", "reasoning_content": "r", "content": "t",
                        "tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                        "function": {"name": "Read", "arguments": '{"p":1}'}}]}, "tool_calls")

    assert events_of(everything, DONE) == [
        start(0, THINKING), thinking_delta(0, "r"), signature(0), stop(0),
        start(1, TEXT), text_delta(1, "t"), stop(1),
        start(2, tool("c1", "Read")), json_delta(2, '{"p":1}'), stop(2),
        message_delta("tool_use", usage(ESTIMATE, 3)), MESSAGE_STOP]


def test_text_after_a_tool_call_is_a_new_block():
    events = events_of(chunk({"content": "a"}), tool_fragment(0, "c1", "Now", "{}"), chunk({"content": "b"}),
                       chunk({}, "stop"), DONE)

    assert events[:9] == [start(0, TEXT), text_delta(0, "a"), stop(0), start(1, tool("c1", "Now")),
                          json_delta(1, "{}"), stop(1), start(2, TEXT), text_delta(2, "b"), stop(2)]


# --- §6 case 22: Azure's empty first chunk, role-only deltas ----------------------------------------


def test_an_empty_choices_chunk_and_a_role_only_delta_open_nothing():
    azure_first = sse({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                       "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]})

    assert events_of(azure_first, chunk({"role": "assistant", "content": ""}), chunk({"content": None}),
                     chunk({}, "stop"), DONE) == [message_delta("end_turn", usage(ESTIMATE, 0)), MESSAGE_STOP]


# --- providers' habits --------------------------------------------------------------------------------


def test_ollama_stop_with_tool_calls_is_tool_use():
    assert events_of(tool_fragment(0, "call_x", "Read", '{"p":"a"}'), chunk({}, "stop"), DONE)[-2][1]["delta"] \
        == {"stop_reason": "tool_use", "stop_sequence": None}


def test_crlf_line_endings_comments_and_event_lines_are_tolerated():
    crlf_chunk = chunk({"content": "Hi"}).replace(b"\n", b"\r\n")
    stream = (b": OPENROUTER PROCESSING\r\n\r\n" + b"event: message\r\n" + crlf_chunk
              + b":keep-alive\n\n" + chunk({}, "stop") + DONE)

    assert events_of(stream) == [start(0, TEXT), text_delta(0, "Hi"), stop(0),
                                 message_delta("end_turn", usage(ESTIMATE, 1)), MESSAGE_STOP]


def test_data_that_is_not_json_is_skipped():
    assert events_of(b"data: keep-alive\n\n", chunk({"content": "Hi"}, "stop"), DONE)[:2] == [
        start(0, TEXT), text_delta(0, "Hi")]


def test_a_final_event_without_its_blank_line():
    assert events_of(chunk({"content": "Hi"}, "stop"), b"data: [DONE]")[-2:] == [
        message_delta("end_turn", usage(ESTIMATE, 1)), MESSAGE_STOP]


def test_tool_names_and_ids_are_mapped_back():
    long_name = "mcp__server__" + "x" * 60
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": long_name, "input_schema": {"type": "object"}}]}
    request, names = to_chat_completions(body, "m", OpenAIOptions(tool_id_style="mistral9"), stream=True)
    short = request["tools"][0]["function"]["name"]

    events = events_of(tool_fragment(0, "functions.Read:0", short, "{}"), chunk({}, "tool_calls"), DONE,
                       names=names)

    assert events[0] == start(0, tool("functions_Read_0", long_name))


def test_a_call_whose_name_never_came_is_visible():
    events = events_of(tool_fragment(0, "c1", None, '{"a":1}'), chunk({}, "tool_calls"), DONE)

    assert events[:3] == [start(0, tool("c1", MISSING_TOOL_NAME)), json_delta(0, '{"a":1}'), stop(0)]


def test_keepalive_pings_until_the_end():
    translator = StreamTranslator(MODEL, Names(), 0)
    translator.start()

    assert frames(translator.keepalive()) == [("ping", {"type": "ping"})]
    translator.feed(chunk({}, "stop") + DONE)
    assert translator.keepalive() == b""


# --- §6 case 23: errors mid-stream --------------------------------------------------------------------


def test_an_error_chunk_mid_stream_is_an_error_event_and_the_end():
    translator, out = run(chunk({"content": "Hi"}), sse({"error": {"message": "upstream died", "code": 502}}),
                          chunk({"content": "more"}), DONE)

    assert body_of(out) == [start(0, TEXT), text_delta(0, "Hi"), error_event("upstream died")]
    assert translator.error == "upstream died"
    assert out.endswith(b'event: error\ndata: {"type": "error", "error": {"type": "api_error", '
                        b'"message": "upstream died"}}\n\n')


def test_openrouter_finish_reason_error():
    translator, out = run(chunk({"content": "Hi"}), chunk({}, "error"))

    assert body_of(out)[-1] == error_event("The provider reported an error mid-stream (finish_reason: error).")
    assert translator.error


def test_openrouter_finish_reason_error_with_its_error_object():
    failed = chunk({}, "error", error={"code": 502, "message": "Provider disconnected"})

    assert body_of(run(failed)[1]) == [error_event("Provider disconnected")]


def test_a_cut_stream_is_an_error_never_a_made_up_end():
    translator, out = run(chunk({"content": "Hi"}))

    assert body_of(out) == [start(0, TEXT), text_delta(0, "Hi"),
                            error_event("The provider's stream ended before the answer was complete.")]
    assert translator.error and b"message_stop" not in out


def test_after_an_error_nothing_more_is_written():
    translator, _ = run(sse({"error": {"message": "x"}}), finish=False)

    assert translator.feed(chunk({"content": "Hi"}) + DONE) == b"" and translator.finish() == b""


def test_a_stream_without_event_boundaries_is_an_error(monkeypatch):
    monkeypatch.setattr("claude_proxy.openai_answer.MAX_EVENT_BYTES", 100)
    translator = StreamTranslator(MODEL, Names(), 0)
    translator.start()

    assert frames(translator.feed(b"data: " + b"x" * 200))[0][0] == "error"
    assert translator.error


# --- any split gives the same answer ---------------------------------------------------------------

REASONING_AND_CALLS = [
    chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "plan é"}),
    chunk({"content": "Sure — 日本"}), *TWO_CALLS[1:],
]


def one_shot(pieces):
    return run(b"".join(pieces))[1]


@pytest.mark.parametrize("pieces", [TEXT_STREAM, REASONING_AND_CALLS], ids=["text", "reasoning-and-calls"])
def test_every_split_position_gives_the_same_stream(pieces):
    whole = b"".join(pieces)
    expected = one_shot(pieces)
    assert_well_formed(frames(expected))

    for at in range(len(whole) + 1):
        assert run(whole[:at], whole[at:])[1] == expected, at


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=30), crlf=st.booleans())
def test_random_splits_give_the_same_stream(cuts, crlf):
    whole = b"".join(REASONING_AND_CALLS)
    if crlf:
        whole = whole.replace(b"\n", b"\r\n")
    positions = sorted({cut % (len(whole) + 1) for cut in cuts})
    pieces = [whole[start_at:end] for start_at, end in zip([0] + positions, positions + [len(whole)])]

    assert run(*pieces)[1] == one_shot(REASONING_AND_CALLS)


# The random streams below are made of these upstream chunks, in any order and number.
CHUNK_KINDS = st.sampled_from([
    chunk({"content": "word "}), chunk({"reasoning_content": "idea "}), chunk({"role": "assistant", "content": ""}),
    tool_fragment(0, "c1", "Read", '{"p":'), tool_fragment(0, arguments='"a"}'),
    tool_fragment(1, "c2", "Grep", ""), tool_fragment(1, arguments='{"q":1}'),
    tool_fragment(None, "c3", "Glob", '{"g":"*"}'), usage_chunk(20, 4), chunk({}, "stop"),
    chunk({}, "tool_calls"), chunk({}, "length"), DONE, b": comment\n\n",
])


@settings(max_examples=200, deadline=None)
@given(upstream=st.lists(CHUNK_KINDS, max_size=25))
def test_any_sequence_of_chunks_gives_a_well_formed_stream(upstream):
    translator, out = run(*upstream)
    parsed = frames(out)

    assert_well_formed(parsed)
    ended = any(piece == DONE or b'"finish_reason": "' in piece for piece in upstream)
    assert (parsed[-1][0] == "message_stop") == ended
    assert (translator.error is None) == ended


# --- the official SDK assembles the translated stream -----------------------------------------------


def sdk_client(sse_bytes=None, json_body=None):
    """An ``anthropic.Anthropic`` whose HTTP answers are the given bytes, whatever it asks."""
    def answer(request):
        if sse_bytes is not None:
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse_bytes)
        return httpx2.Response(200, json=json_body)
    return anthropic.Anthropic(api_key="test", base_url="http://proxy.test", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))


def test_the_sdk_assembles_text_two_parallel_tool_calls_stop_reason_and_usage():
    _translator, out = run(*REASONING_AND_CALLS)

    with sdk_client(sse_bytes=out).messages.stream(model=MODEL, max_tokens=100,
                                                   messages=[{"role": "user", "content": "go"}]) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()

    assert "".join(texts) == "Sure — 日本"
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].thinking == "plan é" and message.content[0].signature == PROXY_SIGNATURE
    assert [(block.id, block.name, block.input) for block in message.content[2:]] == [
        ("call_a", "Read", {"path": "a.py"}), ("call_b", "Grep", {"pattern": "x", "n": 2})]
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (100, 30)
    assert message.model == MODEL


def test_the_sdk_raises_on_a_cut_stream():
    _translator, out = run(chunk({"content": "Hi"}))

    with pytest.raises(anthropic.APIStatusError, match="ended before the answer was complete"):
        with sdk_client(sse_bytes=out).messages.stream(model=MODEL, max_tokens=10,
                                                       messages=[{"role": "user", "content": "go"}]) as stream:
            stream.get_final_message()


def test_the_sdk_reads_a_translated_json_answer():
    from claude_proxy.openai_answer import to_anthropic_message
    chat = {"id": "c", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Reading.", "reasoning_content": "r",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Read", "arguments": '{"p":1}'}}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4}}

    message = sdk_client(json_body=to_anthropic_message(chat, MODEL, Names())).messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "go"}])

    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"p": 1} and message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 4)


# --- the text-only shortcut ----------------------------------------------------------------------

TEXT_KINDS = st.one_of(
    CHUNK_KINDS,
    st.sampled_from([
        chunk({"content": "plain"}), chunk({"content": "é \u2028 \"quoted\" \\ \n"}), chunk({"role": "assistant", "content": "r"}),
        chunk({"content": ""}), chunk({"content": None}), chunk({"content": "x", "refusal": "no"}),
        chunk({"content": "u"}, usage={"prompt_tokens": 3, "completion_tokens": 1}), chunk({"content": "n"}, usage=None),
        chunk({"content": "g"}, x_groq={"usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
        chunk({"content": "s"}, finish_reason="stop"), chunk({"content": "obf"}, obfuscation="abc"),
        sse({"choices": [{"index": 1, "delta": {"content": "second choice"}}]}),
        sse({"choices": [{"delta": {"content": "no index"}}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {"content": "b"}}]}),
        sse({"choices": [{"index": 0, "delta": {"content": 5}}]}),
    ]))


@settings(max_examples=300, deadline=None)
@given(upstream=st.lists(TEXT_KINDS, max_size=25))
def test_text_chunks_translate_the_same_with_and_without_the_shortcut(upstream):
    import itertools

    import claude_proxy.openai_answer as answer

    def translated():  # made-up tool ids are random: the same ones for both runs
        counter = itertools.count()
        random_hex, answer.secrets.token_hex = answer.secrets.token_hex, lambda n: f"{next(counter):0{2 * n}x}"
        try:
            return run(*upstream)
        finally:
            answer.secrets.token_hex = random_hex

    fast_translator, fast = translated()
    shortcut, answer._text_only = answer._text_only, lambda chunk: None
    try:
        slow_translator, slow = translated()
    finally:
        answer._text_only = shortcut
    assert fast == slow
    assert (fast_translator.usage, fast_translator.error) == (slow_translator.usage, slow_translator.error)
