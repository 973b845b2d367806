"""Anthropic ⇄ OpenAI Chat Completions: requests, non-stream answers, errors, endpoints.

Each test is one rule of TRANSLATION.md, input → the exact expected output;
"§6 case N" names the numbered cases of its section 6.  Streams are in
test_openai_stream.py.
"""

import hashlib
import json

import pytest

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
