"""Anthropic ⇄ OpenAI Chat Completions: requests, JSON answers, errors, the model list.

Each test is one rule of TRANSLATION.md, input → the exact expected output;
"§6 case N" names the numbered cases of its section 6.  Streams are in
test_openai_stream.py.
"""

import hashlib
import json
import re

import pytest

from claude_proxy.openai_answer import (
    PROXY_SIGNATURE, PROXY_SIGNATURE_PREFIX, AnswerError, anthropic_usage, is_proxy_signature, models_list,
    stop_reason, strip_proxy_thinking, to_anthropic_message, tool_input, translate_error,
)
from claude_proxy.openai_request import (
    ASSISTANT_BRIDGE, DOCUMENT_PLACEHOLDER, IMAGE_MOVED, Names, OpenAIOptions, clean_schema,
    estimate_input_tokens, reasoning_effort, to_chat_completions,
)

OPENAI = OpenAIOptions()


def translate(body, options=OPENAI, stream=False, model="gpt-test"):
    request, _names = to_chat_completions({"max_tokens": 100, **body}, model, options, stream)
    return request


def messages_of(messages, options=OPENAI, **body):
    return translate({"messages": messages, **body}, options)["messages"]


def user(*blocks):
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks):
    return {"role": "assistant", "content": list(blocks)}


def text(value, **extra):
    return {"type": "text", "text": value, **extra}


def tool_use(tool_id, name, tool_input):
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


def tool_result(tool_id, content, **extra):
    return {"type": "tool_result", "tool_use_id": tool_id, "content": content, **extra}


def image(data="AAAA", media_type="image/png"):
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


CALL_T1 = {"id": "t1", "type": "function", "function": {"name": "Read", "arguments": "{\"p\":\"a\"}"}}


# --- the request as a whole ----------------------------------------------------------------


def test_a_plain_request_has_model_messages_and_max_tokens_only():
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}

    request, _ = to_chat_completions(body, "gpt-4o", OPENAI, stream=False)

    assert request == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1024}


def test_unknown_anthropic_fields_never_reach_the_provider():
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "context_management": {"edits": []}, "container": "c", "mcp_servers": [],
            "service_tier": "auto", "betas": ["x"], "anthropic_version": "2023-06-01"}

    request, _ = to_chat_completions(body, "m", OPENAI, stream=False)

    assert set(request) == {"model", "messages", "max_tokens"}


def test_cache_control_is_dropped_everywhere():
    body = {"max_tokens": 10, "system": [text("s", cache_control={"type": "ephemeral"})],
            "messages": [user(text("a", cache_control={"type": "ephemeral"}),
                              {**image(), "cache_control": {"type": "ephemeral"}}),
                         assistant({**tool_use("t1", "Read", {}), "cache_control": {"type": "ephemeral"}}),
                         user({**tool_result("t1", [text("r", cache_control={"type": "ephemeral"})]),
                               "cache_control": {"type": "ephemeral"}})],
            "tools": [{**READ_TOOL, "cache_control": {"type": "ephemeral"}}]}

    request, _ = to_chat_completions(body, "m", OPENAI, stream=True)

    assert "cache_control" not in json.dumps(request)


def test_the_clients_body_is_not_modified():
    schema = {"$schema": "s", "type": "object", "properties": {"a": {"type": ["string", "null"]}}}
    body = {"max_tokens": 10, "messages": [user(text("hi", cache_control={"type": "ephemeral"}))],
            "tools": [{"name": "x" * 70, "input_schema": schema}]}
    before = json.dumps(body, sort_keys=True)

    to_chat_completions(body, "m", OpenAIOptions(clean_schema="gemini"), stream=True)

    assert json.dumps(body, sort_keys=True) == before


def test_a_stream_asks_for_usage():
    assert translate({"messages": []}, stream=True) == {
        "model": "gpt-test", "messages": [], "max_tokens": 100,
        "stream": True, "stream_options": {"include_usage": True}}


def test_stream_usage_can_be_turned_off():
    request = translate({"messages": []}, OpenAIOptions(stream_usage=False), stream=True)
    assert request["stream"] is True and "stream_options" not in request


def test_a_non_stream_request_has_no_stream_options():
    request = translate({"messages": [], "stream": True}, stream=False)
    assert "stream" not in request and "stream_options" not in request


@pytest.mark.parametrize("field, value", [
    ("max_tokens_field", "max_output"), ("clean_schema", "openai"), ("reasoning", "effort"),
    ("tool_id_style", "mistral"), ("tool_result_then_user", "merge"), ("drop_params", ("seed",)),
    ("max_output_tokens", 0), ("documents", "pdf"),
])
def test_options_reject_values_no_provider_means(field, value):
    with pytest.raises(ValueError, match=field):
        OpenAIOptions(**{field: value})


# --- system (§6 case 1) -----------------------------------------------------------------------


def test_system_blocks_become_one_system_message_first_without_cache_control():
    system = [text("A", cache_control={"type": "ephemeral"}), text("B")]

    request = translate({"system": system, "messages": [user(text("hi", cache_control={"type": "ephemeral"}))]})

    assert request["messages"] == [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "hi"}]
    assert "cache_control" not in json.dumps(request)


def test_a_system_string_is_the_system_message():
    assert messages_of([], system="be brief") == [{"role": "system", "content": "be brief"}]


def test_an_empty_system_sends_no_system_message():
    assert messages_of([], system="") == []
    assert messages_of([], system=[text("")]) == []


# --- user blocks ------------------------------------------------------------------------------


def test_empty_text_blocks_are_skipped():
    assert messages_of([user(text(""), text("a"))]) == [{"role": "user", "content": "a"}]


def test_a_user_message_with_nothing_left_is_dropped():
    assert messages_of([user(text(""))]) == []


def test_several_text_blocks_make_one_string_message():
    assert messages_of([user(text("a"), text("b"))]) == [{"role": "user", "content": "a\n\nb"}]


def test_a_base64_image_becomes_a_data_uri_and_a_url_image_its_url():  # §6 case 6
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}

    result = messages_of([user(text("look"), image("QUJD", "image/jpeg"), url_image)])

    assert result == [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]}]


def test_a_pdf_becomes_a_file_part():
    pdf = {"type": "document", "title": "spec.pdf",
           "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}

    assert messages_of([user(pdf)]) == [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBER"}}]}]


def test_a_pdf_is_a_placeholder_for_a_provider_without_files():
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}

    assert messages_of([user(pdf)], OpenAIOptions(documents="text")) == [
        {"role": "user", "content": DOCUMENT_PLACEHOLDER}]


def test_a_text_document_is_text():
    document = {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain",
                                                                  "data": "line"}}

    assert messages_of([user(document)]) == [{"role": "user", "content": "notes\n\nline"}]


# --- tool results (§6 cases 3, 4, 5) -----------------------------------------------------------


def test_tool_results_come_first_then_the_users_text():  # §6 case 3
    history = [assistant(tool_use("t1", "Read", {"p": "a"}), tool_use("t2", "Read", {"p": "b"})),
               user(text("note"), tool_result("t1", "one"), tool_result("t2", "two"))]

    assert messages_of(history)[1:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "one"},
        {"role": "tool", "tool_call_id": "t2", "content": "two"},
        {"role": "user", "content": "note"},
    ]


def test_tool_results_follow_the_order_of_the_tool_calls():
    history = [assistant(tool_use("t1", "Read", {}), tool_use("t2", "Read", {})),
               user(tool_result("t2", "two"), tool_result("t1", "one"))]

    assert [message["tool_call_id"] for message in messages_of(history)[1:]] == ["t1", "t2"]


def test_a_result_list_is_one_tool_message_joined_by_newlines():  # §6 case 4
    result = messages_of([user(tool_result("t1", [text("a"), text("b")]))])

    assert result == [{"role": "tool", "tool_call_id": "t1", "content": "a\nb"}]


def test_an_error_result_is_prefixed():  # §6 case 4
    result = messages_of([user(tool_result("t1", "no such file", is_error=True))])

    assert result == [{"role": "tool", "tool_call_id": "t1", "content": "Error: no such file"}]


def test_a_result_without_content_is_an_empty_string():
    assert messages_of([user({"type": "tool_result", "tool_use_id": "t1"})]) == [
        {"role": "tool", "tool_call_id": "t1", "content": ""}]


def test_two_results_for_one_id_are_one_tool_message():
    result = messages_of([user(tool_result("t1", "a"), tool_result("t1", "b"))])

    assert result == [{"role": "tool", "tool_call_id": "t1", "content": "a\nb"}]


def test_an_image_in_a_result_moves_to_the_next_user_message():  # §6 case 5
    result = messages_of([user(tool_result("t1", [text("shot"), image("QUJD")]), text("what now"))])

    assert result == [
        {"role": "tool", "tool_call_id": "t1", "content": f"shot\n{IMAGE_MOVED}"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
            {"type": "text", "text": "what now"},
        ]},
    ]


def test_tool_results_without_other_content_make_no_user_message():
    assert messages_of([user(tool_result("t1", "a"))]) == [{"role": "tool", "tool_call_id": "t1", "content": "a"}]


def test_mistral_append_to_tool_puts_the_text_in_the_last_tool_message():
    options = OpenAIOptions(tool_result_then_user="append_to_tool")

    result = messages_of([user(tool_result("t1", "a"), tool_result("t2", "b"), text("<reminder>"))], options)

    assert result == [{"role": "tool", "tool_call_id": "t1", "content": "a"},
                      {"role": "tool", "tool_call_id": "t2", "content": "b\n\n<reminder>"}]


def test_mistral_append_to_tool_bridges_to_images_it_cannot_append():
    options = OpenAIOptions(tool_result_then_user="append_to_tool")

    result = messages_of([user(tool_result("t1", [image("QUJD")]), text("see"))], options)

    assert result == [
        {"role": "tool", "tool_call_id": "t1", "content": f"{IMAGE_MOVED}\n\nsee"},
        {"role": "assistant", "content": ASSISTANT_BRIDGE},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]},
    ]


def test_mistral_assistant_bridge_goes_between_tool_and_user():
    options = OpenAIOptions(tool_result_then_user="assistant_bridge")

    result = messages_of([user(tool_result("t1", "a"), text("note"))], options)

    assert result == [{"role": "tool", "tool_call_id": "t1", "content": "a"},
                      {"role": "assistant", "content": ASSISTANT_BRIDGE},
                      {"role": "user", "content": "note"}]


def test_the_bridge_is_only_for_a_tool_message_followed_by_user():
    options = OpenAIOptions(tool_result_then_user="assistant_bridge")
    assert messages_of([user(text("hi"))], options) == [{"role": "user", "content": "hi"}]


# --- assistant blocks (§6 cases 2, 7) ---------------------------------------------------------


def test_assistant_text_and_tool_use():  # §6 case 2
    result = messages_of([assistant(text("x"), tool_use("t1", "Read", {"p": "a"}))])

    assert result == [{"role": "assistant", "content": "x", "tool_calls": [CALL_T1]}]


def test_a_tool_only_assistant_message_has_null_content():  # §6 case 2
    result = messages_of([assistant(tool_use("t1", "Read", {"p": "a"}))])

    assert result == [{"role": "assistant", "content": None, "tool_calls": [CALL_T1]}]


def test_a_tool_use_without_input_has_empty_object_arguments():
    result = messages_of([assistant({"type": "tool_use", "id": "t1", "name": "Now"})])

    assert result[0]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_non_ascii_arguments_are_kept_as_they_are():
    result = messages_of([assistant(tool_use("t1", "Write", {"text": "héllo 日本"}))])

    assert result[0]["tool_calls"][0]["function"]["arguments"] == '{"text":"héllo 日本"}'


def test_assistant_text_blocks_are_joined_and_empty_messages_dropped():
    assert messages_of([assistant(text("a"), text(""), text("b")), assistant(text(""))]) == [
        {"role": "assistant", "content": "a\n\nb"}]


THINKING = {"type": "thinking", "thinking": "let me see", "signature": "sig"}
REDACTED = {"type": "redacted_thinking", "data": "xyz"}


def test_thinking_in_history_is_dropped():  # §6 case 7
    result = messages_of([assistant(THINKING, REDACTED, text("x"))])

    assert result == [{"role": "assistant", "content": "x"}]


def test_an_assistant_message_of_thinking_only_is_dropped():
    assert messages_of([assistant(THINKING)]) == []


def test_thinking_is_replayed_as_reasoning_content_where_required():  # §6 case 7
    options = OpenAIOptions(replay_reasoning=True)

    result = messages_of([assistant(THINKING, REDACTED, tool_use("t1", "Read", {"p": "a"}))], options)

    assert result == [{"role": "assistant", "content": None, "tool_calls": [CALL_T1],
                       "reasoning_content": "let me see"}]


def test_replay_sends_empty_reasoning_with_tool_calls_that_had_none():
    options = OpenAIOptions(replay_reasoning=True)

    result = messages_of([assistant(tool_use("t1", "Read", {"p": "a"})), assistant(text("ok"))], options)

    assert result[0]["reasoning_content"] == "" and "reasoning_content" not in result[1]


def test_server_tool_blocks_in_history_are_dropped():
    server = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
    found = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}

    assert messages_of([assistant(server, found, text("found"))]) == [{"role": "assistant", "content": "found"}]


# --- tools (§6 cases 8, 9, 10) ----------------------------------------------------------------

READ_TOOL = {"name": "Read", "description": "Read a file",
             "input_schema": {"type": "object", "properties": {"p": {"type": "string"}}}}


def test_a_tool_becomes_a_function():
    assert translate({"messages": [], "tools": [READ_TOOL]})["tools"] == [{"type": "function", "function": {
        "name": "Read", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"p": {"type": "string"}}}}}]


def test_a_tool_without_schema_gets_an_empty_object_schema_and_no_anthropic_type():
    tools = translate({"messages": [], "tools": [{"type": "custom", "name": "Now"}]})["tools"]

    assert tools == [{"type": "function", "function": {"name": "Now",
                                                       "parameters": {"type": "object", "properties": {}}}}]


def test_server_tools_are_dropped():
    server_tools = [{"type": "web_search_20250305", "name": "web_search"},
                    {"type": "bash_20250124", "name": "bash"},
                    {"type": "text_editor_20250124", "name": "str_replace_editor"}]

    request = translate({"messages": [], "tools": server_tools + [READ_TOOL], "tool_choice": {"type": "auto"}})

    assert [tool["function"]["name"] for tool in request["tools"]] == ["Read"]


def test_no_client_tools_means_no_tools_and_no_tool_choice():
    request = translate({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                         "tool_choice": {"type": "any", "disable_parallel_tool_use": True}})

    assert set(request) == {"model", "messages", "max_tokens"}


LONG_NAME = "mcp__a_very_long_server_name_for_testing__and_an_even_longer_tool_name_x"  # 72


def test_a_long_tool_name_is_shortened_and_mapped_back():  # §6 case 9
    body = {"max_tokens": 10, "messages": [assistant(tool_use("t1", LONG_NAME, {}))],
            "tools": [{"name": LONG_NAME, "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": LONG_NAME}}

    request, names = to_chat_completions(body, "m", OPENAI, stream=False)

    short = request["tools"][0]["function"]["name"]
    assert len(LONG_NAME) > 64 and len(short) == 64
    assert short.startswith(LONG_NAME[:55] + "_")
    assert request["messages"][0]["tool_calls"][0]["function"]["name"] == short
    assert request["tool_choice"] == {"type": "function", "function": {"name": short}}
    assert names.original_name(short) == LONG_NAME


def test_shortening_is_the_same_on_every_request():
    assert Names().upstream_name(LONG_NAME) == Names().upstream_name(LONG_NAME)
    assert Names().upstream_name(LONG_NAME + "y") != Names().upstream_name(LONG_NAME)


def test_a_name_with_invalid_characters_is_renamed_and_mapped_back():
    names = Names()

    upstream = names.upstream_name("search.files")

    assert upstream.startswith("search_files_") and names.original_name(upstream) == "search.files"


def test_a_valid_name_is_unchanged_and_an_unknown_one_maps_to_itself():
    names = Names()
    assert names.upstream_name("Read") == "Read" and names.original_name("Bash") == "Bash"


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "Read"}, {"tool_choice": {"type": "function", "function": {"name": "Read"}}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
    ({"type": "any", "disable_parallel_tool_use": False}, {"tool_choice": "required"}),
])
def test_tool_choice(choice, expected):  # §6 case 10
    request = translate({"messages": [], "tools": [READ_TOOL], "tool_choice": choice})

    assert {key: request[key] for key in ("tool_choice", "parallel_tool_calls") if key in request} == expected


NASTY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "format": "uri", "default": "x", "examples": ["y"]},
        "when": {"type": "string", "format": "date-time"},
        "note": {"type": ["string", "null"]},
        "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 9},
        "default": {"type": "string", "enum": ["default", "format"]},
        "tags": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"},
                                            "propertyNames": {"pattern": "^a"}}},
        "either": {"anyOf": [{"type": "string", "format": "email"}, {"type": "number"}]},
        "map": {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
    },
    "required": ["url"],
}


def test_schemas_are_cleaned_for_gemini():  # §6 case 8
    assert clean_schema(NASTY_SCHEMA, "gemini") == {
        "type": "object",
        "properties": {
            "url": {"type": "string"},
            "when": {"type": "string", "format": "date-time"},
            "note": {"type": "string", "nullable": True},
            "count": {"type": "integer"},
            "default": {"type": "string", "enum": ["default", "format"]},
            "tags": {"type": "array", "items": {"type": "object"}},
            "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            "map": {"type": "object"},
        },
        "required": ["url"],
    }


def test_groq_loses_only_dollar_schema():
    cleaned = clean_schema(NASTY_SCHEMA, "groq")

    assert "$schema" not in cleaned and {**cleaned, "$schema": NASTY_SCHEMA["$schema"]} == NASTY_SCHEMA


def test_schemas_are_sent_as_given_by_default():
    request = translate({"messages": [], "tools": [{"name": "T", "input_schema": NASTY_SCHEMA}]})
    assert request["tools"][0]["function"]["parameters"] == NASTY_SCHEMA


def test_the_gemini_option_cleans_the_tools_schemas():
    request = translate({"messages": [], "tools": [{"name": "T", "input_schema": NASTY_SCHEMA}]},
                        OpenAIOptions(clean_schema="gemini"))
    assert request["tools"][0]["function"]["parameters"] == clean_schema(NASTY_SCHEMA, "gemini")


def test_a_type_list_without_null_keeps_its_first_type():
    assert clean_schema({"type": ["integer", "string"]}, "gemini") == {"type": "integer"}


# --- tool ids for Mistral ---------------------------------------------------------------------


def test_mistral_tool_ids_are_nine_alphanumerics_consistent_both_ways():
    history = [assistant(tool_use("toolu_01ABCdef", "Read", {})), user(tool_result("toolu_01ABCdef", "ok"))]
    body = {"max_tokens": 10, "messages": history}

    request, names = to_chat_completions(body, "m", OpenAIOptions(tool_id_style="mistral9"), stream=False)

    call_id = request["messages"][0]["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum() and call_id.isascii()
    assert request["messages"][1]["tool_call_id"] == call_id
    assert names.original_id(call_id) == "toolu_01ABCdef"
    again, _ = to_chat_completions(body, "m", OpenAIOptions(tool_id_style="mistral9"), stream=False)
    assert again == request


def test_a_mistral_shaped_id_is_kept_and_ids_are_kept_by_default():
    assert Names("mistral9").upstream_id("abcDEF123") == "abcDEF123"
    assert Names().upstream_id("toolu_01") == "toolu_01"


# --- max_tokens, sampling, metadata (§6 cases 11, 12) -----------------------------------------


def test_max_tokens_1_is_sent_as_it_is():  # §6 case 11
    assert translate({"messages": [], "max_tokens": 1})["max_tokens"] == 1


def test_a_reasoning_model_gets_max_completion_tokens():  # §6 case 11
    request = translate({"messages": [], "max_tokens": 500}, OpenAIOptions(max_tokens_field="max_completion_tokens"))

    assert request["max_completion_tokens"] == 500 and "max_tokens" not in request


def test_max_tokens_is_clamped_to_the_providers_cap():
    options = OpenAIOptions(max_output_tokens=8192)

    assert translate({"messages": [], "max_tokens": 32000}, options)["max_tokens"] == 8192
    assert translate({"messages": [], "max_tokens": 1}, options)["max_tokens"] == 1


def test_sampling_parameters_pass_except_top_k_for_openai():
    request = translate({"messages": [], "temperature": 0.2, "top_p": 0.9, "top_k": 40,
                         "stop_sequences": ["a", "b", "c", "d", "e"]})

    assert (request["temperature"], request["top_p"], request["stop"]) == (0.2, 0.9, ["a", "b", "c", "d"])
    assert "top_k" not in request


def test_top_k_passes_where_accepted_and_dropped_params_are_not_sent():
    body = {"messages": [], "temperature": 1, "top_p": 0.9, "top_k": 40, "stop_sequences": ["x"],
            "metadata": {"user_id": "u1"}}

    assert translate(body, OpenAIOptions(drop_params=()))["top_k"] == 40
    assert set(translate(body, OpenAIOptions(drop_params=("top_k", "stop", "temperature", "top_p", "user")))) \
        == {"model", "messages", "max_tokens"}


def test_a_short_user_id_passes():
    assert translate({"messages": [], "metadata": {"user_id": "u1"}})["user"] == "u1"


def test_a_long_user_id_is_hashed_to_64_characters():  # §6 case 12
    long_id = "user_" + "a" * 64 + "_account__session_" + "c" * 63

    user_field = translate({"messages": [], "metadata": {"user_id": long_id}})["user"]

    assert len(long_id) == 150
    assert user_field == hashlib.sha256(long_id.encode()).hexdigest() and len(user_field) == 64


# --- thinking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("budget, effort", [
    (1024, "low"), (4095, "low"), (4096, "medium"), (10000, "medium"), (16383, "medium"),
    (16384, "high"), (31999, "high"),
])
def test_thinking_budgets_map_to_effort_buckets(budget, effort):
    assert reasoning_effort({"type": "enabled", "budget_tokens": budget}) == effort


@pytest.mark.parametrize("thinking, output_config, effort", [
    ({"type": "disabled"}, None, None),
    (None, None, None),
    ({"type": "adaptive"}, None, "medium"),
    ({"type": "adaptive"}, {"effort": "low"}, "low"),
    ({"type": "adaptive"}, {"effort": "max"}, "high"),
])
def test_other_thinking_settings(thinking, output_config, effort):
    assert reasoning_effort(thinking, output_config) == effort


THINK_HARD = {"type": "enabled", "budget_tokens": 10000}


@pytest.mark.parametrize("dialect, expected", [
    ("reasoning_effort", {"reasoning_effort": "medium"}),
    ("openrouter", {"reasoning": {"effort": "medium"}}),
    ("chat_template_kwargs", {"chat_template_kwargs": {"enable_thinking": True}}),
    ("none", {}),
])
def test_thinking_is_asked_for_in_the_providers_dialect(dialect, expected):
    request = translate({"messages": [], "thinking": THINK_HARD}, OpenAIOptions(reasoning=dialect))

    assert {key: value for key, value in request.items() if key not in ("model", "messages", "max_tokens")} \
        == expected


def test_no_thinking_asks_for_none_and_tells_qwen_not_to_think():
    assert set(translate({"messages": []})) == {"model", "messages", "max_tokens"}
    assert translate({"messages": []}, OpenAIOptions(reasoning="chat_template_kwargs"))["chat_template_kwargs"] \
        == {"enable_thinking": False}


# --- count_tokens (§5, §6 case 24) ------------------------------------------------------------


def test_the_estimate_is_a_quarter_token_per_ascii_character_plus_framing():
    body = {"messages": [{"role": "user", "content": "x" * 400}]}
    assert estimate_input_tokens(body) == 100 + 4


def test_the_estimate_counts_non_ascii_characters_as_a_token_each():
    assert estimate_input_tokens({"messages": [{"role": "user", "content": "日本語"}]}) == 3 + 4


def test_the_estimate_counts_tools():  # §6 case 24
    body = {"system": "s" * 40, "messages": [{"role": "user", "content": "hello"}]}

    with_tools = estimate_input_tokens({**body, "tools": [READ_TOOL]})

    assert with_tools > estimate_input_tokens(body)
    schema = json.dumps(READ_TOOL["input_schema"], separators=(",", ":"))
    ascii_chars = 40 + 5 + len("Read") + len("Read a file") + len(schema)
    assert with_tools == 4 + 8 + -(-ascii_chars // 4)


def test_the_estimate_counts_every_kind_of_block():
    history = [
        user(text("a" * 8), image(), {"type": "document", "source": {"type": "base64", "data": "JVBER"}}),
        assistant(THINKING, tool_use("t1", "Read", {"p": "a"})),
        user(tool_result("t1", [text("b" * 4)])),
    ]

    ascii_chars = 8 + len("let me see") + len("Read") + len('{"p":"a"}') + 4
    assert estimate_input_tokens({"messages": history}) == 3 * 4 + 1600 + 3000 + -(-ascii_chars // 4)


def test_the_estimate_counts_system_blocks():
    assert estimate_input_tokens({"system": [text("x" * 8)], "messages": []}) == 2


# --- non-stream answers (§2; §6 cases 13, 14, 15) ---------------------------------------------

USAGE = {"prompt_tokens": 1000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800}}


def chat(message, finish_reason="stop", usage=None, chat_id="chatcmpl-1"):
    answer = {"id": chat_id, "object": "chat.completion", "model": "gpt-4o",
              "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}]}
    if usage is not None:
        answer["usage"] = usage
    return answer


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def answer(message, finish_reason="stop", names=None, **extra):
    return to_anthropic_message(chat(message, finish_reason, **extra), "claude-sonnet-4-5", names or Names())


def test_a_text_answer():
    assert answer({"content": "Hello"}, usage={"prompt_tokens": 12, "completion_tokens": 3}) == {
        "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 3},
    }


def test_reasoning_text_and_tool_calls_with_stop_are_thinking_text_tool_use():  # §6 case 13
    message = {"reasoning_content": "think", "content": "Let me read it.",
               "tool_calls": [call("call_1", "Read", "{\"p\":\"a\"}")]}

    result = answer(message, "stop")

    assert result["content"] == [
        {"type": "thinking", "thinking": "think", "signature": PROXY_SIGNATURE},
        {"type": "text", "text": "Let me read it."},
        {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"p": "a"}},
    ]
    assert (result["stop_reason"], result["stop_sequence"]) == ("tool_use", None)


def test_reasoning_from_the_reasoning_field_or_reasoning_details():
    assert answer({"reasoning": "r", "content": "x"})["content"][0] == {
        "type": "thinking", "thinking": "r", "signature": PROXY_SIGNATURE}
    details = [{"type": "reasoning.text", "text": "a"}, {"type": "reasoning.encrypted", "data": "zz"},
               {"type": "reasoning.text", "text": "b"}]
    assert answer({"reasoning_details": details, "content": "x"})["content"][0]["thinking"] == "ab"


def test_empty_and_null_content_make_no_text_block():
    assert answer({"content": None, "tool_calls": [call("c", "Read", "{}")]}, "tool_calls")["content"] == [
        {"type": "tool_use", "id": "c", "name": "Read", "input": {}}]
    assert answer({"content": ""})["content"] == []


def test_cached_tokens_are_taken_out_of_input():  # §6 case 14
    assert answer({"content": "x"}, usage=USAGE)["usage"] == {
        "input_tokens": 200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 800,
        "output_tokens": 50}


@pytest.mark.parametrize("usage, expected", [
    ({"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 60}, (40, 0, 60, 5)),
    ({"prompt_tokens": 100, "completion_tokens": 5,
      "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 30}}, (60, 30, 10, 5)),
    ({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 20}}, (0, 0, 20, 1)),
    ({"prompt_tokens": 100, "completion_tokens": 5, "cached_tokens": 70}, (30, 0, 70, 5)),
    (None, (0, 0, 0, 0)),
])
def test_usage_mapping(usage, expected):
    mapped = anthropic_usage(usage)
    assert (mapped["input_tokens"], mapped["cache_creation_input_tokens"], mapped["cache_read_input_tokens"],
            mapped["output_tokens"]) == expected


def test_groq_usage_in_x_groq_is_read():
    result = to_anthropic_message({**chat({"content": "x"}), "x_groq": {"usage": {"prompt_tokens": 7,
                                                                                   "completion_tokens": 2}}},
                                  "m", Names())
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == (7, 2)


@pytest.mark.parametrize("finish_reason, has_tool_use, expected", [
    ("stop", False, "end_turn"), ("length", False, "max_tokens"), ("content_filter", False, "refusal"),
    ("something_new", False, "end_turn"), (None, False, "end_turn"), ("tool_calls", False, "end_turn"),
    ("tool_calls", True, "tool_use"), ("function_call", True, "tool_use"), ("stop", True, "tool_use"),
    (None, True, "tool_use"), ("length", True, "max_tokens"),
])
def test_stop_reasons(finish_reason, has_tool_use, expected):  # §6 case 15
    assert stop_reason(finish_reason, has_tool_use) == expected


def test_finish_reasons_in_an_answer():  # §6 case 15
    assert answer({"content": "x"}, "length")["stop_reason"] == "max_tokens"
    assert answer({"content": "x"}, "content_filter")["stop_reason"] == "refusal"
    assert answer({"content": "x"}, "eos")["stop_reason"] == "end_turn"
    assert answer({"content": "x"}, None)["stop_reason"] == "end_turn"


def test_broken_arguments_are_visible_not_a_crash():  # §6 case 15
    result = answer({"tool_calls": [call("c1", "Read", "{bad")]}, "tool_calls")

    assert result["content"] == [{"type": "tool_use", "id": "c1", "name": "Read",
                                  "input": {"_raw_arguments": "{bad"}}]


@pytest.mark.parametrize("arguments, expected", [
    ("", {}), (None, {}), ("  ", {}), ('{"a":1}', {"a": 1}), ({"a": 1}, {"a": 1}),
    ("[1]", {"_raw_arguments": "[1]"}), ('{"a":', {"_raw_arguments": '{"a":'}),
])
def test_tool_input(arguments, expected):
    assert tool_input(arguments) == expected


def test_tool_ids_are_sanitised_generated_and_unique():
    calls = [call("functions.Bash:0", "Bash", "{}"), call("", "Bash", "{}"), call("same", "A", "{}"),
             call("same", "B", "{}")]

    ids = [block["id"] for block in answer({"tool_calls": calls}, "tool_calls")["content"]]

    assert ids[0] == "functions_Bash_0" and ids[2] == "same"
    assert re.fullmatch(r"toolu_[0-9a-f]{24}", ids[1]) and re.fullmatch(r"toolu_[0-9a-f]{24}", ids[3])


def test_names_and_mistral_ids_are_mapped_back():  # §6 case 9
    body = {"max_tokens": 10, "messages": [assistant(tool_use("toolu_01", LONG_NAME, {}))],
            "tools": [{"name": LONG_NAME, "input_schema": {"type": "object"}}]}
    request, names = to_chat_completions(body, "m", OpenAIOptions(tool_id_style="mistral9"), stream=False)
    short, old_id = request["tools"][0]["function"]["name"], request["messages"][0]["tool_calls"][0]["id"]

    result = answer({"tool_calls": [call(old_id, short, "{}"), call("Xy12345ab", short, "{}")]}, names=names)

    assert [(block["id"], block["name"]) for block in result["content"]] == [
        ("toolu_01", LONG_NAME), ("Xy12345ab", LONG_NAME)]


def test_a_legacy_function_call_is_a_tool_use():
    result = answer({"function_call": {"name": "Read", "arguments": "{\"p\":1}"}}, "function_call")

    assert result["content"][0]["name"] == "Read" and result["content"][0]["input"] == {"p": 1}
    assert result["stop_reason"] == "tool_use"


def test_a_refusal_is_text():
    assert answer({"content": None, "refusal": "I can't."}, "stop")["content"] == [
        {"type": "text", "text": "I can't."}]


def test_an_answer_without_an_id_gets_one():
    result = to_anthropic_message({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]},
                                  "m", Names())
    assert re.fullmatch(r"msg_[0-9a-f]{24}", result["id"])


@pytest.mark.parametrize("body, message", [
    ({"error": {"message": "Provider returned error", "code": 502}}, "Provider returned error"),
    ({"id": "x", "choices": []}, "the provider's answer has no choices"),
    ([], "the provider's answer is not a JSON object"),
])
def test_a_200_without_an_answer_raises(body, message):
    with pytest.raises(AnswerError, match=re.escape(message)):
        to_anthropic_message(body, "m", Names())


# --- the signature marker ----------------------------------------------------------------------


def test_the_proxys_signature_is_recognised():
    assert PROXY_SIGNATURE.startswith(PROXY_SIGNATURE_PREFIX) and is_proxy_signature(PROXY_SIGNATURE)
    assert not is_proxy_signature("EqQBCkYIBxgCKkD") and not is_proxy_signature(None)


def test_thinking_signed_by_the_proxy_is_stripped_for_anthropic():
    own = {"type": "thinking", "thinking": "t", "signature": PROXY_SIGNATURE}
    real = {"type": "thinking", "thinking": "t", "signature": "EqQBCkYIBxgCKkD"}
    messages = [user(text("hi")), assistant(own, text("a")), assistant(real, text("b")),
                {"role": "user", "content": "ok"}]

    assert strip_proxy_thinking(messages) == [user(text("hi")), assistant(text("a")), assistant(real, text("b")),
                                              {"role": "user", "content": "ok"}]
    assert messages[1]["content"][0] is own


# --- errors (§4; §6 cases 23, 24) --------------------------------------------------------------


def openai_error(message, error_type="invalid_request_error", code=None):
    return json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}}).encode()


def translated(status, body, **kwargs):
    out_status, out_body = translate_error(status, body, **kwargs)
    error = json.loads(out_body)
    assert error["type"] == "error" and set(error) == {"type", "error"}
    return out_status, error["error"]["type"], error["error"]["message"]


@pytest.mark.parametrize("status, out_status, error_type", [
    (400, 400, "invalid_request_error"), (422, 400, "invalid_request_error"),
    (401, 401, "authentication_error"), (403, 403, "permission_error"), (404, 404, "not_found_error"),
    (413, 413, "request_too_large"), (429, 429, "rate_limit_error"), (402, 402, "billing_error"),
    (500, 500, "api_error"), (502, 502, "api_error"), (504, 504, "timeout_error"),
    (503, 529, "overloaded_error"), (529, 529, "overloaded_error"), (409, 409, "invalid_request_error"),
    (520, 520, "api_error"),
])
def test_error_statuses(status, out_status, error_type):  # §6 case 23: 429 → 429 rate_limit_error
    assert translated(status, openai_error("boom")) == (out_status, error_type, "boom")


def test_a_5xx_saying_overloaded_is_529():
    assert translated(500, openai_error("The engine is currently overloaded"))[:2] == (529, "overloaded_error")


def test_an_exhausted_quota_is_a_billing_error_not_a_retryable_429():
    body = openai_error("You exceeded your current quota, please check your plan.", "insufficient_quota",
                        "insufficient_quota")

    assert translated(429, body) == (402, "billing_error",
                                     "You exceeded your current quota, please check your plan.")


def test_google_and_plain_text_and_html_errors():
    google = json.dumps([{"error": {"code": 429, "message": "Resource has been exhausted",
                                    "status": "RESOURCE_EXHAUSTED"}}]).encode()
    assert translated(429, google) == (429, "rate_limit_error", "Resource has been exhausted")
    assert translated(502, b"Bad Gateway\n") == (502, "api_error", "Bad Gateway")
    assert translated(502, b"<html><body>nginx</body></html>") == (
        502, "api_error", "The provider answered HTTP 502.")
    assert translated(500, b"") == (500, "api_error", "The provider answered HTTP 500.")


def test_fastapi_detail_and_openrouter_raw_errors():
    assert translated(400, b'{"detail": "bad model"}') == (400, "invalid_request_error", "bad model")
    openrouter = json.dumps({"error": {"message": "Provider returned error", "code": 400,
                                       "metadata": {"raw": "tools not supported", "provider_name": "X"}}})
    assert translated(400, openrouter.encode())[2] == "Provider returned error: tools not supported"


OPENAI_OVERFLOW = ("This model's maximum context length is 128000 tokens. However, your messages resulted in "
                   "130000 tokens. Please reduce the length of the messages.")


@pytest.mark.parametrize("status, body, expected", [
    (400, openai_error(OPENAI_OVERFLOW, code="context_length_exceeded"),
     f"prompt is too long: 130000 tokens > 128000 maximum ({OPENAI_OVERFLOW})"),
    (400, b'{"object":"error","message":"This model\'s maximum context length is 32768 tokens. However, your '
          b'request has 40000 input tokens. Please reduce the length of the input messages.","code":400}',
     "prompt is too long: 40000 tokens > 32768 maximum (This model's maximum context length is 32768 tokens. "
     "However, your request has 40000 input tokens. Please reduce the length of the input messages.)"),
    (400, json.dumps([{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                                 "The input token count (1200000) exceeds the maximum number of tokens allowed "
                                 "(1048576)."}}]).encode(),
     "prompt is too long: 1200000 tokens > 1048576 maximum (The input token count (1200000) exceeds the maximum "
     "number of tokens allowed (1048576).)"),
    (400, openai_error("Input tokens exceed the configured limit of 272000 tokens. Your messages resulted in "
                       "300000 tokens.", code="context_length_exceeded"),
     "prompt is too long: 300000 tokens > 272000 maximum (Input tokens exceed the configured limit of 272000 "
     "tokens. Your messages resulted in 300000 tokens.)"),
])
def test_a_context_overflow_is_worded_like_anthropics(status, body, expected):  # §6 case 24
    assert translated(status, body) == (400, "invalid_request_error", expected)


def test_an_overflow_without_figures_uses_the_estimate_or_no_numbers():
    body = openai_error("Please reduce the length of the messages or completion.", code="context_length_exceeded")

    assert translated(400, body)[2] == "prompt is too long (Please reduce the length of the messages or completion.)"
    limit_only = openai_error("This model's maximum context length is 8192 tokens.")
    assert translated(400, limit_only, input_tokens_estimate=9000)[2] == \
        "prompt is too long: 9000 tokens > 8192 maximum (This model's maximum context length is 8192 tokens.)"


def test_an_output_that_does_not_fit_is_not_called_a_long_prompt():
    message = ("This model's maximum context length is 65536 tokens. However, you requested 70000 tokens "
               "(38000 in the messages, 32000 in the completion).")

    status, error_type, text_out = translated(400, openai_error(message))

    assert (status, error_type) == (400, "invalid_request_error")
    assert "prompt is too long" not in text_out and "max_output_tokens" in text_out and message in text_out


def test_a_max_tokens_error_is_not_an_overflow():
    message = "max_tokens is too large: 32000. This model supports at most 16384 completion tokens."
    assert translated(400, openai_error(message)) == (400, "invalid_request_error", message)


# --- GET /v1/models (§5, §6 case 24) -----------------------------------------------------------


def test_models_in_anthropics_shape():
    assert models_list(["gpt-4o", "o3", "gpt-4o"]) == {
        "data": [
            {"type": "model", "id": "gpt-4o", "display_name": "gpt-4o", "created_at": "1970-01-01T00:00:00Z"},
            {"type": "model", "id": "o3", "display_name": "o3", "created_at": "1970-01-01T00:00:00Z"},
        ],
        "has_more": False, "first_id": "gpt-4o", "last_id": "o3",
    }
    assert models_list([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}
